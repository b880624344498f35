"""Comparison rules of the verifier, decided in the calling process without sympy (microseconds per item):

- which gold answers can be checked automatically (:func:`classify_gold`: number, expression, equation,
  interval, set, tuple, matrix, choice, text; or a reason such as ``proof`` / ``open_ended``);
- the *fast path* (:func:`fast_path`) that settles most items before any worker is involved:

  - the gold is a choice label (``A``..) and the extracted answer is a label: labels compared; without
    options only a label can name the gold (``\\boxed{C}``, ``(C)``), anything else is ``incorrect``;
  - the comparison keys are equal (normalised, spaces removed, case-folded, ``^\\circ`` dropped);
  - both sides are plain numbers (``1,000``, ``0.5``, ``1/2``, ``\\frac{1}{2}``, ``-3``, ``2e3``):
    equal as exact fractions -> ``correct``; relative difference ``|a-b| / max(|a|,|b|) > 1e-4`` ->
    ``incorrect``; closer than that (``0.3333`` vs ``1/3``) -> left to math-verify's rounding rules;
  - both sides are plain words (``March`` vs ``April``): case-insensitive string comparison;
  - both sides are plain expressions (no relation, list or function application; :func:`variables`) in
    *different* variables (``300`` vs ``\\frac{2}{5} g K z``, ``c x^{-2}`` vs ``\\cos(2t)``): ``incorrect`` -
    math-verify's default comparison is strict, so they cannot be equal;
  - a multiple-choice answer given as a value is checked the same way against the gold option's text.

Everything else goes to math-verify in the worker pool (:mod:`curation.verify.pool`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

from curation.verify.extract import (
    _LABEL_LEAD,
    _LABEL_ONLY,
    _NUM_WITH_COMMAS,
    choice_labels,
    map_choice,
    normalize_answer,
)

__all__ = ["ParsedGold", "answer_label", "classify_gold", "fast_path", "gold_kind", "latex_problem", "parse_gold",
           "several_values", "variables"]


@dataclass(frozen=True)
class ParsedGold:
    """A gold answer that can be checked automatically.

    ``kind``: ``number``, ``expression``, ``equation``, ``interval``, ``set``, ``tuple``, ``matrix``,
    ``choice`` (a label with ``options``) or ``text`` (a short word answer, compared as a string);
    ``text``: the normalised gold; ``number``: its exact value for ``number``; ``choice``: the label.
    """

    kind: str
    text: str
    number: Fraction | None = None
    choice: str | None = None



_PROOF = re.compile(
    r"\b(?:prove|proof|proves|show\s+that|shown\s+that|demonstrate\s+that|Q\.?E\.?D)\b|\\blacksquare|\\qed",
    re.IGNORECASE,
)



_DEG = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\circ|\\degree")



_LATEX_FRAC = re.compile(r"^([-+]?)\\[dt]?frac\s*\{\s*([-+]?\d+)\s*\}\s*\{\s*(\d+)\s*\}$")



_LATEX_FRAC_SHORT = re.compile(r"^([-+]?)\\[dt]?frac\s*(\d)(\d)$")



_PLAIN_NUM = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d{1,3})?$")



_PLAIN_FRAC = re.compile(r"^([-+]?\d+)\s*/\s*(\d+)$")



_WORDS = re.compile(r"^[A-Za-z][A-Za-z' \-]*$")



_MATRIX = re.compile(r"\\begin\{[pbvBV]?matrix\}")



_INTERVAL = re.compile(r"^[\[(]\s*[^,\[\]()]+\s*,\s*[^,\[\]()]+\s*[\])]$")



_SET = re.compile(r"^\\\{.*\\\}$|^\{.*\}$", re.DOTALL)



_MATHY = re.compile(r"[\d\\^_=+\-*/()]|^[A-Za-z]$")



_MAX_NUMBER_CHARS = 60



def _small_cache(fn: Any) -> Any:
    """LRU-cache a function of one string, for strings up to 1000 characters."""
    cached = functools.lru_cache(maxsize=65536)(fn)

    @functools.wraps(fn)
    def wrapper(s: str) -> Any:
        return cached(s) if len(s) <= 1000 else fn(s)

    return wrapper



@_small_cache
def _as_number(s: str) -> Fraction | None:
    """Exact value of a plain number (``1,000``; ``0.5``; ``1/2``; ``\\frac{1}{2}``; ``-3``; ``2e3``;
    ``45^\\circ``) or ``None``. Bounded: long strings and exponents beyond 3 digits are not parsed here
    (so ``1e999999999`` cannot stall the parent)."""
    if not s or len(s) > _MAX_NUMBER_CHARS:
        return None
    t = normalize_answer(s)
    t = _DEG.sub("", t).strip()
    if "," not in t:  # "1 000" is a number; "11, 111" is a list, not 11111
        t = t.replace(" ", "")
    if _NUM_WITH_COMMAS.match(t):
        t = t.replace(",", "")
    try:
        if _PLAIN_NUM.match(t):
            return Fraction(t)
        m = _PLAIN_FRAC.match(t)
        if m:
            den = int(m.group(2))
            return Fraction(int(m.group(1)), den) if den else None
        m = _LATEX_FRAC.match(t) or _LATEX_FRAC_SHORT.match(t)
        if m:
            den = int(m.group(3))
            if not den:
                return None
            v = Fraction(int(m.group(2)), den)
            return -v if m.group(1) == "-" else v
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None



def _braces_balanced(s: str) -> bool:
    depth = 0
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth < 0:
                return False
        i += 1
    return depth == 0



_ENV = re.compile(r"\\(begin|end)\s*\{([^{}]*)\}")



def latex_problem(s: str) -> str | None:
    """Cheap structural LaTeX check: balanced braces, ``\\begin``/``\\end`` pairs that match, as many
    ``\\left`` as ``\\right``. Returns what is wrong, or ``None``."""
    if not _braces_balanced(s):
        return "unbalanced braces"
    if "\\begin" in s or "\\end" in s:
        stack: list[str] = []
        for kind, env in _ENV.findall(s):
            if kind == "begin":
                stack.append(env)
            elif not stack or stack.pop() != env:
                return f"\\end{{{env}}} does not close the open environment"
        if stack:
            return f"\\begin{{{stack[-1]}}} is never closed"
    if len(re.findall(r"\\left(?![a-zA-Z])", s)) != len(re.findall(r"\\right(?![a-zA-Z])", s)):
        return "unmatched \\left / \\right"
    return None



def classify_gold(gold: Any, options: Sequence[str] | None = None) -> tuple[ParsedGold | None, str | None]:
    """``(ParsedGold, None)`` when ``gold`` can be checked automatically, else ``(None, reason)``.

    Reasons: ``empty`` (missing / blank), ``proof`` ("prove", "show that", QED...), ``open_ended`` (prose:
    more than 8 words, or a long text that is not mathematics), ``malformed`` (unbalanced braces),
    ``choice_not_in_options`` (a label such as ``F`` with only four options). Purely syntactic (regular
    expressions, no sympy): it never hangs and costs microseconds (results are cached).
    """
    if gold is None:
        return None, "empty"
    opts = tuple(str(o) for o in options) if options else None
    gold = str(gold)
    if len(gold) > 2000:  # do not keep huge strings in the cache
        return _classify_cached.__wrapped__(gold, opts)
    return _classify_cached(gold, opts)



@functools.lru_cache(maxsize=65536)
def _classify_cached(gold: str, options: tuple[str, ...] | None) -> tuple[ParsedGold | None, str | None]:
    """Implementation of :func:`classify_gold` (hashable arguments, LRU-cached)."""
    if gold is None or not str(gold).strip():
        return None, "empty"
    raw = str(gold)
    if _PROOF.search(raw):
        return None, "proof"
    text = normalize_answer(raw)
    if not text:
        return None, "empty"
    opts = [str(o) for o in options] if options else None
    if opts:
        labels = choice_labels(opts)
        if re.fullmatch(r"\(?[A-Z]\)?", text):
            letter = text.strip("()")
            if letter in labels:
                return ParsedGold("choice", letter, choice=letter), None
            return None, "choice_not_in_options"
        label = map_choice(text, opts)
        if label is not None:
            return ParsedGold("choice", label, choice=label), None
    elif re.fullmatch(r"\(?[A-Z]\)?", text):
        # a bare label without its options: checkable as a label; ``curate build`` asks for the options
        letter = text.strip("()")
        return ParsedGold("choice", letter, choice=letter), None
    if not _braces_balanced(text):
        return None, "malformed"
    num = _as_number(text)
    if num is not None:
        return ParsedGold("number", text, number=num), None
    words = text.split()
    if len(words) > 8 and sum(w.isalpha() for w in words) > len(words) / 2:
        return None, "open_ended"
    if _MATRIX.search(text):
        return ParsedGold("matrix", text), None
    if "\\cup" in text or (_INTERVAL.match(text) and ("[" in text or "]" in text or "\\infty" in text)):
        return ParsedGold("interval", text), None
    if _INTERVAL.match(text):
        return ParsedGold("tuple", text), None
    if _SET.match(text):
        return ParsedGold("set", text), None
    if _WORDS.match(text) and len(words) <= 4 and len(text) > 1:
        return ParsedGold("text", text), None
    if "=" in text or "\\le" in text or "\\ge" in text or "<" in text or ">" in text:
        return ParsedGold("equation", text), None
    if "," in text and len(text) <= 200:
        return ParsedGold("set", text), None
    if len(text) <= 200 and _MATHY.search(text):
        return ParsedGold("expression", text), None
    return None, "open_ended"



def parse_gold(gold: Any, options: Sequence[str] | None = None) -> ParsedGold | None:
    """:class:`ParsedGold` when the gold answer can be checked automatically, else ``None``."""
    return classify_gold(gold, options)[0]



def gold_kind(gold: Any, options: Sequence[str] | None = None) -> str | None:
    """Kind of a checkable gold answer (``number``, ``expression``, ``interval``, ``set``, ``choice``...)
    or ``None`` for proofs, open-ended and empty answers. See :func:`classify_gold` for the reason."""
    parsed = parse_gold(gold, options)
    return parsed.kind if parsed else None



@_small_cache
def _key(s: str) -> str:
    """String comparison key: normalised, degree marks and spaces removed, case-folded."""
    t = normalize_answer(s)
    t = _DEG.sub("", t)
    t = t.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return re.sub(r"\s+", "", t).lower()



def answer_label(answer: str) -> str | None:
    """The choice label an answer names without options (``C``, ``(C)``, ``c``, ``C.``, ``(C) 6\\pi``), or
    ``None``."""
    cand = normalize_answer(answer)
    m = _LABEL_ONLY.match(cand)
    if m:
        return m.group(1).upper()
    m = _LABEL_LEAD.match(cand)
    return (m.group(1) or m.group(2)).upper() if m else None


def _top_level_commas(s: str) -> int:
    """Commas of ``s`` outside brackets and braces (``(1,2),(3,4)`` has one; ``\\{1,2\\}`` none)."""
    depth = n = 0
    for c in s:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            n += 1
    return n


def several_values(gold: ParsedGold | None) -> bool:
    """Whether a gold answer lists several values - a set (``\\{1, 2, 3\\}``, ``1, 2, 3``), solution pairs
    (``(2,1),(1,2)``) or several equations (``k = 45, n = 2``) - so that a response boxing each value
    separately is compared through the union of its final boxes."""
    if gold is None or gold.kind in ("number", "choice", "text", "interval", "tuple", "matrix"):
        return False
    return gold.kind == "set" or _top_level_commas(gold.text) > 0


_NUM_TOL = 1e-4
_INTEGER = re.compile(r"[-+]?\d+")
_NUMBER_WORDS = re.compile(r"^([-+]?\d[\d,]*(?:\.\d+)?)\s+([A-Za-z][A-Za-z .]*)$")
_SCALE = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9, "trillion": 10**12}

# variables of an expression, read from its LaTeX without sympy: single letters (``x``, ``C_{1}``,
# ``\\dot{x}``) and symbol commands (``\\omega``, ``\\hbar``); ``e``, ``i`` and ``\\pi`` are constants
_SYMBOL_COMMANDS = frozenset(
    "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi rho varrho "
    "sigma varsigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi "
    "Omega hbar ell".split()
)
_NEUTRAL_COMMANDS = frozenset(
    "frac dfrac tfrac cfrac sqrt sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh exp ln log cdot "
    "times div pi infty left right circ degree pm mp quad qquad dot ddot hat bar vec tilde prime".split()
)
# "1.8 m", "5 g", "9.8 m/s^2": a number and its unit, not a product with a variable
_UNIT_AFTER_NUMBER = re.compile(r"^[-+]?[\d.,]+\s*[A-Za-z]+(?:\s*/\s*[A-Za-z]+)?(?:\^\{?\d\}?)?$")
_TEXT_GROUP = re.compile(r"\\(?:text|textbf|textit|mathrm|mbox|operatorname|mathbf)\s*\{[^{}]*\}")
_TOKEN = re.compile(r"\\([A-Za-z]+)|([A-Za-z]+)(?:_(\{[^{}]*\}|[A-Za-z0-9]))?")
_RELATION = re.compile(r"[=<>,;:|!]|\\(?:le|ge|ne|neq|leq|geq|lt|gt|in|cup|cap|to|begin|mid|\{)(?![a-zA-Z])")


@_small_cache
def variables(s: str) -> frozenset[str] | None:
    """The variables of a plain expression (``\\frac{x}{2} + C_{1}`` -> ``{x, C_1}``), or ``None`` when unsure:
    relations, lists, intervals, matrices, function applications, units (``\\text{}`` / ``\\mathrm{}``
    groups, a number followed by letters only: ``1.8 m``, ``9.8 m/s^2``) or words (a run of two or more letters outside
    a known command) are left to math-verify."""
    if _TEXT_GROUP.search(s):  # "1.8 \\mathrm{~m}", "9 \\text{ km}": units, math-verify's to handle
        return None
    t = normalize_answer(s)
    if not t or len(t) > 300 or _RELATION.search(t) or _UNIT_AFTER_NUMBER.search(t):
        return None
    out = set()
    for m in _TOKEN.finditer(t):
        cmd, letters, sub = m.groups()
        if cmd is not None:
            if cmd in _SYMBOL_COMMANDS:
                out.add(cmd)
            elif cmd not in _NEUTRAL_COMMANDS:
                return None
            continue
        if len(letters) > 1:
            return None
        if letters in "ei" and not sub:
            continue
        out.add(letters + ("_" + sub.strip("{}").replace(" ", "") if sub else ""))
        end = m.end()
        if end < len(t) and t[end] == "(":  # f(x): a function application, not a product
            return None
    return frozenset(out)



_MATH_CHARS = re.compile(r"[\d\\^_=+*/]")



def fast_path(gold: ParsedGold | None, gold_raw: str, answer: str, options: Sequence[str] | None
               ) -> tuple[str, str] | None:
    """``(status, detail)`` when cheap checks settle the item, else ``None`` (needs math-verify)."""
    if gold is not None and gold.kind == "choice":
        if re.fullmatch(r"[A-Z]", answer) and options and answer in choice_labels(options):
            return ("correct" if answer == gold.choice else "incorrect"), "fast: choice label"
        if not options:
            # a letter gold without its options: only a label can name it ("C", "(C)", "C.", "(C) 6\pi")
            label = answer_label(answer)
            if label is None:
                return "incorrect", "fast: choice label (the answer names no label; no options to map a value)"
            return ("correct" if label == gold.choice else "incorrect"), "fast: choice label"
        gold_text = options[choice_labels(options).index(gold.choice)]
        if not _MATH_CHARS.search(normalize_answer(gold_text)):
            # the option is plain text ("A" - a label in the figure -, "P and R"): string comparison only,
            # math-verify would read "A, A, A" as the set {a} and accept it
            return ("correct" if _key(gold_text) == _key(answer) else "incorrect"), "fast: option text"
        # an answer given as a value: the same cheap checks against the gold option's text, else math-verify
        return fast_path(classify_gold(gold_text)[0], normalize_answer(gold_text), answer, None)
    gkey = _key(gold_raw)
    akey = _key(answer)
    if gkey and gkey == akey:
        return "correct", "fast: equal strings"
    gnum = gold.number if gold is not None and gold.number is not None else _as_number(gold_raw)
    anum = _as_number(answer)
    if gnum is not None and anum is not None:
        if gnum == anum:
            return "correct", "fast: equal numbers"
        scale = max(abs(gnum), abs(anum))
        if abs(gnum - anum) > _NUM_TOL * scale or (_INTEGER.fullmatch(gkey) and _INTEGER.fullmatch(akey)):
            return "incorrect", "fast: different numbers"
        return None
    if gnum is not None:
        # "-1.8 billion", "12 apples": a number followed by words is not the gold number if neither its
        # value nor its value times the scale word is
        m = _NUMBER_WORDS.match(normalize_answer(answer))
        lead = _as_number(m.group(1)) if m else None
        if lead is not None:
            factor = _SCALE.get(m.group(2).split()[0].lower(), 1)
            if all(abs(gnum - x) > _NUM_TOL * max(abs(gnum), abs(x)) for x in (lead, lead * factor)):
                return "incorrect", "fast: different numbers"
            return None
    if _WORDS.match(gold_raw.strip()) and _WORDS.match(answer.strip()):
        return "incorrect", "fast: different words"
    if gold is None or gold.kind in ("number", "expression"):
        gvars, avars = variables(gold_raw), variables(answer)
        if gvars is not None and avars is not None and gvars != avars:
            # strict comparison (math-verify's default): expressions in different variables are not equal
            return "incorrect", "fast: different variables"
    return None
