"""An MLX (or plain safetensors) model directory: its config, and the checks a load would fail on.

The counterpart of ``gguf_info`` for directory models: ``config.json``, the
tokenizer files and ``model*.safetensors`` weights (with
``model.safetensors.index.json`` when split), as mlx-community repositories
and ``localq quantize --to mlx-4bit`` lay them out. Reads JSON and file names
only, no weights and no mlx, so a pull can check what it downloaded and a
load can refuse a broken directory before the engine starts.
"""

from __future__ import annotations

import json
from pathlib import Path

from localq.errors import BadModelFile

CONFIG = "config.json"
WEIGHTS_INDEX = "model.safetensors.index.json"


def read_model_dir(path: Path, name: str | None = None) -> dict:
    """The config of an MLX/safetensors model directory, or BadModelFile saying what is missing.

    Checks what a load would fail on, before any weight is read: the config
    parses and names a ``model_type``, and the weights are there (every file
    the weight index names, or at least one ``model*.safetensors``). Needs no
    mlx, so a pull can run it too. ``name`` is what messages call the model
    (default: the directory's name).
    """
    path = Path(path)
    name = name or path.name
    try:
        config = json.loads((path / CONFIG).read_text("utf-8"))
    except FileNotFoundError:
        raise BadModelFile(f"{name} has no {CONFIG}", "an MLX model is a directory with config.json, "
                           "tokenizer files and model*.safetensors; pull or quantize it again") from None
    except (OSError, ValueError) as exc:
        raise BadModelFile(f"{name}/{CONFIG} is not valid JSON: {exc}", "pull or quantize the model again") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise BadModelFile(f"{name}/{CONFIG} names no model_type", "pull or quantize the model again")
    index = path / WEIGHTS_INDEX
    if index.exists():
        try:
            names = sorted(set(json.loads(index.read_text("utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BadModelFile(f"{name}/{WEIGHTS_INDEX} is damaged ({exc})", "pull or quantize the model again") from exc
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise BadModelFile(f"{name} is missing weight files its index names: {', '.join(missing[:3])}",
                               "pull or quantize the model again")
    elif not any(path.glob("model*.safetensors")):
        raise BadModelFile(f"{name} has no weights (no model*.safetensors)", "pull or quantize the model again")
    return config


def trained_context(config: dict) -> int | None:
    value = config.get("max_position_embeddings") or config.get("text_config", {}).get("max_position_embeddings")
    return int(value) if isinstance(value, int) and value > 0 else None


def kv_cache_bytes(config: dict, n_ctx: int, dtype_bytes: int = 2) -> int:
    """Keys and values of a full context: 2 x layers x context x KV heads x head dim."""
    cfg = config.get("text_config", config) if "num_hidden_layers" not in config else config
    layers = cfg.get("num_hidden_layers") or 0
    heads = cfg.get("num_attention_heads") or 1
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or (cfg.get("hidden_size") or 0) // heads
    return 2 * layers * n_ctx * kv_heads * head_dim * dtype_bytes


def weights_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).glob("*.safetensors"))
