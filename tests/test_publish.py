"""``curate publish``: the card's numbers against stats.json and the tables (real MATH-Vision testmini + GSM8K
test curated with ingest/build/score), the dry-run tree loading back with ``datasets``, deterministic bytes,
publishing to a local Hub stand-in (tests/hub_server.py) with no second commit when nothing changed, and the
token: never printed or logged (even on errors) and checked before any work."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import huggingface_hub.constants as hf_constants  # noqa: E402

from curation.build.pipeline import build  # noqa: E402
from curation.cli import app  # noqa: E402
from curation.core import schema as S  # noqa: E402
from curation.core.io import write_parquet_atomic  # noqa: E402
from curation.core.prompts import build_prompt  # noqa: E402
from curation.ingest.sources import ingest, write_ingest  # noqa: E402
from curation.publish import (  # noqa: E402
    NoTokenError,
    PublishError,
    discover,
    git_blob_sha1,
    publish,
    validate_card,
)
from curation.score.job import score_pregenerated  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_server import HubServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
BENCHMARKS = [DATA / "benchmarks" / "amc23.jsonl", DATA / "benchmarks" / "minerva_math.jsonl"]
GSM8K_KEYS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
N_SCORED = 300  # GSM8K problems whose 4 real example solutions are scored (keeps the fixture fast)
TOKEN = "hf_TestSecretToken0123456789abcdef"
CURATE = [sys.executable, "-c", "from curation.cli import app; app()"]


# --- the curated run folder (real data) ----------------------------------------------------------------------


def _register_all_steps() -> None:
    """Build steps register on import; make sure the ones this recipe uses are loaded."""
    import importlib

    for mod in ("near_dup", "decontaminate"):
        importlib.import_module(f"curation.build.steps.{mod}")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A demo-style run folder: ingest/{gsm8k,math_vision}, build/, score/, rl/ from the shared data."""
    run = tmp_path_factory.mktemp("run")
    g = ingest(DATA / "gsm8k" / "test.jsonl", "gsm8k")
    write_ingest(g, run / "ingest" / "gsm8k")
    m = ingest(DATA / "math_vision" / "testmini.jsonl", "math_vision")
    write_ingest(m, run / "ingest" / "math_vision")

    _register_all_steps()
    recipe = run / "recipe.yaml"
    recipe.write_text(json.dumps({"build": {"steps": [
        {"normalize": {}}, {"sanity": {"min_chars": 10}}, {"exact_dedup": {}}, {"near_dup": {"threshold": 0.8}},
        {"decontaminate": {"benchmarks": [str(b) for b in BENCHMARKS]}},
    ]}}))
    build([run / "ingest" / "gsm8k" / "problems.parquet", run / "ingest" / "math_vision" / "problems.parquet"],
          run / "build", recipe=recipe)

    # real GSM8K example solutions (4 per problem) as long-form rollouts keyed by the ingested problem ids
    questions = [json.loads(line)["question"] for line in (DATA / "gsm8k" / "test.jsonl").open()]
    assert [r["problem"] for r in g.rows] == [q.strip() for q in questions]
    long_rows = []
    with (DATA / "gsm8k" / "example_model_solutions.jsonl").open() as f:
        for i, line in enumerate(f):
            if i >= N_SCORED:
                break
            ex = json.loads(line)
            assert ex["question"] == questions[i]
            for k, key in enumerate(GSM8K_KEYS):
                long_rows.append({"problem_id": g.rows[i]["id"], "model": "gsm8k-examples", "sample": k,
                                  "answer": g.rows[i]["answer"], "response": ex[key]["solution"],
                                  "correct": ex[key]["is_correct"]})
    long_path = run / "long_rollouts.jsonl"
    long_path.write_text("".join(json.dumps(r) + "\n" for r in long_rows))
    score_pregenerated(long_path, run / "score", tds="distinct_n")

    # GRPO prompt tables from the built problems (+ their scores), text and multimodal
    problems = pq.read_table(run / "build" / "problems.parquet").to_pylist()
    scores = {r["problem_id"]: r for r in pq.read_table(run / "score" / "scores.parquet").to_pylist()}
    text, mm = [], []
    for r in problems:
        sc = scores.get(r["id"], {})
        row = {"problem_id": r["id"], "source": r["source"], "answer": r["answer"], "options": r["options"],
               **{k: sc.get(k) for k in ("pass_rate", "ovs", "tds", "vps")}}
        msgs = build_prompt(r).messages
        if r["images"]:
            msgs = [{"role": x["role"], "content": [{"type": "text", "text": x["content"]}]
                     if isinstance(x["content"], str) else [{"type": p["type"], "text": p.get("text")}
                                                            for p in x["content"]]} for x in msgs]
            mm.append({**row, "prompt": msgs, "images": r["images"]})
        else:
            text.append({**row, "prompt": msgs})
    write_parquet_atomic(S.to_table(text, "rl_text"), run / "rl" / "rl_text.parquet")
    write_parquet_atomic(S.to_table(mm, "rl_mm"), run / "rl" / "rl_multimodal.parquet")
    return run


@pytest.fixture(scope="module")
def dry(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("dry") / "out"
    result = publish(run_dir, "rlcurate/demo-set", dry_run=out)
    return out, result


# --- markdown helpers ----------------------------------------------------------------------------------------


def md_table(card: str, header_startswith: str) -> list[dict]:
    """Rows of the first Markdown table whose header line starts with ``header_startswith``."""
    lines = card.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(header_startswith) and i + 1 < len(lines) and lines[i + 1].startswith("|-"):
            cols = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                cells = [c.strip() for c in re.split(r"(?<!\\)\|", row.strip()[1:-1])]
                rows.append(dict(zip(cols, cells)))
            return rows
    raise AssertionError(f"no table starting with {header_startswith!r} in the card")


def section(card: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", card, flags=re.M | re.S)
    assert m, f"no section {title!r}"
    return m.group(1)


# --- discovery ---------------------------------------------------------------------------------------------------


def test_discovery_maps_tables_to_configs(run_dir):
    d = discover(run_dir)
    assert d.configs == ["rl_multimodal", "rl_text", "problems", "scores", "rollouts", "excluded"]
    # build output beats ingest output for `problems`; ingest tables are reported as skipped
    assert d.tables["problems"][0].path == run_dir / "build" / "problems.parquet"
    assert {p for p, _ in d.skipped} == {run_dir / "ingest" / s / "problems.parquet" for s in ("gsm8k", "math_vision")}
    # `excluded` gathers every stage's exclusions in pipeline order: ingest, build, score
    assert [t.stage for t in d.tables["excluded"]] == ["ingest", "ingest", "build", "score"]
    assert d.rows("problems") == pq.ParquetFile(run_dir / "build" / "problems.parquet").metadata.num_rows


def test_discovery_errors(tmp_path, run_dir):
    with pytest.raises(PublishError, match="no tables to publish"):
        discover(tmp_path)
    for name in ("a", "b"):  # two build outputs for one config: ambiguous, named
        (tmp_path / name).mkdir()
        for f in ("problems.parquet", "stats.json"):
            (tmp_path / name / f).write_bytes((run_dir / "build" / f).read_bytes())
    with pytest.raises(PublishError, match=r"several tables for config 'problems'.*a/problems.parquet.*b/problems"):
        discover(tmp_path)
    # --exclude leaves a sub-folder (glob) out, and says so
    d = discover(tmp_path, exclude=["b"])
    assert d.tables["problems"][0].path == tmp_path / "a" / "problems.parquet"
    assert (tmp_path / "b", "--exclude b") in d.skipped
    assert discover(tmp_path, exclude=["[a]"]).tables["problems"][0].path == tmp_path / "b" / "problems.parquet"
    bad = tmp_path / "c"
    bad.mkdir()
    (bad / "scores.parquet").write_text("not parquet")
    with pytest.raises(PublishError, match="scores.parquet: not a readable Parquet file"):
        discover(bad)


def test_image_without_bytes_is_refused_naming_the_row(tmp_path):
    rows = [{"id": f"p{i}", "source": "x", "problem": "What is 1+1?", "answer": "2",
             "images": [{"bytes": b"\x89PNG\r\n\x1a\nfake", "path": "a.png"}]} for i in range(3)]
    table = S.to_table(rows, "problems")
    imgs = table.column("images").to_pylist()
    imgs[1] = [{"bytes": None, "path": "missing.png"}]
    table = table.set_column(table.schema.get_field_index("images"), "images", pa.array(imgs, S.IMAGES))
    pq.write_table(table, tmp_path / "problems.parquet")
    with pytest.raises(PublishError, match=r"row 1 \(id=p1\): column 'images' has an image without bytes"):
        publish(tmp_path, "o/n", dry_run=tmp_path / "out")


# --- the card ------------------------------------------------------------------------------------------------------


def test_card_numbers_match_stats_and_tables(run_dir, dry):
    out, result = dry
    card = (out / "README.md").read_text()
    assert result.card == card and result.kind == "rl"
    stats = json.loads((run_dir / "build" / "stats.json").read_text())

    # build steps: rows in / out / excluded per step, then per (step, reason)
    steps = md_table(card, "| # | step |")
    assert [r["step"] for r in steps] == [s["step"] for s in stats["steps"]]
    for row, s in zip(steps, stats["steps"]):
        assert int(row["rows in"]) == s["rows_in"]
        assert int(row["rows out"]) == s["rows_out"]
        assert int(row["excluded"]) == sum(s["excluded"].values())
    if stats["excluded_rows"]:
        reasons = md_table(card, "| step | reason |")
        assert {(r["step"], r["reason"]): int(r["rows"]) for r in reasons} == {
            (s["step"], k): v for s in stats["steps"] for k, v in s["excluded"].items()}
    else:
        assert "| step | reason |" not in card
    assert (f"{stats['input_rows']} rows went in, {stats['output_rows']} were kept and "
            f"{stats['excluded_rows']} excluded") in card

    # ingest, one row per source
    ingest_rows = {r["source"]: r for r in md_table(card, "| source | format |")}
    for src in ("gsm8k", "math_vision"):
        st = json.loads((run_dir / "ingest" / src / "stats.json").read_text())
        assert int(ingest_rows[src]["rows in"]) == st["rows_in"]
        assert int(ingest_rows[src]["rows out"]) == st["rows_out"]

    # configs: row counts equal the tables'; source mix equals the tables' group-by
    configs = {r["config"].split("`")[1]: r for r in md_table(card, "| config | rows |")}
    files = {"problems": "build/problems.parquet", "scores": "score/scores.parquet",
             "rollouts": "score/rollouts.parquet", "rl_text": "rl/rl_text.parquet",
             "rl_multimodal": "rl/rl_multimodal.parquet"}
    for config, rel in files.items():
        assert int(configs[config]["rows"]) == pq.ParquetFile(run_dir / rel).metadata.num_rows, config
    n_excluded = sum(pq.ParquetFile(p).metadata.num_rows for p in run_dir.rglob("excluded.parquet"))
    assert int(configs["excluded"]["rows"]) == n_excluded == result.configs["excluded"]
    problems = pq.read_table(run_dir / "build" / "problems.parquet")
    assert int(configs["problems"]["rows with images"]) == sum(1 for x in problems.column("images").to_pylist() if x)
    mix = {r["source"]: int(r["`problems`"]) for r in md_table(card, "| source | `rl_multimodal`")}
    assert mix == dict(__import__("collections").Counter(problems.column("source").to_pylist()))

    # decontamination: the benchmarks that were used, and what the step removed
    decon = section(card, "Decontamination")
    assert "`amc23.jsonl`" in decon and "`minerva_math.jsonl`" in decon
    d = next(s for s in stats["steps"] if s["step"] == "decontaminate")
    assert f"Of {d['rows_in']} rows checked, {sum(d['excluded'].values())} were removed" in decon

    # scoring: settings from score/stats.json, counts from the scores table, histograms uploaded + linked
    sstats = json.loads((run_dir / "score" / "stats.json").read_text())
    settings = {r["setting"]: r["value"] for r in md_table(card, "| setting | value |")}
    assert settings["TDS metric"] == sstats["settings"]["tds_metric"] == "distinct_n"
    assert float(settings["alpha (OVS weight)"]) == sstats["settings"]["alpha"]
    assert float(settings["beta (TDS weight)"]) == sstats["settings"]["beta"]
    assert settings["model"] == "gsm8k-examples" and settings["N (samples per prompt)"] == "4"
    scores = pq.read_table(run_dir / "score" / "scores.parquet")
    assert f"groups: **{scores.num_rows}**, rollouts: **{4 * scores.num_rows}**" in card
    assert f"**{100 * sstats['zero_variance_frac']:.1f}%**" in card
    # the pass-rate posterior: its prior and level, the mean credible-interval width from the scores table
    assert settings["pass-rate prior"] == "uniform" and settings["credible interval"] == "90% equal-tailed"
    assert settings["VPS from"] == "pass_rate"
    width = sum(h - lo for h, lo in zip(scores.column("post_hi").to_pylist(), scores.column("post_lo").to_pylist()))
    assert f"mean interval width **{width / scores.num_rows:.4g}**" in card
    assert "rollouts per prompt: mean 4" in card and "adaptive scoring (rollouts in rounds" not in card
    for png in ("assets/pass_rate_hist.png", "assets/vps_hist.png"):
        assert f"]({png})" in card
        assert (out / png).read_bytes().startswith(b"\x89PNG")

    # citations
    cite = section(card, "Citation")
    assert "arXiv:2509.21268" in cite and "Variance-Aware Sampling and Open Resources" in cite
    assert "arXiv:2506.04207" in cite and "From Optimized Cold Start to Staged Reinforcement Learning" in cite


def test_card_metadata_validates_offline(dry):
    from huggingface_hub import DatasetCard, DatasetCardData

    out, result = dry
    content = (out / "README.md").read_text()
    card = DatasetCard(content)  # strict parse (ignore_metadata_errors=False)
    assert isinstance(card.data, DatasetCardData)
    validate_card(content)
    data = card.data.to_dict()
    assert data["license"] == "mit"  # both sources are MIT (shared/README.md)
    assert data["size_categories"] == ["n<1K"]  # default config rl_multimodal: 303 rows
    assert data["language"] == ["en"] and "visual-question-answering" in data["task_categories"]
    names = [c["config_name"] for c in data["configs"]]
    assert names == list(result.configs)
    assert [c["config_name"] for c in data["configs"] if c.get("default")] == ["rl_multimodal"]
    for c in data["configs"]:
        assert c["data_files"] == [{"split": "train", "path": f"data/{c['config_name']}/train-*"}]
    infos = {i["config_name"]: i for i in data["dataset_info"]}
    assert {k: v["splits"][0]["num_examples"] for k, v in infos.items()} == result.configs
    # a broken header is caught offline
    with pytest.raises(PublishError, match="size_categories"):
        validate_card(content.replace("- n<1K", "- tiny"))
    with pytest.raises(PublishError, match="config"):
        validate_card(content.replace("config_name: rl_text", "name: rl_text"))


# --- the dry-run tree ----------------------------------------------------------------------------------------------


def test_dry_run_loads_back_with_datasets(run_dir, dry):
    from datasets import load_dataset
    from PIL import Image as PILImage

    out, result = dry
    expected_files = {"README.md", "assets/pass_rate_hist.png", "assets/vps_hist.png"} | {
        f"data/{c}/train-00000-of-00001.parquet" for c in result.configs}
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == expected_files

    for config, rel, key in [("rl_multimodal", "rl/rl_multimodal.parquet", "problem_id"),
                             ("problems", "build/problems.parquet", "id"),
                             ("scores", "score/scores.parquet", "problem_id")]:
        ds = load_dataset(str(out), config, split="train")
        src = pq.read_table(run_dir / rel)
        assert ds.num_rows == src.num_rows
        assert ds[key] == src.column(key).to_pylist()
        plain = [c for c in src.column_names if c != "images"]
        assert ds.select_columns(plain).to_list() == src.select(plain).to_pylist()
        if "images" in src.column_names:
            i = next(j for j, x in enumerate(src.column("images").to_pylist()) if x)
            im = ds[i]["images"][0]
            assert isinstance(im, PILImage.Image) and im.size[0] > 0
            # original bytes kept (no re-encoding)
            shard = out / f"data/{config}/train-00000-of-00001.parquet"
            pub = pq.read_table(shard, columns=["images"])
            assert pub.column("images").to_pylist() == src.column("images").to_pylist()
            # the Parquet file alone (no card) declares the Image feature in its Arrow schema metadata
            meta = json.loads(pq.read_schema(shard).metadata[b"huggingface"])
            assert meta["info"]["features"]["images"]["feature"]["_type"] == "Image"
            bare = load_dataset("parquet", data_files=str(shard), split="train")
            assert isinstance(bare[i]["images"][0], PILImage.Image)


def test_dry_run_is_deterministic_and_refuses_foreign_folders(run_dir, dry, tmp_path):
    out, _ = dry
    again = publish(run_dir, "rlcurate/demo-set", dry_run=tmp_path / "again")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(again.added)
    for rel in files:
        assert (out / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel
    # re-running into an earlier dry-run folder replaces it; a folder with other things is refused
    publish(run_dir / "score", "rlcurate/demo-set", dry_run=tmp_path / "again")
    assert not (tmp_path / "again" / "data" / "problems").exists()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(PublishError, match="not empty"):
        publish(run_dir / "score", "rlcurate/demo-set", dry_run=tmp_path / "foreign")


def test_cli_dry_run(run_dir, tmp_path):
    res = CliRunner().invoke(app, ["publish", str(run_dir / "build"), "--repo-id", "me/problems",
                                   "--dry-run", str(tmp_path / "o"), "--license", "cc-by-4.0"])
    assert res.exit_code == 0, res.output
    assert "wrote 3 files (problems card)" in res.output
    card = (tmp_path / "o" / "README.md").read_text()
    assert "license: cc-by-4.0" in card and "\n# problems\n" in card
    res = CliRunner().invoke(app, ["publish", str(run_dir / "build"), "--repo-id", "me/p",
                                   "--dry-run", str(tmp_path / "o2"), "--license", "nonsense"])
    assert res.exit_code != 0 and "not a Hub licence identifier" in res.output
    # a run folder with model evaluations beside it (the demo's learn/): --exclude leaves them out
    import shutil

    shutil.copytree(run_dir, tmp_path / "run")
    shutil.copytree(run_dir / "score", tmp_path / "run" / "learn" / "eval_base")
    args = ["publish", str(tmp_path / "run"), "--repo-id", "me/p"]
    res = CliRunner().invoke(app, args + ["--dry-run", str(tmp_path / "o3")])
    assert res.exit_code != 0 and "several tables for config" in res.output and "--exclude" in res.output
    res = CliRunner().invoke(app, args + ["--exclude", "learn", "--dry-run", str(tmp_path / "o4")])
    assert res.exit_code == 0, res.output
    assert "not published:" in res.output and "--exclude learn" in res.output


# --- publishing to the local Hub stand-in ----------------------------------------------------------------------------


@pytest.fixture
def hub(monkeypatch):
    """The stand-in Hub; huggingface_hub pointed at it (offline mode lifted for 127.0.0.1 only, no Xet)."""
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)
    with HubServer({TOKEN: "rlcurate"}, page_size=3) as server:
        yield server


def _commits(hub, repo_id: str) -> list[str]:
    from huggingface_hub import HfApi

    return [c.commit_id for c in HfApi(endpoint=hub.url, token=TOKEN).list_repo_commits(repo_id, repo_type="dataset")]


def test_publish_to_local_hub_then_no_op_then_delete(run_dir, dry, hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # huggingface_hub's usual resolution
    repo = "rlcurate/demo-set"
    first = publish(run_dir, repo, endpoint=hub.url)
    assert first.commit is not None and first.deleted == [] and first.unchanged == []
    out, _ = dry
    remote = hub.state.files_at("dataset", repo)
    # exactly the dry-run tree arrived (byte for byte), next to the repo's own .gitattributes
    local = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert set(remote) == set(local) | {".gitattributes"}
    for path, data in local.items():
        assert remote[path] == data, path
    # Parquet and PNG went through the LFS batch + PUT path, the card as a regular file
    entry = hub.state.repos[("dataset", repo)].commits[first.commit].files
    assert entry["data/problems/train-00000-of-00001.parquet"].is_lfs and not entry["README.md"].is_lfs
    card = remote["README.md"].decode()
    from huggingface_hub import DatasetCard

    assert [c["config_name"] for c in DatasetCard(card).data.configs] == list(first.configs)
    commits = _commits(hub, repo)
    assert len(commits) == 2 and commits[0] == first.commit

    # unchanged folder: nothing uploaded, no commit
    n_req = len(hub.state.requests)
    second = publish(run_dir, repo, endpoint=hub.url)
    assert second.commit is None and second.added == [] and second.deleted == []
    assert sorted(second.unchanged) == sorted(local)
    assert _commits(hub, repo) == commits
    assert not any(m == "POST" and ("/commit/" in p or "lfs" in p) for m, p in hub.state.requests[n_req:])

    # a table removed from the folder: one commit deleting its files and updating the card only
    smaller = tmp_path / "smaller"
    for sub in ("ingest", "build", "score", "rl"):
        (smaller / sub).mkdir(parents=True)
    for p in run_dir.rglob("*"):
        if p.is_file() and p.name != "rl_text.parquet" and p.parent != run_dir:
            dest = smaller / p.relative_to(run_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(p.read_bytes())
    third = publish(smaller, repo, endpoint=hub.url, message="drop rl_text")
    assert third.commit is not None and third.deleted == ["data/rl_text/train-00000-of-00001.parquet"]
    assert third.added == ["README.md"]
    assert "data/rl_text/train-00000-of-00001.parquet" not in hub.state.files_at("dataset", repo)
    from huggingface_hub import HfApi

    log = HfApi(endpoint=hub.url, token=TOKEN).list_repo_commits(repo, repo_type="dataset")
    assert log[0].title == "drop rl_text" and len(log) == 3


def test_revision_branch_and_remote_hash_comparison(run_dir, hub):
    repo = "rlcurate/branchy"
    res = publish(run_dir / "score", repo, token=TOKEN, endpoint=hub.url, revision="v1", private=True)
    r = hub.state.repos[("dataset", repo)]
    assert r.private and r.branches["v1"] == res.commit and r.branches["main"] != res.commit
    # the comparison used by publish: remote blob ids (regular) and LFS sha256 (LFS) equal ours
    from huggingface_hub import HfApi

    tree = {f.path: f for f in HfApi(endpoint=hub.url, token=TOKEN).list_repo_tree(
        repo, repo_type="dataset", revision="v1", recursive=True) if hasattr(f, "blob_id")}
    with_lfs = [p for p, f in tree.items() if f.lfs]
    assert with_lfs and "README.md" not in with_lfs
    files = hub.state.files_at("dataset", repo, "v1")
    readme = r.commits[res.commit].files["README.md"]
    assert tree["README.md"].blob_id == readme.oid
    import hashlib
    import tempfile

    with tempfile.NamedTemporaryFile() as f:
        f.write(files["README.md"])
        f.flush()
        assert git_blob_sha1(f.name) == tree["README.md"].blob_id
    assert publish(run_dir / "score", repo, token=TOKEN, endpoint=hub.url, revision="v1").commit is None
    assert tree[with_lfs[0]].lfs.sha256 == hashlib.sha256(files[with_lfs[0]]).hexdigest()


@pytest.mark.slow
def test_load_dataset_from_the_local_hub(run_dir, hub, tmp_path):
    """`datasets.load_dataset(repo_id, "rl_multimodal")` against the stand-in (fresh process: endpoint env)."""
    repo = "rlcurate/loadme"
    publish(run_dir, repo, token=TOKEN, endpoint=hub.url)
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1",
               HF_HOME=str(tmp_path / "hf"), HF_DATASETS_OFFLINE="0")
    code = (
        "from datasets import load_dataset\n"
        f"ds = load_dataset({repo!r}, 'rl_multimodal', split='train')\n"
        "im = ds[0]['images'][0]\n"
        "print(ds.num_rows, type(im).__name__, ds[0]['problem_id'])\n"
    )
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    src = pq.read_table(run_dir / "rl" / "rl_multimodal.parquet")
    n, kind, first = p.stdout.split()
    assert int(n) == src.num_rows and kind.endswith("ImageFile") and first == src.column("problem_id")[0].as_py()


# --- the token ------------------------------------------------------------------------------------------------------


def test_missing_token_is_reported_before_any_work(monkeypatch, tmp_path):
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_ID_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"))
    # the folder does not even exist: the token check comes first, before any table is read
    with pytest.raises(NoTokenError, match="HF_TOKEN"):
        publish(tmp_path / "does-not-exist", "o/n")
    res = CliRunner().invoke(app, ["publish", str(tmp_path / "does-not-exist"), "--repo-id", "o/n"])
    assert res.exit_code != 0 and "no Hugging Face token found" in res.output
    assert not any(tmp_path.rglob("README.md"))


def test_token_never_in_output_or_logs_even_on_errors(run_dir, hub, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    # success path, then a server error whose body echoes the Authorization header back
    publish(run_dir / "score", "rlcurate/tok", token=TOKEN, endpoint=hub.url)
    hub.state.fail_next[r"/api/repos/create"] = (403, {"error": "forbidden for {authorization}"})
    with pytest.raises(PublishError) as err:
        publish(run_dir / "build", "rlcurate/tok2", token=TOKEN, endpoint=hub.url)
    assert "forbidden for Bearer ***" in str(err.value)
    assert TOKEN not in str(err.value) and err.value.__cause__ is None and err.value.__context__ is None
    # a token the server does not know: a clear 401, token-free
    with pytest.raises(PublishError, match="401") as err2:
        publish(run_dir / "score", "rlcurate/tok3", token=TOKEN + "x", endpoint=hub.url)
    assert TOKEN not in str(err2.value)
    captured = capfd.readouterr()
    assert TOKEN not in captured.out + captured.err and TOKEN not in caplog.text


def test_token_never_printed_by_the_cli(run_dir, hub, tmp_path):
    """The CLI in a fresh process with debug logging and HF_DEBUG curl traces, on success and on error."""
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1",
               HF_DEBUG="1", HF_HUB_VERBOSITY="debug", HF_HOME=str(tmp_path / "hf"))
    ok = subprocess.run(CURATE + ["publish", str(run_dir / "score"), "--repo-id", "rlcurate/cli"],
                        env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "committed" in ok.stdout and "authorization: <TOKEN>" in ok.stderr  # debug traces ran...
    assert TOKEN not in ok.stdout + ok.stderr  # ...with the token redacted
    hub.state.fail_next[r"/commit/"] = (403, {"error": "denied: {authorization}"})
    (tmp_path / "changed").mkdir()
    for f in (run_dir / "score").iterdir():
        if f.is_file() and f.name != "rollouts.parquet":
            (tmp_path / "changed" / f.name).write_bytes(f.read_bytes())
    bad = subprocess.run(CURATE + ["publish", str(tmp_path / "changed"), "--repo-id", "rlcurate/cli"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "error:" in bad.stderr and "denied" in bad.stderr
    assert TOKEN not in bad.stdout + bad.stderr


def test_cold_start_card_from_sft_table(run_dir, tmp_path):
    """An SFT folder (GSM8K problems + their reference solutions as assistant turns) gets the cold_start card."""
    from datasets import load_dataset

    problems = pq.read_table(run_dir / "build" / "problems.parquet").to_pylist()
    rows = [{"id": f"sft-{r['id']}", "problem_id": r["id"], "source": r["source"],
             "messages": [{"role": "user", "content": r["problem"]},
                          {"role": "assistant", "content": f"{r['solution']}\n\\boxed{{{r['answer']}}}"}]}
            for r in problems if r["source"] == "gsm8k" and r["solution"]][:200]
    write_parquet_atomic(S.to_table(rows, "sft_text"), tmp_path / "cot" / "sft.parquet")
    res = publish(tmp_path / "cot", "rlcurate/cold", dry_run=tmp_path / "out")
    assert res.kind == "cold_start" and res.configs == {"cold_start": 200}
    card = validate_card((tmp_path / "out" / "README.md").read_text())
    assert card.data.to_dict()["configs"][0]["config_name"] == "cold_start"
    text = (tmp_path / "out" / "README.md").read_text()
    assert "200 long chain-of-thought conversations" in text and "No `curate build` statistics" in text
    ds = load_dataset(str(tmp_path / "out"), "cold_start", split="train")
    assert ds["problem_id"] == [r["problem_id"] for r in rows] and ds[0]["messages"] == rows[0]["messages"]
