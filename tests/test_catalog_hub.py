"""The catalog against the Hub's real layouts, on the loopback Hub (tests/hub_server.py).

Qwen2.5's official GGUF repositories name their files in lower case and split the
larger quants (``qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf``; three parts for
7B's Q8_0). The test repository has that layout, with the sizes the Hub lists for
the real files claimed by the server, so fit is judged on real numbers.
"""

from __future__ import annotations

import pytest

from localq import hub
from localq.catalog import find
from localq.recommend import recommend_pull
from recorded_machines import laptop_8gb

QWEN_REPO = "Qwen/Qwen2.5-7B-Instruct-GGUF"
GB = 10**9
# the parts and, in bytes, about what the Hub lists for them
QWEN_FILES = {
    "qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf": int(3.99 * GB),
    "qwen2.5-7b-instruct-q4_k_m-00002-of-00002.gguf": int(0.69 * GB),
    "qwen2.5-7b-instruct-q8_0-00001-of-00003.gguf": int(3.95 * GB),
    "qwen2.5-7b-instruct-q8_0-00002-of-00003.gguf": int(3.96 * GB),
    "qwen2.5-7b-instruct-q8_0-00003-of-00003.gguf": int(0.19 * GB),
    "qwen2.5-7b-instruct-q2_k.gguf": int(3.02 * GB),
}


@pytest.fixture
def qwen_hub(fake_hub):
    fake_hub.add_repo(QWEN_REPO, {path: f"part {path}".encode() for path in QWEN_FILES})
    for path, size in QWEN_FILES.items():
        fake_hub.fault("size", path, times=None, size=size)
    yield fake_hub
    fake_hub.repos.pop(QWEN_REPO, None)


def test_the_catalog_points_at_the_official_repository():
    assert find("qwen2.5", "7b").gguf_repo == QWEN_REPO


@pytest.mark.parametrize("ref", ["qwen2.5:7b-q4_k_m", "qwen2.5:7b-Q4_K_M", f"hf.co/{QWEN_REPO}:Q4_K_M"])
def test_lowercase_split_quants_resolve_to_every_part(qwen_hub, ref):
    plan = hub.resolve(ref)
    parts = [p for p in QWEN_FILES if "q4_k_m" in p]
    assert [f.path for f in plan.files] == parts
    assert plan.size == sum(QWEN_FILES[p] for p in parts)


def test_a_three_part_quant_counts_all_three_and_does_not_fit_8gb(qwen_hub):
    plan = hub.resolve("qwen2.5:7b-q8_0")
    assert len(plan.files) == 3
    q8_total = sum(v for p, v in QWEN_FILES.items() if "q8_0" in p)
    assert plan.size == q8_total
    assert plan.available["q8_0"] == q8_total
    assert plan.available["q4_k_m"] == sum(v for p, v in QWEN_FILES.items() if "q4_k_m" in p)
    # fit is judged on every part: 8.1 GB does not fit the 8 GB laptop, its first part alone would
    rec = recommend_pull(laptop_8gb(), "qwen2.5:7b", plan.available)
    q8 = next(p for p in rec.plans if p.quant == "q8_0")
    assert q8.weights_bytes == q8_total and not q8.fits
    assert rec.choice is not None and rec.choice.quant == "q4_k_m"
    assert rec.choice.weights_bytes == sum(v for p, v in QWEN_FILES.items() if "q4_k_m" in p)


def test_gemma3_4b_is_sized_as_its_text_model_and_names_its_projector():
    from localq.catalog import implied_parameters
    from localq.recommend import ModelSpec

    gemma = find("gemma3", "4b")
    spec = ModelSpec.from_catalog(gemma)
    assert spec.parameters == gemma.parameters == implied_parameters(gemma)   # about 3.88 B
    assert 3.8e9 < spec.parameters < 3.9e9
    assert gemma.parameters + gemma.vision_parameters == 4_300_079_472       # the published 4.3 B
    assert gemma.projector == "mmproj-*.gguf" and "mmproj-*.gguf" in gemma.description
    assert not find("gemma3", "1b").projector   # text-only
