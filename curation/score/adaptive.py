"""Adaptive scoring: rollouts in rounds, spent only where they still decide something.

``curate score --adaptive --n-max 32 --round 4 [--band ">0" "<1"] [--delta 0.1] [--vps-precision 0.03]
[--budget R] [--prior eb]``.  Every prompt first gets ``round`` rollouts; after each round the Beta posterior of its pass
rate (:mod:`curation.score.posterior`, any of its priors) says whether more rollouts could still change what
the user asked for, and only those prompts get the next round.

**What "decided" means.**  The user's band (default ``0 < p < 1``: prompts whose GRPO groups have reward
variance) is applied to the pass rate that ``n_max`` rollouts would give, ``p_final = (c + X) / n_max``, where
``X`` counts the correct ones among the ``R = n_max - N`` rollouts not drawn yet.  Under the posterior
``Beta(a, b)``, ``X ~ BetaBinomial(R, a, b)`` (the posterior predictive), so

    P_in = P(p_final in band | data)          (:func:`curation.score.posterior.predictive_in_band`)

This is deliberate: a statement about the true ``p`` would be vacuous for the default band (every Beta posterior
puts probability 1 on ``0 < p < 1``); "in band" operationally means "``n_max`` rollouts would show both a
correct and a wrong answer", which is what fixed-N scoring at ``n_max`` decides.  A prompt with both outcomes
already observed has ``P_in = 1`` for that band.  After each round, for every active prompt:

- ``out_of_band`` when ``P_out = 1 - P_in >= 1 - delta`` and ``c / N`` is out of the band;
- ``in_band`` when ``P_in >= 1 - delta``, ``c / N`` is in the band, **and** its VPS is known to the set precision:
  ``sd_VPS = alpha * sd[p (1 - p)] <= vps_precision`` (``4 alpha sd[...]`` with ``normalize_ovs``), the
  posterior standard deviation of the outcome-variance term (:func:`curation.score.posterior.ovs_sd`).  The
  TDS term's sampling error is not part of the rule (TDS has no posterior here).  ``sd[p (1 - p)] <= 1/8``
  for any Beta, so ``vps_precision >= alpha / 2`` (``1`` with the default ``alpha``) switches the precision rule off: a prompt then
  stops as soon as its band is decided (what a ``curate rl-set`` band filter needs).  ``precision_prior``
  (``--precision-prior uniform|jeffreys``) takes that sd under ``Beta(a0 + c, b0 + N - c)`` with that fixed
  prior instead of the run's prior: the default VPS (MMR1's, from ``c / N``) is as noisy as the rollouts
  make it whatever the prior believes, and a strong prior (``--prior-by``: a stratum's fit weighs up to the
  median N) would stop a prompt whose ``c / N`` is still far from settled;
- ``n_max`` when it has ``n_max`` rollouts; ``pool_exhausted`` (replay) when its pre-generated rollouts ran
  out; ``generation_error`` when a round failed for it (it keeps the rollouts of its earlier rounds);
- otherwise it continues.  The first round is never skipped (a prior alone decides nothing).  Requiring
  ``c / N`` on the decided side keeps a stopped prompt's ``pass_rate`` consistent with ``stopped_because`` (a
  ``curate rl-set`` band on ``pass_rate`` then keeps exactly the prompts stopped ``in_band``); it also stops a
  prior that is too optimistic (uniform, on a data set full of unsolvable prompts: 0 of 2 has ``P_in = 0.91``
  for ``0 < p < 1`` at ``n_max = 32``) from declaring 0-of-N prompts in band.

**Budget** (``--budget R``, total rollouts of the job, first round included).  Before each round the prompts
that continue are ranked by how undecided they are,

    u = min(P_in, P_out) / delta          while the band is undecided (> 1),
    u = sd_VPS / vps_precision            once it is decided in band (> 1),

(ties broken by ``xxh64(problem_id, model)``), and the most undecided get the round while it fits the round's
allowance; the others ``wait`` (no rollouts this round, ranked again next round).  The allowance is paced
over the nominal schedule of ``T = ceil(n_max / round)`` rounds: round 0 may use all of ``R - spent`` (every
prompt gets its first look if the budget allows), round ``r >= 1`` gets ``floor((R - spent) / (T - r))``
(at least one prompt's round while anything is left), so the budget is not spent on everyone's second round
before the least-decided prompts got theirs.  From round ``T - 1`` on nobody waits: prompts that do not fit
stop with ``budget``.  Without a budget every continuing prompt gets every round.

**Determinism and resume.**  Which prompts run in round r and how the budget is split is a function of the
rollouts stored after rounds < r only (counts per prompt, the prior fitted to them, the tie-break hash); the
job writes each round's plan before the round starts and reads it back when resumed, so a resumed run
reproduces an uninterrupted one exactly.  With ``--prior eb`` or a ``--budget`` the decisions depend on the
other prompts of the run: a shard (``--shard I/K``) then fits its prior and spends its budget on its own
prompts (the budget is per shard); with a fixed prior and no budget every prompt's decisions are its own and
shards merge to exactly the unsharded run.

Deviation from MMR1 (named as such): MMR1 scores every prompt with the same N (16-32) and re-rolls all of
them; here N varies per prompt, ``scores.n`` says how many each got, and the pass rate of a stopped prompt is
``c / N`` of its own N.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import xxhash

from curation.core.bands import Bound, band_text, parse_bound
from curation.score.posterior import PriorSpec, ovs_sd, posterior_columns, predictive_in_band, resolve_prior

__all__ = ["AdaptivePolicy", "STOP_REASONS", "counts_of", "decide", "outcome", "replay_adaptive"]

CONTINUE = "continue"
WAIT = "wait"  # budget pacing: still undecided, no rollouts this round, considered again next round
STOP_REASONS = ("in_band", "out_of_band", "n_max", "budget", "pool_exhausted", "generation_error")
PLAN_COLUMNS = ("problem_id", "model", "order", "n", "n_correct", "post_a", "post_b", "p_in", "vps_sd",
                "undecided", "decision", "k")
PLAN_SCHEMA = {"problem_id": "String", "model": "String", "order": "Int64", "n": "Int64", "n_correct": "Int64",
               "post_a": "Float64", "post_b": "Float64", "p_in": "Float64", "vps_sd": "Float64",
               "undecided": "Float64", "decision": "String", "k": "Int64"}


@dataclass(frozen=True)
class AdaptivePolicy:
    """The stopping rules and budget of adaptive scoring (module docstring).  ``round_size``: rollouts per
    prompt per round; ``band``: (min, max) bounds as ``curate rl-set`` takes them (``">0"``, ``"<=0.9"``,
    ``None``); ``alpha``/``beta``/``normalize_ovs``: the VPS weights (for ``sd_VPS``); ``prior``: empirical
    Bayes by default - the uniform prior believes every pass rate in [0, 1] equally likely, so on a data set
    with many unsolvable prompts it reads 0 of 2 as "probably solvable" and is badly calibrated for stopping;
    ``precision_prior``: ``None`` (the VPS precision under the run's posterior) | ``uniform`` | ``jeffreys``."""

    n_max: int = 32
    round_size: int = 4
    band: tuple[str | None, str | None] = (">0", "<1")
    delta: float = 0.1
    vps_precision: float = 0.03
    budget: int | None = None
    alpha: float = 0.8
    beta: float = 0.2
    normalize_ovs: bool = False
    prior: PriorSpec = field(default_factory=lambda: PriorSpec.parse("eb"))
    precision_prior: str | None = None

    def __post_init__(self) -> None:
        if self.round_size < 1:
            raise ValueError(f"--round must be >= 1, got {self.round_size}")
        if self.n_max < 1:
            raise ValueError(f"--n-max must be >= 1, got {self.n_max}")
        if not 0.0 < self.delta < 0.5:
            raise ValueError(f"--delta must lie in (0, 0.5), got {self.delta}")
        if not self.vps_precision > 0:
            raise ValueError(f"--vps-precision must be > 0, got {self.vps_precision}")
        if self.precision_prior not in (None, "uniform", "jeffreys"):
            raise ValueError(f"--precision-prior must be uniform or jeffreys, got {self.precision_prior!r}")
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"--budget must be >= 1 rollout, got {self.budget}")
        lo, hi = self.bounds()
        if lo is None and hi is None:
            raise ValueError("--band needs at least one bound (e.g. '>0' '<1')")
        if lo and hi and (lo.value > hi.value or (lo.value == hi.value and not (lo.inclusive and hi.inclusive))):
            raise ValueError(f"empty band {band_text(lo, hi)}")

    def bounds(self) -> tuple[Bound | None, Bound | None]:
        return parse_bound(self.band[0], "min", "--band"), parse_bound(self.band[1], "max", "--band")

    def band_label(self) -> str:
        return band_text(*self.bounds())

    def vps_scale(self) -> float:
        return self.alpha * (4.0 if self.normalize_ovs else 1.0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["band"] = list(self.band)
        d["band_text"] = self.band_label()
        d["prior"] = self.prior.to_dict()
        return d


def _tiebreak(pid: str, model: str) -> int:
    return xxhash.xxh64_intdigest(f"{pid}\0{model}".encode("utf-8"))


def counts_of(rollouts: pa.Table):
    """``problem_id, model, n, n_correct`` per group of a rollouts table (polars group-by)."""
    import polars as pl

    if rollouts.num_rows == 0:
        return pl.DataFrame({"problem_id": [], "model": [], "n": [], "n_correct": []},
                            schema={"problem_id": pl.String, "model": pl.String, "n": pl.Int64, "n_correct": pl.Int64})
    df = pl.from_arrow(rollouts.select(["problem_id", "model", "correct"]))
    return df.group_by(["problem_id", "model"]).agg(n=pl.len().cast(pl.Int64),
                                                    n_correct=pl.col("correct").cast(pl.Int64).sum())


def decide(state, policy: AdaptivePolicy, round_index: int, spent: int, *, info: dict | None = None):
    """The plan of round ``round_index`` (module docstring).

    ``state`` (polars): one row per group seen so far - ``problem_id``, ``model``, ``order`` (input order),
    ``n``, ``n_correct``, ``active`` (got the previous round), ``expected`` (the ``n`` it should have if that
    round succeeded), optional ``avail`` (rollouts a replay pool holds).  The prior is resolved (``eb``:
    fitted) on every group's counts.  Returns the active groups with ``post_a``, ``post_b``, ``p_in``,
    ``vps_sd``, ``undecided``, ``decision`` (``continue`` or a stop reason) and ``k`` (rollouts granted this
    round), in input order."""
    import polars as pl

    st = state.sort("order")
    n_all = st.get_column("n").to_numpy().astype(np.float64)
    c_all = st.get_column("n_correct").to_numpy().astype(np.float64)
    a0, b0, prior_info = resolve_prior(policy.prior, st.get_column("problem_id").to_list(),
                                       st.get_column("model").to_list(), n_all, c_all)
    if info is not None:
        info.update(prior_info)
    post = posterior_columns(n_all, c_all, a0, b0)
    st = st.with_columns(pl.Series("post_a", post["post_a"]), pl.Series("post_b", post["post_b"]))
    act = st.filter(pl.col("active"))
    if act.height == 0:
        return pl.DataFrame(schema=plan_schema())
    n = act.get_column("n").to_numpy().astype(np.int64)
    c = act.get_column("n_correct").to_numpy().astype(np.int64)
    a = act.get_column("post_a").to_numpy()
    b = act.get_column("post_b").to_numpy()
    expected = act.get_column("expected").to_numpy().astype(np.int64)
    avail = (act.get_column("avail").to_numpy().astype(np.int64) if "avail" in act.columns
             else np.full(n.size, np.iinfo(np.int64).max))
    lo, hi = policy.bounds()
    p_in = predictive_in_band(c, n, a, b, policy.n_max, lo, hi)
    p_out = 1.0 - p_in
    if policy.precision_prior is None:
        sd = policy.vps_scale() * ovs_sd(a, b)
    else:  # the rollouts' own precision (AdaptivePolicy / module docstring)
        p0 = 1.0 if policy.precision_prior == "uniform" else 0.5
        sd = policy.vps_scale() * ovs_sd(p0 + c, p0 + n - c)
    delta, eps = policy.delta, policy.vps_precision
    # the current pass rate must agree with the decision, so a stopped prompt's c / N is on the decided side
    p_hat = np.where(n > 0, c / np.maximum(n, 1), np.nan)
    cur_in = np.ones(n.size, dtype=bool)
    if lo is not None:
        cur_in &= (p_hat >= lo.value) if lo.inclusive else (p_hat > lo.value)
    if hi is not None:
        cur_in &= (p_hat <= hi.value) if hi.inclusive else (p_hat < hi.value)
    band_out = (p_out >= 1.0 - delta) & ~cur_in
    band_in = (p_in >= 1.0 - delta) & cur_in
    undecided = np.where(band_in | band_out, sd / eps, np.minimum(p_in, p_out) / delta)
    decision = np.full(n.size, CONTINUE, dtype=object)
    if round_index > 0:  # the first round is never skipped
        decision[band_out] = "out_of_band"
        decision[band_in & (sd <= eps)] = "in_band"
        rest = decision == CONTINUE
        decision[rest & (n >= policy.n_max)] = "n_max"
        rest = decision == CONTINUE
        decision[rest & (avail <= n)] = "pool_exhausted"
    decision[(n < expected)] = "generation_error"  # the previous round did not reach it: keep what it has
    k = np.where(decision == CONTINUE, np.minimum(np.minimum(policy.round_size, policy.n_max - n), avail - n), 0)
    k = np.clip(k, 0, None)
    go = decision == CONTINUE
    if policy.budget is not None and go.any():
        left = policy.budget - spent
        r_total = math.ceil(policy.n_max / policy.round_size)
        # paced: the first round may take what is left; later ones an even share of it over the nominal rounds
        # still to come (at least the most undecided prompt's round while anything is left)
        allowance = left if round_index == 0 else left // max(1, r_total - round_index)
        allowance = max(allowance, int(k[go].min())) if left >= int(k[go].min()) else 0
        if int(k[go].sum()) > allowance:
            pids, models = act.get_column("problem_id").to_list(), act.get_column("model").to_list()
            idx = [i for i in range(n.size) if go[i]]
            idx.sort(key=lambda i: (-undecided[i], _tiebreak(pids[i], models[i])))
            later = round_index < r_total - 1
            for i in idx:
                if k[i] <= allowance:
                    allowance -= int(k[i])
                else:
                    decision[i] = WAIT if later and left >= k[i] else "budget"
                    k[i] = 0
    return act.with_columns(
        pl.Series("p_in", p_in), pl.Series("vps_sd", sd), pl.Series("undecided", undecided),
        pl.Series("decision", decision.tolist(), dtype=pl.String), pl.Series("k", k.astype(np.int64)),
    ).select(PLAN_COLUMNS).cast(plan_schema())


def plan_schema() -> dict:
    """The polars schema of a plan (the types written to ``plan.parquet``)."""
    import polars as pl

    return {k: getattr(pl, v) for k, v in PLAN_SCHEMA.items()}


def next_state(keys, plans: list, rollouts: pa.Table | None, avail=None):
    """The ``state`` for the next :func:`decide`: every key (``problem_id``, ``model``, ``order``) with its
    counts in ``rollouts``; ``active`` = granted rollouts in the last plan (all keys before the first);
    ``expected`` = its ``n`` plus what it was granted."""
    import polars as pl

    counts = counts_of(rollouts) if rollouts is not None else counts_of(pa.table({
        "problem_id": pa.array([], pa.string()), "model": pa.array([], pa.string()), "correct": pa.array([], pa.bool_())}))
    st = keys.join(counts, on=["problem_id", "model"], how="left").with_columns(
        pl.col("n").fill_null(0), pl.col("n_correct").fill_null(0))
    if not plans:
        st = st.with_columns(pl.lit(True).alias("active"), pl.lit(0, dtype=pl.Int64).alias("expected"))
    else:
        last = plans[-1].filter(pl.col("decision").is_in([CONTINUE, WAIT])).select(
            "problem_id", "model", (pl.col("n") + pl.col("k")).alias("expected"))
        st = st.join(last, on=["problem_id", "model"], how="left").with_columns(
            pl.col("expected").is_not_null().alias("active"), pl.col("expected").fill_null(0))
    if avail is not None:
        st = st.join(avail, on=["problem_id", "model"], how="left")
    return st


def outcome(plans: list):
    """``problem_id, model, rounds, stopped_because`` per group from a run's plans: ``rounds`` = rounds in
    which it was granted rollouts, ``stopped_because`` = its first decision other than ``continue``."""
    import polars as pl

    if not plans:
        return pl.DataFrame(schema={"problem_id": pl.String, "model": pl.String, "rounds": pl.Int32,
                                    "stopped_because": pl.String})
    allp = pl.concat([p.with_columns(pl.lit(i).alias("_round")) for i, p in enumerate(plans)])
    rounds = allp.group_by(["problem_id", "model"]).agg(
        rounds=(pl.col("decision") == CONTINUE).cast(pl.Int32).sum())
    stops = (allp.filter(~pl.col("decision").is_in([CONTINUE, WAIT])).sort("_round")
             .group_by(["problem_id", "model"]).agg(stopped_because=pl.col("decision").first()))
    return rounds.join(stops, on=["problem_id", "model"], how="left")


def run_rounds(keys, policy: AdaptivePolicy, draw: Callable[[int, Any], pa.Table], *,
               load_plan: Callable[[int], Any] | None = None, save_plan: Callable[[int, Any], None] | None = None,
               avail=None, on_round: Callable[[int, Any], None] | None = None, max_rounds: int | None = None
               ) -> tuple[pa.Table, list, dict]:
    """The round loop shared by generation and replay: plan round r from what is stored (or read the saved
    plan), ``draw(r, granted_plan_rows) -> rollouts of round r``, until a plan grants nothing.  Returns
    ``(all rollouts, plans, prior info of the last decision)``."""
    import polars as pl

    plans: list = []
    tables: list[pa.Table] = []
    info: dict = {}
    limit = max_rounds if max_rounds is not None else 2 * math.ceil(policy.n_max / policy.round_size) + 1
    for r in range(limit + 1):
        so_far = pa.concat_tables(tables) if tables else None
        plan = load_plan(r) if load_plan else None
        if plan is None:
            st = next_state(keys, plans, so_far, avail)
            spent = int(st.get_column("n").sum())
            info = {}
            plan = decide(st, policy, r, spent, info=info)
            if save_plan:
                save_plan(r, plan)
        plans.append(plan)
        grant = plan.filter(pl.col("decision") == CONTINUE)
        if grant.height == 0:  # nothing granted: every prompt has stopped (a budget never leaves prompts waiting)
            break
        new = draw(r, grant)
        tables.append(new)
        if on_round:
            on_round(r, plan)
    else:  # pragma: no cover - every prompt stops by n_max
        raise RuntimeError("adaptive scoring did not stop within 2 n_max / round + 1 rounds")
    rollouts = pa.concat_tables(tables) if tables else None
    return rollouts, plans, info


def replay_adaptive(rollouts: pa.Table, policy: AdaptivePolicy, *, order: list[tuple[str, str]] | None = None
                    ) -> tuple[pa.Table, list, dict]:
    """Run the policy over pre-generated rollouts (a ``rollouts`` table with ``problem_id``, ``model``,
    ``sample``, ``correct``): round r takes each granted group's next ``k`` rollouts in ``sample`` order.
    Groups are ordered by ``order`` (default: sorted keys).  Returns ``(the rollouts it used, plans, prior
    info)``; a group whose pool runs out stops with ``pool_exhausted``."""
    import polars as pl

    df = pl.from_arrow(rollouts).sort(["problem_id", "model", "sample"]).with_columns(
        pl.int_range(pl.len()).over(["problem_id", "model"]).alias("_rank"))
    avail = df.group_by(["problem_id", "model"]).agg(avail=pl.len().cast(pl.Int64))
    if order is None:
        keys = avail.select("problem_id", "model").sort(["problem_id", "model"])
    else:
        keys = pl.DataFrame({"problem_id": [k[0] for k in order], "model": [k[1] for k in order]})
    keys = keys.with_columns(pl.int_range(pl.len()).cast(pl.Int64).alias("order"))

    def draw(r: int, grant) -> pa.Table:
        g = grant.select("problem_id", "model", pl.col("n").alias("_lo"), (pl.col("n") + pl.col("k")).alias("_hi"))
        got = df.join(g, on=["problem_id", "model"], how="inner").filter(
            (pl.col("_rank") >= pl.col("_lo")) & (pl.col("_rank") < pl.col("_hi")))
        return got.drop(["_rank", "_lo", "_hi"]).to_arrow()

    used, plans, info = run_rounds(keys, policy, draw, avail=avail)
    if used is None:
        used = rollouts.schema.empty_table()
    return used.cast(rollouts.schema) if used.schema != rollouts.schema else used, plans, info
