"""The Beta posterior of a prompt's pass rate: what N rollouts with c correct say about p, and how surely.

A point estimate cannot tell a settled prompt from an unknown one: 0 of 4 and 0 of 32 both read ``p = 0``.
Here every (problem, model) group also gets the posterior of its pass rate.

**Model.**  The N rollouts of prompt i are Bernoulli(p_i) draws (verified correct or not).  With the prior
``p_i ~ Beta(a0_i, b0_i)`` and ``c_i`` correct out of ``N_i``, conjugacy gives

    p_i | data ~ Beta(a_i, b_i),      a_i = a0_i + c_i,      b_i = b0_i + N_i - c_i

and the scores table (:func:`curation.score.scores.score_rollouts`) carries, next to ``pass_rate``, ``ovs``,
``tds``, ``vps`` (unchanged):

=============  ==================================================================================
``post_a``     ``a = a0 + c``
``post_b``     ``b = b0 + N - c``
``post_mean``  ``E[p] = a / (a + b)``
``post_lo``    lower end of the equal-tailed credible interval at level L (default 0.9):
               ``F^-1((1 - L) / 2)`` with ``F(x) = I_x(a, b)`` the regularised incomplete beta function
               (``scipy.special.betaincinv``)
``post_hi``    upper end, ``F^-1((1 + L) / 2)``
``post_ovs``   the posterior expectation of the outcome variance,
               ``E[p (1 - p)] = E[p] - E[p^2] = a b / ((a + b)(a + b + 1))``
               (``E[p^2] = a (a + 1) / ((a + b)(a + b + 1))``).  Unlike ``ovs = p_hat (1 - p_hat)`` it is
               not 0 for 0 of 4: such a prompt may still have a small pass rate.
=============  ==================================================================================

``N = 0`` gives the prior itself.  :func:`ovs_sd` is the posterior standard deviation of ``p (1 - p)``
(adaptive scoring's precision rule), from the Beta raw moments ``E[p^k] = prod_{j<k} (a + j) / (a + b + j)``:
``Var[p(1-p)] = E[p^2] - 2 E[p^3] + E[p^4] - E[p(1-p)]^2``.

**Priors** (:class:`PriorSpec`, CLI ``--prior``):

- ``uniform``: ``Beta(1, 1)`` (default); ``jeffreys``: ``Beta(1/2, 1/2)``; ``beta:A,B``: ``Beta(A, B)``.
- ``eb``: empirical Bayes, one ``Beta(a0, b0)`` per model fitted to the data set by **beta-binomial marginal
  maximum likelihood** (:func:`fit_eb_prior`):

      maximise  l(a0, b0) = sum_i [ ln B(a0 + c_i, b0 + N_i - c_i) - ln B(a0, b0) ]

  (the binomial coefficients do not depend on the prior and drop out), over ``mu = a0 / (a0 + b0)`` and
  ``s = a0 + b0`` (L-BFGS-B on ``(logit mu, ln s)`` with the analytic gradient, ``d ln B(x, y) / dx =
  psi(x) - psi(x + y)``).  Why this estimator and not the method of moments: it uses every group with its
  own N (adaptive scoring gives prompts different N), and it stays valid under adaptive stopping - the
  stopping rule depends only on outcomes already observed, so it factors out of the likelihood (the
  likelihood principle), whereas moment estimators of a stopped sample are biased.  **Shrinkage guard**:
  ``s <= s_max`` (default: the median N of the groups, at least 2), so the fitted prior never weighs more
  than a typical prompt's own rollouts - when the groups look alike the unbounded MLE sends ``s`` to
  infinity and every prompt's posterior collapses onto the data-set mean; and ``a0, b0 >= 0.05``, so no
  prior declares a prompt certainly unsolvable (``a0 -> 0`` puts all the prior mass on ``p = 0``).  With
  fewer than two groups, or no group with ``N >= 2`` (nothing identifies the spread), it falls back to
  ``uniform`` and says so in the fit info.
- a per-prompt prior from **another model's scores** (``--prior-scores other/scores.parquet
  --prior-strength K``): a prompt hard for a 3B model starts hard for the 7B.  With the other model's
  ``c'_i`` of ``N'_i``, ``m_i = c'_i / N'_i`` and the base prior ``Beta(a_base, b_base)`` (any of the above):

      a0_i = a_base + K m_i,      b0_i = b_base + K (1 - m_i)

  i.e. the other model's pass rate counts as ``K`` pseudo-rollouts on top of the base prior (``K = 0`` is
  the base prior; the base keeps the prior proper when ``m_i`` is 0 or 1).  Prompts the other model did
  not score get the base prior.  Choose ``K`` below the other model's N, lower the more the models differ.
- a **stratified empirical-Bayes** prior (``--prior eb --prior-by FIELDS``): one ``Beta(a0, b0)`` per (model,
  stratum), each fitted as above to its stratum's groups, where the stratum of a problem is the value of
  ``FIELDS`` in the problems table (comma-separated; a column such as ``source``, or ``meta.KEY`` for a key of
  the JSON ``meta`` column).  A data set that mixes sources of very different difficulty (MMR1's mixes
  olympiad problems with chart QA) has one pass-rate distribution per source, and a single prior fitted to the
  mixture is wrong for every source: 0 of 4 reads the same on a source the model never solves and on one it
  usually does.  A stratum with fewer than :data:`MIN_STRATUM_GROUPS` groups, or whose fit falls back, takes
  the model-wide fit (said in the fit info), and problems without a stratum (not in the table) too.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "PRIOR_KINDS",
    "PriorSpec",
    "beta_moments",
    "credible_interval",
    "fit_eb_prior",
    "ovs_mean",
    "ovs_sd",
    "posterior_columns",
    "predictive_in_band",
    "resolve_prior",
    "zero_variance_prob",
]

PRIOR_KINDS = ("uniform", "jeffreys", "eb", "beta:A,B")
EB_MIN_PARAM = 0.05
MIN_STRATUM_GROUPS = 5  # a stratum's own empirical-Bayes fit needs at least this many groups
DEFAULT_CREDIBLE = 0.9


@dataclass(frozen=True)
class PriorSpec:
    """The prior of every group's pass rate (module docstring).

    ``kind``: ``uniform`` | ``jeffreys`` | ``eb`` | ``beta`` (then ``a``, ``b``); ``scores`` / ``strength``
    / ``model``: the per-prompt prior from another model's scores table; ``eb_max_strength``: the shrinkage
    guard ``s_max`` of the empirical-Bayes fit (``None``: the median N); ``by`` / ``strata_table``: the
    stratified empirical-Bayes prior (fields of the problems table at ``strata_table``, joined on ``id``)."""

    kind: str = "uniform"
    a: float = 1.0
    b: float = 1.0
    scores: str | None = None
    strength: float = 0.0
    model: str | None = None
    eb_max_strength: float | None = None
    by: str | None = None
    strata_table: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("uniform", "jeffreys", "eb", "beta"):
            raise ValueError(f"--prior must be one of {', '.join(PRIOR_KINDS)}, got {self.kind!r}")
        if not (self.a > 0 and self.b > 0 and math.isfinite(self.a) and math.isfinite(self.b)):
            raise ValueError(f"a Beta prior needs a, b > 0, got Beta({self.a}, {self.b})")
        if not (self.strength >= 0 and math.isfinite(self.strength)):
            raise ValueError(f"--prior-strength must be finite and >= 0, got {self.strength}")
        if self.strength > 0 and self.scores is None:
            raise ValueError("--prior-strength needs --prior-scores (the other model's scores.parquet)")
        if self.eb_max_strength is not None and not self.eb_max_strength > 0:
            raise ValueError(f"the empirical-Bayes strength cap must be > 0, got {self.eb_max_strength}")
        if self.by is not None:
            if self.kind != "eb":
                raise ValueError(f"--prior-by stratifies the empirical-Bayes prior: use it with --prior eb, not {self.kind}")
            if not strata_fields(self.by):
                raise ValueError(f"--prior-by {self.by!r}: no field names")
            if self.strata_table is None:
                raise ValueError("--prior-by needs the problems table that holds those fields")

    @classmethod
    def parse(cls, spec: str | None = None, **kw: Any) -> PriorSpec:
        """``"uniform"``, ``"jeffreys"``, ``"eb"`` or ``"beta:A,B"`` (other fields as keywords)."""
        spec = (spec or "uniform").strip()
        if spec == "uniform":
            return cls("uniform", 1.0, 1.0, **kw)
        if spec == "jeffreys":
            return cls("jeffreys", 0.5, 0.5, **kw)
        if spec == "eb":
            return cls("eb", 1.0, 1.0, **kw)
        m = re.fullmatch(r"beta:\s*([0-9.eE+-]+)\s*,\s*([0-9.eE+-]+)", spec)
        if m:
            try:
                return cls("beta", float(m.group(1)), float(m.group(2)), **kw)
            except ValueError as e:
                raise ValueError(f"--prior {spec!r}: {e}") from None
        raise ValueError(f"--prior must be one of {', '.join(PRIOR_KINDS)}, got {spec!r}")

    def label(self) -> str:
        base = {"uniform": "uniform", "jeffreys": "jeffreys", "eb": "eb"}.get(self.kind, f"beta:{self.a:g},{self.b:g}")
        if self.by is not None:
            base = f"{base} by {self.by}"
        return base if self.scores is None else f"{base} + {self.strength:g} x {Path(self.scores).name}"

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------- Beta algebra


def _arr(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def beta_moments(a: Any, b: Any, k: int) -> np.ndarray:
    """Raw moment ``E[p^k] = prod_{j<k} (a + j) / (a + b + j)`` of ``Beta(a, b)``."""
    a, b = _arr(a), _arr(b)
    out = np.ones(np.broadcast(a, b).shape)
    for j in range(k):
        out = out * (a + j) / (a + b + j)
    return out


def ovs_mean(a: Any, b: Any) -> np.ndarray:
    """``E[p (1 - p)] = a b / ((a + b)(a + b + 1))`` under ``Beta(a, b)``."""
    a, b = _arr(a), _arr(b)
    s = a + b
    return a * b / (s * (s + 1.0))


def zero_variance_prob(a: Any, b: Any, g: int) -> np.ndarray:
    """Posterior predictive probability that a group of ``g`` fresh rollouts is all correct or all wrong (so
    its 0/1 rewards have zero variance and GRPO learns nothing from it), under ``p ~ Beta(a, b)``:

        P(all equal) = E[p^g + (1 - p)^g] = B(a + g, b) / B(a, b) + B(a, b + g) / B(a, b)

    (``E[p^g] = B(a + g, b) / B(a, b)``), computed as ``exp`` of differences of ``ln B`` (``scipy.special.betaln``)
    so large ``a, b`` do not overflow.  ``g = 1`` gives 1; the uniform prior ``Beta(1, 1)`` gives ``2 / (g + 1)``."""
    from scipy.special import betaln

    if int(g) != g or g < 1:
        raise ValueError(f"the group size must be an integer >= 1, got {g}")
    a, b = _arr(a), _arr(b)
    if np.any(~(a > 0)) or np.any(~(b > 0)):
        raise ValueError("Beta parameters must be > 0")
    base = betaln(a, b)
    out = np.exp(betaln(a + g, b) - base) + np.exp(betaln(a, b + g) - base)
    return np.clip(out, 0.0, 1.0)


def ovs_sd(a: Any, b: Any) -> np.ndarray:
    """Posterior standard deviation of ``p (1 - p)`` under ``Beta(a, b)`` (module docstring)."""
    m2, m3, m4 = beta_moments(a, b, 2), beta_moments(a, b, 3), beta_moments(a, b, 4)
    e = ovs_mean(a, b)
    var = m2 - 2.0 * m3 + m4 - e * e
    return np.sqrt(np.clip(var, 0.0, None))


def credible_interval(a: Any, b: Any, level: float = DEFAULT_CREDIBLE) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed ``level`` credible interval of ``Beta(a, b)``: ``(F^-1((1-L)/2), F^-1((1+L)/2))``."""
    from scipy.special import betaincinv

    if not 0.0 < level < 1.0:
        raise ValueError(f"the credible level must lie in (0, 1), got {level}")
    a, b = _arr(a), _arr(b)
    lo = betaincinv(a, b, (1.0 - level) / 2.0)
    hi = betaincinv(a, b, (1.0 + level) / 2.0)
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


def posterior_columns(n: Any, c: Any, a0: Any, b0: Any, level: float = DEFAULT_CREDIBLE) -> dict[str, np.ndarray]:
    """``post_a, post_b, post_mean, post_lo, post_hi, post_ovs`` for groups with ``c`` correct of ``n``
    under the priors ``Beta(a0, b0)`` (arrays broadcast)."""
    n, c, a0, b0 = _arr(n), _arr(c), _arr(a0), _arr(b0)
    if np.any(c < 0) or np.any(c > n):
        raise ValueError("need 0 <= n_correct <= n for every group")
    if np.any(a0 <= 0) or np.any(b0 <= 0):
        raise ValueError("every prior needs a0, b0 > 0")
    a = a0 + c
    b = b0 + n - c
    lo, hi = credible_interval(a, b, level)
    return {"post_a": a, "post_b": b, "post_mean": a / (a + b), "post_lo": lo, "post_hi": hi,
            "post_ovs": ovs_mean(a, b)}


# --------------------------------------------------------------------------------------------- the predictive


def predictive_in_band(c: Any, n: Any, a: Any, b: Any, n_max: int, lo: Any = None, hi: Any = None) -> np.ndarray:
    """``P(p_hat_final in band | data)``: the probability that the pass rate after ``n_max`` rollouts,
    ``(c + X) / n_max`` with the ``R = n_max - n`` rollouts still to come ``X ~ BetaBinomial(R, a, b)``
    (the posterior predictive), lies in the band (``lo`` / ``hi``: :class:`curation.core.bands.Bound` or
    ``None``).  ``pmf(x) = C(R, x) B(a + x, b + R - x) / B(a, b)``; groups with ``n >= n_max`` get 0 or 1.
    The final pass rate is compared exactly as ``pass_rate = n_correct / n`` is (a float division)."""
    from scipy.special import betaln, gammaln

    c, n, a, b = (np.atleast_1d(_arr(v)) for v in (c, n, a, b))
    c, n, a, b = np.broadcast_arrays(c, n, a, b)
    rem = np.clip(n_max - n, 0, None)
    r_top = int(rem.max()) if rem.size else 0
    x = np.arange(r_top + 1, dtype=np.float64)[None, :]
    R = rem[:, None]
    valid = x <= R
    with np.errstate(invalid="ignore"):
        logpmf = (gammaln(R + 1) - gammaln(x + 1) - gammaln(np.where(valid, R - x, 0) + 1)
                  + betaln(a[:, None] + x, b[:, None] + np.where(valid, R - x, 0)) - betaln(a, b)[:, None])
    pmf = np.where(valid, np.exp(logpmf), 0.0)
    final = (c[:, None] + x) / float(n_max)
    ok = np.ones_like(final, dtype=bool)
    if lo is not None:
        ok &= (final >= lo.value) if lo.inclusive else (final > lo.value)
    if hi is not None:
        ok &= (final <= hi.value) if hi.inclusive else (final < hi.value)
    # normalised by the pmf's own sum: exactly 1 (0) when every (no) outcome lies in the band
    return np.clip((pmf * ok).sum(axis=1) / pmf.sum(axis=1), 0.0, 1.0)


# --------------------------------------------------------------------------------------------- empirical Bayes


def fit_eb_prior(n: Any, c: Any, *, max_strength: float | None = None, min_param: float = EB_MIN_PARAM) -> dict:
    """Beta-binomial marginal maximum likelihood ``Beta(a0, b0)`` over groups with ``c`` correct of ``n``
    (module docstring: estimator, shrinkage guard, fallback).  Returns ``{"a0", "b0", "mean", "strength",
    "groups", "loglik", "s_max", "status"}`` (``status``: ``fit``, ``fit (s at s_max)``, or ``fallback:
    ...`` = uniform)."""
    from scipy.optimize import minimize
    from scipy.special import betaln, digamma, expit

    n, c = _arr(n).reshape(-1), _arr(c).reshape(-1)
    keep = n > 0
    n, c = n[keep], c[keep]
    if n.size < 2 or not np.any(n >= 2):
        why = "fewer than 2 scored groups" if n.size < 2 else "no group with N >= 2"
        return {"a0": 1.0, "b0": 1.0, "mean": 0.5, "strength": 2.0, "groups": int(n.size), "loglik": None,
                "s_max": None, "status": f"fallback: uniform ({why})"}
    # distinct (N, c) pairs with their counts: the likelihood only needs those
    pairs, w = np.unique(np.stack([n, c], axis=1), axis=0, return_counts=True)
    N, C, w = pairs[:, 0], pairs[:, 1], w.astype(np.float64)
    s_max = float(max_strength) if max_strength is not None else max(2.0, float(np.median(n)))
    s_min = 2.0 * min_param

    def negll(theta: np.ndarray) -> tuple[float, np.ndarray]:
        mu, s = expit(theta[0]), math.exp(theta[1])
        a, b = mu * s, (1.0 - mu) * s
        ll = float(np.sum(w * (betaln(a + C, b + N - C) - betaln(a, b))))
        da = np.sum(w * (digamma(a + C) - digamma(a + b + N) - digamma(a) + digamma(a + b)))
        db = np.sum(w * (digamma(b + N - C) - digamma(a + b + N) - digamma(b) + digamma(a + b)))
        g_t = (da - db) * s * mu * (1.0 - mu)
        g_u = da * a + db * b
        return -ll, -np.array([g_t, g_u])

    p_bar = float(np.clip((c.sum() + 0.5) / (n.sum() + 1.0), 1e-3, 1 - 1e-3))
    x0 = np.array([math.log(p_bar / (1 - p_bar)), math.log(min(2.0, s_max))])
    res = minimize(negll, x0, jac=True, method="L-BFGS-B",
                   bounds=[(-12.0, 12.0), (math.log(s_min), math.log(s_max))])
    mu, s = float(expit(res.x[0])), float(math.exp(res.x[1]))
    a0, b0 = max(mu * s, min_param), max((1.0 - mu) * s, min_param)
    at_cap = s >= s_max * (1 - 1e-6)
    return {"a0": a0, "b0": b0, "mean": a0 / (a0 + b0), "strength": a0 + b0, "groups": int(n.size),
            "loglik": float(-res.fun), "s_max": s_max, "status": "fit (s at s_max)" if at_cap else "fit"}


# --------------------------------------------------------------------------------------------- resolving a prior


def _other_scores(prior: PriorSpec) -> dict[str, float]:
    """``problem_id -> c' / N'`` of the other model's scores table (one model, or ``prior.model``)."""
    import polars as pl

    path = Path(prior.scores)  # type: ignore[arg-type]
    if path.is_dir():
        path = path / "scores.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"--prior-scores {path}: no such file")
    df = pl.read_parquet(path)
    for need in ("problem_id", "n", "n_correct"):
        if need not in df.columns:
            raise ValueError(f"--prior-scores {path}: not a scores table (no column {need!r}; has {df.columns})")
    if "model" in df.columns:
        models = sorted(df.get_column("model").unique().to_list())
        if prior.model is not None:
            if prior.model not in models:
                raise ValueError(f"--prior-scores {path}: model {prior.model!r} not there (models: {models})")
            df = df.filter(pl.col("model") == prior.model)
        elif len(models) > 1:
            raise ValueError(f"--prior-scores {path} holds {len(models)} models {models}; choose one with --prior-model")
    df = df.filter(pl.col("n") > 0)
    dup = df.group_by("problem_id").len().filter(pl.col("len") > 1)
    if dup.height:
        raise ValueError(f"--prior-scores {path}: problem {dup.get_column('problem_id')[0]!r} has several rows")
    m = (df.get_column("n_correct").cast(pl.Float64) / df.get_column("n").cast(pl.Float64)).to_list()
    return dict(zip(df.get_column("problem_id").to_list(), m))


def strata_fields(by: str) -> list[str]:
    """``"source, meta.level"`` -> ``["source", "meta.level"]``."""
    return [f.strip() for f in by.split(",") if f.strip()]


def _strata(prior: PriorSpec) -> dict[str, str]:
    """``problem id -> stratum label`` from ``prior.strata_table`` (fields ``prior.by``; ``meta.KEY`` reads the
    JSON ``meta`` column; several fields join with ``/``; a missing value reads ``(none)``)."""
    path = Path(prior.strata_table)  # type: ignore[arg-type]
    if path.is_dir():
        path = path / "problems.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"--prior-by: {path}: no such problems table")
    return dict(_strata_of(str(path.resolve()), prior.by or "", path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=8)
def _strata_of(path_s: str, by: str, _mtime_ns: int) -> tuple[tuple[str, str], ...]:
    """The labels of :func:`_strata` (cached per file version: adaptive scoring resolves the prior every round)."""
    import polars as pl
    import pyarrow.parquet as pq

    path = Path(path_s)
    fields = strata_fields(by)
    have = set(pq.read_schema(path).names)
    need = {"id"} | {"meta" if f.startswith("meta.") else f for f in fields}
    df = pl.read_parquet(path, columns=sorted(need & have))  # not the images
    if "id" not in df.columns:
        raise ValueError(f"--prior-by: {path} has no id column (not a problems table; has {df.columns})")
    exprs = []
    for f in fields:
        if f.startswith("meta."):
            if "meta" not in df.columns:
                raise ValueError(f"--prior-by {f}: {path} has no meta column")
            key = f[len("meta."):]
            exprs.append(pl.col("meta").cast(pl.String).str.json_path_match(f"$.{key}").alias(f))
        elif f in df.columns:
            exprs.append(pl.col(f).cast(pl.String).alias(f))
        else:
            raise ValueError(f"--prior-by {f}: no such column in {path} (has {df.columns}; meta.KEY for a meta key)")
    lab = df.select(pl.col("id").cast(pl.String), pl.concat_str([e.fill_null("(none)") for e in exprs],
                                                              separator="/").alias("stratum"))
    return tuple(zip(lab.get_column("id").to_list(), lab.get_column("stratum").to_list()))


def _fit_eb_stratified(prior: PriorSpec, labels: np.ndarray, n: np.ndarray, c: np.ndarray,
                       a0: np.ndarray, b0: np.ndarray, sel: np.ndarray) -> dict:
    """Per-stratum fits for the groups ``sel`` of one model (module docstring; ``labels``: every group's
    stratum, ``None`` when its problem is not in the table); writes ``a0``/``b0``."""
    out = {}
    for lab in sorted({x for x in labels[sel].tolist() if x is not None}):
        g = sel & (labels == lab)
        fit = fit_eb_prior(n[g], c[g], max_strength=prior.eb_max_strength) if g.sum() >= MIN_STRATUM_GROUPS else None
        if fit is None or fit["status"].startswith("fallback"):
            out[lab] = {"groups": int(g.sum()), "status": "model-wide fit (too few groups)" if fit is None
                        else f"model-wide fit ({fit['status']})"}
            continue
        a0[g], b0[g] = fit["a0"], fit["b0"]
        out[lab] = {k: fit[k] for k in ("a0", "b0", "mean", "strength", "groups", "status")}
    missing = int((sel & np.asarray([x is None for x in labels])).sum())
    if missing:
        out["(not in the table)"] = {"groups": missing, "status": "model-wide fit"}
    return out


def resolve_prior(prior: PriorSpec, problem_ids: Sequence[str], models: Sequence[str], n: Any, c: Any
                  ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Per-group prior parameters ``(a0, b0, info)`` for groups ``(problem_ids[i], models[i])`` with ``c``
    correct of ``n`` (the data the ``eb`` prior is fitted to, per model).  ``info``: what was used (the
    fitted ``eb`` parameters per model, how many groups took the other model's scores)."""
    n, c = _arr(n).reshape(-1), _arr(c).reshape(-1)
    k = n.size
    a0, b0 = np.full(k, prior.a), np.full(k, prior.b)
    info: dict[str, Any] = {"prior": prior.label()}
    if prior.kind == "eb":
        models_arr = np.asarray(list(models), dtype=object)
        labels = None
        if prior.by is not None:  # every group's stratum, once for all models
            strata = _strata(prior)
            labels = np.asarray([strata.get(pid) for pid in problem_ids], dtype=object)
        fits = {}
        for m in sorted(set(models_arr.tolist())):
            sel = models_arr == m
            fit = fit_eb_prior(n[sel], c[sel], max_strength=prior.eb_max_strength)
            a0[sel], b0[sel] = fit["a0"], fit["b0"]
            fits[m] = fit
            if labels is not None:
                fits[m] = dict(fit, strata=_fit_eb_stratified(prior, labels, n, c, a0, b0, sel))
        info["eb"] = fits
    if prior.scores is not None:
        other = _other_scores(prior)
        m_i = np.array([other.get(pid, np.nan) for pid in problem_ids], dtype=np.float64)
        have = ~np.isnan(m_i)
        a0 = np.where(have, a0 + prior.strength * np.nan_to_num(m_i), a0)
        b0 = np.where(have, b0 + prior.strength * (1.0 - np.nan_to_num(m_i)), b0)
        info["prior_scores"] = {"path": str(prior.scores), "strength": prior.strength,
                                "groups_with_prior": int(have.sum()), "groups_without": int((~have).sum())}
    return a0, b0, info
