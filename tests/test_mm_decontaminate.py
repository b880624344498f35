"""Multimodal decontamination on small sets derived from the real MATH-Vision testmini: planted copies of
benchmark items (re-encoded, resized, cropped, grey, reworded) are removed, problems that share the text but
not the figure are kept, and the perceptual hash / image index behave as documented."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curation.build.image_index import ImageIndex
from curation.build.pipeline import build
from curation.build.steps.base import Excluded, Step
from curation.build.steps.decontaminate import IMAGE_LOOSE, IMAGE_NCC, IMAGE_STRICT, content_overlap
from curation.core.images import image_signatures, phash

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MV = DATA / "math_vision"
ROWS = [json.loads(line) for line in (MV / "testmini.jsonl").read_text().splitlines()]
N_BENCH = 40  # the first 40 testmini problems form the benchmark; the others are clean training problems


def _img(r: dict) -> dict:
    return {"bytes": (MV / r["image"]).read_bytes(), "path": Path(r["image"]).name}


def _enc(im: Image.Image, fmt: str = "PNG", **kw) -> dict:
    buf = io.BytesIO()
    (im.convert("RGB") if fmt == "JPEG" else im).save(buf, fmt, **kw)
    return {"bytes": buf.getvalue(), "path": f"x.{fmt.lower()}"}


def _rgb(r: dict) -> Image.Image:
    return Image.open(MV / r["image"]).convert("RGB")


def _pad(im: Image.Image, px: int, py: int) -> dict:
    out = Image.new("RGB", (im.width + 2 * px, im.height + 2 * py), "white")
    out.paste(im, (px, py))
    return _enc(out, "JPEG", quality=90)


TRANSFORMS = {
    "jpeg q60": lambda im: _enc(im, "JPEG", quality=60),
    "resize 80%": lambda im: _enc(im.resize((round(im.width * 0.8), round(im.height * 0.8)), Image.LANCZOS)),
    "crop 3 px": lambda im: _enc(im.crop((3, 3, im.width - 3, im.height - 3))),
    "grey": lambda im: _enc(im.convert("L")),
    "white border": lambda im: _pad(im, 20, 15),
}


def _row(rid: str, problem: str, images: list[dict]) -> dict:
    return {"id": rid, "source": "t", "problem": problem, "images": images, "answer": "A"}


@pytest.fixture(scope="module")
def bench_file(tmp_path_factory) -> Path:
    """The first N_BENCH testmini problems as MATH-Vision publishes them (JSONL + relative image paths)."""
    d = tmp_path_factory.mktemp("bench")
    (d / "images").mkdir()
    for r in ROWS[:N_BENCH]:
        (d / r["image"]).write_bytes((MV / r["image"]).read_bytes())
    (d / "testmini.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:N_BENCH]))
    return d / "testmini.jsonl"


def _run(step: Step, rows: list[dict]) -> dict[str, Excluded]:
    out = list(step.run(rows))
    assert len(out) == len(rows) and all((o.row if isinstance(o, Excluded) else o) is r for o, r in zip(out, rows))
    return {o.row["id"]: o for o in out if isinstance(o, Excluded)}


def test_planted_copies_found_and_same_text_other_figure_kept(bench_file):
    bench, clean = ROWS[:N_BENCH], ROWS[N_BENCH:]
    rows = []
    for k, r in enumerate(bench):
        for name, t in TRANSFORMS.items():
            rows.append(_row(f"P|{name}|{r['id']}", r["question"], [t(_rgb(r))]))
        # the 44-problem class of the issue: the same text over another problem's figure
        rows.append(_row(f"N|same text, other figure|{r['id']}", r["question"], [_img(clean[k])]))
        rows.append(_row(f"T|text-only copy|{r['id']}", r["question"], []))
    for r in clean[:60]:
        rows.append(_row(f"N|clean|{r['id']}", r["question"], [_img(r)]))
    step = Step.from_config("decontaminate", {"benchmarks": [f"{bench_file}:math_vision"]})
    got = _run(step, rows)
    for name in TRANSFORMS:
        caught = {rid.split("|")[2] for rid in got if rid.startswith(f"P|{name}|")}
        assert caught == {r["id"] for r in bench}, (name, sorted({r["id"] for r in bench} - caught))
    assert not [rid for rid in got if rid.startswith("N|")]  # precision 1: nothing clean removed
    # a copy names its own benchmark row, the rule, the text evidence and the image distance
    d = got[f"P|jpeg q60|{bench[2]['id']}"].detail
    assert d.startswith("text+image: ngram ") and "shared 8-grams (100%" in d
    assert f"of 256 bits apart (<= {IMAGE_LOOSE}) with math_vision {bench_file} row 2 (id={bench[2]['id']})" in d
    d = got["P|jpeg q60|28"].detail  # a 5 x 5 grid: its pHash moves 78 bits, its thumbnail does not
    assert "of 256 bits apart with thumbnail correlation distance 0.0" in d and f"(<= {IMAGE_NCC})" in d
    # text-only rows are judged on text, as before the multimodal rule (text_only_rows: text)
    assert all(f"T|text-only copy|{r['id']}" in got for r in bench)
    assert got[f"T|text-only copy|{bench[2]['id']}"].detail.startswith("ngram: ")
    s = step.summary()
    [b] = s["benchmarks_checked"]
    assert (b["name"], b["preset"], b["items"], b["items_with_images"], b["images"]) == (
        "math_vision", "math_vision", N_BENCH, N_BENCH, N_BENCH)
    assert b["excluded"] == len(got) and b["excluded_by_rule"]["ngram"] == N_BENCH  # the text-only copies
    assert b["kept_text_match_other_image"] >= N_BENCH  # every same-text row was compared and kept
    assert s["thresholds"]["image_strict_bits"] == IMAGE_STRICT and s["thresholds"]["image_loose_bits"] == IMAGE_LOOSE

    # the text-only rule (the step before images were compared) removes every same-text row: the 44-problem class
    text_rule = step.matches([r["problem"] for r in rows])
    same_text = [k for k, r in enumerate(rows) if r["id"].startswith("N|same text")]
    assert all(text_rule[k] is not None for k in same_text)


def test_reworded_question_over_the_same_figure(bench_file):
    """image+overlap: a near-identical figure and a question that shares most content words, while the same
    figure with an unrelated question is kept."""
    r, other = ROWS[2], ROWS[N_BENCH + 5]  # Misty the cat (long question), a clean problem
    reworded = ("Kittens question: the cat Misty has 5 kittens; 2 are striped, 1 is spotty, the rest white. "
                "Which picture shows Misty's kittens if one kitten's ears are of a different colour?")
    assert content_overlap(reworded, r["question"]) >= 0.5
    rows = [_row("reworded", reworded, [TRANSFORMS["jpeg q60"](_rgb(r))]),
            _row("unrelated", other["question"], [TRANSFORMS["jpeg q60"](_rgb(r))])]
    got = _run(Step.from_config("decontaminate", {"benchmarks": [f"{bench_file}:math_vision"]}), rows)
    assert sorted(got) == ["reworded"]
    d = got["reworded"].detail
    assert d.startswith("image+overlap: an image ") and f"(<= {IMAGE_STRICT}) and content-word overlap" in d
    assert d.endswith(f"row 2 (id={r['id']})")


def test_text_only_row_policies(bench_file):
    """text (default): judged on text as before; guarded: only against self-contained item texts (>= 12
    content words, not another item's text); skip: never against items with images."""
    short, long_ = ROWS[0], ROWS[2]  # "How many different digits ...?" (short) and the Misty question (long)
    rows = [_row("short", short["question"], []), _row("long", long_["question"], [])]
    spec = f"{bench_file}:math_vision"
    assert sorted(_run(Step.from_config("decontaminate", {"benchmarks": [spec]}), rows)) == ["long", "short"]
    guarded = Step.from_config("decontaminate", {"benchmarks": [spec], "text_only_rows": "guarded"})
    assert sorted(_run(guarded, rows)) == ["long"]
    skip = Step.from_config("decontaminate", {"benchmarks": [spec], "text_only_rows": "skip"})
    assert _run(skip, rows) == {}
    with pytest.raises(ValueError, match="text_only_rows must be one of text, guarded, skip"):
        Step.from_config("decontaminate", {"benchmarks": [spec], "text_only_rows": "never"})
    with pytest.raises(ValueError, match="image_strict <= image_loose"):
        Step.from_config("decontaminate", {"benchmarks": [spec], "image_strict": 80})


def test_rows_with_images_against_a_text_benchmark_use_the_text_rule(bench_file):
    amc = [json.loads(line) for line in (DATA / "benchmarks" / "amc23.jsonl").read_text().splitlines()]
    rows = [_row("amc-with-figure", amc[0]["problem"], [_img(ROWS[100])]),
            _row("mv-copy", ROWS[3]["question"], [_img(ROWS[3])])]
    step = Step.from_config("decontaminate", {"benchmarks": [str(DATA / "benchmarks" / "amc23.jsonl"),
                                                              {"path": str(bench_file), "preset": "math_vision",
                                                               "name": "mv-mini"}]})
    got = _run(step, rows)
    assert got["amc-with-figure"].detail.startswith("ngram: ") and "amc23.jsonl row 0" in got["amc-with-figure"].detail
    assert " with mv-mini " in got["mv-copy"].detail and "an image 0 of 256 bits apart" in got["mv-copy"].detail
    counts = {b["name"]: b["excluded"] for b in step.summary()["benchmarks_checked"]}
    assert counts == {"amc23.jsonl": 1, "mv-mini": 1}


def test_build_recipe_and_cli_spec_write_per_benchmark_stats(bench_file, tmp_path):
    """curate build with benchmarks from the recipe (mapping form) and the CLI (PATH:preset): stats.json lists
    each benchmark with its preset and counts; kept + excluded = input."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.core import schema as S

    rows = [_row("copy", ROWS[1]["question"], [TRANSFORMS["resize 80%"](_rgb(ROWS[1]))]),
            _row("other-figure", ROWS[1]["question"], [_img(ROWS[200])]),
            _row("clean", ROWS[201]["question"], [_img(ROWS[201])]),
            _row("amc", json.loads((DATA / "benchmarks" / "amc23.jsonl").read_text().splitlines()[3])["problem"], [])]
    for r in rows:
        r.update(options=[], solution=None, meta=None)
    pq.write_table(S.to_table(rows, "problems"), tmp_path / "problems.parquet")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"build": {"steps": [{"decontaminate": {
        "benchmarks": [{"path": str(bench_file), "preset": "math_vision"}], "image_loose": 64}}]}}))
    res = build([tmp_path / "problems.parquet"], tmp_path / "out", recipe=recipe,
                decontaminate=[f"{DATA / 'benchmarks' / 'amc23.jsonl'}:amc23"])
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    [d] = stats["steps"]
    assert {b["name"]: (b["preset"], b["excluded"]) for b in d["benchmarks_checked"]} == {
        "math_vision": ("math_vision", 1), "amc23": ("amc23", 1)}
    assert d["thresholds"]["image_loose_bits"] == 64 and d["rows_in"] == 4
    excluded = {r["id"]: r for r in pa.Table.to_pylist(res.excluded)}
    assert sorted(excluded) == ["amc", "copy"] and res.kept.num_rows == 2


def test_signatures_survive_transforms_and_separate_distinct_figures():
    """On 40 real figures: every transformed copy near-identical to its original (pHash within IMAGE_STRICT
    bits or thumbnail 1 - r within IMAGE_NCC), and no two distinct figures near-identical (the operating
    point; IMAGE_LOOSE admits a few distinct pairs, which is why it needs a text match too)."""
    orig = [_img(r) for r in ROWS[:N_BENCH]]
    h, v, ok = image_signatures(orig)
    assert ok.all() and h.shape == v.shape == (N_BENCH, 256)
    assert np.array_equal(phash(orig)[0], h)
    by_hash_alone = 0
    for name, t in TRANSFORMS.items():
        ht, vt, _ = image_signatures([t(_rgb(r)) for r in ROWS[:N_BENCH]])
        d, c = (ht != h).sum(1), 1 - (vt * v).sum(1)
        assert ((d <= IMAGE_STRICT) | (c <= IMAGE_NCC)).all(), (name, d.max())
        by_hash_alone += int((d <= IMAGE_STRICT).sum())
    assert by_hash_alone < len(TRANSFORMS) * N_BENCH  # figure 28 (a 5 x 5 grid) needs the thumbnail test
    off = ~np.eye(N_BENCH, dtype=bool)
    assert (h[:, None, :] != h[None, :, :]).sum(2)[off].min() > IMAGE_STRICT
    assert (1 - v @ v.T)[off].min() > IMAGE_NCC
    # undecodable bytes are reported, not raised
    bits, ok = phash([{"bytes": b"not an image"}, orig[0]])
    assert ok.tolist() == [False, True] and not bits[0].any()


def test_image_index_hashes_once_and_matches_brute_force():
    imgs = [_img(r) for r in ROWS[:30]]
    index = ImageIndex(chunk=7)  # several chunks
    index.add(imgs + imgs[:5])  # repeats: hashed once
    assert len(index) == 35 and index.decoded == 30
    queries = [TRANSFORMS["grey"](_rgb(r)) for r in ROWS[:10]] + [{"bytes": b"corrupt", "path": "c"}]
    index.add([{"bytes": b"corrupt", "path": "c"}])
    pairs = index.search(queries, 90)
    assert index.decoded == 30 + 1 + 10  # the corrupt bytes were tried once
    qb, _ = phash(queries[:10])
    ib, _ = phash(imgs + imgs[:5])
    brute = (qb[:, None, :] != ib[None, :, :]).sum(2)
    want = {(q, i, int(brute[q, i])) for q, i in zip(*np.nonzero(brute <= 90))} | {(10, 35, 0)}
    assert set(zip(pairs.query.tolist(), pairs.index.tolist(), pairs.bits.tolist())) == want
    # the thumbnail test alone: each grey copy finds its original (and the repeated copies of the first 5)
    by_ncc = index.search(queries, 0, max_ncc=IMAGE_NCC)
    assert set(zip(by_ncc.query.tolist(), by_ncc.index.tolist())) == (
        {(q, q) for q in range(10)} | {(q, 30 + q) for q in range(5)} | {(10, 35)})
    assert by_ncc.ncc.max() <= IMAGE_NCC and index.decoded == 41  # nothing decoded twice
