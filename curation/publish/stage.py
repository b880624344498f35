"""Staging: the Hub file tree of a publish in a local folder - Parquet shards written the way 🤗 ``datasets``
writes them for the Hub (image columns as ``Image`` features, deterministic bytes), the score histograms and
the rendered card.  Step 3 of :mod:`curation.publish`."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.core.text import repair_table
from curation.publish.card import SPLIT, ConfigInfo, card_context, render_card, validate_card
from curation.publish.discover import (
    CONFIG_DESCRIPTIONS,
    KINDS,
    Discovery,
    FoundTable,
    PublishError,
    _rel,
    card_kind,
    main_config,
)

__all__ = ["DEFAULT_MAX_SHARD_BYTES", "README", "StagedFile", "Staging", "git_blob_sha1", "stage"]

# --- what we publish ------------------------------------------------------------------------------------


README = "README.md"
DEFAULT_MAX_SHARD_BYTES = 500 * 1024 * 1024  # 🤗 datasets' push_to_hub default (config.MAX_SHARD_SIZE)


# --- token ------------------------------------------------------------------------------------------------


# --- discovery ----------------------------------------------------------------------------------------------


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
class Staging:
    out_dir: Path
    files: list[StagedFile]
    card: str
    kind: str
    configs: dict[str, ConfigInfo]
    context: dict
    skipped: list[tuple[Path, str]]
    repaired: list[str] = field(default_factory=list)  # text repaired on reading ("file: column ...: rows")


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


def _load_config_table(found: list[FoundTable], root: Path, repaired: list[str]) -> pa.Table:
    """The config's tables, concatenated; invalid UTF-8 (a file written by another tool) is replaced by
    U+FFFD (:func:`curation.core.text.repair_table`) with a note per column in ``repaired``."""
    tables = []
    for t in found:
        table, notes = repair_table(pq.read_table(t.path))
        repaired += [f"{_rel(t.path, root)}: {n}" for n in notes]
        tables.append(table)
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
    repaired: list[str] = []
    for config in order:
        found = discovery.tables[config]
        table = _load_config_table(found, root, repaired)
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
    return Staging(out_dir, staged, card, kind, infos, context, discovery.skipped, repaired)


# --- card --------------------------------------------------------------------------------------------------------


# --- publish -----------------------------------------------------------------------------------------------------


