"""Run plumbing shared by the trainers (as TRL's ``trainer/utils.py``): loading a Parquet dataset, the
processor of a checkpoint (local folder or hub id) and saving it without torchvision, freezing the vision
tower, the final checkpoint + ``result.json`` of a run, the last checkpoint to resume from, the progress bar
callback and the :class:`TrainResult` every ``train`` command reports.

No trainer imports another trainer's module: :mod:`training.sft` and :mod:`training.grpo` both use this one.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "EmptyDatasetError",
    "FINAL_DIR",
    "RESULT_FILE",
    "ProcessorSaveMixin",
    "TrainResult",
    "finish_run",
    "freeze_vision_tower",
    "is_vlm_processor",
    "last_checkpoint",
    "last_logged",
    "load_parquet_dataset",
    "mean_logged",
    "parquet_num_rows",
    "model_and_processor",
    "progress_callback",
    "save_processing_class",
    "tokenizer_of",
]


RESULT_FILE = "result.json"



FINAL_DIR = "final"



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
    """Save the final model + processor to ``<output_dir>/final`` and ``result.json`` (written last).

    Every rank calls ``save_model`` (ZeRO-3 / FSDP gather the weights collectively); only the main process
    writes.  All ranks then wait for it, so no rank returns - and, in ``train staged``, loads ``final/`` as
    the next stage's model - before the checkpoint is complete."""
    final = Path(result.final_dir)
    trainer.save_model(str(final))
    if trainer.args.should_save:
        from curation.core.io import write_json_atomic

        write_json_atomic(result.to_json(), final / RESULT_FILE)
    trainer.accelerator.wait_for_everyone()
    return result



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
    included); returns the number of frozen parameters."""
    inner = getattr(model, "model", None)
    visual = getattr(inner, "visual", None) if inner is not None else None
    if visual is None:
        visual = getattr(model, "visual", None)
    if visual is None:
        raise ValueError(f"{type(model).__name__} has no vision tower (model.model.visual) to freeze")
    visual.requires_grad_(False)
    return sum(p.numel() for p in visual.parameters())
