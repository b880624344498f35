"""The Arrow schemas of every table that flows through the toolkit, and their validation.

Data flows one way as Parquet tables (see README "Data flow"):

    problems --build--> problems (+ excluded, stats) --score--> rollouts + scores --rl-set--> rl
                                                   \\--cot--> sft

Contracts:
- A problem has a stable ``id`` derived from its source and content; every later table joins on it.
- A rollout row is unique on (``problem_id``, ``model``, ``sample``).
- Scores keep their components (``pass_rate``, ``ovs``, ``tds``, ``vps``) so users can recombine them, and the
  Beta posterior of the pass rate (``post_a``, ``post_b``, ``post_mean``, ``post_lo``, ``post_hi``, ``post_ovs``).

Images travel *inside* the tables as ``list<struct<bytes: binary, path: string>>`` - the storage type of
🤗 datasets' ``Image`` feature - so a Parquet file is self-contained and ``datasets.load_dataset`` decodes
the column to PIL images.  The image format is carried by the bytes themselves (magic number) and by the
file name kept in ``path`` (e.g. ``"4.jpg"``); :func:`curation.core.images.image_format` reads it back.  On
input, a column of file paths is accepted and resolved to bytes at ingest.

Validation never stops at the first problem: :func:`validate_rows` returns one :class:`RowError` per bad
(row, field), each naming the row (index and id) and the field, so batch jobs can route bad rows to an
exclusion table instead of dying.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import pyarrow as pa

# --- building blocks ---------------------------------------------------------------------------------

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
IMAGES = pa.list_(IMAGE)
TEXT_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
PART = pa.struct([("type", pa.string()), ("text", pa.string())])
MM_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.list_(PART))])

# 🤗 datasets reads its feature types from this schema metadata key; declaring ``images`` as a sequence
# of ``Image`` makes ``load_dataset("parquet", ...)`` hand out PIL images and the Hub viewer show them.
_HF_IMAGES_FEATURE = {"_type": "List", "feature": {"_type": "Image"}}


def _with_hf_image_metadata(schema: pa.Schema) -> pa.Schema:
    if "images" not in schema.names:
        return schema
    features: dict[str, Any] = {}
    for field in schema:
        if field.name == "images":
            features["images"] = _HF_IMAGES_FEATURE
    meta = {b"huggingface": json.dumps({"info": {"features": _partial_features(schema, features)}}).encode()}
    return schema.with_metadata(meta)


_HF_DTYPES = {pa.string(): "string", pa.large_string(): "large_string", pa.int32(): "int32", pa.int64(): "int64",
              pa.float64(): "float64", pa.float32(): "float32", pa.bool_(): "bool", pa.binary(): "binary"}


def _hf_feature(t: pa.DataType) -> dict[str, Any]:
    """The 🤗 datasets feature dict of an Arrow type - what ``datasets.Features.from_arrow_schema(...)
    .to_dict()`` gives (checked in tests/test_schema_io.py) - without importing ``datasets`` (a second of
    start-up for every command that only needs the schemas)."""
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"feature": _hf_feature(t.value_type), "_type": "LargeList" if pa.types.is_large_list(t) else "List"}
    if pa.types.is_struct(t):
        return {f.name: _hf_feature(f.type) for f in t}
    return {"dtype": _HF_DTYPES[t], "_type": "Value"}


def _partial_features(schema: pa.Schema, overrides: dict[str, Any]) -> dict[str, Any]:
    """Feature dict for 🤗 datasets: ``Image`` for images, everything else inferred from Arrow."""
    feats = {f.name: _hf_feature(f.type) for f in schema}
    feats.update(overrides)
    return feats


def _schema(fields: Sequence[pa.Field]) -> pa.Schema:
    return _with_hf_image_metadata(pa.schema(fields))


# --- the tables ---------------------------------------------------------------------------------------

PROBLEMS = _schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("problem", pa.string(), nullable=False),
        pa.field("images", IMAGES),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("options", pa.list_(pa.string())),
        pa.field("solution", pa.string()),
        pa.field("meta", pa.string()),  # JSON object: source-specific fields (level, subject, original id...)
    ]
)

# Every row a step drops: the problem's columns (nullable: an unparsable input line has none of them)
# plus where it was dropped and why.
EXCLUDED = _schema(
    [pa.field(f.name, f.type, nullable=True) for f in PROBLEMS]
    + [
        pa.field("step", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("duplicate_of", pa.string()),
        pa.field("locator", pa.string()),  # file:line of the input row, when known
        pa.field("raw", pa.string()),  # the raw input when it could not be parsed into a problem
    ]
)

# The Beta posterior of a pass rate (curation.score.posterior): Beta(post_a, post_b), its mean, the equal-tailed
# credible interval [post_lo, post_hi] and E[p (1 - p)]; null in tables from before 0.2.  In scores and RL tables.
POSTERIOR_FIELDS = [pa.field(name, pa.float64()) for name in
                    ("post_a", "post_b", "post_mean", "post_lo", "post_hi", "post_ovs")]

ROLLOUTS = _schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("sample", pa.int32(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("extracted", pa.string()),
        pa.field("verdict", pa.string(), nullable=False),  # correct|incorrect|no_answer|timeout|error
        pa.field("correct", pa.bool_(), nullable=False),
        pa.field("num_tokens", pa.int32()),
        pa.field("finish_reason", pa.string()),  # stop|length|null (pre-generated rollouts)
    ]
)

SCORES = _schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("n", pa.int32(), nullable=False),
        pa.field("n_correct", pa.int32(), nullable=False),
        pa.field("pass_rate", pa.float64(), nullable=False),
        pa.field("ovs", pa.float64(), nullable=False),
        pa.field("tds", pa.float64(), nullable=False),
        pa.field("vps", pa.float64(), nullable=False),
        pa.field("mean_tokens", pa.float64()),
        pa.field("truncated_frac", pa.float64()),
        *POSTERIOR_FIELDS,
        # adaptive scoring (curate score --adaptive): rounds of rollouts the prompt got and why it stopped
        # (in_band | out_of_band | n_max | budget | pool_exhausted | generation_error); null for fixed N
        pa.field("rounds", pa.int32()),
        pa.field("stopped_because", pa.string()),
    ]
)

# TRL conversational SFT format.  Text rows carry string contents; multimodal rows carry typed parts
# ({"type": "image"} / {"type": "text", "text": ...}) and an ``images`` column, as TRL's VLM collators expect.
SFT_TEXT = _schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("messages", pa.list_(TEXT_MESSAGE), nullable=False),
        pa.field("vps", pa.float64()),
    ]
)
SFT_MM = _schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("messages", pa.list_(MM_MESSAGE), nullable=False),
        pa.field("images", IMAGES),
        pa.field("vps", pa.float64()),
    ]
)

# TRL GRPO format: conversational ``prompt``, gold ``answer`` (+ ``options``) for the reward functions, and
# the VPS components and the pass-rate posterior when scores were given so the trainer's sampler can draw by VPS.
_RL_COMMON = [
    pa.field("problem_id", pa.string(), nullable=False),
    pa.field("source", pa.string()),
    pa.field("answer", pa.string(), nullable=False),
    pa.field("options", pa.list_(pa.string())),
    pa.field("pass_rate", pa.float64()),
    pa.field("ovs", pa.float64()),
    pa.field("tds", pa.float64()),
    pa.field("vps", pa.float64()),
    *POSTERIOR_FIELDS,
]
RL_TEXT = _schema([pa.field("prompt", pa.list_(TEXT_MESSAGE), nullable=False), *_RL_COMMON])
RL_MM = _schema(
    [pa.field("prompt", pa.list_(MM_MESSAGE), nullable=False), pa.field("images", IMAGES), *_RL_COMMON]
)

SCHEMAS: dict[str, pa.Schema] = {
    "problems": PROBLEMS,
    "excluded": EXCLUDED,
    "rollouts": ROLLOUTS,
    "scores": SCORES,
    "sft_text": SFT_TEXT,
    "sft_mm": SFT_MM,
    "rl_text": RL_TEXT,
    "rl_mm": RL_MM,
}


# --- validation ---------------------------------------------------------------------------------------

# columns whose values are rates or probabilities: they must lie in [0, 1]
RATE_COLUMNS = frozenset({"pass_rate", "ovs", "tds", "vps", "truncated_frac", "post_mean", "post_lo", "post_hi",
                          "post_ovs"})


@dataclass(frozen=True)
class RowError:
    """One problem with one field of one row: ``row`` is the 0-based row index, ``row_id`` its id if any."""

    row: int
    row_id: str | None
    field: str
    problem: str

    def __str__(self) -> str:
        who = f"row {self.row}" + (f" (id={self.row_id})" if self.row_id else "")
        return f"{who}: field '{self.field}': {self.problem}"


class SchemaError(ValueError):
    """Raised by :func:`validate_table` / :func:`to_table` with every :class:`RowError` found."""

    def __init__(self, kind: str, errors: list[RowError]):
        self.kind = kind
        self.errors = errors
        shown = "\n  ".join(str(e) for e in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__(f"{len(errors)} invalid {kind} row(s):\n  {shown}{more}")


def _check_value(value: Any, typ: pa.DataType, nullable: bool, path: str) -> str | None:
    """Return a description of what is wrong with ``value`` for Arrow type ``typ``, or None if fine."""
    if value is None:
        return None if nullable else "missing (null) but required"
    if pa.types.is_string(typ):
        if not isinstance(value, str):
            return f"expected a string, got {type(value).__name__}"
        return None
    if pa.types.is_binary(typ):
        return None if isinstance(value, (bytes, bytearray, memoryview)) else f"expected bytes, got {type(value).__name__}"
    if pa.types.is_boolean(typ):
        return None if isinstance(value, bool) else f"expected a bool, got {type(value).__name__}"
    if pa.types.is_integer(typ):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"expected an integer, got {type(value).__name__}"
    if pa.types.is_floating(typ):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            return f"expected a number, got {type(value).__name__}"
        return None if value == value else "is NaN"
    if pa.types.is_list(typ):
        if not isinstance(value, (list, tuple)):
            return f"expected a list, got {type(value).__name__}"
        for i, item in enumerate(value):
            err = _check_value(item, typ.value_type, True, f"{path}[{i}]")
            if err:
                return f"[{i}] {err}"
        return None
    if pa.types.is_struct(typ):
        if not isinstance(value, dict):
            return f"expected an object, got {type(value).__name__}"
        for sub in typ:
            err = _check_value(value.get(sub.name), sub.type, sub.nullable, f"{path}.{sub.name}")
            if err:
                return f".{sub.name} {err}"
        return None
    return None


def validate_rows(rows: Iterable[dict], kind: str) -> list[RowError]:
    """Check rows (dicts) against the schema ``kind``; returns every problem found (empty list = valid).

    Beyond types: required strings must be non-empty after stripping (``problem``, ``answer``, ``id``...),
    rates lie in [0, 1], and image structs carry bytes.
    """
    schema = SCHEMAS[kind]
    errors: list[RowError] = []
    id_field = "id" if "id" in schema.names else ("problem_id" if "problem_id" in schema.names else None)
    for i, row in enumerate(rows):
        rid = row.get(id_field) if id_field else None
        rid = rid if isinstance(rid, str) else None
        for field in schema:
            if field.name not in row:
                if not field.nullable:
                    errors.append(RowError(i, rid, field.name, "missing (column absent) but required"))
                continue
            value = row[field.name]
            err = _check_value(value, field.type, field.nullable, field.name)
            if err is None and not field.nullable and isinstance(value, str) and not value.strip():
                err = "is empty"
            if err is None and field.name in RATE_COLUMNS and value is not None:
                if not 0.0 <= float(value) <= 1.0:
                    err = f"must lie in [0, 1], got {value}"
            if err is None and field.name == "images" and value:
                for j, img in enumerate(value):
                    if not img.get("bytes"):
                        err = f"[{j}] has no image bytes (path={img.get('path')!r})"
                        break
            if err:
                errors.append(RowError(i, rid, field.name, err))
    return errors


def to_table(rows: Sequence[dict], kind: str, *, validate: bool = True) -> pa.Table:
    """Build an Arrow table of schema ``kind`` from rows; raises :class:`SchemaError` naming bad rows."""
    if validate:
        errors = validate_rows(rows, kind)
        if errors:
            raise SchemaError(kind, errors)
    schema = SCHEMAS[kind]
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    try:
        return pa.Table.from_pydict(cols, schema=schema)
    except UnicodeEncodeError:  # a lone surrogate: repaired to U+FFFD (and logged), never fatal at the write
        from curation.core.text import table_from_rows

        return table_from_rows([{f.name: r.get(f.name) for f in schema} for r in rows], schema)[0]


def validate_table(table: pa.Table, kind: str) -> pa.Table:
    """Check a table's columns and rows against schema ``kind``; returns it cast to the exact schema."""
    schema = SCHEMAS[kind]
    missing = [f.name for f in schema if f.name not in table.column_names and not f.nullable]
    if missing:
        raise SchemaError(kind, [RowError(-1, None, m, "column absent but required") for m in missing])
    rows = table.to_pylist()
    return to_table(rows, kind, validate=True)


def select_model(scores: pa.Table, model: str | None, where: str = "") -> tuple[pa.Table, str | None]:
    """``(rows, name)``: the rows of one model of a ``scores`` table - ``model``, or the only model there -
    and that model's name (None for an empty table or one without a ``model`` column). A table holding
    several models without ``model`` given, or a ``model`` it lacks, raises ``ValueError`` naming the models
    (``where``: a prefix for the message, e.g. the file)."""
    import pyarrow.compute as pc

    if "model" not in scores.column_names:
        return scores, model
    models = sorted(set(scores.column("model").to_pylist()))
    if model is not None:
        if model not in models:
            raise ValueError(f"{where}model {model!r} not in the scores; models there: {models}")
        return scores.filter(pc.equal(scores.column("model"), model)), model
    if len(models) > 1:
        raise ValueError(f"{where}the scores hold {len(models)} models {models}; choose one with --model")
    return scores, (models[0] if models else None)
