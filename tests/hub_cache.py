"""Lay out a checkpoint folder as a huggingface_hub cache entry (test-only), the way ``hf_hub_download`` /
``snapshot_download`` leave it::

    <cache>/models--<org>--<name>/
        blobs/<sha256 of the file>                      the bytes
        snapshots/<commit>/<path> -> ../../blobs/<sha>  relative symlinks (dangling when a blob is missing)
        refs/<ref>                                      the commit id (no newline)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path


def add_to_hub_cache(src: str | Path, cache: str | Path, repo_id: str, *, files: Iterable[str] | None = None,
                     ref: str | None = "main", commit: str | None = None) -> Path:
    """Put ``src``'s files (or only ``files``, paths relative to ``src``) under ``cache`` as ``repo_id`` at
    ``commit`` (default: a sha1 of the repo id), pointed to by ``refs/<ref>``; returns the snapshot folder."""
    src, cache = Path(src), Path(cache)
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
    snap = repo / "snapshots" / commit
    keep = None if files is None else set(files)
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = f.relative_to(src).as_posix()
        if keep is not None and rel not in keep:
            continue
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    snap.mkdir(parents=True, exist_ok=True)
    if ref is not None:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snap
