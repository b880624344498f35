"""Text no writer can store never kills a job: lone surrogates (JSON ``"\\ud800"`` escapes) and invalid UTF-8 in
a foreign Parquet file are replaced by U+FFFD where rows come in, the repair is recorded, and every row is
accounted for; NUL bytes and megabyte rows go through unchanged.  Each writer of text columns is run on real
files: ``curate verify`` (Parquet and JSONL out), ``score --rollouts``, ``cot --responses``, ``rl-set`` and
``publish --dry-run``."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation.cli import app
from curation.core.io import read_records, read_table, table_from_rows, write_jsonl_atomic
from curation.core.text import repair_table, repair_text

runner = CliRunner()
LONE = "\ud800"  # what json.loads makes of the escape "\ud800"
ESCAPED = "\udcff"  # what bytes.decode(errors="surrogateescape") makes of b"\xff"
THINK = "We add two and two. Two plus two gives four, so the sum of the numbers is four in the end."


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    # json.dumps escapes lone surrogates as \udXXX: the file is valid UTF-8, json.loads brings them back
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _problems(tmp_path: Path) -> Path:
    rows = [
        {"id": "p-lone", "source": "t", "problem": f"What is 2+2? {LONE}", "images": [], "answer": "4",
         "options": None, "solution": None, "meta": None},
        {"id": "p-nul", "source": "t", "problem": "What is 3+4?\x00 (NUL inside)", "images": [], "answer": "7",
         "options": None, "solution": None, "meta": None},
        {"id": "p-escaped", "source": "t", "problem": f"What is 1+1? {ESCAPED}", "images": [], "answer": "2",
         "options": [f"2{LONE}", "3"], "solution": None, "meta": None},
        {"id": "p-ok", "source": "t", "problem": "What is 5+5?", "images": [], "answer": "10", "options": None,
         "solution": None, "meta": None},
    ]
    return _write_jsonl(tmp_path / "problems.jsonl", rows)


# -- the shared repair ---------------------------------------------------------------------------------------


def test_repair_text_and_tables():
    assert repair_text("plain") == ("plain", 0)
    assert repair_text(f"a{LONE}b{ESCAPED}") == ("a\ufffdb\ufffd", 2)
    assert repair_text("\U0001F600 emoji and NUL \x00") == ("\U0001F600 emoji and NUL \x00", 0)
    # invalid UTF-8 written by another tool (WTF-8 surrogate bytes, stray 0xff) inside strings and lists
    raw = pa.array([b"ok", b"bad \xff here", b"\xed\xa0\x80"], pa.binary())
    bad = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())
    lists = pa.ListArray.from_arrays(pa.array([0, 1, 2, 3], pa.int32()), bad)
    table = pa.table({"x": bad, "opts": lists, "n": [1, 2, 3]})
    with pytest.raises(UnicodeDecodeError):
        table.to_pylist()
    fixed, notes = repair_table(table)
    assert fixed.column("x").to_pylist() == ["ok", "bad \ufffd here", "\ufffd\ufffd\ufffd"]
    assert fixed.column("opts").to_pylist() == [["ok"], ["bad \ufffd here"], ["\ufffd\ufffd\ufffd"]]
    assert fixed.column("n").to_pylist() == [1, 2, 3]
    assert notes == ["column 'x': 2 value(s) with invalid UTF-8 replaced by U+FFFD (rows 1, 2)",
                     "column 'opts': 2 value(s) with invalid UTF-8 replaced by U+FFFD (rows 1, 2)"]
    same, none = repair_table(fixed)
    assert same is fixed and none == []


def test_readers_and_writers_repair_and_record(tmp_path):
    src = _problems(tmp_path)
    recs = list(read_records(src))
    assert [r.repairs for r in recs] == [("problem: 1 lone surrogate(s) replaced by U+FFFD",), (),
                                         ("problem: 1 lone surrogate(s) replaced by U+FFFD",
                                          "options: 1 lone surrogate(s) replaced by U+FFFD"), ()]
    assert recs[0].data["problem"].endswith("\ufffd") and recs[1].data["problem"].count("\x00") == 1
    # rows built in memory with bad text: the writers repair them too, and say which
    rows = [{"a": f"x{LONE}", "b": ["ok", ESCAPED]}, {"a": "fine\x00", "b": None}]
    table, notes = table_from_rows(rows, with_notes=True)
    assert table.to_pylist() == [{"a": "x\ufffd", "b": ["ok", "\ufffd"]}, {"a": "fine\x00", "b": None}]
    assert notes == ["row 0: a: 1 lone surrogate(s) replaced by U+FFFD; b: 1 lone surrogate(s) replaced by U+FFFD"]
    out = write_jsonl_atomic(rows, tmp_path / "rows.jsonl")
    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == table.to_pylist()
    # a foreign Parquet file with invalid UTF-8 reads row by row and whole
    raw = pa.array([b"fine", b"bad \xff"], pa.binary())
    pq.write_table(pa.table({"answer": ["1", "2"],
                             "response": pa.Array.from_buffers(pa.string(), 2, raw.buffers())}), tmp_path / "f.parquet")
    recs = list(read_records(tmp_path / "f.parquet"))
    assert [r.data["response"] for r in recs] == ["fine", "bad \ufffd"]
    assert recs[1].repairs == ("response: invalid UTF-8 replaced by U+FFFD",) and recs[0].repairs == ()
    assert read_table(tmp_path / "f.parquet").column("response").to_pylist() == ["fine", "bad \ufffd"]


# -- every writer, as a command -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_curate_verify_survives_bad_text(tmp_path, suffix):
    rows = [
        {"answer": "42", "response": f"\\boxed{{42}} {LONE}"},
        {"answer": "7", "response": f"{ESCAPED} so \\boxed{{7}}"},
        {"answer": "4\x00", "response": "NUL \x00 inside \\boxed{4}"},
        {"answer": "9", "response": "x" * 1_000_000 + " \\boxed{9}"},
        {"answer": f"1{LONE}", "response": "\\boxed{1}"},
        {"answer": "5", "response": "\\boxed{5}"},
    ]
    src = _write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / f"out{suffix}"
    res = runner.invoke(app, ["verify", str(src), "--out", str(out), "--timeout", "3"])
    assert res.exit_code == 0, res.output
    assert "repaired 3 row(s)" in " ".join(res.output.split())
    got = (pq.read_table(out).to_pylist() if suffix == ".parquet"
           else [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()])
    assert len(got) == len(rows)  # every row accounted for
    assert [g["verdict"] for g in got[:4]] + [got[5]["verdict"]] == ["correct"] * 5
    assert got[0]["response"].endswith("\ufffd") and got[2]["response"].count("\x00") == 1
    assert len(got[3]["response"]) == 1_000_000 + 10
    for i in (0, 1, 4):
        assert "repaired: " in got[i]["verdict_detail"] and "lone surrogate" in got[i]["verdict_detail"]
    assert "repaired" not in (got[5]["verdict_detail"] or "")


def test_score_rollouts_survive_bad_text(tmp_path):
    rows = [
        {"problem_id": "q1", "answer": "4", "response": f"so \\boxed{{4}} {LONE}"},
        {"problem_id": "q1", "answer": "4", "response": "NUL\x00 \\boxed{5}"},
        {"problem_id": f"q2{LONE}", "answer": "7", "response": f"{ESCAPED}\\boxed{{7}}"},
    ]
    src = _write_jsonl(tmp_path / "rollouts.jsonl", rows)
    res = runner.invoke(app, ["score", "--rollouts", str(src), "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    ro = pq.read_table(tmp_path / "s" / "rollouts.parquet").to_pylist()
    assert len(ro) == 3 and sorted(r["verdict"] for r in ro) == ["correct", "correct", "incorrect"]
    assert {r["problem_id"] for r in ro} == {"q1", "q2\ufffd"}
    stats = json.loads((tmp_path / "s" / "stats.json").read_text())
    assert stats["repaired"]["rows"] == 2 and len(stats["repaired"]["examples"]) == 2


def test_cot_responses_survive_bad_text(tmp_path):
    problems = _problems(tmp_path)
    responses = _write_jsonl(tmp_path / "responses.jsonl", [
        {"problem_id": "p-lone", "response": f"<think>\n{THINK} {LONE}\n</think>\n\\boxed{{4}}"},
        {"problem_id": "p-nul", "response": f"<think>\n{THINK}\x00\n</think>\n\\boxed{{7}}"},
        {"problem_id": "p-ok", "response": f"<think>\n{THINK} {ESCAPED}\n</think>\n\\boxed{{10}}"},
    ])
    out = tmp_path / "cot"
    res = runner.invoke(app, ["cot", "--data", str(problems), "--responses", str(responses), "--out", str(out),
                              "--keep", "all", "--max-foreign-share", "0.99"])
    assert res.exit_code == 0, res.output
    sft = pq.read_table(out / "sft.parquet").to_pylist()
    excluded = pq.read_table(out / "excluded.parquet").to_pylist()
    assert {r["problem_id"] for r in sft} == {"p-lone", "p-nul", "p-ok"}
    assert any("\ufffd" in m["content"] for r in sft for m in r["messages"])
    assert not excluded  # p-escaped has no response: nothing to exclude
    stats = json.loads((out / "stats.json").read_text())
    assert stats["counts"]["rows_read"] == 4 and stats["counts"]["generated"] == 3
    assert stats["repaired"]["rows"] == 4


def test_rlset_and_publish_survive_bad_text(tmp_path):
    problems = _problems(tmp_path)
    rl = tmp_path / "run" / "rl"
    res = runner.invoke(app, ["rl-set", "--problems", str(problems), "--out", str(rl)])
    assert res.exit_code == 0, res.output
    kept = pq.read_table(rl / "rl.parquet").to_pylist()
    assert {r["problem_id"] for r in kept} == {"p-lone", "p-nul", "p-escaped", "p-ok"}
    assert json.loads((rl / "stats.json").read_text())["repaired"]["rows"] == 2
    # a foreign problems table with invalid UTF-8 bytes next to it
    good = read_table(problems)
    raw = pa.array([s.encode() if i != 1 else b"What is 3+4? \xff\xfe" for i, s in
                    enumerate(good.column("problem").to_pylist())], pa.binary())
    bad = good.set_column(good.schema.get_field_index("problem"), "problem",
                          pa.Array.from_buffers(pa.string(), len(raw), raw.buffers()))
    (tmp_path / "run" / "build").mkdir()
    pq.write_table(bad, tmp_path / "run" / "build" / "problems.parquet")
    res = runner.invoke(app, ["publish", str(tmp_path / "run"), "--repo-id", "me/bad-text",
                              "--dry-run", str(tmp_path / "staged"), "--license", "mit"])
    assert res.exit_code == 0, res.output
    printed = " ".join(res.output.split())  # rich wraps long lines
    assert "repaired build/problems.parquet: column 'problem': 1 value(s) with invalid UTF-8" in printed
    staged = pq.read_table(next((tmp_path / "staged" / "data" / "problems").glob("*.parquet")))
    assert staged.column("problem").to_pylist()[1] == "What is 3+4? \ufffd\ufffd"
    rl_staged = pq.read_table(next((tmp_path / "staged" / "data" / "rl").glob("*.parquet")))
    assert rl_staged.num_rows == 4
