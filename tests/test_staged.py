"""`train staged` end to end on CPU with a tiny Qwen2-VL and the shipped CPU recipe (pipelines/staged_cpu.yaml):
stage 1 text SFT on the VL model, stage 2 GRPO with MATH-Vision images (+VAS, +PAD), stage 3 text GRPO with
the vision tower frozen - its weights must come out bit-identical.  Then: a re-run skips finished stages, an
interrupted stage resumes from its last checkpoint, and changed settings of a finished stage are refused."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file
from test_train_grpo import write_rl_mm, write_rl_text
from test_train_sft import write_sft_text

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "pipelines" / "staged_cpu.yaml"


def _overrides(tmp: Path, model: Path, sft: Path, rl_mm: Path, rl_text: Path) -> list[str]:
    return [
        f"model={model}", f"staged.output_dir={tmp / 'staged'}",
        f"staged.stages.0.data.train={sft}", f"staged.stages.1.data.train={rl_mm}",
        f"staged.stages.2.data.train={rl_text}",
        "sft.max_steps=2", "sft.save_steps=1", "grpo.max_steps=2", "grpo.save_steps=1",
        "grpo.max_completion_length=12", "grpo.rewards.length.budget=8", "sft.disable_tqdm=true",
        "grpo.disable_tqdm=true",
    ]


def _visual(path: Path) -> dict:
    t = load_file(str(Path(path) / "model.safetensors"))
    return {k: v for k, v in t.items() if "visual" in k}


def _language(path: Path) -> dict:
    t = load_file(str(Path(path) / "model.safetensors"))
    return {k: v for k, v in t.items() if "visual" not in k}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_cpu_recipe_parses_into_three_stages():
    from training.config import load_staged_recipe

    r = load_staged_recipe(RECIPE)
    assert [(s.name, s.kind, s.freeze_vision) for s in r.stages] == [
        ("cold_start", "sft", False), ("mm_rl", "grpo", False), ("text_rl", "grpo", True)]
    # stage sections = the kind's defaults + the stage's own keys
    assert r.stages[1].section["pad"]["enabled"] is True and r.stages[2].section["pad"]["enabled"] is False
    assert r.stages[2].section["output_dir"].endswith("text_rl")


@pytest.mark.slow
def test_staged_end_to_end_freeze_skip_resume(tmp_path, tiny_qwen2_vl_dir):
    from typer.testing import CliRunner

    from training.cli import app
    from training.config import load_staged_recipe
    from training.stages import STAGE_MARKER, StageConfigChanged, run_staged

    sft = write_sft_text(tmp_path / "sft.parquet", n=6)
    rl_mm = write_rl_mm(tmp_path / "rl_mm.parquet", n=4)
    rl_text = write_rl_text(tmp_path / "rl_text.parquet", n=4)
    ov = _overrides(tmp_path, tiny_qwen2_vl_dir, sft, rl_mm, rl_text)
    notes: list[str] = []
    summaries = run_staged(load_staged_recipe(RECIPE, ov), report=notes.append)

    assert [s.status for s in summaries] == ["trained"] * 3
    assert [s.steps for s in summaries] == [2, 2, 2]
    assert summaries[1].started_from == summaries[0].checkpoint
    assert summaries[2].started_from == summaries[1].checkpoint
    assert summaries[2].frozen_vision and any("vision tower frozen" in n for n in notes)
    assert summaries[0].final_loss > 0 and summaries[1].zero_variance_frac is not None
    summary = json.loads((tmp_path / "staged" / "summary.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["cold_start", "mm_rl", "text_rl"]
    assert summary["final_checkpoint"] == summaries[2].checkpoint

    ck = [Path(s.checkpoint) for s in summaries]
    # stage 1 trains on text only: the vision tower gets no gradient
    assert _same(_visual(tiny_qwen2_vl_dir), _visual(ck[0]))
    # stage 2 sees images: the vision tower moves
    assert not _same(_visual(ck[0]), _visual(ck[1]))
    # stage 3: vision frozen -> bit-identical vision weights, while the language model did train
    assert _same(_visual(ck[1]), _visual(ck[2]))
    assert not _same(_language(ck[1]), _language(ck[2]))

    # re-run through the CLI: every stage is skipped, the summary table is printed
    res = CliRunner().invoke(app, ["staged", "--config", str(RECIPE), *ov], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    assert res.output.count("already done") == 3 and res.output.count("skipped (done earlier)") == 3
    rerun = json.loads((tmp_path / "staged" / "summary.json").read_text())
    assert [s["status"] for s in rerun["stages"]] == ["skipped (done earlier)"] * 3

    # an interrupted stage 3: no marker, no final model, only checkpoint-1 -> resumes from it
    stage3 = tmp_path / "staged" / "text_rl"
    (stage3 / STAGE_MARKER).unlink()
    shutil.rmtree(stage3 / "final")
    shutil.rmtree(stage3 / "checkpoint-2")
    again = run_staged(load_staged_recipe(RECIPE, ov))
    assert [s.status for s in again] == ["skipped (done earlier)"] * 2 + ["resumed"]
    assert again[2].steps == 2
    marker = json.loads((stage3 / STAGE_MARKER).read_text())
    assert marker["result"]["resumed_from"].endswith("checkpoint-1")
    assert _same(_visual(ck[1]), _visual(Path(again[2].checkpoint)))

    # a finished stage whose settings changed is refused, not silently reused
    with pytest.raises(StageConfigChanged, match="text_rl"):
        run_staged(load_staged_recipe(RECIPE, [*ov, "staged.stages.2.learning_rate=5e-4"]))


def _empty_sft(path: Path) -> Path:
    """An SFT table with the right schema and no rows (what `curate cot` writes when it accepts nothing)."""
    from curation.core import schema as S
    from curation.core.io import write_parquet_atomic

    return write_parquet_atomic(S.to_table([], "sft_text"), path)


def test_empty_stage_input_stops_before_any_training(tmp_path, tiny_qwen2_vl_dir):
    """An empty stage-3 input is refused before stage 1 trains, naming the stage, the file and the fix."""
    from training.config import load_staged_recipe
    from training.stages import EmptyStageError, run_staged

    sft = write_sft_text(tmp_path / "sft.parquet", n=4)
    rl_mm = write_rl_mm(tmp_path / "rl_mm.parquet", n=4)
    empty = _empty_sft(tmp_path / "rl_text_empty.parquet")
    ov = _overrides(tmp_path, tiny_qwen2_vl_dir, sft, rl_mm, empty)
    with pytest.raises(EmptyStageError, match=r"stage 3 'text_rl'.*rl_text_empty\.parquet has no rows.*"
                                              r"staged\.stages\.2\.on_empty=skip"):
        run_staged(load_staged_recipe(RECIPE, ov))
    assert not (tmp_path / "staged" / "cold_start").exists()


def test_empty_training_file_gets_a_clear_error(tmp_path):
    from training.utils import EmptyDatasetError, load_parquet_dataset

    with pytest.raises(EmptyDatasetError, match="has no rows, nothing to train on"):
        load_parquet_dataset(_empty_sft(tmp_path / "sft.parquet"))


@pytest.mark.slow
def test_empty_stage_with_on_empty_skip_runs_the_other_stages(tmp_path, tiny_qwen2_vl_dir):
    """`curate cot` accepted nothing: stage 1 is skipped, stage 2 starts from the base model, summary says so."""
    from training.config import load_staged_recipe
    from training.stages import run_staged

    empty = _empty_sft(tmp_path / "sft.parquet")
    rl_mm = write_rl_mm(tmp_path / "rl_mm.parquet", n=4)
    rl_text = write_rl_text(tmp_path / "rl_text.parquet", n=4)
    ov = [*_overrides(tmp_path, tiny_qwen2_vl_dir, empty, rl_mm, rl_text), "staged.stages.0.on_empty=skip",
          "grpo.max_steps=1"]
    notes: list[str] = []
    summaries = run_staged(load_staged_recipe(RECIPE, ov), report=notes.append)
    assert [s.status for s in summaries] == ["skipped (no training rows)", "trained", "trained"]
    assert summaries[0].steps == 0 and summaries[1].started_from == str(tiny_qwen2_vl_dir)
    assert any("skipped" in n and "has no rows" in n for n in notes)
    summary = json.loads((tmp_path / "staged" / "summary.json").read_text())
    assert summary["stages"][0]["status"] == "skipped (no training rows)"
    assert summary["final_checkpoint"] == summaries[2].checkpoint
