"""The column vocabulary shared by ``curate ingest --map`` and the benchmark files of ``decontaminate``.

A mapping names, for each *target* (``problem``, ``answer``, ``solution``, ``images``, ``options``, ``id``;
benchmark files also know ``group``), the input column(s) it is read from::

    problem=question,answer=gt,images=image_path

A column spec may list alternatives or several columns:

* ``a|b`` - the first of the columns that the row has (``images=decoded_image|image``: MathVista's bytes,
  else its relative path);
* ``a+b`` - all of them, concatenated (``images=image_1+image_2+image_3``: OlympiadBench's image columns).

Column names match exactly, else case-insensitively (AIME copies spell ``Problem`` / ``Answer``). Targets
that are not mapped fall back to :data:`DEFAULT_COLUMNS` (the first of the usual names present).
"""

from __future__ import annotations

from typing import Any, Mapping

DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "problem": ("problem", "question", "prompt", "query"),
    "answer": ("answer", "gt", "final_answer", "ground_truth", "gold"),
    "solution": ("solution", "rationale", "explanation"),
    "images": ("images", "image", "image_path", "image_paths"),
    "options": ("options", "choices"),
    "id": ("id", "idx", "uid"),
}
TARGETS = tuple(DEFAULT_COLUMNS)


class MappingError(ValueError):
    """A mapping that is malformed or names a column the input does not have (a usage error: stop at once)."""


def parse_mapping(spec: str | Mapping[str, str] | None, targets: tuple[str, ...] = TARGETS) -> dict[str, str]:
    """``"problem=question,answer=gt"`` (or a dict of the same) -> ``{"problem": "question", "answer": "gt"}``."""
    if not spec:
        return {}
    items = spec.items() if isinstance(spec, Mapping) else []
    if isinstance(spec, str):
        items = []
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise MappingError(f"--map entry {part!r} is not of the form target=column")
            items.append(tuple(x.strip() for x in part.split("=", 1)))
    out = {}
    for target, col in items:
        if target not in targets:
            raise MappingError(f"--map target {target!r} unknown; targets are {', '.join(targets)}")
        if not isinstance(col, str) or not col.strip():
            raise MappingError(f"--map {target}: empty column name")
        out[target] = col.strip()
    return out


def spec_of(target: str, mapping: Mapping[str, str]) -> str:
    """The column spec of ``target``: the mapped one, else the defaults as alternatives (``a|b|c``)."""
    return mapping.get(target) or "|".join(DEFAULT_COLUMNS.get(target, ()))


def _lookup(name: str, row: Mapping[str, Any]) -> str | None:
    if name in row:
        return name
    low = name.lower()
    return next((k for k in row if isinstance(k, str) and k.lower() == low), None)


def find_columns(spec: str, row: Mapping[str, Any]) -> list[str]:
    """The row's columns that ``spec`` names: for ``a+b`` every one present, otherwise the first present of
    the ``|`` alternatives (a column whose value is null counts as absent when a later alternative has a
    value). Empty when none is present."""
    if "+" in spec:
        return [c for c in (_lookup(s.strip(), row) for s in spec.split("+")) if c is not None]
    present = [c for c in (_lookup(s.strip(), row) for s in spec.split("|")) if c is not None]
    with_value = [c for c in present if row.get(c) is not None]
    return (with_value or present)[:1]


def column_value(row: Mapping[str, Any], columns: list[str]) -> Any:
    """The value of ``columns`` in ``row``: one column's value, or for several the concatenation of their
    non-null values (lists flattened) - how ``a+b`` image columns become one list."""
    if not columns:
        return None
    if len(columns) == 1:
        return row.get(columns[0])
    out: list = []
    for c in columns:
        v = row.get(c)
        if v is None:
            continue
        out.extend(v if isinstance(v, (list, tuple)) else [v])
    return out
