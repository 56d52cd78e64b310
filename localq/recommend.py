"""Which backend and quantization to run a model with on this machine, and why.

Pure functions over a HardwareProfile (localq.probe) and a model's architecture
numbers (a catalog entry or a GGUF file's header). For every candidate
(backend x quant) ``plan`` estimates:

- memory: weights (the quant's bits per weight, or the exact file size when it
  is known) + the KV cache (2 x layers x context x KV heads x head dim x 2 bytes
  of f16, so grouped-query attention counts) + runtime overhead: on the CPU the
  process and the compute buffer pages llama.cpp touches
  (``compute_buffer_bytes``, checked against ``localq bench``); on a GPU the
  whole reserved compute buffer, the logits of a 512-token batch and a CUDA
  context, since device memory is committed when it is reserved;
- where it lives and whether it fits with headroom: RAM (total minus a reserve
  for the system; swap never counts), VRAM (95% of the card), or on Apple
  Silicon the share of unified memory Metal lets one process wire;
- decode speed: bandwidth x an efficiency factor / bytes read per token (every
  weight once, plus the KV cache of a full context window);
- quality: the expected perplexity increase, from llama.cpp's quantize table,
  replaced by localq's own measurement when one is passed in.

Policy (``runtimes``): torch INT4 on an NVIDIA GPU of compute capability 8.0+,
MLX on Apple Silicon, llama.cpp elsewhere, llama.cpp with partial GPU offload
when the model does not fit the GPU. The preference picks among the plans that
fit (``choose``):

- balanced: on the policy's first backend that can hold the model, maximize
  ln(min(tokens/s, 30)) - ppl_increase / 1.2. Above 30 tokens/s a chat outruns
  its reader, so the surplus buys quality; below it, 0.1 less perplexity is
  worth about 8% of speed. This picks Q4_K_M over Q4_0 (-0.29 ppl for 5%) and
  over Q5_K_M (-0.12 ppl for 14%) on a CPU, and mlx-4bit over mlx-8bit (half
  the speed) on a 16 GB Mac.
- quality: the lowest perplexity increase (to two decimals: Q8_0 and F16 tie)
  on any backend that runs here, among plans of at least 2 tokens/s; ties go to
  the policy's order, then speed.
- speed: the most tokens/s.

None of them picks a quant that loses more than 0.7 perplexity (Q2_K; Q3_K_M
and better pass) unless the user names it: a smaller model at a good quant
serves better, and the recommendation then says which.

Only runnable plans are chosen: a plan is runnable when its backend is
registered through the ``localq.backends`` entry points, its libraries are
found and the hardware suits it (``backend_state``). The others stay in the
list, marked not ready, with why and what to install (``setup``); when another
package registers the mlx or torch_int4 backend, their plans become runnable
with no change here. ``runnable_now`` equals ``choice`` (kept for callers).

Decisions: a context longer than the model's trained context is an error, not
a silent clamp: a plan for tokens the model cannot attend to would mislead.
The default context is 4096 tokens (Ollama's and LM Studio's default), or the
model's own if shorter.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Iterable

from localq.defaults import DEFAULT_CONTEXT, MIN_CONTEXT
from localq.errors import LocalqError, ModelNotFound
from localq.probe.profile import GpuInfo, HardwareProfile, validate
from localq.units import size

GiB = 2**30
MiB = 2**20
PREFERENCES = ("quality", "balanced", "speed")

# --- the quantization table ---------------------------------------------------

# llama.cpp's tools/quantize/quantize.cpp (QUANT_OPTIONS) lists each type's file
# size and perplexity increase for Llama-3-8B (8.03e9 parameters), e.g.
# "Q4_K_M: 4.58G, +0.1754 ppl @ Llama-3-8B". The sizes are GiB; bits per weight
# follow as size * 2^30 * 8 / parameters (Q4_K_M: 4.90, Q8_0: 8.51), and include
# the larger types these mixes keep for embeddings and output.
LLAMA3_8B_PARAMETERS = 8_030_261_248
LLAMACPP_QUANTIZE_TABLE = {  # tag: (GiB @ Llama-3-8B, ppl increase @ Llama-3-8B)
    "q2_k": (2.96, 3.5199),
    "q3_k_s": (3.41, 1.6321),
    "q3_k_m": (3.74, 0.6569),
    "q3_k_l": (4.03, 0.5562),
    "q4_0": (4.34, 0.4685),
    "q4_1": (4.78, 0.4511),
    "q4_k_s": (4.37, 0.2689),
    "q4_k_m": (4.58, 0.1754),
    "q5_0": (5.21, 0.1316),
    "q5_1": (5.65, 0.1062),
    "q5_k_s": (5.21, 0.1049),
    "q5_k_m": (5.33, 0.0569),
    "q6_k": (6.14, 0.0217),
    "q8_0": (7.96, 0.0026),
}
LLAMACPP_SOURCE = "llama.cpp quantize table (Llama-3-8B)"


@dataclass(frozen=True)
class Quant:
    tag: str                     # as localq.names spells it: "q4_k_m", "mlx-4bit", "int4-g32"
    backend: str                 # "llamacpp", "mlx", "torch_int4"
    bits: float                  # bits per weight
    ppl_delta: float             # expected perplexity increase, on llama.cpp's Llama-3-8B scale
    quality_source: str
    k_quant: bool = False        # a llama.cpp K-quant: needs rows that are multiples of 256
    keeps_embeddings: bool = False  # the token embedding stays bf16 (torch INT4)

    @property
    def label(self) -> str:
        return self.tag.upper() if self.backend == "llamacpp" else self.tag


def _gguf(tag: str) -> Quant:
    size_gib, ppl = LLAMACPP_QUANTIZE_TABLE[tag]
    bits = round(size_gib * GiB * 8 / LLAMA3_8B_PARAMETERS, 2)
    return Quant(tag, "llamacpp", bits, ppl, LLAMACPP_SOURCE, k_quant="_k" in tag)


QUANTS: tuple[Quant, ...] = (
    *(_gguf(tag) for tag in LLAMACPP_QUANTIZE_TABLE),
    Quant("f16", "llamacpp", 16.0, 0.0020, "llama.cpp quantize table (Mistral-7B)"),
    # MLX affine quantization, group size 64 with an f16 scale and bias per group:
    # 4 + 32/64 = 4.5 and 8.5 bits. The same scheme as torch's int4-g64 below; the
    # 8-bit one loses about what llama.cpp's Q8_0 does.
    Quant("mlx-4bit", "mlx", 4.5, 0.52, "estimate: as int4-g64 (same affine scheme)"),
    Quant("mlx-8bit", "mlx", 8.5, 0.003, "estimate: as llama.cpp's Q8_0"),
    # torch INT4 (tinygemm): affine 4-bit with a bf16 scale and zero per group of
    # N, 4 + 32/N bits; embeddings stay bf16. int4-g32 is llama.cpp's Q4_1 scheme
    # (+0.4511 @ Llama-3-8B). int4-g128 from torchao's Llama 3.1 8B eval (word
    # perplexity 7.33 -> 8.25, about +0.6 on llama.cpp's token scale); g64 between.
    Quant("int4-g32", "torch_int4", 5.0, 0.45, "estimate: as llama.cpp's Q4_1 (same scheme)", keeps_embeddings=True),
    Quant("int4-g64", "torch_int4", 4.5, 0.52, "estimate: between int4-g32 and int4-g128", keeps_embeddings=True),
    Quant("int4-g128", "torch_int4", 4.25, 0.60, "estimate: torchao's Llama 3.1 8B eval", keeps_embeddings=True),
)
QUANTS_BY_TAG = {q.tag: q for q in QUANTS}
# The candidates a recommendation weighs; the other table rows size files that exist.
CANDIDATES = (
    "q2_k", "q3_k_m", "q4_0", "q4_k_m", "q5_k_m", "q6_k", "q8_0", "f16",
    "mlx-4bit", "mlx-8bit", "int4-g32", "int4-g64", "int4-g128",
)

# llama.cpp's fallback when a K-quant meets rows that are not a multiple of 256
# (src/llama-quant.cpp): Q2_K/Q3_K -> IQ4_NL, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0.
K_QUANT_FALLBACK = "Q2_K/Q3_K -> IQ4_NL, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0"

# --- speed and memory constants --------------------------------------------------

# Share of the bandwidth a backend turns into decoding, localq's estimates. CPU:
# of the *measured* copy bandwidth (already an achieved figure). GPUs: of the data
# sheet's peak. torch INT4: gpt-fast's README, Llama-2-7B int4 g32 at 862.69 GB/s
# on an A100 (2039 GB/s peak).
EFFICIENCY = {
    ("llamacpp", "cpu"): 0.8,
    ("llamacpp", "cuda"): 0.6,
    ("llamacpp", "rocm"): 0.5,
    ("llamacpp", "vulkan"): 0.5,
    ("llamacpp", "metal"): 0.6,
    ("mlx", "metal"): 0.65,
    ("torch_int4", "cuda"): 0.42,
}
ASSUMED_CPU_BANDWIDTH_GBPS = 20.0   # dual-channel DDR4, when nothing was measured
ASSUMED_GPU_BANDWIDTH_GBPS = 300.0  # a modest discrete GPU, when the card's figure is unknown
INT4_MIN_CC = (8, 0)

# The process: Python, localq and llama.cpp's libraries. Measured: 43.5 MiB of peak RSS
# with llama.cpp loaded and no model, plus the CLI's own imports (rich, sqlite).
RUNTIME_BASE = 64 * MiB
SCRATCH = 256 * MiB                 # GPU: activations and scratch for a 512-token batch
CUDA_CONTEXT = 512 * MiB            # the CUDA context and cuBLAS workspace on the GPU
BATCH = 512                         # llama.cpp's n_ubatch: its logits buffer is BATCH x vocab f32
RAM_RESERVE_MIN = int(1.5 * GiB)    # left to the system and its programs
RAM_RESERVE_SHARE = 0.15
RAM_FREE_MARGIN = 512 * MiB
VRAM_USABLE_SHARE = 0.95
VRAM_FREE_MARGIN = 256 * MiB

COMFORTABLE_TPS = 30.0              # balanced: speed above this buys nothing in chat
PPL_PER_LOG_SPEED = 1.2             # balanced: perplexity worth a factor e of speed
SLOW_TPS = 2.0                      # below this, suggest a smaller model
ACCEPTABLE_PPL_DELTA = 0.7          # worse than Q3_K_M is not picked unless asked for by name


# --- the model -----------------------------------------------------------------------


@dataclass
class ModelSpec:
    """The numbers of a model that decide its memory and speed."""

    name: str                     # "llama3.1:8b" or a file name
    parameters: int
    layers: int
    hidden_size: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate_size: int
    context_length: int
    vocab_size: int
    tie_embeddings: bool = True
    file_sizes: dict[str, int] = field(default_factory=dict)  # quant tag -> exact weight bytes
    family: str | None = None     # catalog family ("llama3.1"), for suggesting a smaller size

    @classmethod
    def from_catalog(cls, model) -> "ModelSpec":
        """A spec from a ``localq.catalog.CatalogModel``."""
        return cls(
            name=model.ref, parameters=model.parameters, layers=model.layers,
            hidden_size=model.hidden_size, heads=model.heads, kv_heads=model.kv_heads,
            head_dim=model.head_dim, intermediate_size=model.intermediate_size,
            context_length=model.context_length, vocab_size=model.vocab_size,
            tie_embeddings=model.tie_embeddings, family=model.name,
        )

    @classmethod
    def from_gguf_info(cls, info) -> "ModelSpec":
        """A spec from ``localq.gguf_info.GGUFInfo``; its file's quant gets its exact size."""
        missing = [k for k in ("block_count", "embedding_length", "head_count", "context_length")
                   if getattr(info, k) is None]
        if missing:
            raise LocalqError(f"{info.path.name} lacks {', '.join(missing)} in its metadata",
                              "localq cannot estimate its memory; name a catalog model instead")
        heads = info.head_count
        if heads < 1 or info.embedding_length < 1:
            raise LocalqError(f"{info.path.name} has {heads} attention heads and embedding length "
                              f"{info.embedding_length} in its metadata",
                              "the file is damaged or was converted wrongly; re-download or convert it again")
        sizes = {info.file_type.lower(): info.tensor_bytes} if info.file_type else {}
        return cls(
            name=info.path.name, parameters=info.parameter_count, layers=info.block_count,
            hidden_size=info.embedding_length, heads=heads, kv_heads=info.head_count_kv or heads,
            head_dim=info.head_dim or info.embedding_length // heads,
            intermediate_size=info.feed_forward_length or 4 * info.embedding_length,
            context_length=info.context_length, vocab_size=info.vocab_size or 32000,
            file_sizes=sizes,
        )

    def validate(self) -> None:
        """Raise LocalqError naming the first impossible number."""
        for name in ("parameters", "layers", "hidden_size", "heads", "kv_heads", "head_dim",
                     "intermediate_size", "context_length", "vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise LocalqError(f"bad model numbers for {self.name}: {name} is {value!r}",
                                  "it must be a positive whole number")
        if self.kv_heads > self.heads:
            raise LocalqError(f"bad model numbers for {self.name}: {self.kv_heads} KV heads "
                              f"but only {self.heads} attention heads")
        if self.parameters > 10**13 or self.context_length > 2**24 or self.layers > 10_000:
            raise LocalqError(f"bad model numbers for {self.name}: absurdly large",
                              f"parameters {self.parameters}, context {self.context_length}, layers {self.layers}")
        for tag, nbytes in self.file_sizes.items():
            if nbytes <= 0:
                raise LocalqError(f"bad model numbers for {self.name}: the {tag} file size is {nbytes}")

    @property
    def embedding_parameters(self) -> int:
        return self.vocab_size * self.hidden_size

    def kv_bytes(self, context: int) -> int:
        """The f16 KV cache for ``context`` tokens: keys and values of every layer."""
        return 2 * self.layers * context * self.kv_heads * self.head_dim * 2

    def narrow_rows(self) -> list[int]:
        """Weight row widths that are not a multiple of 256 (K-quants cannot pack them)."""
        widths = {self.hidden_size, self.intermediate_size, self.heads * self.head_dim}
        return sorted(w for w in widths if w % 256)

    def weight_bytes(self, quant: Quant) -> int:
        """The weights at ``quant``: the exact file size when known, else from bits per weight."""
        if quant.tag in self.file_sizes:
            return self.file_sizes[quant.tag]
        if quant.keeps_embeddings:
            embed = self.embedding_parameters
            return int(embed * 2 + (self.parameters - embed) * quant.bits / 8)
        return int(self.parameters * quant.bits / 8)

    def read_bytes(self, quant: Quant) -> int:
        """Weight bytes read per token: all but the embedding table (one row is looked up),
        unless the output layer shares it."""
        weights = self.weight_bytes(quant)
        if self.tie_embeddings:
            return weights
        per_weight = 2 if quant.keeps_embeddings else quant.bits / 8
        return int(weights - self.embedding_parameters * per_weight)


# --- plans -----------------------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    """A backend on a device, in the policy's order of preference (rank 0 first)."""

    backend: str        # "llamacpp", "mlx", "torch_int4"
    device: str         # "cpu", "cuda", "rocm", "vulkan", "metal"
    rank: int
    ready: bool         # installed, with this device's support
    why: str            # the policy's reason, a clause
    setup: str = ""     # what to install when not ready


@dataclass
class Plan:
    """One candidate: a backend and a quant, with its memory, speed and quality."""

    backend: str
    quant: str
    device: str                   # "cpu", "cuda", "metal", ... ; "cuda+cpu" for a split
    context: int
    weights_bytes: int
    kv_cache_bytes: int
    overhead_bytes: int
    gpu_bytes: int                # of the total, on the GPU (Apple: in unified memory)
    host_bytes: int               # of the total, in system RAM
    pool: str                     # "RAM", "VRAM", "VRAM+RAM", "unified memory"
    budget_bytes: int             # what the pool can give (the binding one for a split)
    fits: bool
    fits_now: bool                # also fits in what is free at this moment
    tokens_per_second: float
    ppl_delta: float
    quality_source: str
    ready: bool
    rank: int
    gpu_layers: int | None = None  # llama.cpp layers on the GPU (None: not llama.cpp on a GPU)
    setup: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.overhead_bytes

    @property
    def label(self) -> str:
        quant = QUANTS_BY_TAG[self.quant].label
        from localq.backends import backend_label

        return f"{quant} on {backend_label(self.backend)} ({self.device})"


@dataclass
class Recommendation:
    model: str
    context: int
    prefer: str
    choice: Plan | None
    reason: str                            # one sentence
    plans: list[Plan]                      # every candidate, fitting ones first, best first
    runnable_now: Plan | None = None       # the same as choice: only runnable plans are chosen
    warnings: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)
    largest_context: int | None = None     # when nothing fits: the longest context that would
    smaller_model: str | None = None       # when nothing fits, or too slowly: a catalog model that would
    smaller_model_plan: Plan | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# --- budgets ------------------------------------------------------------------------


def ram_budget(profile: HardwareProfile) -> tuple[int, int | None]:
    """(RAM a model may use, RAM free for it now). Swap is never counted."""
    total = profile.memory.total or 0
    reserve = max(RAM_RESERVE_MIN, int(total * RAM_RESERVE_SHARE))
    budget = max(total - reserve, 0)
    available = profile.memory.available
    now = None if available is None else max(min(available - RAM_FREE_MARGIN, budget), 0)
    return budget, now


def vram_budget(gpu: GpuInfo) -> tuple[int, int | None]:
    budget = int((gpu.memory_total or 0) * VRAM_USABLE_SHARE)
    now = None if gpu.memory_free is None else max(min(gpu.memory_free - VRAM_FREE_MARGIN, budget), 0)
    return budget, now


def apple_budget(profile: HardwareProfile) -> tuple[int, int | None]:
    """Unified memory the GPU may wire, bounded by what the system leaves."""
    ram, ram_now = ram_budget(profile)
    wired = profile.apple.wired_limit
    return min(wired, ram), (None if ram_now is None else min(wired, ram_now))


# --- the policy ---------------------------------------------------------------------


def _backend(profile: HardwareProfile, name: str):
    return profile.backends.get(name)


def backend_state(profile: HardwareProfile, name: str, device: str | None = None) -> tuple[bool, str]:
    """(runnable, why not and what to install) for backend ``name`` on ``device``.

    Runnable means: registered through the ``localq.backends`` entry points of
    this environment, its libraries found (the profile's probe says so) and the
    hardware suited (the profile's device). Nothing here names a backend: a
    backend that another package registers becomes runnable with no change.
    """
    from localq.probe.backends import INSTALL_ADVICE, not_registered, registered_backends

    if name not in registered_backends():
        return False, not_registered(name)
    info = _backend(profile, name)
    if info is None or not info.available:
        why = info.reason if info and info.reason else f"{name} was not found"
        advice = INSTALL_ADVICE.get(name)
        return False, why if not advice or advice in why else f"{why}; {advice}"
    if device is not None and info.device != device:
        return False, info.reason or f"{name} runs on {info.device} here, not {device}"
    return True, ""


def runtimes(profile: HardwareProfile) -> tuple[list[Runtime], list[str]]:
    """The backends this machine could use, best first, and the assumptions made.

    Each Runtime says whether it is runnable here (``ready``) and, when not,
    why and what to install (``setup``); ``choose`` picks only ready ones.
    """
    assumptions: list[str] = []
    found: list[Runtime] = []

    def add(backend: str, device: str, why: str, rebuild: str = "") -> None:
        ready, setup = backend_state(profile, backend, device)
        if not ready and rebuild and backend_state(profile, backend)[0]:
            setup = rebuild   # installed, but built for another device
        found.append(Runtime(backend, device, len(found), ready, why, setup))

    nvidia = profile.best_gpu("nvidia")
    amd = profile.best_gpu("amd")
    for part in ("nvidia", "amd", "apple"):
        if part in profile.unknowns:
            assumptions.append(f"no usable {part} GPU assumed: {profile.unknowns[part]}")
    for gpu in (nvidia, amd):
        if gpu and not gpu.memory_total:
            assumptions.append(f"{gpu.name}'s memory is unknown, so plans leave it out")
    nvidia = nvidia if nvidia and nvidia.memory_total else None
    amd = amd if amd and amd.memory_total else None
    rebuild = "reinstall llama-cpp-python built for it: CMAKE_ARGS='{}' pip install --force-reinstall --no-cache-dir llama-cpp-python"

    if profile.apple:
        chip = profile.apple.chip
        add("mlx", "metal", f"MLX is the native runtime on {chip}")
        add("llamacpp", "metal", f"llama.cpp runs on {chip}'s GPU through Metal", rebuild.format("-DGGML_METAL=on"))
    elif nvidia:
        cc = nvidia.cc
        cc_text = f"compute capability {nvidia.compute_capability}"
        if cc is not None and cc >= INT4_MIN_CC:
            add("torch_int4", "cuda", f"{nvidia.name} ({cc_text}) runs torch's INT4 kernels")
            why = f"llama.cpp offloads to {nvidia.name}"
        else:
            why = (f"llama.cpp runs on {nvidia.name} ({cc_text if cc else 'an unknown compute capability'}; "
                   "torch's INT4 kernels need 8.0)")
        add("llamacpp", "cuda", why, rebuild.format("-DGGML_CUDA=on"))
    elif amd:
        llama = _backend(profile, "llamacpp")
        device = "vulkan" if llama and llama.device == "vulkan" else "rocm"
        add("llamacpp", device, f"llama.cpp offloads to {amd.name}",
            rebuild.format("-DGGML_VULKAN=on" if device == "vulkan" else "-DGGML_HIP=on"))
    gpu_named = bool(found)
    add("llamacpp", "cpu", "llama.cpp is the runtime for CPUs" if not gpu_named else "llama.cpp can also run on the CPU")
    return found, assumptions


# --- estimating one plan ---------------------------------------------------------------


def _cpu_bandwidth(profile: HardwareProfile) -> float:
    return profile.bandwidth_gbps or ASSUMED_CPU_BANDWIDTH_GBPS


def _gpu(profile: HardwareProfile, runtime: Runtime) -> GpuInfo | None:
    vendor = {"cuda": "nvidia", "rocm": "amd", "vulkan": None}.get(runtime.device)
    return profile.best_gpu(vendor) if runtime.device in ("cuda", "rocm", "vulkan") else None


def compute_buffer_bytes(spec: ModelSpec) -> int:
    """The part of llama.cpp's CPU compute buffer a load really touches.

    llama.cpp reserves its compute buffer for the worst-case graph of one
    ``n_ubatch`` (512) batch: for SmolLM2-135M it logs "CPU compute buffer size =
    98.25 MiB", almost all of it the logits of 512 tokens x 49152 vocabulary in
    f32. On the CPU that reservation is virtual memory: only pages written count,
    and llama.cpp computes logits only for the tokens that need output (the last
    one of a prompt), while flash attention (``auto`` turns it on for the CPU)
    never builds the context x heads score matrix. What is written is one batch of
    f32 activations, about 4 hidden-size and 2 feed-forward-size rows per token
    (residual, norm, Q/K/V and attention output; gate and up), plus one row of
    logits. Checked by ``benchmarks/bench_estimates.py`` against ``localq bench``'s
    peak RSS for SmolLM2 Q4_1, Q8_0 and F16 at 512 to 8192 tokens.
    """
    activations = BATCH * (4 * spec.hidden_size + 2 * spec.intermediate_size) * 4
    return activations + spec.vocab_size * 4


def host_overhead_bytes(spec: ModelSpec) -> int:
    """Memory a CPU load takes besides weights and KV cache: the process and the compute buffer."""
    return RUNTIME_BASE + compute_buffer_bytes(spec)


def plan(profile: HardwareProfile, spec: ModelSpec, quant: Quant, runtime: Runtime, context: int,
         measured: dict[str, float] | None = None) -> Plan:
    """Estimate memory, fit, speed and quality of ``quant`` on ``runtime`` at ``context``."""
    weights = spec.weight_bytes(quant)
    kv = spec.kv_bytes(context)
    logits = BATCH * spec.vocab_size * 4
    read_weights = spec.read_bytes(quant)
    efficiency = EFFICIENCY[(runtime.backend, runtime.device)]
    cpu_rate = _cpu_bandwidth(profile) * 1e9 * EFFICIENCY[("llamacpp", "cpu")]
    gpu_layers = None
    notes: list[str] = []

    if runtime.device == "cpu":
        overhead = host_overhead_bytes(spec)
        gpu_bytes, host = 0, weights + kv + overhead
        pool = "RAM"
        budget, now = ram_budget(profile)
        fits, fits_now = host <= budget, now is None or host <= now
        seconds = (read_weights + kv) / cpu_rate
        device = "cpu"
    elif runtime.device == "metal":
        overhead = host_overhead_bytes(spec)
        gpu_bytes, host = weights + kv + overhead, 0
        pool = "unified memory"
        budget, now = apple_budget(profile)
        fits, fits_now = gpu_bytes <= budget, now is None or gpu_bytes <= now
        bandwidth = profile.apple.bandwidth_gbps or profile.bandwidth_gbps or ASSUMED_CPU_BANDWIDTH_GBPS
        seconds = (read_weights + kv) / (bandwidth * 1e9 * efficiency)
        device = "metal"
    else:
        gpu = _gpu(profile, runtime)
        overhead = RUNTIME_BASE + SCRATCH + logits + CUDA_CONTEXT
        on_gpu = weights + kv + SCRATCH + logits + CUDA_CONTEXT
        vram, vram_now = vram_budget(gpu)
        ram, ram_now = ram_budget(profile)
        gpu_rate = (gpu.peak_bandwidth_gbps or ASSUMED_GPU_BANDWIDTH_GBPS) * 1e9 * efficiency
        if on_gpu <= vram or runtime.backend != "llamacpp":
            gpu_bytes, host = on_gpu, RUNTIME_BASE
            fits = on_gpu <= vram and host <= ram
            fits_now = (vram_now is None or on_gpu <= vram_now) and (ram_now is None or host <= ram_now)
            pool, budget, device = "VRAM", vram, runtime.device
            seconds = (read_weights + kv) / gpu_rate
            if runtime.backend == "llamacpp":
                gpu_layers = spec.layers
        else:  # llama.cpp splits the layers: as many as fit on the GPU, the rest in RAM
            per_layer = (weights + kv) / spec.layers
            fixed = SCRATCH + logits + CUDA_CONTEXT
            room = vram if vram_now is None else vram_now  # what other programs leave on the card
            gpu_layers = max(0, min(spec.layers, int((room - fixed) // per_layer)))
            share = gpu_layers / spec.layers
            gpu_bytes = int(per_layer * gpu_layers + fixed)
            host = int(per_layer * (spec.layers - gpu_layers)) + RUNTIME_BASE
            fits = host <= ram
            fits_now = (ram_now is None or host <= ram_now) and (vram_now is None or gpu_bytes <= vram_now)
            pool, budget = "VRAM+RAM", ram
            device = f"{runtime.device}+cpu" if gpu_layers else "cpu"
            read = read_weights + kv
            seconds = read * share / gpu_rate + read * (1 - share) / cpu_rate
            notes.append(f"{gpu_layers} of {spec.layers} layers on the GPU, the rest in RAM")

    ppl, source = quant.ppl_delta, quant.quality_source
    if measured and quant.tag in measured:
        ppl, source = measured[quant.tag], "measured by localq eval"
    if quant.k_quant and spec.narrow_rows():
        notes.append(f"K-quant falls back (rows of {spec.narrow_rows()[0]})")
    return Plan(
        backend=runtime.backend, quant=quant.tag, device=device, context=context,
        weights_bytes=weights, kv_cache_bytes=kv, overhead_bytes=overhead,
        gpu_bytes=gpu_bytes, host_bytes=host, pool=pool, budget_bytes=budget,
        fits=fits, fits_now=fits and fits_now, tokens_per_second=round(1 / seconds, 2),
        ppl_delta=ppl, quality_source=source, ready=runtime.ready, rank=runtime.rank,
        gpu_layers=gpu_layers, setup="" if runtime.ready else runtime.setup, notes=notes,
    )


def offload_plan(profile: HardwareProfile, spec: ModelSpec, context: int) -> Plan | None:
    """The llama.cpp GPU plan for ``spec``'s own file at ``context``: the plan ``recommend``
    shows, whose ``gpu_layers`` the backend then loads with. None without a usable GPU."""
    quant = next((QUANTS_BY_TAG[t] for t in spec.file_sizes if t in QUANTS_BY_TAG), QUANTS_BY_TAG["q4_k_m"])
    for runtime in runtimes(profile)[0]:
        if runtime.backend == "llamacpp" and runtime.device != "cpu":
            return plan(profile, spec, quant, runtime, context)
    return None


def all_plans(profile: HardwareProfile, spec: ModelSpec, context: int, measured=None,
              quants: Iterable[str] | None = None) -> tuple[list[Plan], list[str]]:
    """Every candidate plan for the policy's runtimes, and the assumptions made."""
    found, assumptions = runtimes(profile)
    wanted = set(quants) if quants is not None else set(CANDIDATES)
    plans = [
        plan(profile, spec, quant, runtime, context, measured)
        for runtime in found
        for quant in QUANTS
        if quant.backend == runtime.backend and quant.tag in wanted
    ]
    return plans, assumptions


def _utility(p: Plan) -> float:
    return math.log(min(p.tokens_per_second, COMFORTABLE_TPS)) - p.ppl_delta / PPL_PER_LOG_SPEED


def choose(plans: list[Plan], prefer: str, floor: float = ACCEPTABLE_PPL_DELTA) -> Plan | None:
    """The plan ``prefer`` picks among the runnable plans that fit (see the module's docstring).

    Plans that lose more than ``floor`` perplexity (Q2_K) are never picked: a
    smaller model at a good quant serves better. Pass ``floor=math.inf`` when
    the user named the quant.
    """
    fitting = [p for p in plans if p.ready and p.fits and p.ppl_delta <= floor]
    if not fitting:
        return None
    if prefer == "quality":
        usable = [p for p in fitting if p.tokens_per_second >= SLOW_TPS] or fitting
        return min(usable, key=lambda p: (round(p.ppl_delta, 2), p.rank, -p.tokens_per_second))
    best_rank = min(p.rank for p in fitting)
    pool = [p for p in fitting if p.rank == best_rank]
    if prefer == "speed":
        return max(pool, key=lambda p: (p.tokens_per_second, -p.ppl_delta))
    return max(pool, key=lambda p: (round(_utility(p), 6), -p.ppl_delta))


# --- the recommendation ---------------------------------------------------------------


def find_model(ref: str):
    """The catalog model ``name:size`` (or a family's default); ModelNotFound with a suggestion."""
    from localq.catalog import find, load_catalog

    text = ref.strip().lower()
    name, _, size = text.partition(":")
    model = find(name, size or None) if name else None
    if model is not None:
        return model
    refs = [m.ref for m in load_catalog()] + sorted({m.name for m in load_catalog()})
    close = difflib.get_close_matches(text, refs, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}?" if close else "run `localq catalog` to list the known models"
    raise ModelNotFound(f"no model named {ref!r} in the catalog", hint)


def _spec(model) -> ModelSpec:
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, str):
        return ModelSpec.from_catalog(find_model(model))
    return ModelSpec.from_catalog(model)


def _check_context(spec: ModelSpec, context: int | None) -> int:
    if context is None:
        return min(DEFAULT_CONTEXT, spec.context_length)
    if isinstance(context, bool) or not isinstance(context, int):
        raise LocalqError(f"context must be a whole number of tokens, not {context!r}")
    if context < MIN_CONTEXT:
        raise LocalqError(f"context {context} is too small: a chat needs at least {MIN_CONTEXT} tokens",
                          f"use --ctx {DEFAULT_CONTEXT}")
    if context > spec.context_length:
        raise LocalqError(f"context {context} is longer than {spec.name}'s {spec.context_length} tokens",
                          f"use --ctx {spec.context_length} or less")
    return context


def _check_measured(measured: dict[str, float] | None) -> dict[str, float]:
    result = {}
    for tag, value in (measured or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not -1 < value < 1000:
            raise LocalqError(f"measured perplexity increase for {tag} is {value!r}, not a sane number")
        result[tag.lower()] = float(value)
    return result


def recommend(profile: HardwareProfile, model, context: int | None = None, prefer: str = "balanced",
              measured: dict[str, float] | None = None, quants: Iterable[str] | None = None,
              floor: float = ACCEPTABLE_PPL_DELTA) -> Recommendation:
    """Recommend how to run ``model`` (a CatalogModel, ModelSpec or ``name:size``) on ``profile``.

    ``measured`` maps quant tags to perplexity increases localq measured for this
    model (they replace the table's); ``quants`` limits the candidates (a pull
    offers only the quants its repository has); ``floor`` is the largest
    perplexity increase a choice may have (``math.inf`` when the user named the
    quant).
    """
    if prefer not in PREFERENCES:
        raise LocalqError(f"unknown preference {prefer!r}", "use quality, balanced or speed")
    spec = _spec(model)
    spec.validate()
    validate(profile)
    context = _check_context(spec, context)
    measured = _check_measured(measured)
    if quants is not None:
        quants = [q.lower() for q in quants]

    undecidable = _undecidable(profile)
    if undecidable:
        return Recommendation(spec.name, context, prefer, None, f"cannot decide because {undecidable}", [])

    plans, assumptions = all_plans(profile, spec, context, measured, quants)
    choice = choose(plans, prefer, floor)
    assumptions += _assumptions(profile, choice)
    plans.sort(key=lambda p: (not p.ready, not p.fits, p is not choice, p.rank, p.ppl_delta))
    rec = Recommendation(spec.name, context, prefer, choice, "", plans, choice, assumptions=assumptions)

    if choice is None:
        rec.largest_context = _largest_context(profile, spec, context, prefer, measured, quants, floor)
    if choice is None or choice.tokens_per_second < SLOW_TPS:
        rec.smaller_model, rec.smaller_model_plan = _smaller_model(profile, spec, context, prefer)
    rec.reason = _reason(rec, profile, spec)
    rec.warnings = _warnings(rec, spec)
    return rec


def _undecidable(profile: HardwareProfile) -> str | None:
    if profile.apple is None and not profile.memory.total:
        why = profile.unknowns.get("memory", "the probe did not report it")
        return f"the amount of RAM is unknown ({why})"
    return None


def _assumptions(profile: HardwareProfile, choice: Plan | None) -> list[str]:
    notes = []
    uses_cpu = choice is None or choice.device == "cpu" or choice.device.endswith("+cpu")
    if not profile.bandwidth_gbps and uses_cpu:
        why = profile.unknowns.get("bandwidth", "not measured")
        notes.append(f"memory bandwidth unknown ({why}); assumed {ASSUMED_CPU_BANDWIDTH_GBPS:g} GB/s")
    for gpu in filter(None, (profile.best_gpu("nvidia"), profile.best_gpu("amd"))):  # the ones plans use
        if gpu.memory_total and not gpu.peak_bandwidth_gbps:
            notes.append(f"{gpu.name}'s memory bandwidth unknown; assumed {ASSUMED_GPU_BANDWIDTH_GBPS:g} GB/s")
    if profile.apple and profile.apple.wired_limit_source.startswith("macOS default"):
        notes.append(f"Metal's wired limit estimated at {profile.apple.wired_limit_share:.0%} of unified memory")
    if profile.memory.available is None:
        notes.append("free RAM right now unknown; plans use total RAM minus a reserve")
    return notes


def _largest_context(profile, spec, context, prefer, measured, quants, floor) -> int | None:
    """The longest context (a multiple of 256) at which some plan fits, if any does."""
    def fits(ctx: int) -> bool:
        return choose(all_plans(profile, spec, ctx, measured, quants)[0], prefer, floor) is not None

    lo, hi = MIN_CONTEXT // 256, (context - 1) // 256
    if hi < lo or not fits(lo * 256):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid * 256) else (lo, mid - 1)
    return lo * 256


def _smaller_model(profile, spec, context, prefer) -> tuple[str | None, Plan | None]:
    """The largest smaller catalog model with a plan that fits and runs at a usable speed."""
    from localq.catalog import load_catalog

    def kin(m) -> tuple:
        prefix = re.match(r"[a-z]+", spec.family or spec.name.lower())
        same_family = m.name == spec.family
        same_line = bool(prefix) and m.name.startswith(prefix.group(0))
        return (not same_family, not same_line, -m.parameters)

    smaller = sorted((m for m in load_catalog() if m.parameters < spec.parameters), key=kin)
    for model in smaller:
        small = ModelSpec.from_catalog(model)
        plans, _ = all_plans(profile, small, min(context, small.context_length))
        choice = choose(plans, prefer)
        if choice and choice.tokens_per_second >= SLOW_TPS:
            return small.name, choice
    return None, None


def _reason(rec: Recommendation, profile: HardwareProfile, spec: ModelSpec) -> str:
    choice = rec.choice
    if choice is None:
        if not rec.plans:
            return f"no candidate quant is known for {spec.name}"
        fixes = []
        if rec.largest_context:
            fixes.append(f"--ctx {rec.largest_context} would fit")
        if rec.smaller_model:
            fixes.append(f"{rec.smaller_model} would fit")
        fix = f"; {' and '.join(fixes)}" if fixes else ""
        runnable = [p for p in rec.plans if p.ready]
        if not runnable:
            setups = sorted({f"{p.backend}: {p.setup}" for p in rec.plans if p.setup})
            return f"nothing can run {spec.name} here ({'; '.join(setups)})"
        poor = [p for p in runnable if p.fits]
        if poor:
            best = min(poor, key=lambda p: p.ppl_delta)
            return (f"{spec.name} fits at a {rec.context}-token context only as "
                    f"{QUANTS_BY_TAG[best.quant].label}, which loses too much quality "
                    f"({_quality(best)}){fix}")
        first = min(p.rank for p in runnable)
        preferred = [p for p in runnable if p.rank == first and p.ppl_delta <= ACCEPTABLE_PPL_DELTA]
        smallest = min(preferred or runnable, key=lambda p: _need(p) - p.budget_bytes)
        return (f"{spec.name} does not fit at a {rec.context}-token context: even "
                f"{QUANTS_BY_TAG[smallest.quant].label} needs {size(_need(smallest))} of {smallest.pool} "
                f"and {size(smallest.budget_bytes)} is usable{fix}")
    runtime = next(r for r in runtimes(profile)[0] if r.backend == choice.backend and r.rank == choice.rank)
    how = {
        "balanced": "the best balance of quality and speed that fits",
        "quality": "the highest-quality quant that fits",
        "speed": "the fastest quant of acceptable quality that fits",
    }[rec.prefer]
    where = f"{choice.gpu_layers} of {spec.layers} layers on the GPU" if choice.pool == "VRAM+RAM" else \
        f"{size(choice.total_bytes)} of {size(choice.budget_bytes)} usable {choice.pool}"
    why = runtime.why
    if choice.pool == "VRAM+RAM":
        why = "the model does not fit the GPU's memory, so llama.cpp splits it between GPU and RAM"
    return (f"{choice.label}: {why}, and {QUANTS_BY_TAG[choice.quant].label} is {how} "
            f"({where}, about {choice.tokens_per_second:.0f} tokens/s, {_quality(choice)}).")


def _need(p: Plan) -> int:
    """What a plan needs of the pool that binds it: RAM for a split, else the whole."""
    return p.host_bytes if p.pool == "VRAM+RAM" else p.total_bytes


def _quality(p: Plan) -> str:
    if p.quality_source.startswith("measured"):
        return f"+{p.ppl_delta:.3f} perplexity as measured"
    return f"+{p.ppl_delta:.2f} perplexity on Llama-3-8B"


def _warnings(rec: Recommendation, spec: ModelSpec) -> list[str]:
    warnings = []
    choice = rec.choice
    if choice and QUANTS_BY_TAG[choice.quant].k_quant and spec.narrow_rows():
        warnings.append(
            f"{spec.name} has weight rows of {', '.join(map(str, spec.narrow_rows()))} values, not a multiple "
            f"of 256, so llama.cpp's K-quants fall back to other types on those tensors ({K_QUANT_FALLBACK}): "
            f"{QUANTS_BY_TAG[choice.quant].label}'s size and quality differ from the table's"
        )
    if choice and not choice.fits_now:
        if choice.pool == "VRAM+RAM":
            need = f"{size(choice.gpu_bytes)} of VRAM and {size(choice.host_bytes)} of RAM"
        else:
            need = f"{size(_need(choice))} of {choice.pool}"
        warnings.append(f"needs {need}, more than is free right now: close other programs first")
    if choice and choice.tokens_per_second < SLOW_TPS:
        better = ""
        if rec.smaller_model_plan:
            better = (f"; {rec.smaller_model} would run at about "
                      f"{rec.smaller_model_plan.tokens_per_second:.0f} tokens/s")
        warnings.append(f"about {choice.tokens_per_second:.1f} tokens/s is slow for chat{better}")
    return warnings


def pullable_quants(model) -> list[str] | None:
    """The candidate quants a pull of catalog ``model`` can fetch: the GGUF quants its
    repository holds (all candidates when the catalog did not record them) and its
    MLX repositories' quants; never INT4, which is made locally, not downloaded."""
    gguf = list(getattr(model, "gguf_quants", ()) or [q.tag for q in QUANTS if q.backend == "llamacpp"])
    mlx = list(getattr(model, "mlx_repos", {}) or {})
    return [tag for tag in CANDIDATES if tag in gguf or tag in mlx]


def recommend_pull(profile: HardwareProfile, model, available_quants=None, context: int | None = None,
                   prefer: str = "balanced") -> Recommendation:
    """The recommendation a pull acts on, shared by ``localq pull`` and the app's Discover.

    Among the quants that can be fetched: ``available_quants`` (a repository's
    listing: tags, or tag -> bytes for exact sizes) when given, else the
    catalog's record (``pullable_quants``).
    """
    if isinstance(model, str):
        model = find_model(model)
    spec = _spec(model)
    if available_quants is None:
        quants = pullable_quants(model) if not isinstance(model, ModelSpec) else None
        return recommend(profile, spec, context, prefer, quants=quants)
    offered = [q.lower() for q in available_quants]
    if isinstance(available_quants, dict):
        sizes = {tag.lower(): int(n) for tag, n in available_quants.items() if n and tag.lower() in QUANTS_BY_TAG}
        spec = ModelSpec(**{**asdict(spec), "file_sizes": {**spec.file_sizes, **sizes}})
    return recommend(profile, spec, context, prefer, quants=[q for q in offered if q in QUANTS_BY_TAG])


def choose_quant_for_pull(profile: HardwareProfile, model, available_quants,
                          context: int | None = None, prefer: str = "balanced") -> str | None:
    """The quant ``localq pull`` should fetch, among those the repository offers.

    ``available_quants`` is a list of quant tags, or a dict of tag -> bytes
    (then the exact sizes replace the estimates). Returns the entry as given
    (its case kept), or None when localq cannot decide: no model numbers
    (``model`` is None, as for a Hub repository outside the catalog) or no quant
    it can size; the caller then falls back to its default. Raises LocalqError
    when none of the offered quants fits this machine: pulling gigabytes that
    cannot run helps no one, and naming a quant overrides it.
    """
    if model is None:
        return None
    offered = {q.lower(): q for q in available_quants}
    known = [tag for tag in offered if tag in QUANTS_BY_TAG]
    if not known:
        return None
    rec = recommend_pull(profile, model, available_quants, context, prefer)
    if rec.choice is None:
        raise LocalqError(f"none of the offered quants of {rec.model} fits this machine: {rec.reason}",
                          "name a quant explicitly to pull it anyway")
    return offered[rec.choice.quant]
