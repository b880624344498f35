"""``train staged --config RECIPE [KEY=VALUE ...] [--set KEY=VALUE ...] [--dry-run]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._shared import OVERRIDES_ARG, SET_OPT, console_on_main_only, preflight, run_guarded


def register(app: typer.Typer) -> None:
    @app.command("staged")
    def staged_cmd(
        config: Annotated[Path, typer.Option("--config", "-c", help="Recipe YAML with `model:`, `sft:`/`grpo:` defaults and `staged.stages`.")],
        overrides: OVERRIDES_ARG = None,
        set_: SET_OPT = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Only check the run (as `train plan` does for this launch) and exit.")] = False,
        isolation: Annotated[Optional[str], typer.Option("--isolation", help="auto | process | inline: each stage in its own process (auto: when distributed or on a GPU) or all in this one.")] = None,
        skip_plan: Annotated[bool, typer.Option("--skip-plan", help="Start even if the up-front checks refuse the run (their estimate may be wrong for your data).")] = False,
    ) -> None:
        """ReVisual-R1 staged training: cold-start SFT -> multimodal GRPO -> text GRPO (vision frozen).
        Every stage is checked before stage 1 trains (`train plan`); each stage runs in its own process
        under a launcher or on a GPU. Finished stages are skipped on re-run; an interrupted stage resumes
        from its last checkpoint."""
        import contextlib

        from rich.table import Table

        from curation.core.console import console, progress_factory

        from ..config import build_staged_recipe, load_raw
        from ..stages import SUMMARY_FILE, StageConfigChanged, StageFailed, run_staged, stage_isolation

        console_on_main_only()
        ov = [*(overrides or []), *(set_ or [])]

        recipe = run_guarded(lambda: build_staged_recipe(load_raw(config, ov)))
        console.print(f"[bold]train staged[/] {len(recipe.stages)} stages from {recipe.model} -> {recipe.output_dir}")
        preflight(config, ov, "staged", full=dry_run, skip=skip_plan)
        if dry_run:
            return
        mode = run_guarded(lambda: stage_isolation(isolation))

        def run():
            try:
                with (progress_factory() if mode == "inline" else contextlib.nullcontext(None)) as new_task:
                    return run_staged(recipe, progress=new_task, report=console.print, isolation=mode)
            except (StageConfigChanged, StageFailed) as e:
                raise ValueError(str(e)) from None

        summaries = run_guarded(run)
        from ..stages import summary_rows

        rows = summary_rows(summaries)
        t = Table(title="train staged")
        for c in rows[0]:
            t.add_column(c, justify="left" if c in {"stage", "kind", "status", "checkpoint"} else "right")
        for r in rows:
            t.add_row(*r.values())
        console.print(t)
        console.print(f"summary -> [bold]{recipe.output_dir / SUMMARY_FILE}[/]")
