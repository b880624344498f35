"""Per-prompt Variance Promotion Scores (MMR1) kept up to date from the trainer's own rollouts.

For prompt ``i`` with pass rate ``p_i`` and trace diversity ``TDS_i`` in [0, 1]:

    OVS_i = p_i (1 - p_i)                       (outcome variance of the 0/1 reward, max 0.25 at p = 0.5)
    VPS_i = alpha * OVS_i + beta * TDS_i         (alpha = 0.8, beta = 0.2 by default)

(``normalize_ovs=True`` uses ``4 OVS_i`` instead, as :func:`curation.score.scores.vps`.)

**Initial state.** From ``curate score`` output: ``pass_rate`` / ``tds`` columns on the dataset rows, or a
scores table joined on ``problem_id``.  ``vps`` is always *recomputed* from ``pass_rate`` and ``tds`` with this
table's ``alpha``/``beta`` (the state that is updated online is ``p`` and ``TDS``); a stored ``vps`` that
disagrees is reported once as a warning.  Prompts without a score get the prior ``p = prior_pass_rate``
(0.5 -> OVS 0.25, the maximum: unscored prompts are treated as informative until observed) and
``TDS = prior_tds``.

**Online update** (:meth:`VPSTable.update`), per observed group of ``G`` rollouts of one prompt:

    correct_j = reward_j > correct_threshold              (NaN rewards - "not applicable" - are ignored)
    p_hat     = mean_j correct_j
    tds_hat   = trace_diversity(texts, metric)             (curation.score.scores; skipped when < 2 texts)
    p   <- m * p   + (1 - m) * p_hat                       (EMA, momentum m in [0, 1), default 0.5)
    TDS <- m * TDS + (1 - m) * tds_hat

A prompt still on its *prior* (never scored, never observed) takes ``p_hat`` / ``tds_hat`` directly on its
first observation (``replace_prior=True``, default): a made-up prior should not dilute real evidence.
Without texts (``completions=None``) only ``p`` moves; ``TDS`` keeps its value.  Several groups of the same
prompt in one call are folded in one after another.
``m = 1`` would freeze the scores forever (MMR1's shipped default did exactly this) and is rejected.

**Distributed contract.** ``update`` must be called with *already gathered* data - the whole global
generation batch, identical on every rank (the trainer gathers rewards with ``accelerate.utils.gather`` -
TRL already returns gathered rewards from ``_calculate_rewards`` - and keys/texts with ``gather_object``).
Every rank then applies the same update to its own copy and the tables stay identical, which the
:class:`~training.sampler.VASSampler` relies on for identical index streams on every rank.  A group split
across ranks is thus never seen partially.

Rows sharing a ``problem_id`` share one state ("slot"): an update through any of them moves all of them.

**Posterior mode** (``VPSConfig(vps_from="posterior")``, recipe ``vas.vps_from: posterior``): each slot keeps the
Beta posterior of its pass rate, ``Beta(post_a, post_b)`` from ``curate score``'s posterior columns
(:mod:`curation.score.posterior`; prompts on the prior: ``Beta(s p0, s (1 - p0))`` with ``s = prior_strength``,
default 2 = uniform for ``p0 = 0.5``), and

    VPS_i = alpha * E[p (1 - p)] + beta * TDS_i,      E[p (1 - p)] = a b / ((a + b)(a + b + 1))

so an unsure 0-of-4 prompt is not read as certainly variance-free.  The online update is the discounted
Beta-Bernoulli update (exponential forgetting with the same momentum ``m``) that discounts the evidence beyond
the prior ``Beta(a0, b0)``, not the prior itself:

    a <- a0 + m (a - a0) + k,      b <- b0 + m (b - b0) + (G - k)      for k correct of G

(``a0 + m (a - a0) = (1 - m) a0 + m a`` is a convex combination of positive numbers, so ``a, b`` stay
``>= min(a, a0) > 0`` however long a prompt keeps failing; the plain ``a <- m a + k`` would shrink ``a``
geometrically toward 0 - a Beta certain that ``p = 0`` after enough all-wrong groups, and a floating-point
``0`` after about 1,000 of them at ``m = 0.5``).  A prompt still on its prior takes the plain conjugate update
``a <- a + k``, ``b <- b + (G - k)``.  ``pass_rate`` then reads ``a / (a + b)``.  (A deviation from MMR1, whose
EMA acts on the point estimate; off by default.)

**The online posterior** (both modes).  The Beta of every prompt is kept and updated by that rule whatever
``vps_from`` says - the EMA mode only reads the VPS from the point estimate instead - because the skip rule of
dynamic sampling (:mod:`training.dynamic`) reads it.  It starts from ``post_a`` / ``post_b`` (``curate score``'s
posterior columns), else from a scores table's ``n`` / ``n_correct`` (``Beta(a0 + c, b0 + n - c)``), else the
prior ``Beta(a0, b0) = Beta(s p0, s (1 - p0))``.  A re-score (momentum 0) restarts it from the prior:
``a <- a0 + k``, ``b <- b0 + (G - k)``.  **Forgetting toward the prior** (:meth:`VPSTable.decay`, ``VPSConfig
.posterior_decay = gamma``, recipe ``vas.posterior_decay``): once per generation batch every prompt's evidence
beyond the prior is multiplied by ``gamma``, ``a <- a0 + gamma (a - a0)`` (same for ``b``), so what was learnt
about a prompt many policy updates ago fades (half-life ``ln 2 / -ln gamma`` batches) and a prompt that is
no longer drawn drifts back to the prior.  From the posterior,
:meth:`VPSTable.zero_variance_prob_by_index` gives each prompt's probability that a group of ``G`` fresh
rollouts has zero variance, ``E[p^G + (1 - p)^G] = B(a + G, b) / B(a, b) + B(a, b + G) / B(a, b)``; every
update also records that prediction for each observed group *before* folding it in, next to whether the group
was all correct or all wrong (``pred_zero_variance_frac`` / ``obs_zero_variance_frac``: the calibration).

**The base prior** ``Beta(a0, b0)`` (``VPSConfig.posterior_prior``, recipe ``vas.posterior_prior``): ``fixed``
(default) is ``Beta(s p0, s (1 - p0))`` above.  ``eb`` fits it to the initial scores' counts (``n`` /
``n_correct`` of every scored prompt) by the beta-binomial marginal maximum likelihood of ``curate score
--prior eb`` (:func:`curation.score.posterior.fit_eb_prior`, same shrinkage guard ``a0 + b0 <=`` median N),
so unscored prompts start from, and forgetting pulls every prompt back toward, what the data set's prompts
look like rather than toward ``p = 0.5``.  On a data set full of prompts the model never solves the uniform
prior under-predicts zero-variance groups (the posterior of a 0-of-32 prompt drifts back toward ``p = 0.5``
as it is forgotten); on the rollout pool of ``bench/make_rollout_pool.py`` (300 prompts, first 16 of 32
samples as the scores, the next 4 as a fresh group) the mean predicted zero-variance probability is 0.61 with
the uniform prior and 0.71 with ``eb``, against 0.70 observed.  Prompts whose Beta comes from ``post_a`` /
``post_b`` keep it (only the base moves); without counts (or with too few) the fit falls back to the fixed
prior, and :attr:`VPSTable.prior_info` says so.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

__all__ = ["VPSConfig", "VPSTable", "INDEX_COLUMN"]

# Column a trainer may add to its dataset (``dataset.map(lambda _, i: {INDEX_COLUMN: i}, with_indices=True)``)
# so rollouts can be keyed by dataset index when rows have no ``problem_id``.
INDEX_COLUMN = "vas_index"


@dataclass
class VPSConfig:
    """Weights of the VPS formula and the online update rule (see the module docstring)."""

    alpha: float = 0.8
    beta: float = 0.2
    momentum: float = 0.5
    prior_pass_rate: float = 0.5
    prior_tds: float = 0.5
    correct_threshold: float = 0.5
    tds_metric: str = "edit"  # curation.score.scores.trace_diversity metric; use the one the scores were made with
    normalize_ovs: bool = False
    replace_prior: bool = True
    vps_from: str = "pass_rate"  # pass_rate (MMR1) | posterior: alpha * E[p (1 - p)] + beta * TDS under Beta(a, b)
    prior_strength: float = 2.0  # a prompt on the prior has Beta(s * p0, s * (1 - p0))
    posterior_decay: float = 1.0  # per generation batch: evidence beyond the prior x this (1 = no forgetting)
    posterior_prior: str = "fixed"  # fixed: Beta(s p0, s (1 - p0)) | eb: fitted to the initial scores' counts

    def __post_init__(self) -> None:
        if self.posterior_prior not in ("fixed", "eb"):
            raise ValueError(f"posterior_prior must be 'fixed' or 'eb', got {self.posterior_prior!r}")
        if self.vps_from not in ("pass_rate", "posterior"):
            raise ValueError(f"vps_from must be 'pass_rate' or 'posterior', got {self.vps_from!r}")
        if not (self.prior_strength > 0 and math.isfinite(self.prior_strength)):
            raise ValueError(f"prior_strength must be finite and > 0, got {self.prior_strength}")
        if not (0.0 < self.posterior_decay <= 1.0):
            raise ValueError(f"posterior_decay must be in (0, 1] (1 = no forgetting), got {self.posterior_decay}")
        if not (0.0 <= self.momentum < 1.0):
            if self.momentum == 1.0:
                raise ValueError(
                    "momentum=1.0 freezes the scores (p <- 1*p + 0*p_hat never changes); this is the MMR1 "
                    "release bug. Use a momentum in [0, 1), e.g. 0.5, or disable online refresh explicitly."
                )
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.alpha < 0 or self.beta < 0 or not (math.isfinite(self.alpha) and math.isfinite(self.beta)):
            raise ValueError(f"alpha and beta must be finite and >= 0, got alpha={self.alpha}, beta={self.beta}")
        if self.alpha == 0 and self.beta == 0:
            raise ValueError("alpha = beta = 0 makes every VPS 0")
        if not (0.0 <= self.prior_pass_rate <= 1.0):
            raise ValueError(f"prior_pass_rate must be in [0, 1], got {self.prior_pass_rate}")
        if not (0.0 <= self.prior_tds <= 1.0):
            raise ValueError(f"prior_tds must be in [0, 1], got {self.prior_tds}")

    def prior_beta(self) -> tuple[float, float]:
        """``(a0, b0) = (s p0, s (1 - p0))`` (``s = prior_strength``; a degenerate ``p0`` of 0 or 1 gets
        ``s * 1e-3`` on the empty side so the Beta stays proper)."""
        s0, p0 = self.prior_strength, self.prior_pass_rate
        return (s0 * p0 if p0 > 0 else s0 * 1e-3), (s0 * (1 - p0) if p0 < 1 else s0 * 1e-3)

    def vps(self, pass_rate: np.ndarray, tds: np.ndarray) -> np.ndarray:
        """``alpha * OVS + beta * TDS`` with ``OVS = p (1 - p)`` (``4 p (1 - p)`` with ``normalize_ovs``)."""
        ovs = pass_rate * (1.0 - pass_rate)
        if self.normalize_ovs:
            ovs = 4.0 * ovs
        return self.alpha * ovs + self.beta * tds

    def vps_posterior(self, a: np.ndarray, b: np.ndarray, tds: np.ndarray) -> np.ndarray:
        """``alpha * E[p (1 - p)] + beta * TDS`` under ``Beta(a, b)`` (:func:`curation.score.posterior.ovs_mean`,
        ``a b / ((a + b)(a + b + 1))``; times 4 with ``normalize_ovs``)."""
        from curation.score.posterior import ovs_mean

        ovs = ovs_mean(a, b)
        if self.normalize_ovs:
            ovs = 4.0 * ovs
        return self.alpha * ovs + self.beta * tds


def _zero_variance_prob(a, b, g):
    from curation.score.posterior import zero_variance_prob

    return zero_variance_prob(a, b, g)


def _trace_diversity():
    """``curation.score.scores.trace_diversity`` (the same metric ``curate score`` uses)."""
    from curation.score.scores import trace_diversity

    return trace_diversity


def _columns(data: Any, names: Sequence[str]) -> dict[str, list]:
    """The requested columns (those present) of a datasets.Dataset, pyarrow Table, list of row dicts or dict of
    lists, as Python lists in row order (a Dataset's indices mapping - after select/shuffle - is honoured)."""
    if isinstance(data, pa.Table):
        return {n: data.column(n).to_pylist() for n in names if n in data.column_names}
    if isinstance(data, Mapping):
        return {n: list(data[n]) for n in names if n in data}
    if hasattr(data, "column_names") and hasattr(data, "select_columns"):  # datasets.Dataset
        present = [n for n in names if n in data.column_names]
        if not present:
            return {}
        tbl = data.select_columns(present).with_format("arrow")[:]
        return {n: tbl.column(n).to_pylist() for n in present}
    if isinstance(data, Sequence):
        rows = list(data)
        present = [n for n in names if any(n in r for r in rows)]
        return {n: [r.get(n) for r in rows] for n in present}
    raise TypeError(f"cannot read columns from {type(data).__name__}")


def _num_rows(data: Any) -> int:
    if isinstance(data, pa.Table):
        return data.num_rows
    if isinstance(data, Mapping):
        return len(next(iter(data.values()))) if data else 0
    return len(data)


class VPSTable:
    """Per-prompt ``pass_rate``, ``tds``, ``vps`` and observation counts, indexed by dataset index and by
    problem id.  Build with :meth:`from_dataset` (or :meth:`uniform_prior`), update with :meth:`update` /
    :meth:`update_from_flat`, read with :meth:`vps_by_index`, persist with :meth:`save` / :meth:`load`.

    ``version`` increases with every update so consumers (the sampler) can cache derived weights.
    """

    def __init__(
        self,
        problem_ids: Sequence[str | None],
        *,
        pass_rate: Sequence[float | None] | None = None,
        tds: Sequence[float | None] | None = None,
        config: VPSConfig | None = None,
        post_a: Sequence[float | None] | None = None,
        post_b: Sequence[float | None] | None = None,
        n_samples: Sequence[int | None] | None = None,
        n_correct: Sequence[int | None] | None = None,
    ):
        self.config = config or VPSConfig()
        n = len(problem_ids)
        pr = [None] * n if pass_rate is None else list(pass_rate)
        td = [None] * n if tds is None else list(tds)
        pa_ = [None] * n if post_a is None else list(post_a)
        pb_ = [None] * n if post_b is None else list(post_b)
        ns_ = [None] * n if n_samples is None else list(n_samples)
        nc_ = [None] * n if n_correct is None else list(n_correct)
        if len(pr) != n or len(td) != n or len(pa_) != n or len(pb_) != n or len(ns_) != n or len(nc_) != n:
            raise ValueError(f"{n} problem ids but {len(pr)} pass rates, {len(td)} tds, {len(pa_)} post_a and "
                             f"{len(pb_)} post_b values")
        slot_of_id: dict[str, int] = {}
        index_to_slot = np.empty(n, dtype=np.int64)
        slot_ids: list[str | None] = []
        slot_p: list[float] = []
        slot_t: list[float] = []
        slot_scored: list[bool] = []
        for i, pid in enumerate(problem_ids):
            if pid is not None and not isinstance(pid, str):
                raise TypeError(f"row {i}: problem_id must be a string or None, got {type(pid).__name__} {pid!r}")
            p_i, t_i = pr[i], td[i]
            for name, v in (("pass_rate", p_i), ("tds", t_i)):
                if v is not None and not (isinstance(v, (int, float)) and 0.0 <= float(v) <= 1.0):
                    raise ValueError(f"row {i} (problem_id={pid!r}): {name}={v!r} is not a number in [0, 1]")
            if pid is not None and pid in slot_of_id:
                s = slot_of_id[pid]
                index_to_slot[i] = s
                if p_i is not None and slot_scored[s] and not math.isclose(float(p_i), slot_p[s], abs_tol=1e-9):
                    raise ValueError(
                        f"row {i}: problem_id={pid!r} appears again with pass_rate={p_i} != {slot_p[s]}"
                    )
                if p_i is not None and not slot_scored[s]:
                    slot_p[s] = float(p_i)
                    slot_t[s] = float(t_i) if t_i is not None else self.config.prior_tds
                    slot_scored[s] = True
                continue
            s = len(slot_ids)
            index_to_slot[i] = s
            slot_ids.append(pid)
            if pid is not None:
                slot_of_id[pid] = s
            slot_p.append(float(p_i) if p_i is not None else self.config.prior_pass_rate)
            slot_t.append(float(t_i) if (t_i is not None and p_i is not None) else self.config.prior_tds)
            slot_scored.append(p_i is not None)
        self._ids = slot_ids
        self._slot_of_id = slot_of_id
        self._index_to_slot = index_to_slot
        self._p = np.asarray(slot_p, dtype=np.float64)
        # the Beta posterior of each slot's pass rate (kept in both modes; the VPS reads it in posterior mode, the
        # skip rule in both): from post_a / post_b where given, else from the scores' counts (n, n_correct) as
        # Beta(a0 + n_correct, b0 + n - n_correct), else the prior Beta(a0, b0) = Beta(s * p0, s * (1 - p0));
        # in posterior mode a scored slot with neither is an error
        a0, b0 = self._fit_prior(index_to_slot, ns_, nc_, pr)
        self._a = np.full(len(slot_ids), a0)
        self._b = np.full(len(slot_ids), b0)
        self._beta_prior = np.ones(len(slot_ids), dtype=bool)  # True = the Beta is still exactly the prior
        missing = []
        for i in range(n):
            s = int(index_to_slot[i])
            if pa_[i] is not None and pb_[i] is not None:
                if not (float(pa_[i]) > 0 and float(pb_[i]) > 0):
                    raise ValueError(f"row {i} (problem_id={problem_ids[i]!r}): post_a/post_b must be > 0, got "
                                     f"{pa_[i]!r}, {pb_[i]!r}")
                self._a[s], self._b[s] = float(pa_[i]), float(pb_[i])
                self._beta_prior[s] = False
            elif ns_[i] is not None and nc_[i] is not None and pr[i] is not None:
                nn, cc = int(ns_[i]), int(nc_[i])
                if not (0 <= cc <= nn):
                    raise ValueError(f"row {i} (problem_id={problem_ids[i]!r}): n_correct={cc} is not in [0, n={nn}]")
                self._a[s], self._b[s] = a0 + cc, b0 + (nn - cc)
                self._beta_prior[s] = nn == 0
            elif pr[i] is not None and self.config.vps_from == "posterior":
                missing.append(i)
        if missing:
            raise ValueError(
                f"vps_from='posterior' needs post_a / post_b for every scored prompt; row {missing[0]} (problem_id="
                f"{problem_ids[missing[0]]!r}) has a pass rate but no posterior (re-score with this version of "
                "`curate score` - its scores carry post_a/post_b, or n and n_correct - or use vps_from='pass_rate')")
        if self.config.vps_from == "posterior":
            self._p = self._a / (self._a + self._b)
        self._tds = np.asarray(slot_t, dtype=np.float64)
        self._scored = np.asarray(slot_scored, dtype=bool)  # False = still on the prior
        self._observed = np.zeros(len(slot_ids), dtype=np.int64)  # online samples seen
        self._groups = np.zeros(len(slot_ids), dtype=np.int64)  # online groups seen
        self.version = 0
        self._cache: tuple[int, np.ndarray] | None = None
        # logging counters
        self._last: dict[str, float] = {}
        self._total_groups = 0
        self._total_zero_var = 0
        self._total_pred_zero_var = 0.0  # calibration: sum of the predicted P(zero variance) of observed groups
        self._total_zero_correct = 0  # ... and how many of them were all correct or all wrong
        self._p0_cache: tuple[int, int, np.ndarray] | None = None

    def _fit_prior(self, index_to_slot: np.ndarray, ns_: list, nc_: list, pr: list) -> tuple[float, float]:
        """The base prior ``(a0, b0)`` (module docstring): the config's fixed one, or with ``posterior_prior
        = "eb"`` the beta-binomial MLE over the scored prompts' counts (one per slot)."""
        a0, b0 = self.config.prior_beta()
        self.prior_info: dict[str, Any] = {"kind": "fixed", "a0": a0, "b0": b0}
        if self.config.posterior_prior == "eb":
            from curation.score.posterior import fit_eb_prior

            seen: dict[int, tuple[int, int]] = {}
            for i, s in enumerate(index_to_slot.tolist()):
                if s not in seen and ns_[i] is not None and nc_[i] is not None and pr[i] is not None:
                    seen[s] = (int(ns_[i]), int(nc_[i]))
            counts = np.array(list(seen.values()), dtype=np.float64).reshape(-1, 2)
            fit = fit_eb_prior(counts[:, 0], counts[:, 1])
            if fit["status"].startswith("fallback"):
                why = fit["status"] if seen else "fallback: no scored prompt with n / n_correct"
                self.prior_info = {"kind": "fixed", "a0": a0, "b0": b0, "eb_status": why}
            else:
                a0, b0 = float(fit["a0"]), float(fit["b0"])
                self.prior_info = {"kind": "eb", "a0": a0, "b0": b0, "eb_status": fit["status"],
                                   "groups": fit["groups"]}
        self._prior = (a0, b0)
        return a0, b0

    def prior_beta(self) -> tuple[float, float]:
        """The base prior ``(a0, b0)`` every update and :meth:`decay` discounts toward (module docstring)."""
        return self._prior

    # --- construction -------------------------------------------------------------------------------------

    @classmethod
    def uniform_prior(cls, n: int, config: VPSConfig | None = None) -> VPSTable:
        """``n`` prompts without ids or scores (every prompt on the prior)."""
        return cls([None] * n, config=config)

    @classmethod
    def from_dataset(
        cls,
        dataset: Any,
        *,
        config: VPSConfig | None = None,
        scores: Any = None,
        model: str | None = None,
        id_column: str = "problem_id",
    ) -> VPSTable:
        """Table for ``dataset``'s rows (a datasets.Dataset, pyarrow Table, list of dicts or dict of lists).

        Scores come from ``scores`` when given (a path to a Parquet/JSONL scores table as written by ``curate
        score``, or a table/rows with ``problem_id``, ``pass_rate`` and optionally ``tds``, ``vps``,
        ``model``), joined on ``id_column``; otherwise from the dataset's own ``pass_rate`` / ``tds``
        columns.  A scores table with several models needs ``model=`` to pick one.  Rows with no score get the
        prior.  A stored ``vps`` that differs from ``alpha * OVS + beta * TDS`` (other weights were used) is
        recomputed and reported with one warning.  Each prompt's Beta posterior comes from ``post_a`` /
        ``post_b`` (dataset or scores) when present, else from a scores table's ``n`` / ``n_correct`` as
        ``Beta(a0 + n_correct, b0 + n - n_correct)`` with the table's prior (scores written before the
        posterior columns existed), else it is the prior.
        """
        cfg = config or VPSConfig()
        n = _num_rows(dataset)
        cols = _columns(dataset, [id_column, "pass_rate", "tds", "vps", "post_a", "post_b"])
        ids = cols.get(id_column, [None] * n)
        if scores is None:
            pr, td, stored = cols.get("pass_rate"), cols.get("tds"), cols.get("vps")
            pa_, pb_ = cols.get("post_a"), cols.get("post_b")
            ns_ = nc_ = None
            if pr is None and stored is not None and any(v is not None for v in stored):
                raise ValueError(
                    "the dataset has a 'vps' column but no 'pass_rate': the online update needs the pass rate "
                    "(re-run `curate score` / `curate rl-set`, or pass scores=...)"
                )
        else:
            if id_column not in cols:
                raise ValueError(f"joining scores needs a {id_column!r} column on the dataset")
            if isinstance(scores, (str, Path)):
                from curation.core.io import read_table

                scores = read_table(scores)
            scols = _columns(scores, ["problem_id", "model", "pass_rate", "tds", "vps", "post_a", "post_b", "n",
                                      "n_correct"])
            if "problem_id" not in scols or "pass_rate" not in scols:
                raise ValueError(f"scores table needs 'problem_id' and 'pass_rate' columns (has {sorted(scols)})")
            keep = list(range(len(scols["problem_id"])))
            if "model" in scols:
                models = sorted({m for m in scols["model"] if m is not None})
                if model is not None:
                    if model not in models:
                        raise ValueError(f"model {model!r} not in the scores table (has {models})")
                    keep = [i for i in keep if scols["model"][i] == model]
                elif len(models) > 1:
                    raise ValueError(f"the scores table has several models {models}: pass model=... to pick one")
            by_id: dict[str, int] = {}
            for i in keep:
                pid = scols["problem_id"][i]
                if pid in by_id:
                    raise ValueError(f"scores row {i}: problem_id {pid!r} appears twice")
                by_id[pid] = i
            pr, td, stored, pa_, pb_, ns_, nc_ = [], [], [], [], [], [], []
            for pid in ids:
                j = by_id.get(pid)
                pr.append(None if j is None else scols["pass_rate"][j])
                td.append(None if j is None or "tds" not in scols else scols["tds"][j])
                stored.append(None if j is None or "vps" not in scols else scols["vps"][j])
                pa_.append(None if j is None or "post_a" not in scols else scols["post_a"][j])
                pb_.append(None if j is None or "post_b" not in scols else scols["post_b"][j])
                ns_.append(None if j is None or "n" not in scols else scols["n"][j])
                nc_.append(None if j is None or "n_correct" not in scols else scols["n_correct"][j])
        table = cls(ids, pass_rate=pr, tds=td, config=cfg, post_a=pa_, post_b=pb_, n_samples=ns_, n_correct=nc_)
        if stored is not None:
            table._check_stored_vps(stored)
        return table

    def _check_stored_vps(self, stored: Sequence[float | None]) -> None:
        have = np.array([v is not None for v in stored])
        if not have.any():
            return
        ours = self.vps_by_index()[have]
        theirs = np.array([v for v in stored if v is not None], dtype=np.float64)
        diff = np.abs(ours - theirs)
        if (diff > 1e-6).any():
            i = int(np.flatnonzero(have)[int(np.argmax(diff))])
            warnings.warn(
                f"{int((diff > 1e-6).sum())} stored vps values differ from alpha*OVS+beta*TDS "
                f"(vps_from={self.config.vps_from}) with "
                f"alpha={self.config.alpha}, beta={self.config.beta} (e.g. row {i}: stored {stored[i]:.6g}, "
                f"recomputed {self.vps_by_index()[i]:.6g}); using the recomputed values",
                stacklevel=3,
            )

    # --- reading -----------------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of dataset rows (indices)."""
        return len(self._index_to_slot)

    @property
    def num_problems(self) -> int:
        return len(self._ids)

    def slot(self, key: int | str) -> int:
        """Internal state slot of a dataset index (int) or problem id (str)."""
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            k = int(key)
            if not (0 <= k < len(self._index_to_slot)):
                raise KeyError(f"dataset index {k} out of range [0, {len(self._index_to_slot)})")
            return int(self._index_to_slot[k])
        if isinstance(key, str):
            try:
                return self._slot_of_id[key]
            except KeyError:
                raise KeyError(f"problem_id {key!r} is not in the VPS table") from None
        raise TypeError(f"key must be a dataset index (int) or problem id (str), got {type(key).__name__}")

    def _slot_vps(self) -> np.ndarray:
        if self.config.vps_from == "posterior":
            return self.config.vps_posterior(self._a, self._b, self._tds)
        return self.config.vps(self._p, self._tds)

    def vps_by_index(self) -> np.ndarray:
        """VPS of every dataset row, shape ``(len(self),)`` (cached per :attr:`version`; do not modify)."""
        if self._cache is None or self._cache[0] != self.version:
            slot_vps = self._slot_vps()
            arr = slot_vps[self._index_to_slot]
            arr.setflags(write=False)
            self._cache = (self.version, arr)
        return self._cache[1]

    def get(self, key: int | str) -> dict[str, Any]:
        """State of one prompt: ``problem_id, pass_rate, ovs, tds, vps, n_observed, n_groups, scored``."""
        s = self.slot(key)
        p, t = float(self._p[s]), float(self._tds[s])
        return {
            "problem_id": self._ids[s],
            "pass_rate": p,
            "ovs": p * (1 - p),
            "tds": t,
            "vps": float(self._slot_vps()[s]),
            "post_a": float(self._a[s]),
            "post_b": float(self._b[s]),
            "n_observed": int(self._observed[s]),
            "n_groups": int(self._groups[s]),
            "scored": bool(self._scored[s]),
        }

    def vps_for_ids(self, ids: Sequence[str | None], default: float | None = None) -> np.ndarray:
        """VPS for each id (e.g. the ``problem_id`` of SFT rows); ids not in the table (or None) get ``default``
        (the prior's VPS when ``default`` is None)."""
        slot_vps = self._slot_vps()
        if default is None:
            p0 = self.config.prior_pass_rate
            if self.config.vps_from == "posterior":
                default = float(self.config.vps_posterior(np.array([self._prior[0]]), np.array([self._prior[1]]),
                                                          np.array([self.config.prior_tds]))[0])
            else:
                default = float(self.config.vps(np.array([p0]), np.array([self.config.prior_tds]))[0])
        return np.array(
            [slot_vps[self._slot_of_id[i]] if i in self._slot_of_id else default for i in ids], dtype=np.float64
        )

    # --- online update -----------------------------------------------------------------------------------

    def update(
        self,
        keys: Sequence[int | str],
        rewards: Sequence[Sequence[float]],
        completions: Sequence[Sequence[str]] | None = None,
    ) -> dict[str, float]:
        """Fold one batch of observed groups into the table (formulas: module docstring).

        ``keys[g]``: dataset index (int) or problem id (str) of group ``g``; ``rewards[g]``: the accuracy
        rewards of *all* its rollouts (gathered from every rank); ``completions[g]``: their texts (for TDS;
        ``None`` updates the pass rate only).  Several groups with the same key are applied in order.
        Returns this batch's stats (also kept for :meth:`stats`).
        """
        if len(rewards) != len(keys):
            raise ValueError(f"{len(keys)} keys but {len(rewards)} reward groups")
        if completions is not None and len(completions) != len(keys):
            raise ValueError(f"{len(keys)} keys but {len(completions)} completion groups")
        cfg = self.config
        m = cfg.momentum
        if not (0.0 <= m < 1.0):  # the config may have been changed after construction
            raise ValueError(f"momentum must be in [0, 1) (1 freezes the scores), got {m}")
        tds_fn = _trace_diversity() if completions is not None else None
        n_groups = n_zero_var = n_zero_correct = 0
        pred_zero = 0.0
        a0, b0 = self._prior
        p_hats: list[float] = []
        for g, key in enumerate(keys):
            s = self.slot(key)
            r = np.asarray(rewards[g], dtype=np.float64).reshape(-1)
            valid = r[~np.isnan(r)]
            if valid.size == 0:
                continue  # no applicable reward: nothing observed
            if completions is not None and len(completions[g]) != r.size:
                raise ValueError(f"group {g} (key {key!r}): {r.size} rewards but {len(completions[g])} completions")
            p_hat = float((valid > cfg.correct_threshold).mean())
            tds_hat = None
            if tds_fn is not None and len(completions[g]) >= 2:
                tds_hat = float(tds_fn(list(completions[g]), cfg.tds_metric))
            fresh = cfg.replace_prior and not self._scored[s]
            k = float((valid > cfg.correct_threshold).sum())
            # calibration: the posterior's prediction for this group, made before it is folded in
            pred_zero += float(_zero_variance_prob(self._a[s], self._b[s], valid.size))
            n_zero_correct += int(k == 0 or k == valid.size)
            # the Beta (both modes): the evidence beyond the prior is discounted, a <- a0 + m (a - a0) + k,
            # b <- b0 + m (b - b0) + (G - k) (module docstring); a Beta still exactly on the prior takes the plain
            # conjugate update a <- a + k, b <- b + (G - k); momentum 0 (a re-score) restarts from the prior:
            # a <- a0 + k, b <- b0 + (G - k)
            keep = 1.0 if (cfg.replace_prior and self._beta_prior[s]) else m
            self._a[s] = a0 + keep * (self._a[s] - a0) + k
            self._b[s] = b0 + keep * (self._b[s] - b0) + (valid.size - k)
            self._beta_prior[s] = False
            if cfg.vps_from == "posterior":
                self._p[s] = self._a[s] / (self._a[s] + self._b[s])
            else:
                self._p[s] = p_hat if fresh else m * self._p[s] + (1.0 - m) * p_hat
            if tds_hat is not None:
                self._tds[s] = tds_hat if fresh else m * self._tds[s] + (1.0 - m) * tds_hat
            self._scored[s] = True
            self._observed[s] += valid.size
            self._groups[s] += 1
            n_groups += 1
            n_zero_var += int(np.ptp(valid) == 0.0)
            p_hats.append(p_hat)
        self.version += 1
        self._total_groups += n_groups
        self._total_zero_var += n_zero_var
        self._total_pred_zero_var += pred_zero
        self._total_zero_correct += n_zero_correct
        self._last = {
            "groups": float(n_groups),
            "zero_variance_frac": (n_zero_var / n_groups) if n_groups else float("nan"),
            "pass_rate_mean": float(np.mean(p_hats)) if p_hats else float("nan"),
            # calibration of the posterior on these groups: mean predicted P(all G correct or all wrong) vs the
            # observed fraction of such groups (correct = reward > correct_threshold)
            "pred_zero_variance_frac": (pred_zero / n_groups) if n_groups else float("nan"),
            "obs_zero_variance_frac": (n_zero_correct / n_groups) if n_groups else float("nan"),
        }
        return dict(self._last)

    def decay(self, gamma: float | None = None) -> None:
        """Forget old evidence as the policy moves: every prompt's Beta is pulled toward the prior,

            a <- a0 + gamma (a - a0),      b <- b0 + gamma (b - b0)      (gamma = config.posterior_decay)

        i.e. the evidence beyond the prior is discounted by ``gamma`` (a convex combination of positive numbers,
        so ``a, b`` stay > 0; the mean moves toward ``p0``, the strength toward ``a0 + b0``).  The trainer calls
        it once per generation batch, so the evidence has a half-life of ``ln 2 / -ln gamma`` generation
        batches; a prompt that is never drawn again thus drifts back to the prior and gets re-tried (its
        predicted zero-variance probability falls below the skip threshold).  In posterior mode ``pass_rate``
        follows ``a / (a + b)``; in pass-rate mode the EMA point estimate is left alone (its forgetting is the
        momentum).  ``gamma = 1`` does nothing."""
        g = self.config.posterior_decay if gamma is None else float(gamma)
        if not (0.0 < g <= 1.0):
            raise ValueError(f"decay factor must be in (0, 1], got {g}")
        if g == 1.0:
            return
        a0, b0 = self._prior
        self._a = a0 + g * (self._a - a0)
        self._b = b0 + g * (self._b - b0)
        if self.config.vps_from == "posterior":
            self._p = self._a / (self._a + self._b)
        self.version += 1

    def zero_variance_prob_by_index(self, group_size: int) -> np.ndarray:
        """Per dataset row: the posterior predictive probability that a group of ``group_size`` rollouts is all
        correct or all wrong, ``B(a + G, b) / B(a, b) + B(a, b + G) / B(a, b)``
        (:func:`curation.score.posterior.zero_variance_prob`); cached per :attr:`version` (do not modify)."""
        c = self._p0_cache
        if c is None or c[0] != self.version or c[1] != group_size:
            arr = _zero_variance_prob(self._a, self._b, group_size)[self._index_to_slot]
            arr.setflags(write=False)
            self._p0_cache = (self.version, group_size, arr)
        return self._p0_cache[2]

    def update_from_flat(
        self,
        keys: Sequence[int | str],
        rewards: Sequence[float] | np.ndarray | Any,
        completions: Sequence[str] | None,
        group_size: int,
    ) -> dict[str, float]:
        """:meth:`update` from TRL's flat, gathered layout: ``keys``, ``rewards`` and ``completions`` hold one
        entry per rollout of the *global* generation batch, each prompt's ``group_size`` (= num_generations)
        rollouts consecutive.  ``rewards`` may be a 1-D torch tensor (e.g. a column of TRL's gathered
        ``rewards_per_func``).  Raises if a group's keys disagree (misaligned gather)."""
        if hasattr(rewards, "detach"):
            rewards = rewards.detach().float().cpu().numpy()
        r = np.asarray(rewards, dtype=np.float64).reshape(-1)
        n = len(keys)
        if group_size < 1 or n % group_size:
            raise ValueError(f"{n} rollouts do not split into groups of {group_size}")
        if r.size != n or (completions is not None and len(completions) != n):
            raise ValueError(
                f"{n} keys, {r.size} rewards, {None if completions is None else len(completions)} completions"
            )
        gkeys, grew, gtxt = [], [], [] if completions is not None else None
        for start in range(0, n, group_size):
            k = keys[start]
            for j in range(start + 1, start + group_size):
                if keys[j] != k:
                    raise ValueError(
                        f"rollout {j} has key {keys[j]!r} but its group (rollouts {start}..{start + group_size - 1})"
                        f" starts with {k!r}: the gathered batch is not grouped by prompt"
                    )
            gkeys.append(k.item() if isinstance(k, np.integer) else k)
            grew.append(r[start : start + group_size])
            if gtxt is not None:
                gtxt.append(list(completions[start : start + group_size]))
        return self.update(gkeys, grew, gtxt)

    # --- logging / persistence -------------------------------------------------------------------------

    def stats(self) -> dict[str, float]:
        """For logging: VPS mean/min/max over prompts, mean pass rate, fraction of prompts observed online,
        zero-variance fraction of the last update and over all updates."""
        v = self._slot_vps()
        out = {
            "vps_mean": float(v.mean()) if v.size else float("nan"),
            "vps_min": float(v.min()) if v.size else float("nan"),
            "vps_max": float(v.max()) if v.size else float("nan"),
            "pass_rate_mean": float(self._p.mean()) if v.size else float("nan"),
            "observed_frac": float((self._groups > 0).mean()) if v.size else float("nan"),
            "zero_variance_frac_total": (self._total_zero_var / self._total_groups) if self._total_groups
            else float("nan"),
        }
        if self._total_groups:
            out["pred_zero_variance_frac_total"] = self._total_pred_zero_var / self._total_groups
            out["obs_zero_variance_frac_total"] = self._total_zero_correct / self._total_groups
        if self._last:
            out["zero_variance_frac_last"] = self._last["zero_variance_frac"]
        return out

    def to_table(self) -> pa.Table:
        """One row per dataset index: ``index, problem_id, pass_rate, ovs, tds, vps, n_observed, n_groups,
        scored`` (``scored`` False = still on the prior)."""
        s = self._index_to_slot
        p, t = self._p[s], self._tds[s]
        return pa.table(
            {
                "index": pa.array(np.arange(len(s), dtype=np.int64)),
                "problem_id": pa.array([self._ids[k] for k in s], type=pa.string()),
                "pass_rate": pa.array(p),
                "ovs": pa.array(p * (1 - p)),
                "tds": pa.array(t),
                "vps": pa.array(self._slot_vps()[s]),
                "post_a": pa.array(self._a[s]),
                "post_b": pa.array(self._b[s]),
                "beta_prior": pa.array(self._beta_prior[s]),
                "n_observed": pa.array(self._observed[s]),
                "n_groups": pa.array(self._groups[s]),
                "scored": pa.array(self._scored[s]),
            },
            metadata={b"vps_config": repr(asdict(self.config)).encode(),
                      b"vps_prior": json.dumps(self.prior_info).encode()},
        )

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_table` as Parquet, atomically (``datasets.load_dataset("parquet", ...)`` reads it)."""
        from curation.core.io import write_parquet_atomic

        return write_parquet_atomic(self.to_table(), path)

    @classmethod
    def load(cls, path: str | Path, config: VPSConfig | None = None) -> VPSTable:
        """Restore a table written by :meth:`save` (counts and prior flags included)."""
        import pyarrow.parquet as pq

        tbl = pq.read_table(path)
        return cls.from_table(tbl, config=config)

    @classmethod
    def from_table(cls, tbl: pa.Table, config: VPSConfig | None = None) -> VPSTable:
        need = {"index", "problem_id", "pass_rate", "tds", "n_observed", "n_groups", "scored"}
        missing = need - set(tbl.column_names)
        if missing:
            raise ValueError(f"not a saved VPS table: missing columns {sorted(missing)}")
        tbl = tbl.sort_by("index")
        idx = tbl.column("index").to_numpy()
        if not np.array_equal(idx, np.arange(len(idx))):
            raise ValueError("saved VPS table: 'index' must be 0..n-1 without gaps")
        scored = tbl.column("scored").to_pylist()
        p = tbl.column("pass_rate").to_pylist()
        t = tbl.column("tds").to_pylist()
        has_post = "post_a" in tbl.column_names and "post_b" in tbl.column_names
        pa_ = tbl.column("post_a").to_pylist() if has_post else None
        pb_ = tbl.column("post_b").to_pylist() if has_post else None
        out = cls(
            tbl.column("problem_id").to_pylist(),
            pass_rate=[pv if sc else None for pv, sc in zip(p, scored)],
            tds=[tv if sc else None for tv, sc in zip(t, scored)],
            config=config,
            post_a=[v if sc else None for v, sc in zip(pa_, scored)] if has_post else None,
            post_b=[v if sc else None for v, sc in zip(pb_, scored)] if has_post else None,
        )
        # exact state (the constructor put the prior where ``scored`` is False)
        s = out._index_to_slot
        out._p[s] = np.asarray(p, dtype=np.float64)
        out._tds[s] = np.asarray(t, dtype=np.float64)
        out._observed[s] = tbl.column("n_observed").to_numpy()
        out._groups[s] = tbl.column("n_groups").to_numpy()
        if "post_a" in tbl.column_names and "post_b" in tbl.column_names:
            out._a[s] = np.asarray(tbl.column("post_a").to_pylist(), dtype=np.float64)
            out._b[s] = np.asarray(tbl.column("post_b").to_pylist(), dtype=np.float64)
        meta = tbl.schema.metadata or {}
        if b"vps_prior" in meta:  # the base prior the table was built with (an eb fit is not redone on load)
            out.prior_info = json.loads(meta[b"vps_prior"])
            out._prior = (float(out.prior_info["a0"]), float(out.prior_info["b0"]))
        if "beta_prior" in tbl.column_names:
            out._beta_prior[s] = np.asarray(tbl.column("beta_prior").to_pylist(), dtype=bool)
        else:  # a table saved before the flag existed: the Beta was given or observed exactly where scored
            out._beta_prior[s] = ~np.asarray(scored, dtype=bool)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Picklable state for trainer checkpoints (``load_state_dict`` restores it on a table built for the
        same dataset)."""
        return {"table": self.to_table(), "version": self.version,
                "total_groups": self._total_groups, "total_zero_var": self._total_zero_var,
                "total_pred_zero_var": self._total_pred_zero_var, "total_zero_correct": self._total_zero_correct}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        other = VPSTable.from_table(state["table"], config=self.config)
        if len(other) != len(self) or other._ids != self._ids:
            raise ValueError("state_dict is from a VPS table over a different dataset")
        self._p, self._tds, self._scored = other._p, other._tds, other._scored
        self._a, self._b, self._beta_prior = other._a, other._b, other._beta_prior
        self._prior, self.prior_info = other._prior, other.prior_info
        self._observed, self._groups = other._observed, other._groups
        self.version = int(state["version"])
        self._cache = None
        self._total_groups = int(state["total_groups"])
        self._total_zero_var = int(state["total_zero_var"])
        self._total_pred_zero_var = float(state.get("total_pred_zero_var", 0.0))
        self._total_zero_correct = int(state.get("total_zero_correct", 0))
        self._p0_cache = None
