"""`curate cot`: selection, rejection sampling and filters on real teachers and real data.

- SmolLM2-135M-Instruct (real weights, hf engine on CPU) as teacher on easy one-step arithmetic
  (pipelines/demo_data/arithmetic.jsonl).  SmolLM2 does not write <think> tags: with `structure=strict`
  every solution is rejected as bad_structure (shown by re-filtering the same generations); with the
  documented `structure=lenient` (untagged reasoning ending in a final answer, rewritten into <think> form)
  some verified solutions are kept, every other one is in excluded.parquet with its reason, and the SFT
  file trains a tiny Qwen2 with stock `trl.SFTTrainer`.
- Real VLM outputs on MATH-Vision testmini (`--responses`, 10 graded models) give a multimodal SFT set whose
  rows keep their images (original bytes) and train a tiny Qwen2-VL with stock `trl.SFTTrainer`.
- A tiny random Qwen2-VL teacher on MATH-Vision: every (garbage) solution is rejected, with the problem's
  images kept in excluded.parquet.
- kill -9 during a run, then the same command again: outputs equal an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from procs import kill_when

from curation.core import schema as S
from curation.cot import (
    edit_distance_matrix,
    farthest_point_selection,
    judge_sample,
    parse_keep,
    run_cot,
    select_solutions,
)
from curation.cot.quality import REASONS, QualityConfig
from curation.score.scores import trace_diversity

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CURATE = [sys.executable, "-m", "curation.cli"]
SOLUTION_REASONS = set(REASONS) | {"no_answer", "wrong_answer", "verify_timeout", "verify_error", "not_selected"}

# A prompt that SmolLM2-135M follows (it reads "<think>" instructions as "think outside the box"): explain,
# then state the answer.  Used with structure=lenient; the SFT rows then carry this system prompt.
SMALL_TEMPLATE = """name: small_cot
system: "You are a helpful math tutor. Explain the calculation step by step in a few sentences, then finish with: The answer is <number>."
user: "{problem}"
"""


def _solutions(excluded: pa.Table) -> list[dict]:
    return [r for r in excluded.to_pylist() if r["locator"] and "#sample=" in r["locator"]]


# --- selection ------------------------------------------------------------------------------------------


def test_parse_keep():
    assert parse_keep("shortest") == ("shortest", None)
    assert parse_keep("diverse:3") == ("diverse", 3)
    for bad in ("diverse", "diverse:0", "random", "all:2"):
        with pytest.raises(ValueError):
            parse_keep(bad)


def test_farthest_point_selection_on_a_line():
    # points 0, 1, 2, 10 on a line: start with the point farthest on average (10), then the farthest from it (0)
    x = np.array([0.0, 1.0, 2.0, 10.0])
    d = np.abs(x[:, None] - x[None, :])
    assert farthest_point_selection(d, 2) == [0, 3]
    assert farthest_point_selection(d, 3) == [0, 2, 3]
    assert farthest_point_selection(d, 9) == [0, 1, 2, 3]


def test_select_solutions_modes():
    a = "We add 5 and 7 to get 12. So the answer is 12."
    a2 = "We add 5 and 7 to get 12. Thus the answer is 12."
    b = "Count up from 7: 8, 9, 10, 11, 12 gives five steps, so 5 + 7 = 12 and the answer is 12."
    cands = [{"sample": 0, "text": a, "num_tokens": 20}, {"sample": 2, "text": a2, "num_tokens": 20},
             {"sample": 3, "text": b, "num_tokens": 35}]
    assert select_solutions(cands, "shortest") == [0]  # tie on tokens and chars -> lower sample
    assert select_solutions(cands, "longest") == [2]
    assert select_solutions(cands, "all") == [0, 1, 2]
    picked = select_solutions(cands, "diverse:2")
    assert 2 in picked and len(picked) == 2
    # the diverse pair has the highest TDS (mean normalised edit distance) among all pairs
    pairs = [(i, j) for i in range(3) for j in range(i + 1, 3)]
    tds = {p: trace_diversity([cands[p[0]]["text"], cands[p[1]]["text"]]) for p in pairs}
    assert tds[tuple(picked)] == max(tds.values())
    d = edit_distance_matrix([a, a2, b])
    assert d[0, 1] == pytest.approx(1 / 13) and np.allclose(d, d.T)  # one word of 13 differs
    assert select_solutions([], "diverse:2") == []


def test_judge_sample_reason_priority():
    good = "<think>\nWe add 5 and 7. Counting up from 7 by five gives 12, so 5 + 7 = 12.\n</think>\n\\boxed{12}"
    q = QualityConfig()
    assert judge_sample({"text": good, "finish_reason": "stop", "verdict": "correct"}, "5+7?", q) == (None, None, [])
    reason, detail, failed = judge_sample({"text": good, "finish_reason": "stop", "verdict": "incorrect",
                                           "extracted": "12"}, "5+7?", q)
    assert reason == "wrong_answer" and "extracted '12'" in detail
    reason, detail, failed = judge_sample({"text": good[:30], "finish_reason": "length", "verdict": "no_answer"},
                                          "5+7?", q)
    assert reason == "truncated" and failed[:2] == ["truncated", "bad_structure"] and failed[-1] == "no_answer"
    assert "also: bad_structure" in detail


# --- pre-generated responses: real VLM outputs on MATH-Vision -> multimodal SFT set ---------------------------


@pytest.fixture(scope="module")
def mathvision(tmp_path_factory):
    from curation.ingest.sources import ingest

    root = tmp_path_factory.mktemp("cot_mv")
    rows = ingest(DATA / "math_vision" / "testmini.jsonl", "math_vision").rows[:60]
    problems = root / "problems.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=S.PROBLEMS), problems)
    by_orig = {json.loads(r["meta"])["id"]: r["id"] for r in rows}
    responses = root / "responses.jsonl"
    n = 0
    with open(responses, "w") as f:
        for line in open(DATA / "math_vision" / "model_outputs.jsonl"):
            d = json.loads(line)
            if d["id"] in by_orig:
                f.write(json.dumps({"problem_id": by_orig[d["id"]], "model": d["model"], "response": d["response"]}) + "\n")
                n += 1
        f.write(json.dumps({"problem_id": "math_vision-unknown", "response": "x"}) + "\n")
        f.write("{not json\n")
    return {"root": root, "problems": problems, "responses": responses, "rows": rows, "n_responses": n}


def test_responses_multimodal_sft_keeps_images(mathvision, tmp_path):
    res = run_cot(mathvision["problems"], tmp_path, responses=mathvision["responses"], keep="all",
                  quality=QualityConfig(structure="lenient"))
    st = res.stats
    sols = _solutions(res.excluded)
    # every response is either kept or excluded with a known reason
    assert st["counts"]["generated"] == mathvision["n_responses"] == res.sft.num_rows + len(sols)
    assert {r["reason"] for r in sols} <= SOLUTION_REASONS and all(r["detail"] for r in sols)
    assert {r["reason"] for r in res.excluded.to_pylist() if r not in sols} == {"unknown_problem", "malformed_row"}
    assert res.sft.num_rows >= 10
    assert res.sft.schema.equals(S.SFT_MM, check_metadata=False)
    assert pq.read_schema(tmp_path / "sft.parquet").equals(S.SFT_MM, check_metadata=False)
    src = {r["id"]: r for r in mathvision["rows"]}
    for row in res.sft.to_pylist():
        prob = src[row["problem_id"]]
        assert [i["bytes"] for i in row["images"]] == [i["bytes"] for i in prob["images"]]  # original bytes
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert sum(p["type"] == "image" for p in row["messages"][1]["content"]) == len(row["images"])
        answer = row["messages"][2]["content"][0]["text"]
        assert answer.startswith("<think>\n") and "</think>" in answer and "\\boxed{" in answer.split("</think>")[1]
    # rejected solutions keep the problem's images too, and name the sample
    assert all(r["images"] and r["images"][0]["bytes"] == src[r["id"]]["images"][0]["bytes"] for r in sols)
    assert all(r["raw"] is not None and r["step"] == "cot" for r in sols)
    assert sum(st["per_problem"][p]["kept"] for p in st["per_problem"]) == res.sft.num_rows
    assert sum(st["reasons"].values()) == len(sols)

    # --keep shortest: one per problem with an accepted solution; the others become not_selected
    short = run_cot(mathvision["problems"], tmp_path / "short", responses=mathvision["responses"], keep="shortest",
                    quality=QualityConfig(structure="lenient"))
    with_kept = sum(1 for p in st["per_problem"].values() if p["accepted"])
    assert short.sft.num_rows == with_kept == short.stats["counts"]["problems_with_kept"]
    assert short.stats["reasons"].get("not_selected", 0) == st["counts"]["accepted"] - with_kept


@pytest.mark.slow
def test_multimodal_sft_trains_with_stock_sft_trainer(mathvision, tmp_path, tiny_qwen2_vl_dir):
    from datasets import load_dataset
    from PIL import Image
    from trl import SFTConfig, SFTTrainer

    from curation.core.models import load_processor

    run_cot(mathvision["problems"], tmp_path / "cot", responses=mathvision["responses"], keep="shortest",
            quality=QualityConfig(structure="lenient"))
    ds = load_dataset("parquet", data_files=str(tmp_path / "cot" / "sft.parquet"), split="train")
    assert isinstance(ds[0]["images"][0], Image.Image)
    args = SFTConfig(output_dir=str(tmp_path / "sft"), per_device_train_batch_size=2, max_steps=1, report_to="none",
                     use_cpu=True, save_strategy="no", bf16=False, logging_steps=1)
    trainer = SFTTrainer(model=str(tiny_qwen2_vl_dir), args=args, train_dataset=ds.select(range(2)),
                         processing_class=load_processor(tiny_qwen2_vl_dir))
    out = trainer.train()
    assert out.global_step == 1 and np.isfinite(out.training_loss) and out.training_loss > 0


# --- real teacher: SmolLM2-135M on one-step arithmetic ---------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_cot(tmp_path_factory):
    from curation.core.models import ensure_smollm2
    from curation.ingest.sources import ingest

    root = tmp_path_factory.mktemp("cot_smol")
    rows, seen = [], set()
    for r in ingest(ROOT / "pipelines" / "demo_data" / "arithmetic.jsonl", "jsonl").rows:
        if json.loads(r["meta"])["difficulty"] == 1 and r["id"] not in seen:
            seen.add(r["id"])
            rows.append(r)
    rows = rows[:6]
    problems = root / "problems.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=S.PROBLEMS), problems)
    template = root / "small_cot.yaml"
    template.write_text(SMALL_TEMPLATE)
    kw = dict(teacher=str(ensure_smollm2()), k=5, engine="hf", max_tokens=96, temperature=0.7, top_p=0.95, seed=0,
              template=str(template), chunk_size=3, engine_options={"batch_size": 16})
    out = root / "out"
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2-core CI box shared with other jobs: one thread avoids OpenMP oversubscription
    try:
        lenient = run_cot(problems, out, quality=QualityConfig(structure="lenient"), keep="all", **kw)
    finally:
        torch.set_num_threads(threads)
    sft_copy = root / "sft_lenient.parquet"
    sft_copy.write_bytes((out / "sft.parquet").read_bytes())
    strict = run_cot(problems, out, quality=QualityConfig(structure="strict"), keep="all", **kw)  # re-filter only
    return {"rows": rows, "lenient": lenient, "strict": strict, "sft": sft_copy}


@pytest.mark.slow
def test_smollm2_teacher_lenient_keeps_verified_solutions(smollm2_cot):
    res = smollm2_cot["lenient"]
    st = res.stats
    assert st["counts"]["generated"] == 6 * 5
    assert 1 <= res.sft.num_rows == st["counts"]["accepted"] < 30
    sols = _solutions(res.excluded)
    assert len(sols) + res.sft.num_rows == 30  # every generated solution is accounted for
    assert {r["reason"] for r in sols} <= SOLUTION_REASONS and all(r["detail"] and r["raw"] is not None for r in sols)
    # each problem's 5 samples: kept ones in sft, the rest in excluded, none twice
    keys = [(r["id"], r["locator"].split("#sample=")[1]) for r in sols]
    keys += [tuple(r["id"].split("#")) for r in res.sft.to_pylist()]
    assert len(keys) == len(set(keys)) == 30
    gold = {r["id"]: r["answer"] for r in smollm2_cot["rows"]}
    from curation.verify import verify_batch

    for row in res.sft.to_pylist():
        msgs = row["messages"]
        assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
        assert "math tutor" in msgs[0]["content"]
        sol = msgs[2]["content"]
        assert sol.startswith("<think>\n") and sol.count("</think>") == 1
        assert verify_batch([gold[row["problem_id"]]], [sol])[0].correct  # rejection sampling held
    assert res.sft.schema.equals(S.SFT_TEXT, check_metadata=False)


@pytest.mark.slow
def test_smollm2_strict_structure_rejects_untagged_output(smollm2_cot):
    strict = smollm2_cot["strict"]
    st = strict.stats
    # same generations re-filtered: nothing generated again, no tags -> nothing accepted
    assert st["counts"]["chunks_resumed"] == st["counts"]["chunks"] == 2
    assert st["timing"]["generation_s"] == 0.0
    assert strict.sft.num_rows == 0 and st["counts"]["generated"] == 30
    assert set(st["reasons"]) <= {"bad_structure", "truncated"}  # truncated ones are reported first
    assert st["checks_failed"]["bad_structure"] == 30


@pytest.mark.slow
def test_smollm2_sft_trains_with_stock_sft_trainer(smollm2_cot, tmp_path, tiny_qwen2_dir):
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from curation.core.models import load_processor

    ds = load_dataset("parquet", data_files=str(smollm2_cot["sft"]), split="train")
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=1, max_steps=1, report_to="none",
                     use_cpu=True, save_strategy="no", bf16=False, logging_steps=1)
    trainer = SFTTrainer(model=str(tiny_qwen2_dir), args=args, train_dataset=ds,
                         processing_class=load_processor(tiny_qwen2_dir))
    before = {k: v.clone() for k, v in trainer.model.named_parameters()}
    out = trainer.train()
    assert out.global_step == 1 and np.isfinite(out.training_loss)
    assert any(not (before[k] == v).all() for k, v in trainer.model.named_parameters())  # a real update


# --- tiny random VLM teacher on MATH-Vision: everything rejected, images kept -----------------------------------


@pytest.mark.slow
def test_tiny_vl_teacher_rejections_keep_images(mathvision, tmp_path, tiny_qwen2_vl_dir):
    rows = mathvision["rows"][:3]
    problems = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=S.PROBLEMS), problems)
    res = run_cot(problems, tmp_path / "vl", teacher=str(tiny_qwen2_vl_dir), k=2, engine="hf", max_tokens=12,
                  chunk_size=3)
    sols = _solutions(res.excluded)
    assert res.sft.num_rows == 0 and len(sols) == 6
    assert {r["reason"] for r in sols} <= {"truncated", "bad_structure"}
    src = {r["id"]: r for r in rows}
    assert all(r["images"][0]["bytes"] == src[r["id"]]["images"][0]["bytes"] for r in sols)
    assert res.stats["acceptance_histogram"] == {"0/2": 3}

    # --text-only: image problems are excluded before any generation
    txt = run_cot(problems, tmp_path / "txt", teacher=str(tiny_qwen2_vl_dir), k=2, engine="hf", max_tokens=12,
                  text_only=True)
    assert txt.stats["counts"]["generated"] == 0
    assert [r["reason"] for r in txt.excluded.to_pylist()] == ["has_images"] * 3
    assert all(r["images"] for r in txt.excluded.to_pylist())


# --- resume after kill -9 --------------------------------------------------------------------------------------


def _cli_args(model: Path, data: Path, out: Path) -> list[str]:
    return ["cot", "--teacher", str(model), "--data", str(data), "--out", str(out), "--k", "3", "--max-tokens", "6",
            "--temperature", "1.0", "--seed", "3", "--chunk-size", "1", "--engine", "hf", "--engine-opt",
            "batch_size=3", "--keep", "all"]


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted(tmp_path, tiny_qwen2_dir):
    rows = [{"id": f"add-{i}", "source": "t", "problem": f"What is {i} + {i + 3}?", "images": [],
             "answer": str(2 * i + 3), "options": [], "solution": None, "meta": None} for i in range(10)]
    rows.append(dict(rows[0], id="noans", answer=""))
    rows.append(dict(rows[1], id="img", images=[{"bytes": (DATA / "math_vision/images/4.jpg").read_bytes(),
                                                   "path": "4.jpg"}]))
    data = tmp_path / "problems.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=S.PROBLEMS), data)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    full = tmp_path / "full"
    r = subprocess.run(CURATE + _cli_args(tiny_qwen2_dir, data, full), env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]

    out = tmp_path / "killed"
    parts = out / "_work" / "parts"
    kill_when(CURATE + _cli_args(tiny_qwen2_dir, data, out), lambda: len(list(parts.glob("samples-*.parquet"))) >= 2,
              env=env, cwd=ROOT)
    assert 2 <= len(list(parts.glob("samples-*.parquet"))) < 10 and not (out / "sft.parquet").exists()

    r = subprocess.run(CURATE + _cli_args(tiny_qwen2_dir, data, out), env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed" in r.stdout
    a, b = pq.read_table(full / "excluded.parquet"), pq.read_table(out / "excluded.parquet")
    assert a.equals(b)  # same rows, same texts, same order: nothing lost, nothing duplicated
    keys = [x for x in b.column("locator").to_pylist() if "#sample=" in x]
    assert len(keys) == len(set(keys)) == 10 * 3
    assert Counter(b.column("reason").to_pylist())["missing_answer"] == 1
    assert Counter(b.column("reason").to_pylist())["has_images"] == 1  # text-only teacher
    assert pq.read_table(full / "sft.parquet").equals(pq.read_table(out / "sft.parquet"))
    sa, sb = (json.loads((d / "stats.json").read_text()) for d in (full, out))
    assert sa["reasons"] == sb["reasons"] and sa["per_problem"] == sb["per_problem"]
    assert sb["counts"]["chunks_resumed"] >= 2

    # a different generation setting in the same folder is refused instead of mixing samples
    bad = subprocess.run(CURATE + _cli_args(tiny_qwen2_dir, data, out)[:-2] + ["--k", "2"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "different settings" in (bad.stdout + bad.stderr)


def test_argument_errors(mathvision, tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        run_cot(mathvision["problems"], tmp_path, teacher="x", responses=mathvision["responses"])
    with pytest.raises(ValueError, match="exactly one"):
        run_cot(mathvision["problems"], tmp_path)
    with pytest.raises(ValueError, match="--keep"):
        run_cot(mathvision["problems"], tmp_path, responses=mathvision["responses"], keep="random")
