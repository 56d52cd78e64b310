"""Recommendations checked against what ``localq bench`` measured on this machine.

One real benchmark of the real SmolLM2 Q4_1 (llama.cpp, a short run) is stored in a
fresh index; the recommender then uses it for that model, and calibrates the
efficiency factor that other models' estimates use.
"""

from __future__ import annotations

import statistics

import pytest
from click.testing import CliRunner
from recorded_machines import laptop_8gb

from localq.bench import bench
from localq.calibration import calibrate, speeds, stored_benchmarks
from localq.recommend import EFFICIENCY, Speeds, recommend


@pytest.fixture(scope="module")
def benched(tmp_path_factory):
    """A LOCALQ_HOME whose index holds one real benchmark of smollm2:135m Q4_1."""
    from localq.starter import ensure_starter
    from localq.store.db import open_index

    home = tmp_path_factory.mktemp("calibration-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOCALQ_HOME", str(home))
        db = open_index()
        ensure_starter(db)
        from localq.backends.base import LoadOptions

        result = bench(db, "smollm2:135m", prompt_tokens=16, decode_tokens=8, options=LoadOptions(n_ctx=256))
        yield db, result
        db.conn.close()


def test_a_measured_model_uses_its_measured_speed(benched):
    db, result = benched
    profile = laptop_8gb()
    measured = speeds(db, profile, "smollm2:135m")
    assert measured.measured == {("llamacpp", "cpu", "q4_1"): pytest.approx(result.decode_tps)}
    rec = recommend(profile, "smollm2:135m", quants=["q4_1", "q8_0"], speeds=measured)
    q4_1 = next(p for p in rec.plans if p.quant == "q4_1")
    assert q4_1.tokens_per_second == pytest.approx(result.decode_tps, abs=0.01)
    assert q4_1.speed_source == "measured by localq bench"
    default = next(p for p in recommend(profile, "smollm2:135m", quants=["q4_1"]).plans)
    assert default.speed_source == "estimated"
    # the quant that was not measured is estimated with the calibrated factor, and says so
    q8_0 = next(p for p in rec.plans if p.quant == "q8_0")
    assert q8_0.speed_source.startswith("estimated with llamacpp's efficiency calibrated from 1 benchmark")
    if rec.choice is q4_1:
        assert "tokens/s measured by localq bench" in rec.reason


def test_the_efficiency_factor_is_calibrated_from_stored_benchmarks(benched):
    db, result = benched
    profile = laptop_8gb()
    rows = stored_benchmarks(db)
    assert [(r["model"], r["quant"], r["backend"]) for r in rows] == [("smollm2:135m", "q4_1", "llamacpp")]
    efficiency, counts = calibrate(profile, rows)
    assert counts == {("llamacpp", "cpu"): 1}
    # measured / estimated, with the estimate at the benchmark's own context and the default factor
    from localq.gguf_info import read_gguf_info
    from localq.recommend import QUANTS_BY_TAG, ModelSpec, plan, runtimes

    spec = ModelSpec.from_gguf_info(read_gguf_info(rows[0]["path"]))
    cpu = next(r for r in runtimes(profile)[0] if r.device == "cpu")
    estimate = plan(profile, spec, QUANTS_BY_TAG["q4_1"], cpu, 256).tokens_per_second
    ratio = result.decode_tps / estimate
    assert efficiency[("llamacpp", "cpu")] == pytest.approx(EFFICIENCY[("llamacpp", "cpu")] * ratio)

    # an unmeasured model's estimate moves by the same ratio, and the explanation says why
    calibrated = speeds(db, profile, "llama3.2:1b")
    assert calibrated.measured == {}
    before = recommend(profile, "llama3.2:1b", quants=["q4_k_m"]).plans[0]
    after = recommend(profile, "llama3.2:1b", quants=["q4_k_m"], speeds=calibrated)
    assert after.plans[0].tokens_per_second == pytest.approx(before.tokens_per_second * ratio, rel=0.01)
    assert "calibrated from 1 benchmark on this machine" in after.reason


def test_calibration_takes_the_median_of_the_benchmarks(benched):
    db, _ = benched
    profile = laptop_8gb()
    row = stored_benchmarks(db)[0]
    one = calibrate(profile, [{**row, "decode_tps": 1.0}])[0][("llamacpp", "cpu")]
    rates = [10.0, 11.0, 500.0]   # one absurd run must not drag the factor
    efficiency, counts = calibrate(profile, [{**row, "decode_tps": t} for t in rates])
    assert counts == {("llamacpp", "cpu"): 3}
    assert efficiency[("llamacpp", "cpu")] == pytest.approx(one * statistics.median(rates))


def test_benchmarks_that_cannot_be_estimated_are_left_out(benched, tmp_path):
    db, _ = benched
    row = stored_benchmarks(db)[0]
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"not a gguf")
    rows = [{**row, "path": not_gguf}, {**row, "quant": "nosuch"}, {**row, "backend": "nosuch"}]
    assert calibrate(laptop_8gb(), rows) == ({}, {})


def test_no_benchmarks_means_the_default_estimates():
    profile = laptop_8gb()
    plain = recommend(profile, "llama3.2:1b")
    empty = recommend(profile, "llama3.2:1b", speeds=Speeds())
    assert [p.tokens_per_second for p in plain.plans] == [p.tokens_per_second for p in empty.plans]
    assert "tokens/s estimated," in plain.reason


def test_cli_recommend_uses_this_machines_benchmark(benched, monkeypatch):
    from localq.cli import cli

    _, result = benched
    out = CliRunner().invoke(cli, ["recommend", "smollm2:135m-q4_1", "--json"])
    assert out.exit_code == 0, out.output
    import json

    choice = json.loads(out.output)["choice"]
    assert choice["speed_source"] == "measured by localq bench"
    assert choice["tokens_per_second"] == pytest.approx(result.decode_tps, abs=0.01)


def test_pull_discover_and_the_suggestions_use_this_machines_benchmark(benched):
    """pull (choose_quant_for_pull), Discover and the recommended pulls take the same
    measured speeds as `localq recommend`, read once per list."""
    from localq.calibration import local_speeds_for
    from localq.recommend import choose_quant_for_pull, recommend_pull
    from localq.recommend.suggest import suggested_pulls

    db, result = benched
    profile = laptop_8gb()
    speeds_for = local_speeds_for(profile)
    rec = recommend_pull(profile, "smollm2:135m", ["q4_1", "q8_0"], speeds=speeds_for("smollm2:135m"))
    q4_1 = next(p for p in rec.plans if p.quant == "q4_1")
    assert q4_1.speed_source == "measured by localq bench"
    assert q4_1.tokens_per_second == pytest.approx(result.decode_tps, abs=0.01)
    other = speeds_for("llama3.2:1b")
    assert other.measured == {} and other.efficiency == speeds(db, profile, None).efficiency
    assert choose_quant_for_pull(profile, "smollm2:135m", ["Q4_1"], speeds=speeds_for("smollm2:135m")) == "Q4_1"
    # The recommended pulls take each model's speeds from the function they are given
    # (this machine's calibration is whatever it measured; a doubled factor is a known one).
    key = ("llamacpp", "cpu")
    doubled = Speeds(efficiency={key: 2 * EFFICIENCY[key]}, benchmarks={key: 1})
    listed = suggested_pulls(profile, speeds_for=lambda model: doubled)
    assert listed and all(s.plan.speed_source.startswith("estimated with llamacpp's efficiency calibrated from 1")
                          for s in listed)
    plain = {s.model.ref: s.plan.tokens_per_second for s in suggested_pulls(profile)}
    assert all(s.plan.tokens_per_second > plain.get(s.model.ref, 0) for s in listed)
