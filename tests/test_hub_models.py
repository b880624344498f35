"""Hub ids resolve like transformers resolves them (curation.core.models.resolve_model / model_source): a
checkpoint folder, else the huggingface_hub cache (laid out here in a temporary HF_HUB_CACHE exactly as
huggingface_hub leaves it: blobs, snapshot symlinks, refs/main), else - online - a download (from the local
Hub stand-in, tests/hub_server.py).  Every consumer goes through it: the vision check, the chat template, the
processor, the hf engine, `curate score` / `curate cot` and the trainers' processor loading; a hub id
therefore scores image problems exactly like a folder (it used to exclude all of them as needs_vision)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hub_cache import add_to_hub_cache

from curation.core import models
from curation.core import schema as S
from curation.core.models import ModelNotFoundError, model_source, resolve_model

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VL_ID = "rlcurate-test/tiny-qwen2-vl"
TEXT_ID = "rlcurate-test/tiny-qwen2"
METADATA = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf_cache" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hub_id_resolves_to_the_cached_snapshot(hub_cache: Path, tiny_qwen2_vl_dir: Path):
    snap = add_to_hub_cache(tiny_qwen2_vl_dir, hub_cache, VL_ID)
    assert (snap / "config.json").is_symlink()  # the cache layout huggingface_hub leaves
    assert resolve_model(tiny_qwen2_vl_dir) == tiny_qwen2_vl_dir  # a folder is itself
    assert resolve_model(VL_ID) == snap
    assert resolve_model(VL_ID, revision=snap.name) == snap  # a commit id needs no ref
    assert model_source(VL_ID) == str(snap)  # weights cached: loaders get the local snapshot
    assert model_source(tiny_qwen2_vl_dir) == str(tiny_qwen2_vl_dir)
    # every reader of a checkpoint accepts the hub id and sees what the folder holds
    assert models.is_vision_language(VL_ID) is True
    assert models.read_chat_template(VL_ID) == models.read_chat_template(tiny_qwen2_vl_dir) is not None
    proc = models.load_processor(VL_ID)
    ref = models.load_processor(tiny_qwen2_vl_dir)
    assert hasattr(proc, "image_processor") and proc.tokenizer.get_vocab() == ref.tokenizer.get_vocab()
    assert proc.tokenizer.padding_side == "left"


def test_trainers_processor_from_a_hub_id(hub_cache: Path, tiny_qwen2_vl_dir: Path, tiny_qwen2_dir: Path):
    from training.utils import model_and_processor

    add_to_hub_cache(tiny_qwen2_vl_dir, hub_cache, VL_ID)
    add_to_hub_cache(tiny_qwen2_dir, hub_cache, TEXT_ID)
    proc, vl = model_and_processor(VL_ID, "right")
    assert vl is True and hasattr(proc, "image_processor") and proc.tokenizer.padding_side == "right"
    tok, vl = model_and_processor(TEXT_ID, "left")
    assert vl is False and tok.padding_side == "left" and tok.chat_template


def test_what_is_missing_is_reported_with_every_place_looked(hub_cache: Path, tiny_qwen2_dir: Path,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model("rlcurate-test/absent")
    msg = str(e.value)
    assert f"no folder {Path.cwd() / 'rlcurate-test/absent'}" in msg
    assert str(hub_cache / "models--rlcurate-test--absent") in msg and "HF_HUB_OFFLINE=1" in msg
    assert isinstance(e.value, FileNotFoundError)  # the CLIs report FileNotFoundError as a clean error
    with pytest.raises(ModelNotFoundError, match="not a valid hub id"):
        resolve_model("runs/a/b")
    a_file = tmp_path / "model.bin"
    a_file.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        resolve_model(a_file)

    add_to_hub_cache(tiny_qwen2_dir, hub_cache, TEXT_ID)
    with pytest.raises(ModelNotFoundError, match="no refs/v2"):
        resolve_model(TEXT_ID, revision="v2")

    # metadata only (what resolve_model downloads for a vision check): readers work, loaders are told
    meta = add_to_hub_cache(tiny_qwen2_dir, hub_cache, "rlcurate-test/meta-only", files=METADATA)
    assert resolve_model("rlcurate-test/meta-only") == meta and not models.has_weights(meta)
    assert models.is_vision_language("rlcurate-test/meta-only") is False
    with pytest.raises(ModelNotFoundError, match="snapshot without \\(complete\\) weights"):
        model_source("rlcurate-test/meta-only")
    # a blob that never arrived leaves a dangling symlink: not weights either
    snap = add_to_hub_cache(tiny_qwen2_dir, hub_cache, "rlcurate-test/dangling")
    (snap / "model.safetensors").resolve().unlink()
    assert (snap / "model.safetensors").is_symlink() and not models.has_weights(snap)
    with pytest.raises(ModelNotFoundError):
        model_source("rlcurate-test/dangling")
    # online, a loader that downloads by itself (vLLM, from_pretrained) gets the hub id
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert model_source("rlcurate-test/meta-only") == "rlcurate-test/meta-only"
    assert model_source("rlcurate-test/absent") == "rlcurate-test/absent"
    with pytest.raises(ModelNotFoundError):  # a path-like name is never sent to the Hub
        model_source("runs/a/b")


def _math_vision(n: int) -> list[dict]:
    from curation.ingest.sources import ingest

    return ingest(DATA / "math_vision" / "testmini.jsonl", "math_vision").rows[:n]


@pytest.mark.slow
def test_score_and_cot_sample_image_problems_from_a_hub_id(hub_cache: Path, tiny_qwen2_vl_dir: Path,
                                                           tmp_path: Path):
    """The reported bug: a hub id excluded every image problem as needs_vision (0 rollouts)."""
    from curation.cot import run_cot
    from curation.score.job import run_score_job

    add_to_hub_cache(tiny_qwen2_vl_dir, hub_cache, VL_ID)
    rows = _math_vision(4)
    assert all(r["images"] for r in rows)
    data = tmp_path / "problems.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=S.PROBLEMS), data)

    res = run_score_job(data, tmp_path / "score", model=VL_ID, engine="hf", n=2, max_tokens=4, chunk_size=2,
                        engine_options={"batch_size": 4})
    assert res.excluded.num_rows == 0
    assert sorted(set(res.rollouts.column("problem_id").to_pylist())) == sorted(r["id"] for r in rows)
    assert res.rollouts.num_rows == 4 * 2 and set(res.rollouts.column("model").to_pylist()) == {VL_ID}
    ref = run_score_job(data, tmp_path / "score_folder", model=str(tiny_qwen2_vl_dir), engine="hf", n=2,
                        max_tokens=4, chunk_size=2, engine_options={"batch_size": 4})
    assert res.rollouts.column("text").to_pylist() == ref.rollouts.column("text").to_pylist()

    cot = run_cot(data, tmp_path / "cot", teacher=VL_ID, k=1, engine="hf", max_tokens=4, chunk_size=2,
                  engine_options={"batch_size": 4})
    reasons = set(cot.excluded.column("reason").to_pylist())
    assert not reasons & {"has_images", "needs_vision"}
    usable = 4 - sum(cot.stats["input_reasons"].values())  # e.g. an unverifiable gold answer
    assert usable > 0 and cot.stats["counts"]["generated"] == usable


def test_cot_with_an_unavailable_teacher_fails_before_any_work(hub_cache: Path, tmp_path: Path):
    from curation.cot import run_cot

    data = tmp_path / "problems.parquet"
    pq.write_table(pa.Table.from_pylist(_math_vision(2), schema=S.PROBLEMS), data)
    with pytest.raises(ModelNotFoundError, match="rlcurate-test/absent"):
        run_cot(data, tmp_path / "cot", teacher="rlcurate-test/absent", engine="hf")
    assert not (tmp_path / "cot" / "_work").exists()


@pytest.mark.slow
def test_online_resolution_downloads_metadata_then_weights(tiny_qwen2_dir: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch):
    """Online (HF_HUB_OFFLINE=0; the Hub is the local stand-in): a vision check downloads the metadata only,
    the loaders are handed the hub id until the weights are cached, weights=True downloads them; afterwards
    the same id resolves offline from the cache."""
    from hub_server import HubServer
    from huggingface_hub import HfApi
    from huggingface_hub import constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)
    token, repo = "hf_local_test_token", "rlcurate-test/online-tiny"
    cache = tmp_path / "hub"
    code = (
        "import json, os\n"
        "from curation.core.models import has_weights, model_source, resolve_model\n"
        f"meta = resolve_model({repo!r})\n"
        "files_meta = sorted(os.listdir(meta))\n"
        f"before = model_source({repo!r})\n"
        f"full = resolve_model({repo!r}, weights=True)\n"
        "print(json.dumps({'meta': str(meta), 'files_meta': files_meta, 'before': before,\n"
        f"                  'full': str(full), 'weights': has_weights(full), 'after': model_source({repo!r})}}))\n"
    )
    with HubServer({token: "rlcurate"}) as hub:
        api = HfApi(endpoint=hub.url, token=token)
        api.create_repo(repo)
        api.upload_folder(repo_id=repo, folder_path=str(tiny_qwen2_dir))
        env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1",
                   HF_HUB_CACHE=str(cache), HF_HUB_DISABLE_TELEMETRY="1")
        p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert "config.json" in got["files_meta"] and "tokenizer.json" in got["files_meta"]
    assert "model.safetensors" not in got["files_meta"]  # the vision check did not fetch the weights
    assert got["before"] == repo  # not cached yet: the loader is given the id and downloads itself
    assert got["weights"] and got["full"] == got["meta"] == got["after"]  # one snapshot, now complete
    # the same id now resolves offline from that cache
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert str(resolve_model(repo, weights=True)) == got["full"]
    shutil.rmtree(cache)
    with pytest.raises(ModelNotFoundError):
        resolve_model(repo)
