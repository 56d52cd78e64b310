"""The torch INT4 Session: load a checkpoint or a safetensors directory, then stream replies.

Consecutive turns reuse the KV cache: only the tokens after the longest
common prefix with what the cache holds are evaluated. Text is streamed by
decoding the reply's tokens so far and emitting what is new, holding back a
character split across tokens (a trailing U+FFFD) until it is whole.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from localq.backends.base import (
    Done,
    GenerationParams,
    LoadOptions,
    Session,
    StopMatcher,
    TextDelta,
    model_path_of,
)
from localq.backends.torch_int4 import DEFAULT_CONTEXT, LLAMACPP_HINT
from localq.errors import BackendError, LocalqError


def pick_device(options: LoadOptions) -> torch.device:
    """CUDA (compute capability 8.0+), or the CPU when ``n_gpu_layers == 0``; BackendError otherwise."""
    if options.n_gpu_layers == 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise BackendError(f"the torch INT4 backend needs an NVIDIA GPU with CUDA; torch {torch.__version__} "
                           "sees none", LLAMACPP_HINT)
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 0):
        name = torch.cuda.get_device_name()
        raise BackendError(f"{name} has compute capability {major}.{minor}; torch's INT4 kernels need 8.0 or newer",
                           LLAMACPP_HINT)
    return torch.device("cuda")


def model_dir_of(path: Path) -> Path:
    path = Path(path)
    return path if path.is_dir() else path.parent


def load_model(model_dir: Path, device: torch.device):
    """(Transformer, quant tag) from a localq INT4 checkpoint or a Hugging Face safetensors directory."""
    from localq.backends.torch_int4 import checkpoint, int4
    from localq.backends.torch_int4.model import load_hf

    if checkpoint.is_checkpoint(model_dir):
        meta = checkpoint.read_meta(model_dir)
        if device.type == "cpu":
            int4.check_ops("cpu")
            layout = "tinygemm-cpu"
        else:
            int4.check_ops("cuda")
            layout = "pairs" if importlib_has("triton") else "tinygemm-cuda"
        model, meta = checkpoint.load(model_dir, device, layout)
        others = sorted(set(meta.get("group_sizes", {}).values()))     # a mixed checkpoint says so in its tag
        return model, f"int4-g{meta['group_size']}" + "".join(f"/g{g}" for g in others)
    return load_hf(model_dir, device, torch.bfloat16), None


def importlib_has(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def load_decoder(model_dir: Path, cfg, device: torch.device, n_ctx: int):
    """(Decoder, quant tag) of ``model_dir`` on ``device``: refused before any copy when CUDA has too little
    free memory for it, and a one-line BackendError, not a dead process, when an allocation fails anyway."""
    from localq.backends.torch_int4 import memory
    from localq.backends.torch_int4.generate import PREFILL_CHUNK, Decoder

    need = free = total = None
    if device.type == "cuda":
        need = memory.needed_bytes(model_dir, cfg, n_ctx, PREFILL_CHUNK)
        free, total = torch.cuda.mem_get_info(device)
        memory.check_fits(model_dir.name, need, free, total, n_ctx)
    failed = None
    try:
        net, quant = load_model(model_dir, device)
        return Decoder(net, n_ctx), quant
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not memory.is_out_of_memory(exc):
            raise
        failed = type(exc).__name__   # raised below, once this frame's tensors are gone with the traceback
    net = None
    if device.type == "cuda":
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(device)
    raise memory.out_of_memory(model_dir.name, failed, device.type, need, free, total, n_ctx)


def load_session(model, options: LoadOptions, profile=None) -> TorchInt4Session:
    from localq.backends.torch_int4.model import read_config
    from localq.backends.torch_int4.tokenizer import ModelTokenizer

    path, record = model_path_of(model)
    if hasattr(model, "files"):     # a stored variant: its files under their real names, in one directory
        from localq.store.materialize import materialize

        path = materialize(model)
    model_dir = model_dir_of(path)
    cfg = read_config(model_dir)
    options.validate(cfg.max_position)
    n_ctx = options.n_ctx or min(DEFAULT_CONTEXT, cfg.max_position)
    device = pick_device(options)
    if options.n_threads and device.type == "cpu":
        torch.set_num_threads(options.n_threads)
    tokenizer = ModelTokenizer(model_dir)
    started = time.perf_counter()
    decoder, quant = load_decoder(model_dir, cfg, device, n_ctx)
    return TorchInt4Session(decoder, tokenizer, device, model_path=path, n_ctx=n_ctx,
                            n_threads=torch.get_num_threads(), load_s=time.perf_counter() - started,
                            model_ref=record["model_ref"], quant=record["quant"] or quant,
                            variant_id=record["variant_id"])


class TorchInt4Session(Session):
    backend_name = "torch_int4"

    def __init__(self, decoder, tokenizer, device, **kwargs):
        super().__init__(**kwargs)
        self.decoder, self.tokenizer, self.device = decoder, tokenizer, device
        self._fed: list[int] = []          # the tokens whose keys and values the cache holds, in order

    def encode_chat(self, messages: Sequence[dict]) -> list[int]:
        return self.tokenizer.encode_chat(messages)

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def reset(self) -> None:
        self._fed = []

    def _free(self) -> None:
        self.decoder = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def generate(self, prompt_tokens: Sequence[int], params: GenerationParams,
                 started: float | None = None) -> Iterator:
        from localq.backends.torch_int4.generate import sample

        started = started or time.perf_counter()
        prompt = list(prompt_tokens)
        n = len(prompt)
        if not prompt or n >= self.n_ctx:
            raise LocalqError(f"the prompt has {n} tokens; the context holds {self.n_ctx}",
                              "shorten the conversation or load the model with a larger --ctx")
        room = self.n_ctx - n
        max_new = min(params.max_tokens or room, room)
        reuse = 0
        while reuse < min(len(self._fed), n - 1) and self._fed[reuse] == prompt[reuse]:
            reuse += 1
        t0 = time.perf_counter()
        logits = self.decoder.prefill(prompt[reuse:], start=reuse)
        self._fed = list(prompt)
        prompt_s = time.perf_counter() - t0
        gen = torch.Generator().manual_seed(params.seed if params.seed is not None else random.randrange(2**32 - 1))
        eos = set() if params.ignore_eos else self.tokenizer.eos_ids
        matcher = StopMatcher(params.stop)
        out: list[int] = []
        shown: list[str] = []
        raw_done = ""
        ttft, finish = None, "length"
        t_decode = time.perf_counter()
        for i in range(max_new):
            if self._cancel.is_set():
                finish = "cancelled"
                break
            token = sample(logits, params, self._fed, gen)
            if ttft is None:
                ttft = time.perf_counter() - started
            if token in eos:
                finish = "stop"
                break
            out.append(token)
            text = self.tokenizer.decode(out)
            if not text.endswith("\ufffd"):
                piece, hit = matcher.feed(text[len(raw_done):])
                raw_done = text
                if piece:
                    shown.append(piece)
                    yield TextDelta(piece)
                if hit:
                    finish = "stop"
                    break
            if i + 1 < max_new:
                logits = self.decoder.step(token, n + i)
                self._fed.append(token)
        if finish != "stop":
            tail = matcher.flush()
            if tail:
                shown.append(tail)
                yield TextDelta(tail)
        yield Done(text="".join(shown), finish_reason=finish, prompt_tokens=n, completion_tokens=len(out),
                   prompt_s=prompt_s, decode_s=time.perf_counter() - t_decode, ttft_s=ttft, cached_tokens=reuse)
