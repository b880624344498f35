"""Rollout engine on transformers ``generate`` (CPU or GPU; the reference and fallback engine).

Batching: requests are sorted by prompt length and grouped so that one ``generate`` call holds at most
``batch_size`` sequences (``batch_size // n`` requests, ``n`` return sequences each), left-padded.

Determinism: sampling is done by :class:`SeededSampler`, a logits processor that draws every row's next
token from that row's own ``torch.Generator``, seeded from the request's seed (see
:func:`curation.engines.base.request_seed`) and the sample index.  A request's samples therefore do not
depend on the batch it lands in, its position, or the other requests; what can still differ between
batchings are floating-point rounding effects of padding/batch shape on the logits (rare flips between
near-tied tokens).  Same requests + same ``batch_size`` + same machine give identical results.
``temperature == 0`` is greedy (all ``n`` samples identical).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curation.engines.base import (
    Completion,
    GenRequest,
    ProgressCallback,
    RolloutEngine,
    SamplingConfig,
    check_requests,
    render_prompt,
    request_seed,
    truncate_at_stop,
)

log = logging.getLogger(__name__)


class SeededSampler:
    """Logits processor that samples each row with its own generator and returns one-hot logits.

    For row ``i`` with logits ``z``: ``p = softmax(z / T)``; with ``top_p < 1`` keep the smallest prefix of
    tokens sorted by ``p`` whose cumulative mass reaches ``top_p`` (a token is kept when the mass *before*
    it is ``< top_p``), renormalise, and draw ``x ~ Categorical(p)`` with the row's generator.  ``T == 0``
    takes ``argmax z``.  The returned scores are ``0`` at ``x`` and ``-inf`` elsewhere, so the subsequent
    ``generate`` sampling step (temperature 1, no top-k/top-p) picks ``x`` with probability 1.
    """

    def __init__(self, row_seeds: Sequence[int | None], temperature: float, top_p: float):
        import torch

        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.generators = []
        for s in row_seeds:
            g = torch.Generator(device="cpu")
            if s is None:
                g.seed()
            else:
                g.manual_seed(int(s))
            self.generators.append(g)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if scores.shape[0] != len(self.generators):
            raise RuntimeError(f"SeededSampler got {scores.shape[0]} rows, expected {len(self.generators)}")
        logits = scores.float()
        if self.temperature == 0:
            chosen = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(logits / self.temperature, dim=-1)
            if self.top_p < 1.0:
                sorted_p, sorted_idx = probs.sort(dim=-1, descending=True)
                mass_before = sorted_p.cumsum(dim=-1) - sorted_p
                sorted_p = sorted_p.masked_fill(mass_before >= self.top_p, 0.0)
                probs = torch.zeros_like(probs).scatter(-1, sorted_idx, sorted_p)
            probs = probs.cpu()
            chosen = torch.stack(
                [torch.multinomial(probs[i], 1, generator=g)[0] for i, g in enumerate(self.generators)]
            ).to(scores.device)
        out = torch.full_like(scores, -math.inf)
        out.scatter_(-1, chosen[:, None], 0.0)
        return out


def sample_seed(seed: int | None, j: int) -> int | None:
    """Seed of sample ``j`` of a request with seed ``seed``: ``(seed * 1_000_003 + j) mod 2**63``."""
    if seed is None:
        return None
    return (int(seed) * 1_000_003 + j) % (2**63)


class HFEngine(RolloutEngine):
    """transformers ``generate`` engine.

    Args:
        model: checkpoint directory or hub id (resolved like transformers does: the folder, else the
            huggingface_hub cache, else a download when online; :func:`curation.core.models.resolve_model`);
            alternatively pass ``model_obj`` +
            ``processor`` through :meth:`from_model`.
        batch_size: maximum sequences (requests x n) per ``generate`` call.
        dtype: ``"auto"`` (float32 on CPU, bfloat16 on CUDA), or a torch dtype name.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        chat_template_kwargs: extra variables for the chat template (e.g. ``{"enable_thinking": False}``).
        num_threads: torch intra-op threads during ``generate`` (restored afterwards); default: torch's
            setting.  On a busy shared CPU, 1 thread can be several times faster than oversubscribed 2.
        progress: default progress callback ``(requests done, total)``, called after each batch.
    """

    name = "hf"

    def __init__(
        self,
        model: str | Path | None = None,
        batch_size: int = 32,
        dtype: str = "auto",
        device: str | None = None,
        chat_template_kwargs: dict | None = None,
        progress: ProgressCallback | None = None,
        num_threads: int | None = None,
        *,
        _model_obj: Any = None,
        _processor: Any = None,
    ):
        import torch

        from curation.core.models import is_vision_language, load_processor, model_source

        self.batch_size = max(1, int(batch_size))
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.progress = progress
        self.num_threads = num_threads
        if _model_obj is not None:
            self.model = _model_obj
            self.processor = _processor
            self.model_id = str(getattr(_model_obj, "name_or_path", "") or model or "in-memory")
            self.vision = hasattr(_processor, "image_processor")
        else:
            if model is None:
                raise ValueError("HFEngine needs a model directory or hub id")
            self.model_id = str(model)
            self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            if dtype == "auto":
                torch_dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
            else:
                torch_dtype = getattr(torch, dtype)
            self.vision = is_vision_language(model)
            self.processor = load_processor(model, padding_side="left")
            if self.vision:
                from transformers import AutoModelForImageTextToText as auto_cls
            else:
                from transformers import AutoModelForCausalLM as auto_cls
            # the cached snapshot when the weights are on disk, else the hub id (transformers downloads)
            self.model = auto_cls.from_pretrained(model_source(model), dtype=torch_dtype).to(self.device)
        self.model.eval()
        self.device = str(next(self.model.parameters()).device)
        self.tokenizer = self.processor.tokenizer if self.vision else self.processor
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_ids = self._eos_ids()

    @classmethod
    def from_model(cls, model_obj: Any, processor: Any, **kwargs: Any) -> HFEngine:
        """Wrap an already-loaded model and its tokenizer/processor (e.g. the policy during training)."""
        return cls(None, _model_obj=model_obj, _processor=processor, **kwargs)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(gen_eos, int):
            ids.add(gen_eos)
        elif gen_eos:
            ids.update(int(i) for i in gen_eos)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return ids

    # ----------------------------------------------------------------------------------------- generate

    def generate(
        self,
        requests: Sequence[GenRequest],
        params: SamplingConfig,
        progress: ProgressCallback | None = None,
    ) -> list[list[Completion]]:
        import torch

        progress = progress or self.progress
        check_requests(requests, self.vision, self.model_id)
        if not requests:
            return []
        prompts = [
            render_prompt(self.processor, r.prompt_messages, self.vision, **self.chat_template_kwargs)
            for r in requests
        ]
        seeds = [request_seed(params.seed, r) for r in requests]
        lengths = [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        order = sorted(range(len(requests)), key=lambda i: -lengths[i])
        per_batch = max(1, self.batch_size // params.n)
        results: list[list[Completion] | None] = [None] * len(requests)
        done = 0
        old_threads = torch.get_num_threads()
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        try:
            for start in range(0, len(order), per_batch):
                idx = order[start : start + per_batch]
                batch = self._generate_batch(
                    [prompts[i] for i in idx], [requests[i] for i in idx], [seeds[i] for i in idx], params, torch
                )
                for i, comps in zip(idx, batch, strict=True):
                    results[i] = comps
                done += len(idx)
                if progress is not None:
                    progress(done, len(requests))
        finally:
            torch.set_num_threads(old_threads)
        return results  # type: ignore[return-value]

    def _generate_batch(self, prompts, requests, seeds, params: SamplingConfig, torch) -> list[list[Completion]]:
        from transformers import GenerationConfig, LogitsProcessorList

        if self.vision:
            images = [img for r in requests for img in (r.images or [])]
            inputs = self.processor(
                text=prompts, images=images or None, padding=True, return_tensors="pt"
            )
        else:
            inputs = self.tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        prompt_len = inputs["input_ids"].shape[1]
        n = params.n
        row_seeds = [sample_seed(s, j) for s in seeds for j in range(n)]
        gen_config = GenerationConfig(
            max_new_tokens=params.max_tokens,
            do_sample=True,  # the SeededSampler already chose the token; sampling a one-hot is exact
            temperature=1.0,
            top_k=None,
            top_p=1.0,
            num_return_sequences=n,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.tokenizer.pad_token_id,
            bos_token_id=None,
            stop_strings=list(params.stop) if params.stop else None,
        )
        sampler = SeededSampler(row_seeds, params.temperature, params.top_p)
        extra = {"tokenizer": self.tokenizer} if params.stop else {}
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                generation_config=gen_config,
                logits_processor=LogitsProcessorList([sampler]),
                **extra,
            )
        new_tokens = out[:, prompt_len:].tolist()
        pad = self.tokenizer.pad_token_id
        completions = []
        for row in new_tokens:
            completions.append(self._to_completion(row, pad, params))
        return [completions[k * n : (k + 1) * n] for k in range(len(prompts))]

    def _to_completion(self, row: list[int], pad: int | None, params: SamplingConfig) -> Completion:
        end = next((k for k, t in enumerate(row) if t in self.eos_ids), None)
        if end is not None:
            ids = row[: end + 1]
            finish = "stop"
        else:
            ids = list(row)
            while ids and pad is not None and ids[-1] == pad:  # finished early (stop string): padded tail
                ids.pop()
            finish = "length" if len(ids) >= params.max_tokens else "stop"
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        text, hit_stop = truncate_at_stop(text, params.stop)
        if hit_stop:
            finish = "stop"
        return Completion(text=text, num_tokens=len(ids), finish_reason=finish, token_ids=ids)
