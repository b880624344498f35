"""``curate report RUN_DIR``: a Markdown + PNG report over a whole run folder (see curation/report/run.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from curation.core.console import console, fail


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        run_dir: Annotated[Path, typer.Argument(help="Run folder (ingest/, build/, score/, rl/, cot/, staged/, publish/).")],
        out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Report folder (default RUN_DIR/report).")] = None,
        group_size: Annotated[int, typer.Option(help="GRPO group size G for the VAS-vs-uniform comparison.")] = 4,
        lam: Annotated[float, typer.Option("--lambda", help="VAS mix lambda for the comparison.")] = 0.5,
    ) -> None:
        """Rows per step, pass-rate/VPS histograms, reward curves per stage, zero-variance groups VAS vs uniform."""
        from curation.report.run import write_run_report

        if not run_dir.is_dir():
            fail(f"{run_dir}: not a folder")
        path = write_run_report(run_dir, out, group_size=group_size, lam=lam)
        console.print(f"report: [bold]{path}[/]")
