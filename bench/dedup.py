"""Near-duplicate detection: ``curation.build.minhash`` vs ``datasketch`` (MinHash.update_batch + MinHashLSH).

Both run on the SAME generated corpus in one process, with the same text normalisation, the same word
n-gram shingles, ``num_perm`` and LSH ``threshold`` (so the same bands x rows: datasketch's
``_optimal_param``), and their candidate pairs go through the same union-find clustering.

Corpus (``--n`` problems, default 100,000; deterministic for ``--seed``): GSM8K-like problems built by
drawing 3-5 sentences from the questions of ../shared/data/gsm8k/train.jsonl and replacing every number by a
random one, so distinct problems share little beyond stock phrases. A fraction ``--dup-frac`` of the rows are
planted near-duplicates of an earlier-generated base problem: random word insertions, deletions, adjacent
swaps and substitutions applied one at a time while the exact Jaccard of the two normalised
``ngram``-shingle sets stays >= a target drawn uniformly from [threshold, 1] (10% are exact copies). Rows are
shuffled, so copies are not adjacent to their base.

Metrics:
- recall: fraction of planted (duplicate, base) pairs that end in the same cluster;
- precision: over every row that is not its cluster's representative, the fraction whose representative is
  truly the same problem (same base);
- throughput: rows / wall seconds for signatures + indexing + candidate generation (+ exact verification
  for ours) + clustering. datasketch: ``MinHash.generator`` (one permutation set reused, ``update_batch``
  per document), ``MinHashLSH.insertion_session``, then ``query`` of every document; its candidates are taken
  as duplicates without verification (its cheapest pipeline).

Usage: ``python bench/dedup.py [--n 100000] [--threshold 0.8] [--num-perm 128] [--ngram 5]``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.build.minhash import NearDupIndex, cluster_representatives, normalize_text  # noqa: E402

GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
_SENT = re.compile(r"(?<=[.?!])\s+")
_NUM = re.compile(r"\d+(?:\.\d+)?")
_FILLERS = ["then", "also", "really", "each", "some", "the", "total", "just", "now", "still", "many", "very"]


def _shingle_set(words: list[str], n: int) -> set:
    if len(words) < n:
        return {tuple(words)}
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def _near_copy(text: str, target: float, n: int, rng: random.Random) -> str:
    """Edit ``text`` word by word while the normalised n-gram Jaccard with the original stays >= target."""
    words = text.split()
    base = _shingle_set(normalize_text(text).split(), n)
    for _ in range(60):
        cand = list(words)
        op = rng.random()
        i = rng.randrange(len(cand))
        if op < 0.3:
            cand.insert(i, rng.choice(_FILLERS))
        elif op < 0.55 and len(cand) > n + 2:
            del cand[i]
        elif op < 0.8 and i + 1 < len(cand):
            cand[i], cand[i + 1] = cand[i + 1], cand[i]
        else:
            cand[i] = rng.choice(_FILLERS)
        if _jaccard(base, _shingle_set(normalize_text(" ".join(cand)).split(), n)) < target:
            break
        words = cand
    return " ".join(words)


def make_corpus(n: int, *, threshold: float, ngram: int, dup_frac: float, seed: int) -> tuple[list[str], np.ndarray]:
    """``n`` texts and their ground-truth group (index of the base problem each text is a copy of)."""
    rng = random.Random(seed)
    with GSM8K.open() as f:
        sentences = [s for line in f for s in _SENT.split(json.loads(line)["question"].strip()) if s]
    n_dup = int(n * dup_frac)
    n_base = n - n_dup
    base = []
    for _ in range(n_base):
        sents = rng.sample(sentences, rng.randint(3, 5))
        base.append(_NUM.sub(lambda m: str(rng.randint(2, 999)), " ".join(sents)))
    texts, group = list(base), list(range(n_base))
    for _ in range(n_dup):
        b = rng.randrange(n_base)
        target = 1.0 if rng.random() < 0.1 else rng.uniform(threshold, 1.0)
        texts.append(base[b] if target >= 1.0 else _near_copy(base[b], target, ngram, rng))
        group.append(b)
    perm = list(range(n))
    rng.shuffle(perm)
    return [texts[p] for p in perm], np.asarray([group[p] for p in perm])


def score(reps: np.ndarray, group: np.ndarray) -> tuple[float, float, int]:
    """(recall over planted pairs, precision over excluded rows, number excluded)."""
    first_of_group: dict[int, int] = {}
    for i, g in enumerate(group.tolist()):
        first_of_group.setdefault(g, i)
    anchor = np.array([first_of_group[g] for g in group.tolist()])
    planted = anchor != np.arange(len(group))
    recall = float(np.mean(reps[planted] == reps[anchor[planted]])) if planted.any() else 1.0
    dup = reps != np.arange(len(group))
    precision = float(np.mean(group[dup] == group[reps[dup]])) if dup.any() else 1.0
    return recall, precision, int(dup.sum())


def run_ours(
    texts: list[str], *, threshold: float, num_perm: int, ngram: int, fn_weight: float = 0.5
) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    index = NearDupIndex(threshold=threshold, num_perm=num_perm, ngram=ngram, false_negative_weight=fn_weight)
    index.add(texts)
    reps = index.clusters()
    return reps, time.perf_counter() - t0


def run_datasketch(texts: list[str], *, threshold: float, num_perm: int, ngram: int) -> tuple[np.ndarray, float]:
    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()

    def shingles():
        for t in texts:
            w = normalize_text(t).split()
            if len(w) < ngram:
                yield [" ".join(w).encode()]
            else:
                yield [" ".join(w[i : i + ngram]).encode() for i in range(len(w) - ngram + 1)]

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    mhs = []
    with lsh.insertion_session() as session:
        for k, m in enumerate(MinHash.generator(shingles(), num_perm=num_perm)):
            session.insert(k, m, check_duplication=False)
            mhs.append(m)
    left, right = [], []
    for k, m in enumerate(mhs):
        for other in lsh.query(m):
            if other < k:
                left.append(other)
                right.append(k)
    reps = cluster_representatives(len(texts), np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64))
    return reps, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--dup-frac", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args(argv)

    t0 = time.perf_counter()
    texts, group = make_corpus(a.n, threshold=a.threshold, ngram=a.ngram, dup_frac=a.dup_frac, seed=a.seed)
    words = sum(len(t.split()) for t in texts) / len(texts)
    print(f"corpus: {len(texts):,} problems ({int(a.n * a.dup_frac):,} planted near-duplicates), "
          f"{words:.1f} words/problem, generated in {time.perf_counter() - t0:.1f}s")
    params = dict(threshold=a.threshold, num_perm=a.num_perm, ngram=a.ngram)
    res: dict = {"n": len(texts), **params}
    runs = {
        "ours": lambda: run_ours(texts, **params),
        "ours_fn0.8": lambda: run_ours(texts, **params, fn_weight=0.8),
        "datasketch": lambda: run_datasketch(texts, **params),
    }
    for name, fn in runs.items():
        reps, secs = fn()
        recall, precision, n_dup = score(reps, group)
        res[name] = {"seconds": secs, "docs_per_s": len(texts) / secs, "recall": recall,
                     "precision": precision, "excluded": n_dup}
        print(f"{name:>11}: {secs:7.2f}s  {len(texts) / secs:9,.0f} problems/s  recall {recall:.4f}  "
              f"precision {precision:.4f}  excluded {n_dup:,}")
    for name in ("ours", "ours_fn0.8"):
        sp = res[name]["docs_per_s"] / res["datasketch"]["docs_per_s"]
        dr = res[name]["recall"] - res["datasketch"]["recall"]
        res[name]["speedup"], res[name]["recall_minus_datasketch"] = sp, dr
        print(f"{name} / datasketch throughput: {sp:.2f}x; recall {name} - datasketch: {dr:+.4f}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
