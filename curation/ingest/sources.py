"""``curate ingest``: raw problem sets -> the ``problems`` table.

One adapter per input format turns a raw record into a problem row or raises :class:`RowProblem`
(the row then goes to ``excluded.parquet`` with its file:line and reason; the batch goes on):

=============  ============================================================================================
``gsm8k``      ``question``; ``answer`` = text after ``####`` (thousands commas removed); solution = before it
``math``       ``problem``; answer = ``answer`` field if present, else the last ``\\boxed{}`` of ``solution``
``math_vision`` ``question`` with ``<imageK>``, ``options``, ``answer``; ``image`` path resolved relative to
               the file; ``level``/``subject`` kept in ``meta``
``jsonl``      generic: column mapping ``--map problem=question,answer=gt,images=image``; unmapped fields
``parquet``    default to the usual names (problem|question|prompt, answer|gt|final_answer|ground_truth,
``hf``         solution, images|image, options|choices); ``hf`` is a local ``datasets.save_to_disk`` folder
=============  ============================================================================================

Ids are stable: ``<source>-<16 hex of SHA-1(source, problem, answer, image SHA-1s)>`` - the same input gives
the same id on every run and machine, independent of row order.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from curation.core import schema as S
from curation.core.columns import (
    DEFAULT_COLUMNS,
    MappingError,
    column_value,
    find_columns,
    parse_mapping,
    spec_of,
)
from curation.core.images import ImageError, content_hash, image_structs
from curation.core.io import ExclusionWriter, Record, read_records

FORMATS = ("gsm8k", "math", "math_vision", "jsonl", "parquet", "hf")


class RowProblem(ValueError):
    """A raw row that cannot become a problem: ``reason`` is a stable code, the message explains."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def stable_id(source: str, problem: str, answer: str, images: list[dict]) -> str:
    h = hashlib.sha1()
    for part in (source, problem, answer, *(content_hash(im) for im in images)):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return f"{source}-{h.hexdigest()[:16]}"


def _as_text(value: Any, what: str) -> str:
    if value is None:
        raise RowProblem(f"missing_{what}", f"field for {what!r} is missing or null")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # AMC-style 27.0 -> "27"
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        raise RowProblem(f"bad_{what}", f"{what!r} must be text, got {type(value).__name__}")
    if not value.strip():
        raise RowProblem(f"missing_{what}", f"{what!r} is empty")
    return value


def _resolve_images(value: Any, base_dir: Path) -> list[dict]:
    """Image structs of a row (:func:`curation.core.images.image_structs`: paths, bytes, structs, lists)."""
    try:
        return image_structs(value, base_dir)
    except ImageError as e:
        raise RowProblem("missing_image", str(e)) from e
    except TypeError as e:
        raise RowProblem("bad_image", str(e)) from e


def _verify_images(images: list[dict]) -> None:
    from curation.core.images import decode

    for i, im in enumerate(images):
        try:
            decode(im)
        except ImageError as e:
            raise RowProblem("corrupt_image", f"image {i}: {e}") from e


def _problem(source: str, problem: str, answer: str, *, images=(), options=(), solution=None, meta=None) -> dict:
    images = list(images)
    return {
        "id": stable_id(source, problem, answer, images),
        "source": source,
        "problem": problem,
        "images": images,
        "answer": answer,
        "options": [str(o) for o in options] if options else [],
        "solution": solution,
        "meta": json.dumps(meta, sort_keys=True, default=str) if meta else None,
    }


# --- adapters -------------------------------------------------------------------------------------------

_GSM_CALC = re.compile(r"<<[^>]*>>")


def from_gsm8k(data: dict, ctx: "Context") -> dict:
    problem = _as_text(data.get("question"), "problem")
    full = _as_text(data.get("answer"), "answer")
    if "####" not in full:
        raise RowProblem("missing_answer", "GSM8K answer has no '####' final-answer marker")
    solution, final = full.rsplit("####", 1)
    final = final.strip().replace(",", "")
    if not final:
        raise RowProblem("missing_answer", "nothing after '####'")
    return _problem(ctx.source, problem, final, solution=_GSM_CALC.sub("", solution).strip() or None)


def from_math(data: dict, ctx: "Context") -> dict:
    from curation.verify import last_boxed

    problem = _as_text(data.get("problem", data.get("question")), "problem")
    solution = data.get("solution")
    answer = data.get("answer")
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        if not solution:
            raise RowProblem("missing_answer", "no 'answer' field and no solution to take \\boxed{} from")
        answer = last_boxed(solution)
        if answer is None:
            raise RowProblem("missing_answer", "solution has no \\boxed{} final answer")
    meta = {k: data[k] for k in ("level", "type", "subject", "idx", "id") if data.get(k) is not None}
    return _problem(ctx.source, problem, _as_text(answer, "answer"), solution=solution, meta=meta or None)


def from_math_vision(data: dict, ctx: "Context") -> dict:
    problem = _as_text(data.get("question"), "problem")
    answer = _as_text(data.get("answer"), "answer")
    images = _resolve_images(data.get("image", data.get("images")), ctx.base_dir)
    _verify_images(images)
    meta = {k: data[k] for k in ("id", "level", "subject") if data.get(k) is not None}
    return _problem(ctx.source, problem, answer, images=images, options=data.get("options") or [],
                    solution=data.get("solution"), meta=meta)


def from_generic(data: dict, ctx: "Context") -> dict:
    get = ctx.getter(data)
    problem = _as_text(get("problem"), "problem")
    answer = _as_text(get("answer"), "answer")
    images = _resolve_images(get("images"), ctx.base_dir)
    _verify_images(images)
    options = get("options") or []
    if isinstance(options, str):
        options = [options]
    used = {c for cols in ctx.resolved.values() for c in cols}
    meta = {k: v for k, v in data.items() if k not in used and isinstance(v, (str, int, float, bool))}
    if get("id") is not None:
        meta["orig_id"] = get("id")
    return _problem(ctx.source, problem, answer, images=images, options=options,
                    solution=get("solution"), meta=meta or None)


ADAPTERS: dict[str, Callable[[dict, "Context"], dict]] = {
    "gsm8k": from_gsm8k,
    "math": from_math,
    "math_vision": from_math_vision,
    "jsonl": from_generic,
    "parquet": from_generic,
    "hf": from_generic,
}


@dataclass
class Context:
    source: str
    base_dir: Path
    mapping: dict[str, str] = field(default_factory=dict)
    resolved: dict[str, list[str]] = field(default_factory=dict)

    def resolve(self, first_row: dict, locator: str) -> None:
        """Fix the column(s) of each target from the mapping (``a|b``, ``a+b``: :mod:`curation.core.columns`)
        or the defaults; a mapped column must exist."""
        for target in DEFAULT_COLUMNS:
            cols = find_columns(spec_of(target, self.mapping), first_row)
            if target in self.mapping and not cols:
                raise MappingError(
                    f"{locator}: --map {target}={self.mapping[target]}: no column {self.mapping[target]!r} in "
                    f"the input (columns: {', '.join(sorted(first_row))})"
                )
            self.resolved[target] = cols

    def getter(self, data: dict) -> Callable[[str], Any]:
        return lambda target: column_value(data, self.resolved.get(target) or [])


@dataclass
class IngestResult:
    rows: list[dict]
    excluded: ExclusionWriter
    stats: dict


def ingest(
    source_path: str | Path,
    fmt: str,
    *,
    mapping: dict[str, str] | str | None = None,
    source: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> IngestResult:
    """Read ``source_path`` in format ``fmt`` into problem rows; bad rows go to ``excluded`` with reasons."""
    if fmt not in ADAPTERS:
        raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    source_path = Path(source_path)
    mapping = parse_mapping(mapping) if isinstance(mapping, str) or mapping is None else mapping
    if mapping and ADAPTERS[fmt] is not from_generic:
        raise MappingError(f"--map applies to the generic formats (jsonl, parquet, hf), not {fmt!r}")
    name = source or (fmt if fmt in {"gsm8k", "math", "math_vision"} else source_path.stem)
    base = source_path if source_path.is_dir() else source_path.parent
    ctx = Context(name, base, mapping)
    adapter = ADAPTERS[fmt]
    rows: list[dict] = []
    excluded = ExclusionWriter()
    reasons: dict[str, int] = {}
    n_in = 0
    records: Iterator[Record] = read_records(source_path)
    for rec in records:
        n_in += 1
        if progress:
            progress(1)
        if rec.error:
            excluded.add(None, step="ingest", reason="malformed_row", detail=rec.error, locator=rec.locator,
                         raw=rec.raw)
            reasons["malformed_row"] = reasons.get("malformed_row", 0) + 1
            continue
        if adapter is from_generic and not ctx.resolved:
            ctx.resolve(rec.data, rec.locator)
        try:
            row = adapter(rec.data, ctx)
        except RowProblem as e:
            raw = json.dumps(rec.data, default=lambda o: f"<{type(o).__name__}>")[:2000]
            excluded.add(None, step="ingest", reason=e.reason, detail=f"{rec.locator}: {e}", locator=rec.locator,
                         raw=raw)
            reasons[e.reason] = reasons.get(e.reason, 0) + 1
            continue
        rows.append(row)
    errors = S.validate_rows(rows, "problems")
    if errors:  # an adapter bug, not bad input: adapters must raise RowProblem instead
        raise S.SchemaError("problems", errors)
    stats = {
        "input": str(source_path),
        "format": fmt,
        "source": name,
        "rows_in": n_in,
        "rows_out": len(rows),
        "excluded": dict(sorted(reasons.items())),
        "with_images": sum(1 for r in rows if r["images"]),
    }
    return IngestResult(rows, excluded, stats)


def write_ingest(result: IngestResult, out_dir: str | Path) -> Path:
    from curation.core.io import write_json_atomic, write_parquet_atomic

    out_dir = Path(out_dir)
    write_parquet_atomic(S.to_table(result.rows, "problems", validate=False), out_dir / "problems.parquet")
    result.excluded.write(out_dir / "excluded.parquet")
    write_json_atomic(result.stats, out_dir / "stats.json")
    return out_dir
