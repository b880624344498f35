"""``train staged --config RECIPE [KEY=VALUE ...] [--set KEY=VALUE ...]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._shared import OVERRIDES_ARG, SET_OPT, console_on_main_only, run_guarded


def register(app: typer.Typer) -> None:
    @app.command("staged")
    def staged_cmd(
        config: Annotated[Path, typer.Option("--config", "-c", help="Recipe YAML with `model:`, `sft:`/`grpo:` defaults and `staged.stages`.")],
        overrides: OVERRIDES_ARG = None,
        set_: SET_OPT = None,
    ) -> None:
        """ReVisual-R1 staged training: cold-start SFT -> multimodal GRPO -> text GRPO (vision frozen).
        Finished stages are skipped on re-run; an interrupted stage resumes from its last checkpoint."""
        from rich.table import Table

        from curation.core.console import console, progress_factory

        from ..config import load_staged_recipe
        from ..stages import SUMMARY_FILE, StageConfigChanged, run_staged, summary_rows

        console_on_main_only()
        recipe = run_guarded(lambda: load_staged_recipe(config, [*(overrides or []), *(set_ or [])]))
        console.print(f"[bold]train staged[/] {len(recipe.stages)} stages from {recipe.model} -> {recipe.output_dir}")

        def run():
            try:
                with progress_factory() as new_task:
                    return run_staged(recipe, progress=new_task, report=console.print)
            except StageConfigChanged as e:
                raise ValueError(str(e)) from None

        summaries = run_guarded(run)
        rows = summary_rows(summaries)
        t = Table(title="train staged")
        for c in rows[0]:
            t.add_column(c, justify="left" if c in {"stage", "kind", "status", "checkpoint"} else "right")
        for r in rows:
            t.add_row(*r.values())
        console.print(t)
        console.print(f"summary -> [bold]{recipe.output_dir / SUMMARY_FILE}[/]")
