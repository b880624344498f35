"""Rollout-engine throughput: vLLM vs the transformers ``generate`` engine on the same model and prompts.

Both engines run in one process (vLLM through its worker subprocess when it lives in ``.venv-vllm``) on the
SAME model (real SmolLM2-135M-Instruct, converted by ``curation.core.models.ensure_smollm2``), the SAME prompts
(the first ``--prompts`` GSM8K test questions from ../shared/data, chat template applied by each engine),
and the SAME ``SamplingConfig`` (``--n`` samples, temperature 0.7, top_p 0.95, ``--max-tokens``, seed 0).

Metric: generated tokens per second = sum of ``Completion.num_tokens`` over all samples / wall seconds of
``engine.generate`` (engine start-up excluded and reported separately).  Ratio = vLLM tok/s / HF tok/s.

HF baseline at its best here: unless ``--hf-threads`` is given, a short calibration (8 prompts, 16 tokens)
picks the faster of 1 and all torch threads (on a busy shared CPU, oversubscribed threads are much slower).
vLLM on CPU runs in bfloat16 (its CPU default).  The HF engine runs once per ``--hf-dtypes`` entry
(default ``float32,bfloat16``): float32 is the HF engine's CPU default and the baseline of the target;
bfloat16 (fast on CPUs with AVX512-BF16/AMX) is reported as well, for a same-precision comparison.

Usage: ``python bench/engines.py [--prompts 32] [--n 4] [--max-tokens 96] [--vllm-python .venv-vllm/bin/python]
[--vllm-compile] [--hf-dtypes float32,bfloat16]`` (target: vLLM >= 5x HF).  On CPU the vLLM engine runs eager by
default (start-up ~30-100 s); ``--vllm-compile`` uses vLLM's torch.compile path (start-up ~3 min here, faster
decoding).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = ROOT.parent / "shared" / "data"


def load_prompts(k: int) -> list[str]:
    rows = [json.loads(line) for line in (DATA / "gsm8k" / "test.jsonl").open()][:k]
    return [r["question"] + "\nPut the final answer after '####'." for r in rows]


def run(engine, requests, params) -> dict:
    t0 = time.perf_counter()
    out = engine.generate(requests, params)
    dt = time.perf_counter() - t0
    tokens = sum(c.num_tokens for row in out for c in row)
    finished = sum(c.finish_reason == "stop" for row in out for c in row)
    return {"seconds": dt, "tokens": tokens, "tok_per_s": tokens / dt, "sequences": sum(len(r) for r in out),
            "stopped": finished}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint dir (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--vllm-python", default=os.environ.get("RLCURATE_VLLM_PYTHON"))
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    ap.add_argument("--vllm-compile", action="store_true",
                    help="let vLLM torch.compile the model (slower start-up, faster decoding); default eager on CPU")
    ap.add_argument("--hf-batch-size", type=int, default=64)
    ap.add_argument("--hf-threads", type=int, default=None)
    ap.add_argument("--hf-dtypes", default="float32,bfloat16", help="comma-separated; first is the baseline")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    import torch

    from curation.core.models import ensure_smollm2
    from curation.engines import GenRequest, SamplingConfig
    from curation.engines.hf import HFEngine
    from curation.engines.vllm import VLLMEngine, find_vllm_python, vllm_importable

    model = Path(args.model) if args.model else ensure_smollm2()
    prompts = load_prompts(args.prompts)
    requests = [GenRequest([{"role": "user", "content": p}]) for p in prompts]
    params = SamplingConfig(n=args.n, temperature=0.7, top_p=0.95, max_tokens=args.max_tokens, seed=0)
    vllm_python = args.vllm_python or (None if vllm_importable() else find_vllm_python())
    print(f"model {model}\n{len(requests)} GSM8K prompts x n={args.n}, max_tokens={args.max_tokens}, "
          f"T=0.7 top_p=0.95; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")

    results: dict = {"config": vars(args) | {"model": str(model)}}

    t0 = time.perf_counter()
    vllm = VLLMEngine(model, vllm_python=vllm_python, gpu_memory_utilization=args.gpu_memory_utilization,
                      max_model_len=2048, enforce_eager=False if args.vllm_compile else None)
    results["vllm_startup_s"] = time.perf_counter() - t0
    print(f"vLLM ({vllm.mode}) start-up {results['vllm_startup_s']:.1f} s", flush=True)
    try:
        results["vllm"] = run(vllm, requests, params)
    finally:
        vllm.close()
    print(f"vLLM  {results['vllm']}", flush=True)

    dtypes = [d.strip() for d in args.hf_dtypes.split(",") if d.strip()]
    threads = args.hf_threads
    for dtype in dtypes:
        key = f"hf_{dtype}"
        t0 = time.perf_counter()
        hf = HFEngine(model, batch_size=args.hf_batch_size, dtype=dtype)
        results[f"{key}_startup_s"] = time.perf_counter() - t0
        if threads is None:
            calib = SamplingConfig(n=1, temperature=0.7, max_tokens=16, seed=0)
            timings = {}
            for th in sorted({1, torch.get_num_threads()}):
                hf.num_threads = th
                timings[th] = run(hf, requests[:8], calib)["tok_per_s"]
            threads = max(timings, key=timings.get)
            results["hf_thread_calibration_tok_per_s"] = timings
            print(f"HF thread calibration ({dtype}, tok/s): {timings} -> {threads}", flush=True)
        hf.num_threads = threads
        results["hf_threads"] = threads
        results[key] = run(hf, requests, params)
        print(f"HF {dtype}  {results[key]}", flush=True)
        del hf

    print()
    print(f"{'engine':14} {'tokens':>8} {'seconds':>9} {'tok/s':>8} {'vLLM/this':>10}")
    for key in ["vllm"] + [f"hf_{d}" for d in dtypes]:
        r = results[key]
        ratio = results["vllm"]["tok_per_s"] / r["tok_per_s"]
        results[f"ratio_vllm_over_{key}"] = ratio
        print(f"{key:14} {r['tokens']:>8} {r['seconds']:>9.1f} {r['tok_per_s']:>8.1f} {ratio:>9.1f}x")
    base = results[f"ratio_vllm_over_hf_{dtypes[0]}"]
    print(f"ratio vLLM / HF ({dtypes[0]}, the HF engine's CPU default) generated tokens/s: {base:.1f}x "
          f"(target >= 5x) -> {'OK' if base >= 5 else 'BELOW'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
