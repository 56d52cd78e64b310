"""A loopback Hugging Face Hub: real huggingface_hub clients talk to it, faults are switches.

It answers what huggingface_hub 2.x and localq ask of the Hub:

- ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}``: model info; with
  ``blobs=true`` each sibling has ``size``, ``blobId`` and, for LFS files, ``lfs``
  ``{sha256, size, pointerSize}``.
- ``GET /api/models/{repo}/tree/{rev}[/{path}]``: the file listing with sizes and LFS ids.
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: small (git) files are answered directly;
  LFS files redirect (302) to a "CDN" on another host name (``localhost`` against the
  Hub's ``127.0.0.1``) carrying ``X-Repo-Commit``, ``X-Linked-Etag`` and ``X-Linked-Size``,
  because huggingface_hub follows only same-host redirects for metadata and reads them
  from the redirect itself.
- ``GET /cdn/...``: the bytes, with ``Range`` support (206, 416).

Fault switches (:meth:`FakeHub.fault`): ``status`` (answer 401/404/500... instead),
``cut`` (close the connection after a byte offset), ``stall`` (stop sending at an offset
until :meth:`FakeHub.release`), ``corrupt`` (flip the byte at an offset), ``size``
(claim another size in the metadata). Every body sent is logged with its range, bytes
and timing (:meth:`FakeHub.transfers`), which is how tests see what was re-sent and at
what rate.

Also here: :func:`build_fixture_files`, the GGUF files the tests serve, made from the
real SmolLM2 model with the ``gguf`` package, and :func:`add_test_repos`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin")
SEND_CHUNK = 256 * 1024

GGUF_REPO = "test-org/SmolLM2-135M-Instruct-GGUF"
TINY_REPO = "test-org/SmolLM2-tiny-GGUF"
SOURCE_REPO = "test-org/SmolLM2-135M-Instruct"
PRIVATE_REPO = "test-org/private-GGUF"
# MLX quants the test Hub serves (no catalog entry names SmolLM2 MLX repositories)
MLX_REPOS = {"mlx-4bit": "test-org/SmolLM2-135M-Instruct-mlx-4bit", "mlx-8bit": "test-org/SmolLM2-135M-Instruct-mlx-8bit"}
PRIVATE_TOKEN = "hf_test_secret_token"


# Listing entries no Hub should send: paths out of the repository, control characters,
# impossible sizes and digests (FakeHub.list_hostile).
_SHA = "ab" * 32
HOSTILE_SIBLINGS = [
    {"rfilename": name, "size": 1000, "blobId": "0" * 40, "lfs": {"sha256": _SHA, "size": 1000, "pointerSize": 130}}
    for name in ("../../../../tmp/x-Q5_K_M.gguf", "/tmp/x-Q5_K_M.gguf", "sub/../../../x-Q5_K_M.gguf",
                 "\\server\\x-Q5_K_M.gguf", "C:x-Q5_K_M.gguf", "nul\x00x-Q5_K_M.gguf", "esc\x1b[2Jx-Q5_K_M.gguf",
                 "back\\slash-Q5_K_M.gguf", "./x-Q5_K_M.gguf")
] + [
    {"rfilename": "bad-sha-IQ4_XS.gguf", "size": 1000, "blobId": "0" * 40,
     "lfs": {"sha256": "not-a-digest", "size": 1000, "pointerSize": 130}},
    {"rfilename": "negative-IQ3_M.gguf", "size": -5, "blobId": "0" * 40,
     "lfs": {"sha256": _SHA, "size": -5, "pointerSize": 130}},
    {"rfilename": "absurd-Q2_K.gguf", "size": 2**60, "blobId": "0" * 40,
     "lfs": {"sha256": _SHA, "size": 2**60, "pointerSize": 130}},
]


# --- the served files --------------------------------------------------------


@dataclass
class HubFile:
    """A file of a fake repository: its bytes (a path or in memory) and what the Hub says of them."""

    path: str
    source: Path | bytes
    size: int
    sha256: str
    git_oid: str
    lfs: bool
    pointer_size: int = 0

    @classmethod
    def make(cls, path: str, source: Path | bytes) -> "HubFile":
        digest = hashlib.sha256()
        if isinstance(source, bytes):
            digest.update(source)
            size = len(source)
        else:
            size = source.stat().st_size
            with open(source, "rb") as f:
                while chunk := f.read(4 << 20):
                    digest.update(chunk)
        sha = digest.hexdigest()
        lfs = path.endswith(LFS_SUFFIXES)
        if lfs:
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {size}\n".encode()
            git_oid = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()
            return cls(path, source, size, sha, git_oid, True, len(pointer))
        data = source if isinstance(source, bytes) else source.read_bytes()
        return cls(path, source, size, sha, hashlib.sha1(b"blob %d\0" % size + data).hexdigest(), False)

    def read(self, start: int, length: int) -> bytes:
        if isinstance(self.source, bytes):
            return self.source[start:start + length]
        with open(self.source, "rb") as f:
            f.seek(start)
            return f.read(length)


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, HubFile]
    commit: str
    token: str | None = None   # set: every request needs "Authorization: Bearer <token>"
    # gated, as meta-llama's: the listing answers anyone; files need the token of an account
    # that accepted the licence (401 with no token, 403 with another one)
    gated: bool = False
    accepted_token: str | None = None


@dataclass
class Fault:
    kind: str                  # status, cut, stall, corrupt, size
    path: str = "*"            # fnmatch pattern of file paths; "api" for model info
    times: int | None = 1      # None: every time
    status: int = 500
    at: int = 0                # byte offset where cut, stall and corrupt happen
    size: int = 0              # for "size": the size to claim
    on: str = "resolve"        # for "status": answer it on "resolve" (the Hub) or on "cdn"

    def use(self) -> None:
        if self.times is not None:
            self.times -= 1

    @property
    def live(self) -> bool:
        return self.times is None or self.times > 0


@dataclass
class Transfer:
    """One response body: which file, from which offset, how many bytes, when."""

    path: str
    host: str
    start: int
    status: int
    sent: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    range: str | None = None

    @property
    def rate(self) -> float:
        """Bytes per second, measured here on the server."""
        end = self.finished or time.monotonic()
        return self.sent / (end - self.started) if end > self.started else 0.0


# --- the server --------------------------------------------------------------


class FakeHub:
    """The fake Hub: repositories, fault switches and a transfer log, served on 127.0.0.1."""

    def __init__(self):
        self.repos: dict[str, HubRepo] = {}
        self.faults: list[Fault] = []
        self.log: list[Transfer] = []
        self.requests: list[tuple[str, str, dict]] = []   # (method, path, headers in lower case)
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.server: ThreadingHTTPServer | None = None
        self.port = 0
        self.extra_siblings: dict[str, list[dict]] = {}   # repo -> raw listing entries (list_hostile)
        self.head_without_redirect = False                  # answer HEAD on the Hub, redirect only the GET

    # setup
    def add_repo(self, repo_id: str, files: dict[str, Path | bytes | HubFile], token: str | None = None,
                 gated: bool = False) -> HubRepo:
        made = {p: f if isinstance(f, HubFile) else HubFile.make(p, f) for p, f in files.items()}
        commit = hashlib.sha1(repo_id.encode() + b"".join(f.sha256.encode() for f in made.values())).hexdigest()
        repo = HubRepo(repo_id, made, commit, None if gated else token, gated, token if gated else None)
        self.repos[repo_id] = repo
        return repo

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn(self) -> str:
        return f"http://localhost:{self.port}"

    def start(self) -> "FakeHub":
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True, name="fake-hub").start()
        return self

    def stop(self) -> None:
        self.released.set()
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # switches
    def fault(self, kind: str, path: str = "*", times: int | None = 1, **options) -> Fault:
        """Add a fault: ``status`` (status=401..., on="resolve" or "cdn"), ``cut``/``stall``/``corrupt``
        (at=offset), ``size`` (size=N)."""
        fault = Fault(kind, path, times, **options)
        with self.lock:
            self.faults.append(fault)
        return fault

    def list_hostile(self, repo_id: str, entries: list[dict] | None = None) -> list[dict]:
        """Make ``repo_id``'s listing also name ``entries`` (raw siblings; default HOSTILE_SIBLINGS)."""
        entries = HOSTILE_SIBLINGS if entries is None else entries
        with self.lock:
            self.extra_siblings[repo_id] = list(entries)
        return entries

    def release(self) -> None:
        """Let stalled bodies go on (they then close their connection)."""
        self.released.set()

    def reset(self) -> None:
        """No faults, an empty log; stalled bodies are let go."""
        self.released.set()
        with self.lock:
            self.faults.clear()
            self.log.clear()
            self.requests.clear()
            self.extra_siblings.clear()
            self.head_without_redirect = False
        self.released = threading.Event()

    # what happened
    def transfers(self, path: str | None = None) -> list[Transfer]:
        with self.lock:
            return [t for t in self.log if path is None or t.path == path]

    def bytes_sent(self, path: str | None = None) -> int:
        return sum(t.sent for t in self.transfers(path))

    def file(self, repo_id: str, path: str) -> HubFile:
        return self.repos[repo_id].files[path]

    # internals used by the handler
    def take_fault(self, kind: str, path: str, covers: tuple[int, int] | None = None, on: str = "resolve") -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.kind != kind or not fault.live or not fnmatch.fnmatchcase(path, fault.path):
                    continue
                if kind == "status" and fault.on != on:
                    continue
                if covers is not None and not (covers[0] <= fault.at < covers[1]):
                    continue
                fault.use()
                return fault
        return None

    def claimed_size(self, f: HubFile) -> int:
        with self.lock:
            for fault in self.faults:
                if fault.kind == "size" and fnmatch.fnmatchcase(f.path, fault.path):
                    return fault.size
        return f.size


def _make_handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def do_HEAD(self):
            self.route(head=True)

        def do_GET(self):
            self.route(head=False)

        # routing
        def route(self, head: bool):
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.split("/")[1:]]
            query = parse_qs(url.query)
            with hub.lock:
                hub.requests.append((self.command, url.path, {k.lower(): v for k, v in self.headers.items()}))
            try:
                if parts[:2] == ["api", "models"] and len(parts) >= 4:
                    self.api(parts[2] + "/" + parts[3], parts[4:], query)
                elif parts[:1] == ["cdn"] and len(parts) >= 5:
                    self.cdn(parts[1] + "/" + parts[2], parts[3], "/".join(parts[4:]), head)
                elif len(parts) >= 5 and parts[2] == "resolve":
                    self.resolve(parts[0] + "/" + parts[1], parts[3], "/".join(parts[4:]), head)
                else:
                    self.error(404, "EntryNotFound", "no such endpoint")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def repo(self, repo_id: str, listing: bool = False) -> HubRepo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self.error(404, "RepoNotFound", f"Repository {repo_id} not found")
                return None
            if repo.gated and not listing:
                auth = self.headers.get("Authorization")
                if auth != f"Bearer {repo.accepted_token}":
                    self.error(401 if not auth else 403, "GatedRepo",
                               f"Access to model {repo_id} is restricted and you are not in the authorized list.")
                    return None
            if repo.token and self.headers.get("Authorization") != f"Bearer {repo.token}":
                self.error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have access to it and be authenticated to access it.")
                return None
            return repo

        def commit(self, repo: HubRepo, revision: str) -> str | None:
            if revision in ("main", repo.commit):
                return repo.commit
            self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None

        # endpoints
        def api(self, repo_id: str, rest: list[str], query: dict):
            fault = hub.take_fault("status", "api")
            if fault:
                return self.error(fault.status, None, f"fault {fault.status}")
            repo = self.repo(repo_id, listing=True)
            if repo is None:
                return
            revision = "main"
            if rest[:1] == ["revision"] and len(rest) >= 2:
                revision = rest[1]
            elif rest[:1] == ["tree"] and len(rest) >= 2:
                if self.commit(repo, rest[1]) is None:
                    return
                prefix = "/".join(rest[2:])
                return self.json([self.tree_entry(f) for p, f in sorted(repo.files.items())
                                  if not prefix or p.startswith(prefix.rstrip("/") + "/")])
            elif rest:
                return self.error(404, "EntryNotFound", "no such endpoint")
            commit = self.commit(repo, revision)
            if commit is None:
                return
            blobs = query.get("blobs", ["false"])[0].lower() == "true"
            siblings = [self.sibling(f, blobs) for _, f in sorted(repo.files.items())]
            siblings += hub.extra_siblings.get(repo_id, [])
            self.json({
                "_id": commit[:24], "id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0],
                "sha": commit, "private": bool(repo.token), "gated": "manual" if repo.gated else False, "disabled": False,
                "downloads": 0, "likes": 0, "tags": ["gguf"], "lastModified": "2025-01-01T00:00:00.000Z",
                "createdAt": "2025-01-01T00:00:00.000Z", "siblings": siblings,
            })

        def sibling(self, f: HubFile, blobs: bool) -> dict:
            if not blobs:
                return {"rfilename": f.path}
            size = hub.claimed_size(f)
            entry = {"rfilename": f.path, "size": size, "blobId": f.git_oid}
            if f.lfs:
                entry["lfs"] = {"sha256": f.sha256, "size": size, "pointerSize": f.pointer_size}
            return entry

        def tree_entry(self, f: HubFile) -> dict:
            size = hub.claimed_size(f)
            entry = {"type": "file", "oid": f.git_oid, "size": size, "path": f.path}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": size, "pointerSize": f.pointer_size}
            return entry

        def resolve(self, repo_id: str, revision: str, path: str, head: bool):
            fault = hub.take_fault("status", path)
            if fault:
                return self.error(fault.status, None, f"fault {fault.status}")
            repo = self.repo(repo_id)
            if repo is None:
                return
            commit = self.commit(repo, revision)
            if commit is None:
                return
            f = repo.files.get(path)
            if f is None:
                return self.error(404, "EntryNotFound", f"{path} does not exist on {revision}")
            common = {"X-Repo-Commit": commit, "ETag": f'"{f.git_oid}"'}
            if f.lfs and head and hub.head_without_redirect:   # a mirror that redirects only the GET
                self.send_response(200)
                for name, value in common.items():
                    self.send_header(name, value)
                self.send_header("X-Linked-Etag", f'"{f.sha256}"')
                self.send_header("X-Linked-Size", str(f.size))
                self.send_header("Content-Length", str(f.size))
                self.end_headers()
                return
            if f.lfs:
                location = f"{hub.cdn}/cdn/{repo_id}/{commit}/{path}"
                self.send_response(302)
                for name, value in common.items():
                    self.send_header(name, value)
                self.send_header("X-Linked-Etag", f'"{f.sha256}"')
                self.send_header("X-Linked-Size", str(f.size))
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.body(f, head, common)

        def cdn(self, repo_id: str, commit: str, path: str, head: bool):
            fault = hub.take_fault("status", path, on="cdn")
            if fault:
                return self.error(fault.status, None, f"fault {fault.status}")
            repo = hub.repos.get(repo_id)
            f = repo.files.get(path) if repo and commit == repo.commit else None
            if f is None:
                return self.error(404, None, "NoSuchKey")
            self.body(f, head, {"ETag": f'"{f.sha256}"'})

        # responses
        def body(self, f: HubFile, head: bool, headers: dict):
            start, end = 0, f.size
            requested = self.headers.get("Range")
            if requested:
                first, _, last = requested.removeprefix("bytes=").partition("-")
                start = int(first)
                end = int(last) + 1 if last else f.size
                if start >= f.size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{f.size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            status = 206 if requested else 200
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start))
            if requested:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{f.size}")
            self.end_headers()
            if head:
                return
            transfer = Transfer(f.path, self.headers.get("Host", ""), start, status, range=requested)
            with hub.lock:
                hub.log.append(transfer)
            try:
                self.send_bytes(f, start, end, transfer)
            finally:
                transfer.finished = time.monotonic()

        def send_bytes(self, f: HubFile, start: int, end: int, transfer: Transfer):
            cut = hub.take_fault("cut", f.path, (start, end))
            stall = hub.take_fault("stall", f.path, (start, end))
            corrupt = hub.take_fault("corrupt", f.path, (start, end))
            stop = min(x.at for x in (cut, stall) if x) if (cut or stall) else end
            if isinstance(f.source, Path) and not corrupt:
                with open(f.source, "rb") as src:
                    transfer.sent = self.connection.sendfile(src, start, stop - start) or 0
            else:
                pos = start
                while pos < stop:
                    chunk = bytearray(f.read(pos, min(SEND_CHUNK, stop - pos)))
                    if corrupt and pos <= corrupt.at < pos + len(chunk):
                        chunk[corrupt.at - pos] ^= 0xFF
                    self.wfile.write(chunk)
                    pos += len(chunk)
                    transfer.sent += len(chunk)
            if stop < end:
                if stall and stop == stall.at:
                    hub.released.wait(60)
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

        def json(self, data):
            raw = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(raw)

        def error(self, status: int, code: str | None, message: str):
            raw = json.dumps({"error": message}).encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(raw)

    return Handler


# --- files made from the real model ------------------------------------------


def write_gguf_copy(reader, out: Path, *, new_kv: dict | None = None, keep=None, split_max_tensors: int = 0,
                    repeat: int = 1) -> list[Path]:
    """Write the tensors of a GGUF (those ``keep(name)`` accepts) with its metadata, changed by ``new_kv``.

    With ``split_max_tensors`` the copy is a split set (``-00001-of-0000N.gguf``),
    written by gguf's own GGUFWriter as llama.cpp's gguf-split would. ``repeat``
    writes the tensors that many times (copies named ``copyN.<name>``): a big file
    for benchmarks.
    """
    import gguf

    new_kv = new_kv or {}
    arch = reader.get_field("general.architecture").contents()
    writer = gguf.GGUFWriter(out, arch, split_max_tensors=split_max_tensors)
    for f in reader.fields.values():
        if f.name == "general.architecture" or f.name.startswith("GGUF."):
            continue
        value_type = f.types[0]
        sub_type = f.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(f.name, new_kv.get(f.name, f.contents()), value_type, sub_type=sub_type)
    tensors = [t for t in reader.tensors if keep is None or keep(t.name)] * repeat
    for i, t in enumerate(tensors):
        name = t.name if i < len(tensors) // repeat else f"copy{i * repeat // len(tensors)}.{t.name}"
        writer.add_tensor_info(name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in tensors:
        writer.write_tensor_data(t.data)
    writer.close()
    return writer.format_shard_names(out)


def write_tiny_gguf(out: Path, arch: str = "clip") -> Path:
    """A small valid GGUF with one tensor (a stand-in for mmproj and imatrix sidecars)."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(out, arch)
    writer.add_name(out.stem)
    writer.add_tensor("v.weight", np.arange(256, dtype=np.float32).reshape(16, 16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def safetensors_bytes(tensors: dict[str, list[float]]) -> bytes:
    """A safetensors file of F32 vectors, written from the format's spec."""
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, values in tensors.items():
        raw = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": [len(values)], "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + data


def build_fixture_files(model: Path, out: Path) -> dict[str, Path]:
    """The GGUF files the fake Hub serves, made from the real SmolLM2 Q4_1 file.

    - ``q4_1``: the real file itself.
    - ``q8_0``: a copy with another ``general.name`` and a Q8_0 file type in its header
      (the tensors stay Q4_1: quantized either way, which is as far as localq's label
      check looks; only the bytes and the names differ, which is all a download needs).
    - ``q4_k_m``: the model as a split set of three parts, file type Q4_K_M (again Q4_1 tensors).
    - ``tiny``: the first four layers only (``block_count`` 4), about 10 MB: a real,
      small GGUF for tests that need no big file.
    - ``mmproj``/``imatrix``: small sidecar GGUFs.
    """
    import gguf

    out.mkdir(parents=True, exist_ok=True)
    reader = gguf.GGUFReader(model)
    files = {"q4_1": model}
    files["q8_0"] = write_gguf_copy(reader, out / "SmolLM2-135M-Instruct-Q8_0.gguf",
                                    new_kv={"general.name": "SmolLM2 135M Instruct (test copy)",
                                            "general.file_type": 7})[0]
    parts = write_gguf_copy(reader, out / "SmolLM2-135M-Instruct-Q4_K_M.gguf", new_kv={"general.file_type": 15},
                            split_max_tensors=-(-len(reader.tensors) // 3))
    for i, part in enumerate(parts, 1):
        files[f"q4_k_m-{i}"] = part
    layers = tuple(f"blk.{i}." for i in range(4))
    files["tiny"] = write_gguf_copy(reader, out / "SmolLM2-tiny-Q4_1.gguf", new_kv={"llama.block_count": 4},
                                    keep=lambda name: name.startswith(layers) or name == "output_norm.weight")[0]
    files["mmproj"] = write_tiny_gguf(out / "mmproj-SmolLM2-135M-Instruct-Q8_0.gguf")
    files["imatrix"] = write_tiny_gguf(out / "SmolLM2-135M-Instruct-Q4_1.imatrix.gguf", arch="llama")
    return files


def add_test_repos(hub: FakeHub, files: dict[str, Path], catalog_entry=None) -> None:
    """The repositories tests pull from (and the catalog's smollm2:135m repositories, when given)."""
    readme = b"# test repository\n"
    gguf_files = {
        "README.md": readme,
        ".gitattributes": b"*.gguf filter=lfs diff=lfs merge=lfs -text\n",
        "SmolLM2-135M-Instruct-Q4_1.gguf": HubFile.make("SmolLM2-135M-Instruct-Q4_1.gguf", files["q4_1"]),
        "SmolLM2-135M-Instruct-Q8_0.gguf": HubFile.make("SmolLM2-135M-Instruct-Q8_0.gguf", files["q8_0"]),
        "mmproj-SmolLM2-135M-Instruct-Q8_0.gguf": files["mmproj"],
        "SmolLM2-135M-Instruct-Q4_1.imatrix.gguf": files["imatrix"],
    }
    for key in ("q4_k_m-1", "q4_k_m-2", "q4_k_m-3"):
        path = files[key].name
        gguf_files[path] = HubFile.make(path, files[key])
    hub.add_repo(GGUF_REPO, gguf_files)
    hub.add_repo(TINY_REPO, {"README.md": readme, "SmolLM2-tiny-Q4_1.gguf": files["tiny"]})
    hub.add_repo(PRIVATE_REPO, {"SmolLM2-tiny-Q4_1.gguf": files["tiny"]}, token=PRIVATE_TOKEN)

    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "torch_dtype": "bfloat16",
              "hidden_size": 4, "num_hidden_layers": 1}
    index = {"metadata": {"total_size": 32}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                                             "b": "model-00002-of-00002.safetensors"}}
    source = {
        "README.md": readme,
        "config.json": json.dumps(config).encode(),
        "generation_config.json": b'{"bos_token_id": 1}',
        "tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE"}}',
        "tokenizer_config.json": b'{"model_max_length": 8192}',
        "model-00001-of-00002.safetensors": safetensors_bytes({"a": [1.0, 2.0, 3.0, 4.0]}),
        "model-00002-of-00002.safetensors": safetensors_bytes({"b": [5.0, 6.0, 7.0, 8.0]}),
        "model.safetensors.index.json": json.dumps(index).encode(),
        "consolidated.safetensors": safetensors_bytes({"a": [1.0], "b": [2.0]}),
        "pytorch_model.bin": b"\x80\x02not really a pickle",
    }
    hub.add_repo(SOURCE_REPO, source)
    if catalog_entry is not None:
        hub.add_repo(catalog_entry.gguf_repo, gguf_files)
        hub.add_repo(catalog_entry.source_repo, source)
    for quant, repo in {**MLX_REPOS, **(catalog_entry.mlx_repos if catalog_entry else {})}.items():
        bits = int(quant.removeprefix("mlx-").removesuffix("bit"))
        mlx_config = {**config, "quantization": {"group_size": 64, "bits": bits}}
        hub.add_repo(repo, {
            "config.json": json.dumps(mlx_config).encode(),
            "tokenizer.json": source["tokenizer.json"],
            "model.safetensors": safetensors_bytes({"w": [float(bits)] * 8}),
        })
