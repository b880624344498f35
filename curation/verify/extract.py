"""Final-answer extraction from a model response.

:func:`extract_answer` tries a list of *rules* in order and returns the first answer found together with
the name of the rule that matched. The rules (``DEFAULT_RULES`` order):

``boxed``       the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces; ``\\boxed 5`` too) - unless a
                "Final Answer: ..." statement follows it (Minerva format), whose answer is then taken
``answer_tag``  the last ``<answer>...</answer>`` (R1-style); a ``\\boxed{}`` inside it is unwrapped
``gsm8k``       the last ``#### x`` line (GSM8K reference format)
``answer_is``   the last "the answer is x" / "final answer is x" / "answer: x" / "Answer $x$": a math span
                right after the marker (``$..$``, ``\\(..\\)`` on the line; ``$$..$$``, ``\\[..\\]`` across
                lines), else the rest of the line, where the phrase repeated ("Final Answer: The final
                answer is 7." - the Minerva format) is dropped, the text stops at the first sentence end
                ("7.78. I hope it is correct."), and a sentence ("The largest $n$ is 34") gives its
                leading value, its only value, or what follows its last "is" / "="
``a_line``      the last line of the form ``A: x`` (GSM8K example solutions)
``choice``      only with ``options``: the last stand-alone choice label such as ``(C)`` / ``option C``
``bare``        a short one-line response is its own answer (``"10"``, ``"(B)"``, ``"$\\frac{1}{2}$"``); a
                connector word between math is an ``=`` (``"2 + 4 equals 6"`` -> ``2 + 4 = 6``)

Not in the default list (strict is the default, and the right one for rewards: a response without a
final-answer marker gets ``no_answer``):

``last_math``   *lenient*: the last math span (``$..$``, ``$$..$$``, ``\\(..\\)``, ``\\[..\\]``) of the final
                sentence, else its last number ("Therefore $x \\geq 5$ is the solution." -> ``x \\geq 5``). The
                final sentence is what follows the last ``.``/``!``/``?`` + space or line break; one without
                math or a number gives nothing. Selected per call (``lenient=True`` or ``rules=LENIENT_RULES``
                in :func:`extract_answer` / ``verify_batch``), per recipe (``rewards: {accuracy: {lenient:
                true}}``) and on the CLI (``curate verify --lenient`` / ``--rules ...``); ``lenient`` appends it
                after the rules in use.
``last_number`` the last number anywhere in the text: a weak guess that would turn every rambling response
                into some answer.

Several boxed answers: :func:`final_boxes` returns the boxes of the final answer (the last box and the
boxes just before it, separated only by short glue such as ``, `` / ``\\quad \\text{and}``). The verifier
compares their union with the gold when the gold lists several values (a set, solution pairs, several
equations); otherwise the last box alone is the answer.

Numbers: ``1,000`` and ``10{,}000`` are thousands separators; a comma after a leading zero (``0,111``) is a
decimal comma (a thousands group cannot follow ``0``); any other comma is left alone (``1,2`` may be a list).

With ``options`` (multiple choice, labels ``A``, ``B``, ... in order) the found answer is mapped to a
label: ``"(C)"``, ``"C."``, ``"C)"``, ``"option C"``, ``"(C) 6\\pi"`` and the literal text of option C all
give ``"C"``. Literal option text is tried before labels, so with options that are themselves letters
(``["A", "B", "D", "F", "G"]``, the labels of a figure) ``"G"`` maps to ``"E"``. An answer that is neither
is returned as found (the verifier then compares it with the gold option's text mathematically).

All regular expressions here are linear-time (no nested quantifiers), so megabyte-long responses cost
milliseconds, not minutes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

__all__ = [
    "DEFAULT_RULES",
    "LENIENT_RULES",
    "RULES",
    "Extraction",
    "choice_labels",
    "extract_answer",
    "final_boxes",
    "last_boxed",
    "map_choice",
    "normalize_answer",
    "resolve_rules",
]


@dataclass(frozen=True)
class Extraction:
    """The extracted answer (``None`` when no rule matched) and the name of the rule that produced it."""

    answer: str | None
    rule: str | None


# ---------------------------------------------------------------------------------------------------------
# \boxed{...}


_BOX_COMMANDS = ("\\boxed", "\\fbox")


_BRACE_TOKENS = re.compile(r"\\.|[{}]", re.DOTALL)
_MAX_BOX_CHARS = 20_000  # a \boxed{} longer than this is not a final answer: treated as unbalanced


def _balanced_group(text: str, start: int) -> tuple[str, int] | None:
    """``text[start] == "{"``: the content up to the matching ``}`` and the index after it, or ``None``
    when the group is unbalanced within ``_MAX_BOX_CHARS`` (bounds the work on megabyte inputs)."""
    depth = 0
    for m in _BRACE_TOKENS.finditer(text, start, min(len(text), start + _MAX_BOX_CHARS)):
        c = m.group(0)
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : m.start()], m.end()
    return None


def _boxed_span(text: str, pos: int, cmd: str) -> tuple[str, int] | None:
    """Content of the box command ``cmd`` found at ``pos`` and the index after it (``None`` when
    unbalanced or not a box)."""
    j = pos + len(cmd)
    if j < len(text) and text[j].isalpha():  # \boxedfoo is another command
        return None
    while j < len(text) and text[j] in " \t":
        j += 1
    if j < len(text) and text[j] == "{":
        return _balanced_group(text, j)
    if cmd == "\\boxed" and j > pos + len(cmd):
        # "\boxed 5" form: the argument runs to the next "$" or whitespace
        m = re.compile(r"[^\s$]+").match(text, j)
        return (m.group(0), m.end()) if m else None
    return None


def _box_spans(text: str, limit: int = 64) -> list[tuple[int, int, str]]:
    """``(start, end, content)`` of the last ``limit`` balanced boxes of ``text``, in text order.

    Walks backwards from the end (usually the last box is the answer, so the common case costs one
    brace scan); unbalanced boxes (``\\boxed{1 + {2}``) are skipped; a box nested in another counts once
    (the outer one)."""
    if not text:
        return []
    positions: list[tuple[int, str]] = []
    for cmd in _BOX_COMMANDS:
        end = len(text)
        while len(positions) <= 64 + limit:  # pathological: thousands of boxes; the last ones are plenty
            pos = text.rfind(cmd, 0, end)
            if pos < 0:
                break
            positions.append((pos, cmd))
            end = pos
    spans: list[tuple[int, int, str]] = []
    for pos, cmd in sorted(positions, reverse=True):
        got = _boxed_span(text, pos, cmd)
        if got is not None:
            if spans and got[1] > spans[-1][0]:  # an outer box around the one taken: keep the outer one
                spans.pop()
            spans.append((pos, got[1], got[0]))
            if len(spans) >= limit:
                break
    return spans[::-1]


def last_boxed(text: str) -> str | None:
    """Content of the last balanced ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, nested braces kept.

    An unbalanced last box (``\\boxed{1 + {2}``) is skipped in favour of the previous balanced one; no box
    gives ``None``. Used for model responses and for the reference solutions of MATH.
    """
    spans = _box_spans(text, limit=1)
    return spans[-1][2] if spans else None


# What may stand between two boxes of one final answer: commas, "and", "or", spacing, math delimiters,
# a short \text{...} ("for part (a) and"). A sentence end or a blank line ends the group.
_BOX_GAP_MAX = 60
_SENTENCE_END = re.compile(r"[.;!?]\s+[A-Z]|\n[ \t]*\n")


def final_boxes(text: str) -> list[str]:
    """The boxes of the final answer, in order: the last balanced box and the boxes just before it that are
    separated from the next one by at most ``_BOX_GAP_MAX`` characters of glue (commas, "and", ``\\quad``,
    ``\\text{ for part (a) and }``...) with no sentence end or blank line in between.

    ``"\\boxed{(1, 2)}, \\boxed{(2, 1)}"`` gives ``["(1, 2)", "(2, 1)"]``; a box earlier in the solution,
    followed by more prose, is not part of it. Empty boxes are skipped; no box gives ``[]``.
    """
    spans = _box_spans(text)
    if not spans:
        return []
    group = [spans[-1]]
    for prev in reversed(spans[:-1]):
        gap = text[prev[1] : group[0][0]]
        if len(gap) > _BOX_GAP_MAX or _SENTENCE_END.search(gap):
            break
        group.insert(0, prev)
    return [c for _s, _e, c in group if c.strip()]


# ---------------------------------------------------------------------------------------------------------
# normalisation

_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![a-zA-Z])")
# thousands separators: "1,000", "12,345.5" (a first group "0" is not thousands: "0,111" is a decimal comma)
_NUM_WITH_COMMAS = re.compile(r"^[-+]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")
_DECIMAL_COMMA = re.compile(r"^[-+]?0,\d+$")
# thin spaces between digit groups are typesetting: "1\,000", "11,\! 111"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_THIN_SPACE = re.compile(r"\\\\|\\[,;:]|\\ ")  # a matrix row break (two backslashes) is matched so that it is kept
_DIGIT_GLUE = re.compile(r"(?<=\d)(,?)(?:\\[,!][ \t]*)+(?=\d)")
_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**"), ("`", "`"))


_WRAP_STARTS = tuple(left for left, _ in _WRAPPERS) + _BOX_COMMANDS
_SIMPLE = re.compile(r"[-+]?\d+(?:\.\d+)?|[A-Za-z]")


def _strip_wrappers(s: str) -> str:
    if not s.startswith(_WRAP_STARTS):
        return s
    for _ in range(8):  # bounded: "$$$$...$$$$" must not cost quadratic time
        before = s
        for left, right in _WRAPPERS:
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left) : len(s) - len(right)].strip()
        for cmd in _BOX_COMMANDS:
            if s.startswith(cmd) and s.endswith("}"):
                got = _boxed_span(s, 0, cmd)
                if got is not None and got[1] == len(s):  # the box spans the whole string
                    s = got[0].strip()
        if s == before or not s:
            break
    return s


def normalize_answer(s: str | None) -> str:
    """Light, meaning-preserving clean-up of an answer string.

    Trims whitespace and drops control characters (NUL...); unwraps ``\\boxed{}``, ``$...$``, ``\\(...\\)``, ``\\[...\\]`` and ``**bold**``;
    replaces ``\\text{x}`` / ``\\mathrm{x}`` (and friends) by ``x``; drops ``\\left``/``\\right``, thin
    spaces (``\\,`` ``\\;`` ``~``; ``\\!`` and a thin space between digit groups, ``1\\,000``, are
    dropped), a leading currency ``$`` and trailing ``.``/``,``/``;``; turns ``1,000`` / ``10{,}000`` into
    ``1000`` / ``10000`` when the whole answer is a number with thousands separators, and a decimal comma
    after a leading zero (``0,111``: a thousands group cannot follow ``0``) into ``0.111``; collapses runs
    of whitespace. ``None`` gives ``""``.
    """
    if not s:
        return ""
    s = s.strip()
    if _SIMPLE.fullmatch(s):  # the common case: "18", "C"
        return s
    s = _CONTROL.sub("", s).strip()  # NUL and other control characters carry no meaning in an answer
    s = _strip_wrappers(s)
    for _ in range(3):  # nested \text{\textbf{x}}
        new = _TEXT_CMD.sub(r"\1", s)
        if new == s:
            break
        s = new
    s = _LEFT_RIGHT.sub("", s)  # \left( -> (, but \leftarrow stays
    s = _DIGIT_GLUE.sub(r"\1", s.replace("{,}", ","))
    s = _THIN_SPACE.sub(lambda m: m.group(0) if m.group(0) == "\\\\" else " ", s.replace("\\!", ""))
    s = s.replace("\\%", "%").replace("\\$", "$").replace("~", " ")
    s = " ".join(s.split())
    s = s.rstrip(" .,;:")
    s = _strip_wrappers(s)
    if s.startswith("$") and s[1:].lstrip()[:1].isdigit():  # currency: "$18" (a lone opening dollar)
        s = s[1:].lstrip()
    s = s.rstrip(" .,;:")
    if _NUM_WITH_COMMAS.match(s):
        s = s.replace(",", "")
    elif _DECIMAL_COMMA.match(s):
        s = s.replace(",", ".")
    return s


# ---------------------------------------------------------------------------------------------------------
# multiple choice


def choice_labels(options: Sequence[str]) -> str:
    """``A``, ``B``, ... one label per option (up to 26)."""
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: len(options)]


def _option_key(s: str) -> str:
    """Comparison key of an option text / candidate: normalised, spaces removed, lower case."""
    s = normalize_answer(s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\\mathrm\{\s*~?\s*", "", s)
    return re.sub(r"[\s~]+", "", s).lower()


_LABEL_ONLY = re.compile(r"^\(?\s*([A-Za-z])\s*\)?\s*[.:)]?$")
_LABEL_LEAD = re.compile(r"^(?:\(\s*([A-Za-z])\s*\)|([A-Z])\s*[.:)])")
_LABEL_OPTION = re.compile(r"^(?:option|choice)\s*\(?\s*([A-Za-z])\s*\)?(?![A-Za-z])", re.IGNORECASE)


def map_choice(answer: str, options: Sequence[str]) -> str | None:
    """Map an extracted answer to a choice label (``"A"``...) or ``None`` when it names no option.

    Order: literal option text (normalised, case- and space-insensitive); a bare label (``C``, ``(C)``,
    ``C.``, ``C)``; lower case accepted only for a bare label); ``option C`` / ``choice C``; a leading
    label followed by text (``(C) 6\\pi``, ``C. 6\\pi``).
    """
    if not options:
        return None
    labels = choice_labels(options)
    key = _option_key(answer)
    if not key:
        return None
    matches = [labels[i] for i, opt in enumerate(options) if _option_key(str(opt)) == key]
    if len(matches) == 1:
        return matches[0]
    cand = normalize_answer(answer)
    m = _LABEL_ONLY.match(cand)
    if m and m.group(1).upper() in labels:
        return m.group(1).upper()
    m = _LABEL_OPTION.match(cand)
    if m and m.group(1).upper() in labels:
        return m.group(1).upper()
    m = _LABEL_LEAD.match(cand)
    if m:
        letter = (m.group(1) or m.group(2)).upper()
        if letter in labels:
            return letter
    return None


# ---------------------------------------------------------------------------------------------------------
# rules: each takes (response, options) and returns the raw answer text or None

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_GSM8K = re.compile(r"####[ \t]*([^\n]*)")
# "answer is" / "answer would be" / "answer =" / "answer:" / "Answer" directly followed by math ("Answer $9$")
_ANSWER_MARK = re.compile(
    r"\banswer(?:\s*(?:(?:is|would\s+be|should\s+be|will\s+be)\b|=)\s*:?|\s*[:：]|[ \t]*(?=\$|\\[\[(]))",
    re.IGNORECASE,
)
# what the rest of an answer line may start with before the answer itself: "**" closing "**Final Answer:**",
# and, in the Minerva format ("Final Answer: The final answer is 7."), the phrase again
_ANSWER_LEAD = re.compile(r"^(?:(?:\*\*|__)(?=\s)|[\s:：]+|(?:the\s+)?(?:final\s+)?answer\s*(?:is\b|[:：])\s*:?)",
                          re.IGNORECASE)
_MATH_MAX_CHARS = 2000  # a math span longer than this after "answer" is not an answer
_INLINE_CLOSE = {"$": re.compile(r"(?:[^$\n\\]|\\.)*\$"), "\\(": re.compile(r"[^\n]*?\\\)")}
_CONNECTOR = re.compile(r"\s(?:is|are|equals|was|be)\s|=")
_LEAD_VALUE = re.compile(r"^[-+]?\d[\d,]*(?:\.\d+)?(?:/\d+)?(?![\w.,/])")
_SENTENCE_STOP = re.compile(r"[.!?](?=\s)")
_A_LINE = re.compile(r"^[ \t]*A:[ \t]+(\S[^\n]*)$", re.MULTILINE)
_PAREN_LABEL = re.compile(r"\(\s*([A-Z])\s*\)")
_OPTION_WORD = re.compile(r"\b(?:option|choice)\s*\(?([A-Z])\b\)?", re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:/\d+)?")

_BARE_MAX_CHARS = 80


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = None
    for last in pattern.finditer(text):  # noqa: B007 (we want the last one)
        pass
    return last


_FINAL_ANSWER = re.compile(r"\bfinal\s+answer\b", re.IGNORECASE)


def _rule_boxed(text: str, options: Sequence[str] | None) -> str | None:
    spans = _box_spans(text, limit=1)
    if not spans or not spans[-1][2].strip():
        return None
    after = text[spans[-1][1] :]
    if _FINAL_ANSWER.search(after):
        # "... = \\boxed{255} ... Final Answer: The final answer is $10,455$." (Minerva format): the stated
        # final answer after the last box is the answer; the box was an intermediate result
        stated = _rule_answer_is(after, options)
        if stated is not None:
            return stated
    return spans[-1][2]


def _rule_answer_tag(text: str, options: Sequence[str] | None) -> str | None:
    if "<answer>" not in text.lower():
        return None
    m = _last_match(_ANSWER_TAG, text)
    if not m:
        return None
    inner = m.group(1).strip()
    boxed = last_boxed(inner)
    if boxed is not None and boxed.strip():
        return boxed
    return inner or None


def _rule_gsm8k(text: str, options: Sequence[str] | None) -> str | None:
    if "####" not in text:
        return None
    m = _last_match(_GSM8K, text)
    return m.group(1).strip() or None if m else None


def _math_at(text: str, pos: int) -> tuple[str, int] | None:
    """``(inner, end)`` of the math span opening at ``text[pos]`` (``$$..$$`` and ``\\[..\\]`` may span lines;
    ``$..$`` and ``\\(..\\)`` may not), or ``None`` when there is none or it is not closed."""
    for opener, closer in (("$$", "$$"), ("\\[", "\\]")):
        if text.startswith(opener, pos):
            end = text.find(closer, pos + 2, pos + 2 + _MATH_MAX_CHARS)
            return (text[pos + 2 : end].strip(), end + 2) if end >= 0 else None
    for opener in ("$", "\\("):
        if text.startswith(opener, pos):
            m = _INLINE_CLOSE[opener].match(text, pos + len(opener), pos + len(opener) + _MATH_MAX_CHARS)
            if m is None:
                return None
            close = 1 if opener == "$" else 2
            return text[pos + len(opener) : m.end() - close].strip(), m.end()
    return None


def _outside_math(s: str) -> str:
    """``s`` with its ``$...$`` spans blanked out (same length), for looking at the prose around them."""
    return re.sub(r"(?<!\\)\$(?:[^$\\]|\\.)*\$", lambda m: " " * len(m.group(0)), s)


def _is_prose(s: str) -> bool:
    return bool(_PROSE.search(_LATEX_CMD.sub(" ", _outside_math(s))))


def _answer_tail(s: str, depth: int = 0) -> str:
    """The answer in the rest of an "answer" line: the phrase repeated ("The final answer is 7") is dropped;
    a leading math span is the answer; else the text up to the first sentence end ("7.78. I hope it is
    correct."); a sentence ("The largest $n$ is 34") gives its leading value or what follows its last
    "is"/"="."""
    s = s.strip()
    for _ in range(4):
        new = _ANSWER_LEAD.sub("", s, count=1).strip()
        if new == s:
            break
        s = new
    span = _math_at(s, 0)
    if span is not None and span[0]:
        return span[0]
    stop = _SENTENCE_STOP.search(_outside_math(s))
    if stop:
        s = s[: stop.start()].strip()
    if depth < 2 and _is_prose(s):
        lead = _LEAD_VALUE.match(s)
        if lead:
            return lead.group(0)
        last = _last_match(_CONNECTOR, _outside_math(s))
        if last is not None and s[last.end():].strip():
            return _answer_tail(s[last.end():], depth + 1)
        values = [next(g for g in m.groups() if g) for m in _MATH_SPAN.finditer(s)]
        values += _NUMBER.findall(_outside_math(s))
        if len(values) == 1:  # "Jane started growing Sphere 3 hours ago": its only value
            return values[0]
    return s


def _rule_answer_is(text: str, options: Sequence[str] | None) -> str | None:
    if "answer" not in text.lower():
        return None
    # scan backwards over the occurrences: the last one that carries something wins
    for m in reversed(list(_ANSWER_MARK.finditer(text))):
        pos = m.end()
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        span = _math_at(text, pos)
        if span is not None and span[0]:
            return span[0]
        eol = text.find("\n", pos, pos + _MATH_MAX_CHARS)
        got = _answer_tail(text[pos : eol if eol >= 0 else pos + _MATH_MAX_CHARS])
        if got and re.search(r"\w", got):
            return got
    return None


def _rule_a_line(text: str, options: Sequence[str] | None) -> str | None:
    if "A:" not in text:
        return None
    m = _last_match(_A_LINE, text)
    return m.group(1).strip() if m else None


def _rule_choice(text: str, options: Sequence[str] | None) -> str | None:
    if not options:
        return None
    labels = choice_labels(options)
    found = [m.group(1) for m in _PAREN_LABEL.finditer(text) if m.group(1) in labels]
    found += [m.group(1).upper() for m in _OPTION_WORD.finditer(text) if m.group(1).upper() in labels]
    if not found:
        return None
    if len(set(found)) == 1:
        return found[0]
    # several labels mentioned: take the one mentioned last
    last_pos = -1
    best = None
    for pat in (_PAREN_LABEL, _OPTION_WORD):
        for m in pat.finditer(text):
            if m.group(1).upper() in labels and m.start() > last_pos:
                last_pos, best = m.start(), m.group(1).upper()
    return best


_LATEX_CMD = re.compile(r"\\[A-Za-z]+")
_PROSE = re.compile(r"[A-Za-z]{2,}[\s,]+[A-Za-z]{2,}")


def _rule_bare(text: str, options: Sequence[str] | None) -> str | None:
    """A short one-line reply that *is* an answer. Prose is not: once LaTeX commands are removed, two
    consecutive words of 2+ letters ("6 + 6 is actually ...") mean a sentence, whose numbers must not be
    graded as an answer. Units and single words ("45 cm^2", "9 litres", "\\text{March}") still pass."""
    s = text.strip()
    if not s or len(s) > _BARE_MAX_CHARS or "\n" in s:
        return None
    if _PROSE.search(_LATEX_CMD.sub(" ", s)):
        return None
    # "2 + 4 equals 6" (a single connector word between math): the equation math-verify reads ("2 + 4 = 6"),
    # whose right-hand side is then compared - not the whole phrase, which never equals the gold
    return _BARE_CONNECTOR.sub(" = ", s)


_BARE_CONNECTOR = re.compile(r"\s(?:is|are|equals|was)\s")


def _rule_last_number(text: str, options: Sequence[str] | None) -> str | None:
    m = _last_match(_NUMBER, text)
    return m.group(0) if m else None


_LENIENT_TAIL_CHARS = 4000  # last_math looks at the end of the response only (bounded work)
_MATH_SPAN = re.compile(
    r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\(([^\n]+?)\\\)|(?<!\\)\$((?:[^$\n\\]|\\.)+?)\$", re.DOTALL
)
_SENTENCE_BREAK = re.compile(r"[.!?]\s+|\n")


def _rule_last_math(text: str, options: Sequence[str] | None) -> str | None:
    """Lenient: the last math span (``$..$``, ``$$..$$``, ``\\(..\\)``, ``\\[..\\]``) of the final sentence, else
    its last number. The final sentence is the text after the last ``.``/``!``/``?`` + space or line
    break (math spans do not split sentences; trailing punctuation is ignored); a final sentence with
    neither math nor a number gives nothing (no look further back)."""
    tail = text[-_LENIENT_TAIL_CHARS:]
    spans = [(m.start(), m.end(), next(g for g in m.groups() if g is not None)) for m in _MATH_SPAN.finditer(tail)]
    parts, last = [], 0
    for start, end, _inner in spans:
        parts.append(tail[last:start])
        parts.append("M" * (end - start))
        last = end
    parts.append(tail[last:])
    masked = "".join(parts)
    end = len(masked.rstrip(" \t\r\n.!?"))
    if end == 0:
        return None
    brk = _last_match(_SENTENCE_BREAK, masked[:end])
    start = brk.end() if brk else 0
    inside = [inner for s_, e_, inner in spans if s_ >= start and e_ <= end and inner.strip()]
    if inside:
        return inside[-1].strip()
    m = _last_match(_NUMBER, tail[start:end])
    return m.group(0) if m else None


_RULE_FUNCS: dict[str, Callable[[str, Sequence[str] | None], str | None]] = {
    "boxed": _rule_boxed,
    "answer_tag": _rule_answer_tag,
    "gsm8k": _rule_gsm8k,
    "answer_is": _rule_answer_is,
    "a_line": _rule_a_line,
    "choice": _rule_choice,
    "bare": _rule_bare,
    "last_number": _rule_last_number,
    "last_math": _rule_last_math,
}

RULES: tuple[str, ...] = tuple(_RULE_FUNCS)
DEFAULT_RULES: tuple[str, ...] = ("boxed", "answer_tag", "gsm8k", "answer_is", "a_line", "choice", "bare")
LENIENT_RULES: tuple[str, ...] = (*DEFAULT_RULES, "last_math")


def resolve_rules(rules: Sequence[str] | str | None = None, lenient: bool = False) -> tuple[str, ...]:
    """The rule list to use: ``rules`` (a sequence, or comma-separated names; default :data:`DEFAULT_RULES`)
    with ``last_math`` appended when ``lenient`` and not already there. Unknown names raise ``ValueError``."""
    if rules is None:
        out = DEFAULT_RULES
    else:
        out = tuple(r.strip() for r in (rules.split(",") if isinstance(rules, str) else rules) if r.strip())
    bad = [r for r in out if r not in _RULE_FUNCS]
    if bad:
        raise ValueError(f"unknown extraction rule(s) {bad}; known: {list(RULES)}")
    if not out:
        raise ValueError(f"no extraction rules given; known: {list(RULES)}")
    if lenient and "last_math" not in out:
        out = (*out, "last_math")
    return out


def extract_answer(
    response: str,
    *,
    options: Sequence[str] | None = None,
    rules: Sequence[str] | None = None,
    lenient: bool = False,
) -> Extraction:
    """Extract the final answer of ``response`` with the first matching rule of ``rules``.

    ``rules``: rule names in order (default :data:`DEFAULT_RULES`); ``lenient=True`` appends the lenient
    ``last_math`` rule (:data:`LENIENT_RULES` with the default rules). Returns ``Extraction(answer, rule)``;
    ``answer`` is normalised (:func:`normalize_answer`) and, with ``options``, mapped to its choice label
    when it names one. ``Extraction(None, None)`` when no rule matched (or the response is empty / not a
    string). Unknown rule names raise ``ValueError``.
    """
    return _extract(response, options, resolve_rules(rules, lenient))


def _extract(response: Any, options: Sequence[str] | None, rules: tuple[str, ...]) -> Extraction:
    """:func:`extract_answer` with ``rules`` already resolved (the verifier resolves them once per batch)."""
    if not isinstance(response, str) or not response.strip():
        return Extraction(None, None)
    opts = [str(o) for o in options] if options else None
    for rule in rules:
        raw = _RULE_FUNCS[rule](response, opts)
        if raw is None:
            continue
        answer = normalize_answer(raw)
        if not answer:
            continue
        if opts:
            label = map_choice(raw, opts)
            if label is None and rule != "choice" and len(raw) <= 200:
                # "\\boxed{The answer is (E)}": a label in parentheses inside the found answer
                inner = _rule_choice(raw, opts)
                label = inner if inner is not None and map_choice(inner, opts) else None
            if label is not None:
                return Extraction(label, rule)
        return Extraction(answer, rule)
    return Extraction(None, None)
