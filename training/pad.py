"""Prioritized Advantage Distillation (PAD), as described in the ReVisual-R1 paper.

Given the advantages ``A_1..A_N`` of a batch of ``N`` rollouts:

1. **Filter**: keep the eligible set ``E = {i : t_low < |A_i| <= t_high}``.  The lower bound is *exclusive*, so
   with the default ``t_low = 0`` every zero-advantage rollout (a group whose rewards were all equal) is
   dropped: it carries no gradient signal.  Raise ``t_low`` (e.g. ``1e-6``) to also drop rollouts whose
   advantage is only floating-point noise.
2. **Prioritised draw**: ``k' = ceil(rho * N)`` rollouts are drawn from ``E`` *without replacement* with
   probability ``softmax(|A_i| / tau)`` over ``E``, i.e. successive draws with
   ``P(i) = exp(|A_i| / tau) / sum_{j in E, not yet drawn} exp(|A_j| / tau)``.  Implemented with the
   Gumbel-top-k trick: the ``k'`` largest ``|A_i| / tau + G_i`` (``G_i`` i.i.d. standard Gumbel) are exactly such a
   sequence of draws.  If ``|E| <= k'`` all of ``E`` is kept (PAD never pads with ineligible rollouts).
   ``tau -> 0`` keeps the ``k'`` largest ``|A|``; ``tau -> inf`` is a uniform draw from ``E``.
3. **Temperature schedule** (:func:`tau_at`): ``tau`` goes from ``tau_start`` to ``tau_end`` over the run,
   linearly ``tau(s) = tau_start + (tau_end - tau_start) * f`` or by a cosine
   ``tau(s) = tau_end + (tau_start - tau_end) * (1 + cos(pi f)) / 2``, with ``f = min(s / total, 1)``.

An empty result (all advantages zero, or all outside the band) means there is nothing to learn from in this
batch: :func:`pad_select` returns an empty index tensor and :class:`PADSelection` has ``empty=True``; the
trainer must then skip the update (e.g. return ``0 * loss`` to keep DDP's gradient sync in step).

In a distributed trainer each rank selects among its own slice of the batch (TRL hands every rank its local
rollouts with globally-normalised advantages), with ``N`` = the local batch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# TRL 1.16 loss types by how they normalise (GRPOTrainer._compute_loss): a mean over the micro-batch's rows
# (grpo, sapo: per-sequence token mean, then mean over rows; luspo: per-sequence sum, mean over rows; dr_grpo:
# sum / (rows * max_completion_length)), a token mean over the micro-batch (bnpo), or a sum over the
# generation batch's global token count num_items_in_batch (dapo, cispo, vespo).  With PAD, the first two
# need steps_per_generation to be a multiple of gradient_accumulation_steps (VASGRPOTrainer._check_setup).
ROW_MEAN_LOSSES = frozenset({"grpo", "sapo", "dr_grpo", "luspo"})
MICROBATCH_TOKEN_MEAN_LOSSES = frozenset({"bnpo"})

__all__ = ["PADConfig", "PADSelection", "pad_select", "pad_plan", "tau_at"]


def tau_at(step: int, total: int, *, tau_start: float = 1.0, tau_end: float = 0.3,
           schedule: str = "linear") -> float:
    """Annealed temperature at ``step`` of ``total`` (formulas in the module docstring); ``total <= 0`` or
    ``step >= total`` give ``tau_end``."""
    if tau_start <= 0 or tau_end <= 0:
        raise ValueError(f"temperatures must be > 0, got tau_start={tau_start}, tau_end={tau_end}")
    f = 1.0 if total <= 0 else min(max(step, 0) / total, 1.0)
    if schedule == "linear":
        return tau_start + (tau_end - tau_start) * f
    if schedule == "cosine":
        return tau_end + (tau_start - tau_end) * (1.0 + math.cos(math.pi * f)) / 2.0
    if schedule == "constant":
        return tau_start
    raise ValueError(f"unknown tau schedule {schedule!r}; use 'linear', 'cosine' or 'constant'")


@dataclass
class PADConfig:
    """PAD settings (same names as the ``pad:`` recipe section): keep ``t_low < |A| <= t_high``, draw
    ``ceil(rho * N)`` by ``softmax(|A| / tau)``, ``tau`` annealed ``tau_start -> tau_end`` by ``schedule``."""

    rho: float = 0.5
    t_low: float = 0.0
    t_high: float = math.inf
    tau_start: float = 1.0
    tau_end: float = 0.3
    schedule: str = "linear"

    def __post_init__(self) -> None:
        if not (0.0 < self.rho <= 1.0):
            raise ValueError(f"rho must be in (0, 1], got {self.rho}")
        if not (self.t_low >= 0 and self.t_high > self.t_low):
            raise ValueError(f"need 0 <= t_low < t_high, got t_low={self.t_low}, t_high={self.t_high}")
        tau_at(0, 1, tau_start=self.tau_start, tau_end=self.tau_end, schedule=self.schedule)  # validates

    def tau_at(self, step: int, total: int) -> float:
        return tau_at(step, total, tau_start=self.tau_start, tau_end=self.tau_end, schedule=self.schedule)


@dataclass
class PADSelection:
    """Result of :func:`pad_plan`: selected ``indices`` (ascending), ``n_total``, ``n_eligible`` (after the
    ``|A|`` band filter), ``k_target = ceil(rho * N)``, the ``tau`` used and ``empty`` (nothing selected)."""

    indices: torch.Tensor
    n_total: int
    n_eligible: int
    k_target: int
    tau: float

    @property
    def empty(self) -> bool:
        return self.indices.numel() == 0

    @property
    def kept_frac(self) -> float:
        return self.indices.numel() / self.n_total if self.n_total else 0.0


def _abs_flat(advantages: torch.Tensor) -> torch.Tensor:
    a = advantages.detach().reshape(-1)
    if not a.is_floating_point():
        a = a.to(torch.float64)
    return a.abs()


def _eligible(a: torch.Tensor, t_low: float, t_high: float) -> torch.Tensor:
    """Indices with ``t_low < |A| <= t_high``, compared in the advantages' own dtype (a float32 ``-0.2`` is
    not above ``t_low = 0.2``)."""
    return torch.nonzero((a > t_low) & (a <= t_high)).reshape(-1)


def pad_select(
    advantages: torch.Tensor,
    *,
    rho: float,
    tau: float,
    t_low: float = 0.0,
    t_high: float = math.inf,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Indices (ascending ``LongTensor``) of the rollouts PAD keeps; formula in the module docstring.

    ``advantages``: shape ``(N,)`` (or any shape, flattened).  ``tau = 0`` means the deterministic top-``k'`` by
    ``|A|``.  Returns an empty tensor when no advantage lies in ``(t_low, t_high]``.
    """
    if not (0.0 < rho <= 1.0):
        raise ValueError(f"rho must be in (0, 1], got {rho}")
    if tau < 0 or math.isnan(tau):
        raise ValueError(f"tau must be >= 0, got {tau}")
    if not (t_low >= 0 and t_high > t_low):
        raise ValueError(f"need 0 <= t_low < t_high, got t_low={t_low}, t_high={t_high}")
    a = _abs_flat(advantages)
    if torch.isnan(a).any():
        i = int(torch.nonzero(torch.isnan(a))[0])
        raise ValueError(f"advantage {i} is NaN")
    n = a.numel()
    device = advantages.device
    eligible = _eligible(a, t_low, t_high)
    k = math.ceil(round(rho * n, 9))  # round: 0.3 * 10 = 3.0000000000000004 must give 3
    if eligible.numel() <= k:
        return eligible.to(device=device, dtype=torch.long)
    ae = a[eligible].cpu().to(torch.float64)
    if tau == 0:
        scores = ae
    else:
        u = torch.rand(ae.numel(), generator=generator, dtype=torch.float64)
        u = u.clamp_(min=torch.finfo(torch.float64).tiny)
        gumbel = -torch.log(-torch.log(u))
        scores = ae / tau + gumbel
    top = torch.topk(scores, k, largest=True, sorted=False).indices
    return torch.sort(eligible.cpu()[top]).values.to(device=device, dtype=torch.long)


def pad_plan(
    advantages: torch.Tensor,
    config: PADConfig,
    *,
    step: int,
    total_steps: int,
    generator: torch.Generator | None = None,
) -> PADSelection:
    """:func:`pad_select` with the config's band and the annealed ``tau`` for ``step`` of ``total_steps``, plus
    the counts a trainer logs."""
    tau = config.tau_at(step, total_steps)
    a = _abs_flat(advantages)
    idx = pad_select(advantages, rho=config.rho, tau=tau, t_low=config.t_low, t_high=config.t_high,
                     generator=generator)
    n_elig = int(_eligible(a, config.t_low, config.t_high).numel())
    return PADSelection(indices=idx, n_total=a.numel(), n_eligible=n_elig,
                        k_target=math.ceil(round(config.rho * a.numel(), 9)), tau=tau)
