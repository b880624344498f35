"""Quality filters for generated long chain-of-thought solutions (``curate cot``), one function each.

Every filter takes the solution (and what it needs besides) and returns ``None`` when the solution passes,
or an :class:`Issue` ``(reason, detail)`` saying why it fails.  :func:`check_solution` runs them in a fixed
order and returns every issue found; ``curate cot`` records the first as the exclusion ``reason`` and the
others in the ``detail``.

==========================  ================================================================================
reason                      rule (thresholds in :class:`QualityConfig`)
==========================  ================================================================================
``truncated``               the engine stopped at the token limit (``finish_reason == "length"``)
``bad_structure``           not ``<think>reasoning</think>`` followed by a ``\\boxed{}`` answer: no ``<think>``,
                            no ``</think>``, more than one of either (nested or repeated), ``</think>``
                            before ``<think>``, text before ``<think>``, or no ``\\boxed{}`` after ``</think>``.
                            ``structure="lenient"`` (for teachers that do not write tags, e.g. small
                            instruct models) accepts a solution with *no tag at all* that ends in a final
                            answer: with a ``\\boxed{}``, the text before the line holding the last box is
                            the think section and that line the answer part; without one, an answer stated
                            as "the answer is x" / ``#### x`` / ``A: x`` / ``<answer>x</answer>`` makes
                            the whole text the think section and ``\\boxed{x}`` the answer part
                            (:func:`split_solution`, :func:`to_think_format` writes the canonical form).
                            Any tag at all (a lone, repeated or misplaced one) is judged strictly in both
                            modes, and every other filter applies unchanged.
``repetition``              a degenerate loop: (a) one word n-gram (``ngram_n`` words) makes up more than
                            ``max_ngram_share`` of all n-grams (text with at least ``min_ngrams`` n-grams);
                            or (b) a block of 1..``max_block_units`` consecutive sentences/lines repeated
                            ``max_block_repeats`` or more times in a row (block >= ``min_block_chars``)
``length_out_of_range``     tokens outside [``min_tokens``, ``max_tokens``] or characters outside
                            [``min_chars``, ``max_chars``] (a bound of ``None`` is not checked)
``language_mixing``         letters of a script that neither English math text (Latin, Greek) nor the
                            problem statement uses, e.g. CJK in an English solution: their share of all
                            letters > ``max_foreign_share`` and at least ``min_foreign_chars`` of them
``answer_leak``             the answer without reasoning: the think section has fewer than
                            ``min_think_words`` tokens (words, numbers, symbols), or the final answer appears among its first
                            ``lead_words`` words and fewer than ``min_words_after_answer`` words follow it
==========================  ================================================================================

Scripts are read from Unicode character names (``unicodedata.name``: ``LATIN SMALL LETTER A`` -> Latin,
``CJK UNIFIED IDEOGRAPH-4E2D`` -> CJK); kana, hangul, full-width forms count as CJK; mathematical
alphanumeric symbols (``𝑥``) count as Latin.  Words are whitespace-separated tokens.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Sequence

from curation.verify import extract_answer, last_boxed, normalize_answer

__all__ = [
    "Issue",
    "QualityConfig",
    "SplitSolution",
    "REASONS",
    "LENIENT_ANSWER_RULES",
    "split_solution",
    "check_truncated",
    "check_structure",
    "check_repetition",
    "check_length",
    "check_language_mixing",
    "check_answer_leak",
    "check_solution",
    "script_counts",
    "to_think_format",
]

# Order in which check_solution applies the filters (= priority of the reported reason).
REASONS = (
    "truncated",
    "bad_structure",
    "repetition",
    "length_out_of_range",
    "language_mixing",
    "answer_leak",
)

THINK_OPEN = "<think>"
# Final-answer statements the lenient structure accepts when there is no \boxed{} (not the "bare" rule: a
# one-line reply is no reasoning).
LENIENT_ANSWER_RULES = ("answer_tag", "gsm8k", "answer_is", "a_line")
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class Issue:
    """Why a solution fails a filter: ``reason`` (a stable code from :data:`REASONS`) and a readable
    ``detail`` with the measured value and the threshold."""

    reason: str
    detail: str


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the filters (defaults suit English math CoT; see the module table)."""

    structure: str = "strict"  # strict | lenient
    # repetition
    ngram_n: int = 4
    max_ngram_share: float = 0.2
    min_ngrams: int = 40
    max_block_units: int = 4
    max_block_repeats: int = 3
    min_block_chars: int = 12
    # length (tokens as counted by the engine's tokenizer; chars of the whole solution)
    min_tokens: int | None = None
    max_tokens: int | None = None
    min_chars: int | None = 40
    max_chars: int | None = None
    # language mixing
    allowed_scripts: tuple[str, ...] = ("LATIN", "GREEK")
    max_foreign_share: float = 0.01
    min_foreign_chars: int = 3
    # answer leak
    min_think_words: int = 10
    lead_words: int = 5
    min_words_after_answer: int = 10

    def __post_init__(self) -> None:
        if self.structure not in ("strict", "lenient"):
            raise ValueError(f"structure must be 'strict' or 'lenient', got {self.structure!r}")
        if not 0 < self.max_ngram_share <= 1:
            raise ValueError(f"max_ngram_share must lie in (0, 1], got {self.max_ngram_share}")
        if not 0 <= self.max_foreign_share < 1:
            raise ValueError(f"max_foreign_share must lie in [0, 1), got {self.max_foreign_share}")
        if self.max_block_repeats < 2:
            raise ValueError(f"max_block_repeats must be >= 2, got {self.max_block_repeats}")

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------- structure


@dataclass(frozen=True)
class SplitSolution:
    """A solution cut into its think section and what follows (the answer part).  ``synthesized``: the
    text had no tags and the split was made by the lenient rule (reasoning = text before the last
    ``\\boxed{}`` line)."""

    think: str
    answer_part: str
    synthesized: bool = False


def split_solution(text: str, structure: str = "strict") -> tuple[SplitSolution | None, str | None]:
    """``(SplitSolution, None)`` for a well-formed solution, else ``(None, what is wrong)``.

    Strict: exactly one ``<think>`` (only whitespace before it), exactly one ``</think>`` after it, and a
    non-empty ``\\boxed{}`` in the text after ``</think>``.  Lenient additionally accepts a solution with
    neither tag: if it has a ``\\boxed{}``, the line holding the last one is the answer part and everything
    before that line the think section (which must not be empty); otherwise an answer found by the rules
    :data:`LENIENT_ANSWER_RULES` of :func:`curation.verify.extract.extract_answer` makes the whole text the think
    section and ``\\boxed{answer}`` the (synthesized) answer part.
    """
    n_open = text.count(THINK_OPEN)
    n_close = text.count(THINK_CLOSE)
    if n_open == 0 and n_close == 0:
        if structure != "lenient":
            return None, "no <think> section"
        box = last_boxed(text)
        if box is None or not box.strip():
            found = extract_answer(text, rules=LENIENT_ANSWER_RULES).answer
            if not found:
                return None, "no <think> section and no final answer (\\boxed{}, 'the answer is x', #### x)"
            return SplitSolution(text.strip(), f"\\boxed{{{found}}}", synthesized=True), None
        pos = text.rfind("\\boxed")
        line_start = text.rfind("\n", 0, pos) + 1
        think = text[:line_start].strip()
        if not think:
            # the box sits on the first line: split the line before the sentence carrying the box
            sent = max(text.rfind(". ", 0, pos), text.rfind("; ", 0, pos))
            if sent <= 0:
                return None, "no reasoning before the \\boxed{} answer"
            line_start = sent + 2
            think = text[:line_start].strip()
        return SplitSolution(think, text[line_start:].strip(), synthesized=True), None
    if n_open != 1 or n_close != 1:
        return None, f"expected one <think> and one </think>, found {n_open} and {n_close} (nested or repeated)"
    i, j = text.find(THINK_OPEN), text.find(THINK_CLOSE)
    if j < i:
        return None, "</think> comes before <think>"
    if text[:i].strip():
        return None, f"text before <think>: {text[:i].strip()[:40]!r}"
    think = text[i + len(THINK_OPEN) : j].strip()
    after = text[j + len(THINK_CLOSE) :]
    box = last_boxed(after)
    if box is None or not box.strip():
        return None, "no \\boxed{} answer after </think>"
    return SplitSolution(think, after.strip()), None


def to_think_format(text: str, structure: str = "strict") -> str:
    """The solution in canonical form ``<think>\\nreasoning\\n</think>\\n\\nanswer part`` (the form written to
    the SFT set).  A strict solution is returned unchanged; a lenient one gets its tags synthesized.
    Raises ``ValueError`` for a malformed solution."""
    split, err = split_solution(text, structure)
    if split is None:
        raise ValueError(f"malformed solution: {err}")
    if not split.synthesized:
        return text.strip()
    return f"{THINK_OPEN}\n{split.think}\n{THINK_CLOSE}\n\n{split.answer_part}"


def check_truncated(finish_reason: str | None) -> Issue | None:
    """``truncated`` when generation stopped at the token limit (``finish_reason == "length"``)."""
    if finish_reason == "length":
        return Issue("truncated", "generation stopped at the max-tokens limit (finish_reason=length)")
    return None


def check_structure(text: str, structure: str = "strict") -> Issue | None:
    """``bad_structure`` unless the solution is ``<think>...</think>`` then a ``\\boxed{}`` answer
    (see :func:`split_solution`; ``structure="lenient"`` also accepts untagged reasoning + final box)."""
    split, err = split_solution(text, structure)
    return Issue("bad_structure", err or "") if split is None else None


# --------------------------------------------------------------------------------------------- repetition

_UNIT_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_ENUM = re.compile(r"^(?:\(?\d{1,3}[.):]|[-*\u2022]|step\s+\d{1,3}\s*[.:)])\s*", re.IGNORECASE)


def _units(text: str) -> list[str]:
    """Sentences / lines, whitespace-normalised, list numbering (``1.``, ``2)``, ``-``, ``Step 3:``) removed,
    empty ones dropped: ``1. Add 5 and 7.`` and ``2. Add 5 and 7.`` are the same unit."""
    out = []
    for u in _UNIT_SPLIT.split(text):
        u = _ENUM.sub("", " ".join(u.split()))
        if u:
            out.append(u)
    return out


def _top_ngram_share(words: Sequence[str], n: int) -> tuple[float, tuple[str, ...] | None, int]:
    """``(share, ngram, total)``: share = count of the most frequent word n-gram / number of n-grams."""
    total = len(words) - n + 1
    if total <= 0:
        return 0.0, None, 0
    counts = Counter(tuple(words[i : i + n]) for i in range(total))
    gram, c = counts.most_common(1)[0]
    return c / total, gram, total


def _longest_block_run(units: Sequence[str], max_period: int) -> tuple[int, int, int]:
    """``(repeats, period, start)`` of the longest run of a block of ``period`` consecutive units repeated
    back to back (``u[i] == u[i + period]`` for a stretch of indices); repeats = stretch / period + 1."""
    best = (1, 0, 0)
    n = len(units)
    for p in range(1, max_period + 1):
        run = 0
        for i in range(n - p):
            if units[i] == units[i + p]:
                run += 1
                reps = run // p + 1
                if reps > best[0]:
                    best = (reps, p, i - run + 1)
            else:
                run = 0
    return best


def check_repetition(
    text: str,
    *,
    ngram_n: int = 4,
    max_ngram_share: float = 0.2,
    min_ngrams: int = 40,
    max_block_units: int = 4,
    max_block_repeats: int = 3,
    min_block_chars: int = 12,
) -> Issue | None:
    """``repetition`` for degenerate loops.

    (a) n-gram share: ``share = max_g count(g) / (W - n + 1)`` over word n-grams ``g`` of the ``W`` words;
    a loop with a period of ``P`` words gives every n-gram of the loop a share near ``1 / P``, ordinary
    prose stays well under 0.05.  Only measured with at least ``min_ngrams`` n-grams.
    (b) block runs: the text is cut into sentences/lines; a block of 1..``max_block_units`` consecutive
    units that repeats ``max_block_repeats`` times or more back to back (and has at least
    ``min_block_chars`` characters, so ``"= 5."`` lines of a table do not count) is a loop of long period.
    """
    words = text.split()
    share, gram, total = _top_ngram_share(words, ngram_n)
    if total >= min_ngrams and share > max_ngram_share:
        return Issue(
            "repetition",
            f"the {ngram_n}-gram {' '.join(gram or ())!r} is {share:.0%} of all {total} {ngram_n}-grams "
            f"(max {max_ngram_share:.0%})",
        )
    units = _units(text)
    reps, period, start = _longest_block_run(units, max_block_units)
    if reps >= max_block_repeats:
        block = " ".join(units[start : start + period])
        if len(block) >= min_block_chars:
            return Issue(
                "repetition",
                f"a block of {period} sentence(s) repeated {reps} times in a row (max {max_block_repeats - 1}): "
                f"{block[:60]!r}",
            )
    return None


# --------------------------------------------------------------------------------------------- length


def check_length(
    text: str,
    num_tokens: int | None = None,
    *,
    min_tokens: int | None = None,
    max_tokens: int | None = None,
    min_chars: int | None = None,
    max_chars: int | None = None,
) -> Issue | None:
    """``length_out_of_range`` when the token count (if known) or the character count lies outside the
    configured bounds (inclusive; ``None`` = unbounded)."""
    if num_tokens is not None:
        if min_tokens is not None and num_tokens < min_tokens:
            return Issue("length_out_of_range", f"{num_tokens} tokens < min {min_tokens}")
        if max_tokens is not None and num_tokens > max_tokens:
            return Issue("length_out_of_range", f"{num_tokens} tokens > max {max_tokens}")
    n = len(text)
    if min_chars is not None and n < min_chars:
        return Issue("length_out_of_range", f"{n} characters < min {min_chars}")
    if max_chars is not None and n > max_chars:
        return Issue("length_out_of_range", f"{n} characters > max {max_chars}")
    return None


# --------------------------------------------------------------------------------------------- language

_SCRIPT_ALIASES = {
    "CJK": "CJK",
    "HIRAGANA": "CJK",
    "KATAKANA": "CJK",
    "HANGUL": "CJK",
    "FULLWIDTH": "CJK",
    "HALFWIDTH": "CJK",
    "IDEOGRAPHIC": "CJK",
    "BOPOMOFO": "CJK",
    "MATHEMATICAL": "LATIN",  # 𝑥, 𝐀: mathematical alphanumeric symbols
    "SCRIPT": "LATIN",  # ℓ SCRIPT SMALL L
    "DOUBLE-STRUCK": "LATIN",  # ℝ
    "BLACK-LETTER": "LATIN",
    "PLANCK": "LATIN",
    "MODIFIER": "LATIN",
    "SUPERSCRIPT": "LATIN",
    "SUBSCRIPT": "LATIN",
}


@lru_cache(maxsize=65536)
def _script(ch: str) -> str:
    """Script group of a letter from its Unicode name (first word, with the aliases above)."""
    try:
        name = unicodedata.name(ch)
    except ValueError:
        return "UNKNOWN"
    head = name.split(" ", 1)[0]
    if head in _SCRIPT_ALIASES:
        return _SCRIPT_ALIASES[head]
    if name.startswith("OLD ") or name.startswith("LATIN"):
        return "LATIN"
    return head


def script_counts(text: str) -> Counter:
    """Number of letters (``str.isalpha``) per script group in ``text``."""
    return Counter(_script(c) for c in text if c.isalpha())


def check_language_mixing(
    text: str,
    problem: str | None = None,
    *,
    allowed_scripts: Sequence[str] = ("LATIN", "GREEK"),
    max_foreign_share: float = 0.01,
    min_foreign_chars: int = 3,
) -> Issue | None:
    """``language_mixing`` when letters of unexpected scripts make up more than ``max_foreign_share`` of
    all letters (and number at least ``min_foreign_chars``).  Expected scripts = ``allowed_scripts`` plus
    every script used in the problem statement (a Chinese problem may be answered in Chinese)."""
    counts = script_counts(text)
    total = sum(counts.values())
    if not total:
        return None
    allowed = set(allowed_scripts)
    if problem:
        allowed |= {s for s, c in script_counts(problem).items() if c >= 2}
    foreign = {s: c for s, c in counts.items() if s not in allowed}
    n_foreign = sum(foreign.values())
    share = n_foreign / total
    if n_foreign >= min_foreign_chars and share > max_foreign_share:
        which = ", ".join(f"{s} {c}" for s, c in sorted(foreign.items(), key=lambda kv: -kv[1]))
        return Issue(
            "language_mixing",
            f"{share:.1%} of {total} letters from unexpected scripts ({which}; max {max_foreign_share:.1%})",
        )
    return None


# --------------------------------------------------------------------------------------------- answer leak

_WORD_STRIP = "$.,;:!?()[]{}\"'`*"
# Reasoning length unit of the answer-leak check: words, numbers and single symbols, so compact working
# such as "36/3=12" counts as 5 tokens rather than one whitespace word.
_REASONING_TOKEN = re.compile(r"[^\W\d_]+|\d+(?:[.,]\d+)*|[^\w\s]")


def _word_key(w: str) -> str:
    return normalize_answer(w.strip(_WORD_STRIP)).lower()


def check_answer_leak(
    think: str,
    answer: str | None,
    *,
    min_think_words: int = 10,
    lead_words: int = 5,
    min_words_after_answer: int = 10,
) -> Issue | None:
    """``answer_leak``: the final answer given without reasoning.

    (a) the think section has fewer than ``min_think_words`` tokens (words, numbers and single symbols:
    ``36/3=12`` is 5 tokens); or (b) the final ``answer`` (the
    boxed content, compared word-wise after normalisation) occurs among the first ``lead_words`` words of
    the think section and fewer than ``min_words_after_answer`` words follow its first occurrence - the
    answer was stated up front and not worked out.
    """
    n_tokens = len(_REASONING_TOKEN.findall(think))
    if n_tokens < min_think_words:
        return Issue("answer_leak", f"think section has {n_tokens} word/number/symbol tokens (min {min_think_words})")
    words = think.split()
    if answer:
        target = [_word_key(w) for w in answer.split()]
        target = [t for t in target if t]
        if target:
            keys = [_word_key(w) for w in words[: lead_words + len(target)]]
            for i in range(min(lead_words, len(keys) - len(target) + 1)):
                if keys[i : i + len(target)] == target:
                    after = len(words) - (i + len(target))
                    if after < min_words_after_answer:
                        return Issue(
                            "answer_leak",
                            f"answer {answer!r} stated at word {i + 1} of the think section with only "
                            f"{after} words after it (min {min_words_after_answer})",
                        )
                    break
    return None


# --------------------------------------------------------------------------------------------- all together


def check_solution(
    text: str,
    *,
    finish_reason: str | None = None,
    num_tokens: int | None = None,
    problem: str | None = None,
    config: QualityConfig | None = None,
) -> list[Issue]:
    """Every issue of one generated solution, in :data:`REASONS` order (empty list = passes all filters).
    The answer-leak check needs the think section, so it runs only on well-structured solutions."""
    cfg = config or QualityConfig()
    issues: list[Issue] = []
    for issue in (
        check_truncated(finish_reason),
        check_structure(text, cfg.structure),
        check_repetition(
            text,
            ngram_n=cfg.ngram_n,
            max_ngram_share=cfg.max_ngram_share,
            min_ngrams=cfg.min_ngrams,
            max_block_units=cfg.max_block_units,
            max_block_repeats=cfg.max_block_repeats,
            min_block_chars=cfg.min_block_chars,
        ),
        check_length(
            text,
            num_tokens,
            min_tokens=cfg.min_tokens,
            max_tokens=cfg.max_tokens,
            min_chars=cfg.min_chars,
            max_chars=cfg.max_chars,
        ),
        check_language_mixing(
            text,
            problem,
            allowed_scripts=cfg.allowed_scripts,
            max_foreign_share=cfg.max_foreign_share,
            min_foreign_chars=cfg.min_foreign_chars,
        ),
    ):
        if issue is not None:
            issues.append(issue)
    split, _ = split_solution(text, cfg.structure)
    if split is not None:
        leak = check_answer_leak(
            split.think,
            last_boxed(split.answer_part),
            min_think_words=cfg.min_think_words,
            lead_words=cfg.lead_words,
            min_words_after_answer=cfg.min_words_after_answer,
        )
        if leak is not None:
            issues.append(leak)
    return issues
