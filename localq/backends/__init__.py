"""Inference backends. See ``base.py`` for the interface and the entry-point registry."""

# The backend that runs each format by default; ``localq ls`` shows it.
DEFAULT_BACKEND_FOR_FORMAT = {"gguf": "llamacpp", "mlx": "mlx", "int4": "torch_int4"}
