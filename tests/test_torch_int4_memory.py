"""Out of memory at load is a one-line error: the estimate, the check before loading, the allocator's failure.

The GPU cases cannot happen on a CPU machine; what they run is tested here:
the estimate against the real checkpoint's tensors, the check as a function
of (needed, free), and a real allocation failure (the CPU allocator's, from a
context no machine holds) through the same loading function the GPU path
uses. ``benchmarks/int4_gpu_memory_check.py`` drives both on a GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from localq.backends.torch_int4 import memory  # noqa: E402  (after the skips)
from localq.errors import BackendError  # noqa: E402

GiB = 2**30


@pytest.fixture(scope="module")
def small_checkpoint(smollm2_hf_dir: Path, tmp_path_factory) -> Path:
    from localq.quantize.int4 import quantize_model_dir

    return quantize_model_dir(smollm2_hf_dir, tmp_path_factory.mktemp("mem") / "g64", "int4-g64")


def test_weights_estimate_is_what_the_loaded_model_holds(small_checkpoint: Path):
    """The header-only estimate equals the bytes of the loaded model's weights (packed codes, bf16 rest)."""
    from localq.backends.torch_int4 import checkpoint

    model, _ = checkpoint.load(small_checkpoint, "cpu", "tinygemm-cpu")
    held = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    estimate = memory.weights_on_device(small_checkpoint)
    print(f"\nestimate {estimate / 2**20:.1f} MiB, loaded {held / 2**20:.1f} MiB")
    assert estimate == held


def test_needed_counts_the_kv_cache(small_checkpoint: Path):
    from localq.backends.torch_int4.model import read_config

    cfg = read_config(small_checkpoint)
    short, long = (memory.needed_bytes(small_checkpoint, cfg, n, 512) for n in (256, 8192))
    assert short.weights == long.weights
    assert long.kv_cache == 32 * short.kv_cache == 2 * 30 * 3 * 64 * 8192 * 2   # k and v, layers, kv heads, dims


def test_check_fits_refuses_what_free_memory_cannot_hold():
    need = memory.MemoryNeed(weights=5 * GiB, kv_cache=GiB // 2, activations=GiB // 4)
    memory.check_fits("llama3.1:8b-int4-g128", need, free=6 * GiB, total=80 * GiB, n_ctx=4096)   # fits
    with pytest.raises(BackendError) as err:
        memory.check_fits("llama3.1:8b-int4-g128", need, free=4 * GiB, total=80 * GiB, n_ctx=4096)
    line = err.value.one_line()
    print(line)
    assert "\n" not in line
    assert "needs about 5.8 GiB" in line and "4.0 of 80.0 GiB free" in line and "4096 tokens" in line
    assert "llama.cpp" in err.value.hint and "int4-g128" in err.value.hint


def test_allocator_errors_are_recognised():
    with pytest.raises(RuntimeError) as real:
        torch.empty(2**50, dtype=torch.uint8)        # a petabyte: the CPU allocator refuses at once
    assert memory.is_out_of_memory(real.value)
    assert memory.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not memory.is_out_of_memory(RuntimeError("shape mismatch"))
    assert not memory.is_out_of_memory(ValueError("can't allocate memory"))


def test_allocation_failure_at_load_is_one_line_error(small_checkpoint: Path):
    """A context no machine can hold: the KV cache's allocation fails for real, and loading says so in a line."""
    from localq.backends.torch_int4.model import read_config
    from localq.backends.torch_int4.session import load_decoder

    cfg = read_config(small_checkpoint)
    with pytest.raises(BackendError) as err:
        load_decoder(small_checkpoint, cfg, torch.device("cpu"), 2**26)
    line = err.value.one_line()
    print(line)
    assert "\n" not in line
    assert line.startswith(f"out of host memory loading {small_checkpoint.name} with a {2**26}-token context")
    assert "RuntimeError" in line and "smaller --ctx" in err.value.hint
