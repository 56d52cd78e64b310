"""What the CLI says when a model name is wrong or the network is gone (with the starter model installed)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from localq.cli import cli


def invoke(*args, **env):
    return CliRunner().invoke(cli, list(args), env=env or None)


@pytest.mark.parametrize("command", [["show"], ["run"], ["rm", "-y"], ["chat"]])
def test_a_close_name_is_suggested(tmp_home, command):
    result = invoke(*command, "smolm2:135m", *(["hi"] if command == ["run"] else []))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: model 'smolm2:135m' is not installed (did you mean smollm2:135m")
    assert "localq pull" not in result.stderr


def test_rm_of_a_model_not_installed_does_not_advise_pulling_it(tmp_home):
    result = invoke("rm", "-y", "llama3.1:8b")
    assert result.exit_code == 1
    assert result.stderr == "error: model 'llama3.1:8b' is not installed (installed: smollm2:135m-q4_1)\n"
    # show and run still say how to get it.
    assert "pull it with `localq pull llama3.1:8b`" in invoke("show", "llama3.1:8b").stderr


def test_pull_of_an_installed_model_without_network_says_it_is_installed(tmp_home):
    closed = "http://127.0.0.1:9"  # nothing listens on the discard port here: connection refused
    result = invoke("pull", "smollm2:135m", HF_ENDPOINT=closed)
    assert result.exit_code == 0, result.output
    assert result.output == (f"smollm2:135m-q4_1 is installed (cannot reach {closed}: "
                             "not checked for a newer revision)\n")
    # A model that is not installed still fails with the network's reason.
    missing = invoke("pull", "qwen2.5:0.5b", HF_ENDPOINT=closed)
    assert missing.exit_code == 1 and missing.stderr.startswith(f"error: cannot reach {closed}")
