"""Local model infrastructure: tiny tokenizer/Qwen2/Qwen2-VL builders, processors, SmolLM2 from GGUF."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from curation.core import models


def test_tiny_tokenizer_roundtrips_ids_through_autotokenizer(tiny_tokenizer_dir: Path):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    raw = Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json"))
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    texts = [
        "Ann has 12 apples and gets 7 more. How many apples does Ann have now?",
        "Caf\u00e9 na\u0131ve \u222b\u2080\u00b9 x\u00b2 dx = \u2153  \\frac{1}{3}\n\n  tabs\tand  spaces",
        "<think>3 + 4 = 7</think> The answer is \\boxed{7}.<|im_end|>",
        "Unseen words: zygomorphic quixotry 12345678901234567890",
    ]
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == raw.encode(text).ids
        assert tok.decode(ids) == raw.decode(ids, skip_special_tokens=False)
    # NFC normalisation: the decomposed form encodes like the composed one
    assert tok("Cafe\u0301")["input_ids"] == tok("Caf\u00e9")["input_ids"]
    # fixed special-token ids, <think> atomic and kept when special tokens are skipped
    for i, t in enumerate(models.SPECIAL_TOKENS):
        assert tok.convert_tokens_to_ids(t) == i
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    think = tok("<think>", add_special_tokens=False)["input_ids"]
    assert len(think) == 1
    ids = tok("<think>hi</think><|im_end|>", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == "<think>hi</think>"


def test_tiny_tokenizer_chat_template(tiny_tokenizer_dir: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    msgs = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Find x."}]},
        {"role": "assistant", "content": "<think>x = 2</think>2"},
        {"role": "user", "content": "And y?"},
    ]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Find x.<|im_end|>\n"
        "<|im_start|>assistant\n<think>x = 2</think>2<|im_end|>\n"
        "<|im_start|>user\nAnd y?<|im_end|>\n<|im_start|>assistant\n"
    )
    no_think = tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert no_think.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    own_system = tok.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
                                         tokenize=False)
    assert own_system == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"


def test_tiny_tokenizer_with_corpus(tmp_path: Path, shared_data: Path):
    from transformers import AutoTokenizer

    lines = [json.loads(s)["question"] for s in (shared_data / "gsm8k" / "train.jsonl").open().readlines()[:300]]
    out = models.build_tiny_tokenizer(tmp_path / "tok", corpus=lines, vocab_size=600)
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == 600 + len(models.THINK_TOKENS)
    # a GSM8K question compresses better than bytes
    ids = tok(lines[0], add_special_tokens=False)["input_ids"]
    assert len(ids) < 0.5 * len(lines[0].encode())


def test_tiny_qwen2_build_load_generate(tiny_qwen2_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert not models.is_vision_language(tiny_qwen2_dir)
    cfg = json.loads((tiny_qwen2_dir / "config.json").read_text())
    assert cfg["model_type"] == "qwen2" and cfg["hidden_size"] // cfg["num_attention_heads"] >= 32
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)
    tok = models.load_processor(tiny_qwen2_dir)
    assert tok.padding_side == "left" and type(tok).__name__ == "Qwen2Tokenizer"
    assert model.get_input_embeddings().weight.shape[0] == len(AutoTokenizer.from_pretrained(tiny_qwen2_dir))
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 3 + 4?"}], tokenize=False,
                                     add_generation_prompt=True)
    enc = tok([prompt, "short"], return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(0)
    out = model.generate(**enc, max_new_tokens=6, min_new_tokens=6, do_sample=True)
    assert out.shape == (2, enc["input_ids"].shape[1] + 6)
    # same seed -> same random weights
    again = models.build_tiny_qwen2(tiny_qwen2_dir.parent / "qwen2_again", tokenizer_dir=tiny_qwen2_dir)
    m2 = AutoModelForCausalLM.from_pretrained(again)
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, m2.model.layers[0].mlp.up_proj.weight)


def test_head_size_below_32_is_rejected(tmp_path: Path):
    with pytest.raises(ValueError, match="head size 16"):
        models.build_tiny_qwen2(tmp_path / "bad", hidden=64, heads=4)


@pytest.mark.parametrize("variant", ["qwen2_vl", "qwen2_5_vl"])
def test_tiny_vl_build_load_generate_with_math_vision_image(
    variant: str, tiny_qwen2_vl_dir: Path, tiny_qwen2_5_vl_dir: Path, math_vision_images: list[Path]
):
    from transformers import AutoModelForImageTextToText

    model_dir = tiny_qwen2_vl_dir if variant == "qwen2_vl" else tiny_qwen2_5_vl_dir
    assert models.is_vision_language(model_dir)
    proc = models.load_processor(model_dir)
    assert proc.video_processor is None or models.torchvision_available()
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    assert model.config.model_type == variant
    image = Image.open(math_vision_images[0]).convert("RGB")
    msgs = [
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is the area?"}]}],
        [{"role": "user", "content": [{"type": "text", "text": "What is 3 + 4?"}]}],
    ]
    texts = [proc.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in msgs]
    enc = proc(text=texts, images=[image], padding=True, return_tensors="pt")
    # <|image_pad|> is expanded to one token per 2x2 merged patch, within the configured pixel budget
    grid = enc["image_grid_thw"][0]
    n_image_tokens = int((enc["input_ids"][0] == model.config.image_token_id).sum())
    assert n_image_tokens == int(grid.prod()) // 4
    assert 4 <= n_image_tokens <= 64
    out = model.generate(**enc, max_new_tokens=5, min_new_tokens=5, do_sample=True, num_return_sequences=2)
    assert out.shape == (4, enc["input_ids"].shape[1] + 5)


def test_load_processor_patch_is_narrow(tiny_qwen2_vl_dir: Path):
    from transformers import AutoTokenizer
    from transformers.processing_utils import ProcessorMixin

    models.load_processor(tiny_qwen2_vl_dir)
    if models.torchvision_available():
        pytest.skip("torchvision present: no patch installed")
    tok = AutoTokenizer.from_pretrained(tiny_qwen2_vl_dir)
    proc = models.load_processor(tiny_qwen2_vl_dir)
    # None is accepted for the video processor only; a wrong image processor is still refused
    assert ProcessorMixin.check_argument_for_proper_class(proc, "video_processor", None) is None
    with pytest.raises(TypeError):
        ProcessorMixin.check_argument_for_proper_class(proc, "image_processor", tok)


def test_is_vision_language_needs_a_model_dir(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        models.is_vision_language(tmp_path)


@pytest.mark.slow
def test_ensure_smollm2_converts_once_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("RLCURATE_CACHE", str(tmp_path / "cache"))
    target = tmp_path / "cache" / "models" / "smollm2-135m-instruct"
    gguf = models.find_smollm2_gguf()
    assert gguf.name.startswith("SmolLM2-135M-Instruct") and gguf.suffix == ".gguf"

    t0 = time.perf_counter()
    path = models.ensure_smollm2()
    first = time.perf_counter() - t0
    assert path == target.resolve()
    marker = path / "rlcurate_model.json"
    meta = json.loads(marker.read_text())
    assert meta["source"] == str(gguf)
    assert (path / "model.safetensors").stat().st_size > 400e6
    assert not list(path.parent.glob(".smollm2-135m-instruct.tmp-*")), "temporary directory left behind"

    mtime = marker.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert models.ensure_smollm2() == path
    second = time.perf_counter() - t0
    assert second < 0.5 and second < first / 20
    assert marker.stat().st_mtime_ns == mtime  # not reconverted

    tok = AutoTokenizer.from_pretrained(path)
    assert "<|im_start|>" in tok.chat_template and tok.eos_token == "<|im_end|>"
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "llama" and not hasattr(model.config, "quantization_config")
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 3 + 4?"}], tokenize=False,
                                     add_generation_prompt=True)
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "7" in answer, answer


def test_ensure_smollm2_explicit_cache_dir_is_reused(smollm2_dir: Path):
    # the session fixture already converted (or found) the default cache; an explicit dir pointing at it
    # returns immediately without touching it
    t0 = time.perf_counter()
    assert models.ensure_smollm2(smollm2_dir) == smollm2_dir
    assert time.perf_counter() - t0 < 0.5
    assert (smollm2_dir / "rlcurate_model.json").is_file()
