"""Text that every writer can store: lone surrogates and invalid UTF-8 are replaced by U+FFFD, once, with a note.

Arrow, Parquet and JSON writers need valid UTF-8. A Python string can hold a *lone surrogate* (U+D800-U+DFFF:
what ``json.loads`` makes of the escape ``"\\ud800"``, or ``bytes.decode(errors="surrogateescape")`` of a stray
byte) that no UTF-8 writer can encode (``surrogates not allowed``), and a Parquet file written by another
tool can hold bytes that are not UTF-8 at all, which break every read (``to_pylist``, polars). Both are
repaired here, in one place, by replacing each bad code point / byte sequence with U+FFFD (the Unicode
replacement character), and each repair is reported so the caller can record which rows were touched:

- :func:`repair_text` / :func:`repair_value` / :func:`repair_row`: Python values (rows read from JSONL);
- :func:`repair_table`: Arrow tables whose string columns (nested in lists / structs too) hold invalid UTF-8;
- :func:`table_from_rows`: ``pa.Table.from_pylist`` that repairs the rows it cannot encode instead of failing.

Where they run: :func:`curation.core.io.read_records` repairs every row it reads (``Record.repairs`` says
what), :func:`curation.core.io.read_table` and ``curate publish`` repair foreign Parquet files, and every
writer that builds a table from rows (:func:`curation.core.schema.to_table`,
:func:`curation.core.io.table_from_rows`, :func:`curation.core.io.write_jsonl_atomic`) repairs what is
still bad, so a bad value never kills a job at the write. NUL (U+0000) is valid UTF-8 and is kept as it is.
The happy path costs one ``str.isascii`` / one failed-or-not encode per string.
"""

from __future__ import annotations

import bisect
import logging
import re
from typing import Any, Sequence

import pyarrow as pa

__all__ = ["REPLACEMENT", "repair_row", "repair_table", "repair_text", "repair_value", "table_from_rows"]

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")
log = logging.getLogger("curation.text")


def repair_text(s: str) -> tuple[str, int]:
    """``(s with every lone surrogate replaced by U+FFFD, how many)``; valid text comes back unchanged."""
    if s.isascii():
        return s, 0
    try:
        s.encode("utf-8")
        return s, 0
    except UnicodeEncodeError:
        return _SURROGATE.subn(REPLACEMENT, s)


def repair_value(v: Any) -> tuple[Any, int]:
    """:func:`repair_text` applied to every string inside ``v`` (lists, tuples and dicts, keys included);
    returns the repaired value (a new container only where something changed) and the count."""
    if isinstance(v, str):
        return repair_text(v)
    if isinstance(v, (list, tuple)):
        n, out = 0, []
        for x in v:
            fixed, k = repair_value(x)
            n += k
            out.append(fixed)
        return (type(v)(out) if n else v), n
    if isinstance(v, dict):
        n, out = 0, {}
        for key, x in v.items():
            fkey, k1 = repair_value(key)
            fixed, k2 = repair_value(x)
            n += k1 + k2
            out[fkey] = fixed
        return (out if n else v), n
    return v, 0


def repair_row(row: dict) -> list[str]:
    """Repair the values (and keys) of ``row`` in place; one note per repaired column, e.g.
    ``"response: 1 lone surrogate(s) replaced by U+FFFD"``."""
    notes = []
    for key in list(row):
        fkey, k1 = repair_text(key) if isinstance(key, str) else (key, 0)
        fixed, k2 = repair_value(row[key])
        if k1 or k2:
            if k1:
                del row[key]
            row[fkey] = fixed
            notes.append(f"{fkey}: {k1 + k2} lone surrogate(s) replaced by U+FFFD")
    return notes


# --- Arrow ----------------------------------------------------------------------------------------------------


def _bad_utf8(arr: pa.Array) -> bool:
    try:
        arr.validate(full=True)
        return False
    except pa.ArrowInvalid:
        return True


def _repair_array(arr: pa.Array) -> tuple[pa.Array, set[int]]:
    """``arr`` with invalid UTF-8 in its strings replaced by U+FFFD, and the indices of the values that
    changed (for a list or struct: the top-level entries holding a changed string)."""
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        if not _bad_utf8(arr):
            return arr, set()
        raw = arr.cast(pa.large_binary() if pa.types.is_large_string(t) else pa.binary(), safe=False)
        values, bad = [], set()
        for i, b in enumerate(raw.to_pylist()):
            if b is None:
                values.append(None)
                continue
            try:
                values.append(b.decode("utf-8"))
            except UnicodeDecodeError:
                values.append(b.decode("utf-8", errors="replace"))
                bad.add(i)
        return pa.array(values, type=t), bad
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        flat = arr.values
        fixed, bad_flat = _repair_array(flat)
        if not bad_flat:
            return arr, set()
        offsets = arr.offsets.to_pylist()
        bad = {bisect.bisect_right(offsets, j) - 1 for j in bad_flat}
        bad = {i for i in bad if 0 <= i < len(arr) and offsets[i] < offsets[i + 1]}
        cls = pa.LargeListArray if pa.types.is_large_list(t) else pa.ListArray
        return cls.from_arrays(arr.offsets, fixed, type=t, mask=arr.is_null() if arr.null_count else None), bad
    if pa.types.is_struct(t):
        children, bad = [], set()
        for k in range(t.num_fields):
            child, b = _repair_array(arr.field(k))
            children.append(child)
            bad |= b
        if not bad:
            return arr, set()
        return pa.StructArray.from_arrays(children, fields=list(t), mask=arr.is_null() if arr.null_count else None), bad
    return arr, set()


def _has_text(t: pa.DataType) -> bool:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _has_text(t.value_type)
    if pa.types.is_struct(t):
        return any(_has_text(f.type) for f in t)
    return False


def repair_table_rows(table: pa.Table) -> tuple[pa.Table, dict[str, list[int]]]:
    """:func:`repair_table` with the repaired rows per column (``{column: [row, ...]}``)."""
    repaired: dict[str, list[int]] = {}
    columns = []
    for name, col in zip(table.column_names, table.columns):
        if not _has_text(col.type):
            columns.append(col)
            continue
        chunks, bad, offset = [], set(), 0
        for chunk in col.chunks:
            fixed, b = _repair_array(chunk)
            chunks.append(fixed)
            bad |= {offset + i for i in b}
            offset += len(chunk)
        if bad:
            repaired[name] = sorted(bad)
            columns.append(pa.chunked_array(chunks, type=col.type))
        else:
            columns.append(col)
    if not repaired:
        return table, {}
    return pa.Table.from_arrays(columns, schema=table.schema), repaired


def repair_table(table: pa.Table) -> tuple[pa.Table, list[str]]:
    """``table`` with invalid UTF-8 in its string columns (nested ones too) replaced by U+FFFD, and one note
    per repaired column naming its rows; the same table object and ``[]`` when all text is valid."""
    fixed, repaired = repair_table_rows(table)
    notes = []
    for name, rows in repaired.items():
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        notes.append(f"column {name!r}: {len(rows)} value(s) with invalid UTF-8 replaced by U+FFFD (rows {shown})")
    return fixed, notes


def table_from_rows(rows: Sequence[dict], schema: pa.Schema | None = None) -> tuple[pa.Table, list[str]]:
    """``pa.Table.from_pylist(rows, schema)``; rows holding lone surrogates are repaired (copies: the
    caller's rows are left alone) instead of failing the write. Returns the table and one note per
    repaired row (``"row 3: response: 1 lone surrogate(s) replaced by U+FFFD"``), also logged."""
    try:
        return pa.Table.from_pylist(list(rows), schema=schema), []
    except UnicodeEncodeError:
        pass
    fixed_rows, notes = [], []
    for i, row in enumerate(rows):
        row = dict(row)
        got = repair_row(row)
        if got:
            notes.append(f"row {i}: " + "; ".join(got))
        fixed_rows.append(row)
    log.warning("%d row(s) held lone surrogates, replaced by U+FFFD: %s", len(notes), "; ".join(notes[:5]))
    return pa.Table.from_pylist(fixed_rows, schema=schema), notes
