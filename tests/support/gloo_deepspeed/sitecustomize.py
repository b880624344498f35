"""Test support: let a DeepSpeed launch span several CPU processes (gloo).

accelerate 1.15 gives a DeepSpeed launch without CUDA no process-group backend (``PartialState._prepare_backend``
returns None, state.py), so every rank would think it runs alone.  On a GPU machine the backend is NCCL; here it
is gloo - the only thing this changes.  Everything else - accelerate's DeepSpeed plugin, transformers' DeepSpeed
config handling, ``deepspeed.initialize``, ZeRO partitioning - is the stock code.  Active only when
``RLCURATE_TEST_GLOO_DEEPSPEED=1`` and the process is a launched rank (``LOCAL_RANK`` set); put this folder on
``PYTHONPATH`` (every process of the run, stage processes included, inherits it)."""

import os

if os.environ.get("RLCURATE_TEST_GLOO_DEEPSPEED") == "1":
    try:
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType
    except ImportError:  # pragma: no cover - accelerate missing: nothing to patch
        PartialState = None
    if PartialState is not None:
        _prepare_backend = PartialState._prepare_backend

        def _gloo_backend(self, cpu=False, sagemaker_dp=False, backend=None):
            found, dist_type = _prepare_backend(self, cpu, sagemaker_dp, backend)
            if found is None and int(os.environ.get("LOCAL_RANK", -1)) != -1:
                return "gloo", DistributedType.MULTI_CPU
            return found, dist_type

        PartialState._prepare_backend = _gloo_backend
