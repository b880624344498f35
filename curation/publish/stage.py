"""``curate publish``: push curated tables to the 🤗 Hub as named dataset configs, with a generated card.

Pipeline (every step returns data; the CLI only prints):

1. **Token first** (:func:`resolve_token`): ``token`` argument, else huggingface_hub's usual resolution
   (``HF_TOKEN`` env, then the cached login via :func:`huggingface_hub.get_token`).  A missing token
   raises :class:`NoTokenError` before any table is read or anything is rendered.  ``--dry-run`` needs
   none.  The token is never printed or logged; every error raised from here is scrubbed of it.
2. **Discover** (:func:`discover`): walk ``DIR`` (sub-folders included, hidden/``_*`` folders skipped)
   for the tables the other commands write and map each to a config:

   ===========================================  ==========================  ==========================
   file                                         written by                  config
   ===========================================  ==========================  ==========================
   ``problems.parquet``                         ``build`` (or ``ingest``)   ``problems``
   ``excluded.parquet``                         ``ingest`` + ``build``      ``excluded`` (concatenated)
   ``scores.parquet`` / ``rollouts.parquet``    ``score``                   ``scores`` / ``rollouts``
   ``sft.parquet`` (``sft_text``, ``sft_mm``)   ``cot``                     ``cold_start`` (``_text``...)
   ``rl.parquet`` (``rl_text``, ``rl_mm``)      ``rl-set``                  ``rl`` (``rl_text``...)
   ===========================================  ==========================  ==========================

   The ``stats.json`` next to a table tells its stage (``steps`` = build, ``format`` = ingest).  When a
   config has several candidates, a ``build`` output beats an ``ingest`` output; two of the same stage is
   an error naming both.  ``excluded`` gathers every ``excluded.parquet`` found (its ``step`` column says
   which stage dropped each row), so the published set accounts for every input row.
3. **Stage** (:func:`stage`): write the Hub file tree into a folder (the ``--dry-run`` folder, or a
   temporary one): ``data/<config>/train-00000-of-0000N.parquet`` (shards of at most ``max_shard_bytes``
   in-memory bytes), ``assets/pass_rate_hist.png`` and ``assets/vps_hist.png`` (from the scores table via
   :mod:`curation.report`) and ``README.md`` rendered from ``data_cards/<kind>.md.j2``.  Parquet is
   written the way 🤗 ``datasets`` writes it for the Hub (content-defined chunking, page index, image
   columns stored PLAIN and uncompressed), with the ``huggingface`` schema metadata declaring image
   columns as ``Image`` features: the original image bytes are kept and ``load_dataset`` decodes them.
   The writes are deterministic (same tables -> same bytes), which makes publishing idempotent.
4. **Upload** (:func:`publish`): ``create_repo(exist_ok=True)`` (+ ``create_branch`` for ``--revision``),
   list the remote tree, and compare each staged file with the remote one by content hash: a remote LFS
   file matches when its ``lfs.sha256`` equals our SHA-256; a regular one when its blob id equals our
   git blob SHA-1 (``sha1(b"blob <size>\\0" + content)``, git's object id).  Only new or changed files
   go into one ``create_commit`` (``CommitOperationAdd``); files under ``data/`` and ``assets/`` that we
   no longer produce are deleted (``CommitOperationDelete``); other remote files (``.gitattributes``,
   anything added by hand) are left alone.  Nothing changed -> no commit at all.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

__all__ = [
    "CONFIG_FILES",
    "Discovery",
    "FoundTable",
    "NoTokenError",
    "PublishError",
    "PublishResult",
    "StagedFile",
    "Staging",
    "discover",
    "git_blob_sha1",
    "publish",
    "render_card",
    "resolve_token",
    "stage",
    "validate_card",
]

# --- what we publish ------------------------------------------------------------------------------------

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

SPLIT = "train"
MANAGED_PREFIXES = ("data/", "assets/")  # remote files here that we no longer produce are deleted
README = "README.md"
DEFAULT_MAX_SHARD_BYTES = 500 * 1024 * 1024  # 🤗 datasets' push_to_hub default (config.MAX_SHARD_SIZE)
TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "data_cards"

# Licences of the sources the ingest adapters know (see /work/shared/README.md); used when --license is
# not given and every source agrees.
KNOWN_SOURCE_LICENSES = {"gsm8k": "mit", "math_vision": "mit", "math": "mit"}
# Hub licence identifiers accepted by --license (https://huggingface.co/docs/hub/repositories-licenses).
HUB_LICENSES = {
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0",
    "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0",
    "epl-2.0", "etalab-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl",
    "lgpl-2.1", "lgpl-3.0", "isc", "h-research", "intel-research", "lppl-1.3c", "ms-pl", "apple-ascl",
    "apple-amlr", "mpl-2.0", "odc-by", "odbl", "openmdw-1.0", "openrail++", "osl-3.0", "postgresql", "ofl-1.1",
    "ncsa", "unlicense", "zlib", "pddl", "lgpl-lr", "deepfloyd-if-license", "fair-noncommercial-research-license",
    "llama2", "llama3", "llama3.1", "llama3.2", "llama3.3", "llama4", "grok2-community", "gemma", "unknown",
    "other",
}


class PublishError(ValueError):
    """A clear, user-facing publishing error (never contains the token)."""


class NoTokenError(PublishError):
    """No Hugging Face token could be found (raised before any work is done)."""


# --- token ------------------------------------------------------------------------------------------------


def resolve_token(token: str | None = None) -> str:
    """``token`` if given, else huggingface_hub's resolution (``HF_TOKEN``, then the cached login)."""
    if token:
        return token
    from huggingface_hub import get_token

    found = get_token()
    if not found:
        raise NoTokenError(
            "no Hugging Face token found: set the HF_TOKEN environment variable or log in with "
            "`hf auth login` (the token needs write access). Use --dry-run OUTDIR to write the files "
            "locally without a token."
        )
    return found


_TOKEN_LIKE = re.compile(r"\bhf_[A-Za-z0-9]{8,}\b")


def _scrub(text: str, token: str | None) -> str:
    """Remove the token (and anything shaped like a Hub token) from a message."""
    if token:
        text = text.replace(token, "***")
    return _TOKEN_LIKE.sub("hf_***", text)


# --- discovery ----------------------------------------------------------------------------------------------


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


def discover(root: str | Path) -> Discovery:
    """Find the tables under ``root`` and map them to configs (see the module docstring for the rules)."""
    root = Path(root)
    if not root.is_dir():
        raise PublishError(f"{root}: not a folder")
    candidates: dict[str, list[FoundTable]] = {}
    stats: dict[str, list[tuple[Path, dict]]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        folder_p = Path(folder)
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
    skipped: list[tuple[Path, str]] = []
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
                "move the others out, or combine them first (e.g. `curate build` over several ingest folders)"
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


# --- hashing ----------------------------------------------------------------------------------------------------


def git_blob_sha1(path: str | Path) -> str:
    """git's object id of a file: ``sha1(b"blob " + str(size) + b"\\0" + content)`` (hex)."""
    path = Path(path)
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- Parquet ---------------------------------------------------------------------------------------------------


def _is_image_struct(t: pa.DataType) -> bool:
    return (
        pa.types.is_struct(t)
        and {f.name for f in t} == {"bytes", "path"}
        and pa.types.is_binary(t.field("bytes").type)
        and pa.types.is_string(t.field("path").type)
    )


def _features_for(schema: pa.Schema):
    """🤗 Features of ``schema``: its ``huggingface`` metadata when present (``Features.from_arrow_schema``
    reads it), and every ``struct<bytes, path>`` (or list of them) column declared an ``Image``."""
    import datasets
    from datasets import Features, Image

    feats = Features.from_arrow_schema(schema)
    list_cls = getattr(datasets, "List", None) or datasets.Sequence
    for f in schema:
        if _is_image_struct(f.type) and not isinstance(feats[f.name], Image):
            feats[f.name] = Image()
        elif pa.types.is_list(f.type) and _is_image_struct(f.type.value_type):
            inner = getattr(feats[f.name], "feature", None)
            if not isinstance(inner, Image):
                feats[f.name] = list_cls(Image())
    return feats


def _check_images(table: pa.Table, path: Path) -> None:
    """Every image struct must carry bytes (the Hub cannot resolve local file paths)."""
    for f in table.schema:
        col = table.column(f.name)
        if pa.types.is_list(f.type) and _is_image_struct(f.type.value_type):
            offsets_rows = col.combine_chunks()
            flat = pc.list_flatten(offsets_rows)
            parents = pc.list_parent_indices(offsets_rows)
        elif _is_image_struct(f.type):
            flat = col.combine_chunks()
            parents = pa.array(range(len(flat)))
        else:
            continue
        if len(flat) == 0:
            continue
        missing = pc.is_null(pc.struct_field(flat, "bytes"))
        valid = pc.is_valid(flat)
        bad = pc.and_(missing, valid)
        if pc.any(bad).as_py():
            row = parents.filter(bad)[0].as_py()
            ids = table.column("id" if "id" in table.column_names else table.column_names[0])
            raise PublishError(
                f"{path}: row {row} (id={ids[row].as_py()}): column {f.name!r} has an image without bytes; "
                "images must be embedded in the table to be published"
            )


def _write_parquet(table: pa.Table, features, path: Path) -> None:
    """Write like 🤗 datasets does for the Hub (CDC chunks, page index, PLAIN uncompressed image columns),
    deterministically: same table -> same bytes."""
    from datasets import config as dconfig

    schema = features.arrow_schema  # carries the ``huggingface`` features metadata
    table = table.cast(schema)
    try:
        from datasets.arrow_writer import (
            get_parquet_column_options,
            get_writer_batch_size_from_data_size,
            get_writer_batch_size_from_features,
        )

        batch = get_writer_batch_size_from_features(features) or get_writer_batch_size_from_data_size(
            table.num_rows, table.nbytes
        )
        opts: dict[str, Any] = dict(get_parquet_column_options(features, schema))
        cdc = dict(dconfig.DEFAULT_CDC_OPTIONS)
        opts.update(use_content_defined_chunking=cdc, write_page_index=True)
    except ImportError:  # older datasets: plain writer
        batch, opts, cdc = 10_000, {}, None
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, schema=schema, **opts) as writer:
        for start in range(0, max(table.num_rows, 1), max(int(batch), 1)):
            writer.write_table(table.slice(start, batch))
        if cdc is not None:
            writer.add_key_value_metadata({"content_defined_chunking": json.dumps(cdc)})


def _shards(num_rows: int, nbytes: int, max_shard_bytes: int) -> list[tuple[int, int]]:
    """(offset, length) of ``ceil(nbytes / max_shard_bytes)`` near-equal row ranges (at least one)."""
    n = max(1, math.ceil(nbytes / max_shard_bytes)) if max_shard_bytes > 0 else 1
    n = min(n, max(num_rows, 1))
    base, extra = divmod(num_rows, n)
    out, start = [], 0
    for i in range(n):
        length = base + (1 if i < extra else 0)
        out.append((start, length))
        start += length
    return out


# --- staging ---------------------------------------------------------------------------------------------------


@dataclass
class StagedFile:
    path_in_repo: str
    local: Path
    size: int
    sha256: str
    git_sha1: str


@dataclass
class ConfigInfo:
    name: str
    description: str
    num_rows: int
    num_bytes: int
    files: list[str]
    columns: list[str]
    features: Any
    sources: dict[str, int]  # rows per ``source`` (empty when the table has no source column)
    with_images: int | None  # rows with at least one image (None when no image column)
    with_vps: int | None  # rows with a non-null ``vps`` (None when no vps column)
    inputs: list[str]  # the local tables it came from (relative to the published folder)


@dataclass
class Staging:
    out_dir: Path
    files: list[StagedFile]
    card: str
    kind: str
    configs: dict[str, ConfigInfo]
    context: dict
    skipped: list[tuple[Path, str]]


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


def _source_counts(table: pa.Table) -> dict[str, int]:
    if "source" not in table.column_names:
        return {}
    vc = pc.value_counts(table.column("source").combine_chunks())
    counts = {(v["values"].as_py() or "(none)"): v["counts"].as_py() for v in vc}
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _image_rows(table: pa.Table) -> int | None:
    for f in table.schema:
        if pa.types.is_list(f.type) and _is_image_struct(f.type.value_type):
            lens = pc.fill_null(pc.list_value_length(table.column(f.name)), 0)
            return int(pc.sum(pc.greater(lens, 0)).as_py() or 0)
        if _is_image_struct(f.type):
            return int(pc.sum(pc.is_valid(table.column(f.name))).as_py() or 0)
    return None


def _load_config_table(found: list[FoundTable]) -> pa.Table:
    tables = [pq.read_table(t.path) for t in found]
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="default")


def _prepare_out_dir(out_dir: Path) -> None:
    """The dry-run folder must be new, empty, or an earlier dry-run (README.md, data/, assets/ only)."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise PublishError(f"{out_dir}: exists and is not a folder")
        entries = {p.name for p in out_dir.iterdir()}
        if entries and not entries <= {README, "data", "assets"}:
            raise PublishError(
                f"{out_dir}: not empty and not an earlier dry-run output (has {', '.join(sorted(entries))}); "
                "choose a new or empty folder"
            )
        for name in ("data", "assets"):
            if (out_dir / name).is_dir():
                shutil.rmtree(out_dir / name)
        (out_dir / README).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def stage(
    discovery: Discovery,
    out_dir: str | Path,
    *,
    repo_id: str,
    license: str | None = None,
    kind: str | None = None,
    pretty_name: str | None = None,
    templates_dir: str | Path | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: Callable[[str, int | None], Callable[[int], None]] | None = None,
) -> Staging:
    """Write the Hub file tree for ``discovery`` into ``out_dir`` and return what was written."""
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir)
    root = discovery.root
    kind = kind or card_kind(discovery.configs)
    if kind not in KINDS:
        raise PublishError(f"unknown card kind {kind!r}; choose one of {', '.join(KINDS)}")
    main = main_config(discovery.configs, kind)
    order = [main] + [c for c in discovery.configs if c != main]
    advance = progress("stage tables", len(order)) if progress else None

    infos: dict[str, ConfigInfo] = {}
    scores_table: pa.Table | None = None
    rollout_verdicts: dict[str, int] | None = None
    for config in order:
        found = discovery.tables[config]
        table = _load_config_table(found)
        for t in found:
            _check_images(table if len(found) == 1 else pq.read_table(t.path), t.path)
        feats = _features_for(table.schema)
        shards = _shards(table.num_rows, table.nbytes, max_shard_bytes)
        files = []
        for i, (offset, length) in enumerate(shards):
            rel = f"data/{config}/{SPLIT}-{i:05d}-of-{len(shards):05d}.parquet"
            _write_parquet(table.slice(offset, length), feats, out_dir / rel)
            files.append(rel)
        infos[config] = ConfigInfo(
            name=config,
            description=CONFIG_DESCRIPTIONS.get(config, config),
            num_rows=table.num_rows,
            num_bytes=table.nbytes,
            files=files,
            columns=table.column_names,
            features=feats,
            sources=_source_counts(table),
            with_images=_image_rows(table),
            with_vps=(table.num_rows - table.column("vps").null_count) if "vps" in table.column_names else None,
            inputs=[_rel(t.path, root) for t in found],
        )
        if config == "scores":
            scores_table = table
        if config == "rollouts" and "verdict" in table.column_names:
            vc = pc.value_counts(table.column("verdict").combine_chunks())
            verdicts = {v["values"].as_py(): v["counts"].as_py() for v in vc}
            rollout_verdicts = dict(sorted(verdicts.items(), key=lambda kv: (-kv[1], str(kv[0]))))
        del table
        if advance:
            advance(1)

    assets: dict[str, str] = {}
    score_summary = None
    if scores_table is not None and scores_table.num_rows:
        from curation.score.report import write_score_report

        with tempfile.TemporaryDirectory() as tmp:
            score_summary = write_score_report(scores_table, tmp)
            (out_dir / "assets").mkdir(parents=True, exist_ok=True)
            for name in ("pass_rate_hist.png", "vps_hist.png"):
                src = Path(tmp) / name
                if src.is_file():
                    shutil.copyfile(src, out_dir / "assets" / name)
                    assets[name.removesuffix(".png")] = f"assets/{name}"

    context = card_context(
        discovery, infos, kind=kind, main=main, repo_id=repo_id, license=license, pretty_name=pretty_name,
        score_summary=score_summary, scores_table=scores_table, assets=assets, verdicts=rollout_verdicts,
    )
    card = render_card(context, kind=kind, templates_dir=templates_dir)
    validate_card(card)
    (out_dir / README).write_text(card, encoding="utf-8")

    staged = []
    for p in sorted(out_dir.rglob("*")):
        if p.is_file():
            staged.append(StagedFile(p.relative_to(out_dir).as_posix(), p, p.stat().st_size, _sha256(p),
                                     git_blob_sha1(p)))
    return Staging(out_dir, staged, card, kind, infos, context, discovery.skipped)


# --- card --------------------------------------------------------------------------------------------------------


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket of ``n`` rows (datasets/utils/resources/size_categories.json)."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    for bound, label in bounds:
        if n < bound:
            return label
    return "1B<n<10B"


def _infer_license(infos: Mapping[str, ConfigInfo]) -> str:
    sources = {s for info in infos.values() for s in info.sources}
    lic = {KNOWN_SOURCE_LICENSES.get(s) for s in sources}
    if len(lic) == 1 and None not in lic:
        return lic.pop()
    return "other"


def _step_options(step: dict) -> str:
    """Compact ``k=v`` list of a build step's options (paths shown by file name)."""
    skip = {"step", "rows_in", "rows_out", "excluded", "seconds"}
    parts = []
    for k, v in step.items():
        if k in skip or v is None or v == [] or v == {}:
            continue
        if k == "benchmarks" and isinstance(v, list):
            v = [Path(str(b)).name for b in v]
        if isinstance(v, (list, tuple)):
            v = ",".join(str(x) for x in v)
        parts.append(f"{k}={v}")
    return ", ".join(parts)


_SCORE_SETTING_KEYS: list[tuple[str, tuple[str, ...]]] = [
    ("mode", ("mode",)),
    ("model", ("model_name", "model", "models")),
    ("N (samples per prompt)", ("n", "num_samples", "samples")),
    ("temperature", ("temperature",)),
    ("top_p", ("top_p",)),
    ("max_tokens", ("max_tokens", "max_new_tokens")),
    ("seed", ("seed",)),
    ("TDS metric", ("tds_metric", "metric")),
    ("alpha (OVS weight)", ("alpha",)),
    ("beta (TDS weight)", ("beta",)),
    ("normalize_ovs", ("normalize_ovs",)),
    ("engine", ("engine_name", "engine", "backend")),
    ("prompt template", ("prompt_template",)),
]


def _score_settings(stats: dict | None, scores: pa.Table | None) -> list[dict]:
    """Scoring settings from the score stage's stats.json (top level or under ``settings``/``config``),
    completed from the scores table itself (models, N) when the stats lack them."""
    pools: list[dict] = []
    if stats:
        for key in ("settings", "config", "options", "args"):
            if isinstance(stats.get(key), dict):
                pools.append(stats[key])
        pools.append(stats)
    rows = []
    for label, keys in _SCORE_SETTING_KEYS:
        value = None
        for pool in pools:
            for k in keys:
                if pool.get(k) is not None and not isinstance(pool.get(k), dict):
                    value = pool[k]
                    break
            if value is not None:
                break
        if value is None and scores is not None and scores.num_rows:
            if label == "model":
                value = sorted(set(scores.column("model").to_pylist()))
            elif label.startswith("N "):
                value = sorted(set(scores.column("n").to_pylist()))
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        rows.append({"setting": label, "value": value})
    return rows


def _scalars(d: Mapping[str, Any], prefix: str = "") -> list[dict]:
    """Flatten the numeric/short-string entries of a stats dict into ``key``/``value`` rows."""
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if k == "timing" or k.endswith(("_s", "seconds")):  # run times are not properties of the data
            continue
        if isinstance(v, bool) or isinstance(v, (int, float)):
            out.append({"key": key, "value": v})
        elif isinstance(v, str) and len(v) <= 80 and not ("/" in v or "\\" in v):
            out.append({"key": key, "value": v})
        elif isinstance(v, dict) and len(prefix.split(".")) < 3:
            out.extend(_scalars(v, f"{key}."))
    return out


def card_context(
    discovery: Discovery,
    infos: Mapping[str, ConfigInfo],
    *,
    kind: str,
    main: str,
    repo_id: str,
    license: str | None,
    pretty_name: str | None,
    score_summary: dict | None,
    scores_table: pa.Table | None,
    assets: Mapping[str, str],
    verdicts: Mapping[str, int] | None = None,
) -> dict:
    """Everything the card templates show; every number comes from the tables or a stats.json."""
    from datasets import DatasetInfo, SplitDict, SplitInfo

    license = license or _infer_license(infos)
    if license not in HUB_LICENSES:
        raise PublishError(f"--license {license!r} is not a Hub licence identifier (e.g. mit, apache-2.0, "
                           "cc-by-4.0, other)")
    multimodal = any((i.with_images or 0) > 0 for i in infos.values())
    main_rows = infos[main].num_rows
    order = list(infos)

    configs_yaml = []
    infos_yaml = []
    for name in order:
        info = infos[name]
        entry: dict[str, Any] = {"config_name": name, "data_files": [{"split": SPLIT, "path": f"data/{name}/{SPLIT}-*"}]}
        if name == main:
            entry["default"] = True
        configs_yaml.append(entry)
        di = DatasetInfo(features=info.features, splits=SplitDict())
        di.splits.add(SplitInfo(name=SPLIT, num_bytes=info.num_bytes, num_examples=info.num_rows))
        di.dataset_size = info.num_bytes
        d = di._to_yaml_dict()
        d.pop("download_size", None)
        d = {"config_name": name, **d}
        infos_yaml.append(d)

    tags = ["math", "reasoning", "rlcurate"]
    if multimodal:
        tags.append("multimodal")
    if "scores" in infos or any("vps" in infos[c].columns for c in infos):
        tags += ["mmr1", "variance-aware-sampling"]
    if any(c.startswith("rl") for c in infos):
        tags.append("grpo")
    if any(c.startswith("cold_start") for c in infos):
        tags += ["sft", "chain-of-thought"]
    task_categories = ["question-answering", "text-generation"]
    if multimodal:
        task_categories.append("visual-question-answering")
    name = pretty_name or repo_id.split("/")[-1]
    metadata = {
        "pretty_name": name,
        "license": license,
        "language": ["en"],
        "task_categories": task_categories,
        "size_categories": [size_category(main_rows)],
        "tags": tags,
        "configs": configs_yaml,
        "dataset_info": infos_yaml,
    }

    # curation: ingest stats (one per source), then the build steps
    ingest = []
    for _folder, st in sorted(discovery.stats.get("ingest", []), key=lambda x: str(x[0])):
        ingest.append({
            "source": st.get("source"), "format": st.get("format"), "rows_in": st.get("rows_in"),
            "rows_out": st.get("rows_out"), "excluded": dict(st.get("excluded") or {}),
            "excluded_total": sum((st.get("excluded") or {}).values()), "with_images": st.get("with_images"),
        })
    builds = discovery.stats.get("build", [])
    build = None
    if builds:
        # the build whose problems table is published, else the first one
        chosen = [b for b in builds if any(t.path.parent == b[0] for t in discovery.tables.get("problems", []))]
        st = (chosen or builds)[0][1]
        steps = []
        for s in st.get("steps", []):
            steps.append({
                "step": s.get("step"), "options": _step_options(s), "rows_in": s.get("rows_in"),
                "rows_out": s.get("rows_out"), "excluded": dict(s.get("excluded") or {}),
                "excluded_total": sum((s.get("excluded") or {}).values()),
            })
        decon = [s for s in st.get("steps", []) if s.get("step") == "decontaminate"]
        build = {
            "input_rows": st.get("input_rows"), "output_rows": st.get("output_rows"),
            "excluded_rows": st.get("excluded_rows"), "excluded_by_reason": dict(st.get("excluded_by_reason") or {}),
            "steps": steps,
            "decontamination": [
                {
                    "benchmarks": [Path(str(b)).name for b in (d.get("benchmarks") or [])],
                    "options": _step_options({k: v for k, v in d.items() if k != "benchmarks"}),
                    "rows_in": d.get("rows_in"), "excluded": dict(d.get("excluded") or {}),
                    "excluded_total": sum((d.get("excluded") or {}).values()),
                }
                for d in decon
            ],
        }

    scoring = None
    if scores_table is not None:
        score_stats = (discovery.stats.get("score") or [(None, None)])[0][1]
        scoring = {
            "settings": _score_settings(score_stats, scores_table),
            "summary": (score_summary or {}).get("overall"),
            "per_model": (score_summary or {}).get("per_model") or {},
            "histograms": dict(assets),
            "verdicts": dict(verdicts or {}),
        }
    other_stages = []
    for stage_name in ("cot", "rl-set"):
        for folder, st in discovery.stats.get(stage_name, []):
            other_stages.append({"stage": stage_name, "folder": _rel(folder, discovery.root),
                                 "entries": _scalars(st)})

    sources = sorted({s for i in infos.values() for s in i.sources})
    source_mix = {
        "configs": [c for c in order if infos[c].sources and c != "excluded"],
        "rows": [
            {"source": s, **{c: infos[c].sources.get(s, 0) for c in order if infos[c].sources and c != "excluded"}}
            for s in sources
        ],
    }
    return {
        "repo_id": repo_id,
        "pretty_name": name,
        "kind": kind,
        "main_config": main,
        "license": license,
        "multimodal": multimodal,
        "metadata_yaml": yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, width=1000),
        "metadata": metadata,
        "configs": [
            {"name": c, "description": infos[c].description, "rows": infos[c].num_rows,
             "files": infos[c].files, "columns": infos[c].columns, "with_images": infos[c].with_images,
             "inputs": infos[c].inputs, "default": c == main, "with_vps": infos[c].with_vps}
            for c in order
        ],
        "kind_configs": [c for c in _KIND_MAIN[kind] if c in infos],
        "kind_rows": sum(infos[c].num_rows for c in _KIND_MAIN[kind] if c in infos),
        "kind_vps_rows": sum(infos[c].with_vps or 0 for c in _KIND_MAIN[kind] if c in infos),
        "ingest": ingest,
        "build": build,
        "scoring": scoring,
        "source_mix": source_mix,
        "other_stages": other_stages,
    }


def _md_cell(value: Any) -> str:
    """A value safe inside a Markdown table cell."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_card(context: Mapping[str, Any], *, kind: str | None = None,
                templates_dir: str | Path | None = None) -> str:
    """Render ``data_cards/<kind>.md.j2`` (Jinja, strict: an unknown variable is an error)."""
    import jinja2

    tdir = Path(templates_dir) if templates_dir else TEMPLATES_DIR
    kind = kind or context["kind"]
    if not (tdir / f"{kind}.md.j2").is_file():
        raise PublishError(f"no card template {kind}.md.j2 in {tdir}")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(tdir)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["md"] = _md_cell
    env.filters["pct"] = lambda v: "" if v is None else f"{100 * float(v):.1f}%"
    text = env.get_template(f"{kind}.md.j2").render(**context)
    text = re.sub(r"\n{3,}", "\n\n", text)  # templates may leave runs of blank lines
    return text.rstrip("\n") + "\n"


def validate_card(content: str):
    """Offline validation of a dataset card (no network): huggingface_hub parses the YAML header into
    ``DatasetCardData`` (strict), then the fields the Hub checks are verified against 🤗 datasets' own
    tables: ``configs`` (``MetadataConfigs``: config names, data_files, one default), ``dataset_info``
    (``DatasetInfosDict``), ``size_categories``, ``task_categories`` and ``license``.  Returns the card."""
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    try:  # deprecated in datasets but still the library's list of Hub task ids
        from datasets.utils.metadata import known_task_ids
    except ImportError:  # pragma: no cover
        known_task_ids = {"question-answering", "text-generation", "visual-question-answering", "other"}

    try:
        card = DatasetCard(content)
    except Exception as e:  # noqa: BLE001 - report huggingface_hub's own message
        raise PublishError(f"invalid dataset card metadata: {e}") from None
    data = card.data
    try:
        configs = MetadataConfigs.from_dataset_card_data(data)
        configs.get_default_config_name()
        DatasetInfosDict.from_dataset_card_data(data)
    except Exception as e:  # noqa: BLE001
        raise PublishError(f"invalid dataset card configs/dataset_info: {e}") from None
    import datasets.utils.resources as res

    sizes = json.loads((Path(res.__file__).parent / "size_categories.json").read_text())
    for s in data.size_categories or []:
        if s not in sizes:
            raise PublishError(f"invalid size_categories value {s!r} (allowed: {sizes})")
    for t in data.task_categories or []:
        if t not in known_task_ids:
            raise PublishError(f"unknown task_categories value {t!r}")
    lic = data.license
    for item in lic if isinstance(lic, list) else [lic]:
        if item is not None and item not in HUB_LICENSES:
            raise PublishError(f"unknown license {item!r}")
    return card


# --- publish -----------------------------------------------------------------------------------------------------


@dataclass
class PublishResult:
    repo_id: str
    revision: str
    url: str | None
    commit: str | None  # new commit id; None when nothing changed (or dry run)
    added: list[str]
    deleted: list[str]
    unchanged: list[str]
    configs: dict[str, int]  # config -> rows
    kind: str
    dry_run: Path | None
    skipped: list[tuple[Path, str]]
    card: str


def _remote_files(api, repo_id: str, revision: str) -> dict[str, Any]:
    from huggingface_hub.errors import RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFile

    try:
        entries = api.list_repo_tree(repo_id, repo_type="dataset", revision=revision, recursive=True)
        return {e.path: e for e in entries if isinstance(e, RepoFile)}
    except RevisionNotFoundError:
        return {}


def _same(local: StagedFile, remote) -> bool:
    if remote.size != local.size:
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == local.sha256
    return remote.blob_id == local.git_sha1


def publish(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    dry_run: str | Path | None = None,
    license: str | None = None,
    message: str | None = None,
    kind: str | None = None,
    pretty_name: str | None = None,
    endpoint: str | None = None,
    templates_dir: str | Path | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: Callable[[str, int | None], Callable[[int], None]] | None = None,
) -> PublishResult:
    """Publish the tables under ``folder`` to the dataset repo ``repo_id`` (or to ``dry_run`` locally)."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id or ""):
        raise PublishError(f"--repo-id {repo_id!r}: expected ORG/NAME")
    revision = revision or "main"
    if dry_run is None:
        token = resolve_token(token)  # before any work
    try:
        return _publish(folder, repo_id, token=token, private=private, revision=revision, dry_run=dry_run,
                        license=license, message=message, kind=kind, pretty_name=pretty_name, endpoint=endpoint,
                        templates_dir=templates_dir, max_shard_bytes=max_shard_bytes, progress=progress)
    except PublishError as e:
        error = _scrub(str(e), token)
    except Exception as e:  # noqa: BLE001 - network/library errors become one clean, token-free message
        error = _scrub(f"{type(e).__name__}: {e}", token)
    # raised outside the handler: no __cause__/__context__ chain that could carry the token into a traceback
    raise PublishError(error)


def _publish(folder, repo_id, *, token, private, revision, dry_run, license, message, kind, pretty_name,
             endpoint, templates_dir, max_shard_bytes, progress) -> PublishResult:
    discovery = discover(folder)
    common = dict(repo_id=repo_id, license=license, kind=kind, pretty_name=pretty_name,
                  templates_dir=templates_dir, max_shard_bytes=max_shard_bytes, progress=progress)
    if dry_run is not None:
        st = stage(discovery, dry_run, **common)
        return PublishResult(repo_id, revision, None, None, [f.path_in_repo for f in st.files], [], [],
                             {c: i.num_rows for c, i in st.configs.items()}, st.kind, Path(dry_run),
                             st.skipped, st.card)

    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    with tempfile.TemporaryDirectory(prefix="curate-publish-") as tmp:
        st = stage(discovery, Path(tmp) / "repo", **common)
        api = HfApi(endpoint=endpoint, token=token)
        repo_url = api.create_repo(repo_id, repo_type="dataset", private=True if private else None, exist_ok=True)
        if revision != "main":
            api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
        remote = _remote_files(api, repo_id, revision)
        local = {f.path_in_repo: f for f in st.files}
        added = sorted(p for p, f in local.items() if p not in remote or not _same(f, remote[p]))
        unchanged = sorted(p for p in local if p not in added)
        deleted = sorted(p for p in remote if p not in local and p.startswith(MANAGED_PREFIXES))
        commit = None
        if added or deleted:
            ops: list = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(local[p].local)) for p in added]
            ops += [CommitOperationDelete(path_in_repo=p, is_folder=False) for p in deleted]
            summary = ", ".join(f"{c} ({i.num_rows} rows)" for c, i in st.configs.items())
            info = api.create_commit(
                repo_id, ops, repo_type="dataset", revision=revision,
                commit_message=message or f"Publish curated dataset: {summary}"[:200],
                commit_description=f"Published with rlcurate `curate publish`. Configs: {summary}.",
            )
            commit = info.oid
        return PublishResult(repo_id, revision, str(repo_url), commit, added, deleted, unchanged,
                             {c: i.num_rows for c, i in st.configs.items()}, st.kind, None, st.skipped, st.card)
