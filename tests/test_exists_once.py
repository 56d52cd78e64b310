"""The features the CLI and the app share, each written once (localq.units, views, suggest, ...)."""

from __future__ import annotations

import json

from click.testing import CliRunner
from recorded_machines import laptop_8gb

from localq import units
from localq.cli import cli


def test_one_byte_convention():
    assert units.size(None) == "?"
    assert units.size(512) == "512 B" and units.size(1005 * units.MiB) == "1.0 GiB"
    assert units.size(1536) == "1.5 KiB"
    assert units.size(98 * units.MiB + 400 * units.KiB) == "98.4 MiB"
    assert units.size(320 * units.MiB) == "320 MiB"
    assert units.size(int(4.6 * units.GiB)) == "4.6 GiB"
    assert units.rate(5 * units.MiB) == "5.0 MiB/s"
    assert units.count(134_515_008) == "134.5M" and units.count(950) == "950" and units.count(None) == "?"


def test_rate_meter_measures_over_its_window():
    from localq.download import RateMeter

    now = [0.0]
    meter = RateMeter(window_s=3.0, clock=lambda: now[0])
    meter.restart(1000)
    assert meter.rate == 0.0 and meter.eta(5000) is None
    for second in range(1, 11):   # 100 bytes/s for 10 s ...
        now[0] = float(second)
        meter.add(1000 + 100 * second)
    assert meter.rate == 100.0 and meter.eta(3000) == 10.0
    for second in range(11, 15):  # ... then 1000 bytes/s: the window forgets the slow part
        now[0] = float(second)
        meter.add(2000 + 1000 * (second - 10))
    assert meter.rate == 1000.0


def test_recommend_without_a_model_lists_the_welcome_screens_pulls(tmp_home):
    from localq.machine import machine_profile
    from localq.recommend.suggest import COMFORTABLE_TPS, suggested_pulls

    expected = [s.to_dict() for s in suggested_pulls(machine_profile())]
    result = CliRunner().invoke(cli, ["recommend", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == expected
    assert all(s["tokens_per_second"] >= COMFORTABLE_TPS for s in expected)
    text = CliRunner().invoke(cli, ["recommend"])
    assert text.exit_code == 0, text.output
    for s in expected:
        assert s["ref"] in text.output


def test_suggested_pulls_are_comfortable_and_biggest_first():
    from localq.catalog import load_catalog
    from localq.recommend import recommend_pull
    from localq.recommend.suggest import COMFORTABLE_TPS, SUGGESTIONS, suggested_pulls

    found = suggested_pulls(laptop_8gb())
    assert 0 < len(found) <= SUGGESTIONS
    assert [s.model.parameters for s in found] == sorted((s.model.parameters for s in found), reverse=True)
    comfortable = [m for m in load_catalog()
                   if (c := recommend_pull(laptop_8gb(), m).choice) and c.fits and c.tokens_per_second >= COMFORTABLE_TPS
                   and not c.quant.startswith("int4")]
    biggest = sorted(comfortable, key=lambda m: -m.parameters)[:SUGGESTIONS]
    assert [s.model.ref for s in found] == [m.ref for m in biggest]


def test_show_prints_the_facts_the_app_shows(smollm2_gguf):
    from localq.gguf_info import read_gguf_info
    from localq.views.model import model_facts, quant_mix_rows

    info = read_gguf_info(smollm2_gguf)
    result = CliRunner().invoke(cli, ["show", str(smollm2_gguf)])
    assert result.exit_code == 0, result.output
    for label, value in model_facts(info):
        assert label in result.output
        if label != "file":  # a long path wraps
            assert value in result.output, label
    for row in quant_mix_rows(info):
        assert row[0] in result.output and row[3] in result.output


def test_verify_failure_is_one_message():
    from localq.cache import VerifyResult, verify_failure

    assert verify_failure([VerifyResult(None)]) is None
    failure = verify_failure([VerifyResult(None, ["a.gguf: blob is missing"]), VerifyResult(None)])
    assert failure.one_line() == ("1 model(s) failed verification "
                                  "(remove them with `localq rm REF` and pull or import them again)")


def test_generation_params_merge_once():
    from localq.backends.base import GenerationParams
    from localq.chat.params import merge_params, parse_param_texts
    from localq.cli.common import generation_params

    stored = {"temperature": 0.2, "seed": 7, "n_ctx": 1024}
    from_cli = generation_params({"top_k": 10, "temperature": None}, stored)
    from_app = merge_params(GenerationParams.from_dict(stored), parse_param_texts({"top_k": "10"}))
    assert from_cli == from_app
    assert (from_cli.temperature, from_cli.top_k, from_cli.seed) == (0.2, 10, 7)
    assert merge_params(from_cli, parse_param_texts({"seed": ""})).seed is None
