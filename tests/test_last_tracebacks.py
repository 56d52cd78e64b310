"""Inputs that used to end in a traceback: each is now one line (the message is printed and checked)."""

from __future__ import annotations

import json

import bad_gguf
import pytest
from click.testing import CliRunner
from hub_server import TINY_REPO

from localq import hub
from localq.cli import cli
from localq.errors import HubError, LocalqError


def test_head_count_zero_is_one_line_in_recommend_and_the_spec(smollm2_gguf, tmp_path, tmp_home):
    from localq.gguf_info import read_gguf_info
    from localq.recommend import ModelSpec

    path = bad_gguf.patched(smollm2_gguf, tmp_path / "noheads.gguf", {"llama.attention.head_count": 0})
    with pytest.raises(LocalqError) as caught:       # ZeroDivisionError before
        ModelSpec.from_gguf_info(read_gguf_info(path))
    print(caught.value.one_line())
    result = CliRunner().invoke(cli, ["recommend", str(path)])
    print(result.output)
    assert result.exit_code == 1 and result.output.startswith("error: ") and "Traceback" not in result.output


@pytest.mark.parametrize("ctx", ["0", "-5"])
def test_ctx_zero_is_refused_like_a_negative_one(ctx, tmp_home, smollm2_gguf):
    pytest.importorskip("llama_cpp")
    result = CliRunner().invoke(cli, ["run", str(smollm2_gguf), "hi", "--ctx", ctx])
    print(result.output)
    assert result.exit_code == 1 and f"context size {ctx} is too small" in result.output


@pytest.mark.parametrize("config, index, words", [
    (b"[1, 2, 3]", None, "config.json is not a JSON object"),
    (b'{"model_type": "llama"}', b'{"weight_map": ["a"]}', "has no weight_map"),
    (b'{"model_type": "llama"}', b'{"weight_map": {"a": 5}}', "has no weight_map"),
    (b'{"model_type": "llama"}', b'{"weight_map": {"a": "../../etc/x.safetensors"}}', "does not trust"),
    (b'{"model_type": "llama", "quantization": {"bits": "four"}}', None, "is not a bit width"),
    (b"not json at all", None, "is not valid JSON"),
])
def test_a_malformed_config_or_weight_index_is_one_line(fake_hub, config, index, words):
    from hub_server import safetensors_bytes

    repo = f"test-org/broken-{abs(hash((config, index))) % 10**8}"
    files = {"config.json": config, "model.safetensors": safetensors_bytes({"a": [1.0]})}
    if index is not None:
        files["model.safetensors.index.json"] = index
    fake_hub.add_repo(repo, files)
    with pytest.raises(HubError) as caught:
        hub.resolve(f"hf.co/{repo}")
    print(caught.value.one_line())
    assert words in caught.value.message


def test_a_quant_chooser_that_gives_none_or_junk_is_no_traceback(fake_hub):
    # None is "no answer": the Hub's fallback decides (resolution itself has no policy).
    plan = hub.resolve(f"hf.co/{TINY_REPO}", choose_quant=lambda model, quants: None)
    assert plan.choice == "default"
    with pytest.raises(HubError) as caught:          # AttributeError (int.lower) before
        hub.resolve(f"hf.co/{TINY_REPO}", choose_quant=lambda model, quants: 42)
    print(caught.value.one_line())
    assert "has no 42 file" in caught.value.message


def test_a_listing_huggingface_hub_cannot_parse_is_one_line(fake_hub):
    fake_hub.list_hostile(TINY_REPO, [{"rfilename": "x-Q4_0.gguf", "size": 10, "lfs": {"size": 10}}])
    with pytest.raises(HubError) as caught:
        hub.resolve(f"hf.co/{TINY_REPO}:Q4_0")
    print(caught.value.one_line())
    assert "\n" not in caught.value.one_line()
    assert json  # the listing is served as JSON by the loopback Hub
