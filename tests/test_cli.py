"""CLI conventions: version, help, error lines and exit codes, nothing heavy at start."""

import subprocess
import sys

from click.testing import CliRunner

from localq import __version__
from localq.cli import cli


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_help_lists_the_commands():
    result = CliRunner().invoke(cli, ["--help"])
    for command in ("ls", "rm", "verify", "prune", "import", "show", "catalog", "search"):
        assert f"  {command} " in result.output


def test_help_imports_nothing_heavy():
    heavy = ("textual", "numpy", "gguf", "huggingface_hub", "llama_cpp", "rich", "sqlite_utils", "torch", "mlx", "psutil",
             "uvicorn", "starlette", "openai")
    code = f"import sys, localq.cli; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_error_is_one_line_exit_1_and_debug_shows_traceback(tmp_home):
    result = CliRunner().invoke(cli, ["show", "hf.co/org/:q4"])
    assert result.exit_code == 1
    assert result.output == "error: empty repository name in 'hf.co/org/:q4' (write hf.co/ORG/REPO[:QUANT])\n"
    result = CliRunner().invoke(cli, ["--debug", "show", "hf.co/org/:q4"])
    assert result.exit_code == 1 and result.exception is not None
    assert type(result.exception).__name__ == "InvalidReference"


def test_unknown_command_is_a_usage_error():
    assert CliRunner().invoke(cli, ["frobnicate"]).exit_code == 2


def test_missing_model_says_how_to_get_it(tmp_home):
    result = CliRunner().invoke(cli, ["show", "llama3.2:3b"])
    assert result.exit_code == 1
    assert "model 'llama3.2:3b' is not installed" in result.output and "localq pull llama3.2:3b" in result.output
