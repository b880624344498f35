"""Step ``normalize``: unicode, whitespace and LaTeX spacing of problem text; trimmed answer strings.

Conservative on purpose - it must never change a problem's meaning:
- Unicode NFC (not NFKC: NFKC would turn ``x²`` into ``x2``), no-break/thin/zero-width spaces -> space or
  nothing, curly quotes -> straight, the Unicode minus ``−`` -> ``-``.
- Whitespace: tabs/spaces runs -> one space, trailing spaces removed, 3+ newlines -> 2, outer strip.
- LaTeX spacing commands ``\\,`` ``\\;`` ``\\:`` ``\\!`` and ``\\quad`` are spacing only and are removed from
  *answers*; in problem text they are kept (they may be part of displayed math) but runs of spaces
  around them are collapsed.
- Answers: the above, plus surrounding ``$...$`` / ``\\(...\\)`` removed and a trailing period dropped.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Iterator

from curation.build.steps.base import Excluded, Step

_CHAR_MAP = str.maketrans(
    {
        "\u00a0": " ", "\u2002": " ", "\u2003": " ", "\u2009": " ", "\u202f": " ", "\u3000": " ",
        "\u200b": "", "\u200c": "", "\u200d": "", "\ufeff": "",
        "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
        "\u2212": "-", "\u2013": "-",
    }
)
_SPACES = re.compile(r"[ \t\f\v]+")
_TRAILING = re.compile(r"[ \t]+\n")
_NEWLINES = re.compile(r"\n{3,}")
_LATEX_SPACING = re.compile(r"\\[,;:!](?![a-zA-Z])|\\quad\b|\\qquad\b")
_MATH_WRAP = re.compile(r"^(?:\$\$?(.*?)\$\$?|\\\((.*?)\\\)|\\\[(.*?)\\\])$", re.S)


def normalize_text(text: str) -> str:
    """Normalise problem/solution text (see module docstring)."""
    text = unicodedata.normalize("NFC", text).translate(_CHAR_MAP)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACES.sub(" ", text)
    text = _TRAILING.sub("\n", text)
    text = _NEWLINES.sub("\n\n", text)
    return text.strip()


def normalize_answer_text(answer: str) -> str:
    """Normalise a gold answer string for storage (see module docstring)."""
    a = normalize_text(answer)
    a = _LATEX_SPACING.sub("", a)
    if a.endswith(".") and not a.endswith(".."):
        a = a[:-1].rstrip()
    m = _MATH_WRAP.match(a)
    if m:
        a = next(g for g in m.groups() if g is not None).strip()
    if a.endswith(".") and not a.endswith(".."):
        a = a[:-1].rstrip()
    return _SPACES.sub(" ", a).strip()


@dataclass
class Normalize(Step):
    """Normalise ``problem``, ``solution``, ``options`` and ``answer`` in place; never drops a row."""

    name = "normalize"
    lowercase_options: bool = False

    def run(self, rows: Iterable[dict]) -> Iterator[dict | Excluded]:
        for row in rows:
            row = dict(row)
            row["problem"] = normalize_text(row.get("problem") or "")
            if row.get("solution"):
                row["solution"] = normalize_text(row["solution"])
            if row.get("answer") is not None:
                row["answer"] = normalize_answer_text(str(row["answer"]))
            if row.get("options"):
                opts = [normalize_text(str(o)) for o in row["options"]]
                row["options"] = [o.lower() for o in opts] if self.lowercase_options else opts
            yield row
