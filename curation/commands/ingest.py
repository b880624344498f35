"""``curate ingest SOURCE --format FMT --out DIR``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from curation.core.console import console, fail, progress_factory


def register(app: typer.Typer) -> None:
    @app.command("ingest")
    def ingest_cmd(
        source: Annotated[Path, typer.Argument(help="JSONL / Parquet file or a local datasets folder.")],
        fmt: Annotated[str, typer.Option("--format", "-f", help="gsm8k | math | math_vision | jsonl | parquet | hf")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (problems.parquet, excluded.parquet, stats.json).")],
        map_: Annotated[Optional[str], typer.Option("--map", help="Column mapping for generic formats, e.g. problem=question,answer=gt")] = None,
        source_name: Annotated[Optional[str], typer.Option("--source", help="Source name stored in each row (default: the format or file name).")] = None,
    ) -> None:
        """Turn a raw problem set into DIR/problems.parquet; bad rows go to DIR/excluded.parquet with reasons."""
        from curation.ingest.sources import FORMATS, MappingError, ingest, write_ingest

        if fmt not in FORMATS:
            fail(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
        try:
            with progress_factory() as new_task:
                result = ingest(source, fmt, mapping=map_, source=source_name, progress=new_task("ingest", None))
        except (MappingError, FileNotFoundError, ValueError) as e:
            fail(str(e))
        write_ingest(result, out)
        s = result.stats
        t = Table(title=f"ingest {source} ({fmt})")
        t.add_column("rows in", justify="right")
        t.add_column("kept", justify="right")
        t.add_column("excluded", justify="right")
        t.add_column("with images", justify="right")
        t.add_row(str(s["rows_in"]), str(s["rows_out"]), str(len(result.excluded)), str(s["with_images"]))
        console.print(t)
        for reason, n in s["excluded"].items():
            console.print(f"  excluded [yellow]{reason}[/]: {n}")
        for row in result.excluded.rows[:5]:
            console.print(f"  [dim]{row['detail'] or row['locator']}[/]")
        console.print(f"wrote [bold]{out / 'problems.parquet'}[/]")
