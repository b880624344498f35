"""curate build end to end on the real data: planted exact/near duplicates and benchmark items are removed,
distinct problems are kept, and every row is accounted for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CURATE = [sys.executable, "-m", "curation.cli"]


def _run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CURATE, *args], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("build")
    gsm = [json.loads(line) for line in (DATA / "gsm8k/test.jsonl").read_text().splitlines()]
    amc = [json.loads(line) for line in (DATA / "benchmarks/amc23.jsonl").read_text().splitlines()]
    q0, q1 = gsm[0]["question"], gsm[1]["question"]
    planted = [
        {"question": "  " + q0.replace(" ", "  ") + " ", "answer": "18", "tag": "exact_dup"},
        {"question": q1.replace("A robe takes", "A robe needs"), "answer": "3", "tag": "near_dup"},
        {"question": amc[0]["problem"], "answer": "27", "tag": "bench_exact"},
        {"question": "Cities $A$ and $B$ are $50$ miles apart. Alicia lives in $A$ and Beth lives in $B$. "
                     "Alicia rides towards $B$ at 20 miles per hour. Leaving at the same time, Beth bikes toward "
                     "$A$ at 5 miles per hour. How many miles from City $A$ will they be when they meet?",
         "answer": "40", "tag": "bench_paraphrase_numbers"},
        {"question": "Prove that there are infinitely many primes.", "answer": "proof", "tag": "unverifiable"},
        {"question": "A farmer has 17 sheep and buys 25 more, then sells 9. How many sheep remain on the farm?",
         "answer": "33", "tag": "distinct"},
    ]
    (tmp / "planted.jsonl").write_text("".join(json.dumps(r) + "\n" for r in planted))
    _run("ingest", str(DATA / "gsm8k/test.jsonl"), "--format", "gsm8k", "--out", str(tmp / "gsm"))
    _run("ingest", str(DATA / "math_vision/testmini.jsonl"), "--format", "math_vision", "--out", str(tmp / "mv"))
    _run("ingest", str(tmp / "planted.jsonl"), "--format", "jsonl", "--source", "planted", "--out", str(tmp / "pl"))
    proc = _run("build", str(tmp / "gsm"), str(tmp / "mv"), str(tmp / "pl"), "--recipe",
                "pipelines/build_multimodal.yaml", "--decontaminate", str(DATA / "benchmarks/amc23.jsonl"),
                "--decontaminate", str(DATA / "benchmarks/minerva_math.jsonl"), "--out", str(tmp / "out"))
    planted_rows = pq.read_table(tmp / "pl/problems.parquet").to_pylist()
    tags = {r["id"]: json.loads(r["meta"])["tag"] for r in planted_rows}
    return tmp / "out", tags, proc.stdout


def test_every_row_accounted_for(built):
    out, _, stdout = built
    stats = json.loads((out / "stats.json").read_text())
    kept = pq.read_table(out / "problems.parquet")
    excluded = pq.read_table(out / "excluded.parquet")
    assert stats["input_rows"] == 1319 + 304 + 6
    assert kept.num_rows + excluded.num_rows == stats["input_rows"]
    assert kept.num_rows == stats["output_rows"] and excluded.num_rows == stats["excluded_rows"]
    assert len(set(kept.column("id").to_pylist())) == kept.num_rows
    for s in stats["steps"]:
        assert s["rows_in"] == s["rows_out"] + sum(s["excluded"].values())
    assert "kept" in stdout and str(stats["input_rows"]) in stdout


def test_planted_rows_removed_for_the_right_reason(built):
    out, tags, _ = built
    excluded = {r["id"]: r for r in pq.read_table(out / "excluded.parquet").to_pylist()}
    kept_ids = set(pq.read_table(out / "problems.parquet").column("id").to_pylist())
    by_tag = {tag: pid for pid, tag in tags.items()}
    assert excluded[by_tag["exact_dup"]]["reason"] == "exact_duplicate"
    assert excluded[by_tag["near_dup"]]["reason"] == "near_duplicate"
    assert excluded[by_tag["near_dup"]]["duplicate_of"] in kept_ids
    assert excluded[by_tag["bench_exact"]]["reason"] == "benchmark_contamination"
    assert excluded[by_tag["bench_paraphrase_numbers"]]["reason"] == "benchmark_contamination"
    assert "amc23" in excluded[by_tag["bench_paraphrase_numbers"]]["detail"]
    assert excluded[by_tag["unverifiable"]]["step"] == "verifiable"
    assert by_tag["distinct"] in kept_ids


def test_distinct_real_problems_are_kept(built):
    out, _, _ = built
    kept = pq.read_table(out / "problems.parquet").to_pylist()
    by_source = {}
    for r in kept:
        by_source[r["source"]] = by_source.get(r["source"], 0) + 1
    # GSM8K test and MATH-Vision testmini are curated sets: almost everything in them is distinct and verifiable.
    assert by_source["gsm8k"] >= 1300
    assert by_source["math_vision"] >= 270
    assert all(r["images"] for r in kept if r["source"] == "math_vision")
