"""Step ``sanity``: length and image checks.

Reasons: ``empty_problem``; ``too_short`` / ``too_long`` (characters of problem text, bounds configurable);
``corrupt_image`` (bytes that do not decode); ``tiny_image`` (a side below ``min_image_side`` pixels);
``missing_image`` (the text refers to ``<imageK>`` but no image is attached).

Why "no image" and not "fewer than K": real sets pack several referenced figures into one composite
picture - MATH-Vision's testmini has problems that mention ``<image1>`` ... ``<image7>`` with a single
image file - so a count mismatch is normal there, while a reference with nothing attached never is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Iterator

from curation.build.steps.base import Excluded, Step
from curation.core.images import ImageError, decode

_IMG_REF = re.compile(r"<image(\d+)>")


@dataclass
class Sanity(Step):
    name = "sanity"
    min_chars: int = 10
    max_chars: int = 20000
    min_image_side: int = 16
    check_image_refs: bool = True

    def check(self, row: dict) -> tuple[str, str] | None:
        text = (row.get("problem") or "").strip()
        if not text:
            return "empty_problem", "problem text is empty"
        if len(text) < self.min_chars:
            return "too_short", f"{len(text)} characters < min_chars={self.min_chars}"
        if len(text) > self.max_chars:
            return "too_long", f"{len(text)} characters > max_chars={self.max_chars}"
        images = row.get("images") or []
        for i, im in enumerate(images):
            try:
                pil = decode(im)
            except ImageError as e:
                return "corrupt_image", f"image {i}: {e}"
            if min(pil.size) < self.min_image_side:
                return "tiny_image", f"image {i} is {pil.size[0]}x{pil.size[1]} px (< {self.min_image_side})"
        if self.check_image_refs:
            refs = [int(k) for k in _IMG_REF.findall(text)]
            if refs and not images:
                return "missing_image", f"text refers to <image{max(refs)}> but no image is attached"
        return None

    def run(self, rows: Iterable[dict]) -> Iterator[dict | Excluded]:
        for row in rows:
            bad = self.check(row)
            yield row if bad is None else Excluded(row, bad[0], detail=bad[1])
