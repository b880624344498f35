"""Benchmark files for ``decontaminate``: one test per preset on a small file laid out as that benchmark
publishes it (real MATH-Vision figures where the layout has images), plus the errors a user sees."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.build.benchmarks import PRESETS, BenchmarkError, BenchmarkSpec, read_benchmark

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MV = DATA / "math_vision"
MV_ROWS = [json.loads(line) for line in (MV / "testmini.jsonl").read_text().splitlines()]
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _figure(k: int) -> bytes:
    return (MV / MV_ROWS[k]["image"]).read_bytes()


def _copy_figure(k: int, dest: Path) -> bytes:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(_figure(k))
    return dest.read_bytes()


def test_mathvista_parquet_folder(tmp_path):
    """data/testmini-*.parquet: decoded_image (Image) preferred over the relative ``image`` path; ``query``
    (hint + question + choices) is not the problem."""
    rows = [
        {"pid": "1", "question": "When a spring does work on an object, we cannot find the work by simply "
                                 "multiplying the spring force by the object's displacement. What is x?",
         "image": "images/1.jpg", "decoded_image": {"bytes": _figure(0), "path": "1.jpg"},
         "choices": None, "unit": None, "precision": 1.0, "answer": "1.2", "question_type": "free_form",
         "answer_type": "float", "metadata": {"category": "math-targeted-vqa", "context": "scientific figure"},
         "query": "Hint: Please answer the question requiring a floating-point number. Question: ... What is x?"},
        {"pid": "2", "question": "what is the total volume of the measuring cup?", "image": "images/2.jpg",
         "decoded_image": {"bytes": _figure(1), "path": "2.jpg"}, "choices": ["1000", "900"], "unit": "g",
         "precision": None, "answer": "1000", "question_type": "multi_choice", "answer_type": "text",
         "metadata": {"category": "general-vqa", "context": "natural image"}, "query": "Hint: ..."},
    ]
    (tmp_path / "MathVista" / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "MathVista" / "data" / "testmini-00000-of-00001.parquet")
    items = read_benchmark({"path": str(tmp_path / "MathVista"), "preset": "mathvista"})
    assert [it.id for it in items] == ["1", "2"] and items[0].problem == rows[0]["question"]
    assert items[0].options == [] and items[1].options == ["1000", "900"] and items[1].answer == "1000"
    assert items[0].images[0]["bytes"] == _figure(0) and items[1].images[0]["bytes"] == _figure(1)
    assert items[0].benchmark == "mathvista"


def test_mathverse_versions_and_text_only_file(tmp_path):
    """testmini.parquet (5 versions per problem, one group) and testmini_text_only.parquet (no image);
    question_for_eval is compared too; a Vision-Only question may be empty."""
    versions = ["Text Dominant", "Text Lite", "Vision Intensive", "Vision Dominant", "Vision Only"]
    q = "As shown in the figure, AB is the diameter of circle O, and angle BOC = 50. Find angle A."
    rows = [{"sample_index": str(k + 1), "problem_index": "1", "problem_version": v,
             "question": "" if v == "Vision Only" else q[: len(q) - 8 * k],
             "image": {"bytes": _figure(2), "path": "images_version_1-4/image_1.png"}, "answer": "A",
             "question_type": "multi-choice", "metadata": {"split": "testmini", "source": "GeoQA"},
             "query_wo": "Please directly answer ...", "query_cot": "Please first conduct reasoning ...",
             "question_for_eval": q} for k, v in enumerate(versions)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "testmini.parquet")
    text_only = [{k: v for k, v in rows[0].items() if k != "image"} | {"problem_version": "Text Only"}]
    pq.write_table(pa.Table.from_pylist(text_only), tmp_path / "testmini_text_only.parquet")
    items = read_benchmark(f"{tmp_path / 'testmini.parquet'}:mathverse")
    assert len(items) == 5 and {it.group for it in items} == {"1"} and [it.id for it in items] == list("12345")
    assert all(len(it.images) == 1 for it in items) and items[4].problem == ""
    assert items[1].texts == [rows[1]["question"], q] and items[0].texts == [q]  # no duplicate variant
    [t] = read_benchmark(f"{tmp_path / 'testmini_text_only.parquet'}:mathverse")
    assert t.images == [] and t.problem == q


def test_math_vision_local_jsonl_and_hub_parquet(tmp_path):
    """The local testmini.jsonl (relative image paths) and the Hub's Parquet (decoded_image bytes)."""
    items = read_benchmark(f"{MV / 'testmini.jsonl'}:math_vision")
    assert len(items) == 304 and all(len(it.images) == 1 for it in items)
    assert items[0].id == "4" and items[0].answer == "6" and items[0].images[0]["bytes"] == _figure(0)
    assert items[2].options == ["A", "B", "C", "D", "E"]
    hub = [{**{k: r[k] for k in ("id", "question", "options", "answer", "solution", "level", "subject")},
            "image": r["image"], "decoded_image": {"bytes": _figure(k), "path": r["image"]}}
           for k, r in enumerate(MV_ROWS[:3])]
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(hub), tmp_path / "data" / "testmini-00000-of-00001.parquet")
    got = read_benchmark({"path": str(tmp_path), "preset": "math_vision"})  # images/*.jpg are not there
    assert [it.images[0]["bytes"] for it in got] == [_figure(k) for k in range(3)]


def test_wemath_json_list_with_option_string(tmp_path):
    """testmini.json (a JSON list; column names with spaces) + the unzipped images folder."""
    img = _copy_figure(3, tmp_path / "3steps" / "image" / "165-3.png")
    rows = [{"ID": "3steps_165", "split": "testmini", "knowledge concept": "Area of Circles",
             "question": "As shown in the diagram, the radius of the circular flower bed is 8 m. What is its "
                         "area (  ) m²? (π = 3.14)",
             "option": "A. 200.96;B. 3215.36;C. 6280;D. 32; E. No correct answer", "answer": "A",
             "image_path": "3steps/image/165-3.png", "key": "3steps_3", "question number": 1575,
             "Knowledge concept description": "..."}]
    (tmp_path / "testmini.json").write_text(json.dumps(rows, indent=2, ensure_ascii=False))
    [it] = read_benchmark(f"{tmp_path / 'testmini.json'}:wemath")
    assert it.id == "3steps_165" and it.group == "3steps_3" and it.answer == "A"
    assert it.options == ["A. 200.96", "B. 3215.36", "C. 6280", "D. 32", "E. No correct answer"]
    assert it.images[0]["bytes"] == img


def test_dynamath_saved_dataset_with_variant_splits(tmp_path):
    """A save_to_disk DatasetDict with splits sample_variant1..3: every split read, variants grouped by id."""
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    splits = {}
    for v in range(1, 4):
        splits[f"sample_variant{v}"] = datasets.Dataset.from_dict({
            "id": ["1", "2"], "question": [f"What is the value of f(x) at x = {v}?", "How many edges?"],
            "image": [f"images/{v}-1.png", f"images/{v}-2.png"],
            "decoded_image": [Image.open(MV / MV_ROWS[v]["image"]), Image.open(MV / MV_ROWS[v + 3]["image"])],
            "ground_truth": [str(v), "12"], "answer_type": ["float", "int"], "subject": ["PA", "graph theory"],
            "knowledge_level": ["high school", "undergraduate"],
        }).cast_column("decoded_image", datasets.Image())
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "DynaMath_Sample"))
    items = read_benchmark({"path": str(tmp_path / "DynaMath_Sample"), "preset": "dynamath"})
    assert len(items) == 6 and [it.group for it in items] == ["1", "2"] * 3
    assert [it.answer for it in items[::2]] == ["1", "2", "3"] and all(it.images for it in items)
    assert "sample_variant2" in items[2].locator


def test_logicvista_object_keyed_by_id(tmp_path):
    """data/dataset.json is ONE object keyed by id; images live in data/images/."""
    img = _copy_figure(5, tmp_path / "data" / "images" / "v1_0.png")
    data = {"v1_0": {"imagename": "v1_0.png", "question": "Which of the boxes comes next in the sequence? "
                     "Select from A, B, C, D and E", "answer": "A, C", "reasoning": "...",
                     "skill": ["inductive"], "capability": ["diagram"], "imagesource": "web", "sourcelink": "x"}}
    (tmp_path / "data" / "dataset.json").write_text(json.dumps(data, indent=4))
    [it] = read_benchmark(f"{tmp_path / 'data' / 'dataset.json'}:logicvista")
    assert it.id == "v1_0" and it.answer == "A, C" and it.images[0]["bytes"] == img
    assert it.locator.endswith("dataset.json[v1_0]")


def test_math500_jsonl(tmp_path):
    rows = [{"problem": "Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.",
             "solution": "... $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$",
             "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "subject": "Precalculus", "level": 2,
             "unique_id": "test/precalculus/807.json"}]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    [it] = read_benchmark(f"{tmp_path / 'test.jsonl'}:math500")
    assert it.id == "test/precalculus/807.json" and it.answer == rows[0]["answer"] and it.images == []


def test_aime_both_spellings(tmp_path):
    """HuggingFaceH4/aime_2024 (lower case, integer answer) and Maxwell-Jia/AIME_2024 (capitalised)."""
    problem = "Every morning Aya goes for a 9-kilometer-long walk and stops at a coffee shop afterwards."
    pq.write_table(pa.table({"id": [60], "problem": [problem], "solution": ["..."], "answer": [204],
                             "url": ["https://artofproblemsolving.com/..."], "year": [2024]}),
                   tmp_path / "train-00000-of-00001.parquet")
    [a] = read_benchmark(f"{tmp_path / 'train-00000-of-00001.parquet'}:aime")
    (tmp_path / "aime_2024_problems.jsonl").write_text(
        json.dumps({"ID": "2024-I-1", "Problem": problem, "Solution": "...", "Answer": 204}) + "\n")
    [b] = read_benchmark(f"{tmp_path / 'aime_2024_problems.jsonl'}:aime")
    assert (a.id, a.answer, b.id, b.answer) == ("60", "204", "2024-I-1", "204")
    assert a.problem == b.problem == problem


def test_amc23_real_file():
    items = read_benchmark(f"{DATA / 'benchmarks' / 'amc23.jsonl'}:amc23")
    assert len(items) == 40 and items[0].answer == "27" and items[0].id == "0"  # 27.0 in the file
    assert items[0].problem.startswith("Cities $A$ and $B$")


def test_gsm8k_parquet(tmp_path):
    rows = [json.loads(line) for line in (DATA / "gsm8k" / "test.jsonl").read_text().splitlines()[:3]]
    (tmp_path / "main").mkdir()
    pq.write_table(pa.table({"question": [r["question"] for r in rows], "answer": [r["answer"] for r in rows]}),
                   tmp_path / "main" / "test-00000-of-00001.parquet")
    items = read_benchmark(f"{tmp_path / 'main'}:gsm8k")
    assert [it.answer for it in items] == [r["answer"].split("####")[-1].strip().replace(",", "") for r in rows]
    assert items[0].id is None and items[0].label().endswith("row 0")


def test_minerva_real_file():
    items = read_benchmark(f"{DATA / 'benchmarks' / 'minerva_math.jsonl'}:minerva_math")
    assert len(items) == 272 and items[17].id == "17"
    assert all(it.answer for it in items)  # every solution has a final \boxed{}


def test_olympiadbench_image_columns(tmp_path):
    """HF Hothan/OlympiadBench: image_1 ... image_9 Image columns, final_answer a list, context prepended."""
    n = 9
    row = {"id": 2231, "question": "Find the value of $C$. <image_1> <image_2>", "solution": ["..."],
           "final_answer": ["$\\frac{1}{2}$"], "context": "A snail crawls along a line.",
           "is_multiple_answer": False, "unit": None, "answer_type": "Numerical", "error": None}
    for i in range(1, n + 1):
        row[f"image_{i}"] = {"bytes": _figure(i), "path": None} if i <= 2 else None
    schema = pa.schema([(k, pa.string()) for k in ("question", "context", "unit", "answer_type", "error")]
                       + [("id", pa.int64()), ("solution", pa.list_(pa.string())),
                          ("final_answer", pa.list_(pa.string())), ("is_multiple_answer", pa.bool_())]
                       + [(f"image_{i}", IMAGE) for i in range(1, n + 1)])
    pq.write_table(pa.Table.from_pylist([row], schema=schema), tmp_path / "OE_MM_maths_en_COMP.parquet")
    [it] = read_benchmark(f"{tmp_path / 'OE_MM_maths_en_COMP.parquet'}:olympiadbench")
    assert it.answer == "\\frac{1}{2}" and it.problem.startswith("A snail crawls along a line.\nFind")
    assert [im["bytes"] for im in it.images] == [_figure(1), _figure(2)] and it.id == "2231"


def test_every_preset_is_tested():
    tested = {"mathvista", "mathverse", "math_vision", "wemath", "dynamath", "logicvista", "math500", "aime",
              "amc23", "gsm8k", "minerva_math", "olympiadbench"}
    assert {p.name for p in PRESETS.values()} == tested


# --- what a user gets wrong ------------------------------------------------------------------------------


def test_preset_mismatch_names_expected_and_found_columns(tmp_path):
    f = tmp_path / "amc23.jsonl"
    f.write_text((DATA / "benchmarks" / "amc23.jsonl").read_text())
    with pytest.raises(BenchmarkError, match=(r"preset mathvista expects columns \[question, decoded_image\|image, "
                                              r"pid\]; amc23.jsonl has \[answer, id, problem, question, url\] "
                                              r"\(missing: images, id")):
        read_benchmark(f"{f}:mathvista")
    # the same file read with a map: images from no column is fine, a mapped column must exist
    [it, *_] = read_benchmark({"path": str(f), "map": "problem=question,id=id"})
    assert it.problem.startswith("Cities")
    with pytest.raises(BenchmarkError, match=r"map expects columns \[qq\]; amc23.jsonl has"):
        read_benchmark({"path": str(f), "map": "problem=qq"})


def test_spec_parsing_and_errors(tmp_path):
    f = tmp_path / "b.jsonl"
    f.write_text(json.dumps({"question": "How many dots? <image1>", "image": "missing.png", "id": "7"}) + "\n")
    assert BenchmarkSpec.parse(f"{f}:math_vision").preset == "math_vision"
    assert BenchmarkSpec.parse(str(f)).preset is None and BenchmarkSpec.parse(str(f)).display == "b.jsonl"
    with pytest.raises(BenchmarkError, match="unknown preset 'mathvision'.*presets: aime"):
        BenchmarkSpec.parse({"path": str(f), "preset": "mathvision"})
    with pytest.raises(BenchmarkError, match=r"unknown key\(s\) \['column'\]"):
        BenchmarkSpec.parse({"path": str(f), "column": "q"})
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        BenchmarkSpec.parse(str(tmp_path / "nope.jsonl:math_vision"))
    with pytest.raises(BenchmarkError, match=r"b.jsonl:1: image file not found: .*missing.png.*set image_root"):
        read_benchmark(f"{f}:math_vision")
    _copy_figure(0, tmp_path / "imgs" / "missing.png")
    [it] = read_benchmark({"path": str(f), "preset": "math_vision", "image_root": str(tmp_path / "imgs")})
    assert it.images[0]["bytes"] == _figure(0)
