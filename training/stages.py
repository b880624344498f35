"""``train staged``: ReVisual-R1's curriculum, each stage starting from the previous stage's final checkpoint.

    stage 1  cold_start  SFT on text reasoning data          (kind: sft)
    stage 2  mm_rl       GRPO on multimodal problems + VAS    (kind: grpo; PAD optional)
    stage 3  text_rl     GRPO on text problems, vision tower frozen (kind: grpo, freeze_vision: true)

Stages are whatever the recipe lists (any number, any order of ``sft`` / ``grpo``); each stage's section is the
top-level ``sft:`` / ``grpo:`` section deep-merged with the stage's own keys, and its ``output_dir`` is
``<staged.output_dir>/<stage name>``.

Resumability:

- a finished stage leaves ``<stage dir>/stage_done.json`` (written atomically, last): its result, the model it
  started from and a fingerprint of its settings.  A re-run skips it and starts the next stage from its
  ``final/`` checkpoint.  If the settings changed since, the run stops with an error instead of silently
  reusing a stage trained differently.
- an interrupted stage has ``checkpoint-*`` folders (TRL ``save_strategy``): the re-run resumes from the
  last one (optimizer, scheduler, RNG and - for GRPO with VAS - the VPS table).

Empty inputs: a stage whose ``data.train`` has no rows (``curate cot`` accepted no solution, a pass band
that kept nothing) stops the run before anything trains with an error naming the stage and the file, or -
with ``on_empty: skip`` on the stage - is skipped: ``summary.json`` lists it as ``skipped (no training
rows)`` and the next stage starts from the previous stage's model.  No marker is written for it, so a
re-run with data trains it.

At the end a summary of every stage (steps, final loss / reward, zero-variance fraction, checkpoint) is
returned and written to ``<staged.output_dir>/summary.json``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from .config import StagedRecipe, build_grpo_recipe, build_sft_recipe

__all__ = ["StageSummary", "StageConfigChanged", "EmptyStageError", "run_staged", "STAGE_MARKER", "SUMMARY_FILE"]

STAGE_MARKER = "stage_done.json"
SUMMARY_FILE = "summary.json"


class StageConfigChanged(RuntimeError):
    """A stage marked done was trained with other settings than the recipe now asks for."""


class EmptyStageError(ValueError):
    """A stage's training file has no rows and the stage does not say ``on_empty: skip``."""


@dataclass
class StageSummary:
    name: str
    kind: str
    status: str  # trained | resumed | skipped (done earlier)
    steps: int
    final_loss: float | None
    final_reward: float | None
    zero_variance_frac: float | None
    checkpoint: str
    started_from: str
    seconds: float
    frozen_vision: bool = False
    dropped_rows: int = 0


def _fingerprint(section: dict, model: str, freeze: bool) -> str:
    blob = json.dumps({"section": section, "model": model, "freeze_vision": freeze}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_staged(
    recipe: StagedRecipe,
    *,
    progress: Callable[[str, int | None], Callable[[int], None]] | None = None,
    report: Callable[[str], None] | None = None,
    on_stage_start: Callable[[int, str, str], None] | None = None,
) -> list[StageSummary]:
    """Run (or skip / resume) every stage in order; returns the per-stage summaries (also ``summary.json``)."""
    from curation.core.io import write_json_atomic

    from .grpo import train_grpo
    from .sft import train_sft
    from .utils import parquet_num_rows

    say = report or (lambda s: None)
    recipe.output_dir.mkdir(parents=True, exist_ok=True)
    # empty inputs are found before stage 1 trains (an empty stage 3 must not waste stages 1 and 2)
    empty = {i for i, st in enumerate(recipe.stages)
             if not (Path(st.section["output_dir"]) / STAGE_MARKER).exists() and parquet_num_rows(_train_path(st)) == 0}
    for i in sorted(empty):
        st = recipe.stages[i]
        if st.on_empty != "skip":
            raise EmptyStageError(
                f"stage {i + 1} {st.name!r}: {_train_path(st)} has no rows, nothing to train on; "
                f"fix the input or set staged.stages.{i}.on_empty=skip to run the other stages without it"
            )
    model = recipe.model
    summaries: list[StageSummary] = []
    for i, stage in enumerate(recipe.stages):
        start_model = stage.model or model
        out = Path(stage.section["output_dir"])
        marker = out / STAGE_MARKER
        fp = _fingerprint(stage.section, str(start_model), stage.freeze_vision)
        if marker.exists():
            done = json.loads(marker.read_text())
            if done.get("fingerprint") != fp:
                raise StageConfigChanged(
                    f"stage {stage.name!r} in {out} was finished with other settings or another starting model "
                    f"(started from {done.get('started_from')}); delete {out} to retrain it, or use a new "
                    "staged.output_dir"
                )
            s = StageSummary(**{**done["summary"], "status": "skipped (done earlier)"})
            say(f"stage {i + 1} {stage.name}: already done -> {s.checkpoint}")
            summaries.append(s)
            model = s.checkpoint
            continue
        if i in empty:
            say(f"stage {i + 1} {stage.name}: skipped, {_train_path(stage)} has no rows "
                f"(on_empty: skip); the next stage starts from {start_model}")
            summaries.append(StageSummary(
                name=stage.name, kind=stage.kind, status="skipped (no training rows)", steps=0, final_loss=None,
                final_reward=None, zero_variance_frac=None, checkpoint=str(start_model),
                started_from=str(start_model), seconds=0.0, frozen_vision=stage.freeze_vision))
            model = start_model
            continue
        if on_stage_start:
            on_stage_start(i, stage.name, stage.kind)
        say(f"stage {i + 1} {stage.name} ({stage.kind}) from {start_model}")
        t0 = time.perf_counter()
        if stage.kind == "sft":
            r = build_sft_recipe(stage.section, str(start_model), where=f"staged.stages.{i}")
            res = train_sft(r, resume=True, progress=progress, report=say, freeze_vision=stage.freeze_vision)
        else:
            r = build_grpo_recipe(stage.section, str(start_model), where=f"staged.stages.{i}")
            res = train_grpo(r, resume=True, progress=progress, report=say, freeze_vision=stage.freeze_vision)
        s = StageSummary(
            name=stage.name,
            kind=stage.kind,
            status="resumed" if res.resumed_from else "trained",
            steps=res.steps,
            final_loss=res.final_loss,
            final_reward=res.final_reward,
            zero_variance_frac=res.zero_variance_frac,
            checkpoint=res.final_dir,
            started_from=str(start_model),
            seconds=round(time.perf_counter() - t0, 2),
            frozen_vision=stage.freeze_vision,
            dropped_rows=res.dropped,
        )
        if _is_main_process():  # under accelerate launch, one writer (finish_run already synchronised ranks)
            write_json_atomic({"fingerprint": fp, "started_from": str(start_model), "summary": asdict(s),
                               "result": res.to_json()}, marker)
        summaries.append(s)
        model = res.final_dir
    if _is_main_process():
        write_json_atomic({"stages": [asdict(s) for s in summaries], "final_checkpoint": str(model)},
                          recipe.output_dir / SUMMARY_FILE)
    return summaries


def _train_path(stage: Any) -> str:
    data = stage.section["data"]
    return str(data["train"] if isinstance(data, dict) else data)


def _is_main_process() -> bool:
    """True in a single process, and on the main process of an ``accelerate launch`` run."""
    from accelerate import PartialState

    return PartialState().is_main_process


def summary_rows(summaries: list[StageSummary]) -> list[dict[str, Any]]:
    """Rows for the CLI table."""

    def f(x: float | None, nd: int = 4) -> str:
        return "-" if x is None else f"{x:.{nd}g}"

    return [
        {"stage": s.name, "kind": s.kind, "status": s.status, "steps": str(s.steps), "final loss": f(s.final_loss),
         "final reward": f(s.final_reward), "zero-var frac": f(s.zero_variance_frac, 3), "checkpoint": s.checkpoint}
        for s in summaries
    ]
