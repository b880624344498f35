"""Scaling of the Ray executor of ``curate score`` from 1 to 2 workers on this machine.

    .venv/bin/python bench/ray_scaling.py [--problems 24] [--n 4] [--max-tokens 48] [--hidden 256]

Scores the same GSM8K problems with the ``hf`` engine on a random Qwen2 (built here, no download) three
times in one process and one local Ray cluster (``num_cpus`` = the machine's cores):

- ``local``: the local executor (one engine in this process) - the baseline, with ``--local-threads`` torch
  threads (default 1, the same as one Ray worker gets: Ray sets ``OMP_NUM_THREADS`` to the actor's CPUs; on a
  loaded machine a multi-threaded torch oversubscribes the cores and is much slower, see ``--local-threads 0``);
- ``ray x1``: the Ray executor with 1 engine actor (1 CPU reserved -> Ray sets 1 torch thread);
- ``ray x2``: the Ray executor with 2 engine actors (1 CPU each).

Printed: wall time of each ``run_score_job`` (engine start-up included), summed per-chunk generation time,
prompts/s, the ratio ``ray x1 wall / ray x2 wall`` (the speed-up from the second worker; ideal 2.0) and each
Ray run against the local baseline.  The rollouts of all three runs are checked to be identical.  On a
2-core machine shared with other work expect well under 2x: both actors compete with the driver, Ray's own
processes and everything else on the box.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from data_rows import gsm8k_rows as gsm8k_problems  # noqa: E402  (the tests' problem rows: real GSM8K)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=48)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--chunk-size", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256, help="Qwen2 hidden size (heads of 64)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="num_cpus of the local Ray cluster")
    ap.add_argument("--local-threads", type=int, default=1, help="torch threads of the local run (0: torch default)")
    args = ap.parse_args()

    import ray

    from curation.core import schema as S
    from curation.core.models import build_tiny_qwen2
    from curation.score.job import run_score_job

    tmp = Path(tempfile.mkdtemp(prefix="ray_scaling_"))
    model = build_tiny_qwen2(tmp / "model", hidden=args.hidden, heads=max(1, args.hidden // 64),
                             layers=args.layers)
    data = tmp / "problems.parquet"
    pq.write_table(pa.Table.from_pylist(gsm8k_problems(args.problems), schema=S.PROBLEMS), data)
    gen = {"model": str(model), "engine": "hf", "n": args.n, "max_tokens": args.max_tokens, "temperature": 1.0,
           "seed": 0, "chunk_size": args.chunk_size, "prompt_template": "plain",
           "engine_options": {"batch_size": args.chunk_size * args.n}}
    print(f"{args.problems} GSM8K problems x {args.n} samples x <= {args.max_tokens} tokens, chunks of "
          f"{args.chunk_size}; Qwen2 hidden {args.hidden}, {args.layers} layers; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")

    results = {}

    def timed(label: str, label_extra: str = "", **kw) -> None:
        t0 = time.perf_counter()
        r = run_score_job(data, tmp / label.replace(" ", "_"), **gen, **kw)
        wall = time.perf_counter() - t0
        tm = r.stats["timing"]
        results[label] = {"wall": wall, "gen": tm["generation_s"], "rollouts": r.rollouts}
        print(f"  {label:7s} wall {wall:7.1f}s  engine start (sum over workers) {tm['engine_load_s']:6.1f}s  "
              f"generation (sum over chunks) {tm['generation_s']:7.1f}s  {args.problems / wall:6.2f} prompts/s "
              f"{label_extra}", flush=True)

    import torch

    default_threads = torch.get_num_threads()
    if args.local_threads:
        torch.set_num_threads(args.local_threads)
    timed("local", label_extra=f"(torch threads {torch.get_num_threads()})")
    torch.set_num_threads(default_threads)
    ray.init(num_cpus=args.cpus, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    try:
        timed("ray x1", executor="ray", num_workers=1)
        timed("ray x2", executor="ray", num_workers=2)
    finally:
        ray.shutdown()

    same = all(results[k]["rollouts"].equals(results["local"]["rollouts"]) for k in ("ray x1", "ray x2"))
    r1, r2, loc = results["ray x1"]["wall"], results["ray x2"]["wall"], results["local"]["wall"]
    print(f"speed-up from the 2nd Ray worker (ray x1 wall / ray x2 wall): {r1 / r2:.2f}x (ideal 2.00x)")
    print(f"ray x1 vs local: {loc / r1:.2f}x   ray x2 vs local: {loc / r2:.2f}x   (> 1 = faster than local)")
    print(f"rollouts identical across local / ray x1 / ray x2: {same}")


if __name__ == "__main__":
    main()
