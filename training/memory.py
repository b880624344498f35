"""Per-GPU memory arithmetic for ``train plan``: plain functions, bytes in, bytes out.

Everything here is an **estimate** of the peak a stage needs on one GPU; the formulas are the standard ones
and are written next to the code that computes them.  Symbols: ``Psi`` parameters (``Psi_t`` of them
trainable), ``N`` GPUs (data-parallel ranks), ``h`` hidden size, ``I`` MLP intermediate size, ``L`` decoder
layers, ``kv`` key/value heads, ``d`` head dimension, ``V`` vocabulary, ``T`` tokens in one micro-batch
(``per_device_train_batch_size x`` sequence length).

Model states (weights + gradients + Adam), mixed precision (ZeRO paper, Rajbhandari et al. 2020, K = 12:
fp32 master 4 + Adam m 4 + v 4 bytes per trainable parameter):

=========  =================  ==================  ==================  ====================
strategy   weights            gradients           optimizer           7.62B on 8 GPUs
=========  =================  ==================  ==================  ====================
DDP fp32   4 Psi              4 Psi_t             8 Psi_t (m, v)      122 GB (16 Psi)
DDP bf16   2 Psi              2 Psi_t             4 Psi_t             pure bf16: no fp32 master - refused
ZeRO-1     2 Psi              2 Psi_t             12 Psi_t / N        41.9 GB
ZeRO-2     2 Psi              2 Psi_t / N         12 Psi_t / N        28.6 GB
ZeRO-3     2 Psi / N          2 Psi_t / N         12 Psi_t / N        15.2 GB
FSDP2      4 Psi / N          4 Psi_t / N         8 Psi_t / N         (fp32 sharded params, bf16 compute)
=========  =================  ==================  ==================  ====================

"DDP" covers a single GPU too (``N = 1``, nothing sharded).  Under DDP / FSDP the parameters keep the dtype
they were loaded in (TRL loads float32 unless ``model_init_kwargs.dtype`` says otherwise) and ``bf16: true``
only autocasts the forward; under DeepSpeed ``bf16.enabled`` casts the module to bf16 and the ZeRO optimizer
keeps the fp32 master copy, whatever the load dtype.

Reference model (GRPO with ``beta > 0``): TRL wraps it like the policy without optimizer - ZeRO-3 keeps it
sharded (``2 Psi / N``), ZeRO-1/2 run it as a ZeRO stage-0 engine (a full bf16 copy, ``2 Psi``), DDP keeps a
full copy in the policy's load dtype, FSDP shards it.

DeepSpeed buffers: the accelerate-generated DeepSpeed config leaves DeepSpeed's defaults - ZeRO-2 reduce and
all-gather buckets of 5e8 elements each (2 x 1 GB in bf16), ZeRO-3 up to ``stage3_max_live_parameters`` = 1e9
gathered elements plus a 5e8-element reduce bucket (~3 GB).  FSDP2: the gathered bf16 copy of one block,
twice (prefetch).

Activations (bf16, 2 bytes per value), per token and decoder layer, counting the tensors autograd keeps for
the backward pass of a pre-norm decoder layer with GQA attention (SDPA / flash: no ``T x T`` score matrix
kept) and a SwiGLU MLP:

- attention: norm input ``h``, norm output ``h``, rotated q ``h``, k and v ``2 kv d``, attention output ``h``
  -> ``2 (4 h + 2 kv d)`` bytes;
- MLP: norm input ``h``, norm output ``h``, gate, up, act(gate) and gate*up outputs ``4 I`` -> ``2 (2 h + 4 I)``
  bytes;
- so ``A_layer = 12 h + 8 I + 4 kv d`` bytes per token per layer (Qwen2.5-7B: 192 KiB).  Korthikanti et al.
  2022 give ``34 h`` for a GPT layer with a ``4 h`` MLP and dropout; the difference is the wider SwiGLU MLP
  (``I = 5.3 h``) and no dropout masks.
- without gradient checkpointing: ``T L A_layer``;
- with gradient checkpointing (one checkpoint per decoder layer, what transformers does): the layer inputs
  ``T L 2 h`` plus one layer recomputed during the backward ``T A_layer``.

Logits (the LM head's output, ``V`` wide): SFT computes them for every position and transformers' causal-LM
loss upcasts them: bf16 logits 2 + fp32 copy 4 + fp32 log-softmax / gradient 4 = ``10 T V`` bytes
(``use_liger_kernel: true`` fuses the head with the loss: not counted then).  GRPO computes them for the
completion positions only and TRL 1.16's fused Triton log-prob kernel keeps the bf16 logits and their bf16
gradient: ``4 T_completion V`` bytes.

vLLM colocate (TRL ``vllm_mode: colocate``): vLLM takes ``vllm_gpu_memory_utilization x`` the GPU's memory
for itself (weights ``2 Psi / tp``, its activation peak - estimated at 2 GiB - and the KV cache), the
trainer gets the rest: peak = training step + share.  With ``vllm_enable_sleep_mode`` vLLM frees its share
while the trainer steps, so the peak is the larger of the training step and generation (model states +
share).  Plus ~0.75 GiB per process for the CUDA context, NCCL and allocator slack (estimate).  KV cache per token: ``2 (k and v) x L x kv / tp x d x 2 bytes`` (bf16), so the cache
holds ``(share x mem - weights - 2 GiB) / (4 L kv d / tp)`` tokens; vLLM refuses to start unless that is at
least one ``max_model_len`` sequence.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "GIB",
    "ModelDims",
    "MemoryEstimate",
    "STRATEGIES",
    "activation_bytes",
    "config_json_path",
    "kv_bytes_per_token",
    "kv_cache_tokens",
    "logits_bytes",
    "model_dims",
    "model_dims_from_config",
    "model_state_bytes",
    "reference_bytes",
    "strategy_buffers_bytes",
    "stage_memory",
]

GIB = 1024**3
BF16 = 2
FP32 = 4
VLLM_OVERHEAD_BYTES = 2 * GIB  # vLLM's activation peak + CUDA graphs in its share (estimate)
CUDA_CONTEXT_BYTES = int(0.75 * GIB)  # CUDA context + NCCL + allocator slack per process (estimate)

# single = one process on one GPU (DDP arithmetic with N = 1)
STRATEGIES = ("single", "ddp", "zero1", "zero2", "zero3", "fsdp")


@dataclass(frozen=True)
class ModelDims:
    """What the memory arithmetic needs from a model's ``config.json``."""

    name: str
    params: int  # all parameters
    vision_params: int  # the vision tower (merger included); 0 for a text model
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_position_embeddings: int | None = None

    @property
    def is_vision_language(self) -> bool:
        return self.vision_params > 0


def config_json_path(model: str | os.PathLike) -> Path:
    """``config.json`` of a local checkpoint folder or a hub id (the huggingface_hub cache; downloaded - one
    small file - only when the Hub is reachable and ``HF_HUB_OFFLINE`` is unset)."""
    p = Path(model).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"{p}: no config.json (not a model folder)")
        return p / "config.json"
    text = os.fspath(model)
    if text.count("/") != 1 or text.startswith((".", "/")):
        raise FileNotFoundError(f"model {text!r}: no such folder (and not a hub id)")
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(text, "config.json")
    if isinstance(hit, str):
        return Path(hit)
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise FileNotFoundError(
            f"model {text!r}: config.json is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
            f"run `huggingface-cli download {text} config.json` or point `model:` at a local folder")
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(text, "config.json"))


def _count_params(config: Any) -> tuple[int, int]:
    """(all, vision) parameter counts, exact: the architecture is instantiated on the meta device (no
    memory, ~1 s for 8B)."""
    import torch
    import transformers as T

    has_vision = getattr(config, "vision_config", None) is not None
    auto = [T.AutoModelForImageTextToText, T.AutoModelForCausalLM] if has_vision else [T.AutoModelForCausalLM]
    model = None
    with torch.device("meta"):
        for cls in auto:
            try:
                model = cls.from_config(config)
                break
            except ValueError:
                continue
    if model is None:
        raise ValueError(f"{type(config).__name__}: no causal-LM / image-text-to-text class in transformers")
    total = sum(p.numel() for p in model.parameters())
    vision = 0
    for name, mod in model.named_modules():
        if name.split(".")[-1] in ("visual", "vision_tower", "vision_model") and name.count(".") <= 1:
            vision = sum(p.numel() for p in mod.parameters())
            break
    return total, vision


def model_dims_from_config(config: Any, name: str = "") -> ModelDims:
    """:class:`ModelDims` of a ``transformers`` config (text models and VLMs: the text config's numbers)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    total, vision = _count_params(config)
    heads = int(text.num_attention_heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
    return ModelDims(
        name=name, params=int(total), vision_params=int(vision), layers=int(text.num_hidden_layers),
        hidden=int(text.hidden_size), intermediate=int(text.intermediate_size), heads=heads,
        kv_heads=int(getattr(text, "num_key_value_heads", None) or heads), head_dim=head_dim,
        vocab=int(text.vocab_size), max_position_embeddings=getattr(text, "max_position_embeddings", None))


def model_dims(model: str | os.PathLike) -> ModelDims:
    """:class:`ModelDims` from a checkpoint folder's / hub id's ``config.json``."""
    from transformers import AutoConfig

    path = config_json_path(model)
    cfg = AutoConfig.from_pretrained(str(path.parent))
    return model_dims_from_config(cfg, name=os.fspath(model))


# --- model states ------------------------------------------------------------------------------------


@dataclass
class MemoryEstimate:
    """Per-GPU bytes of one training stage under one strategy (see the module docstring)."""

    strategy: str
    gpus: int
    weights: float
    grads: float
    optimizer: float
    reference: float
    buffers: float
    activations: float  # with the stage's gradient_checkpointing setting
    activations_no_gc: float
    activations_gc: float
    logits: float
    vllm: float  # colocate share (0 without vLLM colocate)
    vllm_sleep: bool = False  # vllm_enable_sleep_mode: vLLM releases its share while the trainer steps
    context: float = CUDA_CONTEXT_BYTES
    notes: list[str] = field(default_factory=list)

    @property
    def states(self) -> float:
        """What stays on the GPU the whole time: model states, reference, buffers, CUDA context."""
        return self.weights + self.grads + self.optimizer + self.reference + self.buffers + self.context

    @property
    def training(self) -> float:
        return self.states + self.activations + self.logits

    @property
    def total(self) -> float:
        """The peak: the training step and vLLM's share together - or, with sleep mode, the larger of the
        training step and generation (the model states + vLLM's share)."""
        if self.vllm_sleep:
            return max(self.training, self.states + self.vllm)
        return self.training + self.vllm

    def to_json(self) -> dict:
        d = asdict(self)
        d["training"], d["total"] = self.training, self.total
        return d


def model_state_bytes(params: int, trainable: int, gpus: int, strategy: str, *,
                      param_bytes: int = FP32) -> tuple[float, float, float]:
    """(weights, gradients, optimizer) bytes per GPU; Adam(W), mixed precision (module docstring table).

    ``param_bytes``: bytes per parameter as loaded (4 fp32 / 2 bf16); it decides DDP and FSDP, where the
    parameters keep their load dtype (2 = pure bf16: no fp32 master).  DeepSpeed always holds bf16 weights and
    gradients and an fp32 master + m + v (12 bytes) in the ZeRO optimizer."""
    n = max(1, int(gpus))
    if strategy in ("single", "ddp"):
        return params * param_bytes, trainable * param_bytes, 2 * trainable * param_bytes
    if strategy == "fsdp":
        return params * param_bytes / n, trainable * param_bytes / n, 2 * trainable * param_bytes / n
    stage = {"zero1": 1, "zero2": 2, "zero3": 3}.get(strategy)
    if stage is None:
        raise ValueError(f"unknown strategy {strategy!r}; one of {STRATEGIES}")
    weights = BF16 * params / (n if stage >= 3 else 1)
    grads = BF16 * trainable / (n if stage >= 2 else 1)
    optimizer = 12 * trainable / n
    return weights, grads, optimizer


def reference_bytes(params: int, gpus: int, strategy: str, *, param_bytes: int = FP32) -> float:
    """The GRPO reference model (``beta > 0``) per GPU (module docstring)."""
    n = max(1, int(gpus))
    if strategy == "zero3":
        return BF16 * params / n
    if strategy in ("zero1", "zero2"):
        return BF16 * params
    if strategy == "fsdp":
        return param_bytes * params / n
    return param_bytes * params


def strategy_buffers_bytes(dims: ModelDims, strategy: str) -> float:
    """DeepSpeed's default communication buckets / gathered parameters, FSDP2's gathered block."""
    if strategy in ("zero1", "zero2"):
        return 2 * 5e8 * BF16
    if strategy == "zero3":
        return min(1e9, dims.params) * BF16 + 5e8 * BF16
    if strategy == "fsdp":
        block = dims.params / max(1, dims.layers)
        return 2 * max(block, dims.vocab * dims.hidden) * BF16
    return 0.0


# --- activations, logits -----------------------------------------------------------------------------


def layer_activation_bytes_per_token(dims: ModelDims) -> float:
    """``A_layer = 12 h + 8 I + 4 kv d`` bytes (bf16) a decoder layer keeps per token for its backward."""
    return 12 * dims.hidden + 8 * dims.intermediate + 4 * dims.kv_heads * dims.head_dim


def activation_bytes(dims: ModelDims, tokens: int, *, gradient_checkpointing: bool) -> float:
    """Activation bytes of one micro-batch of ``tokens`` tokens (module docstring)."""
    a = layer_activation_bytes_per_token(dims)
    if gradient_checkpointing:
        return tokens * (dims.layers * BF16 * dims.hidden + a)
    return tokens * dims.layers * a


def logits_bytes(dims: ModelDims, tokens: int, *, kind: str, fused_loss: bool = False) -> float:
    """LM-head output bytes of one micro-batch: ``10 T V`` (SFT, unfused loss), ``4 T_completion V`` (GRPO)."""
    if fused_loss:
        return 0.0
    per = 10 if kind == "sft" else 4
    return float(per) * tokens * dims.vocab


# --- vLLM KV cache -----------------------------------------------------------------------------------


def kv_bytes_per_token(dims: ModelDims, tensor_parallel: int = 1, dtype_bytes: int = BF16) -> float:
    """``2 x L x kv / tp x d x dtype_bytes`` (k and v of every layer); Qwen2.5-7B bf16: 56 KiB."""
    return 2 * dims.layers * (dims.kv_heads / max(1, tensor_parallel)) * dims.head_dim * dtype_bytes


def kv_cache_tokens(dims: ModelDims, gpu_bytes: float, share: float, tensor_parallel: int = 1) -> int:
    """Tokens the KV cache of a vLLM instance holding ``share`` of ``gpu_bytes`` can hold (0 if its weights
    and activation peak alone exceed the share)."""
    weights = BF16 * dims.params / max(1, tensor_parallel)
    room = share * gpu_bytes - weights - VLLM_OVERHEAD_BYTES
    return max(0, int(room // kv_bytes_per_token(dims, tensor_parallel)))


# --- one stage -----------------------------------------------------------------------------------------


def stage_memory(dims: ModelDims, *, kind: str, strategy: str, gpus: int, gpu_bytes: float | None,
                 per_device_batch: int, seq_tokens: int, completion_tokens: int | None,
                 gradient_checkpointing: bool, param_bytes: int, frozen_params: int = 0, beta: float = 0.0,
                 vllm_share: float = 0.0, vllm_sleep: bool = False, fused_loss: bool = False,
                 peft: bool = False) -> MemoryEstimate:
    """Per-GPU estimate of one stage (module docstring): ``seq_tokens`` is the longest sequence a micro-batch
    can hold (SFT ``max_length``; GRPO prompt + ``max_completion_length``), ``completion_tokens`` the part
    the GRPO loss runs over."""
    n = 1 if strategy == "single" else max(1, int(gpus))
    trainable = max(0, dims.params - frozen_params)
    w, g, o = model_state_bytes(dims.params, trainable, n, strategy, param_bytes=param_bytes)
    ref = reference_bytes(dims.params, n, strategy, param_bytes=param_bytes) if (kind == "grpo" and beta > 0
                                                                                   and not peft) else 0.0
    tokens = per_device_batch * seq_tokens
    a_gc = activation_bytes(dims, tokens, gradient_checkpointing=True)
    a_full = activation_bytes(dims, tokens, gradient_checkpointing=False)
    logit_tokens = tokens if kind == "sft" else per_device_batch * (completion_tokens or seq_tokens)
    logits = logits_bytes(dims, logit_tokens, kind=kind, fused_loss=fused_loss)
    vllm = vllm_share * gpu_bytes if (vllm_share and gpu_bytes) else 0.0
    est = MemoryEstimate(strategy=strategy, gpus=n, weights=w, grads=g, optimizer=o, reference=ref,
                         buffers=strategy_buffers_bytes(dims, strategy),
                         activations=a_gc if gradient_checkpointing else a_full, activations_no_gc=a_full,
                         activations_gc=a_gc, logits=logits, vllm=vllm, vllm_sleep=vllm_sleep)
    if frozen_params:
        est.notes.append(f"{frozen_params:,} frozen parameters: no gradients or optimizer states for them")
    return est
