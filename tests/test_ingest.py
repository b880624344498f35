"""curate ingest on the real data in ../shared/data, stable ids, and bad input handling."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.ingest.sources import MappingError, ingest, write_ingest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CURATE = [sys.executable, "-m", "curation.cli"]


def test_gsm8k_train_and_test():
    train = ingest(DATA / "gsm8k/train.jsonl", "gsm8k")
    test = ingest(DATA / "gsm8k/test.jsonl", "gsm8k")
    assert (len(train.rows), len(test.rows)) == (7473, 1319)
    assert len(train.excluded) == 0
    first = train.rows[0]
    assert first["answer"] == "72" and first["problem"].startswith("Natalia sold clips")
    assert "<<" not in (first["solution"] or "")  # calculator annotations stripped
    assert all("," not in r["answer"] for r in train.rows)  # "1,000" -> "1000"
    assert len({r["id"] for r in test.rows}) == 1319


def test_ids_are_stable_and_order_independent(tmp_path):
    lines = (DATA / "gsm8k/test.jsonl").read_text().splitlines()[:50]
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    a.write_text("\n".join(lines) + "\n")
    b.write_text("\n".join(reversed(lines)) + "\n")
    ids_a = [r["id"] for r in ingest(a, "gsm8k").rows]
    ids_a2 = [r["id"] for r in ingest(a, "gsm8k").rows]
    ids_b = [r["id"] for r in ingest(b, "gsm8k").rows]
    assert ids_a == ids_a2
    assert ids_a == list(reversed(ids_b))


def test_math_vision_with_images(tmp_path):
    res = ingest(DATA / "math_vision/testmini.jsonl", "math_vision")
    assert len(res.rows) == 304 and len(res.excluded) == 0
    mc = [r for r in res.rows if r["options"]]
    assert mc and all(r["answer"] in "ABCDE" for r in mc)
    write_ingest(res, tmp_path)
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=str(tmp_path / "problems.parquet"), split="train")
    img = ds[0]["images"][0]
    src = json.loads((DATA / "math_vision/testmini.jsonl").read_text().splitlines()[0])
    from PIL import Image

    assert img.size == Image.open(DATA / "math_vision" / src["image"]).size
    assert json.loads(ds[0]["meta"])["subject"] == src["subject"]


def test_benchmarks_and_math_format():
    amc = ingest(DATA / "benchmarks/amc23.jsonl", "jsonl")
    assert len(amc.rows) == 40 and amc.rows[0]["answer"] == "27"  # 27.0 -> "27"
    minerva = ingest(DATA / "benchmarks/minerva_math.jsonl", "math")
    assert len(minerva.rows) + len(minerva.excluded) == 272
    assert minerva.rows[0]["answer"] == "1.6"  # last \boxed{} of the solution
    assert len(minerva.rows) >= 260


def test_bad_rows_go_to_excluded_with_locations(tmp_path):
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    good_img = DATA / "math_vision/images" / json.loads(
        (DATA / "math_vision/testmini.jsonl").read_text().splitlines()[0])["image"].split("/")[-1]
    shutil.copy(good_img, img_dir / "ok.jpg")
    (img_dir / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg at all")
    f = tmp_path / "raw.jsonl"
    f.write_text(
        "\n".join(
            [
                json.dumps({"question": "How many sides does the shape have? <image1>", "gt": "4", "image": "images/ok.jpg"}),
                '{"question": "broken line", "gt": ',
                json.dumps({"question": "What is 2+2?"}),
                json.dumps({"question": "Count the dots. <image1>", "gt": "3", "image": "images/corrupt.jpg"}),
                json.dumps({"question": "Count the stars. <image1>", "gt": "5", "image": "images/missing.jpg"}),
                json.dumps({"question": "What is 3+3?", "gt": "6"}),
            ]
        )
        + "\n"
    )
    res = ingest(f, "jsonl", mapping="problem=question,answer=gt,images=image")
    assert [r["answer"] for r in res.rows] == ["4", "6"]
    assert res.rows[0]["images"][0]["bytes"] == (img_dir / "ok.jpg").read_bytes()
    ex = {r["locator"]: (r["reason"], r["detail"]) for r in res.excluded.rows}
    assert ex[f"{f}:2"][0] == "malformed_row"
    assert ex[f"{f}:3"][0] == "missing_answer"
    assert ex[f"{f}:4"][0] == "corrupt_image" and "cannot be decoded" in ex[f"{f}:4"][1]
    assert ex[f"{f}:5"][0] == "missing_image" and "missing.jpg" in ex[f"{f}:5"][1]
    assert res.stats["rows_in"] == 6 == len(res.rows) + len(res.excluded)


def test_wrong_map_column_is_a_clear_error(tmp_path):
    f = tmp_path / "raw.jsonl"
    f.write_text(json.dumps({"question": "What is 2+2?", "gt": "4"}) + "\n")
    with pytest.raises(MappingError, match=r"raw.jsonl:1: --map answer=gold: no column 'gold'.*columns: gt, question"):
        ingest(f, "jsonl", mapping="problem=question,answer=gold")
    proc = subprocess.run([*CURATE, "ingest", str(f), "--format", "jsonl", "--map", "answer=gold", "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "no column 'gold'" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_ingest_parquet_and_datasets_dir(tmp_path):
    from datasets import Dataset

    rows = [{"q": f"What is {i} + {i}?", "a": str(2 * i), "extra": i} for i in range(5)]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    Dataset.from_list(rows).to_parquet(str(tmp_path / "x.parquet"))
    for src, fmt in ((tmp_path / "ds", "hf"), (tmp_path / "x.parquet", "parquet")):
        out = tmp_path / f"out_{fmt}"
        proc = subprocess.run([*CURATE, "ingest", str(src), "--format", fmt, "--map", "problem=q,answer=a",
                               "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        t = pq.read_table(out / "problems.parquet")
        assert t.column("answer").to_pylist() == ["0", "2", "4", "6", "8"]
        assert json.loads(t.column("meta")[1].as_py()) == {"extra": 1}
