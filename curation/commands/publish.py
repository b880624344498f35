"""``curate publish DIR --repo-id ORG/NAME [--private] [--revision R] [--dry-run OUTDIR] [--license L]
[--message M] [--exclude SUBFOLDER]...``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from curation.core.console import console, fail, progress_factory


def register(app: typer.Typer) -> None:
    @app.command("publish")
    def publish_cmd(
        folder: Annotated[Path, typer.Argument(help="Folder with curate outputs (problems/excluded/scores/rollouts/"
                                                    "sft/rl Parquet tables, sub-folders included).")],
        repo_id: Annotated[str, typer.Option("--repo-id", help="Dataset repo on the Hub, ORG/NAME.")],
        private: Annotated[bool, typer.Option("--private", help="Create the repo private (new repos only).")] = False,
        revision: Annotated[Optional[str], typer.Option("--revision", help="Branch to commit to (created if "
                                                                           "missing; default main).")] = None,
        dry_run: Annotated[Optional[Path], typer.Option("--dry-run", help="Write what would be uploaded to this "
                                                                          "folder instead (no token needed).")] = None,
        license_: Annotated[Optional[str], typer.Option("--license", help="Hub licence id (default: from the "
                                                                          "sources when known, else 'other').")] = None,
        message: Annotated[Optional[str], typer.Option("--message", "-m", help="Commit message.")] = None,
        kind: Annotated[Optional[str], typer.Option("--kind", help="Card template: rl | cold_start | scored | "
                                                                   "problems (default: from the tables).")] = None,
        pretty_name: Annotated[Optional[str], typer.Option("--pretty-name", help="Card title.")] = None,
        exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="Sub-folder (glob, relative to "
                                                             "FOLDER, e.g. learn) whose tables are not published; "
                                                             "repeatable.")] = None,
    ) -> None:
        """Push the tables as named dataset configs with a generated dataset card; no commit if nothing changed."""
        from curation.publish import PublishError, publish

        try:
            with progress_factory() as new_task:
                result = publish(folder, repo_id, private=private, revision=revision, dry_run=dry_run,
                                 license=license_, message=message, kind=kind, pretty_name=pretty_name,
                                 progress=new_task, exclude=tuple(exclude or ()))
        except PublishError as e:
            fail(str(e))
        t = Table(title=f"curate publish -> {repo_id}" + (" (dry run)" if result.dry_run else ""))
        t.add_column("config")
        t.add_column("rows", justify="right")
        for config, rows in result.configs.items():
            t.add_row(config, str(rows))
        console.print(t)
        for path, why in result.skipped:
            console.print(f"  [dim]not published: {path} ({why})[/]")
        for note in result.repaired:
            console.print(f"  [yellow]repaired[/] {note}")
        if result.dry_run is not None:
            console.print(f"wrote {len(result.added)} files ({result.kind} card) to [bold]{result.dry_run}[/]")
        elif result.commit is None:
            console.print(f"[green]up to date[/]: {len(result.unchanged)} files unchanged, no commit made "
                          f"({result.url})")
        else:
            console.print(f"committed [bold]{result.commit[:12]}[/] to {result.revision}: "
                          f"{len(result.added)} added/updated, {len(result.deleted)} deleted, "
                          f"{len(result.unchanged)} unchanged ({result.url})")
