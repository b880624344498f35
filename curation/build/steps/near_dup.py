"""Step ``near_dup``: keep one representative per cluster of near-duplicate problems.

Two rows are near-duplicates when **all** of these hold:

1. **Text**: MinHash-LSH (:mod:`curation.build.minhash`) makes them candidates and the *exact* Jaccard of their
   word-``ngram`` shingle sets is >= ``threshold``. The text is the problem plus its options (multiple-choice
   problems with the same stem but different options are different problems), normalised by casefolding,
   punctuation -> space and collapsing whitespace.
2. **Numbers** (``match_numbers``, default on): the multisets of numbers in the two texts are equal
   (``\\d+([.,]\\d+)*``, thousands commas dropped). GSM8K-style problems that differ only in their numbers are
   different training problems (different answers), and shingle similarity cannot tell them apart from a
   light rewording: on 2,000 GSM8K train problems (mean 45 words), changing *one* number gives a 5-gram
   Jaccard of 0.61 / 0.79 / 0.89 (5th / 50th / 95th percentile; 43% are >= 0.8) while rewording *two* words
   gives 0.43 / 0.67 (only 9% >= 0.8). No threshold separates the two, so the number check does: with it
   on, number variants are always kept whatever the threshold; set ``match_numbers: false`` to let text
   similarity alone decide (then they are merged once their Jaccard reaches the threshold).
3. **Images**: a text-only row never duplicates a row with images; rows with images must have the same
   number of images and each image of one must match a distinct image of the other by content hash
   (identical bytes) or perceptually: their dHashes (:func:`curation.core.images.dhash`, ``image_hash_size``
   squared bits) differ in at most ``image_hamming`` bits *per 64*, i.e. in at most
   ``round(image_hamming * image_hash_size^2 / 64)`` bits. An image that cannot be decoded only matches
   identical bytes. Default 6 per 64 on a 16x16 = 256-bit dHash (<= 24 bits), because the 64-bit (8x8)
   dHash is too coarse for math figures: over the 304 MATH-Vision testmini images two *different* figures
   lie 1 bit apart at 8x8 (composite "<image1>/<image2>" layouts on white), while at 16x16 the closest
   different figures are 28 bits apart and a JPEG re-encode (quality 70, 80% size) of every image stays
   within 21 bits (quality 50, half size: within 22). ``image_hash_size: 8`` gives the classic 64-bit
   setting. A copy of a figure re-laid-out with different margins is not caught (MATH-Vision 773/1050:
   same figure, 765x516 vs 810x515 pixels, 38 of 256 bits apart).

Defaults ``ngram=3, threshold=0.6`` (not 5 / 0.8, the web-text defaults of :mod:`curation.build.minhash`): math
problems are short, so a 5-gram shingle set loses 5 of ~40 shingles per changed word. Measured on 2,000
GSM8K train problems each planted with a 2-word rewording (substitution/insertion/deletion) among the 7,473
train problems, end-to-end recall is 0.97 with 3-grams at 0.6 (LSH bands tuned with false-negative weight
0.8) versus 0.09 (exact Jaccard >= 0.8, before LSH losses) with 5-grams at 0.8; among the 7,473 distinct
train problems it flags one pair (the same problem with another person's name) once numbers must match.

Clusters are connected components of the accepted pairs (union-find); the representative is the earliest
row of the cluster, every other row is excluded as ``near_duplicate`` with ``duplicate_of`` = the
representative's id and detail ``jaccard~0.87`` (exact shingle Jaccard to the representative; a row linked
through a chain can be lower than the threshold, the detail then says so) plus ``conflicting answer`` when
the gold answers differ. Rows whose ``problem`` is not a string cannot be compared and pass through unchanged
(validation is the ``sanity`` step's job).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from curation.build.minhash import NearDupIndex, cluster_representatives
from curation.build.steps.base import Excluded, Step
from curation.core.images import ImageError, content_hash, dhash, hamming

_NUM = re.compile(r"\d+(?:[.,]\d+)*")


def problem_text(row: dict) -> str:
    """The text compared for near-duplicates: the problem followed by its options."""
    opts = row.get("options") or []
    text = row["problem"]
    if opts:
        text = text + "\n" + "\n".join(str(o) for o in opts)
    return text


def number_key(text: str) -> tuple[str, ...]:
    """Sorted multiset of the numbers in ``text`` (thousands separators removed)."""
    return tuple(sorted(m.replace(",", "") for m in _NUM.findall(text)))


class _ImageInfo:
    """Lazily computed content hashes and dHashes (``size`` x ``size`` bits) of one row's images."""

    def __init__(self, images: list, size: int):
        self.images = [im for im in images if isinstance(im, dict)]
        self.size = size
        self._sha: list[str | None] | None = None
        self._dh: list[int | None] | None = None

    @property
    def sha(self) -> list[str | None]:
        if self._sha is None:
            self._sha = [content_hash(im) if im.get("bytes") else None for im in self.images]
        return self._sha

    @property
    def dh(self) -> list[int | None]:
        if self._dh is None:
            out: list[int | None] = []
            for im in self.images:
                try:
                    out.append(dhash(im, self.size))
                except (ImageError, OSError, ValueError):
                    out.append(None)
            self._dh = out
        return self._dh


def images_match(a: _ImageInfo, b: _ImageInfo, max_bits: int) -> bool:
    """Same number of images and a one-to-one matching where each pair is byte-identical or dHash-close."""
    if len(a.images) != len(b.images):
        return False
    if not a.images:
        return True
    unused = list(range(len(b.images)))
    for ia in range(len(a.images)):
        hit = next((ib for ib in unused if a.sha[ia] is not None and a.sha[ia] == b.sha[ib]), None)
        if hit is None:
            da = a.dh[ia]
            if da is not None:
                hit = next(
                    (ib for ib in unused if b.dh[ib] is not None and hamming(da, b.dh[ib]) <= max_bits), None
                )
        if hit is None:
            return False
        unused.remove(hit)
    return True


@dataclass
class NearDup(Step):
    """Options: ``threshold`` (exact shingle Jaccard), ``ngram`` (words per shingle), ``num_perm`` (MinHash
    permutations), ``image_hamming`` (max dHash bits apart per 64), ``image_hash_size`` (dHash side),
    ``match_numbers``, ``seed``."""

    name = "near_dup"

    threshold: float = 0.6
    ngram: int = 3
    num_perm: int = 128
    image_hamming: float = 6
    image_hash_size: int = 16
    match_numbers: bool = True
    seed: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"near_dup: threshold must lie in (0, 1), got {self.threshold}")
        if self.ngram < 1:
            raise ValueError(f"near_dup: ngram must be >= 1, got {self.ngram}")
        if not 2 <= self.image_hash_size <= 64:
            raise ValueError(f"near_dup: image_hash_size must lie in [2, 64], got {self.image_hash_size}")
        if not 0 <= self.image_hamming <= 64:
            raise ValueError(f"near_dup: image_hamming (bits per 64) must lie in [0, 64], got {self.image_hamming}")

    def run(self, rows: Iterable[dict]) -> Iterator[dict | Excluded]:
        rows = list(rows)
        usable = [k for k, r in enumerate(rows) if isinstance(r.get("problem"), str)]
        texts = [problem_text(rows[k]) for k in usable]
        index = NearDupIndex(
            threshold=self.threshold,
            num_perm=self.num_perm,
            ngram=self.ngram,
            seed=self.seed,
            false_negative_weight=0.8,  # favour recall: every candidate is verified exactly afterwards
        )
        index.add(texts)
        pairs = index.duplicate_pairs()
        max_bits = round(self.image_hamming * self.image_hash_size**2 / 64)  # "per 64" scaled to the hash
        ok = np.ones(len(pairs), dtype=bool)
        nums = [number_key(t) for t in texts] if self.match_numbers else None
        infos: dict[int, _ImageInfo] = {}

        def info(u: int) -> _ImageInfo:
            if u not in infos:
                infos[u] = _ImageInfo(list(rows[usable[u]].get("images") or []), self.image_hash_size)
            return infos[u]

        for k, (a, b) in enumerate(zip(pairs.left.tolist(), pairs.right.tolist())):
            if nums is not None and nums[a] != nums[b]:
                ok[k] = False
            elif not images_match(info(a), info(b), max_bits):
                ok[k] = False
        pairs = pairs.select(ok)
        reps = cluster_representatives(len(usable), pairs.left, pairs.right)
        dup = np.flatnonzero(reps != np.arange(len(usable)))
        jac = dict(zip(dup.tolist(), index.jaccard(dup, reps[dup]).tolist()))
        rep_of = {usable[u]: usable[int(reps[u])] for u in dup.tolist()}
        jac_of = {usable[u]: jac[u] for u in dup.tolist()}
        for k, row in enumerate(rows):
            if k not in rep_of:
                yield row
                continue
            kept = rows[rep_of[k]]
            j = jac_of[k]
            detail = f"jaccard~{j:.2f}"
            if j < self.threshold:
                detail += " (linked to the kept row through a chain of near-duplicates)"
            if (kept.get("answer") or "") != (row.get("answer") or ""):
                detail += f"; conflicting answer: kept {kept.get('answer')!r}, this row {row.get('answer')!r}"
            yield Excluded(row, "near_duplicate", detail=detail, duplicate_of=kept.get("id"))
