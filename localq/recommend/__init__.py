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
  ln(min(tokens/s, 30)) - ppl_increase / 1.2 (``SPEED_CAP_TPS``). Above 30
  tokens/s a chat outruns even a skimming reader, so the surplus buys quality
  (``COMFORTABLE_TPS``, 8 tokens/s, is the least a reply read as it is written
  needs: the recommended pulls keep to it); below it, 0.1 less perplexity is
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

The package, one job per module: ``quants`` (the table: data), ``estimates`` (memory,
fit, speed, quality of one plan), ``policy`` (the backends for this hardware, and the
choice a preference makes), ``explain`` (the sentences), ``recommendation``
(``recommend()`` and the pull's choice), ``suggest`` (the recommended pulls).
"""

from localq.recommend.quants import (  # noqa: F401
    LLAMA3_8B_PARAMETERS, LLAMACPP_QUANTIZE_TABLE, LLAMACPP_SOURCE, Quant, QUANTS_BY_TAG, CANDIDATES, K_QUANT_FALLBACK,
)
from localq.recommend.estimates import (  # noqa: F401
    EFFICIENCY, ASSUMED_CPU_BANDWIDTH_GBPS, ASSUMED_GPU_BANDWIDTH_GBPS, INT4_MIN_CC, RUNTIME_BASE, SCRATCH, CUDA_CONTEXT, BATCH, RAM_RESERVE_MIN, RAM_RESERVE_SHARE, RAM_FREE_MARGIN, VRAM_USABLE_SHARE, VRAM_FREE_MARGIN, ModelSpec, Runtime, Plan, Speeds, ram_budget, vram_budget, apple_budget, compute_buffer_bytes, host_overhead_bytes, plan,
)
from localq.recommend.policy import (  # noqa: F401
    PREFERENCES, COMFORTABLE_TPS, SPEED_CAP_TPS, PPL_PER_LOG_SPEED, SLOW_TPS, ACCEPTABLE_PPL_DELTA, MARGIN, BANDWIDTH_NOISE, MLX_ELSEWHERE, backend_state, runtimes, offload_plan, all_plans, choose,
)
from localq.recommend.explain import quality_basis, quality_note  # noqa: F401
from localq.recommend.recommendation import (  # noqa: F401
    Recommendation, find_model, recommend, pullable_quants, recommend_pull, choose_quant_for_pull,
)
from localq.recommend.suggest import (  # noqa: F401
    SUGGESTIONS, Suggestion, pull_ref, comfortable, suggested_pulls,
)
from localq.units import size  # noqa: F401
