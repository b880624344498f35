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
    one engine in this process.  An engine with several replicas (``curate score --data-parallel-size k``:
    a vLLM engine with ``k`` worker processes, :meth:`curation.engines.base.RolloutEngine.replicas`) gets one
    thread per replica, each taking the next pending chunk from a shared queue and running the whole chunk
    on its own replica: no barrier between replicas, and every ``generate`` call is one whole chunk, as
    with one replica, so the rollouts do not depend on ``k``.  Otherwise the pending chunks run one after
    another.  Finished chunks are written one at a time (a lock), in the order they finish.

``ray`` (:class:`RayExecutor`)
    the same chunks on Ray actors (Ray Core)::

        W = num_workers actors (num_cpus=cpus_per_worker, num_gpus=gpus_per_worker)
        driver: queue of pending chunk ids; every actor is first asked to build its engine (load()), and
                only an actor whose engine is built gets chunks: each idle one the next chunk (its rows put
                in the object store once); it runs process_chunk (generation + verification) on the worker
        ray.wait -> the finished chunk -> ChunkStore.put(chunk_id, ...) on the driver (the SAME store, parts
                and chunk ids as local)

    The problems are read and validated on the driver by the job exactly as for the local executor (the
    duplicate-id / exclusion pass needs the whole input), so exclusions, chunk ids, resume (finished chunks
    are skipped: only pending chunks are sent) and outputs are identical; only the pending chunks are
    shipped to the cluster.  Because every call holds exactly one chunk and every prompt has its own seed,
    a chunk's rollouts equal the local executor's (same engine, same ``batch_size``; up to floating-point
    effects of a different thread count).

    **Worker failures.**  When an actor's process (or its node / GPU) dies while it runs a chunk
    (``RayActorError``, ``WorkerCrashedError``, ``NodeDiedError``, ``OutOfMemoryError``, a lost object),
    the actor is replaced by a fresh one and the chunk goes back to the front of the queue, up to
    ``max_retries`` times (default 2).  Nothing of the interrupted attempt was written (the driver writes
    a chunk only when it comes back whole), so no rollout is lost or written twice.  A chunk that still
    kills its worker after ``max_retries`` retries is written as done with every one of its problems in
    the exclusions (reason ``worker_failed``, with the attempts and the last error in ``detail``) and the
    job goes on; a re-run in the same folder retries such chunks (:func:`curation.core.io.open_chunk_job`).
    A *hung* worker (alive, but its chunk not back after ``chunk_timeout`` seconds: a wedged GPU, a deadlocked
    engine) is treated the same way: the driver kills the actor and the chunk counts as a failed attempt
    (``ChunkTimeout`` in the detail).  ``chunk_timeout=None`` (default) waits forever.  The clock of a chunk
    starts when it is sent, to an actor whose engine is built (``_ChunkActor.load`` returned), and loading has no
    deadline, so a slow model load (minutes for a 7B vLLM engine) is never mistaken for a hung chunk; set
    ``chunk_timeout`` well above the slowest chunk's generation time.  An actor that dies while building its
    engine is replaced (no chunk was sent to it); ``MAX_FAILED_CHUNKS_IN_A_ROW`` such deaths in a row stop the
    job (a model that does not fit, say).
    ``MAX_FAILED_CHUNKS_IN_A_ROW`` chunks failing like that with no chunk finishing in between stop the
    job (the engine or the cluster is broken, not one chunk).  An exception raised *by* the chunk body
    (e.g. "the engine looks broken") or by the engine's build is not a worker failure: it stops the job, as
    locally.

    **A cluster with less room than asked.**  Because chunks go only to started actors, ``num_workers`` larger
    than the cluster can hold (8 one-GPU workers on a 4-GPU node) runs on the actors that fit, and the others
    join if room frees up; the job warns at the start (:meth:`RayExecutor._check_fits`, from the nodes' total
    resources).  If no node can hold one worker, a cluster started by the job itself (it cannot grow) is an
    error; on an existing cluster the job warns and waits (an autoscaler may add a node), and says so again
    after ``WAITING_NOTICE_S`` seconds with no actor scheduled (a slow engine build does not count).

    **Ray Data LLM** (``ray.data.llm``, vLLM batch inference) is used instead of the actors only when all
    of these hold: the engine is ``vllm``, ``gpus_per_worker > 0``, ``ray.data.llm`` and ``vllm`` import on
    the driver, no pending problem has images, and every engine option has a ``ray.data.llm`` equivalent
    (:func:`llm_processor_config`; ``use_ray_llm="auto"``; ``True`` insists and names what is missing,
    ``False`` never).  Each prompt is expanded to ``n`` single-sample rows with seed ``prompt_seed + j``
    (vLLM itself seeds sample ``j`` of an ``n``-sample request with ``seed + j``, so the samples match the
    in-process vLLM engine's up to batching effects), the processor's chat-template / tokenize / vLLM /
    detokenize stages run on the cluster, verification runs in a following ``map_batches``, and the driver
    reassembles each chunk (:func:`assemble_llm_chunk`) and writes it through the same store.
    ``finish_reason`` is inferred there (``length`` when ``num_generated_tokens >= max_tokens``) because
    Ray's vLLM stage does not return vLLM's own.  The ``hf`` engine, vision-language problems and CPU
    clusters always use the actors.  Ray Data retries a dead vLLM replica itself (its actor pool restarts
    actors and retries their tasks); rows that still fail are excluded as ``generation_error``.

Sessions (``executor.session()``): adaptive scoring runs one job per round, each round's chunks decided from
the rollouts of the rounds before; a :class:`LocalSession` keeps one engine across the rounds, a
:class:`RaySession` one pool of engine actors (built once, handed from round to round; dead workers are
replaced and their chunks retried as above).  Chunks, parts and resume are the same as above.

Sharding (``--shard I/K``) is unchanged and independent: a Slurm array runs one job per shard, each of which
may itself use either executor.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import pyarrow as pa

from curation.core import schema as S
from curation.core.io import WORKER_FAILED, ExclusionWriter
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
    "llm_processor_config",
    "failed_chunk",
]

EXECUTORS = ("local", "ray")
# A prompt failing on its own is a bad row (``generation_error``); a whole chunk of >= 2 prompts failing, or
# this many prompts failing in a row, stops the job (the engine is broken).
MAX_FAILED_PROMPTS_IN_A_ROW = 8
# Chunks that killed their Ray worker on every attempt, in a row with none finishing in between, that stop the
# job (a broken engine or cluster, rather than one bad chunk).
MAX_FAILED_CHUNKS_IN_A_ROW = 3
# After this many seconds with no Ray actor scheduled (the cluster has no free room for one) the job says so once.
WAITING_NOTICE_S = 60.0
OnChunk = Callable[[int, "ChunkOutput"], None]
log = logging.getLogger(__name__)


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
    # extraction rules of the verifier (None: DEFAULT_RULES; curation.verify.extract.resolve_rules names)
    rules: tuple[str, ...] | None = None
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    # builds the engine instead of ``make_engine(engine, model, **engine_options)`` (a custom engine; must
    # be picklable - a module-level function - to reach Ray workers)
    engine_factory: Callable[["GenJobSpec"], Any] | None = None
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
    if spec.engine_factory is not None:
        return spec.engine_factory(spec)
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
    verdicts = (verify_batch(golds, texts, options=options, timeout=spec.verify_timeout, rules=spec.rules)
                if texts else [])
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
    """Runs the pending chunks with one engine in this process: one after another, or one chunk per engine
    replica at a time when the engine has several (module docstring)."""

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
        finished chunk.  ``engine_obj``: an engine to use (not closed here); else one is built when there is
        a chunk to run and closed at the end."""
        info = RunInfo(details={"executor": self.name})
        eng = engine_obj
        try:
            order = sorted(chunks)
            if order and eng is None:
                t0 = time.perf_counter()
                eng = build_engine(spec)
                info.engine_load_s += time.perf_counter() - t0
            reps = eng.replicas() if callable(getattr(eng, "replicas", None)) else [eng]
            info.details["replicas"] = len(reps)
            if len(reps) > 1:
                _run_on_replicas(reps, spec, chunks, order, on_chunk, info)
            else:
                streak = 0
                for cid in order:
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

    def run(self, spec: GenJobSpec, chunks: Mapping[int, Sequence[dict]], on_chunk: OnChunk) -> RunInfo:
        info = RunInfo(details={"executor": LocalExecutor.name})
        if not chunks:
            return info
        load_s = 0.0
        if self.engine is None:
            t0 = time.perf_counter()
            self.engine = build_engine(spec)
            load_s = time.perf_counter() - t0
        out = LocalExecutor().run(spec, chunks, on_chunk, engine_obj=self.engine)
        out.engine_load_s += load_s
        return out

    def close(self) -> None:
        if self._own and self.engine is not None and hasattr(self.engine, "close"):
            self.engine.close()
        self.engine = None

    def __enter__(self) -> LocalSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _run_on_replicas(replicas: Sequence[Any], spec: GenJobSpec, chunks: Mapping[int, Sequence[dict]],
                     order: Sequence[int], on_chunk: OnChunk, info: RunInfo) -> None:
    """One thread per replica; each takes the next chunk id from a shared queue, runs the whole chunk on its
    replica and writes it (one writer at a time; ``ChunkOutput.worker`` names the replica).  The first error stops the hand-out of new chunks; chunks
    already running finish and are written (they are complete), then the error is raised."""
    queue = deque(order)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(replica: Any, label: str) -> None:
        streak = 0
        while True:
            with lock:
                if errors or not queue:
                    return
                cid = queue.popleft()
            try:
                out = process_chunk(replica, spec, chunks[cid], streak)
                streak = out.fail_streak
                out.worker = out.worker or label
                with lock:
                    on_chunk(cid, out)
                    info.chunks_done += 1
            except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
                with lock:
                    errors.append(e)
                return

    threads = [threading.Thread(target=work, args=(r, f"replica-{i}"), name=f"rlcurate-replica-{i}", daemon=True)
               for i, r in enumerate(replicas)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


# -------------------------------------------------------------------------------------------------- ray


class _ChunkActor:
    """Ray actor: builds the engine when the driver asks (:meth:`load`, before any chunk is sent to it), then
    runs :func:`process_chunk` on every chunk it is given."""

    def __init__(self, spec: GenJobSpec):
        import socket

        self.spec = spec
        self.engine: Any = None
        self.streak = 0
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def ping(self) -> bool:
        """Returns at once: the driver learns that Ray has scheduled this actor (before its engine is built)."""
        return True

    def load(self) -> float:
        """Build the engine now if it is not built (seconds it took; 0 when it was): the driver sends this first
        and gives the actor chunks only once it returned (module docstring)."""
        if self.engine is not None:
            return 0.0
        t0 = time.perf_counter()
        self.engine = build_engine(self.spec)
        return time.perf_counter() - t0

    def run(self, rows: Sequence[dict], spec: GenJobSpec | None = None) -> tuple[ChunkOutput, float, str | None]:
        """``(output, engine load seconds (0 after the first chunk), engine name)`` of one chunk.  ``spec``:
        this chunk's job when it differs from the actor's in what is drawn (``n``, ``sample_offset``: the
        rounds of a :class:`RaySession`), never in the engine."""
        load_s = self.load()
        out = process_chunk(self.engine, spec or self.spec, rows, self.streak)
        self.streak = out.fail_streak
        out.worker = self.worker
        return out, load_s, getattr(self.engine, "name", None)


def _worker_failure_types() -> tuple[type[BaseException], ...]:
    """Errors meaning "the worker process, its node or its objects are gone" (not an error of the chunk)."""
    from ray import exceptions as rx

    names = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "OutOfMemoryError",
             "ObjectLostError")
    return tuple(getattr(rx, n) for n in names if hasattr(rx, n))


def failed_chunk(spec: GenJobSpec, cid: int, rows: Sequence[dict], attempts: int, errors: Sequence[str]) -> ChunkOutput:
    """The :class:`ChunkOutput` of a chunk whose worker died on every attempt: no rollouts, every problem
    excluded as ``worker_failed`` (``detail``: the chunk, the attempts and the last error)."""
    cx = ExclusionWriter()
    last = errors[-1] if errors else "unknown error"
    for row in rows:
        loc = row.get("_locator")
        cx.add(row, step=spec.step, reason=WORKER_FAILED, locator=loc,
               detail=f"{loc} (id={row.get('id')}): chunk {cid}: the Ray worker died on all {attempts} attempt(s) "
                      f"(a re-run retries it): {last}")
    return ChunkOutput(S.ROLLOUTS.empty_table(), cx.table(), 0.0, 0.0, 0)


def _short(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def _kill_actors(actors: Sequence[Any]) -> None:
    """``ray.kill`` each actor (no restart); one already dead is skipped."""
    import ray

    for actor in actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already dead
            pass


def _actor_ask(remote: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={remote[k]:g}" for k in ("num_cpus", "num_gpus") if remote.get(k) is not None)


def workers_that_fit(cpus_per_worker: float, gpus_per_worker: float, nodes: Sequence[Mapping[str, Any]]) -> int | None:
    """How many workers asking ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs the alive ``nodes``
    (``ray.nodes()``) can hold at once, by their total resources (``None``: a worker asks for nothing)."""
    ask = {k: v for k, v in (("CPU", cpus_per_worker), ("GPU", gpus_per_worker)) if v > 0}
    if not ask:
        return None
    return sum(min(int(float((n.get("Resources") or {}).get(k, 0.0)) / v + 1e-9) for k, v in ask.items())
               for n in nodes if n.get("Alive", True))


def _node_shapes(nodes: Sequence[Mapping[str, Any]]) -> str:
    """``"4 x (CPU=16, GPU=4); 1 x (CPU=8, GPU=0)"``: the alive nodes' total CPUs and GPUs, grouped."""
    from collections import Counter

    shapes = Counter(", ".join(f"{k}={float((n.get('Resources') or {}).get(k, 0)):g}" for k in ("CPU", "GPU"))
                     for n in nodes if n.get("Alive", True))
    return "; ".join(f"{c} x ({shape})" for shape, c in shapes.most_common()) or "no alive node"


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
    ``max_retries``: times a chunk is retried on a fresh actor after its worker died (module docstring).
    ``chunk_timeout``: seconds after which a chunk still running counts as a dead worker (``None``: never).
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
        max_retries: int = 2,
        chunk_timeout: float | None = None,
    ):
        if num_workers < 1:
            raise ValueError(f"--num-workers must be >= 1, got {num_workers}")
        if gpus_per_worker < 0 or cpus_per_worker < 0:
            raise ValueError("--gpus-per-worker and cpus per worker must be >= 0")
        if use_ray_llm not in ("auto", True, False):
            raise ValueError(f"use_ray_llm must be 'auto', True or False, got {use_ray_llm!r}")
        if int(max_retries) < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.address = address
        self.num_workers = int(num_workers)
        self.gpus_per_worker = float(gpus_per_worker)
        self.cpus_per_worker = float(cpus_per_worker)
        self.use_ray_llm = use_ray_llm
        self.llm_batch_size = int(llm_batch_size)
        self.init_kwargs = dict(init_kwargs or {})
        self.max_retries = int(max_retries)
        if chunk_timeout is not None and not float(chunk_timeout) > 0:
            raise ValueError(f"chunk_timeout must be > 0 seconds (or None), got {chunk_timeout}")
        self.chunk_timeout = float(chunk_timeout) if chunk_timeout is not None else None

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

    def _settings(self) -> dict:
        """The executor's settings, as ``stats.json`` records them (``settings.executor``)."""
        return {"executor": self.name, "num_workers": self.num_workers, "gpus_per_worker": self.gpus_per_worker,
                "cpus_per_worker": self.cpus_per_worker, "ray_address": self.address,
                "max_retries": self.max_retries, "chunk_timeout": self.chunk_timeout}

    def _check_fits(self, started: bool, info: RunInfo) -> None:
        """Compare the workers asked for with what the cluster's nodes can hold.  None fit: an error on a cluster
        started here (it cannot grow), a warning on an existing one (an autoscaler may add a node).  Fewer than
        ``num_workers`` fit: a warning; the others wait for room (chunks go only to started actors)."""
        import ray

        nodes = ray.nodes()
        fit = workers_that_fit(self.cpus_per_worker, self.gpus_per_worker, nodes)
        if fit is None or fit >= self.num_workers:
            return
        info.details["workers_fit"] = fit
        ask = _actor_ask({"num_cpus": self.cpus_per_worker, "num_gpus": self.gpus_per_worker or None})
        have = _node_shapes(nodes)
        if fit == 0:
            msg = f"--executor ray: no node of the Ray cluster can hold one worker ({ask} each; nodes: {have})"
            if started:
                raise ValueError(f"{msg}. Lower --gpus-per-worker (or the CPUs per worker), or run on a machine "
                                 "with those resources")
            log.warning("%s; waiting for the cluster (an autoscaler) to add such a node", msg)
        else:
            log.warning("--executor ray: the Ray cluster holds %d of the %d workers asked (%s each; nodes: %s); "
                        "the job runs on those, the others start if room frees up", fit, self.num_workers, ask, have)

    def _use_llm(self, spec: GenJobSpec, chunks: Mapping[int, Sequence[dict]]) -> bool:
        if self.use_ray_llm is False:
            return False
        from curation.engines import resolve_engine_kind

        has_images = any(r.get("images") for rows in chunks.values() for r in rows)
        why = []
        if spec.engine_factory is not None or resolve_engine_kind(
                spec.engine, (spec.engine_options or {}).get("vllm_python")) != "vllm":
            why.append("engine vllm")
        if self.gpus_per_worker <= 0:
            why.append("--gpus-per-worker > 0")
        if has_images:
            why.append("text-only problems")
        if not why:
            try:
                llm_processor_config(spec, self.num_workers, self.gpus_per_worker, self.cpus_per_worker,
                                     self.llm_batch_size)
            except ValueError as e:
                why.append(f"engine options ray.data.llm can take ({e})")
        if not why and not ray_llm_available():
            why.append('ray.data.llm + vllm importable (pip install "ray[llm]")')
        if self.use_ray_llm is True and why:
            raise ValueError("use_ray_llm=True needs " + "; ".join(why))
        return not why

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
        dp = int((spec.engine_options or {}).get("data_parallel_size") or 1)
        if dp > 1:
            raise ValueError(f"--data-parallel-size {dp} with --executor ray: Ray runs one engine per worker; "
                             f"use --num-workers {self.num_workers * dp} instead")
        info = RunInfo(details=self._settings())
        pending = {c: rows for c, rows in chunks.items() if rows}
        for c in set(chunks) - set(pending):  # an empty chunk cannot occur (chunks are cut from rows); be exact
            on_chunk(c, ChunkOutput(S.ROLLOUTS.empty_table(), S.EXCLUDED.empty_table(), 0.0, 0.0, 0))
        if not pending:
            return info
        started = self._connect()
        try:
            self._check_fits(started, info)
            if self._use_llm(spec, pending):
                info.details["ray_data_llm"] = True
                import ray.data

                ctx = ray.data.DataContext.get_current()
                bars = ctx.enable_progress_bars
                ctx.enable_progress_bars = False  # the job shows its own per-chunk progress
                try:
                    self._run_llm(spec, pending, on_chunk, info)
                finally:
                    ctx.enable_progress_bars = bars
            else:
                info.details["ray_data_llm"] = False
                self._run_actors(spec, pending, on_chunk, info)
        finally:
            if started:
                import ray

                ray.shutdown()
        return info

    def _run_actors(self, spec: GenJobSpec, chunks: Mapping[int, Sequence[dict]], on_chunk: OnChunk,
                    info: RunInfo, pool: list | None = None) -> None:
        """The actor loop.  ``pool`` (a :class:`RaySession`'s): live actors to use and to hand back alive at the
        end (topped up to ``num_workers``; dead ones replaced as always); ``None``: actors of this call only."""
        import ray

        failure_types = _worker_failure_types()
        remote: dict[str, Any] = {"num_cpus": self.cpus_per_worker, "max_restarts": 0, "max_task_retries": 0}
        if self.gpus_per_worker > 0:
            remote["num_gpus"] = self.gpus_per_worker
        actor_cls = ray.remote(_ChunkActor).options(**remote)
        spec_ref = ray.put(spec)
        queue = deque(sorted(chunks))
        idle: list[Any] = []  # actors whose engine is built, waiting for a chunk (only these get chunks)
        starting: dict[Any, Any] = {}  # an actor's load() ref -> the actor (not scheduled yet, or building)
        pings: dict[Any, Any] = {}  # an actor's ping() ref -> its load() ref: the ping returns once Ray scheduled it
        building: set = set()  # load() refs of actors scheduled (ping returned) and still building their engine
        # task ref -> (actor, chunk id, when it was sent: to a ready actor, so this is chunk_timeout's clock)
        running: dict[Any, tuple[Any, int, float]] = {}
        row_refs: dict[int, Any] = {}
        attempts: dict[int, int] = {}
        errors: dict[int, list[str]] = {}
        workers: set[str] = set()
        failed_in_a_row = loads_failed_in_a_row = retried = lost = 0
        failed_chunks: list[int] = []
        waiting_since = time.monotonic()  # since when no actor was scheduled (the cluster has no room for one)
        said_waiting = False

        def start(actor: Any) -> None:
            """Ask ``actor`` to build its engine (idempotent): it gets chunks once that returns, so a chunk is
            never sent to an actor Ray cannot schedule, and a slow engine load never counts as chunk time."""
            ping = actor.ping.remote()  # actor methods run in order: ping, then load
            load = actor.load.remote()
            pings[ping], starting[load] = load, actor

        def worker_lost(actor: Any, cid: int, why: str, cause: BaseException | None) -> None:
            """The worker of chunk ``cid`` died or hung: nothing of this attempt was written; retry the chunk
            on a fresh actor, or after ``max_retries`` retries write it as failed (module docstring)."""
            nonlocal failed_in_a_row, retried, lost
            errors.setdefault(cid, []).append(why)
            row_refs.pop(cid, None)  # put the rows again: the copy may have been on the lost node
            _kill_actors([actor])
            lost += 1
            if attempts[cid] <= self.max_retries:
                retried += 1
                queue.appendleft(cid)
            if queue:  # a fresh actor takes the dead one's place while there is work for it
                start(actor_cls.remote(spec_ref))
            if attempts[cid] <= self.max_retries:
                return
            on_chunk(cid, failed_chunk(spec, cid, chunks[cid], attempts[cid], errors[cid]))
            info.chunks_done += 1
            failed_chunks.append(cid)
            failed_in_a_row += 1
            if failed_in_a_row >= MAX_FAILED_CHUNKS_IN_A_ROW:
                raise RuntimeError(
                    f"Ray workers died on every attempt for {failed_in_a_row} chunks in a row (last: "
                    f"chunk {cid}, {errors[cid][-1]}); the engine or the cluster looks broken. Finished "
                    "chunks are kept: re-run the same command to resume (failed chunks are retried)"
                ) from cause

        def load_lost(actor: Any, e: BaseException) -> None:
            """An actor died while building its engine (no chunk was sent to it): replace it while there is
            work; ``MAX_FAILED_CHUNKS_IN_A_ROW`` such deaths with no engine built in between stop the job."""
            nonlocal loads_failed_in_a_row, lost
            lost += 1
            loads_failed_in_a_row += 1
            _kill_actors([actor])
            if loads_failed_in_a_row >= MAX_FAILED_CHUNKS_IN_A_ROW:
                raise RuntimeError(
                    f"Ray workers died while building the engine {loads_failed_in_a_row} times in a row (last: "
                    f"{_short(e)}); the engine or the cluster looks broken (out of memory?). Finished chunks are "
                    "kept: re-run the same command to resume"
                ) from e
            if queue:
                start(actor_cls.remote(spec_ref))

        if pool is None:
            for _ in range(min(self.num_workers, len(chunks))):
                start(actor_cls.remote(spec_ref))
        else:
            while len(pool) < self.num_workers:
                pool.append(actor_cls.remote(spec_ref))
            for actor in pool:  # built ones answer at once
                start(actor)
            pool.clear()
        try:
            while queue or running:
                while queue and idle:
                    actor, cid = idle.pop(), queue.popleft()
                    if cid not in row_refs:
                        row_refs[cid] = ray.put(list(chunks[cid]))
                    attempts[cid] = attempts.get(cid, 0) + 1
                    running[actor.run.remote(row_refs[cid], spec_ref)] = (actor, cid, time.monotonic())
                if not (running or idle or starting):  # cannot happen (a lost actor is replaced while work is left)
                    raise RuntimeError(f"--executor ray: {len(queue)} chunks left with no worker to run them")
                wait_s = None
                if self.chunk_timeout is not None and running:  # wake up when the oldest running chunk is due
                    wait_s = max(0.0, min(t for _, _, t in running.values()) + self.chunk_timeout - time.monotonic())
                if not running and not said_waiting:  # say so if the cluster has no room for any actor
                    left = WAITING_NOTICE_S - (time.monotonic() - waiting_since)
                    wait_s = max(0.0, left) if wait_s is None else min(wait_s, max(0.0, left))
                ready, _ = ray.wait(list(running) + list(starting) + list(pings), num_returns=1, timeout=wait_s)
                for ref in ready:
                    if ref in pings:  # scheduled: building its engine now (a death shows on its load ref)
                        load = pings.pop(ref)
                        if load in starting:
                            building.add(load)
                        continue
                    if ref in starting:  # an actor is scheduled and its engine built: it can take chunks
                        actor = starting.pop(ref)
                        building.discard(ref)
                        try:
                            info.engine_load_s += float(ray.get(ref))
                        except failure_types as e:
                            load_lost(actor, e)
                            continue
                        loads_failed_in_a_row = 0
                        idle.append(actor)
                        continue
                    actor, cid, _ = running.pop(ref)
                    try:
                        out, load_s, engine_name = ray.get(ref)
                    except failure_types as e:
                        # the worker (or its node / objects) is gone: nothing of this attempt was written
                        worker_lost(actor, cid, _short(e), e)
                        continue
                    failed_in_a_row = 0
                    row_refs.pop(cid, None)
                    idle.append(actor)
                    on_chunk(cid, out)
                    info.chunks_done += 1
                    info.engine_load_s += load_s
                    info.engine_name = info.engine_name or engine_name
                    workers.add(out.worker)
                if running or idle or building:
                    waiting_since = time.monotonic()
                elif not said_waiting and time.monotonic() - waiting_since >= WAITING_NOTICE_S:
                    said_waiting = True
                    log.warning(
                        "--executor ray: Ray has scheduled no worker for %.0f s: the cluster has no free room for "
                        "an actor (%s each; %d chunks waiting). Waiting for resources to free up or for the "
                        "autoscaler; stop with Ctrl-C", WAITING_NOTICE_S, _actor_ask(remote), len(queue))
                if self.chunk_timeout is not None:
                    now = time.monotonic()
                    for ref in [r for r, (_, _, t) in running.items() if now - t >= self.chunk_timeout]:
                        actor, cid, _ = running.pop(ref)
                        worker_lost(actor, cid, f"ChunkTimeout: chunk {cid} not back after {self.chunk_timeout:g} s "
                                    "(worker hung; killed)", None)
        finally:
            live = idle + list(starting.values())  # built, or still being scheduled / built
            if pool is not None and not running:
                pool.extend(live)  # a session's next run uses them
            else:
                _kill_actors(live + [a for a, _, _ in running.values()])
            info.details.update(workers_used=len(workers), chunk_retries=retried, workers_lost=lost,
                                chunks_failed=failed_chunks)

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
        from curation.core.models import read_chat_template

        try:  # the template stored with the checkpoint, as the local engine renders it
            template = read_chat_template(spec.model)
        except FileNotFoundError:  # not resolvable on the driver: the workers' tokenizer template is used
            template = None
        config = vLLMEngineProcessorConfig(**llm_processor_config(
            spec, self.num_workers, self.gpus_per_worker, self.cpus_per_worker, self.llm_batch_size,
            chat_template=template))
        processor = build_processor(
            config,
            preprocess=lambda r: dict(r, messages=r["messages"], sampling_params=r["sampling_params"]),
            postprocess=lambda r: {k: r.get(k) for k in ("_chunk", "_pos", "_sample", "_gold", "_options",
                                                         "generated_text", "num_generated_tokens",
                                                         "__inference_error__")},
        )
        timeout, rules = spec.verify_timeout, spec.rules

        def verify(batch: dict) -> dict:
            texts = [t or "" for t in batch["generated_text"]]
            opts_ = [list(o) if o is not None and len(o) else None for o in batch["_options"]]
            vs = verify_batch(list(batch["_gold"]), texts, options=opts_, timeout=timeout, rules=rules)
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


class RaySession:
    """Several runs on one pool of engine actors (the executor's actors, with its retries of dead workers), so
    adaptive scoring's rounds do not rebuild their engines every round: the pool is created at the first run
    with pending chunks, handed from run to run alive, and killed by :meth:`close` (which also stops a
    cluster this session started).  Ray Data LLM is not used here (its vLLM stage is built per pipeline, i.e.
    per round)."""

    def __init__(self, executor: RayExecutor):
        self.ex = executor
        self.pool: list[Any] = []
        self._started: bool | None = None

    def run(self, spec: GenJobSpec, chunks: Mapping[int, Sequence[dict]], on_chunk: OnChunk) -> RunInfo:
        ex = self.ex
        info = RunInfo(details={**ex._settings(), "ray_data_llm": False, "persistent_actors": True})
        pending = {c: rows for c, rows in chunks.items() if rows}
        for c in set(chunks) - set(pending):
            on_chunk(c, ChunkOutput(S.ROLLOUTS.empty_table(), S.EXCLUDED.empty_table(), 0.0, 0.0, 0))
        if not pending:
            return info
        if self._started is None:
            self._started = ex._connect()
            ex._check_fits(self._started, info)
        ex._run_actors(spec, pending, on_chunk, info, pool=self.pool)
        return info

    def close(self) -> None:
        if self.pool:
            _kill_actors(self.pool)
            self.pool = []
        if self._started:
            import ray

            ray.shutdown()
        self._started = None

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# VLLMEngine options and where they go in ray.data.llm's vLLMEngineProcessorConfig (ray 2.60)
LLM_ENGINE_KWARGS = ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "dtype", "seed",
                     "limit_mm_per_prompt", "enforce_eager")
# VLLMEngine options about its own worker processes: no ray.data.llm equivalent (the actors honour them)
LLM_NO_EQUIVALENT = ("vllm_python", "chunk_size", "startup_timeout", "worker_log", "progress")


def llm_processor_config(spec: GenJobSpec, num_workers: int, gpus_per_worker: float, cpus_per_worker: float,
                         batch_size: int, chat_template: str | None = None) -> dict:
    """Keyword arguments of ``ray.data.llm.vLLMEngineProcessorConfig`` for ``spec`` (pure; no Ray needed).

    Every vLLM engine option is forwarded: ``tensor_parallel_size``, ``gpu_memory_utilization`` (default
    0.9, as the local engine on GPU), ``max_model_len``, ``dtype``, ``seed``, ``limit_mm_per_prompt``,
    ``enforce_eager`` and ``llm_kwargs`` (merged last, as locally) into ``engine_kwargs``;
    ``chat_template_kwargs`` and the model's stored ``chat_template`` into the chat-template stage;
    ``worker_env`` into ``runtime_env.env_vars``.  ``--gpus-per-worker G`` becomes the placement of one
    engine replica: ``tensor_parallel_size x pipeline_parallel_size`` bundles of ``G / (tp x pp)`` GPUs and
    ``cpus_per_worker`` CPUs each, so ``G`` must equal ``tp x pp``, or be a fraction <= 1 with ``tp x pp = 1``
    (several replicas per GPU).  Options of the ``hf`` engine are ignored (as :func:`curation.engines.make_engine`
    does); ``data_parallel_size > 1``, options without an equivalent (:data:`LLM_NO_EQUIVALENT`) and unknown
    ones raise ``ValueError`` naming them, instead of being dropped."""
    import inspect

    from curation.engines.hf import HFEngine
    from curation.engines.vllm import VLLMEngine

    opts = dict(spec.engine_options or {})

    def params(cls: type) -> set[str]:
        return {p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "model") and p[0] != "_"}

    vllm_opts, hf_opts = params(VLLMEngine), params(HFEngine)
    unknown = sorted(set(opts) - vllm_opts - hf_opts)
    if unknown:
        raise ValueError(f"unknown engine option(s): {', '.join(unknown)}")
    opts = {k: v for k, v in opts.items() if k in vllm_opts}
    if int(opts.pop("data_parallel_size", 1) or 1) > 1:
        raise ValueError("data_parallel_size > 1: ray.data.llm runs one engine per replica (use --num-workers)")
    no_eq = sorted(k for k in opts if k in LLM_NO_EQUIVALENT)
    if no_eq:
        raise ValueError(f"option(s) {', '.join(no_eq)} have no ray.data.llm equivalent")
    llm_kwargs = dict(opts.pop("llm_kwargs", None) or {})
    engine_kwargs: dict[str, Any] = {"gpu_memory_utilization": 0.9}
    engine_kwargs.update({k: opts.pop(k) for k in LLM_ENGINE_KWARGS if opts.get(k) is not None})
    engine_kwargs.update(llm_kwargs)
    template_kwargs = opts.pop("chat_template_kwargs", None)
    worker_env = opts.pop("worker_env", None)
    for k in LLM_ENGINE_KWARGS:  # explicit None values: the engine default
        opts.pop(k, None)
    if opts:  # a new VLLMEngine option nobody mapped: refuse rather than drop it
        raise ValueError(f"engine option(s) {', '.join(sorted(opts))} are not mapped to ray.data.llm")

    ranks = int(engine_kwargs.get("tensor_parallel_size", 1)) * int(engine_kwargs.get("pipeline_parallel_size", 1))
    g = float(gpus_per_worker)
    if g <= 0:
        raise ValueError("ray.data.llm needs --gpus-per-worker > 0")
    if ranks > 1 and g != ranks:
        raise ValueError(f"--gpus-per-worker {g:g} must equal tensor_parallel_size x pipeline_parallel_size = {ranks} "
                         "(one GPU per engine rank)")
    if ranks == 1 and g > 1:
        raise ValueError(f"--gpus-per-worker {g:g} with tensor_parallel_size 1: an engine uses one GPU; set "
                         f"--engine-opt tensor_parallel_size={g:g} to shard it over {g:g} GPUs")
    stage: dict[str, Any] = {}
    if chat_template:
        stage["chat_template"] = chat_template
    if template_kwargs:
        stage["chat_template_kwargs"] = dict(template_kwargs)
    config: dict[str, Any] = {
        "model_source": spec.model,  # as given: each node resolves a hub id in its own cache
        "engine_kwargs": engine_kwargs,
        "concurrency": int(num_workers),
        "batch_size": int(batch_size),
        "should_continue_on_error": True,
        "chat_template_stage": stage or True,
        "tokenize_stage": True,
        "detokenize_stage": True,
        "placement_group_config": {"bundle_per_worker": {"GPU": g / ranks, "CPU": float(cpus_per_worker)}},
    }
    if worker_env:
        config["runtime_env"] = {"env_vars": {str(k): str(v) for k, v in dict(worker_env).items()}}
    return config


def llm_request_rows(spec: GenJobSpec, cid: int, rows: Sequence[dict]) -> tuple[list[dict], ExclusionWriter]:
    """Rows for ``ray.data.llm``: one per (prompt, sample ``j``), ``j`` in ``[sample_offset, sample_offset + n)``
    (seeded ``prompt_seed(seed, id) + j``, vLLM's own seed of sample ``j``), with ``messages`` (text content, as the
    engines render it) and ``sampling_params`` ``{n: 1, seed: prompt_seed(seed, id) + j, ...}``, carrying
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
