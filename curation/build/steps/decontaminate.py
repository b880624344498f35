"""Step ``decontaminate``: drop training problems that overlap evaluation benchmarks.

Both sides are normalised the same way before comparison (:func:`curation.build.minhash.normalize_text` with
``mask_numbers=True``): casefold, every number (``\\d+([.,]\\d+)*``) -> the placeholder ``0``, punctuation,
symbols and LaTeX markup characters -> space, whitespace collapsed. So ``"Cities $A$ and $B$ are $50$ miles
apart."`` and ``"cities A and B are 45 miles apart"`` both become ``"cities a and b are 0 miles apart"``.

A row is excluded as ``benchmark_contamination`` when either check fires (checked in this order):

1. ``ngram`` (open-r1's ``decontaminate.py`` n-gram rule, made number- and punctuation-blind): the row
   shares word ``ngram``-grams (default 8) with a benchmark problem, and the shared ones cover at least
   ``ngram_overlap`` (default 0.2) of the smaller of the two n-gram sets:
   ``|G(row) n G(bench)| / min(|G(row)|, |G(bench)|) >= ngram_overlap``. ``ngram_overlap: 0`` is open-r1's
   "any shared n-gram"; with numbers masked that flags stock phrases (2 of the 7,473 GSM8K train problems
   share only "at <n> miles per hour how many miles" with AMC23 #0; 4 of 8,792 train + test), while the
   0.2 default flags none of the 8,792 (their largest coverage is 0.09). Catches verbatim copies, copies
   with changed numbers or formatting (100% coverage), a benchmark problem embedded in a longer text (100%
   of the benchmark's n-grams) and light paraphrases (the tests' paraphrase of AMC23 #0, four rewordings and new numbers, keeps
   32%). A text with
   fewer than ``ngram`` words is compared as a whole: a short row matches only a short benchmark problem
   with the same normalised text (and vice versa).
2. ``fuzzy`` (``fuzzy: true``): the exact Jaccard of the two texts' word-``fuzzy_ngram`` shingle sets
   (default 2-grams, numbers masked) is >= ``fuzzy_threshold`` (default 0.3), candidates found by
   MinHash-LSH (:class:`curation.build.minhash.NearDupIndex`, tuned for recall: a pair at Jaccard 0.3 is missed
   with probability 2.1%, at 0.4 with 0.1%) and verified exactly. Catches paraphrases that reword often
   enough to leave too few common 8-grams while keeping much of the wording: over the 312 AMC23 + Minerva
   problems, replacing every 5th word gives bigram Jaccard 0.43-0.48 (10th-50th percentile; every 4th:
   0.34-0.38), the hand paraphrase of AMC23 #0 in the tests scores 0.33, while no GSM8K problem
   (train + test, 8,792) exceeds 0.154 against any of them.

Not caught: paraphrases that rewrite most of the wording (semantic rewrites, translations), the same
problem in a different number format (``five`` vs ``5``), and a short row (< ``ngram`` words) that is a
fragment of a longer benchmark problem.

The detail names the method, the benchmark file (as given in ``benchmarks``), the matched benchmark row (its
0-based row number and its ``id``/``idx``/``unique_id`` when the file has one) and the evidence (the shared
n-gram, or the Jaccard). Benchmark files are JSONL or Parquet (anything :func:`curation.core.io.read_records`
reads) with a ``problem`` or ``question`` column (``column: auto`` takes the first of these that a row has).
A benchmark that cannot be read is a configuration error and stops the step with a message naming the file
and row (a missing file already when the step is built); with no benchmarks at all the step warns and passes
every row (recipes list it with ``benchmarks: []`` and ``curate build --decontaminate FILE`` adds them). A
training row without a string ``problem`` cannot be compared and passes through unchanged.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from curation.core.io import read_records
from curation.build.minhash import MinHasher, NearDupIndex, normalize_text, unique_doc_shingles
from curation.build.steps.base import Excluded, Step

_ID_COLUMNS = ("id", "unique_id", "idx", "problem_id")


@dataclass(frozen=True)
class BenchmarkProblem:
    file: str
    row: int
    id: str | None
    text: str

    def label(self) -> str:
        who = f"{self.file} row {self.row}"
        return who + (f" (id={self.id})" if self.id is not None and self.id != str(self.row) else "")


def load_benchmark(path: str, column: str = "auto") -> list[BenchmarkProblem]:
    """The problems of one benchmark file; raises ``ValueError`` naming the file and row on bad input."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"decontaminate: benchmark file not found: {path}")
    out: list[BenchmarkProblem] = []
    for k, rec in enumerate(read_records(p)):
        if rec.error is not None or rec.data is None:
            raise ValueError(f"decontaminate: benchmark {rec.locator}: cannot parse: {rec.error}")
        data = rec.data
        col = column
        if column == "auto":
            col = next((c for c in ("problem", "question") if isinstance(data.get(c), str)), "")
            if not col:
                raise ValueError(
                    f"decontaminate: benchmark {rec.locator}: no string 'problem' or 'question' column "
                    f"(columns: {sorted(data)}); set column: to the problem column"
                )
        text = data.get(col)
        if not isinstance(text, str):
            raise ValueError(f"decontaminate: benchmark {rec.locator}: column {col!r} is not a string ({text!r})")
        rid = next((data[c] for c in _ID_COLUMNS if data.get(c) is not None), None)
        out.append(BenchmarkProblem(path, k, None if rid is None else str(rid), text))
    if not out:
        raise ValueError(f"decontaminate: benchmark {path} has no rows")
    return out


def _first_shared_ngram(a: str, b: str, n: int) -> str:
    """The first word n-gram of normalised ``a`` that also occurs in normalised ``b`` (for the detail)."""
    wa = normalize_text(a, mask_numbers=True).split()
    wb = normalize_text(b, mask_numbers=True).split()
    grams_b = {tuple(wb[i : i + n]) for i in range(len(wb) - n + 1)}
    for i in range(len(wa) - n + 1):
        g = tuple(wa[i : i + n])
        if g in grams_b:
            return " ".join(g)
    return "?"  # only on a 64-bit hash collision


@dataclass
class Decontaminate(Step):
    """Options: ``benchmarks`` (paths), ``ngram`` (words), ``column`` (``auto``/name), ``ngram_overlap``
    (min. shared fraction of the smaller n-gram set), ``fuzzy``, ``fuzzy_threshold``, ``fuzzy_ngram``,
    ``num_perm``, ``seed``."""

    name = "decontaminate"

    benchmarks: list[str] = field(default_factory=list)
    ngram: int = 8
    column: str = "auto"
    ngram_overlap: float = 0.2
    fuzzy: bool = True
    fuzzy_threshold: float = 0.3
    fuzzy_ngram: int = 2
    num_perm: int = 128
    seed: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.benchmarks, str):
            self.benchmarks = [self.benchmarks]
        for b in self.benchmarks:  # fail at recipe load, not after the steps before this one ran
            if not Path(b).exists():
                raise FileNotFoundError(f"decontaminate: benchmark file not found: {b}")
        if self.ngram < 1:
            raise ValueError(f"decontaminate: ngram must be >= 1, got {self.ngram}")
        if not 0.0 <= self.ngram_overlap <= 1.0:
            raise ValueError(f"decontaminate: ngram_overlap must lie in [0, 1], got {self.ngram_overlap}")
        if not 0.0 < self.fuzzy_threshold < 1.0:
            raise ValueError(f"decontaminate: fuzzy_threshold must lie in (0, 1), got {self.fuzzy_threshold}")

    def matches(self, texts: list[str]) -> list[tuple[str, str] | None]:
        """For each text: ``(method, detail)`` of its benchmark match, or None when clean."""
        bench: list[BenchmarkProblem] = []
        for path in self.benchmarks:
            bench += load_benchmark(path, self.column)
        result: list[tuple[str, str] | None] = [None] * len(texts)

        # 1. n-gram overlap after normalisation (numbers masked): shared = |G(row) n G(bench)| over the sets
        #    of word n-gram hashes; flagged when shared >= 1 and shared / min(|G(row)|, |G(bench)|) >=
        #    ngram_overlap (a text shorter than n words has one "n-gram": its whole normalised text).
        hasher = MinHasher(num_perm=2, ngram=self.ngram, seed=self.seed, mask_numbers=True)
        b_doc, b_val = unique_doc_shingles(hasher.shingles([b.text for b in bench]))
        b_size = np.bincount(b_doc, minlength=len(bench))
        order = np.argsort(b_val, kind="stable")
        b_val, b_doc = b_val[order], b_doc[order]
        nb = len(bench)
        batch = 8192
        for s in range(0, len(texts), batch):
            chunk = texts[s : s + batch]
            r_doc, r_val = unique_doc_shingles(hasher.shingles(chunk))
            r_size = np.bincount(r_doc, minlength=len(chunk))
            left = np.searchsorted(b_val, r_val, side="left")
            cnt = np.searchsorted(b_val, r_val, side="right") - left
            if not cnt.any():
                continue
            within = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            q = np.repeat(r_doc, cnt)
            d = b_doc[np.repeat(left, cnt) + within]
            codes, shared = np.unique(q * nb + d, return_counts=True)
            q, d = codes // nb, codes % nb
            cover = shared / np.minimum(r_size[q], b_size[d])
            ok = cover >= self.ngram_overlap
            # best benchmark match per row: highest coverage (ties: first benchmark row)
            q, d, shared, cover = q[ok], d[ok], shared[ok], cover[ok]
            pick = np.lexsort((d, -cover, q))
            q, d, shared, cover = q[pick], d[pick], shared[pick], cover[pick]
            first = np.ones(len(q), dtype=bool)
            first[1:] = q[1:] != q[:-1]
            for qi, di, si, ci in zip(q[first].tolist(), d[first].tolist(), shared[first].tolist(),
                                      cover[first].tolist()):
                t, b = chunk[qi], bench[di]
                words = normalize_text(t, mask_numbers=True).split()
                if len(words) < self.ngram:
                    evidence = f"same normalised text {' '.join(words)!r} as"
                else:
                    gram = _first_shared_ngram(t, b.text, self.ngram)
                    evidence = (
                        f"{si} shared {self.ngram}-grams ({ci:.0%} of the shorter text's), e.g. {gram!r}, with"
                    )
                result[s + qi] = ("ngram", f"ngram: {evidence} {b.label()}")

        # 2. fuzzy: MinHash-LSH + exact Jaccard of word shingles (numbers masked)
        if self.fuzzy:
            rest = [k for k, r in enumerate(result) if r is None]
            index = NearDupIndex(
                threshold=self.fuzzy_threshold,
                num_perm=self.num_perm,
                ngram=self.fuzzy_ngram,
                seed=self.seed,
                mask_numbers=True,
                # recall first: with 128 permutations this picks 41 bands x 2 rows, which misses a pair at
                # Jaccard 0.3 with probability (1 - 0.3^2)^41 = 2.1% (0.4: 0.1%); every candidate is then
                # verified exactly, so false candidates cost only time (0.5 per GSM8K row vs 312 problems)
                false_negative_weight=0.95,
            )
            index.add([b.text for b in bench])
            pairs = index.query([texts[k] for k in rest])
            best: dict[int, tuple[float, int]] = {}
            for q, d, j in zip(pairs.left.tolist(), pairs.right.tolist(), pairs.jaccard.tolist()):
                if q not in best or j > best[q][0]:
                    best[q] = (j, d)
            for q, (j, d) in best.items():
                result[rest[q]] = (
                    "fuzzy",
                    f"fuzzy: jaccard {j:.2f} of {self.fuzzy_ngram}-gram shingles (numbers masked) "
                    f"with {bench[d].label()}",
                )
        return result

    def run(self, rows: Iterable[dict]) -> Iterator[dict | Excluded]:
        if not self.benchmarks:  # recipes may list the step with benchmarks given later on the CLI
            warnings.warn("decontaminate: no benchmarks configured (benchmarks: [...] or curate build "
                          "--decontaminate FILE); rows pass unchecked", stacklevel=2)
            yield from rows
            return
        rows = list(rows)
        usable = [k for k, r in enumerate(rows) if isinstance(r.get("problem"), str)]
        found = self.matches([rows[k]["problem"] for k in usable])
        hit = {usable[i]: m for i, m in enumerate(found) if m is not None}
        for k, row in enumerate(rows):
            if k in hit:
                yield Excluded(row, "benchmark_contamination", detail=hit[k][1])
            else:
                yield row
