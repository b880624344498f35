"""Scoring formulas (p, OVS, TDS, VPS), TDS metrics and their edge cases, prompts, and the report."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import pyarrow as pa
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from curation.core import schema as S  # noqa: E402
from curation.core.prompts import PromptError, build_prompt, list_templates, load_template  # noqa: E402
from curation.score import scores as sc  # noqa: E402
from curation.score.report import write_score_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

PAD = "<|im_end|><|endoftext|><pad><pad><pad></s>"


def _plain_levenshtein(a: list, b: list) -> int:
    """Textbook O(|a||b|) dynamic programme, independent of the implementation under test."""
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
        prev = cur
    return prev[-1]


# --- p, OVS, VPS ---------------------------------------------------------------------------------------------


def test_score_group_formulas():
    texts = ["x = 1 so 2", "x = 1 so 3", "we get 2", "clearly 2"]
    g = sc.score_group([True, False, True, True], texts, metric="edit")
    assert g["n"] == 4 and g["n_correct"] == 3
    assert g["pass_rate"] == 0.75
    assert g["ovs"] == pytest.approx(0.75 * 0.25)
    assert g["vps"] == pytest.approx(0.8 * g["ovs"] + 0.2 * g["tds"])
    # normalised OVS: 4 p (1 - p) in [0, 1]
    g2 = sc.score_group([True, False, True, True], texts, alpha=0.5, beta=0.5, normalize_ovs=True)
    assert g2["vps"] == pytest.approx(0.5 * 4 * 0.1875 + 0.5 * g["tds"])
    # zero variance: all agree -> OVS 0 (GRPO gets no gradient from the group)
    for flags in ([True] * 4, [False] * 4):
        z = sc.score_group(flags, texts)
        assert z["ovs"] == 0.0 and z["vps"] == pytest.approx(0.2 * z["tds"])
    # max OVS at p = 1/2
    assert sc.score_group([True, False], ["a", "b"])["ovs"] == 0.25
    with pytest.raises(ValueError, match="texts"):
        sc.score_group([True], ["a", "b"])


def test_weights_that_break_the_vps_range_are_refused():
    sc.check_weights(0.8, 0.2)
    sc.check_weights(1.0, 0.75)  # raw: 0.25 + 0.75 = 1
    with pytest.raises(ValueError, match="VPS up to"):
        sc.check_weights(1.0, 0.5, normalize_ovs=True)
    with pytest.raises(ValueError, match=">= 0"):
        sc.check_weights(-0.1, 0.2)


# --- TDS edge cases ----------------------------------------------------------------------------------------------

PAIRWISE = ["edit", "self_bleu", "embedding"]


@pytest.mark.parametrize("metric", ["edit", "self_bleu", "distinct_n", "embedding"])
def test_fewer_than_two_traces_give_zero(metric):
    assert sc.trace_diversity([], metric) == 0.0
    assert sc.trace_diversity(["The answer is 4 because 2 + 2 = 4."], metric) == 0.0


@pytest.mark.parametrize("metric", PAIRWISE)
def test_identical_traces_give_zero(metric):
    t = "First add 3 and 4 to get 7, then double it: the answer is 14."
    assert sc.trace_diversity([t] * 4, metric) == pytest.approx(0.0, abs=1e-6)


def test_distinct_n_of_identical_traces_is_one_over_n():
    t = "a b c d e"  # 4 distinct bigrams, each repeated once per copy
    assert sc.trace_diversity([t] * 4, "distinct_n", n=2) == pytest.approx(1 / 4)


@pytest.mark.parametrize("metric", ["edit", "self_bleu", "distinct_n"])
def test_disjoint_traces_give_one(metric):
    texts = ["alpha beta gamma delta", "one two three four", "red green blue cyan"]
    assert sc.trace_diversity(texts, metric) == pytest.approx(1.0)


@pytest.mark.parametrize("metric", ["edit", "self_bleu", "distinct_n", "embedding"])
def test_padding_and_special_tokens_do_not_change_tds(metric):
    texts = ["We compute 12 * 3 = 36 so \\boxed{36}", "Three dozen is 36. \\boxed{36}", "<think>12+12+12</think> 36"]
    padded = [t + PAD * (i + 1) for i, t in enumerate(texts)]
    padded[1] = "<|im_start|>" + padded[1]
    assert sc.trace_diversity(padded, metric) == pytest.approx(sc.trace_diversity(texts, metric), abs=1e-6)
    # reasoning tags are content, not special tokens
    assert sc.clean_trace("<think>a</think><|im_end|><pad>") == "<think>a</think>"


def test_empty_strings():
    assert sc.trace_diversity(["", ""], "edit") == 0.0  # two empty traces are identical
    assert sc.trace_diversity(["", "a b"], "edit") == 1.0
    assert sc.trace_diversity([PAD, ""], "edit") == 0.0  # padding only == empty
    assert sc.trace_diversity(["", ""], "self_bleu") == 0.0
    assert sc.trace_diversity(["", "a b"], "self_bleu") == 1.0
    assert sc.trace_diversity(["", ""], "distinct_n") == 0.0
    assert sc.trace_diversity([None, "a"], "edit") == 1.0


def test_edit_tds_is_mean_pairwise_normalised_word_levenshtein():
    texts = ["a b c d", "a b x d", "q"]
    # pairs: (0,1) 1/4, (0,2) 4/4, (1,2) 4/4
    assert sc.trace_diversity(texts, "edit") == pytest.approx((0.25 + 1 + 1) / 3)
    # char tokens: "abc" vs "abd" = 1/3
    assert sc.trace_diversity(["abc", "abd"], "edit", unit="char") == pytest.approx(1 / 3)


def test_numpy_fallback_matches_rapidfuzz_and_plain_python():
    rng = random.Random(7)
    for _ in range(30):
        a = [rng.randrange(6) for _ in range(rng.randrange(0, 40))]
        b = [rng.randrange(6) for _ in range(rng.randrange(0, 40))]
        want = _plain_levenshtein(a, b)
        assert sc._levenshtein_numpy(a, b) == want
        assert sc.levenshtein(a, b) == want
    texts = [" ".join(rng.choice("abcdefg") for _ in range(rng.randrange(5, 30))) for _ in range(5)]
    assert sc.edit_diversity(texts, backend="numpy") == pytest.approx(sc.edit_diversity(texts))


def test_bleu_hand_computed():
    hyp, ref = "a b c d e".split(), "a b c d f".split()
    # p1 = 4/5; add-one for n >= 2: p2 = (3+1)/(4+1), p3 = (2+1)/(3+1), p4 = (1+1)/(2+1); BP = 1
    want = (0.8 * 0.8 * 0.75 * (2 / 3)) ** 0.25
    assert sc.bleu(hyp, [ref]) == pytest.approx(want)
    # brevity penalty: hypothesis of 3 vs reference of 5
    short = "a b c".split()
    p = (1.0 * (2 + 1) / (2 + 1) * (1 + 1) / (1 + 1) * 1.0) ** 0.25
    assert sc.bleu(short, [ref]) == pytest.approx(math.exp(1 - 5 / 3) * p)


def test_self_bleu_direction_more_similar_lower_tds():
    base = "first we add the two numbers to get twelve and then we divide by four to get three"
    close = [base, base.replace("twelve", "12"), base.replace("first", "initially")]
    far = [base, "the area of the square is nine so its side is three", "three , by inspection of the units digit"]
    t_close, t_far = sc.trace_diversity(close, "self_bleu"), sc.trace_diversity(far, "self_bleu")
    assert 0 < t_close < t_far <= 1
    # same ordering for the other pairwise metrics
    assert sc.trace_diversity(close, "edit") < sc.trace_diversity(far, "edit")


def test_embedding_metric_runs_offline():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    para = ["The answer is 12 because 3 times 4 is 12.", "Since 3 x 4 = 12, the result is 12."]
    other = ["The answer is 12 because 3 times 4 is 12.", "Photosynthesis converts sunlight into sugar in leaves."]
    t_para, t_other = sc.trace_diversity(para, "embedding"), sc.trace_diversity(other, "embedding")
    assert 0 <= t_para < t_other <= 1
    assert t_other > 0.5


def test_unknown_metric():
    with pytest.raises(ValueError, match="unknown TDS metric"):
        sc.trace_diversity(["a", "b"], "bogus")


# --- tables ---------------------------------------------------------------------------------------------------


def _rollouts(rows):
    full = [{"extracted": None, "verdict": "correct" if r["correct"] else "incorrect", "num_tokens": None,
             "finish_reason": None, **r} for r in rows]
    return pa.Table.from_pylist(full, schema=S.ROLLOUTS)


def test_score_rollouts_groups_and_is_order_independent():
    rows = []
    for pid, flags in (("p1", [1, 0, 1, 1]), ("p2", [0, 0, 0, 0])):
        for model in ("m1", "m2"):
            for s, f in enumerate(flags):
                rows.append({"problem_id": pid, "model": model, "sample": s, "text": f"t {pid} {s} {model[-1] * s}",
                             "correct": bool(f), "num_tokens": 10 + s,
                             "finish_reason": "length" if s == 0 else "stop"})
    t = sc.score_rollouts(_rollouts(rows))
    assert t.schema.equals(S.SCORES, check_metadata=False)
    assert not S.validate_rows(t.to_pylist(), "scores")
    assert [(r["problem_id"], r["model"]) for r in t.to_pylist()] == [("p1", "m1"), ("p1", "m2"), ("p2", "m1"), ("p2", "m2")]
    r0 = t.to_pylist()[0]
    assert (r0["n"], r0["n_correct"], r0["pass_rate"], r0["mean_tokens"], r0["truncated_frac"]) == (4, 3, 0.75, 11.5, 0.25)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    assert sc.score_rollouts(_rollouts(shuffled)).equals(t)
    wide = sc.pivot_scores(t)
    assert wide.column_names[:3] == ["problem_id", "n__m1", "n_correct__m1"]
    assert wide.column("pass_rate__m2").to_pylist() == [0.75, 0.0]


def test_score_rollouts_embedding_batched_equals_per_group():
    rows = [{"problem_id": p, "model": "m", "sample": s, "text": txt, "correct": s == 0}
            for p, txts in (("a", ["two plus two is four", "2 + 2 = 4", "four"]), ("b", ["cats", "dogs"]))
            for s, txt in enumerate(txts)]
    t = sc.score_rollouts(_rollouts(rows), metric="embedding")
    got = t.column("tds").to_pylist()
    assert got[0] == pytest.approx(sc.trace_diversity(["two plus two is four", "2 + 2 = 4", "four"], "embedding"), abs=1e-6)
    assert got[1] == pytest.approx(sc.trace_diversity(["cats", "dogs"], "embedding"), abs=1e-6)


# --- prompts --------------------------------------------------------------------------------------------------


def test_prompt_text_only_and_options():
    assert {"default", "r1", "plain"} <= set(list_templates())
    bp = build_prompt({"id": "x", "problem": "What is 7 + 5?", "answer": "12"})
    assert bp.images == []
    assert bp.messages[0]["role"] == "system" and "\\boxed" in bp.messages[0]["content"]
    assert bp.messages[1]["content"].startswith("What is 7 + 5?") and "\\boxed{}" in bp.messages[1]["content"]
    bp = build_prompt({"id": "x", "problem": "Pick one.", "options": ["3", "4"], "answer": "B"}, "plain")
    assert [m["role"] for m in bp.messages] == ["user"]
    assert "(A) 3" in bp.messages[0]["content"] and "(B) 4" in bp.messages[0]["content"]
    with pytest.raises(PromptError, match="'problem' is missing") as e:
        build_prompt({"id": "bad", "problem": "  ", "answer": "1"})
    assert e.value.reason == "missing_problem" and "'bad'" in str(e.value)
    with pytest.raises(ValueError, match="unknown prompt template 'nope'"):
        load_template("nope")


def test_prompt_with_images_first_and_inline(tmp_path):
    img = {"bytes": (DATA / "math_vision" / "images" / "4.jpg").read_bytes(), "path": "4.jpg"}
    row = {"id": "mv4", "problem": "How many digits in <image1>? Compare with <image2>.", "images": [img, img],
           "answer": "6"}
    bp = build_prompt(row)
    parts = bp.messages[-1]["content"]
    assert [p["type"] for p in parts] == ["image", "image", "text"] and len(bp.images) == 2
    assert bp.images[0].size[0] > 0
    tpl = tmp_path / "inline.yaml"
    tpl.write_text('name: inline\nuser: "{problem}"\nimage_placement: inline\n')
    parts = build_prompt(row, tpl).messages[-1]["content"]
    assert [p["type"] for p in parts] == ["text", "image", "text", "image", "text"]
    assert parts[0]["text"] == "How many digits in " and parts[-1]["text"] == "."
    broken = dict(row, images=[{"bytes": b"\x89PNG\r\n\x1a\nnot really", "path": "x.png"}])
    with pytest.raises(PromptError, match="image 1") as e:
        build_prompt(broken)
    assert e.value.reason == "bad_image" and "'mv4'" in str(e.value)


# --- report ---------------------------------------------------------------------------------------------------


def test_report_writes_pngs_and_summary(tmp_path):
    rows = [{"problem_id": f"p{i}", "model": "m", "sample": s, "text": f"{i} {s}", "correct": s < i % 5}
            for i in range(20) for s in range(4)]
    scores = sc.score_rollouts(_rollouts(rows))
    summary = write_score_report(scores, tmp_path / "report", settings={"n": 4})
    for name in ("pass_rate_hist.png", "vps_hist.png"):
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "report" / "report.md").read_text()
    # p = min(i % 5, 4) / 4: p in {0, 1} for i % 5 in {0, 4} -> 8 of 20 groups
    assert summary["overall"]["zero_variance_frac"] == pytest.approx(8 / 20)
    assert "**0.400**" in md and "pass_rate_hist.png" in md
