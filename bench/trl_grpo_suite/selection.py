"""Which of TRL's GRPO tests the suite runs, and why the others are left out (README.md has the table).

:func:`deselect_reason` returns a reason for a collected test that is deselected, ``None`` to run it:

1. explicit rules (:data:`DESELECT`, first match wins), then
2. *missing fixture*: a test that its own markers do not already skip needs a ``trl-internal-testing/...`` Hub repo that ``build_fixtures.py`` does not
   build (it is looked up in ``$HF_HUB_CACHE``).  For a parametrized test only the repos of its own parameters
   count, plus the repos its body names outside any ``parametrize`` list.

Tests that TRL's own markers skip here (``require_peft``, ``require_vllm``, ``require_liger_kernel``,
``require_jmespath``, ``require_torch_accelerator``, ``require_bitsandbytes``, ``pytest.mark.skip``...) are *not*
deselected: they stay collected and are reported as skipped, with TRL's reason.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import textwrap
from pathlib import Path

HUB_ID = re.compile(r"trl-internal-testing/[A-Za-z0-9_.\-]+")

# (nodeid substring, reason); first match wins
DESELECT: list[tuple[str, str]] = [
    ("::TestGRPOTrainerVLM::",
     "VLM tests: the Qwen2-VL/Qwen2.5-VL/Qwen3.5 processors need torchvision (their video processor), which "
     "cannot be installed here (no CPU wheel index; PyPI torchvision pulls CUDA torch), and the Gemma3/Gemma4/"
     "LLaVA-Next/Qwen3.5-MoE tiny VLM fixtures are not built"),
    ("::TestGRPOTrainerSlow::",
     "GPU-only class (@pytest.mark.slow + require_torch_accelerator; vLLM/liger/bitsandbytes/kernels)"),
]


@functools.lru_cache(maxsize=None)
def _cache_dir() -> Path | None:
    d = os.environ.get("HF_HUB_CACHE")
    return Path(d) if d else None


def fixture_available(repo_id: str) -> bool:
    cache = _cache_dir()
    if cache is None:
        return True  # not running against the offline fixtures: cannot tell
    kind = "datasets" if repo_id.split("/", 1)[1].startswith("zen") else "models"
    return (cache / f"{kind}--{repo_id.replace('/', '--')}" / "refs" / "main").is_file()


def _param_ids(item) -> set[str]:
    """Hub ids listed in any parametrize of the test (as values of any parameter)."""
    out: set[str] = set()
    for m in item.iter_markers("parametrize"):
        if len(m.args) >= 2:
            for v in m.args[1]:
                vals = getattr(v, "values", v)  # pytest.param(...) -> ParameterSet
                for x in vals if isinstance(vals, (tuple, list)) else (vals,):
                    if isinstance(x, str):
                        out |= set(HUB_ID.findall(x))
    return out


def needed_repos(item) -> set[str]:
    fn = getattr(item, "function", None)
    if fn is None:
        return set()
    try:
        src = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return set()
    in_params = _param_ids(item)
    body = set(HUB_ID.findall(src)) - in_params
    mine: set[str] = set()
    cs = getattr(item, "callspec", None)
    if cs is not None:
        for v in cs.params.values():
            if isinstance(v, str):
                mine |= set(HUB_ID.findall(v))
    return body | mine


def skipped_by_own_markers(item) -> bool:
    """True when TRL's own ``skip`` / ``skipif(True)`` markers already skip the test here."""
    for m in item.iter_markers():
        if m.name == "skip":
            return True
        if m.name == "skipif":
            cond = m.args[0] if m.args else m.kwargs.get("condition")
            if isinstance(cond, bool) and cond:
                return True
    return False


def deselect_reason(item) -> str | None:
    for pattern, reason in DESELECT:
        if pattern in item.nodeid:
            return reason
    if skipped_by_own_markers(item):
        return None  # reported as skipped with TRL's own reason
    missing = sorted(r for r in needed_repos(item) if not fixture_available(r))
    if missing:
        return "needs Hub fixture(s) not built offline: " + ", ".join(missing)
    return None
