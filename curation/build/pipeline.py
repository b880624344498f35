"""Runs ``curate build``: a recipe's steps in order, with stats, exclusions and the accounting invariant.

Invariant checked after every step: rows_in == rows_out + rows_excluded. At the end,
kept + excluded = input, always; a violation is a bug and raises.

Recipe YAML (``pipelines/*.yaml``)::

    build:
      steps:
        - normalize: {}
        - sanity: {min_chars: 10}
        - verifiable: {}
        - exact_dedup: {}
        - near_dup: {threshold: 0.8}
        - decontaminate: {benchmarks: [../shared/data/benchmarks/amc23.jsonl]}
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pyarrow as pa
import yaml

from curation.build.steps.base import Excluded, Step
from curation.core import schema as S
from curation.core.io import ExclusionWriter, read_table, write_json_atomic, write_parquet_atomic

DEFAULT_STEPS: list[dict[str, dict]] = [
    {"normalize": {}},
    {"sanity": {}},
    {"verifiable": {}},
    {"exact_dedup": {}},
    {"near_dup": {}},
    {"decontaminate": {}},
]

ProgressFactory = Callable[[str, int], Callable[[int], None]]


@dataclass
class BuildResult:
    kept: pa.Table
    excluded: pa.Table
    stats: dict[str, Any]
    out_dir: Path | None = None


@dataclass
class StepSpec:
    name: str
    options: dict = field(default_factory=dict)


def parse_steps(spec: Sequence[Any]) -> list[StepSpec]:
    """Accept ``[{"near_dup": {...}}, "normalize", {"step": "sanity", ...}]`` forms."""
    out = []
    for i, item in enumerate(spec):
        if isinstance(item, str):
            out.append(StepSpec(item))
        elif isinstance(item, dict) and "step" in item:
            opts = {k: v for k, v in item.items() if k != "step"}
            out.append(StepSpec(item["step"], opts))
        elif isinstance(item, dict) and len(item) == 1:
            (name, opts), = item.items()
            out.append(StepSpec(name, dict(opts or {})))
        else:
            raise ValueError(f"recipe step #{i + 1}: expected a step name or {{name: options}}, got {item!r}")
    return out


def load_recipe(path: str | Path) -> dict:
    path = Path(path)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe must be a YAML mapping")
    return data


def build_steps(specs: Sequence[StepSpec], *, decontaminate: Sequence[str] = ()) -> list[Step]:
    """Instantiate steps; ``decontaminate`` benchmark paths (from the CLI) are added to that step."""
    steps = []
    for spec in specs:
        opts = dict(spec.options)
        if spec.name == "decontaminate" and decontaminate:
            opts["benchmarks"] = list(opts.get("benchmarks") or []) + [str(b) for b in decontaminate]
        steps.append(Step.from_config(spec.name, opts))
    return steps


def _counted(items: Iterable[dict], advance: Callable[[int], None] | None):
    for item in items:
        yield item
        if advance:
            advance(1)


def run_pipeline(
    rows: list[dict],
    steps: Sequence[Step],
    *,
    progress: ProgressFactory | None = None,
) -> tuple[list[dict], ExclusionWriter, dict]:
    """Run ``steps`` over ``rows``; returns (kept rows, exclusions, stats)."""
    excluded = ExclusionWriter()
    stats: dict[str, Any] = {"input_rows": len(rows), "steps": []}
    current = rows
    for step in steps:
        t0 = time.perf_counter()
        advance = progress(step.name, len(current)) if progress else None
        kept: list[dict] = []
        reasons: Counter[str] = Counter()

        for out in step.run(_counted(current, advance)):
            if isinstance(out, Excluded):
                reasons[out.reason] += 1
                excluded.add(out.row, step=step.name, reason=out.reason, detail=out.detail,
                             duplicate_of=out.duplicate_of)
            else:
                kept.append(out)
        n_ex = sum(reasons.values())
        if len(kept) + n_ex != len(current):
            raise RuntimeError(
                f"step {step.name!r} lost rows: {len(current)} in, {len(kept)} kept + {n_ex} excluded"
            )
        stats["steps"].append(
            {
                **step.describe(),
                "rows_in": len(current),
                "rows_out": len(kept),
                "excluded": dict(sorted(reasons.items())),
                "seconds": round(time.perf_counter() - t0, 3),
                **step.summary(),
            }
        )
        current = kept
    stats["output_rows"] = len(current)
    stats["excluded_rows"] = len(excluded)
    by_reason: Counter[str] = Counter()
    for s in stats["steps"]:
        by_reason.update(s["excluded"])
    stats["excluded_by_reason"] = dict(sorted(by_reason.items()))
    assert stats["output_rows"] + stats["excluded_rows"] == stats["input_rows"]
    return current, excluded, stats


def build(
    inputs: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    recipe: str | Path | None = None,
    decontaminate: Sequence[str] = (),
    progress: ProgressFactory | None = None,
) -> BuildResult:
    """``curate build``: read problems table(s), run the recipe's steps, write problems/excluded/stats."""
    out_dir = Path(out_dir)
    paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    rows = []
    for path in paths:
        rows.extend(S.validate_table(read_table(path), "problems").to_pylist())
    recipe_data = load_recipe(recipe) if recipe else {}
    build_cfg = recipe_data.get("build", recipe_data)
    specs = parse_steps(build_cfg.get("steps", DEFAULT_STEPS))
    if decontaminate and not any(s.name == "decontaminate" for s in specs):
        specs.append(StepSpec("decontaminate"))
    steps = build_steps(specs, decontaminate=decontaminate)
    kept, excluded, stats = run_pipeline(rows, steps, progress=progress)
    stats = {"inputs": [str(p) for p in paths], "recipe": str(recipe) if recipe else None, **stats}
    kept_table = S.to_table(kept, "problems")
    write_parquet_atomic(kept_table, out_dir / "problems.parquet")
    excluded.write(out_dir / "excluded.parquet")
    write_json_atomic(stats, out_dir / "stats.json")
    return BuildResult(kept_table, excluded.table(), stats, out_dir)
