"""Engine options shared by ``curate score`` and ``curate cot``: ``--engine-opt KEY=VALUE`` and the options
that have a flag of their own (``--data-parallel-size``)."""

from __future__ import annotations

import json

from curation.core.console import fail

DATA_PARALLEL_HELP = (
    "vLLM model replicas (worker processes of tensor_parallel_size GPUs each, started together); each replica "
    "runs whole chunks from a shared queue. Local executor (with --executor ray: --num-workers)."
)
MAX_RETRIES_HELP = "Ray executor: retries of a chunk whose worker died; then its problems are excluded (worker_failed)."
CHUNK_TIMEOUT_HELP = ("Ray executor: seconds after which a chunk still running counts as a hung worker (killed; the "
                      "chunk retried like a dead worker's). Default: wait forever.")


def parse_engine_options(items: list[str] | None, data_parallel_size: int | None = None) -> dict:
    """``["batch_size=16", "dtype=bfloat16"]`` -> ``{"batch_size": 16, "dtype": "bfloat16"}`` (values parsed
    as JSON when they are JSON: numbers, booleans, null, objects; else kept as strings), plus
    ``data_parallel_size`` when given (an ``--engine-opt data_parallel_size=...`` that disagrees is refused)."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            fail(f"--engine-opt expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    if data_parallel_size is not None:
        if data_parallel_size < 1:
            fail(f"--data-parallel-size must be >= 1, got {data_parallel_size}")
        if out.get("data_parallel_size", data_parallel_size) != data_parallel_size:
            fail(f"--data-parallel-size {data_parallel_size} disagrees with --engine-opt "
                 f"data_parallel_size={out['data_parallel_size']}")
        if data_parallel_size > 1 or "data_parallel_size" in out:
            out["data_parallel_size"] = data_parallel_size
    return out
