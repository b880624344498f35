"""Where the generation chunks of ``curate score`` / ``curate cot`` run: in this process, or on a Ray cluster.

Both jobs cut their (validated, sharded) problems into deterministic chunks and keep one atomically written
Parquet part per finished chunk in a :class:`curation.core.io.ChunkStore`.  The *chunk body* is the same
everywhere and lives here (:func:`process_chunk`): build each prompt (a bad row goes to the chunk's exclusion
table), generate ``n`` completions per prompt with the per-prompt seed ``prompt_seed(seed, problem_id)``
(:func:`curation.generation.jobs.prompt_seed`), isolate failing prompts one by one (``generation_error``; many
failing in a row stop the job: the engine is broken), verify every completion (:func:`curation.verify.verify_batch`)
and return rollout rows (schema ``rollouts``) plus the chunk's exclusions.

Executors (:func:`make_executor`):

``local`` (:class:`LocalExecutor`)
    one engine in this process, the pending chunks one after another.

``ray`` (:class:`RayExecutor`)
    the same chunks as a Ray Data pipeline::

        from_arrow(one block per pending chunk)            # rows: _chunk, _pos, _row (the validated problem)
          -> map_batches(_ChunkWorker, batch_size=None,    # one whole chunk per call, as the local executor
                         compute=ActorPoolStrategy(size=num_workers), num_gpus=gpus_per_worker)
               # each actor builds its engine once (one engine per GPU / worker), then runs process_chunk:
               # generation + verification on the worker
          -> iter_rows() on the driver                     # one row per finished chunk (Arrow IPC bytes)
          -> ChunkStore.put(chunk_id, ...) on the driver   # the SAME store, parts and chunk ids as local

    The problems are read and validated on the driver by the job exactly as for the local executor (the
    duplicate-id / exclusion pass needs the whole input), so exclusions, chunk ids, resume (finished chunks
    are skipped: only pending chunks enter the pipeline) and outputs are identical; only the pending
    chunks are shipped to the cluster (object store).  ``map_batches(..., concurrency=k)`` is deprecated in
    Ray 2.60; ``compute=ActorPoolStrategy(size=k)`` is the same fixed pool of ``k`` actors.  Because every
    call holds exactly one chunk and every prompt has its own seed, a chunk's rollouts equal the local
    executor's (same engine, same ``batch_size``; up to floating-point effects of a different thread count).

    **Ray Data LLM** (``ray.data.llm``, vLLM batch inference) is used instead of plain actors only when
    all of these hold: the engine is ``vllm``, ``gpus_per_worker > 0``, ``ray.data.llm`` and ``vllm`` import
    on the driver, and no pending problem has images (``use_ray_llm="auto"``; ``True`` insists, ``False``
    never).  Each prompt is expanded to ``n`` single-sample rows with seed ``prompt_seed + j`` (vLLM itself
    seeds sample ``j`` of an ``n``-sample request with ``seed + j``, so the samples match the in-process
    vLLM engine's up to batching effects), the processor's chat-template / tokenize / vLLM / detokenize
    stages run on the cluster, verification runs in a following ``map_batches``, and the driver reassembles
    each chunk (:func:`assemble_llm_chunk`) and writes it through the same store.  ``finish_reason`` is
    inferred there (``length`` when ``num_generated_tokens >= max_tokens``) because Ray's vLLM stage does
    not return vLLM's own.  The ``hf`` engine, vision-language problems and CPU clusters always use the
    plain actors.

Sessions (``executor.session()``): adaptive scoring runs one job per round, each round's chunks decided from
the rollouts of the rounds before; a :class:`LocalSession` keeps one engine across the rounds, a
:class:`RaySession` one pool of plain engine actors (``ray.util.ActorPool``; one engine per worker/GPU, built
once).  Chunks, parts and resume are the same as above.

Sharding (``--shard I/K``) is unchanged and independent: a Slurm array runs one job per shard, each of which
may itself use either executor.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import pyarrow as pa

from curation.core import schema as S
from curation.core.io import ExclusionWriter
from curation.core.prompts import PromptError, PromptTemplate, build_prompt

__all__ = [
    "EXECUTORS",
    "GenJobSpec",
    "ChunkOutput",
    "RunInfo",
    "process_chunk",
    "build_engine",
    "LocalExecutor",
    "LocalSession",
    "RayExecutor",
    "RaySession",
    "make_executor",
    "llm_request_rows",
    "assemble_llm_chunk",
]

EXECUTORS = ("local", "ray")
# A prompt failing on its own is a bad row (``generation_error``); a whole chunk of >= 2 prompts failing, or
# this many prompts failing in a row, stops the job (the engine is broken).
MAX_FAILED_PROMPTS_IN_A_ROW = 8
OnChunk = Callable[[int, "ChunkOutput"], None]


@dataclass(frozen=True)
class GenJobSpec:
    """Everything a worker needs to turn a chunk of problems into verified rollouts (picklable).

    ``step``: the exclusion table's ``step`` (``score`` / ``cot``); ``model_label``: the ``rollouts.model``
    value; ``n``: completions per prompt; ``seed``: the job's base seed (per prompt:
    ``prompt_seed(seed, problem_id)``); ``sample_offset``: the index of the first sample (rollouts get
    ``sample = sample_offset + j``)."""

    step: str
    model: str
    model_label: str
    engine: str
    template: PromptTemplate
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    verify_timeout: float = 5.0
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    # first sample index of this job's completions: prompt i gets samples [sample_offset, sample_offset + n)
    # seeded as those samples of a one-shot run (adaptive scoring's rounds; GenRequest.sample_offset)
    sample_offset: int = 0

    def sampling(self) -> Any:
        from curation.engines.base import SamplingConfig

        return SamplingConfig(n=self.n, temperature=self.temperature, top_p=self.top_p,
                              max_tokens=self.max_tokens, seed=self.seed)


@dataclass
class ChunkOutput:
    """One finished chunk: ``rollouts`` (schema ``rollouts``), ``excluded`` (schema ``excluded``), seconds
    spent generating and verifying, prompts that reached the engine, and the worker's failure streak."""

    rollouts: pa.Table
    excluded: pa.Table
    generation_s: float
    verification_s: float
    prompts: int
    fail_streak: int = 0
    worker: str = ""


@dataclass
class RunInfo:
    """What an executor reports back: engine load time (summed over workers), the engine's name, the
    chunks it computed, and executor details for ``stats.json``."""

    engine_load_s: float = 0.0
    engine_name: str | None = None
    chunks_done: int = 0
    details: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ the chunk body


def build_engine(spec: GenJobSpec) -> Any:
    from curation.engines import make_engine

    return make_engine(spec.engine, spec.model, **dict(spec.engine_options or {}))


def _generate(engine: Any, reqs: Sequence[Any], seeds: Sequence[int], params: Any) -> list[list[Any]]:
    """One ``generate`` call for the requests, each with its own seed (``GenRequest.seed``)."""
    return engine.generate([dataclasses.replace(r, seed=s) for r, s in zip(reqs, seeds)], params)


def process_chunk(engine: Any, spec: GenJobSpec, rows: Sequence[dict], fail_streak: int = 0) -> ChunkOutput:
    """Prompts -> ``n`` completions each -> verdicts, for one chunk (see the module docstring).

    ``rows``: validated problem rows (with ``id``, ``answer`` and ``_locator``).  Raises ``RuntimeError``
    when the engine looks broken (every prompt of a chunk of >= 2 failing, or ``MAX_FAILED_PROMPTS_IN_A_ROW``
    failures in a row counting ``fail_streak`` from earlier chunks)."""
    from curation.engines.base import GenRequest
    from curation.generation.jobs import prompt_seed
    from curation.verify import verify_batch

    params = spec.sampling()
    cx = ExclusionWriter()
    reqs, kept = [], []
    text_only = getattr(engine, "vision", True) is False
    for row in rows:
        try:
            bp = build_prompt(row, spec.template)
        except PromptError as e:
            cx.add(row, step=spec.step, reason=e.reason, detail=f"{row['_locator']}: {e}", locator=row["_locator"])
            continue
        if text_only and row.get("images"):
            # A text-only model cannot see the figure: such a problem is not scored by it (and would make
            # the engine raise); it is excluded with its own reason, never silently dropped.
            cx.add(row, step=spec.step, reason="needs_vision",
                   detail=f"{row['_locator']}: {len(row['images'])} image(s), model {spec.model} is text-only",
                   locator=row["_locator"])
            continue
        reqs.append(GenRequest(prompt_messages=bp.messages, images=bp.images or None, sample_offset=spec.sample_offset))
        kept.append(row)
    seeds = [prompt_seed(spec.seed, r["id"]) for r in kept]

    t0 = time.perf_counter()
    try:
        outs = _generate(engine, reqs, seeds, params) if reqs else []
        fail_streak = 0
    except Exception:  # noqa: BLE001 - retry one by one to isolate the bad prompt(s)
        outs, ok_rows, errors = [], [], []
        for row, req, s in zip(kept, reqs, seeds):
            try:
                outs.extend(_generate(engine, [req], [s], params))
                ok_rows.append(row)
            except Exception as e:  # noqa: BLE001
                errors.append((row, e))
        fail_streak = 0 if ok_rows else fail_streak + len(errors)
        if errors and not ok_rows and (len(errors) >= 2 or fail_streak >= MAX_FAILED_PROMPTS_IN_A_ROW):
            raise RuntimeError(
                f"generation failed for {fail_streak} prompt(s) in a row (chunk starting at "
                f"{rows[0]['_locator']}); the engine looks broken: {errors[0][1]!r}"
            ) from errors[0][1]
        for row, e in errors:
            cx.add(row, step=spec.step, reason="generation_error",
                   detail=f"{row['_locator']} (id={row['id']}): {e!r}", locator=row["_locator"])
        kept = ok_rows
    t_gen = time.perf_counter() - t0

    t0 = time.perf_counter()
    golds, texts, options = [], [], []
    for row, comps in zip(kept, outs):
        for c in comps:
            golds.append(row["answer"])
            texts.append(c.text)
            options.append(row.get("options") or None)
    verdicts = verify_batch(golds, texts, options=options, timeout=spec.verify_timeout) if texts else []
    t_ver = time.perf_counter() - t0

    recs, k = [], 0
    for row, comps in zip(kept, outs):
        for j, c in enumerate(comps):
            v = verdicts[k]
            k += 1
            recs.append({
                "problem_id": row["id"], "model": spec.model_label, "sample": spec.sample_offset + j, "text": c.text,
                "extracted": v.extracted, "verdict": v.status, "correct": bool(v.correct),
                "num_tokens": c.num_tokens, "finish_reason": c.finish_reason,
            })
    return ChunkOutput(pa.Table.from_pylist(recs, schema=S.ROLLOUTS), cx.table(), t_gen, t_ver, len(kept),
                       fail_streak)


# ------------------------------------------------------------------------------------------------ local


class LocalExecutor:
    """Runs the pending chunks one after another with one engine in this process."""

    name = "local"

    def run(
        self,
        spec: GenJobSpec,
        chunks: Mapping[int, Sequence[dict]],
        on_chunk: OnChunk,
        *,
        engine_obj: Any = None,
    ) -> RunInfo:
        """``chunks``: ``{chunk_id: rows}`` of the pending chunks; ``on_chunk(chunk_id, output)`` writes each
        finished chunk.  ``engine_obj``: an engine to use (not closed here); else one is built lazily at the
        first chunk and closed at the end."""
        info = RunInfo(details={"executor": self.name})
        eng = engine_obj
        streak = 0
        try:
            for cid in sorted(chunks):
                if eng is None:
                    t0 = time.perf_counter()
                    eng = build_engine(spec)
                    info.engine_load_s += time.perf_counter() - t0
                out = process_chunk(eng, spec, chunks[cid], streak)
                streak = out.fail_streak
                on_chunk(cid, out)
                info.chunks_done += 1
        finally:
            if eng is not None and engine_obj is None and hasattr(eng, "close"):
                eng.close()
        info.engine_name = getattr(eng, "name", None)
        return info

    def session(self, engine_obj: Any = None) -> LocalSession:
        """A :class:`LocalSession`: several runs (adaptive scoring's rounds) on one engine."""
        return LocalSession(engine_obj)


class LocalSession:
    """Several :meth:`LocalExecutor.run` calls on one engine: built at the first call with pending chunks
    (never when nothing is left to do), closed by :meth:`close` unless it was given (``engine_obj``)."""

    def __init__(self, engine_obj: Any = None):
        self.engine = engine_obj
        self._own = engine_obj is None
        self.engine_load_s = 0.0

    def run(self, spec: GenJobSpec, chunks: Mapping[int, Sequence[dict]], on_chunk: OnChunk) -> RunInfo:
        info = RunInfo(details={"executor": LocalExecutor.name})
        if not chunks:
            return info
        if self.engine is None:
            t0 = time.perf_counter()
            self.engine = build_engine(spec)
            self.engine_load_s = info.engine_load_s = time.perf_counter() - t0
        out = LocalExecutor().run(spec, chunks, on_chunk, engine_obj=self.engine)
        out.engine_load_s += info.engine_load_s
        return out

    def close(self) -> None:
        if self._own and self.engine is not None and hasattr(self.engine, "close"):
            self.engine.close()
        self.engine = None

    def __enter__(self) -> LocalSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -------------------------------------------------------------------------------------------------- ray


def _to_ipc(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


def _from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


_OUT_SCHEMA = pa.schema([
    ("chunk", pa.int64()), ("prompts_in", pa.int64()), ("rollouts", pa.binary()), ("excluded", pa.binary()),
    ("generation_s", pa.float64()), ("verification_s", pa.float64()), ("prompts", pa.int64()),
    ("engine_load_s", pa.float64()), ("engine_name", pa.string()), ("worker", pa.string()),
])


def _chunk_block(cid: int, rows: Sequence[dict]) -> pa.Table:
    """One Ray Data block: the chunk's rows, pickled whole (exact Python values, images included)."""
    return pa.table({
        "_chunk": pa.array([cid] * len(rows), pa.int64()),
        "_pos": pa.array(range(len(rows)), pa.int64()),
        "_row": pa.array([pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in rows], pa.binary()),
    })


class _ChunkWorker:
    """Ray Data actor: builds the engine once, then runs :func:`process_chunk` on every chunk it receives."""

    def __init__(self, spec: GenJobSpec):
        import socket

        self.spec = spec
        t0 = time.perf_counter()
        self.engine = build_engine(spec)
        self.load_s = time.perf_counter() - t0
        self.load_reported = False
        self.streak = 0
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: pa.Table) -> pa.Table:
        chunk_col = batch.column("_chunk").to_pylist()
        pos_col = batch.column("_pos").to_pylist()
        raw = batch.column("_row").to_pylist()
        by_chunk: dict[int, list[tuple[int, dict]]] = {}
        for c, p, r in zip(chunk_col, pos_col, raw):
            by_chunk.setdefault(int(c), []).append((int(p), pickle.loads(r)))
        out: dict[str, list] = {f.name: [] for f in _OUT_SCHEMA}
        for cid in sorted(by_chunk):
            items = sorted(by_chunk[cid], key=lambda x: x[0])
            res = process_chunk(self.engine, self.spec, [r for _, r in items], self.streak)
            self.streak = res.fail_streak
            for k, v in (("chunk", cid), ("prompts_in", len(items)), ("rollouts", _to_ipc(res.rollouts)),
                         ("excluded", _to_ipc(res.excluded)), ("generation_s", res.generation_s),
                         ("verification_s", res.verification_s), ("prompts", res.prompts),
                         ("engine_load_s", 0.0 if self.load_reported else self.load_s),
                         ("engine_name", getattr(self.engine, "name", None)), ("worker", self.worker)):
                out[k].append(v)
            self.load_reported = True
        return pa.Table.from_pydict(out, schema=_OUT_SCHEMA)


class _EngineActor:
    """Plain Ray actor for :class:`RaySession`: builds its engine once and runs :func:`process_chunk` on every
    chunk it is sent, whatever the round (the spec of each call may differ in ``n`` and ``sample_offset``)."""

    def __init__(self, spec: GenJobSpec):
        import socket

        t0 = time.perf_counter()
        self.engine = build_engine(spec)
        self.load_s = time.perf_counter() - t0
        self.streak = 0
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def info(self) -> tuple[float, str | None, str]:
        return self.load_s, getattr(self.engine, "name", None), self.worker

    def run_chunk(self, spec: GenJobSpec, cid: int, blob: bytes) -> tuple[int, ChunkOutput]:
        res = process_chunk(self.engine, spec, pickle.loads(blob), self.streak)
        self.streak = res.fail_streak
        res.worker = self.worker
        return cid, res


class RaySession:
    """Several runs on one pool of ``num_workers`` engine actors (plain Ray actors with the executor's CPUs /
    GPUs each), so adaptive scoring's rounds do not rebuild their engines every round.  The pool is created
    at the first run with pending chunks and killed by :meth:`close`; chunks go to idle actors
    (``ray.util.ActorPool``) and are written by the driver through ``on_chunk`` as they finish.  Ray Data
    LLM is not used here (its vLLM stage is built per pipeline, i.e. per round)."""

    def __init__(self, executor: RayExecutor):
        self.ex = executor
        self.actors: list[Any] = []
        self._started = False
        self._reported_load = False

    def _ensure_pool(self, spec: GenJobSpec) -> None:
        if self.actors:
            return
        import ray

        self._started = self.ex._connect()
        opts: dict[str, Any] = {"num_cpus": self.ex.cpus_per_worker}
        if self.ex.gpus_per_worker > 0:
            opts["num_gpus"] = self.ex.gpus_per_worker
        actor_cls = ray.remote(**opts)(_EngineActor)
        self.actors = [actor_cls.remote(spec) for _ in range(self.ex.num_workers)]

    def run(self, spec: GenJobSpec, chunks: Mapping[int, Sequence[dict]], on_chunk: OnChunk) -> RunInfo:
        info = RunInfo(details={"executor": self.ex.name, "num_workers": self.ex.num_workers,
                                "gpus_per_worker": self.ex.gpus_per_worker,
                                "cpus_per_worker": self.ex.cpus_per_worker, "ray_address": self.ex.address,
                                "ray_data_llm": False, "persistent_actors": True})
        pending = {c: rows for c, rows in chunks.items() if rows}
        for c in set(chunks) - set(pending):
            on_chunk(c, ChunkOutput(S.ROLLOUTS.empty_table(), S.EXCLUDED.empty_table(), 0.0, 0.0, 0))
        if not pending:
            return info
        import ray
        from ray.util import ActorPool

        self._ensure_pool(spec)
        if not self._reported_load:
            got = ray.get([a.info.remote() for a in self.actors])
            info.engine_load_s = sum(g[0] for g in got)
            info.engine_name = got[0][1]
            self._reported_load = True
        pool = ActorPool(self.actors)
        items = [(c, pickle.dumps(list(pending[c]), protocol=pickle.HIGHEST_PROTOCOL)) for c in sorted(pending)]
        workers: set[str] = set()
        for cid, out in pool.map_unordered(lambda a, it: a.run_chunk.remote(spec, it[0], it[1]), items):
            on_chunk(cid, out)
            info.chunks_done += 1
            workers.add(out.worker)
        info.details["workers_used"] = len(workers)
        return info

    def close(self) -> None:
        if self.actors:
            import ray

            for a in self.actors:
                ray.kill(a)
            self.actors = []
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def ray_llm_available() -> bool:
    """``ray.data.llm`` and ``vllm`` both import here (``pip install "ray[llm]"`` on a GPU machine)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    try:
        import ray.data.llm  # noqa: F401
    except Exception:  # noqa: BLE001 - missing optional deps (aiohttp, ...) mean: not available
        return False
    return True


class RayExecutor:
    """Runs the pending chunks as a Ray Data pipeline (module docstring).

    ``address``: Ray cluster address (``"auto"``, ``"ray://host:10001"``) or ``None`` (use the running
    ``ray.init`` if any, else start a local cluster, shut down again at the end).  ``num_workers``: actors,
    i.e. engines (one per GPU with ``gpus_per_worker=1``); ``cpus_per_worker``: CPUs reserved per actor.
    ``use_ray_llm``: ``"auto"`` | ``True`` | ``False`` (when ``ray.data.llm`` is used: module docstring).
    ``init_kwargs``: extra ``ray.init`` arguments for a cluster started here (e.g. ``object_store_memory``).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_workers: int = 1,
        gpus_per_worker: float = 0.0,
        cpus_per_worker: float = 1.0,
        use_ray_llm: bool | str = "auto",
        llm_batch_size: int = 64,
        init_kwargs: dict | None = None,
    ):
        if num_workers < 1:
            raise ValueError(f"--num-workers must be >= 1, got {num_workers}")
        if gpus_per_worker < 0 or cpus_per_worker < 0:
            raise ValueError("--gpus-per-worker and cpus per worker must be >= 0")
        if use_ray_llm not in ("auto", True, False):
            raise ValueError(f"use_ray_llm must be 'auto', True or False, got {use_ray_llm!r}")
        self.address = address
        self.num_workers = int(num_workers)
        self.gpus_per_worker = float(gpus_per_worker)
        self.cpus_per_worker = float(cpus_per_worker)
        self.use_ray_llm = use_ray_llm
        self.llm_batch_size = int(llm_batch_size)
        self.init_kwargs = dict(init_kwargs or {})

    def session(self, engine_obj: Any = None) -> RaySession:
        """A :class:`RaySession`: several runs (adaptive scoring's rounds) on one pool of engine actors."""
        if engine_obj is not None:
            raise ValueError("--executor ray builds its engines on the workers; do not pass engine_obj")
        return RaySession(self)

    # -- cluster --------------------------------------------------------------------------------------

    def _connect(self) -> bool:
        """Connect / start; returns whether this call started (and so must stop) the cluster."""
        try:
            import ray
        except ImportError as e:
            raise ImportError('--executor ray needs Ray Data: pip install "ray[data]" (or rlcurate[ray])') from e
        if ray.is_initialized():
            return False
        kw = {"include_dashboard": False, "log_to_driver": False, **self.init_kwargs}
        ray.init(address=self.address, **kw)
        return self.address is None

    def _use_llm(self, spec: GenJobSpec, chunks: Mapping[int, Sequence[dict]]) -> bool:
        if self.use_ray_llm is False:
            return False
        from curation.engines import resolve_engine_kind

        has_images = any(r.get("images") for rows in chunks.values() for r in rows)
        ok = (resolve_engine_kind(spec.engine, (spec.engine_options or {}).get("vllm_python")) == "vllm"
              and self.gpus_per_worker > 0 and not has_images and ray_llm_available())
        if self.use_ray_llm is True and not ok:
            raise ValueError("use_ray_llm=True needs engine vllm, --gpus-per-worker > 0, text-only problems and "
                             'ray.data.llm + vllm importable (pip install "ray[llm]")')
        return ok

    def run(
        self,
        spec: GenJobSpec,
        chunks: Mapping[int, Sequence[dict]],
        on_chunk: OnChunk,
        *,
        engine_obj: Any = None,
    ) -> RunInfo:
        """Same contract as :meth:`LocalExecutor.run`; ``engine_obj`` is refused (engines live on workers)."""
        if engine_obj is not None:
            raise ValueError("--executor ray builds its engines on the workers; do not pass engine_obj")
        info = RunInfo(details={"executor": self.name, "num_workers": self.num_workers,
                                "gpus_per_worker": self.gpus_per_worker, "cpus_per_worker": self.cpus_per_worker,
                                "ray_address": self.address})
        pending = {c: rows for c, rows in chunks.items() if rows}
        for c in set(chunks) - set(pending):  # an empty chunk cannot occur (chunks are cut from rows); be exact
            on_chunk(c, ChunkOutput(S.ROLLOUTS.empty_table(), S.EXCLUDED.empty_table(), 0.0, 0.0, 0))
        if not pending:
            return info
        started = self._connect()
        import ray.data

        ctx = ray.data.DataContext.get_current()
        bars = ctx.enable_progress_bars
        ctx.enable_progress_bars = False  # the job shows its own per-chunk progress
        try:
            if self._use_llm(spec, pending):
                info.details["ray_data_llm"] = True
                self._run_llm(spec, pending, on_chunk, info)
            else:
                info.details["ray_data_llm"] = False
                self._run_actors(spec, pending, on_chunk, info)
        finally:
            ctx.enable_progress_bars = bars
            if started:
                import ray

                ray.shutdown()
        return info

    def _run_actors(self, spec: GenJobSpec, chunks: Mapping[int, Sequence[dict]], on_chunk: OnChunk,
                    info: RunInfo) -> None:
        import ray.data

        ds = ray.data.from_arrow([_chunk_block(c, chunks[c]) for c in sorted(chunks)])
        remote: dict[str, Any] = {"num_cpus": self.cpus_per_worker}
        if self.gpus_per_worker > 0:
            remote["num_gpus"] = self.gpus_per_worker
        ds = ds.map_batches(
            _ChunkWorker,
            fn_constructor_kwargs={"spec": spec},
            batch_size=None,  # whole blocks = whole chunks, as the local executor's generate calls
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=self.num_workers),
            **remote,
        )
        # a chunk split over several calls (not expected with batch_size=None) is reassembled before writing
        parts: dict[int, list[dict]] = {}
        workers: set[str] = set()
        for row in ds.iter_rows():
            cid = int(row["chunk"])
            parts.setdefault(cid, []).append(row)
            if sum(int(p["prompts_in"]) for p in parts[cid]) < len(chunks[cid]):
                continue
            got = parts.pop(cid)
            rollouts = pa.concat_tables([_from_ipc(p["rollouts"]) for p in got])
            excluded = pa.concat_tables([_from_ipc(p["excluded"]) for p in got])
            out = ChunkOutput(rollouts, excluded, sum(p["generation_s"] for p in got),
                              sum(p["verification_s"] for p in got), sum(int(p["prompts"]) for p in got),
                              worker=got[0]["worker"])
            on_chunk(cid, out)
            info.chunks_done += 1
            info.engine_load_s += sum(float(p["engine_load_s"]) for p in got)
            info.engine_name = info.engine_name or got[0]["engine_name"]
            workers.update(p["worker"] for p in got)
        if parts:
            raise RuntimeError(f"Ray returned incomplete chunk(s) {sorted(parts)}; re-run to resume")
        info.details["workers_used"] = len(workers)

    # -- ray.data.llm (vLLM on GPUs) ------------------------------------------------------------------

    def _run_llm(self, spec: GenJobSpec, chunks: Mapping[int, Sequence[dict]], on_chunk: OnChunk,
                 info: RunInfo) -> None:  # pragma: no cover - needs vLLM + GPUs (not on the CI machine)
        import ray.data
        from ray.data.llm import build_processor, vLLMEngineProcessorConfig

        from curation.verify import verify_batch

        expected: dict[int, int] = {}
        prompt_excl: dict[int, ExclusionWriter] = {}
        rows_by_chunk: dict[int, list[dict]] = {}
        req_rows: list[dict] = []
        for cid in sorted(chunks):
            rr, cx = llm_request_rows(spec, cid, chunks[cid])
            prompt_excl[cid] = cx
            rows_by_chunk[cid] = list(chunks[cid])
            expected[cid] = len(rr)
            req_rows += rr
        for cid in [c for c, k in expected.items() if k == 0]:  # every prompt failed to build
            on_chunk(cid, assemble_llm_chunk(spec, rows_by_chunk[cid], [], prompt_excl[cid]))
            info.chunks_done += 1
        opts = dict(spec.engine_options or {})
        engine_kwargs = {k: opts[k] for k in ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len",
                                              "dtype", "enforce_eager") if k in opts}
        engine_kwargs.update(opts.get("llm_kwargs") or {})
        config = vLLMEngineProcessorConfig(
            model_source=spec.model, engine_kwargs=engine_kwargs, concurrency=self.num_workers,
            batch_size=self.llm_batch_size, should_continue_on_error=True,
        )
        processor = build_processor(
            config,
            preprocess=lambda r: dict(r, messages=r["messages"], sampling_params=r["sampling_params"]),
            postprocess=lambda r: {k: r.get(k) for k in ("_chunk", "_pos", "_sample", "_gold", "_options",
                                                         "generated_text", "num_generated_tokens",
                                                         "__inference_error__")},
        )
        timeout = spec.verify_timeout

        def verify(batch: dict) -> dict:
            texts = [t or "" for t in batch["generated_text"]]
            opts_ = [list(o) if o is not None and len(o) else None for o in batch["_options"]]
            vs = verify_batch(list(batch["_gold"]), texts, options=opts_, timeout=timeout)
            batch["_verdict"] = [v.status for v in vs]
            batch["_extracted"] = [v.extracted for v in vs]
            batch["_correct"] = [bool(v.correct) for v in vs]
            return batch

        ds = processor(ray.data.from_items(req_rows)).map_batches(verify, batch_format="numpy")
        got: dict[int, list[dict]] = {}
        for row in ds.iter_rows():
            cid = int(row["_chunk"])
            got.setdefault(cid, []).append(row)
            if len(got[cid]) == expected[cid]:
                on_chunk(cid, assemble_llm_chunk(spec, rows_by_chunk[cid], got.pop(cid), prompt_excl[cid]))
                info.chunks_done += 1
        if got:
            raise RuntimeError(f"Ray Data LLM returned incomplete chunk(s) {sorted(got)}; re-run to resume")
        info.engine_name = "vllm (ray.data.llm)"


def llm_request_rows(spec: GenJobSpec, cid: int, rows: Sequence[dict]) -> tuple[list[dict], ExclusionWriter]:
    """Rows for ``ray.data.llm``: one per (prompt, sample ``j``), ``j`` in ``[sample_offset, sample_offset + n)``,
    with ``messages`` (text content, as the engines render it) and ``sampling_params``
    ``{n: 1, seed: prompt_seed(seed, id) + j, ...}`` (vLLM's own seed of sample ``j``), carrying
    ``_chunk``, ``_pos``, ``_sample``, ``_gold``, ``_options``.  Prompts that cannot be built go to the
    returned exclusions (as in :func:`process_chunk`)."""
    from curation.engines.base import flatten_text_content
    from curation.generation.jobs import prompt_seed

    cx = ExclusionWriter()
    out = []
    for pos, row in enumerate(rows):
        try:
            bp = build_prompt(row, spec.template)
        except PromptError as e:
            cx.add(row, step=spec.step, reason=e.reason, detail=f"{row['_locator']}: {e}", locator=row["_locator"])
            continue
        base = prompt_seed(spec.seed, row["id"])
        msgs = flatten_text_content(bp.messages)
        for j in range(spec.sample_offset, spec.sample_offset + spec.n):
            out.append({
                "_chunk": cid, "_pos": pos, "_sample": j, "_gold": row["answer"],
                "_options": list(row.get("options") or []),
                "messages": msgs,
                "sampling_params": {"n": 1, "temperature": spec.temperature, "top_p": spec.top_p,
                                    "max_tokens": spec.max_tokens, "seed": base + j},
            })
    return out, cx


def assemble_llm_chunk(spec: GenJobSpec, rows: Sequence[dict], results: Sequence[dict],
                       prompt_excl: ExclusionWriter) -> ChunkOutput:
    """A chunk's :class:`ChunkOutput` from per-sample ``ray.data.llm`` result rows (any order).  A prompt with
    any failed sample (``__inference_error__``) is excluded whole as ``generation_error``."""
    by_pos: dict[int, list[dict]] = {}
    for r in results:
        by_pos.setdefault(int(r["_pos"]), []).append(r)
    cx = ExclusionWriter(list(prompt_excl.rows))
    recs, prompts = [], 0
    for pos in sorted(by_pos):
        row = rows[pos]
        samples = sorted(by_pos[pos], key=lambda r: int(r["_sample"]))
        err = next((r.get("__inference_error__") for r in samples if r.get("__inference_error__")), None)
        if err or len(samples) != spec.n:
            cx.add(row, step=spec.step, reason="generation_error",
                   detail=f"{row['_locator']} (id={row['id']}): {err or f'{len(samples)} of {spec.n} samples'}",
                   locator=row["_locator"])
            continue
        prompts += 1
        for s in samples:
            ntok = int(s["num_generated_tokens"])
            recs.append({
                "problem_id": row["id"], "model": spec.model_label, "sample": int(s["_sample"]),
                "text": s["generated_text"], "extracted": s["_extracted"], "verdict": s["_verdict"],
                "correct": bool(s["_correct"]), "num_tokens": ntok,
                "finish_reason": "length" if ntok >= spec.max_tokens else "stop",
            })
    return ChunkOutput(pa.Table.from_pylist(recs, schema=S.ROLLOUTS), cx.table(), 0.0, 0.0, prompts)


# ---------------------------------------------------------------------------------------------- factory


def make_executor(
    kind: str = "local",
    *,
    ray_address: str | None = None,
    num_workers: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    **ray_kwargs: Any,
) -> LocalExecutor | RayExecutor:
    """``"local"`` -> :class:`LocalExecutor`; ``"ray"`` -> :class:`RayExecutor` (other arguments are Ray's)."""
    if kind == "local":
        return LocalExecutor()
    if kind == "ray":
        return RayExecutor(ray_address, num_workers, gpus_per_worker, cpus_per_worker, **ray_kwargs)
    raise ValueError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")
