"""The Beta posterior of the pass rate (curation.score.posterior): every number against an independent
computation with scipy.stats (beta, betabinom, numerical integration), the priors (uniform, Jeffreys,
Beta(A,B), empirical Bayes, another model's scores) and their edge cases, and the posterior columns of a real
scores table (the 1,319 x 4 GSM8K example solutions)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import integrate, stats

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from curation.core import schema as S  # noqa: E402
from curation.core.bands import parse_bound  # noqa: E402
from curation.score import posterior as P  # noqa: E402
from curation.score.scores import score_rollouts  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GRID = [(0, 0), (0, 4), (4, 4), (1, 4), (3, 32), (0, 32), (32, 32), (16, 32), (7, 9)]
PRIORS = [(1.0, 1.0), (0.5, 0.5), (0.2, 3.0), (7.5, 2.5)]


def _scipy_ovs(a: float, b: float) -> tuple[float, float]:
    """E[p(1-p)] and sd[p(1-p)] under Beta(a, b) from scipy's own raw moments of the Beta distribution
    (independent of the closed forms under test)."""
    d = stats.beta(a, b)
    m1, m2, m3, m4 = (d.moment(k) for k in (1, 2, 3, 4))
    m = m1 - m2
    return m, math.sqrt(max(m2 - 2 * m3 + m4 - m * m, 0.0))


def _integrated_ovs(a: float, b: float) -> float:
    """E[p(1-p)] by numerical integration of the density (a third, cruder check)."""
    return integrate.quad(lambda x: x * (1 - x) * stats.beta(a, b).pdf(x), 0, 1, limit=200)[0]


@pytest.mark.parametrize("a0, b0", PRIORS)
def test_posterior_columns_match_scipy_beta(a0, b0):
    n = np.array([g[1] for g in GRID], dtype=float)
    c = np.array([g[0] for g in GRID], dtype=float)
    got = P.posterior_columns(n, c, a0, b0, level=0.9)
    for i, (ci, ni) in enumerate(GRID):
        a, b = a0 + ci, b0 + ni - ci
        d = stats.beta(a, b)
        assert got["post_a"][i] == a and got["post_b"][i] == b
        assert got["post_mean"][i] == pytest.approx(d.mean(), rel=1e-12)
        assert got["post_lo"][i] == pytest.approx(d.ppf(0.05), rel=1e-9, abs=1e-12)
        assert got["post_hi"][i] == pytest.approx(d.ppf(0.95), rel=1e-9, abs=1e-12)
        m, sd = _scipy_ovs(a, b)
        assert got["post_ovs"][i] == pytest.approx(m, rel=1e-10)
        assert got["post_ovs"][i] == pytest.approx(_integrated_ovs(a, b), rel=1e-5)
        assert P.ovs_sd(a, b) == pytest.approx(sd, rel=1e-6, abs=1e-12)
        # the interval holds 90 % of the posterior mass, 5 % on each side
        assert d.cdf(got["post_hi"][i]) - d.cdf(got["post_lo"][i]) == pytest.approx(0.9, abs=1e-9)


def test_edge_cases_no_rollouts_all_correct_and_other_levels():
    # N = 0: the posterior is the prior
    got = P.posterior_columns(0, 0, 2.0, 3.0)
    assert (got["post_a"][()], got["post_b"][()]) == (2.0, 3.0)
    assert got["post_mean"][()] == pytest.approx(0.4) and got["post_ovs"][()] == pytest.approx(6 / 30)
    u = P.posterior_columns(0, 0, 1.0, 1.0)
    assert u["post_lo"][()] == pytest.approx(0.05) and u["post_hi"][()] == pytest.approx(0.95)  # uniform quantiles
    # all correct: the interval hugs 1, E[p(1-p)] is small but not 0 (unlike p_hat (1 - p_hat))
    allc = P.posterior_columns(32, 32, 1.0, 1.0)
    assert allc["post_hi"][()] > 0.99 and allc["post_lo"][()] == pytest.approx(stats.beta(33, 1).ppf(0.05))
    assert allc["post_ovs"][()] == pytest.approx(33 / (34 * 35)) and 0 < allc["post_ovs"][()] < 0.03
    # another credible level
    lo, hi = P.credible_interval(3.0, 5.0, 0.5)
    assert (lo, hi) == pytest.approx((stats.beta(3, 5).ppf(0.25), stats.beta(3, 5).ppf(0.75)))
    with pytest.raises(ValueError, match="credible level"):
        P.credible_interval(1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="n_correct"):
        P.posterior_columns(4, 5, 1.0, 1.0)
    with pytest.raises(ValueError, match="a0, b0 > 0"):
        P.posterior_columns(4, 2, 0.0, 1.0)
    # 0 of 4 and 0 of 32: the same p_hat, very different certainty
    w4 = P.posterior_columns(4, 0, 1, 1)
    w32 = P.posterior_columns(32, 0, 1, 1)
    assert w4["post_hi"][()] - w4["post_lo"][()] > 3 * (w32["post_hi"][()] - w32["post_lo"][()])


def test_predictive_in_band_matches_scipy_betabinom():
    lo, hi = parse_bound(">0", "min"), parse_bound("<1", "max")
    cases = [(0, 8, 1.0, 9.0), (3, 8, 4.0, 6.0), (8, 8, 9.0, 1.0), (0, 4, 0.3, 4.5), (2, 30, 3.0, 29.0),
             (0, 32, 1.0, 33.0), (5, 32, 6.0, 28.0)]
    c, n, a, b = (np.array(x, dtype=float) for x in zip(*cases))
    got = P.predictive_in_band(c, n, a, b, 32, lo, hi)
    for i, (ci, ni, ai, bi) in enumerate(cases):
        R = 32 - int(ni)
        x = np.arange(R + 1)
        pmf = stats.betabinom.pmf(x, R, ai, bi)
        final = (ci + x) / 32
        assert got[i] == pytest.approx(pmf[(final > 0) & (final < 1)].sum(), abs=1e-12)
    # both outcomes seen: certainly in band for 0 < p < 1; at n_max the answer is p_hat's
    assert got[1] == pytest.approx(1.0) and got[5] == 0.0 and got[6] == 1.0
    # an inclusive one-sided band: P(final >= 0.25) for 2 of 8
    b25 = parse_bound(">=0.25", "min")
    g = P.predictive_in_band(2, 8, 3.0, 7.0, 16, b25, None)[0]
    x = np.arange(9)
    assert g == pytest.approx(stats.betabinom.pmf(x, 8, 3, 7)[(2 + x) / 16 >= 0.25].sum(), abs=1e-12)


def test_empirical_bayes_recovers_a_known_prior_and_guards():
    rng = np.random.default_rng(0)
    for a_true, b_true in ((0.4, 0.8), (3.0, 5.0)):
        p = rng.beta(a_true, b_true, size=4000)
        n = np.full(p.size, 16)
        c = rng.binomial(16, p)
        fit = P.fit_eb_prior(n, c, max_strength=1000)
        assert fit["a0"] == pytest.approx(a_true, rel=0.15) and fit["b0"] == pytest.approx(b_true, rel=0.15)
        assert fit["status"] == "fit"
        # the fit maximises the beta-binomial marginal likelihood (scipy's betabinom): no better point nearby
        ll = lambda a, b, c=c, n=n: stats.betabinom.logpmf(c, n, a, b).sum()  # noqa: E731
        best = ll(fit["a0"], fit["b0"])
        for da, db in ((1.03, 1), (0.97, 1), (1, 1.03), (1, 0.97)):
            assert ll(fit["a0"] * da, fit["b0"] * db) <= best + 1e-6
    # unequal N (what adaptive scoring produces) is used as it is
    p = rng.beta(2.0, 2.0, size=3000)
    n = rng.choice([4, 8, 32], size=p.size)
    fit = P.fit_eb_prior(n, rng.binomial(n, p), max_strength=1000)
    assert fit["a0"] == pytest.approx(2.0, rel=0.2) and fit["b0"] == pytest.approx(2.0, rel=0.2)
    # shrinkage guard: groups that all look alike would send s to infinity; it stops at s_max = median N
    c = rng.binomial(8, 0.3, size=2000)
    fit = P.fit_eb_prior(np.full(2000, 8), c)
    assert fit["s_max"] == 8 and fit["strength"] == pytest.approx(8, rel=1e-6) and fit["status"].endswith("s_max)")
    ll8 = lambda mu: stats.betabinom.logpmf(c, 8, mu * 8, (1 - mu) * 8).sum()  # noqa: E731
    assert ll8(fit["mean"]) >= max(ll8(fit["mean"] - 0.005), ll8(fit["mean"] + 0.005))  # best mean at s = s_max
    assert abs(fit["mean"] - c.sum() / 16000) < 0.03
    # floor: no prior that declares p = 0 certain, even when nothing was ever solved
    fit = P.fit_eb_prior(np.full(50, 8), np.zeros(50))
    assert fit["a0"] >= P.EB_MIN_PARAM
    # fallbacks
    assert P.fit_eb_prior([4], [1])["status"].startswith("fallback")
    assert P.fit_eb_prior([1, 1, 1], [0, 1, 0])["status"].startswith("fallback")
    assert P.fit_eb_prior([0, 0], [0, 0])["a0"] == 1.0


def test_prior_specs_and_the_prior_from_another_models_scores(tmp_path):
    assert (P.PriorSpec.parse("jeffreys").a, P.PriorSpec.parse("jeffreys").b) == (0.5, 0.5)
    spec = P.PriorSpec.parse("beta:2,5")
    assert (spec.kind, spec.a, spec.b) == ("beta", 2.0, 5.0)
    for bad in ("flat", "beta:0,1", "beta:x,1"):
        with pytest.raises(ValueError):
            P.PriorSpec.parse(bad)
    with pytest.raises(ValueError, match="needs --prior-scores"):
        P.PriorSpec(strength=3.0)
    other = tmp_path / "scores.parquet"
    pq.write_table(pa.table({"problem_id": ["a", "b", "c"], "model": ["3b"] * 3, "n": [8, 8, 4],
                             "n_correct": [0, 8, 1]}), other)
    ids = ["a", "b", "c", "unseen"]
    n, c = np.zeros(4), np.zeros(4)
    # K = 0: exactly the base prior
    a0, b0, info = P.resolve_prior(P.PriorSpec(scores=str(other), strength=0.0), ids, ["7b"] * 4, n, c)
    assert a0.tolist() == [1, 1, 1, 1] and b0.tolist() == [1, 1, 1, 1]
    # K = 6 on top of Jeffreys: a0 = 0.5 + 6 m, b0 = 0.5 + 6 (1 - m); an unseen prompt keeps the base prior
    a0, b0, info = P.resolve_prior(P.PriorSpec.parse("jeffreys", scores=str(other), strength=6.0), ids, ["7b"] * 4, n, c)
    assert a0.tolist() == pytest.approx([0.5, 6.5, 0.5 + 1.5, 0.5]) and b0.tolist() == pytest.approx([6.5, 0.5, 0.5 + 4.5, 0.5])
    assert info["prior_scores"]["groups_with_prior"] == 3 and info["prior_scores"]["groups_without"] == 1
    # a prompt hard for the other model starts hard: its posterior mean after 0 of 0 rollouts is low
    post = P.posterior_columns(n, c, a0, b0)
    assert post["post_mean"][0] < 0.1 < 0.9 < post["post_mean"][1]
    # several models in the prior table need --prior-model
    two = tmp_path / "two.parquet"
    pq.write_table(pa.table({"problem_id": ["a", "a"], "model": ["x", "y"], "n": [4, 4], "n_correct": [1, 2]}), two)
    with pytest.raises(ValueError, match="--prior-model"):
        P.resolve_prior(P.PriorSpec(scores=str(two), strength=1.0), ["a"], ["m"], [0], [0])
    a0, _, _ = P.resolve_prior(P.PriorSpec(scores=str(two), strength=4.0, model="y"), ["a"], ["m"], [0], [0])
    assert a0.tolist() == [3.0]
    # eb: one fit per model
    a0, b0, info = P.resolve_prior(P.PriorSpec.parse("eb"), ["q"] * 6, ["m1"] * 3 + ["m2"] * 3,
                                   [8] * 6, [0, 1, 2, 6, 7, 8])
    assert set(info["eb"]) == {"m1", "m2"} and a0[0] / (a0[0] + b0[0]) < 0.5 < a0[3] / (a0[3] + b0[3])


def test_scores_table_posterior_columns_on_real_gsm8k_solutions():
    """score_rollouts on the 1,319 x 4 GSM8K example solutions (verdicts from the file's own labels): the
    posterior columns equal scipy's Beta(1 + c, 1 + 4 - c); vps_from='posterior' uses E[p(1-p)]."""
    import json

    keys = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
    recs = []
    for i, line in enumerate((DATA / "gsm8k" / "example_model_solutions.jsonl").read_text().splitlines()):
        d = json.loads(line)
        for j, k in enumerate(keys):
            recs.append({"problem_id": f"g{i:04d}", "model": "m", "sample": j, "text": d[k]["solution"],
                         "extracted": None, "verdict": "x", "correct": bool(d[k]["is_correct"]), "num_tokens": None,
                         "finish_reason": None})
    table = pa.Table.from_pylist(recs, schema=S.ROLLOUTS)
    sc = score_rollouts(table, metric="distinct_n")
    assert sc.num_rows == 1319 and not S.validate_rows(sc.to_pylist(), "scores")
    rows = sc.to_pylist()
    for r in rows[::37]:
        d = stats.beta(1 + r["n_correct"], 1 + r["n"] - r["n_correct"])
        assert (r["post_mean"], r["post_lo"], r["post_hi"]) == pytest.approx((d.mean(), d.ppf(0.05), d.ppf(0.95)))
        assert r["vps"] == pytest.approx(0.8 * r["ovs"] + 0.2 * r["tds"])
        assert r["rounds"] is None and r["stopped_because"] is None
    post = score_rollouts(table, metric="distinct_n", vps_from="posterior")
    for r, q in zip(rows[::37], post.to_pylist()[::37]):
        assert q["vps"] == pytest.approx(0.8 * r["post_ovs"] + 0.2 * r["tds"]) and q["ovs"] == r["ovs"]
    # empirical Bayes on the real data: more spread than uniform (many all-right / all-wrong groups: a0 + b0 < 2),
    # and a better marginal likelihood than the uniform prior's (scipy's beta-binomial); recorded in info
    info: dict = {}
    eb = score_rollouts(table, metric="distinct_n", prior=P.PriorSpec.parse("eb"), info=info)
    fit = info["eb"]["m"]
    assert fit["status"] == "fit" and fit["a0"] + fit["b0"] < 2
    n_, c_ = sc.column("n").to_numpy(), sc.column("n_correct").to_numpy()
    assert stats.betabinom.logpmf(c_, n_, fit["a0"], fit["b0"]).sum() > stats.betabinom.logpmf(c_, n_, 1, 1).sum()
    r0 = eb.to_pylist()[0]
    assert r0["post_a"] == pytest.approx(fit["a0"] + r0["n_correct"])
    with pytest.raises(ValueError, match="--vps-from"):
        score_rollouts(table, vps_from="mean")
