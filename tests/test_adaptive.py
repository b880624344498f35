"""Adaptive scoring (curation.score.adaptive, ``curate score --adaptive``): the stopping rules and the budget
against independent computations (scipy's beta-binomial), replay over pre-generated rollouts (the policy with
round = n_max is fixed-N scoring), and - with a real tiny model on the hf engine - the seeds rule (an adaptive
run's rollouts are a fixed-N run's), kill -9 between rounds and inside a round, shards + merge, and a prompt
whose generation fails in a later round."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from scipy import stats
from typer.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from procs import kill_when  # noqa: E402

from curation.cli import app  # noqa: E402
from curation.core import schema as S  # noqa: E402
from curation.score.adaptive import AdaptivePolicy, decide, next_state, outcome, replay_adaptive  # noqa: E402
from curation.score.job import merge_score_dirs, run_score_job, score_pregenerated  # noqa: E402
from curation.score.posterior import PriorSpec, ovs_sd  # noqa: E402
from curation.score.scores import score_rollouts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CURATE = [sys.executable, "-c", "from curation.cli import app; app()"]
runner = CliRunner()


# --- the stopping rules ---------------------------------------------------------------------------------------


def _state(rows: list[tuple[str, int, int]], expected: int | None = None) -> pl.DataFrame:
    return pl.DataFrame({"problem_id": [r[0] for r in rows], "model": ["m"] * len(rows),
                         "order": list(range(len(rows))), "n": [r[1] for r in rows], "n_correct": [r[2] for r in rows],
                         "active": [True] * len(rows),
                         "expected": [expected if expected is not None else r[1] for r in rows]},
                        schema={"problem_id": pl.String, "model": pl.String, "order": pl.Int64, "n": pl.Int64,
                                "n_correct": pl.Int64, "active": pl.Boolean, "expected": pl.Int64})


def _p_out_scipy(c: int, n: int, a: float, b: float, n_max: int) -> float:
    """P(the pass rate after n_max rollouts is 0 or 1 | c of n, Beta(a, b) posterior) by scipy's betabinom."""
    R = n_max - n
    x = np.arange(R + 1)
    final = (c + x) / n_max
    return float(stats.betabinom.pmf(x, R, a, b)[(final <= 0) | (final >= 1)].sum())


def test_decisions_follow_the_documented_rules():
    pol = AdaptivePolicy(n_max=32, round_size=4, delta=0.1, vps_precision=0.04, prior=PriorSpec.parse("beta:0.05,2"))
    st = _state([("mixed-mid", 8, 4), ("mixed-low", 8, 1), ("zero", 8, 0), ("zero16", 16, 0), ("ones", 8, 8),
                 ("full", 32, 0)])
    plan = {r["problem_id"]: r for r in decide(st, pol, 1, spent=st["n"].sum()).to_dicts()}
    for r in plan.values():
        c, n = int(r["n_correct"]), int(r["n"])
        a, b = 0.05 + c, 2 + n - c
        assert (r["post_a"], r["post_b"]) == pytest.approx((a, b))
        assert 1 - r["p_in"] == pytest.approx(_p_out_scipy(c, n, a, b, 32), abs=1e-12)
        assert r["vps_sd"] == pytest.approx(0.8 * float(ovs_sd(a, b)))
    # both outcomes seen: in band for sure; mid p has a flat p(1-p) (small sd) -> stops, low p does not
    assert plan["mixed-mid"]["p_in"] == 1.0 and plan["mixed-mid"]["decision"] == "in_band"
    assert plan["mixed-mid"]["vps_sd"] < 0.04 < plan["mixed-low"]["vps_sd"]
    assert plan["mixed-low"]["decision"] == "continue"
    assert plan["mixed-low"]["undecided"] == pytest.approx(plan["mixed-low"]["vps_sd"] / 0.04)
    # zero of 8 under a prior with mass near 0: P_out >= 1 - delta -> out_of_band; "ones" with b0 = 2 is not sure
    assert 1 - plan["zero"]["p_in"] >= 0.9 and plan["zero"]["decision"] == "out_of_band"
    # "ones" (8 of 8, b0 = 2): P_in >= 0.9 (a wrong answer is likely to come) but c/N = 1 is not in the band yet:
    # it is not declared in band (its pass_rate would contradict it); it continues, undecided on the band
    assert plan["ones"]["p_in"] >= 0.9 and plan["ones"]["decision"] == "continue"
    assert plan["ones"]["undecided"] == pytest.approx(min(plan["ones"]["p_in"], 1 - plan["ones"]["p_in"]) / 0.1)
    assert plan["full"]["decision"] in ("out_of_band", "n_max") and plan["full"]["k"] == 0
    assert all(r["k"] == (4 if r["decision"] == "continue" else 0) for r in plan.values())
    # the first round is never skipped, whatever the prior says
    first = decide(_state([("zero", 0, 0), ("x", 0, 0)]), pol, 0, spent=0)
    assert first["decision"].to_list() == ["continue", "continue"] and first["k"].to_list() == [4, 4]
    # a prompt that did not get the rollouts of its last round stops with generation_error
    failed = decide(_state([("a", 4, 2), ("b", 8, 3)], expected=8), pol, 2, spent=12)
    assert failed["decision"].to_list()[0] == "generation_error"
    # the uniform prior is honest: 0 of 8 is far from settled for 0 < p < 1 (p might be ~1/8)
    uni = decide(_state([("zero", 8, 0)]), AdaptivePolicy(delta=0.05, prior=PriorSpec()), 1, spent=8).to_dicts()[0]
    assert 1 - uni["p_in"] == pytest.approx(9 / 33) and uni["decision"] == "continue"
    assert uni["undecided"] == pytest.approx((9 / 33) / 0.05)  # band undecided: min(P_in, P_out) / delta


def test_budget_goes_to_the_least_decided_prompts():
    pol = AdaptivePolicy(n_max=32, round_size=4, delta=0.05, vps_precision=0.01, budget=12 * 4 + 8, prior=PriorSpec())
    rows = [(f"q{i}", 4, c) for i, c in enumerate([0, 1, 2, 2, 0, 4, 1, 3, 0, 2, 4, 1])]
    st = _state(rows)
    # round 1 of T = 8 nominal rounds: an even share of the 8 rollouts left, floor(8 / 7) -> at least one round
    plan = decide(st, pol, 1, spent=48)
    go = plan.filter(pl.col("decision") == "continue")
    waiting = plan.filter(pl.col("decision") == "wait")
    assert go.height == 1 and go["k"].sum() == 4 and waiting.height == 11 and waiting["k"].sum() == 0
    assert go["undecided"].min() >= waiting["undecided"].max()  # the most undecided goes first
    # the last nominal round: what is left is spent now, on the most undecided; the others stop with budget
    last = decide(st, pol, 7, spent=48)
    go = last.filter(pl.col("decision") == "continue")
    budgeted = last.filter(pl.col("decision") == "budget")
    assert go.height == 2 and budgeted.height == 10 and go["undecided"].min() >= budgeted["undecided"].max()
    # deterministic: the same state gives the same plan (ties broken by a hash of the key, not by order)
    again = decide(st.reverse().with_columns(pl.Series("order", list(range(12)))), pol, 7, spent=48)
    assert sorted(go["problem_id"].to_list()) == sorted(
        again.filter(pl.col("decision") == "continue")["problem_id"].to_list())
    # a waiting prompt is active in the next round with the counts it had
    nxt = next_state(st.select("problem_id", "model", "order"), [plan], None)
    assert nxt.filter(pl.col("active")).height == 12 and sorted(nxt["expected"].to_list()) == [4] * 11 + [8]
    with pytest.raises(ValueError, match="--delta"):
        AdaptivePolicy(delta=0.7)
    with pytest.raises(ValueError, match="empty band"):
        AdaptivePolicy(band=(">0.5", "<0.5"))
    with pytest.raises(ValueError, match="--band"):
        AdaptivePolicy(band=("<0.2", None))


# --- replay -----------------------------------------------------------------------------------------------------


def _pool(n_prompts: int = 60, n: int = 16, seed: int = 0, short: dict | None = None) -> pa.Table:
    """A synthetic pool: pass rates from a U-shaped Beta, word-salad texts (for TDS), samples 0..n-1."""
    rng = np.random.default_rng(seed)
    words = "we add the two numbers so the answer is then carry one and get".split()
    p = np.where(rng.random(n_prompts) < 0.3, 0.0, rng.beta(0.6, 0.6, n_prompts))
    recs = []
    for i in range(n_prompts):
        for j in range((short or {}).get(i, n)):
            text = " ".join(rng.choice(words, size=int(rng.integers(3, 12))))
            ok = bool(rng.random() < p[i])
            recs.append({"problem_id": f"q{i:03d}", "model": "m", "sample": j, "text": text, "extracted": None,
                         "verdict": "correct" if ok else "incorrect", "correct": ok, "num_tokens": 7,
                         "finish_reason": "stop"})
    return pa.Table.from_pylist(recs, schema=S.ROLLOUTS)


def test_replay_with_round_equal_n_max_is_fixed_n_scoring():
    pool = _pool()
    assert AdaptivePolicy().prior.kind == "eb"  # the default prior of adaptive scoring
    used, plans, _ = replay_adaptive(pool, AdaptivePolicy(n_max=8, round_size=8))
    prefix = pool.filter(pc.less(pool.column("sample"), 8))
    assert used.num_rows == prefix.num_rows == 60 * 8
    a = score_rollouts(used).drop_columns(["rounds", "stopped_because"])
    b = score_rollouts(prefix).drop_columns(["rounds", "stopped_because"])
    assert a.equals(b)
    oc = outcome(plans)
    assert oc["rounds"].to_list() == [1] * 60


def test_replay_invariants_against_the_rules():
    pool = _pool(n_prompts=80, n=16, short={3: 6, 7: 0 + 2})
    pol = AdaptivePolicy(n_max=16, round_size=4, delta=0.1, vps_precision=0.03, prior=PriorSpec.parse("jeffreys"))
    used, plans, _ = replay_adaptive(pool, pol)
    oc = {r["problem_id"]: r for r in outcome(plans).to_dicts()}
    df = pl.from_arrow(used)
    got = df.group_by("problem_id").agg(n=pl.len(), c=pl.col("correct").sum(), smax=pl.col("sample").max())
    assert used.num_rows < pool.num_rows
    for r in got.to_dicts():
        o = oc[r["problem_id"]]
        n, c = r["n"], r["c"]
        assert r["smax"] == n - 1  # a prefix of the pool in sample order
        if o["stopped_because"] == "pool_exhausted":
            assert r["problem_id"] in ("q003", "q007")
            continue
        assert n % 4 == 0 and o["rounds"] == n // 4
        a, b = 0.5 + c, 0.5 + n - c
        if o["stopped_because"] == "out_of_band":
            assert _p_out_scipy(c, n, a, b, 16) >= 0.9 - 1e-12
        elif o["stopped_because"] == "in_band":
            assert 0 < c < n and 0.8 * float(ovs_sd(a, b)) <= 0.03
        else:
            assert o["stopped_because"] == "n_max" and n == 16
    assert oc["q003"]["stopped_because"] in ("pool_exhausted", "out_of_band", "in_band")
    # a budget caps the total and is spent on the least-decided prompts
    capped, cplans, _ = replay_adaptive(pool, dataclasses.replace(pol, budget=500))
    assert capped.num_rows <= 500
    assert "budget" in outcome(cplans)["stopped_because"].to_list()


def test_cli_replay_of_a_score_dir(tmp_path):
    """`curate score --rollouts rollouts.parquet --adaptive`: stored verdicts, rounds.parquet, scores with
    rounds / stopped_because, stats with rollouts used of the pool; --n-max = --round reproduces fixed N."""
    pool = _pool(n_prompts=40, n=12, seed=3)
    f = tmp_path / "rollouts.parquet"
    pq.write_table(pool, f)
    out = tmp_path / "replay"
    res = runner.invoke(app, ["score", "--rollouts", str(f), "--out", str(out), "--adaptive", "--n-max", "12",
                              "--round", "4", "--prior", "eb", "--delta", "0.15", "--vps-precision", "0.03",
                              "--vps-from", "posterior"])
    assert res.exit_code == 0, res.output
    assert "replay: used" in res.output
    st = json.loads((out / "stats.json").read_text())
    sc = pq.read_table(out / "scores.parquet")
    assert st["settings"]["mode"] == "replay" and st["settings"]["verdicts"] == "stored"
    assert st["adaptive"]["rollouts"] == sum(sc.column("n").to_pylist()) == pq.read_table(out / "rollouts.parquet").num_rows
    assert st["counts"]["pool_rollouts"] == 480 and st["adaptive"]["rollouts"] < 480
    assert set(sc.column("stopped_because").to_pylist()) <= {"in_band", "out_of_band", "n_max"}
    assert st["posterior"]["eb"]["m"]["status"].startswith("fit") and st["posterior"]["interval_width"]["mean"] > 0
    log = pq.read_table(out / "rounds.parquet")
    assert set(log.column("round").to_pylist()) == set(range(max(log.column("round").to_pylist()) + 1))
    for r in sc.to_pylist():
        assert r["vps"] == pytest.approx(0.8 * r["post_ovs"] + 0.2 * r["tds"])
    assert "rollouts per prompt" in (out / "report" / "report.md").read_text()
    fixed = score_pregenerated(f, tmp_path / "fixed", adaptive=AdaptivePolicy(n_max=12, round_size=12), prior=PriorSpec())
    assert fixed.scores.drop_columns(["rounds", "stopped_because"]).equals(
        score_rollouts(pool).drop_columns(["rounds", "stopped_because"]))


# --- generation: a real tiny model on the hf engine ----------------------------------------------------------------

GEN = {"max_tokens": 5, "temperature": 1.0, "seed": 3, "chunk_size": 2, "engine": "hf", "prompt_template": "plain"}
POLICY = AdaptivePolicy(n_max=6, round_size=2, band=(">=0.5", None), prior=PriorSpec())  # fixed prior: shards = whole


def _cli(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["score", "--model", str(model), "--data", str(data), "--out", str(out), "--max-tokens", "5",
            "--temperature", "1.0", "--seed", "3", "--chunk-size", "2", "--engine", "hf", "--prompt-template",
            "plain", "--engine-opt", "batch_size=2", "--adaptive", "--n-max", "6", "--round", "2",
            "--band", ">=0.5", "none", "--prior", "uniform", *extra]


@pytest.fixture(scope="module")
def gen(tmp_path_factory, tiny_qwen2_dir):
    root = tmp_path_factory.mktemp("adaptive_gen")
    rows = [{"id": f"add-{i}", "source": "t", "problem": f"What is {i} + {i + 3}?", "images": [],
             "answer": str(2 * i + 3), "options": [], "solution": None, "meta": None} for i in range(6)]
    rows.append(dict(rows[0], id="noans", answer=""))
    data = root / "problems.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=S.PROBLEMS), data)
    from curation.engines import make_engine

    engine = make_engine("hf", str(tiny_qwen2_dir), batch_size=2, num_threads=1)
    ad = run_score_job(data, root / "adaptive", model=str(tiny_qwen2_dir), engine_obj=engine, adaptive=POLICY, **GEN)
    return {"root": root, "data": data, "model": tiny_qwen2_dir, "engine": engine, "ad": ad}


@pytest.mark.slow
def test_adaptive_rollouts_are_the_fixed_n_runs_samples(gen):
    """Same seeds per (prompt, sample): the samples an adaptive run drew equal a fixed-N run's (hf engine,
    batch_size = round, so both make the same generate calls)."""
    ad = gen["ad"]
    fixed = run_score_job(gen["data"], gen["root"] / "fixed", model=str(gen["model"]), engine_obj=gen["engine"], n=6,
                          **GEN)
    by_key = {(r["problem_id"], r["sample"]): r for r in fixed.rollouts.to_pylist()}
    got = ad.rollouts.to_pylist()
    assert got and all(by_key[(r["problem_id"], r["sample"])] == r for r in got)
    assert ad.rollouts.schema.equals(S.ROLLOUTS, check_metadata=False)
    assert not S.validate_rows(ad.scores.to_pylist(), "scores")
    st = ad.stats
    assert st["settings"]["mode"] == "adaptive" and st["adaptive"]["rollouts"] == ad.rollouts.num_rows < 6 * 6
    assert st["counts"]["rounds"] >= 2 and st["counts"]["prompts_per_round"][0] == 6
    assert ad.excluded.column("reason").to_pylist() == ["missing_answer"]
    for r in ad.scores.to_pylist():
        assert r["stopped_because"] in ("out_of_band", "in_band", "n_max") and r["rounds"] == r["n"] // 2
    plans = pq.read_table(ad.out_dir / "rounds.parquet")
    assert plans.column("round").to_pylist()[0] == 0
    with pytest.raises(ValueError, match="different settings"):
        run_score_job(gen["data"], ad.out_dir, model=str(gen["model"]), engine_obj=gen["engine"],
                      adaptive=dataclasses.replace(POLICY, delta=0.2), **GEN)


def _same_outputs(out: Path, ref) -> None:
    assert pq.read_table(out / "rollouts.parquet").equals(ref.rollouts)
    assert pq.read_table(out / "scores.parquet").equals(ref.scores)
    assert pq.read_table(out / "rounds.parquet").equals(pq.read_table(ref.out_dir / "rounds.parquet"))


@pytest.mark.slow
def test_resume_after_a_crash_between_rounds_and_inside_a_round(gen):
    """The states a kill -9 leaves, made exactly: after round 0 finished but before plan 1 was written, and
    inside round 1 (its plan and one chunk written); resuming reproduces the uninterrupted run."""
    ad = gen["ad"]
    work = ad.out_dir / "_work"
    assert (work / "round-001" / "plan.parquet").is_file()
    for name in ("between", "inside"):
        out = gen["root"] / f"crash-{name}"
        shutil.copytree(work, out / "_work")
        for r in sorted((out / "_work").glob("round-*")):
            if name == "between" and r.name != "round-000":
                shutil.rmtree(r)
            if name == "inside" and r.name > "round-001":
                shutil.rmtree(r)
        if name == "inside":
            parts = sorted((out / "_work" / "round-001" / "parts").glob("rollouts-*.parquet"))
            assert len(parts) >= 2
            for p in parts[1:]:
                p.unlink()
        res = run_score_job(gen["data"], out, model=str(gen["model"]), engine_obj=gen["engine"], adaptive=POLICY, **GEN)
        _same_outputs(out, ad)
        assert res.stats["counts"]["chunks_computed"] < ad.stats["counts"]["chunks_computed"]


@pytest.mark.slow
def test_kill_9_inside_a_round_then_resume(gen):
    out = gen["root"] / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    kill_when(CURATE + _cli(gen["model"], gen["data"], out),
              lambda: bool(list((out / "_work").glob("round-001/parts/rollouts-*.parquet"))), env=env, cwd=ROOT,
              timeout=300)
    assert not (out / "scores.parquet").exists()
    res = subprocess.run(CURATE + _cli(gen["model"], gen["data"], out), env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    _same_outputs(out, gen["ad"])


@pytest.mark.slow
def test_shards_merge_to_the_unsharded_adaptive_run(gen, tmp_path):
    """Uniform prior, no budget: every prompt's decisions are its own, so shards merge to exactly the
    unsharded run (rounds and stop reasons included)."""
    dirs = []
    for k in range(2):
        d = tmp_path / f"shard{k}"
        run_score_job(gen["data"], d, model=str(gen["model"]), engine_obj=gen["engine"], adaptive=POLICY,
                      shard=f"{k}/2", **GEN)
        dirs.append(d)
    merged = merge_score_dirs(dirs, tmp_path / "merged")
    assert merged.rollouts.equals(gen["ad"].rollouts)
    assert merged.scores.equals(gen["ad"].scores)
    assert merged.stats["adaptive"]["rollouts"] == gen["ad"].stats["adaptive"]["rollouts"]
    assert (tmp_path / "merged" / "rounds.parquet").is_file()


class _FailsLater:
    """The tiny hf engine, except that generation fails for one prompt from its second round on."""

    def __init__(self, engine, needle: str):
        self.engine, self.needle = engine, needle
        self.name, self.vision = engine.name, engine.vision

    def generate(self, reqs, params, progress=None):
        for r in reqs:
            if r.sample_offset > 0 and self.needle in json.dumps(r.prompt_messages):
                raise RuntimeError("simulated engine failure")
        return self.engine.generate(reqs, params)


@pytest.mark.slow
def test_generation_failure_in_a_later_round_keeps_the_earlier_rollouts(gen, tmp_path):
    eng = _FailsLater(gen["engine"], "What is 2 + 5?")
    res = run_score_job(gen["data"], tmp_path / "fails", model=str(gen["model"]), engine_obj=eng,
                        adaptive=dataclasses.replace(POLICY, delta=0.01), **GEN)
    row = {r["problem_id"]: r for r in res.scores.to_pylist()}["add-2"]
    assert row["n"] == 2 and row["stopped_because"] == "generation_error"
    ex = [r for r in res.excluded.to_pylist() if r["reason"] == "generation_error"]
    assert len(ex) == 1 and "round 1" in ex[0]["detail"] and "earlier rounds" in ex[0]["detail"]
    assert {r["problem_id"]: r for r in gen["ad"].scores.to_pylist()}["add-3"]["n"] >= 2


@pytest.mark.slow
def test_budget_in_generation(gen, tmp_path):
    res = run_score_job(gen["data"], tmp_path / "budget", model=str(gen["model"]), engine_obj=gen["engine"],
                        adaptive=dataclasses.replace(POLICY, delta=0.01, budget=16), **GEN)
    assert res.rollouts.num_rows <= 16 and res.stats["adaptive"]["budget"] == 16
    assert "budget" in res.scores.column("stopped_because").to_pylist()


# --- the precision rule under a strong prior, and the stratified prior ---------------------------------------------


def test_precision_prior_judges_the_vps_from_the_rollouts_alone():
    """A strong prior (Beta(40, 40)) makes the posterior sd of p(1-p) small after 4 rollouts, so the default rule
    stops a 1-of-4 prompt in band; with --precision-prior uniform the sd is that of Beta(1 + c, 1 + N - c), the
    noise of the c/N the default VPS is computed from, and the prompt continues."""
    strong = PriorSpec.parse("beta:40,40")
    st = _state([("low", 4, 1), ("mid", 16, 8)])
    base = AdaptivePolicy(n_max=32, round_size=4, delta=0.1, vps_precision=0.03, prior=strong)
    by_post = {r["problem_id"]: r for r in decide(st, base, 1, spent=20).to_dicts()}
    by_data = {r["problem_id"]: r for r in decide(st, dataclasses.replace(base, precision_prior="uniform"), 1,
                                                  spent=20).to_dicts()}
    assert by_post["low"]["vps_sd"] == pytest.approx(0.8 * float(ovs_sd(41, 43)))
    assert by_data["low"]["vps_sd"] == pytest.approx(0.8 * float(ovs_sd(2, 4)))
    assert by_data["mid"]["vps_sd"] == pytest.approx(0.8 * float(ovs_sd(9, 9)))
    jeff = decide(st, dataclasses.replace(base, precision_prior="jeffreys"), 1, spent=20).to_dicts()[0]
    assert jeff["vps_sd"] == pytest.approx(0.8 * float(ovs_sd(1.5, 3.5)))
    assert by_post["low"]["decision"] == "in_band" and by_data["low"]["decision"] == "continue"
    # the band decision is the run's posterior's either way
    assert by_post["low"]["p_in"] == by_data["low"]["p_in"]
    with pytest.raises(ValueError, match="precision-prior"):
        AdaptivePolicy(precision_prior="eb")


def test_vps_precision_one_stops_every_prompt_once_its_band_is_decided():
    """sd[p(1-p)] <= 1/8 under any Beta (a variable in [0, 1/4]), so --vps-precision 1 switches the precision
    rule off even with the normalised OVS (4 alpha sd <= alpha / 2): band decided -> stop."""
    a, b = np.meshgrid(np.geomspace(0.01, 200, 60), np.geomspace(0.01, 200, 60))
    assert float(ovs_sd(a, b).max()) <= 0.125
    st = _state([("low", 8, 1), ("mid", 8, 4), ("zero", 8, 0), ("ones", 8, 8)])
    prior = PriorSpec.parse("beta:0.05,2")
    strict = AdaptivePolicy(n_max=32, round_size=4, delta=0.1, vps_precision=0.03, prior=prior, normalize_ovs=True)
    loose = dataclasses.replace(strict, vps_precision=1.0)
    d_strict = {r["problem_id"]: r["decision"] for r in decide(st, strict, 1, spent=32).to_dicts()}
    d_loose = {r["problem_id"]: r["decision"] for r in decide(st, loose, 1, spent=32).to_dicts()}
    assert d_strict["low"] == d_strict["mid"] == "continue"  # both outcomes seen, VPS not yet precise
    assert d_loose["low"] == d_loose["mid"] == "in_band"
    # the band rules themselves are unchanged: out of band stays out, an undecided band continues
    assert d_loose["zero"] == d_strict["zero"] == "out_of_band" and d_loose["ones"] == d_strict["ones"] == "continue"


def _strata_problems(tmp_path: Path, ids_by_stratum: dict[str, list[str]]) -> Path:
    rows = [{"id": pid, "source": "s", "meta": json.dumps({"family": fam, "level": 1})}
            for fam, ids in ids_by_stratum.items() for pid in ids]
    f = tmp_path / "problems.parquet"
    pq.write_table(pa.Table.from_pylist(rows), f)
    return f


def test_stratified_eb_prior_fits_each_stratum_on_its_own_groups(tmp_path):
    """--prior eb --prior-by meta.family: every stratum's Beta is the beta-binomial MLE of its own groups (checked
    against fit_eb_prior on that subset), a stratum below MIN_STRATUM_GROUPS and problems missing from the table
    take the model-wide fit, and the scores' posterior columns use the stratum's prior."""
    from curation.score.posterior import MIN_STRATUM_GROUPS, fit_eb_prior, resolve_prior

    rng = np.random.default_rng(0)
    easy = [f"e{i}" for i in range(30)]
    hard = [f"h{i}" for i in range(30)]
    tiny = [f"t{i}" for i in range(MIN_STRATUM_GROUPS - 1)]
    table = _strata_problems(tmp_path, {"easy": easy, "hard": hard, "tiny": tiny})
    ids = easy + hard + tiny + ["x0"]  # x0: not in the table
    n = np.full(len(ids), 8.0)
    c = np.concatenate([rng.binomial(8, rng.beta(8, 2, 30)), rng.binomial(8, rng.beta(1, 12, 30)),
                        rng.binomial(8, 0.5, len(tiny)), [3]]).astype(float)
    prior = PriorSpec.parse("eb", by="meta.family", strata_table=str(table))
    a0, b0, info = resolve_prior(prior, ids, ["m"] * len(ids), n, c)
    whole = fit_eb_prior(n, c)
    for lab, sel in (("easy", slice(0, 30)), ("hard", slice(30, 60))):
        fit = fit_eb_prior(n[sel], c[sel])
        assert np.allclose(a0[sel], fit["a0"]) and np.allclose(b0[sel], fit["b0"])
        assert info["eb"]["m"]["strata"][lab]["groups"] == 30
    assert a0[:30].mean() / (a0[:30] + b0[:30]).mean() > 0.6 > 0.2 > a0[30] / (a0[30] + b0[30])
    tail = slice(60, len(ids))
    assert np.allclose(a0[tail], whole["a0"]) and np.allclose(b0[tail], whole["b0"])
    assert info["eb"]["m"]["strata"]["tiny"]["status"].startswith("model-wide")
    assert info["eb"]["m"]["strata"]["(not in the table)"]["groups"] == 1
    # two fields join; a column works as well as a meta key
    p2 = PriorSpec.parse("eb", by="source,meta.family", strata_table=str(table))
    _, _, info2 = resolve_prior(p2, ids, ["m"] * len(ids), n, c)
    assert set(info2["eb"]["m"]["strata"]) == {"s/easy", "s/hard", "s/tiny", "(not in the table)"}
    assert p2.label() == "eb by source,meta.family"
    # clear errors
    with pytest.raises(ValueError, match="--prior eb"):
        PriorSpec.parse("uniform", by="source", strata_table=str(table))
    with pytest.raises(ValueError, match="problems table"):
        PriorSpec.parse("eb", by="source")
    with pytest.raises(ValueError, match="nope"):
        resolve_prior(PriorSpec.parse("eb", by="nope", strata_table=str(table)), ids, ["m"] * len(ids), n, c)


def test_cli_replay_with_a_stratified_prior(tmp_path):
    """`curate score --rollouts POOL --data P --adaptive --prior-by meta.family --precision-prior uniform`:
    the fit per stratum lands in stats.json, and the policy (with the strata) in the settings; without a problems
    table the command refuses with a clear message."""
    pool = _pool(n_prompts=40, n=12, seed=3)
    f = tmp_path / "rollouts.parquet"
    pq.write_table(pool, f)
    ids = sorted(set(pool.column("problem_id").to_pylist()))
    table = _strata_problems(tmp_path, {"a": ids[:20], "b": ids[20:]})
    out = tmp_path / "replay"
    res = runner.invoke(app, ["score", "--rollouts", str(f), "--data", str(table), "--out", str(out),
                              "--adaptive", "--n-max", "12", "--round", "4", "--prior", "eb", "--prior-by",
                              "meta.family", "--precision-prior", "uniform"])
    assert res.exit_code == 0, res.output
    st = json.loads((out / "stats.json").read_text())
    assert set(st["posterior"]["eb"]["m"]["strata"]) == {"a", "b"}
    assert st["settings"]["adaptive"]["precision_prior"] == "uniform"
    assert st["settings"]["adaptive"]["prior"]["by"] == "meta.family"
    bad = runner.invoke(app, ["score", "--rollouts", str(f), "--out", str(tmp_path / "bad"), "--adaptive",
                              "--prior-by", "meta.family"])
    assert bad.exit_code == 2 and "--data" in bad.output


def test_cli_adaptive_replay_with_every_row_excluded_still_finishes(tmp_path):
    """Rollouts that need re-verifying but have no gold anywhere: every row is excluded with its reason; the
    command finishes (it used to crash printing the per-prompt summary of zero groups)."""
    pool = _pool(n_prompts=3, n=4, seed=1)
    f = tmp_path / "rollouts.parquet"
    pq.write_table(pool, f)
    table = _strata_problems(tmp_path, {"a": ["q000", "q001", "q002"]})
    out = tmp_path / "none"
    res = runner.invoke(app, ["score", "--rollouts", str(f), "--problems", str(table), "--out", str(out),
                              "--adaptive", "--n-max", "4", "--round", "2"])
    assert res.exit_code == 0, res.output
    ex = pq.read_table(out / "excluded.parquet")
    assert ex.num_rows == 12 and set(ex.column("reason").to_pylist()) == {"missing_answer"}
    assert pq.read_table(out / "scores.parquet").num_rows == 0
