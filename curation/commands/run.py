"""``curate run RECIPE``: run a recipe's flow of curate/train commands (see curation/flow.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from curation.core.console import console, err_console, fail


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        recipe: Annotated[Path, typer.Argument(help="Recipe YAML with a flow: list (e.g. pipelines/demo.yaml).")],
        set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a variable: NAME=VALUE (repeatable).")] = None,
        only: Annotated[Optional[list[str]], typer.Option("--only", help="Run only these steps (repeatable).")] = None,
        force: Annotated[bool, typer.Option("--force", help="Re-run steps whose outputs already exist.")] = False,
    ) -> None:
        """Run every step of a recipe's flow in order; steps whose outputs exist are skipped (resumable)."""
        from curation.flow import FlowError, run_flow

        overrides = {}
        for item in set_ or []:
            if "=" not in item:
                fail(f"--set {item!r}: expected NAME=VALUE")
            k, v = item.split("=", 1)
            overrides[k] = v

        def on_start(step, cmd):
            err_console.rule(f"[bold]{step.name}")
            err_console.print(f"[dim]$ {cmd}[/]")

        def on_end(res):
            if res.status == "skipped":
                err_console.print(f"[dim]{res.name}: outputs exist, skipped (--force to re-run)[/]")
            else:
                err_console.print(f"[green]{res.name}[/] done in {res.seconds:.0f} s")

        try:
            results = run_flow(recipe, overrides=overrides, only=only, force=force, on_start=on_start, on_end=on_end)
        except FlowError as e:
            fail(str(e))
        total = sum(r.seconds for r in results)
        console.print(f"flow finished: {sum(r.status == 'ran' for r in results)} step(s) ran, "
                      f"{sum(r.status == 'skipped' for r in results)} skipped, {total:.0f} s")
