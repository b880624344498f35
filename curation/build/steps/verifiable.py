"""Step ``verifiable``: keep problems whose gold ``answer`` can be checked automatically.

Kept: answers that :func:`curation.verify.classify_gold` recognises - numbers, expressions, equations,
intervals, sets/tuples, matrices, short word answers (string comparison) and multiple-choice labels when
the row carries its ``options``. Excluded, each with its own reason:

``empty``                   no answer, or only whitespace / ``$$``
``proof``                   the answer is a proof ("prove", "show that", QED), or the problem asks for one
                            ("Prove that ...", "Show that ...") and the answer is not a plain value
``open_ended``              prose (more than 8 words, mostly words) or text that is not mathematics
``malformed``               unbalanced braces in the answer
``choice_without_options``  a label such as ``C`` but the row has no ``options`` to say what C is
``choice_not_in_options``   a label beyond the options (``F`` with four options)
``kind_not_allowed``        a checkable kind left out by the ``kinds`` option

Options: ``kinds`` (list of kinds to keep; default all), ``check_problem`` (look for proof requests in
the problem text; default on).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from curation.build.steps.base import Excluded, Step
from curation.verify import classify_gold

KINDS = ("number", "expression", "equation", "interval", "set", "tuple", "matrix", "text", "choice")
_PROOF_REQUEST = re.compile(r"\b(?:prove|show|demonstrate|verify|explain\s+why)\s+that\b|\bprove\b", re.IGNORECASE)
_VALUE_KINDS = {"number", "choice", "interval", "set", "tuple", "matrix"}


@dataclass
class Verifiable(Step):
    name = "verifiable"
    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    check_problem: bool = True

    def __post_init__(self) -> None:
        bad = sorted(set(self.kinds) - set(KINDS))
        if bad:
            raise ValueError(f"step 'verifiable': unknown kind(s) {bad}; known: {list(KINDS)}")

    def check(self, row: dict) -> tuple[str, str] | None:
        """``None`` when the row is kept, else ``(reason, detail)``."""
        answer = row.get("answer")
        options = row.get("options") or None
        parsed, reason = classify_gold(answer, options)
        shown = repr(str(answer)[:80]) if answer is not None else "None"
        if parsed is None:
            details = {
                "empty": "the gold answer is empty",
                "proof": f"the gold answer is a proof: {shown}",
                "open_ended": f"the gold answer is prose, not a checkable value: {shown}",
                "malformed": f"unbalanced braces in the gold answer: {shown}",
                "choice_not_in_options": f"label {shown} is not among the {len(options or [])} options",
            }
            return reason or "open_ended", details.get(reason or "", f"cannot check {shown}")
        if parsed.kind == "choice" and not options:
            return "choice_without_options", f"answer {shown} is a choice label but the row has no options"
        if self.check_problem and parsed.kind not in _VALUE_KINDS:
            m = _PROOF_REQUEST.search(str(row.get("problem") or ""))
            if m:
                return "proof", f"the problem asks for a proof ({m.group(0)!r}); answer {shown}"
        if parsed.kind not in self.kinds:
            return "kind_not_allowed", f"answer kind {parsed.kind!r} not in kinds={self.kinds}"
        return None

    def run(self, rows: Iterable[dict]) -> Iterator[dict | Excluded]:
        for row in rows:
            bad = self.check(row)
            yield row if bad is None else Excluded(row, bad[0], detail=bad[1])
