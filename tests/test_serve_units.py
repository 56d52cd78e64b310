"""The server's pure parts: durations, sizes, the API-key rule, the redacting log filter."""

from __future__ import annotations

import logging
import logging.config
import math

import pytest

from localq.errors import LocalqError
from localq.serve.config import ServeConfig, needs_api_key, parse_duration, parse_size


@pytest.mark.parametrize("value, seconds", [
    ("5m", 300), ("30s", 30), ("1h30m", 5400), ("250ms", 0.25), (0, 0), ("0", 0), (90, 90), (-1, math.inf),
    ("-1", math.inf), ("-5m", math.inf), ("2.5", 2.5),
])
def test_durations_as_ollama_writes_them(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5 minutes", "", "m5", True, None, [1], float("nan")])
def test_bad_durations_say_how_to_write_one(value):
    with pytest.raises(LocalqError) as caught:
        parse_duration(value)
    print(caught.value)
    assert "keep_alive" in str(caught.value)


def test_sizes():
    assert parse_size("64K", "--max-body") == 65536
    assert parse_size("8G", "--max-memory") == 8 * 2**30
    assert parse_size("1048576", "x") == 2**20
    with pytest.raises(LocalqError, match="cannot read the size 'lots' for --max-body"):
        parse_size("lots", "--max-body")


def test_only_127_0_0_1_goes_without_a_key():
    assert not needs_api_key("127.0.0.1") and not needs_api_key("localhost") and not needs_api_key("::1")
    assert needs_api_key("127.0.0.2") and needs_api_key("0.0.0.0") and needs_api_key("192.168.1.5")
    with pytest.raises(LocalqError, match="needs an API key"):
        ServeConfig(host="0.0.0.0").validate()
    assert ServeConfig(host="0.0.0.0", api_key="long-enough-key").validate()
    with pytest.raises(LocalqError, match="too short"):
        ServeConfig(host="0.0.0.0", api_key="abc").validate()


def test_the_log_filter_hides_the_key_and_hf_token(monkeypatch, capsys):
    pytest.importorskip("uvicorn")
    from localq.serve.server import log_config

    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnop")
    config = ServeConfig(api_key="secret-key-123456")
    logging.config.dictConfig(log_config(config))
    log = logging.getLogger("localq.serve")
    try:
        raise ValueError("token hf_abcdefghijklmnop with key secret-key-123456")
    except ValueError:
        log.exception("a request with secret-key-123456 failed")
    err = capsys.readouterr().err
    assert "a request with *** failed" in err and "token *** with key ***" in err
    assert "secret-key-123456" not in err and "hf_abcdefghijklmnop" not in err

