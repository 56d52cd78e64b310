"""The estimates for one plan (a backend and a quant on this machine): memory, fit, speed, quality.

``ModelSpec`` holds a model's numbers, ``plan()`` turns them and a ``Runtime`` into a ``Plan``;
the budgets say how much RAM, VRAM or unified memory a model may use.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from localq.errors import LocalqError
from localq.probe.profile import GpuInfo, HardwareProfile
from localq.units import GiB, MiB
from localq.recommend.quants import QUANTS_BY_TAG, Quant


# Share of the bandwidth a backend turns into decoding, localq's estimates. CPU:
# of the *measured* copy bandwidth (already an achieved figure). GPUs: of the data
# sheet's peak. torch INT4: measured, localq's Triton kernel decoding a
# Llama-3.1-8B-shaped model on an H200 (4.8 TB/s data-sheet peak;
# benchmarks/bench_torch_int4_gpu.py): 2,103 GB/s at g128 (0.44), 1,910 at g64
# (0.40); 0.42 lies between them.
EFFICIENCY = {
    ("llamacpp", "cpu"): 0.8,
    ("llamacpp", "cuda"): 0.6,
    ("llamacpp", "rocm"): 0.5,
    ("llamacpp", "vulkan"): 0.5,
    ("llamacpp", "metal"): 0.6,
    ("mlx", "metal"): 0.65,
    ("mlx", "cpu"): 0.02,   # measured: mlx 0.32's CPU build, SmolLM2-135M mlx-4bit, 1-2 tokens/s on 2 x86 cores
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
    speed_source: str = "estimated"  # or "measured by localq bench", "estimated, calibrated from ..."
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.overhead_bytes

    @property
    def label(self) -> str:
        quant = QUANTS_BY_TAG[self.quant].label
        from localq.backends import backend_label

        return f"{quant} on {backend_label(self.backend)} ({self.device})"


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


@dataclass(frozen=True)
class Speeds:
    """What ``localq bench`` measured on this machine (``localq.calibration`` reads it).

    ``measured``: (backend, device, quant) -> decode tokens/s of this model;
    ``efficiency``: (backend, device) -> the efficiency factor calibrated from
    this machine's benchmarks, replacing ``EFFICIENCY``'s default; ``benchmarks``:
    how many benchmarks each factor came from (said in the explanation).
    """

    measured: dict = field(default_factory=dict)
    efficiency: dict = field(default_factory=dict)
    benchmarks: dict = field(default_factory=dict)


def _efficiency(key: tuple[str, str], speeds: Speeds | None) -> float:
    return (speeds.efficiency.get(key) if speeds else None) or EFFICIENCY[key]


def _speed_source(key: tuple[str, str], speeds: Speeds | None) -> str:
    if speeds and key in speeds.efficiency:
        n = speeds.benchmarks.get(key, 0)
        return f"estimated with {key[0]}'s efficiency calibrated from {n} benchmark{'s' * (n != 1)} on this machine"
    return "estimated"


def plan(profile: HardwareProfile, spec: ModelSpec, quant: Quant, runtime: Runtime, context: int,
         measured: dict[str, float] | None = None, speeds: Speeds | None = None) -> Plan:
    """Estimate memory, fit, speed and quality of ``quant`` on ``runtime`` at ``context``.

    With ``speeds``, a decode speed ``localq bench`` measured for this quant on
    this backend and device replaces the estimate, and calibrated efficiency
    factors replace the defaults.
    """
    weights = spec.weight_bytes(quant)
    kv = spec.kv_bytes(context)
    logits = BATCH * spec.vocab_size * 4
    read_weights = spec.read_bytes(quant)
    efficiency = _efficiency((runtime.backend, runtime.device), speeds)
    cpu_rate = _cpu_bandwidth(profile) * 1e9 * _efficiency(("llamacpp", "cpu"), speeds)
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
    tps, speed_source = round(1 / seconds, 2), _speed_source((runtime.backend, runtime.device), speeds)
    bench_tps = speeds.measured.get((runtime.backend, runtime.device, quant.tag)) if speeds else None
    if bench_tps:
        tps, speed_source = round(float(bench_tps), 2), "measured by localq bench"
    return Plan(
        backend=runtime.backend, quant=quant.tag, device=device, context=context,
        weights_bytes=weights, kv_cache_bytes=kv, overhead_bytes=overhead,
        gpu_bytes=gpu_bytes, host_bytes=host, pool=pool, budget_bytes=budget,
        fits=fits, fits_now=fits and fits_now, tokens_per_second=tps,
        ppl_delta=ppl, quality_source=source, ready=runtime.ready, rank=runtime.rank,
        gpu_layers=gpu_layers, setup="" if runtime.ready else runtime.setup, notes=notes,
        speed_source=speed_source,
    )
