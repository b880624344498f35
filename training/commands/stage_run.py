"""``train stage-run`` (internal): one stage of ``train staged`` in its own process (see training.stages)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._shared import console_on_main_only, run_guarded


def register(app: typer.Typer) -> None:
    @app.command("stage-run", hidden=True)
    def stage_run_cmd(
        recipe: Annotated[Path, typer.Option("--recipe", help="The resolved recipe (YAML) the driver wrote.")],
        stage: Annotated[int, typer.Option("--stage", help="Index of the stage to train.")],
        start_model: Annotated[str, typer.Option("--start-model", help="Checkpoint the stage starts from.")],
    ) -> None:
        """Train one stage of a staged recipe (started by `train staged`, one process per stage)."""
        import yaml

        from curation.core.console import console, progress_factory

        from ..config import build_staged_recipe
        from ..stages import run_stage

        console_on_main_only()
        r = run_guarded(lambda: build_staged_recipe(yaml.safe_load(recipe.read_text())))
        with progress_factory() as new_task:
            run_guarded(lambda: run_stage(r, stage, start_model, progress=new_task, report=console.print))
