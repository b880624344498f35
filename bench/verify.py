"""Benchmark: verification throughput of ``curation.verify`` against a naive serial math-verify loop.

Run: ``.venv/bin/python bench/verify.py [--workers N] [--skip-start-methods]``

1. GSM8K (the target): the 1,319 x 4 real example solutions. Baseline = the loop everyone writes first,
   ``verify(parse(gold), parse(solution))`` for each item in this process (math-verify defaults: its own
   extraction, 5 s signal timeouts). Ours = ``Verifier().verify_batch(golds, solutions)`` from a fresh
   verifier (pool start-up included). Prints items/s of both, the ratio, and the agreement of each with
   the data's ``is_correct`` labels.
2. MATH-Vision (3,952 real graded responses, multiple choice, LaTeX): same comparison.
3. Start methods (fork / forkserver / spawn): time until a fresh pool has answered its first item, time
   to recover from a hard kill (a stuck worker replaced and the next item answered), and the MATH-Vision
   batch time with each.

All numbers are measured in the same run; the ratios are what to read.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
GSM_KEYS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def load_gsm8k():
    from curation.verify import extract_answer

    golds, responses, labels = [], [], []
    for line in (DATA / "gsm8k" / "example_model_solutions.jsonl").open():
        row = json.loads(line)
        gold = extract_answer(row["ground_truth"], rules=["a_line"]).answer
        for key in GSM_KEYS:
            golds.append(gold)
            responses.append(row[key]["solution"])
            labels.append(bool(row[key]["is_correct"]))
    return golds, responses, None, labels


def load_math_vision():
    problems = {r["id"]: r for r in map(json.loads, (DATA / "math_vision" / "testmini.jsonl").open())}
    golds, responses, options, labels = [], [], [], []
    for line in (DATA / "math_vision" / "model_outputs.jsonl").open():
        row = json.loads(line)
        p = problems[row["id"]]
        golds.append(p["answer"])
        responses.append(row["response"])
        options.append(p["options"] or None)
        labels.append(bool(row["correct"]))
    return golds, responses, options, labels


def naive(golds, responses):
    from math_verify import parse, verify

    out = []
    for g, r in zip(golds, responses):
        out.append(bool(verify(parse(g), parse(r))))
    return out


def agreement(pred, labels):
    return sum(p == lab for p, lab in zip(pred, labels)) / len(labels)


def compare(name, loader, workers):
    from curation.verify import Verifier

    golds, responses, options, labels = loader()
    n = len(golds)
    t0 = time.perf_counter()
    base = naive(golds, responses)
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    with Verifier(workers=workers) as v:
        verdicts = v.verify_batch(golds, responses, options=options)
        t_ours = time.perf_counter() - t0
        stats = dict(v.stats)
    ours = [x.correct for x in verdicts]
    print(f"\n== {name}: {n} items")
    print(f"naive serial parse+verify : {t_base:7.2f} s  {n / t_base:8.0f} items/s  "
          f"agreement {agreement(base, labels):.2%}")
    print(f"Verifier.verify_batch     : {t_ours:7.2f} s  {n / t_ours:8.0f} items/s  "
          f"agreement {agreement(ours, labels):.2%}  (fast path {stats['fast_path']}, "
          f"math-verify {stats['math_verify']}, workers started {stats['started']})")
    print(f"speed-up                  : {t_base / t_ours:.1f}x")
    return t_base / t_ours


def start_methods(workers):
    from curation.verify import Verifier

    golds, responses, options, _ = load_math_vision()
    print("\n== start methods (pool of", workers, "workers)")
    print(f"{'method':<11}{'first item':>12}{'kill+recover':>14}{'MATH-Vision batch':>19}")
    for method in ("fork", "forkserver", "spawn"):
        with Verifier(workers=workers, start_method=method) as v:
            t0 = time.perf_counter()
            v.verify_batch(["x^2"], ["\\boxed{x \\cdot x}"])
            t_first = time.perf_counter() - t0
            t0 = time.perf_counter()
            v.verify_batch(golds, responses, options=options)
            t_batch = time.perf_counter() - t0
        with Verifier(workers=1, start_method=method, soft_deadline=False, grace=0.2) as v:
            v.verify_batch(["x^2"], ["\\boxed{x \\cdot x}"])  # worker up before the clock starts
            t0 = time.perf_counter()
            # 10^(10^8) is stuck in C: the 0.5 s item deadline + 0.2 s grace, then kill, restart, next item
            out = v.verify_batch(["1", "y+1"], ["\\boxed{10^{10^{8}}}", "\\boxed{1+y}"], timeout=0.5)
            t_kill = time.perf_counter() - t0 - 0.7
            assert [x.status for x in out] == ["timeout", "correct"], out
        print(f"{method:<11}{t_first:>11.2f}s{t_kill:>13.2f}s{t_batch:>18.2f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--skip-start-methods", action="store_true")
    args = ap.parse_args()
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"CPUs available: {cpus}; workers: {args.workers or 'default'}")
    ratio = compare("GSM8K example solutions", load_gsm8k, args.workers)
    compare("MATH-Vision model outputs", load_math_vision, args.workers)
    if not args.skip_start_methods:
        start_methods(args.workers or 2)
    print(f"\nGSM8K throughput ratio (target >= 4x): {ratio:.1f}x")


if __name__ == "__main__":
    main()
