"""Dynamic sampling for GRPO: every optimizer step full of learning signal (recipe section ``dynamic:``).

GRPO learns nothing from a group whose ``G`` rewards are all equal: every advantage is 0.  Two optional rules,
both deterministic and identical on every rank, make such groups rare in what the trainer trains on:

**Skip before generation** (``dynamic.skip``; done by :class:`training.sampler.VASSampler`, see
:class:`training.sampler.SkipRule`).  For every prompt the VPS table keeps a Beta posterior of its pass rate
(:mod:`training.vps`), hence the probability that a fresh group of ``G`` has zero variance,

    P0_i = E[p^G + (1 - p)^G] = B(a + G, b) / B(a, b) + B(a, b + G) / B(a, b)

(:func:`curation.score.posterior.zero_variance_prob`).  A drawn prompt with ``P0_i >= q`` is *skip-eligible*;
it is still kept with probability ``floor`` (a uniform ``u < floor`` from the chunk's own random stream: the
*exploration floor*: whenever drawn, a prompt is generated with probability >= ``floor``, so none is starved and
a skipped prompt's posterior keeps being corrected), otherwise it is replaced inside the same generation batch
by another prompt that is not skip-eligible and not already in the batch - drawn by VAS weights for a VAS slot,
uniformly for a uniform slot.  When no such prompt is left the original stays.  Together with the forgetting
rule of the posterior (``vas.posterior_decay``: evidence decays toward the prior once per generation batch) a
prompt skipped for a while drifts back below ``q`` and is tried again.  This is GRESO's idea (predict
zero-variance prompts and skip them before rollout) on our Beta posterior instead of GRESO's
temporal-consistency heuristic; the floor is a fixed probability where GRESO adapts its exploration rates.

**Refill under a budget** (``dynamic.refill``; done by ``VASGRPOTrainer._generate_with_refill``).  After a
generation batch is scored, rows whose group has zero spread of the weighted total reward (``max - min <
1e-9`` over the group's non-NaN rewards: their advantages are all 0 under TRL's default
``sum_then_normalize``) are *dropped*, and every rank keeps its informative rows in generation order.  While
the rank with the fewest informative rows has fewer than ``n`` (its generation-batch rows,
``per_device_train_batch_size * steps_per_generation``), another *refill round* is generated:

- ``R`` prompts (:func:`refill_prompts`): enough that the worst rank's deficit ``d`` is covered if a fraction
  ``rate`` of the new rows is informative (``rate`` = informative fraction of the rows generated so far in this
  batch, at least 1/4): ``R = ceil(d W / (G rate))`` rounded up to a multiple of ``u = W / gcd(G, W)`` (so the
  ``R G`` rows split evenly over the ``W`` ranks), at most one generation batch of prompts, and at most what the
  budget has left (``floor((budget - spent) / G)``, rounded down to a multiple of ``u``);
- the prompts are a dedicated refill draw (:func:`refill_draw`): without replacement, not already in this
  generation batch, with the sampler's per-slot mix ``(1 - lambda) / N + lambda P_i`` (uniform without VAS),
  skip-eligible prompts excluded (each let in with probability ``floor``) when the skip rule is on; seeded by
  ``(seed, REFILL_STREAM, generation batch number, round)``, so identical on every rank;
- each rank generates and scores its ``R G / W`` rows of that round with TRL's own
  ``_generate_and_score_completions`` (advantages computed inside the round's groups, rewards gathered over
  ranks, the VPS posterior updated from them).

The loop stops when every rank is full, after ``max_rounds`` refill rounds, when the budget (rollouts of this
generation batch, first round included) cannot pay for ``u`` more prompts, or when no prompt is left to draw.
Every decision is taken from gathered numbers, so all ranks run the same rounds and every collective stays in
step.  A rank short of informative rows then fills up with loss-masked filler rows (its dropped rows with
``completion_mask = 0`` and advantage 0, flagged like PAD's fillers) and the PAD loss scale
(``VASGRPOTrainer.pad_loss_scale``) makes the update the mean over the informative rows alone.  Never a crash,
never an endless loop: at most ``max_rounds`` rounds and ``budget`` rollouts per generation batch.

Rows of several rounds are merged by :func:`merge_rounds`: per-row tensors concatenated, prompts left-padded and
completions right-padded to common widths.  Extra left padding shifts a row's absolute positions, so when any
row's prompt padding changed (on any rank) the trainer recomputes ``old_per_token_logps`` and
``ref_per_token_logps`` (where TRL computed them) on the merged batch with the unchanged model: the importance
ratios are then exactly TRL's for that batch.  vLLM's ``importance_sampling_ratio`` (the sampler-vs-trainer
correction) is kept from generation time.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["REFILL_STREAM", "merge_rounds", "refill_draw", "refill_prompts", "group_informative"]

REFILL_STREAM = 0x7EF1  # tag of the refill draws' random stream (numpy SeedSequence entropy)
MIN_RATE = 0.25  # the over-draw of a refill round assumes at least this informative fraction

# per-row tensors of TRL's generation output and how each is padded to a common width
_LEFT = {"prompt_ids": "pad", "prompt_mask": 0}
_RIGHT = {"completion_ids": "pad", "completion_mask": 0, "old_per_token_logps": 0.0,
          "sampling_per_token_logps": 0.0, "ref_per_token_logps": 0.0, "tool_mask": 1,
          "importance_sampling_ratio": 1.0}
_SPLIT = {"token_type_ids", "mm_token_type_ids"}  # (B, P + C): the prompt part left-, the completion part right-padded


def group_informative(total_rewards: torch.Tensor, group_size: int, tol: float = 1e-9) -> torch.Tensor:
    """Per group of ``group_size`` consecutive rows: True when its rewards (NaN ignored) are not all equal,
    i.e. ``max - min >= tol`` (a group with fewer than two non-NaN rewards is not informative)."""
    x = total_rewards.detach().float().view(-1, group_size)
    nan = torch.isnan(x)
    hi = torch.where(nan, torch.full_like(x, -math.inf), x).max(dim=1).values
    lo = torch.where(nan, torch.full_like(x, math.inf), x).min(dim=1).values
    spread = hi - lo
    return torch.isfinite(spread) & (spread >= tol)


def refill_prompts(need_rows: int, *, world: int, group_size: int, rate: float, max_prompts: int,
                   budget_left: int) -> int:
    """Prompts of the next refill round (module docstring): ``ceil(need_rows W / (G max(rate, 1/4)))`` rounded
    up to a multiple of ``u = W / gcd(G, W)``, capped by ``max_prompts`` and by ``budget_left // G`` (both
    rounded down to a multiple of ``u``); 0 when the caps leave less than ``u``."""
    if need_rows <= 0:
        return 0
    unit = world // math.gcd(group_size, world)
    r = math.ceil(need_rows * world / (group_size * max(rate, MIN_RATE)))
    r = -(-r // unit) * unit
    cap = min(max_prompts, max(budget_left, 0) // group_size)
    cap -= cap % unit
    return max(0, min(r, cap))


def refill_draw(rng: np.random.Generator, n_rows: int, k: int, *, weights: np.ndarray | None = None,
                exclude: Sequence[int] = (), blocked: np.ndarray | None = None) -> np.ndarray:
    """``k`` distinct dataset indices without replacement by ``weights`` (uniform when ``None``; successive
    sampling, :func:`training.sampler.draw_weighted`) among the rows not in ``exclude`` and not ``blocked``
    (a boolean mask); fewer when fewer candidates have positive weight."""
    from .sampler import draw_weighted

    w = np.ones(n_rows) if weights is None else np.asarray(weights, dtype=np.float64).copy()
    if w.size != n_rows:
        raise ValueError(f"{w.size} weights for {n_rows} rows")
    out = np.zeros(n_rows, dtype=bool)
    if len(exclude):
        out[np.asarray(list(exclude), dtype=np.int64)] = True
    if blocked is not None:
        out |= blocked
    w[out] = 0.0
    take = min(k, int(np.count_nonzero(w > 0)))
    if take <= 0:
        return np.empty(0, dtype=np.int64)
    sel, _ = draw_weighted(rng, w / w.sum(), np.flatnonzero(out), take)
    return sel


def _pad_width(t: torch.Tensor, width: int, value: float, left: bool) -> torch.Tensor:
    extra = width - t.shape[1]
    if extra == 0:
        return t
    pad = t.new_full((t.shape[0], extra, *t.shape[2:]), value)
    return torch.cat([pad, t] if left else [t, pad], dim=1)


def merge_rounds(parts: Sequence[tuple[dict, Sequence[int]]], pad_token_id: int) -> tuple[dict, bool]:
    """Merge the selected rows of several rounds' generation outputs into one batch.

    ``parts``: ``(batch, rows)`` per round, ``batch`` a TRL generation output *after*
    ``split_pixel_values_by_grid`` (image tensors as one entry per row), ``rows`` the row indices to take, in
    order.  Per-row tensors are concatenated (prompts left-padded, completions and per-token tensors right-padded
    to the widest round, ``token_type_ids`` / ``mm_token_type_ids`` split at the round's prompt width), per-row
    lists concatenated, 0-d tensors (``num_items_in_batch``: the caller recomputes it) taken from the first
    round.  Returns ``(merged, shifted)``: ``shifted`` is True when some taken row got extra left padding (its
    absolute positions moved).  Fields that differ between rounds, or per-row tensors of another width that no
    rule covers, raise ``ValueError`` naming the field."""
    parts = [(b, list(rows)) for b, rows in parts]
    keys = list(parts[0][0])
    for b, _ in parts[1:]:
        if set(b) != set(keys):
            raise ValueError(
                f"dynamic refill: rounds produced different fields ({sorted(set(keys) ^ set(b))}); a data set that "
                "mixes rows with and without images cannot be refilled (turn dynamic.refill off or split the data)")
    sizes = [b["prompt_ids"].shape[0] for b, _ in parts]
    p_width = max(b["prompt_ids"].shape[1] for b, rows in parts if rows) if any(r for _, r in parts) else \
        parts[0][0]["prompt_ids"].shape[1]
    c_width = max(b["completion_ids"].shape[1] for b, rows in parts if rows) if any(r for _, r in parts) else \
        parts[0][0]["completion_ids"].shape[1]
    shifted = any(rows and b["prompt_ids"].shape[1] < p_width for b, rows in parts)
    out: dict[str, Any] = {}
    for key in keys:
        vals = [b[key] for b, _ in parts]
        if all(v is None for v in vals):
            out[key] = None
            continue
        v0 = vals[0]
        if isinstance(v0, torch.Tensor) and v0.ndim == 0:
            out[key] = v0
            continue
        if isinstance(v0, list):
            if any(not isinstance(v, list) or len(v) != n for v, n in zip(vals, sizes)):
                raise ValueError(f"dynamic refill: field {key!r} is not one entry per row in every round")
            out[key] = [v[i] for v, (_, rows) in zip(vals, parts) for i in rows]
            continue
        if not isinstance(v0, torch.Tensor) or any(not isinstance(v, torch.Tensor) or v.shape[0] != n
                                                    for v, n in zip(vals, sizes)):
            raise ValueError(f"dynamic refill: cannot merge field {key!r} (not a per-row tensor or list)")
        chunks = []
        for v, (b, rows) in zip(vals, parts):
            if not rows:
                continue
            idx = torch.tensor(rows, dtype=torch.long, device=v.device)
            t = v.index_select(0, idx)
            if key in _LEFT:
                fill = pad_token_id if _LEFT[key] == "pad" else _LEFT[key]
                t = _pad_width(t, p_width, fill, left=True)
            elif key in _RIGHT and t.ndim >= 2 and t.shape[1] == b["completion_ids"].shape[1]:
                # per-token (a sequence-level importance ratio has width 1 in every round and is left alone)
                fill = pad_token_id if _RIGHT[key] == "pad" else _RIGHT[key]
                t = _pad_width(t, c_width, fill, left=False)
            elif key in _SPLIT:
                pw = b["prompt_ids"].shape[1]
                t = torch.cat([_pad_width(t[:, :pw], p_width, 0, left=True),
                               _pad_width(t[:, pw:], c_width, 0, left=False)], dim=1)
            chunks.append(t)
        if not chunks:
            out[key] = v0[:0]
            continue
        trailing = {tuple(c.shape[1:]) for c in chunks}
        if len(trailing) > 1:
            raise ValueError(f"dynamic refill: field {key!r} has per-row shapes {sorted(trailing)} in different "
                             "rounds and no padding rule")
        out[key] = torch.cat(chunks, dim=0)
    return out, shifted
