"""``curate rl-set``: verifiable short-answer problems as TRL GRPO prompts, split for the multimodal and
text RL stages.  The work is done by :func:`curation.rlset.build_rl_set`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from curation.core.console import console, fail, progress_factory


def register(app: typer.Typer) -> None:
    @app.command("rl-set")
    def rl_set_cmd(
        problems: Annotated[Path, typer.Option("--problems", help="problems.parquet (or an ingest/build folder).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (rl.parquet, rl_multimodal.parquet, rl_text.parquet, excluded.parquet, stats.json).")],
        scores: Annotated[Optional[Path], typer.Option("--scores", help="scores.parquet from `curate score`: adds pass_rate/ovs/tds/vps, enables the pass-rate band.")] = None,
        model: Annotated[Optional[str], typer.Option("--model", help="Which model's scores, when the scores hold several.")] = None,
        min_pass: Annotated[Optional[str], typer.Option("--min-pass", help="Lower pass-rate bound: '>0' (exclusive) or '>=0.1' (inclusive); a bare number is inclusive.")] = None,
        max_pass: Annotated[Optional[str], typer.Option("--max-pass", help="Upper pass-rate bound: '<1' (exclusive) or '<=0.9' (inclusive); a bare number is inclusive.")] = None,
        balance: Annotated[Optional[str], typer.Option("--balance", help="source | difficulty: equal counts per group (capped at the smallest group or --per-group).")] = None,
        per_group: Annotated[Optional[int], typer.Option("--per-group", help="With --balance: at most N rows per group.")] = None,
        difficulty_bins: Annotated[int, typer.Option("--difficulty-bins", help="With --balance difficulty and scores: equal-width pass-rate bins.")] = 3,
        modality: Annotated[str, typer.Option("--modality", help="text | multimodal | all")] = "all",
        max_answer_chars: Annotated[int, typer.Option("--max-answer-chars", help="Drop problems whose normalised gold answer is longer.")] = 64,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the balancing draw.")] = 0,
        template: Annotated[str, typer.Option("--template", help="Prompt template (name in pipelines/prompts or YAML path); default r1: <think> + \\boxed{}.")] = "r1",
        unscored: Annotated[str, typer.Option("--unscored", help="With a pass band: problems with no score row are 'exclude'd (no_score) or 'keep' (null VPS; the sampler uses its prior).")] = "exclude",
        pass_column: Annotated[str, typer.Option("--pass-column", help="What the band and difficulty bins read: pass_rate (c/N) | post_mean (posterior mean).")] = "pass_rate",
    ) -> None:
        """Build RL question-answer sets in TRL GRPO format (conversational prompt, images, answer, VPS columns)."""
        from curation.rlset import build_rl_set

        p = problems / "problems.parquet" if problems.is_dir() and (problems / "problems.parquet").exists() else problems
        if not p.exists():
            fail(f"{p}: no such file")
        if scores is not None and not scores.exists():
            fail(f"{scores}: no such file")
        try:
            with progress_factory() as new_task:
                result = build_rl_set(
                    p, out, scores=scores, model=model, min_pass=min_pass, max_pass=max_pass, balance=balance,
                    per_group=per_group, difficulty_bins=difficulty_bins, modality=modality,
                    max_answer_chars=max_answer_chars, seed=seed, template=template, unscored=unscored,
                    pass_column=pass_column, progress=new_task,
                )
        except (ValueError, FileNotFoundError) as e:
            fail(str(e))
        s = result.stats
        c = s["counts"]
        t = Table(title=f"curate rl-set -> {out}")
        for col in ("rows read", "kept", "multimodal", "text", "with scores", "excluded"):
            t.add_column(col, justify="right")
        t.add_row(str(c["rows_read"]), str(c["kept"]), str(c["multimodal"]), str(c["text"]), str(c["with_scores"]),
                  str(c["excluded"]))
        console.print(t)
        if s["settings"]["pass_band"]:
            console.print(f"pass-rate band: {s['settings']['pass_band']}")
        for reason, n in s["excluded_reasons"].items():
            console.print(f"  excluded [yellow]{reason}[/]: {n}")
        for g, v in s["groups"].items():
            console.print(f"  group {g}: {v['before']} -> {v['after']}")
        console.print(f"wrote [bold]{out}[/] (rl.parquet, rl_multimodal.parquet, rl_text.parquet, excluded.parquet, "
                      "stats.json)")
