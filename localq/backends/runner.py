"""The model runner: a model loaded in a worker process, behind the same ``Session`` interface.

(Over 400 lines: both ends of one protocol, the parent's Session and the worker's loop,
kept together so that a message and its answer are read side by side.)

Why: llama.cpp (and later MLX or CUDA) can abort, segfault or be killed for
memory. In-process that takes the terminal app or the server down with it.
Here the model lives in a child process; when the child dies, the parent's
``RemoteSession`` turns that into one line ("the model process stopped:
SIGABRT, last message: ...") and can load the model again.

Use::

    from localq.backends import runner
    session = runner.load(None, variant_or_path, LoadOptions(n_ctx=2048))
    for event in session.stream(messages, params): ...
    session.cancel()      # from any thread; reaches the worker at once
    session.close()       # ends the worker

``load(backend, model, options, profile)``: ``backend`` is a registered
backend's name, or None for the one the registry picks for the model's format.
``model`` is an index ``Variant`` or a file path. The returned session has the
attributes of the worker's session that describe it (``model_ref``, ``quant``,
``variant_id``, ``n_ctx``, ``n_threads``, ``load_s``, ``backend_name``, the
``supports_*`` flags, and ``info`` when the backend has one), ``stream``,
``stream_text``, ``embed``, ``complete``, ``tokenize``, ``encode_chat``,
``reset``, ``cancel`` and ``close``, and ``alive`` / ``pid``.

How it works:
- The worker is ``python -m localq.backends.runner CMD_FD EVENT_FD``: two
  pipes passed to it alone. Its stdout and stderr go to a third pipe that the
  parent reads into a short ring of lines, for the "last message".
- Commands (pickled tuples) go down the command pipe. A reader thread in the
  worker applies ``cancel`` at once (``Session.cancel``, checked every token)
  and queues the others for the main thread. When the command pipe closes,
  the parent is gone (even after ``kill -9``): the worker exits at once.
- Events come up the event pipe as frames: 4-byte length, 1-byte kind, body.
  A text delta is its UTF-8 bytes (no pickling on the per-token path); the
  rest is pickled. Deltas that come faster than ``COALESCE_S`` apart are
  joined into one frame, so a fast model does not pay a pipe round per token.
- One request at a time, as with any Session.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

from localq.backends.base import Done, GenerationParams, LoadOptions, Session, TextDelta
from localq.errors import BackendError, LocalqError

COALESCE_S = 0.002           # deltas closer together than this share one frame
CLOSE_TIMEOUT_S = 5.0        # a worker asked to close gets this long before it is killed
STDERR_LINES = 50
_FRAME = struct.Struct("<IB")
_TEXT, _OBJECT, _ERROR = 0, 1, 2
# Attributes copied from the worker's session to the proxy after loading.
_DESCRIBED = ("model_ref", "quant", "variant_id", "n_ctx", "n_threads", "load_s", "backend_name",
              "model_path", "info", "n_gpu_layers", "n_batch", "flash_attn",
              "supports_json_schema", "supports_embeddings", "embed_n_ctx")


# --- framing ---------------------------------------------------------------------


def _write_frame(fd: int, kind: int, body: bytes) -> None:
    data = _FRAME.pack(len(body), kind) + body
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(reader, n: int) -> bytes | None:
    data = reader.read(n)
    if data is None or len(data) < n:
        return None
    return data


def _read_frame(reader) -> tuple[int, bytes] | None:
    """The next (kind, body), or None when the pipe closed."""
    head = _read_exact(reader, _FRAME.size)
    if head is None:
        return None
    length, kind = _FRAME.unpack(head)
    body = _read_exact(reader, length) if length else b""
    if body is None:
        return None
    return kind, body


# --- the parent's side ---------------------------------------------------------------


def signal_name(returncode: int | None) -> str:
    """``-6`` -> ``SIGABRT``; ``3`` -> ``exit status 3``."""
    if returncode is None:
        return "unknown cause"
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


def telling_line(lines: Sequence[str]) -> str | None:
    """The line of a dying process's output that best says why: an assertion or error, else the last."""
    lines = [line.strip() for line in lines if line.strip()]
    if not lines:
        return None
    keys = ("GGML_ASSERT", "assert", "Fatal Python error", "error", "Error", "failed", "Killed", "abort")
    for line in reversed(lines):
        if any(k in line for k in keys) and not line.startswith(("File ", "Thread ", "Current thread")):
            return line
    return lines[-1]


class RemoteSession(Session):
    """A Session whose model runs in a worker process; see the module docstring."""

    def __init__(self, proc: subprocess.Popen, cmd_fd: int, events, output_lines: deque, model):
        path = getattr(model, "main_path", None) or model
        super().__init__(model_path=path, n_ctx=0, n_threads=0, load_s=0.0,
                         model_ref=getattr(model, "ref", None) or str(path))
        self._proc = proc
        self._cmd_fd = cmd_fd
        self._events = events
        self._lines = output_lines
        self._write_lock = threading.Lock()
        self._busy = threading.Lock()
        self._stopped: str | None = None
        self._request = 0
        self.info = None

    def _describe(self, described: dict) -> None:
        """Take the loaded session's description (model_ref, n_ctx ...) from the worker."""
        for key, value in described.items():
            setattr(self, key, value)

    # --- state

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        """True while the worker runs and has not been closed."""
        return not self._closed and self._stopped is None and self._proc.poll() is None

    def _died(self) -> BackendError:
        """The error for a worker that is gone, with its exit signal and last line of output."""
        if self._stopped is None:
            try:
                code = self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                code = self._proc.wait()
            time.sleep(0.05)  # let the output reader take the last lines
            last = telling_line(list(self._lines))
            self._stopped = f"the model process stopped: {signal_name(code)}, last message: {last or '(none)'}"
        if "SIGKILL" in self._stopped:
            hint = "the system may have run out of memory: try a smaller quant or context, then load it again"
        else:
            hint = "load the model again; if it stops again, the file or the engine is at fault"
        return BackendError(self._stopped, hint)

    # --- requests

    def _send(self, *command) -> None:
        try:
            with self._write_lock:
                _write_frame(self._cmd_fd, _OBJECT, pickle.dumps(command, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            raise self._died() from None

    def _receive(self):
        """The next event or result from the worker: (kind, value); raises when the worker is gone."""
        frame = _read_frame(self._events)
        if frame is None:
            raise self._died()
        kind, body = frame
        if kind == _TEXT:
            return kind, body.decode("utf-8")
        return kind, pickle.loads(body)

    def _call(self, *command):
        """Send a command and return its one result (re-raising the worker's LocalqError)."""
        self._check_usable()
        with self._busy:
            self._send(*command)
            kind, value = self._receive()
        if kind == _ERROR:
            raise value
        return value

    def _check_usable(self) -> None:
        self._check_open()
        if self._stopped is not None or self._proc.poll() is not None:
            raise self._died()

    def stream(self, messages: Sequence[dict], params: GenerationParams | None = None) -> Iterator:
        """The worker's ``stream``: its events, and an error ``Done`` if the worker dies mid-reply."""
        return self._relay("stream", list(messages), params)

    def stream_text(self, prompt: str, params: GenerationParams | None = None) -> Iterator:
        """The worker's ``stream_text`` (a raw completion, no chat template), relayed like ``stream``."""
        return self._relay("stream_text", prompt, params)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return self._call("embed", list(texts))

    def _relay(self, op: str, payload, params: GenerationParams | None) -> Iterator:
        """Send a streaming request (``stream`` or ``stream_text``) and yield the worker's events."""
        self._check_usable()
        if not self._busy.acquire(blocking=False):
            raise BackendError("this model is already writing a reply", "wait for it, or cancel it")
        started = time.perf_counter()
        text: list[str] = []
        finished = True
        try:
            self._cancel.clear()
            self._request += 1
            self._send(op, self._request, payload, params)
            finished = False
            while True:
                try:
                    kind, value = self._receive()
                except BackendError as exc:
                    yield Done(text="".join(text), finish_reason="error", prompt_tokens=0,
                               completion_tokens=0, prompt_s=0.0, decode_s=time.perf_counter() - started,
                               ttft_s=None, error=exc.message)
                    return
                if kind == _ERROR:
                    finished = True
                    raise value
                if isinstance(value, Done):
                    finished = True
                if kind == _TEXT:
                    text.append(value)
                    yield TextDelta(value)
                else:
                    yield value
                    if finished:
                        return
        finally:
            if not finished:
                self._drain()    # the caller stopped reading: end the reply so the next one starts clean
            self._busy.release()

    def _drain(self) -> None:
        """Cancel the reply in progress and read its remaining frames up to its Done (or the worker's end)."""
        self.cancel()
        try:
            while True:
                kind, value = self._receive()
                if kind == _ERROR or isinstance(value, Done):
                    return
        except BackendError:
            return

    def cancel(self) -> None:
        """Stop the reply being written: the worker sees it at once, the decode loop within a token."""
        self._cancel.set()
        if self.alive:
            try:
                with self._write_lock:
                    _write_frame(self._cmd_fd, _OBJECT, pickle.dumps(("cancel", self._request)))
            except OSError:
                pass

    def encode_chat(self, messages: Sequence[dict]) -> list[int]:
        return self._call("encode_chat", list(messages))

    def tokenize(self, text: str) -> list[int]:
        return self._call("tokenize", text)

    def reset(self) -> None:
        self._call("reset")

    def generate(self, prompt_tokens, params, started=None):
        raise BackendError("a model in a worker process streams whole conversations", "use stream()")

    def _free(self) -> None:
        """Ask the worker to close, then end it: a killed worker's memory is freed by the OS."""
        self.cancel()
        try:
            with self._write_lock:
                os.close(self._cmd_fd)     # the worker reads end-of-file and exits
        except OSError:
            pass
        try:
            self._proc.wait(timeout=CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        try:
            self._events.close()
        except OSError:
            pass

    def __del__(self):
        # A session dropped without close(): end its worker rather than leave it to the pipe's end.
        if not getattr(self, "_closed", True) and hasattr(self, "_proc"):
            with contextlib.suppress(Exception):
                self.close()


def load(backend: str | None, model, options: LoadOptions | None = None, profile=None) -> RemoteSession:
    """Load ``model`` with ``backend`` (a registered name, or None for the format's) in a worker process.

    Raises the worker's LocalqError when the load is refused (bad file, too big,
    absurd options), and BackendError naming the signal when the worker dies.
    """
    from localq.backends.registry import backend_for, get_backend

    options = options or LoadOptions()
    if isinstance(model, str):
        model = Path(model)
    fmt = model.format if hasattr(model, "main_path") else "gguf"   # a Variant, or a file path
    if backend is None:
        backend = backend_for(fmt, profile).name
    else:
        get_backend(backend)   # an unknown name is refused here, with the names there are
    if fmt == "gguf":
        # The header checks are cheap: a file that cannot load is refused before a process starts.
        from localq.backends.base import model_path_of
        from localq.gguf_info import check_loadable, read_gguf_info

        path, _ = model_path_of(model)
        check_loadable(read_gguf_info(path), getattr(model, "ref", None) or path.name)
    cmd_read, cmd_write = os.pipe()
    event_read, event_write = os.pipe()
    env = dict(os.environ, GGML_NO_BACKTRACE="1", PYTHONFAULTHANDLER="1")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "localq.backends.runner", str(cmd_read), str(event_write)],
            pass_fds=(cmd_read, event_write), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    except OSError as exc:
        for fd in (cmd_read, cmd_write, event_read, event_write):
            os.close(fd)
        raise BackendError(f"cannot start the model process: {exc}") from None
    os.close(cmd_read)
    os.close(event_write)
    lines: deque[str] = deque(maxlen=STDERR_LINES)
    threading.Thread(target=_collect_output, args=(proc.stdout, lines), daemon=True,
                     name=f"localq-runner-output-{proc.pid}").start()
    events = os.fdopen(event_read, "rb", buffering=1 << 16)
    session = RemoteSession(proc, cmd_write, events, lines, model)
    try:
        session._send("load", backend, model, options, profile)
        kind, value = session._receive()
    except BaseException:
        session.close()
        raise
    if kind == _ERROR:
        session.close()
        raise value
    session._describe(value)
    return session


def _collect_output(stream, lines: deque) -> None:
    """Keep the worker's last lines of output (its stdout and stderr, llama.cpp's too)."""
    for raw in iter(stream.readline, b""):
        lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
    stream.close()


# --- the worker's side ----------------------------------------------------------------


class _Worker:
    """The loop in the child: load, then serve commands until told to close or the parent goes."""

    def __init__(self, cmd_fd: int, event_fd: int):
        self.commands = os.fdopen(cmd_fd, "rb", buffering=0)
        self.event_fd = event_fd
        self.session: Session | None = None
        self.queue: deque = deque()
        self.ready = threading.Condition()
        self.cancelled: set[int] = set()   # requests cancelled, perhaps before they started
        self.current: int | None = None

    def read_commands(self) -> None:
        """The reader thread: cancel at once, queue the rest; exit the process when the parent is gone."""
        import io

        reader = io.BufferedReader(self.commands)
        while True:
            frame = _read_frame(reader)
            if frame is None:
                os._exit(0)   # the parent closed the pipe or died: nobody is listening
            command = pickle.loads(frame[1])
            if command[0] == "cancel":
                self.cancelled.add(command[1])
                if self.session is not None and self.current == command[1]:
                    self.session.cancel()
                continue
            with self.ready:
                self.queue.append(command)
                self.ready.notify()

    def send(self, kind: int, value) -> None:
        body = value.encode("utf-8") if kind == _TEXT else pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        _write_frame(self.event_fd, kind, body)

    def error(self, exc: BaseException) -> None:
        if not isinstance(exc, LocalqError):
            exc = BackendError(f"{type(exc).__name__}: {exc}")
        try:
            pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - an error that cannot travel is sent as its text
            exc = BackendError(str(exc))
        self.send(_ERROR, exc)

    def run(self) -> None:
        threading.Thread(target=self.read_commands, daemon=True, name="localq-runner-commands").start()
        while True:
            with self.ready:
                while not self.queue:
                    self.ready.wait()
                command = self.queue.popleft()
            op, args = command[0], command[1:]
            try:
                if op == "load":
                    self.load(*args)
                elif op in ("stream", "stream_text"):
                    self.stream(op, *args)
                elif op in ("encode_chat", "tokenize", "reset", "embed"):
                    self.send(_OBJECT, getattr(self.session, op)(*args))
                else:
                    raise BackendError(f"unknown command {op!r}")
            except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent, the worker goes on
                self.error(exc)

    def load(self, backend: str, model, options: LoadOptions, profile) -> None:
        from localq.backends.registry import get_backend

        print(f"localq model process {os.getpid()}: loading {getattr(model, 'ref', model)} with {backend}",
              file=sys.stderr, flush=True)
        self.session = get_backend(backend).load(model, options, profile)
        described = {key: getattr(self.session, key) for key in _DESCRIBED if hasattr(self.session, key)}
        print(f"localq model process {os.getpid()}: loaded in {self.session.load_s:.2f} s",
              file=sys.stderr, flush=True)
        self.send(_OBJECT, described)

    def stream(self, op: str, request: int, payload, params) -> None:
        """Stream a reply, joining deltas that come faster than COALESCE_S into one frame.

        A cancel that came before the reply started (and so before ``stream``
        cleared the flag) is applied again at each event.
        """
        if self.session is None:
            raise BackendError("no model is loaded in this process")
        self.current = request
        send, clock, cancelled = self.send, time.perf_counter, self.cancelled
        pending: list[str] = []
        last = 0.0
        for event in getattr(self.session, op)(payload, params):
            if request in cancelled:
                self.session.cancel()
            if type(event) is TextDelta:
                pending.append(event.text)
                now = clock()
                if now - last >= COALESCE_S:
                    send(_TEXT, "".join(pending))
                    pending.clear()
                    last = now
                continue
            if pending:
                send(_TEXT, "".join(pending))
                pending.clear()
            send(_OBJECT, event)


def _main(argv: list[str]) -> None:
    import faulthandler

    faulthandler.enable()
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # ctrl+c in the app's terminal is the app's, not ours
    _Worker(int(argv[0]), int(argv[1])).run()


if __name__ == "__main__":
    _main(sys.argv[1:])
