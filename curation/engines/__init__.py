"""Rollout engines: sample ``n`` completions per chat prompt with transformers (``hf``) or vLLM (``vllm``).

``make_engine(kind, model, **opts)`` is the entry point; engines are imported lazily so that importing this
package costs nothing (and works in the vLLM-only environment).
"""

from __future__ import annotations

import os
from typing import Any

from curation.engines.base import (
    Completion,
    GenRequest,
    ProgressCallback,
    RolloutEngine,
    SamplingConfig,
    request_seed,
)

__all__ = [
    "Completion",
    "GenRequest",
    "ProgressCallback",
    "RolloutEngine",
    "SamplingConfig",
    "make_engine",
    "request_seed",
    "resolve_engine_kind",
]

ENGINE_KINDS = ("auto", "vllm", "hf")


def resolve_engine_kind(kind: str, vllm_python: str | None = None) -> str:
    """``"auto"`` -> ``"vllm"`` when vLLM is importable here, or a vLLM interpreter is configured
    (``vllm_python`` / ``$RLCURATE_VLLM_PYTHON``); otherwise ``"hf"``.  Other kinds pass through."""
    if kind not in ENGINE_KINDS:
        raise ValueError(f"unknown engine kind {kind!r}; choose one of {', '.join(ENGINE_KINDS)}")
    if kind != "auto":
        return kind
    from curation.engines.vllm import vllm_importable

    if vllm_importable() or vllm_python or os.environ.get("RLCURATE_VLLM_PYTHON"):
        return "vllm"
    return "hf"


def make_engine(kind: str, model: Any, **opts: Any) -> RolloutEngine:
    """Build a rollout engine.

    ``kind``: ``"hf"`` (:class:`~curation.engines.hf.HFEngine`), ``"vllm"``
    (:class:`~curation.engines.vllm.VLLMEngine`) or ``"auto"`` (see :func:`resolve_engine_kind`).  Options
    that belong to the other engine are dropped, so callers can pass one option set (e.g. ``batch_size``
    and ``gpu_memory_utilization``) whatever the kind resolves to - except ``data_parallel_size > 1``, which
    the ``hf`` engine refuses rather than silently running one replica.  ``model`` is a checkpoint folder or
    a hub id (:func:`curation.core.models.resolve_model`).
    """
    import inspect

    kind = resolve_engine_kind(kind, opts.get("vllm_python"))
    if kind == "hf":
        from curation.engines.hf import HFEngine as cls
        from curation.engines.vllm import VLLMEngine as other
    else:
        from curation.engines.hf import HFEngine as other
        from curation.engines.vllm import VLLMEngine as cls
    def public(c: type) -> set[str]:
        return {p for p in inspect.signature(c.__init__).parameters if p not in ("self", "model") and p[0] != "_"}

    mine, theirs = public(cls), public(other)
    unknown = set(opts) - mine - theirs
    if unknown:
        raise TypeError(f"unknown engine option(s): {', '.join(sorted(unknown))}")
    if kind == "hf" and int(opts.get("data_parallel_size") or 1) > 1:
        raise ValueError(f"data_parallel_size={opts['data_parallel_size']} needs the vllm engine (the hf engine is "
                         "one model in this process); use --engine vllm, or --executor ray --num-workers K")
    return cls(model, **{k: v for k, v in opts.items() if k in mine})
