"""Run plumbing shared by the trainers (as TRL's ``trainer/utils.py``): loading a Parquet dataset, the
processor of a checkpoint (local folder or hub id) and saving it without torchvision, freezing the vision
tower, the final checkpoint + ``result.json`` of a run, the last checkpoint to resume from, the progress bar
callback and the :class:`TrainResult` every ``train`` command reports.

No trainer imports another trainer's module: :mod:`training.sft` and :mod:`training.grpo` both use this one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "DEBUG_ENV",
    "EmptyDatasetError",
    "check_single_process_gpus",
    "flash_attention_problem",
    "module_installed",
    "resolve_attn_implementation",
    "FINAL_DIR",
    "RESULT_FILE",
    "ProcessorSaveMixin",
    "SamplerEpochMixin",
    "TrainResult",
    "debug_event",
    "finish_run",
    "freeze_vision_tower",
    "is_vlm_processor",
    "last_checkpoint",
    "last_logged",
    "load_parquet_dataset",
    "mean_logged",
    "param_numel",
    "parquet_num_rows",
    "model_and_processor",
    "progress_callback",
    "run_info",
    "save_processing_class",
    "tokenizer_of",
]


RESULT_FILE = "result.json"
FINAL_DIR = "final"
# Multi-process debugging/tests: when set, every rank appends JSON lines to <dir>/rank<R>.jsonl (GRPO: the chunks
# its VAS sampler draws, the dataset indices of its local batch slice, the gathered rollouts fed to the online
# VPS update, re-scores, its final VPS values and the files it saves; SFT: the row order of every epoch).
DEBUG_ENV = "RLCURATE_TRAIN_DEBUG_DIR"


def debug_event(rank: int, event: str, **data: Any) -> None:
    """Append ``{"event": event, **data}`` to ``$RLCURATE_TRAIN_DEBUG_DIR/rank<rank>.jsonl`` (no-op when unset)."""
    d = os.environ.get(DEBUG_ENV)
    if not d:
        return
    Path(d).mkdir(parents=True, exist_ok=True)
    with open(Path(d) / f"rank{rank}.jsonl", "a") as f:
        f.write(json.dumps({"event": event, **data}, default=float) + "\n")


@dataclass
class TrainResult:
    """What a finished ``train sft`` / ``train grpo`` run reports (also ``<output_dir>/final/result.json``)."""

    kind: str
    output_dir: str
    final_dir: str
    steps: int
    train_rows: int
    final_loss: float | None = None
    final_reward: float | None = None
    zero_variance_frac: float | None = None  # GRPO: mean frac_reward_zero_std over the run
    dropped: int = 0
    excluded_path: str | None = None
    seconds: float = 0.0
    resumed_from: str | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


class EmptyDatasetError(ValueError):
    """The training file has no rows (for example ``curate cot`` accepted no solution): nothing to train on."""


def parquet_num_rows(path: str | Path) -> int:
    """Row count from the Parquet footer (no data read); ``FileNotFoundError`` naming ``data.train``."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (data.train)")
    return pq.ParquetFile(path).metadata.num_rows


def load_parquet_dataset(path: str | Path, *, limit: int | None = None, required: tuple[str, ...] = ()):
    """A 🤗 ``Dataset`` from one Parquet file (images decode to PIL via the schema's feature metadata).
    A file without rows raises :class:`EmptyDatasetError` (datasets itself fails on it with an opaque
    ``DatasetGenerationError``)."""
    from datasets import Dataset

    path = Path(path)
    if parquet_num_rows(path) == 0:
        raise EmptyDatasetError(f"{path}: the file has no rows, nothing to train on (data.train)")
    ds = Dataset.from_parquet(str(path), keep_in_memory=False)
    missing = [c for c in required if c not in ds.column_names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; has {ds.column_names}")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    if len(ds) == 0:
        raise EmptyDatasetError(f"{path}: no rows selected (data.limit={limit}), nothing to train on")
    return ds


def is_vlm_processor(processing_class: Any) -> bool:
    from transformers import ProcessorMixin

    return isinstance(processing_class, ProcessorMixin)


def tokenizer_of(processing_class: Any) -> Any:
    return processing_class.tokenizer if is_vlm_processor(processing_class) else processing_class


def save_processing_class(processing_class: Any, out_dir: str | Path) -> None:
    """Save a tokenizer or processor.  A processor built without torchvision (``video_processor=None``, see
    :func:`curation.core.models.load_processor`) cannot ``save_pretrained`` itself: its tokenizer, image processor
    and chat template are saved one by one so :func:`curation.core.models.load_processor` reloads it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if is_vlm_processor(processing_class) and getattr(processing_class, "video_processor", "absent") is None:
        processing_class.tokenizer.save_pretrained(out_dir)
        processing_class.image_processor.save_pretrained(out_dir)
        pp = out_dir / "preprocessor_config.json"
        if pp.exists():  # canonical class name: the torchvision backend where installed, PIL otherwise
            cfg = json.loads(pp.read_text())
            t = cfg.get("image_processor_type", "")
            if t.endswith("Pil"):
                cfg["image_processor_type"] = t[: -len("Pil")]
                pp.write_text(json.dumps(cfg, indent=2))
        if processing_class.chat_template:
            (out_dir / "chat_template.jinja").write_text(processing_class.chat_template)
        return
    processing_class.save_pretrained(out_dir)


class ProcessorSaveMixin:
    """Trainer mixin: save the processing class with :func:`save_processing_class` (checkpoints included)."""

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        proc = self.processing_class
        self.processing_class = None
        try:
            super()._save(output_dir, state_dict=state_dict)
        finally:
            self.processing_class = proc
        if proc is not None and self.args.should_save:
            save_processing_class(proc, output_dir or self.args.output_dir)


class SamplerEpochMixin:
    """Trainer mixin: tell our own sampler (``self.vas_sampler``) the epoch at the start of every epoch.

    transformers calls ``train_dataloader.set_epoch(epoch)`` and accelerate's ``DataLoaderShard.set_epoch``
    forwards it at most two wrappers deep (``batch_sampler.sampler``, ``batch_sampler.batch_sampler.sampler``).
    When a run resumes mid-epoch with several processes the chain is three deep - ``SkipBatchSampler`` ->
    ``BatchSamplerShard`` -> ``BatchSampler`` -> sampler - so neither accelerate nor transformers' own
    fallback reaches the sampler, and a sampler that derives its order from the epoch (ours do) would replay
    epoch 0.  We set the epoch ourselves, from the epoch the training loop is about to run
    (``Trainer._run_epoch``'s ``epoch`` argument), before the dataloader is iterated; the later ``set_epoch``
    calls that do get through set the same value.  One process was never affected (no ``BatchSamplerShard``).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        import inspect

        super().__init__(*args, **kwargs)
        hook = getattr(super(), "_run_epoch", None)
        if hook is None or "epoch" not in inspect.signature(hook).parameters:
            raise RuntimeError("this transformers version has no Trainer._run_epoch(epoch=...) hook; the VAS "
                               "samplers cannot be told the epoch on a multi-process resume")

    def _run_epoch(self, *args: Any, **kwargs: Any):
        import inspect

        parent = super()._run_epoch
        epoch = inspect.signature(parent).bind(*args, **kwargs).arguments["epoch"]
        sampler = getattr(self, "vas_sampler", None)
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(int(epoch))
        return parent(*args, **kwargs)


def model_and_processor(model: str, padding_side: str) -> tuple[Any, bool]:
    """``(processing_class, is_vision_language)`` for a local checkpoint or a hub id, both resolved by
    :func:`curation.core.models.resolve_model` (the folder, else the huggingface_hub cache, else a download
    of the metadata when online) and loaded by :func:`curation.core.models.load_processor` (``AutoProcessor``
    where torchvision is installed, assembled from its parts without it).  The trainers hand the hub id
    itself to TRL, which resolves the weights the same way."""
    from curation.core.models import is_vision_language, load_processor, resolve_model

    model_dir = resolve_model(model)
    return load_processor(model_dir, padding_side=padding_side), is_vision_language(model_dir)


def last_checkpoint(output_dir: str | Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    return get_last_checkpoint(str(output_dir))


def finish_run(trainer: Any, result: TrainResult) -> TrainResult:
    """Save the final model + processor to ``<output_dir>/final``, the trainer state (``trainer_state.json``:
    the whole log history, also with ``save_strategy: "no"``) and ``result.json`` (written last).

    Every rank calls ``save_model`` (ZeRO-3 / FSDP gather the weights collectively); only the main process
    writes.  All ranks then wait for it, so no rank returns - and, in ``train staged``, loads ``final/`` as
    the next stage's model - before the checkpoint is complete."""
    final = Path(result.final_dir)
    result.extra.setdefault("run", run_info(trainer))
    trainer.save_model(str(final))
    if trainer.args.should_save:
        from curation.core.io import write_json_atomic

        trainer.state.save_to_json(str(final / "trainer_state.json"))
        write_json_atomic(result.to_json(), final / RESULT_FILE)
    trainer.accelerator.wait_for_everyone()
    return result



def run_info(trainer: Any) -> dict:
    """How a run actually trained (``result.json``'s ``extra.run``): device, distributed type, world size,
    mixed precision, the dtype of the parameters the forward runs in and of the optimizer's master copy (the
    innermost torch optimizer's parameters: the model's own under DDP, DeepSpeed's fp32 partitions under
    ZeRO), gradient checkpointing and the attention implementation."""
    acc = trainer.accelerator
    model = acc.unwrap_model(trainer.model)
    master = None
    opt = trainer.optimizer if trainer.optimizer is not None else getattr(trainer.model_wrapped, "optimizer", None)
    while opt is not None and master is None:  # AcceleratedOptimizer / DeepSpeed wrappers -> torch optimizer
        # DeepSpeed's ZeRO optimizers keep the master partitions here (stage 3 / stages 1-2 / BF16_Optimizer);
        # the torch optimizer inside only holds them during step()
        for attr in ("fp32_partitioned_groups_flat", "single_partition_of_fp32_groups", "fp32_groups_flat_partition"):
            flat = getattr(opt, attr, None)
            if flat:
                master = str(flat[0].dtype)
                break
        if master is None and not hasattr(opt, "optimizer"):
            ps = [p for g in getattr(opt, "param_groups", []) for p in g["params"]]
            master = str(ps[0].dtype) if ps else None
        opt = getattr(opt, "optimizer", None)
    param = next(iter(model.parameters()), None)
    return {
        "device": str(trainer.args.device),
        "distributed_type": str(acc.distributed_type).rsplit(".", 1)[-1],
        "world_size": int(acc.num_processes),
        "mixed_precision": str(acc.mixed_precision),
        "param_dtype": str(param.dtype) if param is not None else None,
        "master_dtype": master,
        "gradient_checkpointing": bool(getattr(model, "is_activation_checkpointing" if hasattr(
            type(model), "is_activation_checkpointing") else "is_gradient_checkpointing", False)),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
    }


def last_logged(log_history: list[dict], key: str) -> float | None:
    for rec in reversed(log_history):
        if key in rec and rec[key] is not None:
            return float(rec[key])
    return None


def mean_logged(log_history: list[dict], key: str) -> float | None:
    vals = [float(r[key]) for r in log_history if key in r and r[key] is not None and not math.isnan(float(r[key]))]
    return sum(vals) / len(vals) if vals else None


def progress_callback(new_task: Callable[[str, int | None], Callable[[int], None]] | None, label: str):
    """A TrainerCallback advancing a rich progress bar (``curation.core.console.progress_factory``) per step."""
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def __init__(self):
            self.advance = None
            self.done = 0

        def on_train_begin(self, args, state, control, **kw):
            if new_task is not None and state.is_world_process_zero:
                self.advance = new_task(label, state.max_steps or None)
                if state.global_step:
                    self.advance(state.global_step)
                self.done = state.global_step

        def on_step_end(self, args, state, control, **kw):
            if self.advance is not None and state.global_step > self.done:
                self.advance(state.global_step - self.done)
                self.done = state.global_step

    return _Progress()


def freeze_vision_tower(model: Any) -> int:
    """``requires_grad_(False)`` on the vision tower (Qwen2-VL family: ``model.model.visual``, merger
    included); returns the number of frozen parameters.

    Call it before ``trainer.train()``: the optimizer (and DeepSpeed's ZeRO partitions) are built inside
    ``train()`` from the parameters that require grad, so frozen ones get no fp32 master or Adam state.  Under
    ZeRO-3 the parameters are already partitioned (``numel()`` is 0 on every rank); DeepSpeed keeps the full
    size in ``ds_numel``, which is what is counted then."""
    inner = getattr(model, "model", None)
    visual = getattr(inner, "visual", None) if inner is not None else None
    if visual is None:
        visual = getattr(model, "visual", None)
    if visual is None:
        raise ValueError(f"{type(model).__name__} has no vision tower (model.model.visual) to freeze")
    visual.requires_grad_(False)
    return sum(param_numel(p) for p in visual.parameters())


def param_numel(p: Any) -> int:
    """Full size of a parameter, also when DeepSpeed ZeRO-3 has partitioned it (``ds_numel``)."""
    return int(getattr(p, "ds_numel", None) or p.numel())


_FLASH_CHECKS = {"flash_attention_2": ("flash_attn", "is_flash_attn_2_available"),
                 "flash_attention_3": ("flash_attn_interface", "is_flash_attn_3_available")}


def module_installed(module: str) -> bool:
    """Whether ``module`` can be imported here (found on the path; not imported)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # sys.modules[module] = None (import blocked), broken package
        return False


def flash_attention_problem(attn_implementation: str) -> str | None:
    """Why ``attn_implementation`` (flash_attention_2 / _3) cannot run here, or None when it can
    (transformers' own check: the package installed, recent enough, and a CUDA device)."""
    module, check = _FLASH_CHECKS[attn_implementation]
    if not module_installed(module):
        pkg = "flash-attn" if module == "flash_attn" else "flash-attn 3 (hopper build)"
        return (f"{pkg} is not installed (`make gpu-setup` builds it, or `pip install --no-build-isolation "
                "flash-attn==2.8.3.post2`)")
    import transformers.utils as tu

    if not getattr(tu, check)():
        import torch

        return "no CUDA device" if not torch.cuda.is_available() else f"transformers' {check}() is False"
    return None


def resolve_attn_implementation(args: Any) -> str | None:
    """The one place that decides ``model_init_kwargs.attn_implementation`` before a trainer loads the
    model: a recipe's ``flash_attention_2`` is kept where flash-attn can run, and replaced by ``sdpa`` - with
    one warning naming the reason - where it cannot (not installed, no CUDA), instead of transformers'
    ImportError.  Returns the implementation the trainer will use (None: transformers' default)."""
    import warnings

    mik = dict(args.model_init_kwargs or {})
    want = mik.get("attn_implementation")
    if want not in _FLASH_CHECKS:
        return want
    why = flash_attention_problem(want)
    if why is None:
        return want
    warnings.warn(f"attn_implementation {want} requested but {why}: using sdpa (PyTorch's fused attention) "
                  "instead", stacklevel=3)
    mik["attn_implementation"] = "sdpa"
    args.model_init_kwargs = mik
    return "sdpa"


def check_single_process_gpus(args: Any, command: str) -> None:
    """A plain (not launched) run on a machine with several visible GPUs: TRL would load the model with
    ``device_map="auto"`` and spread it over all of them, one GPU busy at a time.  Refused with the launch
    line to use, unless the recipe sets ``model_init_kwargs.device_map`` itself."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 or getattr(args, "use_cpu", False):
        return
    if "device_map" in (args.model_init_kwargs or {}):
        return
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n > 1:
        raise ValueError(
            f"{n} GPUs are visible to this single process: TRL would spread the model over all of them with "
            f"device_map='auto' (one GPU busy at a time). Launch one process per GPU: `accelerate launch "
            f"--config_file pipelines/accelerate/zero3.yaml --num_processes {n} -m training.cli {command} ...`, "
            f"or use one GPU: `CUDA_VISIBLE_DEVICES=0 train {command} ...`")
