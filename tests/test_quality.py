"""Quality filters of `curate cot` (curation/quality.py): positive and negative cases for each filter, on
real-looking solutions and on real data (GSM8K reference solutions, MATH-Vision model outputs)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from curation.cot.quality import (
    REASONS,
    QualityConfig,
    check_answer_leak,
    check_language_mixing,
    check_length,
    check_repetition,
    check_solution,
    check_structure,
    check_truncated,
    script_counts,
    split_solution,
    to_think_format,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

GOOD = (
    "<think>\nJanet's ducks lay 16 eggs a day. She eats 3 and bakes with 4, so she uses 3 + 4 = 7 eggs.\n"
    "That leaves 16 - 7 = 9 eggs to sell. At $2 per egg she makes 9 * 2 = 18 dollars.\n</think>\n\n"
    "\\boxed{18}"
)


def _gsm8k_as_cot(n: int | None = None) -> list[tuple[str, str]]:
    """(problem, solution) pairs: GSM8K train reference solutions in the <think>...</think> \\boxed{} form."""
    out = []
    with open(DATA / "gsm8k" / "train.jsonl") as f:
        for line in f:
            d = json.loads(line)
            sol, ans = d["answer"].split("####")
            sol = re.sub(r"<<[^>]*>>", "", sol).strip()
            out.append((d["question"], f"<think>\n{sol}\n</think>\n\n\\boxed{{{ans.strip()}}}"))
            if n and len(out) == n:
                break
    return out


# --- truncated -----------------------------------------------------------------------------------------


def test_truncated():
    assert check_truncated("length").reason == "truncated"
    assert check_truncated("stop") is None
    assert check_truncated(None) is None  # pre-generated responses: unknown, not truncated


# --- structure ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, why",
    [
        ("Janet has 16 - 3 - 4 = 9 eggs, so she makes 9 * 2 = 18 dollars.\n\\boxed{18}", "no <think>"),
        ("<think>\n16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\n\\boxed{18}", "one <think> and one </think>, found 1 and 0"),
        ("<think> 16 - 7 = 9 <think> 9 * 2 = 18 </think> </think>\n\\boxed{18}", "found 2 and 2"),
        ("</think> 16 - 7 = 9, 9 * 2 = 18 <think>\n\\boxed{18}", "</think> comes before <think>"),
        ("Sure! <think>16 - 7 = 9, 9 * 2 = 18</think>\n\\boxed{18}", "text before <think>"),
        ("<think>16 - 7 = 9, so 9 * 2 = \\boxed{18}</think>\nShe makes 18 dollars.", "no \\boxed{} answer after </think>"),
        ("<think>16 - 7 = 9, 9 * 2 = 18</think>\n\\boxed{}", "no \\boxed{} answer after </think>"),
    ],
)
def test_structure_rejects_malformed(text, why):
    issue = check_structure(text, "strict")
    assert issue is not None and issue.reason == "bad_structure"
    assert why in issue.detail


def test_structure_accepts_well_formed_and_canonical_form_is_unchanged():
    assert check_structure(GOOD, "strict") is None
    split, err = split_solution(GOOD)
    assert err is None and split.think.startswith("Janet's ducks") and split.answer_part == "\\boxed{18}"
    assert to_think_format(GOOD) == GOOD.strip()


def test_lenient_structure_only_for_untagged_solutions():
    boxed = "We add 5 and 7.\n5 + 7 = 12, which is the total.\nSo the result is \\boxed{12}."
    stated = "To add 5 and 7, we combine them: 5 + 7 = 12.\nThe answer is 12."
    assert check_structure(boxed, "strict").reason == "bad_structure"
    assert check_structure(boxed, "lenient") is None
    assert to_think_format(boxed, "lenient") == (
        "<think>\nWe add 5 and 7.\n5 + 7 = 12, which is the total.\n</think>\n\nSo the result is \\boxed{12}."
    )
    assert to_think_format(stated, "lenient") == f"<think>\n{stated}\n</think>\n\n\\boxed{{12}}"
    # no final answer at all, or a stray tag: still rejected in lenient mode
    assert check_structure("To add 5 and 7, we combine them: 5 + 7 = 12.", "lenient").reason == "bad_structure"
    assert check_structure("5 + 7 = 12 </think> The answer is 12.", "lenient").reason == "bad_structure"
    with pytest.raises(ValueError, match="malformed"):
        to_think_format("no answer here", "lenient")
    with pytest.raises(ValueError):
        QualityConfig(structure="loose")


# --- repetition --------------------------------------------------------------------------------------


def test_repetition_short_period_loop():
    # a loop inside one line (no sentence boundary): caught by the n-gram share
    loop = "<think>\nLet me compute 7 * 8. 7 * 8 = 56 so the answer is " + "the answer is " * 30 + "</think>\n\\boxed{56}"
    issue = check_repetition(loop)
    assert issue is not None and issue.reason == "repetition" and "4-gram" in issue.detail
    # a loop of whole sentences: caught by the block run
    sentences = "<think>\nLet me compute 7 * 8. 7 * 8 = 56. " + "Wait, let me check again. " * 40 + "</think>\n\\boxed{56}"
    assert "repeated 40 times in a row" in check_repetition(sentences).detail


def test_repetition_long_period_numbered_block():
    # a loop whose period is a whole enumerated step, repeated 3 times (real SmolLM2-135M output)
    text = ("To add 5 and 7, we need to follow these steps:\n\n1. Add 5 and 7: 5 + 7 equals 12.\n\n"
            "2. Add 5 and 7: 5 + 7 equals 12.\n\n3. Add 5 and 7: 5 + 7 equals 12.\n\nSo, the answer is 12.")
    issue = check_repetition(text)
    assert issue is not None and "repeated 3 times" in issue.detail
    two = text.replace("3. Add 5 and 7: 5 + 7 equals 12.\n\n", "")
    assert check_repetition(two) is None  # twice in a row is allowed (max_block_repeats=3)


def test_repetition_real_model_outputs():
    """All 3,952 MATH-Vision model outputs: the only flagged response is a real degenerate loop."""
    flagged = []
    with open(DATA / "math_vision" / "model_outputs.jsonl") as f:
        for line in f:
            d = json.loads(line)
            if check_repetition(d["response"]):
                flagged.append(d)
    assert len(flagged) == 1
    assert flagged[0]["model"] == "InternLM-XComposer2-VL"
    assert flagged[0]["response"].count("Since $\\angle B = 2\\angle B$") >= 5


def test_no_false_positives_on_gsm8k_reference_solutions():
    """All 7,473 GSM8K train reference solutions, put in the think/boxed form, pass every filter."""
    failed = Counter()
    for problem, text in _gsm8k_as_cot():
        for issue in check_solution(text, finish_reason="stop", problem=problem):
            failed[issue.reason] += 1
    assert failed == Counter()


def test_table_lines_below_min_block_chars_are_not_a_loop():
    text = "<think>\nThe values are:\nx = 1\nx = 1\nx = 1\nx = 1\nso x stays 1 in every row of the table.\n</think>\n\\boxed{1}"
    assert check_repetition(text) is None  # "x = 1" is 5 characters < min_block_chars (12)
    assert check_repetition(text, min_block_chars=4) is not None


# --- length -----------------------------------------------------------------------------------------


def test_length_bounds():
    assert check_length(GOOD, 80, min_tokens=100).reason == "length_out_of_range"
    assert "80 tokens < min 100" in check_length(GOOD, 80, min_tokens=100).detail
    assert "tokens > max 64" in check_length(GOOD, 80, max_tokens=64).detail
    assert check_length(GOOD, 80, min_tokens=10, max_tokens=200) is None
    assert "characters < min" in check_length("\\boxed{18}", None, min_chars=40).detail
    assert check_length(GOOD, None, max_chars=100).reason == "length_out_of_range"
    assert check_length(GOOD, None) is None  # no bounds, unknown token count


# --- language mixing -----------------------------------------------------------------------------------


def test_language_mixing_cjk_in_english_solution():
    text = ("<think>\nThe triangle has angles 50 and 60 degrees. 所以第三个角是七十度。 So the third angle is "
            "180 - 50 - 60 = 70 degrees.\n</think>\n\\boxed{70}")
    issue = check_language_mixing(text, "A triangle has angles of 50 and 60 degrees. Find the third angle.")
    assert issue is not None and issue.reason == "language_mixing" and "CJK" in issue.detail


def test_language_mixing_real_model_output():
    """qwen-vl-max on MATH-Vision 1064 ends an English answer with Chinese (不定, 'undetermined')."""
    with open(DATA / "math_vision" / "model_outputs.jsonl") as f:
        rows = [json.loads(line) for line in f]
    bad = next(r for r in rows if r["id"] == "1064" and "不定" in r["response"])
    assert check_language_mixing(bad["response"], "In triangle ABC, AD = BC ...") is not None
    flagged = [r for r in rows if check_language_mixing(r["response"], None)]
    assert [(r["id"], r["model"]) for r in flagged] == [("1064", "qwen-vl-max")]


def test_language_mixing_allows_greek_math_and_the_problems_language():
    greek = "<think>\nThe angle α satisfies 2α = π/3, so α = π/6 and sin α = 1/2. 𝑥 = 𝜃 is fine too.\n</think>\n\\boxed{1/2}"
    assert check_language_mixing(greek, "Find sin α if 2α = π/3.") is None
    zh_problem = "一个三角形的两个角分别是50度和60度，求第三个角。"
    zh_solution = "<think>\n三角形内角和是180度，所以第三个角是 180 - 50 - 60 = 70 度。\n</think>\n\\boxed{70}"
    assert check_language_mixing(zh_solution, zh_problem) is None
    assert check_language_mixing(zh_solution, "Find the third angle.") is not None
    # one stray character (below min_foreign_chars) is not mixing
    assert check_language_mixing(GOOD.replace("eggs to sell", "eggs to sell。的"), None) is None
    assert script_counts("αβ abc 中")["GREEK"] == 2


# --- answer leak -------------------------------------------------------------------------------------


def test_answer_leak_cases():
    assert "tokens (min 10)" in check_answer_leak("18", "18").detail
    assert check_answer_leak("The answer is 18.", "18").reason == "answer_leak"
    early = "18 dollars. She sells the eggs at the market."  # 11 tokens: only rule (b) applies
    issue = check_answer_leak(early, "18")
    assert issue is not None and "stated at word 1" in issue.detail and "8 words after" in issue.detail
    # answer stated first but then worked out: not a leak
    worked = early + " She keeps 16 - 3 - 4 = 9 eggs and each sells for 2 dollars, 9 * 2 = 18."
    assert check_answer_leak(worked, "18") is None
    # answer appears early only as an intermediate result of real reasoning: not a leak
    assert check_answer_leak(split_solution(GOOD)[0].think, "18") is None
    # compact GSM8K-style working counts symbols: 'Ben 36/3=12 shells, Alan 12*4=48 shells' is reasoning
    assert check_answer_leak("Ben collected 36/3=12 shells\nAlan collected 12*4=48 shells", "48") is None


# --- all together ------------------------------------------------------------------------------------


def test_check_solution_reports_every_issue_in_priority_order():
    text = "所以答案是十八。 The answer is 18."
    issues = check_solution(text, finish_reason="length", num_tokens=9, problem="How much?",
                            config=QualityConfig(min_tokens=20))
    reasons = [i.reason for i in issues]
    assert reasons == ["truncated", "bad_structure", "length_out_of_range", "language_mixing"]
    assert reasons == sorted(reasons, key=REASONS.index)
    assert check_solution(GOOD, finish_reason="stop", num_tokens=70) == []
    short = "<think>\nIt is 18.\n</think>\n\\boxed{18}"
    assert [i.reason for i in check_solution(short, config=QualityConfig(min_chars=None))] == ["answer_leak"]
