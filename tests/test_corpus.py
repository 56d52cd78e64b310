"""The hostile corpus: malformed GGUFs, hostile templates and hostile references, through the real CLI and app.

Every case goes through ``localq import``, ``localq show`` and ``localq run``
as real processes; none may print a traceback or die from a signal (exit 0 or
1 only). The app then opens every file and reference in its Chat screen (the
model runs in a worker process there) and must still be running afterwards.
The corpus size is asserted (at least 40) and printed.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bad_gguf
import pytest
from test_gguf_checks import BAD_HEADERS
from test_templates_hostile import HOSTILE

LOCALQ = [sys.executable, "-c", "from localq.cli import main; main()"]
MIN_CORPUS = 40


def _raw(source: Path, target: Path, edit) -> Path:
    """A copy of the first 4 MB of ``source`` (a hole for the rest) with ``edit(bytearray)`` applied."""
    data = bytearray(source.read_bytes()[: 4 << 20])
    edit(data)
    target.write_bytes(bytes(data))
    os.truncate(target, source.stat().st_size)
    return target


def _set(offset: int, fmt: str, value):
    return lambda data: struct.pack_into(fmt, data, offset, value)


def build_corpus(model: Path, root: Path) -> dict[str, Path | str]:
    """name -> a file path (malformed GGUFs, hostile templates) or a reference text."""
    root.mkdir(parents=True, exist_ok=True)
    cases: dict[str, Path | str] = {}
    for name, (kv, tensors, _) in BAD_HEADERS.items():
        cases[f"header-{name}"] = bad_gguf.patched(model, root / f"{name}.gguf", kv, tensors=tensors)
    for name, (template, _) in HOSTILE.items():
        cases[f"template-{name}"] = bad_gguf.with_template(model, root / f"tpl-{name}.gguf", template)
    cases["cut-100-bytes"] = bad_gguf.truncated_copy(model, root / "cut100.gguf", keep=100)
    cases["cut-in-vocab"] = bad_gguf.truncated_copy(model, root / "cut3m.gguf", keep=1_000_000)
    cases["cut-in-data"] = bad_gguf.truncated_copy(model, root / "cutdata.gguf", keep=50_000_000)
    cases["wrong-magic"] = _raw(model, root / "magic.gguf", lambda d: d.__setitem__(slice(0, 4), b"GGML"))
    cases["version-1"] = _raw(model, root / "v1.gguf", _set(4, "<I", 1))
    cases["big-endian"] = _raw(model, root / "be.gguf", _set(4, ">I", 3))
    cases["tensor-count-huge"] = _raw(model, root / "tc.gguf", _set(8, "<Q", 2**62))
    cases["kv-count-huge"] = _raw(model, root / "kv.gguf", _set(16, "<Q", 2**40))
    cases["first-key-length-huge"] = _raw(model, root / "key.gguf", _set(24, "<Q", 2**60))
    cases["unknown-architecture"] = bad_gguf.unknown_architecture(root / "arch.gguf")
    cases["empty"] = root / "empty.gguf"
    cases["empty"].write_bytes(b"")
    cases["text-file"] = root / "text.gguf"
    cases["text-file"].write_text("this is not a model\n")
    cases["layers-513"] = bad_gguf.patched(model, root / "l513.gguf", {"llama.block_count": 513})
    cases["rope-freq-nan"] = bad_gguf.patched(model, root / "nan.gguf", {"llama.rope.freq_base": float("nan")})
    cases["ref-empty-quant"] = "hf.co/org/repo:"
    cases["ref-dots"] = "hf.co/../../etc/passwd"
    cases["ref-traversal-quant"] = "hf.co/org/repo:../../x"
    cases["ref-unknown-quant"] = "smollm2:135m-q99_k"
    cases["ref-colons"] = "a:b:c:d"
    cases["ref-long"] = "x" * 5000
    cases["ref-control"] = "smollm2\x1b[2J:135m"
    cases["ref-dev-null"] = "/dev/null"
    cases["ref-directory"] = str(root)
    return cases


@pytest.fixture(scope="module")
def corpus(smollm2_gguf, tmp_path_factory):
    return build_corpus(smollm2_gguf, tmp_path_factory.mktemp("corpus"))


def run_cli(args: list[str], home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOCALQ_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(LOCALQ + args, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_no_traceback_and_no_death_from_the_cli(corpus, tmp_path):
    pytest.importorskip("llama_cpp")
    print(f"corpus: {len(corpus)} cases")
    assert len(corpus) >= MIN_CORPUS
    home = tmp_path / "home"
    home.mkdir()
    jobs = []
    for name, case in corpus.items():
        target = str(case)
        jobs += [(name, ["import", target]), (name, ["show", target]),
                 (name, ["run", target, "hi", "--max-tokens", "4", "--temperature", "0"])]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda job: (job, run_cli(job[1], home)), jobs))
    failures = []
    for (name, args), done in results:
        output = done.stdout + done.stderr
        if done.returncode not in (0, 1) or "Traceback" in output:
            failures.append(f"{name}: localq {args[0]} exited {done.returncode}: {output[-600:]}")
        elif done.returncode == 1:
            errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
            if len(errors) != 1:
                failures.append(f"{name}: localq {args[0]} failed without one error line: {done.stderr[-600:]}")
    for (name, args), done in results[:: max(1, len(results) // 12)]:
        print(f"{name} / {args[0]}: exit {done.returncode}: {(done.stderr.strip().splitlines() or [''])[-1][:160]}")
    assert not failures, "\n".join(failures)


def test_no_death_of_the_app(corpus, tmp_home):
    pytest.importorskip("llama_cpp")
    from recorded_machines import laptop_8gb
    from tui_pilot import record_notifications, run_async, settle, wait_until

    from localq.backends.base import GenerationParams
    from localq.tui.app import LocalqApp

    @run_async
    async def drive():
        app = LocalqApp(profile=laptop_8gb(), first_start=False)
        async with app.run_test(size=(100, 30)) as pilot:
            seen = record_notifications(app)
            await settle(pilot)
            await pilot.press("enter")
            await wait_until(pilot, lambda: type(app.screen).__name__ == "ChatScreen")
            screen = app.screen
            await wait_until(pilot, lambda: screen.conversation is not None, rounds=1200)
            good = screen.session
            for name, case in corpus.items():
                screen.open_model(str(case))
                await wait_until(pilot, lambda: screen._loading is None, rounds=2400)
                if screen.session is not good and screen.session is not None:
                    # A hostile template loads: the reply must fail as one error, the app staying.
                    screen.conversation.params = GenerationParams(temperature=0, max_tokens=4)
                    await pilot.press(*"hi", "enter")
                    await wait_until(pilot, lambda: not screen.streaming, rounds=2400)
                    good = screen.session
                assert app.is_running, f"the app stopped at {name}"
            errors = [text for kind, text in seen if kind == "error"]
            assert all("Traceback" not in text and "\n" not in text.strip() for text in errors)
            assert len(errors) >= len(corpus) - 2, f"{len(errors)} errors for {len(corpus)} cases"
            print(f"app: {len(corpus)} cases, {len(errors)} one-line errors, still running")

    drive()
