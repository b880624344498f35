"""Vectorised MinHash + LSH for near-duplicate detection over word n-grams (numpy, no Python loop per shingle).

Pipeline (:class:`NearDupIndex`):

1. **Normalise** (:func:`normalize_text`): casefold; optionally replace every number (``\\d+([.,]\\d+)*``)
   by the placeholder token ``0`` (``mask_numbers=True``, used by decontamination); replace every run of
   punctuation / symbols / underscores (``[\\W_]+``) by one space; collapse whitespace. So
   ``"Cities $A$ and $B$ are $45$ miles apart."`` -> ``"cities a and b are 45 miles apart"``.
2. **Word hashes** (:func:`word_hashes`): a batch of normalised texts is joined into one byte buffer and
   tokenised by numpy; a word of bytes ``c_0..c_{L-1}`` hashes to
   ``fmix64(sum_i (c_i + 1) * K_min(i,255) + L * S mod 2^64)`` (``K_i``, ``S`` fixed random odd 64-bit
   constants; ``fmix64`` is MurmurHash3's 64-bit finaliser). No Python work per word.
3. **Shingles**: the shingle starting at word ``g`` of a document is ``fmix64(sum_k W[g+k] * C_k mod 2^64)``
   for ``k < ngram`` (``C_k`` fixed odd 64-bit constants, so word order matters), computed on the flat word
   array of the whole batch. A document with fewer than ``ngram`` words (including an empty one) is one
   shingle: the hash of its whole word sequence, salted by its length.
4. **MinHash signature**: ``num_perm`` hash functions from the strongly universal *multiply-add-shift*
   family ``h_{a,b}(x) = ((a*x + b) mod 2^64) >> 32`` (Dietzfelbinger 1996) on the 32-bit key
   ``x = shingle >> 32``, with random 64-bit ``a`` (odd) and ``b`` drawn from ``seed``. The signature of a
   document is ``sig[p] = min over its shingles x of h_p(x)``; since ``>> 32`` is monotone it is taken after
   the minimum. Computed one permutation at a time over the contiguous shingle array of a chunk of
   documents (1-D numpy kernels), with ``np.minimum.reduceat`` over document boundaries.
   ``P[sig_A[p] == sig_B[p]] = Jaccard(A, B)``.
5. **LSH banding**: ``b`` bands of ``r`` rows (``b*r <= num_perm``) chosen by :func:`optimal_param` as
   datasketch's ``_optimal_param`` does: minimise ``w_fp*FP + w_fn*FN`` (default weights 0.5/0.5;
   ``false_negative_weight`` raises recall at the cost of more candidates to verify) where
   ``FP = int_0^t 1-(1-s^r)^b ds`` and ``FN = int_t^1 (1-s^r)^b ds`` (integrated exactly by Gauss-Legendre:
   the integrands are polynomials of degree ``b*r``). Two documents are candidates when all ``r`` rows of some band agree (probability
   ``1-(1-J^r)^b``). Each band's ``r`` values are mixed into one 64-bit key; documents are sorted by key and
   every document is paired with up to ``max_bucket`` preceding documents of its bucket (so a bucket of
   identical texts costs O(n * max_bucket), not O(n^2); union-find still links the whole bucket).
6. **Verification**: every candidate pair is checked with the **exact Jaccard of the two shingle sets**
   (``|A n B| / |A u B|`` over the 64-bit shingle hashes, vectorised), not the signature estimate: pairs whose
   true Jaccard is >= ``threshold`` are never rejected by estimator noise, and the value reported is exact.
7. **Clustering** (:func:`cluster_representatives`): connected components of the verified pairs by a
   vectorised union-find (hook larger root onto smaller root, then pointer jumping); each component's
   representative is its smallest index, i.e. the earliest row - deterministic for a given input order.

Signatures depend only on the text, ``num_perm``, ``ngram``, ``seed`` and ``mask_numbers``: the same text gets
the same signature in every process (no use of Python's salted ``hash``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

_NUM = re.compile(r"\d+(?:[.,]\d+)*")
_NONWORD = re.compile(r"[\W_]+")

_U64 = np.uint64
_M64 = (1 << 64) - 1
# Position multipliers C_k of the shingle hash (odd 64-bit constants, from a fixed generator).
_POS = np.random.default_rng(0x5EED).integers(0, 1 << 63, size=64, dtype=np.uint64) * _U64(2) + _U64(1)
_SHORT_SALT = _U64(0x9E3779B97F4A7C15)


def normalize_text(text: str, *, mask_numbers: bool = False) -> str:
    """Casefold, optionally numbers -> ``0``, punctuation/symbols/underscores -> space, collapse whitespace."""
    t = text.casefold()
    if mask_numbers:
        t = _NUM.sub(" 0 ", t)
    return " ".join(_NONWORD.sub(" ", t).split())


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3 64-bit finaliser (a bijection with full avalanche), in place on a uint64 array."""
    h ^= h >> _U64(33)
    h *= _U64(0xFF51AFD7ED558CCD)
    h ^= h >> _U64(33)
    h *= _U64(0xC4CEB9FE1A85EC53)
    h ^= h >> _U64(33)
    return h


@lru_cache(maxsize=64)
def optimal_param(
    threshold: float, num_perm: int, false_positive_weight: float = 0.5, false_negative_weight: float = 0.5
) -> tuple[int, int]:
    """Bands ``b`` and rows ``r`` minimising ``fp_w * FP + fn_w * FN`` (datasketch's ``_optimal_param``).

    ``FP(b, r) = int_0^t P(s) ds`` and ``FN(b, r) = int_t^1 (1 - P(s)) ds`` with ``P(s) = 1 - (1 - s^r)^b`` the
    probability that two documents of Jaccard ``s`` share a band. ``P`` is a polynomial of degree ``b*r <=
    num_perm``, so Gauss-Legendre quadrature with ``num_perm//2 + 1`` nodes integrates it exactly.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    if num_perm < 2:
        raise ValueError(f"num_perm must be >= 2, got {num_perm}")
    x, w = np.polynomial.legendre.leggauss(num_perm // 2 + 1)
    lo = (x + 1) * (threshold / 2)  # nodes mapped to [0, t]
    hi = threshold + (x + 1) * ((1 - threshold) / 2)  # nodes mapped to [t, 1]
    best, opt = float("inf"), (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = (threshold / 2) * float(np.dot(w, 1 - (1 - lo**r) ** b))
            fn = ((1 - threshold) / 2) * float(np.dot(w, (1 - hi**r) ** b))
            err = fp * false_positive_weight + fn * false_negative_weight
            if err < best:
                best, opt = err, (b, r)
    return opt


# ASCII fast path of the normalisation: letters -> lower case, digits kept, every other byte -> space.
_ASCII_TABLE = bytes(
    (ord(chr(c).lower()) if chr(c).isalnum() else 32) if c < 128 else 32 for c in range(256)
)
_NUM_B = re.compile(rb"\d+(?:[.,]\d+)*")
# Per-character-position multipliers of the word hash (positions >= 255 share the last one).
_CHAR_POS = np.random.default_rng(0xC4A2).integers(0, 1 << 63, size=256, dtype=np.uint64) * _U64(2) + _U64(1)
_LEN_SALT = _U64(0xD6E8FEB86659FD93)


def _normalized_bytes(text: str, mask_numbers: bool) -> bytes:
    """UTF-8 bytes of :func:`normalize_text` (words separated by single or multiple spaces)."""
    if text.isascii():
        b = text.encode("ascii")
        if mask_numbers:
            b = _NUM_B.sub(b" 0 ", b)
        return b.translate(_ASCII_TABLE)
    t = text.casefold()
    if mask_numbers:
        t = _NUM.sub(" 0 ", t)
    return _NONWORD.sub(" ", t).encode("utf-8", "surrogatepass")


def word_hashes(texts: Sequence[str], *, mask_numbers: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the normalised words of all ``texts`` (flat, in order) and each text's word count.

    All texts are normalised to bytes (ASCII texts by a byte translation table, others by the regex of
    :func:`normalize_text`), joined by spaces into one buffer and tokenised with numpy: the hash of a word of
    bytes ``c_0..c_{L-1}`` is ``fmix64(sum_i (c_i + 1) * K_min(i,255) + L * S mod 2^64)`` with fixed random
    odd 64-bit ``K_i`` and ``S``. No Python work per word.
    """
    parts = [_normalized_bytes(t, mask_numbers) for t in texts]
    doc_start = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) + 1 for p in parts], out=doc_start[1:])
    arr = np.frombuffer(b" ".join(parts) + b" ", dtype=np.uint8)
    in_word = arr != 32
    start = np.empty(len(arr), dtype=bool)
    if len(arr):
        start[0] = in_word[0]
        start[1:] = in_word[1:] & ~in_word[:-1]
    chars = np.flatnonzero(in_word)
    fidx = np.flatnonzero(start[chars])  # index (among word characters) of each word's first character
    word_starts = chars[fidx]  # byte offset of each word
    if len(fidx):
        itype = np.int32 if len(chars) < (1 << 31) else np.int64
        word_len = np.diff(np.append(fidx, len(chars)))
        pos = np.arange(len(chars), dtype=itype) - np.repeat(fidx.astype(itype), word_len)
        np.minimum(pos, 255, out=pos)
        val = arr[chars].astype(np.uint64)
        val += _U64(1)
        val *= _CHAR_POS[pos]
        h = np.add.reduceat(val, fidx)
        h += word_len.astype(np.uint64) * _LEN_SALT
        _fmix64(h)
    else:
        h = np.zeros(0, dtype=np.uint64)
    doc = np.searchsorted(doc_start, word_starts, side="right") - 1
    return h, np.bincount(doc, minlength=len(parts)).astype(np.int64)


@dataclass
class Shingles:
    """Shingle hashes of a batch of documents: document ``d`` owns ``values[offsets[d]:offsets[d+1]]``."""

    values: np.ndarray  # uint64, every document has >= 1
    offsets: np.ndarray  # int64, len = n_docs + 1

    def __len__(self) -> int:
        return len(self.offsets) - 1


class MinHasher:
    """Text -> shingle hashes -> MinHash signatures, vectorised over batches of documents."""

    def __init__(self, num_perm: int = 128, ngram: int = 5, seed: int = 1, mask_numbers: bool = False):
        if num_perm < 2:
            raise ValueError(f"num_perm must be >= 2, got {num_perm}")
        if not 1 <= ngram <= len(_POS) - 1:
            raise ValueError(f"ngram must lie in [1, {len(_POS) - 1}], got {ngram}")
        self.num_perm, self.ngram, self.seed, self.mask_numbers = num_perm, ngram, seed, mask_numbers
        rng = np.random.default_rng(seed)
        self._a = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * _U64(2) + _U64(1)
        self._b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * _U64(2) + rng.integers(
            0, 2, size=num_perm, dtype=np.uint64
        )

    # -- shingles ---------------------------------------------------------------------------------------

    def shingles(self, texts: Sequence[str]) -> Shingles:
        """Shingle hashes (uint64) of each text, see the module docstring; one array for the whole batch."""
        n = self.ngram
        w, lens = word_hashes(texts, mask_numbers=self.mask_numbers)
        starts = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(lens, out=starts[1:])
        m = len(w)
        # rolling n-gram hash over the flat word array: H[g] = sum_k W[g+k] * C_k (mod 2^64)
        if m >= n:
            h = w[: m - n + 1] * _POS[0]
            for k in range(1, n):
                h += w[k : m - n + 1 + k] * _POS[k]
        else:
            h = np.zeros(0, dtype=np.uint64)
        n_sh = np.maximum(lens - n + 1, 1)
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(n_sh, out=offsets[1:])
        out = np.empty(int(offsets[-1]), dtype=np.uint64)
        long = lens >= n
        if long.any():
            # positions g of long docs: starts[d] .. starts[d] + lens[d] - n (all windows inside doc d)
            cnt = n_sh[long]
            base = np.repeat(starts[:-1][long], cnt)
            within = np.arange(int(cnt.sum()), dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            dst = np.repeat(offsets[:-1][long], cnt) + within
            out[dst] = h[base + within]
        short = np.flatnonzero(~long)
        if len(short):  # one shingle per short document: salt * (len + 1) + sum_k W[start + k] * C_k
            acc = np.full(len(short), _SHORT_SALT, dtype=np.uint64) * (lens[short].astype(np.uint64) + _U64(1))
            cnt = lens[short]
            k = np.arange(int(cnt.sum()), dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            np.add.at(acc, np.repeat(np.arange(len(short)), cnt), w[np.repeat(starts[short], cnt) + k] * _POS[k])
            out[offsets[short]] = acc
        return Shingles(_fmix64(out), offsets)

    # -- signatures -------------------------------------------------------------------------------------

    def signatures(self, sh: Shingles, chunk: int = 1 << 18) -> np.ndarray:
        """MinHash signatures ``(n_docs, num_perm)`` uint32: ``sig[d, p] = min_x ((a_p x + b_p) mod 2^64) >> 32``.

        One permutation at a time over a contiguous chunk of shingles (numpy's fast 1-D kernels), reduced per
        document with ``np.minimum.reduceat``; memory stays O(chunk).
        """
        nd = len(sh)
        sig = np.empty((self.num_perm, nd), dtype=np.uint64)
        x = sh.values >> _U64(32)  # 32-bit keys for the multiply-add-shift family
        offs = sh.offsets
        buf = np.empty(min(max(chunk, 1), max(len(x), 1)), dtype=np.uint64)
        d0 = 0
        while d0 < nd:
            d1 = int(np.searchsorted(offs, offs[d0] + len(buf), side="right")) - 1
            d1 = min(max(d1, d0 + 1), nd)
            lo, hi = int(offs[d0]), int(offs[d1])
            xs = x[lo:hi]
            hv = buf[: hi - lo] if hi - lo <= len(buf) else np.empty(hi - lo, dtype=np.uint64)
            starts = offs[d0:d1] - lo
            for p in range(self.num_perm):
                np.multiply(xs, self._a[p], out=hv)
                hv += self._b[p]
                np.minimum.reduceat(hv, starts, out=sig[p, d0:d1])
            d0 = d1
        sig >>= _U64(32)
        return np.ascontiguousarray(sig.T.astype(np.uint32))

    def signatures_of(self, texts: Sequence[str]) -> np.ndarray:
        return self.signatures(self.shingles(texts))


# -- exact Jaccard of shingle sets, vectorised over pairs -------------------------------------------------


def _gather(sh: Shingles, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pair index, value) of every shingle of ``docs[p]`` for each p."""
    lens = sh.offsets[docs + 1] - sh.offsets[docs]
    total = int(lens.sum())
    pid = np.repeat(np.arange(len(docs), dtype=np.int64), lens)
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
    return pid, sh.values[np.repeat(sh.offsets[docs], lens) + within]


def _unique_pairs(pid: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (pid, val) pairs, sorted by (pid, val)."""
    order = np.lexsort((val, pid))
    pid, val = pid[order], val[order]
    keep = np.ones(len(pid), dtype=bool)
    keep[1:] = (pid[1:] != pid[:-1]) | (val[1:] != val[:-1])
    return pid[keep], val[keep]


def unique_doc_shingles(sh: Shingles) -> tuple[np.ndarray, np.ndarray]:
    """The shingle *sets*: (document index, shingle value) pairs without repeats, sorted by document."""
    doc = np.repeat(np.arange(len(sh), dtype=np.int64), np.diff(sh.offsets))
    return _unique_pairs(doc, sh.values)


def _keyed_sets(sh: Shingles, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys ``fmix64(value ^ (p+1) * C)`` over the shingles of ``docs[p]`` (one sorted uint64 array,
    so one single-key sort instead of a two-key lexsort; a key collision has probability ~2^-64), and the
    pair index ``p`` of each key."""
    pid, val = _gather(sh, docs)
    keys = _fmix64(val ^ ((pid.astype(np.uint64) + _U64(1)) * _SHORT_SALT))
    keys, first = np.unique(keys, return_index=True)
    return keys, pid[first]


def pair_jaccard(sa: Shingles, ia: np.ndarray, sb: Shingles, ib: np.ndarray) -> np.ndarray:
    """Exact Jaccard ``|A n B| / |A u B|`` of the shingle sets of ``sa[ia[p]]`` and ``sb[ib[p]]`` for each p."""
    ia, ib = np.asarray(ia, dtype=np.int64), np.asarray(ib, dtype=np.int64)
    if len(ia) == 0:
        return np.zeros(0, dtype=np.float64)
    ka, pa_ = _keyed_sets(sa, ia)
    kb, pb_ = _keyed_sets(sb, ib)
    size_a = np.bincount(pa_, minlength=len(ia))
    size_b = np.bincount(pb_, minlength=len(ia))
    _, in_a, _ = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
    inter = np.bincount(pa_[in_a], minlength=len(ia))
    return inter / (size_a + size_b - inter)


# -- clustering -----------------------------------------------------------------------------------------


def cluster_representatives(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Representative (smallest index) of each node's connected component in the graph of edges (i, j).

    Vectorised union-find: every round hooks, for each edge, the larger of the two roots onto the smaller
    (``np.minimum.at``), then compresses paths by pointer jumping; stops when each edge has one root.
    A tree's root is always its smallest node, so the result is the earliest row of each cluster.
    """
    parent = np.arange(n, dtype=np.int64)
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    while len(i):
        ri, rj = parent[i], parent[j]
        diff = ri != rj
        if not diff.any():
            break
        ri, rj = ri[diff], rj[diff]
        lo, hi = np.minimum(ri, rj), np.maximum(ri, rj)
        np.minimum.at(parent, hi, lo)
        while True:  # pointer jumping until every node points at its root
            pp = parent[parent]
            if np.array_equal(pp, parent):
                break
            parent = pp
        i, j = i[diff], j[diff]
    return parent


# -- the index ------------------------------------------------------------------------------------------


@dataclass
class Pairs:
    """Verified pairs: ``left[k]`` ~ ``right[k]`` with exact shingle ``jaccard[k]`` (arrays of equal length)."""

    left: np.ndarray
    right: np.ndarray
    jaccard: np.ndarray

    def __len__(self) -> int:
        return len(self.left)

    def select(self, mask: np.ndarray) -> "Pairs":
        return Pairs(self.left[mask], self.right[mask], self.jaccard[mask])


class NearDupIndex:
    """MinHash-LSH index over texts: :meth:`add` documents, then :meth:`duplicate_pairs` (within the index)
    or :meth:`query` (new texts against the index). See the module docstring for the method."""

    def __init__(
        self,
        *,
        threshold: float = 0.8,
        num_perm: int = 128,
        ngram: int = 5,
        seed: int = 1,
        mask_numbers: bool = False,
        max_bucket: int = 32,
        batch_size: int = 8192,
        false_negative_weight: float = 0.5,
    ):
        self.threshold = threshold
        self.bands, self.rows = optimal_param(threshold, num_perm, 1.0 - false_negative_weight, false_negative_weight)
        self.hasher = MinHasher(num_perm=num_perm, ngram=ngram, seed=seed, mask_numbers=mask_numbers)
        self.max_bucket = max_bucket
        self.batch_size = batch_size
        self._sh_parts: list[Shingles] = []
        self._sig_parts: list[np.ndarray] = []
        self._sh: Shingles | None = None
        self._keys: np.ndarray | None = None

    def __len__(self) -> int:
        return sum(len(s) for s in self._sh_parts)

    def _compute(self, texts: Sequence[str], progress: Callable[[int], None] | None) -> tuple[list, list]:
        shs, sigs = [], []
        for s in range(0, len(texts), self.batch_size):
            batch = texts[s : s + self.batch_size]
            sh = self.hasher.shingles(batch)
            shs.append(sh)
            sigs.append(self.hasher.signatures(sh))
            if progress is not None:
                progress(len(batch))
        return shs, sigs

    def add(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> None:
        """Index ``texts`` (appended after existing documents); ``progress(k)`` is called per batch of k."""
        shs, sigs = self._compute(texts, progress)
        self._sh_parts += shs
        self._sig_parts += sigs
        self._sh = None
        self._keys = None

    # -- internals ---------------------------------------------------------------------------------------

    @staticmethod
    def _concat(parts: list[Shingles]) -> Shingles:
        if not parts:
            return Shingles(np.zeros(0, np.uint64), np.zeros(1, np.int64))
        if len(parts) == 1:
            return parts[0]
        values = np.concatenate([p.values for p in parts])
        offs = [parts[0].offsets]
        base = parts[0].offsets[-1]
        for p in parts[1:]:
            offs.append(p.offsets[1:] + base)
            base += p.offsets[-1]
        return Shingles(values, np.concatenate(offs))

    def _shingles(self) -> Shingles:
        if self._sh is None:
            self._sh = self._concat(self._sh_parts)
            self._sh_parts = [self._sh]
        return self._sh

    def _band_keys(self, sig: np.ndarray) -> np.ndarray:
        """(n_docs, bands) uint64: band k's r signature values mixed into one 64-bit key."""
        keys = np.empty((sig.shape[0], self.bands), dtype=np.uint64)
        for band in range(self.bands):
            cols = sig[:, band * self.rows : (band + 1) * self.rows].astype(np.uint64)
            acc = (cols * _POS[: self.rows][None, :]).sum(axis=1, dtype=np.uint64)
            acc += _U64(((band + 1) * int(_SHORT_SALT)) & _M64)  # per-band salt
            keys[:, band] = _fmix64(acc)
        return keys

    def _index_keys(self) -> np.ndarray:
        if self._keys is None:
            sig = (np.concatenate(self._sig_parts) if self._sig_parts
                   else np.zeros((0, self.hasher.num_perm), np.uint32))
            self._sig_parts = [sig]
            self._keys = self._band_keys(sig)
        return self._keys

    def jaccard(self, i: Sequence[int] | np.ndarray, j: Sequence[int] | np.ndarray) -> np.ndarray:
        """Exact shingle Jaccard of indexed documents ``i[k]`` and ``j[k]``."""
        sh = self._shingles()
        return pair_jaccard(sh, np.asarray(i, dtype=np.int64), sh, np.asarray(j, dtype=np.int64))

    def signatures(self) -> np.ndarray:
        """The (n_docs, num_perm) uint32 MinHash signatures of the indexed documents."""
        self._index_keys()
        return self._sig_parts[0]

    # -- queries -----------------------------------------------------------------------------------------

    def candidate_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Unique pairs (i < j) of indexed documents sharing a band bucket (before verification)."""
        keys = self._index_keys()
        n = keys.shape[0]
        codes = []
        for band in range(self.bands):
            k = keys[:, band]
            order = np.argsort(k, kind="stable")  # stable: within a bucket, ascending document index
            ks = k[order]
            for d in range(1, self.max_bucket + 1):
                eq = ks[d:] == ks[:-d]
                if not eq.any():
                    break
                codes.append(order[:-d][eq] * n + order[d:][eq])
        if not codes:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        u = np.unique(np.concatenate(codes))
        return u // n, u % n

    def duplicate_pairs(self) -> Pairs:
        """Candidate pairs whose exact shingle Jaccard is >= threshold."""
        i, j = self.candidate_pairs()
        sh = self._shingles()
        jac = pair_jaccard(sh, i, sh, j)
        return Pairs(i, j, jac).select(jac >= self.threshold)

    def clusters(self) -> np.ndarray:
        """Representative index (earliest document of its near-duplicate cluster) for every document."""
        p = self.duplicate_pairs()
        return cluster_representatives(len(self), p.left, p.right)

    def query(
        self, texts: Sequence[str], *, threshold: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Pairs:
        """Pairs (query index, indexed document) sharing a band bucket with exact Jaccard >= threshold."""
        thr = self.threshold if threshold is None else threshold
        keys = self._index_keys()
        sh_idx = self._shingles()
        out_q, out_d, out_j = [], [], []
        start = 0
        for s in range(0, len(texts), self.batch_size):
            batch = texts[s : s + self.batch_size]
            sh = self.hasher.shingles(batch)
            qk = self._band_keys(self.hasher.signatures(sh))
            codes = []
            for band in range(self.bands):
                order = np.argsort(keys[:, band], kind="stable")
                ks = keys[order, band]
                left = np.searchsorted(ks, qk[:, band], side="left")
                cnt = np.minimum(np.searchsorted(ks, qk[:, band], side="right") - left, self.max_bucket)
                if not cnt.any():
                    continue
                q = np.repeat(np.arange(len(batch), dtype=np.int64), cnt)
                within = np.arange(int(cnt.sum()), dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt)
                d = order[np.repeat(left, cnt) + within]
                codes.append(q * max(len(keys), 1) + d)
            if codes:
                u = np.unique(np.concatenate(codes))
                q, d = u // max(len(keys), 1), u % max(len(keys), 1)
                jac = pair_jaccard(sh, q, sh_idx, d)
                ok = jac >= thr
                out_q.append(q[ok] + start)
                out_d.append(d[ok])
                out_j.append(jac[ok])
            start += len(batch)
            if progress is not None:
                progress(len(batch))
        if not out_q:
            return Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
        return Pairs(np.concatenate(out_q), np.concatenate(out_d), np.concatenate(out_j))


def near_duplicate_clusters(
    texts: Sequence[str], *, threshold: float = 0.8, num_perm: int = 128, ngram: int = 5, seed: int = 1
) -> list[int]:
    """Representative index for each text: the earliest text of its near-duplicate cluster (itself if none).

    Texts are near-duplicates when MinHash-LSH makes them candidates and the exact Jaccard of their
    word-``ngram`` shingle sets is >= ``threshold``; clusters are connected components of those pairs.
    """
    index = NearDupIndex(threshold=threshold, num_perm=num_perm, ngram=ngram, seed=seed)
    index.add(list(texts))
    return index.clusters().tolist()
