"""``curate cot``: long chain-of-thought cold-start SFT data (teacher sampling + rejection sampling +
quality filters + selection).  The work is done by :func:`curation.cot.run_cot`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from curation.commands._engine import (
    CHUNK_TIMEOUT_HELP,
    DATA_PARALLEL_HELP,
    MAX_RETRIES_HELP,
    parse_engine_options,
)
from curation.core.console import console, fail, progress_factory


def _summary(result, out: Path) -> None:
    s = result.stats
    c = s["counts"]
    t = Table(title=f"curate cot -> {out}")
    for col in ("problems", "generated", "accepted", "kept", "acceptance", "excluded rows"):
        t.add_column(col, justify="right")
    acc = c["acceptance_rate"]
    t.add_row(str(c["problems_with_samples"]), str(c["generated"]), str(c["accepted"]), str(c["kept"]),
              "-" if acc is None else f"{acc:.1%}", str(result.excluded.num_rows))
    console.print(t)
    for reason, n in s["input_reasons"].items():
        console.print(f"  input excluded [yellow]{reason}[/]: {n}")
    for reason, n in s["reasons"].items():
        console.print(f"  solution rejected [yellow]{reason}[/]: {n}")
    if c["chunks_resumed"]:
        console.print(f"resumed: {c['chunks_resumed']} of {c['chunks']} chunks were already done")
    tm = s.get("timing", {})
    console.print("time: " + ", ".join(f"{k.removesuffix('_s')} {v:.1f}s" for k, v in tm.items()))
    console.print(f"wrote [bold]{out}[/] (sft.parquet: {s['settings']['sft_schema']}, excluded.parquet, stats.json)")


def register(app: typer.Typer) -> None:
    @app.command("cot")
    def cot_cmd(
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (sft.parquet, excluded.parquet, stats.json).")],
        data: Annotated[Path, typer.Option("--data", help="problems.parquet (or an ingest/build folder).")],
        teacher: Annotated[Optional[str], typer.Option("--teacher", help="Teacher checkpoint folder or model id.")] = None,
        responses: Annotated[Optional[Path], typer.Option("--responses", help="Pre-generated solutions to filter instead of generating (problem_id, response[, model]).")] = None,
        k: Annotated[int, typer.Option("--k", help="Solutions generated per problem.")] = 4,
        engine: Annotated[str, typer.Option("--engine", help="auto | vllm | hf")] = "auto",
        max_tokens: Annotated[int, typer.Option("--max-tokens", help="Generation limit per solution (hitting it = truncated).")] = 2048,
        temperature: Annotated[float, typer.Option("--temperature")] = 0.7,
        top_p: Annotated[float, typer.Option("--top-p")] = 0.95,
        seed: Annotated[int, typer.Option("--seed", help="Base seed; each problem samples with hash(seed, problem_id).")] = 0,
        keep: Annotated[str, typer.Option("--keep", help="Per problem, among accepted solutions: shortest | longest | all | diverse:M.")] = "shortest",
        text_only: Annotated[bool, typer.Option("--text-only", help="Text cold-start set (ReVisual-R1 stage 1): problems with images are excluded (has_images).")] = False,
        template: Annotated[str, typer.Option("--template", help="Prompt template name in pipelines/prompts or a YAML path.")] = "cot_system",
        shard: Annotated[Optional[str], typer.Option("--shard", help="I/K: only problems with hash(problem_id) % K == I.")] = None,
        chunk_size: Annotated[int, typer.Option("--chunk-size", help="Problems per resumable chunk.")] = 32,
        structure: Annotated[str, typer.Option("--structure", help="strict: <think>..</think> then \\boxed{} required; lenient: untagged reasoning ending in a final answer is accepted and written in <think> form.")] = "strict",
        min_think_words: Annotated[int, typer.Option("--min-think-words", help="answer_leak below this many words of reasoning.")] = 10,
        min_tokens: Annotated[Optional[int], typer.Option("--min-tokens", help="length_out_of_range below this many tokens.")] = None,
        max_solution_tokens: Annotated[Optional[int], typer.Option("--max-solution-tokens", help="length_out_of_range above this many tokens.")] = None,
        min_chars: Annotated[Optional[int], typer.Option("--min-chars", help="length_out_of_range below this many characters.")] = 40,
        max_chars: Annotated[Optional[int], typer.Option("--max-chars", help="length_out_of_range above this many characters.")] = None,
        max_ngram_share: Annotated[float, typer.Option("--max-ngram-share", help="repetition: max share of the most frequent 4-gram.")] = 0.2,
        max_foreign_share: Annotated[float, typer.Option("--max-foreign-share", help="language_mixing: max share of letters from unexpected scripts.")] = 0.01,
        verify_timeout: Annotated[float, typer.Option("--verify-timeout", help="Seconds per verification.")] = 5.0,
        engine_opt: Annotated[Optional[list[str]], typer.Option("--engine-opt", help="KEY=VALUE passed to the engine (repeatable).")] = None,
        executor: Annotated[str, typer.Option("--executor", help="local (this process) | ray (Ray Data pipeline, one engine per worker).")] = "local",
        ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="Ray cluster to join (auto, ray://host:10001); default: the running one or a new local one.")] = None,
        num_workers: Annotated[int, typer.Option("--num-workers", help="Ray executor: engine actors (one per GPU with --gpus-per-worker 1).")] = 1,
        gpus_per_worker: Annotated[float, typer.Option("--gpus-per-worker", help="Ray executor: GPUs per engine actor (0 on CPU clusters).")] = 0.0,
        data_parallel_size: Annotated[int, typer.Option("--data-parallel-size", help=DATA_PARALLEL_HELP)] = 1,
        max_retries: Annotated[int, typer.Option("--max-retries", help=MAX_RETRIES_HELP)] = 2,
        chunk_timeout: Annotated[Optional[float], typer.Option("--chunk-timeout", help=CHUNK_TIMEOUT_HELP)] = None,
    ) -> None:
        """Generate K long chain-of-thought solutions per problem, keep verified and clean ones (SFT cold start).

        Resumable: re-run the same command after a crash.  Filters and --keep are applied when the outputs
        are assembled, so re-running with other filter settings re-uses the stored generations.
        """
        from curation.cot import run_cot
        from curation.cot.quality import QualityConfig

        d = data / "problems.parquet" if data.is_dir() and (data / "problems.parquet").exists() else data
        if not d.exists():
            fail(f"{d}: no such file")
        if (teacher is None) == (responses is None):
            fail("give --teacher CKPT (generate) or --responses FILE (pre-generated solutions), not both")
        if responses is not None and not responses.exists():
            fail(f"{responses}: no such file")
        if executor not in ("local", "ray"):
            fail(f"--executor must be local or ray, got {executor!r}")
        try:
            quality = QualityConfig(
                structure=structure, min_think_words=min_think_words, min_tokens=min_tokens,
                max_tokens=max_solution_tokens, min_chars=min_chars, max_chars=max_chars,
                max_ngram_share=max_ngram_share, max_foreign_share=max_foreign_share,
            )
            with progress_factory() as new_task:
                result = run_cot(
                    d, out, teacher=teacher, responses=responses, k=k, engine=engine, max_tokens=max_tokens,
                    temperature=temperature, top_p=top_p, seed=seed, keep=keep, text_only=text_only,
                    template=template, shard=shard, chunk_size=chunk_size, quality=quality,
                    verify_timeout=verify_timeout, engine_options=parse_engine_options(engine_opt, data_parallel_size), progress=new_task,
                    executor=executor, ray_address=ray_address, num_workers=num_workers,
                    gpus_per_worker=gpus_per_worker,
                    executor_options={"max_retries": max_retries, "chunk_timeout": chunk_timeout} if executor == "ray" else None,
                )
        except (ValueError, FileNotFoundError, ImportError) as e:
            fail(str(e))
        _summary(result, out)
