"""``curate score --executor ray``: a real local Ray cluster (2 CPUs, small object store) scoring with the
``hf`` engine on a tiny random Qwen2; outputs equal the local executor's, and a resumed Ray run only computes
the missing chunks."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from data_rows import gsm8k_rows  # noqa: E402

from curation.core import schema as S  # noqa: E402
from curation.core.io import ExclusionWriter  # noqa: E402
from curation.core.prompts import load_template  # noqa: E402
from curation.generation.executors import (  # noqa: E402
    GenJobSpec,
    assemble_llm_chunk,
    llm_request_rows,
    make_executor,
)
from curation.score.job import prompt_seed, run_score_job  # noqa: E402

ray = pytest.importorskip("ray")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GEN = {"n": 3, "max_tokens": 6, "temperature": 1.0, "seed": 5, "chunk_size": 2, "engine": "hf",
       "prompt_template": "plain", "engine_options": {"batch_size": 6}}
N_CHUNKS = 6  # 11 problems that reach chunking / 2 per chunk


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from curation.core.models import build_tiny_qwen2

    root = tmp_path_factory.mktemp("ray_exec")
    model = build_tiny_qwen2(root / "tiny")
    rows = gsm8k_rows(10)
    good_img = [{"bytes": (DATA / "math_vision" / "images" / "4.jpg").read_bytes(), "path": "4.jpg"}]
    rows += [
        dict(rows[0], id="noans", answer=""),  # excluded at loading (missing_answer)
        dict(rows[1], id="gsm8k-test-1"),  # duplicate id
        dict(rows[2], id="img-on-text-model", images=good_img),  # text-only model: needs_vision (on the worker)
    ]
    data = root / "problems.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=S.PROBLEMS), data)
    local = run_score_job(data, root / "local", model=str(model), executor="local", **GEN)
    return {"root": root, "model": model, "data": data, "local": local}


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    yield
    ray.shutdown()


def _same(a: pa.Table, b: pa.Table) -> None:
    assert a.column_names == b.column_names
    assert a.to_pylist() == b.to_pylist()


@pytest.mark.slow
def test_ray_outputs_equal_local(setup, cluster):
    loc = setup["local"]
    assert loc.stats["counts"]["chunks"] == N_CHUNKS and loc.rollouts.num_rows == 10 * 3
    res = run_score_job(setup["data"], setup["root"] / "ray", model=str(setup["model"]), executor="ray",
                        num_workers=2, **GEN)
    _same(res.rollouts, loc.rollouts)
    _same(res.scores, loc.scores)
    _same(res.excluded, loc.excluded)
    assert sorted(res.excluded.column("reason").to_pylist()) == ["duplicate_id", "missing_answer", "needs_vision"]
    ex = res.stats["settings"]["executor"]
    assert ex["executor"] == "ray" and ex["num_workers"] == 2 and ex["ray_data_llm"] is False
    assert res.stats["settings"]["engine_name"] == "hf"
    assert res.stats["counts"]["chunks_computed"] == N_CHUNKS
    # the parts on disk are the same chunk ids and contents as the local executor's
    for cid in range(N_CHUNKS):
        a = pq.read_table(setup["root"] / "local" / "_work" / "parts" / f"rollouts-{cid:06d}.parquet")
        b = pq.read_table(setup["root"] / "ray" / "_work" / "parts" / f"rollouts-{cid:06d}.parquet")
        _same(a, b)
    # the chunks were computed by Ray actors, not in this process
    workers = {json.loads((setup["root"] / "ray" / "_work" / "parts" / f"timing-{c:06d}.json").read_text())["worker"]
               for c in range(N_CHUNKS)}
    assert workers and all(not w.endswith(f":{os.getpid()}") for w in workers)


@pytest.mark.slow
def test_ray_resume_computes_only_missing_chunks(setup, cluster):
    from typer.testing import CliRunner

    from curation.cli import app

    out = setup["root"] / "resume"
    shutil.copytree(setup["root"] / "local" / "_work", out / "_work")
    parts = out / "_work" / "parts"
    missing = {1, 4}
    for cid in missing:
        for name in ("rollouts", "excluded"):
            (parts / f"{name}-{cid:06d}.parquet").unlink()
        (parts / f"timing-{cid:06d}.json").unlink()
    kept_before = {p.name: p.stat().st_mtime_ns for p in parts.glob("rollouts-*.parquet")}
    args = ["score", "--model", str(setup["model"]), "--data", str(setup["data"]), "--out", str(out),
            "--n", "3", "--max-tokens", "6", "--temperature", "1.0", "--seed", "5", "--chunk-size", "2",
            "--engine", "hf", "--prompt-template", "plain", "--engine-opt", "batch_size=6",
            "--executor", "ray", "--num-workers", "2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    stats = json.loads((out / "stats.json").read_text())
    assert stats["counts"]["chunks_resumed"] == N_CHUNKS - len(missing)
    assert stats["counts"]["chunks_computed"] == len(missing)
    # finished parts were not rewritten; the missing ones were computed on Ray actors
    assert {p.name: p.stat().st_mtime_ns for p in parts.glob("rollouts-*.parquet")
            if p.name in kept_before} == kept_before
    for cid in missing:
        w = json.loads((parts / f"timing-{cid:06d}.json").read_text())["worker"]
        assert not w.endswith(f":{os.getpid()}")
    _same(pq.read_table(out / "rollouts.parquet"), setup["local"].rollouts)
    _same(pq.read_table(out / "scores.parquet"), setup["local"].scores)
    _same(pq.read_table(out / "excluded.parquet"), setup["local"].excluded)


def test_executor_choice_errors():
    with pytest.raises(ValueError, match="unknown executor"):
        make_executor("dask")
    with pytest.raises(ValueError, match="num-workers"):
        make_executor("ray", num_workers=0)
    spec = GenJobSpec("score", "m", "m", "hf", load_template("plain"), 2, 1.0, 1.0, 8, 0)
    with pytest.raises(ValueError, match="engine_obj"):
        make_executor("ray").run(spec, {0: [{"id": "a"}]}, lambda c, o: None, engine_obj=object())


def test_ray_llm_rows_and_reassembly():
    """The ray.data.llm path's pure parts: n single-sample rows per prompt with seed prompt_seed + j (vLLM's
    own seeding of sample j), and per-chunk reassembly from rows in any order."""
    spec = GenJobSpec("score", "m", "lab", "vllm", load_template("plain"), 3, 0.7, 0.9, 5, 11)
    rows = [{"id": "p0", "problem": "1+1?", "answer": "2", "_locator": "f:0"},
            {"id": "p1", "problem": " ", "answer": "3", "_locator": "f:1"},  # cannot be built
            {"id": "p2", "problem": "2+1?", "answer": "3", "_locator": "f:2", "options": []}]
    req, cx = llm_request_rows(spec, 7, rows)
    assert [(r["_pos"], r["_sample"]) for r in req] == [(0, 0), (0, 1), (0, 2), (2, 0), (2, 1), (2, 2)]
    assert [r["sampling_params"]["seed"] for r in req[:3]] == [prompt_seed(11, "p0") + j for j in range(3)]
    assert all(r["sampling_params"]["n"] == 1 and r["_chunk"] == 7 for r in req)
    assert req[0]["messages"][-1]["content"].startswith("1+1?") and [x["reason"] for x in cx.rows] == ["missing_problem"]
    results = []
    for r in reversed(req):  # any arrival order
        results.append({**r, "generated_text": f"t{r['_pos']}{r['_sample']}", "num_generated_tokens": 5 - r["_sample"],
                        "_extracted": "2", "_verdict": "correct", "_correct": True,
                        "__inference_error__": "boom" if (r["_pos"], r["_sample"]) == (2, 1) else ""})
    out = assemble_llm_chunk(spec, rows, results, cx)
    got = out.rollouts.to_pylist()
    assert [(g["problem_id"], g["sample"], g["text"]) for g in got] == [("p0", 0, "t00"), ("p0", 1, "t01"),
                                                                        ("p0", 2, "t02")]
    assert [g["finish_reason"] for g in got] == ["length", "stop", "stop"]  # 5 >= max_tokens=5
    reasons = {r["id"]: r["reason"] for r in out.excluded.to_pylist()}
    assert reasons == {"p1": "missing_problem", "p2": "generation_error"} and out.prompts == 1
    assert isinstance(cx, ExclusionWriter) and len(cx.rows) == 1  # the driver's writer is not modified


@pytest.mark.slow
def test_cot_on_ray_equals_local(setup, cluster):
    """`curate cot` through the same executors: every generated solution (kept or excluded with its text in
    ``raw``) is the same on Ray as locally."""
    from curation.cot.generate import run_cot

    kw = {"teacher": str(setup["model"]), "k": 2, "engine": "hf", "max_tokens": 8, "temperature": 1.0, "seed": 2,
          "chunk_size": 3, "engine_options": {"batch_size": 6}}
    loc = run_cot(setup["data"], setup["root"] / "cot_local", **kw)
    ray_res = run_cot(setup["data"], setup["root"] / "cot_ray", executor="ray", num_workers=2, **kw)
    assert loc.stats["counts"]["generated"] == ray_res.stats["counts"]["generated"] > 0
    _same(ray_res.sft, loc.sft)
    _same(ray_res.excluded, loc.excluded)
    assert ray_res.stats["settings"]["engine_name"] == "hf"


def _class_fields(path: Path, names: set[str]) -> set[str]:
    """Annotated field names of the classes ``names`` in a source file (read with ast: nothing imported)."""
    import ast

    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef) and node.name in names:
            out |= {s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    return out


def test_ray_llm_processor_config_forwards_every_engine_option():
    """The ray.data.llm config (pure; ray.data.llm + vLLM + GPUs cannot run here): every engine option reaches
    vLLMEngineProcessorConfig under a field the installed Ray declares (read from its source), --gpus-per-worker
    becomes the replica's placement, and what has no equivalent is refused instead of dropped."""
    from curation.generation.executors import RayExecutor, llm_processor_config

    opts = {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.85, "max_model_len": 4096, "dtype": "bfloat16",
            "seed": 7, "limit_mm_per_prompt": {"image": 2}, "enforce_eager": True,
            "chat_template_kwargs": {"enable_thinking": False}, "llm_kwargs": {"max_num_seqs": 64},
            "worker_env": {"VLLM_LOGGING_LEVEL": "WARNING"}, "batch_size": 16, "data_parallel_size": 1}
    spec = GenJobSpec("score", "Qwen/Qwen2.5-7B-Instruct", "m", "vllm", load_template("plain"), 4, 1.0, 1.0, 64, 0,
                      engine_options=opts)
    cfg = llm_processor_config(spec, 4, 2, 3, 32, chat_template="{{ messages }}")
    assert cfg["model_source"] == "Qwen/Qwen2.5-7B-Instruct"  # as given: every node resolves it itself
    assert cfg["engine_kwargs"] == {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.85, "max_model_len": 4096,
                                    "dtype": "bfloat16", "seed": 7, "limit_mm_per_prompt": {"image": 2},
                                    "enforce_eager": True, "max_num_seqs": 64}  # batch_size is the hf engine's
    assert cfg["chat_template_stage"] == {"chat_template": "{{ messages }}",
                                          "chat_template_kwargs": {"enable_thinking": False}}
    assert cfg["placement_group_config"] == {"bundle_per_worker": {"GPU": 1.0, "CPU": 3.0}}  # 2 ranks x 1 GPU
    assert cfg["concurrency"] == 4 and cfg["batch_size"] == 32
    assert cfg["runtime_env"] == {"env_vars": {"VLLM_LOGGING_LEVEL": "WARNING"}}

    # the names exist in the installed ray.data.llm (2.60) and vLLM
    llm = Path(ray.__file__).parent / "llm" / "_internal"
    assert set(cfg) <= _class_fields(llm / "batch" / "processor" / "base.py", {"ProcessorConfig", "OfflineProcessorConfig"}) \
        | _class_fields(llm / "batch" / "processor" / "vllm_engine_proc.py", {"vLLMEngineProcessorConfig"})
    assert set(cfg["chat_template_stage"]) <= _class_fields(llm / "batch" / "stages" / "configs.py",
                                                            {"ChatTemplateStageConfig", "_StageConfigBase"})
    assert set(cfg["placement_group_config"]) <= _class_fields(llm / "common" / "placement.py", {"PlacementGroupConfig"})
    assert set(cfg["placement_group_config"]["bundle_per_worker"]) <= _class_fields(llm / "common" / "placement.py",
                                                                                   {"BundleConfig"})
    vllm_args = Path(__file__).resolve().parents[1] / ".venv-vllm" / "lib" / "python3.11" / "site-packages" / "vllm" \
        / "engine" / "arg_utils.py"
    if vllm_args.exists():
        assert set(cfg["engine_kwargs"]) <= _class_fields(vllm_args, {"EngineArgs"})

    def config(gpus, **o):
        return llm_processor_config(dataclasses.replace(spec, engine_options=o), 2, gpus, 1, 8)

    assert config(0.5)["placement_group_config"] == {"bundle_per_worker": {"GPU": 0.5, "CPU": 1.0}}
    assert config(1)["engine_kwargs"] == {"gpu_memory_utilization": 0.9}  # the local engine's GPU default
    assert config(1)["chat_template_stage"] is True and "runtime_env" not in config(1)
    with pytest.raises(ValueError, match="tensor_parallel_size=2"):
        config(2)
    with pytest.raises(ValueError, match="must equal tensor_parallel_size x pipeline_parallel_size = 4"):
        config(2, tensor_parallel_size=2, llm_kwargs={"pipeline_parallel_size": 2})
    with pytest.raises(ValueError, match="vllm_python have no ray.data.llm equivalent"):
        config(1, vllm_python="/x/python")
    with pytest.raises(ValueError, match="unknown engine option"):
        config(1, gpu_mem=0.5)
    with pytest.raises(ValueError, match="--num-workers"):
        config(1, data_parallel_size=2)
    # use_ray_llm=True names why it cannot; "auto" then uses the actors, which honour every option
    with pytest.raises(ValueError, match="vllm_python have no ray.data.llm equivalent"):
        RayExecutor(gpus_per_worker=1, use_ray_llm=True)._use_llm(
            dataclasses.replace(spec, engine_options={"vllm_python": "/x/python"}), {0: [{"id": "a"}]})
    assert RayExecutor(gpus_per_worker=1)._use_llm(
        dataclasses.replace(spec, engine_options={"vllm_python": "/x/python"}), {0: [{"id": "a"}]}) is False


@pytest.mark.slow
def test_adaptive_on_ray_equals_local(setup, cluster):
    """`curate score --adaptive --executor ray`: the rounds run on one pool of engine actors (built once, not per
    round) and give exactly the local executor's rollouts, scores and plans."""
    from curation.score.adaptive import AdaptivePolicy
    from curation.score.posterior import PriorSpec

    pol = AdaptivePolicy(n_max=6, round_size=2, band=(">=0.5", None), prior=PriorSpec())  # uniform: several rounds
    gen = {k: v for k, v in GEN.items() if k != "n"}
    loc = run_score_job(setup["data"], setup["root"] / "ad_local", model=str(setup["model"]), adaptive=pol, **gen)
    res = run_score_job(setup["data"], setup["root"] / "ad_ray", model=str(setup["model"]), executor="ray",
                        num_workers=2, adaptive=pol, **gen)
    assert loc.stats["counts"]["rounds"] >= 2
    _same(res.rollouts, loc.rollouts)
    _same(res.scores, loc.scores)
    _same(res.excluded, loc.excluded)
    assert pq.read_table(setup["root"] / "ad_ray" / "rounds.parquet").equals(
        pq.read_table(setup["root"] / "ad_local" / "rounds.parquet"))
    ex = res.stats["settings"]["executor"]
    assert ex["executor"] == "ray" and ex["persistent_actors"] is True
    workers = set()
    for r in range(res.stats["counts"]["rounds"]):
        for f in (setup["root"] / "ad_ray" / "_work" / f"round-{r:03d}" / "parts").glob("timing-*.json"):
            workers.add(json.loads(f.read_text())["worker"])
    assert workers and all(not w.endswith(f":{os.getpid()}") for w in workers) and len(workers) <= 2


def test_workers_that_fit_counts_by_each_alive_nodes_total_resources():
    from curation.generation.executors import _node_shapes, workers_that_fit

    nodes = [{"Alive": True, "Resources": {"CPU": 16.0, "GPU": 4.0}},
             {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},  # dead: holds nothing
             {"Alive": True, "Resources": {"CPU": 32.0}}]  # no GPU
    assert workers_that_fit(1, 1, nodes) == 5
    assert workers_that_fit(4, 1, nodes) == 4 + 1  # GPUs bound both nodes (16 / 4 CPUs = 4, 8 / 4 = 2)
    assert workers_that_fit(8, 1, nodes) == 2 + 1  # CPUs bound the first node (16 / 8)
    assert workers_that_fit(1, 0.5, nodes) == 8 + 2
    assert workers_that_fit(4, 0, nodes) == 4 + 2 + 8
    assert workers_that_fit(1, 2, nodes[1:]) == 0
    assert workers_that_fit(0, 0, nodes) is None  # asks for nothing: no limit
    assert _node_shapes(nodes + nodes[:1]) == "2 x (CPU=16, GPU=4); 1 x (CPU=8, GPU=1); 1 x (CPU=32, GPU=0)"


@pytest.mark.slow
def test_more_workers_than_the_cluster_holds_run_on_those_that_fit(setup, cluster, caplog):
    """4 one-CPU workers on the 2-CPU cluster: chunks go only to the 2 actors Ray can schedule (the others would
    hold their chunks forever), the job says so and equals the local run.  A worker no node can hold is an
    error on a cluster the job started itself, a warning on an existing one."""
    from curation.generation.executors import RayExecutor, RunInfo

    loc = setup["local"]
    with caplog.at_level("WARNING", logger="curation.generation.executors"):
        res = run_score_job(setup["data"], setup["root"] / "ray4", model=str(setup["model"]), executor="ray",
                            num_workers=4, **GEN)
    _same(res.rollouts, loc.rollouts)
    _same(res.excluded, loc.excluded)
    ex = res.stats["settings"]["executor"]
    assert ex["num_workers"] == 4 and ex["workers_fit"] == 2 and 1 <= ex["workers_used"] <= 2
    assert "holds 2 of the 4 workers asked (num_cpus=1 each" in caplog.text

    gpu = RayExecutor(gpus_per_worker=1)
    with pytest.raises(ValueError, match=r"no node of the Ray cluster can hold one worker \(num_cpus=1, num_gpus=1"):
        gpu._check_fits(True, RunInfo())
    caplog.clear()
    with caplog.at_level("WARNING", logger="curation.generation.executors"):
        info = RunInfo()
        gpu._check_fits(False, info)
    assert info.details["workers_fit"] == 0 and "waiting for the cluster" in caplog.text


@pytest.mark.slow
def test_a_full_cluster_is_waited_for_said_and_the_job_runs_once_room_frees_up(setup, cluster, caplog, monkeypatch):
    """Another job holds both CPUs: no actor of ours can be scheduled, so the job waits (no chunk is sent to an
    unscheduled actor), says so after WAITING_NOTICE_S, and finishes, equal to the local run, once room frees."""
    import threading
    import time

    import curation.generation.executors as E

    monkeypatch.setattr(E, "WAITING_NOTICE_S", 2.0)

    @ray.remote(num_cpus=2)
    class Hog:
        def ready(self) -> bool:
            return True

    hog = Hog.remote()
    ray.get(hog.ready.remote())
    out: dict = {}

    def job() -> None:
        try:
            out["res"] = run_score_job(setup["data"], setup["root"] / "full", model=str(setup["model"]),
                                       executor="ray", num_workers=2, **GEN)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            out["err"] = e

    with caplog.at_level("WARNING", logger="curation.generation.executors"):
        t = threading.Thread(target=job, daemon=True)
        t.start()
        deadline = time.monotonic() + 60
        while "scheduled no worker" not in caplog.text and time.monotonic() < deadline and t.is_alive():
            time.sleep(0.5)
        assert t.is_alive() and "Ray has scheduled no worker for 2 s" in caplog.text
        assert not (setup["root"] / "full" / "rollouts.parquet").exists()
        ray.kill(hog)
        t.join(timeout=300)
    assert not t.is_alive() and "err" not in out, out.get("err")
    _same(out["res"].rollouts, setup["local"].rollouts)
