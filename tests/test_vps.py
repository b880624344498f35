"""VPSTable: initial scores (dataset columns / joined scores table / prior), the documented EMA update from
the trainer's own rollouts, its distributed contract, logging stats and Parquet persistence.  Real rollouts:
GSM8K test problems with 4 graded model solutions each (../shared/data/gsm8k/example_model_solutions.jsonl)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from curation.score.scores import score_group, trace_diversity
from training.vps import VPSConfig, VPSTable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def gsm8k_groups(n: int) -> list[dict]:
    """``n`` real groups: problem id, the 4 solutions' 0/1 rewards and texts."""
    out = []
    with open(DATA / "gsm8k/example_model_solutions.jsonl") as f:
        for i, line in enumerate(f):
            if i >= n:
                break
            row = json.loads(line)
            out.append({
                "problem_id": f"gsm8k-test-{i}",
                "rewards": [float(row[m]["is_correct"]) for m in MODELS],
                "texts": [row[m]["solution"] for m in MODELS],
            })
    return out


@pytest.fixture(scope="module")
def groups():
    return gsm8k_groups(120)


def test_initial_scores_from_dataset_columns_and_prior():
    rows = [
        {"problem_id": "a", "pass_rate": 0.25, "tds": 0.4},
        {"problem_id": "b", "pass_rate": 1.0, "tds": 0.1},
        {"problem_id": "c", "pass_rate": None, "tds": None},  # not scored -> prior
    ]
    t = VPSTable.from_dataset(rows)
    v = t.vps_by_index()
    assert v[0] == pytest.approx(0.8 * 0.25 * 0.75 + 0.2 * 0.4)
    assert v[1] == pytest.approx(0.2 * 0.1)
    assert v[2] == pytest.approx(0.8 * 0.25 + 0.2 * 0.5)  # prior p=0.5, tds=0.5
    assert t.get("c")["scored"] is False and t.get(0)["scored"] is True
    cfg = VPSConfig(alpha=0.5, beta=0.5, prior_pass_rate=0.0, prior_tds=0.0)
    assert VPSTable.from_dataset(rows, config=cfg).vps_by_index()[2] == 0.0


def test_scores_joined_from_curate_score_output(groups, tmp_path):
    """A scores table as `curate score` writes it (curation.score.scores.score_group on the real rollouts), joined on
    problem_id; vps recomputed equal to the stored one; unscored dataset rows get the prior."""
    scored = groups[:80]
    srows = [{"problem_id": g["problem_id"], "model": "gsm8k-mix",
              **score_group([r > 0.5 for r in g["rewards"]], g["texts"])} for g in scored]
    path = tmp_path / "scores.parquet"
    pa.Table.from_pylist(srows).to_pandas().to_parquet(path)
    dataset = [{"problem_id": g["problem_id"], "prompt": "..."} for g in groups]
    t = VPSTable.from_dataset(dataset, scores=path)
    v = t.vps_by_index()
    np.testing.assert_allclose(v[:80], [r["vps"] for r in srows], rtol=0, atol=1e-12)
    prior = 0.8 * 0.25 + 0.2 * 0.5
    assert np.all(v[80:] == prior)
    assert sum(t.get(i)["scored"] for i in range(len(t))) == 80
    # several models need an explicit choice
    two = srows + [{**srows[0], "model": "other"}]
    with pytest.raises(ValueError, match="several models"):
        VPSTable.from_dataset(dataset, scores=pa.Table.from_pylist(two))
    t2 = VPSTable.from_dataset(dataset, scores=pa.Table.from_pylist(two), model="other")
    assert sum(t2.get(i)["scored"] for i in range(len(t2))) == 1


def test_stored_vps_with_other_weights_is_recomputed_with_a_warning():
    rows = [{"problem_id": "a", "pass_rate": 0.5, "tds": 0.5, "vps": 0.5 * 0.25 + 0.5 * 0.5}]
    with pytest.warns(UserWarning, match="recomputed"):
        t = VPSTable.from_dataset(rows)
    assert t.vps_by_index()[0] == pytest.approx(0.8 * 0.25 + 0.2 * 0.5)


def test_bad_scores_name_the_row():
    with pytest.raises(ValueError, match=r"row 1 \(problem_id='b'\): pass_rate=1.5"):
        VPSTable.from_dataset([{"problem_id": "a", "pass_rate": 0.5}, {"problem_id": "b", "pass_rate": 1.5}])
    with pytest.raises(ValueError, match="no 'pass_rate'"):
        VPSTable.from_dataset([{"problem_id": "a", "vps": 0.2}])


@pytest.mark.parametrize("m", [1.0, 1.5, -0.1])
def test_frozen_or_invalid_momentum_is_rejected(m):
    with pytest.raises(ValueError, match="freezes" if m == 1.0 else "momentum"):
        VPSConfig(momentum=m)
    t = VPSTable.uniform_prior(2)
    t.config.momentum = m  # changed after construction: caught at the next update
    with pytest.raises(ValueError, match="momentum"):
        t.update([0], [[1.0, 0.0]])


def test_ema_update_follows_the_documented_formula(groups):
    """p <- m p + (1-m) p_hat, TDS <- m TDS + (1-m) tds_hat, with p_hat the fraction of rewards > threshold and
    tds_hat = curation.score.scores.trace_diversity of the group's texts."""
    m = 0.3
    rows = [{"problem_id": g["problem_id"], "pass_rate": 0.5, "tds": 0.2} for g in groups]
    t = VPSTable.from_dataset(rows, config=VPSConfig(momentum=m))
    v0 = t.version
    g = groups[5]
    t.update([g["problem_id"]], [g["rewards"]], [g["texts"]])
    p_hat = sum(r > 0.5 for r in g["rewards"]) / 4
    tds_hat = trace_diversity(g["texts"], "edit")
    st_ = t.get(g["problem_id"])
    assert st_["pass_rate"] == pytest.approx(m * 0.5 + (1 - m) * p_hat)
    assert st_["tds"] == pytest.approx(m * 0.2 + (1 - m) * tds_hat)
    assert st_["vps"] == pytest.approx(0.8 * st_["pass_rate"] * (1 - st_["pass_rate"]) + 0.2 * st_["tds"])
    assert st_["n_observed"] == 4 and st_["n_groups"] == 1
    assert t.version == v0 + 1
    # untouched prompts keep their scores
    assert t.get(groups[6]["problem_id"])["pass_rate"] == 0.5
    # second observation of the same prompt: EMA again, from the updated value
    p1 = st_["pass_rate"]
    t.update([5], [[1.0, 1.0, 1.0, 1.0]])  # by dataset index, no texts -> TDS unchanged
    assert t.get(5)["pass_rate"] == pytest.approx(m * p1 + (1 - m) * 1.0)
    assert t.get(5)["tds"] == pytest.approx(st_["tds"])


def test_prior_is_replaced_by_the_first_observation():
    t = VPSTable.uniform_prior(3)
    t.update([1], [[1.0, 0.0, 0.0, 0.0]], [["a b c", "a b d", "x y z", "a b c"]])
    assert t.get(1)["pass_rate"] == 0.25
    assert t.get(1)["tds"] == pytest.approx(trace_diversity(["a b c", "a b d", "x y z", "a b c"]))
    t2 = VPSTable.uniform_prior(3, VPSConfig(replace_prior=False))
    t2.update([1], [[1.0, 0.0, 0.0, 0.0]])
    assert t2.get(1)["pass_rate"] == pytest.approx(0.5 * 0.5 + 0.5 * 0.25)


def test_rows_sharing_a_problem_share_state_and_keys_validate():
    t = VPSTable.from_dataset([{"problem_id": "a"}, {"problem_id": "b"}, {"problem_id": "a"}])
    assert t.num_problems == 2 and len(t) == 3
    t.update(["a"], [[1.0, 1.0]])
    assert t.vps_by_index()[0] == t.vps_by_index()[2] == 0.0 + 0.2 * 0.5
    with pytest.raises(KeyError, match="'zzz'"):
        t.update(["zzz"], [[1.0]])
    with pytest.raises(KeyError, match="out of range"):
        t.update([3], [[1.0]])


def test_update_from_flat_gathered_layout(groups):
    """TRL layout: one entry per rollout of the global batch, each prompt's group consecutive; rewards may be a
    tensor column of the gathered rewards_per_func.  Splitting the batch across 'ranks' and concatenating
    (what gather does) gives the same table as one process seeing everything."""
    G = 4
    sel = groups[:16]
    keys = [g["problem_id"] for g in sel for _ in range(G)]
    rew = torch.tensor([r for g in sel for r in g["rewards"]])
    txt = [x for g in sel for x in g["texts"]]
    base = [{"problem_id": g["problem_id"]} for g in groups]
    a = VPSTable.from_dataset(base)
    a.update_from_flat(keys, rew, txt, group_size=G)
    # two ranks each hold half of the global batch (groups split mid-way: 6 rollouts per rank-chunk)
    halves = [(keys[i : i + 6], rew[i : i + 6], txt[i : i + 6]) for i in range(0, len(keys), 6)]
    gk = [k for h in halves for k in h[0]]
    gr = torch.cat([h[1] for h in halves])
    gt = [x for h in halves for x in h[2]]
    b = VPSTable.from_dataset(base)
    b.update_from_flat(gk, gr, gt, group_size=G)
    assert a.to_table().equals(b.to_table())
    for g in sel:
        assert a.get(g["problem_id"])["pass_rate"] == sum(g["rewards"]) / G  # prior replaced
    with pytest.raises(ValueError, match="not grouped by prompt"):
        a.update_from_flat(keys[1:] + keys[:1], rew, txt, group_size=G)
    with pytest.raises(ValueError, match="groups of 3"):
        a.update_from_flat(keys, rew, txt, group_size=3)


def test_nan_rewards_are_ignored():
    t = VPSTable.uniform_prior(2)
    t.update([0], [[1.0, float("nan"), 0.0, 1.0]])
    assert t.get(0)["pass_rate"] == pytest.approx(2 / 3) and t.get(0)["n_observed"] == 3
    t.update([1], [[float("nan")] * 4])
    assert t.get(1)["scored"] is False and t.get(1)["n_groups"] == 0


def test_stats_report_zero_variance_groups(groups):
    t = VPSTable.from_dataset([{"problem_id": g["problem_id"]} for g in groups])
    sel = groups[:40]
    out = t.update([g["problem_id"] for g in sel], [g["rewards"] for g in sel])
    zero = sum(len(set(g["rewards"])) == 1 for g in sel)
    assert 0 < zero < 40  # the real data has both kinds
    assert out["zero_variance_frac"] == pytest.approx(zero / 40)
    s = t.stats()
    assert s["zero_variance_frac_last"] == pytest.approx(zero / 40)
    assert s["zero_variance_frac_total"] == pytest.approx(zero / 40)
    assert s["observed_frac"] == pytest.approx(40 / len(groups))
    v = t.vps_by_index()
    assert (s["vps_min"], s["vps_max"], s["vps_mean"]) == pytest.approx((v.min(), v.max(), v.mean()))


def test_save_load_roundtrip_and_datasets_can_read_it(groups, tmp_path):
    import datasets

    t = VPSTable.from_dataset([{"problem_id": g["problem_id"]} for g in groups])
    sel = groups[:10]
    t.update([g["problem_id"] for g in sel], [g["rewards"] for g in sel], [g["texts"] for g in sel])
    path = t.save(tmp_path / "vps.parquet")
    ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    assert ds.num_rows == len(groups)
    assert ds.column_names[:6] == ["index", "problem_id", "pass_rate", "ovs", "tds", "vps"]
    np.testing.assert_allclose(ds["vps"], t.vps_by_index())
    back = VPSTable.load(path)
    assert back.to_table().equals(t.to_table())
    fresh = VPSTable.from_dataset([{"problem_id": g["problem_id"]} for g in groups])
    fresh.load_state_dict(t.state_dict())
    assert fresh.to_table().equals(t.to_table()) and fresh.version == t.version


@settings(max_examples=60, deadline=None)
@given(
    m=st.floats(0.0, 0.99),
    p0=st.floats(0.0, 1.0),
    obs=st.lists(st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=8), min_size=1, max_size=12),
)
@example(m=1.914932304142323e-266, p0=0.0, obs=[[0.0], [0.0], [0.0], [0.0]])  # once drove the Beta to a = 0
def test_ema_stays_in_range_and_matches_closed_form(m, p0, obs):
    t = VPSTable.from_dataset([{"problem_id": "x", "pass_rate": p0, "tds": 0.0}], config=VPSConfig(momentum=m))
    expect = p0
    for r in obs:
        t.update(["x"], [r])
        expect = m * expect + (1 - m) * (sum(v > 0.5 for v in r) / len(r))
    got = t.get("x")
    assert got["pass_rate"] == pytest.approx(expect, abs=1e-12)
    assert 0.0 <= got["vps"] <= 0.8 * 0.25 + 0.2 + 1e-12
    assert math.isfinite(got["vps"])


@pytest.mark.parametrize("vps_from", ["pass_rate", "posterior"])
def test_a_prompt_that_always_fails_keeps_a_proper_posterior(vps_from):
    """Thousands of all-wrong groups (or a momentum near 0) never drive the Beta to ``a = 0``: the discount acts on
    the evidence beyond the prior, so ``a`` stays >= the prior's ``a0`` and the zero-variance prediction stays
    finite and < 1."""
    from curation.score.posterior import zero_variance_prob

    for m in (0.5, 1e-300):
        t = VPSTable.from_dataset([{"problem_id": "x", "pass_rate": 0.0, "tds": 0.0, "post_a": 1.0, "post_b": 9.0}],
                                  config=VPSConfig(momentum=m, vps_from=vps_from))
        for _ in range(1500):
            t.update(["x"], [[0.0, 0.0, 0.0, 0.0]])
        g = t.get("x")
        a0 = t.config.prior_beta()[0]
        assert g["post_a"] == pytest.approx(a0) and g["post_a"] > 0
        assert g["post_b"] == pytest.approx(t.config.prior_beta()[1] + 4 / (1 - m))  # the discounted evidence
        p0 = float(t.zero_variance_prob_by_index(4)[0])
        assert p0 == pytest.approx(float(zero_variance_prob(g["post_a"], g["post_b"], 4))) and 0 < p0 < 1
        assert math.isfinite(g["vps"])


def test_from_a_shuffled_hf_dataset_follows_its_row_order():
    import datasets

    ds = datasets.Dataset.from_list(
        [{"problem_id": f"q{i}", "pass_rate": i / 10, "tds": 0.0, "prompt": "x"} for i in range(11)]
    ).shuffle(seed=0)
    t = VPSTable.from_dataset(ds)
    for i, row in enumerate(ds):
        assert t.get(i)["problem_id"] == row["problem_id"]
        assert t.get(i)["pass_rate"] == pytest.approx(row["pass_rate"])


# --- posterior mode: the Beta posterior of curate score's scores -------------------------------------------------


def test_posterior_mode_reads_the_scores_posterior_and_matches_curate_score(groups):
    """``vps_from='posterior'``: VPS = alpha * E[p(1-p)] + beta * TDS from post_a / post_b - exactly the vps
    `curate score --vps-from posterior` stored (so no "recomputed" warning); unscored rows take Beta(1, 1)."""
    import warnings

    import pyarrow as pa

    from curation.core import schema as S
    from curation.score.scores import score_rollouts

    recs = [{"problem_id": g["problem_id"], "model": "m", "sample": j, "text": t, "extracted": None, "verdict": "x",
             "correct": r > 0.5, "num_tokens": None, "finish_reason": None}
            for g in groups[:60] for j, (r, t) in enumerate(zip(g["rewards"], g["texts"]))]
    scores = score_rollouts(pa.Table.from_pylist(recs, schema=S.ROLLOUTS), vps_from="posterior")
    dataset = [{"problem_id": g["problem_id"]} for g in groups[:70]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = VPSTable.from_dataset(dataset, scores=scores, config=VPSConfig(vps_from="posterior"))
    v = t.vps_by_index()
    by_id = {r["problem_id"]: r for r in scores.to_pylist()}
    np.testing.assert_allclose(v[:60], [by_id[d["problem_id"]]["vps"] for d in dataset[:60]], rtol=0, atol=1e-12)
    row = by_id[dataset[0]["problem_id"]]
    a, b = row["post_a"], row["post_b"]
    assert v[0] == pytest.approx(0.8 * a * b / ((a + b) * (a + b + 1)) + 0.2 * row["tds"])
    assert t.get(0)["pass_rate"] == pytest.approx(a / (a + b)) and t.get(0)["post_a"] == a
    assert v[65] == pytest.approx(0.8 * (1 / 6) + 0.2 * 0.5)  # the prior Beta(1, 1): E[p(1-p)] = 1/6
    # the MMR1 mode on the same table recomputes from p_hat: different numbers, one warning
    with pytest.warns(UserWarning, match="recomputed"):
        plain = VPSTable.from_dataset(dataset, scores=scores)
    assert plain.vps_by_index()[0] != pytest.approx(v[0])
    # posterior mode needs the posterior of every scored prompt
    with pytest.raises(ValueError, match="post_a / post_b"):
        VPSTable.from_dataset([{"problem_id": "x", "pass_rate": 0.5}], config=VPSConfig(vps_from="posterior"))
    with pytest.raises(ValueError, match="vps_from"):
        VPSConfig(vps_from="mean")


def test_posterior_mode_online_update_is_the_discounted_beta(tmp_path):
    rows = [{"problem_id": "a", "pass_rate": 0.25, "tds": 0.3, "post_a": 2.0, "post_b": 6.0},
            {"problem_id": "b", "pass_rate": None, "tds": None}]
    cfg = VPSConfig(vps_from="posterior", momentum=0.5)
    t = VPSTable.from_dataset(rows, config=cfg)
    t.update(["a", "b"], [[1.0, 1.0, 0.0, 1.0], [0.0, 1.0]])
    ga, gb = t.get("a"), t.get("b")
    # the evidence beyond the prior Beta(1, 1) is discounted: a <- a0 + m (a - a0) + k, b <- b0 + m (b - b0) + G - k
    assert (ga["post_a"], ga["post_b"]) == pytest.approx((1 + 0.5 * (2 - 1) + 3, 1 + 0.5 * (6 - 1) + 1))
    assert ga["pass_rate"] == pytest.approx(4.5 / 9)
    assert (gb["post_a"], gb["post_b"]) == pytest.approx((1 + 1, 1 + 1))  # on the prior: the conjugate update
    a, b = 4.5, 4.5
    assert ga["vps"] == pytest.approx(0.8 * a * b / ((a + b) * (a + b + 1)) + 0.2 * ga["tds"])
    # persisted and restored with the posterior
    path = t.save(tmp_path / "vps.parquet")
    back = VPSTable.load(path, config=cfg)
    np.testing.assert_allclose(back.vps_by_index(), t.vps_by_index(), rtol=0, atol=1e-15)
    assert back.get("a")["post_b"] == pytest.approx(4.5)


# --- the base prior fitted to the scores (posterior_prior = "eb") -----------------------------------------------


def test_eb_base_prior_is_the_beta_binomial_fit_of_the_scores_counts(tmp_path):
    """Real GSM8K counts (4 graded solutions per problem): the base prior is ``fit_eb_prior`` of the scored
    prompts' (n, n_correct), one per problem id; unscored prompts start on it, forgetting pulls toward it, and a
    saved table (and a trainer checkpoint's state) keeps it."""
    from curation.score.posterior import fit_eb_prior

    groups = gsm8k_groups(300)
    scores = [{"problem_id": g["problem_id"], "pass_rate": float(np.mean(g["rewards"])), "n": 4,
               "n_correct": int(sum(g["rewards"])), "tds": 0.5} for g in groups]
    rows = [{"problem_id": g["problem_id"]} for g in groups] + [{"problem_id": groups[0]["problem_id"]},
                                                                 {"problem_id": "unscored"}]
    cfg = VPSConfig(posterior_prior="eb", vps_from="posterior", posterior_decay=0.5)
    t = VPSTable.from_dataset(rows, config=cfg, scores=scores)
    fit = fit_eb_prior(np.full(300, 4.0), np.array([s["n_correct"] for s in scores], dtype=float))
    a0, b0 = t.prior_beta()
    assert t.prior_info["kind"] == "eb" and t.prior_info["groups"] == 300  # the duplicated row counts once
    assert (a0, b0) == pytest.approx((fit["a0"], fit["b0"])) and (a0, b0) != pytest.approx((1.0, 1.0), abs=0.05)
    assert (t.get("unscored")["post_a"], t.get("unscored")["post_b"]) == pytest.approx((a0, b0))
    c = scores[5]["n_correct"]
    assert (t.get(groups[5]["problem_id"])["post_a"], t.get(groups[5]["problem_id"])["post_b"]) == \
        pytest.approx((a0 + c, b0 + 4 - c))
    t.update([groups[5]["problem_id"]], [[1.0, 0.0, 0.0, 0.0]])  # a <- a0 + m (a - a0) + k (m = 0.5)
    assert t.get(groups[5]["problem_id"])["post_a"] == pytest.approx(a0 + 0.5 * c + 1)
    t.decay()
    assert t.get("unscored")["post_a"] == pytest.approx(a0)  # the prior is a fixed point of forgetting
    assert t.get(groups[5]["problem_id"])["post_a"] == pytest.approx(a0 + 0.5 * (0.5 * c + 1))
    back = VPSTable.load(t.save(tmp_path / "vps.parquet"), config=cfg)
    assert back.prior_beta() == pytest.approx((a0, b0)) and back.prior_info == t.prior_info
    fresh = VPSTable.from_dataset(rows, config=cfg)  # no scores: nothing to fit
    fresh.load_state_dict(t.state_dict())
    assert fresh.prior_beta() == pytest.approx((a0, b0))
    fresh.decay()
    assert fresh.get("unscored")["post_a"] == pytest.approx(a0)
    # the fixed prior (default) is unchanged, and the eb fit says when it cannot fit
    assert VPSTable.from_dataset(rows, scores=scores).prior_beta() == (1.0, 1.0)
    assert fresh.prior_info["kind"] == "eb"
    none = VPSTable.from_dataset(rows, config=cfg)
    assert none.prior_info["kind"] == "fixed" and none.prior_info["eb_status"].startswith("fallback")
    with pytest.raises(ValueError, match="posterior_prior"):
        VPSConfig(posterior_prior="jeffreys")


def test_eb_base_prior_predicts_zero_variance_where_the_uniform_one_does_not():
    """A data set where most prompts are never solved (60 % at p = 0, the rest p ~ Beta(1, 3)): from 16 scored
    rollouts per prompt, the predicted probability that a fresh group of 4 has zero variance is about right under
    the fitted prior and too low under the uniform one (0 of 16 under Beta(1, 1) still leaves p ~ 1/18)."""
    rng = np.random.default_rng(0)
    n_prompts = 4000
    p = np.where(rng.random(n_prompts) < 0.6, 0.0, rng.beta(1.0, 3.0, n_prompts))
    c = rng.binomial(16, p)
    k = rng.binomial(4, p)
    observed = float(np.mean((k == 0) | (k == 4)))
    scores = [{"problem_id": f"q{i}", "pass_rate": c[i] / 16, "n": 16, "n_correct": int(c[i])} for i in range(n_prompts)]
    rows = [{"problem_id": f"q{i}"} for i in range(n_prompts)]
    pred = {prior: float(VPSTable.from_dataset(rows, config=VPSConfig(posterior_prior=prior), scores=scores)
                         .zero_variance_prob_by_index(4).mean()) for prior in ("fixed", "eb")}
    assert abs(pred["eb"] - observed) < 0.03  # 0.797 vs 0.778 (the fit is one Beta for a two-part mixture)
    assert observed - pred["fixed"] > 0.08  # 0.669
