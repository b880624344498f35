"""The ``verifiable`` build step: keeps automatically checkable answers, excludes the rest with reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curation.build.steps import Excluded, Step

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _row(problem: str, answer, options=None, rid: str = "x") -> dict:
    return {"id": rid, "source": "test", "problem": problem, "answer": answer, "options": options}


KEEP = [
    _row("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
         "How many clips did Natalia sell altogether in April and May?", "72"),
    _row("Janet pays $40/hour for 3 hours per week of clarinet lessons. How much more does she spend on "
         "piano lessons than clarinet lessons in a year?", "1,040"),
    _row("Compute $\\sin 60^\\circ$.", "\\frac{\\sqrt{3}}{2}"),
    _row("Find all real $x$ with $x^2 - 5x + 6 < 0$.", "(2, 3)"),
    _row("Solve $|x - 1| \\ge 2$.", "(-\\infty, -1] \\cup [3, \\infty)"),
    _row("Find all integer roots of $x^3 - 6x^2 + 11x - 6$.", "\\{1, 2, 3\\}"),
    _row("Compute $\\begin{pmatrix} 1 & 0 \\\\ 0 & 2 \\end{pmatrix}^2$.",
         "\\begin{pmatrix} 1 & 0 \\\\ 0 & 4 \\end{pmatrix}"),
    _row("Find the equation of the line through $(0, 3)$ with slope $2$.", "y = 2x + 3"),
    _row("In which month was the drop in price the greatest?", "\\text{March}"),
    _row("Which of the shapes has the largest area? <image1>", "C", ["A", "B", "C", "D", "E"]),
    _row("How long is the path? <image1>", "$9 \\mathrm{~km}$",
         ["$5 \\mathrm{~km}$", "$8 \\mathrm{~km}$", "$9 \\mathrm{~km}$"]),
    # "show that" in the problem but the answer is a value: still checkable
    _row("Show that the sum of the first $n$ odd numbers is a square, and compute it for $n = 12$.", "144"),
]

DROP = [
    (_row("Prove that there are infinitely many primes.", "Suppose there are finitely many primes p_1..p_n; "
          "then p_1 p_2 ... p_n + 1 has a prime factor not in the list. QED"), "proof"),
    (_row("Prove that $\\sqrt{2}$ is irrational.", "Proof: by contradiction."), "proof"),
    (_row("Show that for all positive reals $a, b$: $a^2 + b^2 \\ge 2ab$.", "(a - b)^2 \\ge 0"), "proof"),
    (_row("Let $f$ be continuous on $[0,1]$. Prove that $f$ attains a maximum.", ""), "empty"),
    (_row("What is $2 + 2$?", None), "empty"),
    (_row("What is $2 + 2$?", "  $$ "), "empty"),
    (_row("Why does the shadow of the tree get shorter towards noon? Explain.",
          "Because the sun rises higher in the sky, so the light falls more steeply and the shadow shrinks."),
     "open_ended"),
    (_row("Compute $\\frac{1}{2} + \\frac{1}{3}$.", "\\frac{5}{6"), "malformed"),
    (_row("Which figure comes next? <image1>", "B"), "choice_without_options"),
    (_row("Which figure comes next? <image1>", "F", ["A", "B", "C", "D"]), "choice_not_in_options"),
]


def test_keeps_checkable_answers():
    step = Step.from_config("verifiable", {})
    out = list(step.run(KEEP))
    assert [o for o in out if isinstance(o, Excluded)] == []
    assert out == KEEP


@pytest.mark.parametrize("row, reason", DROP)
def test_excludes_with_reason(row, reason):
    (out,) = list(Step.from_config("verifiable", {}).run([row]))
    assert isinstance(out, Excluded)
    assert out.reason == reason
    assert out.detail and out.row is row


def test_every_row_comes_out_once():
    rows = [r for r in KEEP] + [r for r, _ in DROP]
    out = list(Step.from_config("verifiable", {}).run(rows))
    assert len(out) == len(rows)
    kept = [o for o in out if not isinstance(o, Excluded)]
    assert len(kept) == len(KEEP)
    assert sorted({o.reason for o in out if isinstance(o, Excluded)}) == sorted({r for _, r in DROP})


def test_kinds_option():
    step = Step.from_config("verifiable", {"kinds": ["number", "choice"]})
    out = list(step.run(KEEP))
    kept = [o for o in out if not isinstance(o, Excluded)]
    assert {o["answer"] for o in kept} == {"72", "1,040", "C", "$9 \\mathrm{~km}$", "144"}
    assert {o.reason for o in out if isinstance(o, Excluded)} == {"kind_not_allowed"}
    with pytest.raises(ValueError, match="unknown kind"):
        Step.from_config("verifiable", {"kinds": ["number", "poem"]})
    with pytest.raises(ValueError, match="unknown option"):
        Step.from_config("verifiable", {"strict": True})
    lenient = Step.from_config("verifiable", {"check_problem": False})
    (out,) = list(lenient.run([DROP[2][0]]))
    assert not isinstance(out, Excluded)  # "(a-b)^2 >= 0" is a well-formed relation once the problem is ignored


def test_real_sets():
    """GSM8K test answers and MATH-Vision testmini answers are all checkable, except MATH-Vision rows whose
    gold is a choice label but whose options list is empty (the choices are only in the image)."""
    step = Step.from_config("verifiable", {})
    gsm = [_row(r["question"], r["answer"].split("####")[-1].strip(), rid=str(i))
           for i, r in enumerate(map(json.loads, (DATA / "gsm8k" / "test.jsonl").open()))]
    out = list(step.run(gsm))
    assert len(out) == 1319 and not any(isinstance(o, Excluded) for o in out)

    mv = [_row(r["question"], r["answer"], r["options"] or None, rid=r["id"])
          for r in map(json.loads, (DATA / "math_vision" / "testmini.jsonl").open())]
    out = list(step.run(mv))
    dropped = [o for o in out if isinstance(o, Excluded)]
    assert len(out) == len(mv) == 304
    assert {o.reason for o in dropped} <= {"choice_without_options"}
    assert len(dropped) <= 2
    for o in dropped:
        assert not o.row["options"] and len(o.row["answer"]) == 1
