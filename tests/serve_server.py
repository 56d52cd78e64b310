"""Starting a real ``localq serve`` for the tests: a subprocess on a free loopback port.

The server runs the real SmolLM2 model (indexed as the starter model in a
private LOCALQ_HOME) and is stopped with SIGTERM when the test is done. Its
stderr (the server log) is kept, so tests can check what it printed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

MODEL = "smollm2:135m"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Server:
    """A running server: ``url``, ``log()`` (its stderr so far), ``stop()``."""

    def __init__(self, home: Path, *args: str, host: str = "127.0.0.1", env: dict | None = None):
        self.host = host
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.home = home
        self.log_path = home / "serve-stderr.log"
        environ = {**os.environ, "LOCALQ_HOME": str(home), **(env or {})}
        environ.pop("LOCALQ_API_KEY", None) if "LOCALQ_API_KEY" not in (env or {}) else None
        code = "from localq.cli import main; main()"
        if "--threads" not in args:
            # One thread: on a shared two-core machine llama.cpp's spinning threads slow each other down.
            args = (*args, "--threads", "1")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (the server writes to it until stop())
        self.proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--host", host, "--port", str(self.port), *args],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=environ)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not start in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    # --- plain HTTP (the standard library), for the Ollama API and raw checks

    def request(self, method: str, path: str, body=None, headers: dict | None = None, raw: bytes | None = None,
                timeout: float = 120.0) -> tuple[int, dict, bytes]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        if data is not None and "Content-Type" not in (headers or {}):
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def json(self, method: str, path: str, body=None, **kw) -> tuple[int, dict]:
        status, _, data = self.request(method, path, body, **kw)
        return status, json.loads(data) if data else {}

    def loaded(self) -> list[dict]:
        return self.json("GET", "/api/ps")[1]["models"]
