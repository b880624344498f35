"""VAS samplers: weights (floor, no min-max, degenerate scores -> uniform), empirical frequencies vs P,
the exact lambda mix, TRL RepeatSampler's structure (bit-identical at lambda = 0), in-chunk uniqueness,
identical streams across ranks, online updates reaching the next draw, and the SFT epoch sampler."""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from trl.trainer.utils import RepeatSampler

from curation.score.scores import score_group
from training.sampler import VASEpochSampler, VASSampler, vas_probabilities
from training.vps import VPSTable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


@pytest.fixture(scope="module")
def real_vps() -> np.ndarray:
    """VPS of the 1,319 GSM8K test problems from their 4 real graded solutions (MMR1 formula, edit TDS)."""
    out = []
    with open(DATA / "gsm8k/example_model_solutions.jsonl") as f:
        for line in f:
            row = json.loads(line)
            out.append(score_group([row[m]["is_correct"] for m in MODELS], [row[m]["solution"] for m in MODELS])["vps"])
    return np.asarray(out)


def chunks_of(stream: list[int], batch_size: int, mini: int, rep: int) -> list[list[int]]:
    """Parse a RepeatSampler-shaped stream back into chunks, asserting the repeat structure on the way."""
    block = batch_size * mini * rep
    assert len(stream) % block == 0
    out = []
    for b in range(0, len(stream), block):
        blk = stream[b : b + block]
        one = blk[: batch_size * mini]
        assert blk == one * rep  # whole chunk repeated repeat_count times
        idx = one[::mini]
        assert one == [i for i in idx for _ in range(mini)]  # each index mini times consecutively
        out.append(idx)
    return out


def chi2_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    exp = probs * counts.sum()
    return float(sps.chisquare(counts, exp).pvalue)


# --- weights -----------------------------------------------------------------------------------------------


def test_probabilities_formula_floor_and_no_minmax():
    s = np.array([0.0, 0.05, 0.1, 0.2])
    p = vas_probabilities(s, epsilon=0.1)
    floor = 0.1 * s.mean()
    w = np.maximum(s, floor)
    np.testing.assert_allclose(p, w / w.sum())
    assert p.min() > 0  # the zero-score prompt keeps a positive probability (min-max would give 0)
    assert p[2] / p[1] == pytest.approx(2.0)  # proportional, not min-max rescaled
    p0 = vas_probabilities(s, epsilon=0.0)
    assert p0[0] == 0.0 and p0[3] == pytest.approx(0.2 / 0.35)
    p2 = vas_probabilities(s, epsilon=0.0, power=2.0)
    np.testing.assert_allclose(p2, s**2 / (s**2).sum())


@pytest.mark.parametrize("scores", [np.zeros(7), np.full(7, 0.13), np.full(7, 1e-300)])
def test_zero_and_all_equal_scores_are_exactly_uniform(scores):
    for eps in (0.0, 1e-3):
        assert np.array_equal(vas_probabilities(scores, epsilon=eps), np.full(7, 1 / 7))


def test_invalid_scores_are_rejected_naming_the_prompt():
    with pytest.raises(ValueError, match="prompt 2"):
        vas_probabilities([0.1, 0.2, -0.5])
    with pytest.raises(ValueError, match="prompt 1"):
        vas_probabilities([0.1, float("nan")])
    with pytest.raises(ValueError, match="power"):
        vas_probabilities([0.1], power=0)


# --- frequencies --------------------------------------------------------------------------------------------


def test_single_draw_frequencies_follow_vps(real_vps):
    """batch_size=1, lambda=1: every slot is one P-weighted draw with replacement.  300 epochs x 40 prompts =
    12,000 draws; chi-square goodness of fit against P (fixed seeds, so deterministic)."""
    vps = real_vps[:40]
    s = VASSampler(40, vps, mini_repeat_count=1, batch_size=1, vas_fraction=1.0, seed=3)
    counts = np.zeros(40)
    for e in range(300):
        s.set_epoch(e)
        for i in s:
            counts[i] += 1
    p = vas_probabilities(vps)
    assert chi2_pvalue(counts, p) > 1e-3
    # and it is not uniform (the real VPS spread is large)
    assert chi2_pvalue(counts, np.full(40, 1 / 40)) < 1e-10


def test_chunked_frequencies_follow_vps_on_real_scores(real_vps):
    """GRPO-like chunks (16 prompts, 8 VAS slots each) over the 1,319 real GSM8K VPS: draw frequencies per
    prompt, pooled into 10 bins by P, match P (in-chunk no-replacement distortion is negligible here)."""
    s = VASSampler(len(real_vps), real_vps, mini_repeat_count=1, batch_size=16, vas_fraction=1.0, seed=11)
    counts = np.zeros(len(real_vps))
    for e in range(8):
        s.set_epoch(e)
        for idx, flags in s.iter_chunks():
            assert all(flags)
            counts[idx] += 1
    p = vas_probabilities(real_vps)
    order = np.argsort(p)
    bins = np.array_split(order, 10)
    obs = np.array([counts[b].sum() for b in bins])
    exp_p = np.array([p[b].sum() for b in bins])
    assert chi2_pvalue(obs, exp_p) > 1e-3


def test_floor_gives_zero_score_prompts_their_share_and_epsilon_zero_excludes_them():
    scores = np.array([0.0, 0.0, 0.2, 0.2, 0.1])
    s = VASSampler(5, scores, mini_repeat_count=1, batch_size=1, vas_fraction=1.0, seed=0, epsilon=0.5)
    counts = np.zeros(5)
    for e in range(2000):
        s.set_epoch(e)
        counts += np.bincount(list(s), minlength=5)
    p = vas_probabilities(scores, epsilon=0.5)
    assert p[0] == pytest.approx(0.5 * 0.1 / (2 * 0.05 + 0.5))
    assert counts[0] > 0 and counts[1] > 0
    assert chi2_pvalue(counts, p) > 1e-3
    z = VASSampler(5, scores, mini_repeat_count=1, batch_size=1, vas_fraction=1.0, seed=0, epsilon=0.0)
    seen = Counter(i for e in range(500) for i in (z.set_epoch(e), list(z))[1])
    assert seen[0] == 0 and seen[1] == 0


def test_all_equal_scores_draw_uniformly():
    s = VASSampler(30, np.full(30, 0.2), mini_repeat_count=1, batch_size=1, vas_fraction=1.0, seed=5)
    counts = np.zeros(30)
    for e in range(400):
        s.set_epoch(e)
        counts += np.bincount(list(s), minlength=30)
    assert chi2_pvalue(counts, np.full(30, 1 / 30)) > 1e-3


# --- structure --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,mini,bs,rep", [(7, 2, 3, 4), (23, 4, 5, 1), (16, 8, 4, 2)])
def test_lambda_zero_is_trl_repeat_sampler_bit_for_bit(n, mini, bs, rep):
    ours = VASSampler(n, np.random.default_rng(0).random(n), mini_repeat_count=mini, batch_size=bs,
                      repeat_count=rep, vas_fraction=0.0, seed=42)
    trl = RepeatSampler(list(range(n)), mini_repeat_count=mini, batch_size=bs, repeat_count=rep, seed=42)
    assert len(ours) == len(trl)
    for _ in range(3):  # consecutive epochs continue the same permutation stream
        assert list(ours) == list(trl)


@pytest.mark.parametrize("n,mini,bs,rep", [(7, 2, 3, 4), (23, 4, 5, 1), (16, 8, 4, 2)])
def test_shuffle_off_at_lambda_zero_is_trl_repeat_sampler_in_dataset_order(n, mini, bs, rep):
    """TRL's ``shuffle_dataset=False``: RepeatSampler walks 0..N-1 in order every epoch; so must we."""
    ours = VASSampler(n, np.random.default_rng(0).random(n), mini_repeat_count=mini, batch_size=bs,
                      repeat_count=rep, vas_fraction=0.0, seed=42, shuffle=False)
    trl = RepeatSampler(list(range(n)), mini_repeat_count=mini, batch_size=bs, repeat_count=rep, shuffle=False,
                        seed=42)
    for epoch in range(3):
        ours.set_epoch(epoch)
        stream = list(ours)
        assert stream == list(trl)
        assert [i for c in chunks_of(stream, bs, mini, rep) for i in c] == list(range((n // bs) * bs))


def test_shuffle_off_keeps_the_uniform_part_in_dataset_order(real_vps):
    """lambda > 0 with shuffle off: each chunk lists its uniform picks first - the next rows of the dataset in
    order, from row 0 every epoch - then its VAS picks (drawn by P, none repeating a row of the chunk)."""
    n, bs = 200, 8
    s = VASSampler(n, real_vps[:n], mini_repeat_count=2, batch_size=bs, vas_fraction=0.25, seed=5, shuffle=False)
    n_vas, n_uni = s.epoch_counts()
    assert (n_vas, n_uni) == (50, 150)
    for epoch in (0, 3):
        uniform, vas = [], []
        for j, (idx, is_vas) in enumerate(s.iter_chunks(epoch)):
            c = s.chunk_vas_count(j)
            assert is_vas == [False] * (bs - c) + [True] * c
            assert len(set(idx)) == bs
            uniform += idx[: bs - c]
            vas += idx[bs - c:]
        assert uniform == list(range(n_uni))
        assert len(vas) == n_vas
    shuffled = VASSampler(n, real_vps[:n], mini_repeat_count=2, batch_size=bs, vas_fraction=0.25, seed=5)
    assert [i for c, _ in shuffled.iter_chunks(0) for i in c] != [i for c, _ in s.iter_chunks(0) for i in c]


def test_uniform_weights_keep_repeat_sampler_structure():
    n, mini, bs, rep = 103, 8, 6, 3
    ours = VASSampler(n, np.full(n, 0.1), mini_repeat_count=mini, batch_size=bs, repeat_count=rep,
                      vas_fraction=0.5, seed=1)
    trl = RepeatSampler(list(range(n)), mini_repeat_count=mini, batch_size=bs, repeat_count=rep, seed=1)
    a, b = list(ours), list(trl)
    assert len(a) == len(b) == len(ours) == len(trl)
    ca, cb = chunks_of(a, bs, mini, rep), chunks_of(b, bs, mini, rep)
    assert len(ca) == len(cb) == n // bs
    assert all(len(set(c)) == bs for c in ca + cb)


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 60),
    bs=st.integers(1, 12),
    mini=st.integers(1, 4),
    rep=st.integers(1, 3),
    lam=st.floats(0.0, 1.0),
    eps=st.sampled_from([0.0, 1e-3, 0.5]),
    zeros=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31),
)
def test_structure_uniqueness_and_exact_lambda_mix(n, bs, mini, rep, lam, eps, zeros, seed):
    rng = np.random.default_rng(seed)
    scores = rng.random(n) * (rng.random(n) >= zeros)  # a fraction of zero scores (all zero possible)
    s = VASSampler(n, scores, mini_repeat_count=mini, batch_size=bs, repeat_count=rep, vas_fraction=lam,
                   seed=seed % 1000, epsilon=eps)
    stream = list(s)
    assert len(stream) == len(s)
    chunks = chunks_of(stream, bs, mini, rep)
    assert all(len(set(c)) == len(c) == bs for c in chunks)  # unique prompts inside every chunk
    plan = list(s.iter_chunks(epoch=0))
    assert [c for c, _ in plan] == chunks  # iter_chunks(epoch) replays __iter__'s epoch 0
    n_eff = (n // bs) * bs
    n_vas = int(np.floor(lam * n_eff + 0.5))
    flags = [f for _, fl in plan for f in fl]
    assert sum(flags) == n_vas  # exact epoch total
    if plan:
        per_chunk = [sum(fl) for _, fl in plan]
        assert max(per_chunk) - min(per_chunk) <= 1  # spread evenly
    uni = [i for c, fl in plan for i, f in zip(c, fl) if not f]
    assert len(uni) == len(set(uni))  # uniform part without replacement over the epoch
    stats = s.last_epoch_stats()
    assert (stats["n_vas"], stats["n_uniform"]) == (n_vas, n_eff - n_vas)
    p = vas_probabilities(scores, epsilon=eps)
    if stats["n_vas_fallback"] == 0:
        assert all(p[i] > 0 for c, fl in plan for i, f in zip(c, fl) if f)


def test_vas_draw_never_repeats_an_index_inside_a_chunk_even_when_one_prompt_dominates():
    scores = np.full(50, 1e-6)
    scores[7] = 1.0  # P(7) ~ 1: a with-replacement draw would repeat it in every chunk
    s = VASSampler(50, scores, mini_repeat_count=2, batch_size=10, vas_fraction=1.0, seed=0, epsilon=0.0)
    for idx, _ in s.iter_chunks(epoch=0):
        assert len(set(idx)) == 10 and 7 in idx


# --- ranks and determinism --------------------------------------------------------------------------------


def _sampler_on_rank(rank: int, table: VPSTable) -> list[int]:
    """Build and iterate the sampler as rank ``rank`` would: different env and global RNG state."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    torch.manual_seed(1000 + rank)
    np.random.seed(2000 + rank)
    random.seed(3000 + rank)
    s = VASSampler(len(table), table, mini_repeat_count=4, batch_size=6, repeat_count=2, vas_fraction=0.6,
                   seed=42, refresh_every=2)
    s.set_epoch(3)
    out = []
    for k, i in enumerate(s):
        out.append(i)
        if k == 48 * 3:  # mid-epoch online update, as every rank does with the same gathered data
            table.update([out[0], out[4]], [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    return out


def test_identical_streams_on_every_rank_and_accelerate_sharding(real_vps):
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler

    streams = []
    env = {k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    try:
        for rank in (0, 1):
            table = VPSTable([None] * 200, pass_rate=[None] * 200)  # fresh identical table per rank
            streams.append(_sampler_on_rank(rank, table))
    finally:
        for k, v in env.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert streams[0] == streams[1]
    # accelerate shards the (identical) stream: per-device batches of 12 = 3 prompts x 4 generations
    s = VASSampler(len(real_vps), real_vps, mini_repeat_count=4, batch_size=6, repeat_count=1, seed=7)
    full = list(s)
    shards = []
    for r in (0, 1):  # each rank iterates its own copy of epoch 0
        s.set_epoch(0)
        shards.append(list(BatchSamplerShard(BatchSampler(s, 12, False), num_processes=2, process_index=r)))
    rebuilt = [i for b0, b1 in zip(*shards) for i in b0 + b1]
    assert rebuilt == full[: len(rebuilt)] and len(rebuilt) == len(full)


def test_same_seed_and_epoch_same_stream_other_epoch_differs(real_vps):
    mk = lambda: VASSampler(len(real_vps), real_vps, mini_repeat_count=2, batch_size=8, seed=9)  # noqa: E731
    a, b = mk(), mk()
    a.set_epoch(5)
    b.set_epoch(5)
    x = list(a)
    assert x == list(b)
    a.set_epoch(5)
    assert list(a) == x
    assert list(a) != x  # epoch advanced to 6 automatically


# --- online updates ------------------------------------------------------------------------------------------


def _solved_table(n: int) -> VPSTable:
    """Every prompt scored p=1, TDS=0 -> VPS 0 everywhere (uniform draw)."""
    return VPSTable([f"p{i}" for i in range(n)], pass_rate=[1.0] * n, tds=[0.0] * n)


def test_online_update_changes_the_next_epoch_draw():
    t = _solved_table(40)
    s = VASSampler(40, t, mini_repeat_count=1, batch_size=1, vas_fraction=1.0, seed=0)
    s.set_epoch(0)
    before = Counter(list(s))
    assert max(before.values()) <= 5  # uniform: ~1 draw each
    t.update(["p7"], [[1.0, 0.0, 1.0, 0.0]], [["a b c", "d e f", "a b c d", "x"]])  # p_hat = 0.5 -> high VPS
    s.set_epoch(0)
    after = Counter(list(s))
    # P(p7) = v7 / (v7 + 39 * 1e-3 * mean) ~ 0.96
    p = vas_probabilities(t.vps_by_index())
    assert p[7] > 0.9 and after[7] >= 30
    assert s.last_epoch_stats()["scores_version"] == t.version


def test_update_reaches_the_current_epoch_only_with_refresh_every():
    for refresh, expect_change in ((None, False), (1, True)):
        t = _solved_table(40)
        s = VASSampler(40, t, mini_repeat_count=1, batch_size=1, vas_fraction=1.0, seed=1, refresh_every=refresh)
        it = s.iter_chunks(epoch=0)
        first = [next(it)[0][0] for _ in range(20)]
        t.update(["p3"], [[1.0, 0.0]])
        rest = [c[0] for c, _ in it]
        assert first.count(3) <= 3
        assert (rest.count(3) >= 15) is expect_change
        assert s.last_epoch_stats()["refreshes"] == (1 if refresh is None else 40)


def test_for_grpo_reads_trl_geometry():
    class Args:
        seed, generation_batch_size, steps_per_generation = 42, 32, 4

    class Trainer:
        args, num_generations, num_iterations, train_dataset = Args(), 8, 2, list(range(50))

    s = VASSampler.for_grpo(Trainer(), np.ones(50))
    assert (s.mini_repeat_count, s.batch_size, s.repeat_count, s.seed, s.shuffle) == (8, 4, 8, 42, True)
    Trainer.shuffle_dataset = False  # GRPOTrainer.shuffle_dataset = args.shuffle_dataset
    assert VASSampler.for_grpo(Trainer(), np.ones(50)).shuffle is False
    trl = RepeatSampler(list(range(50)), mini_repeat_count=8, batch_size=4, repeat_count=8, seed=42)
    assert len(s) == len(trl)


# --- SFT epoch sampler ------------------------------------------------------------------------------------------


def test_epoch_sampler_without_scores_is_a_seeded_permutation():
    s = VASEpochSampler(25, None, seed=3)
    a = list(s)
    assert sorted(a) == list(range(25)) and len(s) == 25
    assert list(VASEpochSampler(25, None, seed=3)) == a
    assert list(s) != a  # next epoch reshuffles


def test_epoch_sampler_weights_rows_by_their_problem_vps_and_follows_updates():
    pids = ["a", "a", "a", "b", "c", "zzz"]  # 'zzz' not in the table -> prior VPS
    t = VPSTable(["a", "b", "c"], pass_rate=[0.5, 1.0, 0.0], tds=[0.0, 0.0, 0.0])
    s = VASEpochSampler(6, t, problem_ids=pids, vas_fraction=1.0, num_samples=600, seed=0, epsilon=0.0)
    p = s.row_probabilities()
    prior = 0.8 * 0.25 + 0.2 * 0.5
    w = np.array([0.2, 0.2, 0.2, 0.0, 0.0, prior])
    np.testing.assert_allclose(p, w / w.sum())
    counts = np.zeros(6)
    for e in range(20):
        s.set_epoch(e)
        counts += np.bincount(list(s), minlength=6)
    assert counts[3] == counts[4] == 0
    assert chi2_pvalue(counts[[0, 1, 2, 5]], p[[0, 1, 2, 5]] / p[[0, 1, 2, 5]].sum()) > 1e-3
    assert s.last_epoch_stats()["n_vas"] == 600
    pp = VASEpochSampler(6, t, problem_ids=pids, per_problem=True, epsilon=0.0).row_probabilities()
    assert pp[:3].sum() == pytest.approx(0.2 / (0.2 + prior))  # problem 'a' as a whole, not 3x
    t.update(["b"], [[1.0, 0.0]])  # b becomes informative
    assert s.row_probabilities()[3] > 0


def test_epoch_sampler_lambda_mix_counts():
    s = VASEpochSampler(10, np.arange(10.0), vas_fraction=0.3, num_samples=25, seed=1)
    out = list(s)
    assert len(out) == 25
    st_ = s.last_epoch_stats()
    assert (st_["n_vas"], st_["n_uniform"]) == (8, 17)  # floor(0.3 * 25 + 0.5) = 8
