"""`curate rl-set` on real data: MATH-Vision testmini (images) + GSM8K test (text), with pass rates scored
from real model outputs (MATH-Vision's 10 graded VLMs, GSM8K's 4 example solutions per problem); bad rows
of every kind; pass-rate band; balancing; modality splits; and stock `trl.GRPOTrainer` on the outputs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.core import schema as S
from curation.rlset import Bound, balance_groups, build_rl_set, difficulty_bin, parse_bound

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """problems.parquet (40 MATH-Vision + 40 GSM8K rows + 6 bad rows) and scores.parquet from real outputs."""
    from curation.ingest.sources import ingest
    from curation.score.job import score_pregenerated

    root = tmp_path_factory.mktemp("rlset")
    mv = ingest(DATA / "math_vision" / "testmini.jsonl", "math_vision").rows[:40]
    gsm = ingest(DATA / "gsm8k" / "test.jsonl", "gsm8k").rows[:40]
    bad = [
        dict(gsm[0], id="bad-missing-answer", answer=""),
        dict(gsm[1], id="bad-proof", answer="The proof follows by induction on n. QED"),
        dict(gsm[2], id="bad-long-answer",
             answer="a_1 + a_2 + a_3 + a_4 + a_5 + a_6 + a_7 + a_8 + a_9 + a_{10} + a_{11} + a_{12}"),
        dict(mv[0], id="bad-image", images=[{"bytes": b"\x89PNG\r\n\x1a\ngarbage", "path": "x.png"}]),
        dict(mv[1], id="bad-choice", answer="F", options=["1", "2", "3", "4"]),
        dict(gsm[3]),  # duplicate id
    ]
    rows = mv + gsm + bad
    problems = root / "problems.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=S.PROBLEMS), problems)

    # real graded outputs -> long-form rollouts keyed by our problem ids, one "pool" model per data set
    by_orig = {json.loads(r["meta"])["id"]: r["id"] for r in mv}
    by_question = {r["problem"]: r["id"] for r in gsm}
    long = root / "rollouts.jsonl"
    with open(long, "w") as f:
        for line in open(DATA / "math_vision" / "model_outputs.jsonl"):
            d = json.loads(line)
            if d["id"] in by_orig:
                f.write(json.dumps({"problem_id": by_orig[d["id"]], "model": "pool", "response": d["response"]}) + "\n")
        for line in open(DATA / "gsm8k" / "example_model_solutions.jsonl"):
            d = json.loads(line)
            pid = by_question.get(d["question"].strip())
            if pid:
                for key in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"):
                    f.write(json.dumps({"problem_id": pid, "model": "pool", "response": d[key]["solution"]}) + "\n")
    scored = score_pregenerated(long, root / "score", problems=problems)
    return {"root": root, "problems": problems, "scores": root / "score" / "scores.parquet", "mv": mv, "gsm": gsm,
            "score_table": scored.scores}


def _by_id(table: pa.Table) -> dict[str, dict]:
    return {r["problem_id"]: r for r in table.to_pylist()}


def test_bounds_parse_explicitly():
    assert parse_bound(">0", "min") == Bound(0.0, False)
    assert parse_bound(">=0.125", "min") == Bound(0.125, True)
    assert parse_bound("0.1", "min") == Bound(0.1, True)  # bare number: inclusive
    assert parse_bound("<1", "max") == Bound(1.0, False)
    assert parse_bound("<=0.9", "max") == Bound(0.9, True)
    assert parse_bound(None, "max") is None
    for bad, side in (("<0.5", "min"), (">0.5", "max"), ("1.5", "max"), ("abc", "min")):
        with pytest.raises(ValueError):
            parse_bound(bad, side)
    assert Bound(0.0, False).admits(0.25, "min") and not Bound(0.0, False).admits(0.0, "min")
    assert Bound(1.0, True).admits(1.0, "max") and not Bound(1.0, False).admits(1.0, "max")
    assert [difficulty_bin(p, 3) for p in (0.0, 0.33, 0.34, 0.66, 0.67, 1.0)] == [0, 0, 1, 1, 2, 2]


def test_all_rows_splits_and_bad_rows(inputs, tmp_path):
    res = build_rl_set(inputs["problems"], tmp_path)
    reasons = {r["id"]: r["reason"] for r in res.excluded.to_pylist()}
    assert reasons == {
        "bad-missing-answer": "missing_answer",
        "bad-proof": "unverifiable",
        "bad-long-answer": "answer_too_long",
        "bad-image": "bad_image",
        "bad-choice": "unverifiable",
        inputs["gsm"][3]["id"]: "duplicate_id",
    }
    details = {r["id"]: r["detail"] for r in res.excluded.to_pylist()}
    assert "proof" in details["bad-proof"] and "choice_not_in_options" in details["bad-choice"]
    assert "bad-image" in details["bad-image"] and ":" in details["bad-image"]  # names the row
    assert res.rl_multimodal.num_rows == 40 and res.rl_text.num_rows == 40 and res.rl.num_rows == 80
    assert res.stats["counts"]["rows_read"] == 86 == res.rl.num_rows + res.excluded.num_rows

    # files on disk: exact schemas; rl.parquet is mixed -> multimodal schema, input order
    assert pq.read_schema(tmp_path / "rl_text.parquet").equals(S.RL_TEXT, check_metadata=False)
    assert pq.read_schema(tmp_path / "rl_multimodal.parquet").equals(S.RL_MM, check_metadata=False)
    assert pq.read_schema(tmp_path / "rl.parquet").equals(S.RL_MM, check_metadata=False)
    assert pq.read_table(tmp_path / "rl.parquet").column("problem_id").to_pylist() == [
        r["id"] for r in inputs["mv"] + inputs["gsm"]]

    # images survive with their original bytes, one image part per image
    src = {r["id"]: r for r in inputs["mv"]}
    for row in pq.read_table(tmp_path / "rl_multimodal.parquet").to_pylist():
        assert [i["bytes"] for i in row["images"]] == [i["bytes"] for i in src[row["problem_id"]]["images"]]
        user = row["prompt"][-1]
        assert sum(p["type"] == "image" for p in user["content"]) == len(row["images"]) >= 1
        assert row["prompt"][0]["role"] == "system" and "<think>" in row["prompt"][0]["content"][0]["text"]
        assert row["options"] == (src[row["problem_id"]]["options"] or None)
    text = pq.read_table(tmp_path / "rl_text.parquet").to_pylist()
    assert all(isinstance(m["content"], str) for r in text for m in r["prompt"])
    assert all(r["vps"] is None and r["pass_rate"] is None for r in text)  # no scores given


def test_pass_band_and_vps_columns(inputs, tmp_path):
    scores = {r["problem_id"]: r for r in inputs["score_table"].to_pylist()}
    p = {pid: r["pass_rate"] for pid, r in scores.items()}
    assert any(v == 0.0 for v in p.values()) and any(v == 1.0 for v in p.values())  # real extremes exist
    res = build_rl_set(inputs["problems"], tmp_path / "band", scores=inputs["scores"], min_pass=">0", max_pass="<1")
    kept = _by_id(res.rl)
    assert kept and all(0 < r["pass_rate"] < 1 for r in kept.values())
    for pid, r in kept.items():  # VPS components copied from the scores table
        for c in ("pass_rate", "ovs", "tds", "vps"):
            assert r[c] == pytest.approx(scores[pid][c])
    out_band = [r for r in res.excluded.to_pylist() if r["reason"] == "pass_rate_out_of_band"]
    assert out_band and all(p[r["id"]] in (0.0, 1.0) for r in out_band)
    assert "outside 0 < p < 1" in out_band[0]["detail"]
    valid = {r["id"] for r in inputs["mv"] + inputs["gsm"]}
    n_extreme = sum(1 for pid in valid if p[pid] in (0.0, 1.0))
    assert len(out_band) == n_extreme and len(kept) == len(valid) - n_extreme

    # inclusive lower end keeps exactly the p = 0 problems in addition
    incl = build_rl_set(inputs["problems"], tmp_path / "incl", scores=inputs["scores"], min_pass=">=0", max_pass="<1")
    assert incl.rl.num_rows - res.rl.num_rows == sum(1 for pid in valid if p[pid] == 0.0)
    with pytest.raises(ValueError, match="need --scores"):
        build_rl_set(inputs["problems"], tmp_path / "x", min_pass=">0")
    with pytest.raises(ValueError, match="empty pass-rate band"):
        build_rl_set(inputs["problems"], tmp_path / "x", scores=inputs["scores"], min_pass=">0.5", max_pass="<0.5")


def test_modality_filter(inputs, tmp_path):
    res = build_rl_set(inputs["problems"], tmp_path, modality="text")
    assert res.rl_multimodal.num_rows == 0 and res.rl.num_rows == 40
    assert pq.read_schema(tmp_path / "rl.parquet").equals(S.RL_TEXT, check_metadata=False)
    mod = [r for r in res.excluded.to_pylist() if r["reason"] == "modality"]
    assert len(mod) == 42 and all(r["images"] for r in mod)  # 40 + bad-image + bad-choice; images kept
    mm = build_rl_set(inputs["problems"], tmp_path / "mm", modality="multimodal")
    assert mm.rl_text.num_rows == 0 and mm.rl.num_rows == 40


def test_balance_by_source_and_difficulty(inputs, tmp_path):
    res = build_rl_set(inputs["problems"], tmp_path / "src", balance="source")
    counts = Counter(res.rl.column("source").to_pylist())
    assert counts == {"math_vision": 40, "gsm8k": 40}  # already equal after filtering
    capped = build_rl_set(inputs["problems"], tmp_path / "cap", balance="source", per_group=7, seed=1)
    assert Counter(capped.rl.column("source").to_pylist()) == {"math_vision": 7, "gsm8k": 7}
    assert sum(r["reason"] == "balance" for r in capped.excluded.to_pylist()) == 66
    again = build_rl_set(inputs["problems"], tmp_path / "cap2", balance="source", per_group=7, seed=1)
    other = build_rl_set(inputs["problems"], tmp_path / "cap3", balance="source", per_group=7, seed=2)
    ids = capped.rl.column("problem_id").to_pylist()
    assert again.rl.column("problem_id").to_pylist() == ids
    assert other.rl.column("problem_id").to_pylist() != ids

    # difficulty from scores: 3 pass-rate bins, equal counts capped at the smallest bin
    diff = build_rl_set(inputs["problems"], tmp_path / "diff", scores=inputs["scores"], balance="difficulty")
    groups = diff.stats["groups"]
    cap = diff.stats["settings"]["cap"]
    assert set(groups) <= {"p[0.00,0.33)", "p[0.33,0.67)", "p[0.67,1.00]"} and len(groups) >= 2
    assert cap == min(g["before"] for g in groups.values())
    assert all(g["after"] == cap for g in groups.values())
    bins = Counter(difficulty_bin(r["pass_rate"], 3) for r in diff.rl.to_pylist())
    assert set(bins.values()) == {cap}

    # difficulty without scores: meta level (MATH-Vision levels; GSM8K rows have none)
    lvl = build_rl_set(inputs["problems"], tmp_path / "lvl", balance="difficulty", per_group=3)
    assert "level=unknown" in lvl.stats["groups"] and "level=1" in lvl.stats["groups"]
    assert all(g["after"] == min(3, g["before"]) for g in lvl.stats["groups"].values())
    keep, sizes, c = balance_groups(["a", "a", "a", "b"], None, 0)
    assert c == 1 and sum(keep) == 2 and sizes == {"a": (3, 1), "b": (1, 1)}


def test_cli(inputs, tmp_path):
    from typer.testing import CliRunner

    from curation.cli import app

    out = tmp_path / "cli"
    r = CliRunner().invoke(app, ["rl-set", "--problems", str(inputs["problems"]), "--scores", str(inputs["scores"]),
                                 "--out", str(out), "--min-pass", ">0", "--max-pass", "<1"])
    assert r.exit_code == 0, r.output
    assert "0 < p < 1" in r.output
    st = json.loads((out / "stats.json").read_text())
    assert st["settings"]["pass_band"] == "0 < p < 1" and st["counts"]["kept"] == pq.read_table(out / "rl.parquet").num_rows
    bad = CliRunner().invoke(app, ["rl-set", "--problems", str(inputs["problems"]), "--out", str(out),
                                   "--min-pass", "<0.2", "--scores", str(inputs["scores"])])
    assert bad.exit_code != 0 and "minimum" in bad.output


def _grpo_one_step(model_dir: Path, parquet: Path, out: Path) -> tuple[object, list[dict]]:
    """One stock GRPOTrainer step on the file loaded with `datasets` unchanged; returns what the reward saw."""
    from datasets import load_dataset
    from trl import GRPOConfig, GRPOTrainer

    from curation.core.models import load_processor
    from curation.verify import verify_batch

    seen: list[dict] = []

    def accuracy(completions, answer, options, problem_id, vps, **kw):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        seen.append({"answer": list(answer), "problem_id": list(problem_id), "vps": list(vps), "options": list(options)})
        return [float(v.correct) for v in verify_batch(list(answer), texts, options=list(options))]

    ds = load_dataset("parquet", data_files=str(parquet), split="train").select(range(2))
    args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=2, num_generations=2, max_completion_length=8,
                      max_steps=1, report_to="none", use_cpu=True, save_strategy="no", bf16=False, logging_steps=1)
    trainer = GRPOTrainer(model=str(model_dir), reward_funcs=accuracy, args=args, train_dataset=ds,
                          processing_class=load_processor(model_dir))
    return trainer.train(), seen


@pytest.mark.slow
def test_grpo_trainer_text(inputs, tmp_path, tiny_qwen2_dir):
    res = build_rl_set(inputs["problems"], tmp_path / "rl", scores=inputs["scores"])
    out, seen = _grpo_one_step(tiny_qwen2_dir, tmp_path / "rl" / "rl_text.parquet", tmp_path / "grpo")
    assert out.global_step == 1
    first = {r["problem_id"]: r for r in res.rl_text.slice(0, 2).to_pylist()}
    assert seen and set(seen[0]["problem_id"]) <= set(first)  # one prompt x 2 generations
    for pid, ans, vps in zip(seen[0]["problem_id"], seen[0]["answer"], seen[0]["vps"]):
        assert ans == first[pid]["answer"] and vps == pytest.approx(first[pid]["vps"])  # VPS reaches the trainer


@pytest.mark.slow
def test_grpo_trainer_multimodal(inputs, tmp_path, tiny_qwen2_vl_dir):
    build_rl_set(inputs["problems"], tmp_path / "rl")
    from datasets import load_dataset
    from PIL import Image

    ds = load_dataset("parquet", data_files=str(tmp_path / "rl" / "rl_multimodal.parquet"), split="train")
    first = ds[0]["images"][0]  # decoded to PIL by the Image feature; MATH-Vision testmini row 1 is 4.jpg
    assert isinstance(first, Image.Image) and first.size == Image.open(DATA / "math_vision" / "images" / "4.jpg").size
    out, seen = _grpo_one_step(tiny_qwen2_vl_dir, tmp_path / "rl" / "rl_multimodal.parquet", tmp_path / "grpo")
    assert out.global_step == 1 and seen


def test_unscored_rows_kept_or_excluded_explicitly(inputs, tmp_path):
    """Image problems a text-only model could not score: excluded as no_score by default, or kept with
    null VPS columns (the sampler's prior) when asked."""
    gsm_ids = {r["id"] for r in inputs["gsm"]}
    text_scores = inputs["score_table"].filter(
        pa.array([pid in gsm_ids for pid in inputs["score_table"].column("problem_id").to_pylist()]))
    pq.write_table(text_scores, tmp_path / "text_scores.parquet")
    kw = {"scores": tmp_path / "text_scores.parquet", "min_pass": ">0", "max_pass": "<1"}
    default = build_rl_set(inputs["problems"], tmp_path / "default", **kw)
    assert default.rl_multimodal.num_rows == 0
    no_score = {r["id"] for r in default.excluded.to_pylist() if r["reason"] == "no_score"}
    assert {r["id"] for r in inputs["mv"]} <= no_score and not (no_score & gsm_ids)
    keep = build_rl_set(inputs["problems"], tmp_path / "keep", unscored="keep", **kw)
    assert keep.rl_multimodal.num_rows == 40
    assert all(r["vps"] is None and r["pass_rate"] is None for r in keep.rl_multimodal.to_pylist())
    assert keep.rl_text.num_rows == default.rl_text.num_rows  # scored rows still obey the band
    with pytest.raises(ValueError, match="--unscored"):
        build_rl_set(inputs["problems"], tmp_path / "x", unscored="maybe", **kw)


def test_posterior_columns_and_the_band_on_the_posterior_mean(inputs, tmp_path):
    """The scores' posterior columns travel into the RL set; --pass-column post_mean applies the band (and the
    difficulty bins) to E[p] instead of c / N."""
    scores = {r["problem_id"]: r for r in inputs["score_table"].to_pylist()}
    res = build_rl_set(inputs["problems"], tmp_path / "post", scores=inputs["scores"], min_pass=">=0.3",
                       pass_column="post_mean")
    kept = _by_id(res.rl)
    assert kept and all(r["post_mean"] >= 0.3 for r in kept.values())
    for pid, r in kept.items():
        for c in ("post_a", "post_b", "post_mean", "post_lo", "post_hi", "post_ovs"):
            assert r[c] == pytest.approx(scores[pid][c])
    ex = [r for r in res.excluded.to_pylist() if r["reason"] == "pass_rate_out_of_band"]
    assert ex and all("post_mean" in r["detail"] for r in ex)
    plain = build_rl_set(inputs["problems"], tmp_path / "plain", scores=inputs["scores"], min_pass=">=0.3")
    # with 4 rollouts a problem at 1 of 4 (p = 0.25) has E[p] = 2/6 >= 0.3 under the uniform prior: kept only here
    assert set(kept) != set(_by_id(plain.rl)) and res.stats["settings"]["pass_column"] == "post_mean"
    with pytest.raises(ValueError, match="--pass-column"):
        build_rl_set(inputs["problems"], tmp_path / "x", scores=inputs["scores"], pass_column="mean")
    # a scores table from before the posterior columns: pass_rate works, post_mean says what is missing
    old = tmp_path / "old_scores.parquet"
    pq.write_table(inputs["score_table"].select(["problem_id", "model", "n", "n_correct", "pass_rate", "ovs", "tds",
                                                 "vps"]), old)
    ok = build_rl_set(inputs["problems"], tmp_path / "old", scores=old, min_pass=">0")
    assert ok.rl.num_rows and all(r["post_mean"] is None for r in ok.rl.to_pylist())
    with pytest.raises(ValueError, match="no post_mean"):
        build_rl_set(inputs["problems"], tmp_path / "old2", scores=old, min_pass=">0", pass_column="post_mean")
