"""``curate verify FILE --out OUT``: grade responses against gold answers.

Reads JSONL / Parquet rows with a gold column (``--gold-col``, default ``answer``), a response column
(``--response-col``, default ``response``) and optionally multiple-choice options (``--options-col``,
default ``options``; used when present). Writes every input row plus ``extracted``, ``extract_rule``,
``correct`` (bool), ``verdict`` (``correct`` / ``incorrect`` / ``no_answer`` / ``timeout`` / ``error``) and
``verdict_detail``. A row that cannot be read (malformed JSON) or lacks a column is kept in the output
with ``verdict = error`` and the reason in ``verdict_detail`` - never dropped. Prints the counts per
verdict. The work is done by :func:`curation.commands.verify.verify_file`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from curation.core.console import console, fail, progress_factory

VERDICT_COLUMNS = ("extracted", "extract_rule", "correct", "verdict", "verdict_detail")


def _options_value(raw: Any, locator: str) -> tuple[list[str] | None, str | None]:
    """Options as a list of strings (JSON text accepted), or ``(None, problem)``."""
    if raw is None:
        return None, None
    if isinstance(raw, str):
        if not raw.strip():
            return None, None
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return None, f"{locator}: options is a string that is not a JSON list"
    if isinstance(raw, (list, tuple)):
        return [str(o) for o in raw] or None, None
    return None, f"{locator}: options must be a list, got {type(raw).__name__}"


def verify_file(
    path: str | Path,
    out: str | Path,
    *,
    gold_col: str = "answer",
    response_col: str = "response",
    options_col: str | None = "options",
    timeout: float = 5.0,
    workers: int | None = None,
    batch_size: int = 2048,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Verify every row of ``path`` and write ``out`` (``.parquet``, else JSONL) atomically.

    Returns ``{"rows": n, "verdicts": {status: count}, "rules": {rule: count}, "out": path}``.
    """
    import pyarrow as pa

    from curation.core.io import read_records, write_parquet_atomic
    from curation.verify import Verifier

    rows: list[dict[str, Any]] = []
    pending: list[int] = []
    golds: list[str] = []
    responses: list[str] = []
    options: list[list[str] | None] = []

    def flush(verifier: Verifier) -> None:
        if not pending:
            return
        verdicts = verifier.verify_batch(golds, responses, options=options, timeout=timeout)
        for i, v in zip(pending, verdicts):
            rows[i].update(extracted=v.extracted, extract_rule=v.rule, correct=v.correct, verdict=v.status,
                           verdict_detail=v.detail)
        if progress:
            progress(len(pending))
        pending.clear()
        golds.clear()
        responses.clear()
        options.clear()

    with Verifier(workers=workers) as verifier:
        for rec in read_records(path):
            if rec.error is not None:
                rows.append({"_raw": rec.raw, "extracted": None, "extract_rule": None, "correct": False,
                             "verdict": "error", "verdict_detail": f"{rec.locator}: {rec.error}"})
                if progress:
                    progress(1)
                continue
            row = dict(rec.data or {})
            missing = [c for c in (gold_col, response_col) if c not in row]
            opts, problem = _options_value(row.get(options_col), rec.locator) if options_col else (None, None)
            if missing or problem:
                why = problem or f"{rec.locator}: missing column(s) {missing}; columns are {sorted(row)}"
                row.update(extracted=None, extract_rule=None, correct=False, verdict="error", verdict_detail=why)
                rows.append(row)
                if progress:
                    progress(1)
                continue
            rows.append(row)
            pending.append(len(rows) - 1)
            gold = row[gold_col]
            golds.append("" if gold is None else str(gold))
            resp = row[response_col]
            responses.append("" if resp is None else str(resp))
            options.append(opts)
            if len(pending) >= batch_size:
                flush(verifier)
        flush(verifier)

    out = Path(out)
    columns: dict[str, None] = {}
    for row in rows:  # union of the columns, in first-seen order (rows of a JSONL file may differ)
        columns.update(dict.fromkeys(row))
    rows = [{c: row.get(c) for c in columns} for row in rows]
    if out.suffix == ".parquet":
        write_parquet_atomic(pa.Table.from_pylist(rows), out)
    else:
        import os
        import tempfile

        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return {
        "rows": len(rows),
        "verdicts": dict(Counter(r["verdict"] for r in rows)),
        "rules": dict(Counter(r["extract_rule"] or "-" for r in rows)),
        "out": str(out),
    }


def register(app: typer.Typer) -> None:
    @app.command("verify")
    def verify_cmd(
        file: Annotated[Path, typer.Argument(help="JSONL / Parquet file with gold answers and responses.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.parquet or .jsonl).")],
        gold_col: Annotated[str, typer.Option("--gold-col", help="Column with the gold answer.")] = "answer",
        response_col: Annotated[str, typer.Option("--response-col", help="Column with the model response.")] = "response",
        options_col: Annotated[str, typer.Option("--options-col", help="Column with multiple-choice options (used when present).")] = "options",
        timeout: Annotated[float, typer.Option("--timeout", help="Per-item deadline in seconds.")] = 5.0,
        workers: Annotated[Optional[int], typer.Option("--workers", help="Verification worker processes (default: CPUs).")] = None,
    ) -> None:
        """Extract final answers and check them against the gold answers (math-verify, hard deadline)."""
        from rich.table import Table

        if not file.exists():
            fail(f"{file}: no such file")
        if timeout <= 0:
            fail(f"--timeout must be positive, got {timeout}")
        try:
            with progress_factory() as new_task:
                summary = verify_file(file, out, gold_col=gold_col, response_col=response_col,
                                      options_col=options_col, timeout=timeout, workers=workers,
                                      progress=new_task("verify", None))
        except (ValueError, FileNotFoundError) as e:
            fail(str(e))
        n = summary["rows"]
        t = Table(title=f"curate verify: {n} rows")
        t.add_column("verdict")
        t.add_column("rows", justify="right")
        t.add_column("share", justify="right")
        for status in ("correct", "incorrect", "no_answer", "timeout", "error"):
            k = summary["verdicts"].get(status, 0)
            t.add_row(status, str(k), f"{k / n:.1%}" if n else "-")
        console.print(t)
        rules = ", ".join(f"{r}: {k}" for r, k in sorted(summary["rules"].items(), key=lambda x: -x[1]))
        console.print(f"extraction rules: {rules}")
        console.print(f"-> [bold]{summary['out']}[/]")
