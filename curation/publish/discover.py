"""Discovery: which tables under a run folder become which dataset configs (step 2 of :mod:`curation.publish`)."""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow.parquet as pq

__all__ = ["CONFIG_FILES", "CONFIG_ORDER", "KINDS", "Discovery", "FoundTable", "PublishError", "card_kind", "discover",
           "main_config"]

CONFIG_FILES: dict[str, str] = {
    "problems.parquet": "problems",
    "excluded.parquet": "excluded",
    "scores.parquet": "scores",
    "rollouts.parquet": "rollouts",
    "sft.parquet": "cold_start",
    "sft_text.parquet": "cold_start_text",
    "sft_mm.parquet": "cold_start_multimodal",
    "sft_multimodal.parquet": "cold_start_multimodal",
    "rl.parquet": "rl",
    "rl_text.parquet": "rl_text",
    "rl_mm.parquet": "rl_multimodal",
    "rl_multimodal.parquet": "rl_multimodal",
}



# Order of configs in the card and in the YAML ``configs`` list (after the default config).
CONFIG_ORDER = [
    "rl", "rl_multimodal", "rl_text",
    "cold_start", "cold_start_multimodal", "cold_start_text",
    "problems", "scores", "rollouts", "excluded",
]



CONFIG_DESCRIPTIONS: dict[str, str] = {
    "problems": "curated problems with gold answers (and images for multimodal ones)",
    "excluded": "every row dropped during curation, with the stage/step and reason",
    "scores": "per (problem, model) pass rate, OVS, TDS and VPS (MMR1 variance-aware sampling)",
    "rollouts": "the sampled solutions behind the scores, with verdicts",
    "cold_start": "long chain-of-thought SFT conversations (cold start)",
    "cold_start_text": "text-only cold-start SFT conversations",
    "cold_start_multimodal": "multimodal cold-start SFT conversations",
    "rl": "GRPO prompts with gold answers (and VPS when scored)",
    "rl_text": "text-only GRPO prompts (ReVisual-R1 text RL stage)",
    "rl_multimodal": "multimodal GRPO prompts (ReVisual-R1 multimodal RL stage)",
}



# Card kind = the most downstream product present; each kind has data_cards/<kind>.md.j2.
KINDS = ("rl", "cold_start", "scored", "problems")



_KIND_MAIN = {
    "rl": ("rl", "rl_multimodal", "rl_text"),
    "cold_start": ("cold_start", "cold_start_multimodal", "cold_start_text"),
    "scored": ("scores",),
    "problems": ("problems",),
}



class PublishError(ValueError):
    """A clear, user-facing publishing error (never contains the token)."""



@dataclass
class FoundTable:
    config: str
    path: Path
    stage: str  # build | ingest | score | cot | rl-set | unknown
    num_rows: int



@dataclass
class Discovery:
    root: Path
    tables: dict[str, list[FoundTable]]  # config -> chosen table(s) (several only for ``excluded``)
    stats: dict[str, list[tuple[Path, dict]]]  # stage -> [(folder, stats.json)]
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (path, why) tables not published

    @property
    def configs(self) -> list[str]:
        return list(self.tables)

    def rows(self, config: str) -> int:
        return sum(t.num_rows for t in self.tables.get(config, []))



_STAGE_RANK = {"build": 3, "unknown": 2, "ingest": 1}  # which ``problems`` table wins



_PIPELINE_ORDER = {"ingest": 0, "build": 1, "score": 2, "cot": 3, "rl-set": 4, "unknown": 5}



def _stage_of(folder: Path, files: Iterable[str], stats: dict | None) -> str:
    if stats is not None and "steps" in stats and "input_rows" in stats:
        return "build"
    if stats is not None and "format" in stats and "rows_in" in stats:
        return "ingest"
    names = set(files)
    if names & {"scores.parquet", "rollouts.parquet"}:
        return "score"
    if any(n.startswith("sft") for n in names):
        return "cot"
    if any(n.startswith("rl") for n in names):
        return "rl-set"
    return "unknown"



def _read_stats(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PublishError(f"{path}: cannot read stats ({e})") from None
    return data if isinstance(data, dict) else None



def _excluded(rel: str, patterns: Sequence[str]) -> str | None:
    """The first ``--exclude`` pattern matching the sub-folder ``rel`` (POSIX path relative to the root), if any.
    A matched folder is pruned from the walk, so nothing below it is ever tested."""
    return next((pat for pat in patterns if fnmatch.fnmatchcase(rel, pat.strip("/"))), None)


def discover(root: str | Path, exclude: Sequence[str] = ()) -> Discovery:
    """Find the tables under ``root`` and map them to configs (see the module docstring for the rules).

    ``exclude``: glob patterns of sub-folders (relative to ``root``, e.g. ``learn`` or ``runs/*/eval``) whose
    tables are not published - each folder left out is listed in :attr:`Discovery.skipped` with the pattern."""
    root = Path(root)
    if not root.is_dir():
        raise PublishError(f"{root}: not a folder")
    candidates: dict[str, list[FoundTable]] = {}
    stats: dict[str, list[tuple[Path, dict]]] = {}
    skipped: list[tuple[Path, str]] = []  # (path, why): folders left out by --exclude, then superseded tables
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        folder_p = Path(folder)
        kept = []
        for d in dirs:
            pat = _excluded((folder_p / d).relative_to(root).as_posix(), exclude)
            if pat is None:
                kept.append(d)
            else:
                skipped.append((folder_p / d, f"--exclude {pat}"))
        dirs[:] = kept
        st = _read_stats(folder_p / "stats.json")
        tables = sorted(f for f in files if f in CONFIG_FILES)
        if not tables and st is None:
            continue
        stage_name = _stage_of(folder_p, tables, st)
        if st is not None:
            stats.setdefault(stage_name, []).append((folder_p, st))
        for name in tables:
            path = folder_p / name
            try:
                n = pq.ParquetFile(path).metadata.num_rows
            except Exception as e:  # noqa: BLE001 - any unreadable file is a user error, named
                raise PublishError(f"{path}: not a readable Parquet file ({e})") from None
            candidates.setdefault(CONFIG_FILES[name], []).append(FoundTable(CONFIG_FILES[name], path, stage_name, n))
    if not candidates:
        known = ", ".join(sorted(CONFIG_FILES))
        raise PublishError(f"{root}: no tables to publish found (looked for {known} in it and its sub-folders)")

    chosen: dict[str, list[FoundTable]] = {}
    for config, found in candidates.items():
        if config == "excluded":
            # every stage's exclusions in pipeline order (ingest, build, score...), each in path order
            chosen[config] = sorted(found, key=lambda t: (_PIPELINE_ORDER.get(t.stage, 5), str(t.path)))
            continue
        best = max(_STAGE_RANK.get(t.stage, 2) for t in found)
        top = [t for t in found if _STAGE_RANK.get(t.stage, 2) == best]
        if len(top) > 1:
            paths = ", ".join(str(t.path) for t in top)
            raise PublishError(
                f"several tables for config {config!r}: {paths}; publish one of their folders instead, "
                "leave the others out with --exclude FOLDER, or combine them first (e.g. `curate build` over "
                "several ingest folders)"
            )
        chosen[config] = top
        for t in found:
            if t is not top[0]:
                skipped.append((t.path, f"superseded by {top[0].path} ({top[0].stage} output)"))
    ordered = {c: chosen[c] for c in CONFIG_ORDER if c in chosen}
    return Discovery(root, ordered, stats, skipped)



def card_kind(configs: Iterable[str]) -> str:
    present = set(configs)
    for kind in KINDS:
        if present & set(_KIND_MAIN[kind]):
            return kind
    return "problems"



def main_config(configs: Sequence[str], kind: str) -> str:
    for c in _KIND_MAIN[kind]:
        if c in configs:
            return c
    return configs[0]


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name
