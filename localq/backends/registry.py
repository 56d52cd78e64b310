"""Finding backends: every backend, built-in or third-party, comes from one entry-point group.

A package adds a backend by declaring, in its ``pyproject.toml``::

    [project.entry-points."localq.backends"]
    mybackend = "mypackage.backend:MyBackend"

where ``MyBackend`` subclasses ``localq.backends.base.Backend``. localq's own
llama.cpp backend is declared the same way, so the two paths cannot drift.
Loading an entry point imports only the backend's light module; a backend
whose module fails to import is skipped and reported by ``problems()``, so one
broken plug-in does not take localq down.
"""

from __future__ import annotations

from localq.backends import DEFAULT_BACKEND_FOR_FORMAT
from localq.backends.base import Backend
from localq.errors import BackendError

GROUP = "localq.backends"

_problems: dict[str, str] = {}


def _entry_points():
    from importlib.metadata import entry_points

    return sorted(entry_points(group=GROUP), key=lambda ep: ep.name)


def backend_names() -> list[str]:
    """The names of every registered backend (without importing them)."""
    return [ep.name for ep in _entry_points()]


def load_backends() -> dict[str, Backend]:
    """An instance of every registered backend that imports cleanly, by name."""
    backends = {}
    for ep in _entry_points():
        try:
            cls = ep.load()
            backend = cls()
            if not isinstance(backend, Backend):
                raise TypeError(f"{ep.value} is not a localq Backend")
        except Exception as exc:  # a broken plug-in is reported, not fatal
            _problems[ep.name] = f"{type(exc).__name__}: {exc}"
            continue
        _problems.pop(ep.name, None)
        backends[ep.name] = backend
    return backends


def problems() -> dict[str, str]:
    """Backends that failed to load at the last ``load_backends``, with why."""
    return dict(_problems)


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``, or BackendError listing the ones there are."""
    backends = load_backends()
    if name in backends:
        return backends[name]
    if name in _problems:
        raise BackendError(f"the {name} backend failed to load: {_problems[name]}", "reinstall the package that provides it")
    known = ", ".join(sorted(backends)) or "none"
    raise BackendError(f"no backend named {name!r} (installed: {known})", "check the spelling, or install its package")


def backend_for(fmt: str, profile=None) -> Backend:
    """The backend to run a model of format ``fmt`` here.

    The format's default backend (``DEFAULT_BACKEND_FOR_FORMAT``) when it is
    registered and available, else any available backend that runs the format;
    BackendError saying why none can otherwise.
    """
    backends = load_backends()
    preferred = DEFAULT_BACKEND_FOR_FORMAT.get(fmt)
    candidates = [b for b in backends.values() if fmt in b.formats]
    candidates.sort(key=lambda b: (b.name != preferred, b.name))
    reasons = []
    for backend in candidates:
        ok, why = backend.available(profile)
        if ok:
            return backend
        reasons.append(f"{backend.name}: {why}")
    if reasons:
        raise BackendError(f"no backend can run {fmt} models here ({'; '.join(reasons)})")
    from localq.probe.backends import INSTALL_ADVICE, not_registered

    name = preferred or fmt
    if name not in backend_names():
        raise BackendError(f"no installed backend runs {fmt} models: {not_registered(name)}",
                           "pull a GGUF quant of the model instead, which llama.cpp runs")
    raise BackendError(f"no installed backend runs {fmt} models",
                       INSTALL_ADVICE.get(name, "reinstall the package that provides it"))
