"""The hardware probe: parsers on recorded outputs of real tools, and the live probe here."""

from __future__ import annotations

import json
import platform
import sqlite3
import subprocess
import sys

import pytest
from click.testing import CliRunner

from localq.cli import cli
from localq.errors import LocalqError
from localq.probe import _soft, normalize_arch, probe
from localq.probe.amd import read_drm
from localq.probe.apple import (
    apple_from_sysctl, cpu_from_sysctl, default_wired_share, memory_from_sysctl,
    parse_ioreg_gpu_cores, parse_sysctl,
)
from localq.probe.backends import llamacpp_gpu_libs, torch_build
from localq.machine import machine_profile
from localq.probe.bandwidth import measure_bandwidth
from localq.store.profiles import load_bandwidth, store_bandwidth
from localq.probe.cpu import normalize_features, parse_lscpu, parse_proc_cpuinfo
from localq.probe.memory import apply_cgroup_limit, parse_cgroup_limit, parse_meminfo
from localq.probe.nvidia import (
    compute_capability_for, gpus_from_csv, nvidia_on_pci, parse_nvidia_smi_csv, parse_nvidia_smi_q,
)
from localq.probe.profile import HardwareProfile
from recorded_machines import FIXTURES, MACHINES, read

GiB = 2**30
MiB = 2**20
KB = 1024


# --- CPU ---------------------------------------------------------------------


def test_sapphire_rapids_has_avx512_vnni_fp16_and_amx():
    cpu = parse_proc_cpuinfo(read("xeon-sapphire-rapids-16c-proc-cpuinfo.txt"))
    assert cpu.model == "Intel(R) Xeon(R) Processor"
    assert cpu.vendor == "GenuineIntel"
    assert (cpu.physical_cores, cpu.logical_cores) == (16, 16)
    assert {"avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
            "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "avx2", "fma", "f16c", "sse4_2"} <= cpu.features


def test_epyc_has_avx512_but_no_amx_nor_fp16():
    cpu = parse_proc_cpuinfo(read("epyc-2c-avx512-proc-cpuinfo.txt"))
    assert (cpu.model, cpu.physical_cores, cpu.logical_cores) == ("AMD EPYC", 2, 2)
    assert {"avx512f", "avx512_vnni", "avx512_bf16", "avx2"} <= cpu.features
    assert not {"amx_tile", "amx_int8", "avx512_fp16", "avx_vnni"} & cpu.features


def test_recorded_2c_xeon_has_avx512_vnni_and_its_vm_shows_no_amx():
    """The 2-vCPU Xeon VM (family 6, model 106): AVX-512 with VNNI; the recording has no AMX flags."""
    cpu = parse_proc_cpuinfo(read("xeon-2c-avx512-amx-proc-cpuinfo.txt"))
    assert (cpu.vendor, cpu.physical_cores, cpu.logical_cores) == ("GenuineIntel", 2, 2)
    assert {"avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx2", "fma"} <= cpu.features
    assert not {"amx_tile", "amx_int8", "avx512_fp16"} & cpu.features
    assert parse_lscpu(read("xeon-2c-avx512-amx-lscpu.txt")).features == cpu.features
    assert parse_meminfo(read("xeon-2c-proc-meminfo.txt")).total == 24683584 * 1024


def test_recorded_h200_host_is_a_16_core_xeon_with_amx():
    cpu = parse_proc_cpuinfo(read("h200-host-proc-cpuinfo.txt"))
    assert (cpu.physical_cores, cpu.logical_cores) == (16, 16)
    assert {"amx_tile", "amx_int8", "amx_bf16", "avx512_fp16"} <= cpu.features
    assert parse_lscpu(read("h200-host-lscpu.txt")).features == cpu.features
    assert parse_meminfo(read("h200-host-proc-meminfo.txt")).total == 131961788 * 1024


def test_lscpu_agrees_with_proc_cpuinfo():
    from_lscpu = parse_lscpu(read("epyc-2c-avx512-lscpu.txt"))
    from_proc = parse_proc_cpuinfo(read("epyc-2c-avx512-proc-cpuinfo.txt"))
    assert from_lscpu.features == from_proc.features
    assert (from_lscpu.model, from_lscpu.vendor) == ("AMD EPYC", "AuthenticAMD")
    assert (from_lscpu.physical_cores, from_lscpu.logical_cores) == (2, 2)


def test_laptop_counts_hyperthreads_apart_from_cores():
    cpu = parse_proc_cpuinfo(read("modelled-laptop-i5-8250u-proc-cpuinfo.txt"))
    assert cpu.model == "Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz"
    assert (cpu.physical_cores, cpu.logical_cores) == (4, 8)
    assert cpu.features == {"sse4_2", "avx", "avx2", "fma", "f16c"}


def test_zen4_desktop_has_avx512_vnni_bf16():
    cpu = parse_proc_cpuinfo(read("modelled-desktop-ryzen-7950x-proc-cpuinfo.txt"))
    assert (cpu.physical_cores, cpu.logical_cores) == (16, 32)
    assert {"avx512f", "avx512_vnni", "avx512_bf16"} <= cpu.features
    assert "amx_int8" not in cpu.features


def test_raspberry_pi_5_cortex_a76_features():
    cpu = parse_proc_cpuinfo(read("modelled-pi5-8gb-proc-cpuinfo.txt"))
    assert cpu.model == "Cortex-A76 (Raspberry Pi 5 Model B Rev 1.0)"
    assert cpu.vendor == "ARM"
    assert (cpu.physical_cores, cpu.logical_cores) == (4, 4)
    assert cpu.features == {"neon", "dotprod", "fp16"}  # no i8mm, SVE or BF16 on the A76


def test_arm_feature_names_map_to_localq_names():
    flags = "fp asimd asimdhp asimddp i8mm sve sve2 bf16 aes".split()
    assert normalize_features(flags) == {"neon", "fp16", "dotprod", "i8mm", "sve", "sve2", "bf16"}


def test_empty_cpuinfo_gives_unknowns_not_a_crash():
    cpu = parse_proc_cpuinfo("")
    assert (cpu.model, cpu.physical_cores, cpu.logical_cores, cpu.features) == (None, None, None, set())


# --- memory ------------------------------------------------------------------


def test_meminfo_in_bytes():
    mem = parse_meminfo(read("epyc-2c-proc-meminfo.txt"))
    assert mem.total == 24684084 * KB
    assert mem.available == 23932840 * KB
    assert (mem.swap_total, mem.swap_free) == (0, 0)
    laptop = parse_meminfo(read("modelled-laptop-8gb-proc-meminfo.txt"))
    assert laptop.swap_total == 2097148 * KB and laptop.swap_free == 2004988 * KB


def test_meminfo_without_memavailable_estimates_it():
    text = "\n".join(line for line in read("epyc-2c-proc-meminfo.txt").splitlines() if not line.startswith("MemAvailable"))
    assert parse_meminfo(text).available == (23634112 + 4588 + 457832) * KB


def test_cgroup_limit_caps_a_container():
    assert parse_cgroup_limit("max\n") is None
    assert parse_cgroup_limit("8589934592\n") == 8 * GiB
    host = parse_meminfo(read("epyc-2c-proc-meminfo.txt"))
    capped = apply_cgroup_limit(host, 8 * GiB, 3 * GiB)
    assert (capped.total, capped.available) == (8 * GiB, 5 * GiB)
    assert apply_cgroup_limit(host, None, None) == host
    assert apply_cgroup_limit(host, 64 * GiB, GiB) == host  # a limit above the RAM changes nothing


# --- NVIDIA ------------------------------------------------------------------


def test_h100_from_nvidia_smi_q():
    [gpu] = parse_nvidia_smi_q(read("h100-nvidia-smi-q.txt"))
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.memory_total == 81559 * MiB
    assert gpu.memory_free == 61869 * MiB
    assert gpu.compute_capability == "9.0"  # nvidia-smi -q does not print it: from the card's name
    assert (gpu.driver, gpu.cuda_version) == ("580.159.04", "13.0")
    assert (gpu.bus_width_bits, gpu.memory_clock_mhz) == (5120, 2619)
    assert gpu.peak_bandwidth_gbps == pytest.approx(5120 / 8 * 2619 * 2 / 1000, abs=0.1)  # ~3352 GB/s


def test_h200_from_nvidia_smi_q_and_csv():
    [gpu] = parse_nvidia_smi_q(read("h200-nvidia-smi-q.txt"))
    assert (gpu.name, gpu.memory_total, gpu.compute_capability) == ("NVIDIA H200", 143771 * MiB, "9.0")
    assert (gpu.driver, gpu.cuda_version, gpu.bus_width_bits, gpu.memory_clock_mhz) == ("580.159.04", "13.0", 6144, 3201)
    assert gpu.peak_bandwidth_gbps == pytest.approx(6144 / 8 * 3201 * 2 / 1000, abs=0.1)   # ~4.9 TB/s
    [row] = parse_nvidia_smi_csv(read("h200-nvidia-smi-query.csv"))
    assert (row["memory.total"], row["compute_cap"], row["pci.bus_id"]) == ("143771 MiB", "9.0", "00000000:00:06.0")
    [from_csv] = gpus_from_csv([row])
    assert (from_csv.memory_total, from_csv.memory_free) == (143771 * MiB, 143156 * MiB)


def test_probe_counts_a_backend_no_package_registers_as_unavailable():
    from localq.probe.backends import detect_backends, registered_backends

    found = detect_backends("linux", "x86_64", parse_nvidia_smi_q(read("h200-nvidia-smi-q.txt")), None,
                            registered={"llamacpp"})
    assert not found["torch_int4"].available and not found["mlx"].available
    assert "not part of this localq version" in found["torch_int4"].reason
    assert "llamacpp" in registered_backends()   # localq registers its own through the same group


def test_rtx4090_from_nvidia_smi_q():
    [gpu] = parse_nvidia_smi_q(read("modelled-rtx4090-nvidia-smi-q.txt"))
    assert gpu.name == "NVIDIA GeForce RTX 4090"
    assert gpu.memory_total == 24564 * MiB
    assert gpu.compute_capability == "8.9"
    assert gpu.peak_bandwidth_gbps == pytest.approx(1008.1, abs=0.1)  # 384 bit x 10501 MHz x 2


def test_h100_from_csv_query():
    rows = parse_nvidia_smi_csv(read("h100-nvidia-smi-query.csv"))
    assert rows == [{"name": "NVIDIA H100 80GB HBM3", "memory.total": "81559 MiB", "memory.free": "61869 MiB",
                     "driver_version": "580.159.04", "compute_cap": "9.0"}]
    [gpu] = gpus_from_csv(rows)
    assert (gpu.memory_total, gpu.compute_capability, gpu.bus_width_bits) == (81559 * MiB, "9.0", 5120)


@pytest.mark.parametrize("name, architecture, cc", [
    ("Tesla T4", "Turing", "7.5"),
    ("NVIDIA A100-SXM4-80GB", "Ampere", "8.0"),
    ("NVIDIA A10G", "Ampere", "8.6"),
    ("NVIDIA GeForce RTX 3090", "Ampere", "8.6"),
    ("NVIDIA L4", "Ada Lovelace", "8.9"),
    ("NVIDIA H200", "Hopper", "9.0"),
    ("Some Future Hopper Card", "Hopper", "9.0"),
    ("Unknown Card", None, None),
])
def test_compute_capability_table(name, architecture, cc):
    assert compute_capability_for(name, architecture) == cc


def test_garbage_nvidia_smi_output_gives_no_gpus():
    assert parse_nvidia_smi_q("NVIDIA-SMI has failed because it couldn't communicate with the driver.") == []


def test_nvidia_on_pci_reads_vendor_and_class(tmp_path):
    card = tmp_path / "0000:01:00.0"
    card.mkdir()
    (card / "vendor").write_text("0x10de\n")
    (card / "class").write_text("0x030000\n")
    assert nvidia_on_pci(tmp_path)
    (card / "class").write_text("0x040300\n")  # NVIDIA's HDMI audio function is not a GPU
    assert not nvidia_on_pci(tmp_path)
    assert not nvidia_on_pci(tmp_path / "missing")


# --- AMD ---------------------------------------------------------------------


def test_amd_gpus_from_sysfs_skip_connectors():
    gpus = read_drm(FIXTURES / "modelled-amd-rx7900xtx-sysfs-drm")
    assert [g.name for g in gpus] == ["Radeon RX 7900 XTX / XT", "AMD GPU 0x164e"]
    big = gpus[0]
    assert (big.vendor, big.memory_total, big.memory_free) == ("amd", 25753026560, 25753026560 - 1076961280)
    profile = HardwareProfile(os="linux", arch="x86_64", gpus=gpus)
    assert profile.best_gpu("amd") is big


def test_no_drm_directory_means_no_amd_gpus(tmp_path):
    assert read_drm(tmp_path / "nothing") == []


# --- Apple -------------------------------------------------------------------


def test_m2_from_sysctl_and_ioreg():
    values = parse_sysctl(read("modelled-m2-16gb-sysctl.txt"))
    cpu = cpu_from_sysctl(values)
    assert (cpu.model, cpu.vendor, cpu.physical_cores, cpu.logical_cores) == ("Apple M2", "Apple", 8, 8)
    assert cpu.features == {"neon", "dotprod", "i8mm", "fp16", "bf16"}
    mem = memory_from_sysctl(values)
    assert mem.total == 16 * GiB and mem.available is None
    assert (mem.swap_total, mem.swap_free) == (2048 * MiB, int(965.75 * MiB))
    apple = apple_from_sysctl(values, parse_ioreg_gpu_cores(read("modelled-m2-ioreg-agxaccelerator.txt")))
    assert (apple.chip, apple.gpu_cores, apple.performance_cores, apple.efficiency_cores) == ("Apple M2", 10, 4, 4)
    assert apple.bandwidth_gbps == 100
    assert apple.wired_limit_share == pytest.approx(2 / 3)
    assert apple.wired_limit == pytest.approx(10.67 * GiB, rel=0.01)
    assert apple.wired_limit_source == "macOS default (estimate)"


def test_raised_wired_limit_replaces_the_estimate():
    text = read("modelled-m2-16gb-sysctl.txt").replace("iogpu.wired_limit_mb: 0", "iogpu.wired_limit_mb: 12288")
    apple = apple_from_sysctl(parse_sysctl(text))
    assert apple.wired_limit_share == pytest.approx(0.75)
    assert apple.wired_limit_source == "iogpu.wired_limit_mb"


def test_larger_macs_get_three_quarters():
    assert default_wired_share(16 * GiB) == pytest.approx(2 / 3)
    assert default_wired_share(64 * GiB) == pytest.approx(0.75)


def test_intel_mac_is_not_apple_silicon():
    text = read("modelled-m2-16gb-sysctl.txt").replace("Apple M2", "Intel(R) Core(TM) i7-9750H CPU @ 2.60GHz")
    assert apple_from_sysctl(parse_sysctl(text)) is None


# --- backends ----------------------------------------------------------------


def test_llamacpp_build_is_read_from_its_libraries(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    assert llamacpp_gpu_libs(tmp_path) is None  # no ggml library: cannot tell
    for name in ("libllama.so", "libggml.so", "libggml-base.so", "libggml-cpu.so"):
        (lib / name).touch()
    assert llamacpp_gpu_libs(tmp_path) == set()
    (lib / "libggml-cuda.so").touch()
    assert llamacpp_gpu_libs(tmp_path) == {"cuda"}


def test_torch_build_is_read_without_importing_torch(tmp_path):
    (tmp_path / "version.py").write_text(
        "from typing import Optional\n__version__ = '2.11.0+cu130'\ndebug = False\n"
        "cuda: Optional[str] = '13.0'\nhip: Optional[str] = None\n"
    )
    assert torch_build(tmp_path) == {"version": "2.11.0+cu130", "cuda": "13.0", "hip": None}
    (tmp_path / "version.py").write_text("__version__ = '2.11.0+cpu'\ncuda: Optional[str] = None\n")
    assert torch_build(tmp_path)["cuda"] is None


# --- profiles ----------------------------------------------------------------


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_recorded_profiles_round_trip_through_json(machine):
    profile = MACHINES[machine]()
    again = HardwareProfile.from_dict(json.loads(json.dumps(profile.to_dict())))
    assert again == profile


def test_h100_profile_recorded_on_the_machine():
    profile = MACHINES["h100-80gb"]()
    [gpu] = profile.gpus
    assert (gpu.name, gpu.compute_capability, gpu.bus_width_bits) == ("NVIDIA H100 80GB HBM3", "9.0", 5120)
    assert profile.backends["torch_int4"].available
    assert {"amx_int8", "avx512_vnni"} <= profile.cpu.features
    assert profile.bandwidth_gbps > 10


@pytest.mark.parametrize("change, message", [
    (lambda d: d["memory"].update(total=-1), "bad hardware profile: memory.total is negative (-1)"),
    (lambda d: d.update(bandwidth_gbps=float("nan")), "bad hardware profile: bandwidth_gbps is nan, not a number"),
    (lambda d: d["memory"].update(available="lots"), "bad hardware profile: memory.available is 'lots', not a number"),
    (lambda d: d["gpus"][0].update(memory_total=2**70), "bad hardware profile: gpus[0].memory_total is absurdly large"),
    (lambda d: d.pop("os"), "not a hardware profile: it needs at least 'os' and 'arch'"),
])
def test_bad_profiles_are_refused(change, message):
    data = MACHINES["h100-80gb"]().to_dict()
    change(data)
    with pytest.raises(LocalqError) as err:
        HardwareProfile.from_dict(data)
    assert err.value.message.startswith(message)


def test_apple_wired_share_must_be_a_share():
    data = MACHINES["m2-16gb"]().to_dict()
    data["apple"]["wired_limit_share"] = 1.5
    with pytest.raises(LocalqError, match="not a share between 0 and 1"):
        HardwareProfile.from_dict(data)


def test_machine_key_names_cpu_and_memory():
    assert MACHINES["laptop-8gb"]().machine_key == "linux-x86_64|Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz|8GiB"


def test_arch_names_are_normalized():
    assert [normalize_arch(a) for a in ("AMD64", "x86_64", "aarch64", "arm64", "riscv64")] == [
        "x86_64", "x86_64", "arm64", "arm64", "riscv64"]


# --- failing soft ------------------------------------------------------------


def test_a_failing_part_becomes_an_unknown_with_its_reason():
    unknowns: dict[str, str] = {}

    def unreadable():
        raise PermissionError("[Errno 13] Permission denied: '/proc/cpuinfo'")

    assert _soft(unknowns, "cpu", unreadable, "default") == "default"
    assert unknowns == {"cpu": "PermissionError: [Errno 13] Permission denied: '/proc/cpuinfo'"}
    assert _soft(unknowns, "memory", lambda: 42, None) == 42
    assert "memory" not in unknowns


# --- bandwidth ---------------------------------------------------------------


def test_bandwidth_is_the_median_of_several_runs():
    from localq.probe.bandwidth import TIMED_COPIES, summarize

    assert TIMED_COPIES >= 3
    # one lucky copy (30, 90 GB/s) must not become the machine's bandwidth
    assert summarize({1: [10.0, 11.0, 30.0], 4: [15.0, 16.0, 17.0, 90.0]}) == 16.5


def test_bandwidth_measurement_is_a_positive_rate():
    assert measure_bandwidth(array_bytes=16 * MiB, threads=2) > 0.1


def test_bandwidth_is_stored_in_the_index_and_read_back(tmp_home):
    from localq.paths import get_paths

    index = get_paths().index_db
    assert load_bandwidth(index, "key") is None  # no index yet
    measured = store_bandwidth("key", 12.5, {"os": "linux"})
    assert load_bandwidth(index, "key") == (12.5, measured)
    assert load_bandwidth(index, "another machine") is None


def test_an_index_without_the_table_is_not_an_error(tmp_path):
    db = tmp_path / "index.db"
    sqlite3.connect(db).execute("CREATE TABLE other (x)").connection.commit()
    assert load_bandwidth(db, "key") is None


# --- the live probe on this machine ------------------------------------------


@pytest.fixture(scope="module")
def live_home(tmp_path_factory):
    """One LOCALQ_HOME for the live-probe tests, so the bandwidth is measured once."""
    home = tmp_path_factory.mktemp("probe-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOCALQ_HOME", str(home))
        yield home


def test_live_probe_is_sane(live_home):
    profile = machine_profile()
    assert profile.os == ("linux" if sys.platform.startswith("linux") else profile.os)
    assert profile.arch == normalize_arch(platform.machine())
    assert profile.cpu.logical_cores and profile.cpu.logical_cores >= 1
    if "memory" not in profile.unknowns:
        assert profile.memory.total > 256 * MiB
        assert 0 <= profile.memory.available <= profile.memory.total
    assert profile.disk_free and profile.disk_free > 0
    assert profile.bandwidth_gbps and 0.1 < profile.bandwidth_gbps < 10_000
    assert profile.bandwidth_source.startswith("measured")
    assert set(profile.backends) == {"llamacpp", "mlx", "torch_int4"}
    assert all(b.reason for b in profile.backends.values())
    assert HardwareProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile


def test_second_probe_reuses_the_stored_bandwidth(live_home):
    first = machine_profile()
    second = machine_profile()
    assert second.bandwidth_source.startswith("stored")
    assert second.bandwidth_gbps == first.bandwidth_gbps
    assert machine_profile(remeasure=True).bandwidth_source.startswith("measured 2")  # a new, stored figure


def test_the_probe_itself_measures_and_stores_nothing(tmp_home):
    from localq.paths import get_paths

    profile = probe()
    assert profile.bandwidth_gbps > 0 and profile.bandwidth_source == "measured now"
    assert not get_paths().index_db.exists()


def test_probe_without_bandwidth_measures_nothing(live_home):
    assert probe(bandwidth=False).bandwidth_gbps is None


def test_probe_imports_no_gpu_library(live_home):
    code = ("import sys; from localq.probe import probe; probe(); "
            "print(sorted(m for m in ('torch', 'mlx', 'llama_cpp', 'tensorflow', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unwritable_index_still_gives_a_bandwidth(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "data").write_text("a file where the data directory should be")
    monkeypatch.setenv("LOCALQ_HOME", str(home))
    profile = machine_profile()
    assert profile.bandwidth_gbps > 0
    assert profile.bandwidth_source.startswith("measured now (not stored:")


# --- the CLI -----------------------------------------------------------------


def test_cli_probe_json(live_home):
    result = CliRunner().invoke(cli, ["probe", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["cpu"]["logical_cores"] >= 1
    assert isinstance(data["cpu"]["features"], list)
    assert data["bandwidth_gbps"] > 0
    assert HardwareProfile.from_dict(data).os == data["os"]


def test_cli_probe_tables(live_home):
    result = CliRunner().invoke(cli, ["probe"])
    assert result.exit_code == 0, result.output
    assert "localq probe" in result.output
    for block in ("CPU", "Memory", "bandwidth", "Backends"):  # the Hardware screen's blocks (localq.views.machine)
        assert block in result.output, block
    assert "localq[" in result.output or "llama-cpp-python" in result.output  # brackets survive rich markup
