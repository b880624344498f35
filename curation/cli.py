"""The ``curate`` command. Thin: every sub-command lives in ``curation/commands/<module>.py`` and calls a
library function that does the work.

Start-up: ``curate NAME ...`` imports and registers only the module that defines ``NAME``
(:data:`COMMANDS`), so a command pays for its own parameters only (typer builds every registered command's
parameters at start); ``curate``, ``curate --help`` or an unknown name register them all. ``app`` - every
command - is built on first access (``from curation.cli import app``, ``typer.testing.CliRunner``).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Sequence

import typer

# Order = order in `curate --help`.
_COMMAND_MODULES = ["ingest", "build", "verify", "score", "cot", "rlset", "publish", "run", "report"]
# command name -> the module that registers it
COMMANDS = {"ingest": "ingest", "build": "build", "verify": "verify", "score": "score", "merge": "score",
            "filter": "score", "cot": "cot", "rl-set": "rlset", "publish": "publish", "run": "run",
            "report": "report"}


def build_app(modules: Sequence[str] | None = None) -> typer.Typer:
    """The ``curate`` app with the commands of ``modules`` (default: all, in help order)."""
    app = typer.Typer(
        name="curate",
        help="Curate math reasoning data: ingest, build, verify, score (MMR1 VPS), cot, rl-set, publish.",
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
        add_completion=False,
    )

    @app.callback()
    def _group() -> None:  # a group even with one command registered: `curate verify ...` keeps its name
        pass

    for name in modules or _COMMAND_MODULES:
        importlib.import_module(f"curation.commands.{name}").register(app)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``curate``: registers only the invoked command's module when the name is known."""
    args = list(sys.argv[1:] if argv is None else argv)
    module = COMMANDS.get(args[0]) if args else None
    build_app([module] if module else None)(args=args, prog_name="curate")


def __getattr__(name: str) -> Any:
    if name == "app":
        app = build_app()
        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # pragma: no cover
    main()
