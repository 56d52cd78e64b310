"""Inference backends. See ``base.py`` for the interface and the entry-point registry.

Each backend has one id, the name its entry point and the probe use
(``llamacpp``, ``mlx``, ``torch_int4``), and one label, the name users know it
by, which the CLI and the app both show.
"""

# The backend that runs each format by default; ``localq ls`` shows it.
DEFAULT_BACKEND_FOR_FORMAT = {"gguf": "llamacpp", "mlx": "mlx", "int4": "torch_int4"}

# Backend ids as users know them.
BACKEND_LABELS = {"llamacpp": "llama.cpp", "mlx": "MLX", "torch_int4": "torch INT4"}


def backend_label(backend_id: str) -> str:
    """The name users know a backend by; a third-party backend's own id."""
    return BACKEND_LABELS.get(backend_id, backend_id)
