"""The ``curate score`` batch job: N rollouts per prompt -> verification -> pass rate, OVS, TDS, VPS.

Outputs in ``DIR``:

- ``rollouts.parquet`` (schema ``rollouts``): one row per (``problem_id``, ``model``, ``sample``), sorted by
  that key, so the file does not depend on chunking, sharding or resumption.
- ``scores.parquet`` (schema ``scores``): one row per (``problem_id``, ``model``), derived from the final
  rollouts by :func:`curation.score.scores.score_rollouts`; ``scores_wide.parquet`` too when several models
  were scored (merged dirs; columns ``<score>__<model>``, see :func:`curation.score.scores.pivot_scores`).
- ``excluded.parquet`` (schema ``excluded``): every input row not scored, with ``reason`` (``malformed_row``,
  ``missing_id``, ``duplicate_id``, ``missing_problem``, ``missing_answer``, ``bad_image``,
  ``needs_vision`` (a problem with images and a text-only model), ``generation_error``) and ``detail``
  naming the row.
- ``stats.json``: settings, counts, zero-variance fraction, verdict counts and the time split (engine load,
  generation, verification, TDS/scoring, writing).
- ``report/``: ``pass_rate_hist.png``, ``vps_hist.png``, ``report.md`` (:mod:`curation.report`).

Resume.  Prompts are taken in input order (after sharding and validation) and cut into chunks of
``chunk_size``; each finished chunk is one atomically written Parquet part in ``DIR/_work``
(:class:`curation.core.io.ChunkStore`).  Re-running the same command skips finished chunks; a chunk interrupted
by ``kill -9`` left no part and is redone.  The job's settings are saved with the parts and a re-run with
different generation settings refuses to mix them.

Determinism.  Each prompt's sampling seed is ``prompt_seed(seed, problem_id)`` (xxh64 of both), and prompts
are generated one request per seed, so a prompt's N samples depend only on the model, the settings and the
problem, not on which chunk or shard it fell in: a resumed or sharded run reproduces an uninterrupted one.

Sharding.  ``shard=(i, k)`` keeps the rows with ``xxh64(problem_id) % k == i`` (a hash, not the position,
so adding rows to the input does not move the others between shards; rows without a usable id are
sharded by their row number so exactly one shard reports them).  :func:`merge_score_dirs` joins the
shards' outputs and recomputes scores and report.

Executors.  The chunk body (prompts -> generation -> verification) runs in this process (``executor="local"``)
or as a Ray Data pipeline with one engine per worker/GPU (``executor="ray"``); both write the same parts to
the same store, so outputs, resume and exclusions do not depend on the executor (:mod:`curation.generation.executors`).

Pre-generated rollouts (:func:`score_pregenerated`) skip generation: a long-form table with ``problem_id``
(or ``id``), ``answer``, ``response`` (or ``text``), optional ``model``, ``options``, ``sample`` is verified
and scored; the GSM8K ``example_model_solutions.jsonl`` layout is recognised and reshaped
(:func:`gsm8k_examples_to_long`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from curation.core import schema as S
from curation.core.io import (
    ExclusionWriter,
    open_chunk_job,
    read_records,
    read_table,
    repair_summary,
    write_json_atomic,
    write_parquet_atomic,
)
from curation.core.prompts import load_template
from curation.generation.jobs import default_model_name, load_problems, parse_shard, settings_engine_options
from curation.generation.jobs import prompt_seed as prompt_seed  # the old curation.score_job names
from curation.generation.jobs import shard_of as shard_of
from curation.score.adaptive import AdaptivePolicy
from curation.score.posterior import PriorSpec
from curation.score.report import write_score_report
from curation.score.scores import LEVENSHTEIN_BACKEND, check_weights, pivot_scores, score_rollouts
from curation.verify.extract import resolve_rules

__all__ = [
    "ScoreResult",
    "FilterResult",
    "run_score_job",
    "score_pregenerated",
    "merge_score_dirs",
    "filter_scores",
    "gsm8k_examples_to_long",
    "read_long_rollouts",
]

STEP = "score"
ProgressFactory = Callable[[str, "int | None"], Callable[[int], None]]


@dataclass
class ScoreResult:
    out_dir: Path
    rollouts: pa.Table
    scores: pa.Table
    excluded: pa.Table
    stats: dict
    report: dict = field(default_factory=dict)


# --- small deterministic helpers ---------------------------------------------------------------------------


# --- loading problems -----------------------------------------------------------------------------------


# --- the engine side ----------------------------------------------------------------------------------------


def _chunks(rows: list[dict], size: int) -> list[list[dict]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _fingerprint(rows: list[dict]) -> str:
    h = xxhash.xxh64()
    for r in rows:
        h.update(r["id"].encode("utf-8"))
        h.update(b"\0")
        h.update(r["answer"].encode("utf-8"))
        h.update(b"\1")
    return h.hexdigest()


def _sort_rollouts(t: pa.Table) -> pa.Table:
    return t.sort_by([("problem_id", "ascending"), ("model", "ascending"), ("sample", "ascending")])


def _check_unique(t: pa.Table) -> None:
    keys = list(zip(t.column("problem_id").to_pylist(), t.column("model").to_pylist(), t.column("sample").to_pylist()))
    dup = [k for k, c in Counter(keys).items() if c > 1]
    if dup:
        raise ValueError(f"{len(dup)} duplicate (problem_id, model, sample) rollout key(s), e.g. {dup[:3]}")


def _verdict_counts(rollouts: pa.Table) -> dict:
    return dict(sorted(Counter(rollouts.column("verdict").to_pylist()).items()))


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    tables = [t.select(schema.names).cast(schema) for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def run_score_job(
    data: str | Path,
    out: str | Path,
    *,
    model: str,
    n: int = 16,
    engine: str = "auto",
    tds: str = "edit",
    alpha: float = 0.8,
    beta: float = 0.2,
    normalize_ovs: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_tokens: int = 1024,
    seed: int = 0,
    shard: str | tuple[int, int] | None = None,
    chunk_size: int = 64,
    prompt_template: str = "default",
    model_name: str | None = None,
    verify_timeout: float = 5.0,
    engine_options: dict | None = None,
    engine_obj: Any = None,
    progress: ProgressFactory | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    num_workers: int = 1,
    gpus_per_worker: float = 0.0,
    executor_options: dict | None = None,
    engine_factory: Callable[[Any], Any] | None = None,
    prior: PriorSpec | None = None,
    credible: float = 0.9,
    vps_from: str = "pass_rate",
    adaptive: AdaptivePolicy | None = None,
    rules: Sequence[str] | str | None = None,
    lenient: bool = False,
) -> ScoreResult:
    """Generate ``n`` rollouts per problem of ``data`` with ``model``, verify, score; resumable.

    ``prior`` / ``credible`` / ``vps_from``: the posterior columns and the VPS variant
    (:func:`curation.score.scores.score_rollouts`).  ``adaptive``: an
    :class:`~curation.score.adaptive.AdaptivePolicy` - rollouts in rounds until each prompt is decided
    (``n`` is then ignored: the policy's ``n_max`` caps it); see :func:`_run_adaptive`.

    ``rules`` / ``lenient``: the verifier's extraction rules (:func:`curation.verify.resolve_rules`; default
    the strict :data:`~curation.verify.extract.DEFAULT_RULES`; ``lenient`` appends ``last_math``), recorded in
    the settings (a re-run with other rules regenerates instead of mixing verdicts).

    ``engine_obj`` may be an already built engine (reused across calls; then ``engine`` is only recorded).
    ``executor``: ``"local"`` (this process) or ``"ray"`` (a Ray Data pipeline with ``num_workers`` engine
    actors, ``gpus_per_worker`` GPUs each, on the cluster at ``ray_address``; ``executor_options`` go to
    :class:`curation.generation.executors.RayExecutor`, e.g. ``max_retries``).  Both write the same chunk parts, so
    outputs and resume are the same (:mod:`curation.generation.executors`).  ``engine_options`` may hold
    ``data_parallel_size=k`` (vLLM: ``k`` replicas, each running whole chunks; local executor only).
    ``engine_factory(spec) -> engine``: a custom engine, built on every worker instead of ``make_engine``
    (picklable for Ray).
    ``progress(description, total) -> advance(k)`` receives prompt-level progress.
    """
    t_start = time.perf_counter()
    check_weights(alpha, beta, normalize_ovs)
    rule_names = resolve_rules(rules, lenient)  # a bad rule name fails here, before any work
    prior = prior or (adaptive.prior if adaptive is not None else PriorSpec())
    if adaptive is not None:  # the policy decides with the job's prior and VPS weights
        adaptive = dataclasses.replace(adaptive, prior=prior, alpha=alpha, beta=beta, normalize_ovs=normalize_ovs)
        n = adaptive.n_max
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    shard_t = parse_shard(shard)
    out = Path(out)
    template = load_template(prompt_template)
    name = model_name or default_model_name(model)

    excl = ExclusionWriter()
    rows, n_read = load_problems(data, shard_t, excl, step=STEP)
    chunks = _chunks(rows, chunk_size)
    common = {"model": str(model), "model_name": name, "engine": engine, "n": n, "temperature": temperature,
              "top_p": top_p, "max_tokens": max_tokens, "seed": seed, "prompt_template": template.name,
              "rules": list(rule_names)}
    gen_settings = {
        **common,
        "prompt_fingerprint": template.fingerprint(),
        "engine_options": settings_engine_options(engine_options),
        "chunk_size": chunk_size,
        "shard": f"{shard_t[0]}/{shard_t[1]}",
        "input_fingerprint": _fingerprint(rows),
    }
    work = out / "_work"
    # the chunk body (prompts -> generate -> verify) runs here or on a Ray cluster: curation.generation.executors
    from curation.generation.executors import GenJobSpec, make_executor

    spec = GenJobSpec(step=STEP, model=str(model), model_label=name, engine=engine, template=template, n=n,
                      temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed,
                      verify_timeout=verify_timeout, rules=rule_names, engine_options=dict(engine_options or {}),
                      engine_factory=engine_factory)
    ex = make_executor(executor, ray_address=ray_address, num_workers=num_workers,
                       gpus_per_worker=gpus_per_worker, **(executor_options or {}))
    score_kw = {"metric": tds, "alpha": alpha, "beta": beta, "normalize_ovs": normalize_ovs, "prior": prior,
                "credible": credible, "vps_from": vps_from}
    settings = {
        "mode": "adaptive" if adaptive is not None else "generate",
        **common,
        "engine_name": None,
        "executor": None,
        "tds_metric": tds,
        "levenshtein_backend": LEVENSHTEIN_BACKEND,
        "alpha": alpha,
        "beta": beta,
        "normalize_ovs": normalize_ovs,
        "prior": prior.to_dict(),
        "credible": credible,
        "vps_from": vps_from,
        "shard": f"{shard_t[0]}/{shard_t[1]}",
        "chunk_size": chunk_size,
        "data": str(data),
    }
    if adaptive is not None:
        gen_settings["adaptive"] = adaptive.to_dict()
        settings["adaptive"] = adaptive.to_dict()
        return _run_adaptive(rows, excl, n_read, out, adaptive, spec, ex, gen_settings, settings, score_kw,
                             chunk_size=chunk_size, engine_obj=engine_obj, progress=progress, t_start=t_start,
                             title=f"curate score --adaptive: {name}")
    job = open_chunk_job(out, "rollouts", gen_settings, chunks, progress, "generate", len(rows))
    store, xstore, done_before, advance = job.store, job.xstore, job.done_before, job.advance

    def write_chunk(cid: int, res: Any) -> None:
        t0 = time.perf_counter()
        xstore.put(cid, res.excluded)  # before the rollouts part, which marks the chunk done
        store.put(cid, res.rollouts)
        write_json_atomic({"generation_s": res.generation_s, "verification_s": res.verification_s,
                           "chunk_write_s": time.perf_counter() - t0, "prompts": res.prompts,
                           "rollouts": res.rollouts.num_rows, "worker": res.worker},
                          work / "parts" / f"timing-{cid:06d}.json")
        if advance:
            advance(len(chunks[cid]))

    pending = {cid: chunk for cid, chunk in enumerate(chunks) if cid not in done_before}
    run_info = ex.run(spec, pending, write_chunk, engine_obj=engine_obj)
    t_load = run_info.engine_load_s

    # ---- finalize: rollouts -> scores, excluded, stats, report
    t0 = time.perf_counter()
    cids = range(len(chunks))
    rollouts = _sort_rollouts(_concat([store.read(c) for c in cids], S.ROLLOUTS))
    _check_unique(rollouts)
    excluded = _concat([excl.table()] + [xstore.read(c) for c in cids if xstore.has(c)], S.EXCLUDED)
    t_read = time.perf_counter() - t0

    t0 = time.perf_counter()
    post_info: dict = {}
    scores = score_rollouts(rollouts, info=post_info, **score_kw)
    t_tds = time.perf_counter() - t0

    gen_s, ver_s, cw_s = _timing_sums(work / "parts", cids)
    settings["engine_name"] = run_info.engine_name
    settings["executor"] = run_info.details
    counts = {
        **_job_counts(n_read, len(rows) + len(excl), scores, excluded, rollouts),
        "chunks": len(chunks),
        "chunks_resumed": len(done_before),
        "chunks_computed": run_info.chunks_done,
    }
    timing = {
        "engine_load_s": t_load,
        "generation_s": gen_s,
        "verification_s": ver_s,
        "tds_scoring_s": t_tds,
        "writing_s": cw_s + t_read,
    }
    return _finish(out, rollouts, scores, excluded, settings, counts, timing, t_start,
                   title=f"curate score: {name}", posterior=post_info,
                   repaired=repair_summary(excl))


def _job_counts(n_read: int, in_shard: int, scores: pa.Table, excluded: pa.Table, rollouts: pa.Table) -> dict:
    return {"rows_read": n_read, "problems_in_shard": in_shard, "problems_scored": scores.num_rows,
            "excluded": excluded.num_rows, "rollouts": rollouts.num_rows}


def _timing_sums(parts: Path, cids: Sequence[int]) -> tuple[float, float, float]:
    """(generation, verification, chunk-writing) seconds summed over the chunks' timing files."""
    gen_s = ver_s = cw_s = 0.0
    for c in cids:
        tp = parts / f"timing-{c:06d}.json"
        if tp.exists():
            tj = json.loads(tp.read_text())
            gen_s += tj.get("generation_s", 0.0)
            ver_s += tj.get("verification_s", 0.0)
            cw_s += tj.get("chunk_write_s", 0.0)
    return gen_s, ver_s, cw_s


def _run_adaptive(rows: list[dict], excl: ExclusionWriter, n_read: int, out: Path, policy: AdaptivePolicy,
                  spec: Any, ex: Any, gen_settings: dict, settings: dict, score_kw: dict, *, chunk_size: int,
                  engine_obj: Any, progress: ProgressFactory | None, t_start: float, title: str) -> ScoreResult:
    """``curate score --adaptive``: the rounds of :mod:`curation.score.adaptive` on the executors.

    Layout of ``DIR/_work``: ``adaptive.job.json`` (the settings; a re-run with others is refused), and per
    round ``round-RRR/plan.parquet`` (written before the round starts: who gets how many rollouts, and why
    the others stopped) and ``round-RRR/parts/{rollouts,excluded,timing}-CCCCCC.*`` (the round's granted
    prompts in input order, cut into chunks of ``chunk_size``; each finished chunk one atomic part).  A
    re-run reads the saved plans, skips finished chunks and plans the next round from the stored rollouts
    only, so after ``kill -9`` (between rounds or inside one) it finishes exactly as an uninterrupted run.
    Round r draws samples ``[n, n + k)`` of each granted prompt with the seeds of a fixed-N run
    (``GenJobSpec.sample_offset``).  A prompt whose generation fails in a later round keeps its earlier
    rollouts, stops with ``generation_error`` and is reported in ``excluded.parquet`` too."""
    import dataclasses

    import polars as pl

    from curation.core.io import ChunkStore
    from curation.score.adaptive import CONTINUE, outcome, run_rounds

    work = out / "_work"
    ChunkStore(work, "adaptive", config=gen_settings)  # guards the folder against other settings
    keys = pl.DataFrame({"problem_id": [r["id"] for r in rows], "model": [spec.model_label] * len(rows),
                         "order": list(range(len(rows)))}, schema={"problem_id": pl.String, "model": pl.String,
                                                                   "order": pl.Int64})
    row_of = {r["id"]: r for r in rows}
    timing_dirs: list[tuple[Path, int]] = []
    excluded_parts: list[pa.Table] = []
    info_runs: list[Any] = []

    def rdir(r: int) -> Path:
        return work / f"round-{r:03d}"

    def load_plan(r: int):
        f = rdir(r) / "plan.parquet"
        return pl.read_parquet(f) if f.is_file() else None

    def save_plan(r: int, plan) -> None:
        write_parquet_atomic(plan.to_arrow(), rdir(r) / "plan.parquet")

    session = ex.session(engine_obj)

    def draw(r: int, grant) -> pa.Table:
        store, xstore = ChunkStore(rdir(r), "rollouts"), ChunkStore(rdir(r), "excluded")
        advance = progress(f"round {r}", grant.height) if progress else None
        cid0, cids = 0, []
        for (n0, k), grp in sorted(grant.group_by(["n", "k"]), key=lambda g: g[0]):
            ids = grp.sort("order").get_column("problem_id").to_list()
            cks = _chunks([row_of[i] for i in ids], chunk_size)
            spec_r = dataclasses.replace(spec, n=int(k), sample_offset=int(n0))

            def write_chunk(cid: int, res: Any, _r: int = r) -> None:
                t0 = time.perf_counter()
                ex_rows = res.excluded
                if _r > 0 and ex_rows.num_rows:  # a later round failed: the prompt keeps its earlier rollouts
                    ex_rows = ex_rows.set_column(ex_rows.schema.get_field_index("detail"), "detail", pa.array(
                        [f"round {_r}: {d} (scored on the rollouts of its earlier rounds)"
                         for d in ex_rows.column("detail").to_pylist()], pa.string()))
                xstore.put(cid, ex_rows)
                store.put(cid, res.rollouts)
                write_json_atomic({"generation_s": res.generation_s, "verification_s": res.verification_s,
                                   "chunk_write_s": time.perf_counter() - t0, "prompts": res.prompts,
                                   "rollouts": res.rollouts.num_rows, "worker": res.worker},
                                  rdir(_r) / "parts" / f"timing-{cid:06d}.json")

            ids_here = list(range(cid0, cid0 + len(cks)))
            done = {c for c in ids_here if store.has(c)}
            if advance and done:
                advance(sum(len(cks[c - cid0]) for c in done))

            def on_chunk(cid: int, res: Any, _w=write_chunk, _base=cid0, _cks=cks) -> None:
                _w(cid, res)
                if advance:
                    advance(len(_cks[cid - _base]))

            pending = {c: cks[c - cid0] for c in ids_here if c not in done}
            info_runs.append(session.run(spec_r, pending, on_chunk))
            cids += ids_here
            cid0 += len(cks)
        timing_dirs.append((rdir(r) / "parts", len(cids)))
        excluded_parts.extend(xstore.read(c) for c in cids if xstore.has(c))
        return _concat([store.read(c) for c in cids], S.ROLLOUTS)

    try:
        rollouts, plans, _ = run_rounds(keys, policy, draw, load_plan=load_plan, save_plan=save_plan)
    finally:
        session.close()

    t0 = time.perf_counter()
    rollouts = _sort_rollouts(rollouts if rollouts is not None else S.ROLLOUTS.empty_table())
    _check_unique(rollouts)
    excluded = _concat([excl.table(), *excluded_parts], S.EXCLUDED)
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    post_info: dict = {}
    scores = _with_outcome(score_rollouts(rollouts, info=post_info, **score_kw), outcome(plans))
    t_tds = time.perf_counter() - t0
    _write_rounds_log(plans, out)

    gen_s = ver_s = cw_s = 0.0
    for parts, k in timing_dirs:
        g, v, c = _timing_sums(parts, range(k))
        gen_s, ver_s, cw_s = gen_s + g, ver_s + v, cw_s + c
    settings["engine_name"] = next((i.engine_name for i in info_runs if i.engine_name), None)
    settings["executor"] = next((i.details for i in info_runs if i.details), {"executor": ex.name})
    granted = [int(p.filter(pl.col("decision") == CONTINUE).height) for p in plans]
    counts = {
        **_job_counts(n_read, len(rows) + len(excl), scores, excluded, rollouts),
        "rounds": sum(1 for g in granted if g),
        "prompts_per_round": [g for g in granted if g],
        "chunks_computed": sum(i.chunks_done for i in info_runs),
    }
    timing = {"engine_load_s": sum(i.engine_load_s for i in info_runs), "generation_s": gen_s,
              "verification_s": ver_s, "tds_scoring_s": t_tds, "writing_s": cw_s + t_read}
    return _finish(out, rollouts, scores, excluded, settings, counts, timing, t_start, title=title,
                   posterior=post_info, adaptive=policy, repaired=repair_summary(excl))


def _with_outcome(scores: pa.Table, oc) -> pa.Table:
    """``scores`` with ``rounds`` / ``stopped_because`` from an adaptive run's outcome (a polars frame keyed by
    ``problem_id``, ``model``), keeping the scores' row order and schema."""
    import polars as pl

    df = pl.from_arrow(scores).drop(["rounds", "stopped_because"])
    oc = oc.select("problem_id", "model", pl.col("rounds").cast(pl.Int32), pl.col("stopped_because").cast(pl.String))
    joined = df.join(oc, on=["problem_id", "model"], how="left", maintain_order="left")
    return joined.to_arrow().select(S.SCORES.names).cast(S.SCORES)


def _write_rounds_log(plans: list, out: Path) -> None:
    """``DIR/rounds.parquet``: every plan row (prompt x round: n, n_correct, posterior, P_in, sd_VPS, how
    undecided, the decision and the rollouts granted) with its ``round``."""
    import polars as pl

    if not plans:
        return
    log = pl.concat([p.with_columns(pl.lit(i, dtype=pl.Int32).alias("round")) for i, p in enumerate(plans)])
    write_parquet_atomic(log.select("round", *[c for c in log.columns if c != "round"]).to_arrow(),
                         out / "rounds.parquet")


def _finish(
    out: Path,
    rollouts: pa.Table,
    scores: pa.Table,
    excluded: pa.Table,
    settings: dict,
    counts: dict,
    timing: dict,
    t_start: float,
    *,
    title: str,
    posterior: dict | None = None,
    adaptive: AdaptivePolicy | None = None,
    repaired: dict | None = None,
) -> ScoreResult:
    """Write rollouts/scores/excluded/stats/report (atomically) and return the result.  ``posterior``: what
    the prior resolved to (stats ``posterior``); ``adaptive``: the policy of an adaptive run (stats
    ``adaptive``: rollouts spent against ``n_max`` for every prompt, stop reasons); ``repaired``: the input
    rows kept after a text repair (:func:`curation.core.io.repair_summary`), for ``stats.json``."""
    t0 = time.perf_counter()
    write_parquet_atomic(rollouts, out / "rollouts.parquet")
    write_parquet_atomic(scores, out / "scores.parquet")
    models = sorted(set(scores.column("model").to_pylist()))
    wide = out / "scores_wide.parquet"
    if len(models) > 1:
        write_parquet_atomic(pivot_scores(scores), wide)
    elif wide.exists():
        wide.unlink()
    write_parquet_atomic(excluded, out / "excluded.parquet")
    p = scores.column("pass_rate").to_pylist()
    zero_var = sum(1 for x in p if x in (0.0, 1.0)) / len(p) if p else 0.0
    reasons = dict(sorted(Counter(excluded.column("reason").to_pylist()).items()))
    report = write_score_report(scores, out / "report", title=title, settings=settings,
                                extra={"excluded rows": f"{excluded.num_rows} {reasons or ''}"})
    timing = dict(timing)
    timing["writing_s"] = timing.get("writing_s", 0.0) + (time.perf_counter() - t0)
    gen = timing.get("generation_s") or 0.0
    outside = timing.get("verification_s", 0.0) + timing.get("tds_scoring_s", 0.0) + timing["writing_s"]
    timing["outside_generation_s"] = outside
    timing["overhead_frac_of_generation"] = (outside / gen) if gen > 0 else None
    timing["total_s"] = time.perf_counter() - t_start
    stats = {
        "settings": settings,
        "counts": counts,
        "excluded_reasons": reasons,
        "verdicts": _verdict_counts(rollouts),
        "zero_variance_frac": zero_var,
        "mean_pass_rate": (sum(p) / len(p)) if p else None,
        "models": models,
        "posterior": _posterior_stats(scores, posterior),
        "repaired": repaired or {"rows": 0, "examples": []},
        "timing": timing,
    }
    if adaptive is not None:
        stats["adaptive"] = _adaptive_stats(scores, adaptive)
    write_json_atomic(stats, out / "stats.json")
    return ScoreResult(out, rollouts, scores, excluded, stats, report)


def _posterior_stats(scores: pa.Table, info: dict | None) -> dict:
    """The prior used and the credible-interval widths ``post_hi - post_lo`` (mean, median, max)."""
    import numpy as np

    w = np.asarray(pc.subtract(scores.column("post_hi"), scores.column("post_lo")).to_numpy(zero_copy_only=False),
                   dtype=float) if scores.num_rows else np.zeros(0)
    w = w[~np.isnan(w)]
    out = dict(info or {})
    out["interval_width"] = ({"mean": float(w.mean()), "median": float(np.median(w)), "max": float(w.max())}
                             if w.size else None)
    return out


def _adaptive_stats(scores: pa.Table, policy: AdaptivePolicy) -> dict:
    """Rollouts spent per prompt against a fixed ``n_max`` for every prompt, and the stop reasons."""
    n = scores.column("n").to_pylist()
    spent, full = sum(n), policy.n_max * len(n)
    reasons = Counter(scores.column("stopped_because").to_pylist())
    return {"rollouts": spent, "rollouts_at_n_max": full, "fraction_of_n_max": (spent / full) if full else None,
            "mean_rollouts_per_prompt": (spent / len(n)) if n else None,
            "rollouts_per_prompt": dict(sorted(Counter(n).items())),
            "stopped_because": {str(k): v for k, v in sorted(reasons.items(), key=lambda kv: str(kv[0]))},
            "budget": policy.budget}


# --- pre-generated rollouts ---------------------------------------------------------------------------------

GSM8K_EXAMPLE_KEYS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
_A_LINE = re.compile(r"A:\s*([^\n]*)")


def gsm8k_gold(ground_truth: str) -> str | None:
    """Gold answer of a GSM8K example-solutions row: the text after the last ``A:`` of ``ground_truth``,
    with thousands separators removed (``A: 1,000`` -> ``1000``)."""
    found = _A_LINE.findall(ground_truth or "")
    if not found:
        return None
    ans = found[-1].strip().replace(",", "")
    return ans or None


def gsm8k_examples_to_long(path: str | Path, *, model: str = "gsm8k-examples") -> tuple[list[dict], ExclusionWriter]:
    """Reshape ``example_model_solutions.jsonl`` (4 solutions per problem) to long-form rollout rows.

    Row ``i`` (0-based line order) becomes ``problem_id = gsm8k-test-{i:04d}`` with samples 0..3 in the
    order of :data:`GSM8K_EXAMPLE_KEYS`; ``answer`` = :func:`gsm8k_gold`; ``label`` = the file's own
    ``is_correct`` (kept for comparison, not used for scoring).
    """
    rows, excl = [], ExclusionWriter()
    for i, rec in enumerate(read_records(path)):
        if rec.error:
            excl.add(None, step=STEP, reason="malformed_row", detail=f"{rec.locator}: {rec.error}",
                     locator=rec.locator, raw=rec.raw)
            continue
        excl.note_repair(rec)
        d = rec.data
        pid = f"gsm8k-test-{i:04d}"
        gold = gsm8k_gold(d.get("ground_truth", ""))
        if gold is None:
            excl.add({"id": pid, "problem": d.get("question")}, step=STEP, reason="missing_answer",
                     detail=f"{rec.locator}: no 'A:' line in ground_truth", locator=rec.locator)
            continue
        for j, key in enumerate(GSM8K_EXAMPLE_KEYS):
            sol = d.get(key)
            if not isinstance(sol, dict) or not isinstance(sol.get("solution"), str):
                excl.add({"id": pid, "answer": gold}, step=STEP, reason="missing_response",
                         detail=f"{rec.locator}: no solution under {key!r}", locator=rec.locator)
                continue
            rows.append({"problem_id": pid, "model": model, "sample": j, "answer": gold,
                         "response": sol["solution"], "options": None, "label": sol.get("is_correct"),
                         "_locator": rec.locator})
    return rows, excl


def read_long_rollouts(
    path: str | Path, *, problems: str | Path | None = None, model_name: str | None = None
) -> tuple[list[dict], ExclusionWriter]:
    """Long-form pre-generated rollouts: columns ``problem_id`` (or ``id``), ``answer`` (or joined from a
    ``problems`` table by id), ``response`` (or ``text``), optional ``model`` (default ``model_name`` or
    ``"pregenerated"``), ``options``, ``sample`` (default: order of appearance within (problem, model)).
    Rows lacking an id, answer or response go to the exclusion table."""
    first = next(iter(read_records(path)), None)
    if first is not None and first.data and "ground_truth" in first.data and any(k in first.data for k in GSM8K_EXAMPLE_KEYS):
        return gsm8k_examples_to_long(path, model=model_name or "gsm8k-examples")
    golds: dict[str, tuple[str, Any]] = {}
    if problems is not None:
        for r in read_table(problems).to_pylist():
            if r.get("id") is not None:
                golds[str(r["id"])] = (r.get("answer"), r.get("options"))
    excl = ExclusionWriter()
    rows: list[dict] = []
    next_sample: Counter = Counter()
    used: set = set()
    for rec in read_records(path):
        if rec.error:
            excl.add(None, step=STEP, reason="malformed_row", detail=f"{rec.locator}: {rec.error}",
                     locator=rec.locator, raw=rec.raw)
            continue
        excl.note_repair(rec)
        d = rec.data
        pid = d.get("problem_id", d.get("id"))
        pid = None if pid is None else str(pid)
        answer = d.get("answer")
        options = d.get("options")
        if (answer is None or str(answer).strip() == "") and pid in golds:
            answer, options = golds[pid][0], options if options is not None else golds[pid][1]
        response = d.get("response", d.get("text"))
        base = {"id": pid, "answer": None if answer is None else str(answer)}
        if not pid:
            excl.add(base, step=STEP, reason="missing_id", detail=f"{rec.locator}: no 'problem_id' or 'id'",
                     locator=rec.locator)
            continue
        if answer is None or str(answer).strip() == "":
            excl.add(base, step=STEP, reason="missing_answer",
                     detail=f"{rec.locator} (id={pid}): no 'answer' (and none in --problems)", locator=rec.locator)
            continue
        if not isinstance(response, str):
            excl.add(base, step=STEP, reason="missing_response",
                     detail=f"{rec.locator} (id={pid}): no 'response'/'text' string", locator=rec.locator)
            continue
        m = str(d.get("model") or model_name or "pregenerated")
        sample = d.get("sample")
        if sample is None:
            sample = next_sample[(pid, m)]
        next_sample[(pid, m)] = max(next_sample[(pid, m)], int(sample) + 1)
        if (pid, m, int(sample)) in used:
            excl.add(base, step=STEP, reason="duplicate_rollout",
                     detail=f"{rec.locator}: (problem_id={pid}, model={m}, sample={sample}) repeated",
                     locator=rec.locator)
            continue
        used.add((pid, m, int(sample)))
        if isinstance(options, str):
            options = json.loads(options) if options.strip().startswith("[") else None
        rows.append({"problem_id": pid, "model": m, "sample": int(sample), "answer": str(answer),
                     "response": response, "options": list(options) if options else None,
                     "label": d.get("correct", d.get("is_correct")), "_locator": rec.locator})
    return rows, excl


def read_verified_rollouts(path: str | Path, model_name: str | None = None) -> pa.Table | None:
    """A Parquet file already in the ``rollouts`` schema (``problem_id``, ``sample``, ``text``, ``verdict``,
    ``correct``, e.g. another ``curate score`` run's ``rollouts.parquet``) and without an ``answer`` column,
    as a rollouts table whose stored verdicts are used as they are (``model`` from the file, else
    ``model_name`` or ``"pregenerated"``); ``None`` for any other input (which is verified here)."""
    path = Path(path)
    if path.suffix != ".parquet" or not path.is_file():
        return None
    names = set(pq.read_schema(path).names)
    if not {"problem_id", "sample", "text", "verdict", "correct"} <= names or "answer" in names:
        return None
    t = pq.read_table(path)
    if "model" not in names:
        t = t.append_column("model", pa.array([model_name or "pregenerated"] * t.num_rows, pa.string()))
    for col, typ in (("extracted", pa.string()), ("num_tokens", pa.int32()), ("finish_reason", pa.string())):
        if col not in names:
            t = t.append_column(col, pa.nulls(t.num_rows, typ))
    bad = pc.sum(pc.is_null(t.column("correct"))).as_py() or 0
    if bad:
        raise ValueError(f"{path}: {bad} rollout row(s) without a 'correct' verdict")
    t = _sort_rollouts(t.select(S.ROLLOUTS.names).cast(S.ROLLOUTS))
    _check_unique(t)
    return t


def score_pregenerated(
    rollouts: str | Path,
    out: str | Path,
    *,
    problems: str | Path | None = None,
    model_name: str | None = None,
    tds: str = "edit",
    alpha: float = 0.8,
    beta: float = 0.2,
    normalize_ovs: bool = False,
    verify_timeout: float = 5.0,
    progress: ProgressFactory | None = None,
    prior: PriorSpec | None = None,
    credible: float = 0.9,
    vps_from: str = "pass_rate",
    adaptive: AdaptivePolicy | None = None,
    rules: Sequence[str] | str | None = None,
    lenient: bool = False,
) -> ScoreResult:
    """Verify and score pre-generated long-form rollouts (:func:`read_long_rollouts`); no generation.

    A ``rollouts.parquet`` of another ``curate score`` run (no ``answer`` column, no ``problems``) keeps its
    stored verdicts (:func:`read_verified_rollouts`).  ``adaptive``: **replay** - the adaptive policy runs
    over the pool in its sample order (:func:`curation.score.adaptive.replay_adaptive`), and only the
    rollouts it would have drawn are scored; ``stats.json`` ``adaptive`` says how many of the pool's it used,
    so what adaptivity saves can be measured before spending GPU time."""
    from curation.verify import verify_batch

    t_start = time.perf_counter()
    check_weights(alpha, beta, normalize_ovs)
    rule_names = resolve_rules(rules, lenient)
    prior = prior or (adaptive.prior if adaptive is not None else PriorSpec())
    if adaptive is not None:
        adaptive = dataclasses.replace(adaptive, prior=prior, alpha=alpha, beta=beta, normalize_ovs=normalize_ovs)
    out = Path(out)
    stored = read_verified_rollouts(rollouts, model_name) if problems is None else None
    t0 = time.perf_counter()
    if stored is not None:
        table, excl, labels = stored, ExclusionWriter(), []
    else:
        rows, excl = read_long_rollouts(rollouts, problems=problems, model_name=model_name)
        verdicts = []
        step = 2048
        advance = progress("verify", len(rows)) if progress else None
        for i in range(0, len(rows), step):
            part = rows[i : i + step]
            verdicts += verify_batch([r["answer"] for r in part], [r["response"] for r in part],
                                     options=[r["options"] for r in part], timeout=verify_timeout,
                                     rules=rule_names)
            if advance:
                advance(len(part))
        recs = [{"problem_id": r["problem_id"], "model": r["model"], "sample": r["sample"], "text": r["response"],
                 "extracted": v.extracted, "verdict": v.status, "correct": bool(v.correct), "num_tokens": None,
                 "finish_reason": None} for r, v in zip(rows, verdicts)]
        table = _sort_rollouts(pa.Table.from_pylist(recs, schema=S.ROLLOUTS))
        labels = [(r["label"], v.correct) for r, v in zip(rows, verdicts) if isinstance(r["label"], bool)]
    t_ver = time.perf_counter() - t0

    pool_rows = table.num_rows
    plans: list = []
    if adaptive is not None:
        from curation.score.adaptive import replay_adaptive

        table, plans, _ = replay_adaptive(table, adaptive)
        table = _sort_rollouts(table)
    t0 = time.perf_counter()
    post_info: dict = {}
    scores = score_rollouts(table, metric=tds, alpha=alpha, beta=beta, normalize_ovs=normalize_ovs, prior=prior,
                            credible=credible, vps_from=vps_from, info=post_info)
    if adaptive is not None:
        from curation.score.adaptive import outcome

        scores = _with_outcome(scores, outcome(plans))
        _write_rounds_log(plans, out)
    t_tds = time.perf_counter() - t0

    agree = sum(a == b for a, b in labels)
    settings = {"mode": "replay" if adaptive is not None else "pregenerated", "rollouts": str(rollouts),
                "problems": str(problems) if problems else None,
                "verdicts": "stored" if stored is not None else "verified here",
                "rules": None if stored is not None else list(rule_names),
                "tds_metric": tds, "levenshtein_backend": LEVENSHTEIN_BACKEND, "alpha": alpha, "beta": beta,
                "normalize_ovs": normalize_ovs, "prior": prior.to_dict(), "credible": credible, "vps_from": vps_from}
    if adaptive is not None:
        settings["adaptive"] = adaptive.to_dict()
        settings["n"] = adaptive.n_max
    counts = {"rows_read": pool_rows + len(excl), "problems_scored": scores.num_rows, "excluded": len(excl),
              "rollouts": table.num_rows, "pool_rollouts": pool_rows,
              "external_label_agreement": (agree / len(labels)) if labels else None,
              "external_labels": len(labels)}
    if adaptive is not None:
        counts["rounds"] = sum(1 for p in plans if (p.get_column("decision") == "continue").any())
    timing = {"generation_s": 0.0, "verification_s": t_ver, "tds_scoring_s": t_tds, "writing_s": 0.0}
    title = (f"curate score --adaptive (replay of {Path(rollouts).name})" if adaptive is not None
             else f"curate score (pre-generated): {Path(rollouts).name}")
    return _finish(out, table, scores, excl.table(), settings, counts, timing, t_start, title=title,
                   posterior=post_info, adaptive=adaptive, repaired=repair_summary(excl))


# --- merge ----------------------------------------------------------------------------------------------------


def merge_score_dirs(
    dirs: Sequence[str | Path],
    out: str | Path,
    *,
    tds: str | None = None,
    alpha: float | None = None,
    beta: float | None = None,
    normalize_ovs: bool | None = None,
    prior: PriorSpec | None = None,
    credible: float | None = None,
    vps_from: str | None = None,
) -> ScoreResult:
    """Join the outputs of several ``curate score`` runs (shards of one job, or runs of several models).

    Fails if two inputs share a (``problem_id``, ``model``, ``sample``) key.  Scores and the report are
    recomputed from the joined rollouts with the TDS metric / weights / prior / credible level / VPS variant
    of the inputs (which must agree unless given here); an empirical-Bayes prior is refitted on the joined
    data.  Adaptive inputs keep their ``rounds`` / ``stopped_because`` and their ``rounds.parquet`` logs.
    """
    t_start = time.perf_counter()
    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise ValueError("merge needs at least one input folder")
    stats_in, tables, excls = [], [], []
    for d in dirs:
        for f in ("rollouts.parquet", "stats.json"):
            if not (d / f).is_file():
                raise FileNotFoundError(f"{d}: no {f} (is it a finished `curate score` output folder?)")
        stats_in.append(json.loads((d / "stats.json").read_text()))
        tables.append(pq.read_table(d / "rollouts.parquet"))
        if (d / "excluded.parquet").is_file():
            excls.append(pq.read_table(d / "excluded.parquet"))

    chosen = {}
    for key, given in (("tds_metric", tds), ("alpha", alpha), ("beta", beta), ("normalize_ovs", normalize_ovs),
                       ("prior", None if prior is None else prior.to_dict()), ("credible", credible),
                       ("vps_from", vps_from)):
        vals = {json.dumps(s["settings"].get(key)) for s in stats_in}
        if given is not None:
            chosen[key] = given
        elif len(vals) > 1:
            raise ValueError(f"the inputs were scored with different {key} ({sorted(vals)}); pass it explicitly")
        else:
            chosen[key] = stats_in[0]["settings"].get(key)
    chosen["normalize_ovs"] = bool(chosen["normalize_ovs"])
    check_weights(chosen["alpha"], chosen["beta"], chosen["normalize_ovs"])
    # inputs from before the posterior columns: the defaults
    prior_spec = PriorSpec(**chosen["prior"]) if chosen["prior"] else PriorSpec()
    chosen["prior"] = prior_spec.to_dict()
    chosen["credible"] = chosen["credible"] if chosen["credible"] is not None else 0.9
    chosen["vps_from"] = chosen["vps_from"] or "pass_rate"

    owner: dict[tuple, Path] = {}
    clashes = []
    for d, t in zip(dirs, tables):
        for k in zip(t.column("problem_id").to_pylist(), t.column("model").to_pylist(), t.column("sample").to_pylist()):
            if k in owner:
                clashes.append((k, owner[k], d))
            else:
                owner[k] = d
    if clashes:
        k, a, b = clashes[0]
        raise ValueError(f"{len(clashes)} rollout key(s) appear in more than one input, e.g. "
                         f"(problem_id={k[0]!r}, model={k[1]!r}, sample={k[2]}) in {a} and {b}")
    rollouts = _sort_rollouts(_concat(tables, S.ROLLOUTS))
    excluded = _concat(excls, S.EXCLUDED)
    if excluded.num_rows:  # the same bad row reported by several runs of one input counts once
        seen, keep = set(), []
        for i, r in enumerate(excluded.select(["id", "locator", "reason"]).to_pylist()):
            key = (r["id"], r["locator"], r["reason"])
            if key not in seen:
                seen.add(key)
                keep.append(i)
        excluded = excluded.take(pa.array(keep, pa.int64()))
    t0 = time.perf_counter()
    post_info: dict = {}
    scores = score_rollouts(rollouts, metric=chosen["tds_metric"], alpha=chosen["alpha"], beta=chosen["beta"],
                            normalize_ovs=chosen["normalize_ovs"], prior=prior_spec, credible=chosen["credible"],
                            vps_from=chosen["vps_from"], info=post_info)
    # adaptive inputs: their rounds / stopped_because per prompt, and their rounds logs
    oc = _merged_outcome(dirs)
    policy = None
    if oc is not None:
        scores = _with_outcome(scores, oc)
        logs = [pq.read_table(d / "rounds.parquet") for d in dirs if (d / "rounds.parquet").is_file()]
        if logs:
            write_parquet_atomic(pa.concat_tables(logs, promote_options="default"), Path(out) / "rounds.parquet")
        ad = [s["settings"]["adaptive"] for s in stats_in if s["settings"].get("adaptive")]
        if ad:
            d0 = dict(ad[0])
            d0["prior"] = PriorSpec(**d0["prior"])
            d0["band"] = tuple(d0["band"])
            d0.pop("band_text", None)
            if len(ad) > 1 and any(a.get("budget") for a in ad):
                d0["budget"] = sum(a.get("budget") or 0 for a in ad)  # the shards' budgets together
            policy = AdaptivePolicy(**d0)
    t_tds = time.perf_counter() - t0

    settings = dict(stats_in[0]["settings"])
    settings.update(chosen)
    settings["shard"] = None
    settings["merged_from"] = [str(d) for d in dirs]
    for key in ("model", "model_name", "n", "seed", "temperature"):
        vals = {json.dumps(s["settings"].get(key)) for s in stats_in}
        if len(vals) > 1:
            settings[key] = [s["settings"].get(key) for s in stats_in]
    counts: dict[str, Any] = {"inputs": len(dirs), "problems_scored": scores.num_rows, "excluded": excluded.num_rows,
                              "rollouts": rollouts.num_rows}
    timing: dict[str, float] = {}
    for s in stats_in:
        for k, v in (s.get("timing") or {}).items():
            if k in {"engine_load_s", "generation_s", "verification_s", "tds_scoring_s", "writing_s"} and v:
                timing[k] = timing.get(k, 0.0) + float(v)
    timing["merge_tds_scoring_s"] = t_tds
    return _finish(Path(out), rollouts, scores, excluded, settings, counts, timing, t_start,
                   title=f"curate merge ({len(dirs)} inputs)", posterior=post_info, adaptive=policy)


def _merged_outcome(dirs: Sequence[Path]):
    """``problem_id, model, rounds, stopped_because`` of the inputs that were scored adaptively (None when
    none was): read from their scores tables."""
    import polars as pl

    frames = []
    for d in dirs:
        f = d / "scores.parquet"
        if f.is_file() and "stopped_because" in pq.read_schema(f).names:
            t = pl.read_parquet(f, columns=["problem_id", "model", "rounds", "stopped_because"])
            frames.append(t.filter(pl.col("stopped_because").is_not_null()))
    frames = [f for f in frames if f.height]
    return pl.concat(frames) if frames else None


# --- filter ---------------------------------------------------------------------------------------------------


@dataclass
class FilterResult:
    table: pa.Table
    kept: int
    total: int
    band: str
    model: str | None


def pass_band(min_pass: float, max_pass: float, include_min: bool, include_max: bool) -> str:
    return f"{min_pass:g} {'<=' if include_min else '<'} p {'<=' if include_max else '<'} {max_pass:g}"


def filter_scores(
    scores: str | Path | pa.Table,
    out: str | Path | None = None,
    *,
    problems: str | Path | None = None,
    min_pass: float = 0.0,
    max_pass: float = 1.0,
    include_min: bool = False,
    include_max: bool = False,
    model: str | None = None,
) -> FilterResult:
    """Keep the problems whose pass rate lies in the band (default ``0 < p < 1``: drop prompts every
    rollout got right or every rollout got wrong - the zero-variance groups that give GRPO no signal).

    With several models in ``scores``, ``model`` picks whose pass rate decides (required then).  Output: the
    matching rows of ``problems`` (its own columns, in its order) when given, else the matching score rows.
    """
    if not 0.0 <= min_pass <= max_pass <= 1.0:
        raise ValueError(f"need 0 <= min_pass <= max_pass <= 1, got min_pass={min_pass}, max_pass={max_pass}")
    t = scores if isinstance(scores, pa.Table) else pq.read_table(scores)
    t, model = S.select_model(t, model)
    p = t.column("pass_rate")
    lo = pc.greater_equal(p, min_pass) if include_min else pc.greater(p, min_pass)
    hi = pc.less_equal(p, max_pass) if include_max else pc.less(p, max_pass)
    kept_scores = t.filter(pc.and_(lo, hi))
    band = pass_band(min_pass, max_pass, include_min, include_max)
    if problems is not None:
        prob = read_table(problems)
        ids = pa.array(sorted(set(kept_scores.column("problem_id").to_pylist())), pa.string())
        result = prob.filter(pc.is_in(prob.column("id").cast(pa.string()), value_set=ids))
        total = prob.num_rows
    else:
        result = kept_scores
        total = t.num_rows
    if out is not None:
        write_parquet_atomic(result, out)
    return FilterResult(result, result.num_rows, total, band, model)


def clean_work(out: str | Path) -> None:
    """Remove ``DIR/_work`` (the resume parts) of a finished job."""
    shutil.rmtree(Path(out) / "_work", ignore_errors=True)
