"""The server's loaded models: load on first use, keep for a while, unload when idle or short of memory.

``load_session(variant, options)`` is the one place the server loads a model.
Today it loads in this process with the backend the registry picks for the
variant's format; it is the single point to switch to the runner process.

``ModelManager`` keeps the loaded models by index variant. Decisions:
- A model stays loaded for its keep-alive after its last request ends (5
  minutes by default, ``keep_alive`` per request as Ollama has it: ``0``
  unloads when the request ends, a negative value keeps it loaded).
- Before loading, the recommender's memory estimate for the model (weights +
  KV cache + runtime) is compared with the room there is: memory available now,
  less the weights of the models already loaded (their memory-mapped pages
  count as available to the OS but must stay in RAM), and within
  ``--max-memory`` when given. Idle models are unloaded, least recently used
  first, until the new one fits; if it still does not fit, the request gets a
  503 saying how much is needed and what is free.
- Two models run at the same time when both fit: each has its own queue and thread.
- Models are named by localq references and resolved through the index; a file
  path is not accepted over HTTP (a client must not make the server open files).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import time
from dataclasses import dataclass, field

from localq.backends.base import LoadOptions, Session
from localq.errors import LocalqError, ModelNotFound
from localq.serve.config import ServeConfig
from localq.serve.scheduler import Job, ModelGone, ModelQueue
from localq.units import GiB

log = logging.getLogger("localq.serve")


class NotEnoughMemory(LocalqError):
    """A model that does not fit beside the busy ones."""


class LoadFailed(LocalqError):
    """The backend could not load a model (bad file, unsupported architecture, no backend)."""


def load_session(variant, options: LoadOptions) -> Session:
    """Load ``variant`` (an index Variant) in a model process, with the backend the registry picks.

    The model runs in a worker process (``localq.backends.runner``): a native
    abort or an out-of-memory kill in the engine ends that process, and the
    request in flight gets an error, while the server goes on.
    """
    from localq.backends import runner

    return runner.load(None, variant, options)


def memory_needed(variant, n_ctx: int | None) -> int:
    """The recommender's estimate of what loading ``variant`` takes, in bytes.

    For a GGUF: weights + KV cache at the context it will get + runtime
    overhead (``localq.backends.llamacpp.estimate_memory``). For other formats,
    or a GGUF whose metadata lacks the numbers: its files' size plus a fifth.
    """
    if variant.format == "gguf":
        from localq.backends.llamacpp import default_context, estimate_memory
        from localq.gguf_info import read_gguf_info

        try:
            info = read_gguf_info(variant.main_path)
            estimate = estimate_memory(info, n_ctx or default_context(info), variant.size)
        except LocalqError:
            estimate = None
        if estimate is not None:
            return estimate[0]
    return int(variant.size * 1.2)


def available_memory() -> int:
    import psutil

    return psutil.virtual_memory().available


@dataclass
class LoadedModel:
    """A model in memory, its queue, and when it may be unloaded."""

    variant: object
    session: Session
    queue: ModelQueue
    memory: int
    keep_alive_s: float
    loaded_at: float = field(default_factory=time.time)
    expires_at: float = math.inf
    last_used: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return self.variant.ref

    def touch(self, keep_alive_s: float | None = None) -> None:
        """A request arrived or ended: restart the keep-alive from now."""
        if keep_alive_s is not None:
            self.keep_alive_s = keep_alive_s
        self.last_used = time.monotonic()
        self.expires_at = time.time() + self.keep_alive_s

    def describe(self) -> dict:
        """What ``/api/ps`` and ``localq ps`` show."""
        v = self.variant
        expires = None
        if math.isfinite(self.expires_at):
            expires = datetime.datetime.fromtimestamp(self.expires_at, datetime.UTC).isoformat()
        return {
            "name": v.ref, "model": v.ref, "size": self.memory, "size_vram": 0,
            "digest": v.files[0].sha256 if v.files else "",
            "expires_at": expires, "keep_alive_s": None if math.isinf(self.keep_alive_s) else self.keep_alive_s,
            "loaded_at": datetime.datetime.fromtimestamp(self.loaded_at, datetime.UTC).isoformat(),
            "backend": self.session.backend_name, "context_length": self.session.n_ctx,
            "running": self.queue.running, "queued": self.queue.waiting, "requests_done": self.queue.jobs_done,
            "details": model_details(v),
        }


def model_details(variant) -> dict:
    """Ollama's ``details`` block for a variant."""
    from localq.catalog import format_parameters

    return {
        "parent_model": "", "format": variant.format, "family": variant.architecture or "",
        "families": [variant.architecture] if variant.architecture else None,
        "parameter_size": format_parameters(variant.parameters) if variant.parameters else "",
        "quantization_level": variant.quant.upper(),
    }


def open_db():
    """A fresh index connection (each worker thread opens its own)."""
    from localq.store.db import open_index

    return open_index()


def resolve_variant(ref: str):
    """The installed variant ``ref`` names, or ModelNotFound that says how to pull it."""
    from localq.names import parse
    from localq.store.index import resolve

    if not isinstance(ref, str) or not ref.strip():
        raise LocalqError("the request names no model", "set \"model\" to an installed model (localq ls)")
    parsed = parse(ref)
    if parsed.kind == "path":
        raise ModelNotFound(f"model {ref!r} is a file path; the server runs installed models only",
                            f"import it first: localq import {ref}")
    db = open_db()
    try:
        return resolve(db, parsed)
    finally:
        db.conn.close()


def list_installed() -> list:
    from localq.store.index import list_variants

    db = open_db()
    try:
        return list_variants(db)
    finally:
        db.conn.close()


class ModelManager:
    """The loaded models of one server. Its coroutines run on the server's event loop."""

    def __init__(self, config: ServeConfig, available=available_memory):
        self.config = config
        self.available = available
        self.loaded: dict[int, LoadedModel] = {}
        self._load_lock = asyncio.Lock()
        self._reaper: asyncio.Task | None = None

    # --- lifecycle

    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def shutdown(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for key in list(self.loaded):
            await self.unload(key)

    async def _reap(self) -> None:
        """Unload models whose keep-alive ran out while idle (checked twice a second)."""
        while True:
            await asyncio.sleep(0.5)
            now = time.time()
            for key, model in list(self.loaded.items()):
                if not model.queue.busy and now >= model.expires_at:
                    log.info("unloading %s (keep-alive ended)", model.name)
                    await self.unload(key)

    # --- loading

    async def get(self, ref: str, keep_alive_s: float | None = None) -> LoadedModel:
        """The loaded model ``ref`` names, loading it (and making room) when needed."""
        variant = await asyncio.to_thread(resolve_variant, ref)
        model = self.loaded.get(variant.id)
        if model is None:
            async with self._load_lock:
                model = self.loaded.get(variant.id)
                if model is None:
                    model = await self._load(variant, keep_alive_s)
        model.touch(keep_alive_s)
        return model

    async def _load(self, variant, keep_alive_s: float | None) -> LoadedModel:
        need = await asyncio.to_thread(memory_needed, variant, self.config.n_ctx)
        await self._make_room(variant, need)
        options = LoadOptions(n_ctx=self.config.n_ctx, n_threads=self.config.n_threads)
        started = time.perf_counter()
        try:
            session = await asyncio.to_thread(load_session, variant, options)
        except LocalqError as exc:
            raise LoadFailed(f"cannot load {variant.ref}: {exc.message}", exc.hint) from exc
        log.info("loaded %s in %.2f s (about %.2f GiB)", variant.ref, time.perf_counter() - started, need / GiB)
        model = LoadedModel(variant, session, None, need,  # type: ignore[arg-type]
                            self.config.keep_alive_s if keep_alive_s is None else keep_alive_s)
        model.queue = ModelQueue(session, variant.ref, self.config.max_queue, on_idle=model.touch)
        self.loaded[variant.id] = model
        return model

    def room(self) -> int:
        """Bytes a new model may take now."""
        loaded = sum(m.memory for m in self.loaded.values())
        weights = sum(m.variant.size for m in self.loaded.values())
        room = self.available() - weights
        if self.config.max_memory is not None:
            room = min(room, self.config.max_memory - loaded)
        return room

    async def _make_room(self, variant, need: int) -> None:
        """Unload idle models, least recently used first, until ``need`` bytes fit."""
        while need > self.room():
            idle = [(m.last_used, k) for k, m in self.loaded.items() if not m.queue.busy]
            if not idle:
                break
            key = min(idle)[1]
            log.info("unloading %s to make room for %s", self.loaded[key].name, variant.ref)
            await self.unload(key)
        room = self.room()
        if need > room:
            busy = ", ".join(m.name for m in self.loaded.values()) or "none"
            raise NotEnoughMemory(
                f"{variant.ref} needs about {need / GiB:.2f} GiB; {max(room, 0) / GiB:.2f} GiB is free "
                f"(models in use: {busy})",
                "wait for the other models' requests to end, stop one (localq stop MODEL), or pick a smaller quant",
            )

    async def unload(self, key: int) -> bool:
        """Unload one model: refuse its waiting requests, cancel its running one, free its memory."""
        model = self.loaded.pop(key, None)
        if model is None:
            return False
        await asyncio.to_thread(model.queue.stop)
        await asyncio.to_thread(model.session.close)
        return True

    async def unload_ref(self, ref: str) -> LoadedModel | None:
        """Unload the model ``ref`` names; None when it is not loaded."""
        variant = await asyncio.to_thread(resolve_variant, ref)
        model = self.loaded.get(variant.id)
        if model is not None:
            await self.unload(variant.id)
        return model

    # --- running

    async def submit(self, ref: str, job: Job, keep_alive_s: float | None = None) -> LoadedModel:
        """Queue ``job`` on the model ``ref`` names (loading it first if needed)."""
        for _ in range(3):
            model = await self.get(ref, keep_alive_s)
            try:
                model.queue.submit(job)   # no await since get(): the model cannot be unloaded in between
                return model
            except ModelGone:
                continue
        raise ModelGone(f"{ref} was unloaded while the request waited", "send the request again")

    def describe(self) -> list[dict]:
        return [m.describe() for m in sorted(self.loaded.values(), key=lambda m: m.loaded_at)]
