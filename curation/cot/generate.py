"""``curate cot``: long chain-of-thought cold-start SFT data by rejection sampling from a teacher.

For every problem the teacher writes ``k`` solutions (same engines as ``curate score``) under a system
prompt asking for ``<think>reasoning</think>`` then ``\\boxed{answer}`` (template ``cot_system`` in
``pipelines/prompts/``).  A solution is **accepted** when it passes every quality filter of
:mod:`curation.cot.quality` and the verifier accepts its final answer against the gold answer
(:func:`curation.verify.verify_batch`); ``--keep`` then selects among a problem's accepted solutions.

Instead of a teacher, ``--responses FILE`` takes pre-generated solutions (long form: ``problem_id``,
``response``, optional ``model``; e.g. real model outputs on MATH-Vision) and runs the same verification,
filters and selection on them (no generation, nothing to resume).

Outputs in ``DIR``:

- ``sft.parquet``: TRL's conversational format - ``messages`` = system, user, assistant (the solution in
  canonical ``<think>...</think>`` form) - which ``trl.SFTTrainer`` loads unchanged.  Schema ``sft_text``
  when no kept row has images; otherwise ``sft_mm`` (typed content parts, ``images`` with the original
  bytes in the order of the image parts; text rows then have typed parts and no images).  ``id`` is
  ``<problem_id>#<sample>``; ``vps`` is null (no scores here).
- ``excluded.parquet`` (schema ``excluded``, ``step = "cot"``): every input problem not used (reasons
  below) and **every generated solution not kept**, one row each, with the problem's columns, ``reason``,
  ``detail`` (the measured value; other failed checks are listed after ``also:``), ``locator`` =
  ``<input row locator>#sample=<j>`` and the solution text in ``raw``.
- ``stats.json``: settings, counts (generated, accepted, kept...), per-reason counts (first reason) and
  per-check counts (every failed check), acceptance histogram and per-problem ``generated/accepted/kept``.

Reasons.  Input problems: ``malformed_row``, ``missing_id``, ``duplicate_id``, ``missing_problem``,
``missing_answer``, ``unverifiable`` (gold not checkable, :func:`curation.verify.classify_gold`),
``has_images`` (``--text-only``, or a text-only teacher), ``bad_image`` (undecodable), ``generation_error``;
with ``--responses`` also response rows: ``unknown_problem``, ``missing_response``, ``malformed_row``.
Solutions, in priority order: the quality reasons (``truncated``, ``bad_structure``, ``repetition``,
``length_out_of_range``, ``language_mixing``, ``answer_leak``), then rejection sampling: ``no_answer``,
``wrong_answer``, ``verify_timeout``, ``verify_error``; and ``not_selected`` for accepted solutions that
``--keep`` did not pick.

Selection (``--keep``), among a problem's accepted solutions: ``shortest`` / ``longest`` (by generated
tokens, then characters, then sample index), ``all``, or ``diverse:M`` - M solutions chosen by greedy
farthest-point selection under the normalised word-level edit distance of MMR1's TDS
(``d(a, b) = lev(a, b) / max(|a|, |b|)``, :func:`curation.score.scores.edit_diversity`): start with the
solution farthest on average from the others, then repeatedly add the one whose distance to its nearest
already-chosen solution is largest (ties -> lower sample index).  This greedily maximises the minimum
pairwise distance of the kept set.

Resume.  Generation and verification run per chunk of ``chunk_size`` problems; each finished chunk is one
atomically written part in ``DIR/_work`` (:class:`curation.core.io.ChunkStore`), holding the raw samples and
their verdicts.  A re-run skips finished chunks (a chunk cut short by ``kill -9`` left no part and is
redone), and refuses to mix parts made with different generation settings.  Quality filters and
``--keep`` are applied when the outputs are assembled, so a re-run with other filter thresholds or another
``--keep`` re-filters the stored samples without generating again.  Seeds are per problem
(:func:`curation.generation.jobs.prompt_seed`), so results do not depend on chunking or sharding; sharding
(``--shard I/K``) is by ``xxh64(problem_id) % K`` as in ``curate score``.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from curation.core import schema as S
from curation.core.io import (
    ExclusionWriter,
    open_chunk_job,
    read_records,
    repair_summary,
    write_json_atomic,
    write_parquet_atomic,
)
from curation.core.prompts import build_prompt, image_order, load_template, to_mm_messages
from curation.cot.quality import QualityConfig, check_solution, to_think_format
from curation.generation.jobs import load_problems, parse_shard, settings_engine_options
from curation.score.scores import levenshtein, tokenize

__all__ = [
    "CotResult",
    "KEEP_MODES",
    "VERDICT_REASONS",
    "parse_keep",
    "edit_distance_matrix",
    "farthest_point_selection",
    "select_solutions",
    "judge_sample",
    "read_responses",
    "sft_row",
    "run_cot",
]

STEP = "cot"
DEFAULT_TEMPLATE = "cot_system"
KEEP_MODES = ("shortest", "longest", "all", "diverse")
# verifier status -> exclusion reason (rejection sampling)
VERDICT_REASONS = {
    "incorrect": "wrong_answer",
    "no_answer": "no_answer",
    "timeout": "verify_timeout",
    "error": "verify_error",
}
ProgressFactory = Callable[[str, "int | None"], Callable[[int], None]]


@dataclass
class CotResult:
    out_dir: Path
    sft: pa.Table
    excluded: pa.Table
    stats: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- selection


def parse_keep(spec: str) -> tuple[str, int | None]:
    """``"shortest"``, ``"longest"``, ``"all"`` -> ``(mode, None)``; ``"diverse:M"`` -> ``("diverse", M)``."""
    m = re.fullmatch(r"\s*(shortest|longest|all|diverse)\s*(?::\s*(\d+))?\s*", str(spec))
    if not m or (m.group(1) == "diverse") != (m.group(2) is not None):
        raise ValueError(f"--keep must be shortest, longest, all or diverse:M (M >= 1), got {spec!r}")
    mval = int(m.group(2)) if m.group(2) is not None else None
    if mval is not None and mval < 1:
        raise ValueError(f"--keep diverse:M needs M >= 1, got {spec!r}")
    return m.group(1), mval


def edit_distance_matrix(texts: Sequence[str], unit: str = "word") -> np.ndarray:
    """Symmetric matrix of ``d(a, b) = lev(a, b) / max(|a|, |b|)`` on :func:`curation.score.scores.tokenize`
    tokens (0 for two empty texts) - the pairwise distance whose mean is the ``edit`` TDS."""
    toks = [tokenize(t, unit) for t in texts]
    n = len(toks)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            m = max(len(toks[i]), len(toks[j]))
            d[i, j] = d[j, i] = levenshtein(toks[i], toks[j]) / m if m else 0.0
    return d


def farthest_point_selection(dist: np.ndarray, m: int) -> list[int]:
    """Greedy farthest-point selection of ``m`` indices from a distance matrix (see the module docstring);
    returns sorted indices.  ``m >= n`` returns all."""
    n = dist.shape[0]
    if m >= n:
        return list(range(n))
    mean = dist.sum(axis=1) / max(n - 1, 1)
    first = int(np.argmax(mean))  # argmax takes the lowest index on ties
    chosen = [first]
    nearest = dist[first].copy()
    while len(chosen) < m:
        nearest_masked = nearest.copy()
        nearest_masked[chosen] = -1.0
        nxt = int(np.argmax(nearest_masked))
        chosen.append(nxt)
        nearest = np.minimum(nearest, dist[nxt])
    return sorted(chosen)


def select_solutions(cands: Sequence[dict], keep: str | tuple[str, int | None]) -> list[int]:
    """Indices into ``cands`` (dicts with ``text``, ``num_tokens``, ``sample``) kept by ``keep``."""
    mode, m = parse_keep(keep) if isinstance(keep, str) else keep
    if not cands:
        return []
    if mode == "all":
        return list(range(len(cands)))

    def length_key(i: int) -> tuple:
        c = cands[i]
        return (c.get("num_tokens") if c.get("num_tokens") is not None else len(c["text"]), len(c["text"]))

    if mode == "shortest":
        return [min(range(len(cands)), key=lambda i: (*length_key(i), cands[i]["sample"]))]
    if mode == "longest":
        return [min(range(len(cands)), key=lambda i: (*(-x for x in length_key(i)), cands[i]["sample"]))]
    order = sorted(range(len(cands)), key=lambda i: cands[i]["sample"])
    picked = farthest_point_selection(edit_distance_matrix([cands[i]["text"] for i in order]), int(m or 1))
    return sorted(order[p] for p in picked)


# --------------------------------------------------------------------------------------------- judging


def judge_sample(sample: dict, problem: str | None, quality: QualityConfig) -> tuple[str | None, str | None, list[str]]:
    """``(reason, detail, all failed checks)`` for one generated sample (``text``, ``finish_reason``,
    ``num_tokens``, ``verdict``); ``reason is None`` when the sample is accepted."""
    issues = check_solution(
        sample["text"],
        finish_reason=sample.get("finish_reason"),
        num_tokens=sample.get("num_tokens"),
        problem=problem,
        config=quality,
    )
    found = [(i.reason, i.detail) for i in issues]
    verdict = sample.get("verdict")
    if verdict != "correct":
        reason = VERDICT_REASONS.get(verdict or "error", "verify_error")
        ext = sample.get("extracted")
        found.append((reason, f"verifier: {verdict} (extracted {ext!r})" if ext is not None else f"verifier: {verdict}"))
    if not found:
        return None, None, []
    reason, detail = found[0]
    others = [r for r, _ in found[1:]]
    if others:
        detail = f"{detail}; also: {', '.join(others)}"
    return reason, detail, [r for r, _ in found]


# --------------------------------------------------------------------------------------------- the job


def _fingerprint(rows: list[dict]) -> str:
    import xxhash

    h = xxhash.xxh64()
    for r in rows:
        h.update(r["id"].encode())
        h.update(b"\0")
        h.update(r["answer"].encode())
        h.update(b"\1")
    return h.hexdigest()


def _teacher_is_vision(teacher: str) -> bool:
    """Whether the teacher (a checkpoint folder or a hub id, resolved as the engines resolve it:
    :func:`curation.core.models.resolve_model`) is vision-language.  A teacher that cannot be found raises
    :class:`curation.core.models.ModelNotFoundError` here, before any work."""
    from curation.core.models import is_vision_language

    return bool(is_vision_language(teacher))


def _load_inputs(
    data: str | Path, shard_t: tuple[int, int], text_only: bool, vision: bool | None, teacher: str | None
) -> tuple[list[dict], ExclusionWriter, int, int]:
    """Problems of this shard that can be used: ``(rows, exclusions, rows read, rows in shard)``."""
    from curation.verify import classify_gold

    excl = ExclusionWriter()
    loaded, n_read = load_problems(data, shard_t, excl, step=STEP)
    n_in_shard = len(loaded) + len(excl)
    rows: list[dict] = []
    for row in loaded:
        loc = row["_locator"]
        n_img = len(row.get("images") or [])
        if n_img and (text_only or vision is False):
            why = "--text-only" if text_only else f"the teacher {teacher} is text-only"
            excl.add(row, step=STEP, reason="has_images", detail=f"{loc} (id={row['id']}): {n_img} image(s), {why}",
                     locator=loc)
            continue
        parsed, why = classify_gold(row["answer"], row.get("options") or None)
        if parsed is None:
            excl.add(row, step=STEP, reason="unverifiable",
                     detail=f"{loc} (id={row['id']}): gold answer {row['answer'][:80]!r} is not automatically "
                            f"checkable ({why})", locator=loc)
            continue
        rows.append(row)
    for r in excl.rows:
        r["step"] = STEP
    return rows, excl, n_read, n_in_shard


def _verify_samples(rows_and_texts: list[tuple[dict, str]], timeout: float) -> list[Any]:
    from curation.verify import verify_batch

    if not rows_and_texts:
        return []
    return verify_batch([r["answer"] for r, _ in rows_and_texts], [t for _, t in rows_and_texts],
                        options=[r.get("options") or None for r, _ in rows_and_texts], timeout=timeout)


def read_responses(
    path: str | Path, rows: list[dict], excluded_ids: set[str], shard_t: tuple[int, int]
) -> tuple[dict[str, list[dict]], ExclusionWriter]:
    """Pre-generated teacher responses (long form: ``problem_id`` or ``id``, ``response`` or ``text``,
    optional ``model``, ``num_tokens``, ``finish_reason``) for the problems of this shard, as unverified
    samples numbered 0, 1, ... per problem in file order.  Responses for problems of other shards or
    problems excluded at input are skipped; for ids not among the problems -> ``unknown_problem``; rows
    without a response string -> ``missing_response``; unparsable lines -> ``malformed_row``."""
    from curation.generation.jobs import shard_of

    by_id = {r["id"]: r for r in rows}
    excl = ExclusionWriter()
    out: dict[str, list[dict]] = {}
    i_shard, k = shard_t
    for rec in read_records(path):
        if rec.error:
            if shard_of("responses:" + rec.locator.rsplit(":", 1)[-1], k) == i_shard:
                excl.add(None, step=STEP, reason="malformed_row", detail=f"{rec.locator}: {rec.error}",
                         locator=rec.locator, raw=rec.raw)
            continue
        d = rec.data
        pid = d.get("problem_id", d.get("id"))
        pid = None if pid is None else str(pid)
        if pid is not None and shard_of(pid, k) == i_shard:
            excl.note_repair(rec)
        if pid is None or shard_of(pid, k) != i_shard or pid in excluded_ids:
            if pid is None and shard_of("responses:" + rec.locator.rsplit(":", 1)[-1], k) == i_shard:
                excl.add(None, step=STEP, reason="unknown_problem",
                         detail=f"{rec.locator}: no 'problem_id' or 'id'", locator=rec.locator)
            continue
        row = by_id.get(pid)
        if row is None:
            excl.add({"id": pid}, step=STEP, reason="unknown_problem",
                     detail=f"{rec.locator}: problem_id {pid!r} is not in the problems table", locator=rec.locator)
            continue
        text = d.get("response", d.get("text"))
        if not isinstance(text, str):
            excl.add(row, step=STEP, reason="missing_response",
                     detail=f"{rec.locator} (id={pid}): no 'response'/'text' string", locator=rec.locator)
            continue
        samples = out.setdefault(pid, [])
        nt = d.get("num_tokens")
        samples.append({"problem_id": pid, "model": str(d.get("model") or "pregenerated"), "sample": len(samples),
                        "text": text, "num_tokens": int(nt) if isinstance(nt, int) else None,
                        "finish_reason": d.get("finish_reason"), "_locator": rec.locator})
    return out, excl


def run_cot(
    data: str | Path,
    out: str | Path,
    *,
    teacher: str | None = None,
    responses: str | Path | None = None,
    k: int = 4,
    engine: str = "auto",
    max_tokens: int = 2048,
    temperature: float = 0.7,
    top_p: float = 0.95,
    seed: int = 0,
    keep: str = "shortest",
    text_only: bool = False,
    template: str = DEFAULT_TEMPLATE,
    shard: str | tuple[int, int] | None = None,
    chunk_size: int = 32,
    quality: QualityConfig | None = None,
    verify_timeout: float = 5.0,
    engine_options: dict | None = None,
    engine_obj: Any = None,
    progress: ProgressFactory | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    num_workers: int = 1,
    gpus_per_worker: float = 0.0,
    executor_options: dict | None = None,
    engine_factory: Any = None,
) -> CotResult:
    """Generate ``k`` solutions per problem of ``data`` with ``teacher``, filter, select; resumable.

    ``responses``: instead of a teacher, a file of pre-generated responses (:func:`read_responses`) that are
    verified, filtered and selected the same way (the template then only shapes the SFT prompt).
    ``engine_obj``: an already built engine to use (then ``engine`` is only recorded).
    ``progress(description, total) -> advance(n)`` receives problem-level progress.
    ``executor``: ``"local"`` or ``"ray"`` (``ray_address``, ``num_workers``, ``gpus_per_worker``,
    ``executor_options``): where the generation chunks run (:mod:`curation.generation.executors`); same outputs.
    ``engine_options`` may hold ``data_parallel_size=k`` (vLLM replicas, local executor; as ``curate score``);
    ``engine_factory(spec) -> engine`` builds a custom engine instead of ``make_engine`` (picklable for Ray).
    ``teacher`` is a checkpoint folder or a hub id (:func:`curation.core.models.resolve_model`).
    """
    t_start = time.perf_counter()
    if (teacher is None) == (responses is None):
        raise ValueError("give exactly one of --teacher (generate) or --responses (pre-generated solutions)")
    if k < 1:
        raise ValueError(f"--k must be >= 1, got {k}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    keep_t = parse_keep(keep)
    quality = quality or QualityConfig()
    shard_t = parse_shard(shard)
    tpl = load_template(template)
    out = Path(out)

    if teacher is not None and engine_obj is None and engine_factory is None:
        vision = _teacher_is_vision(teacher)
    elif teacher is not None:
        vision = getattr(engine_obj, "vision", None)
    else:
        vision = None
    rows, excl, n_read, n_in_shard = _load_inputs(data, shard_t, text_only, vision, teacher)
    noted = [excl]  # the writers that noted rows repaired on reading (stats["repaired"])
    extra_excl: list[pa.Table] = []
    timing: dict[str, float] = {}
    n_chunks = n_resumed = 0
    eng_name = None
    if teacher is not None:
        samples_by_pid, extra_excl, gen_settings, timing, n_chunks, n_resumed, eng_name = _generate_all(
            rows, out, teacher=teacher, k=k, engine=engine, max_tokens=max_tokens, temperature=temperature,
            top_p=top_p, seed=seed, text_only=text_only, tpl=tpl, shard_t=shard_t, chunk_size=chunk_size,
            verify_timeout=verify_timeout, engine_options=engine_options, engine_obj=engine_obj, progress=progress,
            executor=executor, ray_address=ray_address, num_workers=num_workers, gpus_per_worker=gpus_per_worker,
            executor_options=executor_options, engine_factory=engine_factory)
    else:
        t0 = time.perf_counter()
        excluded_ids = {r["id"] for r in excl.rows if r.get("id")}
        samples_by_pid, rx = read_responses(responses, rows, excluded_ids, shard_t)  # type: ignore[arg-type]
        extra_excl = [rx.table()]
        noted.append(rx)
        by_id = {r["id"]: r for r in rows}
        flat = [s for pid in samples_by_pid for s in samples_by_pid[pid]]
        verdicts = _verify_samples([(by_id[s["problem_id"]], s["text"]) for s in flat], verify_timeout)
        for s, v in zip(flat, verdicts):
            s.update(extracted=v.extracted, verdict=v.status, correct=bool(v.correct))
        timing["verification_s"] = time.perf_counter() - t0
        gen_settings = {"responses": str(responses), "template": tpl.name, "text_only": text_only,
                        "shard": f"{shard_t[0]}/{shard_t[1]}"}

    # ---- assemble: quality filters + rejection sampling + selection -> sft / excluded / stats
    t0 = time.perf_counter()
    sft, sol_excl, reasons, checks, per_problem, hist, n_generated, n_accepted = _assemble(
        rows, samples_by_pid, tpl, quality, keep, keep_t)
    any_mm = sft.schema.equals(S.SFT_MM, check_metadata=False)
    input_parts = [excl.table(), *extra_excl]
    input_parts = [t.select(S.EXCLUDED.names).cast(S.EXCLUDED) for t in input_parts if t.num_rows]
    input_table = pa.concat_tables(input_parts) if input_parts else S.EXCLUDED.empty_table()
    excluded = pa.concat_tables([input_table, sol_excl])
    out.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(sft, out / "sft.parquet")
    write_parquet_atomic(excluded, out / "excluded.parquet")
    timing["assemble_write_s"] = time.perf_counter() - t0
    timing["total_s"] = time.perf_counter() - t_start

    stats = {
        "settings": {
            **{k_: v for k_, v in gen_settings.items() if k_ not in ("input_fingerprint", "template_fingerprint")},
            "keep": keep,
            "quality": quality.to_dict(),
            "verify_timeout": verify_timeout,
            "data": str(data),
            "engine_name": eng_name,
            "sft_schema": "sft_mm" if any_mm else "sft_text",
        },
        "counts": {
            "rows_read": n_read,
            "problems_in_shard": n_in_shard,
            "input_rows_excluded": input_table.num_rows,
            "problems_with_samples": len(per_problem),
            "problems_with_kept": sum(1 for p in per_problem.values() if p["kept"]),
            "generated": n_generated,
            "accepted": n_accepted,
            "kept": sft.num_rows,
            "solutions_excluded": sol_excl.num_rows,
            "acceptance_rate": (n_accepted / n_generated) if n_generated else None,
            "chunks": n_chunks,
            "chunks_resumed": n_resumed,
        },
        "input_reasons": dict(sorted(Counter(input_table.column("reason").to_pylist()).items())),
        "reasons": dict(sorted(reasons.items())),
        "checks_failed": dict(sorted(checks.items())),
        "acceptance_histogram": dict(sorted(hist.items(), key=lambda kv: [int(x) for x in kv[0].split("/")])),
        "per_problem": per_problem,
        "repaired": repair_summary(*noted),
        "timing": timing,
    }
    write_json_atomic(json.loads(json.dumps(stats, default=str)), out / "stats.json")
    return CotResult(out, sft, excluded, stats)


def _generate_all(
    rows: list[dict],
    out: Path,
    *,
    teacher: str,
    k: int,
    engine: str,
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    text_only: bool,
    tpl: Any,
    shard_t: tuple[int, int],
    chunk_size: int,
    verify_timeout: float,
    engine_options: dict | None,
    engine_obj: Any,
    progress: ProgressFactory | None,
    executor: str = "local",
    ray_address: str | None = None,
    num_workers: int = 1,
    gpus_per_worker: float = 0.0,
    executor_options: dict | None = None,
    engine_factory: Any = None,
) -> tuple[dict[str, list[dict]], list[pa.Table], dict, dict, int, int, str | None]:
    """The resumable generation + verification loop (same design as ``curate score``)."""
    chunks = [rows[i : i + chunk_size] for i in range(0, len(rows), chunk_size)]
    gen_settings = {
        "teacher": str(teacher),
        "engine": engine,
        "k": k,
        "temperature": temperature,
        "top_p": top_p,
        "max_tokens": max_tokens,
        "seed": seed,
        "template": tpl.name,
        "template_fingerprint": tpl.fingerprint(),
        "text_only": text_only,
        "engine_options": settings_engine_options(engine_options),
        "chunk_size": chunk_size,
        "shard": f"{shard_t[0]}/{shard_t[1]}",
        "input_fingerprint": _fingerprint(rows),
    }
    job = open_chunk_job(out, "samples", gen_settings, chunks, progress, "cot", len(rows))
    store, xstore, done_before, advance = job.store, job.xstore, job.done_before, job.advance

    t_gen = t_ver = 0.0

    def write_chunk(cid: int, res: Any) -> None:
        nonlocal t_gen, t_ver
        t_gen += res.generation_s
        t_ver += res.verification_s
        xstore.put(cid, res.excluded)  # before the samples part, which marks the chunk done
        store.put(cid, res.rollouts)
        if advance:
            advance(len(chunks[cid]))

    # the chunk body (prompts -> generate -> verify) runs here or on a Ray cluster: curation.generation.executors
    from curation.generation.executors import GenJobSpec, make_executor

    spec = GenJobSpec(step=STEP, model=str(teacher), model_label=Path(str(teacher)).name or str(teacher),
                      engine=engine, template=tpl, n=k, temperature=temperature, top_p=top_p,
                      max_tokens=max_tokens, seed=seed, verify_timeout=verify_timeout,
                      engine_options=dict(engine_options or {}), engine_factory=engine_factory)
    ex = make_executor(executor, ray_address=ray_address, num_workers=num_workers,
                       gpus_per_worker=gpus_per_worker, **(executor_options or {}))
    pending = {cid: chunk for cid, chunk in enumerate(chunks) if cid not in done_before}
    run_info = ex.run(spec, pending, write_chunk, engine_obj=engine_obj)
    t_load = run_info.engine_load_s
    eng_name = run_info.engine_name

    samples_by_pid: dict[str, list[dict]] = {}
    extra: list[pa.Table] = []
    for cid in range(len(chunks)):
        for s in store.read(cid).to_pylist():
            samples_by_pid.setdefault(s["problem_id"], []).append(s)
        if xstore.has(cid):
            extra.append(xstore.read(cid))
    timing = {"engine_load_s": t_load, "generation_s": t_gen, "verification_s": t_ver}
    return samples_by_pid, extra, gen_settings, timing, len(chunks), len(done_before), eng_name


def sft_row(row: dict, tpl: Any, solution: str, sample: int, structure: str = "strict") -> dict:
    """One SFT row for a problem row and an accepted solution: prompt messages from the template, the
    solution (canonical ``<think>`` form) as the assistant turn, the row's images (original bytes) in the
    order of the image parts.  ``messages`` has string contents here; :func:`_assemble` converts to typed
    parts when the table is multimodal."""
    bp = build_prompt(row, tpl)
    imgs = image_order(row.get("images") or [], bp.images, tpl.image_placement) if bp.images else []
    return {
        "id": f"{row['id']}#{sample}",
        "problem_id": row["id"],
        "source": row.get("source"),
        "messages": bp.messages + [{"role": "assistant", "content": to_think_format(solution, structure)}],
        "images": imgs,
        "vps": None,
    }


def _assemble(
    rows: list[dict],
    samples_by_pid: dict[str, list[dict]],
    tpl: Any,
    quality: QualityConfig,
    keep: str,
    keep_t: tuple[str, int | None],
) -> tuple[pa.Table, pa.Table, Counter, Counter, dict, Counter, int, int]:
    """Judge every sample, select per problem, build the SFT table and the solution exclusions."""
    sft_rows: list[dict] = []
    reasons: Counter = Counter()
    checks: Counter = Counter()
    per_problem: dict[str, dict] = {}
    hist: Counter = Counter()
    sol_excl = ExclusionWriter()
    n_generated = n_accepted = 0
    for row in rows:
        samples = sorted(samples_by_pid.get(row["id"], []), key=lambda s: s["sample"])
        if not samples:
            continue  # excluded at prompt building / generation (in the chunk exclusions), or no responses
        loc = row["_locator"]
        accepted = []
        for s in samples:
            n_generated += 1
            reason, detail, failed = judge_sample(s, row.get("problem"), quality)
            checks.update(failed)
            if reason is None:
                accepted.append(s)
                continue
            reasons[reason] += 1
            sol_excl.add(row, step=STEP, reason=reason, detail=f"sample {s['sample']} ({s.get('model')}): {detail}",
                         locator=f"{loc}#sample={s['sample']}", raw=s["text"])
        n_accepted += len(accepted)
        chosen = set(select_solutions(accepted, keep_t))
        kept_samples = sorted(accepted[c]["sample"] for c in chosen)
        for idx, s in enumerate(accepted):
            if idx in chosen:
                continue
            reasons["not_selected"] += 1
            sol_excl.add(row, step=STEP, reason="not_selected",
                         detail=f"sample {s['sample']} ({s.get('model')}): accepted, but --keep {keep} kept "
                                f"sample(s) {kept_samples}",
                         locator=f"{loc}#sample={s['sample']}", raw=s["text"])
        for idx in sorted(chosen, key=lambda c: accepted[c]["sample"]):
            s = accepted[idx]
            sft_rows.append(sft_row(row, tpl, s["text"], s["sample"], quality.structure))
        per_problem[row["id"]] = {"generated": len(samples), "accepted": len(accepted), "kept": len(chosen)}
        hist[f"{len(accepted)}/{len(samples)}"] += 1

    any_mm = any(r["images"] for r in sft_rows)
    for r in sft_rows:
        if any_mm:
            r["messages"] = to_mm_messages(r["messages"])
        else:
            r.pop("images")
    sft = S.to_table(sft_rows, "sft_mm" if any_mm else "sft_text")
    return sft, sol_excl.table(), reasons, checks, per_problem, hist, n_generated, n_accepted
