"""Step ``decontaminate``: drop training problems that overlap evaluation benchmarks, text and multimodal.

Both sides are normalised the same way before comparison (:func:`curation.build.minhash.normalize_text` with
``mask_numbers=True``): casefold, every number (``\\d+([.,]\\d+)*``) -> the placeholder ``0``, punctuation,
symbols and LaTeX markup characters -> space, whitespace collapsed. So ``"Cities $A$ and $B$ are $50$ miles
apart."`` and ``"cities A and B are 45 miles apart"`` both become ``"cities a and b are 0 miles apart"``.

**Text rule.** A row is excluded as ``benchmark_contamination`` when either check fires (checked in this order):

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

**Rows and items with images** (the multimodal rule). Visual math problems often have generic text ("How many
dots are in the picture? <image1>") and differ only by their figure, so for a training row with images and a
benchmark item with images, a text match alone is *not* contamination. Two images are compared by their
signatures (:func:`curation.core.images.image_signatures`, after decoding to grey, trimming uniform margins
and padding 5 % white): ``d`` = the Hamming distance of their 256-bit pHashes, and ``c`` = ``1 - r``, one
minus the correlation of their 16 x 16 thumbnails. An image pair is *near-identical* when ``d <=
image_strict`` (default 48 bits) or ``c <= image_ncc`` (default 0.03), *similar* when ``d <= image_loose``
(default 72) or ``c <= image_ncc``. The pair (row, item) is contaminated when

3. ``text+image``: the text rule above matches the pair (8-gram coverage >= ``ngram_overlap`` or, with
   ``fuzzy``, bigram Jaccard >= ``fuzzy_threshold``) **and** an image of the row is similar to an image of
   the item; or
4. ``image+overlap``: an image is near-identical **and** the content-word overlap coefficient of the two
   texts ``|W(row) n W(item)| / min(|W(row)|, |W(item)|) >= min_overlap`` (default 0.5; ``W`` = the set of
   normalised words minus stop words, numbers and one-letter words): the same figure, reworded question; or
5. ``image``: an image is near-identical and the item's text has no content word at all (its question is in
   the figure: MathVerse's Vision-Only version).

Same text over a different figure (no image of the row similar to the item's) is kept, and counted per
benchmark as ``kept_text_match_other_image`` in stats.json. The operating point comes from a measurement on
MATH-Vision (README "Decontamination against multimodal benchmarks"): among 1.6 M pairs of distinct figures
(and transformed copies against other figures) none has ``d <= 55`` or ``c < 0.04``, while of the
re-encoded, resized, cropped, bordered, letterboxed and grey copies 97.4 % are near-identical and 99.1 %
similar to their original (``bench/image_match.py``); ``d <= 72`` accepts 2.2e-4 of the distinct pairs, which is why it needs a text
match too. Candidates come from the images (every similar pair, found by
:class:`curation.build.image_index.ImageIndex` with each image decoded once), so the text work is per
candidate pair. A row with images against an item without images is judged by the text rule
(1-2) alone; so is a **text-only row**, against every item (``text_only_rows: text``, the default: "a
text-only row is judged on text as today"). ``text_only_rows: guarded`` compares a text-only row with an
item that has images only when that item's text is self-contained (>= 12 content words and not the text of
another benchmark item), since a generic question copied without its figure is not that item;
``text_only_rows: skip`` never compares them.

Benchmarks (:mod:`curation.build.benchmarks`): ``benchmarks`` lists paths, ``PATH:preset`` strings or
mappings ``{path, preset, map, image_root, name}``; files are JSONL, JSON, Parquet, Parquet folders and
``save_to_disk`` folders whose rows carry problem text and optionally image paths or bytes, read through the
``curate ingest --map`` vocabulary, with presets for the published layouts (mathvista, mathverse,
math_vision, wemath, dynamath, logicvista, math500, aime, amc23, gsm8k, minerva_math, olympiadbench). Without
a preset or map, ``column: auto`` takes the first string of ``problem`` / ``question`` (or ``column:`` names
it). Image placeholders (``<image1>``, ``<image_2>``, ``<img_3>``) are dropped from both texts before they
are compared.

The detail names the method, the benchmark (its preset or name when it has one, and the file as given), the
matched benchmark row (its 0-based row number and its id when the file has one) and the evidence (the
shared n-gram or the Jaccard; for the multimodal rules also the image distance in bits and the thresholds).
stats.json gets, under the step, ``benchmarks_checked`` (per benchmark: its name, path, preset, items,
items with images, images, undecodable images - they match identical bytes only -, rows excluded, by rule,
and ``kept_text_match_other_image``: rows whose text matched but no image did) and ``thresholds``. A benchmark that cannot be read is a configuration
error and stops the step with a message naming the file and row (a missing file or unknown preset already
when the step is built); with no benchmarks at all the step warns and passes every row (recipes list it with
``benchmarks: []`` and ``curate build --decontaminate FILE[:preset]`` adds them). A training row without a
string ``problem`` cannot be compared and passes through unchanged.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from curation.build.benchmarks import BenchItem, BenchmarkSpec, read_benchmark, strip_image_tokens
from curation.build.image_index import ImageIndex
from curation.build.minhash import MinHasher, NearDupIndex, normalize_text, unique_doc_shingles
from curation.build.steps.base import Excluded, Step
from curation.core.images import PHASH_BITS

# The operating point measured on MATH-Vision (module docstring; README "Decontamination against multimodal
# benchmarks"): bits of the 256-bit pHash.
IMAGE_STRICT = 48
IMAGE_LOOSE = 72
IMAGE_NCC = 0.03  # 1 - correlation of the 16 x 16 thumbnails: an image within it counts as near-identical
MIN_OVERLAP = 0.5
GUARDED_MIN_WORDS = 12
TEXT_ONLY_ROWS = ("text", "guarded", "skip")

# Words that carry no problem content for the image+overlap rule (function words, question frames, and the
# words every figure question uses).
STOP_WORDS = frozenset("""
a an the of to in on at by for from with and or but if then than that this these those there here is are was
were be been being do does did has have had it its as into out up down over under so such not no can could
will would shall should may might must what which who whom whose when where why how each every all any some
one two both either neither other another same different many much more most few less least very also only
just now i you he she we they me him her us them my your his our their find determine compute calculate
give given let show shown below above following figure picture image diagram drawn draw see look
""".split())

# preference between the rules when a row matches several items (then the smaller image distance)
_RANK = {"text+image": 0, "ngram": 1, "fuzzy": 2, "image+overlap": 3, "image": 4}


def load_benchmark(path: str, column: str = "auto") -> list[BenchItem]:
    """The problems of one benchmark (a path, ``PATH:preset`` or a mapping: :mod:`curation.build.benchmarks`);
    raises ``ValueError`` naming the file and row on bad input, ``FileNotFoundError`` for a missing file."""
    return read_benchmark(path, column=column)


@lru_cache(maxsize=1 << 17)
def content_words(text: str) -> frozenset[str]:
    """Normalised words of ``text`` (numbers masked, image placeholders dropped) minus :data:`STOP_WORDS`, the
    number placeholder and one-letter words: what the ``image+overlap`` rule compares."""
    words = normalize_text(strip_image_tokens(text), mask_numbers=True).split()
    return frozenset(w for w in words if len(w) > 1 and w not in STOP_WORDS)


def content_overlap(a: str, b: str) -> float:
    """Overlap coefficient ``|W(a) n W(b)| / min(|W(a)|, |W(b)|)`` of the content-word sets (0 if one is empty)."""
    wa, wb = content_words(a), content_words(b)
    return len(wa & wb) / min(len(wa), len(wb)) if wa and wb else 0.0


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


def _best_per_row(q: np.ndarray, *keys: np.ndarray) -> np.ndarray:
    """Positions of the first entry per ``q`` after sorting by ``q`` then ``keys`` (most significant first)."""
    if len(q) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort(tuple(reversed(keys)) + (q,))
    first = np.ones(len(order), dtype=bool)
    first[1:] = q[order][1:] != q[order][:-1]
    return order[first]


@dataclass
class _Match:
    item: int
    method: str
    detail: str
    bits: int = PHASH_BITS + 1

    def rank(self) -> tuple[int, int]:
        return _RANK[self.method], self.bits


@dataclass
class _Bench:
    """The loaded benchmarks: items (image bytes dropped once hashed), their text variants, image index."""

    specs: list[BenchmarkSpec]
    items: list[BenchItem]
    spec_of: np.ndarray  # item -> position in specs
    has_images: np.ndarray  # item -> has images
    var_text: list[str]  # every compared text (placeholders dropped)
    var_item: np.ndarray  # text variant -> item
    var_empty: np.ndarray  # text variant has no words (never text-matches: MathVerse Vision-Only questions)
    index: ImageIndex
    img_item: np.ndarray  # indexed image -> item
    self_contained: np.ndarray  # item -> a text of its own (guarded policy)
    undecodable: list[int]  # per spec: images that could not be decoded (match identical bytes only)


@dataclass
class Decontaminate(Step):
    """Options: ``benchmarks`` (paths, ``PATH:preset`` or ``{path, preset, map, image_root, name}``), ``ngram``
    (words), ``column`` (``auto``/name), ``ngram_overlap`` (min. shared fraction of the smaller n-gram set),
    ``fuzzy``, ``fuzzy_threshold``, ``fuzzy_ngram``, ``num_perm``, ``seed``; for rows with images
    ``image_strict`` / ``image_loose`` (max. pHash bits of 256), ``image_ncc`` (max. thumbnail ``1 - r``),
    ``min_overlap`` (content-word overlap coefficient), and ``text_only_rows`` (``text`` / ``guarded`` / ``skip``: text-only rows against items with
    images)."""

    name = "decontaminate"

    benchmarks: list[Any] = field(default_factory=list)
    ngram: int = 8
    column: str = "auto"
    ngram_overlap: float = 0.2
    fuzzy: bool = True
    fuzzy_threshold: float = 0.3
    fuzzy_ngram: int = 2
    num_perm: int = 128
    seed: int = 1
    image_strict: int = IMAGE_STRICT
    image_loose: int = IMAGE_LOOSE
    image_ncc: float = IMAGE_NCC
    min_overlap: float = MIN_OVERLAP
    text_only_rows: str = "text"

    def __post_init__(self) -> None:
        if isinstance(self.benchmarks, (str, dict)):
            self.benchmarks = [self.benchmarks]
        # fail at recipe load (missing file, unknown preset or key), not after the steps before this one ran
        self._specs = [BenchmarkSpec.parse(b) for b in self.benchmarks]
        if self.ngram < 1:
            raise ValueError(f"decontaminate: ngram must be >= 1, got {self.ngram}")
        if not 0.0 <= self.ngram_overlap <= 1.0:
            raise ValueError(f"decontaminate: ngram_overlap must lie in [0, 1], got {self.ngram_overlap}")
        if not 0.0 < self.fuzzy_threshold < 1.0:
            raise ValueError(f"decontaminate: fuzzy_threshold must lie in (0, 1), got {self.fuzzy_threshold}")
        if not 0 <= self.image_strict <= self.image_loose <= PHASH_BITS:
            raise ValueError(f"decontaminate: need 0 <= image_strict <= image_loose <= {PHASH_BITS} (bits), got "
                             f"{self.image_strict} and {self.image_loose}")
        if not 0.0 <= self.image_ncc < 1.0:
            raise ValueError(f"decontaminate: image_ncc must lie in [0, 1), got {self.image_ncc}")
        if not 0.0 < self.min_overlap <= 1.0:
            raise ValueError(f"decontaminate: min_overlap must lie in (0, 1], got {self.min_overlap}")
        if self.text_only_rows not in TEXT_ONLY_ROWS:
            raise ValueError(f"decontaminate: text_only_rows must be one of {', '.join(TEXT_ONLY_ROWS)}, got "
                             f"{self.text_only_rows!r}")
        self._bench: _Bench | None = None
        self._summary: dict = {}

    # -- benchmarks -----------------------------------------------------------------------------------------

    def _load(self) -> _Bench:
        if self._bench is not None:
            return self._bench
        items: list[BenchItem] = []
        spec_of: list[int] = []
        index = ImageIndex()
        img_item: list[np.ndarray] = []
        undecodable = []
        for s, spec in enumerate(self._specs):
            part = read_benchmark(spec, column=self.column)
            flat = [im for it in part for im in it.images]
            owners = np.repeat(np.arange(len(items), len(items) + len(part)), [len(it.images) for it in part])
            ok = index.add(flat)  # hashed now, one benchmark at a time: its bytes can then be dropped
            undecodable.append(int((~ok).sum()))
            img_item.append(owners)
            for it in part:
                it.images = [{"path": im.get("path")} for im in it.images]
            items += part
            spec_of += [s] * len(part)
        var_text, var_item = [], []
        for k, it in enumerate(items):
            for t in it.texts or [it.problem]:
                var_text.append(strip_image_tokens(t))
                var_item.append(k)
        norm = [normalize_text(strip_image_tokens(it.problem), mask_numbers=True) for it in items]
        counts: dict[str, int] = {}
        for t in norm:
            counts[t] = counts.get(t, 0) + 1
        self_contained = np.array([len(content_words(it.problem)) >= GUARDED_MIN_WORDS and counts[t] == 1
                                   for it, t in zip(items, norm)], dtype=bool)
        var_empty = np.array([not normalize_text(t).strip() for t in var_text], dtype=bool)
        self._bench = _Bench(self._specs, items, np.asarray(spec_of, dtype=np.int64),
                             np.array([bool(it.images) for it in items], dtype=bool), var_text,
                             np.asarray(var_item, dtype=np.int64), var_empty, index,
                             np.concatenate(img_item) if img_item else np.zeros(0, np.int64), self_contained,
                             undecodable)
        return self._bench

    def _label(self, b: _Bench, item: int) -> str:
        it, spec = b.items[item], b.specs[int(b.spec_of[item])]
        return (f"{spec.display} " if spec.preset or spec.name else "") + it.label()

    # -- the text rule, all pairs at once ---------------------------------------------------------------------

    def _ngram_pairs(self, texts: Sequence[str], b: _Bench) -> tuple[np.ndarray, ...]:
        """Every (row, text variant) pair with ``shared >= 1`` and ``shared / min(|G(row)|, |G(variant)|) >=
        ngram_overlap`` over the sets of word n-gram hashes (numbers masked; a text shorter than n words has
        one "n-gram": its whole normalised text): arrays ``(row, variant, shared, coverage)``."""
        hasher = MinHasher(num_perm=2, ngram=self.ngram, seed=self.seed, mask_numbers=True)
        b_doc, b_val = unique_doc_shingles(hasher.shingles(b.var_text))
        nb = len(b.var_text)
        b_size = np.bincount(b_doc, minlength=nb)
        order = np.argsort(b_val, kind="stable")
        b_val, b_doc = b_val[order], b_doc[order]
        out: list[list[np.ndarray]] = [[], [], [], []]
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
            ok &= ~b.var_empty[d]  # an empty benchmark text would "match" every empty row
            for lst, arr in zip(out, (q[ok] + s, d[ok], shared[ok], cover[ok])):
                lst.append(arr)
        return tuple(np.concatenate(x) if x else np.zeros(0, dt) for x, dt in
                     zip(out, (np.int64, np.int64, np.int64, np.float64)))

    def _fuzzy_pairs(self, texts: Sequence[str], rows: np.ndarray, b: _Bench) -> tuple[np.ndarray, ...]:
        """MinHash-LSH + exact Jaccard of word shingles (numbers masked) of ``texts[rows]`` against every text
        variant: arrays ``(row, variant, jaccard)`` with jaccard >= ``fuzzy_threshold``."""
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
        index.add(b.var_text)
        pairs = index.query([texts[k] for k in rows.tolist()])
        keep = ~b.var_empty[pairs.right]
        return rows[pairs.left[keep]], pairs.right[keep].astype(np.int64), pairs.jaccard[keep]

    def _text_detail_ngram(self, text: str, b: _Bench, var: int, shared: int, cover: float) -> str:
        words = normalize_text(text, mask_numbers=True).split()
        if len(words) < self.ngram:
            return f"same normalised text {' '.join(words)!r}"
        gram = _first_shared_ngram(text, b.var_text[var], self.ngram)
        return f"{shared} shared {self.ngram}-grams ({cover:.0%} of the shorter text's), e.g. {gram!r},"

    # -- the multimodal rule ------------------------------------------------------------------------------

    def _image_matches(self, texts: Sequence[str], images: Sequence[list], b: _Bench,
                       ngram_pairs: tuple[np.ndarray, ...], fuzzy_pairs: tuple[np.ndarray, ...]
                       ) -> tuple[dict[int, _Match], np.ndarray]:
        """Best multimodal match per row with images (rules 3-5 of the module docstring); the text evidence
        of a candidate pair is the text rule's, looked up in ``ngram_pairs`` ``(row, variant, shared,
        coverage)`` and ``fuzzy_pairs`` ``(row, variant, jaccard)`` of :meth:`_match`. Also returns the keys
        ``row * items + item`` of all candidate pairs, ascending."""
        flat, owner = [], []
        for k, ims in enumerate(images):
            for im in ims:
                if isinstance(im, dict):
                    flat.append(im)
                    owner.append(k)
        if not flat or not len(b.img_item):
            return {}, np.zeros(0, dtype=np.int64)
        pairs = b.index.search(flat, self.image_loose, self.image_ncc)
        q = np.asarray(owner, dtype=np.int64)[pairs.query]
        it = b.img_item[pairs.index]
        # one entry per (row, item): the smallest Hamming distance, and the smallest thumbnail distance
        key = q * len(b.items) + it
        pick = _best_per_row(key, pairs.bits)  # both in ascending key order, so aligned
        c = pairs.ncc[_best_per_row(key, pairs.ncc)]
        q, it, d = q[pick], it[pick], pairs.bits[pick]
        if not len(q):
            return {}, np.zeros(0, dtype=np.int64)
        # expand to (row, text variant) and look the pairs up among those the text rule matched
        var_start = np.searchsorted(b.var_item, np.arange(len(b.items)), side="left")
        var_count = np.bincount(b.var_item, minlength=len(b.items))
        cnt = var_count[it]
        pq_ = np.repeat(np.arange(len(q)), cnt)
        pv = np.repeat(var_start[it], cnt) + (np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt))
        nv = len(b.var_text)
        pair_key = q[pq_] * nv + pv

        def lookup(keys: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, ...]:
            """For each candidate pair: found among ``keys`` (sorted), and the values there (else 0)."""
            pos = np.clip(np.searchsorted(keys, pair_key), 0, max(len(keys) - 1, 0))
            found = keys[pos] == pair_key if len(keys) else np.zeros(len(pair_key), dtype=bool)
            return (found,) + tuple(np.where(found, v[pos], 0) if len(keys) else np.zeros(len(pair_key))
                                    for v in values)

        ng_q, ng_v, ng_shared, ng_cover = ngram_pairs
        order = np.argsort(ng_q * nv + ng_v)
        has_ng, inter, cover = lookup((ng_q * nv + ng_v)[order], ng_shared[order], ng_cover[order])
        fz_q, fz_v, fz_j = fuzzy_pairs
        order = np.argsort(fz_q * nv + fz_v)
        has_fz, jac = lookup((fz_q * nv + fz_v)[order], fz_j[order])
        text_ok = has_ng | has_fz
        # per (row, item): the best variant (a text match first, then the highest coverage, then Jaccard)
        best = _best_per_row(pq_, ~text_ok, -cover, -jac)
        found: dict[int, _Match] = {}
        for p in best.tolist():
            k = int(pq_[p])
            row, item, bits, cor = int(q[k]), int(it[k]), int(d[k]), float(c[k])
            label = self._label(b, item)
            same_thumb = cor <= self.image_ncc

            def far(limit: int, bits: int = bits, cor: float = cor) -> str:
                if bits <= limit or cor > self.image_ncc:
                    return f"an image {bits} of {PHASH_BITS} bits apart (<= {limit})"
                return (f"an image {bits} of {PHASH_BITS} bits apart with thumbnail correlation distance "
                        f"{cor:.3f} (<= {self.image_ncc})")

            m = None
            if text_ok[p] and (bits <= self.image_loose or same_thumb):
                if has_ng[p]:
                    ev = "ngram " + self._text_detail_ngram(texts[row], b, int(pv[p]), int(inter[p]), float(cover[p]))
                else:
                    ev = f"fuzzy jaccard {jac[p]:.2f} of {self.fuzzy_ngram}-gram shingles (numbers masked)"
                m = _Match(item, "text+image", f"text+image: {ev} and {far(self.image_loose)} with {label}", bits)
            elif bits <= self.image_strict or same_thumb:
                words = content_words(b.items[item].problem)
                v0 = int(var_start[item])
                ov = max(content_overlap(texts[row], b.var_text[v]) for v in range(v0, v0 + int(var_count[item])))
                if ov >= self.min_overlap:
                    m = _Match(item, "image+overlap",
                               f"image+overlap: {far(self.image_strict)} and content-word overlap {ov:.2f} "
                               f"(>= {self.min_overlap}; {self.ngram}-gram coverage {cover[p]:.0%}) with {label}",
                               bits)
                elif not words:
                    m = _Match(item, "image", f"image: {far(self.image_strict)} with {label}, whose text has no "
                                              "content words (its question is in the figure)", bits)
            if m is not None and (row not in found or m.rank() < found[row].rank()):
                found[row] = m
        return found, q * len(b.items) + it  # the candidate keys, ascending

    # -- all rules ------------------------------------------------------------------------------------------

    def matches(self, texts: Sequence[str], images: Sequence[list] | None = None) -> list[tuple[str, str] | None]:
        """For each text (with its row's images, if given): ``(method, detail)`` of its benchmark match, or None
        when clean."""
        return [None if m is None else (m.method, m.detail) for m in self._match(texts, images)]

    def _match(self, texts: Sequence[str], images: Sequence[list] | None) -> list[_Match | None]:
        b = self._load()
        n = len(texts)
        texts = [strip_image_tokens(t) for t in texts]
        images = [list(x or []) for x in images] if images is not None else [[] for _ in range(n)]
        row_img = np.array([bool(x) for x in images], dtype=bool)
        if self.text_only_rows == "text":
            text_only_ok = np.ones(len(b.items), dtype=bool)
        elif self.text_only_rows == "guarded":
            text_only_ok = b.self_contained
        else:
            text_only_ok = np.zeros(len(b.items), dtype=bool)

        def judged_on_text(q: np.ndarray, item: np.ndarray) -> np.ndarray:
            """Pairs decided by the text rule alone: items without images, and text-only rows per policy."""
            return ~b.has_images[item] | (~row_img[q] & text_only_ok[item])

        result: list[_Match | None] = [None] * n
        # 1. n-gram overlap; best benchmark match per row: highest coverage (ties: first benchmark row)
        q, v, shared, cover = self._ngram_pairs(texts, b)
        item = b.var_item[v]
        text_pairs = [(q, item)]
        ok = judged_on_text(q, item)
        for p in _best_per_row(q[ok], -cover[ok], v[ok]).tolist():
            qi, vi = int(q[ok][p]), int(v[ok][p])
            ev = self._text_detail_ngram(texts[qi], b, vi, int(shared[ok][p]), float(cover[ok][p]))
            label = self._label(b, int(b.var_item[vi]))
            result[qi] = _Match(int(b.var_item[vi]), "ngram",
                                f"ngram: {ev} {'as' if ev.startswith('same') else 'with'} {label}")
        # 2. fuzzy (rows not caught by the n-gram rule)
        fq, fv, fj = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        if self.fuzzy:
            rest = np.array([k for k in range(n) if result[k] is None], dtype=np.int64)
            fq, fv, fj = self._fuzzy_pairs(texts, rest, b)
            fitem = b.var_item[fv]
            text_pairs.append((fq, fitem))
            ok = judged_on_text(fq, fitem)
            for p in _best_per_row(fq[ok], -fj[ok], fv[ok]).tolist():
                qi, vi, j = int(fq[ok][p]), int(fv[ok][p]), float(fj[ok][p])
                result[qi] = _Match(int(b.var_item[vi]), "fuzzy",
                                    f"fuzzy: jaccard {j:.2f} of {self.fuzzy_ngram}-gram shingles (numbers masked) "
                                    f"with {self._label(b, int(b.var_item[vi]))}")
        # 3-5. rows with images against items with images
        cand = np.zeros(0, dtype=np.int64)  # (row * items + item) of every similar-image pair, sorted
        if row_img.any() and b.has_images.any():
            found, cand = self._image_matches(texts, images, b, (q, v, shared, cover), (fq, fv, fj))
            for row, m in found.items():
                if result[row] is None or m.rank() < result[row].rank():
                    result[row] = m
        # audit: text matches between a row and an item that both have images, kept because no image is close
        tq = np.concatenate([x for x, _ in text_pairs])
        ti = np.concatenate([y for _, y in text_pairs])
        keep = row_img[tq] & b.has_images[ti] & np.array([result[r] is None for r in tq.tolist()], dtype=bool)
        key = tq[keep] * len(b.items) + ti[keep]
        if len(cand):
            pos = np.clip(np.searchsorted(cand, key), 0, len(cand) - 1)
            key = key[cand[pos] != key]
        rows_specs = np.unique((key // len(b.items)) * len(b.specs) + b.spec_of[key % len(b.items)])
        kept_other_image = np.bincount(rows_specs % len(b.specs), minlength=len(b.specs))
        self._kept_other_image = kept_other_image
        return result

    # -- the step ---------------------------------------------------------------------------------------------

    def run(self, rows: Iterable[dict]) -> Iterator[dict | Excluded]:
        if not self.benchmarks:  # recipes may list the step with benchmarks given later on the CLI
            warnings.warn("decontaminate: no benchmarks configured (benchmarks: [...] or curate build "
                          "--decontaminate FILE); rows pass unchecked", stacklevel=2)
            yield from rows
            return
        rows = list(rows)
        usable = [k for k, r in enumerate(rows) if isinstance(r.get("problem"), str)]
        found = self._match([rows[k]["problem"] for k in usable], [rows[k].get("images") or [] for k in usable])
        hit = {usable[i]: m for i, m in enumerate(found) if m is not None}
        self._summarise(hit.values(), len(usable))
        for k, row in enumerate(rows):
            if k in hit:
                yield Excluded(row, "benchmark_contamination", detail=hit[k].detail)
            else:
                yield row

    def _summarise(self, hits: Iterable[_Match], n_rows: int) -> None:
        b = self._load()
        per = [{"name": s.display, "path": s.path, "preset": s.preset, "map": s.map or None, "items": 0, "items_with_images": 0,
                "images": 0, "images_undecodable": u, "excluded": 0, "excluded_by_rule": {},
                "kept_text_match_other_image": int(k)}
               for s, u, k in zip(b.specs, b.undecodable, self._kept_other_image)]
        for i, s in enumerate(b.spec_of.tolist()):
            per[s]["items"] += 1
            per[s]["items_with_images"] += int(b.has_images[i])
            per[s]["images"] += len(b.items[i].images)
        for m in hits:
            e = per[int(b.spec_of[m.item])]
            e["excluded"] += 1
            e["excluded_by_rule"][m.method] = e["excluded_by_rule"].get(m.method, 0) + 1
        self._summary = {"benchmarks_checked": per, "rows_compared": n_rows,
                         "thresholds": {"ngram": self.ngram, "ngram_overlap": self.ngram_overlap,
                                        "fuzzy_threshold": self.fuzzy_threshold if self.fuzzy else None,
                                        "image_hash": f"phash{PHASH_BITS}+trim+pad",
                                        "image_strict_bits": self.image_strict,
                                        "image_loose_bits": self.image_loose, "image_ncc": self.image_ncc,
                                        "min_overlap": self.min_overlap,
                                        "text_only_rows": self.text_only_rows}}

    def summary(self) -> dict:
        """Per-benchmark counts and thresholds of the last run (merged into the step's entry of stats.json)."""
        return self._summary
