"""``curate score`` / ``merge`` / ``filter``: exact numbers on real GSM8K solutions, bad rows, kill -9 + resume,
sharding + merge.  (SmolLM2-135M's pass rates on easy arithmetic are tested with the engine in
tests/test_engines.py; bench/score_overhead.py runs this job on it.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from procs import kill_when  # noqa: E402

from curation.cli import app  # noqa: E402
from curation.core import schema as S  # noqa: E402
from curation.core.io import ExclusionWriter  # noqa: E402
from curation.score.job import (  # noqa: E402
    filter_scores,
    load_problems,
    merge_score_dirs,
    parse_shard,
    prompt_seed,
    run_score_job,
    shard_of,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
GSM8K_EXAMPLES = DATA / "gsm8k" / "example_model_solutions.jsonl"
KEYS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
CURATE = [sys.executable, "-c", "from curation.cli import app; app()"]

runner = CliRunner()


def _plain_levenshtein(a: list, b: list) -> int:
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
        prev = cur
    return prev[-1]


def _independent_tds(texts: list[str]) -> float:
    """Mean over pairs of word-level Levenshtein / max length (the documented `edit` TDS)."""
    toks = [t.split() for t in texts]
    ds = [_plain_levenshtein(a, b) / max(len(a), len(b), 1) for a, b in combinations(toks, 2)]
    return sum(ds) / len(ds)


# --- exact numbers on the GSM8K example solutions -------------------------------------------------------------


@pytest.fixture(scope="module")
def gsm8k_scored(tmp_path_factory):
    out = tmp_path_factory.mktemp("gsm8k_scores")
    res = runner.invoke(app, ["score", "--rollouts", str(GSM8K_EXAMPLES), "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_gsm8k_examples_exact_numbers(gsm8k_scored):
    """Independent recomputation from the raw JSONL.

    p: from the file's own ``is_correct`` labels, compared on the problems where our verifier's verdicts
    agree with all four labels (and that set must be nearly everything); TDS: plain-Python word Levenshtein.
    """
    raw = [json.loads(line) for line in GSM8K_EXAMPLES.read_text().splitlines() if line.strip()]
    scores = {r["problem_id"]: r for r in pq.read_table(gsm8k_scored / "scores.parquet").to_pylist()}
    rollouts = pq.read_table(gsm8k_scored / "rollouts.parquet").to_pylist()
    verdict = {(r["problem_id"], r["sample"]): r["correct"] for r in rollouts}
    assert len(scores) == len(raw) == 1319 and len(rollouts) == 4 * 1319

    agree = 0
    for i, row in enumerate(raw):
        pid = f"gsm8k-test-{i:04d}"
        labels = [row[k]["is_correct"] for k in KEYS]
        ours = [verdict[(pid, j)] for j in range(4)]
        s = scores[pid]
        # p / OVS always follow our verifier's verdicts exactly
        p_ours = sum(ours) / 4
        assert s["pass_rate"] == p_ours and s["ovs"] == pytest.approx(p_ours * (1 - p_ours))
        if labels == ours:
            agree += 1
            p = sum(labels) / 4
            assert s["pass_rate"] == p
            assert s["n_correct"] == sum(labels) and s["n"] == 4
    assert agree / len(raw) >= 0.99, f"verifier agrees with the external labels on only {agree}/{len(raw)}"

    # TDS and VPS on the first 150 problems (plain-Python Levenshtein is slow)
    for i, row in enumerate(raw[:150]):
        pid = f"gsm8k-test-{i:04d}"
        tds = _independent_tds([row[k]["solution"] for k in KEYS])
        s = scores[pid]
        assert s["tds"] == pytest.approx(tds, abs=1e-12)
        assert s["vps"] == pytest.approx(0.8 * s["ovs"] + 0.2 * tds, abs=1e-12)

    stats = json.loads((gsm8k_scored / "stats.json").read_text())
    p_all = [s["pass_rate"] for s in scores.values()]
    assert stats["zero_variance_frac"] == pytest.approx(sum(p in (0.0, 1.0) for p in p_all) / len(p_all))
    assert stats["settings"]["tds_metric"] == "edit" and stats["settings"]["alpha"] == 0.8
    for f in ("report/pass_rate_hist.png", "report/vps_hist.png", "report/report.md", "excluded.parquet"):
        assert (gsm8k_scored / f).is_file()


def test_filter_band_defaults_and_inclusive_ends(gsm8k_scored, tmp_path):
    p = pq.read_table(gsm8k_scored / "scores.parquet").column("pass_rate").to_pylist()
    out = tmp_path / "kept.parquet"
    res = runner.invoke(app, ["filter", "--scores", str(gsm8k_scored), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "band: 0 < p < 1" in res.output
    kept = pq.read_table(out).column("pass_rate").to_pylist()
    assert len(kept) == sum(0 < x < 1 for x in p) and all(0 < x < 1 for x in kept)
    r = filter_scores(gsm8k_scored / "scores.parquet", min_pass=0.25, max_pass=0.75, include_min=True, include_max=False)
    assert r.band == "0.25 <= p < 0.75" and r.kept == sum(0.25 <= x < 0.75 for x in p)
    r = filter_scores(gsm8k_scored / "scores.parquet", min_pass=0.0, max_pass=1.0, include_min=True, include_max=True)
    assert r.kept == len(p)
    with pytest.raises(ValueError, match="min_pass"):
        filter_scores(gsm8k_scored / "scores.parquet", min_pass=0.8, max_pass=0.2)


def test_pregenerated_long_form_with_bad_rows_and_problems_join(tmp_path):
    rows = [
        {"problem_id": "q1", "model": "a", "response": "so \\boxed{4}"},
        {"problem_id": "q1", "model": "a", "response": "I think \\boxed{5}"},
        {"problem_id": "q2", "model": "a", "answer": "B", "options": ["1", "2"], "response": "The answer is (B)"},
        {"problem_id": "q2", "model": "a", "answer": "B", "options": ["1", "2"], "response": "\\boxed{2}"},
        {"problem_id": "q3", "model": "a", "response": "no gold anywhere \\boxed{1}"},
        {"model": "a", "answer": "1", "response": "no id"},
        {"problem_id": "q1", "model": "a", "answer": "4"},
    ]
    f = tmp_path / "long.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    probs = tmp_path / "problems.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": "q1", "source": "t", "problem": "2+2?", "images": [], "answer": "4",
                                          "options": [], "solution": None, "meta": None}], schema=S.PROBLEMS), probs)
    out = tmp_path / "out"
    res = runner.invoke(app, ["score", "--rollouts", str(f), "--problems", str(probs), "--out", str(out)])
    assert res.exit_code == 0, res.output
    sc = {r["problem_id"]: r for r in pq.read_table(out / "scores.parquet").to_pylist()}
    assert (sc["q1"]["n"], sc["q1"]["n_correct"]) == (2, 1)
    assert (sc["q2"]["n"], sc["q2"]["n_correct"]) == (2, 2)  # label B and option text "2" both correct
    ex = pq.read_table(out / "excluded.parquet").to_pylist()
    assert sorted(e["reason"] for e in ex) == ["malformed_row", "missing_answer", "missing_id", "missing_response"]
    assert any("q3" in e["detail"] for e in ex if e["reason"] == "missing_answer")


# --- deterministic helpers --------------------------------------------------------------------------------------


def test_shard_and_seed_helpers():
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) == (0, 1)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    ids = [f"p{i}" for i in range(400)]
    parts = [[i for i in ids if shard_of(i, 3) == k] for k in range(3)]
    assert sorted(sum(parts, [])) == sorted(ids) and all(90 < len(p) < 180 for p in parts)
    assert shard_of("p7", 3) == shard_of("p7", 3)  # by hash of the id: independent of position
    assert prompt_seed(0, "a") == prompt_seed(0, "a") != prompt_seed(1, "a") != prompt_seed(0, "b")


def test_load_problems_routes_every_bad_row(tmp_path):
    f = tmp_path / "p.jsonl"
    lines = [
        json.dumps({"id": "ok1", "problem": "1+1?", "answer": "2"}),
        "{not json",
        json.dumps({"problem": "no id", "answer": "1"}),
        json.dumps({"id": "ok1", "problem": "dup", "answer": "2"}),
        json.dumps({"id": "na", "problem": "no answer", "answer": " "}),
        json.dumps({"id": "np", "answer": "3"}),
        json.dumps({"id": "ok2", "problem": "2+2?", "answer": 4}),
    ]
    f.write_text("\n".join(lines) + "\n")
    ex = ExclusionWriter()
    rows, n_read = load_problems(f, (0, 1), ex)
    assert n_read == 7 and [r["id"] for r in rows] == ["ok1", "ok2"] and rows[1]["answer"] == "4"
    reasons = {r["reason"]: r for r in ex.rows}
    assert set(reasons) == {"malformed_row", "missing_id", "duplicate_id", "missing_answer", "missing_problem"}
    assert reasons["duplicate_id"]["duplicate_of"] == "ok1" and f"{f}:4" in reasons["duplicate_id"]["detail"]
    # every row lands in exactly one shard, bad rows included
    total = 0
    for k in range(3):
        e = ExclusionWriter()
        r, _ = load_problems(f, (k, 3), e)
        total += len(r) + len(e)
    assert total == len(rows) + len(ex)


# --- real generation: tiny model, hf engine, kill -9, resume, shards ---------------------------------------------

GEN_ARGS = {"n": 3, "max_tokens": 6, "temperature": 1.0, "seed": 3, "chunk_size": 1, "engine": "hf",
            "prompt_template": "plain"}


def _cli_args(model: Path, data: Path, out: Path) -> list[str]:
    return ["score", "--model", str(model), "--data", str(data), "--out", str(out), "--n", "3", "--max-tokens", "6",
            "--temperature", "1.0", "--seed", "3", "--chunk-size", "1", "--engine", "hf", "--prompt-template",
            "plain", "--engine-opt", "batch_size=3"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_qwen2_dir):
    root = tmp_path_factory.mktemp("tiny")
    model = tiny_qwen2_dir  # conftest: random Qwen2 with the tiny tokenizer, shared across test files
    rows = [{"id": f"add-{i}", "source": "t", "problem": f"What is {i} + {i + 3}?", "images": [],
             "answer": str(2 * i + 3), "options": [], "solution": None, "meta": None} for i in range(8)]
    bad_img = [{"bytes": b"\x89PNG\r\n\x1a\ngarbage", "path": "x.png"}]
    good_img = [{"bytes": (DATA / "math_vision" / "images" / "4.jpg").read_bytes(), "path": "4.jpg"}]
    rows += [
        dict(rows[0], id="noans", answer=""),  # missing answer
        dict(rows[1], id="add-1"),  # duplicate id
        dict(rows[2], id="badimg", images=bad_img),  # undecodable image
        dict(rows[3], id="img-on-text-model", images=good_img),  # text-only model: needs_vision
    ]
    data = root / "problems.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=S.PROBLEMS), data)
    from curation.engines import make_engine

    engine = make_engine("hf", str(model), batch_size=3)
    full = run_score_job(data, root / "full", model=str(model), engine_obj=engine, **GEN_ARGS)
    return {"model": model, "data": data, "engine": engine, "full": full, "root": root}


@pytest.mark.slow
def test_full_run_outputs_and_exclusions(tiny):
    full = tiny["full"]
    assert full.rollouts.num_rows == 8 * 3
    assert full.rollouts.schema.equals(S.ROLLOUTS, check_metadata=False)
    assert not S.validate_rows(full.scores.to_pylist(), "scores")
    reasons = sorted(full.excluded.column("reason").to_pylist())
    assert reasons == ["bad_image", "duplicate_id", "missing_answer", "needs_vision"]
    ex = {r["reason"]: r for r in full.excluded.to_pylist()}
    assert "badimg" in ex["bad_image"]["detail"] and "text-only" in ex["needs_vision"]["detail"]
    st = json.loads((full.out_dir / "stats.json").read_text())
    for k in ("generation_s", "verification_s", "tds_scoring_s", "writing_s"):
        assert st["timing"][k] >= 0
    assert st["settings"]["n"] == 3 and st["settings"]["engine"] == "hf" and st["settings"]["seed"] == 3
    assert st["counts"]["problems_in_shard"] == 12 and st["counts"]["excluded"] == 4
    assert set(full.rollouts.column("finish_reason").to_pylist()) <= {"stop", "length"}
    # different generation settings in the same folder: refused instead of mixing rows
    with pytest.raises(ValueError, match="different settings"):
        run_score_job(tiny["data"], full.out_dir, model=str(tiny["model"]), engine_obj=tiny["engine"],
                      **{**GEN_ARGS, "n": 2})


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted(tiny):
    out = tiny["root"] / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    parts = out / "_work" / "parts"
    # kill -9 the job and the verifier workers it started
    kill_when(CURATE + _cli_args(tiny["model"], tiny["data"], out),
              lambda: len(list(parts.glob("rollouts-*.parquet"))) >= 2, env=env, cwd=ROOT)
    n_parts = len(list(parts.glob("rollouts-*.parquet")))
    assert 2 <= n_parts < 10 and not (out / "rollouts.parquet").exists()

    res = subprocess.run(CURATE + _cli_args(tiny["model"], tiny["data"], out), env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    full = tiny["full"]
    resumed = pq.read_table(out / "rollouts.parquet")
    keys = list(zip(*(resumed.column(c).to_pylist() for c in ("problem_id", "model", "sample"))))
    assert len(keys) == len(set(keys)) == 24
    assert resumed.equals(full.rollouts)
    assert pq.read_table(out / "scores.parquet").equals(full.scores)
    assert pq.read_table(out / "excluded.parquet").column("reason").to_pylist() == full.excluded.column("reason").to_pylist()
    st = json.loads((out / "stats.json").read_text())
    assert st["counts"]["chunks_resumed"] >= 2


@pytest.mark.slow
def test_shards_then_merge_equal_unsharded(tiny, tmp_path):
    dirs = []
    for k in range(2):
        d = tmp_path / f"shard{k}"
        r = run_score_job(tiny["data"], d, model=str(tiny["model"]), engine_obj=tiny["engine"], shard=f"{k}/2",
                          **GEN_ARGS)
        assert 0 < r.rollouts.num_rows < 24
        dirs.append(d)
    out = tmp_path / "merged"
    res = runner.invoke(app, ["merge", *map(str, dirs), "--out", str(out)])
    assert res.exit_code == 0, res.output
    full = tiny["full"]
    assert pq.read_table(out / "rollouts.parquet").equals(full.rollouts)
    assert pq.read_table(out / "scores.parquet").equals(full.scores)
    assert sorted(pq.read_table(out / "excluded.parquet").column("reason").to_pylist()) == sorted(
        full.excluded.column("reason").to_pylist())
    assert (out / "report" / "vps_hist.png").is_file()
    # a rollout key in two inputs is an error, naming it
    with pytest.raises(ValueError, match="more than one input"):
        merge_score_dirs([dirs[0], full.out_dir], tmp_path / "bad")


@pytest.mark.slow
def test_two_models_merge_to_wide_scores_and_filter_needs_model(tiny, tmp_path):
    other = run_score_job(tiny["data"], tmp_path / "other", model=str(tiny["model"]), engine_obj=tiny["engine"],
                          model_name="tiny-b", **{**GEN_ARGS, "seed": 4})
    merged = merge_score_dirs([tiny["full"].out_dir, other.out_dir], tmp_path / "both")
    first = tiny["full"].scores.column("model")[0].as_py()  # default label: the checkpoint folder name
    assert first == Path(tiny["model"]).name
    assert sorted(set(merged.scores.column("model").to_pylist())) == sorted([first, "tiny-b"])
    wide = pq.read_table(tmp_path / "both" / "scores_wide.parquet")
    assert wide.num_rows == 8 and {f"pass_rate__{first}", "vps__tiny-b"} <= set(wide.column_names)
    with pytest.raises(ValueError, match="choose one with --model"):
        filter_scores(tmp_path / "both" / "scores.parquet")
    r = filter_scores(tmp_path / "both" / "scores.parquet", model="tiny-b", include_min=True, include_max=True,
                      problems=tiny["data"])
    assert r.table.column_names == S.PROBLEMS.names  # the problems' own rows, not score rows
    assert sorted(set(r.table.column("id").to_pylist())) == sorted(f"add-{i}" for i in range(8))


def test_score_extraction_rules_strict_lenient_and_bad_name(tmp_path):
    """`curate score --lenient` grades replies without a final-answer marker on their last sentence's number
    (the demo's SmolLM2 rollouts); the default stays strict; the rules are recorded; a bad name is refused."""
    rows = [{"problem_id": "q1", "model": "a", "answer": "12", "response": "Tom has 5 and gets 7. So the total is 12."},
            {"problem_id": "q1", "model": "a", "answer": "12", "response": "The answer is 12. Tom is happy."},
            {"problem_id": "q1", "model": "a", "answer": "12", "response": "5 + 7 equals 12"}]
    f = tmp_path / "long.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    got = {}
    for flag in ([], ["--lenient"]):
        out = tmp_path / ("lenient" if flag else "strict")
        res = runner.invoke(app, ["score", "--rollouts", str(f), "--out", str(out), *flag])
        assert res.exit_code == 0, res.output
        got[bool(flag)] = pq.read_table(out / "scores.parquet").to_pylist()[0]["n_correct"]
        assert ("last_math" in json.loads((out / "stats.json").read_text())["settings"]["rules"]) == bool(flag)
    assert (got[False], got[True]) == (2, 3)
    res = runner.invoke(app, ["score", "--rollouts", str(f), "--out", str(tmp_path / "bad"), "--rules", "boxed,nope"])
    assert res.exit_code != 0 and "nope" in res.output
