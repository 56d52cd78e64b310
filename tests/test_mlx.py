"""The MLX backend and MLX quantization, on the real SmolLM2 through mlx's CPU build.

SmolLM2's HF safetensors directory comes from localq's GGUF -> safetensors
converter (the ``smollm2_hf_dir`` fixture); the quants are made once per
session with ``localq.quantize.mlx``. mlx's CPU path is slow here (about a
token a second), so replies are a few tokens long.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("mlx.core")
pytest.importorskip("mlx_lm")

from localq.backends.base import Done, GenerationParams, LoadOptions, TextDelta  # noqa: E402
from localq.errors import BackendError, BadModelFile, LocalqError  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
GREEDY = GenerationParams(temperature=0.0, max_tokens=4)
# A system prompt of its own keeps SmolLM2's template from adding its long default one:
# every prompt token costs about as much as a generated one on mlx's CPU path.
HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


@pytest.fixture(scope="session")
def mlx_quants(smollm2_hf_dir: Path, tmp_path_factory) -> dict[str, Path]:
    """SmolLM2 quantized to mlx-4bit and mlx-8bit (group size 64), once per session."""
    from localq.quantize.mlx import quantize_mlx

    root = tmp_path_factory.mktemp("mlx-quants")
    return {f"mlx-{bits}bit": quantize_mlx(smollm2_hf_dir, bits, 64, root / f"SmolLM2-mlx-{bits}bit").out_dir
            for bits in (4, 8)}


@pytest.fixture(scope="session")
def mlx_sessions(mlx_quants):
    """Both quants loaded in the MLX backend (512-token context), shared; one reply at a time."""
    from localq.backends.mlx import MLXBackend

    sessions = {quant: MLXBackend().load(path, LoadOptions(n_ctx=512)) for quant, path in mlx_quants.items()}
    yield sessions
    for session in sessions.values():
        session.close()


def reply(session, messages=HELLO, params=GREEDY) -> tuple[list[str], Done]:
    deltas, done = [], None
    for event in session.stream(messages, params):
        if isinstance(event, TextDelta):
            deltas.append(event.text)
        elif isinstance(event, Done):
            done = event
    return deltas, done


# --- quantization ----------------------------------------------------------------


def test_quants_are_mlx_directories_with_the_requested_bits(mlx_quants):
    for quant, path in mlx_quants.items():
        config = json.loads((path / "config.json").read_text())
        assert config["quantization"]["bits"] == int(quant[4])
        assert config["quantization"]["group_size"] == 64
        assert (path / "tokenizer.json").is_file() and any(path.glob("model*.safetensors"))
        assert not (path / "README.md").exists()     # mlx-lm's card would name the local source path


@pytest.mark.parametrize("quant", ["mlx-4bit", "mlx-8bit"])
def test_quant_streams_a_reply_through_the_models_template(mlx_sessions, smollm2_session, quant):
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    session = mlx_sessions[quant]
    # The template is the model's own: the same prompt tokens as llama.cpp makes from the GGUF.
    prompt = session.encode_chat(HELLO)
    assert prompt == smollm2_session.encode_chat(HELLO)
    deltas, done = reply(session)
    assert done.finish_reason in ("stop", "length") and done.error is None
    assert 1 <= done.completion_tokens <= 4 and done.prompt_tokens == len(prompt)
    assert "".join(deltas) == done.text
    # The same tokens as mlx-lm's own greedy loop on the same model.
    expected = []
    for token, _ in generate_step(mx.array(prompt), session._model, max_tokens=done.completion_tokens):
        expected.append(token)
    assert session._tokenizer.decode(expected) == done.text
    # Stats: speed, time to first token, peak memory.
    assert done.tokens_per_s > 0 and done.ttft_s > 0 and done.peak_memory_bytes > 0


def test_the_next_turn_reuses_the_prompt_cache(mlx_sessions):
    session = mlx_sessions["mlx-4bit"]
    session.reset()
    _, first = reply(session)
    turn = HELLO + [{"role": "assistant", "content": first.text}, {"role": "user", "content": "Bye"}]
    _, cached = reply(session, turn, GenerationParams(temperature=0.0, max_tokens=2))
    assert cached.cached_tokens >= first.prompt_tokens
    session.reset()
    _, fresh = reply(session, turn, GenerationParams(temperature=0.0, max_tokens=2))
    assert fresh.cached_tokens == 0
    assert fresh.text == cached.text          # the reused cache gives what a fresh evaluation gives


def test_cancel_stops_the_reply_and_the_session_goes_on(mlx_sessions):
    session = mlx_sessions["mlx-4bit"]
    events = session.stream(HELLO, GenerationParams(temperature=0.0, max_tokens=200, ignore_eos=True))
    done = None
    for event in events:
        if isinstance(event, TextDelta) and done is None:
            threading.Thread(target=session.cancel).start()
            done = False
        if isinstance(event, Done):
            done = event
    assert done.finish_reason == "cancelled"
    assert done.completion_tokens < 10
    _, after = reply(session, params=GenerationParams(temperature=0.0, max_tokens=1))
    assert after.finish_reason in ("stop", "length") and after.completion_tokens == 1


def test_the_8bit_quant_is_near_the_source_and_the_4bit_is_worse(mlx_quants, smollm2_hf_dir):
    from localq.evaluate import evaluate

    # One 128-token chunk of plain English prose, its second half scored: mlx's CPU build
    # evaluates a prompt at about the speed it generates, so the text is short. The same
    # evaluation as `localq eval` (localq.evaluate), with MLX as the engine.
    text = (Path(__file__).parent / "fixtures" / "text" / "prose.txt").read_text()
    q8 = evaluate(mlx_quants["mlx-8bit"], against=smollm2_hf_dir, text=text, ctx=128, chunks=1)
    q4 = evaluate(mlx_quants["mlx-4bit"], against=smollm2_hf_dir, text=text, ctx=128, chunks=1)
    print(f"\nSmolLM2 on MLX (CPU), {q8.tokens_scored} tokens: source ppl {q8.source_perplexity:.3f}; "
          f"mlx-8bit {q8.perplexity:.3f} (KL {q8.kl_divergence:.4f}, top-1 {q8.top1_agreement:.3f}); "
          f"mlx-4bit {q4.perplexity:.3f} (KL {q4.kl_divergence:.4f}, top-1 {q4.top1_agreement:.3f})")
    assert q8.tokens_scored == q4.tokens_scored == 63
    assert q8.source_perplexity == q4.source_perplexity
    assert abs(q8.perplexity - q8.source_perplexity) < 0.03 * q8.source_perplexity and q8.kl_divergence < 0.01
    assert q4.perplexity > q8.perplexity
    assert q4.kl_divergence > q8.kl_divergence > 0
    assert q8.top1_agreement > 0.9


# --- bad input -------------------------------------------------------------------------


def linked_copy(src: Path, dest: Path, skip=()) -> Path:
    """A copy of a model directory made of symlinks (the weights are not copied)."""
    dest.mkdir()
    for path in src.iterdir():
        if path.name not in skip:
            (dest / path.name).symlink_to(path)
    return dest


def test_a_directory_without_its_weights_is_refused(mlx_quants, tmp_path):
    from localq.backends.mlx import MLXBackend

    broken = linked_copy(mlx_quants["mlx-4bit"], tmp_path / "no-weights", skip=("model.safetensors",))
    with pytest.raises(BadModelFile) as caught:
        MLXBackend().load(broken)
    print(caught.value.one_line())
    assert caught.value.message == f"{broken} is missing weight files its index names: model.safetensors"


def test_an_unknown_architecture_is_refused(mlx_quants, tmp_path):
    from localq.backends.mlx import MLXBackend

    odd = linked_copy(mlx_quants["mlx-4bit"], tmp_path / "odd", skip=("config.json",))
    config = json.loads((mlx_quants["mlx-4bit"] / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**config, "model_type": "notarealarch"}))
    with pytest.raises(BackendError) as caught:
        MLXBackend().load(odd)
    print(caught.value.one_line())
    assert caught.value.message == f"mlx-lm cannot run {odd}: it has no 'notarealarch' architecture"


def test_without_mlx_the_error_names_the_extra_that_installs_it(tmp_path):
    import tomllib

    script = (
        "import sys; sys.modules['mlx'] = None; sys.modules['mlx_lm'] = None\n"
        "from localq.backends.mlx import import_mlx\n"
        "from localq.errors import LocalqError\n"
        "try:\n    import_mlx()\nexcept LocalqError as e:\n    print(e.one_line())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    print(done.stdout)
    assert done.stdout.startswith("mlx is not installed")
    assert "pip install 'localq[mlx]'" in done.stdout
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("mlx-lm") for d in extras["mlx"])


@pytest.mark.parametrize("bits, group_size, message", [
    (5, 64, "5-bit is not an MLX quantization localq makes (use one of mlx-3bit, mlx-4bit, mlx-6bit, mlx-8bit)"),
    (4, 48, "group size 48 is not supported by MLX quantization (use --group-size 32, 64, 128 (default 64))"),
])
def test_unsupported_bits_or_group_size_write_nothing(smollm2_hf_dir, tmp_path, bits, group_size, message):
    from localq.quantize.mlx import quantize_mlx

    with pytest.raises(LocalqError) as caught:
        quantize_mlx(smollm2_hf_dir, bits, group_size, tmp_path / "out")
    print(caught.value.one_line())
    assert caught.value.one_line() == message
    assert not (tmp_path / "out").exists()


def test_an_unknown_target_tag_is_refused():
    from localq.quantize.mlx import target_bits

    with pytest.raises(LocalqError) as caught:
        target_bits("mlx-5bit")
    assert caught.value.one_line() == "'mlx-5bit' is not an MLX quantization localq makes (use one of mlx-3bit, mlx-4bit, mlx-6bit, mlx-8bit)"


def test_an_already_quantized_source_is_refused(mlx_quants, tmp_path):
    from localq.quantize.mlx import quantize_mlx

    with pytest.raises(LocalqError) as caught:
        quantize_mlx(mlx_quants["mlx-8bit"], 4, 64, tmp_path / "out")
    assert caught.value.message == "SmolLM2-mlx-8bit is already quantized"
    assert not (tmp_path / "out").exists()


# --- the store: quantize into it, load from it, pull into it --------------------------------


def store_state(db) -> tuple:
    from localq.store import blobs

    return (db.execute("SELECT COUNT(*) FROM variants").fetchone()[0], sorted(blobs.list_blobs()),
            sorted(p.name for p in blobs.get_paths().data.iterdir()))


def test_a_failed_quantization_leaves_nothing_in_the_store(smollm2_hf_dir, tmp_home, tmp_path):
    from localq.quantize.mlx import quantize_to_store
    from localq.store.db import open_index

    db = open_index()
    before = store_state(db)
    damaged = linked_copy(smollm2_hf_dir, tmp_path / "damaged", skip=("model.safetensors",))
    (damaged / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(LocalqError) as caught:
        quantize_to_store(db, damaged, "mlx-4bit", model="damaged")
    print(caught.value.one_line())
    assert caught.value.message.startswith("mlx-lm could not quantize damaged")
    assert store_state(db) == before


def test_quantize_a_gguf_into_the_store_records_provenance_and_runs(smollm2_gguf, tmp_home):
    from conftest import SMOLLM2_SHA256

    from localq.chat.conversation import open_session
    from localq.quantize.mlx import quantize_source
    from localq.store import blobs
    from localq.store.db import open_index

    db = open_index()
    # From the Q4_1 GGUF (through GGUF -> safetensors), at group size 128: SmolLM2's 576-wide
    # rows are no multiple of it, so only down_proj's 1536-wide rows are quantized: reported.
    variant, result = quantize_source(db, str(smollm2_gguf), "mlx-4bit", group_size=128, name="smollm2-local")
    assert (variant.model, variant.quant, variant.format) == ("smollm2-local", "mlx-4bit", "mlx")
    assert result.quantized_matrices == 30 and len(result.unquantized) == 6 * 30 + 1
    warnings = result.warnings()
    assert any("quantizing them again adds a second one" in w for w in warnings)       # Q4_1 -> mlx-4bit
    assert any("stay unquantized: their rows are not a multiple of the group size 128" in w for w in warnings)
    prov = variant.provenance
    assert prov["parameters"] == {"bits": 4, "group_size": 128, "mode": "affine"}
    assert prov["tool_versions"]["mlx-lm"] and prov["tool_versions"]["mlx"]
    assert prov["source_sha256"] == {smollm2_gguf.name: SMOLLM2_SHA256}
    assert prov["via"].startswith("GGUF -> safetensors") and prov["unquantized"] == result.unquantized
    assert {f.relpath for f in variant.files} >= {"config.json", "tokenizer.json", "model.safetensors"}
    assert all(blobs.blob_path(f.sha256).is_file() for f in variant.files)
    assert not [p for p in blobs.get_paths().data.iterdir() if p.name.startswith(".")]   # no work files left
    session = open_session(db, "smollm2-local:mlx-4bit", LoadOptions(n_ctx=256))
    try:
        assert session.backend_name == "mlx" and session.variant_id == variant.id
        _, done = reply(session, params=GenerationParams(temperature=0.0, max_tokens=2))
        assert done.completion_tokens >= 1 and done.error is None
    finally:
        session.close()


def test_a_pulled_mlx_repository_lands_in_the_store_and_runs(fake_hub, tmp_home, mlx_quants):
    from hub_server import HubFile

    from localq.backends.mlx import MLXBackend
    from localq.download import pull
    from localq.store import blobs
    from localq.store.db import open_index

    src = mlx_quants["mlx-4bit"]
    fake_hub.add_repo("mlx-test/SmolLM2-135M-Instruct-4bit",
                      {p.name: HubFile.make(p.name, p) for p in sorted(src.iterdir())})
    db = open_index()
    result = pull("hf.co/mlx-test/SmolLM2-135M-Instruct-4bit", db=db)
    variant = result.variant
    assert (variant.format, variant.quant) == ("mlx", "mlx-4bit")
    for f in variant.files:     # every file verified into the store, byte for byte
        assert blobs.sha256_file(blobs.blob_path(f.sha256)) == blobs.sha256_file(src / f.relpath)
    session = MLXBackend().load(variant, LoadOptions(n_ctx=256))
    try:
        assert session.model_path.name != src.name and (session.model_path / "config.json").is_file()
        _, done = reply(session, params=GenerationParams(temperature=0.0, max_tokens=1))
        assert done.completion_tokens == 1
    finally:
        session.close()


def test_a_pulled_mlx_repository_without_weights_is_not_indexed(fake_hub, tmp_home, mlx_quants):
    from localq.download import pull
    from localq.store.db import open_index

    src = mlx_quants["mlx-4bit"]
    # Weights under a name mlx-lm does not look for (it loads model*.safetensors).
    fake_hub.add_repo("mlx-test/broken-4bit", {
        "config.json": (src / "config.json").read_bytes(),
        "tokenizer.json": (src / "tokenizer.json").read_bytes(),
        "weights.safetensors": (src / "model.safetensors").read_bytes()[:4096],
    })
    db = open_index()
    with pytest.raises(BadModelFile) as caught:
        pull("hf.co/mlx-test/broken-4bit", db=db)
    print(caught.value.one_line())
    assert caught.value.message == ("mlx-test/broken-4bit is not a usable MLX model: "
                                    "mlx-test/broken-4bit has no weights (no model*.safetensors)")
    assert db.execute("SELECT COUNT(*) FROM variants").fetchone()[0] == 0


def test_the_backend_is_registered_and_runs_mlx_and_safetensors_formats():
    from localq.backends.registry import backend_for, backend_names

    assert "mlx" in backend_names()
    assert backend_for("mlx").name == "mlx"
    assert backend_for("safetensors").name == "mlx"


def test_the_backend_module_imports_no_heavy_library():
    script = "import sys, localq.backends.mlx; print(sorted(m for m in ('mlx', 'mlx_lm', 'transformers') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_wired_limit_warning_says_when_a_model_nears_metals_working_set():
    from localq.backends.mlx import wired_warning

    assert wired_warning(8 * 2**30, 16 * 2**30) is None
    warning = wired_warning(int(15 * 2**30), 16 * 2**30)
    assert warning.startswith("the model takes 15.0 GiB, close to the 16.0 GiB the GPU can keep wired")
    assert wired_warning(10, None) is None


def test_materialized_directories_keep_real_names_and_refuse_escapes(tmp_home, tmp_path):
    from types import SimpleNamespace

    from localq.store import blobs
    from localq.store.index import FileEntry
    from localq.store.materialize import materialize

    sha, _ = blobs.write_bytes(b'{"model_type": "llama"}')
    good = SimpleNamespace(ref="x", files=[FileEntry("config.json", sha, 23), FileEntry("sub/a.json", sha, 23)])
    target = materialize(good)
    assert (target / "config.json").read_bytes() == b'{"model_type": "llama"}'
    assert (target / "sub" / "a.json").is_file()
    assert materialize(good) == target
    bad = SimpleNamespace(ref="x", files=[FileEntry("../escape.json", sha, 23)])
    with pytest.raises(BadModelFile):
        materialize(bad)
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".building")]
    shutil.rmtree(target)


# --- the recommender ----------------------------------------------------------------------


def test_on_apple_silicon_the_recommendation_is_mlx_and_says_why():
    from recorded_machines import m2_16gb

    from localq.recommend import recommend

    rec = recommend(m2_16gb(), "llama3.2:3b")     # the catalog has its mlx-community quants
    assert (rec.choice.backend, rec.choice.device) == ("mlx", "metal") and rec.choice.ready
    assert rec.choice.quant in ("mlx-4bit", "mlx-8bit")
    assert "MLX is the native runtime on" in rec.reason


def test_elsewhere_the_mlx_plans_say_why_they_do_not_run(monkeypatch):
    from recorded_machines import laptop_8gb

    from localq.probe.profile import BackendInfo
    from localq.recommend import MLX_ELSEWHERE, recommend

    profile = laptop_8gb()
    # As on this machine: mlx's CPU build installed, the mlx backend registered.
    profile.backends["mlx"] = BackendInfo("mlx", True, "cpu", False, "0.32.4", "mlx 0.32.4 on the CPU (mlx[cpu]; slow)")
    rec = recommend(profile, "llama3.2:3b")
    mlx_plans = [p for p in rec.plans if p.backend == "mlx"]
    assert mlx_plans and all(not p.ready and p.setup == MLX_ELSEWHERE for p in mlx_plans)
    assert rec.choice.backend == "llamacpp"


def test_localq_quantize_and_eval_make_and_measure_an_mlx_quant(smollm2_hf_dir, tmp_home):
    from click.testing import CliRunner

    from localq.cli import cli
    from localq.store.db import open_index
    from localq.store.evaluations import latest_quality

    runner = CliRunner()
    made = runner.invoke(cli, ["quantize", str(smollm2_hf_dir), "--to", "mlx-8bit", "--group-size", "64",
                               "--name", "smollm2-cli", "--json"])
    assert made.exit_code == 0, made.output
    [row] = json.loads(made.output)
    assert (row["target"], row["ref"]) == ("mlx-8bit", "smollm2-cli:mlx-8bit") and 8.4 < row["bits_per_weight"] < 9.2
    text = Path(__file__).parent / "fixtures" / "text" / "prose.txt"
    measured = runner.invoke(cli, ["eval", "smollm2-cli:mlx-8bit", "--against", str(smollm2_hf_dir), "--text", str(text),
                                   "--ctx", "128", "--chunks", "1", "--json"])
    assert measured.exit_code == 0, measured.output
    result = json.loads(measured.output)
    assert result["stored"] and result["tokens_scored"] == 63
    assert abs(result["ppl_increase"]) < 0.03 and result["kl_divergence"] < 0.01 and result["top1_agreement"] > 0.9
    bad = runner.invoke(cli, ["quantize", str(smollm2_hf_dir), "--to", "mlx-5bit"])
    assert bad.exit_code == 1 and "'mlx-5bit' is not an MLX quantization localq makes" in bad.output
    db = open_index()
    rows = db.execute("SELECT id, quant FROM variants WHERE format = 'mlx'").fetchall()
    assert [quant for _, quant in rows] == ["mlx-8bit"]      # the refused mlx-5bit left nothing
    assert latest_quality(db, rows[0][0]) is not None
