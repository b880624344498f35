"""Helpers shared by the ``train`` sub-commands (option types, error handling, result tables)."""

from __future__ import annotations

from typing import Annotated, Any, Callable, Optional, TypeVar

import typer

T = TypeVar("T")

OVERRIDES_ARG = Annotated[
    Optional[list[str]],
    typer.Argument(help="Recipe overrides KEY=VALUE with dotted keys, YAML-typed (e.g. grpo.learning_rate=1e-6)."),
]
SET_OPT = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Same as a positional override: --set grpo.max_steps=10 (repeatable)."),
]


def console_on_main_only() -> None:
    """Under ``accelerate launch`` (``RANK`` set by torchrun), only the main process prints notes and result
    tables; the other ranks stay quiet on stdout (errors still go to stderr from every rank)."""
    import os

    if int(os.environ.get("RANK", "0") or 0) != 0:
        from curation.core.console import console

        console.quiet = True


def fail(message: str) -> None:
    from curation.core.console import fail as _fail

    _fail(message)


def run_guarded(fn: Callable[[], T]) -> T:
    """Run ``fn``; user-facing errors (bad recipe, bad data, too-long rows...) print one clear line."""
    from curation.core.schema import SchemaError

    from ..config import RecipeError
    from ..sft import TooLongError

    try:
        return fn()
    except (RecipeError, TooLongError, SchemaError, FileNotFoundError, ValueError) as e:
        fail(str(e))
        raise  # unreachable: fail exits


def _fmt(x: Any, nd: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}g}"
    return str(x)


def print_result(result: Any, title: str) -> None:
    from rich.table import Table

    from curation.core.console import console

    t = Table(title=title)
    cols = ["steps", "rows", "dropped", "final loss", "final reward", "zero-var frac", "seconds"]
    for c in cols:
        t.add_column(c, justify="right")
    t.add_row(str(result.steps), str(result.train_rows), str(result.dropped), _fmt(result.final_loss),
              _fmt(result.final_reward), _fmt(result.zero_variance_frac, 3), f"{result.seconds:.1f}")
    console.print(t)
    ex = result.extra or {}
    if result.kind == "grpo" and ex.get("vas"):
        console.print(f"VAS: {ex.get('n_vas', 0)} prompts drawn by VPS, {ex.get('n_uniform', 0)} uniformly; "
                      f"zero-variance groups {ex.get('zero_var_groups', 0)}/{ex.get('groups', 0)}")
    if result.kind == "grpo" and ex.get("pad"):
        console.print(f"PAD: kept {ex.get('pad_kept', 0)}/{ex.get('pad_total', 0)} rollouts, "
                      f"{ex.get('pad_empty', 0)} empty batches")
    dyn = ex.get("dynamic") or {}
    if result.kind == "grpo" and (dyn.get("skip") or dyn.get("refill")):
        console.print(f"dynamic: {ex.get('groups_generated', 0)} groups generated ({ex.get('rollouts', 0)} rollouts), "
                      f"{ex.get('effective_groups', 0):g} effective; skipped {ex.get('groups_skipped', 0)}, dropped "
                      f"{ex.get('groups_dropped', 0)}, refilled {ex.get('groups_refilled', 0)} in "
                      f"{ex.get('refill_rounds', 0)} rounds, {ex.get('budget_exhausted', 0)} batches short "
                      f"({ex.get('filler_rows', 0)} filler rows)")
    if result.excluded_path:
        console.print(f"excluded rows -> {result.excluded_path}")
    console.print(f"final checkpoint -> [bold]{result.final_dir}[/]")


def preflight(config: Any, overrides: list[str], kind: str, *, full: bool = False, skip: bool = False) -> Any:
    """``train plan``'s checks for the launch this process runs under (``kind``: staged | grpo | sft); a
    refused run stops here, before any model is loaded, unless ``skip`` (``--skip-plan``)."""
    from curation.core.console import console

    from ..config import load_raw
    from ..plan import launch_from_env, plan_recipe
    from .plan import render_plan

    plan = run_guarded(lambda: plan_recipe(load_raw(config, overrides), launch=launch_from_env(), kind=kind,
                                           recipe_path=str(config), overrides=overrides))
    render_plan(plan, full=full)
    if plan.refused and not skip:
        fail("the run was refused before training (see above); fix the settings named, or pass --skip-plan to "
             "start anyway")
    if plan.refused:
        console.print("[yellow]--skip-plan: starting although the checks refused the run[/]")
    return plan
