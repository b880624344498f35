"""Offline stand-ins for the Hub repos that TRL's ``tests/test_grpo_trainer.py`` loads.

Everything is written as a Hugging Face Hub *cache* folder (``HF_HUB_CACHE`` layout)::

    <cache>/models--trl-internal-testing--tiny-Qwen2ForCausalLM-2.5/refs/main            (commit hash)
    <cache>/models--trl-internal-testing--tiny-Qwen2ForCausalLM-2.5/snapshots/<hash>/... (config, weights, tokenizer)
    <cache>/datasets--trl-internal-testing--zen/refs/main
    <cache>/datasets--trl-internal-testing--zen/snapshots/<hash>/README.md               (YAML ``configs:``)
    <cache>/datasets--trl-internal-testing--zen/snapshots/<hash>/<config>/<split>-00000-of-00001.parquet

so that, with ``HF_HUB_OFFLINE=1 HF_HUB_CACHE=<cache>``, ``from_pretrained("trl-internal-testing/...")`` and
``load_dataset("trl-internal-testing/zen", "standard_prompt_only", split="train")`` resolve without a network.

Models follow TRL's own generators (``scripts/generate_tiny_models/*`` upstream: same classes, same tiny sizes,
bf16 weights, TRL's weight init), but the tokenizers cannot be downloaded, so they are small byte-level BPE
tokenizers trained here with rlcurate's ``curation.models`` (``curation.core.models`` after the restructure):
the Qwen ones by its ``build_tiny_tokenizer`` (1024 tokens, Qwen special tokens at ids 0..6, ``<|im_end|>`` eos,
``<|endoftext|>`` pad), or with ``--qwen-vocab full`` with the real Qwen special-token ids and vocabulary size
(``<|endoftext|>`` = 151643, ``<|im_end|>`` = 151645, 151665 / 151669 tokens: slow on CPU), each with the chat
template TRL ships for that model family
(``trl/chat_templates/qwen2_5.jinja``, ``qwen3.jinja``); the Llama one with Llama-3 special tokens and
``llama3_2.jinja``.  Datasets are produced by running TRL's own generator scripts (vendored unmodified under
``upstream/scripts``) with ``push_to_hub`` redirected into the cache.

Usage::

    python build_fixtures.py [--root DIR] [--force] [--only NAME ...]

``DIR`` defaults to ``$RLCURATE_TRL_FIXTURES`` or ``<this folder>/.fixtures``; it gets ``hub/`` (point
``HF_HUB_CACHE`` at it) and ``datasets/`` (point ``HF_DATASETS_CACHE`` at it: see
:func:`prepare_datasets_cache` for why datasets need that too).  The build is idempotent: a repo whose snapshot
carries a complete marker is skipped unless ``--force``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
UPSTREAM = HERE / "upstream"
ORG = "trl-internal-testing"
MARKER = ".rlcurate_fixture.json"
FIXTURE_VERSION = 1  # bump to invalidate previously built fixtures
# Qwen tokenizer layout: "small" (default): a 1024-token vocabulary with the Qwen special tokens at ids 0..6
# (rlcurate's curation.models.build_tiny_tokenizer): fast on CPU.  "full": the real Qwen2.5/Qwen3 vocabulary size
# with the special tokens at their real ids (151643...): what two upstream tests assume (README), but the
# 151k-wide logits make every training test several times slower on CPU.
QWEN_VOCAB = os.environ.get("RLCURATE_TRL_QWEN_VOCAB", "small")

# Zen of Python text, used as extra tokenizer training text so prompts tokenize into a few sensible pieces
ZEN = [
    "Beautiful is better than ugly.", "Explicit is better than implicit.", "Simple is better than complex.",
    "Complex is better than complicated.", "Flat is better than nested.", "Sparse is better than dense.",
    "Readability counts.", "Special cases aren't special enough to break the rules.",
    "Although practicality beats purity.", "Errors should never pass silently.", "Unless explicitly silenced.",
    "In the face of ambiguity, refuse the temptation to guess.",
    "There should be one-- and preferably only one --obvious way to do it.",
    "Although that way may not be obvious at first unless you're Dutch.", "Now is better than never.",
    "Although never is often better than *right* now.", "If the implementation is hard to explain, it's a bad idea.",
    "If the implementation is easy to explain, it may be a good idea.",
    "Namespaces are one honking great idea -- let's do more of those!",
]


def default_root() -> Path:
    """Fixture root: ``$RLCURATE_TRL_FIXTURES`` or ``<this folder>/.fixtures``; it holds ``hub/`` (use as
    ``HF_HUB_CACHE``) and ``datasets/`` (use as ``HF_DATASETS_CACHE``)."""
    env = os.environ.get("RLCURATE_TRL_FIXTURES")
    return Path(env).expanduser().resolve() if env else HERE / ".fixtures"


def hub_cache(root: Path) -> Path:
    return root / "hub"


def datasets_cache(root: Path) -> Path:
    return root / "datasets"


DS_MARKER = ".rlcurate_prepared"


# ------------------------------------------------------------------------------------------------ cache layout


def _commit_for(repo_type: str, repo_id: str) -> str:
    """Deterministic fake commit hash (40 hex) per repo and fixture version."""
    layout = "" if QWEN_VOCAB == "small" else f":qwen-vocab={QWEN_VOCAB}"
    return hashlib.sha1(f"rlcurate-fixture:{FIXTURE_VERSION}{layout}:{repo_type}:{repo_id}".encode()).hexdigest()


def repo_folder(cache: Path, repo_type: str, repo_id: str) -> Path:
    return cache / f"{repo_type}s--{repo_id.replace('/', '--')}"


def is_built(cache: Path, repo_type: str, repo_id: str) -> bool:
    folder = repo_folder(cache, repo_type, repo_id)
    commit = _commit_for(repo_type, repo_id)
    return (folder / "snapshots" / commit / MARKER).is_file() and (folder / "refs" / "main").is_file()


def install_snapshot(cache: Path, repo_type: str, repo_id: str, src: Path, info: dict | None = None) -> Path:
    """Copy the files of ``src`` into ``<cache>/<type>s--org--name/snapshots/<commit>/`` and point refs/main at it.

    Files are stored as plain files in the snapshot (no blobs/ symlinks: huggingface_hub's offline lookup only
    reads ``refs/<rev>`` and ``snapshots/<commit>/<path>``).  Written into a temp folder and renamed, so a
    half-built snapshot never looks complete."""
    folder = repo_folder(cache, repo_type, repo_id)
    commit = _commit_for(repo_type, repo_id)
    snap = folder / "snapshots" / commit
    tmp = folder / "snapshots" / f".tmp-{commit}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    (tmp / MARKER).write_text(json.dumps({"repo_id": repo_id, "repo_type": repo_type,
                                          "fixture_version": FIXTURE_VERSION, **(info or {})}, indent=2))
    if snap.exists():
        shutil.rmtree(snap)
    tmp.rename(snap)
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return snap


# ------------------------------------------------------------------------------------------------ tokenizers


def _curation_models():
    """``curation.models`` of the rlcurate repo (``curation.core.models`` after the package restructure)."""
    try:
        return importlib.import_module("curation.core.models")
    except ImportError:
        return importlib.import_module("curation.models")


def _trl_chat_template(name: str) -> str:
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / f"{name}.jinja").read_text()


# Qwen2.5 / Qwen3 special tokens at their real ids (151643...): TRL's tests hard-code some of them (e.g. the
# mocked generations of test_train_with_mask_truncated_completions use eos 151645 / pad 151643), and
# test_train_with_mask_truncated_completions_all_masked relies on a ~150k-token vocabulary making a random
# model's EOS unlikely.  (token, special) in id order from QWEN_FIRST_SPECIAL_ID.
QWEN_FIRST_SPECIAL_ID = 151643
QWEN25_SPECIALS = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False),
]
QWEN3_SPECIALS = QWEN25_SPECIALS + [("<tool_response>", False), ("</tool_response>", False), ("<think>", False),
                                    ("</think>", False)]


def qwen_tokenizer(out: Path, template: str) -> Any:
    """Qwen-style tokenizer for TRL's tiny Qwen models, in the :data:`QWEN_VOCAB` layout."""
    if QWEN_VOCAB == "full":
        return qwen_tokenizer_full(out, template)
    from transformers import AutoTokenizer

    _curation_models().build_tiny_tokenizer(out, corpus=ZEN, vocab_size=1024,
                                            chat_template=_trl_chat_template(template))
    return AutoTokenizer.from_pretrained(out)


def qwen_tokenizer_full(out: Path, template: str) -> Any:
    """Qwen-style tokenizer with the real Qwen special-token ids and vocabulary size.

    A small byte-level BPE (Qwen pre-tokenizer regex from rlcurate's ``curation.models``, NFC, trained on its
    tokenizer corpus + the Zen of Python) fills the first ids; unreachable filler entries (no merge produces
    them) pad the vocabulary up to 151643; then the Qwen2.5 (``qwen2_5``) or Qwen3 (``qwen3``) special tokens
    follow at their real ids; ``<|im_end|>`` eos, ``<|endoftext|>`` pad, no bos; TRL's chat template."""
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
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    cm = _curation_models()
    specials = QWEN3_SPECIALS if template.startswith("qwen3") else QWEN25_SPECIALS
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(cm.QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(cm._default_corpus() + ZEN, trainer=trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    n = len(vocab)
    for i in range(n, QWEN_FIRST_SPECIAL_ID):
        vocab[f"<|rlcurate_unused_{i}|>"] = i
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.add_tokens([AddedToken(t, special=sp, normalized=False) for t, sp in specials])
    for k, (t, _) in enumerate(specials):
        if tok.token_to_id(t) != QWEN_FIRST_SPECIAL_ID + k:
            raise RuntimeError(f"{t} got id {tok.token_to_id(t)}, wanted {QWEN_FIRST_SPECIAL_ID + k}")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token=None, model_max_length=131072,
                                   padding_side="right", chat_template=_trl_chat_template(template))
    fast.save_pretrained(out)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "Qwen2Tokenizer"
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False))
    reloaded = AutoTokenizer.from_pretrained(out)
    sample = "Beautiful is better than ugly. <|im_end|>"
    if reloaded(sample)["input_ids"] != tok.encode(sample).ids:
        raise RuntimeError(f"tokenizer in {out} reloads with different ids")
    return reloaded


def bpe_tokenizer(out: Path, specials: list[str], *, bos: str | None, eos: str, pad: str | None, template: str,
                  add_bos: bool, model_max_length: int) -> Any:
    """Tiny byte-level BPE tokenizer with the given special tokens (ids ``0..len(specials)-1``), trained on
    rlcurate's tokenizer corpus + the Zen of Python, with TRL's chat template ``template``."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, min_frequency=2, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_curation_models()._default_corpus() + ZEN, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    if add_bos:
        bid = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, bid)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   model_max_length=model_max_length, chat_template=_trl_chat_template(template))
    fast.save_pretrained(out)
    return AutoTokenizer.from_pretrained(out)


LLAMA_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                  "<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>"]


def llama_tokenizer(out: Path) -> Any:
    """Llama-3.2-Instruct-like: ``<|begin_of_text|>`` bos (prepended), ``<|eot_id|>`` eos, no pad token,
    ``llama3_2.jinja``."""
    return bpe_tokenizer(out, LLAMA_SPECIALS, bos="<|begin_of_text|>", eos="<|eot_id|>", pad=None,
                         template="llama3_2", add_bos=True, model_max_length=131072)


def gemma_tokenizer(out: Path) -> Any:
    """gemma-2-2b-it-like: ``<pad>``=0, ``<eos>``=1, ``<bos>``=2 (prepended), turn markers, ``gemma.jinja``."""
    return bpe_tokenizer(out, ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"], bos="<bos>",
                         eos="<eos>", pad="<pad>", template="gemma", add_bos=True, model_max_length=8192)


# ------------------------------------------------------------------------------------------------ models


def init_weights_tiny_model(model) -> None:
    """TRL's ``scripts/generate_tiny_models/_common.init_weights_tiny_model`` (same init, re-implemented)."""
    from torch import nn

    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            if module.bias is not None:
                nn.init.zeros_(module.bias)
            nn.init.xavier_uniform_(module.weight)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _qwen_ids(tok) -> dict:
    return {"pad": tok.convert_tokens_to_ids("<|endoftext|>"), "eos": tok.convert_tokens_to_ids("<|im_end|>")}


def _qwen_generation_config(tok, family: str):
    """The upstream model's generation config (Qwen2.5-Instruct / Qwen3) with ids mapped to the tiny tokenizer."""
    from transformers import GenerationConfig

    ids = _qwen_ids(tok)
    if family == "qwen2_5":  # Qwen/Qwen2.5-32B-Instruct
        return GenerationConfig(bos_token_id=ids["pad"], pad_token_id=ids["pad"], eos_token_id=[ids["eos"], ids["pad"]],
                                do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05)
    # Qwen/Qwen3-8B, Qwen/Qwen3-4B
    return GenerationConfig(bos_token_id=ids["pad"], pad_token_id=ids["pad"], eos_token_id=[ids["eos"], ids["pad"]],
                            do_sample=True, temperature=0.6, top_p=0.95, top_k=20)


def _save(model, tok, gen, out: Path) -> None:
    import torch

    model = model.to(dtype=torch.bfloat16)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    if gen is not None:
        gen.save_pretrained(out)
    (out / "README.md").write_text(
        f"---\nlibrary_name: transformers\ntags: [trl]\n---\n\n# Tiny {type(model).__name__}\n\n"
        "Offline stand-in for the TRL test model of the same name (random weights, tiny BPE tokenizer).\n")


def build_qwen2_causal(out: Path) -> None:  # tiny-Qwen2ForCausalLM-2.5
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = qwen_tokenizer(out, "qwen2_5")
    ids = _qwen_ids(tok)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=8, num_attention_heads=4, num_key_value_heads=2,
                         num_hidden_layers=2, intermediate_size=32, bos_token_id=ids["pad"], eos_token_id=ids["eos"])
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    init_weights_tiny_model(model)
    _save(model, tok, _qwen_generation_config(tok, "qwen2_5"), out)


def build_qwen2_seqcls(out: Path) -> None:  # tiny-Qwen2ForSequenceClassification-2.5
    import torch
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    tok = qwen_tokenizer(out, "qwen2_5")
    ids = _qwen_ids(tok)
    # AutoConfig of Qwen2.5-32B-Instruct with the overrides of TRL's generator
    config = Qwen2Config(vocab_size=len(tok), num_labels=1, hidden_size=16, num_attention_heads=4,
                         num_key_value_heads=2, num_hidden_layers=2, intermediate_size=32, rms_norm_eps=1e-6,
                         max_position_embeddings=32768, bos_token_id=ids["pad"], eos_token_id=ids["eos"])
    torch.manual_seed(1)
    model = Qwen2ForSequenceClassification(config)
    init_weights_tiny_model(model)
    _save(model, tok, _qwen_generation_config(tok, "qwen2_5"), out)


def build_qwen3_causal(out: Path) -> None:  # tiny-Qwen3ForCausalLM
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = qwen_tokenizer(out, "qwen3")
    ids = _qwen_ids(tok)
    config = Qwen3Config(vocab_size=len(tok), hidden_size=8, num_attention_heads=4, num_key_value_heads=2,
                         num_hidden_layers=2, intermediate_size=32, bos_token_id=ids["pad"], eos_token_id=ids["eos"])
    torch.manual_seed(2)
    model = Qwen3ForCausalLM(config)
    init_weights_tiny_model(model)
    _save(model, tok, _qwen_generation_config(tok, "qwen3"), out)


def build_qwen3_seqcls(out: Path) -> None:  # tiny-Qwen3ForSequenceClassification
    import torch
    from transformers import Qwen3Config, Qwen3ForSequenceClassification

    tok = qwen_tokenizer(out, "qwen3")
    ids = _qwen_ids(tok)
    config = Qwen3Config(vocab_size=len(tok), num_labels=1, hidden_size=16, num_attention_heads=4,
                         num_key_value_heads=2, num_hidden_layers=2, intermediate_size=32, tie_word_embeddings=True,
                         max_position_embeddings=40960, bos_token_id=ids["pad"], eos_token_id=ids["eos"])
    torch.manual_seed(3)
    model = Qwen3ForSequenceClassification(config)
    init_weights_tiny_model(model)
    _save(model, tok, _qwen_generation_config(tok, "qwen3"), out)


def build_qwen3_moe_causal(out: Path) -> None:  # tiny-Qwen3MoeForCausalLM
    import torch
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    tok = qwen_tokenizer(out, "qwen3")
    ids = _qwen_ids(tok)
    config = Qwen3MoeConfig(vocab_size=len(tok), hidden_size=8, num_attention_heads=4, num_key_value_heads=2,
                            num_hidden_layers=2, intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                            max_position_embeddings=40960, rope_theta=1000000.0, norm_topk_prob=True,
                            bos_token_id=ids["pad"], eos_token_id=ids["eos"], head_dim=128, max_window_layers=48)
    torch.manual_seed(6)
    model = Qwen3MoeForCausalLM(config)
    init_weights_tiny_model(model)
    _save(model, tok, _qwen_generation_config(tok, "qwen3"), out)


def build_gemma2_causal(out: Path) -> None:  # tiny-Gemma2ForCausalLM
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM, GenerationConfig

    tok = gemma_tokenizer(out)
    config = Gemma2Config(vocab_size=len(tok), hidden_size=8, num_attention_heads=4, num_key_value_heads=2,
                          num_hidden_layers=2, intermediate_size=32, pad_token_id=tok.pad_token_id,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(7)
    model = Gemma2ForCausalLM(config)
    init_weights_tiny_model(model)
    eot = tok.convert_tokens_to_ids("<end_of_turn>")
    gen = GenerationConfig(bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id,
                           eos_token_id=[tok.eos_token_id, eot])
    _save(model, tok, gen, out)


def _llama_generation_config(tok):
    from transformers import GenerationConfig

    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    eom = tok.convert_tokens_to_ids("<|eom_id|>")
    eot_text = tok.convert_tokens_to_ids("<|end_of_text|>")
    return GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=[eot_text, eom, eot], do_sample=True,
                            temperature=0.6, top_p=0.9)


def _llama_config_kwargs(tok) -> dict:
    # meta-llama/Llama-3.2-1B-Instruct values that matter for behaviour (rope, norms, ids)
    return dict(vocab_size=len(tok), rms_norm_eps=1e-5, max_position_embeddings=131072, tie_word_embeddings=True,
                bos_token_id=tok.bos_token_id,
                eos_token_id=[tok.convert_tokens_to_ids(t) for t in ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")])


def build_llama_seqcls(out: Path) -> None:  # tiny-LlamaForSequenceClassification-3.2
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = llama_tokenizer(out)
    config = LlamaConfig(num_labels=1, hidden_size=16, num_attention_heads=4, num_key_value_heads=2,
                         num_hidden_layers=2, intermediate_size=32, **_llama_config_kwargs(tok))
    torch.manual_seed(4)
    model = LlamaForSequenceClassification(config)
    init_weights_tiny_model(model)
    _save(model, tok, _llama_generation_config(tok), out)


def build_remote_causal(out: Path) -> None:  # tiny-RemoteForCausalLM (loadable only with trust_remote_code)
    """TRL's ``remote_for_causal_lm.py``: a LlamaForCausalLM subclass under ``model_type="remote"`` whose code
    (vendored ``upstream/scripts/generate_tiny_models/_remote_code``) is saved next to the weights."""
    import torch

    code_dir = UPSTREAM / "scripts" / "generate_tiny_models" / "_remote_code"
    pkg = "rlcurate_trl_remote_code"
    # import the two files as a package so the relative import in modeling_remote resolves
    if pkg not in sys.modules:
        pkg_mod = types.ModuleType(pkg)
        pkg_mod.__path__ = [str(code_dir)]
        sys.modules[pkg] = pkg_mod
    conf_mod = importlib.import_module(f"{pkg}.configuration_remote")
    model_mod = importlib.import_module(f"{pkg}.modeling_remote")
    RemoteConfig = conf_mod.RemoteConfig
    tok = llama_tokenizer(out)
    RemoteConfig.register_for_auto_class()
    model_mod.RemoteModel.register_for_auto_class("AutoModel")
    model_mod.RemoteForCausalLM.register_for_auto_class("AutoModelForCausalLM")
    model_mod.RemoteForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
    config = RemoteConfig(hidden_size=8, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                          intermediate_size=32, **_llama_config_kwargs(tok))
    config.auto_map = {"AutoModel": "modeling_remote.RemoteModel",
                       "AutoModelForSequenceClassification": "modeling_remote.RemoteForSequenceClassification"}
    torch.manual_seed(5)
    model = model_mod.RemoteForCausalLM(config)
    init_weights_tiny_model(model)
    _save(model, tok, _llama_generation_config(tok), out)
    # save_pretrained copies the defining source files only when the classes come from a real module file with
    # the dynamic-module naming; make sure both files are there under the names auto_map refers to
    for f in ("configuration_remote.py", "modeling_remote.py"):
        if not (out / f).exists():
            shutil.copy(code_dir / f, out / f)
    cfg = json.loads((out / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "configuration_remote.RemoteConfig",
                       "AutoModel": "modeling_remote.RemoteModel",
                       "AutoModelForCausalLM": "modeling_remote.RemoteForCausalLM",
                       "AutoModelForSequenceClassification": "modeling_remote.RemoteForSequenceClassification"}
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    # the vendored modeling file uses a relative import (from .configuration_remote import ...), which is how
    # transformers' dynamic modules load it


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


MODELS: dict[str, Callable[[Path], None]] = {
    f"{ORG}/tiny-Qwen2ForCausalLM-2.5": build_qwen2_causal,
    f"{ORG}/tiny-Qwen2ForSequenceClassification-2.5": build_qwen2_seqcls,
    f"{ORG}/tiny-Qwen3ForCausalLM": build_qwen3_causal,
    f"{ORG}/tiny-Qwen3ForSequenceClassification": build_qwen3_seqcls,
    f"{ORG}/tiny-LlamaForSequenceClassification-3.2": build_llama_seqcls,
    f"{ORG}/tiny-RemoteForCausalLM": build_remote_causal,
    f"{ORG}/tiny-Qwen3MoeForCausalLM": build_qwen3_moe_causal,
    f"{ORG}/tiny-Gemma2ForCausalLM": build_gemma2_causal,
}


# ------------------------------------------------------------------------------------------------ datasets


def run_dataset_generator(script: Path, repo_id: str, out: Path, test_size: float = 0.1) -> list[str]:
    """Run an upstream ``generate_zen*_dataset.py`` ``main()`` with ``push_to_hub`` redirected to ``out``:
    every ``DatasetDict.push_to_hub(repo_id, config_name=C)`` writes ``out/C/<split>-00000-of-00001.parquet``
    (the layout ``push_to_hub`` creates on the Hub).  Returns the config names, in push order."""
    import numpy as np
    from datasets import DatasetDict

    configs: list[tuple[str, dict]] = []

    def fake_push(self, repo, config_name="default", **kw):
        assert repo == repo_id, (repo, repo_id)
        d = out / config_name
        d.mkdir(parents=True, exist_ok=True)
        for split, ds in self.items():
            ds.to_parquet(str(d / f"{split}-00000-of-00001.parquet"))
        configs.append((config_name, {s: len(ds) for s, ds in self.items()}))

    mod = _load_module(f"rlcurate_trl_gen_{script.stem}", script)
    original = DatasetDict.push_to_hub
    DatasetDict.push_to_hub = fake_push
    try:
        np.random.seed(0)  # the image generators draw random images; make the fixture deterministic
        mod.main(test_size, True, repo_id)
    finally:
        DatasetDict.push_to_hub = original
    # README with the `configs:` metadata the Hub writes on push_to_hub (how `datasets` finds config data files)
    lines = ["---", "configs:"]
    for name, splits in configs:
        lines += [f"- config_name: {name}", "  data_files:"]
        for split in splits:
            lines += [f"  - split: {split}", f"    path: {name}/{split}-*"]
    lines += ["---", "", f"# {repo_id}", "", "Offline copy generated by TRL's script " + script.name, ""]
    (out / "README.md").write_text("\n".join(lines))
    return [c for c, _ in configs]


def prepare_datasets_cache(snapshot: Path, repo_id: str, commit: str, configs: list[str], datasets_cache: Path) -> None:
    """Fill the ``datasets`` library cache (``HF_DATASETS_CACHE``) for ``repo_id`` from its hub-cache snapshot.

    Finding (datasets 5.2): with ``HF_HUB_OFFLINE=1``, ``load_dataset("org/name", config)`` never reads the
    *hub* cache (``HF_HUB_CACHE/datasets--org--name``): ``dataset_module_factory`` raises offline before any
    hub lookup and falls back to ``CachedDatasetModuleFactory``, i.e. the Arrow files a previous online load
    left in ``HF_DATASETS_CACHE/org___name/<config>/<version>/<hash>/`` (``<name>-<split>.arrow`` +
    ``dataset_info.json``).  So each config is prepared here exactly as an online load would: the snapshot's
    README ``configs:`` drive a Parquet builder that carries the hub ``repo_id``/``dataset_name`` (what
    ``HubDatasetModuleFactory`` sets) and the snapshot commit as hash."""
    import datasets.load as dl
    from datasets import load_dataset_builder

    name = dl.camelcase_to_snakecase(repo_id.split("/")[-1])

    def module(*_a, **_k):  # fresh per call: load_dataset_builder pops keys out of builder_kwargs
        m = dl.LocalDatasetModuleFactory(str(snapshot)).get_module()
        m.builder_kwargs["dataset_name"] = name
        m.hash = commit
        return m

    # The builder would reject local data files when given the hub repo_id (it checks they are hf:// paths of
    # that repo), and the repo_id only decides the cache sub-folder name (``org___name``): prepare without it
    # into a scratch cache, then move the folder to where a hub load puts it.
    original = dl.dataset_module_factory
    dl.dataset_module_factory = module
    try:
        with tempfile.TemporaryDirectory(prefix="trl-dscache-", dir=datasets_cache) as tmp:
            for config in configs:
                b = load_dataset_builder(repo_id, config, cache_dir=tmp)
                b.download_and_prepare()
            dest = datasets_cache / "___".join([repo_id.split("/")[0], name])
            shutil.rmtree(dest, ignore_errors=True)
            shutil.move(str(Path(tmp) / name), dest)
    finally:
        dl.dataset_module_factory = original


DATASETS: dict[str, str] = {
    f"{ORG}/zen": "generate_zen_dataset.py",
    f"{ORG}/zen-image": "generate_zen_image_dataset.py",
    f"{ORG}/zen-multi-image": "generate_zen_multi_image_dataset.py",
}


# ------------------------------------------------------------------------------------------------ main


def build(root: Path, force: bool = False, only: list[str] | None = None, log=print) -> dict:
    """Build every fixture (or those whose repo id / short name is in ``only``) under ``root``: models and
    dataset repos into the hub cache ``root/hub``, prepared datasets into ``root/datasets``."""
    cache, ds_cache = hub_cache(root), datasets_cache(root)
    cache.mkdir(parents=True, exist_ok=True)
    ds_cache.mkdir(parents=True, exist_ok=True)
    done = {"models": [], "datasets": [], "skipped": [], "qwen_vocab": QWEN_VOCAB}
    wanted = lambda rid: not only or rid in only or rid.split("/", 1)[1] in only  # noqa: E731
    for repo_id, fn in MODELS.items():
        if not wanted(repo_id):
            continue
        if is_built(cache, "model", repo_id) and not force:
            done["skipped"].append(repo_id)
            continue
        with tempfile.TemporaryDirectory(prefix="trl-fixture-") as tmp:
            fn(Path(tmp))
            install_snapshot(cache, "model", repo_id, Path(tmp), {"builder": fn.__name__})
        done["models"].append(repo_id)
        log(f"built model   {repo_id}")
    for repo_id, script in DATASETS.items():
        if not wanted(repo_id):
            continue
        prepared = ds_cache / repo_id.replace("/", "___") / DS_MARKER
        if is_built(cache, "dataset", repo_id) and prepared.is_file() and not force:
            done["skipped"].append(repo_id)
            continue
        shutil.rmtree(prepared.parent, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="trl-fixture-") as tmp:
            configs = run_dataset_generator(UPSTREAM / "scripts" / script, repo_id, Path(tmp))
            snap = install_snapshot(cache, "dataset", repo_id, Path(tmp), {"script": script, "configs": configs})
        prepare_datasets_cache(snap, repo_id, _commit_for("dataset", repo_id), configs, ds_cache)
        prepared.write_text(json.dumps({"configs": configs, "commit": _commit_for("dataset", repo_id)}))
        done["datasets"].append(repo_id)
        log(f"built dataset {repo_id} ({len(configs)} configs)")
    (root / "FIXTURES.json").write_text(json.dumps({"fixture_version": FIXTURE_VERSION, "qwen_vocab": QWEN_VOCAB,
                                                    "models": sorted(MODELS), "datasets": sorted(DATASETS)}, indent=2))
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=None,
                   help="fixture root holding hub/ and datasets/ (default: $RLCURATE_TRL_FIXTURES or ./.fixtures)")
    p.add_argument("--force", action="store_true", help="rebuild fixtures that already exist")
    p.add_argument("--only", nargs="*", default=None, help="repo ids or short names to build")
    p.add_argument("--qwen-vocab", choices=["small", "full"], default=None,
                   help="Qwen tokenizer layout (default: $RLCURATE_TRL_QWEN_VOCAB or small; see QWEN_VOCAB)")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    global QWEN_VOCAB
    if a.qwen_vocab:
        QWEN_VOCAB = a.qwen_vocab
    root = (a.root or default_root()).resolve()
    res = build(root, force=a.force, only=a.only)
    print(json.dumps({"root": str(root), "HF_HUB_CACHE": str(hub_cache(root)),
                      "HF_DATASETS_CACHE": str(datasets_cache(root)), **res}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
