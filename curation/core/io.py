"""Reading inputs, writing outputs atomically, exclusion tables and resumable chunked jobs.

- :func:`read_records` streams JSONL / Parquet / a folder of Parquet files / a local 🤗 ``datasets``
  directory as :class:`Record` s; a ``.json`` file may also be one JSON document: a list of records
  (WeMath's ``testmini.json``) or an object of records keyed by id (LogicVista's ``dataset.json``; the key
  comes out as the field ``__key__``).  A malformed JSON line does not stop the stream: it comes out as a
  record with ``error`` set and its ``locator`` (``file:line``), so the caller can send it to the exclusion
  table.
- :func:`write_parquet_atomic` writes to a temporary file in the destination folder, fsyncs and renames:
  readers never see a half-written file, and a crash leaves the previous version intact.
- :class:`ExclusionWriter` collects dropped rows with ``step`` and ``reason`` (schema ``excluded``).
- :class:`ChunkStore` is the resume mechanism of long jobs (score, cot): work is cut into deterministic
  chunks; each finished chunk is one atomically written Parquet part; a re-run skips finished chunks and
  :meth:`ChunkStore.finalize` concatenates parts in chunk order. After ``kill -9`` nothing is lost (finished
  parts are complete files) and nothing is duplicated (an unfinished chunk left no part).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from curation.core import schema as S

_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK  # mkstemp creates 0600; published outputs get the usual mode


@dataclass
class Record:
    """One input row: ``data`` when it parsed, else ``error``; ``locator`` names the file and row."""

    locator: str
    data: dict[str, Any] | None = None
    error: str | None = None
    raw: str | None = None


def detect_format(path: Path) -> str:
    if path.is_dir():
        if any((path / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return "hf_disk"
        if any(path.glob("*.parquet")) or any(path.glob("*/*.parquet")):
            return "parquet_dir"
        raise ValueError(f"{path}: a directory that is neither a saved 🤗 dataset nor a folder of Parquet files")
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if suffix in {".jsonl", ".json", ".ndjson", ".jsonl.gz"}:
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    raise ValueError(f"{path}: unknown file type {suffix!r} (expected .jsonl, .parquet or a dataset folder)")


def read_records(path: str | Path) -> Iterator[Record]:
    """Stream the rows of a JSONL / Parquet file or a local dataset directory as :class:`Record` s."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    fmt = detect_format(path)
    if fmt == "jsonl":
        doc = _json_document(path) if path.suffix == ".json" else None
        yield from (_read_json_document(path, doc) if doc is not None else _read_jsonl(path))
    elif fmt == "parquet":
        yield from _read_parquet_file(path)
    elif fmt == "parquet_dir":
        for part in sorted(path.rglob("*.parquet")):
            yield from _read_parquet_file(part)
    else:
        from datasets import DatasetDict, load_from_disk

        ds = load_from_disk(str(path))
        splits = ds.items() if isinstance(ds, DatasetDict) else [(None, ds)]
        for split, d in splits:
            d = d.with_format("arrow")
            for start in range(0, len(d), 1000):
                batch = d[start : start + 1000]
                for j, row in enumerate(batch.to_pylist()):
                    loc = f"{path}{'[' + split + ']' if split else ''}:{start + j}"
                    yield Record(loc, data=row)


def _read_jsonl(path: Path) -> Iterator[Record]:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            loc = f"{path}:{lineno}"
            text = raw.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                yield Record(loc, error=f"malformed JSON: {e.msg} at column {e.colno}", raw=text[:2000])
                continue
            if not isinstance(data, dict):
                yield Record(loc, error=f"expected a JSON object, got {type(data).__name__}", raw=text[:2000])
                continue
            yield Record(loc, data=data)


KEY_FIELD = "__key__"  # the key of a record in a JSON object of records keyed by id


def _json_document(path: Path) -> list | dict | None:
    """The whole ``.json`` file as one JSON document: a list of records, an object whose values are all
    objects (records keyed by id), or one record; None when it is not valid JSON as a whole (JSON Lines, or a
    malformed file: the line reader then reads it line by line and reports the bad lines)."""
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    if not head.startswith((b"[", b"{")):
        return None
    try:
        doc = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if isinstance(doc, dict) and not (doc and all(isinstance(v, dict) for v in doc.values())):
        return [doc]  # one record (also what a one-line JSON Lines file is)
    return doc if isinstance(doc, (list, dict)) else None


def _read_json_document(path: Path, doc: list | dict) -> Iterator[Record]:
    if isinstance(doc, dict):
        for key, row in doc.items():
            yield Record(f"{path}[{key}]", data={KEY_FIELD: key, **row})
        return
    for k, row in enumerate(doc):
        if isinstance(row, dict):
            yield Record(f"{path}[{k}]", data=row)
        else:
            yield Record(f"{path}[{k}]", error=f"expected a JSON object, got {type(row).__name__}",
                         raw=json.dumps(row)[:2000])


def _read_parquet_file(path: Path) -> Iterator[Record]:
    pf = pq.ParquetFile(path)
    i = 0
    for batch in pf.iter_batches(batch_size=1000):
        for row in batch.to_pylist():
            yield Record(f"{path}:{i}", data=row)
            i += 1


def read_table(path: str | Path) -> pa.Table:
    """Read a whole table (strict: a malformed row raises, naming its location)."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "parquet":
        return pq.read_table(path)
    if fmt == "parquet_dir":
        return pa.concat_tables([pq.read_table(p) for p in sorted(path.rglob("*.parquet"))], promote_options="default")
    rows = []
    for rec in read_records(path):
        if rec.error:
            raise ValueError(f"{rec.locator}: {rec.error}")
        rows.append(rec.data)
    return pa.Table.from_pylist(rows)


def write_parquet_atomic(table: pa.Table, path: str | Path, **kwargs: Any) -> Path:
    """Write ``table`` to ``path`` atomically (temp file in the same folder + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression=kwargs.pop("compression", "zstd"), **kwargs)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(obj: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, _FILE_MODE)
    os.replace(tmp, path)
    return path


@dataclass
class ExclusionWriter:
    """Collects every dropped row with the step that dropped it and why (schema ``excluded``)."""

    rows: list[dict] = field(default_factory=list)

    def add(
        self,
        row: dict | None,
        *,
        step: str,
        reason: str,
        detail: str | None = None,
        duplicate_of: str | None = None,
        locator: str | None = None,
        raw: str | None = None,
    ) -> None:
        out = {f.name: None for f in S.EXCLUDED}
        if row:
            for name in S.PROBLEMS.names:
                if name in row:
                    out[name] = row[name]
        locator = locator or (row or {}).get("_locator")
        out.update(step=step, reason=reason, detail=detail, duplicate_of=duplicate_of, locator=locator, raw=raw)
        self.rows.append(out)

    def __len__(self) -> int:
        return len(self.rows)

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=S.EXCLUDED)

    def write(self, path: str | Path) -> Path:
        return write_parquet_atomic(self.table(), path)


class ChunkStore:
    """Resumable chunked output: ``DIR/parts/<name>-<chunk:06d>.parquet``, one atomic file per chunk.

    Usage::

        store = ChunkStore(out_dir / "_work", name="rollouts", config=job_config)
        for chunk_id, items in enumerate(chunks):
            if store.has(chunk_id):
                continue                      # finished in an earlier (crashed) run
            store.put(chunk_id, table_for(items))
        table = store.finalize(out_dir / "rollouts.parquet")

    ``config`` (any JSON-able dict: model, seed, n, input fingerprint...) is saved on first use; resuming
    with a different config raises instead of silently mixing two jobs' rows.
    """

    def __init__(self, root: str | Path, name: str, config: dict | None = None):
        self.root = Path(root)
        self.name = name
        self.parts = self.root / "parts"
        self.parts.mkdir(parents=True, exist_ok=True)
        cfg_path = self.root / f"{name}.job.json"
        if config is not None:
            cfg = json.loads(json.dumps(config, default=str))
            if cfg_path.exists():
                old = json.loads(cfg_path.read_text())
                if old != cfg:
                    diff = sorted(k for k in set(old) | set(cfg) if old.get(k) != cfg.get(k))
                    raise ValueError(
                        f"{self.root}: an unfinished job with different settings is here ({', '.join(diff)} "
                        "differ); re-run with the same settings to resume, or use a new output folder"
                    )
            else:
                write_json_atomic(cfg, cfg_path)

    def _path(self, chunk_id: int) -> Path:
        return self.parts / f"{self.name}-{chunk_id:06d}.parquet"

    def has(self, chunk_id: int) -> bool:
        return self._path(chunk_id).exists()

    def done(self) -> set[int]:
        out = set()
        for p in self.parts.glob(f"{self.name}-*.parquet"):
            try:
                out.add(int(p.stem.rsplit("-", 1)[1]))
            except ValueError:
                continue
        return out

    def put(self, chunk_id: int, table: pa.Table) -> Path:
        return write_parquet_atomic(table, self._path(chunk_id))

    def read(self, chunk_id: int) -> pa.Table:
        return pq.read_table(self._path(chunk_id))

    def tables(self) -> Iterable[pa.Table]:
        for cid in sorted(self.done()):
            yield self.read(cid)

    def finalize(self, out_path: str | Path, schema: pa.Schema | None = None) -> pa.Table:
        tables = list(self.tables())
        if tables:
            table = pa.concat_tables(tables, promote_options="default")
        else:
            table = (schema or pa.schema([])).empty_table()
        if schema is not None:
            table = table.select(schema.names).cast(schema)
        write_parquet_atomic(table, out_path)
        return table


@dataclass
class ChunkJob:
    """The resumable state of a chunked generation job (``curate score``, ``curate cot``).

    ``store`` holds each finished chunk's main part (its presence marks the chunk done), ``xstore`` the
    chunk's exclusions (written first), ``done_before`` the chunks finished by an earlier run, and
    ``advance(k)`` the progress callback, already advanced past those chunks."""

    store: ChunkStore
    xstore: ChunkStore
    done_before: set[int]
    advance: Any


# Exclusion reason of every problem of a chunk whose (Ray) worker died on every attempt; such a chunk is
# written as done so the job can finish, and retried by the next run (:func:`open_chunk_job`).
WORKER_FAILED = "worker_failed"


def _failed_on_workers(store: ChunkStore, xstore: ChunkStore, cid: int) -> bool:
    """A finished chunk with no rows and only ``worker_failed`` exclusions (its worker kept dying)."""
    if pq.read_metadata(store._path(cid)).num_rows or not xstore.has(cid):
        return False
    reasons = set(pq.read_table(xstore._path(cid), columns=["reason"]).column("reason").to_pylist())
    return reasons == {WORKER_FAILED}


def open_chunk_job(out: Path, name: str, settings: dict, chunks: list, progress: Any, label: str,
                   total: int) -> ChunkJob:
    """Open ``out/_work`` for a chunked job whose parts are called ``name`` (settings guard a resume).

    Chunks that an earlier run gave up on because their worker kept dying (all exclusions
    ``worker_failed``) do not count as done: this run computes them again."""
    work = Path(out) / "_work"
    store = ChunkStore(work, name, config=settings)
    xstore = ChunkStore(work, "excluded")
    done_before = {c for c in store.done() if c < len(chunks) and not _failed_on_workers(store, xstore, c)}
    advance = progress(label, total) if progress else None
    if advance and done_before:
        advance(sum(len(chunks[c]) for c in done_before))
    return ChunkJob(store, xstore, done_before, advance)
