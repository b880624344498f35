"""A local stand-in for the Hugging Face Hub HTTP API (test-only), on 127.0.0.1 with a random port.

It implements the subset of the Hub API that ``huggingface_hub`` (2.x, read from its source) calls for
``create_repo``, ``create_branch``, ``create_commit`` / ``upload_folder`` (preupload, LFS batch + basic PUT
transfer + verify, NDJSON commit, README YAML validation), ``list_repo_tree``, ``repo_info`` /
``dataset_info``, ``list_repo_commits`` and file downloads (``resolve``):

=========================================================  =================================================
``POST /api/repos/create``                                 new repo with an initial ``.gitattributes`` commit
                                                           (409 when it exists)
``POST /api/{type}s/{repo}/branch/{branch}``               branch from ``main`` (409 when it exists)
``POST /api/validate-yaml``                                README front matter must be a YAML mapping;
                                                           ``configs`` entries need ``config_name``
``POST /api/{type}s/{repo}/preupload/{rev}``               ``uploadMode``: ``lfs`` for paths matched by the
                                                           LFS patterns of ``.gitattributes`` (parquet, png,
                                                           ...) or binary samples, else ``regular``; ``oid``
                                                           of the current remote file (sha256 for LFS files,
                                                           git blob sha1 for regular ones) as the Hub does
``POST /{type}s/{repo}.git/info/lfs/objects/batch``        basic transfer: upload + verify actions pointing
                                                           back here, no actions for objects already stored
``PUT /__lfs/{oid}`` / ``POST /__lfs/verify``              store the object (sha256 checked) / check it
``POST /api/{type}s/{repo}/commit/{rev}``                  NDJSON: header, file (base64), lfsFile,
                                                           deletedFile, deletedFolder; ``parentCommit`` check
``GET /api/{type}s/{repo}/tree/{rev}[/{path}]``            ``recursive``/``expand``; paginated with a
                                                           ``Link: <...>; rel="next"`` header (``page_size``)
``GET /api/{type}s/{repo}[/revision/{rev}]``               repo info (``sha``, ``siblings``, ``private``)
``GET /api/{type}s/{repo}/commits/{rev}``                  history, newest first
``GET|HEAD /{type}s/{repo}/resolve/{rev}/{path}``          raw bytes with ``X-Repo-Commit`` / ``ETag``
``GET|HEAD /{repo}/resolve/{rev}/{path}``,                 the same for model repos (no type prefix)
``POST /{repo}.git/info/lfs/objects/batch``
=========================================================  =================================================

Authentication: requests carry ``Authorization: Bearer <token>``; writes need a token in ``tokens``; a token
not in ``tokens`` is a 401 (``Invalid credentials in Authorization header``); private repos are invisible
(404 ``RepoNotFound``) without a valid token.  Errors carry ``X-Error-Code`` / ``X-Error-Message`` like the
Hub so ``huggingface_hub`` raises its usual typed errors.  ``fail_next`` lets a test make the next request
to a path fail with a given status and JSON body (``{authorization}`` in it is replaced by the request's
Authorization header: a server that echoes the token back).

Not covered: Xet storage (run the client with ``HF_HUB_DISABLE_XET=1``), multipart LFS, pull requests,
``get_paths_info``, gated repos, rate limits.  State is in memory.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

GITATTRIBUTES = (
    "*.parquet filter=lfs diff=lfs merge=lfs -text\n"
    "*.arrow filter=lfs diff=lfs merge=lfs -text\n"
    "*.png filter=lfs diff=lfs merge=lfs -text\n"
    "*.jpg filter=lfs diff=lfs merge=lfs -text\n"
    "*.jpeg filter=lfs diff=lfs merge=lfs -text\n"
    "*.bin filter=lfs diff=lfs merge=lfs -text\n"
).encode()


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class FileEntry:
    size: int
    content: bytes | None = None  # regular file
    sha256: str | None = None  # LFS file

    @property
    def is_lfs(self) -> bool:
        return self.sha256 is not None

    @property
    def oid(self) -> str:
        """git blob id: of the content (regular) or of the LFS pointer file (LFS), as on the Hub."""
        if self.is_lfs:
            return git_blob_sha1(lfs_pointer(self.sha256, self.size))
        return git_blob_sha1(self.content or b"")


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    date: str
    author: str
    files: dict[str, FileEntry]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)


class HubState:
    def __init__(self, tokens: dict[str, str]):
        self.tokens = dict(tokens)  # token -> user name
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str]] = []  # (method, path) log
        self.fail_next: dict[str, tuple[int, dict]] = {}  # path regex -> (status, json body)

    def commit(self, repo: Repo, branch: str, title: str, message: str, author: str,
               files: dict[str, FileEntry]) -> Commit:
        parent = repo.branches.get(branch)
        payload = json.dumps(
            [parent, title, message, sorted((p, f.oid) for p, f in files.items()), time.time_ns()]
        ).encode()
        oid = hashlib.sha1(payload).hexdigest()
        c = Commit(oid, parent, title, message, _now(), author, files)
        repo.commits[oid] = c
        repo.branches[branch] = oid
        return c

    def history(self, repo: Repo, oid: str) -> list[Commit]:
        out = []
        while oid:
            c = repo.commits[oid]
            out.append(c)
            oid = c.parent
        return out

    def files_at(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Test helper: every file's bytes at ``revision`` (LFS files resolved)."""
        repo = self.repos[(repo_type, repo_id)]
        oid = repo.branches.get(revision, revision)
        return {p: (f.content if not f.is_lfs else self.lfs[f.sha256]) for p, f in repo.commits[oid].files.items()}


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


_REPO = r"(?P<type>model|dataset|space)s/(?P<repo>[^/]+/[^/]+?)"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "HubServer"

    def log_message(self, format, *args):  # noqa: A002 - silence stderr logging
        pass

    # --- plumbing ---------------------------------------------------------------------------------------

    @property
    def state(self) -> HubState:
        return self.server.state

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes | dict | list | None = None, headers: dict | None = None,
              head: bool = False) -> None:
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            ctype = "application/json"
        else:
            data = body or b""
            ctype = "application/octet-stream"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _user(self, required: bool) -> str | None:
        auth = self.headers.get("Authorization")
        if auth is None:
            if required:
                raise HubError(401, "Authentication required", None)
            return None
        token = auth.removeprefix("Bearer ").strip()
        user = self.state.tokens.get(token)
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _repo(self, repo_type: str, repo_id: str, user: str | None) -> Repo:
        repo = self.state.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and user is None):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _rev(self, repo: Repo, revision: str) -> Commit:
        revision = unquote(revision)
        oid = repo.branches.get(revision, revision if revision in repo.commits else None)
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[oid]

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        body = self._body() if method in ("POST", "PUT") else b""
        with self.state.lock:
            self.state.requests.append((method, path))
            for pattern, (status, payload) in list(self.state.fail_next.items()):
                if re.search(pattern, path):
                    del self.state.fail_next[pattern]
                    echoed = {k: (v.replace("{authorization}", self.headers.get("Authorization", ""))
                                  if isinstance(v, str) else v) for k, v in payload.items()}
                    self._send(status, echoed)
                    return
        try:
            with self.state.lock:
                result = self._route(method, path, query, body)
        except HubError as e:
            headers = {"X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._send(e.status, {"error": e.message}, headers, head=method == "HEAD")
            return
        status, payload, headers = result
        self._send(status, payload, headers, head=method == "HEAD")

    def do_GET(self):  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self):  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self):  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self):  # noqa: N802
        self._dispatch("PUT")

    # --- routes --------------------------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict, body: bytes):
        base = self.server.url
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo(json.loads(body or b"{}"))
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(body or b"{}"))
        if method == "PUT" and path.startswith("/__lfs/"):
            oid = path.rsplit("/", 1)[1]
            if hashlib.sha256(body).hexdigest() != oid:
                raise HubError(400, "LFS object content does not match its oid")
            self.state.lfs[oid] = body
            return 200, b"", {"ETag": f'"{oid}"'}
        if method == "POST" and path == "/__lfs/verify":
            info = json.loads(body)
            obj = self.state.lfs.get(info["oid"])
            if obj is None or len(obj) != info["size"]:
                raise HubError(404, "LFS object not found")
            return 200, {"success": True}, {}
        m = (re.fullmatch(rf"/{_REPO}\.git/info/lfs/objects/batch", path)
             or re.fullmatch(r"/(?P<repo>[^/]+/[^/]+?)\.git/info/lfs/objects/batch", path))  # model repos
        if method == "POST" and m:
            user = self._user(required=True)
            self._repo(m.groupdict().get("type") or "model", m["repo"], user)
            req = json.loads(body)
            objects = []
            for obj in req["objects"]:
                item = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
                if obj["oid"] not in self.state.lfs:
                    item["actions"] = {
                        "upload": {"href": f"{base}/__lfs/{obj['oid']}", "header": {}},
                        "verify": {"href": f"{base}/__lfs/verify", "header": {}},
                    }
                objects.append(item)
            return 200, {"transfer": "basic", "objects": objects}, {}
        m = re.fullmatch(rf"/api/{_REPO}/branch/(?P<branch>.+)", path)
        if method == "POST" and m:
            user = self._user(required=True)
            repo = self._repo(m["type"], m["repo"], user)
            branch = unquote(m["branch"])
            if branch in repo.branches:
                raise HubError(409, f"Reference refs/heads/{branch} already exists")
            repo.branches[branch] = repo.branches["main"]
            return 200, {}, {}
        m = re.fullmatch(rf"/api/{_REPO}/preupload/(?P<rev>[^/]+)", path)
        if method == "POST" and m:
            user = self._user(required=True)
            repo = self._repo(m["type"], m["repo"], user)
            files = self._rev(repo, m["rev"]).files
            out = []
            for f in json.loads(body)["files"]:
                sample = base64.b64decode(f["sample"])
                lfs = self._is_lfs(files, f["path"], sample)
                remote = files.get(f["path"])
                oid = None
                if remote is not None:
                    oid = remote.sha256 if remote.is_lfs else git_blob_sha1(remote.content or b"")
                out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                            "oid": oid})
            return 200, {"files": out, "commitOid": repo.branches.get(unquote(m["rev"]))}, {}
        m = re.fullmatch(rf"/api/{_REPO}/commit/(?P<rev>[^/]+)", path)
        if method == "POST" and m:
            user = self._user(required=True)
            repo = self._repo(m["type"], m["repo"], user)
            return self._commit(repo, unquote(m["rev"]), body, user)
        m = re.fullmatch(rf"/api/{_REPO}/tree/(?P<rev>[^/]+)(?P<sub>/.*)?", path)
        if method == "GET" and m:
            user = self._user(required=False)
            repo = self._repo(m["type"], m["repo"], user)
            return self._tree(repo, m, query)
        m = re.fullmatch(rf"/api/{_REPO}/commits/(?P<rev>[^/]+)", path)
        if method == "GET" and m:
            user = self._user(required=False)
            repo = self._repo(m["type"], m["repo"], user)
            head = self._rev(repo, m["rev"])
            return 200, [
                {"id": c.oid, "title": c.title, "message": c.message, "date": c.date,
                 "authors": [{"user": c.author}]}
                for c in self.state.history(repo, head.oid)
            ], {}
        m = re.fullmatch(rf"/api/{_REPO}(?:/revision/(?P<rev>[^/]+))?", path)
        if method == "GET" and m:
            user = self._user(required=False)
            repo = self._repo(m["type"], m["repo"], user)
            c = self._rev(repo, m["rev"] or "main")
            return 200, {
                "id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": c.oid, "private": repo.private,
                "lastModified": c.date, "siblings": [{"rfilename": p} for p in sorted(c.files)],
                "tags": [], "downloads": 0, "likes": 0,
            }, {}
        m = (re.fullmatch(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", path)
             or re.fullmatch(r"/(?P<repo>[^/]+/[^/]+?)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", path))  # model repos
        if method in ("GET", "HEAD") and m:
            user = self._user(required=False)
            repo = self._repo(m.groupdict().get("type") or "model", m["repo"], user)
            c = self._rev(repo, m["rev"])
            entry = c.files.get(unquote(m["file"]))
            if entry is None:
                raise HubError(404, "Entry not found", "EntryNotFound")
            data = self.state.lfs[entry.sha256] if entry.is_lfs else (entry.content or b"")
            headers = {"X-Repo-Commit": c.oid, "ETag": f'"{entry.sha256 or entry.oid}"'}
            if entry.is_lfs:
                headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
            return 200, data, headers
        raise HubError(404, f"no route for {method} {path} in the local Hub stand-in")

    def _is_lfs(self, files: dict[str, FileEntry], path: str, sample: bytes) -> bool:
        attrs = files.get(".gitattributes")
        patterns = []
        if attrs is not None and attrs.content:
            for line in attrs.content.decode().splitlines():
                parts = line.split()
                if len(parts) > 1 and "filter=lfs" in parts[1:]:
                    patterns.append(parts[0])
        name = path.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in patterns) or b"\0" in sample

    def _create_repo(self, payload: dict):
        user = self._user(required=True)
        repo_type = payload.get("type") or "model"
        org = payload.get("organization") or user
        repo_id = f"{org}/{payload['name']}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.server.url}/{prefix}{repo_id}"
        if (repo_type, repo_id) in self.state.repos:
            # the Hub answers 409 with the repo's url (huggingface_hub reads it with exist_ok=True)
            return 409, {"error": "You already created this repo", "url": url}, {}
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = Repo(repo_type, repo_id, private)
        self.state.repos[(repo_type, repo_id)] = repo
        self.state.commit(repo, "main", "initial commit", "", user,
                          {".gitattributes": FileEntry(len(GITATTRIBUTES), content=GITATTRIBUTES)})
        return 200, {"url": url, "name": repo_id, "id": repo_id}, {}

    def _validate_yaml(self, payload: dict):
        content = payload.get("content", "")
        lines = content.splitlines()
        errors = []
        if lines and lines[0] == "---" and "---" in lines[1:]:
            end = lines[1:].index("---") + 1
            try:
                meta = yaml.safe_load("\n".join(lines[1:end])) or {}
            except yaml.YAMLError as e:
                meta, errors = {}, [{"message": f"invalid YAML: {e}"}]
            if not isinstance(meta, dict):
                errors.append({"message": "metadata must be a mapping"})
            else:
                for c in meta.get("configs") or []:
                    if not isinstance(c, dict) or "config_name" not in c:
                        errors.append({"message": f"configs entry without config_name: {c!r}"})
        if errors:
            return 400, {"errors": errors, "warnings": []}, {}
        return 200, {"errors": [], "warnings": []}, {}

    def _commit(self, repo: Repo, revision: str, body: bytes, user: str):
        if revision not in repo.branches:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        head = repo.commits[repo.branches[revision]]
        files = dict(head.files)
        header = None
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
                parent = value.get("parentCommit")
                if parent and not head.oid.startswith(parent):
                    raise HubError(412, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                data = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else \
                    value["content"].encode()
                files[value["path"]] = FileEntry(len(data), content=data)
            elif key == "lfsFile":
                obj = self.state.lfs.get(value["oid"])
                if obj is None:
                    raise HubError(400, f"LFS object {value['oid']} was not uploaded")
                files[value["path"]] = FileEntry(len(obj), sha256=value["oid"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                del files[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for p in [p for p in files if p.startswith(prefix)]:
                    del files[p]
            else:
                raise HubError(400, f"unknown commit operation {key!r}")
        if header is None:
            raise HubError(400, "commit payload without header")
        c = self.state.commit(repo, revision, header.get("summary", ""), header.get("description", ""), user, files)
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return 200, {"success": True, "commitOid": c.oid,
                     "commitUrl": f"{self.server.url}/{prefix}{repo.repo_id}/commit/{c.oid}",
                     "pullRequestUrl": None}, {}

    def _tree(self, repo: Repo, m, query: dict):
        commit = self._rev(repo, m["rev"])
        sub = unquote(m["sub"] or "").strip("/")
        recursive = query.get("recursive", ["False"])[0].lower() == "true"
        expand = query.get("expand", ["False"])[0].lower() == "true"
        prefix = f"{sub}/" if sub else ""
        if sub and sub in commit.files:
            raise HubError(400, f"{sub} is a file, not a folder")
        entries: dict[str, dict] = {}
        for p in sorted(commit.files):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):]
            parts = rest.split("/")
            # folders on the way
            for i in range(1, len(parts)):
                if not recursive and i > 1:
                    break
                folder = prefix + "/".join(parts[:i])
                entries.setdefault(folder, {"type": "directory", "path": folder, "size": 0,
                                            "oid": hashlib.sha1(folder.encode()).hexdigest()})
            if not recursive and len(parts) > 1:
                continue
            f = commit.files[p]
            e = {"type": "file", "path": p, "size": f.size, "oid": f.oid}
            if f.is_lfs:
                e["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(lfs_pointer(f.sha256, f.size))}
            if expand:
                e["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": commit.date}
            entries[p] = e
        if sub and not entries:
            raise HubError(404, f"{sub} does not exist", "EntryNotFound")
        items = [entries[k] for k in sorted(entries)]
        size = self.server.page_size
        cursor = int(query.get("cursor", ["0"])[0])
        page = items[cursor:cursor + size]
        headers = {}
        if cursor + size < len(items):
            q = f"recursive={str(recursive)}&expand={str(expand)}&cursor={cursor + size}"
            next_url = f"{self.server.url}{quote(urlsplit(self.path).path)}?{q}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        return 200, page, headers


class HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tokens: dict[str, str], page_size: int = 50):
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = HubState(tokens)
        self.page_size = page_size
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "HubServer":
        self._thread = threading.Thread(target=self.serve_forever, name="hub-stand-in", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
