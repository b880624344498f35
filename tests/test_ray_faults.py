"""Worker failures under ``--executor ray`` on a real local Ray cluster: the test kills a worker process
(``os.kill``, SIGKILL) in the middle of a chunk, and one chunk kills its own worker on every attempt.

The engine is the real ``hf`` engine on a tiny random Qwen2, wrapped (``GenJobSpec.engine_factory``) so that a
prompt carrying a marker either pauses - announcing the actor's pid for the test to kill it - or kills its
process.  Expected, per curation.generation.executors: the killed chunk is retried on a fresh actor and its
rollouts equal an uninterrupted run's; the poisoned chunk is retried ``max_retries`` times, then its problems
are excluded as ``worker_failed`` and the job finishes; nothing is lost or written twice; a re-run retries the
failed chunk; chunks failing in a row stop the job."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_rows import gsm8k_rows

from curation.core import schema as S

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PAUSE, POISON, HANG = "PAUSE-ME", "POISON-ME", "HANG-ME"
GEN = {"n": 2, "max_tokens": 5, "temperature": 1.0, "seed": 3, "chunk_size": 2, "engine": "hf",
       "prompt_template": "plain", "engine_options": {"batch_size": 4}}


class _Faulty:
    """The real engine, except for marked prompts (see the module docstring)."""

    name = "hf"

    def __init__(self, inner, ctl: str, poison: bool):
        self.inner, self.ctl, self.poison = inner, Path(ctl), poison
        self.vision = inner.vision

    def generate(self, requests, params, progress=None):
        text = json.dumps([r.prompt_messages for r in requests])
        if self.poison and POISON in text:
            os.kill(os.getpid(), signal.SIGKILL)
        if HANG in text and not (self.ctl / "hung").exists():  # hang once, alive (no one kills it)
            (self.ctl / "hung").write_text(str(os.getpid()))
            time.sleep(600)
        if PAUSE in text and not (self.ctl / "killed").exists():
            (self.ctl / f"paused-{os.getpid()}").write_text(str(os.getpid()))
            time.sleep(300)  # the test kills this process meanwhile
            raise RuntimeError("nobody killed the paused worker")
        return self.inner.generate(requests, params, progress)

    def close(self):
        self.inner.close()


def faulty_engine(spec, ctl: str, poison: bool = True):
    from curation.engines import make_engine

    return _Faulty(make_engine(spec.engine, spec.model, **dict(spec.engine_options)), ctl, poison)


# Ray ships the factory to its workers by value (this test module is not importable there)
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _killer(ctl: Path, stop: threading.Event) -> None:
    """Wait for a paused worker, mark it killed (so its retry runs normally), SIGKILL its process."""
    while not stop.is_set():
        paused = sorted(ctl.glob("paused-*"))
        if paused:
            pid = int(paused[0].read_text())
            (ctl / "killed").write_text(str(pid))
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from curation.core.models import build_tiny_qwen2
    from curation.score.job import run_score_job

    root = tmp_path_factory.mktemp("ray_faults")
    model = build_tiny_qwen2(root / "tiny")
    rows = gsm8k_rows(10)  # 5 chunks of 2
    rows[2] = dict(rows[2], problem=f"{PAUSE} {rows[2]['problem']}")  # chunk 1: killed once, mid-chunk
    rows[6] = dict(rows[6], problem=f"{POISON} {rows[6]['problem']}")  # chunk 3: kills its worker every time
    data = root / "problems.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=S.PROBLEMS), data)
    reference = run_score_job(data, root / "reference", model=str(model), executor="local", **GEN)
    assert reference.rollouts.num_rows == 10 * 2 and reference.excluded.num_rows == 0
    return {"root": root, "model": str(model), "data": data, "rows": rows, "reference": reference}


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    yield
    ray.shutdown()


def test_killed_worker_is_retried_and_a_poisoned_chunk_is_excluded(setup, cluster):
    from curation.score.job import run_score_job

    root, ref = setup["root"], setup["reference"]
    ctl = root / "ctl"
    ctl.mkdir()
    stop = threading.Event()
    killer = threading.Thread(target=_killer, args=(ctl, stop), daemon=True)
    killer.start()
    out = root / "faulty"
    try:
        res = run_score_job(setup["data"], out, model=setup["model"], executor="ray", num_workers=2,
                            executor_options={"max_retries": 1},
                            engine_factory=functools.partial(faulty_engine, ctl=str(ctl)), **GEN)
    finally:
        stop.set()
        killer.join(timeout=5)
    killed_pid = int((ctl / "killed").read_text())

    # no rollout lost or duplicated: exactly the uninterrupted run's, minus the poisoned chunk's problems
    poisoned = {setup["rows"][6]["id"], setup["rows"][7]["id"]}
    want = [r for r in ref.rollouts.to_pylist() if r["problem_id"] not in poisoned]
    assert res.rollouts.to_pylist() == want
    assert res.scores.num_rows == 8
    # the poisoned chunk's problems are excluded with their reason, after 1 + max_retries attempts
    excl = res.excluded.to_pylist()
    assert sorted(r["id"] for r in excl) == sorted(poisoned) and {r["reason"] for r in excl} == {"worker_failed"}
    assert all("chunk 3" in r["detail"] and "all 2 attempt(s)" in r["detail"] and "ActorDiedError" in r["detail"]
               for r in excl)
    on_disk = pq.read_table(out / "excluded.parquet")
    assert on_disk.column("reason").to_pylist() == ["worker_failed"] * 2
    ex = res.stats["settings"]["executor"]
    # chunk 1 once (killed by the test) and chunk 3 once (1 retry) retried; 3 worker processes died
    assert ex["chunk_retries"] == 2 and ex["workers_lost"] == 3 and ex["chunks_failed"] == [3]
    assert ex["max_retries"] == 1 and res.stats["counts"]["chunks_computed"] == 5
    # the killed chunk was finished by another worker process than the one killed in its middle
    timing = json.loads((out / "_work" / "parts" / "timing-000001.json").read_text())
    assert not timing["worker"].endswith(f":{killed_pid}") and not timing["worker"].endswith(f":{os.getpid()}")

    # a re-run (the cause gone) computes only the failed chunk and completes the job
    healed = run_score_job(setup["data"], out, model=setup["model"], executor="ray", num_workers=2,
                           engine_factory=functools.partial(faulty_engine, ctl=str(ctl), poison=False), **GEN)
    assert healed.stats["counts"]["chunks_resumed"] == 4 and healed.stats["counts"]["chunks_computed"] == 1
    assert healed.rollouts.to_pylist() == ref.rollouts.to_pylist() and healed.excluded.num_rows == 0


def test_chunks_failing_in_a_row_stop_the_job(setup, cluster, tmp_path):
    """Every chunk kills its worker: after MAX_FAILED_CHUNKS_IN_A_ROW of them the job stops (a broken engine
    or cluster), keeping what it wrote; a re-run retries them."""
    from curation.generation.executors import MAX_FAILED_CHUNKS_IN_A_ROW
    from curation.score.job import run_score_job

    rows = [dict(r, problem=f"{POISON} {r['problem']}") for r in setup["rows"]]
    data = tmp_path / "problems.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=S.PROBLEMS), data)
    with pytest.raises(RuntimeError, match=f"{MAX_FAILED_CHUNKS_IN_A_ROW} chunks in a row"):
        run_score_job(data, tmp_path / "out", model=setup["model"], executor="ray", num_workers=1,
                      executor_options={"max_retries": 0},
                      engine_factory=functools.partial(faulty_engine, ctl=str(tmp_path)), **GEN)
    parts = sorted(p.name for p in (tmp_path / "out" / "_work" / "parts").glob("excluded-*.parquet"))
    assert parts == [f"excluded-{c:06d}.parquet" for c in range(MAX_FAILED_CHUNKS_IN_A_ROW)]


def _problems_and_reference(rows: list[dict], tmp_path: Path, model: str):
    """The problems table of ``rows``, its uninterrupted local run and an empty control folder."""
    from curation.score.job import run_score_job

    data = tmp_path / "problems.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=S.PROBLEMS), data)
    ref = run_score_job(data, tmp_path / "reference", model=model, executor="local", **GEN)
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    return data, ref, ctl


def test_a_hung_worker_is_killed_after_chunk_timeout_and_its_chunk_retried(setup, cluster, tmp_path):
    """A worker that hangs (alive, never returns) on a chunk: after ``chunk_timeout`` the driver kills it and the
    chunk runs again on a fresh actor; the job's rollouts equal the uninterrupted run's."""
    from curation.score.job import run_score_job

    rows = [dict(r) for r in setup["rows"]]
    rows[2] = dict(rows[2], problem=rows[2]["problem"].replace(PAUSE, HANG))  # chunk 1 hangs once
    rows[6] = dict(rows[6], problem=rows[6]["problem"].replace(POISON, "").strip())
    data, ref, ctl = _problems_and_reference(rows, tmp_path, setup["model"])
    res = run_score_job(data, tmp_path / "out", model=setup["model"], executor="ray", num_workers=2,
                        executor_options={"max_retries": 1, "chunk_timeout": 20},
                        engine_factory=functools.partial(faulty_engine, ctl=str(ctl)), **GEN)
    hung_pid = int((ctl / "hung").read_text())
    assert res.rollouts.to_pylist() == ref.rollouts.to_pylist() and res.excluded.num_rows == 0
    ex = res.stats["settings"]["executor"]
    assert ex["chunk_timeout"] == 20 and ex["chunk_retries"] == 1 and ex["workers_lost"] == 1
    timing = json.loads((tmp_path / "out" / "_work" / "parts" / "timing-000001.json").read_text())
    assert not timing["worker"].endswith(f":{hung_pid}")
    with pytest.raises(ValueError, match="chunk_timeout must be > 0"):
        run_score_job(data, tmp_path / "bad", model=setup["model"], executor="ray", num_workers=1,
                      executor_options={"chunk_timeout": 0}, **GEN)


def dying_loader(spec, ctl: str, always: bool):
    """An engine factory whose worker process dies while building the engine: once (``ctl/load-died`` marks
    it), or every time."""
    marker = Path(ctl) / "load-died"
    if always or not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return faulty_engine(spec, ctl, poison=False)


def test_a_worker_dying_while_building_its_engine_is_replaced(setup, cluster, tmp_path):
    """No chunk is sent to an actor before its engine is built, so a worker that dies while loading costs no
    chunk attempt: a fresh actor takes its place and the job equals the uninterrupted run.  Workers dying at
    every load stop the job after MAX_FAILED_CHUNKS_IN_A_ROW of them, with a message saying so."""
    from curation.generation.executors import MAX_FAILED_CHUNKS_IN_A_ROW
    from curation.score.job import run_score_job

    rows = [dict(r, problem=r["problem"].replace(PAUSE, "").replace(POISON, "").strip()) for r in setup["rows"]]
    data, ref, ctl = _problems_and_reference(rows, tmp_path, setup["model"])
    res = run_score_job(data, tmp_path / "out", model=setup["model"], executor="ray", num_workers=1,
                        executor_options={"max_retries": 0},
                        engine_factory=functools.partial(dying_loader, ctl=str(ctl), always=False), **GEN)
    assert (ctl / "load-died").exists()
    assert res.rollouts.to_pylist() == ref.rollouts.to_pylist() and res.excluded.num_rows == 0
    ex = res.stats["settings"]["executor"]
    assert ex["workers_lost"] == 1 and ex["chunk_retries"] == 0 and ex["chunks_failed"] == []

    with pytest.raises(RuntimeError, match=f"died while building the engine {MAX_FAILED_CHUNKS_IN_A_ROW} times"):
        run_score_job(data, tmp_path / "out2", model=setup["model"], executor="ray", num_workers=1,
                      engine_factory=functools.partial(dying_loader, ctl=str(ctl), always=True), **GEN)
