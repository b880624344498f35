"""``curate report RUN_DIR``: one Markdown report (+ PNG plots) over a whole run folder.

Every number is read from the tables and stats files the run produced (nothing is typed into a template):

- rows per step: ``ingest/*/stats.json``, ``build/stats.json`` (per step and per exclusion reason);
- scoring: ``score/scores.parquet`` (counts, rollouts per prompt, pass-rate and VPS histograms, zero-variance
  fraction, the mean width of the pass-rate credible intervals) and, for adaptive runs, ``score/stats.json``
  (rollouts spent, why prompts stopped);
- datasets: ``rl/stats.json`` + ``rl*.parquet``, ``cot/stats.json`` + ``sft.parquet``;
- training: ``staged/summary.json`` and each stage's ``trainer_state.json`` log history (loss / reward
  curves per stage);
- VAS vs uniform: the fraction of zero-variance GRPO groups.  For a prompt with pass rate p and a group of
  G rollouts, P(all G rewards equal) = p^G + (1-p)^G.  A sampler drawing prompt i with probability q_i
  therefore yields an expected zero-variance fraction Z(q) = sum_i q_i (p_i^G + (1-p_i)^G).  Uniform:
  q_i = 1/n.  VAS with mix lambda: q_i = lambda * P_i + (1-lambda)/n, where P = the VAS weights of
  :func:`curation.score.vas.vas_probabilities` over the prompts' VPS.  Both are computed from the scored
  pass rates; the measured fraction of the GRPO stages (which sampled with VAS) is shown beside them.
- how VPS splits between OVS and TDS (:func:`vps_split`): per pass-rate group, the outcome and TDS terms and
  the VAS sampling mass under the run's VPS and under MMR1's default (raw OVS) -> ``vps_split.json``;
- learning (``learn/``, the demo's GRPO arms): held-out accuracy before/after each arm with paired-bootstrap
  intervals and the reward curve per arm (:mod:`curation.report.learning`) -> ``learning.json``,
  ``learning.txt`` (the lines ``make demo`` prints), ``learning_rewards.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from curation.core.plots import histogram_png, markdown_table
from curation.report.learning import learning_lines, learning_summary, summary_text
from curation.score.vas import expected_zero_variance, vas_probabilities


def vas_vs_uniform(scores_path: Path, *, group_size: int, lam: float, epsilon: float = 1e-3) -> dict[str, Any]:
    t = pq.read_table(scores_path, columns=["pass_rate", "vps"])
    p = np.asarray(t.column("pass_rate").to_pylist(), dtype=float)
    vps = np.asarray(t.column("vps").to_pylist(), dtype=float)
    n = len(p)
    uniform = np.full(n, 1.0 / n)
    mix = lam * vas_probabilities(vps, epsilon=epsilon) + (1.0 - lam) * uniform
    pure = vas_probabilities(vps, epsilon=epsilon)
    return {
        "prompts": n,
        "group_size": group_size,
        "lambda": lam,
        "uniform": expected_zero_variance(p, uniform, group_size),
        "vas_mix": expected_zero_variance(p, mix, group_size),
        "vas_only": expected_zero_variance(p, pure, group_size),
    }


def vps_split(scores_path: Path, *, alpha: float, beta: float, normalize_ovs: bool, group_size: int, lam: float,
              epsilon: float = 1e-3) -> dict[str, Any]:
    """How the run's VPS splits between its outcome term and its trace-diversity term, per pass-rate group
    (p = 0, 0 < p < 1, p = 1), and where VAS puts its sampling mass under the run's VPS and under MMR1's
    default (raw OVS ``p (1 - p)``, same alpha/beta), both recomputed from the same ``pass_rate`` / ``ovs`` /
    ``tds`` columns.

    outcome term = ``vps - beta * tds`` (``alpha * OVS``, ``alpha * 4 OVS`` with ``normalize_ovs``, or
    ``alpha * E[p(1-p)]`` with ``--vps-from posterior``); TDS term = ``beta * tds``.  VAS mass of a group =
    the sum over its prompts of ``lambda * P_i + (1 - lambda) / n`` (:func:`vas_vs_uniform`'s mix).

    A table without ``ovs`` gets MMR1's ``OVS = p (1 - p)`` from ``pass_rate``; one without ``pass_rate``,
    ``tds`` or ``vps`` cannot be split: ``ValueError`` naming the missing columns."""
    import polars as pl

    have = set(pq.read_schema(scores_path).names)
    lacking = [c for c in ("pass_rate", "tds", "vps") if c not in have]
    if lacking:
        raise ValueError(f"{scores_path} has no {', '.join(lacking)} column(s)")
    t = pl.read_parquet(scores_path, columns=[c for c in ("pass_rate", "ovs", "tds", "vps") if c in have])
    if "ovs" not in have:
        t = t.with_columns((pl.col("pass_rate") * (1 - pl.col("pass_rate"))).alias("ovs"))
    p, ovs, tds, vps = (t.get_column(c).cast(pl.Float64).fill_null(float("nan")).to_numpy()
                        for c in ("pass_rate", "ovs", "tds", "vps"))
    n = len(p)
    groups = {"p = 0": p == 0, "0 < p < 1": (p > 0) & (p < 1), "p = 1": p == 1}
    paper = alpha * ovs + beta * tds
    variants = {"run": vps, "paper": paper}
    mix = {k: lam * vas_probabilities(v, epsilon=epsilon) + (1 - lam) / n for k, v in variants.items()}
    rows = []
    for name, m in groups.items():
        k = int(m.sum())
        rows.append({"group": name, "prompts": k,
                     "mean_vps": float(vps[m].mean()) if k else None,
                     "mean_outcome_term": float((vps - beta * tds)[m].mean()) if k else None,
                     "mean_tds_term": float((beta * tds)[m].mean()) if k else None,
                     "mean_vps_paper": float(paper[m].mean()) if k else None,
                     "vas_mass_run": float(mix["run"][m].sum()), "vas_mass_paper": float(mix["paper"][m].sum()),
                     "uniform_mass": k / n if n else 0.0})
    total_vps = float(vps.sum())
    return {"alpha": alpha, "beta": beta, "normalize_ovs": normalize_ovs, "lambda": lam, "group_size": group_size,
            "groups": rows,
            "outcome_share": float((vps - beta * tds).sum() / total_vps) if total_vps > 0 else None,
            "zero_variance": {k: expected_zero_variance(p, q, group_size) for k, q in mix.items()}}


def _vps_split_lines(sp: dict[str, Any]) -> list[str]:
    f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    ovs_name = "4 p (1 - p) (normalised OVS)" if sp["normalize_ovs"] else "p (1 - p) (MMR1's raw OVS)"
    lines = ["## 4b. How VPS splits between OVS and TDS", "",
             f"This run: VPS = {sp['alpha']} * {ovs_name} + {sp['beta']} * TDS. Outcome term = VPS - beta * TDS; "
             f"'paper' = MMR1's default {sp['alpha']} * p (1 - p) + {sp['beta']} * TDS from the same pass rates and TDS. "
             f"VAS mass = share of the draws of a VAS mix (lambda = {sp['lambda']}) landing in the group.", "",
             markdown_table([{"pass rate": g["group"], "prompts": g["prompts"], "mean VPS": f(g["mean_vps"]),
                              "outcome term": f(g["mean_outcome_term"]), "TDS term": f(g["mean_tds_term"]),
                              "mean VPS (paper)": f(g["mean_vps_paper"]),
                              "VAS mass": f(g["vas_mass_run"]), "VAS mass (paper)": f(g["vas_mass_paper"]),
                              "uniform mass": f(g["uniform_mass"])} for g in sp["groups"]]), ""]
    if sp["outcome_share"] is not None:
        lines.append(f"- The outcome term carries {sp['outcome_share']:.1%} of this run's total VPS.")
    mid = next(g for g in sp["groups"] if g["group"] == "0 < p < 1")
    lines.append(f"- Prompts with outcome variance (0 < p < 1) get {mid['vas_mass_run']:.1%} of the VAS mix's draws with "
                 f"this run's VPS, {mid['vas_mass_paper']:.1%} with the paper's default, {mid['uniform_mass']:.1%} "
                 "uniformly.")
    z = sp["zero_variance"]
    lines += [f"- Expected zero-variance fraction (G = {sp['group_size']}) of the VAS mix: {z['run']:.3f} with this "
              f"run's VPS, {z['paper']:.3f} with the paper's default.", ""]
    return lines


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _curve_png(points: dict[str, list[tuple[float, float]]], path: Path, *, title: str, ylabel: str) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    try:
        for label, pts in points.items():
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o", label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def model_facts(model_dir: str | Path) -> dict[str, Any] | None:
    """What the report says about a checkpoint folder: its architecture (``config.json``), its parameter count
    (summed from the ``model.safetensors`` header - no weights read) and whether it was built with random
    weights (``rlcurate_random_init`` in its config, set by :func:`curation.core.models.build_tiny_qwen2_vl`
    and kept by every checkpoint trained from it)."""
    d = Path(model_dir)
    cfg = _read_json(d / "config.json")
    if cfg is None:
        return None
    params = None
    st = d / "model.safetensors"
    if st.is_file():
        with st.open("rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        params = sum(int(np.prod(v["shape"])) for k, v in header.items() if k != "__metadata__")
    return {"path": str(d), "architecture": (cfg.get("architectures") or [cfg.get("model_type")])[0],
            "parameters": params, "random_init": bool(cfg.get("rlcurate_random_init", False))}


def _stage_histories(staged_dir: Path) -> dict[str, list[dict]]:
    """Log history of each stage: the trainer_state.json with the highest global step under the stage dir."""
    out = {}
    for stage_dir in sorted(p for p in staged_dir.iterdir() if p.is_dir()):
        best, best_step = None, -1
        for f in stage_dir.rglob("trainer_state.json"):
            st = _read_json(f) or {}
            if st.get("global_step", -1) > best_step:
                best, best_step = st, st.get("global_step", -1)
        if best:
            out[stage_dir.name] = best.get("log_history", [])
    return out


def write_run_report(run_dir: str | Path, out_dir: str | Path | None = None, *, group_size: int = 4,
                     lam: float = 0.5) -> Path:
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    md: list[str] = ["# Run report", "", f"Run folder: `{run_dir}`", ""]
    missing: list[str] = []

    # 1. ingest + build
    ingests = sorted((run_dir / "ingest").glob("*/stats.json")) if (run_dir / "ingest").is_dir() else []
    if ingests:
        rows = []
        for f in ingests:
            s = _read_json(f) or {}
            rows.append({"source": s.get("source"), "format": s.get("format"), "rows in": s.get("rows_in"),
                         "kept": s.get("rows_out"),
                         "excluded": ", ".join(f"{k}: {v}" for k, v in (s.get("excluded") or {}).items()) or "-"})
        md += ["## 1. Ingest", "", markdown_table(rows), ""]
    build = _read_json(run_dir / "build" / "stats.json")
    if build:
        rows = [{"step": s["step"], "rows in": s["rows_in"], "rows out": s["rows_out"],
                 "excluded": ", ".join(f"{k}: {v}" for k, v in s["excluded"].items()) or "-"} for s in build["steps"]]
        md += ["## 2. Build (rows per step)", "", markdown_table(rows), "",
               f"{build['input_rows']} rows in = {build['output_rows']} kept + {build['excluded_rows']} excluded.", ""]
    else:
        missing.append("build")

    # 2. scoring
    scores_path = run_dir / "score" / "scores.parquet"
    if scores_path.exists():
        t = pq.read_table(scores_path)
        p = np.asarray(t.column("pass_rate").to_pylist(), dtype=float)
        vps = t.column("vps").to_pylist()
        stats = _read_json(run_dir / "score" / "stats.json") or {}
        settings = stats.get("settings", {})
        histogram_png(p.tolist(), out_dir / "pass_rate_hist.png", title="Pass rate per prompt", xlabel="p",
                      bins=20, range_=(0, 1))
        histogram_png(vps, out_dir / "vps_hist.png", title="VPS per prompt", xlabel="VPS", bins=20)
        zero = float(np.mean((p == 0) | (p == 1))) if len(p) else 0.0
        n_col = np.asarray(t.column("n").to_pylist(), dtype=float)
        ns = sorted(set(t.column("n").to_pylist()))
        width = None
        if "post_hi" in t.column_names and "post_lo" in t.column_names:
            w = np.asarray(t.column("post_hi").to_pylist(), dtype=float) - np.asarray(t.column("post_lo").to_pylist(),
                                                                                      dtype=float)
            width = float(np.nanmean(w)) if np.isfinite(w).any() else None
        md += ["## 3. Scoring (MMR1 pass rate, OVS, TDS, VPS)", "",
               f"- prompts scored: {t.num_rows}; rollouts per prompt: "
               + (f"{ns}" if len(ns) <= 4 else f"mean {n_col.mean():.2f} (min {ns[0]}, max {ns[-1]})"),
               f"- model: `{settings.get('model', ', '.join(sorted(set(t.column('model').to_pylist()))))}`",
               f"- mean pass rate {float(np.mean(p)):.3f}; prompts with p in {{0, 1}} (zero variance): {zero:.1%}",
               f"- mean VPS {float(np.mean(vps)):.4f}"]
        if width is not None:
            md.append(f"- pass-rate posterior: mean width of the {settings.get('credible', 0.9):.0%} credible "
                      f"interval {width:.4f}")
        ad = stats.get("adaptive")
        if ad:
            md.append(f"- adaptive scoring: {ad['rollouts']} rollouts ({ad['fraction_of_n_max']:.1%} of n_max for "
                      "every prompt); stopped because " + ", ".join(f"{k} {v}" for k, v in ad["stopped_because"].items()))
        md += ["", "![pass rate](pass_rate_hist.png) ![VPS](vps_hist.png)", ""]
        vu = vas_vs_uniform(scores_path, group_size=group_size, lam=lam)
        md += ["## 4. Zero-variance groups: VAS vs uniform", "",
               f"Expected fraction of GRPO groups (G = {group_size}) whose rewards are all equal, from the scored "
               "pass rates: Z(q) = sum_i q_i (p_i^G + (1-p_i)^G).", "",
               markdown_table([{"sampler": "uniform", "expected zero-variance fraction": f"{vu['uniform']:.3f}"},
                               {"sampler": f"VAS mix (lambda = {lam})", "expected zero-variance fraction": f"{vu['vas_mix']:.3f}"},
                               {"sampler": "VAS only (lambda = 1)", "expected zero-variance fraction": f"{vu['vas_only']:.3f}"}]),
               ""]
        (out_dir / "vas_vs_uniform.json").write_text(json.dumps(vu, indent=2))
        try:
            sp = vps_split(scores_path, alpha=float(settings.get("alpha", 0.8)),
                           beta=float(settings.get("beta", 0.2)),
                           normalize_ovs=bool(settings.get("normalize_ovs", False)), group_size=group_size, lam=lam)
        except ValueError as e:  # a scores table from elsewhere (no TDS): the rest of the report still stands
            md += ["## 4b. How VPS splits between OVS and TDS", "", f"Not shown: {e}.", ""]
        else:
            md += _vps_split_lines(sp)
            (out_dir / "vps_split.json").write_text(json.dumps(sp, indent=2))
    else:
        missing.append("score")

    # 3. datasets
    for name, title in (("rl", "RL sets (curate rl-set)"), ("cot", "Cold-start SFT set (curate cot)")):
        s = _read_json(run_dir / name / "stats.json")
        if not s:
            missing.append(name)
            continue
        tables = {p.name: pq.ParquetFile(p).metadata.num_rows for p in sorted((run_dir / name).glob("*.parquet"))}
        md += [f"## {title}", "", markdown_table([{"file": k, "rows": v} for k, v in tables.items()]), ""]
        reasons = s.get("excluded_by_reason") or s.get("excluded") or {}
        if isinstance(reasons, dict) and reasons:
            md += ["Exclusions by reason:", "",
                   markdown_table([{"reason": k, "rows": v} for k, v in reasons.items() if isinstance(v, int)]), ""]

    # 4. training
    staged = run_dir / "staged"
    summary = _read_json(staged / "summary.json") if staged.is_dir() else None
    if summary:
        stages = summary.get("stages", summary if isinstance(summary, list) else [])
        md += ["## Training (train staged)", ""]
        first = stages[0].get("started_from") if stages else None
        # a path as the run wrote it: relative to the cwd of the run, which is usually the run folder's parent
        # (an absolute path is the same path both times)
        facts = (model_facts(first) or model_facts(run_dir.parent / first)) if first else None
        if facts:
            size = f", {facts['parameters'] / 1e6:.2f} M parameters" if facts["parameters"] else ""
            md += [f"Started from `{facts['path']}` ({facts['architecture']}{size})." +
                   (" Its weights are random (built locally: no small real vision-language model is available "
                    "offline), so these stages show the machinery running end to end, not learning; the learning "
                    "section below trains a real model." if facts["random_init"] else ""), ""]
        md += [markdown_table(
            [{k: v for k, v in s.items() if k in {"name", "kind", "status", "steps", "final_loss", "final_reward",
                                                  "zero_variance_frac", "checkpoint"}} for s in stages]), ""]
        hist = _stage_histories(staged)
        rewards = {k: [(h["step"], h["reward"]) for h in v if "reward" in h and "step" in h] for k, v in hist.items()}
        losses = {k: [(h["step"], h["loss"]) for h in v if "loss" in h and "step" in h] for k, v in hist.items()}
        zv = {k: [(h["step"], h["vas/zero_variance_frac"]) for h in v if "vas/zero_variance_frac" in h]
              for k, v in hist.items()}
        if any(rewards.values()):
            _curve_png({k: v for k, v in rewards.items() if v}, out_dir / "reward_curves.png",
                       title="Mean reward per step (GRPO stages)", ylabel="reward")
            md += ["![rewards](reward_curves.png)", ""]
        if any(losses.values()):
            _curve_png({k: v for k, v in losses.items() if v}, out_dir / "loss_curves.png",
                       title="Training loss per step", ylabel="loss")
            md += ["![loss](loss_curves.png)", ""]
        measured = {k: float(np.mean([y for _, y in v])) for k, v in zv.items() if v}
        if measured:
            md += ["Measured zero-variance fraction in the GRPO stages (sampled with VAS): " +
                   ", ".join(f"{k}: {v:.3f}" for k, v in measured.items()), ""]
    else:
        missing.append("staged")

    # 5. learning section (pipelines/demo.yaml: learn/eval_*, learn/<arm>/final)
    learn = learning_summary(run_dir / "learn") if (run_dir / "learn").is_dir() else None
    if learn:
        md += ["## Learning: GRPO on the scored model, VAS against uniform", ""] + learning_lines(learn)
        curves = {arm: a["rewards"] for arm, a in learn["arms"].items() if a["rewards"]}
        if curves:
            _curve_png(curves, out_dir / "learning_rewards.png", title="Mean reward per GRPO step, per arm",
                       ylabel="reward")
            md += ["![learning rewards](learning_rewards.png)", ""]
        (out_dir / "learning.json").write_text(json.dumps(learn, indent=2))
        (out_dir / "learning.txt").write_text(summary_text(learn) + "\n")

    pub = run_dir / "publish" / "README.md"
    if pub.exists():
        md += ["## Publishing", "", f"Dry-run dataset repository: `{pub.parent}` (card: `{pub}`).", ""]
    if missing:
        md += ["---", f"Not in this run folder: {', '.join(missing)}.", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(md))
    return path
