"""The wheel users install: built with ``python -m build``, installed (not editable) into a fresh venv.

The venv sees the system's site-packages, so localq's dependencies need no
download; localq itself comes only from the wheel (``--no-index``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("build")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = out.glob("localq-*.whl")
    return path


def test_the_wheel_holds_everything_read_at_run_time(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "localq/assets/catalog.json" in names and "localq/tui/localq.tcss" in names
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "localq").rglob("*.py")}
    assert sources <= names, f"missing from the wheel: {sorted(sources - names)}"
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "localq = localq.cli:main" in entry_points and "llamacpp = localq.backends.llamacpp" in entry_points


def test_the_installed_wheel_runs(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "--no-index", "--no-deps", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    env = {**os.environ, "LOCALQ_HOME": str(tmp_path / "home")}
    env.pop("PYTHONPATH", None)

    def localq(*args: str) -> str:
        result = subprocess.run([str(venv / "bin" / "localq"), *args], capture_output=True, text=True,
                                env=env, cwd=tmp_path, timeout=300, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout

    where = subprocess.run([str(python), "-c", "import localq; print(localq.__file__)"], capture_output=True,
                           text=True, env=env, cwd=tmp_path, check=True).stdout
    assert where.startswith(str(venv)), f"localq was imported from {where}, not the wheel"
    assert "localq, version 0.1.0" in localq("--version")
    profile = json.loads(localq("probe", "--json"))
    assert profile["memory"]["total"] > 0 and profile["cpu"]
    assert "smollm2" in localq("catalog")


def test_shell_completion_is_clicks(tmp_home):
    """The documented mechanism: ``_LOCALQ_COMPLETE=SHELL_source localq`` prints the script."""
    code = "from localq.cli import main; main()"
    for shell in ("bash", "zsh", "fish"):
        script = subprocess.run([sys.executable, "-c", code], env={**os.environ, "_LOCALQ_COMPLETE": f"{shell}_source"},
                                capture_output=True, text=True, check=True).stdout
        assert "_LOCALQ_COMPLETE" in script and f"{shell}_complete" in script
    words = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={
        **os.environ, "_LOCALQ_COMPLETE": "bash_complete", "COMP_WORDS": "localq se", "COMP_CWORD": "1"}).stdout
    assert "plain,serve" in words.splitlines()


def test_service_recipes_run_localq_serve_with_real_options():
    import plistlib

    from click.testing import CliRunner

    from localq.cli import cli

    plist = plistlib.loads((ROOT / "packaging/launchd/io.github.localq.serve.plist").read_bytes())
    unit = (ROOT / "packaging/systemd/localq.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    for command in (plist["ProgramArguments"][2], exec_start):
        args = command.split("bin/localq", 1)[1].lstrip("\"").split(">>")[0].split()
        assert args[0] == "serve"
        result = CliRunner().invoke(cli, [*args, "--help"])
        assert result.exit_code == 0, result.output
    assert plist["Label"] == "io.github.localq.serve" and plist["RunAtLoad"] is True
