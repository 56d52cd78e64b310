"""``localq quantize`` through llama.cpp's quantizer, on the real SmolLM2.

SmolLM2's matrices are 576 or 1536 columns wide; 576 is not a multiple of
256, so K-quants cannot pack most of them and llama.cpp gives those another
type. The report must name exactly the tensors that the written file holds in
a type other than the asked one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from localq.cli import cli
from localq.paths import get_paths

pytest.importorskip("llama_cpp")


def run(*args):
    return CliRunner().invoke(cli, list(args))


def store_is_clean(only=()):
    """No work file is left, and the store holds no blob but the starter's and ``only``."""
    from localq.store.db import open_index

    paths = get_paths()
    work = paths.data / "work"
    assert not work.exists() or not list(work.iterdir()), list(work.iterdir())
    db = open_index()
    refs = {r[0] + ":" + r[1] for r in db.execute(
        "SELECT m.name, v.quant FROM variants v JOIN models m ON m.id = v.model_id")}
    assert refs <= {"smollm2:135m:q4_1", *only}, refs
    indexed = {r[0] for r in db.execute("SELECT sha256 FROM files")}
    on_disk = {p.name[len("sha256-"):] for p in paths.blobs.iterdir()} if paths.blobs.exists() else set()
    assert on_disk <= indexed, on_disk - indexed


def test_quantize_hf_dir_reports_the_fallbacks_the_file_holds(tmp_home, smollm2_hf_dir):
    import gguf

    result = run("quantize", str(smollm2_hf_dir), "--to", "Q4_K_M", "--name", "smolq", "--threads", "2", "--json")
    assert result.exit_code == 0, result.output
    [made] = json.loads(result.output)
    assert made["ref"] == "smolq:q4_k_m"
    from localq.store.db import open_index
    from localq.store.index import resolve

    v = resolve(open_index(), "smolq:q4_k_m")
    types = {t.name: t.tensor_type.name.lower() for t in gguf.GGUFReader(v.main_path).tensors}
    fallbacks = {f["tensor"]: f for f in made["fallbacks"]}
    assert len(fallbacks) > 100          # most matrices are 576 wide
    for name, f in fallbacks.items():
        assert types[name] == f["used"].lower(), name
        assert f["ncols"] % f["block"] != 0 and f["ncols"] in (576, 1536)
    k_quants = {n for n, t in types.items() if t in ("q4_k", "q6_k")}
    assert k_quants and not k_quants & set(fallbacks)     # the ones that fit kept their K type
    # provenance: source digest, tool, version, parameters, fallbacks; the intermediate (the checkpoint's own
    # float32, so nothing was rounded before llama.cpp) is gone
    prov = v.provenance
    from localq.quantize.output import source_digest

    assert prov["source_sha256"] == source_digest(smollm2_hf_dir)[0]
    assert prov["tool"] == "localq quantize" and prov["engine"].startswith("llama.cpp (llama-cpp-python ")
    assert prov["parameters"]["type"] == "Q4_K_M" and prov["parameters"]["threads"] == 2
    assert prov["parameters"]["intermediate"] == {"format": "gguf-f32", "kept": False}
    assert prov["fallbacks"] == {n: f["used"] for n, f in fallbacks.items()}
    assert "llama_model_quantize" in Path(made["log"]).read_text()
    store_is_clean(only={"smolq:q4_k_m"})
    human = run("quantize", str(smollm2_hf_dir), "--to", "q8_0", "--name", "smolq", "--keep-intermediate")
    assert human.exit_code == 0, human.output
    assert "stored smolq:q8_0" in human.output and "no fallbacks" in human.output
    assert "kept the F32 intermediate as smolq:f32" in human.output
    store_is_clean(only={"smolq:q4_k_m", "smolq:q8_0", "smolq:f32"})
    from localq.quantize.gguf_convert import convert
    from localq.store.blobs import sha256_file

    convert(smollm2_hf_dir, tmp_home / "f32.gguf", "f32")     # what `localq convert --to gguf-f32` writes
    kept = resolve(open_index(), "smolq:f32")
    assert kept.files[0].sha256 == sha256_file(tmp_home / "f32.gguf")
    assert resolve(open_index(), "smolq:q8_0").provenance["parameters"]["intermediate"] == {
        "format": "gguf-f32", "sha256": kept.files[0].sha256, "kept": True}


def test_requantizing_needs_the_flag_and_says_what_it_costs(tmp_home, smollm2_gguf):
    refused = run("quantize", str(smollm2_gguf), "--to", "Q4_0")
    print(refused.output)
    assert refused.exit_code == 1
    assert "already quantized (Q4_1)" in refused.output and "second rounding error" in refused.output
    assert "--allow-requantize" in refused.output
    store_is_clean()
    done = run("quantize", "smollm2:135m", "--to", "Q4_0", "--allow-requantize")
    assert done.exit_code == 0, done.output
    assert "stored smollm2:135m-q4_0" in done.output


@pytest.mark.parametrize("target, says", [
    ("Q4_K_X", "unknown quantization type 'Q4_K_X'"),
    ("IQ2_XXS", "IQ2_XXS needs an importance matrix"),
    ("TQ1_0", "only for models trained ternary"),
])
def test_unknown_or_unoffered_types_are_refused_before_any_work(tmp_home, smollm2_hf_dir, target, says):
    result = run("quantize", str(smollm2_hf_dir), "--to", "Q8_0", target)
    print(result.output)
    assert result.exit_code == 1 and says in result.output
    store_is_clean()


def test_full_disk_mid_write_is_one_line_and_leaves_nothing(mounted_tmpfs, smollm2_f16_gguf, monkeypatch):
    home = mounted_tmpfs(60_000)  # room for the index and part of a 145 MB Q8_0, not all of it
    monkeypatch.setenv("LOCALQ_HOME", str(home))
    result = run("quantize", str(smollm2_f16_gguf), "--to", "Q8_0", "--name", "full")
    print(result.output)
    assert result.exit_code == 1
    assert "disk full" in result.output and "LOCALQ_HOME" in result.output
    assert len(result.output.strip().splitlines()[-1]) < 300
    store_is_clean()


def test_ctrl_c_mid_quantize_stops_it_and_keeps_nothing(tmp_home, smollm2_f16_gguf):
    env = dict(os.environ, LOCALQ_HOME=str(tmp_home))
    proc = subprocess.Popen([sys.executable, "-m", "localq.cli", "quantize", str(smollm2_f16_gguf), "--to", "Q6_K",
                             "--name", "intr", "--threads", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    work = tmp_home / "data" / "work"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (work.exists() and any(work.iterdir())):
        time.sleep(0.05)
    assert work.exists() and any(work.iterdir()), "the quantizer never started writing"
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)    # as a terminal's Ctrl-C: the whole process group
    _, err = proc.communicate(timeout=60)
    print(err)
    assert proc.returncode == 130
    assert "interrupted; nothing was kept" in err
    store_is_clean()


def test_a_stored_safetensors_model_is_a_source_too(tmp_home, smollm2_hf_dir):
    from localq.store import blobs
    from localq.store.db import open_index
    from localq.store.index import FileEntry, add_variant

    db = open_index()
    files = []
    for f in sorted(smollm2_hf_dir.iterdir()):
        sha, _ = blobs.add_file(f)
        files.append(FileEntry(f.name, sha, f.stat().st_size))
    add_variant(db, model="smolst", source_kind="hf", quant="f32", format="safetensors", files=files)
    result = run("quantize", "smolst:f32", "--to", "Q8_0")
    assert result.exit_code == 0, result.output
    assert "stored smolst:q8_0" in result.output
    converted = run("convert", "smolst:f32", "--to", "gguf-f16")
    assert converted.exit_code == 0, converted.output
    assert "stored smolst:f16" in converted.output
    store_is_clean(only={"smolst:f32", "smolst:q8_0", "smolst:f16"})


def test_a_warmed_up_quantizer_child_is_taken_by_the_next_job_or_ended(tmp_path):
    pytest.importorskip("llama_cpp")
    from localq.quantize import gguf_quant

    gguf_quant.warm_up()
    spare = gguf_quant._SPARE[0]
    gguf_quant.warm_up()                      # one spare at most
    assert gguf_quant._SPARE == [spare]
    job = gguf_quant.Quantizer(tmp_path / "in.gguf", tmp_path / "out.gguf", "Q8_0")
    assert job.proc is spare and not gguf_quant._SPARE
    job.cancel()
    gguf_quant.warm_up()
    left = gguf_quant._SPARE[0]
    gguf_quant.discard_spare()
    assert left.poll() is not None and not gguf_quant._SPARE


def test_a_prestarted_job_is_taken_by_the_quantizer_for_it_or_stopped_and_removed(tmp_path, smollm2_f16_gguf):
    from localq.quantize import gguf_quant

    first = tmp_path / "first.gguf"
    gguf_quant.prestart(smollm2_f16_gguf, first, "Q8_0", threads=1)
    [(child, _)] = gguf_quant._STARTED
    other = gguf_quant.Quantizer(smollm2_f16_gguf, tmp_path / "x.gguf", "Q6_K", threads=1)  # not the same job
    assert other.proc is not child
    other.cancel()
    job = gguf_quant.Quantizer(smollm2_f16_gguf, tmp_path / "second.gguf", "Q8_0", threads=1)
    assert job.proc is child and job.dst == first and not gguf_quant._STARTED
    result = job.run()
    assert first.stat().st_size > 0 and not (tmp_path / "second.gguf").exists()
    assert result.qtype == "Q8_0"

    untaken = tmp_path / "untaken.gguf"
    gguf_quant.prestart(smollm2_f16_gguf, untaken, "Q8_0", threads=1)
    [(child, _)] = gguf_quant._STARTED
    deadline = time.monotonic() + 60
    while not untaken.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert untaken.exists(), "the prestarted child never started writing"
    gguf_quant.discard_spare()
    assert child.poll() is not None and not untaken.exists() and not gguf_quant._STARTED


def test_a_refused_source_stops_the_prestarted_child_and_keeps_nothing(tmp_home, smollm2_gguf):
    from localq.quantize import gguf_quant

    refused = run("quantize", str(smollm2_gguf), "--to", "Q8_0")     # a Q4_1 GGUF: refused after the child started
    assert refused.exit_code == 1 and "already quantized" in refused.output
    assert not gguf_quant._STARTED and not gguf_quant._SPARE
    store_is_clean()


def test_the_quantizer_child_loads_the_bindings_without_the_high_level_package():
    code = ("import sys; from localq.quantize.quant_worker import bindings; lib = bindings(); "
            "print(lib.__name__, hasattr(lib, 'llama_model_quantize'), hasattr(lib, 'LLAMA_FTYPE_MOSTLY_Q4_K_M'), "
            "'llama_cpp.llama' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["llama_cpp.llama_cpp", "True", "True", "False", "False"]
