"""``train grpo --config RECIPE [KEY=VALUE ...] [--set KEY=VALUE ...]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._shared import OVERRIDES_ARG, SET_OPT, console_on_main_only, preflight, print_result, run_guarded


def register(app: typer.Typer) -> None:
    @app.command("grpo")
    def grpo_cmd(
        config: Annotated[Path, typer.Option("--config", "-c", help="Recipe YAML with `model:` and a `grpo:` section (TRL GRPOConfig fields + data/rewards/vas/pad).")],
        overrides: OVERRIDES_ARG = None,
        set_: SET_OPT = None,
        resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from the last checkpoint-* in output_dir.")] = True,
        skip_plan: Annotated[bool, typer.Option("--skip-plan", help="Start even if the up-front checks (train plan) refuse the run.")] = False,
    ) -> None:
        """GRPO with TRL's GRPOTrainer + MMR1 Variance-Aware Sampling (online VPS refresh) and optional PAD."""
        from curation.core.console import console, progress_factory

        from ..config import load_grpo_recipe
        from ..grpo import train_grpo

        console_on_main_only()
        ov = [*(overrides or []), *(set_ or [])]
        # the checks first: they build configs detached from the launcher, which resets accelerate's state -
        # the real config below must come after them
        preflight(config, ov, "grpo", skip=skip_plan)
        recipe = run_guarded(lambda: load_grpo_recipe(config, ov))
        console.print(f"[bold]train grpo[/] {recipe.model} on {recipe.data.train} -> {recipe.args.output_dir}")
        with progress_factory() as new_task:
            result = run_guarded(lambda: train_grpo(recipe, resume=resume, progress=new_task, report=console.print))
        print_result(result, "train grpo")
