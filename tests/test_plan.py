"""`train plan` and the per-GPU memory arithmetic (training/memory.py, training/plan.py).

Model sizes come from config.json files with the real numbers of Qwen/Qwen2.5-VL-7B-Instruct and
Qwen/Qwen2.5-7B-Instruct (as published on the Hub; no weights needed: parameters are counted on the meta
device).  GPUs cannot exist here: the plans are made for a given number of GPUs and GiB per GPU.  vLLM for
CUDA cannot be installed here either: where a plan must see it installed, a stub package named ``vllm``
(version 0.31.0) is put on ``sys.path``; everywhere else the real absence of vLLM is what is checked."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGED_7B = REPO / "pipelines" / "revisual_r1_7b_staged.yaml"
GIB = 1024**3

QWEN25_VL_7B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151645, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "vision_token_id": 151654, "image_token_id": 151655, "video_token_id": 151656, "hidden_act": "silu",
    "hidden_size": 3584, "initializer_range": 0.02, "intermediate_size": 18944, "max_position_embeddings": 128000,
    "max_window_layers": 28, "model_type": "qwen2_5_vl", "num_attention_heads": 28, "num_hidden_layers": 28,
    "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False,
    "vision_config": {"depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420,
                      "num_heads": 16, "in_chans": 3, "out_hidden_size": 3584, "patch_size": 14,
                      "spatial_merge_size": 2, "spatial_patch_size": 14, "window_size": 112,
                      "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2, "temporal_patch_size": 2},
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "vocab_size": 152064,
}
QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"], "hidden_act": "silu", "hidden_size": 3584, "intermediate_size": 18944,
    "max_position_embeddings": 32768, "model_type": "qwen2", "num_attention_heads": 28, "num_hidden_layers": 28,
    "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "vocab_size": 152064,
}


def _model(tmp: Path, name: str, cfg: dict) -> Path:
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.fixture(scope="module")
def vl7b(tmp_path_factory) -> Path:
    return _model(tmp_path_factory.mktemp("models"), "Qwen2.5-VL-7B-Instruct", QWEN25_VL_7B)


@pytest.fixture(scope="module")
def dims7b(vl7b):
    from training.memory import model_dims

    return model_dims(vl7b)


@pytest.fixture(scope="module")
def rl_sets(tmp_path_factory) -> dict:
    """SFT and RL tables big enough for the 7B recipe's generation batch (512 prompts), and the 40-prompt
    multimodal demo set the recipe pointed at before."""
    from test_train_grpo import write_rl_mm, write_rl_text
    from test_train_sft import write_sft_text

    d = tmp_path_factory.mktemp("rlsets")
    return {"sft": write_sft_text(d / "sft.parquet", n=600), "rl": write_rl_text(d / "rl.parquet", n=600),
            "mm40": write_rl_mm(d / "rl_mm40.parquet", n=40)}


@pytest.fixture()
def vllm_stub(tmp_path, monkeypatch):
    """A package named vllm 0.31.0 on sys.path (vLLM for CUDA cannot be installed on this machine)."""
    d = tmp_path / "stub"
    (d / "vllm").mkdir(parents=True)
    (d / "vllm" / "__init__.py").write_text("")
    meta = d / "vllm-0.31.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.31.0\n")
    monkeypatch.syspath_prepend(str(d))
    import importlib

    importlib.invalidate_caches()
    return d


def _overrides(model: Path, sets: dict, out: Path, mm: Path | None = None) -> list[str]:
    return [f"model={model}", f"staged.output_dir={out}", f"staged.stages.0.data.train={sets['sft']}",
            f"staged.stages.1.data.train={mm or sets['rl']}", f"staged.stages.2.data.train={sets['rl']}"]


# --- memory arithmetic -------------------------------------------------------------------------------------


def test_parameter_counts_from_config_json(tmp_path, dims7b):
    from training.memory import model_dims

    # exact counts of the two architectures (instantiated on the meta device)
    assert dims7b.params == 8_292_166_656 and dims7b.vision_params == 676_550_144
    assert (dims7b.layers, dims7b.hidden, dims7b.kv_heads, dims7b.head_dim, dims7b.vocab) == (28, 3584, 4, 128, 152064)
    assert dims7b.max_position_embeddings == 128000
    text = model_dims(_model(tmp_path, "Qwen2.5-7B-Instruct", QWEN25_7B))
    assert text.params == 7_615_616_512 and text.vision_params == 0


def test_model_state_formulas_per_zero_stage(dims7b):
    """ZeRO paper, K = 12 (fp32 master + Adam m, v): DDP 16 Psi, ZeRO-1 4 Psi + 12 Psi/N, ZeRO-2 2 Psi + 14 Psi/N,
    ZeRO-3 16 Psi/N; pure bf16 DDP 8 Psi."""
    from training.memory import model_state_bytes, reference_bytes

    P, N = 7_615_616_512, 8
    tot = {s: sum(model_state_bytes(P, P, N, s)) for s in ("ddp", "zero1", "zero2", "zero3", "fsdp")}
    assert tot["ddp"] == 16 * P
    assert tot["zero1"] == 4 * P + 12 * P / N
    assert tot["zero2"] == 2 * P + 14 * P / N
    assert tot["zero3"] == 16 * P / N == tot["fsdp"]
    assert round(tot["ddp"] / 1e9) == 122 and round(tot["zero3"] / 1e9, 1) == 15.2  # NOTES.md's table
    assert sum(model_state_bytes(P, P, N, "ddp", param_bytes=2)) == 8 * P
    # frozen parameters have no gradients and no optimizer states
    w, g, o = model_state_bytes(P, P - 10**9, N, "zero3")
    assert w == 2 * P / N and g == 2 * (P - 10**9) / N and o == 12 * (P - 10**9) / N
    # the reference model: sharded under ZeRO-3, a full bf16 copy under ZeRO-2 (stage 0), the load dtype under DDP
    assert reference_bytes(P, N, "zero3") == 2 * P / N
    assert reference_bytes(P, N, "zero2") == 2 * P
    assert reference_bytes(P, N, "ddp") == 4 * P


def test_activation_and_kv_cache_arithmetic(dims7b):
    from training.memory import (
        VLLM_OVERHEAD_BYTES,
        activation_bytes,
        kv_bytes_per_token,
        kv_cache_tokens,
        layer_activation_bytes_per_token,
    )

    h, inter, L = 3584, 18944, 28
    assert layer_activation_bytes_per_token(dims7b) == 12 * h + 8 * inter + 4 * 4 * 128 == 196_608
    T = 16384
    full = activation_bytes(dims7b, T, gradient_checkpointing=False)
    gc = activation_bytes(dims7b, T, gradient_checkpointing=True)
    assert full == T * L * 196_608
    assert gc == T * (L * 2 * h + 196_608) and full / gc > 10  # checkpointing keeps only the layer inputs
    assert kv_bytes_per_token(dims7b) == 2 * 28 * 4 * 128 * 2 == 57_344  # 56 KiB per token (bf16)
    assert kv_bytes_per_token(dims7b, tensor_parallel=2) == 57_344 / 2
    tokens = kv_cache_tokens(dims7b, 80 * GIB, 0.35)
    assert tokens == int((0.35 * 80 * GIB - 2 * dims7b.params - VLLM_OVERHEAD_BYTES) // 57_344)
    assert 150_000 < tokens < 250_000  # ~10.5 GiB of KV cache: room for 12 sequences of 16384 tokens
    assert kv_cache_tokens(dims7b, 40 * GIB, 0.35) == 0  # 14 GiB does not even hold the 15.4 GiB of weights


def test_pure_bf16_adam_loses_small_updates():
    """Why the plan refuses pure bf16 training: the same AdamW step (lr 1e-6) on bf16 weights leaves almost
    every weight unchanged, on fp32 weights it changes all of them."""
    import torch

    torch.manual_seed(0)
    w0 = torch.randn(100_000) * 0.02
    changed = {}
    for dtype in (torch.float32, torch.bfloat16):
        p = torch.nn.Parameter(w0.clone().to(dtype))
        opt = torch.optim.AdamW([p], lr=1e-6, weight_decay=0.0)
        p.grad = torch.randn_like(p)
        before = p.detach().clone()
        opt.step()
        changed[dtype] = (p.detach() != before).float().mean().item()
    assert changed[torch.float32] > 0.99
    assert changed[torch.bfloat16] < 0.2


# --- the plan ------------------------------------------------------------------------------------------


def _run_plan(args: list[str]):
    from typer.testing import CliRunner

    from training.cli import app

    return CliRunner().invoke(app, ["plan", *args], env={"COLUMNS": "250"})


def test_plan_refuses_the_7b_ddp_launch_and_accepts_zero3(tmp_path, vl7b, rl_sets, vllm_stub):
    ov = _overrides(vl7b, rl_sets, tmp_path / "run")
    common = ["--config", str(STAGED_7B), *ov, "--gpus", "8", "--gpu-mem", "80"]
    ddp = _run_plan([*common, "--accelerate-config", str(REPO / "pipelines/accelerate/ddp_gpu.yaml")])
    assert ddp.exit_code == 1 and isinstance(ddp.exception, SystemExit), repr(ddp.exception)  # refused, no crash
    out = " ".join(ddp.output.split())
    # every stage is named with its estimate and the reason, and the launch that passes is given
    for stage in ("stage 1 cold_start", "stage 2 mm_rl", "stage 3 text_rl"):
        assert f"FAIL {stage}: needs ~" in out
    assert "under DDP (weights 30.9 + grads 30.9 + optimizer 61.8" in out  # 16 bytes per parameter unsharded
    assert "> 80.0 GiB" in out
    assert "this launch (DDP) is refused; ZeRO-3 passes: `accelerate launch --config_file " \
           "pipelines/accelerate/zero3.yaml --num_processes 8 -m training.cli staged" in out

    z3 = _run_plan([*common, "--accelerate-config", str(REPO / "pipelines/accelerate/zero3.yaml")])
    assert z3.exit_code == 0, z3.output
    out = " ".join(z3.output.split())
    assert "FAIL" not in out and "ok - launch with:" in out and "zero3.yaml --num_processes 8" in out
    # the estimate itself: every stage under 80 GiB, the GRPO stages with vLLM's 0.35 share
    from training.config import load_raw
    from training.plan import launch_from_accelerate_config, plan_recipe

    plan = plan_recipe(load_raw(STAGED_7B, ov), launch=launch_from_accelerate_config(
        REPO / "pipelines/accelerate/zero3.yaml", gpus=8, gpu_bytes=80 * GIB))
    assert not plan.refused
    for s in plan.stages:
        est = s.memory["zero3"]
        assert est.total < 80 * GIB
        assert est.optimizer == pytest.approx(12 * (plan.dims.params - (plan.dims.vision_params if s.name == "text_rl"
                                                                        else 0)) / 8)
        if s.kind == "grpo":
            assert est.vllm == pytest.approx(0.35 * 80 * GIB) and est.reference == pytest.approx(2 * plan.dims.params / 8)
            assert s.geometry["prompts_per_generation"] == 512 and s.kv["kv_tokens"] >= 16384

    # without a launch, the plan recommends the first of DDP / ZeRO-2 / ZeRO-3 that fits
    rec = _run_plan(common)
    assert rec.exit_code == 0, rec.output
    assert "zero3.yaml --num_processes 8" in " ".join(rec.output.split())


def test_plan_refuses_pure_bf16_under_ddp_not_under_deepspeed(vl7b, rl_sets, tmp_path, vllm_stub):
    from training.config import load_raw
    from training.plan import Launch, plan_recipe

    raw = load_raw(STAGED_7B, [*_overrides(vl7b, rl_sets, tmp_path / "run"), "sft.model_init_kwargs.dtype=bfloat16"])
    big = 1000 * GIB  # memory is not what this test is about
    ddp = plan_recipe(raw, launch=Launch(strategy="ddp", gpus=8, gpu_bytes=big, origin="accelerate config"))
    msgs = [str(f) for f in ddp.failures]
    assert any("stage 1 cold_start: model_init_kwargs.dtype: bfloat16 under DDP trains in pure bf16" in m
               and "Remove staged.stages.0.model_init_kwargs.dtype" in m for m in msgs), msgs
    z3 = plan_recipe(raw, launch=Launch(strategy="zero3", gpus=8, gpu_bytes=big, origin="accelerate config"))
    assert not any("pure bf16" in str(f) for f in z3.all_findings())


def test_plan_finds_what_used_to_fail_hours_later(tmp_path, vl7b, rl_sets, monkeypatch):
    """No vLLM, no DeepSpeed, a 40-prompt RL set for a 512-prompt generation batch, an unset
    vllm_max_model_length whose 128k context the KV cache cannot hold - all before stage 1."""
    from training.config import load_raw
    from training.plan import Launch, plan_recipe

    monkeypatch.setitem(sys.modules, "deepspeed", None)  # an environment without DeepSpeed
    raw = load_raw(STAGED_7B, [*_overrides(vl7b, rl_sets, tmp_path / "run", mm=rl_sets["mm40"]),
                               "grpo.vllm_max_model_length=null"])
    plan = plan_recipe(raw, launch=Launch(strategy="zero3", gpus=8, gpu_bytes=64 * GIB, origin="accelerate config"))
    msgs = [str(f) for f in plan.failures]
    assert plan.refused

    def has(*parts):
        return any(all(p in m for p in parts) for m in msgs)

    assert has("run: DeepSpeed is not installed", "pip install -e '.[deepspeed]'")
    assert has("stage 2 mm_rl: staged.stages.1.use_vllm is true but vLLM is not installed")
    assert has("stage 2 mm_rl: staged.stages.1.data.train has 40 prompts, fewer than one generation batch needs "
               "(512 = generation_batch_size 4096 / num_generations 8 at 8 processes)")
    assert has("stage 3 text_rl: staged.stages.2.vllm_max_model_length is unset", "128000 tokens",
               "vLLM refuses to start", "set staged.stages.2.vllm_max_model_length")
    assert not has("stage 3 text_rl: staged.stages.2.data.train")  # 600 prompts are enough
    # on 80 GiB the same 0.35 share holds one 128k sequence: a warning, not a refusal
    plan80 = plan_recipe(raw, launch=Launch(strategy="zero3", gpus=8, gpu_bytes=80 * GIB, origin="accelerate config"))
    warns = [str(f) for f in plan80.all_findings() if f.level == "warn"]
    assert any("stage 3 text_rl: staged.stages.2.vllm_max_model_length is unset" in w for w in warns)


def test_plan_catches_the_launcher_recipe_mismatch(tmp_path, tiny_qwen2_vl_dir):
    """pipelines/accelerate/zero3.yaml says mixed_precision bf16; the CPU recipe trains with bf16: false -
    transformers raises 'DeepSpeed config values that mismatch TrainingArguments' at the first trainer
    (reproduced with accelerate launch); the plan names it before anything runs.  So does a
    gradient_accumulation_steps in the accelerate config that differs from a stage's."""
    import yaml
    from test_train_grpo import write_rl_mm, write_rl_text
    from test_train_sft import write_sft_text

    from training.config import load_raw
    from training.plan import launch_from_accelerate_config, plan_recipe

    sets = {"sft": write_sft_text(tmp_path / "sft.parquet", n=4), "rl": write_rl_text(tmp_path / "rl.parquet", n=4)}
    raw = load_raw(REPO / "pipelines" / "staged_cpu.yaml",
                   [*_overrides(tiny_qwen2_vl_dir, sets, tmp_path / "run", mm=write_rl_mm(tmp_path / "mm.parquet", 4))])
    z3 = launch_from_accelerate_config(REPO / "pipelines/accelerate/zero3.yaml", gpus=2)
    assert (z3.strategy, z3.mixed_precision) == ("zero3", "bf16")
    msgs = [str(f) for f in plan_recipe(raw, launch=z3).failures]
    assert any("stage 1 cold_start: accelerate's mixed_precision is bf16 but staged.stages.0.bf16 is false" in m
               and "ds bf16.enabled=True vs hf bf16=False" in m for m in msgs), msgs
    cfg = yaml.safe_load((REPO / "pipelines/accelerate/zero3.yaml").read_text())
    cfg.update(mixed_precision="no", gradient_accumulation_steps=4)
    (tmp_path / "z3.yaml").write_text(yaml.safe_dump(cfg))
    msgs = [str(f) for f in plan_recipe(raw, launch=launch_from_accelerate_config(tmp_path / "z3.yaml")).failures]
    assert not any("mixed_precision" in m for m in msgs)
    assert any("gradient_accumulation_steps=4 but staged.stages.1 uses 2" in m for m in msgs), msgs


def test_plan_applies_the_trainers_start_up_rules(tmp_path, tiny_qwen2_vl_dir):
    """VASGRPOTrainer refuses PAD with a row-averaged loss when a generation batch does not split into whole
    optimizer steps - at stage 3's start, after stages 1 and 2 trained; the plan says so before stage 1."""
    from test_train_grpo import write_rl_mm, write_rl_text
    from test_train_sft import write_sft_text

    from training.config import load_raw
    from training.plan import Launch, plan_recipe

    sets = {"sft": write_sft_text(tmp_path / "sft.parquet", n=4), "rl": write_rl_text(tmp_path / "rl.parquet", n=8)}
    ov = [*_overrides(tiny_qwen2_vl_dir, sets, tmp_path / "run", mm=write_rl_mm(tmp_path / "mm.parquet", 8)),
          "staged.stages.2.pad.enabled=true", "staged.stages.2.generation_batch_size=12", "grpo.loss_type=grpo"]
    plan = plan_recipe(load_raw(REPO / "pipelines" / "staged_cpu.yaml", ov),
                       launch=Launch(strategy="single", gpus=1, origin="environment", cpu=True))
    msgs = [str(f) for f in plan.failures]
    assert msgs == ["stage 3 text_rl: PAD with loss_type='grpo' needs steps_per_generation (3 at 1 processes) to be a "
                    "multiple of gradient_accumulation_steps (2); change staged.stages.2.gradient_accumulation_steps "
                    "or generation_batch_size"], msgs


def test_plan_applies_the_refill_rules(tmp_path, tiny_qwen2_vl_dir):
    """dynamic.refill tops batches up with loss-masked fillers as PAD does: the same whole-steps rule; and a
    budget smaller than one generation batch at the launch's world size is refused."""
    from test_train_grpo import write_rl_mm, write_rl_text
    from test_train_sft import write_sft_text

    from training.config import load_raw
    from training.plan import Launch, plan_recipe

    sets = {"sft": write_sft_text(tmp_path / "sft.parquet", n=4), "rl": write_rl_text(tmp_path / "rl.parquet", n=8)}
    ov = [*_overrides(tiny_qwen2_vl_dir, sets, tmp_path / "run", mm=write_rl_mm(tmp_path / "mm.parquet", 8)),
          "staged.stages.2.dynamic.refill.enabled=true", "staged.stages.2.generation_batch_size=12",
          "staged.stages.2.dynamic.refill.budget_rollouts=8", "grpo.loss_type=grpo"]
    plan = plan_recipe(load_raw(REPO / "pipelines" / "staged_cpu.yaml", ov),
                       launch=Launch(strategy="single", gpus=1, origin="environment", cpu=True))
    msgs = [str(f) for f in plan.failures]
    assert msgs == ["stage 3 text_rl: dynamic.refill with loss_type='grpo' needs steps_per_generation (3 at 1 "
                    "processes) to be a multiple of gradient_accumulation_steps (2); change "
                    "staged.stages.2.gradient_accumulation_steps or generation_batch_size",
                    "stage 3 text_rl: staged.stages.2.dynamic.refill.budget_rollouts (8) is less than one generation "
                    "batch (12 rollouts at 1 processes); the budget counts the first round"], msgs


def test_grpo_geometry_follows_trl(tmp_path):
    """grpo_geometry re-derives TRL's generation batch rules for another world size; at one process it must
    agree with GRPOConfig itself - values and refusals."""
    from trl import GRPOConfig

    from training.plan import grpo_geometry

    cases = [dict(per_device_train_batch_size=4, gradient_accumulation_steps=2, num_generations=4),
             dict(per_device_train_batch_size=2, gradient_accumulation_steps=64, num_generations=8,
                  generation_batch_size=4096),
             dict(per_device_train_batch_size=3, gradient_accumulation_steps=1, num_generations=4, steps_per_generation=4),
             dict(per_device_train_batch_size=3, gradient_accumulation_steps=1, num_generations=4, generation_batch_size=10),
             dict(per_device_train_batch_size=4, gradient_accumulation_steps=1, num_generations=3),
             dict(per_device_train_batch_size=4, gradient_accumulation_steps=1, num_generations=4,
                  generation_batch_size=8, steps_per_generation=2)]
    for c in cases:
        geo, errors = grpo_geometry(c["per_device_train_batch_size"], 1, c["gradient_accumulation_steps"],
                                    c["num_generations"], generation_batch_size=c.get("generation_batch_size"),
                                    steps_per_generation=c.get("steps_per_generation"))
        try:
            cfg = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", **c)
        except ValueError:
            assert errors, c
            continue
        assert not errors, (c, errors)
        assert (geo["generation_batch_size"], geo["steps_per_generation"]) == (cfg.generation_batch_size,
                                                                               cfg.steps_per_generation), c
    geo, errors = grpo_geometry(2, 8, 64, 8, generation_batch_size=4096)
    assert not errors and geo["steps_per_generation"] == 256 and geo["prompts_per_generation"] == 512
    assert geo["completions_per_optimizer_step"] == 1024
    _, errors = grpo_geometry(3, 8, 1, 8, generation_batch_size=4096)
    assert errors == ["generation_batch_size (4096) must be divisible by the global batch size (24 = "
                      "per_device_train_batch_size 3 x 8 processes)"]


def test_single_process_on_several_gpus_is_refused(tmp_path, tiny_qwen2_vl_dir, monkeypatch):
    """TRL's device_map='auto' would spread the model over every visible GPU of a plain single-process run:
    the plan refuses it with the launch line, and so does the trainer entry point (GPUs cannot exist here:
    torch.cuda reports 8 of them)."""
    from test_train_grpo import write_rl_text

    from training.config import build_grpo_recipe, load_raw
    from training.plan import Launch, plan_recipe
    from training.utils import check_single_process_gpus

    rl = write_rl_text(tmp_path / "rl.parquet", n=4)
    raw = load_raw(None, [f"model={tiny_qwen2_vl_dir}", f"grpo.data.train={rl}", "grpo.per_device_train_batch_size=4",
                          "grpo.num_generations=4", "grpo.bf16=false"])
    plan = plan_recipe(raw, launch=Launch(strategy="single", gpus=1, origin="environment", visible_gpus=8),
                       recipe_path="R.yaml")
    msgs = [str(f) for f in plan.failures]
    assert any("8 GPUs are visible to a single process" in m and "accelerate launch --config_file "
               "pipelines/accelerate/zero3.yaml --num_processes 8 -m training.cli grpo --config R.yaml" in m
               for m in msgs), msgs
    import torch

    args = build_grpo_recipe(raw["grpo"], str(tiny_qwen2_vl_dir)).args
    args.use_cpu = False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match="8 GPUs are visible to this single process"):
        check_single_process_gpus(args, "grpo")
    args.model_init_kwargs = {"device_map": {"": 0}}  # an explicit device_map is the user's choice
    check_single_process_gpus(args, "grpo")


def test_staged_dry_run_checks_the_cpu_recipe_and_save_strategy_no(tmp_path, tiny_qwen2_vl_dir):
    """`train staged --dry-run` is `train plan` for the launch it runs under; `save_strategy=no` on the
    command line (YAML reads it as False) is the "no" strategy, not an error."""
    from test_train_grpo import write_rl_mm, write_rl_text
    from test_train_sft import write_sft_text
    from typer.testing import CliRunner

    from training.cli import app
    from training.config import load_staged_recipe

    sets = {"sft": write_sft_text(tmp_path / "sft.parquet", n=4), "rl": write_rl_text(tmp_path / "rl.parquet", n=4)}
    ov = [*_overrides(tiny_qwen2_vl_dir, sets, tmp_path / "run", mm=write_rl_mm(tmp_path / "mm.parquet", 4)),
          "sft.save_strategy=no", "grpo.save_strategy=no", "grpo.logging_strategy=no"]
    r = load_staged_recipe(REPO / "pipelines" / "staged_cpu.yaml", ov)
    from training.config import build_grpo_recipe, build_sft_recipe

    assert build_sft_recipe(r.stages[0].section, "m").args.save_strategy == "no"
    assert build_grpo_recipe(r.stages[1].section, "m").args.logging_strategy == "no"
    res = CliRunner().invoke(app, ["staged", "--config", str(REPO / "pipelines" / "staged_cpu.yaml"), *ov, "--dry-run"],
                             env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "every stage passed" not in res.output and "ok - launch with" in res.output
    assert not (tmp_path / "run" / "cold_start").exists()  # nothing trained
    # a too-small RL set is refused by `train staged` itself, before stage 1
    small = [*ov, "grpo.generation_batch_size=64"]
    res = CliRunner().invoke(app, ["staged", "--config", str(REPO / "pipelines" / "staged_cpu.yaml"), *small],
                             env={"COLUMNS": "250"})
    assert res.exit_code != 0
    assert "has 4 prompts, fewer than one generation batch needs (16" in " ".join(res.output.split())
    assert not (tmp_path / "run" / "cold_start").exists()


# --- freezing under ZeRO-3, flash-attn fallback ------------------------------------------------------------


def test_freeze_vision_tower_counts_partitioned_parameters(tiny_qwen2_vl_dir):
    """Under ZeRO-3 every parameter is partitioned: DeepSpeed sets ``ds_numel`` to the full size and empties
    ``param.data`` (partition_parameters.py).  Here the parameters carry ds_numel and empty data the way
    DeepSpeed leaves them; tests/test_deepspeed_staged.py checks the same count under a real ZeRO-3 run."""
    import torch
    from transformers import AutoModelForImageTextToText

    from training.utils import freeze_vision_tower

    model = AutoModelForImageTextToText.from_pretrained(tiny_qwen2_vl_dir)
    full = sum(p.numel() for p in model.model.visual.parameters())
    for p in model.parameters():
        p.ds_numel = p.numel()
        p.data = torch.empty(0, dtype=p.dtype)
    assert sum(p.numel() for p in model.model.visual.parameters()) == 0
    assert freeze_vision_tower(model) == full > 0
    assert not any(p.requires_grad for p in model.model.visual.parameters())


def test_flash_attention_falls_back_to_sdpa_with_one_warning(tmp_path, tiny_qwen2_dir):
    """A recipe's attn_implementation: flash_attention_2 where flash-attn cannot run (not installed / no CUDA,
    as here) trains with sdpa and says why, instead of transformers' ImportError."""
    from test_train_sft import write_sft_text

    from training.config import build_sft_recipe
    from training.sft import train_sft
    from training.utils import flash_attention_problem

    assert flash_attention_problem("flash_attention_2")  # this machine has no flash-attn and no GPU
    data = write_sft_text(tmp_path / "sft.parquet", n=4)
    r = build_sft_recipe({"output_dir": str(tmp_path / "out"), "max_length": 512, "max_steps": 1, "use_cpu": True,
                          "bf16": False, "per_device_train_batch_size": 2, "save_strategy": "no",
                          "report_to": "none", "disable_tqdm": True, "gradient_checkpointing": False,
                          "model_init_kwargs": {"attn_implementation": "flash_attention_2"},
                          "data": {"train": str(data)}}, str(tiny_qwen2_dir))
    with pytest.warns(UserWarning, match="attn_implementation flash_attention_2 requested but .*: using sdpa") as rec:
        res = train_sft(r)
    assert res.steps == 1 and r.args.model_init_kwargs["attn_implementation"] == "sdpa"
    assert sum("using sdpa" in str(w.message) for w in rec) == 1
    assert res.extra["run"]["attn_implementation"] == "sdpa"


def test_checks_leave_the_launch_state_alone(tmp_path):
    """The up-front checks build TRL configs detached from the launcher; transformers resets accelerate's
    process-wide state whenever it builds one, so without care a check made after the real config would leave
    a single-process CPU state for the trainer.  Run as a one-rank launch (gloo) in a fresh process."""
    import subprocess
    import textwrap

    from test_train_grpo import write_rl_text

    data = write_rl_text(tmp_path / "rl.parquet", n=4)
    code = textwrap.dedent(f"""
        import os
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="0")
        from accelerate.state import PartialState
        from training.config import build_grpo_recipe
        sec = {{"output_dir": "{tmp_path / 'out'}", "data": {{"train": "{data}"}}, "use_cpu": True, "bf16": False,
               "per_device_train_batch_size": 4, "num_generations": 4, "report_to": "none"}}
        real = build_grpo_recipe(sec, "m").args
        before = dict(PartialState._shared_state)
        build_grpo_recipe(sec, "m", validate_only=True)
        assert dict(PartialState._shared_state) == before, "the check replaced accelerate's state"
        assert PartialState().distributed_type == real.distributed_state.distributed_type
        assert os.environ["MASTER_ADDR"] == "127.0.0.1"  # the launcher's environment is back
        print("STATE KEPT", PartialState().distributed_type)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "STATE KEPT DistributedType.MULTI_CPU" in proc.stdout, proc.stdout + proc.stderr


def test_validation_build_accepts_a_batch_that_is_right_only_for_the_launch():
    """2 ranks x 3 rows x 2 steps = 12 completions = 3 prompts x 4 is right for a 2-process launch; the
    validation build (one process, detached from the launcher) must not refuse it as TRL would at world 1
    (3 x 1 x 2 = 6, not divisible by 4), while the plan's own geometry still refuses it at one process."""
    from training.config import build_grpo_recipe
    from training.plan import grpo_geometry

    section = {"num_generations": 4, "per_device_train_batch_size": 3, "gradient_accumulation_steps": 2,
               "use_cpu": True, "data": {"train": "rl.parquet"}}
    r = build_grpo_recipe(section, "model", validate_only=True)
    assert r.args.num_generations == 4 and r.args.per_device_train_batch_size == 3
    geo2, errs2 = grpo_geometry(3, 2, 2, 4)
    assert errs2 == [] and geo2["generation_batch_size"] == 12 and geo2["prompts_per_generation"] == 3
    _geo1, errs1 = grpo_geometry(3, 1, 2, 4)
    assert errs1 and "generation_batch_size (6) must be divisible by num_generations (4)" in errs1[0]
