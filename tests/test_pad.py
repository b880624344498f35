"""Prioritized Advantage Distillation: the |A| band filter, softmax(|A|/tau) draws without replacement (exact
multinomial and Plackett-Luce checks), the tau limits, empty batches, the tau schedules, and real GRPO
advantages from GSM8K's graded model solutions."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from training.pad import PADConfig, pad_plan, pad_select, tau_at

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def test_single_pick_frequencies_are_softmax_of_abs_advantage_over_tau():
    """k' = ceil(0.2 * 5) = 1: one categorical draw; 20,000 trials vs softmax(|A|/tau) over the eligible set
    (the zero advantage is ineligible and must never be drawn)."""
    a = torch.tensor([0.5, -1.0, 0.0, 2.0, -0.2])
    tau = 0.8
    g = torch.Generator().manual_seed(0)
    counts = np.zeros(5)
    for _ in range(20000):
        idx = pad_select(a, rho=0.2, tau=tau, generator=g)
        assert idx.numel() == 1
        counts[int(idx)] += 1
    assert counts[2] == 0
    elig = [0, 1, 3, 4]
    p = softmax(np.abs(a.numpy()[elig]) / tau)
    assert sps.chisquare(counts[elig], p / p.sum() * counts[elig].sum()).pvalue > 1e-3


def test_two_picks_follow_successive_sampling_without_replacement():
    """k' = 2 of 4: the probability of each unordered pair is the Plackett-Luce sum over both orders,
    P({i,j}) = p_i p_j / (1 - p_i) + p_j p_i / (1 - p_j), with p = softmax(|A|/tau)."""
    a = torch.tensor([0.3, -1.2, 0.9, 2.0])
    tau = 1.0
    p = softmax(np.abs(a.numpy()) / tau)
    pairs = list(itertools.combinations(range(4), 2))
    exact = np.array([p[i] * p[j] / (1 - p[i]) + p[j] * p[i] / (1 - p[j]) for i, j in pairs])
    assert exact.sum() == pytest.approx(1.0)
    g = torch.Generator().manual_seed(1)
    counts = dict.fromkeys(pairs, 0)
    for _ in range(12000):
        idx = pad_select(a, rho=0.5, tau=tau, generator=g).tolist()
        assert len(idx) == 2 and idx == sorted(idx)
        counts[tuple(idx)] += 1
    obs = np.array([counts[k] for k in pairs])
    assert sps.chisquare(obs, exact / exact.sum() * obs.sum()).pvalue > 1e-3


def test_tau_to_zero_keeps_the_largest_abs_advantages():
    a = torch.tensor([0.1, -3.0, 0.7, 2.5, -0.05, 0.0, 1.9, -0.6])
    top = sorted(np.argsort(-np.abs(a.numpy()))[:4].tolist())
    assert pad_select(a, rho=0.5, tau=0.0).tolist() == top
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        assert pad_select(a, rho=0.5, tau=1e-4, generator=g).tolist() == top


def test_large_tau_is_uniform_over_the_eligible_set():
    a = torch.tensor([0.1, -3.0, 0.0, 2.5, -0.05, 0.7])
    g = torch.Generator().manual_seed(2)
    counts = np.zeros(6)
    for _ in range(15000):
        counts[pad_select(a, rho=1 / 6, tau=1e6, generator=g).tolist()] += 1
    assert counts[2] == 0
    elig = [0, 1, 3, 4, 5]
    assert sps.chisquare(counts[elig]).pvalue > 1e-3


def test_all_zero_advantages_give_an_empty_selection():
    sel = pad_plan(torch.zeros(16), PADConfig(), step=3, total_steps=10)
    assert sel.empty and sel.indices.dtype == torch.long and sel.indices.numel() == 0
    assert (sel.n_total, sel.n_eligible, sel.k_target) == (16, 0, 8)
    assert sel.kept_frac == 0.0


def test_fewer_eligible_than_k_keeps_all_eligible_and_band_filter():
    a = torch.tensor([0.0, 0.0, 0.0, 1.0, -2.0, 0.0, 0.0, 0.0])
    assert pad_select(a, rho=0.5, tau=1.0).tolist() == [3, 4]
    b = torch.tensor([0.05, 0.5, -1.5, 3.0, -0.2, 0.9])
    # keep t_low < |A| <= t_high; rho = 1 keeps every eligible one
    assert pad_select(b, rho=1.0, tau=1.0, t_low=0.2, t_high=1.5).tolist() == [1, 2, 5]


def test_k_target_rounding_and_validation():
    a = torch.arange(1, 11, dtype=torch.float32)
    assert pad_select(a, rho=0.3, tau=1.0, generator=torch.Generator().manual_seed(0)).numel() == 3
    assert pad_select(a, rho=0.31, tau=1.0, generator=torch.Generator().manual_seed(0)).numel() == 4
    with pytest.raises(ValueError, match="rho"):
        pad_select(a, rho=0.0, tau=1.0)
    with pytest.raises(ValueError, match="NaN"):
        pad_select(torch.tensor([1.0, float("nan")]), rho=0.5, tau=1.0)
    with pytest.raises(ValueError, match="t_low"):
        PADConfig(t_low=1.0, t_high=0.5)


def test_tau_schedules():
    assert tau_at(0, 100) == 1.0 and tau_at(100, 100) == pytest.approx(0.3) and tau_at(500, 100) == pytest.approx(0.3)
    assert tau_at(50, 100) == pytest.approx(0.65)
    assert tau_at(25, 100, tau_start=2.0, tau_end=0.5) == pytest.approx(2.0 - 1.5 * 0.25)
    assert tau_at(50, 100, schedule="cosine") == pytest.approx(0.65)
    assert tau_at(25, 100, schedule="cosine") == pytest.approx(0.3 + 0.7 * (1 + math.cos(math.pi / 4)) / 2)
    assert tau_at(0, 100, schedule="cosine") == 1.0
    taus = [PADConfig(schedule="cosine").tau_at(s, 40) for s in range(41)]
    assert all(x >= y for x, y in zip(taus, taus[1:]))  # monotone annealing
    with pytest.raises(ValueError, match="schedule"):
        tau_at(1, 2, schedule="step")


@settings(max_examples=100, deadline=None)
@given(
    adv=st.lists(st.one_of(st.just(0.0), st.floats(-5, 5, allow_nan=False)), min_size=1, max_size=64),
    rho=st.floats(0.01, 1.0),
    tau=st.floats(0.0, 10.0),
    seed=st.integers(0, 2**31),
)
def test_zero_advantages_never_selected_and_size_rule(adv, rho, tau, seed):
    a = torch.tensor(adv, dtype=torch.float32)
    idx = pad_select(a, rho=rho, tau=tau, generator=torch.Generator().manual_seed(seed))
    n_elig = int((a.abs() > 0).sum())
    k = math.ceil(round(rho * len(adv), 9))
    assert idx.numel() == min(k, n_elig)
    assert len(set(idx.tolist())) == idx.numel()
    assert all(a[i] != 0 for i in idx.tolist())
    assert idx.tolist() == sorted(idx.tolist())


def test_real_grpo_advantages_drop_zero_variance_groups():
    """GRPO advantages (r - mean_group) / (std_group + 1e-4) of 64 real GSM8K groups (4 graded solutions each):
    PAD never keeps a rollout of an all-correct / all-wrong group and keeps ceil(rho N) when enough remain."""
    rewards = []
    with open(DATA / "gsm8k/example_model_solutions.jsonl") as f:
        for i, line in enumerate(f):
            if i == 64:
                break
            row = json.loads(line)
            rewards.append([float(row[m]["is_correct"]) for m in MODELS])
    r = torch.tensor(rewards)
    adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).reshape(-1)
    zero_groups = (r.std(1) == 0).nonzero().reshape(-1).tolist()
    assert zero_groups and len(zero_groups) < 64
    sel = pad_plan(adv, PADConfig(rho=0.25), step=0, total_steps=100, generator=torch.Generator().manual_seed(0))
    kept_groups = {i // 4 for i in sel.indices.tolist()}
    assert not kept_groups & set(zero_groups)
    assert sel.n_eligible == 4 * (64 - len(zero_groups))
    assert sel.indices.numel() == min(64, sel.n_eligible)
