"""Out of GPU memory at load, on a real GPU: both guards of ``localq.backends.torch_int4.memory`` fire.

Run (on a machine with a CUDA GPU of compute capability 8.0+, no network):

    PYTHONPATH=. python benchmarks/int4_gpu_memory_check.py [--layers 8] [--ctx 8192]

It writes a localq INT4 checkpoint (int4-g128) of a Llama-3.1-8B-shaped model
with ``--layers`` layers and random weights into a temporary directory, then
loads it with ``session.load_decoder`` (what ``localq run``/``chat`` use) three
times and prints what happened:

1. a filler tensor leaves less free memory than the estimate: the check before
   loading refuses, nothing is copied;
2. the filler is freed and ``torch.cuda.set_per_process_memory_fraction``
   caps this process below the estimate (``mem_get_info`` still reports the
   whole GPU free, so the check passes): the allocation fails during the load
   and comes back as a one-line error, and the process goes on;
3. the cap is lifted: the load succeeds; the estimate beside the peak memory
   torch allocated (their ratio).

Each case prints OK or FAILED; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from localq.backends.torch_int4 import checkpoint, int4
from localq.backends.torch_int4.generate import PREFILL_CHUNK
from localq.backends.torch_int4.linear import int4_linears
from localq.backends.torch_int4.memory import needed_bytes
from localq.backends.torch_int4.model import ModelConfig, Transformer
from localq.backends.torch_int4.session import load_decoder
from localq.errors import BackendError

GiB = 2**30
GROUP = 128


def hf_config(layers: int) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
            "num_hidden_layers": layers, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
            "intermediate_size": 14336, "vocab_size": 128256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
            "max_position_embeddings": 131072, "tie_word_embeddings": False}


def write_checkpoint(out: Path, config: dict) -> Path:
    """A random-weight localq INT4 checkpoint of ``config`` in ``out`` (speed and memory do not depend on values)."""
    cfg = ModelConfig.from_hf(config)
    with torch.device("meta"):
        model = Transformer(cfg)
    gen = torch.Generator().manual_seed(0)
    tensors, lins = {}, int4_linears(model)
    for name, lin in lins.items():
        n, k = lin.out_features, lin.in_features
        q = torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=gen)
        tensors[f"{name}.qweight"] = int4.pack_nibbles(q)
        tensors[f"{name}.scales"] = torch.full((n, k // GROUP), 1e-3, dtype=torch.bfloat16)
        tensors[f"{name}.zeros"] = torch.zeros(n, k // GROUP, dtype=torch.bfloat16)
    for name, p in model.named_parameters():
        if name.rsplit(".", 1)[0] not in lins:
            tensors[name] = (torch.randn(p.shape, generator=gen) * 0.02).to(torch.bfloat16)
    source = out.parent / "source"
    source.mkdir()
    (source / "config.json").write_text(json.dumps(config))
    meta = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "layout": checkpoint.LAYOUT,
            "layout_version": checkpoint.LAYOUT_VERSION, "group_size": GROUP, "head": "bf16", "awq": False,
            "torch_version": torch.__version__, "source_sha256": "", "source": "random", "config": config}
    return checkpoint.save(out, tensors, meta, source)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--ctx", type=int, default=8192)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("this check needs a CUDA GPU")
    device = torch.device("cuda")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="int4-oom-") as tmp:
        path = write_checkpoint(Path(tmp) / "llama-shaped-int4-g128", hf_config(args.layers))
        cfg = ModelConfig.from_hf(hf_config(args.layers))
        need = needed_bytes(path, cfg, args.ctx, PREFILL_CHUNK)
        free, total = torch.cuda.mem_get_info(device)
        print(f"{torch.cuda.get_device_name()}: {free / GiB:.1f} of {total / GiB:.1f} GiB free; the checkpoint "
              f"needs about {need.total / GiB:.2f} GiB (weights {need.weights / GiB:.2f}, KV cache "
              f"{need.kv_cache / GiB:.2f}, logits {need.activations / GiB:.2f}) at {args.ctx} tokens")

        def attempt(case: str, expect_error: bool) -> None:
            nonlocal failures
            try:
                decoder, _ = load_decoder(path, cfg, device, args.ctx)
            except BackendError as exc:
                line = exc.one_line()
                ok = expect_error and "\n" not in line
                print(f"{case}: {'OK' if ok else 'FAILED'}: error: {line}")
                failures += not ok
                return
            peak = torch.cuda.max_memory_allocated(device)
            print(f"{case}: {'FAILED' if expect_error else 'OK'}: loaded; peak allocated {peak / GiB:.2f} GiB, "
                  f"estimate / peak {need.total / peak:.2f}")
            failures += expect_error
            del decoder

        filler = torch.empty(max(free - need.total // 2, 0), dtype=torch.uint8, device=device)
        attempt("1. too little free memory (checked before loading)", True)
        del filler
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(need.total / 2 / total, torch.cuda.current_device())
        attempt("2. an allocation fails during the load (per-process cap)", True)
        torch.cuda.set_per_process_memory_fraction(1.0, torch.cuda.current_device())
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        attempt("3. enough memory", False)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
