"""The ``train`` command. Thin: sub-commands live in ``training/commands/<name>.py``."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="train",
    help="Train with TRL: cold-start SFT, GRPO with Variance-Aware Sampling, the three ReVisual-R1 stages.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

_COMMAND_MODULES: list[str] = ["sft", "grpo", "staged", "plan", "stage_run"]

for _name in _COMMAND_MODULES:
    importlib.import_module(f"training.commands.{_name}").register(app)


if __name__ == "__main__":  # pragma: no cover
    app()
