"""What does adaptive scoring save, and what does it cost in agreement with a large-N reference?

On a real rollout pool (``bench/make_rollout_pool.py``: SmolLM2-135M-Instruct, >= 32 samples per problem),
in one run:

- reference: the first ``--n-ref`` (32) samples of every problem, scored as fixed-N ``curate score`` would;
- fixed N = 8 and N = 16: the first N samples (the same samples the reference starts with);
- adaptive: ``curate score --adaptive`` replayed over the pool in sample order (the same code path as
  ``curate score --rollouts POOL --adaptive``), for the policies below.

Each is compared with the reference on (a) the in-band / out-of-band decision for ``0 < p < 1`` (fraction of
problems where ``0 < c/N < 1`` agrees with the reference's) and (b) the Spearman correlation of VPS with the
reference's VPS among the problems in band in the reference, against the rollouts it spent.  VPS is the
MMR1 ``0.8 p(1-p) + 0.2 TDS`` (``vps (p_hat)``) and the posterior variant ``0.8 E[p(1-p)] + 0.2 TDS``
(``vps (post)``); the reference always uses ``vps (p_hat)`` at N = 32.  Target: an adaptive policy matches
fixed N = 16's agreement with at most 60 % of its rollouts.  The bench reads "agreement" both ways and says
which policy is cheapest for each: the band decision (a) alone (what a ``curate rl-set`` band filter uses), and
(a) together with (b) (what VAS sampling by VPS also needs).

    .venv/bin/python bench/adaptive_scoring.py --pool runs/rollout_pool/score [--cli]

``--pool``: a ``curate score`` output folder (``rollouts.parquet`` with verdicts) or the rollouts file.
``--cli`` also runs the default adaptive policy and the best stratified ones as whole ``curate score --rollouts
... --adaptive`` processes and checks that they spend the same rollouts.  The stratified policies (``--prior-by``)
read the pool's problems table (``--problems``, default ``../problems/problems.parquet`` from the score folder);
the bench also prints an oracle bound: what the first n samples give when the reference band is known for free.  Nothing is timed: the numbers are counts, so a shared machine does not
change them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

FIXED = (8, 12, 16, 20, 24)
# (label, policy keywords); n_max / round / band are common.  ``budget`` is in rollouts per problem.
POLICIES = [
    ("adaptive eb d=0.1 eps=0.03 (defaults)", {"prior": "eb", "delta": 0.1, "vps_precision": 0.03}),
    ("adaptive eb d=0.2 eps=0.04", {"prior": "eb", "delta": 0.2, "vps_precision": 0.04}),
    ("adaptive eb d=0.3 eps=0.04", {"prior": "eb", "delta": 0.3, "vps_precision": 0.04}),
    ("adaptive jeffreys d=0.3 eps=0.04", {"prior": "jeffreys", "delta": 0.3, "vps_precision": 0.04}),
    ("adaptive uniform d=0.2 eps=0.04", {"prior": "uniform", "delta": 0.2, "vps_precision": 0.04}),
    ("adaptive eb d=0.3 eps=0.04 budget 9.6/problem", {"prior": "eb", "delta": 0.3, "vps_precision": 0.04,
                                                       "budget": 9.6}),
    ("adaptive eb d=0.3 eps=0.04, precision uniform", {"prior": "eb", "delta": 0.3, "vps_precision": 0.04,
                                                       "precision_prior": "uniform"}),
    # stratified empirical Bayes (--prior-by; needs the pool's problems table)
    ("adaptive eb by stratum d=0.2 eps=0.04", {"prior": "eb", "by": True, "delta": 0.2, "vps_precision": 0.04}),
    (STRATIFIED_CLI := "adaptive eb by stratum d=0.2 eps=0.04, precision uniform",
     {"prior": "eb", "by": True, "delta": 0.2, "vps_precision": 0.04, "precision_prior": "uniform"}),
    ("adaptive eb by stratum d=0.3 eps=0.04, precision uniform",
     {"prior": "eb", "by": True, "delta": 0.3, "vps_precision": 0.04, "precision_prior": "uniform"}),
    ("adaptive eb by stratum d=0.1 eps=0.03, precision uniform",
     {"prior": "eb", "by": True, "delta": 0.1, "vps_precision": 0.03, "precision_prior": "uniform"}),
    # band only: --vps-precision 1 exceeds any posterior sd of VPS, so a prompt stops once its band is decided
    (BAND_ONLY := "adaptive eb by stratum d=0.2, band only (eps=1)",
     {"prior": "eb", "by": True, "delta": 0.2, "vps_precision": 1.0}),
    ("adaptive eb d=0.2, band only (eps=1)", {"prior": "eb", "delta": 0.2, "vps_precision": 1.0}),
]


def load_pool(path: Path):
    import pyarrow.parquet as pq

    f = path / "rollouts.parquet" if path.is_dir() else path
    if not f.is_file():
        raise SystemExit(f"{f}: no rollouts.parquet (run bench/make_rollout_pool.py first)")
    return pq.read_table(f), f


def evaluate(used, ref, prior, *, n_ref: int, metric: str) -> dict:
    """Scores of ``used`` vs the reference: agreement of 0 < p < 1, Spearman of VPS on the reference's band."""
    import polars as pl
    from scipy.stats import spearmanr

    from curation.score.scores import score_rollouts

    sc = pl.from_arrow(score_rollouts(used, metric=metric, prior=prior))
    post = pl.from_arrow(score_rollouts(used, metric=metric, prior=prior, vps_from="posterior")).select(
        "problem_id", pl.col("vps").alias("vps_post"))
    j = ref.join(sc.select("problem_id", "n", "pass_rate", "vps", "post_hi", "post_lo"), on="problem_id",
                 how="left").join(post, on="problem_id", how="left")
    band_ref = (j["ref_p"] > 0) & (j["ref_p"] < 1)
    band = (j["pass_rate"] > 0) & (j["pass_rate"] < 1)
    agree = float((band == band_ref).mean())
    inb = j.filter(band_ref)
    rho = spearmanr(inb["vps"].to_numpy(), inb["ref_vps"].to_numpy()).statistic
    rho_post = spearmanr(inb["vps_post"].to_numpy(), inb["ref_vps"].to_numpy()).statistic
    missed = int((band_ref & ~band).sum())
    return {"rollouts": int(j["n"].sum()), "agree": agree, "missed_in_band": missed,
            "false_in_band": int((~band_ref & band).sum()), "spearman_vps": float(rho),
            "spearman_vps_post": float(rho_post), "mean_width": float((j["post_hi"] - j["post_lo"]).mean()),
            "per_prompt": float(j["n"].mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=Path, required=True, help="curate score output folder or its rollouts.parquet")
    ap.add_argument("--n-ref", type=int, default=32)
    ap.add_argument("--round", type=int, default=4)
    ap.add_argument("--tds", default="edit")
    ap.add_argument("--cli", action="store_true", help="also run the first policy through the curate CLI")
    ap.add_argument("--problems", type=Path, help="the pool's problems table, for the --prior-by policies (default: "
                    "problems/problems.parquet next to the pool's score folder)")
    ap.add_argument("--prior-by", default="meta.family,meta.difficulty",
                    help="the strata of the stratified policies (make_rollout_pool's problem families and levels)")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args()

    import polars as pl
    import pyarrow.compute as pc

    from curation.score.adaptive import AdaptivePolicy, outcome, replay_adaptive
    from curation.score.posterior import PriorSpec
    from curation.score.scores import score_rollouts

    table, pool_file = load_pool(args.pool)
    per = pl.from_arrow(table.select(["problem_id", "sample"])).group_by("problem_id").agg(n=pl.len())
    keep = per.filter(pl.col("n") >= args.n_ref)["problem_id"].to_list()
    table = table.filter(pc.is_in(table.column("problem_id"), value_set=__import__("pyarrow").array(keep)))
    ref_rows = table.filter(pc.less(table.column("sample"), args.n_ref))
    if ref_rows.num_rows != len(keep) * args.n_ref:
        raise SystemExit("the pool's samples are not numbered 0..N-1 per problem")
    ref = pl.from_arrow(score_rollouts(ref_rows, metric=args.tds)).select(
        "problem_id", pl.col("pass_rate").alias("ref_p"), pl.col("vps").alias("ref_vps"))
    n_prompts = ref.height
    in_band = int(((ref["ref_p"] > 0) & (ref["ref_p"] < 1)).sum())
    print(f"pool: {pool_file} - {n_prompts} problems with >= {args.n_ref} samples; reference N = {args.n_ref}: "
          f"{in_band} in band (0 < p < 1), {int((ref['ref_p'] == 0).sum())} at p = 0, "
          f"{int((ref['ref_p'] == 1).sum())} at p = 1")

    uniform = PriorSpec()
    results = []
    # what counts alone can know: of the problems with no correct answer in their first k samples, how many
    # get one within n_ref (a rule that stops all of them at k misses those)
    first = pl.from_arrow(ref_rows.select(["problem_id", "sample", "correct"]))
    for k in (4, 8, 12, 16):
        zero_k = first.filter(pl.col("sample") < k).group_by("problem_id").agg(c=pl.col("correct").sum()).filter(
            pl.col("c") == 0)
        later = zero_k.join(ref, on="problem_id").filter(pl.col("ref_p") > 0).height
        print(f"  0 correct in the first {k:2d} samples: {zero_k.height:3d} problems, of which {later:3d} "
              f"({later / max(zero_k.height, 1):.0%}) have a correct one within {args.n_ref}")

    for n in FIXED:
        used, _, _ = replay_adaptive(ref_rows, AdaptivePolicy(n_max=n, round_size=n, prior=uniform))
        results.append({"method": f"fixed N = {n}", **evaluate(used, ref, uniform, n_ref=args.n_ref, metric=args.tds)})
    stops = {}
    problems = args.problems or pool_file.parent.parent / "problems" / "problems.parquet"
    for label, kw in POLICIES:
        if kw.get("by") and not problems.is_file():
            print(f"{label}: skipped ({problems}: no problems table; pass --problems)")
            continue
        prior = PriorSpec.parse(kw["prior"], **({"by": args.prior_by, "strata_table": str(problems)}
                                               if kw.get("by") else {}))
        budget = int(kw["budget"] * n_prompts) if kw.get("budget") else None
        pol = AdaptivePolicy(n_max=args.n_ref, round_size=args.round, band=(">0", "<1"), delta=kw["delta"],
                             vps_precision=kw["vps_precision"], prior=prior, budget=budget,
                             precision_prior=kw.get("precision_prior"))
        used, plans, _ = replay_adaptive(ref_rows, pol)
        results.append({"method": label, **evaluate(used, ref, prior, n_ref=args.n_ref, metric=args.tds)})
        stops[label] = dict(sorted(outcome(plans).group_by("stopped_because").len().rows()))
    results.append({"method": f"reference N = {args.n_ref}",
                    **evaluate(ref_rows, ref, uniform, n_ref=args.n_ref, metric=args.tds)})
    # an upper bound no policy can beat: an oracle told every problem's reference band for free spends the first
    # round on the out-of-band ones and the first n samples on each in-band one
    import pyarrow as pa

    in_ids = ref.filter((pl.col("ref_p") > 0) & (pl.col("ref_p") < 1))["problem_id"].to_list()
    is_in = pc.is_in(ref_rows.column("problem_id"), value_set=pa.array(in_ids))
    oracle = []
    for n_in in (12, 13, 14, 16):
        keep = pc.or_(pc.and_(is_in, pc.less(ref_rows.column("sample"), n_in)),
                      pc.and_(pc.invert(is_in), pc.less(ref_rows.column("sample"), args.round)))
        r = evaluate(ref_rows.filter(keep), ref, uniform, n_ref=args.n_ref, metric=args.tds)
        oracle.append((n_in, r))

    base = next(r for r in results if r["method"] == "fixed N = 16")
    head = ("| method | rollouts | per prompt | % of N=16 | (a) band agreement | missed / false in band | "
            "(b) Spearman VPS (p_hat) | (b) Spearman VPS (post) | mean 90% interval width |")
    print()
    print(head)
    print("|" + "---|" * 9)
    for r in results:
        print(f"| {r['method']} | {r['rollouts']} | {r['per_prompt']:.2f} | {100 * r['rollouts'] / base['rollouts']:.0f} % | "
              f"{r['agree']:.3f} | {r['missed_in_band']} / {r['false_in_band']} | {r['spearman_vps']:.3f} | "
              f"{r['spearman_vps_post']:.3f} | {r['mean_width']:.3f} |")
    print()
    print(f"oracle bound (told each problem's N = {args.n_ref} band for free; {args.round} samples per out-of-band "
          "problem, the first n per in-band one):")
    for n_in, r in oracle:
        print(f"  n = {n_in}: {r['rollouts']} rollouts ({100 * r['rollouts'] / base['rollouts']:.0f} % of N = 16), "
              f"(a) {r['agree']:.3f}, (b) Spearman {r['spearman_vps']:.3f}")
    print()
    for label, s in stops.items():
        print(f"{label}: stopped because " + ", ".join(f"{k} {v}" for k, v in s.items()))
    print()
    fixed = [r for r in results if r["method"].startswith("fixed")]
    for r in results:
        if not r["method"].startswith("adaptive"):
            continue
        frac = r["rollouts"] / base["rollouts"]
        best_b = max(r["spearman_vps"], r["spearman_vps_post"])
        matches = r["agree"] >= base["agree"] and best_b >= base["spearman_vps"]
        ok = frac <= 0.6 and matches
        # the cheapest fixed N that is at least as good on both counts
        as_good = [f for f in fixed if f["agree"] >= r["agree"] and f["spearman_vps"] >= best_b]
        eq = (f"the cheapest fixed N at least as good on both is N = {as_good[0]['per_prompt']:.0f} (this run spends "
              f"{r['rollouts'] / as_good[0]['rollouts']:.0%} of it)") if as_good else \
            f"no fixed N <= {FIXED[-1]} is as good on both"
        print(f"{r['method']}: {frac:.0%} of N = 16's rollouts; agreement {r['agree']:.3f} vs {base['agree']:.3f}; "
              f"Spearman {best_b:.3f} vs {base['spearman_vps']:.3f}; {'matches' if matches else 'does not match'} "
              f"N = 16; {eq} -> target (match N = 16 with <= 60 %) {'met' if ok else 'NOT met'}")
    # the two readings of "matches N = 16's agreement": the band decision (a) alone, and (a) with (b)
    adaptive = sorted((r for r in results if r["method"].startswith("adaptive")), key=lambda r: r["rollouts"])
    for what, test in (("(a) band agreement alone", lambda r: r["agree"] >= base["agree"]),
                       ("(a) and (b) together", lambda r: r["agree"] >= base["agree"] and max(
                           r["spearman_vps"], r["spearman_vps_post"]) >= base["spearman_vps"])):
        best = next((r for r in adaptive if test(r)), None)
        print(f"cheapest adaptive policy matching N = 16 on {what}: " + (
            f"{best['method']}, {best['rollouts'] / base['rollouts']:.0%} of N = 16's rollouts -> target "
            f"{'met' if best['rollouts'] <= 0.6 * base['rollouts'] else 'NOT met'}" if best else "none"))

    if args.cli:  # the defaults, and the best stratified policy, as whole `curate score` processes
        cli_policies = [POLICIES[0]] + [p for p in POLICIES if p[0] in (STRATIFIED_CLI, BAND_ONLY) and problems.is_file()]
        for label, kw in cli_policies:
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, "-m", "curation.cli", "score", "--rollouts", str(pool_file), "--out", tmp,
                       "--adaptive", "--n-max", str(args.n_ref), "--round", str(args.round), "--prior", kw["prior"],
                       "--delta", str(kw["delta"]), "--vps-precision", str(kw["vps_precision"])]
                if kw.get("by"):
                    cmd += ["--data", str(problems), "--prior-by", args.prior_by]
                if kw.get("precision_prior"):
                    cmd += ["--precision-prior", kw["precision_prior"]]
                print("\n$ " + shlex.join(cmd))
                subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
                st = json.loads((Path(tmp) / "stats.json").read_text())
                want = next(r for r in results if r["method"] == label)["rollouts"]
                got = st["adaptive"]["rollouts"]
                same = "same" if got == want or len(keep) != st["counts"]["problems_scored"] else "DIFFERENT"
                print(f"curate CLI replay spent {got} rollouts on {st['counts']['problems_scored']} problems "
                      f"({same} as the library replay above: {want})")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "stops": stops}, indent=2))


if __name__ == "__main__":
    main()
