"""A small stand-in for the Hugging Face Hub, so the Hub round trip is tested for real, offline.

It speaks the part of the Hub's HTTP protocol that ``huggingface_hub`` (2.x) uses to create a
repo, commit files and download them again, on 127.0.0.1:

=======================================================  ===========================================
``POST /api/repos/create``                               create a model repo (initial commit with
                                                         ``.gitattributes``); 409 if it exists
``GET  /api/models/{repo}[/revision/{rev}]``             repo info: ``sha``, ``siblings``, ``private``
``GET  /api/models/{repo}/tree/{rev}[/{path}]``          tree listing (``recursive`` query parameter)
``POST /api/models/{repo}/preupload/{rev}``              every file "regular" (base64 in the commit:
                                                         no LFS, no Xet), with the stored blob's oid
``POST /api/models/{repo}/commit/{rev}``                 NDJSON commit: header, ``file``,
                                                         ``deletedFile``, ``deletedFolder``
``POST /api/models/{repo}/branch/{branch}``              create a branch (``startingPoint``)
``POST /api/validate-yaml``                              the model card's YAML must parse
``GET  /api/whoami-v2``                                  the token's user
``HEAD|GET /{repo}/resolve/{rev}/{path}``                a file, with ``ETag`` (git blob sha1),
                                                         ``X-Repo-Commit`` and ``Content-Length``
=======================================================  ===========================================

Revisions: every commit gets a new 40-hex sha; branches (``main`` first) point at commits and a
revision resolves as a branch name or a full sha. Errors carry the ``X-Error-Code`` header
(``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) that ``huggingface_hub`` turns into
its exceptions.

Auth: one valid token (``HubServer.token``) for the user ``HubServer.user``. Writing needs it
(401 otherwise) and is allowed only in that user's namespace (403 elsewhere); reading a private
repo needs it too (404, as the Hub answers). Failures are simulated with ``server.fail``, e.g.
``server.fail["commit"] = 500`` or ``server.fail["create"] = 403``.

Every request body is read in full (``Content-Length`` or chunked). Each connection serves one
request (HTTP/1.0), so a stopped server really is unreachable: ``stop()`` then ``start()`` again
on the same port, keeping the repos.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha(data: bytes) -> str:
    """What ``git hash-object`` prints: the blob oid the Hub sends as a regular file's ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    sha: str
    message: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit sha
    commits: dict[str, Commit] = field(default_factory=dict)  # sha -> commit

    def resolve(self, revision: str) -> Commit | None:
        sha = self.branches.get(revision, revision)
        return self.commits.get(sha)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class HubServer:
    """The server and its state. ``url`` is the endpoint to put in ``HF_ENDPOINT``."""

    def __init__(self, port: int = 0, token: str = "hf_test_0123456789abcdefABCDEF", user: str = "tester"):
        self.port, self.token, self.user = port, token, user
        self.repos: dict[str, Repo] = {}
        self.fail: dict[str, int] = {}  # route name ("create", "preupload", "commit", "resolve", ...) -> status
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status), never headers
        self.authorized_requests = 0  # requests that carried the valid token
        self._lock = threading.RLock()
        self._counter = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "HubServer":
        if self._httpd is not None:
            return self
        handler = type("Handler", (_Handler,), {"hub": self})
        ThreadingHTTPServer.allow_reuse_address = True
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        self._httpd = self._thread = None

    def reset(self) -> None:
        with self._lock:
            self.repos.clear()
            self.fail.clear()
            self.requests.clear()
            self.authorized_requests = 0

    # ------------------------------------------------------------------ inspection for tests

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        commit = self.repos[repo_id].resolve(revision)
        return dict(commit.files)

    def head(self, repo_id: str, revision: str = "main") -> str:
        return self.repos[repo_id].branches[revision]

    def stored_blobs(self):
        """Every file of every commit of every repo, for grepping."""
        for repo in self.repos.values():
            for commit in repo.commits.values():
                yield from commit.files.items()

    # ------------------------------------------------------------------ state changes

    def _new_sha(self, payload: str) -> str:
        self._counter += 1
        return hashlib.sha1(f"{self._counter}:{payload}".encode()).hexdigest()

    def _commit(self, repo: Repo, branch: str, files: dict[str, bytes], message: str) -> Commit:
        commit = Commit(self._new_sha(repo.repo_id + message), message, files)
        repo.commits[commit.sha] = commit
        repo.branches[branch] = commit.sha
        return commit


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.0"
    server_version = "FakeHub/1.0"

    def log_message(self, format, *args):  # quiet: the server keeps its own request log
        pass

    # ------------------------------------------------------------------ plumbing

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {self.hub.token}"

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        with self.hub._lock:
            self.hub.requests.append((self.command, self.path, status))

    def _json(self, status: int, data, headers: dict | None = None):
        self._send(status, json.dumps(data).encode(), headers)

    def _dispatch(self):
        body = self._body()  # always read the whole body, even for a request that is refused
        try:
            with self.hub._lock:
                if self._authorized():
                    self.hub.authorized_requests += 1
                self._route(urlsplit(self.path), body)
        except HubError as error:
            headers = dict(error.headers)
            if error.code:
                headers["X-Error-Code"] = error.code
            headers["X-Error-Message"] = error.message
            self._json(error.status, {"error": error.message}, headers)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    # ------------------------------------------------------------------ routing

    API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<action>revision|tree|preupload|commit|branch)"
                     r"/(?P<rev>[^/]+)(?:/(?P<path>.*))?)?$")
    RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")

    def _route(self, url, body: bytes):
        path, query = url.path, parse_qs(url.query)
        if path == "/api/repos/create" and self.command == "POST":
            return self._create(json.loads(body or b"{}"))
        if path == "/api/validate-yaml" and self.command == "POST":
            return self._validate_yaml(json.loads(body or b"{}"))
        if path == "/api/whoami-v2" and self.command == "GET":
            self._require_token()
            return self._json(200, {"type": "user", "name": self.hub.user, "orgs": [],
                                    "auth": {"type": "access_token", "accessToken": {"role": "write"}}})
        if match := self.API.match(path):
            repo_id, action = match["repo"], match["action"]
            rev = unquote(match["rev"]) if match["rev"] else None
            sub = unquote(match["path"] or "")
            if action is None or action == "revision":
                if self.command == "GET":
                    return self._info(repo_id, rev if action else "main")
            elif action == "tree" and self.command == "GET":
                recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                return self._tree(repo_id, rev, sub, recursive)
            elif action == "preupload" and self.command == "POST":
                return self._preupload(repo_id, rev, json.loads(body or b"{}"))
            elif action == "commit" and self.command == "POST":
                return self._commit(repo_id, rev, body, query)
            elif action == "branch" and self.command == "POST":
                return self._branch(repo_id, rev, json.loads(body or b"{}"))
        if (match := self.RESOLVE.match(path)) and self.command in ("GET", "HEAD"):
            return self._resolve(match["repo"], unquote(match["rev"]), unquote(match["path"]))
        raise HubError(404, f"no route for {self.command} {path}")

    # ------------------------------------------------------------------ checks

    def _maybe_fail(self, route: str):
        status = self.hub.fail.get(route)
        if status:
            raise HubError(status, f"simulated failure of {route} (HTTP {status})")

    def _require_token(self):
        if not self._authorized():
            raise HubError(401, "Invalid credentials in Authorization header")

    def _require_write(self, repo_id: str):
        self._require_token()
        if repo_id.split("/")[0] != self.hub.user:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")

    def _readable_repo(self, repo_id: str) -> Repo:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized()):
            raise HubError(404, "Repository not found", code="RepoNotFound")
        return repo

    def _revision(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return commit

    # ------------------------------------------------------------------ endpoints

    def _create(self, payload: dict):
        self._maybe_fail("create")
        namespace = payload.get("organization") or self.hub.user
        repo_id = f"{namespace}/{payload['name']}"
        if payload.get("type", "model") not in (None, "model"):
            raise HubError(400, "this test server only hosts model repos")
        self._require_write(repo_id)
        if repo_id in self.hub.repos:  # the Hub's 409 carries the url too: create_repo(exist_ok=True) reads it
            return self._json(409, {"error": "You already created this model repo", "url": f"{self.hub.url}/{repo_id}"},
                              {"X-Error-Message": "You already created this model repo"})
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = self.hub.repos[repo_id] = Repo(repo_id, private)
        self.hub._commit(repo, "main", {".gitattributes": GITATTRIBUTES}, "initial commit")
        self._json(200, {"url": f"{self.hub.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def _validate_yaml(self, payload: dict):
        content = payload.get("content", "")
        errors = []
        if content.startswith("---"):
            try:
                yaml.safe_load(content.split("---")[1])
            except yaml.YAMLError as error:
                errors.append({"message": f"invalid YAML: {error}"})
        self._json(400 if errors else 200, {"errors": errors, "warnings": []})

    def _info(self, repo_id: str, revision: str):
        self._maybe_fail("info")
        repo = self._readable_repo(repo_id)
        commit = self._revision(repo, revision)
        siblings = [{"rfilename": path, "size": len(data), "blobId": git_blob_sha(data)}
                    for path, data in sorted(commit.files.items())]
        self._json(200, {"id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0], "sha": commit.sha,
                         "private": repo.private, "disabled": False, "gated": False, "tags": [],
                         "siblings": siblings, "lastModified": "2025-01-01T00:00:00.000Z"})

    def _tree(self, repo_id: str, revision: str, prefix: str, recursive: bool):
        repo = self._readable_repo(repo_id)
        commit = self._revision(repo, revision)
        prefix = prefix.strip("/")
        base = f"{prefix}/" if prefix else ""
        entries, folders = [], set()
        for path, data in sorted(commit.files.items()):
            if not path.startswith(base):
                continue
            parts = path[len(base):].split("/")
            for depth in range(1, len(parts)):  # the folders on the way
                folder = base + "/".join(parts[:depth])
                if (recursive or depth == 1) and folder not in folders:
                    folders.add(folder)
                    entries.append({"type": "directory", "path": folder, "oid": git_blob_sha(folder.encode()),
                                    "size": 0})
            if recursive or len(parts) == 1:
                entries.append({"type": "file", "path": path, "size": len(data), "oid": git_blob_sha(data)})
        if prefix and not entries:
            raise HubError(404, f"{prefix} does not exist", code="EntryNotFound")
        self._json(200, entries)

    def _preupload(self, repo_id: str, revision: str, payload: dict):
        self._maybe_fail("preupload")
        self._require_write(repo_id)
        repo = self._readable_repo(repo_id)
        commit = self._revision(repo, revision)
        files = []
        for entry in payload.get("files", []):
            existing = commit.files.get(entry["path"])
            files.append({"path": entry["path"], "uploadMode": "regular", "shouldIgnore": False,
                          "oid": git_blob_sha(existing) if existing is not None else None})
        self._json(200, {"files": files, "commitOid": commit.sha})

    def _commit(self, repo_id: str, branch: str, body: bytes, query: dict):
        self._maybe_fail("commit")
        self._require_write(repo_id)
        repo = self._readable_repo(repo_id)
        if query.get("create_pr"):
            raise HubError(400, "this test server does not do pull requests")
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch}", code="RevisionNotFound")
        files = dict(repo.resolve(branch).files)
        header = None
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
                parent = value.get("parentCommit")
                if parent and parent != repo.branches[branch]:
                    raise HubError(412, "parent commit is not the head of the branch")
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, "file content must be base64")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", code="EntryNotFound")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {p: d for p, d in files.items() if not p.startswith(folder)}
            else:  # lfsFile: the preupload answer never asks for LFS
                raise HubError(400, f"this test server takes regular uploads only, got {key!r}")
        if header is None:
            raise HubError(400, "the commit has no header")
        commit = self.hub._commit(repo, branch, files, header.get("summary", ""))
        self._json(200, {"success": True, "commitOid": commit.sha, "pullRequestUrl": None,
                         "commitUrl": f"{self.hub.url}/{repo_id}/commit/{commit.sha}"})

    def _branch(self, repo_id: str, branch: str, payload: dict):
        self._require_write(repo_id)
        repo = self._readable_repo(repo_id)
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: {branch}")
        repo.branches[branch] = self._revision(repo, payload.get("startingPoint") or "main").sha
        self._json(200, {})

    def _resolve(self, repo_id: str, revision: str, path: str):
        self._maybe_fail("resolve")
        repo = self._readable_repo(repo_id)
        commit = self._revision(repo, revision)
        data = commit.files.get(path)
        if data is None:
            raise HubError(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": commit.sha})
        self._send(200, data, {"ETag": f'"{git_blob_sha(data)}"', "X-Repo-Commit": commit.sha},
                   content_type="application/octet-stream")
