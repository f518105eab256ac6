"""A fake Hugging Face Hub on loopback: a real HTTP server for the calls our publishing makes.

It speaks the routes that the installed huggingface_hub uses to create a repo and a branch, validate a
card, pre-upload LFS files (basic transfer), commit (NDJSON, with `parentCommit` and `create_pr`), list
trees and path infos, and serve files (HEAD, GET, Range) so that `datasets.load_dataset` reads a repo
back. Unknown routes answer 404 and are kept in `unknown` so a test can fail on them.

Point a client at it with `HF_ENDPOINT=fake.url` and `HF_HUB_DISABLE_XET=1` (the fake has no Xet CAS).
Tests read the stored repo back with `files()`, `commits()` and `lfs_uploads`, and inject errors with
`fail_next()`.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

FAKE_TOKEN = "hf_fake_token_for_tests_0123456789"  # what tests put in HF_TOKEN; it must never be stored
LFS_SUFFIXES = (".parquet", ".png", ".jpg", ".jpeg", ".webp", ".arrow", ".bin")
REGULAR_MAX_SIZE = 10 * 1024 * 1024
PREFIXES = {"dataset": "datasets/", "model": "", "space": "spaces/"}


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Blob:
    """A file in a commit: bytes kept inline (regular) or by sha256 in the LFS store."""

    size: int
    oid: str
    sha256: str | None = None
    data: bytes | None = None


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    tree: dict[str, Blob]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    refs: dict[str, str] = field(default_factory=dict)


@dataclass
class Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    headers: dict[str, str]
    times: int


class FakeHub:
    """State and read-back API of the fake Hub; `start()` serves it on 127.0.0.1."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.commit_store: dict[str, Commit] = {}
        self.lfs_store: dict[str, bytes] = {}
        self.lfs_uploads: list[str] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # method, path, headers (lower-cased)
        self.unknown: list[str] = []
        self._failures: list[Failure] = []
        self._counter = itertools.count(1)
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake hub first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # ---- read-back API for tests ----

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> dict[str, bytes]:
        """Every file of `revision` with its full content (LFS files resolved)."""
        commit = self.commit_store[self.repos[(repo_type, repo_id)].refs[revision]]
        return {path: self._content(blob) for path, blob in commit.tree.items()}

    def commits(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> list[Commit]:
        """The history of `revision`, newest first."""
        oid: str | None = self.repos[(repo_type, repo_id)].refs[revision]
        history = []
        while oid is not None:
            history.append(self.commit_store[oid])
            oid = self.commit_store[oid].parent
        return history

    def fail_next(self, method: str, path_regex: str, status: int, headers: dict[str, str] | None = None,
                  times: int = 1) -> None:
        """Answer the next `times` matching requests with `status` (e.g. 429 with Retry-After)."""
        self._failures.append(Failure(method, re.compile(path_regex), status, headers or {}, times))

    # ---- state helpers used by the handler ----

    def _content(self, blob: Blob) -> bytes:
        return blob.data if blob.data is not None else self.lfs_store[blob.sha256 or ""]

    def _take_failure(self, method: str, path: str) -> Failure | None:
        with self._lock:
            for failure in self._failures:
                if failure.method == method and failure.pattern.search(path) and failure.times > 0:
                    failure.times -= 1
                    return failure
        return None

    def _new_commit(self, parent: str | None, title: str, tree: dict[str, Blob]) -> Commit:
        oid = hashlib.sha1(f"{next(self._counter)}:{title}".encode()).hexdigest()
        commit = Commit(oid, parent, title, tree)
        self.commit_store[oid] = commit
        return commit

    def _create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_type, repo_id, private)
        repo.refs["main"] = self._new_commit(None, "initial commit", {}).oid
        self.repos[(repo_type, repo_id)] = repo
        return repo


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


REPO = r"(?P<type>datasets|models|spaces)/(?P<repo>[^/]+/[^/]+?)"
GIT_REPO = r"^/(?P<prefix>datasets/|spaces/)?(?P<repo>[^/]+/[^/]+)"
ROUTES: list[tuple[tuple[str, ...], re.Pattern[str], str]] = [
    (methods, re.compile(p), name)
    for methods, p, name in [
        (("GET",), r"^/api/whoami-v2$", "whoami"),
        (("GET",), r"^/api/agent-harnesses$", "agent_harnesses"),
        (("POST",), r"^/api/repos/create$", "create_repo"),
        (("POST",), r"^/api/validate-yaml$", "validate_yaml"),
        (("GET",), rf"^/api/{REPO}(?:/revision/(?P<rev>.+))?$", "repo_info"),
        (("POST",), rf"^/api/{REPO}/branch/(?P<rev>.+)$", "create_branch"),
        (("POST",), rf"^/api/{REPO}/preupload/(?P<rev>.+)$", "preupload"),
        (("POST",), rf"^/api/{REPO}/commit/(?P<rev>.+)$", "commit"),
        (("GET",), rf"^/api/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$", "tree"),
        (("POST",), rf"^/api/{REPO}/paths-info/(?P<rev>.+)$", "paths_info"),
        (("POST",), rf"{GIT_REPO}\.git/info/lfs/objects/batch$", "lfs_batch"),
        (("PUT",), r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$", "lfs_upload"),
        (("GET", "HEAD"), rf"{GIT_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", "resolve"),
    ]
]


class _Handler(BaseHTTPRequestHandler):
    """Routes one request to a `do_<route>` method; answers JSON errors the way the Hub does."""

    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read `fake.requests` instead
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        self.fake.requests.append((method, self.path, {k.lower(): v for k, v in self.headers.items()}))
        failure = self.fake._take_failure(method, split.path)
        if failure is not None:
            self._json({"error": f"injected {failure.status}"}, failure.status, failure.headers)
            return
        for methods, pattern, name in ROUTES:
            match = pattern.match(split.path)
            if method in methods and match:
                args = {k: unquote(v) if v is not None else v for k, v in match.groupdict().items()}
                try:
                    with self.fake._lock:
                        getattr(self, f"do_{name}")(**args)
                except HubError as err:
                    headers = {"X-Error-Code": err.code} if err.code else {}
                    self._json({"error": err.message}, err.status, headers)
                return
        self.fake.unknown.append(f"{method} {self.path}")
        self._json({"error": f"fake hub has no route {method} {split.path}"}, 404)

    # ---- responses ----

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        headers = {"Content-Type": "application/json", **(headers or {})}
        self._send(status, json.dumps(payload).encode(), headers)

    # ---- lookups ----

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        key = ({"datasets": "dataset", "models": "model", "spaces": "space"}[repo_type], repo_id)
        if key not in self.fake.repos:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return self.fake.repos[key]

    def _commit(self, repo: Repo, rev: str) -> Commit:
        if rev in repo.refs:
            return self.fake.commit_store[repo.refs[rev]]
        if rev in self.fake.commit_store:
            return self.fake.commit_store[rev]
        raise HubError(404, f"Revision {rev} not found", "RevisionNotFound")

    def _entry(self, path: str, blob: Blob) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "path": path, "size": blob.size, "oid": blob.oid}
        if blob.sha256 is not None:
            entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": 134}
        return entry

    @staticmethod
    def _folder(path: str) -> dict[str, Any]:
        return {"type": "directory", "path": path, "oid": git_oid(path.encode()), "size": 0}

    @staticmethod
    def _folders(tree: dict[str, Blob]) -> set[str]:
        return {"/".join(p.split("/")[:i]) for p in tree for i in range(1, p.count("/") + 1)}

    # ---- routes ----

    def do_whoami(self) -> None:
        self._json({"type": "user", "name": "tester", "orgs": [], "auth": {"type": "access_token"}})

    def do_agent_harnesses(self) -> None:
        self._json({"standardEnvVars": [], "harnesses": {}})

    def do_create_repo(self) -> None:
        payload = json.loads(self.body)
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or 'tester'}/{payload['name']}"
        url = f"{self.fake.url}/{PREFIXES[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.fake.repos:
            self._json({"error": "You already created this repo", "url": url}, 409)
            return
        self.fake._create_repo(repo_type, repo_id, payload.get("visibility") == "private")
        self._json({"url": url, "name": repo_id})

    def do_validate_yaml(self) -> None:
        self._json({"errors": [], "warnings": []})

    def do_repo_info(self, type: str, repo: str, rev: str | None) -> None:
        r = self._repo(type, repo)
        commit = self._commit(r, rev or "main")
        self._json({"id": r.repo_id, "_id": r.repo_id, "sha": commit.oid, "private": r.private,
                    "siblings": [{"rfilename": p} for p in sorted(commit.tree)], "tags": [],
                    "lastModified": "2025-01-01T00:00:00.000Z", "disabled": False, "gated": False})

    def do_create_branch(self, type: str, repo: str, rev: str) -> None:
        r = self._repo(type, repo)
        if rev in r.refs:
            raise HubError(409, f"Branch {rev} already exists")
        start = json.loads(self.body or b"{}").get("startingPoint") or "main"
        r.refs[rev] = self._commit(r, start).oid
        self._json({})

    def do_preupload(self, type: str, repo: str, rev: str) -> None:
        tree = self._commit(self._repo(type, repo), rev).tree
        files = []
        for f in json.loads(self.body)["files"]:
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > REGULAR_MAX_SIZE
            blob = tree.get(f["path"])
            oid = None if blob is None else (blob.sha256 if blob.sha256 and lfs else blob.oid)
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                          "shouldIgnore": False, "oid": oid})
        self._json({"files": files})

    def do_lfs_batch(self, prefix: str | None, repo: str) -> None:
        objects = []
        for obj in json.loads(self.body)["objects"]:
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.fake.lfs_store:
                entry["actions"] = {"upload": {"href": f"{self.fake.url}/lfs-upload/{obj['oid']}"}}
            objects.append(entry)
        self._json({"transfer": "basic", "objects": objects})

    def do_lfs_upload(self, oid: str) -> None:
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, "LFS object does not match its oid")
        self.fake.lfs_store[oid] = self.body
        self.fake.lfs_uploads.append(oid)
        self._send(200, b"", {})

    def do_commit(self, type: str, repo: str, rev: str) -> None:
        r = self._repo(type, repo)
        head = self._commit(r, rev)
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        if header.get("parentCommit") and header["parentCommit"] != head.oid:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        tree = dict(head.tree)
        for line in lines:
            self._apply(tree, line["key"], line["value"])
        commit = self.fake._new_commit(head.oid, header["summary"], tree)
        pr_url = None
        if self.query.get("create_pr") == "1":
            number = 1 + sum(ref.startswith("refs/pr/") for ref in r.refs)
            r.refs[f"refs/pr/{number}"] = commit.oid
            pr_url = f"{self.fake.url}/{PREFIXES[r.repo_type]}{r.repo_id}/discussions/{number}"
        else:
            r.refs[rev] = commit.oid
        self._json({"success": True, "commitOid": commit.oid, "pullRequestUrl": pr_url,
                    "commitUrl": f"{self.fake.url}/{PREFIXES[r.repo_type]}{r.repo_id}/commit/{commit.oid}"})

    def _apply(self, tree: dict[str, Blob], key: str, value: dict[str, Any]) -> None:
        if key == "file":
            data = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else value[
                "content"].encode()
            tree[value["path"]] = Blob(len(data), git_oid(data), data=data)
        elif key == "lfsFile":
            data = self.fake.lfs_store.get(value["oid"])
            if data is None:
                raise HubError(422, f"LFS object {value['oid']} was never uploaded")
            pointer = ("version https://git-lfs.github.com/spec/v1\n"
                       f"oid sha256:{value['oid']}\nsize {len(data)}\n")
            tree[value["path"]] = Blob(len(data), git_oid(pointer.encode()), sha256=value["oid"])
        elif key == "deletedFile":
            if tree.pop(value["path"], None) is None:
                raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
        elif key == "deletedFolder":
            for path in [p for p in tree if p.startswith(value["path"].rstrip("/") + "/")]:
                del tree[path]
        elif key != "header":
            raise HubError(400, f"fake hub does not support commit operation {key}")

    def do_tree(self, type: str, repo: str, rev: str, path: str | None) -> None:
        tree = self._commit(self._repo(type, repo), rev).tree
        prefix = (path or "").strip("/")
        recursive = self.query.get("recursive") in ("1", "true", "True")
        if prefix and prefix not in self._folders(tree):
            raise HubError(404, f"Path {prefix} not found", "EntryNotFound")
        base = prefix + "/" if prefix else ""
        entries = []
        for folder in sorted(self._folders(tree)):
            rest = folder[len(base):]
            if folder.startswith(base) and rest and (recursive or "/" not in rest):
                entries.append(self._folder(folder))
        for p, blob in sorted(tree.items()):
            rest = p[len(base):]
            if p.startswith(base) and (recursive or "/" not in rest):
                entries.append(self._entry(p, blob))
        self._json(entries)

    def do_paths_info(self, type: str, repo: str, rev: str) -> None:
        tree = self._commit(self._repo(type, repo), rev).tree
        form = parse_qs(self.body.decode())
        folders = self._folders(tree)
        entries = []
        for p in form.get("paths", []):
            p = p.strip("/")
            if p in tree:
                entries.append(self._entry(p, tree[p]))
            elif p in folders:
                entries.append(self._folder(p))
        self._json(entries)

    def do_resolve(self, prefix: str | None, repo: str, rev: str, path: str) -> None:
        repo_type = (prefix or "models/").rstrip("/")
        commit = self._commit(self._repo(repo_type, repo), rev)
        if path not in commit.tree:
            raise HubError(404, f"Entry {path} not found", "EntryNotFound")
        blob = commit.tree[path]
        data = self.fake._content(blob)
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{blob.oid}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if blob.sha256 is not None:
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(blob.size)})
        match = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if match:
            start, end = int(match[1]), int(match[2]) if match[2] else len(data) - 1
            chunk = data[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{start + len(chunk) - 1}/{len(data)}"
            self._send(206, chunk, headers)
        else:
            self._send(200, data, headers)


def resolve_url(hub: FakeHub, repo_id: str, path: str, revision: str = "main") -> str:
    """The URL under which the fake hub serves one file of a dataset repo."""
    return f"{hub.url}/datasets/{repo_id}/resolve/{quote(revision, safe='')}/{path}"
