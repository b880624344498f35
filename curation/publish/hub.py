"""The Hub side of a publish: the token (resolved first, never printed), and the upload of only what
changed (content hashes against the remote tree; nothing changed -> no commit).  Steps 1 and 4 of
:mod:`curation.publish`."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from curation.publish.discover import PublishError, discover
from curation.publish.stage import DEFAULT_MAX_SHARD_BYTES, StagedFile, stage

__all__ = ["MANAGED_PREFIXES", "NoTokenError", "PublishResult", "publish", "resolve_token"]

MANAGED_PREFIXES = ("data/", "assets/")  # remote files here that we no longer produce are deleted



class NoTokenError(PublishError):
    """No Hugging Face token could be found (raised before any work is done)."""



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
    repaired: list[str] = field(default_factory=list)  # text repaired on reading (invalid UTF-8 -> U+FFFD)



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
    exclude: Sequence[str] = (),
) -> PublishResult:
    """Publish the tables under ``folder`` to the dataset repo ``repo_id`` (or to ``dry_run`` locally);
    ``exclude``: sub-folder glob patterns left out (:func:`curation.publish.discover.discover`)."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id or ""):
        raise PublishError(f"--repo-id {repo_id!r}: expected ORG/NAME")
    revision = revision or "main"
    if dry_run is None:
        token = resolve_token(token)  # before any work
    try:
        return _publish(folder, repo_id, token=token, private=private, revision=revision, dry_run=dry_run,
                        license=license, message=message, kind=kind, pretty_name=pretty_name, endpoint=endpoint,
                        templates_dir=templates_dir, max_shard_bytes=max_shard_bytes, progress=progress,
                        exclude=tuple(exclude))
    except PublishError as e:
        error = _scrub(str(e), token)
    except Exception as e:  # noqa: BLE001 - network/library errors become one clean, token-free message
        error = _scrub(f"{type(e).__name__}: {e}", token)
    # raised outside the handler: no __cause__/__context__ chain that could carry the token into a traceback
    raise PublishError(error)



def _publish(folder, repo_id, *, token, private, revision, dry_run, license, message, kind, pretty_name,
             endpoint, templates_dir, max_shard_bytes, progress, exclude=()) -> PublishResult:
    discovery = discover(folder, exclude)
    common = dict(repo_id=repo_id, license=license, kind=kind, pretty_name=pretty_name,
                  templates_dir=templates_dir, max_shard_bytes=max_shard_bytes, progress=progress)
    if dry_run is not None:
        st = stage(discovery, dry_run, **common)
        return PublishResult(repo_id, revision, None, None, [f.path_in_repo for f in st.files], [], [],
                             {c: i.num_rows for c, i in st.configs.items()}, st.kind, Path(dry_run),
                             st.skipped, st.card, st.repaired)

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
                             {c: i.num_rows for c, i in st.configs.items()}, st.kind, None, st.skipped, st.card,
                             st.repaired)
