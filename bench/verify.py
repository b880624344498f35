"""Benchmark: ``curate verify`` against math-verify, all as whole processes (what a user runs).

Run: ``.venv/bin/python bench/verify.py [--repeats 3] [--only gsm8k,long_cot,math_vision] [--start-methods]``

Inputs (JSONL files with ``answer``, ``response``, ``options``, ``label``, written to a temporary folder):

1. ``gsm8k``: the 1,319 x 4 real example solutions of GSM8K (short answers; gold = the ``A:`` line of the
   reference), labels = the data's ``is_correct``.
2. ``long_cot``: 800 long chains of thought (about 4 KB each) built from the 272 real MATH-style problems of
   ``benchmarks/minerva_math.jsonl`` (the data has no long model outputs): ``<think>`` + about 3 KB of other
   problems' real LaTeX solutions (their boxes unwrapped) + ``</think>`` + the problem's own reference
   solution ending in its ``\\boxed{}`` answer. Per problem: the solution as it is (label correct), a copy
   whose final box holds a wrong answer of the same form (the gold's last digit changed: ``1.6`` -> ``1.7``,
   ``\\frac{2}{5} g`` -> ``\\frac{2}{6} g``) and a copy boxing another problem's answer (labels: incorrect
   unless the answers are equal as strings).
   Gold answers: numbers, scientific notation, expressions, equations - MATH's mix.
3. ``math_vision``: the 3,952 real graded VLM responses of MATH-Vision testmini (multiple choice, LaTeX).

Per input, each timed as a whole process (interpreter start, imports, reading the file, verifying,
writing results; the median of ``--repeats`` runs):

- (a) ``serial``: the loop everyone writes first, ``verify(parse("\\\\boxed{" + gold + "}"), parse(response))``
  for each row (math-verify defaults: its own extraction and 5 s signal timeouts);
- (b) ``pool2``: the same function mapped by a careful user's ``multiprocessing.Pool(2)``;
- (c) ``curate``: ``curate verify IN.jsonl --out OUT.parquet`` (default workers).

Prints wall seconds and CPU seconds (the process and its waited-for descendants: a loaded machine inflates
wall time far more than CPU time), items/s, the ratios (a)/(c) and (b)/(c), each one's agreement with the labels, and
for reference ``Verifier().verify_batch`` in this process (fresh pool). The fixed overhead of the command
is ``curate verify`` on a one-row file (settled by the fast path: no worker starts) minus a bare
``python -c pass``. The machine's load average is printed before and after: on a shared machine the
ratios measured in the same run are what to read.

``--start-methods`` adds the pool's start methods (fork / forkserver / spawn): time to a fresh pool's
first answer, time to recover from a hard kill, and the long-CoT batch with each.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
GSM_KEYS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")

# the baselines, as scripts: python SCRIPT IN.jsonl OUT.json
BASELINE = r'''
import json, logging, sys
logging.disable(logging.CRITICAL)
from math_verify import parse, verify

def check(item):
    gold, response = item
    try:
        return bool(verify(parse("\\boxed{" + gold + "}"), parse(response)))
    except BaseException:
        return False

if __name__ == "__main__":
    items = [(r["answer"], r["response"]) for r in map(json.loads, open(sys.argv[1], encoding="utf-8"))]
    if POOL:
        import multiprocessing
        with multiprocessing.Pool(2) as pool:
            out = pool.map(check, items)
    else:
        out = [check(x) for x in items]
    json.dump(out, open(sys.argv[2], "w"))
'''


# --- inputs ---------------------------------------------------------------------------------------------------


def load_gsm8k() -> list[dict]:
    from curation.verify import extract_answer

    rows = []
    for line in (DATA / "gsm8k" / "example_model_solutions.jsonl").open():
        d = json.loads(line)
        gold = extract_answer(d["ground_truth"], rules=["a_line"]).answer
        for key in GSM_KEYS:
            rows.append({"answer": gold, "response": d[key]["solution"], "options": None,
                         "label": bool(d[key]["is_correct"])})
    return rows


def load_math_vision() -> list[dict]:
    problems = {r["id"]: r for r in map(json.loads, (DATA / "math_vision" / "testmini.jsonl").open())}
    rows = []
    for line in (DATA / "math_vision" / "model_outputs.jsonl").open():
        d = json.loads(line)
        p = problems[d["id"]]
        rows.append({"answer": p["answer"], "response": d["response"], "options": p["options"] or None,
                     "label": bool(d["correct"])})
    return rows


def load_long_cot(n: int = 800, filler_chars: int = 3000) -> list[dict]:
    from curation.verify import last_boxed

    sols = [json.loads(line)["solution"] for line in (DATA / "benchmarks" / "minerva_math.jsonl").open()]
    sols = [s for s in sols if last_boxed(s)]
    golds = [last_boxed(s) for s in sols]
    unboxed = [re.sub(r"\\boxed\{([^{}]*)\}", r"\1", s) for s in sols]
    rows = []
    for k in range(n):
        p, variant = k % len(sols), k // len(sols)
        parts, size, j = [], 0, p + 1
        while size < filler_chars:
            parts.append(unboxed[j % len(sols)])
            size += len(parts[-1])
            j += 1
        final, gold = sols[p], golds[p]
        label = True
        box = "\\boxed{" + gold + "}"
        if variant and box in final:
            digits = [m.start() for m in re.finditer(r"\d", gold)]
            if variant == 1 and digits:  # a wrong answer of the same form: its last digit changed
                j = digits[-1]
                other = gold[:j] + str((int(gold[j]) + 1) % 10) + gold[j + 1 :]
            else:  # another problem's answer
                other = golds[(p + 17 * variant) % len(sols)]
            i = final.rindex(box)
            final = final[:i] + "\\boxed{" + other + "}" + final[i + len(box) :]
            label = other.replace(" ", "") == gold.replace(" ", "")
        text = "<think>\n" + "\n\n".join(parts) + "\n</think>\n\n" + final
        rows.append({"answer": gold, "response": text, "options": None, "label": label})
    return rows


LOADERS = {"gsm8k": load_gsm8k, "long_cot": load_long_cot, "math_vision": load_math_vision}


# --- runs -------------------------------------------------------------------------------------------------------


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and CPU seconds (the process and every descendant it waited for) of one run."""
    c0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0, _children_cpu() - c0


def median_time(cmd: list[str], env: dict, repeats: int) -> tuple[float, float]:
    """Median wall and median CPU seconds over ``repeats`` runs."""
    runs = [timed(cmd, env) for _ in range(repeats)]
    return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)


def agreement(pred: list[bool], labels: list[bool]) -> float:
    return sum(p == lab for p, lab in zip(pred, labels)) / len(labels)


def bench_input(name: str, rows: list[dict], tmp: Path, env: dict, repeats: int, scripts: dict) -> dict:
    import pyarrow.parquet as pq

    from curation.verify import Verifier

    src = tmp / f"{name}.jsonl"
    with src.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    labels = [r["label"] for r in rows]
    n = len(rows)
    res: dict[str, tuple[float, float, float]] = {}  # wall, cpu, agreement
    for base in ("serial", "pool2"):
        out = tmp / f"{name}.{base}.json"
        t, c = median_time([sys.executable, str(scripts[base]), str(src), str(out)], env, repeats)
        res[base] = (t, c, agreement(json.loads(out.read_text()), labels))
    out = tmp / f"{name}.curate.parquet"
    t, c = median_time([sys.executable, "-m", "curation.cli", "verify", str(src), "--out", str(out)], env, repeats)
    res["curate"] = (t, c, agreement(pq.read_table(out, columns=["correct"]).column("correct").to_pylist(), labels))
    c0, p0, t0 = _children_cpu(), time.process_time(), time.perf_counter()
    with Verifier() as v:
        verdicts = v.verify_batch([r["answer"] for r in rows], [r["response"] for r in rows],
                                  options=[r["options"] for r in rows])
        stats = dict(v.stats)
    wall = time.perf_counter() - t0
    res["in_process"] = (wall, time.process_time() - p0 + _children_cpu() - c0,
                         agreement([x.correct for x in verdicts], labels))

    chars = sum(len(r["response"]) for r in rows) / n
    print(f"\n== {name}: {n} items, {chars:,.0f} characters per response on average")
    what = {"serial": "(a) serial math-verify loop", "pool2": "(b) multiprocessing.Pool(2)",
            "curate": "(c) curate verify (process)", "in_process": "    Verifier.verify_batch (in-process)"}
    for key, label in what.items():
        t, c, agree = res[key]
        print(f"{label:<38}: {t:7.2f} s wall {c:7.2f} s CPU  {n / t:7.0f} items/s  agreement {agree:.2%}")
    print(f"    in-process decisions: fast path {stats['fast_path']}, math-verify {stats['math_verify']}, "
          f"workers started {stats['started']}")
    ratios = {"serial": res["serial"][0] / res["curate"][0], "pool2": res["pool2"][0] / res["curate"][0]}
    print(f"speed-up of (c): {ratios['serial']:.1f}x vs (a) serial, {ratios['pool2']:.1f}x vs (b) Pool(2); "
          f"process / in-process time {res['curate'][0] / res['in_process'][0]:.2f}")
    return ratios


def cli_overhead(tmp: Path, env: dict, repeats: int) -> float:
    tiny = tmp / "tiny.jsonl"
    tiny.write_text(json.dumps({"answer": "42", "response": "so \\boxed{42}"}) + "\n")
    bare, bare_cpu = median_time([sys.executable, "-c", "pass"], env, max(repeats, 5))
    one, one_cpu = median_time([sys.executable, "-m", "curation.cli", "verify", str(tiny), "--out",
                                str(tmp / "tiny.parquet")], env, max(repeats, 5))
    print(f"\n== fixed CLI overhead: curate verify on a 1-row file {one:.2f} s wall / {one_cpu:.2f} s CPU, bare "
          f"interpreter {bare:.2f} s / {bare_cpu:.2f} s -> {one - bare:.2f} s wall, {one_cpu - bare_cpu:.2f} s CPU "
          "(target < 0.5 s)")
    return one - bare


def start_methods(rows: list[dict], workers: int) -> None:
    from curation.verify import Verifier

    golds, responses = [r["answer"] for r in rows], [r["response"] for r in rows]
    print(f"\n== start methods (pool of {workers} workers)")
    print(f"{'method':<11}{'first item':>12}{'kill+recover':>14}{'long-CoT batch':>16}")
    for method in ("fork", "forkserver", "spawn"):
        with Verifier(workers=workers, start_method=method) as v:
            t0 = time.perf_counter()
            v.verify_batch(["x^2"], ["\\boxed{x \\cdot x}"])
            t_first = time.perf_counter() - t0
            t0 = time.perf_counter()
            v.verify_batch(golds, responses)
            t_batch = time.perf_counter() - t0
        with Verifier(workers=1, start_method=method, soft_deadline=False, grace=0.2) as v:
            v.verify_batch(["x^2"], ["\\boxed{x \\cdot x}"])  # worker up before the clock starts
            t0 = time.perf_counter()
            # 10^(10^8) is stuck in C: the 0.5 s item deadline + 0.2 s grace, then kill, restart, next item
            out = v.verify_batch(["1", "y+1"], ["\\boxed{10^{10^{8}}}", "\\boxed{1+y}"], timeout=0.5)
            t_kill = time.perf_counter() - t0 - 0.7
            assert [x.status for x in out] == ["timeout", "correct"], out
        print(f"{method:<11}{t_first:>11.2f}s{t_kill:>13.2f}s{t_batch:>15.2f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="whole-process runs per measurement (median)")
    ap.add_argument("--only", default=",".join(LOADERS), help="comma-separated inputs to run")
    ap.add_argument("--start-methods", action="store_true")
    args = ap.parse_args()
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), HF_HUB_OFFLINE="1")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"CPUs available: {cpus}; load average {os.getloadavg()[0]:.1f} (1 min); median of {args.repeats} runs")
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        scripts = {}
        for name, pool in (("serial", False), ("pool2", True)):
            scripts[name] = tmp / f"baseline_{name}.py"
            scripts[name].write_text(BASELINE.replace("if POOL:", f"if {pool}:"))
        overhead = cli_overhead(tmp, env, args.repeats)
        for name in args.only.split(","):
            ratios[name] = bench_input(name, LOADERS[name](), tmp, env, args.repeats, scripts)
    if args.start_methods:
        start_methods(load_long_cot(), 2)
    print(f"\nload average {os.getloadavg()[0]:.1f} (1 min) at the end")
    print("targets: >= 4x the serial loop and >= 2x Pool(2) on gsm8k and long_cot; fixed CLI overhead < 0.5 s")
    for name, r in ratios.items():
        print(f"  {name:<12} {r['serial']:5.1f}x serial  {r['pool2']:5.1f}x Pool(2)")
    print(f"  CLI overhead {overhead:.2f} s")


if __name__ == "__main__":
    main()
