"""Dynamic sampling (issue 16): the online posterior (both VPS modes, forgetting toward the prior, calibration),
skipping predicted zero-variance prompts before generation (exploration floor, TRL's sampler contract kept),
refilling under a rollout budget (informative rows only, fillers scaled right, old log-probs right, the budget
always terminates), and lambda = 0 with skip and refill off being TRL bit for bit.

Real tiny models (random Qwen2 / Qwen2-VL) train through the real trainer; rewards are deterministic functions
of the prompt index so which groups carry signal is known exactly, whatever the random model writes."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy import stats as sps
from test_sampler import chunks_of
from test_train_sft import gsm8k_rows
from transformers import TrainerCallback

from curation.score.posterior import zero_variance_prob
from training.config import DynamicSpec, RecipeError, RefillSpec, SkipSpec, VASSpec, build_grpo_recipe
from training.dynamic import group_informative, merge_rounds, refill_draw, refill_prompts
from training.sampler import SkipRule, VASSampler
from training.vps import VPSConfig, VPSTable

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# --- the posterior ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("a,b,g", [(1.0, 1.0, 4), (0.5, 0.5, 8), (2.0, 7.0, 4), (13.0, 2.0, 16), (0.2, 30.0, 4)])
def test_zero_variance_probability_is_the_beta_expectation(a, b, g):
    """P(all G equal) = E[p^G + (1 - p)^G] under Beta(a, b), checked against numerical integration."""
    want = integrate.quad(lambda p: (p**g + (1 - p) ** g) * sps.beta.pdf(p, a, b), 0, 1, limit=200)[0]
    assert float(zero_variance_prob(a, b, g)) == pytest.approx(want, rel=1e-6)


def test_zero_variance_probability_special_cases():
    assert float(zero_variance_prob(1.0, 1.0, 4)) == pytest.approx(2 / 5)  # uniform prior: 2 / (G + 1)
    assert float(zero_variance_prob(3.0, 5.0, 1)) == pytest.approx(1.0)  # one rollout never varies
    # a very sure posterior: the plug-in p^G + (1 - p)^G, no overflow at large counts
    got = float(zero_variance_prob(3e5, 7e5, 8))
    assert got == pytest.approx(0.3**8 + 0.7**8, rel=1e-4)
    with pytest.raises(ValueError):
        zero_variance_prob(0.0, 1.0, 4)


def test_online_beta_in_both_modes_calibration_and_forgetting_toward_the_prior():
    """The Beta moves in pass-rate (EMA) mode too; each update records the prediction made *before* it; the
    decay pulls every prompt's evidence toward the prior by gamma: a <- a0 + gamma (a - a0)."""
    rows = [{"problem_id": "x", "pass_rate": 0.0, "tds": 0.3, "post_a": 1.0, "post_b": 33.0},
            {"problem_id": "y", "pass_rate": None, "tds": None}]
    t = VPSTable.from_dataset(rows, config=VPSConfig(momentum=0.5, posterior_decay=0.5))
    before = float(t.zero_variance_prob_by_index(4)[0])
    assert before == pytest.approx(float(zero_variance_prob(1.0, 33.0, 4)))
    up = t.update(["x", "y"], [[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]])
    assert up["pred_zero_variance_frac"] == pytest.approx((before + 2 / 5) / 2)  # y was on the uniform prior
    assert up["obs_zero_variance_frac"] == 0.5
    gx, gy = t.get("x"), t.get("y")
    # discounted beyond the prior Beta(1, 1): a <- a0 + m (a - a0) + k
    assert (gx["post_a"], gx["post_b"]) == pytest.approx((1 + 0.5 * (1 - 1) + 0, 1 + 0.5 * (33 - 1) + 4))
    assert (gy["post_a"], gy["post_b"]) == pytest.approx((1 + 2, 1 + 2))  # on the prior: conjugate
    assert gx["pass_rate"] == 0.0  # EMA mode: the point estimate is the EMA, p_hat = 0
    v = t.version
    t.decay()
    assert t.version == v + 1
    assert (t.get("x")["post_a"], t.get("x")["post_b"]) == pytest.approx((1.0, 1 + 0.5 * (21 - 1)))
    for _ in range(60):
        t.decay()
    assert (t.get("x")["post_a"], t.get("x")["post_b"]) == pytest.approx((1.0, 1.0))  # back to the prior
    st_ = t.stats()
    assert st_["pred_zero_variance_frac_total"] == pytest.approx((before + 0.4) / 2)
    # a re-score (momentum 0) restarts from the prior: never a Beta(0, G)
    t.config.momentum = 0.0
    t.update(["x"], [[0.0] * 4])
    assert (t.get("x")["post_a"], t.get("x")["post_b"]) == pytest.approx((1.0, 5.0))


def test_posterior_from_a_scores_tables_counts():
    """Scores written before the posterior columns (n, n_correct only) still give each prompt its Beta, and
    posterior mode accepts them."""
    ds = [{"problem_id": "p"}, {"problem_id": "q"}]
    scores = [{"problem_id": "p", "pass_rate": 1 / 32, "n": 32, "n_correct": 1, "tds": 0.5}]
    for mode in ("pass_rate", "posterior"):
        t = VPSTable.from_dataset(ds, scores=scores, config=VPSConfig(vps_from=mode))
        assert (t.get("p")["post_a"], t.get("p")["post_b"]) == (2.0, 32.0)
        assert (t.get("q")["post_a"], t.get("q")["post_b"]) == (1.0, 1.0)
    with pytest.raises(ValueError, match="n_correct=5 is not in"):
        VPSTable.from_dataset(ds, scores=[{"problem_id": "p", "pass_rate": 0.1, "n": 4, "n_correct": 5}])


# --- skip before generation -------------------------------------------------------------------------------------


def _mixed_table(n: int, sure_zero: set[int]) -> VPSTable:
    """Prompts in ``sure_zero`` have Beta(0.05, 60) (P0 ~ 1 for G = 4); the others Beta(2, 2) (P0 ~ 0.23)."""
    ids = [f"p{i}" for i in range(n)]
    rows = [{"problem_id": ids[i], "pass_rate": 0.001 if i in sure_zero else 0.5, "tds": 0.5,
             "post_a": 0.05 if i in sure_zero else 2.0, "post_b": 60.0 if i in sure_zero else 2.0} for i in range(n)]
    return VPSTable.from_dataset(rows, config=VPSConfig(vps_from="posterior"))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(8, 40), bs=st.integers(1, 6), rep=st.integers(1, 3), lam=st.sampled_from([0.0, 0.5, 1.0]),
       frac=st.floats(0.0, 1.0), seed=st.integers(0, 50))
def test_skip_keeps_the_sampler_contract_and_is_identical_on_every_rank(n, bs, rep, lam, frac, seed):
    """Chunks keep their size and uniqueness and the RepeatSampler repeat structure; two samplers over the same
    table (two ranks) yield the same stream; a replacement is never skip-eligible."""
    bs = min(bs, n)
    sure = set(range(int(frac * n)))
    table = _mixed_table(n, sure)
    mk = lambda: VASSampler(n, table, mini_repeat_count=4, batch_size=bs, repeat_count=rep, vas_fraction=lam,  # noqa: E731
                            seed=seed, skip=SkipRule(q=0.9, floor=0.2))
    s0, s1 = mk(), mk()
    stream = list(s0)
    assert stream == list(s1)
    chunks = chunks_of(stream, bs, 4, rep)
    assert all(len(set(c)) == len(c) == bs for c in chunks)
    again = mk()
    drawn_info = []
    for idx, _ in again.iter_chunks(0):
        info = dict(again.last_chunk)
        drawn_info.append((idx, info))
    for idx, info in drawn_info:
        replaced = [i for i in idx if i not in info["drawn"]]
        assert len(replaced) == len(info["skipped"])
        assert not (set(replaced) & sure)  # replacements are never predicted zero-variance
        # what stayed of the skip-eligible draws is exactly the explored ones (or all of them when nothing was left)
        kept_sure = [i for i in idx if i in sure]
        assert set(kept_sure) >= set(info["explored"])


def test_exploration_floor_never_starves_a_prompt():
    """Half the prompts are predicted zero-variance with near certainty.  Whenever one is drawn it is still
    generated with probability floor: over 400 epochs the kept fraction of every such prompt is within a
    binomial 1e-6 band around floor, never far below it; the other prompts are never skipped."""
    n, floor = 16, 0.25
    sure = set(range(8))
    table = _mixed_table(n, sure)
    s = VASSampler(n, table, mini_repeat_count=4, batch_size=4, vas_fraction=0.0, seed=3,
                   skip=SkipRule(q=0.9, floor=floor))
    drawn = np.zeros(n)
    kept = np.zeros(n)
    for epoch in range(400):
        for idx, _ in s.iter_chunks(epoch):
            info = s.last_chunk
            for i in info["drawn"]:
                drawn[i] += 1
            for i in idx:
                if i in info["drawn"]:
                    kept[i] += 1
            assert not (set(info["skipped"]) - sure)
    for i in sure:
        lo = sps.binom.ppf(1e-6, int(drawn[i]), floor)
        assert kept[i] >= lo, (i, kept[i], drawn[i])
    for i in set(range(n)) - sure:
        assert kept[i] == drawn[i] > 0
    frac = kept[list(sure)].sum() / drawn[list(sure)].sum()
    assert frac == pytest.approx(floor, abs=0.03)


def test_a_skipped_prompt_recovers_as_its_evidence_decays():
    """0 of 64 makes a prompt skip-eligible at q = 0.9 (P0 = 0.94 at G = 4; 0 of 32 gives only 0.89 under the
    uniform prior); forgetting toward the prior, b <- 1 + 0.8 (b - 1) per generation batch, brings it back under
    q after k batches, the first k with P0(Beta(1, 1 + 64 * 0.8^k)) < 0.9 - from then on it is generated."""
    t = VPSTable.from_dataset([{"problem_id": "z", "pass_rate": 0.0, "tds": 0.5, "post_a": 1.0, "post_b": 65.0},
                               {"problem_id": "o", "pass_rate": 0.5, "tds": 0.5, "post_a": 2.0, "post_b": 2.0}],
                              config=VPSConfig(vps_from="posterior", posterior_decay=0.8))
    rule = SkipRule(q=0.9, floor=0.1)
    assert rule.eligible(t.zero_variance_prob_by_index(4)).tolist() == [True, False]
    steps = 0
    while rule.eligible(t.zero_variance_prob_by_index(4))[0]:
        t.decay()
        steps += 1
        assert steps < 100
    want = next(k for k in range(100) if float(zero_variance_prob(1.0, 1.0 + 64 * 0.8**k, 4)) < 0.9)
    assert steps == want == 3


def test_skip_needs_a_vps_table():
    with pytest.raises(ValueError, match="VPSTable"):
        VASSampler(4, np.ones(4), mini_repeat_count=2, skip=SkipRule())


# --- refill: sizing, draws, merging -----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(need=st.integers(0, 64), world=st.integers(1, 8), g=st.integers(1, 16), rate=st.floats(0.0, 1.0),
       max_prompts=st.integers(1, 64), budget=st.integers(-10, 2000))
def test_refill_round_size_rules(need, world, g, rate, max_prompts, budget):
    r = refill_prompts(need, world=world, group_size=g, rate=rate, max_prompts=max_prompts, budget_left=budget)
    unit = world // math.gcd(g, world)
    assert r >= 0 and r % unit == 0 and (r * g) % world == 0  # the rows split evenly over the ranks
    assert r <= max_prompts and r * g <= max(budget, 0)  # never past the budget or one generation batch
    if need == 0:
        assert r == 0
    cap = min(max_prompts, max(budget, 0) // g)
    cap -= cap % unit
    if need > 0 and cap > 0:
        full = -(-math.ceil(need * world / (g * max(rate, 0.25))) // unit) * unit
        assert r == min(full, cap)
        assert r * g / world * max(rate, 0.25) >= need or r == cap  # enough rows for the worst rank at that rate


def test_refill_draw_excludes_the_batch_and_blocked_prompts():
    rng = np.random.default_rng(0)
    blocked = np.zeros(10, dtype=bool)
    blocked[[7, 8]] = True
    got = refill_draw(rng, 10, 20, exclude=[0, 1, 2], blocked=blocked)
    assert sorted(got.tolist()) == [3, 4, 5, 6, 9]  # all that is left, each once
    w = np.zeros(10)
    w[5] = 1.0
    assert refill_draw(np.random.default_rng(1), 10, 3, weights=w).tolist() == [5]
    a = refill_draw(np.random.default_rng([4, 2]), 50, 6)
    assert a.tolist() == refill_draw(np.random.default_rng([4, 2]), 50, 6).tolist()  # deterministic from the seed


def test_group_informative():
    x = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, float("nan"), 2.0, 2.0, float("nan")])
    assert group_informative(x, 4).tolist() == [False, True, False]


def _round(p_width: int, c_width: int, rows: int, pad: int, start: int) -> dict:
    pid = torch.full((rows, p_width), pad)
    pm = torch.zeros(rows, p_width, dtype=torch.long)
    pid[:, -2:] = torch.arange(start, start + rows).unsqueeze(1)
    pm[:, -2:] = 1
    cid = torch.full((rows, c_width), pad)
    cid[:, :1] = 9
    cm = torch.zeros(rows, c_width, dtype=torch.long)
    cm[:, :1] = 1
    return {"prompt_ids": pid, "prompt_mask": pm, "completion_ids": cid, "completion_mask": cm,
            "advantages": torch.arange(start, start + rows, dtype=torch.float), "num_items_in_batch": torch.tensor(7),
            "old_per_token_logps": torch.ones(rows, c_width), "importance_sampling_ratio": torch.ones(rows, 1),
            "mm_token_type_ids": torch.cat([pm, torch.zeros(rows, c_width, dtype=torch.long)], dim=1),
            "num_images": [1] * rows, "pixel_values": [torch.full((2, 3), float(start + i)) for i in range(rows)]}


def test_merge_rounds_pads_prompts_left_and_completions_right():
    a, b = _round(3, 2, 4, pad=0, start=0), _round(5, 4, 4, pad=0, start=10)
    m, shifted = merge_rounds([(a, [1, 3]), (b, [0])], pad_token_id=0)
    assert shifted  # rows of the narrower round got extra left padding
    assert m["prompt_ids"].shape == (3, 5) and m["completion_ids"].shape == (3, 4)
    assert m["prompt_ids"][:, -2:].tolist() == [[1, 1], [3, 3], [10, 10]]  # real tokens right-aligned
    assert m["prompt_mask"].sum(dim=1).tolist() == [2, 2, 2]
    assert m["completion_mask"].sum(dim=1).tolist() == [1, 1, 1] and m["completion_ids"][:, 0].tolist() == [9, 9, 9]
    assert m["advantages"].tolist() == [1.0, 3.0, 10.0]
    assert m["old_per_token_logps"].shape == (3, 4) and m["importance_sampling_ratio"].shape == (3, 1)
    assert m["mm_token_type_ids"].shape == (3, 9)
    assert torch.equal(m["mm_token_type_ids"][:, :5], m["prompt_mask"])  # split at each round's prompt width
    assert [float(p[0, 0]) for p in m["pixel_values"]] == [1.0, 3.0, 10.0] and m["num_images"] == [1, 1, 1]
    _, shifted = merge_rounds([(b, [0, 1]), (a, [])], pad_token_id=0)
    assert not shifted
    bad = {k: v for k, v in b.items() if k != "pixel_values"}
    with pytest.raises(ValueError, match="different fields"):
        merge_rounds([(a, [0]), (bad, [0])], pad_token_id=0)


# --- recipe -----------------------------------------------------------------------------------------------------


def _section(tmp_path, **over):
    sec = {"output_dir": str(tmp_path / "o"), "num_generations": 4, "per_device_train_batch_size": 4,
           "bf16": False, "use_cpu": True, "report_to": "none", "data": {"train": str(tmp_path / "x.parquet")}}
    sec.update(over)
    return sec


def test_dynamic_recipe_section(tmp_path):
    r = build_grpo_recipe(_section(tmp_path, vas={"enabled": True, "posterior_decay": 0.9},
                                   dynamic={"skip": {"enabled": True, "q": 0.8, "floor": 0.05},
                                            "refill": {"enabled": True, "budget_rollouts": 64, "max_rounds": 2}}),
                          "m")
    assert r.dynamic.skip == SkipSpec(enabled=True, q=0.8, floor=0.05)
    assert r.dynamic.refill == RefillSpec(enabled=True, budget_rollouts=64, max_rounds=2)
    assert r.vas.posterior_decay == 0.9
    assert build_grpo_recipe(_section(tmp_path), "m").dynamic == DynamicSpec()
    for bad, msg in [({"skp": {}}, "unknown key 'skp'.*did you mean 'skip'"),
                     ({"skip": {"enabled": True, "qq": 1}}, r"dynamic.skip: unknown key 'qq'"),
                     ({"refill": {"budget": 3}}, r"dynamic.refill: unknown key 'budget'"),
                     ({"skip": {"floor": 0.0}}, "floor: must lie in"),
                     ({"skip": {"q": 1.5}}, r"skip.q: must lie in"),
                     ({"refill": {"max_rounds": -1}}, "max_rounds: must be >= 0"),
                     ({"refill": {"enabled": True, "budget_rollouts": 3}}, "less than one generation batch")]:
        with pytest.raises(RecipeError, match=msg):
            build_grpo_recipe(_section(tmp_path, vas={"enabled": True}, dynamic=bad), "m")
    with pytest.raises(RecipeError, match="dynamic.skip: needs grpo.vas.enabled"):
        build_grpo_recipe(_section(tmp_path, dynamic={"skip": {"enabled": True}}), "m")
    with pytest.raises(RecipeError, match="posterior_decay"):
        build_grpo_recipe(_section(tmp_path, vas={"enabled": True, "posterior_decay": 0}), "m")
    # vas.posterior_prior reaches the trainer's VPS table (built from vas.scores' counts)
    import pyarrow as pa
    import pyarrow.parquet as pq

    from training.grpo import build_vps_table

    counts = [0] * 30 + [1, 2, 3, 5] * 5
    pq.write_table(pa.table({"problem_id": [f"q{i}" for i in range(50)], "pass_rate": [c / 8 for c in counts],
                             "n": [8] * 50, "n_correct": counts}), tmp_path / "scores.parquet")
    eb = build_grpo_recipe(_section(tmp_path, vas={"enabled": True, "posterior_prior": "eb",
                                                   "scores": str(tmp_path / "scores.parquet")}), "m")
    assert eb.vas.posterior_prior == "eb"
    table = build_vps_table([{"problem_id": f"q{i}"} for i in range(50)], eb)
    assert table.prior_info["kind"] == "eb" and table.prior_beta()[0] < table.prior_beta()[1]
    with pytest.raises(RecipeError, match="posterior_prior: must be 'fixed' or 'eb'"):
        build_grpo_recipe(_section(tmp_path, vas={"enabled": True, "posterior_prior": "uniform"}), "m")


# --- the trainer on a real tiny model -----------------------------------------------------------------------------


def parity_reward(completions, vas_index, **kwargs):
    """Even prompts: 0 for every rollout (zero variance); odd prompts: 0, 1, 0, 1 (informative)."""
    return [0.0 if v % 2 == 0 else float(i % 2) for i, v in enumerate(vas_index)]


def constant_reward(completions, **kwargs):
    return [1.0] * len(completions)


def position_reward(completions, **kwargs):
    return [float(i % 4) for i in range(len(completions))]


def _dataset(n: int = 12):
    from datasets import Dataset

    rows = [{"prompt": [{"role": "user", "content": r["question"]}], "vas_index": k}
            for k, r in enumerate(gsm8k_rows(n))]
    return Dataset.from_list(rows)


def _trainer(tmp_path, model_dir, reward, *, dynamic=None, vas=True, callbacks=(), dataset=None, processing=None,
             **args_over):
    from trl import GRPOConfig

    from training.grpo import VASGRPOTrainer
    from training.utils import model_and_processor

    ds = dataset if dataset is not None else _dataset()
    kw = dict(output_dir=str(tmp_path / "o"), num_generations=4, per_device_train_batch_size=4,
              gradient_accumulation_steps=2, max_completion_length=8, max_steps=2, learning_rate=1e-3, beta=0.0,
              bf16=False, use_cpu=True, seed=0, report_to="none", save_strategy="no", logging_steps=1,
              disable_tqdm=True, gradient_checkpointing=False, temperature=1.0)
    kw.update(args_over)
    table = VPSTable.uniform_prior(len(ds), VPSConfig(vps_from="posterior")) if vas else None
    return VASGRPOTrainer(
        model=str(model_dir), reward_funcs=[reward], args=GRPOConfig(**kw), train_dataset=ds,
        processing_class=processing or model_and_processor(str(model_dir), "left")[0], vps_table=table,
        vas=VASSpec(enabled=True, lambda_=0.5, refresh="none") if vas else None, dynamic=dynamic,
        callbacks=list(callbacks))


class BufferProbe(TrainerCallback):
    """At every optimizer step (before the update): the buffered generation batch, and at the first one the
    current model's own log-probs for it (the params have not moved yet)."""

    def __init__(self):
        self.trainer = None
        self.batches: list[list[dict]] = []
        self.fresh: list[torch.Tensor] | None = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        tr = self.trainer
        slices = [{k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in s.items()}
                  for s in tr._buffered_inputs]
        self.batches.append(slices)
        if self.fresh is None:
            out = []
            with torch.no_grad():
                for s in slices:
                    ids = torch.cat([s["prompt_ids"], s["completion_ids"]], dim=1)
                    am = torch.cat([s["prompt_mask"], s["completion_mask"]], dim=1)
                    lp, _, _ = tr._get_per_token_logps_and_entropies(model, ids, am, s["completion_ids"].size(1))
                    out.append(lp)
            self.fresh = out


@pytest.mark.parametrize("spg,iters", [(2, 1), pytest.param(2, 2, marks=pytest.mark.slow)])
def test_refill_trains_only_on_informative_rows_with_right_old_logps(tmp_path, tiny_qwen2_dir, spg, iters,
                                                                     monkeypatch):
    """Parity reward: half the prompts can never teach anything.  With refill every optimizer step's rows are
    from informative groups (advantage != 0) or loss-masked fillers, each generation batch keeps its size, the
    budget is never exceeded, and with steps_per_generation=2, gradient_accumulation_steps=1 (old log-probs
    computed by TRL) the buffered old_per_token_logps equal the model's own log-probs of the merged batch."""
    import json

    monkeypatch.setenv("RLCURATE_TRAIN_DEBUG_DIR", str(tmp_path / "dbg"))
    probe = BufferProbe()
    tr = _trainer(tmp_path, tiny_qwen2_dir, parity_reward, callbacks=[probe], steps_per_generation=spg,
                  num_iterations=iters, gradient_accumulation_steps=1, max_steps=4,
                  dynamic=DynamicSpec(refill=RefillSpec(enabled=True, budget_rollouts=48, max_rounds=4)))
    probe.trainer = tr
    tr.train()
    events = [json.loads(x) for x in (tmp_path / "dbg" / "rank0.jsonl").read_text().splitlines()]
    dyn = [e for e in events if e["event"] == "dynamic"]
    assert dyn and all(e["rollouts"] <= 48 and e["local_rows"] == 4 * spg for e in dyn)
    assert dyn[0]["shifted"]  # rounds of different prompt widths were merged: old log-probs were recomputed
    rs = tr.run_stats
    n = 4 * spg
    assert rs["groups_refilled"] > 0 and rs["refill_rounds"] > 0
    gens = 4 // (spg * iters) if 4 >= spg * iters else 1
    assert rs["rollouts"] <= gens * tr.refill_budget()
    for slices in probe.batches:
        rows = sum(s["prompt_ids"].shape[0] for s in slices)
        assert rows == n
        for s in slices:
            real = s["completion_mask"].sum(dim=1) > 0
            assert torch.equal(s["pad_kept"], real | s["pad_kept"])
            # every trained row carries signal (parity: advantages +-1 / std); fillers are fully masked
            assert (s["advantages"][s["pad_kept"]].abs() > 0.1).all()
            assert (s["completion_mask"][~s["pad_kept"]] == 0).all() and (s["advantages"][~s["pad_kept"]] == 0).all()
    unique = probe.batches[:: spg * iters]  # one optimizer step per micro-step: spg * iters per generation batch
    assert rs["effective_groups"] * 4 == sum(int(s["pad_kept"].sum()) for b in unique for s in b)
    # old log-probs: TRL computes them here (GA % generate_every != 0); they must be the merged batch's own
    first = probe.batches[0]
    assert all(s.get("old_per_token_logps") is not None for s in first)
    for s, lp in zip(first, probe.fresh):
        m = s["completion_mask"].bool()
        # bit for bit: the same model on the same padded rows (without the recompute the extra left padding of the
        # narrower round shifts the positions and the values differ in the last bits, ~5e-7 here)
        assert torch.equal(s["old_per_token_logps"][m], lp[m])


def test_budget_always_terminates_and_an_all_zero_variance_step_is_a_no_op(tmp_path, tiny_qwen2_dir):
    """Every group has zero variance: each generation batch refills until the budget or the round limit, then
    trains on fillers only - no crash, no endless loop, the weights unchanged."""
    from safetensors.torch import load_file

    for max_rounds, budget in ((2, 64), (10, 24)):
        tr = _trainer(tmp_path / f"r{max_rounds}", tiny_qwen2_dir, constant_reward, max_steps=2,
                      dynamic=DynamicSpec(refill=RefillSpec(enabled=True, budget_rollouts=budget,
                                                            max_rounds=max_rounds)))
        before = {k: v.clone() for k, v in tr.model.state_dict().items()}
        tr.train()
        rs = tr.run_stats
        per_batch = rs["rollouts"] / 2
        assert per_batch <= budget and rs["refill_rounds"] <= 2 * max_rounds
        assert rs["effective_groups"] == 0 and rs["filler_rows"] == 2 * 8 and rs["budget_exhausted"] == 2
        assert rs["groups_dropped"] == rs["groups_generated"] == rs["rollouts"] // 4
        after = tr.model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
    del load_file


def test_refill_fillers_keep_the_update_scale(tmp_path, tiny_qwen2_dir):
    """With fillers (the budget ran out), the step's gradient equals TRL's own loss on the informative rows
    alone, as PAD's fillers do (tests/test_grpo_pad_scale.py's probe)."""
    from test_grpo_pad_scale import GradProbe, _rel_diff

    probe = GradProbe()
    tr = _trainer(tmp_path, tiny_qwen2_dir, parity_reward, callbacks=[probe], max_steps=1, max_grad_norm=0.0,
                  dynamic=DynamicSpec(refill=RefillSpec(enabled=True, budget_rollouts=8, max_rounds=0)))
    probe.trainer = tr
    tr.train()
    r = probe.result
    assert 0 < r["kept"] < r["rows"]  # fillers were really added
    assert _rel_diff(r["grads"], r["ref"]) < 1e-5


def test_lambda_zero_with_skip_and_refill_off_is_trl_bit_for_bit(tmp_path, tiny_qwen2_dir):
    """Stock trl.GRPOTrainer vs VASGRPOTrainer with VAS on at lambda 0 (online posterior, forgetting on), the
    dynamic section present but skip and refill off: same losses and bit-identical weights after 3 steps."""
    from trl import GRPOConfig, GRPOTrainer

    from training.grpo import VASGRPOTrainer
    from training.utils import model_and_processor

    ds = _dataset(8)

    def args(name):
        return GRPOConfig(output_dir=str(tmp_path / name), num_generations=4, per_device_train_batch_size=4,
                          gradient_accumulation_steps=2, max_completion_length=8, max_steps=3, learning_rate=1e-3,
                          beta=0.04, bf16=False, use_cpu=True, seed=0, report_to="none", save_strategy="no",
                          logging_steps=1, disable_tqdm=True, temperature=1.0)

    proc = model_and_processor(str(tiny_qwen2_dir), "left")[0]
    stock = GRPOTrainer(model=str(tiny_qwen2_dir), reward_funcs=[position_reward], args=args("stock"),
                        train_dataset=ds, processing_class=proc)
    stock.train()
    table = VPSTable.uniform_prior(len(ds), VPSConfig(vps_from="posterior", posterior_decay=0.8))
    ours = VASGRPOTrainer(model=str(tiny_qwen2_dir), reward_funcs=[position_reward], args=args("ours"),
                          train_dataset=ds, processing_class=proc, vps_table=table,
                          vas=VASSpec(enabled=True, lambda_=0.0, refresh="online", vps_from="posterior",
                                      posterior_decay=0.8),
                          dynamic=DynamicSpec(), accuracy_reward="position_reward")
    ours.train()
    assert table.version > 0  # the posterior really moved (online updates + decay)
    ls = [h["loss"] for h in stock.state.log_history if "loss" in h]
    lo = [h["loss"] for h in ours.state.log_history if "loss" in h]
    assert ls == lo and len(ls) == 3
    a, b = stock.model.state_dict(), ours.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_skip_in_the_trainer_logs_and_calibration(tmp_path, tiny_qwen2_dir):
    """VAS + skip on the real trainer: prompts 0..5 start as certain zero-variance groups (0 of 40) and are
    skipped (or explored); the per-step logs carry every dynamic/* number, and the calibration compares the
    posterior's prediction with what the groups did."""
    ds = _dataset(12)
    tr = _trainer(tmp_path, tiny_qwen2_dir, parity_reward, max_steps=3, dataset=ds,
                  dynamic=DynamicSpec(skip=SkipSpec(enabled=True, q=0.9, floor=0.1)))
    for i in range(6):
        tr.vps_table._a[i], tr.vps_table._b[i], tr.vps_table._beta_prior[i] = 1.0, 41.0, False
    tr.vps_table.version += 1
    tr.vas_spec.refresh = "online"
    tr._accuracy_name = "parity_reward"
    tr.train()
    rs = tr.run_stats
    assert rs["groups_skipped"] + rs["groups_explored"] > 0
    logged = {k for h in tr.state.log_history for k in h}
    for k in ("dynamic/rollouts", "dynamic/groups_generated", "dynamic/groups_skipped", "dynamic/groups_explored",
              "dynamic/groups_dropped", "dynamic/groups_refilled", "dynamic/effective_groups",
              "dynamic/pred_zero_var", "dynamic/obs_zero_var", "dynamic/budget_exhausted"):
        assert k in logged, k
    assert rs["calib_groups"] == rs["groups_generated"] == 3 * 2
    assert 0 <= rs["calib_pred_zero_var"] <= rs["calib_groups"]


@pytest.mark.slow
def test_refill_on_a_vision_language_model_with_pad(tmp_path, tiny_qwen2_vl_dir):
    """Qwen2-VL with MATH-Vision images: rounds with different prompt widths merge (pixel values per row,
    image grids, mm token types), PAD runs on the merged batch, the vision tower trains."""
    from safetensors.torch import load_file
    from test_train_grpo import write_rl_mm

    from training.config import PADSpec
    from training.utils import load_parquet_dataset, model_and_processor

    ds = load_parquet_dataset(write_rl_mm(tmp_path / "mm.parquet", n=6), required=("prompt",))
    ds = ds.select_columns(["prompt", "images"]).add_column("vas_index", list(range(len(ds))))
    probe = BufferProbe()
    tr = _trainer(tmp_path, tiny_qwen2_vl_dir, parity_reward, dataset=ds, callbacks=[probe], max_steps=2,
                  processing=model_and_processor(str(tiny_qwen2_vl_dir), "left")[0],
                  dynamic=DynamicSpec(refill=RefillSpec(enabled=True, max_rounds=2)))
    probe.trainer = tr
    tr.pad_config = PADSpec(enabled=True, rho=0.75).to_pad_config()
    before = load_file(str(tiny_qwen2_vl_dir / "model.safetensors"))
    tr.train()
    assert tr.run_stats["refill_rounds"] > 0 and tr.run_stats["pad_total"] == 2 * 8
    for slices in probe.batches:
        # PAD (rho 0.75) keeps part of the 8 refilled rows and tops them up only to equal slices
        # (training.grpo._apply_pad): every slice the same size, at most the generation batch
        sizes = [s["prompt_ids"].shape[0] for s in slices]
        assert len(set(sizes)) == 1 and 0 < sum(sizes) <= 8
        for s in slices:
            assert s["image_grid_thw"].shape[0] == sum(s["num_images"])
    after = {k.removeprefix("model."): v for k, v in tr.model.state_dict().items()}
    vis = [k for k in before if "visual" in k]
    moved = [k for k in vis if k in after and not torch.equal(before[k], after[k])]
    assert vis and moved
