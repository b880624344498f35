"""The score report: :func:`score_summary` (counts + zero-variance fraction + distribution of a scores table)
and :func:`write_score_report` (``report/pass_rate_hist.png``, ``vps_hist.png``, ``rollouts_hist.png`` when
prompts got different N (adaptive scoring), ``report.md``), drawn with :mod:`curation.core.plots`.  The
summary includes the rollouts per prompt, the mean width of the posterior credible interval and, for adaptive
runs, why prompts stopped.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from curation.core.plots import histogram_png, markdown_table

__all__ = ["score_summary", "write_score_report"]


def score_summary(scores: pa.Table) -> dict:
    """Counts and distribution of a scores table, overall and per model.

    ``zero_variance_frac`` is the fraction of (prompt, model) groups with ``p`` in {0, 1}: their OVS is 0,
    so GRPO learns nothing from them.
    """
    def one(t: pa.Table) -> dict:
        p = np.asarray(t.column("pass_rate").to_pylist(), dtype=float)
        v = np.asarray(t.column("vps").to_pylist(), dtype=float)
        tds = np.asarray(t.column("tds").to_pylist(), dtype=float)
        ns = np.asarray(t.column("n").to_pylist(), dtype=float)
        n = len(p)
        width = None
        if "post_hi" in t.column_names:
            w = np.asarray(t.column("post_hi").to_pylist(), dtype=float) - np.asarray(
                t.column("post_lo").to_pylist(), dtype=float)
            w = w[~np.isnan(w)]
            width = float(w.mean()) if w.size else None
        stops = {}
        if "stopped_because" in t.column_names:
            stops = dict(sorted(Counter(x for x in t.column("stopped_because").to_pylist() if x is not None).items()))
        return {
            "groups": n,
            "rollouts": int(sum(t.column("n").to_pylist())),
            "all_correct": int((p == 1).sum()),
            "all_wrong": int((p == 0).sum()),
            "mixed": int(((p > 0) & (p < 1)).sum()),
            "zero_variance_frac": float(((p == 0) | (p == 1)).mean()) if n else 0.0,
            "mean_pass_rate": float(p.mean()) if n else None,
            "mean_tds": float(tds.mean()) if n else None,
            "mean_vps": float(v.mean()) if n else None,
            "rollouts_per_prompt_mean": float(ns.mean()) if n else None,
            "rollouts_per_prompt_min": int(ns.min()) if n else None,
            "rollouts_per_prompt_max": int(ns.max()) if n else None,
            "mean_interval_width": width,
            "stopped_because": stops,
        }

    models = sorted(set(scores.column("model").to_pylist()))
    out = {"overall": one(scores), "per_model": {}}
    if len(models) > 1:
        import pyarrow.compute as pc

        for m in models:
            out["per_model"][m] = one(scores.filter(pc.equal(scores.column("model"), m)))
    out["models"] = models
    return out


def _prior_label(settings: Mapping[str, Any] | None) -> str:
    prior = (settings or {}).get("prior")
    if isinstance(prior, dict):
        from curation.score.posterior import PriorSpec

        try:
            return PriorSpec(**prior).label()
        except (TypeError, ValueError):
            return str(prior.get("kind"))
    return "uniform"


def write_score_report(
    scores: pa.Table,
    out_dir: str | Path,
    *,
    title: str = "Scoring report",
    settings: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """Write ``out_dir/pass_rate_hist.png``, ``vps_hist.png`` and ``report.md``; returns the summary
    (with the written paths under ``files``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = score_summary(scores)
    models = summary["models"]
    rows = scores.to_pylist()

    def by_model(col: str) -> Mapping[str, list] | list:
        if len(models) <= 1:
            return [r[col] for r in rows]
        return {m: [r[col] for r in rows if r["model"] == m] for m in models}

    # pass rates are k/N: centre one bin on each attainable value when N is small and uniform
    ns = sorted(set(scores.column("n").to_pylist()))
    if len(ns) == 1 and ns[0] <= 32:
        n = ns[0]
        p_bins: int | list[float] = [(k - 0.5) / n for k in range(n + 2)]
    else:
        p_bins = 20
    f1 = histogram_png(by_model("pass_rate"), out_dir / "pass_rate_hist.png", title="Pass rate per prompt",
                       xlabel="pass rate p", bins=p_bins)
    f2 = histogram_png(by_model("vps"), out_dir / "vps_hist.png", title="VPS per prompt",
                       xlabel="VPS = alpha*OVS + beta*TDS", bins=20)

    o = summary["overall"]
    lines = [f"# {title}", ""]
    if settings:
        lines += ["## Settings", "", markdown_table([{"setting": k, "value": v} for k, v in settings.items()]), ""]
    lines += [
        "## Counts",
        "",
        f"- prompt groups (problem x model): **{o['groups']}**, rollouts: **{o['rollouts']}**",
        f"- all correct (p = 1): {o['all_correct']}; all wrong (p = 0): {o['all_wrong']}; "
        f"mixed (0 < p < 1): {o['mixed']}",
        f"- **zero-variance fraction** (p in {{0, 1}}, no GRPO signal): **{o['zero_variance_frac']:.3f}**",
        f"- mean pass rate {o['mean_pass_rate'] if o['mean_pass_rate'] is None else round(o['mean_pass_rate'], 4)}"
        f", mean TDS {o['mean_tds'] if o['mean_tds'] is None else round(o['mean_tds'], 4)}"
        f", mean VPS {o['mean_vps'] if o['mean_vps'] is None else round(o['mean_vps'], 4)}",
    ]
    lines.append(f"- rollouts per prompt: mean {o['rollouts_per_prompt_mean'] or 0:.2f} (min "
                 f"{o['rollouts_per_prompt_min']}, max {o['rollouts_per_prompt_max']})")
    if o["mean_interval_width"] is not None:
        level = (settings or {}).get("credible", 0.9)
        lines.append(f"- posterior ({_prior_label(settings)}): mean width of the {level:.0%} credible interval "
                     f"post_hi - post_lo: {o['mean_interval_width']:.4f}")
    if o["stopped_because"]:
        lines.append("- adaptive scoring stopped prompts because: "
                     + ", ".join(f"{k} {v}" for k, v in o["stopped_because"].items()))
    for k, v in (extra or {}).items():
        lines.append(f"- {k}: {v}")
    if summary["per_model"]:
        lines += ["", "## Per model", "", markdown_table([{"model": m, **s} for m, s in summary["per_model"].items()])]
    lines += ["", "## Histograms", "", "![pass rate](pass_rate_hist.png)", "", "![VPS](vps_hist.png)", ""]
    if len(ns) > 1:
        f3 = histogram_png(by_model("n"), out_dir / "rollouts_hist.png", title="Rollouts per prompt",
                           xlabel="rollouts N", bins=[x - 0.5 for x in range(min(ns), max(ns) + 2)])
        lines += ["![rollouts per prompt](rollouts_hist.png)", ""]
        extra_files = [str(f3)]
    else:
        extra_files = []
    md = out_dir / "report.md"
    tmp = md.with_name(".report.md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(md)
    summary["files"] = [str(f1), str(f2), *extra_files, str(md)]
    return summary
