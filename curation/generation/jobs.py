"""What every generation job agrees on, whoever runs it (``curate score`` and ``curate cot``, local or Ray):
which problems a shard holds, in which order, and the sampling seed of each prompt.

- ``shard=(i, k)`` keeps the rows with ``xxh64(problem_id) % k == i`` (a hash, not the position, so adding
  rows to the input does not move the others between shards; rows without a usable id are sharded by their
  row number so exactly one shard reports them).
- A prompt's seed is ``prompt_seed(seed, problem_id)`` = ``xxh64(f"{seed}:{problem_id}") mod 2^31``: its
  samples depend only on the model, the settings and the problem, not on the chunk or shard it fell in.
"""

from __future__ import annotations

import re
from pathlib import Path

import xxhash

from curation.core.io import ExclusionWriter, read_records

__all__ = ["parse_shard", "shard_of", "prompt_seed", "default_model_name", "load_problems",
           "RUNTIME_ENGINE_OPTIONS", "settings_engine_options"]

# Engine options that decide how a job runs, not what it produces (every prompt has its own seed): they are
# left out of the settings that guard a resume, so e.g. a job started on 8 replicas resumes on 4.
RUNTIME_ENGINE_OPTIONS = frozenset({"data_parallel_size"})


def settings_engine_options(options: dict | None) -> dict:
    """The engine options recorded in a job's resume guard: sorted, without :data:`RUNTIME_ENGINE_OPTIONS`."""
    return dict(sorted((k, v) for k, v in (options or {}).items() if k not in RUNTIME_ENGINE_OPTIONS))


def parse_shard(spec: str | tuple[int, int] | None) -> tuple[int, int]:
    """``"I/K"`` -> ``(I, K)`` with ``0 <= I < K``; ``None`` -> ``(0, 1)``."""
    if spec is None:
        return (0, 1)
    if isinstance(spec, tuple):
        i, k = spec
    else:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
        if not m:
            raise ValueError(f"--shard must look like I/K (e.g. 0/4), got {spec!r}")
        i, k = int(m.group(1)), int(m.group(2))
    if k < 1 or not 0 <= i < k:
        raise ValueError(f"--shard {i}/{k}: need K >= 1 and 0 <= I < K")
    return (i, k)



def shard_of(key: str, k: int) -> int:
    """Shard of a problem: ``xxh64(problem_id) mod K`` (stable across runs, machines and input order)."""
    return xxhash.xxh64_intdigest(key.encode("utf-8")) % k



def prompt_seed(seed: int, problem_id: str) -> int:
    """Per-prompt sampling seed ``xxh64(f"{seed}:{problem_id}") mod 2^31``."""
    return xxhash.xxh64_intdigest(f"{seed}:{problem_id}".encode("utf-8")) % (2**31)



def default_model_name(model: str) -> str:
    """Label stored in ``rollouts.model``: the folder name for a local checkpoint, else the model id."""
    p = Path(model)
    return p.name if p.exists() and p.name else str(model)



def _row_index(locator: str) -> str:
    return locator.rsplit(":", 1)[-1]



def load_problems(
    data: str | Path, shard: tuple[int, int], excl: ExclusionWriter, step: str = "score"
) -> tuple[list[dict], int]:
    """Problems of this shard in input order, with cheap checks (id, problem, answer, duplicates); bad rows
    go to ``excl`` under ``step``.  Returns ``(rows, rows_read)``; each row gets ``_locator``."""
    i_shard, k = shard
    seen: dict[str, str] = {}
    rows: list[dict] = []
    n_read = 0
    for rec in read_records(data):
        n_read += 1
        if rec.error:
            if shard_of("row:" + _row_index(rec.locator), k) == i_shard:
                excl.add(None, step=step, reason="malformed_row", detail=f"{rec.locator}: {rec.error}",
                         locator=rec.locator, raw=rec.raw)
            continue
        excl.note_repair(rec)
        row = dict(rec.data)
        row["_locator"] = rec.locator
        pid = row.get("id")
        if not isinstance(pid, str) or not pid.strip():
            if shard_of("row:" + _row_index(rec.locator), k) == i_shard:
                excl.add(row, step=step, reason="missing_id",
                         detail=f"{rec.locator}: field 'id' is missing or empty", locator=rec.locator)
            continue
        if shard_of(pid, k) != i_shard:
            continue
        if pid in seen:
            excl.add(row, step=step, reason="duplicate_id", duplicate_of=pid,
                     detail=f"{rec.locator}: id {pid!r} already used at {seen[pid]}", locator=rec.locator)
            continue
        seen[pid] = rec.locator
        problem = row.get("problem")
        if not isinstance(problem, str) or not problem.strip():
            excl.add(row, step=step, reason="missing_problem",
                     detail=f"{rec.locator} (id={pid}): field 'problem' is missing or empty", locator=rec.locator)
            continue
        answer = row.get("answer")
        if answer is None or not str(answer).strip():
            excl.add(row, step=step, reason="missing_answer",
                     detail=f"{rec.locator} (id={pid}): field 'answer' is missing or empty", locator=rec.locator)
            continue
        row["answer"] = str(answer)
        rows.append(row)
    return rows, n_read
