"""The torch INT4 backend: llama-family models on NVIDIA GPUs (compute capability 8.0+), eager on CPU.

Registered as ``torch_int4`` in the ``localq.backends`` entry-point group.
This module stays light: torch, safetensors and tokenizers are imported in
``load()``.

What it runs: a localq INT4 checkpoint (``checkpoint.py``; made by
``localq quantize SOURCE --to int4-g128``) or a Hugging Face safetensors
directory of a supported architecture (``model.py``), which then runs in
bf16, unquantized.

Decisions (``LoadOptions`` fields left as None):
- the device: CUDA; ``n_gpu_layers=0`` asks for the CPU (eager, torch's CPU
  INT4 kernel; slow, for tests and machines without a GPU);
- the kernel on CUDA: localq's Triton GEMV (``triton_kernels.py``) when
  Triton imports, else torch's tinygemm;
- ``n_ctx``: 4096, capped at the model's trained context; the KV cache is
  allocated for it at load.
"""

from __future__ import annotations

import importlib.util

from localq.backends.base import Backend, LoadOptions
from localq.defaults import DEFAULT_CONTEXT  # noqa: F401  (one default context for every backend)

CHECKPOINT_META = "localq-int4.json"     # what marks a directory as a localq INT4 checkpoint (checkpoint.py)
INSTALL_HINT = "pip install 'localq[torch]' (with a CUDA build of torch)"
LLAMACPP_HINT = "run a GGUF quant with llama.cpp instead (`localq recommend MODEL` names one)"


class TorchInt4Backend(Backend):
    name = "torch_int4"
    formats = ("int4", "safetensors")

    def available(self, profile=None) -> tuple[bool, str]:
        if importlib.util.find_spec("torch") is None:
            return False, f"torch is not installed ({INSTALL_HINT})"
        if profile is not None and getattr(profile, "backends", None) and "torch_int4" in profile.backends:
            info = profile.backends["torch_int4"]
            return (True, "") if info.available else (False, f"{info.reason}; {LLAMACPP_HINT}")
        return True, ""

    def load(self, model, options: LoadOptions | None = None, profile=None):
        from localq.backends.torch_int4.session import load_session

        return load_session(model, options or LoadOptions(), profile)
