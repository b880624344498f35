"""The rollout-engine interface shared by the HF and vLLM engines.

An engine turns conversational requests into ``n`` sampled completions each::

    with make_engine("auto", model_dir) as engine:
        outs = engine.generate([GenRequest([{"role": "user", "content": "What is 3 + 4?"}])],
                               SamplingConfig(n=4, temperature=0.8, max_tokens=128, seed=0))
        outs[0][0].text, outs[0][0].num_tokens, outs[0][0].finish_reason

Seeding (both engines): each request gets its own seed, ``GenRequest.seed`` when given, otherwise
:func:`request_seed` = a hash of ``SamplingConfig.seed`` and the request's content (messages and image
bytes).  A request's samples therefore do not depend on its position in the list or on the other requests
(up to floating-point effects of batching, see each engine's notes).  Identical requests in one call get
identical samples; ask for more samples with ``n`` instead of repeating a request.
"""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

FinishReason = Literal["stop", "length"]
ProgressCallback = Callable[[int, int], None]  # (requests done, requests total)


@dataclass
class GenRequest:
    """One prompt: chat messages (``content`` a string or a list of ``{"type": "text"|"image", ...}`` parts)
    and the PIL images for its ``{"type": "image"}`` parts, in order."""

    prompt_messages: list[dict]
    images: list[Image.Image] | None = None
    seed: int | None = None  # overrides the derived per-request seed

    def __post_init__(self) -> None:
        if not isinstance(self.prompt_messages, list) or not self.prompt_messages:
            raise ValueError("GenRequest.prompt_messages must be a non-empty list of chat messages")
        for i, m in enumerate(self.prompt_messages):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise ValueError(f"GenRequest.prompt_messages[{i}] must be a dict with 'role' and 'content': {m!r}")
        n_parts = count_image_parts(self.prompt_messages)
        n_images = len(self.images or [])
        if n_parts != n_images:
            raise ValueError(
                f"GenRequest has {n_parts} image part(s) in its messages but {n_images} image(s) attached"
            )


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling parameters shared by all requests of one ``generate`` call.

    ``temperature == 0`` means greedy decoding; ``top_p`` is nucleus sampling (smallest set of tokens
    whose probability mass reaches ``top_p``); ``stop`` strings end a completion (excluded from the text).
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = 0
    stop: tuple[str, ...] | list[str] | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"SamplingConfig.n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"SamplingConfig.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"SamplingConfig.max_tokens must be >= 1, got {self.max_tokens}")

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "stop": list(self.stop) if self.stop else None,
        }


@dataclass
class Completion:
    """One sampled completion: ``text`` without special/pad tokens; ``num_tokens`` generated tokens
    (including the end-of-sequence token when it stopped on one); ``finish_reason`` ``"length"`` when it
    hit ``max_tokens`` without ending, else ``"stop"``."""

    text: str
    num_tokens: int
    finish_reason: FinishReason
    token_ids: list[int] | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "num_tokens": self.num_tokens,
            "finish_reason": self.finish_reason,
            "token_ids": self.token_ids,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Completion:
        return cls(d["text"], int(d["num_tokens"]), d["finish_reason"], d.get("token_ids"))


class RolloutEngine(abc.ABC):
    """Generates ``params.n`` completions per request.  Use as a context manager or call :meth:`close`."""

    name: str = "base"
    model_id: str = ""

    @abc.abstractmethod
    def generate(
        self,
        requests: Sequence[GenRequest],
        params: SamplingConfig,
        progress: ProgressCallback | None = None,
    ) -> list[list[Completion]]:
        """One list of ``params.n`` completions per request, in request order."""

    def replicas(self) -> list[RolloutEngine]:
        """Independent model replicas of this engine, each usable from its own thread at the same time as
        the others (one ``generate`` call per replica at a time).  A data-parallel vLLM engine returns one
        view per worker process, so a caller that schedules whole batches itself (the local executor: one
        chunk per replica, no barrier between replicas) keeps every replica busy; most engines are one
        replica: ``[self]``.  Closing the engine closes its replicas."""
        return [self]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model / worker processes."""

    def __enter__(self) -> RolloutEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------------------------- helpers


def count_image_parts(messages: list[dict]) -> int:
    n = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            n += sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image")
    return n


def flatten_text_content(messages: list[dict]) -> list[dict]:
    """Messages with list-of-parts content joined into a string (for text-only chat templates, which
    expect ``content`` to be a string).  Raises if a message carries an image part."""
    out = []
    for i, m in enumerate(messages):
        content = m["content"]
        if isinstance(content, list):
            texts = []
            for part in content:
                if part.get("type") == "text":
                    texts.append(part.get("text", ""))
                else:
                    raise ValueError(
                        f"message {i} has a {part.get('type')!r} part but the model is text-only"
                    )
            content = "".join(texts)
        out.append({**m, "content": content})
    return out


def render_prompt(template_owner: Any, messages: list[dict], vision: bool, **template_kwargs: Any) -> str:
    """Prompt text from the model's chat template with the assistant generation prompt appended.

    ``template_owner`` is a tokenizer or processor with ``apply_chat_template``.  Text-only models get
    string contents (list-of-text-parts joined).
    """
    msgs = messages if vision else flatten_text_content(messages)
    return template_owner.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True, **template_kwargs
    )


def _image_digest(img: Image.Image) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{img.mode}:{img.size}".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def request_seed(base_seed: int | None, request: GenRequest) -> int | None:
    """Per-request seed: ``GenRequest.seed`` if set, else ``blake2b(base_seed, messages, images) mod 2**31``
    (None when ``base_seed`` is None: unseeded)."""
    if request.seed is not None:
        return int(request.seed)
    if base_seed is None:
        return None
    h = hashlib.blake2b(digest_size=8)
    h.update(str(int(base_seed)).encode())
    h.update(json.dumps(request.prompt_messages, sort_keys=True, default=str).encode())
    for img in request.images or []:
        h.update(_image_digest(img).encode())
    return int.from_bytes(h.digest(), "little") % (2**31 - 1)


def truncate_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """Cut ``text`` before the earliest stop string; returns (text, whether a stop string was found)."""
    if not stop:
        return text, False
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    if cut < 0:
        return text, False
    return text[:cut], True


def check_requests(requests: Sequence[GenRequest], vision: bool, model_id: str) -> None:
    for i, r in enumerate(requests):
        if not isinstance(r, GenRequest):
            raise TypeError(f"request {i} is a {type(r).__name__}, expected GenRequest")
        if r.images and not vision:
            raise ValueError(f"request {i} has {len(r.images)} image(s) but model {model_id} is text-only")
