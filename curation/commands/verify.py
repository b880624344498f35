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
from typing import Annotated, Any, Callable, Optional, Sequence

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
    batch_size: int = 50_000,
    rules: Sequence[str] | str | None = None,
    lenient: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Verify every row of ``path`` and write ``out`` (``.parquet``, else JSONL) atomically.

    ``rules`` / ``lenient``: the extraction rules (:func:`curation.verify.resolve_rules`; default strict).
    Rows go to the verifier ``batch_size`` at a time (one batch for most files: the workers never wait
    for the next batch to be read).
    Returns ``{"rows": n, "verdicts": {status: count}, "rules": {rule: count}, "repaired": n, "out": path}``.
    """
    from curation.core.io import read_records, table_from_rows, write_jsonl_atomic, write_parquet_atomic
    from curation.verify import Verifier, resolve_rules

    rules = resolve_rules(rules, lenient)  # a bad rule name fails here, before any work

    rows: list[dict[str, Any]] = []
    pending: list[int] = []
    golds: list[str] = []
    responses: list[str] = []
    options: list[list[str] | None] = []
    repaired: dict[int, str] = {}  # row -> what was repaired on reading (noted in verdict_detail)

    def flush(verifier: Verifier) -> None:
        if not pending:
            return
        verdicts = verifier.verify_batch(golds, responses, options=options, timeout=timeout, rules=rules,
                                         progress=progress)
        for i, v in zip(pending, verdicts):
            detail = v.detail if i not in repaired else f"{v.detail}; {repaired[i]}"
            rows[i].update(extracted=v.extracted, extract_rule=v.rule, correct=v.correct, verdict=v.status,
                           verdict_detail=detail)
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
            if rec.repairs:
                repaired[len(rows)] = "repaired: " + "; ".join(rec.repairs)
            missing = [c for c in (gold_col, response_col) if c not in row]
            opts, problem = _options_value(row.get(options_col), rec.locator) if options_col else (None, None)
            if missing or problem:
                why = problem or f"{rec.locator}: missing column(s) {missing}; columns are {sorted(row)}"
                why = why if len(rows) not in repaired else f"{why}; {repaired[len(rows)]}"
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
        write_parquet_atomic(table_from_rows(rows), out)
    else:
        write_jsonl_atomic(rows, out)
    return {
        "rows": len(rows),
        "verdicts": dict(Counter(r["verdict"] for r in rows)),
        "rules": dict(Counter(r["extract_rule"] or "-" for r in rows)),
        "repaired": len(repaired),
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
        rules: Annotated[Optional[str], typer.Option("--rules", help="Extraction rules in order, comma-separated (default: boxed,answer_tag,gsm8k,answer_is,a_line,choice,bare; also last_math, last_number).")] = None,
        lenient: Annotated[bool, typer.Option("--lenient", help="Add the lenient last_math rule: a response with no final-answer marker is graded on the last math expression / number of its final sentence.")] = False,
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
                                      options_col=options_col, timeout=timeout, workers=workers, rules=rules,
                                      lenient=lenient, progress=new_task("verify", None))
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
        used = ", ".join(f"{r}: {k}" for r, k in sorted(summary["rules"].items(), key=lambda x: -x[1]))
        console.print(f"extraction rules: {used}")
        if summary["repaired"]:
            console.print(f"[yellow]repaired {summary['repaired']} row(s)[/]: text no writer can store (lone surrogates, "
                          "invalid UTF-8) replaced by U+FFFD; noted in verdict_detail")
        console.print(f"-> [bold]{summary['out']}[/]")
