"""``curate score`` (generate + verify + score, or score pre-generated rollouts), ``curate merge``
(join shard / model outputs) and ``curate filter`` (keep a pass-rate band)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from curation.commands._engine import (
    CHUNK_TIMEOUT_HELP,
    DATA_PARALLEL_HELP,
    MAX_RETRIES_HELP,
    parse_engine_options,
)
from curation.core.console import console, fail, progress_factory


def _summary(result, title: str) -> None:
    s = result.stats
    t = Table(title=title)
    for col in ("groups", "rollouts", "excluded", "zero-variance frac", "mean p", "mean VPS"):
        t.add_column(col, justify="right")
    o = result.report.get("overall", {})
    t.add_row(
        str(result.scores.num_rows),
        str(result.rollouts.num_rows),
        str(result.excluded.num_rows),
        f"{s['zero_variance_frac']:.3f}",
        "-" if o.get("mean_pass_rate") is None else f"{o['mean_pass_rate']:.3f}",
        "-" if o.get("mean_vps") is None else f"{o['mean_vps']:.4f}",
    )
    console.print(t)
    for reason, n in s.get("excluded_reasons", {}).items():
        console.print(f"  excluded [yellow]{reason}[/]: {n}")
    for row in result.excluded.to_pylist()[:5]:
        console.print(f"  [dim]{row['detail'] or row['locator']}[/]")
    tm = s.get("timing", {})
    parts = [f"{k.removesuffix('_s')} {v:.1f}s" for k, v in tm.items()
             if k.endswith("_s") and isinstance(v, (int, float)) and k != "outside_generation_s"]
    console.print("time: " + ", ".join(parts))
    if tm.get("overhead_frac_of_generation") is not None:
        console.print(f"time outside generation / generation: {tm['overhead_frac_of_generation']:.2%}")
    ad = s.get("adaptive")
    if ad and ad.get("mean_rollouts_per_prompt") is not None:  # (no group scored: nothing to say per prompt)
        console.print(f"adaptive: {ad['rollouts']} rollouts = {ad['mean_rollouts_per_prompt']:.2f} per prompt, "
                      f"{ad['fraction_of_n_max']:.1%} of n_max for every prompt; stopped: "
                      + ", ".join(f"{k} {v}" for k, v in ad["stopped_because"].items()))
        pool = s.get("counts", {}).get("pool_rollouts")
        if pool:
            console.print(f"replay: used {ad['rollouts']} of the pool's {pool} rollouts ({ad['rollouts'] / pool:.1%})")
    w = (s.get("posterior") or {}).get("interval_width")
    if w and w.get("mean") is not None:
        console.print(f"posterior ({(s.get('posterior') or {}).get('prior')}): credible interval width mean "
                      f"{w['mean']:.3f}, median {w['median']:.3f}")
    console.print(f"wrote [bold]{result.out_dir}[/] (rollouts.parquet, scores.parquet, excluded.parquet, "
                  "stats.json, report/" + (", rounds.parquet" if ad else "") + ")")


def register(app: typer.Typer) -> None:
    @app.command("score")
    def score_cmd(
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
        model: Annotated[Optional[str], typer.Option("--model", "-m", help="Checkpoint folder or model id to sample from.")] = None,
        data: Annotated[Optional[Path], typer.Option("--data", help="problems.parquet (or an ingest/build folder).")] = None,
        rollouts: Annotated[Optional[Path], typer.Option("--rollouts", help="Pre-generated long-form rollouts to score instead of generating (problem_id, answer, response[, model, options]); GSM8K example_model_solutions.jsonl is recognised.")] = None,
        problems: Annotated[Optional[Path], typer.Option("--problems", help="With --rollouts: problems table to take missing answers/options from (joined on id).")] = None,
        n: Annotated[int, typer.Option("--n", help="Rollouts per prompt (N).")] = 16,
        engine: Annotated[str, typer.Option("--engine", help="auto | vllm | hf")] = "auto",
        tds: Annotated[str, typer.Option("--tds", help="TDS metric: edit | self_bleu | distinct_n | embedding")] = "edit",
        alpha: Annotated[float, typer.Option("--alpha", help="VPS weight of OVS.")] = 0.8,
        beta: Annotated[float, typer.Option("--beta", help="VPS weight of TDS.")] = 0.2,
        normalize_ovs: Annotated[bool, typer.Option("--normalize-ovs/--raw-ovs", help="Use 4*OVS (in [0,1]) in VPS; default: the paper's raw OVS.")] = False,
        temperature: Annotated[float, typer.Option("--temperature")] = 1.0,
        top_p: Annotated[float, typer.Option("--top-p")] = 1.0,
        max_tokens: Annotated[int, typer.Option("--max-tokens")] = 1024,
        seed: Annotated[int, typer.Option("--seed", help="Base seed; each prompt samples with hash(seed, problem_id).")] = 0,
        shard: Annotated[Optional[str], typer.Option("--shard", help="I/K: score only problems with hash(problem_id) % K == I.")] = None,
        chunk_size: Annotated[int, typer.Option("--chunk-size", help="Prompts per resumable chunk.")] = 64,
        prompt_template: Annotated[str, typer.Option("--prompt-template", help="Template name in pipelines/prompts (default, r1, plain) or a YAML path.")] = "default",
        model_name: Annotated[Optional[str], typer.Option("--model-name", help="Label stored in the model column (default: checkpoint folder name).")] = None,
        verify_timeout: Annotated[float, typer.Option("--verify-timeout", help="Seconds per verification.")] = 5.0,
        engine_opt: Annotated[Optional[list[str]], typer.Option("--engine-opt", help="KEY=VALUE passed to the engine (repeatable), e.g. batch_size=16 (hf), gpu_memory_utilization=0.4 (vllm).")] = None,
        executor: Annotated[str, typer.Option("--executor", help="local (this process) | ray (Ray Data pipeline, one engine per worker).")] = "local",
        ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="Ray cluster to join (auto, ray://host:10001); default: the running one or a new local one.")] = None,
        num_workers: Annotated[int, typer.Option("--num-workers", help="Ray executor: engine actors (one per GPU with --gpus-per-worker 1).")] = 1,
        gpus_per_worker: Annotated[float, typer.Option("--gpus-per-worker", help="Ray executor: GPUs per engine actor (0 on CPU clusters).")] = 0.0,
        data_parallel_size: Annotated[int, typer.Option("--data-parallel-size", help=DATA_PARALLEL_HELP)] = 1,
        max_retries: Annotated[int, typer.Option("--max-retries", help=MAX_RETRIES_HELP)] = 2,
        chunk_timeout: Annotated[Optional[float], typer.Option("--chunk-timeout", help=CHUNK_TIMEOUT_HELP)] = None,
        prior: Annotated[Optional[str], typer.Option("--prior", help="Prior of the pass-rate posterior: uniform | jeffreys | eb (empirical Bayes, fitted to the data) | beta:A,B. Default: uniform, eb with --adaptive.")] = None,
        prior_scores: Annotated[Optional[Path], typer.Option("--prior-scores", help="Another model's scores.parquet: its pass rate counts as --prior-strength pseudo-rollouts per prompt.")] = None,
        prior_strength: Annotated[float, typer.Option("--prior-strength", help="K: pseudo-rollouts the --prior-scores pass rate is worth (0 = the base prior).")] = 0.0,
        prior_model: Annotated[Optional[str], typer.Option("--prior-model", help="Which model of --prior-scores (when it holds several).")] = None,
        prior_by: Annotated[Optional[str], typer.Option("--prior-by", help="With --prior eb: one prior per stratum, fitted to its own groups; FIELDS of the problems table (--data, or --problems with --rollouts), e.g. source or meta.family,meta.level.")] = None,
        credible: Annotated[float, typer.Option("--credible", help="Level of the equal-tailed credible interval post_lo..post_hi.")] = 0.9,
        vps_from: Annotated[str, typer.Option("--vps-from", help="pass_rate (MMR1: alpha*p(1-p)+beta*TDS) | posterior (alpha*E[p(1-p)]+beta*TDS).")] = "pass_rate",
        adaptive: Annotated[bool, typer.Option("--adaptive", help="Rollouts in rounds; a prompt stops once its posterior decides the band (and its VPS precision).")] = False,
        n_max: Annotated[int, typer.Option("--n-max", help="Adaptive: most rollouts per prompt.")] = 32,
        round_size: Annotated[int, typer.Option("--round", help="Adaptive: rollouts per prompt per round.")] = 4,
        band: Annotated[tuple[str, str], typer.Option("--band", help="Adaptive: the pass-rate band to decide, MIN MAX (e.g. '>0' '<1'; 'none' for no bound).")] = (">0", "<1"),
        delta: Annotated[float, typer.Option("--delta", help="Adaptive: decided when in / out of band with probability >= 1 - delta.")] = 0.1,
        vps_precision: Annotated[float, typer.Option("--vps-precision", help="Adaptive: an in-band prompt stops when the posterior sd of its VPS is at most this (1: no precision rule, stop once the band is decided).")] = 0.03,
        precision_prior: Annotated[Optional[str], typer.Option("--precision-prior", help="Adaptive: judge the VPS precision from the rollouts alone, Beta(a0+c, b0+N-c) with this prior (uniform | jeffreys), not under the run's prior.")] = None,
        rules: Annotated[Optional[str], typer.Option("--rules", help="Extraction rules in order, comma-separated (default: boxed,answer_tag,gsm8k,answer_is,a_line,choice,bare; also last_math, last_number).")] = None,
        lenient: Annotated[bool, typer.Option("--lenient", help="Add the lenient last_math rule: a rollout with no final-answer marker is graded on the last math expression / number of its final sentence.")] = False,
        budget: Annotated[Optional[int], typer.Option("--budget", help="Adaptive: total rollouts of the job (per shard); the last ones go to the least-decided prompts.")] = None,
    ) -> None:
        """Sample N rollouts per prompt, verify them, and score pass rate, OVS, TDS and VPS (MMR1), with the
        Beta posterior of every pass rate (post_mean, 90 % interval, E[p(1-p)]).

        --adaptive draws rollouts in rounds and stops each prompt once its posterior has decided the band;
        with --rollouts it replays that policy over pre-generated rollouts.  Resumable: re-run the same
        command after a crash; finished chunks (and rounds) are kept.
        """
        from curation.score.adaptive import AdaptivePolicy
        from curation.score.job import run_score_job, score_pregenerated
        from curation.score.posterior import PriorSpec

        try:
            strata_table = None
            if prior_by is not None:
                table = data or problems
                if table is None:
                    fail("--prior-by reads its fields from the problems table: give --data PROBLEMS "
                         "(with --rollouts: --data or --problems)")
                strata_table = str(table)
            prior_spec = PriorSpec.parse(prior or ("eb" if adaptive else "uniform"),
                                         scores=str(prior_scores) if prior_scores else None,
                                         strength=prior_strength, model=prior_model, by=prior_by,
                                         strata_table=strata_table)
            policy = None
            if adaptive:
                bounds = tuple(None if b.strip().lower() in ("", "none") else b for b in band)
                policy = AdaptivePolicy(n_max=n_max, round_size=round_size, band=bounds, delta=delta,
                                        vps_precision=vps_precision, budget=budget, prior=prior_spec,
                                        precision_prior=precision_prior)
            post_kw = {"prior": prior_spec, "credible": credible, "vps_from": vps_from, "adaptive": policy,
                       "rules": rules, "lenient": lenient}
            from curation.verify import resolve_rules

            resolve_rules(rules, lenient)  # a bad rule name is a usage error, before any work
        except ValueError as e:
            fail(str(e))
        try:
            with progress_factory() as new_task:
                if rollouts is not None:
                    if model is not None or (data is not None and prior_by is None):
                        fail("--rollouts scores pre-generated rollouts: do not pass --model/--data with it "
                             "(--data only as the table of --prior-by)")
                    if not rollouts.exists():
                        fail(f"{rollouts}: no such file")
                    result = score_pregenerated(rollouts, out, problems=problems, model_name=model_name, tds=tds,
                                                alpha=alpha, beta=beta, normalize_ovs=normalize_ovs,
                                                verify_timeout=verify_timeout, progress=new_task, **post_kw)
                else:
                    if model is None or data is None:
                        fail("give --model and --data (or --rollouts FILE to score pre-generated rollouts)")
                    if executor not in ("local", "ray"):
                        fail(f"--executor must be local or ray, got {executor!r}")
                    d = data / "problems.parquet" if data.is_dir() and (data / "problems.parquet").exists() else data
                    if not d.exists():
                        fail(f"{d}: no such file")
                    result = run_score_job(
                        d, out, model=model, n=n, engine=engine, tds=tds, alpha=alpha, beta=beta,
                        normalize_ovs=normalize_ovs, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                        seed=seed, shard=shard, chunk_size=chunk_size, prompt_template=prompt_template,
                        model_name=model_name, verify_timeout=verify_timeout, progress=new_task,
                        engine_options=parse_engine_options(engine_opt, data_parallel_size), executor=executor, ray_address=ray_address,
                        num_workers=num_workers, gpus_per_worker=gpus_per_worker,
                        executor_options={"max_retries": max_retries, "chunk_timeout": chunk_timeout} if executor == "ray" else None, **post_kw,
                    )
        except (ValueError, FileNotFoundError, ImportError) as e:
            fail(str(e))
        _summary(result, f"curate score -> {out}")

    @app.command("merge")
    def merge_cmd(
        dirs: Annotated[list[Path], typer.Argument(help="Output folders of `curate score` runs (shards or models).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
        tds: Annotated[Optional[str], typer.Option("--tds", help="Override the TDS metric used to re-score.")] = None,
        alpha: Annotated[Optional[float], typer.Option("--alpha")] = None,
        beta: Annotated[Optional[float], typer.Option("--beta")] = None,
        prior: Annotated[Optional[str], typer.Option("--prior", help="Override the prior (uniform | jeffreys | eb | beta:A,B).")] = None,
        vps_from: Annotated[Optional[str], typer.Option("--vps-from", help="Override the VPS variant (pass_rate | posterior).")] = None,
    ) -> None:
        """Join shard (or per-model) outputs: checks that no (problem_id, model, sample) repeats, recomputes
        scores and report; several models also give scores_wide.parquet (pass_rate__<model>, ...)."""
        from curation.score.job import merge_score_dirs
        from curation.score.posterior import PriorSpec

        try:
            result = merge_score_dirs(dirs, out, tds=tds, alpha=alpha, beta=beta,
                                      prior=PriorSpec.parse(prior) if prior else None, vps_from=vps_from)
        except (ValueError, FileNotFoundError) as e:
            fail(str(e))
        _summary(result, f"curate merge -> {out}")

    @app.command("filter")
    def filter_cmd(
        scores: Annotated[Path, typer.Option("--scores", help="scores.parquet (or a score output folder).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output Parquet file.")],
        problems: Annotated[Optional[Path], typer.Option("--problems", help="Write these problems' rows (matching ids) instead of score rows.")] = None,
        min_pass: Annotated[float, typer.Option("--min-pass", help="Lower end of the pass-rate band.")] = 0.0,
        max_pass: Annotated[float, typer.Option("--max-pass", help="Upper end of the pass-rate band.")] = 1.0,
        include_min: Annotated[bool, typer.Option("--include-min/--exclude-min", help="Whether p == min-pass is kept (default: excluded).")] = False,
        include_max: Annotated[bool, typer.Option("--include-max/--exclude-max", help="Whether p == max-pass is kept (default: excluded).")] = False,
        model: Annotated[Optional[str], typer.Option("--model", help="Whose pass rate decides (required when the scores hold several models).")] = None,
    ) -> None:
        """Keep problems whose pass rate lies in a band. Default band: 0 < p < 1 (drops the zero-variance
        prompts that every rollout got right or every rollout got wrong)."""
        from curation.score.job import filter_scores, pass_band

        s = scores / "scores.parquet" if scores.is_dir() else scores
        if not s.exists():
            fail(f"{s}: no such file")
        console.print(f"band: [bold]{pass_band(min_pass, max_pass, include_min, include_max)}[/]")
        try:
            res = filter_scores(s, out, problems=problems, min_pass=min_pass, max_pass=max_pass,
                                include_min=include_min, include_max=include_max, model=model)
        except (ValueError, FileNotFoundError) as e:
            fail(str(e))
        what = "problems" if problems else "score rows"
        console.print(f"kept {res.kept} of {res.total} {what} ({res.band}"
                      f"{', model ' + res.model if res.model else ''}) -> [bold]{out}[/]")
