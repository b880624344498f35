"""The ``curate`` command. Thin: every sub-command lives in ``curation/commands/<name>.py`` and calls a
library function that does the work."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="curate",
    help="Curate math reasoning data: ingest, build, verify, score (MMR1 VPS), cot, rl-set, publish.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

# Order = order in `curate --help`.
_COMMAND_MODULES = ["ingest", "build", "verify", "score", "cot", "rlset", "publish", "run", "report"]

for _name in _COMMAND_MODULES:
    importlib.import_module(f"curation.commands.{_name}").register(app)


if __name__ == "__main__":  # pragma: no cover
    app()
