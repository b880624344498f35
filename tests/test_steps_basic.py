"""normalize, exact_dedup and sanity steps, and the pipeline's accounting."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from curation.build.pipeline import run_pipeline
from curation.build.steps.base import Excluded, Step
from curation.build.steps.exact_dedup import ExactDedup
from curation.build.steps.normalize import Normalize, normalize_answer_text, normalize_text
from curation.build.steps.sanity import Sanity

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _row(i, problem, answer="1", images=()):
    return {"id": f"r{i}", "source": "t", "problem": problem, "answer": answer, "images": list(images),
            "options": [], "solution": None, "meta": None}


def _png(w=32, h=32, color=(200, 10, 10)):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": "x.png"}


def test_normalize_text_is_conservative():
    assert normalize_text("  What\u00a0is  x²\u2212 1?\r\n\n\n\nNext  ") == "What is x²- 1?\n\nNext"
    assert normalize_text("\u201cquoted\u201d\u200b") == '"quoted"'
    assert normalize_answer_text(" $\\frac{1}{2}$. ") == "\\frac{1}{2}"
    assert normalize_answer_text("\\(3\\,\\text{cm}\\)") == "3\\text{cm}"
    assert normalize_answer_text("1.5") == "1.5"


def test_exact_dedup_keeps_first_and_flags_conflicts():
    img_a, img_b = _png(color=(1, 2, 3)), _png(color=(250, 250, 0))
    rows = [
        _row(0, "What is 2 + 2?", "4"),
        _row(1, "what is 2+2?", "4"),        # same text after casefold/whitespace removal
        _row(2, "What is 2 + 2 ?", "5"),      # same text, different answer
        _row(3, "Count the dots. <image1>", "3", [img_a]),
        _row(4, "Count the dots. <image1>", "3", [img_b]),  # different image: not a duplicate
        _row(5, "Count the dots. <image1>", "3", [dict(img_a, path="copy.png")]),  # same bytes
    ]
    out = list(ExactDedup().run(rows))
    kept = [r["id"] for r in out if not isinstance(r, Excluded)]
    ex = {o.row["id"]: o for o in out if isinstance(o, Excluded)}
    assert kept == ["r0", "r3", "r4"]
    assert ex["r1"].duplicate_of == "r0" and ex["r1"].detail is None
    assert "conflicting answer" in ex["r2"].detail
    assert ex["r5"].duplicate_of == "r3"


def test_sanity_reasons():
    corrupt = {"bytes": b"\x89PNG\r\n\x1a\nnot really", "path": "bad.png"}
    rows = [
        _row(0, "A perfectly fine problem statement?"),
        _row(1, "   "),
        _row(2, "2+2?"),
        _row(3, "x" * 30000),
        _row(4, "Look at the figure <image1>", images=[corrupt]),
        _row(5, "Look at the figure <image1>", images=[_png(4, 4)]),
        _row(6, "Compare <image1> and <image2>"),
        _row(7, "Look at the figure <image1>", images=[_png()]),
    ]
    out = list(Sanity().run(rows))
    reasons = [o.reason if isinstance(o, Excluded) else "kept" for o in out]
    assert reasons == ["kept", "empty_problem", "too_short", "too_long", "corrupt_image", "tiny_image",
                       "missing_image", "kept"]


def test_pipeline_accounts_for_every_row():
    rows = [_row(i, f"Problem number {i % 7} asks for a sum?", str(i)) for i in range(30)] + [_row(99, "")]
    kept, excluded, stats = run_pipeline(rows, [Normalize(), Sanity(), ExactDedup()])
    assert len(kept) == 7 and len(excluded) == 24
    assert stats["input_rows"] == 31 == stats["output_rows"] + stats["excluded_rows"]
    assert [s["step"] for s in stats["steps"]] == ["normalize", "sanity", "exact_dedup"]
    assert stats["steps"][1]["excluded"] == {"empty_problem": 1}
    assert stats["excluded_by_reason"] == {"empty_problem": 1, "exact_duplicate": 23}


def test_pipeline_detects_a_step_that_loses_rows():
    class Lossy(Step):
        name = "lossy_test_step"

        def run(self, rows):
            for i, r in enumerate(rows):
                if i:
                    yield r

    with pytest.raises(RuntimeError, match="lost rows"):
        run_pipeline([_row(0, "aaaaaaaaaaa"), _row(1, "bbbbbbbbbbbb")], [Lossy()])
    Step.registry.pop("lossy_test_step")


def test_unknown_step_and_option_are_clear_errors():
    with pytest.raises(ValueError, match="unknown step 'nope'"):
        Step.from_config("nope")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['min_char'\]"):
        Step.from_config("sanity", {"min_char": 3})


def test_real_math_vision_images_pass_sanity():
    from curation.ingest.sources import ingest

    rows = ingest(DATA / "math_vision/testmini.jsonl", "math_vision").rows[:40]
    out = list(Sanity().run(rows))
    bad = [(o.row["id"], o.reason, o.detail) for o in out if isinstance(o, Excluded)]
    assert not bad, bad
    assert json.loads(rows[0]["meta"])["level"] >= 1
