#!/usr/bin/env python
"""Run TRL's own GRPO test-suite (``tests/test_grpo_trainer.py``) offline on CPU with stock ``trl.GRPOTrainer``
and/or rlcurate's ``training.grpo.VASGRPOTrainer`` standing in for it, and compare the outcomes test by test.

    python run_trl_grpo_suite.py --trainer both --repo-root /path/to/rlcurate [--repo-rev HEAD]

Steps: (1) build the offline Hub fixtures if missing (``build_fixtures.py``); (2) for each trainer run pytest
on the vendored upstream tests (``upstream/tests``, unmodified) with ``-p trl_grpo_plugin`` (the swap, the
selection in ``selection.py`` and a JSON report); (3) write ``<out>/summary.md`` / ``summary.json`` and print
``N passed with stock, M with ours; tests passing with stock but failing with ours: [...]``.

Paths default relative to this file (``upstream/``, ``.fixtures/``, ``results/``) or come from the environment:
``RLCURATE_TRL_FIXTURES`` (fixture root), ``RLCURATE_REPO_ROOT`` (the rlcurate checkout providing ``training``
and ``curation``; default: the nearest parent folder of this file that has ``training/grpo.py``).
Exit status: 0 when every run finished (whatever the test outcomes), 2 on a harness/usage error.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEST_FILE = "tests/test_grpo_trainer.py"
PASSING = {"passed", "xpassed"}
LABEL = {"stock": "stock", "vas": "ours", "vas-on": "ours+VAS"}
TRAINER_SETS = {"both": ["stock", "vas"], "all": ["stock", "vas", "vas-on"]}


def find_repo_root(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get("RLCURATE_REPO_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    for p in [HERE, *HERE.parents]:
        if (p / "training" / "grpo.py").is_file() and (p / "curation").is_dir():
            return p
    return None


def git_info(root: Path) -> dict:
    def git(*a):
        r = subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--", "training", "curation")
    return {"path": str(root), "head": head, "dirty_training_or_curation": bool(dirty) if dirty is not None else None}


def export_rev(root: Path, rev: str, dest: Path) -> Path:
    """``git archive <rev>`` of the repo into ``dest`` (a clean import root, immune to work-tree edits)."""
    sha = subprocess.run(["git", "-C", str(root), "rev-parse", rev], capture_output=True, text=True, check=True
                         ).stdout.strip()
    target = dest / f"repo-{sha[:12]}"
    if (target / "training" / "grpo.py").is_file():
        return target
    tmp = dest / f".repo-{sha[:12]}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tar = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", sha], capture_output=True, check=True)
    tar_path = tmp / "src.tar"
    tar_path.write_bytes(tar.stdout)
    with tarfile.open(tar_path) as tf:
        tf.extractall(tmp, filter="data")
    tar_path.unlink()
    tmp.rename(target)
    return target


def offline_env(fixtures: Path, import_root: Path | None, trainer: str, report: Path, threads: int = 0) -> dict:
    env = dict(os.environ)
    if threads:
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[k] = str(threads)
    for k in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS"):
        env.pop(k, None)
    pp = [str(HERE)] + ([str(import_root)] if import_root else [])
    env.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_CACHE=str(fixtures / "hub"), HF_DATASETS_CACHE=str(fixtures / "datasets"),
        HF_HOME=str(fixtures / "home"), HF_MODULES_CACHE=str(fixtures / "home" / "modules"),
        CUDA_VISIBLE_DEVICES="", TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled",
        PYTHONPATH=os.pathsep.join(pp), RLCURATE_TRL_TRAINER=trainer, RLCURATE_TRL_REPORT=str(report),
    )
    env.pop("HUGGINGFACE_HUB_CACHE", None)
    return env


def fixtures_complete(fixtures: Path, qwen_vocab: str) -> bool:
    sys.path.insert(0, str(HERE))
    try:
        import build_fixtures as bf
    finally:
        sys.path.pop(0)
    bf.QWEN_VOCAB = qwen_vocab
    hub = bf.hub_cache(fixtures)
    ok = all(bf.is_built(hub, "model", r) for r in bf.MODELS)
    ok = ok and all(bf.is_built(hub, "dataset", r) for r in bf.DATASETS)
    return ok and all((bf.datasets_cache(fixtures) / r.replace("/", "___") / bf.DS_MARKER).is_file()
                      for r in bf.DATASETS)


def build_fixtures(python: str, fixtures: Path, import_root: Path | None, force: bool, nice: int, qwen_vocab: str,
                   log) -> None:
    """Run ``build_fixtures.py`` (it needs rlcurate's ``curation`` for the tokenizers: ``import_root``)."""
    env = offline_env(fixtures, import_root, "stock", fixtures / "unused.json")
    cmd = [python, str(HERE / "build_fixtures.py"), "--root", str(fixtures), "--qwen-vocab", qwen_vocab]
    cmd += ["--force"] if force else []
    log(f"[fixtures] {' '.join(cmd)}")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, preexec_fn=_nicer(nice))
    (fixtures / "build.log").parent.mkdir(parents=True, exist_ok=True)
    (fixtures / "build.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        raise SystemExit(f"fixture build failed (see {fixtures / 'build.log'}):\n{r.stderr[-3000:]}")


def _nicer(n: int):
    return (lambda: os.nice(n)) if n else None


def start_pytest(python: str, tests_dir: Path, fixtures: Path, import_root: Path | None, trainer: str, out: Path,
                 timeout: int, kexpr: str | None, selection: bool, nice: int, threads: int, extra: list[str], log):
    """Start pytest for one trainer in the background; returns a handle for :func:`finish_pytest`."""
    report = out / f"{trainer}.json"
    logf = out / f"{trainer}.log"
    report.unlink(missing_ok=True)
    basetemp = out / f"tmp-{trainer}"
    env = offline_env(fixtures, import_root, trainer, report, threads)
    if not selection:
        env["RLCURATE_TRL_SELECTION"] = "0"
    cmd = [python, "-m", "pytest", "-c", str(HERE / "pytest.ini"), "--rootdir", str(tests_dir.parent),
           "-p", "no:cacheprovider", "-p", "trl_grpo_plugin", "-rA", "-v", "--durations=25",
           f"--basetemp={basetemp}"]
    if timeout:
        cmd.append(f"--timeout={timeout}")
    if kexpr:
        cmd += ["-k", kexpr]
    cmd += list(extra) + [str(tests_dir / Path(TEST_FILE).name)]
    log(f"[{trainer}] {' '.join(cmd)}  (log: {logf})")
    fh = open(logf, "w")
    proc = subprocess.Popen(cmd, env=env, cwd=str(tests_dir.parent), stdout=fh, stderr=subprocess.STDOUT,
                            preexec_fn=_nicer(nice))
    return {"trainer": trainer, "proc": proc, "fh": fh, "t0": time.time(), "report": report, "log": logf,
            "basetemp": basetemp}


def finish_pytest(h: dict, log, keep_tmp: bool = False) -> dict:
    rc = h["proc"].wait()
    h["fh"].close()
    wall = time.time() - h["t0"]
    trainer, report, logf = h["trainer"], h["report"], h["log"]
    if not keep_tmp:
        shutil.rmtree(h["basetemp"], ignore_errors=True)
    if not report.is_file():
        tail = logf.read_text()[-3000:]
        raise SystemExit(f"[{trainer}] pytest exited {rc} without a report; log tail:\n{tail}")
    data = json.loads(report.read_text())
    data["wall_seconds"] = round(wall, 1)
    data["pytest_exit"] = rc
    report.write_text(json.dumps(data, indent=2))
    log(f"[{trainer}] {fmt_counts(count(data))} in {wall:.0f}s")
    return data


def count(data: dict) -> dict:
    c: dict[str, int] = {}
    for t in data["tests"]:
        c[t["outcome"] or "unknown"] = c.get(t["outcome"] or "unknown", 0) + 1
    c["deselected"] = len(data.get("deselected", []))
    return c


def fmt_counts(c: dict) -> str:
    order = ["passed", "failed", "error", "skipped", "xfailed", "xpassed", "deselected", "unknown"]
    return ", ".join(f"{c[k]} {k}" for k in order if c.get(k))


def short(nodeid: str) -> str:
    return nodeid.split("::", 1)[1] if "::" in nodeid else nodeid


def summarize(runs: dict[str, dict], meta: dict) -> tuple[str, dict]:
    """Markdown + JSON summary of one or two runs."""
    names = list(runs)
    by = {n: {t["nodeid"]: t for t in runs[n]["tests"]} for n in names}
    ids = sorted(set().union(*[set(b) for b in by.values()]),
                 key=lambda i: min(list(b).index(i) if i in b else 10**6 for b in by.values()))
    res = {"meta": meta, "runs": {}}
    for n in names:
        d = runs[n]
        res["runs"][n] = {"trainer": d["trainer"], "counts": count(d),
                          "wall_seconds": d.get("wall_seconds") or d.get("seconds"),
                          "pytest_seconds": d.get("seconds"), "shims": d.get("shims"),
                          "deselected": d.get("deselected")}
    lines = ["# TRL GRPO test-suite: stock GRPOTrainer vs VASGRPOTrainer", ""]
    lines += ["Outcomes: passed/xpassed count as passing; failed/error/skipped/xfailed do not.", ""]
    lines += [f"- generated: {meta['generated']}", f"- upstream tests: {meta['upstream']}",
              f"- trl {meta['versions'].get('trl')}, transformers {meta['versions'].get('transformers')}, "
              f"torch {meta['versions'].get('torch')}, datasets {meta['versions'].get('datasets')}",
              f"- rlcurate import root: {meta.get('import_root')} ({json.dumps(meta.get('repo'))})",
              f"- fixtures: {meta.get('fixtures')} (qwen vocab: {meta.get('qwen_vocab', 'small')}); jobs "
              f"{meta.get('jobs')}, threads {meta.get('threads')}, nice {meta.get('nice')}; load average at start "
              f"{[round(x, 1) for x in meta.get('loadavg_start', [])]}"]
    if meta.get("note"):
        lines.append(f"- note: {meta['note']}")
    lines.append("")
    for n in names:
        r = res["runs"][n]
        lines.append(f"- **{LABEL.get(n, n)}** (`{r['trainer']}`): {fmt_counts(r['counts'])}; "
                     f"{r['wall_seconds']}s wall")
    lines.append("")
    headline = None
    if "stock" in by and "vas" in by:
        s_pass = {i for i, t in by["stock"].items() if t["outcome"] in PASSING}
        v_pass = {i for i, t in by["vas"].items() if t["outcome"] in PASSING}
        regress = [i for i in ids if i in s_pass and i not in v_pass]
        improve = [i for i in ids if i in v_pass and i not in s_pass]
        differ = [i for i in ids if by["stock"].get(i, {}).get("outcome") != by["vas"].get(i, {}).get("outcome")]
        headline = (f"{len(s_pass)} passed with stock, {len(v_pass)} with ours; tests passing with stock but "
                    f"failing with ours: {[short(i) for i in regress]}")
        res.update(headline=headline, regressions=regress, improvements=improve, differ=differ)
        lines += ["## Headline", "", headline, ""]
        if "vas-on" in by:
            o_pass = {i for i, t in by["vas-on"].items() if t["outcome"] in PASSING}
            reg_on = [i for i in ids if i in s_pass and i not in o_pass]
            line = (f"With VAS switched on (vas-on): {len(o_pass)} passed; passing with stock but failing with "
                    f"VAS on: {[short(i) for i in reg_on]}")
            res.update(vas_on_line=line, vas_on_regressions=reg_on)
            lines += [line, ""]
        if improve:
            lines += [f"Passing with ours but not with stock: {[short(i) for i in improve]}", ""]
        for name in ("vas", "vas-on"):
            if name not in by:
                continue
            reg = [i for i in ids if i in s_pass and by[name].get(i, {}).get("outcome") not in PASSING]
            if reg:
                lines += [f"## Regressions: stock passes, {LABEL[name]} does not", ""]
                for i in reg:
                    t = by[name].get(i, {})
                    lines.append(f"- `{short(i)}`: {t.get('outcome')}: `{t.get('message', '')}`")
                lines.append("")
    elif names:
        n = names[0]
        p = sum(1 for t in by[n].values() if t["outcome"] in PASSING)
        headline = f"{p} passed with {LABEL.get(n, n)}"
        res["headline"] = headline
        lines += ["## Headline", "", headline, ""]
    # failures common to all runs (version skew / fixture limits), with their error lines
    lines += ["## Per-test outcomes", "", "| test | " + " | ".join(LABEL.get(n, n) for n in names) + " | note |",
              "|---|" + "---|" * len(names) + "---|"]
    for i in ids:
        outs = [by[n].get(i, {}).get("outcome", "-") for n in names]
        msg = ""
        for n in names:
            t = by[n].get(i, {})
            if t.get("outcome") not in PASSING and t.get("message"):
                msg = t["message"].replace("|", "\\|")[:160]
                break
        lines.append(f"| `{short(i)}` | " + " | ".join(outs) + f" | {msg} |")
    lines.append("")
    desel = runs[names[0]].get("deselected") or []
    if desel:
        lines += ["## Deselected (selection.py)", ""]
        for d in desel:
            lines.append(f"- `{short(d['nodeid'])}`: {d['reason']}")
        lines.append("")
    res["tests"] = {i: {n: by[n].get(i) for n in names} for i in ids}
    return "\n".join(lines), res


def versions(python: str) -> dict:
    code = ("import json,importlib.metadata as m;print(json.dumps({p:m.version(p) for p in "
            "['trl','transformers','torch','datasets','accelerate','huggingface_hub','pytest']}))")
    r = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trainer", default="both",
                   help="stock | vas | vas-on | both (= stock,vas) | all (= stock,vas,vas-on) | a comma list; "
                        "vas-on = VASGRPOTrainer with VAS switched on (diagnostic, see trl_grpo_plugin.vas_on)")
    p.add_argument("--repo-root", help="rlcurate checkout (default: $RLCURATE_REPO_ROOT or a parent of this file)")
    p.add_argument("--repo-rev", help="import rlcurate from `git archive REV` of --repo-root instead of its work "
                                      "tree (e.g. HEAD: immune to uncommitted edits)")
    p.add_argument("--tests-dir", type=Path, default=HERE / "upstream" / "tests",
                   help="folder holding TRL's tests package (default: %(default)s)")
    p.add_argument("--fixtures", type=Path, default=None,
                   help="fixture root (default: $RLCURATE_TRL_FIXTURES or ./.fixtures)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default: ./results/<timestamp>)")
    p.add_argument("--python", default=sys.executable, help="interpreter with torch/transformers/trl/pytest")
    p.add_argument("--timeout", type=int, default=600, help="per-test timeout in seconds (pytest-timeout)")
    p.add_argument("-k", dest="kexpr", help="pytest -k expression (subset)")
    p.add_argument("--no-selection", action="store_true", help="run every collected test (no selection.py)")
    p.add_argument("--nice", type=int, default=10, help="niceness of the child processes (default %(default)s)")
    p.add_argument("--jobs", type=int, default=1,
                   help="how many trainers' runs go at the same time (each single-threaded by default)")
    p.add_argument("--threads", type=int, default=1,
                   help="OMP/MKL threads per pytest process (default 1: the tiny models gain nothing from more, "
                        "and it keeps two concurrent runs off each other's core); 0 = library default")
    p.add_argument("--keep-tmp", action="store_true", help="keep the tests' output folders (<out>/tmp-*)")
    p.add_argument("--rebuild-fixtures", action="store_true")
    p.add_argument("--qwen-vocab", choices=["small", "full"], default="small",
                   help="Qwen fixture tokenizer layout (build_fixtures.QWEN_VOCAB); full needs its own --fixtures "
                        "root (default root: ./.fixtures for small, ./.fixtures-fullvocab for full)")
    p.add_argument("--summarize", type=Path, metavar="OUT_DIR",
                   help="only (re)write the summary of an earlier run folder")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    a = p.parse_args(argv)

    def log(msg):
        print(msg, flush=True)

    trainers = TRAINER_SETS.get(a.trainer) or [t.strip() for t in a.trainer.split(",") if t.strip()]
    for t in trainers:
        if t not in LABEL:
            p.error(f"unknown trainer {t!r}")
    if a.summarize:
        out = a.summarize
        meta = json.loads((out / "meta.json").read_text())
        runs = {t: json.loads((out / f"{t}.json").read_text()) for t in LABEL if (out / f"{t}.json").is_file()}
    else:
        default_root = HERE / (".fixtures" if a.qwen_vocab == "small" else ".fixtures-fullvocab")
        fixtures = (a.fixtures or Path(os.environ.get("RLCURATE_TRL_FIXTURES", default_root))).resolve()
        out = (a.out or HERE / "results" / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")).resolve()
        repo = find_repo_root(a.repo_root)
        if repo is None:
            if any(t.startswith("vas") for t in trainers):
                p.error("cannot find the rlcurate repo (training/grpo.py): pass --repo-root or set RLCURATE_REPO_ROOT")
            log("note: no rlcurate repo found; fixtures need curation.models, so they must exist already")
        out.mkdir(parents=True, exist_ok=True)
        import_root = repo
        if repo is not None and a.repo_rev:
            import_root = export_rev(repo, a.repo_rev, out.parent / ".repo-exports")
        tests_dir = a.tests_dir.resolve()
        if not (tests_dir / "test_grpo_trainer.py").is_file():
            p.error(f"{tests_dir} has no test_grpo_trainer.py")
        if a.rebuild_fixtures or not fixtures_complete(fixtures, a.qwen_vocab):
            build_fixtures(a.python, fixtures, import_root, a.rebuild_fixtures, a.nice, a.qwen_vocab, log)
        src = tests_dir.parent / "SOURCE.json"
        meta = {
            "generated": _dt.datetime.now().isoformat(timespec="seconds"),
            "upstream": json.loads(src.read_text()).get("summary") if src.is_file() else str(tests_dir),
            "versions": versions(a.python),
            "import_root": str(import_root) if import_root else None,
            "repo": (git_info(repo) | {"rev": a.repo_rev}) if repo else None,
            "fixtures": str(fixtures), "qwen_vocab": a.qwen_vocab,
            "argv": sys.argv[1:] if argv is None else argv,
            "cpu_count": os.cpu_count(),
            "jobs": a.jobs, "threads": a.threads, "nice": a.nice, "timeout": a.timeout, "kexpr": a.kexpr,
            "loadavg_start": os.getloadavg(),
        }
        (out / "meta.json").write_text(json.dumps(meta, indent=2))
        runs = {}
        start = lambda t: start_pytest(a.python, tests_dir, fixtures, import_root, t, out, a.timeout,  # noqa: E731
                                       a.kexpr, not a.no_selection, a.nice, a.threads, a.pytest_args, log)
        pending = list(trainers)
        while pending:
            batch, pending = pending[: max(1, a.jobs)], pending[max(1, a.jobs):]
            handles = [start(t) for t in batch]
            for h in handles:
                runs[h["trainer"]] = finish_pytest(h, log, a.keep_tmp)
        meta["loadavg_end"] = os.getloadavg()
        (out / "meta.json").write_text(json.dumps(meta, indent=2))
    md, res = summarize(runs, meta)
    (out / "summary.md").write_text(md)
    (out / "summary.json").write_text(json.dumps(res, indent=2))
    log(f"\nresults: {out}/summary.md")
    log(res.get("headline", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
