"""``curate build IN... --out DIR [--recipe R] [--decontaminate BENCH[:preset] ...]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from curation.core.console import console, fail, progress_factory


def register(app: typer.Typer) -> None:
    @app.command("build")
    def build_cmd(
        inputs: Annotated[list[Path], typer.Argument(help="problems.parquet file(s) or ingest folder(s).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
        recipe: Annotated[Optional[Path], typer.Option("--recipe", "-r", help="Recipe YAML with a build.steps list.")] = None,
        decontaminate: Annotated[Optional[list[str]], typer.Option("--decontaminate", "-d", help="Benchmark file or folder to decontaminate against, optionally with a preset: PATH[:preset] (e.g. data/mathvista:mathvista); repeatable.")] = None,
    ) -> None:
        """Clean problems: normalize, sanity, verifiable filter, exact + near dedup, decontamination."""
        from curation.build.pipeline import build
        from curation.core.schema import SchemaError

        paths = [p / "problems.parquet" if p.is_dir() and (p / "problems.parquet").exists() else p for p in inputs]
        for p in paths:
            if not p.exists():
                fail(f"{p}: no such file")
        try:
            with progress_factory() as new_task:
                result = build(paths, out, recipe=recipe, decontaminate=[str(d) for d in decontaminate or []],
                               progress=new_task)
        except (SchemaError, ValueError, FileNotFoundError) as e:
            fail(str(e))
        t = Table(title="curate build")
        for col in ("step", "in", "out", "excluded (reason: n)", "s"):
            t.add_column(col, justify="right" if col in {"in", "out", "s"} else "left")
        for s in result.stats["steps"]:
            ex = ", ".join(f"{k}: {v}" for k, v in s["excluded"].items()) or "-"
            t.add_row(s["step"], str(s["rows_in"]), str(s["rows_out"]), ex, f"{s['seconds']:.1f}")
        console.print(t)
        console.print(
            f"kept {result.stats['output_rows']} + excluded {result.stats['excluded_rows']} = "
            f"{result.stats['input_rows']} input rows -> [bold]{out}[/]"
        )
