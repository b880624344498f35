"""Answer extraction: rules, rule order, multiple-choice mapping, normalisation, real GSM8K references."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from curation.verify import (
    DEFAULT_RULES,
    RULES,
    Extraction,
    extract_answer,
    last_boxed,
    map_choice,
    normalize_answer,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# -- \boxed ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so the answer is $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"\boxed{1} then \boxed{\sqrt{2}}", r"\sqrt{2}"),
        (r"\boxed{\left\{ 1, 2 \right\}}", r"\left\{ 1, 2 \right\}"),
        (r"nested \boxed{a_{b_{c}} + {d}}", r"a_{b_{c}} + {d}"),
        (r"\fbox{42}", "42"),
        (r"$\boxed 5$", "5"),
        (r"\boxed{7} and a broken \boxed{1 + {2}", "7"),  # unbalanced last box -> previous balanced one
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),  # escaped braces do not count
        ("no box here", None),
        ("", None),
        (r"\boxedfoo{3}", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_last_boxed_on_real_math_solution():
    # MATH-style reference solutions of the minerva benchmark end with a boxed answer
    rows = [json.loads(line) for line in (DATA / "benchmarks" / "minerva_math.jsonl").open()]
    boxed = [last_boxed(r["solution"]) for r in rows]
    assert sum(b is not None for b in boxed) / len(rows) > 0.95
    assert all(b is None or b.count("{") == b.count("}") for b in boxed)


# -- rules -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, answer, rule",
    [
        (r"<think>2+2</think> The result is $\boxed{4}$.", "4", "boxed"),
        ("<think>reasoning</think><answer> 12 </answer>", "12", "answer_tag"),
        (r"<answer>\boxed{\frac{3}{4}}</answer>", r"\frac{3}{4}", "boxed"),
        ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72", "gsm8k"),
        ("So in total 5 + 7 = 12. The answer is 12.", "12", "answer_is"),
        ("Therefore, the final answer is $1,000$.", "1000", "answer_is"),
        ("Answer: 3/4", "3/4", "answer_is"),
        ("She makes 9 * 2 = $<<9*2=18>>18 every day\nA: 18", "18", "a_line"),
        ("  $\\frac{1}{12}$ ", r"\frac{1}{12}", "bare"),
        ("I cannot determine this from the picture because it is blurry and the numbers are hidden.", None, None),
        ("", None, None),
    ],
)
def test_rules(response, answer, rule):
    assert extract_answer(response) == Extraction(answer, rule)


def test_rule_order_is_configurable():
    text = "The answer is 7.\n#### 8"
    assert extract_answer(text) == Extraction("8", "gsm8k")
    assert extract_answer(text, rules=["answer_is", "gsm8k"]) == Extraction("7", "answer_is")
    assert extract_answer(text, rules=["boxed"]) == Extraction(None, None)
    assert extract_answer("it is 3 or maybe 41", rules=["last_number"]) == Extraction("41", "last_number")
    assert "last_number" in RULES and "last_number" not in DEFAULT_RULES
    with pytest.raises(ValueError, match="unknown extraction rule"):
        extract_answer("x", rules=["boxed", "nope"])


def test_answer_word_alone_is_not_an_answer():
    # "answer" without "is"/":" (e.g. "To answer this") must not capture the rest of the line
    assert extract_answer("To answer this we first count the apples.\nThey are many.").rule is None


# -- multiple choice ---------------------------------------------------------------------------------------

OPTS = ["$2 \\pi$", "$4 \\pi$", "$6 \\pi$", "$8 \\pi$", "$12 \\pi$"]


@pytest.mark.parametrize(
    "response",
    [
        "(C)",
        "C.",
        "C",
        "c",
        "The answer is C.",
        "Therefore, the correct answer is (C) $6 \\pi$.",
        "$6 \\pi$",
        "6\\pi",
        "\\boxed{C}",
        "\\boxed{(C) 6\\pi}",
        "After comparing the arcs, option C fits best.",
        "The circumference works out, so (C) is right.\n",
    ],
)
def test_choice_forms_map_to_letter(response):
    assert extract_answer(response, options=OPTS).answer == "C"


def test_choice_literal_option_text_beats_label():
    # MATH-Vision: the options are the labels printed in the figure, so "G" means option E
    opts = ["A", "B", "D", "F", "G"]
    assert map_choice("G", opts) == "E"
    assert map_choice("D", opts) == "C"
    assert map_choice("(B)", ["(A)", "(B)", "(C)"]) == "B"
    assert map_choice("H", opts) is None
    assert map_choice("(F)", ["1", "2", "3"]) is None  # a label beyond the options
    assert extract_answer("7", options=["5", "6", "7"]) == Extraction("C", "bare")
    # a value that is no option's text stays as it is, for the verifier to compare mathematically
    assert extract_answer("0.5", options=["1/4", "1/2"]).answer == "0.5"


def test_a_single_article_is_not_a_label():
    assert map_choice("A square", ["square", "circle"]) is None


# -- normalisation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("  18 ", "18"),
        ("$18", "18"),
        ("$\\$18$", "18"),
        ("1,000", "1000"),
        ("-12,345.5", "-12345.5"),
        ("1,2", "1,2"),  # not thousands separators: a list
        ("\\text{March}", "March"),
        ("\\textbf{\\text{B}}", "B"),
        ("5 \\mathrm{~cm}", "5 cm"),
        ("\\boxed{\\dfrac{1}{2}}.", "\\dfrac{1}{2}"),
        ("\\(x+1\\)", "x+1"),
        ("**42**", "42"),
        ("\\left( 1, 2 \\right)", "( 1, 2 )"),
        ("625 \\rightarrow 626 \\leftarrow", "625 \\rightarrow 626 \\leftarrow"),
        ("50\\%", "50%"),
        ("$$", ""),
        (None, ""),
    ],
)
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


# -- real data and hostile input ---------------------------------------------------------------------------


def test_gsm8k_references_agree_between_formats():
    """The `#### x` answers of test.jsonl and the `A: x` lines of the example solutions' ground truth are
    the same numbers for all 1,319 problems."""
    test = [json.loads(line) for line in (DATA / "gsm8k" / "test.jsonl").open()]
    sols = [json.loads(line) for line in (DATA / "gsm8k" / "example_model_solutions.jsonl").open()]
    by_q = {r["question"]: r for r in test}
    checked = 0
    for s in sols:
        ref = by_q.get(s["question"])
        if ref is None:
            continue
        a = extract_answer(ref["answer"], rules=["gsm8k"])
        b = extract_answer(s["ground_truth"], rules=["a_line"])
        assert a.rule == "gsm8k" and b.rule == "a_line"
        assert a.answer == b.answer, s["question"]
        checked += 1
    assert checked >= 1300


def test_megabyte_responses_are_linear_time():
    hostile = [
        "\\boxed{" * 150_000,  # a million characters of unbalanced boxes
        "{" * 1_000_000 + "\\boxed{1",
        "$" * 1_000_000,
        "the answer is " + "9" * 1_000_000,
        ("A: " + "x " * 50 + "\n") * 10_000,
        "(" * 500_000 + ")" * 500_000,
    ]
    for text in hostile:
        t0 = time.perf_counter()
        extract_answer(text, options=OPTS)
        extract_answer(text)
        assert time.perf_counter() - t0 < 3.0, text[:20]


def test_bare_rule_refuses_prose_replies():
    """A small model's chatter must not be graded as an answer (seen with SmolLM2 during scoring)."""
    from curation.verify import extract_answer

    assert extract_answer("Dude, that's a math trick. 6 + 6 is actually \\boxed{}").answer is None
    assert extract_answer("that equals seven").answer is None
    for ok in ("10", "(B)", "45 cm^2", "9 litres", "\\text{March}"):
        assert extract_answer(ok).rule == "bare", ok


def test_bare_rule_reads_a_connector_word_as_equals():
    """SmolLM2 often answers "2 + 4 equals 6" without a final-answer marker (demo scoring): the bare rule
    gives the equation, whose right-hand side the verifier compares; a wrong sum stays wrong."""
    from curation.verify import extract_answer, verify_batch

    assert extract_answer("2 + 4 equals 6").answer == "2 + 4 = 6"
    v = verify_batch(["6", "7", "6"], ["2 + 4 equals 6", "2 + 4 equals 6", "2 + 4 is 6"])
    assert [x.status for x in v] == ["correct", "incorrect", "correct"]


# -- final-answer markers of common output formats ----------------------------------------------------------


@pytest.mark.parametrize(
    "response, answer",
    [
        # Minerva / lm-eval-harness format: the "answer:" line itself says "The final answer is ..."
        ("Final Answer: The final answer is 7.", "7"),
        ("Final Answer: The final answer is $7.78$. I hope it is correct.", "7.78"),
        ("Final Answer: The final answer is $\\frac{70}{9}$. I hope it is correct.", "\\frac{70}{9}"),
        ("Final Answer: The largest $n$ is 34.", "34"),
        ("**Final Answer:** the answer is 12", "12"),
        ("Answer: x = 5", "x = 5"),
        # "Answer" followed directly by math
        ("Answer $ 9 $", "9"),
        ("Answer $$ 9 $$", "9"),
        ("Answer \\( (9+1) \\)", "(9+1)"),
        ("Answer \\[ \n 9 \n \\]", "9"),  # display math may span lines
        ("Answer $$ \n 9 \n $$", "9"),
    ],
)
def test_answer_is_takes_the_answer_not_the_sentence(response, answer):
    got = extract_answer(response)
    assert (got.answer, got.rule) == (answer, "answer_is")


def test_inline_math_after_answer_stays_on_its_line():
    assert extract_answer("Answer $ \n 9 \n $").answer is None


# -- decimal comma -----------------------------------------------------------------------------------------


def test_leading_zero_comma_is_a_decimal_comma():
    from fractions import Fraction

    from curation.verify.rules import _as_number

    assert _as_number("0,111") == Fraction(111, 1000)  # not the thousands group 111
    assert _as_number("-0,5") == Fraction(-1, 2)
    assert _as_number("1,000") == 1000 and _as_number("12,345.5") == Fraction(24691, 2)
    assert _as_number("0,111,222") is None  # neither: left to math-verify
    assert normalize_answer("0,111") == "0.111"
    assert normalize_answer("1,2") == "1,2"


def test_thin_spaces_inside_numbers():
    # \! and \, between digit groups are typesetting, not list separators
    assert normalize_answer("11,\\! 111,\\! 111,\\! 100") == "11111111100"
    assert normalize_answer("32,\\!349") == "32349"
    assert normalize_answer("1\\,000\\,000") == "1000000"


# -- several boxed answers ---------------------------------------------------------------------------------


def test_final_boxes():
    from curation.verify import final_boxes

    text = "so the solutions are:\n\\[\n\\boxed{(1, 2)}, \\boxed{(2, 1)}, \\boxed{(-1, -20)}, \\boxed{(-20, -1)}\n\\]"
    assert final_boxes(text) == ["(1, 2)", "(2, 1)", "(-1, -20)", "(-20, -1)"]
    assert final_boxes("$$\\boxed{(3, 3)} \\text{ for part (a) and } \\boxed{(1, 1)}$$") == ["(3, 3)", "(1, 1)"]
    assert final_boxes("\\boxed{1} and \\boxed{2} and \\boxed{3}") == ["1", "2", "3"]
    # a box earlier in the solution, separated from the final one by prose, is not part of the answer
    long = "First $0.04 \\cdot 10{,}000 = \\boxed{200}$ of interest. Then the second CD earns more money. " \
           "Adding everything up we obtain the total.\n\nThe total is \\boxed{10455}."
    assert final_boxes(long) == ["10455"]
    assert final_boxes("no box") == []
    assert final_boxes("\\boxed{7}") == ["7"]


# -- the lenient rule --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, answer",
    [
        ("Therefore $x \\geq 5$ is the solution.", "x \\geq 5"),
        ("We find that $x \\lt 3$.", "x \\lt 3"),
        ("The identity matrix is $ \\begin{pmatrix}1 & 0 \\\\ 0 & 1\\end{pmatrix} $.",
         "\\begin{pmatrix}1 & 0 \\\\ 0 & 1\\end{pmatrix}"),
        ("the number is not 10 which is 1,000.99€", "1000.99"),
        ("We get $x = 3.5$ here. So she pays 12 dollars in total.", "12"),
        ("Step 1. We add.\nStep 2. Then $3 + 4 = 7$.", "3 + 4 = 7"),
        ("Nothing here to see.", None),  # the final sentence holds no math and no number
        ("We get $x=3$. We check that this works.", None),  # strictly the final sentence
    ],
)
def test_last_math_rule(response, answer):
    from curation.verify import LENIENT_RULES

    assert "last_math" in RULES and "last_math" not in DEFAULT_RULES
    assert LENIENT_RULES == (*DEFAULT_RULES, "last_math")
    got = extract_answer(response, lenient=True)
    assert got.answer == answer
    if answer is not None:
        assert got.rule == "last_math"
        assert extract_answer(response, rules=LENIENT_RULES) == got
        assert extract_answer(response).answer is None  # strict by default: no final-answer marker
