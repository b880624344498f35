"""Step ``exact_dedup``: drop rows whose normalised text *and* images equal an earlier row's.

Key = SHA-1 of (casefolded problem text with all whitespace removed, sorted SHA-1s of the image bytes).
The first occurrence (input order) is kept; each later one is excluded as ``exact_duplicate`` with
``duplicate_of`` = the kept row's id. When the duplicate carries a *different* gold answer the detail
says so (``conflicting answer``), since that usually means one of the two labels is wrong.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

from curation.build.steps.base import Excluded, Step
from curation.core.images import content_hash

_WS = re.compile(r"\s+")


def exact_key(row: dict) -> str:
    text = _WS.sub("", (row.get("problem") or "").casefold())
    imgs = sorted(content_hash(im) for im in (row.get("images") or []) if im and im.get("bytes"))
    h = hashlib.sha1(text.encode("utf-8", "surrogatepass"))
    for ih in imgs:
        h.update(b"\x00" + ih.encode())
    return h.hexdigest()


@dataclass
class ExactDedup(Step):
    name = "exact_dedup"

    def run(self, rows: Iterable[dict]) -> Iterator[dict | Excluded]:
        seen: dict[str, dict] = {}
        for row in rows:
            key = exact_key(row)
            first = seen.get(key)
            if first is None:
                seen[key] = row
                yield row
                continue
            detail = None
            if (first.get("answer") or "") != (row.get("answer") or ""):
                detail = f"conflicting answer: kept {first.get('answer')!r}, this row {row.get('answer')!r}"
            yield Excluded(row, "exact_duplicate", detail=detail, duplicate_of=first.get("id"))
