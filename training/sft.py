"""``train sft``: TRL ``SFTTrainer`` on ``sft.parquet`` (text or multimodal), no silent truncation.

What this adds to TRL:

- **max_length is a contract, not a truncation.**  Every row is tokenised exactly as TRL will tokenise it
  (``trl.data_utils._tokenize`` with the chat template TRL will use; for image rows the processor's chat
  template with the images, so image tokens count).  Rows longer than ``max_length`` are either dropped -
  counted, printed and written to ``<output_dir>/excluded.parquet`` (schema ``excluded``, reason
  ``too_long``) - or rejected with an error naming every such row (``data.on_too_long: error``).  TRL's
  own truncation then never fires.
- **Assistant-only loss where the template supports it.**  ``assistant_only_loss: true`` needs a chat
  template with ``{% generation %}`` markers; TRL 1.16 swaps in a training template for the families it
  knows (Qwen2.5 / Qwen2.5-VL / Qwen3 / Llama 3 / ...) and raises otherwise.  We check first
  (:func:`assistant_mask_support`): with an unsupported template the rows are split into prompt /
  completion (everything before the last assistant message / that message) and TRL's completion-only loss
  trains on the last assistant turn, with a clear warning, instead of a crash.
- **Stage-1 VAS.**  When the rows carry ``vps`` (and ``vas.enabled`` is not false) each epoch's order comes
  from :class:`training.sampler.VASEpochSampler` (a fraction ``lambda`` of the epoch drawn by VPS, the rest
  uniform); otherwise TRL's uniform shuffle.  Hook: ``_get_train_sampler`` only.
- Vision-language models get their processor from :func:`curation.core.models.load_processor`; the final model
  and processor land in ``<output_dir>/final`` with a ``result.json``.

Run plumbing shared with :mod:`training.grpo` (dataset loading, processor saving, results) is in
:mod:`training.utils`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from trl import SFTTrainer

from .config import SFTRecipe
from .utils import (
    DEBUG_ENV,
    FINAL_DIR,
    ProcessorSaveMixin,
    SamplerEpochMixin,
    TrainResult,
    check_single_process_gpus,
    debug_event,
    finish_run,
    freeze_vision_tower,
    is_vlm_processor,
    last_checkpoint,
    last_logged,
    load_parquet_dataset,
    model_and_processor,
    progress_callback,
    resolve_attn_implementation,
)

__all__ = [
    "TooLongError",
    "TrainResult",
    "VASSFTTrainer",
    "load_parquet_dataset",
    "sequence_lengths",
    "split_too_long",
    "assistant_mask_support",
    "train_sft",
]

log = logging.getLogger(__name__)

EXCLUDED_FILE = "excluded.parquet"


class TooLongError(ValueError):
    """Rows longer than ``max_length`` with ``on_too_long: error``; ``rows`` = [(index, id, n_tokens)]."""

    def __init__(self, rows: list[tuple[int, str | None, int]], max_length: int, path: str):
        self.rows = rows
        shown = "; ".join(f"row {i}" + (f" (id={rid})" if rid else "") + f": {n} tokens" for i, rid, n in rows[:20])
        more = f"; ... and {len(rows) - 20} more" if len(rows) > 20 else ""
        super().__init__(
            f"{path}: {len(rows)} row(s) longer than max_length={max_length} tokens (with the chat template): "
            f"{shown}{more}. Raise max_length, or set data.on_too_long=drop to drop them (they are never truncated)."
        )


# --- lengths ---------------------------------------------------------------------------------------------


def _first_user_text(messages: list[dict]) -> str | None:
    for m in messages or []:
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            if isinstance(c, list):
                return "".join(p.get("text") or "" for p in c if isinstance(p, dict) and p.get("type") == "text")
    return None


def _clean_parts(messages: list[dict]) -> list[dict]:
    """Drop the ``None`` fields Arrow structs give typed parts (``{"type": "image", "text": None}``)."""
    out = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, list):
            c = [{k: v for k, v in p.items() if v is not None} for p in c]
        out.append({**m, "content": c})
    return out


def sequence_lengths(dataset: Any, processing_class: Any, *, chat_template: str | None = None,
                     column: str = "messages") -> list[int]:
    """Token count of each row as TRL's SFT preparation/collator will build it.

    Text rows: ``trl.data_utils._tokenize(processing_class, messages, chat_template=...)`` - the function
    TRL's ``SFTTrainer`` calls.  Rows with images: the processor's chat template applied to the messages with
    the images inserted (``prepare_multimodal_messages``), as ``DataCollatorForVisionLanguageModeling`` does,
    so every image's expanded ``<|image_pad|>`` tokens count."""
    from trl.data_utils import _tokenize, prepare_multimodal_messages

    vlm = is_vlm_processor(processing_class)
    has_images = "images" in dataset.column_names
    lengths = []
    for i in range(len(dataset)):
        row = dataset[i]
        messages = _clean_parts(row[column])
        images = row.get("images") if has_images else None
        if vlm and images:
            msgs = prepare_multimodal_messages(messages, images=images)
            out = processing_class.apply_chat_template(
                msgs, chat_template=chat_template, tokenize=True, return_dict=True,
                processor_kwargs={"add_special_tokens": False},
            )
            ids = out["input_ids"]
            ids = ids[0] if ids and isinstance(ids[0], list) else ids
        else:
            kwargs = {"chat_template": chat_template} if chat_template else {}
            ids = _tokenize(processing_class, messages, **kwargs)["input_ids"]
        lengths.append(len(ids))
    return lengths


def split_too_long(dataset: Any, lengths: list[int], max_length: int, *, on_too_long: str, source: str,
                   excluded_path: str | Path | None, step: str = "sft.max_length"):
    """Drop (recording each in ``excluded_path``) or reject the rows longer than ``max_length``.
    Returns ``(kept_dataset, n_dropped)``."""
    too_long = [i for i, n in enumerate(lengths) if n > max_length]
    if not too_long:
        return dataset, 0
    ids = dataset["id"] if "id" in dataset.column_names else [None] * len(dataset)
    if on_too_long == "error":
        raise TooLongError([(i, ids[i], lengths[i]) for i in too_long], max_length, source)
    from curation.core.io import ExclusionWriter

    ex = ExclusionWriter()
    has_images = "images" in dataset.column_names
    for i in too_long:
        row = dataset.with_format("arrow")[i].to_pylist()[0] if has_images else dataset[i]
        ex.add(
            {
                "id": row.get("id"),
                "source": row.get("source"),
                "problem": _first_user_text(row.get("messages") or []),
                "images": row.get("images") if has_images else None,
            },
            step=step,
            reason="too_long",
            detail=f"{lengths[i]} tokens > max_length {max_length}",
            locator=f"{source}:{i}",
            raw=json.dumps(row.get("messages"), ensure_ascii=False, default=str),
        )
    if excluded_path is not None:
        ex.write(excluded_path)
    keep = sorted(set(range(len(dataset))) - set(too_long))
    return dataset.select(keep), len(too_long)


# --- assistant-only loss ---------------------------------------------------------------------------------


def assistant_mask_support(processing_class: Any) -> tuple[bool, str]:
    """Whether TRL 1.16 can build an assistant-token mask for this chat template, and why.

    Supported: the template has ``{% generation %}`` markers, or TRL ships a training variant of it
    (``trl.chat_template_utils.get_training_chat_template``)."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    tmpl = processing_class.chat_template
    if not tmpl:
        return False, "the processing class has no chat template"
    if has_generation_markers(tmpl):
        return True, "the chat template has {% generation %} markers"
    try:
        patched = get_training_chat_template(processing_class)
    except ValueError:
        return False, ("the chat template has no {% generation %} markers and TRL has no training variant "
                       "of it")
    if patched is None:
        return True, "the chat template is training-compatible"
    return True, "TRL swaps in its training variant of this chat template ({% generation %} markers)"


def _resolve_assistant_only(args: Any, processing_class: Any) -> tuple[str, str]:
    """Loss mode for ``assistant_only_loss: true``: ``assistant`` when the template supports the mask, else
    ``completion`` (warned): the rows become prompt/completion pairs - everything before the last assistant
    message is the prompt - and TRL's ``completion_only_loss`` trains on the last assistant turn only (the
    same tokens for single-turn rows; earlier assistant turns of multi-turn rows are not trained).  ``full``
    when the recipe turns it off."""
    if not args.assistant_only_loss:
        return "full", "assistant_only_loss off in the recipe"
    ok, why = assistant_mask_support(processing_class)
    if ok:
        return "assistant", why
    msg = (f"assistant_only_loss requested but unsupported: {why}. Falling back to completion-only loss on the "
           "last assistant turn (rows split into prompt/completion). Add {% generation %}...{% endgeneration %} "
           "around the assistant content in the chat template to mask every assistant turn.")
    warnings.warn(msg, stacklevel=3)
    args.assistant_only_loss = False
    args.completion_only_loss = True
    return "completion", "unsupported template (" + why + "): completion-only loss on the last assistant turn"


def to_prompt_completion(dataset: Any, source: str) -> Any:
    """``messages`` -> ``prompt`` (all messages before the last assistant one) + ``completion`` (that message);
    a row whose last message is not the assistant's is an error naming it."""
    bad = [i for i, m in enumerate(dataset["messages"]) if not m or m[-1].get("role") != "assistant"]
    if bad:
        raise ValueError(f"{source}: rows {bad[:20]} do not end with an assistant message (nothing to train on)")

    def split(row):
        msgs = _clean_parts(row["messages"])
        return {"prompt": msgs[:-1], "completion": msgs[-1:]}

    return dataset.map(split, remove_columns=["messages"])


def _training_chat_template(processing_class: Any) -> str | None:
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(processing_class.chat_template or ""):
        return None
    return get_training_chat_template(processing_class)


# --- the trainer -----------------------------------------------------------------------------------------


class VASSFTTrainer(SamplerEpochMixin, ProcessorSaveMixin, SFTTrainer):
    """``SFTTrainer`` whose epoch order comes from a VAS epoch sampler when one is given (told the epoch by
    :class:`training.utils.SamplerEpochMixin`, also when a multi-process run resumes mid-epoch)."""

    def __init__(self, *args, vas_sampler=None, **kwargs):
        self.vas_sampler = vas_sampler
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        if self.vas_sampler is None:
            return super()._get_train_sampler(train_dataset)
        ds = train_dataset if train_dataset is not None else self.train_dataset
        if len(ds) != self.vas_sampler.n_rows:
            raise RuntimeError(
                f"TRL's prepared dataset has {len(ds)} rows but the VAS sampler was built for "
                f"{self.vas_sampler.n_rows}; rows were dropped during preparation"
            )
        if os.environ.get(DEBUG_ENV):
            rank = self.accelerator.process_index
            self.vas_sampler.on_epoch = lambda e, order: debug_event(rank, "sampler_epoch", epoch=int(e), indices=order)
        return self.vas_sampler


def _vps_weights(dataset: Any) -> list[float] | None:
    """Per-row ``vps`` (nulls filled with the median of the present values); None without a usable column."""
    if "vps" not in dataset.column_names:
        return None
    v = dataset["vps"]
    present = sorted(x for x in v if x is not None and not math.isnan(x))
    if not present:
        return None
    median = present[len(present) // 2]
    return [median if (x is None or math.isnan(x)) else float(x) for x in v]


def train_sft(
    recipe: SFTRecipe,
    *,
    resume: bool = True,
    progress: Callable[[str, int | None], Callable[[int], None]] | None = None,
    report: Callable[[str], None] | None = None,
    freeze_vision: bool = False,
) -> TrainResult:
    """Run SFT from a recipe; returns a :class:`TrainResult` (also written to ``final/result.json``).

    ``resume``: continue from the last ``checkpoint-*`` in ``output_dir`` when there is one.  ``report``:
    called with human-readable notes (dropped rows, loss mode, sampler) for the CLI to print."""
    say = report or (lambda s: log.info(s))
    t0 = time.perf_counter()
    args = recipe.args
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = recipe.model
    processing_class, vl_model = model_and_processor(model_dir, "right")

    dataset = load_parquet_dataset(recipe.data.train, limit=recipe.data.limit, required=("messages",))
    has_images = "images" in dataset.column_names
    if has_images and not vl_model:
        raise ValueError(f"{recipe.data.train} has an 'images' column but {model_dir} is not a vision-language model")

    loss_mode, why = _resolve_assistant_only(args, processing_class)
    say(f"loss: {loss_mode} ({why})")
    template = _training_chat_template(processing_class) if loss_mode == "assistant" else None
    lengths = sequence_lengths(dataset, processing_class, chat_template=template)
    n_rows = len(dataset)
    excluded_path = out / EXCLUDED_FILE
    writer = args.should_save  # multi-process: only the main process writes the exclusion table
    dataset, dropped = split_too_long(dataset, lengths, args.max_length, on_too_long=recipe.data.on_too_long,
                                      source=str(recipe.data.train), excluded_path=excluded_path if writer else None)
    if dropped:
        say(f"dropped {dropped} of {n_rows} rows longer than max_length={args.max_length} -> {excluded_path}")
    elif writer:
        excluded_path.unlink(missing_ok=True)  # a stale table from an earlier run with other data
    if len(dataset) == 0:
        raise ValueError(f"{recipe.data.train}: every row is longer than max_length={args.max_length}")

    sampler = None
    weights = _vps_weights(dataset)
    vas_on = recipe.vas.enabled if recipe.vas.enabled is not None else weights is not None
    if vas_on and weights is None:
        raise ValueError(f"sft.vas.enabled is true but {recipe.data.train} has no usable 'vps' column")
    if vas_on:
        from .sampler import VASEpochSampler

        pids = dataset["problem_id"] if "problem_id" in dataset.column_names else None
        sampler = VASEpochSampler(
            len(dataset), weights, problem_ids=pids, vas_fraction=recipe.vas.lambda_,
            seed=recipe.vas.seed if recipe.vas.seed is not None else args.seed,
            epsilon=recipe.vas.epsilon, per_problem=pids is not None,
        )
        say(f"sampler: VAS epoch sampler (lambda={recipe.vas.lambda_}) over {len(dataset)} rows")
    else:
        say("sampler: uniform shuffle")

    keep_cols = ["messages"] + (["images"] if has_images else [])
    dataset = dataset.select_columns(keep_cols)
    if loss_mode == "completion":
        dataset = to_prompt_completion(dataset, str(recipe.data.train))

    check_single_process_gpus(args, "sft")
    resolve_attn_implementation(args)
    callbacks = [progress_callback(progress, "sft")] if progress else []
    trainer = VASSFTTrainer(
        model=model_dir,
        args=args,
        train_dataset=dataset,
        processing_class=processing_class,
        callbacks=callbacks,
        vas_sampler=sampler,
    )
    if freeze_vision:
        freeze_vision_tower(trainer.model)
    ckpt = last_checkpoint(out) if resume else None
    if ckpt:
        say(f"resuming from {ckpt}")
    train_out = trainer.train(resume_from_checkpoint=ckpt)
    hist = trainer.state.log_history
    result = TrainResult(
        kind="sft",
        output_dir=str(out),
        final_dir=str(out / FINAL_DIR),
        steps=int(trainer.state.global_step),
        train_rows=len(dataset),
        final_loss=last_logged(hist, "loss") if last_logged(hist, "loss") is not None else train_out.training_loss,
        dropped=dropped,
        excluded_path=str(excluded_path) if dropped else None,
        seconds=round(time.perf_counter() - t0, 2),
        resumed_from=ckpt,
        extra={
            "assistant_only_loss": loss_mode == "assistant",
            "loss_mode": loss_mode,
            "loss_mode_reason": why,
            "vas": sampler is not None,
            "sampler_stats": sampler.last_epoch_stats() if sampler is not None else None,
            "train_loss": train_out.training_loss,
        },
    )
    return finish_run(trainer, result)


