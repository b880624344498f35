"""Shared rich console and progress helpers for the CLIs (progress goes to stderr, tables to stdout)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console()
err_console = Console(stderr=True)


@contextmanager
def progress_factory() -> Iterator[Callable[[str, int | None], Callable[[int], None]]]:
    """Yields ``new_task(description, total) -> advance(n)``; one bar per task, all on stderr."""
    with Progress(
        TextColumn("[bold blue]{task.description:<16}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    ) as progress:

        def new_task(description: str, total: int | None) -> Callable[[int], None]:
            task = progress.add_task(description, total=total)
            return lambda n=1: progress.advance(task, n)

        yield new_task


def fail(message: str, code: int = 2) -> None:
    """Print a clear error (no traceback) and exit."""
    import typer

    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)
