"""``train plan``: check every stage of a run before anything trains.

For each stage of a recipe (``staged.stages``, or the recipe's single ``grpo:`` / ``sft:`` section) it checks,
without loading a model or touching a GPU:

- **imports** the stage will need: vLLM for ``use_vllm``, DeepSpeed under a DeepSpeed launch or a recipe
  ``deepspeed:`` file, flash-attn for ``attn_implementation: flash_attention_2`` (missing: the run falls
  back to sdpa, with a warning), liger-kernel for ``use_liger_kernel``;
- **data sizes** against the batch geometry of the target world size: a GRPO stage needs at least one
  generation batch of prompts (``generation_batch_size / num_generations``; TRL's rules for
  ``generation_batch_size`` / ``steps_per_generation``, re-derived for the launch's world size);
- **TRL's divisibility rules** (``generation_batch_size`` divisible by ``per_device_train_batch_size x world``
  and by ``num_generations``, ``num_generations >= 2``, ``vllm_tensor_parallel_size`` divides the world);
- **launcher / recipe agreement** (the ``DeepSpeed config values that mismatch TrainingArguments`` error):
  accelerate's ``mixed_precision`` against the stage's ``bf16``, a ``gradient_accumulation_steps`` in the
  accelerate config against the stage's, a recipe ``deepspeed:`` file under a DeepSpeed launch;
- **precision**: a stage that would train in pure bf16 (``model_init_kwargs.dtype: bfloat16`` under DDP,
  FSDP or one GPU: no fp32 master weights) is refused;
- **one process, several GPUs**: TRL would spread the model over all of them with ``device_map="auto"``;
  refused with the launch line to use;
- **vLLM context and KV cache** (colocate): what ``vllm_max_model_length`` (or the model's own context when
  it is unset) needs against what ``vllm_gpu_memory_utilization`` of the GPU leaves for the KV cache;
- **per-GPU memory** (:mod:`training.memory`: weights, gradients, optimizer, reference model, buffers,
  activations with and without gradient checkpointing, logits, vLLM share) for the launch - or, when no
  launch is given, for DDP / ZeRO-2 / ZeRO-3 - and the launch command it recommends.

A finding is ``fail`` (the run cannot start or cannot fit: refused, naming the setting to change), ``warn``
or ``ok``.  ``train staged`` runs this first, with the launch it was started by, and refuses before stage 1
trains.  Memory numbers are estimates (``training.memory``'s docstring has every formula).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .memory import (
    GIB,
    MemoryEstimate,
    ModelDims,
    kv_bytes_per_token,
    kv_cache_tokens,
    model_dims,
    stage_memory,
)
from .utils import module_installed as _installed

__all__ = [
    "Finding",
    "Launch",
    "PlanRefused",
    "RunPlan",
    "StagePlan",
    "SHIPPED_CONFIGS",
    "TRL_VLLM_RANGE",
    "detect_gpu_memory",
    "grpo_geometry",
    "launch_command",
    "launch_from_accelerate_config",
    "launch_from_env",
    "plan_recipe",
]

# accelerate configs shipped in pipelines/accelerate/ for each strategy
SHIPPED_CONFIGS = {
    "ddp": "pipelines/accelerate/ddp_gpu.yaml",
    "zero2": "pipelines/accelerate/zero2.yaml",
    "zero3": "pipelines/accelerate/zero3.yaml",
    "fsdp": "pipelines/accelerate/fsdp.yaml",
}
CANDIDATES_MULTI = ("ddp", "zero2", "zero3")  # tried in this order: the first that fits is recommended
TRL_VLLM_RANGE = ("0.22.0", "0.31.0")  # trl/import_utils.py is_vllm_available (TRL 1.16)
DEFAULT_PROMPT_TOKENS = 1024  # GRPO prompt budget when vllm_max_model_length does not bound it
NAMES = {"single": "one GPU", "ddp": "DDP", "zero1": "ZeRO-1", "zero2": "ZeRO-2", "zero3": "ZeRO-3",
         "fsdp": "FSDP2"}


class PlanRefused(ValueError):
    """The run cannot start or cannot fit; the message lists every failed check and the setting to change."""


@dataclass
class Finding:
    level: str  # fail | warn | ok
    where: str  # "stage 2 mm_rl" or "run"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class Launch:
    """How the run is (or would be) launched."""

    strategy: str  # single | ddp | zero1 | zero2 | zero3 | fsdp
    gpus: int  # data-parallel processes
    gpu_bytes: float | None = None  # memory of one GPU (None: unknown, no memory check)
    mixed_precision: str | None = None  # accelerate's mixed_precision (None: not set / not known)
    grad_accum: int | None = None  # gradient_accumulation_steps in the accelerate config (a trap)
    config_file: str | None = None
    origin: str = "assumed"  # environment | accelerate config | assumed
    visible_gpus: int | None = None  # GPUs one process sees (single-process runs)
    cpu: bool = False


@dataclass
class StagePlan:
    index: int
    name: str
    kind: str
    rows: int | None = None
    done: bool = False
    geometry: dict = field(default_factory=dict)
    memory: dict[str, MemoryEstimate] = field(default_factory=dict)
    kv: dict | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"stage {self.index + 1} {self.name}"


@dataclass
class RunPlan:
    launch: Launch
    stages: list[StagePlan]
    findings: list[Finding]
    dims: ModelDims | None
    recommended: str | None  # strategy that passes every stage (None: none does)
    command: str | None  # the launch line for `recommended`
    chosen: str = ""  # the strategy the findings are for (the launch's, or the recommended one)

    def all_findings(self) -> list[Finding]:
        return [*self.findings, *(f for s in self.stages for f in s.findings)]

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.all_findings() if f.level == "fail"]

    @property
    def refused(self) -> bool:
        return bool(self.failures)

    def raise_if_refused(self) -> None:
        if self.refused:
            lines = "\n".join(f"- {f}" for f in self.failures)
            raise PlanRefused(f"the run was refused before training ({len(self.failures)} problem(s)):\n{lines}")


# --- launch detection ------------------------------------------------------------------------------


def detect_gpu_memory() -> tuple[int, float | None]:
    """(visible GPUs, bytes of the smallest one) without creating a CUDA context: ``torch.cuda.device_count``
    (honours ``CUDA_VISIBLE_DEVICES``) and ``nvidia-smi`` for the memory (None when it is not there)."""
    try:
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken CUDA install: no GPUs for the plan
        n = 0
    if n == 0 or shutil.which("nvidia-smi") is None:
        return n, None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        mib = [float(x) for x in out.split() if x.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return n, None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        idx = [int(x) for x in visible.split(",") if x.strip().isdigit()]
        mib = [mib[i] for i in idx if i < len(mib)] or mib
    return n, (min(mib) * 1024**2 if mib else None)


def _strategy_from(distributed_type: str, zero_stage: int | None, world: int) -> str:
    dt = (distributed_type or "").upper()
    if dt == "DEEPSPEED":
        return {0: "ddp", 1: "zero1", 2: "zero2", 3: "zero3"}.get(int(zero_stage or 2), "zero2")
    if dt == "FSDP":
        return "fsdp"
    return "ddp" if world > 1 else "single"


def launch_from_env(environ: Mapping[str, str] | None = None, *, gpu_bytes: float | None = None) -> Launch:
    """The launch this process is part of, read from what ``accelerate launch`` / torchrun put in the
    environment (``WORLD_SIZE``, ``ACCELERATE_USE_DEEPSPEED``, ``ACCELERATE_DEEPSPEED_ZERO_STAGE``, ...)."""
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if env.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        dt = "DEEPSPEED"
    elif env.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        dt = "FSDP"
    else:
        dt = "MULTI_GPU" if world > 1 else "NO"
    zero = env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    gas = env.get("ACCELERATE_GRADIENT_ACCUMULATION_STEPS")
    visible, mem = detect_gpu_memory()
    cpu = env.get("ACCELERATE_USE_CPU", "false").lower() == "true" or (visible == 0 and gpu_bytes is None)
    return Launch(strategy=_strategy_from(dt, int(zero) if zero else None, world), gpus=world,
                  gpu_bytes=gpu_bytes if gpu_bytes is not None else (None if cpu else mem),
                  mixed_precision=env.get("ACCELERATE_MIXED_PRECISION"),
                  grad_accum=int(gas) if gas and gas.isdigit() else None,
                  origin="environment", visible_gpus=visible, cpu=cpu)


def launch_from_accelerate_config(path: str | Path, *, gpus: int | None = None,
                                  gpu_bytes: float | None = None) -> Launch:
    """The launch an accelerate config file describes (``--num_processes`` given as ``gpus`` wins)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such accelerate config")
    cfg = yaml.safe_load(path.read_text()) or {}
    world = int(gpus or cfg.get("num_processes") or 1)
    ds = cfg.get("deepspeed_config") or {}
    gas = cfg.get("gradient_accumulation_steps", ds.get("gradient_accumulation_steps"))
    mp = cfg.get("mixed_precision")
    return Launch(strategy=_strategy_from(cfg.get("distributed_type", "NO"), ds.get("zero_stage"), world),
                  gpus=world, gpu_bytes=gpu_bytes, mixed_precision=None if mp is None else str(mp),
                  grad_accum=int(gas) if isinstance(gas, int) else None, config_file=str(path),
                  origin="accelerate config", cpu=bool(cfg.get("use_cpu")))


def launch_command(strategy: str, gpus: int, subcommand: str, recipe: str | None, overrides: list[str],
                   config_file: str | None = None) -> str:
    """The command line to run a recipe with ``strategy`` on ``gpus`` GPUs of one node."""
    tail = " ".join([f"--config {recipe}" if recipe else "--config RECIPE", *overrides])
    if strategy == "single":
        return f"CUDA_VISIBLE_DEVICES=0 train {subcommand} {tail}"
    cfg = config_file or SHIPPED_CONFIGS.get(strategy, SHIPPED_CONFIGS["zero3"])
    return f"accelerate launch --config_file {cfg} --num_processes {gpus} -m training.cli {subcommand} {tail}"


# --- stage rules -------------------------------------------------------------------------------------


def grpo_geometry(per_device: int, world: int, grad_accum: int, num_generations: int, *,
                  generation_batch_size: int | None = None, steps_per_generation: int | None = None
                  ) -> tuple[dict, list[str]]:
    """TRL 1.16's ``GRPOConfig.__post_init__`` batch rules for a world size: returns the geometry
    (``generation_batch_size``, ``steps_per_generation``, prompts per generation batch, completions per
    optimizer step) and TRL's own error messages for the rules it breaks."""
    errors: list[str] = []
    B, W = int(per_device), int(world)
    G, spg = generation_batch_size, steps_per_generation
    if G is None and spg is None:
        spg = grad_accum
        G = B * W * spg
    elif G is not None and spg is None:
        if G % (B * W):
            errors.append(f"generation_batch_size ({G}) must be divisible by the global batch size ({B * W} = "
                          f"per_device_train_batch_size {B} x {W} processes)")
        spg = max(1, G // (B * W))
    elif G is None:
        G = B * W * spg
    else:
        errors.append("'generation_batch_size' and 'steps_per_generation' can not be both configured at the "
                      "same time")
    if G % num_generations:
        errors.append(f"generation_batch_size ({G}) must be divisible by num_generations ({num_generations})")
    if num_generations < 2:
        errors.append(f"GRPO requires at least 2 generations per prompt (num_generations={num_generations})")
    geo = {"per_device_train_batch_size": B, "world_size": W, "gradient_accumulation_steps": grad_accum,
           "generation_batch_size": G, "steps_per_generation": spg, "num_generations": num_generations,
           "prompts_per_generation": G // max(1, num_generations),
           "completions_per_optimizer_step": B * W * grad_accum,
           "optimizer_steps_per_generation": spg / max(1, grad_accum)}
    return geo, errors


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _param_bytes(model_init_kwargs: dict | None) -> int:
    """Bytes per parameter as TRL loads the policy: float32 unless ``model_init_kwargs.dtype`` says otherwise
    (``auto`` -> the checkpoint's dtype, bf16 for the Qwen families)."""
    dtype = str((model_init_kwargs or {}).get("dtype") or (model_init_kwargs or {}).get("torch_dtype") or "")
    dtype = dtype.replace("torch.", "")
    return 2 if dtype in ("bfloat16", "float16", "half", "bf16", "fp16", "auto") else 4


def _rows(path: Path, limit: int | None) -> int:
    from .utils import parquet_num_rows

    n = parquet_num_rows(path)
    return min(n, int(limit)) if limit is not None else n


def _has_images_column(path: Path) -> bool:
    import pyarrow.parquet as pq

    return "images" in pq.ParquetFile(path).schema_arrow.names


def _stage_list(raw: dict, kind: str | None) -> tuple[list[Any], str]:
    """(stages, train sub-command) of a raw recipe: ``staged.stages``, else its ``grpo:`` or ``sft:``."""
    from .config import RecipeError, StageSpec, build_staged_recipe

    if raw.get("staged") and kind in (None, "staged"):
        return build_staged_recipe(raw).stages, "staged"
    for k in ([kind] if kind else ["grpo", "sft"]):
        if isinstance(raw.get(k), dict):
            return [StageSpec(name=k, kind=k, section=raw[k], model=None)], k
    raise RecipeError("recipe has no `staged:`, `grpo:` or `sft:` section to plan")


# --- the plan ------------------------------------------------------------------------------------------


def plan_recipe(raw: dict, *, launch: Launch | None = None, gpus: int | None = None,
                gpu_bytes: float | None = None, prompt_tokens: int | None = None, kind: str | None = None,
                recipe_path: str | None = None, overrides: list[str] | None = None,
                dims: ModelDims | None = None) -> RunPlan:
    """Check every stage of ``raw`` (a loaded recipe, overrides applied) for ``launch``.

    Without ``launch`` (``train plan`` without ``--accelerate-config``): one GPU when ``gpus`` is 1, else
    DDP, ZeRO-2 and ZeRO-3 are estimated and the first that fits every stage is recommended."""
    from .config import build_grpo_recipe, build_sft_recipe
    from .stages import STAGE_MARKER

    stages, sub = _stage_list(raw, kind)
    overrides = list(overrides or [])
    run_findings: list[Finding] = []
    if launch is None:
        n = int(gpus or 1)
        target = Launch(strategy="single" if n == 1 else "zero3", gpus=n, gpu_bytes=gpu_bytes, origin="assumed")
        candidates = ["single"] if n == 1 else list(CANDIDATES_MULTI)
    else:
        if gpus:
            launch.gpus = int(gpus)
        if gpu_bytes is not None:
            launch.gpu_bytes = gpu_bytes
        target = launch
        candidates = [launch.strategy] + ([s for s in CANDIDATES_MULTI if s != launch.strategy]
                                          if launch.gpus > 1 else [])
    W = target.gpus
    assumed = launch is None

    model = str(stages[0].model or raw.get("model") or "")
    if dims is None and model:
        try:
            dims = model_dims(model)
        except (OSError, ValueError) as e:
            run_findings.append(Finding("warn", "run", f"memory not estimated: {e}"))
    if all(st.section.get("use_cpu") for st in stages):
        target.cpu = True
    if target.gpu_bytes is None and not target.cpu:
        run_findings.append(Finding("warn", "run", "GPU memory unknown (no GPU here, or no nvidia-smi): memory "
                                    "not checked; pass --gpu-mem GiB"))

    # one process, several GPUs: TRL's device_map="auto" would spread the model over them
    if target.origin == "environment" and target.strategy == "single" and (target.visible_gpus or 0) > 1:
        n = target.visible_gpus
        run_findings.append(Finding("fail", "run", (
            f"{n} GPUs are visible to a single process: TRL would load the model with device_map='auto' over all "
            f"of them (one GPU busy at a time). Launch one process per GPU: "
            f"`{launch_command('zero3', n, sub, recipe_path, overrides)}`, or use one GPU: "
            f"`{launch_command('single', 1, sub, recipe_path, overrides)}`")))

    plans: list[StagePlan] = []
    blockers: dict[str, list[tuple[StagePlan, str]]] = {s: [] for s in candidates}
    needs_deepspeed: list[StagePlan] = []
    for i, st in enumerate(stages):
        sp = StagePlan(index=i, name=st.name, kind=st.kind)
        plans.append(sp)
        where = f"staged.stages.{i}" if sub == "staged" else st.kind
        sec = dict(st.section)
        sp.done = bool(sub == "staged" and (Path(sec.get("output_dir", "")) / STAGE_MARKER).exists())
        builder = build_sft_recipe if st.kind == "sft" else build_grpo_recipe
        r = builder(sec, st.model or model or "<model>", where=where, validate_only=True)
        a = r.args
        say = sp.findings.append
        if sp.done:
            say(Finding("ok", sp.label, "done earlier (stage_done.json): skipped, not re-checked"))
            continue
        try:
            sp.rows = _rows(Path(r.data.train), r.data.limit)
        except FileNotFoundError as e:
            say(Finding("fail", sp.label, f"{where}.data.train: {e}"))
        if sp.rows == 0:
            if getattr(st, "on_empty", "error") == "skip":
                say(Finding("ok", sp.label, f"{r.data.train} has no rows: skipped (on_empty: skip)"))
                sp.done = True  # nothing of it will run
            else:
                say(Finding("fail", sp.label, f"{where}.data.train: {r.data.train} has no rows, nothing to train on; "
                            f"fix the input or set {where}.on_empty=skip"))
            continue

        # precision and the launcher / recipe agreement
        bf16 = bool(sec["bf16"]) if "bf16" in sec else not bool(sec.get("fp16", False))
        mik = dict(a.model_init_kwargs or {})
        pbytes = _param_bytes(mik)
        on_gpu = not target.cpu and not sec.get("use_cpu")
        for s in candidates:
            if s in ("single", "ddp", "fsdp") and pbytes == 2 and on_gpu:
                blockers[s].append((sp, (
                    f"model_init_kwargs.dtype: {mik.get('dtype') or mik.get('torch_dtype')} under {NAMES[s]} "
                    "trains in pure bf16: no fp32 master weights, so AdamW updates smaller than bf16's resolution "
                    f"round away (at learning_rate {a.learning_rate:g} most weights never change). Remove "
                    f"{where}.model_init_kwargs.dtype (TRL loads float32 and bf16: true autocasts) or launch with "
                    "DeepSpeed (the ZeRO optimizer keeps an fp32 master)")))
        is_ds = target.strategy.startswith("zero")
        if is_ds and not assumed:
            if "deepspeed" in sec:
                say(Finding("fail", sp.label, (
                    f"{where}.deepspeed is set and the launch is already DeepSpeed: transformers refuses both; remove "
                    "the recipe's deepspeed file or launch with a DDP config")))
            if target.mixed_precision == "bf16" and not bf16:
                say(Finding("fail", sp.label, (
                    f"accelerate's mixed_precision is bf16 but {where}.bf16 is false: transformers raises "
                    "'DeepSpeed config values that mismatch TrainingArguments: ds bf16.enabled=True vs hf "
                    f"bf16=False'; set {where}.bf16=true or launch with --mixed_precision no")))
            if target.mixed_precision == "fp16" and not sec.get("fp16"):
                say(Finding("fail", sp.label, f"accelerate's mixed_precision is fp16 but {where}.fp16 is not set"))
        if target.grad_accum is not None and target.grad_accum != a.gradient_accumulation_steps:
            say(Finding("fail", sp.label, (
                f"the accelerate config sets gradient_accumulation_steps={target.grad_accum} but {where} uses "
                f"{a.gradient_accumulation_steps}: DeepSpeed would refuse it as a mismatch; remove "
                "gradient_accumulation_steps from the accelerate config (the recipe sets it per stage)")))
        if "deepspeed" in sec:
            needs_deepspeed.append(sp)

        # imports (vLLM: in _check_vllm)
        attn = mik.get("attn_implementation")
        if attn in ("flash_attention_2", "flash_attention_3"):
            from .utils import flash_attention_problem

            why = flash_attention_problem(attn)
            if why:
                say(Finding("warn", sp.label, f"attn_implementation {attn}: {why}; the stage falls back to sdpa"))
        if getattr(a, "use_liger_kernel", False) and not _installed("liger_kernel"):
            say(Finding("fail", sp.label, "use_liger_kernel: true but liger-kernel is not installed "
                        "(pip install liger-kernel)"))
        if st.kind == "sft" and a.assistant_only_loss and sp.rows and _has_images_column(Path(r.data.train)):
            from packaging.version import Version

            tv = _version("transformers") or "0"
            if Version(tv) < Version("5.18.0.dev0"):
                say(Finding("fail", sp.label, (
                    f"assistant_only_loss on a dataset with images needs transformers >= 5.18 (TRL 1.16), this "
                    f"is {tv}; set {where}.assistant_only_loss=false")))

        # batch geometry and data sizes
        B, gas = int(a.per_device_train_batch_size), int(a.gradient_accumulation_steps)
        if st.kind == "grpo":
            geo, errs = grpo_geometry(B, W, gas, int(a.num_generations),
                                      generation_batch_size=sec.get("generation_batch_size"),
                                      steps_per_generation=sec.get("steps_per_generation"))
            sp.geometry = geo
            for e in errs:
                say(Finding("fail", sp.label, f"{e} (at {W} processes)"))
            from .pad import MICROBATCH_TOKEN_MEAN_LOSSES, ROW_MEAN_LOSSES

            # the trainer's own start-up rules (VASGRPOTrainer._check_setup), found before earlier stages train
            fillers = [n for n, on in (("PAD", r.pad.enabled), ("dynamic.refill", r.dynamic.refill.enabled)) if on]
            if fillers and a.loss_type in ROW_MEAN_LOSSES | MICROBATCH_TOKEN_MEAN_LOSSES \
                    and geo["steps_per_generation"] % gas:
                say(Finding("fail", sp.label, (
                    f"{' and '.join(fillers)} with loss_type={a.loss_type!r} needs steps_per_generation "
                    f"({geo['steps_per_generation']} at {W} processes) to be a multiple of gradient_accumulation_steps "
                    f"({gas}); change {where}.gradient_accumulation_steps or generation_batch_size")))
            budget = r.dynamic.refill.budget_rollouts
            if r.dynamic.refill.enabled and budget is not None and budget < geo["generation_batch_size"]:
                say(Finding("fail", sp.label, (
                    f"{where}.dynamic.refill.budget_rollouts ({budget}) is less than one generation batch "
                    f"({geo['generation_batch_size']} rollouts at {W} processes); the budget counts the first round")))
            names = list(r.rewards)
            if r.vas.enabled and r.vas.accuracy_uses() and not any("accuracy" in n for n in names):
                say(Finding("fail", sp.label, (
                    f"vas.{' and vas.'.join(r.vas.accuracy_uses())} needs an accuracy reward ({where}.rewards: "
                    f"{{accuracy: 1.0, ...}}); the recipe's rewards are {names}")))
            need = geo["prompts_per_generation"]
            if sp.rows is not None and sp.rows < need:
                say(Finding("fail", sp.label, (
                    f"{where}.data.train has {sp.rows} prompts, fewer than one generation batch needs ({need} = "
                    f"generation_batch_size {geo['generation_batch_size']} / num_generations {a.num_generations} at "
                    f"{W} processes): point data.train at a larger RL set or lower generation_batch_size")))
            _check_vllm(sp, a, where, W, target, dims, prompt_tokens)
        else:
            sp.geometry = {"per_device_train_batch_size": B, "world_size": W, "gradient_accumulation_steps": gas,
                           "global_batch": B * W * gas}
            if sp.rows is not None:
                steps = math.ceil(math.ceil(sp.rows / (B * W)) / gas) * max(1, math.ceil(a.num_train_epochs))
                sp.geometry["optimizer_steps"] = a.max_steps if a.max_steps and a.max_steps > 0 else steps
                if sp.rows < B * W:
                    say(Finding("warn", sp.label, f"{sp.rows} rows: fewer than one micro-batch on every GPU "
                                f"({B} x {W})"))

        # memory, for every candidate strategy
        if dims is None or not target.gpu_bytes or not on_gpu:
            continue
        frozen = dims.vision_params if st.freeze_vision else 0
        if st.kind == "grpo":
            comp = int(a.max_completion_length)
            seq = int(a.vllm_max_model_length) if (a.use_vllm and a.vllm_max_model_length) else (
                int(prompt_tokens or DEFAULT_PROMPT_TOKENS) + comp)
        else:
            comp, seq = None, int(a.max_length)
        share = float(a.vllm_gpu_memory_utilization) if (st.kind == "grpo" and a.use_vllm and
                                                         a.vllm_mode == "colocate") else 0.0
        for s in candidates:
            est = stage_memory(dims, kind=st.kind, strategy=s, gpus=W, gpu_bytes=target.gpu_bytes,
                               per_device_batch=B, seq_tokens=seq, completion_tokens=comp,
                               gradient_checkpointing=bool(a.gradient_checkpointing), param_bytes=pbytes,
                               frozen_params=frozen, beta=float(getattr(a, "beta", 0.0) or 0.0),
                               vllm_share=share, vllm_sleep=bool(getattr(a, "vllm_enable_sleep_mode", False)),
                               fused_loss=bool(getattr(a, "use_liger_kernel", False)))
            if s.startswith("zero") and not bf16:
                est.weights *= 2
                est.grads *= 2
                est.notes.append("bf16 off under DeepSpeed: fp32 weights and gradients")
            est.notes.append(f"micro-batch {B} x {seq} tokens" + (f" ({comp} completion)" if comp else ""))
            sp.memory[s] = est
            if est.total > target.gpu_bytes:
                blockers[s].append((sp, _too_big(sp, est, target)))

    # the verdict for the launch (or the recommendation)
    usable = [s for s in candidates if not blockers[s]]
    if assumed:
        recommended = usable[0] if usable else None
        chosen = recommended or candidates[-1]
        if recommended is None:
            for sp, msg in blockers[chosen]:
                sp.findings.append(Finding("fail", sp.label, msg + (
                    f" (tried {', '.join(NAMES[s] for s in candidates)})" if len(candidates) > 1 else "")))
    else:
        chosen = target.strategy
        for sp, msg in blockers[chosen]:
            sp.findings.append(Finding("fail", sp.label, msg))
        alt = next((s for s in usable if s != chosen), None)
        recommended = chosen if chosen in usable else alt
        if blockers[chosen] and alt:
            run_findings.append(Finding("fail", "run", (
                f"this launch ({NAMES[chosen]}) is refused; {NAMES[alt]} passes: "
                f"`{launch_command(alt, W, sub, recipe_path, overrides)}`")))
    ds_needed = (recommended or chosen).startswith("zero") or needs_deepspeed
    if ds_needed and not _installed("deepspeed"):
        run_findings.append(Finding("fail", "run", "DeepSpeed is not installed (the launch needs it): pip install -e "
                                    "'.[deepspeed]' (pure Python with DS_BUILD_OPS=0)"))
    rec = recommended
    cfg = target.config_file if (not assumed and rec == target.strategy) else None
    command = launch_command(rec, W, sub, recipe_path, overrides, cfg) if rec else None
    return RunPlan(launch=target, stages=plans, findings=run_findings, dims=dims, recommended=recommended,
                   command=command, chosen=chosen)


def _too_big(p: StagePlan, est: MemoryEstimate, target: Launch) -> str:
    g = GIB
    parts = (f"weights {est.weights / g:.1f} + grads {est.grads / g:.1f} + optimizer {est.optimizer / g:.1f}"
             + (f" + reference {est.reference / g:.1f}" if est.reference else "")
             + f" + buffers {est.buffers / g:.1f} + activations {est.activations / g:.1f} + logits "
             f"{est.logits / g:.1f} + CUDA context {est.context / g:.1f}"
             + (f" + vLLM share {est.vllm / g:.1f}" if est.vllm else ""))
    fixes = []
    if est.strategy != "zero3" and target.gpus > 1:
        fixes.append("launch with pipelines/accelerate/zero3.yaml (weights, gradients and optimizer sharded)")
    fixes.append("lower per_device_train_batch_size (raise gradient_accumulation_steps to keep the batch)")
    if est.activations > est.activations_gc:
        fixes.append("set gradient_checkpointing: true")
    fixes.append("lower max_length" if p.kind == "sft" else
                 "lower max_completion_length / vllm_max_model_length")
    if est.vllm:
        fixes.append("lower vllm_gpu_memory_utilization")
    return (f"needs ~{est.total / g:.1f} GiB per GPU under {NAMES[est.strategy]} ({parts}) > "
            f"{target.gpu_bytes / g:.1f} GiB: " + "; ".join(fixes))


def _check_vllm(sp: StagePlan, a: Any, where: str, W: int, target: Launch, dims: ModelDims | None,
                prompt_tokens: int | None) -> None:
    say = sp.findings.append
    if not a.use_vllm:
        return
    if not _installed("vllm"):
        say(Finding("fail", sp.label, (
            f"{where}.use_vllm is true but vLLM is not installed: pip install -e '.[vllm]' (vllm "
            f"{TRL_VLLM_RANGE[1]}, the newest TRL 1.16 supports) or set {where}.use_vllm=false")))
    else:
        from packaging.version import Version

        v = _version("vllm")
        if v and not (Version(TRL_VLLM_RANGE[0]) <= Version(Version(v).base_version) <= Version(TRL_VLLM_RANGE[1])):
            say(Finding("warn", sp.label, f"vLLM {v} is outside the range TRL 1.16 supports "
                        f"({TRL_VLLM_RANGE[0]}-{TRL_VLLM_RANGE[1]}); the tested pair is vllm {TRL_VLLM_RANGE[1]}"))
    if a.vllm_mode != "colocate":
        return
    tp = int(a.vllm_tensor_parallel_size)
    if W % tp:
        say(Finding("fail", sp.label, f"vllm_tensor_parallel_size ({tp}) must divide the world size ({W})"))
    if dims is None or not target.gpu_bytes or target.cpu:
        return
    share = float(a.vllm_gpu_memory_utilization)
    tokens = kv_cache_tokens(dims, target.gpu_bytes, share, tp)
    max_len = a.vllm_max_model_length or dims.max_position_embeddings
    max_num_seqs = int(a.per_device_train_batch_size) * tp * int(sp.geometry.get("steps_per_generation") or 1)
    sp.kv = {"share": share, "kv_tokens": tokens, "kv_bytes_per_token": kv_bytes_per_token(dims, tp),
             "max_model_len": max_len, "max_num_seqs": max_num_seqs,
             "max_len_sequences": (tokens // max_len) if max_len else None}
    suggestion = int(prompt_tokens or DEFAULT_PROMPT_TOKENS) + int(a.max_completion_length)
    if tokens <= 0:
        say(Finding("fail", sp.label, (
            f"vllm_gpu_memory_utilization {share} x {target.gpu_bytes / GIB:.0f} GiB = "
            f"{share * target.gpu_bytes / GIB:.1f} GiB does not even hold vLLM's copy of the weights "
            f"({2 * dims.params / tp / GIB:.1f} GiB) and its activations: raise {where}.vllm_gpu_memory_utilization "
            "or vllm_tensor_parallel_size")))
        return
    if not a.vllm_max_model_length:
        msg = (f"{where}.vllm_max_model_length is unset: vLLM takes the model's context ({max_len} tokens); the KV "
               f"cache that vllm_gpu_memory_utilization {share} leaves holds {tokens:,} tokens")
        if max_len and tokens < max_len:
            say(Finding("fail", sp.label, msg + f" - less than one such sequence, so vLLM refuses to start; set "
                        f"{where}.vllm_max_model_length (longest prompt + max_completion_length, e.g. {suggestion})"))
        else:
            say(Finding("warn", sp.label, msg + f"; set it to the longest prompt + max_completion_length "
                        f"(e.g. {suggestion})"))
        return
    if tokens < int(a.vllm_max_model_length):
        say(Finding("fail", sp.label, (
            f"the KV cache vLLM gets ({tokens:,} tokens at vllm_gpu_memory_utilization {share}) is smaller than one "
            f"vllm_max_model_length ({a.vllm_max_model_length}) sequence: vLLM refuses to start; raise "
            f"{where}.vllm_gpu_memory_utilization or lower vllm_max_model_length")))
    elif a.max_completion_length > a.vllm_max_model_length:
        say(Finding("fail", sp.label, f"max_completion_length ({a.max_completion_length}) exceeds "
                    f"vllm_max_model_length ({a.vllm_max_model_length})"))
