"""MMR1 Variance-Aware Sampling arithmetic shared by the trainer's samplers (``training.sampler``) and the
reports: the sampling probabilities from VPS and the expected zero-variance fraction of a batch.

**Weights.** From per-prompt scores ``s_i = VPS_i >= 0``:

    floor = epsilon * mean_i(s_i)                 (epsilon = 1e-3 by default; relative to the mean score)
    w_i   = max(s_i, floor) ** power               (power = 1 / temperature, default 1)
    P_i   = w_i / sum_j w_j

No min-max normalisation (which would give the lowest-scored prompt probability 0 and all-equal scores all
zero).  All-zero or all-equal scores give exactly uniform ``P``.  With ``epsilon = 0`` prompts scoring 0 get
probability 0 (only when asked for).  See :func:`vas_probabilities`.

**Expected zero-variance fraction.**  For a prompt with pass rate p and a group of G rollouts,
P(all G rewards equal) = p^G + (1-p)^G.  A sampler drawing prompt i with probability q_i therefore yields
Z(q) = sum_i q_i (p_i^G + (1-p_i)^G) (:func:`expected_zero_variance`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["vas_probabilities", "probability_stats", "expected_zero_variance"]


def vas_probabilities(scores: Any, *, epsilon: float = 1e-3, power: float = 1.0) -> np.ndarray:
    """Sampling probabilities from scores (formula in the module docstring).

    ``scores``: non-negative finite numbers, one per prompt.  ``epsilon >= 0``: floor relative to the mean
    score.  ``power > 0``: sharpen (> 1) or flatten (< 1) the distribution.  All-equal or all-zero scores
    give exactly uniform probabilities.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise ValueError("no scores: the dataset is empty")
    bad = ~np.isfinite(s) | (s < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"score of prompt {i} is {s[i]!r}; VPS scores must be finite and >= 0")
    if not (epsilon >= 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon must be finite and >= 0, got {epsilon}")
    if not (power > 0 and math.isfinite(power)):
        raise ValueError(f"power must be finite and > 0, got {power}")
    n = s.size
    mean = float(s.mean())
    if mean == 0.0:
        return np.full(n, 1.0 / n)
    w = np.maximum(s, epsilon * mean)
    if power != 1.0:
        w = w**power
    if w.min() == w.max() or not np.isfinite(w.sum()) or w.sum() == 0.0:
        return np.full(n, 1.0 / n)
    return w / w.sum()



def probability_stats(p: np.ndarray) -> dict[str, float]:
    """For logging: entropy ``H = -sum p log p`` (nats), ``H / log n`` (1 = uniform), min/max probability,
    the max/min ratio over positive entries, and how many prompts have probability 0."""
    n = p.size
    pos = p[p > 0]
    h = float(-(pos * np.log(pos)).sum())
    return {
        "weight_entropy": h,
        "weight_entropy_norm": h / math.log(n) if n > 1 else 1.0,
        "min_prob": float(p.min()),
        "max_prob": float(p.max()),
        "max_min_ratio": float(pos.max() / pos.min()),
        "n_zero_prob": int(n - pos.size),
    }


def expected_zero_variance(pass_rates: np.ndarray, probs: np.ndarray, group_size: int) -> float:
    """Z(q) = sum_i q_i (p_i^G + (1 - p_i)^G) (see module docstring)."""
    p = np.asarray(pass_rates, dtype=float)
    q = np.asarray(probs, dtype=float)
    return float(np.sum(q * (p**group_size + (1.0 - p) ** group_size)))
