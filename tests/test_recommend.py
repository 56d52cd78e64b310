"""The recommender: recorded and modelled machines x catalog models, the estimates, and bad input."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from click.testing import CliRunner

from localq.catalog import find
from localq.cli import cli
from localq.errors import LocalqError, ModelNotFound
from localq.recommend import (
    LLAMA3_8B_PARAMETERS, QUANTS_BY_TAG, ModelSpec, choose_quant_for_pull, find_model, ram_budget, recommend,
)
from recorded_machines import MACHINES, desktop_4090, laptop_8gb, m2_16gb, pi5_8gb

GiB = 2**30
MiB = 2**20

# machine, model, preference, backend, acceptable quants, device, the policy that leads there
CHOICES = [
    ("laptop-8gb", "llama3.1:8b", "balanced", "llamacpp", {"q4_k_m"}, "cpu",
     "no GPU: llama.cpp on the CPU; Q4_K_M (5.8 GiB) fits the 6.1 GiB beside the system, Q8_0 (9.2 GiB) does not"),
    ("laptop-8gb", "qwen2.5:7b", "balanced", "llamacpp", {"q4_k_m"}, "cpu",
     "Q4_K_M beats Q4_0 (-0.29 ppl for 5% speed) and Q5_K_M (-0.12 ppl for 14% speed) on a CPU"),
    ("laptop-8gb", "llama3.2:3b", "balanced", "llamacpp", {"q4_k_m", "q5_k_m"}, "cpu",
     "a 3B leaves room; the CPU's speed still keeps it at 4-5 bits"),
    ("laptop-8gb", "smollm2:135m", "balanced", "llamacpp", {"q8_0", "f16"}, "cpu",
     "a tiny model outruns its reader at 8 bits and more: no reason to lose quality"),
    ("laptop-8gb", "llama3.1:8b", "speed", "llamacpp", {"q3_k_m", "q4_0"}, "cpu",
     "speed: the fastest quant that keeps the perplexity increase under 0.7 (never Q2_K)"),
    ("m2-16gb", "llama3.1:8b", "balanced", "mlx", {"mlx-4bit"}, "metal",
     "Apple Silicon: MLX; mlx-8bit fits Metal's 10.7 GiB but runs at half the speed"),
    ("m2-16gb", "qwen2.5:14b", "balanced", "mlx", {"mlx-4bit"}, "metal",
     "a 14B fits Metal's wired limit only at 4 bits"),
    ("m2-16gb", "gemma2:9b", "balanced", "mlx", {"mlx-4bit"}, "metal", "MLX 4-bit for a 9B on 16 GB"),
    ("m2-16gb", "llama3.2:3b", "quality", "mlx", {"mlx-8bit"}, "metal",
     "quality on a small model: 8 bits on MLX (ties with Q8_0 go to the policy's backend)"),
    ("rtx4090-24gb", "llama3.1:8b", "balanced", "torch_int4", {"int4-g32"}, "cuda",
     "NVIDIA with compute capability 8.9: torch INT4; far above 30 tokens/s, so the finest groups"),
    ("rtx4090-24gb", "qwen2.5:14b", "balanced", "torch_int4", {"int4-g32"}, "cuda", "a 14B in 24 GB as INT4"),
    ("rtx4090-24gb", "llama3.1:8b", "quality", "llamacpp", {"q8_0", "f16"}, "cuda",
     "quality: 8 bits or more through llama.cpp's CUDA offload beats any INT4"),
    ("rtx4090-24gb", "llama3.1:8b", "speed", "torch_int4", {"int4-g128"}, "cuda", "speed: the coarsest INT4 groups"),
    ("h100-80gb", "llama3.1:8b", "balanced", "torch_int4", {"int4-g32"}, "cuda",
     "H100 (compute capability 9.0): torch INT4 at its finest groups"),
    ("h100-80gb", "llama3.1:8b", "quality", "torch_int4", {"int4-g32"}, "cuda",
     "quality on this H100: llama.cpp is not installed, so the best INT4 of torch, which is"),
    ("h100-80gb", "gemma2:9b", "balanced", "torch_int4", {"int4-g32"}, "cuda", "as for the 8B"),
    ("h100-80gb", "smollm2:135m", "balanced", "torch_int4", {"int4-g32"}, "cuda", "the policy holds for tiny models"),
    ("pi5-8gb", "llama3.2:3b", "balanced", "llamacpp", {"q4_k_m"}, "cpu", "a 3B at Q4 is the Pi's sweet spot"),
    ("pi5-8gb", "llama3.2:1b", "balanced", "llamacpp", {"q4_k_m", "q5_k_m"}, "cpu", "a 1B at 4-5 bits"),
    ("pi5-8gb", "llama3.1:8b", "balanced", "llamacpp", {"q3_k_m", "q4_0", "q4_k_m"}, "cpu",
     "an 8B on the Pi: Q3/Q4 in RAM (never swap), and a smaller model suggested for speed"),
]


# Where the policy's backend is not registered in this environment (no mlx or torch_int4
# backend ships with this localq version), the choice is the runnable alternative:
# (backend, quants, device), or None when nothing recorded on that machine runs here.
FALLBACKS = {
    ("m2-16gb", "llama3.1:8b", "balanced"): ("llamacpp", {"q4_k_m"}, "metal"),
    ("m2-16gb", "qwen2.5:14b", "balanced"): ("llamacpp", {"q3_k_m", "q4_0", "q4_k_m"}, "metal"),
    ("m2-16gb", "gemma2:9b", "balanced"): ("llamacpp", {"q4_k_m", "q4_0"}, "metal"),
    ("m2-16gb", "llama3.2:3b", "quality"): ("llamacpp", {"q8_0", "f16"}, "metal"),
    ("rtx4090-24gb", "llama3.1:8b", "balanced"): ("llamacpp", {"q8_0", "f16"}, "cuda"),
    ("rtx4090-24gb", "qwen2.5:14b", "balanced"): ("llamacpp", {"q6_k", "q8_0"}, "cuda"),
    ("rtx4090-24gb", "llama3.1:8b", "speed"): ("llamacpp", {"q3_k_m", "q4_0"}, "cuda"),
    # the H100 was probed with no llama-cpp-python installed: torch INT4 or nothing
    ("h100-80gb", "llama3.1:8b", "balanced"): None,
    ("h100-80gb", "llama3.1:8b", "quality"): None,
    ("h100-80gb", "gemma2:9b", "balanced"): None,
    ("h100-80gb", "smollm2:135m", "balanced"): None,
}


@pytest.mark.parametrize("machine, model, prefer, backend, quants, device, policy", CHOICES,
                         ids=[f"{r[0]}-{r[1]}-{r[2]}" for r in CHOICES])
def test_the_choice_a_knowledgeable_user_would_make(machine, model, prefer, backend, quants, device, policy):
    from localq.probe.backends import registered_backends

    profile = MACHINES[machine]()
    rec = recommend(profile, model, prefer=prefer)
    choice = rec.choice
    if backend not in registered_backends():
        fallback = FALLBACKS[(machine, model, prefer)]
        if fallback is None:
            assert choice is None and rec.reason.startswith(f"nothing can run {model} here")
            assert "not part of this localq version" in rec.reason
            return
        backend, quants, device = fallback
        policy += f" ({backend} because the policy's first backend is not registered here)"
    assert choice is not None, rec.reason
    assert (choice.backend, choice.device) == (backend, device), f"{policy}: {rec.reason}"
    assert choice.quant in quants, f"{policy}: {rec.reason}"
    assert choice.fits and choice.ready
    assert rec.reason.startswith(choice.label)
    assert rec.context == 4096


def test_8b_on_the_8gb_laptop_is_q4_k_m_not_q8_0():
    rec = recommend(laptop_8gb(), "llama3.1:8b")
    plans = {p.quant: p for p in rec.plans}
    budget, _ = ram_budget(laptop_8gb())
    assert plans["q4_k_m"].total_bytes <= budget < plans["q8_0"].total_bytes
    assert not plans["q8_0"].fits
    # the modelled laptop has only 4.6 GiB free right now: fits, but say so
    assert any("more than is free right now" in w for w in rec.warnings)


def test_the_pi_never_gets_a_swap_bound_plan():
    profile = pi5_8gb()
    profile.memory.swap_total = profile.memory.swap_free = 64 * GiB  # a huge swap file changes nothing
    budget, _ = ram_budget(profile)
    assert budget < profile.memory.total
    for model in ("llama3.1:8b", "qwen2.5:7b", "phi3.5:3.8b", "gemma2:9b", "qwen2.5:14b"):
        rec = recommend(profile, model)
        if rec.choice:
            assert rec.choice.host_bytes <= budget
        assert all(p.fits == (p.host_bytes <= budget) for p in rec.plans)


def test_slow_plans_suggest_a_smaller_model():
    rec = recommend(pi5_8gb(), "llama3.1:8b")
    assert rec.choice.tokens_per_second < 2
    assert rec.smaller_model == "llama3.2:3b"  # the same line of models first, the largest that runs usably
    assert rec.smaller_model_plan.fits and rec.smaller_model_plan.tokens_per_second >= 2
    assert any("slow for chat; llama3.2:3b would run at about" in w for w in rec.warnings)


def test_nothing_fits_names_a_smaller_model():
    rec = recommend(pi5_8gb(), "qwen2.5:14b", context=16384)
    assert rec.choice is None
    assert rec.smaller_model == "qwen2.5:3b"
    assert rec.reason.startswith("qwen2.5:14b does not fit at a 16384-token context: even ")
    assert rec.reason.endswith("qwen2.5:3b would fit")


def test_nothing_fits_names_the_largest_context_that_would():
    profile = m2_16gb()
    rec = recommend(profile, "llama3.1:8b", context=131072)
    assert rec.choice is None
    assert "needs" in rec.reason and "unified memory" in rec.reason
    ctx = rec.largest_context
    assert ctx and ctx % 256 == 0 and 8192 < ctx < 131072
    assert recommend(profile, "llama3.1:8b", context=ctx).choice is not None
    assert recommend(profile, "llama3.1:8b", context=ctx + 256).choice is None
    assert f"--ctx {ctx} would fit" in rec.reason


def test_only_q2_k_fitting_is_not_a_plan():
    rec = recommend(laptop_8gb(), "gemma2:9b", context=6144)   # Q3_K_M's KV cache no longer fits
    assert rec.choice is None
    assert rec.reason.startswith("gemma2:9b fits at a 6144-token context only as Q2_K, which loses too much quality")
    assert rec.smaller_model == "gemma2:2b"
    # naming the quant is the user's call: then it is planned
    named = recommend(laptop_8gb(), "gemma2:9b", context=6144, quants=["q2_k"], floor=math.inf)
    assert named.choice.quant == "q2_k"


def test_short_vram_means_llama_cpp_with_partial_offload():
    profile = desktop_4090()  # derived: the same desktop with an 8 GB card instead of the 4090
    gpu = profile.gpus[0]
    gpu.name, gpu.memory_total, gpu.memory_free = "NVIDIA GeForce RTX 4060", 8 * GiB, 7 * GiB
    gpu.bus_width_bits, gpu.peak_bandwidth_gbps = 128, 272.0
    rec = recommend(profile, "qwen2.5:14b")
    choice = rec.choice
    assert (choice.backend, choice.device, choice.pool) == ("llamacpp", "cuda+cpu", "VRAM+RAM")
    assert 0 < choice.gpu_layers < 48
    assert choice.gpu_bytes <= 7 * GiB  # the layers that fit in what the card has free
    assert "splits it between GPU and RAM" in rec.reason
    int4 = [p for p in rec.plans if p.backend == "torch_int4"]
    assert int4 and not any(p.fits for p in int4)


def test_only_runnable_plans_are_chosen_and_the_rest_say_why():
    from localq.probe.backends import registered_backends

    profile = desktop_4090()   # its recording says torch (CUDA) and llama.cpp (CUDA) are installed
    rec = recommend(profile, "llama3.1:8b")
    assert rec.choice.ready and rec.choice.backend in registered_backends()
    int4 = [p for p in rec.plans if p.backend == "torch_int4"]
    assert int4
    if "torch_int4" not in registered_backends():
        assert all(not p.ready for p in int4)
        # the install advice is true: no extra can add a backend this version lacks
        assert all(p.setup.startswith("the torch INT4 backend is not part of this localq version") for p in int4)
        assert not any("localq[torch]" in p.setup for p in int4)
    # a registered backend whose library is missing says what to install
    profile.backends["llamacpp"] = dataclasses.replace(profile.backends["llamacpp"], available=False,
                                                       reason="llama-cpp-python is not installed")
    rec = recommend(profile, "llama3.1:8b")
    llama = [p for p in rec.plans if p.backend == "llamacpp"]
    assert all(not p.ready and p.setup == "llama-cpp-python is not installed; pip install 'localq[llamacpp]'" for p in llama)
    assert rec.choice is None or rec.choice.backend != "llamacpp"


def test_a_cpu_only_llama_cpp_on_a_gpu_machine_runs_on_the_cpu_and_says_how_to_offload():
    from recorded_machines import h200_141gb

    profile = h200_141gb()   # the recorded H200, with the backends of this test environment
    rec = recommend(profile, "llama3.1:8b")
    llama = profile.backends["llamacpp"]
    if llama.available and llama.device == "cpu":
        assert (rec.choice.backend, rec.choice.device) == ("llamacpp", "cpu")
        cuda = [p for p in rec.plans if p.backend == "llamacpp" and p.device.startswith("cuda")]
        assert cuda and all(not p.ready and "CMAKE_ARGS='-DGGML_CUDA=on'" in p.setup for p in cuda)
    for p in rec.plans:
        assert p.ready == (p.setup == "")


MLX_PLUGIN = """
from localq.backends.base import Backend


class PluginMlx(Backend):
    name = "mlx"
    formats = ("mlx",)

    def available(self, profile=None):
        return True, ""

    def load(self, model, options=None, profile=None):
        raise NotImplementedError
"""


def test_a_backend_registered_by_another_package_becomes_runnable_with_no_change(tmp_path, monkeypatch):
    """A real distribution on sys.path registers ``mlx`` through the entry points, as the MLX
    backend's package will: the M2's MLX plans become the choice, as the policy says."""
    (tmp_path / "plugin_mlx.py").write_text(MLX_PLUGIN)
    dist = tmp_path / "plugin_mlx-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-mlx\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[localq.backends]\nmlx = plugin_mlx:PluginMlx\n")
    before = recommend(m2_16gb(), "llama3.1:8b").choice
    monkeypatch.syspath_prepend(str(tmp_path))
    from localq.probe.backends import registered_backends

    assert "mlx" in registered_backends()
    after = recommend(m2_16gb(), "llama3.1:8b").choice
    assert (after.backend, after.quant, after.device) == ("mlx", "mlx-4bit", "metal")
    assert before.backend == "llamacpp" or before.backend == "mlx"


def test_gqa_counts_in_the_kv_cache():
    llama = ModelSpec.from_catalog(find("llama3.1", "8b"))  # 8 KV heads of 128
    phi = ModelSpec.from_catalog(find("phi3.5", "3.8b"))    # 32 KV heads of 96: no GQA
    assert llama.kv_bytes(4096) == 2 * 32 * 4096 * 8 * 128 * 2 == 512 * MiB
    assert phi.kv_bytes(4096) == 2 * 32 * 4096 * 32 * 96 * 2 == 1536 * MiB


def test_weights_follow_llama_cpp_quantize_table():
    llama = ModelSpec.from_catalog(find("llama3.1", "8b"))
    assert llama.parameters == LLAMA3_8B_PARAMETERS
    for tag, gib in (("q4_k_m", 4.58), ("q8_0", 7.96), ("q6_k", 6.14), ("q2_k", 2.96)):
        assert llama.weight_bytes(QUANTS_BY_TAG[tag]) == pytest.approx(gib * GiB, rel=0.002)
    bits = {tag: QUANTS_BY_TAG[tag].bits for tag in ("q4_k_m", "q8_0", "q6_k", "q5_k_m", "q3_k_m")}
    assert bits == {"q4_k_m": 4.9, "q8_0": 8.51, "q6_k": 6.57, "q5_k_m": 5.7, "q3_k_m": 4.0}
    # torch INT4 keeps the embedding in bf16
    g32 = llama.weight_bytes(QUANTS_BY_TAG["int4-g32"])
    embed = 128256 * 4096
    assert g32 == embed * 2 + (llama.parameters - embed) * 5 // 8


def test_exact_file_sizes_replace_the_estimate():
    spec = dataclasses.replace(ModelSpec.from_catalog(find("llama3.1", "8b")), file_sizes={"q4_k_m": 4_920_739_232})
    assert spec.weight_bytes(QUANTS_BY_TAG["q4_k_m"]) == 4_920_739_232
    plan = next(p for p in recommend(laptop_8gb(), spec).plans if p.quant == "q4_k_m")
    assert plan.weights_bytes == 4_920_739_232


def test_a_measured_quality_replaces_the_table():
    rec = recommend(laptop_8gb(), "llama3.1:8b", measured={"q4_0": 0.01})
    assert rec.choice.quant == "q4_0"  # now as good as Q4_K_M by measurement, and faster
    assert rec.choice.quality_source == "measured by localq eval"
    assert "measured on this model" in rec.reason


def test_the_choice_does_not_flip_on_bandwidth_noise():
    # Two probes of one laptop measured 17 and 23 GB/s; with no margin the choice
    # flipped between Q6_K (at 17) and Q8_0 (at 23).
    choices = {bw: recommend(dataclasses.replace(laptop_8gb(), bandwidth_gbps=bw), "smollm2:360m").choice.quant
               for bw in (17.0, 20.0, 23.0)}
    assert len(set(choices.values())) == 1, choices


def test_quality_says_which_model_it_was_measured_on():
    from localq.recommend import quality_note

    rec = recommend(laptop_8gb(), "smollm2:135m")
    assert rec.choice.quality_source.startswith("llama.cpp quantize table")
    assert "not on this model" in rec.reason
    assert "measured on Llama-3-8B" in rec.reason or "measured on Mistral-7B" in rec.reason
    note = quality_note(rec.plans, rec.model)
    assert "none measured on smollm2:135m" in note and "Q4_K_M" in note and "Llama-3-8B" in note
    mine = recommend(laptop_8gb(), "smollm2:135m", measured={"q8_0": 0.05}, quants=["q8_0", "q4_0"])
    assert "Q8_0: measured on this model" in quality_note(mine.plans, mine.model)
    assert "none measured" not in quality_note(mine.plans, mine.model)


def test_smollm2_warns_that_k_quants_fall_back():
    rec = recommend(laptop_8gb(), "smollm2:135m", quants=["q4_k_m"])
    assert rec.choice.quant == "q4_k_m"
    [warning] = rec.warnings
    assert warning.startswith("smollm2:135m has weight rows of 576 values, not a multiple of 256, "
                              "so llama.cpp's K-quants fall back")
    assert "Q4_K -> Q5_0" in warning
    assert "K-quant falls back (rows of 576)" in rec.choice.notes
    llama = recommend(laptop_8gb(), "llama3.1:8b")  # 4096 and 14336 are multiples of 256
    assert llama.choice.quant == "q4_k_m" and not any("K-quants" in w for w in llama.warnings)


def test_a_gguf_file_is_sized_exactly(smollm2_gguf):
    from localq.gguf_info import read_gguf_info

    info = read_gguf_info(smollm2_gguf)
    spec = ModelSpec.from_gguf_info(info)
    assert (spec.layers, spec.hidden_size, spec.heads, spec.kv_heads, spec.vocab_size) == (30, 576, 9, 3, 49152)
    rec = recommend(pi5_8gb(), spec, quants=list(spec.file_sizes))
    assert rec.choice.quant == "q4_1"
    assert rec.choice.weights_bytes == info.tensor_bytes


def test_choose_quant_for_pull():
    offered = ["Q2_K", "Q4_K_M", "Q8_0", "IQ4_XS"]
    assert choose_quant_for_pull(laptop_8gb(), find("llama3.1", "8b"), offered) == "Q4_K_M"
    assert choose_quant_for_pull(desktop_4090(), find("llama3.1", "8b"), offered) == "Q8_0"
    sizes = {"q4_k_m": 4_920_739_232, "q5_k_m": 5_732_992_416}
    assert choose_quant_for_pull(laptop_8gb(), find("llama3.1", "8b"), sizes) == "q4_k_m"
    assert choose_quant_for_pull(laptop_8gb(), None, offered) is None  # no model numbers: the caller decides
    assert choose_quant_for_pull(laptop_8gb(), find("llama3.1", "8b"), ["IQ4_XS"]) is None
    with pytest.raises(LocalqError, match="none of the offered quants of qwen2.5:14b fits this machine"):
        choose_quant_for_pull(pi5_8gb(), find("qwen2.5", "14b"), ["q8_0"])


# --- unknown parts -------------------------------------------------------------


def test_unknown_ram_means_cannot_decide():
    profile = laptop_8gb()
    profile.memory.total = profile.memory.available = None
    profile.unknowns["memory"] = "PermissionError: [Errno 13] Permission denied: '/proc/meminfo'"
    rec = recommend(profile, "llama3.1:8b")
    assert rec.choice is None
    assert rec.reason == ("cannot decide because the amount of RAM is unknown "
                          "(PermissionError: [Errno 13] Permission denied: '/proc/meminfo')")


def test_unknown_bandwidth_is_a_stated_assumption():
    profile = laptop_8gb()
    profile.bandwidth_gbps = None
    profile.unknowns["bandwidth"] = "MemoryError"
    rec = recommend(profile, "llama3.1:8b")
    assert rec.choice.quant == "q4_k_m"
    assert "memory bandwidth unknown (MemoryError); assumed 20 GB/s" in rec.assumptions


def test_an_unreadable_gpu_is_left_out_with_the_reason():
    profile = laptop_8gb()
    profile.unknowns["nvidia"] = "an NVIDIA GPU is on the PCI bus, but neither nvidia-ml-py nor nvidia-smi is installed"
    rec = recommend(profile, "llama3.1:8b")
    assert rec.choice.device == "cpu"
    assert rec.assumptions[0].startswith("no usable nvidia GPU assumed: an NVIDIA GPU is on the PCI bus")


def test_apple_assumptions_are_stated():
    rec = recommend(m2_16gb(), "llama3.1:8b")
    assert "Metal's wired limit estimated at 67% of unified memory" in rec.assumptions
    assert "free RAM right now unknown; plans use total RAM minus a reserve" in rec.assumptions


# --- bad input -------------------------------------------------------------------


def test_unknown_model_suggests_close_names():
    with pytest.raises(ModelNotFound) as err:
        find_model("lama3.1:8b")
    assert err.value.message == "no model named 'lama3.1:8b' in the catalog"
    assert err.value.hint.startswith("did you mean llama3.1:8b")
    with pytest.raises(ModelNotFound) as err:
        recommend(laptop_8gb(), "zzz:1b")
    assert err.value.hint == "run `localq catalog` to list the known models"


@pytest.mark.parametrize("context, message, hint", [
    (200_000, "context 200000 is longer than llama3.1:8b's 131072 tokens", "use --ctx 131072 or less"),
    (-5, "context -5 is too small: a chat needs at least 256 tokens", "use --ctx 4096"),
    (0, "context 0 is too small: a chat needs at least 256 tokens", "use --ctx 4096"),
    (4096.5, "context must be a whole number of tokens, not 4096.5", None),
])
def test_bad_contexts(context, message, hint):
    with pytest.raises(LocalqError) as err:
        recommend(laptop_8gb(), "llama3.1:8b", context=context)
    assert (err.value.message, err.value.hint) == (message, hint)


def test_bad_preference():
    with pytest.raises(LocalqError, match="unknown preference 'fast'"):
        recommend(laptop_8gb(), "llama3.1:8b", prefer="fast")


@pytest.mark.parametrize("change, message", [
    ({"layers": 0}, "bad model numbers for llama3.1:8b: layers is 0"),
    ({"parameters": -8}, "bad model numbers for llama3.1:8b: parameters is -8"),
    ({"kv_heads": 64}, "bad model numbers for llama3.1:8b: 64 KV heads but only 32 attention heads"),
    ({"parameters": 10**15}, "bad model numbers for llama3.1:8b: absurdly large"),
    ({"file_sizes": {"q4_k_m": -1}}, "bad model numbers for llama3.1:8b: the q4_k_m file size is -1"),
])
def test_absurd_model_numbers(change, message):
    spec = dataclasses.replace(ModelSpec.from_catalog(find("llama3.1", "8b")), **change)
    with pytest.raises(LocalqError) as err:
        recommend(laptop_8gb(), spec)
    assert err.value.message == message


def test_absurd_measurements_and_profiles():
    with pytest.raises(LocalqError, match="measured perplexity increase for q4_k_m is nan"):
        recommend(laptop_8gb(), "llama3.1:8b", measured={"q4_k_m": float("nan")})
    profile = laptop_8gb()
    profile.memory.total = -8 * GiB
    with pytest.raises(LocalqError, match=r"bad hardware profile: memory.total is negative"):
        recommend(profile, "llama3.1:8b")


def test_recommendation_is_json():
    data = json.loads(json.dumps(recommend(m2_16gb(), "llama3.1:8b").to_dict()))
    assert data["choice"]["quant"] in ("mlx-4bit", "q4_k_m")
    assert data["plans"][0] == data["choice"]


# --- the CLI ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("recommend-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOCALQ_HOME", str(home))
        yield home


def test_cli_recommend_json_on_this_machine(cli_home):
    result = CliRunner().invoke(cli, ["recommend", "llama3.1:8b", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["model"], data["context"], data["prefer"]) == ("llama3.1:8b", 4096, "balanced")
    assert data["reason"]
    # The JSON's own numbers bear the choice out: a chosen plan's memory is within its
    # pool's budget, and when nothing was chosen no plan of acceptable quality is.
    def within(p):
        need = p["host_bytes"] if p["pool"] == "VRAM+RAM" else p["weights_bytes"] + p["kv_cache_bytes"] + p["overhead_bytes"]
        return need <= p["budget_bytes"]
    if data["choice"] is None:
        assert not any(within(p) and p["ppl_delta"] <= 0.7 and p["ready"] for p in data["plans"])
    else:
        assert within(data["choice"]) and data["choice"] in data["plans"]


def test_cli_recommend_table(cli_home):
    result = CliRunner().invoke(cli, ["recommend", "smollm2:135m", "--ctx", "2048", "--prefer", "speed"])
    assert result.exit_code == 0, result.output
    assert "smollm2:135m at 2048 tokens, preferring speed" in result.output
    assert "->" in result.output and "TOKENS/S" in result.output
    flat = " ".join(result.output.split())
    assert "(none measured on smollm2:135m)" in flat and "measured on Llama-3-8B" in flat


def test_cli_recommend_named_quant_checks_that_one(cli_home):
    result = CliRunner().invoke(cli, ["recommend", "llama3.1:8b-q8_0", "--json"])
    assert result.exit_code == 0, result.output
    assert {p["quant"] for p in json.loads(result.output)["plans"]} == {"q8_0"}


def test_cli_recommend_a_gguf_file(cli_home, smollm2_gguf):
    result = CliRunner().invoke(cli, ["recommend", str(smollm2_gguf), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["choice"]["quant"] == "q4_1"


@pytest.mark.parametrize("args, code, text", [
    (["recommend", "nosuch:1b"], 1, "error: no model named 'nosuch:1b' in the catalog"),
    (["recommend", "llama3.1:8b", "--ctx", "999999999"], 1,
     "error: context 999999999 is longer than llama3.1:8b's 131072 tokens (use --ctx 131072 or less)"),
    (["recommend", "llama3.1:8b", "--ctx", "-1"], 1, "error: context -1 is too small"),
    (["recommend", "hf.co/org/repo"], 1, "error: recommend needs a catalog model or a GGUF file"),
    (["recommend", "llama3.1:8b", "--prefer", "fast"], 2, "Invalid value for '--prefer'"),
])
def test_cli_recommend_bad_input(cli_home, args, code, text):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == code
    assert text in result.output


def test_an_amd_gpu_runs_llama_cpp_with_its_bandwidth_assumed():
    from localq.probe.amd import read_drm
    from recorded_machines import FIXTURES, llamacpp

    profile = desktop_4090()  # derived: the same desktop with the modelled Radeon instead of the RTX 4090
    profile.gpus = read_drm(FIXTURES / "modelled-amd-rx7900xtx-sysfs-drm")
    profile.backends["llamacpp"] = llamacpp("rocm")
    rec = recommend(profile, "qwen2.5:14b")
    assert (rec.choice.backend, rec.choice.device, rec.choice.pool) == ("llamacpp", "rocm", "VRAM")
    assert rec.reason.startswith("Q4_K_M on llama.cpp (rocm): llama.cpp offloads to Radeon RX 7900 XTX")
    assert rec.assumptions == ["Radeon RX 7900 XTX / XT's memory bandwidth unknown; assumed 300 GB/s"]


# --- what a pull can fetch -------------------------------------------------------------------


def test_pulls_choose_only_quants_the_repository_holds():
    from localq.recommend import recommend_pull

    # Qwen/Qwen3-0.6B-GGUF holds only Q8_0; Qwen3-4B-GGUF Q4_K_M, Q5_0, Q5_K_M, Q6_K, Q8_0
    small = recommend_pull(laptop_8gb(), find("qwen3", "0.6b"))
    assert small.choice.quant == "q8_0" and {p.quant for p in small.plans if p.backend == "llamacpp"} == {"q8_0"}
    assert not any(p.ready for p in small.plans if p.backend == "mlx")   # listed with why, never chosen here
    four = recommend_pull(pi5_8gb(), find("qwen3", "4b"), prefer="speed")
    assert four.choice.quant in {"q4_k_m", "q5_0", "q5_k_m", "q6_k", "q8_0"}
    assert not {"q3_k_m", "q4_0", "q2_k"} & {p.quant for p in four.plans}
    # online, the repository's listing wins over the catalog's record
    listed = recommend_pull(laptop_8gb(), find("qwen3", "4b"), ["Q4_K_M", "Q8_0"])
    assert {p.quant for p in listed.plans} == {"q4_k_m", "q8_0"}


def test_no_pull_recommends_an_int4_variant_and_the_welcome_has_pulls_on_nvidia():
    from recorded_machines import h200_141gb

    from localq.recommend import recommend_pull
    from localq.recommend.suggest import pull_ref, suggested_pulls

    for machine in (desktop_4090(), h200_141gb()):
        rec = recommend_pull(machine, "llama3.1:8b")
        assert not any(p.quant.startswith("int4") for p in rec.plans)
        pulls = suggested_pulls(machine)
        assert pulls and all(pull_ref(s.model, s.plan.quant) == s.ref for s in pulls)
