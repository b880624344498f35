"""Schema validation names the bad row and field; atomic writes; chunk store resume semantics."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.core import schema as S
from curation.core.io import ChunkStore, ExclusionWriter, read_records, write_parquet_atomic

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def _problem(**kw):
    row = {"id": "t-1", "source": "t", "problem": "What is 1+1?", "images": [], "answer": "2",
           "options": [], "solution": None, "meta": None}
    row.update(kw)
    return row


def test_valid_problem_roundtrip(tmp_path):
    table = S.to_table([_problem(), _problem(id="t-2", answer="3")], "problems")
    write_parquet_atomic(table, tmp_path / "p.parquet")
    back = pq.read_table(tmp_path / "p.parquet")
    assert back.column("answer").to_pylist() == ["2", "3"]
    assert back.schema.metadata and b"huggingface" in back.schema.metadata


def test_errors_name_row_and_field():
    rows = [_problem(), _problem(id="t-2", answer=""), _problem(id="t-3", problem=None), _problem(id="t-4", answer=5)]
    errors = S.validate_rows(rows, "problems")
    got = {(e.row, e.row_id, e.field) for e in errors}
    assert got == {(1, "t-2", "answer"), (2, "t-3", "problem"), (3, "t-4", "answer")}
    with pytest.raises(S.SchemaError) as exc:
        S.to_table(rows, "problems")
    msg = str(exc.value)
    assert "row 1 (id=t-2): field 'answer': is empty" in msg
    assert "row 2 (id=t-3): field 'problem'" in msg


def test_scores_range_and_image_bytes_checked():
    bad = {"problem_id": "p", "model": "m", "n": 4, "n_correct": 2, "pass_rate": 1.5, "ovs": 0.25, "tds": 0.1,
           "vps": 0.2}
    errs = S.validate_rows([bad], "scores")
    assert [e.field for e in errs] == ["pass_rate"]
    errs = S.validate_rows([_problem(images=[{"bytes": None, "path": "x.png"}])], "problems")
    assert errs and errs[0].field == "images" and "x.png" in errs[0].problem


def test_read_records_reports_malformed_lines(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text('{"a": 1}\n{not json}\n[1, 2]\n\n{"a": 2}\n')
    recs = list(read_records(f))
    assert [r.data for r in recs if r.data] == [{"a": 1}, {"a": 2}]
    bad = [r for r in recs if r.error]
    assert [r.locator for r in bad] == [f"{f}:2", f"{f}:3"]
    assert "malformed JSON" in bad[0].error and "expected a JSON object" in bad[1].error


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "t.parquet"
    write_parquet_atomic(S.to_table([_problem()], "problems"), path)

    class Boom(Exception):
        pass

    class BadTable:
        def __getattr__(self, name):
            raise Boom()

    with pytest.raises(Boom):
        write_parquet_atomic(BadTable(), path)  # type: ignore[arg-type]
    assert pq.read_table(path).num_rows == 1
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]  # no temp file left behind


def test_chunk_store_resume_and_config_guard(tmp_path):
    store = ChunkStore(tmp_path / "work", "rollouts", config={"seed": 1})
    for cid in (2, 0):
        store.put(cid, S.to_table([_problem(id=f"t-{cid}")], "problems"))
    again = ChunkStore(tmp_path / "work", "rollouts", config={"seed": 1})
    assert again.done() == {0, 2}
    table = again.finalize(tmp_path / "out.parquet")
    assert table.column("id").to_pylist() == ["t-0", "t-2"]  # chunk order, not write order
    with pytest.raises(ValueError, match="seed"):
        ChunkStore(tmp_path / "work", "rollouts", config={"seed": 2})


def test_exclusion_writer_schema(tmp_path):
    ex = ExclusionWriter()
    ex.add(_problem(), step="s", reason="r", detail="d", duplicate_of="t-0")
    ex.add(None, step="ingest", reason="malformed_row", locator="f.jsonl:3", raw="{bad")
    ex.write(tmp_path / "ex.parquet")
    rows = pq.read_table(tmp_path / "ex.parquet").to_pylist()
    assert rows[0]["id"] == "t-1" and rows[0]["duplicate_of"] == "t-0"
    assert rows[1]["id"] is None and rows[1]["locator"] == "f.jsonl:3"
    assert json.dumps(rows[1]["raw"])


def test_hf_feature_metadata_matches_datasets():
    """The schemas' ``huggingface`` metadata is built without importing ``datasets`` (start-up time); it is
    exactly what ``datasets.Features.from_arrow_schema`` gives, with ``Image`` for the image column."""
    from datasets import Features

    for name, schema in S.SCHEMAS.items():
        feats = Features.from_arrow_schema(schema.remove_metadata()).to_dict()
        if "images" in schema.names:
            feats["images"] = {"_type": "List", "feature": {"_type": "Image"}}
        assert schema.metadata is None or json.loads(schema.metadata[b"huggingface"]) == {"info": {"features": feats}}, name
        if "images" in schema.names:
            assert schema.metadata is not None, name


def test_schema_import_does_not_load_datasets():
    import subprocess
    import sys

    code = "import sys, curation.core.io, curation.core.schema; print('datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_table_from_rows_matches_from_pylist():
    """table_from_rows goes through Arrow's JSON reader (no pandas import) and gives from_pylist's table:
    same columns, types and values - date-like strings stay strings; a column of mixed types, which
    from_pylist refuses, is stored as JSON text instead of failing the write."""
    import pyarrow as pa

    from curation.core.io import table_from_rows

    rows = [
        {"id": "a", "answer": "2024-01-01", "n": 1, "x": 0.5, "ok": True, "opts": ["12:00", "b"],
         "meta": {"when": "2020-02-02T10:00:00", "k": 3}, "none": None, "text": "NUL \x00 and ünïcode"},
        {"id": "b", "answer": None, "n": 2, "x": 1, "ok": False, "opts": None, "meta": None, "none": None,
         "text": ""},
    ]
    got = table_from_rows(rows)
    want = pa.Table.from_pylist(rows)
    assert got.schema == want.schema and got.to_pylist() == want.to_pylist() == rows
    mixed = [{"a": 1, "b": "x"}, {"a": "y", "b": "z"}, {"a": [1, 2], "b": None}]
    table, notes = table_from_rows(mixed, with_notes=True)
    assert table.column("a").to_pylist() == ["1", "y", "[1, 2]"] and table.column("b").to_pylist() == ["x", "z", None]
    assert notes == ["column 'a': values of different types, stored as JSON text"]


def test_curate_verify_never_imports_pandas(tmp_path):
    import subprocess
    import sys

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"answer": "4", "response": "\\boxed{4}", "when": "2024-01-01"}) + "\n")
    code = ("import sys, runpy\n"
            "sys.argv = ['curate', 'verify', sys.argv[1], '--out', sys.argv[2]]\n"
            "try:\n    runpy.run_module('curation.cli', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('PANDAS', 'pandas' in sys.modules, 'datasets' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(src), str(tmp_path / "out.parquet")],
                         capture_output=True, text=True, check=True)
    assert "PANDAS False False" in out.stdout, out.stdout + out.stderr
    assert pq.read_table(tmp_path / "out.parquet").column("when").to_pylist() == ["2024-01-01"]


def test_table_from_rows_keeps_every_column():
    from curation.core.io import table_from_rows

    rows = [{"a": 1}, {"a": 2, "b": "late"}]
    assert table_from_rows(rows).to_pylist() == [{"a": 1, "b": None}, {"a": 2, "b": "late"}]
