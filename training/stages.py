"""``train staged``: ReVisual-R1's curriculum, each stage starting from the previous stage's final checkpoint.

    stage 1  cold_start  SFT on text reasoning data          (kind: sft)
    stage 2  mm_rl       GRPO on multimodal problems + VAS    (kind: grpo; PAD optional)
    stage 3  text_rl     GRPO on text problems, vision tower frozen (kind: grpo, freeze_vision: true)

Stages are whatever the recipe lists (any number, any order of ``sft`` / ``grpo``); each stage's section is the
top-level ``sft:`` / ``grpo:`` section deep-merged with the stage's own keys, and its ``output_dir`` is
``<staged.output_dir>/<stage name>``.

Before anything trains, every stage is checked (:func:`training.plan.plan_recipe`: imports, data sizes,
TRL's batch rules, launcher / recipe agreement, vLLM context and memory for the launch it runs under); a run
that cannot start or cannot fit is refused naming the setting to change.

Each stage in its own process
-----------------------------
A stage runs in a fresh process (``python -m training.cli stage-run``, the interpreter and environment of
the parent) whenever the run is distributed or on a GPU (``isolation="auto"``; ``"process"`` / ``"inline"``
force one or the other, ``RLCURATE_STAGE_ISOLATION`` or ``train staged --isolation``).  Why, rather than
building the next trainer in the same process:

- accelerate keeps one process-wide ``AcceleratorState`` / DeepSpeed plugin, transformers a global
  DeepSpeed-config weak reference, torch its default process group and CUDA caching allocator, vLLM (TRL's
  colocate mode) its own distributed state.  transformers does reset accelerate's state whenever a
  ``TrainingArguments`` is built, so on CPU the in-process handover works (reproduced: SFT -> GRPO -> GRPO
  under ``accelerate launch`` with the ZeRO-3 config, 1 and 2 gloo ranks) - but only as long as nothing
  builds a later stage's config before the current trainer, no engine or optimizer of the last stage is
  still referenced (its GPU memory stays allocated), and no vLLM engine is alive: vLLM's teardown destroys
  the default process group, which the next stage's trainer needs.  A fresh process has none of these
  states by construction; the cost is one model load per stage, which a checkpoint handover pays anyway.
- Under ``accelerate launch`` (torchrun) every rank's driver starts its own stage process, with the rank,
  world size and ``ACCELERATE_*`` variables unchanged, a fresh ``MASTER_PORT`` - picked by rank 0, sent to
  the others over a gloo group of the drivers - and ``TORCHELASTIC_USE_AGENT_STORE=False``, so the stage's
  rank 0 hosts its own rendezvous store: reusing the launcher's store (the keys of the previous stage's
  group are still in it) makes the second stage's rendezvous fail.  Re-running ``accelerate launch`` from
  rank 0 only would start N more processes, and need N more GPUs.
- The drivers hold no GPU memory and join no NCCL group: the up-front checks build configs detached from
  the launcher (:func:`training.config.detached_from_launch`), coordination is gloo on the CPU.
- A stage process that fails makes its driver exit non-zero at once; torchelastic then stops every rank
  (the stage processes are in the ranks' process groups, so they go too).  Re-running the same command
  resumes.
- ``inline`` (one process for all stages) is kept for CPU runs and tests, where it is faster and was
  verified to work.

Resumability:

- a finished stage leaves ``<stage dir>/stage_done.json`` (written atomically, last, by the stage's main
  process): its result, the model it started from and a fingerprint of its settings.  A re-run skips it and
  starts the next stage from its ``final/`` checkpoint.  If the settings changed since, the run stops with an
  error instead of silently reusing a stage trained differently.
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
import os
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

from .config import StagedRecipe, build_grpo_recipe, build_sft_recipe

__all__ = ["StageSummary", "StageConfigChanged", "StageFailed", "EmptyStageError", "run_stage", "run_staged",
           "stage_isolation", "STAGE_MARKER", "SUMMARY_FILE"]

STAGE_MARKER = "stage_done.json"
SUMMARY_FILE = "summary.json"
ISOLATION_ENV = "RLCURATE_STAGE_ISOLATION"  # auto | inline | process
CHILD_ENV = "RLCURATE_STAGE_PROCESS"  # set in a stage process
DRIVER_TIMEOUT_S = 6 * 3600  # how long a rank's driver waits for the others between stages


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


def stage_isolation(requested: str | None = None) -> str:
    """``inline`` or ``process`` for ``requested`` (``auto`` / None: ``$RLCURATE_STAGE_ISOLATION``, else
    ``process`` when launched distributed or on a machine with a GPU, ``inline`` otherwise)."""
    mode = (requested or os.environ.get(ISOLATION_ENV) or "auto").lower()
    if mode not in ("auto", "inline", "process"):
        raise ValueError(f"stage isolation must be auto, inline or process, got {mode!r}")
    if mode != "auto":
        return mode
    if os.environ.get(CHILD_ENV):
        return "inline"
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 or "MASTER_PORT" in os.environ:
        return "process"
    import torch

    return "process" if torch.cuda.is_available() else "inline"


def run_staged(
    recipe: StagedRecipe,
    *,
    progress: Callable[[str, int | None], Callable[[int], None]] | None = None,
    report: Callable[[str], None] | None = None,
    on_stage_start: Callable[[int, str, str], None] | None = None,
    isolation: str | None = None,
) -> list[StageSummary]:
    """Run (or skip / resume) every stage in order; returns the per-stage summaries (also ``summary.json``).

    ``isolation`` (module docstring): ``process`` runs each stage in its own process (``progress`` and
    ``report`` then stay unused: the stage process prints its own), ``inline`` in this one."""
    from curation.core.io import write_json_atomic

    from .utils import parquet_num_rows

    say = report or (lambda s: None)
    mode = stage_isolation(isolation)
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
    peers = _Peers() if mode == "process" else None
    try:
        model = recipe.model
        summaries: list[StageSummary] = []
        for i, stage in enumerate(recipe.stages):
            start_model = stage.model or model
            out = Path(stage.section["output_dir"])
            marker = out / STAGE_MARKER
            if marker.exists():
                s = _done_summary(stage, marker, str(start_model))
                say(f"stage {i + 1} {stage.name}: already done -> {s.checkpoint}")
                summaries.append(s)
                model = s.checkpoint
                continue
            if i in empty:
                say(f"stage {i + 1} {stage.name}: skipped, {_train_path(stage)} has no rows "
                    f"(on_empty: skip); the next stage starts from {start_model}")
                summaries.append(StageSummary(
                    name=stage.name, kind=stage.kind, status="skipped (no training rows)", steps=0,
                    final_loss=None, final_reward=None, zero_variance_frac=None, checkpoint=str(start_model),
                    started_from=str(start_model), seconds=0.0, frozen_vision=stage.freeze_vision))
                model = start_model
                continue
            if on_stage_start:
                on_stage_start(i, stage.name, stage.kind)
            say(f"stage {i + 1} {stage.name} ({stage.kind}) from {start_model}"
                + (" - in its own process" if mode == "process" else ""))
            if mode == "inline":
                s = run_stage(recipe, i, str(start_model), progress=progress, report=say)
            else:
                s = _run_stage_process(recipe, i, str(start_model), peers)
            summaries.append(s)
            model = s.checkpoint
        if _is_main_process():
            write_json_atomic({"stages": [asdict(s) for s in summaries], "final_checkpoint": str(model)},
                              recipe.output_dir / SUMMARY_FILE)
        return summaries
    finally:
        if peers is not None:
            peers.close()


def run_stage(recipe: StagedRecipe, i: int, start_model: str, *,
              progress: Callable[[str, int | None], Callable[[int], None]] | None = None,
              report: Callable[[str], None] | None = None) -> StageSummary:
    """Train stage ``i`` from ``start_model`` in this process (resuming from its last checkpoint) and write
    its marker (main process); what ``inline`` runs for each stage and ``train stage-run`` for one."""
    from curation.core.io import write_json_atomic

    from .grpo import train_grpo
    from .sft import train_sft

    say = report or (lambda s: None)
    stage = recipe.stages[i]
    out = Path(stage.section["output_dir"])
    fp = _fingerprint(stage.section, str(start_model), stage.freeze_vision)
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
                           "result": res.to_json()}, out / STAGE_MARKER)
    return s


def _done_summary(stage: Any, marker: Path, start_model: str,
                  status: str | None = "skipped (done earlier)") -> StageSummary:
    """The summary in a stage's marker, after checking it was trained with the settings asked for now."""
    done = json.loads(marker.read_text())
    if done.get("fingerprint") != _fingerprint(stage.section, start_model, stage.freeze_vision):
        raise StageConfigChanged(
            f"stage {stage.name!r} in {marker.parent} was finished with other settings or another starting model "
            f"(started from {done.get('started_from')}); delete {marker.parent} to retrain it, or use a new "
            "staged.output_dir"
        )
    return StageSummary(**{**done["summary"], **({"status": status} if status else {})})


class StageFailed(RuntimeError):
    """A stage process exited non-zero."""


class _Peers:
    """The ranks' drivers under a launcher: a gloo group (CPU only, no GPU memory) to agree on each stage's
    rendezvous port and to wait for one another between stages.  A single process has no peers."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        self.rank = int(os.environ.get("RANK", "0") or 0)
        self.launched = "MASTER_PORT" in os.environ
        self._own_group = False
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo", timeout=timedelta(seconds=DRIVER_TIMEOUT_S))
                self._own_group = True

    def fresh_port(self) -> int | None:
        if not self.launched:
            return None
        port = [_free_port() if self.rank == 0 else None]
        if self.world > 1:
            import torch.distributed as dist

            dist.broadcast_object_list(port, src=0)
        return int(port[0])

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self._own_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._own_group = False


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _run_stage_process(recipe: StagedRecipe, i: int, start_model: str, peers: _Peers) -> StageSummary:
    """Stage ``i`` in a fresh process on every rank (module docstring); returns its summary from the marker."""
    import subprocess
    import sys
    import tempfile

    import yaml

    stage = recipe.stages[i]
    if recipe.raw is None:
        raise ValueError("a StagedRecipe built without its raw mapping cannot run stages in their own processes; "
                         "build it with training.config.build_staged_recipe")
    port = peers.fresh_port()
    env = dict(os.environ)
    env[CHILD_ENV] = "1"
    if port is not None:
        env["MASTER_PORT"] = str(port)
        env["TORCHELASTIC_USE_AGENT_STORE"] = "False"
    with tempfile.TemporaryDirectory(prefix="rlcurate-stage-") as tmp:
        path = Path(tmp) / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe.raw, sort_keys=False))
        cmd = [sys.executable, "-m", "training.cli", "stage-run", "--recipe", str(path), "--stage", str(i),
               "--start-model", start_model]
        rc = subprocess.run(cmd, env=env).returncode
    if rc != 0:
        raise StageFailed(
            f"stage {i + 1} {stage.name!r} failed (its process exited with code {rc}; its error is printed above). "
            "Re-run the same command: finished stages are skipped and this one resumes from its last checkpoint-*")
    peers.barrier()  # rank 0's stage process has written the marker before it exited
    marker = Path(stage.section["output_dir"]) / STAGE_MARKER
    if not marker.exists():
        raise StageFailed(f"stage {i + 1} {stage.name!r}: its process exited cleanly but left no {marker}")
    return _done_summary(stage, marker, start_model, status=None)


def _train_path(stage: Any) -> str:
    data = stage.section["data"]
    return str(data["train"] if isinstance(data, dict) else data)


def _is_main_process() -> bool:
    """True in a single process, and on the main process (``RANK`` 0) of an ``accelerate launch`` run; read
    from the environment, so a driver never builds accelerate's state (which would join NCCL, pick a GPU)."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def summary_rows(summaries: list[StageSummary]) -> list[dict[str, Any]]:
    """Rows for the CLI table."""

    def f(x: float | None, nd: int = 4) -> str:
        return "-" if x is None else f"{x:.{nd}g}"

    return [
        {"stage": s.name, "kind": s.kind, "status": s.status, "steps": str(s.steps), "final loss": f(s.final_loss),
         "final reward": f(s.final_reward), "zero-var frac": f(s.zero_variance_frac, 3), "checkpoint": s.checkpoint}
        for s in summaries
    ]
