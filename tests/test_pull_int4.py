"""``localq pull MODEL-int4-gN``: the source pulled from the (loopback) Hub, quantized here, after asking.

The Hub serves the real SmolLM2 as a bf16 safetensors repository (made from
the GGUF by localq's converter) under the catalog's source repository name;
its GGUF repository is not served at all: nothing of an INT4 pull may touch it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

from click.testing import CliRunner  # noqa: E402  (after the skips)

from localq.cli import cli  # noqa: E402


@pytest.fixture(scope="module")
def source_repo_files(smollm2_hf_dir: Path, tmp_path_factory) -> dict[str, Path]:
    """SmolLM2 as its Hub repository holds it: bf16 weights, config.json saying so, the tokenizer files."""
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("smollm2-bf16")
    tensors = {k: v.to(torch.bfloat16) for k, v in load_file(str(smollm2_hf_dir / "model.safetensors")).items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((smollm2_hf_dir / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "torch_dtype": "bfloat16"}))
    files = {"model.safetensors": out / "model.safetensors", "config.json": out / "config.json"}
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        files[name] = smollm2_hf_dir / name
    return files


@pytest.fixture(scope="module")
def source_hub(source_repo_files):
    from hub_server import FakeHub

    from localq.catalog import find

    hub = FakeHub()
    hub.add_repo(find("smollm2", "135m").source_repo, source_repo_files)
    with hub:
        yield hub


@pytest.fixture
def hub(source_hub, tmp_home, tmp_path, monkeypatch):
    from conftest import use_hub

    return use_hub(source_hub, tmp_path, monkeypatch)


def variants(formats=("int4", "safetensors")):
    """The installed variants of these formats, by ref (the starter GGUF a fresh home indexes is not one)."""
    from localq.store.db import open_index
    from localq.store.index import list_variants

    return {v.ref: v for v in list_variants(open_index()) if v.format in formats}


def test_without_a_terminal_and_without_y_is_an_error_and_fetches_nothing(hub):
    result = CliRunner().invoke(cli, ["pull", "smollm2:135m-int4-g64"])
    print(result.output)
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: smollm2:135m-int4-g64 is made here, not downloaded")
    assert "hf.co/HuggingFaceTB/SmolLM2-135M-Instruct:source" in line and "pass -y" in line
    assert hub.bytes_sent("model.safetensors") == 0 and variants() == {}


def test_pull_int4_pulls_the_source_quantizes_it_and_keeps_the_source(hub):
    """-y: the source comes from the Hub once; each group size after that is made from the stored source."""
    from localq.backends.base import GenerationParams, LoadOptions
    from localq.backends.torch_int4 import TorchInt4Backend

    made = CliRunner().invoke(cli, ["pull", "smollm2:135m-int4-g64", "-y"])
    print(made.output)
    assert made.exit_code == 0, made.output
    assert made.output.strip().splitlines()[-1].startswith("made smollm2:135m-int4-g64 (")
    assert "quantizing hf.co/HuggingFaceTB/SmolLM2-135M-Instruct:bf16 to int4-g64" in made.output
    sent = hub.bytes_sent("model.safetensors")
    assert sent == hub.file("HuggingFaceTB/SmolLM2-135M-Instruct", "model.safetensors").size
    installed = variants()
    source, int4 = installed["hf.co/HuggingFaceTB/SmolLM2-135M-Instruct:bf16"], installed["smollm2:135m-int4-g64"]
    assert source.format == "safetensors" and int4.format == "int4"
    assert int4.provenance["parameters"]["to"] == "int4-g64"
    assert "localq-int4.json" in {f.relpath for f in int4.files}

    session = TorchInt4Backend().load(int4, LoadOptions(n_ctx=256, n_gpu_layers=0))
    try:
        done = session.complete("Hi", GenerationParams(temperature=0.0, max_tokens=4))
    finally:
        session.close()
    assert done.completion_tokens >= 1

    again = CliRunner().invoke(cli, ["pull", "smollm2:135m-int4-g64"])        # nothing to do: no question
    assert again.exit_code == 0 and "smollm2:135m-int4-g64 is installed" in again.output, again.output
    other = CliRunner().invoke(cli, ["pull", "smollm2:135m-int4-g32", "-y", "--json"])
    assert other.exit_code == 0, other.output
    assert json.loads(other.output.strip().splitlines()[-1]) == {"event": "result", "ref": "smollm2:135m-int4-g32",
                                                                  "status": "made"}
    assert hub.bytes_sent("model.safetensors") == sent                        # the stored source was used
    assert {"smollm2:135m-int4-g32", "smollm2:135m-int4-g64"} <= set(variants())


def test_group_size_that_cannot_be_made_is_refused_before_any_download(hub):
    result = CliRunner().invoke(cli, ["pull", "smollm2:135m-int4-g128", "-y"])
    print(result.output)
    assert result.exit_code == 1
    assert "group size 128 does not divide smollm2:135m's rows (hidden_size 576)" in result.output
    assert "pull smollm2:135m-int4-g64 instead" in result.output
    assert hub.requests == [] and variants() == {}


def test_asks_on_a_terminal_and_no_means_nothing_fetched(hub, tmp_home):
    """In a real terminal the pull says what it will do and asks; "n" leaves the store and the Hub untouched."""
    pexpect = pytest.importorskip("pexpect")

    env = {**os.environ, "LOCALQ_HOME": str(tmp_home)}
    child = pexpect.spawn(sys.executable, ["-m", "localq.cli", "pull", "smollm2:135m-int4-g64"], env=env,
                          encoding="utf-8", timeout=60, dimensions=(24, 200))
    child.expect(r"Go ahead\? \[y/N\]")
    question = child.before
    child.sendline("n")
    child.expect(pexpect.EOF)
    child.close()
    print(question, child.before)
    assert "will pull its safetensors source hf.co/HuggingFaceTB/SmolLM2-135M-Instruct:source (bf16" in question
    assert "not pulled: nothing was downloaded or made" in child.before and child.exitstatus == 0
    assert hub.bytes_sent("model.safetensors") == 0 and variants() == {}


def test_the_app_lists_int4_as_made_here_asks_and_makes_it(hub):
    """On an NVIDIA machine Discover lists the INT4 quants beside the Hub's; pulling one says what it will do first."""
    from recorded_machines import desktop_4090
    from tui_pilot import record_notifications, run_async, screen_text, settle, wait_until

    from localq.tui.app import SECTIONS, LocalqApp

    ref = "smollm2:135m-int4-g64"

    @run_async
    async def scenario():
        app = LocalqApp(profile=desktop_4090(), first_start=False)
        async with app.run_test(size=(140, 40)) as pilot:
            seen = record_notifications(app)
            await settle(pilot)
            await pilot.press(str([s.key for s in SECTIONS].index("discover") + 1))
            await settle(pilot)
            screen = app.screen
            await pilot.press("slash", *"smollm2:135m", "enter")
            await settle(pilot)
            assert screen.recommendations["smollm2:135m"].choice.backend != "torch_int4"   # the pull's own choice
            assert "INT4-G64" in screen_text(app).upper() and "(made here)" in screen_text(app)
            listed = {p.quant for p in screen.made_here["smollm2:135m"]}
            assert listed == {"int4-g32", "int4-g64"}      # not g128: it does not divide SmolLM2's 576-wide rows
            await pilot.press("enter")                                                  # into the quants table
            quants = screen.query_one("#discover-quants")
            row = [str(quants.get_row_at(i)[1]) for i in range(quants.row_count)].index("int4-g64")
            quants.move_cursor(row=row)
            await pilot.press("p")
            await wait_until(pilot, lambda: type(app.screen).__name__ == "ConfirmDialog")
            await settle(pilot)
            question = " ".join(screen_text(app).split())
            assert "Make smollm2:135m-int4-g64 here?" in question
            assert "hf.co/HuggingFaceTB/SmolLM2-135M-Instruct:source" in question and "round-to-nearest" in question
            assert hub.bytes_sent("model.safetensors") == 0 and app.pulls.job_for(ref) is None  # nothing before yes
            await pilot.press("y")
            await wait_until(pilot, lambda: app.pulls.job_for(ref) is not None)
            job = app.pulls.job_for(ref)
            await wait_until(pilot, lambda: not job.active, rounds=3000)
            await settle(pilot)
            assert job.state == "done", job.error
            assert ("information", f"made {ref}") in seen
        assert variants()[ref].format == "int4"
        assert hub.bytes_sent("model.safetensors") == hub.file("HuggingFaceTB/SmolLM2-135M-Instruct",
                                                               "model.safetensors").size

    scenario()
