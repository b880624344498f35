"""Reading inputs, writing outputs atomically, exclusion tables and resumable chunked jobs.

- :func:`read_records` streams JSONL / Parquet / a folder of Parquet files / a local 🤗 ``datasets``
  directory as :class:`Record` s; a ``.json`` file may also be one JSON document: a list of records
  (WeMath's ``testmini.json``) or an object of records keyed by id (LogicVista's ``dataset.json``; the key
  comes out as the field ``__key__``).  A malformed JSON line does not stop the stream: it comes out as a
  record with ``error`` set and its ``locator`` (``file:line``), so the caller can send it to the exclusion
  table.  Text no writer could store (lone surrogates from ``"\\ud800"`` escapes, invalid UTF-8 in a foreign
  Parquet file) is replaced by U+FFFD as it is read, and ``Record.repairs`` says what was repaired
  (:mod:`curation.core.text`).
- :func:`write_parquet_atomic` writes to a temporary file in the destination folder, fsyncs and renames:
  readers never see a half-written file, and a crash leaves the previous version intact;
  :func:`write_jsonl_atomic` does the same for JSONL; :func:`table_from_rows` builds the Arrow table of a
  list of rows, repairing what it cannot encode instead of failing.
- :class:`ExclusionWriter` collects dropped rows with ``step`` and ``reason`` (schema ``excluded``), and the
  rows kept after a text repair (:meth:`ExclusionWriter.note_repair`, :func:`repair_summary` for stats).
- :class:`ChunkStore` is the resume mechanism of long jobs (score, cot): work is cut into deterministic
  chunks; each finished chunk is one atomically written Parquet part; a re-run skips finished chunks and
  :meth:`ChunkStore.finalize` concatenates parts in chunk order. After ``kill -9`` nothing is lost (finished
  parts are complete files) and nothing is duplicated (an unfinished chunk left no part).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from curation.core import text as T

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
    repairs: tuple[str, ...] = ()  # what was repaired in ``data`` ("response: 1 lone surrogate(s) ...")


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


_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")


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
                yield Record(loc, error=f"malformed JSON: {e.msg} at column {e.colno}", raw=T.repair_text(text[:2000])[0])
                continue
            if not isinstance(data, dict):
                yield Record(loc, error=f"expected a JSON object, got {type(data).__name__}",
                             raw=T.repair_text(text[:2000])[0])
                continue
            # json.loads makes lone surrogates only from "\\udXXX" escapes: most lines need no repair pass
            repairs = tuple(T.repair_row(data)) if _SURROGATE_ESCAPE.search(raw) else ()
            yield Record(loc, data=data, repairs=repairs)


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
            data = {KEY_FIELD: key, **row}
            yield Record(f"{path}[{key}]", data=data, repairs=tuple(T.repair_row(data)))
        return
    for k, row in enumerate(doc):
        if isinstance(row, dict):
            yield Record(f"{path}[{k}]", data=row, repairs=tuple(T.repair_row(row)))
        else:
            yield Record(f"{path}[{k}]", error=f"expected a JSON object, got {type(row).__name__}",
                         raw=json.dumps(row)[:2000])


def _read_parquet_file(path: Path) -> Iterator[Record]:
    pf = pq.ParquetFile(path)
    i = 0
    for batch in pf.iter_batches(batch_size=1000):
        try:
            rows, repaired = batch.to_pylist(), {}
        except UnicodeDecodeError:  # invalid UTF-8 written by another tool
            fixed, by_column = T.repair_table_rows(pa.Table.from_batches([batch]))
            rows, repaired = fixed.to_pylist(), {}
            for col, idx in by_column.items():
                for j in idx:
                    repaired.setdefault(j, []).append(f"{col}: invalid UTF-8 replaced by U+FFFD")
        for j, row in enumerate(rows):
            yield Record(f"{path}:{i}", data=row, repairs=tuple(repaired.get(j, ())))
            i += 1


def read_table(path: str | Path) -> pa.Table:
    """Read a whole table (strict: a malformed row raises, naming its location)."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt in ("parquet", "parquet_dir"):
        files = [path] if fmt == "parquet" else sorted(path.rglob("*.parquet"))
        tables = []
        for p in files:
            table, notes = T.repair_table(pq.read_table(p))
            if notes:
                T.log.warning("%s: %s", p, "; ".join(notes))
            tables.append(table)
        return tables[0] if fmt == "parquet" else pa.concat_tables(tables, promote_options="default")
    rows = []
    for rec in read_records(path):
        if rec.error:
            raise ValueError(f"{rec.locator}: {rec.error}")
        rows.append(rec.data)
    return table_from_rows(rows)


def _json_lines(rows: Iterable[dict], where: str, notes: list[str] | None = None) -> Iterator[bytes]:
    """Each row as one line of UTF-8 JSON (non-ASCII kept); a row holding a lone surrogate is repaired to
    U+FFFD (:func:`curation.core.text.repair_row`, logged, noted in ``notes``) instead of failing."""
    for i, row in enumerate(rows):
        line = json.dumps(row, ensure_ascii=False, default=str)
        try:
            yield line.encode("utf-8")
        except UnicodeEncodeError:
            row = dict(row)
            note = f"row {i}: " + "; ".join(T.repair_row(row))
            T.log.warning("%s: %s", where, note)
            if notes is not None:
                notes.append(note)
            yield json.dumps(row, ensure_ascii=False, default=str).encode("utf-8")


def _stringify_mixed(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """Columns whose values Arrow cannot hold in one type (``1`` in one row, ``"x"`` in another) become text:
    strings stay as they are, other values are stored as their JSON."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    mixed = []
    for c in columns:
        try:
            pa.array([row.get(c) for row in rows])
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            mixed.append(c)
    out = [dict(row) for row in rows]
    for row in out:
        for c in mixed:
            v = row.get(c)
            if v is not None and not isinstance(v, str):
                row[c] = json.dumps(v, ensure_ascii=False, default=str)
    return out, [f"column {c!r}: values of different types, stored as JSON text" for c in mixed]


def _temporal_as_string(t: pa.DataType) -> pa.DataType:
    if pa.types.is_temporal(t):
        return pa.string()
    if pa.types.is_list(t):
        return pa.list_(_temporal_as_string(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _temporal_as_string(f.type)) for f in t])
    return t


def _has_temporal(schema: pa.Schema) -> bool:
    return any(_temporal_as_string(f.type) != f.type for f in schema)


def table_from_rows(rows: list[dict], schema: pa.Schema | None = None, *, with_notes: bool = False) -> Any:
    """The Arrow table of ``rows`` (``pa.Table.from_pylist`` semantics), never failing on a bad value:
    lone surrogates are repaired (:func:`curation.core.text.table_from_rows`) and, without a ``schema``, a
    column whose values have different types (``1`` and ``"x"``) is stored as JSON text. Columns: every
    key of any row, in first-seen order (``from_pylist`` keeps the first row's only), or ``schema``'s. Without a ``schema`` the table is parsed by Arrow's JSON reader from the rows'
    JSON (fast, and it keeps ``pandas`` - a second of start-up - out of processes that never need it).
    ``with_notes=True`` returns ``(table, notes)``."""
    notes: list[str] = []
    table = None
    if schema is None and rows:
        import io as _io

        import pyarrow.json as pajson

        first = list(dict.fromkeys(k for row in rows for k in row))  # every column, in first-seen order
        data = b"\n".join(_json_lines(({c: row.get(c) for c in first} for row in rows), "table_from_rows", notes))
        read = pajson.ReadOptions(block_size=len(data) + 1)
        try:
            table = pajson.read_json(_io.BytesIO(data), read_options=read)
            if _has_temporal(table.schema):  # the reader turns "2024-01-01" into a timestamp: keep the text
                schema_ = pa.schema([pa.field(f.name, _temporal_as_string(f.type)) for f in table.schema])
                table = pajson.read_json(_io.BytesIO(data), read_options=read,
                                         parse_options=pajson.ParseOptions(explicit_schema=schema_))
            if table.column_names != first or table.num_rows != len(rows):
                table = None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            table = None  # mixed types: the fallback below
        if table is None:
            notes = []
    if table is None:
        if schema is None and rows:
            cols = dict.fromkeys(k for row in rows for k in row)
            rows = [{c: row.get(c) for c in cols} for row in rows]
        try:
            table, notes = T.table_from_rows(rows, schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            if schema is not None:
                raise
            rows, notes = _stringify_mixed(list(rows))
            T.log.warning("table_from_rows: %s", "; ".join(notes))
            table, more = T.table_from_rows(rows)
            notes += more
    return (table, notes) if with_notes else table


@contextmanager
def _atomic(path: Path) -> Iterator[str]:
    """A temporary file in ``path``'s folder to write; fsynced and renamed onto ``path`` when the block
    ends, removed if it raises - readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl_atomic(rows: Iterable[dict], path: str | Path) -> Path:
    """Write ``rows`` as JSON lines (UTF-8, non-ASCII kept as is) atomically; a value that cannot be
    encoded (a lone surrogate) is repaired to U+FFFD (:func:`curation.core.text.repair_row`), not fatal."""
    path = Path(path)
    with _atomic(path) as tmp, open(tmp, "wb") as f:
        for line in _json_lines(rows, str(path)):
            f.write(line + b"\n")
    return path


def write_parquet_atomic(table: pa.Table, path: str | Path, **kwargs: Any) -> Path:
    """Write ``table`` to ``path`` atomically (temp file in the same folder + fsync + rename)."""
    path = Path(path)
    with _atomic(path) as tmp:
        pq.write_table(table, tmp, compression=kwargs.pop("compression", "zstd"), **kwargs)
    return path


def write_json_atomic(obj: Any, path: str | Path) -> Path:
    path = Path(path)
    with _atomic(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
    return path


@dataclass
class ExclusionWriter:
    """Collects every dropped row with the step that dropped it and why (schema ``excluded``)."""

    rows: list[dict] = field(default_factory=list)
    repaired: list[tuple[str, str]] = field(default_factory=list)  # (locator, what) of rows kept after a repair

    def note_repair(self, rec: Record) -> None:
        """Record that ``rec`` (kept, not excluded) had bad text repaired on reading (``rec.repairs``)."""
        if rec.repairs:
            self.repaired.append((rec.locator, "; ".join(rec.repairs)))

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
        from curation.core import schema as S

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
        from curation.core import schema as S

        return table_from_rows(self.rows, S.EXCLUDED)

    def write(self, path: str | Path) -> Path:
        return write_parquet_atomic(self.table(), path)


def repair_summary(*writers: ExclusionWriter, examples: int = 20) -> dict:
    """``{"rows": n, "examples": ["file:line: what", ...]}`` of the rows the ``writers`` noted as repaired
    (for a stage's ``stats.json``)."""
    items = [x for w in writers for x in w.repaired]
    return {"rows": len(items), "examples": [f"{loc}: {what}" for loc, what in items[:examples]]}


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
