"""Reward functions for TRL's ``GRPOTrainer`` (and anything with the same calling convention).

Every reward is a callable ``f(completions, **kwargs) -> list[float | None]``:

- ``completions``: plain strings, or conversational completions ``[{"role": "assistant", "content": c}]``
  where ``c`` is a string or a list of parts (``{"type": "text", "text": ...}``; image parts are ignored),
  so multimodal rows work unchanged;
- ``kwargs``: the dataset columns, one value per completion (``answer``, ``options``, ``images``,
  ``prompts``...) plus TRL's ``completion_ids`` (token ids of each completion), ``trainer_state``,
  ``log_extra`` and ``log_metric``. Unknown keyword arguments are ignored.

``None`` means "no reward for this completion" (TRL turns it into NaN and leaves it out of the weighted sum
with ``nansum``). Rewards are module-level callable classes rather than closures, so they pickle (TRL's
async rollout workers send reward functions to other processes); each instance has a ``__name__`` that
TRL uses as its logging key (``rewards/<name>/mean``).

Recipes name rewards through :data:`REWARDS` and :func:`build_reward_funcs`::

    rewards: {accuracy: 1.0, format: {weight: 0.5}, length: {weight: 0.5, budget: 1024}}
    rewards: {accuracy: {weight: 1.0, lenient: true}}    # the lenient last_math extraction rule on

gives ``reward_funcs`` and ``reward_weights`` for ``GRPOTrainer`` / ``GRPOConfig``.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from curation.verify import last_boxed, resolve_rules

__all__ = [
    "AccuracyReward",
    "CombinedReward",
    "FormatReward",
    "LengthReward",
    "REWARDS",
    "RepetitionPenaltyReward",
    "accuracy_reward",
    "build_reward_funcs",
    "combine_rewards",
    "completion_text",
    "format_reward",
    "make_accuracy_reward",
    "make_format_reward",
    "make_length_reward",
    "make_repetition_penalty_reward",
]

RewardFunc = Callable[..., list]


# ---------------------------------------------------------------------------------------------------------
# completions -> text


def completion_text(completion: Any) -> str:
    """Plain text of one completion: a string, a message dict, or a list of messages whose ``content``
    is a string or a list of parts (text parts joined, image parts skipped)."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        content = completion.get("content", completion.get("text"))
        if isinstance(content, str):
            return content
        if isinstance(content, (list, tuple)):
            return "".join(
                (p.get("text") or "") if isinstance(p, dict) else (p if isinstance(p, str) else "") for p in content
            )
        return "" if content is None else str(content)
    if isinstance(completion, (list, tuple)):
        return "".join(completion_text(m) for m in completion)
    return str(completion)


def _texts(completions: Sequence[Any]) -> list[str]:
    return [completion_text(c) for c in completions]


def _column(kwargs: dict, name: str, n: int) -> list | None:
    """A dataset column from TRL's kwargs (one value per completion), or ``None`` when absent."""
    col = kwargs.get(name)
    if col is None:
        return None
    col = list(col)
    if len(col) != n:
        raise ValueError(f"column {name!r} has {len(col)} values for {n} completions")
    return col


def _options_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return None
    try:
        opts = [str(o) for o in value]
    except TypeError:
        return None
    return opts or None


# ---------------------------------------------------------------------------------------------------------
# accuracy


class AccuracyReward:
    """``R_acc(y) = 1`` if the final answer extracted from ``y`` verifies against the gold answer, else
    ``0``; ``None`` when the gold answer cannot be checked automatically
    (:func:`curation.verify.parse_gold` is ``None``: empty, proof, open-ended).

    The gold comes from the ``answer`` column (``answer_key``); without it, from ``solution`` through its
    last ``\\boxed{}`` (TRL's convention). Multiple-choice ``options`` are used when present. Verification
    runs in the shared worker pool (:func:`curation.verify.get_verifier`) with a hard per-item deadline
    of ``timeout`` seconds: a timeout, an error or no extractable answer give ``0``. Extraction is strict by
    default (a final-answer marker is required: ``\\boxed{}``, ``<answer>``, "the answer is", ...);
    ``lenient=True`` (recipe: ``accuracy: {weight: 1.0, lenient: true}``) adds the ``last_math`` rule (the last
    math expression or number of the final sentence), ``rules`` picks the rule list
    (:data:`curation.verify.RULES`). When TRL passes
    ``log_extra`` / ``log_metric``, the extracted answers and verdicts go to the completions table and the
    share of each verdict to the metrics.
    """

    __name__ = "accuracy_reward"

    def __init__(self, timeout: float = 5.0, answer_key: str = "answer", options_key: str = "options",
                 rules: Sequence[str] | None = None, lenient: bool = False):
        self.timeout = float(timeout)
        self.answer_key = answer_key
        self.options_key = options_key
        self.rules = resolve_rules(rules, lenient)
        self.lenient = "last_math" in self.rules

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        from curation.verify import get_verifier, parse_gold

        n = len(completions)
        golds = _column(kwargs, self.answer_key, n)
        if golds is None:
            solutions = _column(kwargs, "solution", n)
            if solutions is None:
                raise ValueError(
                    f"accuracy_reward needs a {self.answer_key!r} (or 'solution') column in the dataset; "
                    f"got columns {sorted(k for k in kwargs if not k.startswith('log_'))}"
                )
            golds = [last_boxed(str(s)) if s is not None else None for s in solutions]
        options = _column(kwargs, self.options_key, n) or [None] * n
        options = [_options_list(o) for o in options]
        texts = _texts(completions)
        rewards: list[float | None] = [None] * n
        todo = [i for i in range(n) if golds[i] is not None and parse_gold(str(golds[i]), options[i]) is not None]
        verdicts = get_verifier().verify_batch(
            [str(golds[i]) for i in todo], [texts[i] for i in todo], options=[options[i] for i in todo],
            timeout=self.timeout, rules=self.rules,
        ) if todo else []
        statuses: list[str] = ["ungradable"] * n
        extracted: list[str | None] = [None] * n
        for i, v in zip(todo, verdicts):
            rewards[i] = 1.0 if v.correct else 0.0
            statuses[i] = v.status
            extracted[i] = v.extracted
        log_extra = kwargs.get("log_extra")
        if callable(log_extra):
            log_extra("extracted_answer", extracted)
            log_extra("verdict", statuses)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and n:
            for status in ("no_answer", "timeout", "error", "ungradable"):
                log_metric(f"accuracy/{status}_frac", statuses.count(status) / n)
        return rewards


def make_accuracy_reward(timeout: float = 5.0, answer_key: str = "answer", options_key: str = "options",
                         rules: Sequence[str] | None = None, lenient: bool = False) -> AccuracyReward:
    """Factory of :class:`AccuracyReward` (registry name ``accuracy``; options ``timeout``, ``answer_key``,
    ``options_key``, ``rules``, ``lenient``)."""
    return AccuracyReward(timeout=timeout, answer_key=answer_key, options_key=options_key, rules=rules,
                          lenient=lenient)


accuracy_reward = AccuracyReward()


# ---------------------------------------------------------------------------------------------------------
# format


class FormatReward:
    """``R_fmt(y) = 1`` if ``y`` is ``<think>reasoning</think>`` followed by a final answer, else ``0``.

    Precisely (``open``/``close`` = ``think_tags``): after optional leading whitespace ``y`` starts with
    ``open`` (unless ``require_open=False``, for chat templates that put the opening tag in the prompt);
    ``open`` occurs at most once and ``close`` exactly once; the reasoning between them is not blank; and
    the text after ``close`` holds the answer: by default a balanced ``\\boxed{...}`` with non-blank content,
    or, with ``answer_pattern``, a match of that regular expression (``re.search``, DOTALL). A boxed answer
    that only appears inside the reasoning does not count.
    """

    __name__ = "format_reward"

    def __init__(self, think_tags: tuple[str, str] = ("<think>", "</think>"), answer_pattern: str | None = None,
                 require_open: bool = True):
        if len(think_tags) != 2 or not all(isinstance(t, str) and t for t in think_tags):
            raise ValueError(f"think_tags must be two non-empty strings, got {think_tags!r}")
        self.think_tags = (think_tags[0], think_tags[1])
        self.answer_pattern = answer_pattern
        self.require_open = require_open
        self._answer_re = re.compile(answer_pattern, re.DOTALL) if answer_pattern else None

    def score(self, text: str) -> float:
        open_tag, close_tag = self.think_tags
        body = text.lstrip()
        n_open = body.count(open_tag)
        if self.require_open:
            if not body.startswith(open_tag) or n_open != 1:
                return 0.0
            body = body[len(open_tag):]
        elif n_open > 1 or (n_open == 1 and not body.startswith(open_tag)):
            return 0.0
        elif n_open == 1:
            body = body[len(open_tag):]
        if body.count(close_tag) != 1:
            return 0.0
        reasoning, answer = body.split(close_tag, 1)
        if not reasoning.strip():
            return 0.0
        if self._answer_re is not None:
            return 1.0 if self._answer_re.search(answer) else 0.0
        boxed = last_boxed(answer)
        return 1.0 if boxed is not None and boxed.strip() else 0.0

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return [self.score(t) for t in _texts(completions)]


def make_format_reward(think_tags: tuple[str, str] | list[str] = ("<think>", "</think>"),
                       answer_pattern: str | None = None, require_open: bool = True) -> FormatReward:
    """Factory of :class:`FormatReward` (registry name ``format``); e.g.
    ``make_format_reward(answer_pattern=r"<answer>.+?</answer>\\s*$")`` for R1-style answer tags."""
    return FormatReward(think_tags=tuple(think_tags), answer_pattern=answer_pattern,  # type: ignore[arg-type]
                        require_open=require_open)


format_reward = FormatReward()


# ---------------------------------------------------------------------------------------------------------
# efficient length (ReVisual-R1)


class LengthReward:
    """Efficient-length reward of ReVisual-R1:

        ``R_len(y) = clip(alpha * (L_budget - L(y)) + delta, 0, 1)``

    with ``alpha = 0.005``, ``delta = 0.5`` by default: a completion exactly at the budget gets ``delta``;
    each token under (over) the budget adds (removes) ``alpha``; ``L <= L_budget - (1 - delta) / alpha``
    gives 1 and ``L >= L_budget + delta / alpha`` gives 0 (with the defaults: 100 tokens under / over).

    ``L(y)`` counts tokens: TRL's ``completion_ids`` when given (the trainer always passes them);
    otherwise the ``tokenizer`` given to the factory (an object with ``encode``/``__call__``, or a path or
    model id loaded with ``AutoTokenizer``); otherwise whitespace-separated words (``len(text.split())``),
    a rough stand-in for tokens.
    """

    __name__ = "length_reward"

    def __init__(self, budget: int, alpha: float = 0.005, delta: float = 0.5, tokenizer: Any = None):
        if budget is None or int(budget) <= 0:
            raise ValueError(f"length reward: budget must be a positive number of tokens, got {budget!r}")
        if alpha <= 0:
            raise ValueError(f"length reward: alpha must be positive, got {alpha!r}")
        self.budget = int(budget)
        self.alpha = float(alpha)
        self.delta = float(delta)
        self.tokenizer = tokenizer

    def _tokenizer(self) -> Any:
        if isinstance(self.tokenizer, str):
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer)
        return self.tokenizer

    def lengths(self, completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None) -> list[int]:
        if completion_ids is not None:
            if len(completion_ids) != len(completions):
                raise ValueError(f"{len(completion_ids)} completion_ids for {len(completions)} completions")
            return [len(ids) for ids in completion_ids]
        texts = _texts(completions)
        tok = self._tokenizer()
        if tok is not None:
            if hasattr(tok, "encode"):
                try:
                    return [len(tok.encode(t, add_special_tokens=False)) for t in texts]
                except TypeError:  # tokenizers.Tokenizer.encode has no add_special_tokens keyword
                    enc = [tok.encode(t) for t in texts]
                    return [len(getattr(e, "ids", e)) for e in enc]
            return [len(tok(t)["input_ids"]) for t in texts]
        return [len(t.split()) for t in texts]

    def value(self, length: int) -> float:
        """``clip(alpha * (L_budget - L) + delta, 0, 1)``."""
        return min(1.0, max(0.0, self.alpha * (self.budget - length) + self.delta))

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return [self.value(n) for n in self.lengths(completions, kwargs.get("completion_ids"))]


def make_length_reward(budget: int, alpha: float = 0.005, delta: float = 0.5, tokenizer: Any = None) -> LengthReward:
    """Factory of :class:`LengthReward` (registry name ``length``)."""
    return LengthReward(budget=budget, alpha=alpha, delta=delta, tokenizer=tokenizer)


# ---------------------------------------------------------------------------------------------------------
# repetition penalty (open-r1)


class RepetitionPenaltyReward:
    """n-gram repetition penalty as in open-r1 (Demystifying Long CoT, App. C.2):

        ``R_rep(y) = max_penalty * (1 - #unique n-grams / #n-grams)``

    over the lower-cased whitespace words of ``y`` (``unit="words"``, open-r1's choice) or over TRL's
    ``completion_ids`` (``unit="tokens"``, TRL's choice; falls back to words when no ids are passed).
    A completion shorter than ``ngram_size`` units, or without repeats, gets ``0``; a fully repetitive one
    approaches ``max_penalty`` (<= 0).
    """

    __name__ = "repetition_penalty_reward"

    def __init__(self, ngram_size: int = 3, max_penalty: float = -1.0, unit: str = "words"):
        if max_penalty > 0:
            raise ValueError(f"max_penalty {max_penalty} should not be positive")
        if int(ngram_size) < 1:
            raise ValueError(f"ngram_size must be >= 1, got {ngram_size}")
        if unit not in ("words", "tokens"):
            raise ValueError(f"unit must be 'words' or 'tokens', got {unit!r}")
        self.ngram_size = int(ngram_size)
        self.max_penalty = float(max_penalty)
        self.unit = unit

    def penalty(self, units: Sequence[Any]) -> float:
        n = self.ngram_size
        if len(units) < n:
            return 0.0
        ngrams = list(zip(*[units[i:] for i in range(n)]))
        scaling = 1.0 - len(set(ngrams)) / len(ngrams)
        return scaling * self.max_penalty if scaling else 0.0

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        ids = kwargs.get("completion_ids")
        if self.unit == "tokens" and ids is not None:
            return [self.penalty(list(x)) for x in ids]
        return [self.penalty(t.lower().split()) for t in _texts(completions)]


def make_repetition_penalty_reward(ngram_size: int = 3, max_penalty: float = -1.0,
                                   unit: str = "words") -> RepetitionPenaltyReward:
    """Factory of :class:`RepetitionPenaltyReward` (registry name ``repetition``)."""
    return RepetitionPenaltyReward(ngram_size=ngram_size, max_penalty=max_penalty, unit=unit)


# ---------------------------------------------------------------------------------------------------------
# combination and registry


class CombinedReward:
    """``R(y) = sum_i w_i * r_i(y)`` over the functions whose ``r_i(y)`` is not ``None``.

    ``None`` handling (same as TRL's ``nansum`` over reward columns): a ``None`` term is left out, the
    others still count (weights are not renormalised); if every term is ``None`` the result is ``None``.
    Use it where one callable is needed; with ``GRPOTrainer`` prefer passing the functions and weights
    separately (:func:`build_reward_funcs`) so each one is logged.
    """

    def __init__(self, parts: Sequence[tuple[RewardFunc, float]], name: str = "combined_reward"):
        if not parts:
            raise ValueError("combine_rewards: give at least one (function, weight) pair")
        self.parts = [(fn, float(w)) for fn, w in parts]
        self.__name__ = name

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        n = len(completions)
        total: list[float | None] = [None] * n
        for fn, w in self.parts:
            values = fn(completions=completions, **kwargs)
            if len(values) != n:
                name = getattr(fn, "__name__", type(fn).__name__)
                raise ValueError(f"reward {name} returned {len(values)} values for {n} completions")
            for i, v in enumerate(values):
                if v is None or v != v:  # None or NaN
                    continue
                total[i] = (total[i] or 0.0) + w * float(v)
        return total


def combine_rewards(parts: Sequence[tuple[RewardFunc, float]], name: str = "combined_reward") -> CombinedReward:
    """Weighted sum of reward functions (see :class:`CombinedReward` for ``None`` handling)."""
    return CombinedReward(parts, name=name)


REWARDS: dict[str, Callable[..., RewardFunc]] = {
    "accuracy": make_accuracy_reward,
    "format": make_format_reward,
    "length": make_length_reward,
    "repetition": make_repetition_penalty_reward,
}


def build_reward_funcs(spec: dict[str, dict | float | int]) -> tuple[list[RewardFunc], list[float]]:
    """Reward functions and weights from a recipe mapping, e.g.
    ``{accuracy: 1.0, format: {weight: 0.5}, length: {weight: 0.5, budget: 1024}}``.

    A number is the weight (factory defaults); a mapping gives ``weight`` (default 1.0) and the factory's
    keyword arguments. Returns ``(reward_funcs, reward_weights)`` for ``GRPOTrainer(reward_funcs=...)`` and
    ``GRPOConfig(reward_weights=...)``. Unknown names or options raise ``ValueError`` naming them.
    """
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"rewards: expected a non-empty mapping like {{accuracy: 1.0}}, got {spec!r}")
    funcs: list[RewardFunc] = []
    weights: list[float] = []
    for name, value in spec.items():
        if name not in REWARDS:
            raise ValueError(f"rewards: unknown reward {name!r}; known: {sorted(REWARDS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float, dict)) or value is None:
            raise ValueError(f"rewards.{name}: expected a weight or a mapping, got {value!r}")
        options = dict(value) if isinstance(value, dict) else {"weight": value}
        weight = options.pop("weight", 1.0)
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise ValueError(f"rewards.{name}.weight: expected a number, got {weight!r}") from None
        try:
            fn = REWARDS[name](**options)
        except TypeError as e:
            import inspect

            allowed = [p for p in inspect.signature(REWARDS[name]).parameters]
            raise ValueError(f"rewards.{name}: {e}; allowed options: weight, {', '.join(allowed)}") from None
        funcs.append(fn)
        weights.append(weight)
    return funcs, weights
