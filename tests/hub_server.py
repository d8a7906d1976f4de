"""A local stand-in for the Hugging Face Hub on 127.0.0.1, serving the paths huggingface_hub
2.x requests (read in its code: HfApi.model_info, HfApi.list_repo_tree, and
hf_hub_download's HEAD then GET on the resolve URL):

  GET  /api/models/{repo}                         model info of main: {"id", "sha", "siblings"}
  GET  /api/models/{repo}/revision/{rev}          the same at a revision
  GET  /api/models/{repo}/tree/{rev}?recursive=…  the files: type, path, size, oid and, for
                                                  LFS files (the weights), lfs {oid: sha256, size}
  HEAD /{repo}/resolve/{rev}/{path}               headers X-Repo-Commit, ETag (an LFS file's
                                                  sha256, else its git blob id), Content-Length
  GET  /{repo}/resolve/{rev}/{path}               the bytes

Repos are {repo id: {commit: {path: bytes}}}; `main` names each repo's last commit. Unknown
repos, revisions and files answer 404 with the hub's X-Error-Code. Every request is recorded.
"""
from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".h5", ".msgpack", ".model")


def blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubServer(http.server.ThreadingHTTPServer):
    def __init__(self, repos: dict[str, dict[str, dict[str, bytes]]]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repos = repos
        self.requests: list[tuple[str, str]] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def commit(self, repo: str, revision: str) -> str | None:
        commits = self.repos.get(repo)
        if not commits:
            return None
        if revision == "main":
            return list(commits)[-1]
        return revision if revision in commits else None

    def __enter__(self):
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+|[^/]+)(?:/(?P<kind>revision|tree)/(?P<rev>[^/?]+))?$")
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+|[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


class _Handler(http.server.BaseHTTPRequestHandler):
    server: HubServer

    def log_message(self, *args):
        pass

    def _not_found(self, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(404)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value) -> None:
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        path = unquote(urlparse(self.path).path)
        self.server.requests.append((self.command, path))
        if match := API.match(path):
            repo, kind, rev = match["repo"], match["kind"], match["rev"] or "main"
            if repo not in self.server.repos:
                return self._not_found("RepoNotFound", f"Repository {repo} not found")
            commit = self.server.commit(repo, rev)
            if commit is None:
                return self._not_found("RevisionNotFound", f"Revision {rev} not found")
            files = self.server.repos[repo][commit]
            if kind == "tree":
                entries = []
                for name, content in sorted(files.items()):
                    entry = {"type": "file", "path": name, "size": len(content), "oid": blob_id(content)}
                    if name.endswith(LFS_SUFFIXES):
                        entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content),
                                        "pointerSize": 134}
                    entries.append(entry)
                return self._json(entries)
            return self._json({"id": repo, "modelId": repo, "sha": commit, "private": False,
                               "siblings": [{"rfilename": name} for name in sorted(files)]})
        if match := RESOLVE.match(path):
            repo, rev, name = match["repo"], match["rev"], match["path"]
            if repo not in self.server.repos:
                return self._not_found("RepoNotFound", f"Repository {repo} not found")
            commit = self.server.commit(repo, rev)
            if commit is None:
                return self._not_found("RevisionNotFound", f"Revision {rev} not found")
            content = self.server.repos[repo][commit].get(name)
            if content is None:
                return self._not_found("EntryNotFound", f"{name} does not exist at {rev}")
            etag = hashlib.sha256(content).hexdigest() if name.endswith(LFS_SUFFIXES) else blob_id(content)
            self.send_response(200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{etag}"')
            self.send_header("Content-Length", str(len(content)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(content)
            return None
        return self._not_found("EntryNotFound", f"no route for {path}")

    do_GET = _handle
    do_HEAD = _handle
