"""Import (files, other tools' stores, re-indexing blobs), the starter model and the cache commands."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from localq.cli import cli
from localq.errors import InvalidReference
from localq.importer import default_name, import_file, import_from
from localq.paths import get_paths
from localq.starter import ensure_starter, starter_gguf
from localq.store import blobs
from localq.store.db import open_index
from localq.store.index import list_variants, resolve


def run(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


@pytest.fixture(scope="session")
def smollm2_sha(smollm2_gguf):
    return blobs.sha256_file(smollm2_gguf)


def test_import_file_hardlinks_and_indexes(tmp_home, tmp_path, smollm2_gguf, smollm2_sha):
    local = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    os.link(smollm2_gguf, local) if os.stat(smollm2_gguf).st_dev == os.stat(tmp_path).st_dev else local.write_bytes(smollm2_gguf.read_bytes())
    db = open_index()
    v = import_file(db, local)
    assert v.model == "smollm2-135m-instruct" and v.quant == "q4_1" and v.format == "gguf"
    assert v.architecture == "llama" and v.parameters == 134_515_008
    assert v.files[0].sha256 == smollm2_sha
    assert os.stat(v.main_path).st_ino == os.stat(local).st_ino  # hardlinked, not copied
    assert resolve(db, "smollm2-135m-instruct:q4_1").id == v.id


def test_import_cli_with_name_then_ls_show_rm(tmp_home, smollm2_gguf):
    result = run("import", str(smollm2_gguf), "--name", "mysmol")
    assert result.exit_code == 0, result.output
    assert "imported mysmol:q4_1" in result.output
    listing = json.loads(run("ls", "--json").output)
    refs = {row["ref"] for row in listing}
    assert "mysmol:q4_1" in refs
    row = next(r for r in listing if r["ref"] == "mysmol:q4_1")
    assert row["backend"] == "llamacpp" and row["size"] == smollm2_gguf.stat().st_size
    shown = json.loads(run("show", "mysmol", "--json").output)
    assert shown["architecture"] == "llama" and shown["block_count"] == 30
    result = run("rm", "mysmol", input="n\n")  # asks; "n" keeps it
    # The starter holds the same bytes, so removing mysmol frees nothing.
    assert "Remove mysmol:q4_1, freeing 0 B?" in result.output
    assert "Nothing removed" in result.output
    result = run("rm", "mysmol", "-y")
    assert result.exit_code == 0 and "Removed mysmol:q4_1" in result.output
    assert "mysmol:q4_1" not in {r["ref"] for r in json.loads(run("ls", "--json").output)}


def test_starter_model_is_indexed_offline(tmp_home, smollm2_gguf, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert starter_gguf() == smollm2_gguf
    db = open_index()
    v = ensure_starter(db)
    assert v.ref == "smollm2:135m-q4_1" and v.provenance["tool"] == "starter"
    assert ensure_starter(db).id == v.id  # second call indexes nothing new
    assert "smollm2:135m-q4_1" in run("ls").output


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(b"NOPE" + p.read_bytes()[4:200]), "wrong magic"),
        (lambda p: p.write_bytes(p.read_bytes()[: 3_000_000]), "truncated GGUF"),
        (lambda p: p.write_bytes(b""), "is empty"),
    ],
)
def test_import_bad_files_loses_nothing(tmp_home, tmp_path, smollm2_gguf, damage, message):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(smollm2_gguf.read_bytes()[:4_000_000])
    damage(bad)
    result = CliRunner().invoke(cli, ["import", str(bad)])
    assert result.exit_code == 1
    assert message in result.output and result.output.startswith("error: ")
    assert len(result.output.strip().splitlines()) == 1
    assert [v for v in list_variants(open_index()) if v.model == "bad"] == []
    assert blobs.list_blobs().keys() <= {blobs.sha256_file(smollm2_gguf)}


def test_import_directory_and_bad_name(tmp_home, tmp_path, smollm2_gguf):
    result = CliRunner().invoke(cli, ["import", str(tmp_path)])
    assert result.exit_code == 1 and "is a directory" in result.output
    with pytest.raises(InvalidReference):
        import_file(open_index(), smollm2_gguf, "bad name")
    result = CliRunner().invoke(cli, ["import", str(smollm2_gguf), "--name", "x:q4_1"])
    assert result.exit_code == 1 and "cannot be a model name" in result.output


def test_usage_error_exits_2(tmp_home):
    result = CliRunner().invoke(cli, ["import"])
    assert result.exit_code == 2


def test_default_name():
    from pathlib import Path

    assert default_name(Path("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf")) == "meta-llama-3.1-8b-instruct"
    assert default_name(Path("SmolLM2-135M-Instruct.Q4_1.gguf")) == "smollm2-135m-instruct"


# --- other tools -------------------------------------------------------------------


def _link_or_copy(src, dest):
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        dest.write_bytes(src.read_bytes())


def test_import_from_ollama(tmp_home, tmp_path, smollm2_gguf, smollm2_sha):
    root = tmp_path / "ollama" / "models"
    _link_or_copy(smollm2_gguf, root / "blobs" / f"sha256-{smollm2_sha}")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:" + "0" * 64, "size": 10},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{smollm2_sha}", "size": smollm2_gguf.stat().st_size},
            {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "1" * 64, "size": 10},
        ],
    }
    mpath = root / "manifests" / "registry.ollama.ai" / "library" / "smollm2" / "135m"
    mpath.parent.mkdir(parents=True)
    mpath.write_text(json.dumps(manifest))
    result = run("import", "--from", "ollama", "--path", str(root))
    assert result.exit_code == 0, result.output
    assert "imported smollm2:135m-q4_1" in result.output
    v = resolve(open_index(), "smollm2:135m")
    assert os.stat(v.main_path).st_ino == os.stat(root / "blobs" / f"sha256-{smollm2_sha}").st_ino


def test_import_from_hf_cache(tmp_home, tmp_path, smollm2_gguf, smollm2_sha):
    repo = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF"
    _link_or_copy(smollm2_gguf, repo / "blobs" / smollm2_sha)
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "smollm2-135m-instruct-q4_1.gguf").symlink_to(f"../../blobs/{smollm2_sha}")
    (snap / "mmproj-f16.gguf").symlink_to(f"../../blobs/{smollm2_sha}")  # a sidecar: never a model
    db = open_index()
    variants, problems = import_from(db, "hf-cache", tmp_path / "hub")
    assert problems == []
    assert [v.ref for v in variants] == ["hf.co/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:q4_1"]


def test_import_from_lmstudio(tmp_home, tmp_path, smollm2_gguf):
    root = tmp_path / "lmstudio" / "models"
    _link_or_copy(smollm2_gguf, root / "bartowski" / "SmolLM2-135M-Instruct-GGUF" / "SmolLM2-135M-Instruct-Q4_1.gguf")
    (root / "bartowski" / "broken-GGUF").mkdir(parents=True)
    (root / "bartowski" / "broken-GGUF" / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 10)
    result = run("import", "--from", "lmstudio", "--path", str(root))
    assert "imported hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:q4_1" in result.output
    assert "skipped" in result.output and "broken.gguf" in result.output


def test_import_from_missing_folder(tmp_home, tmp_path):
    result = CliRunner().invoke(cli, ["import", "--from", "ollama", "--path", str(tmp_path / "none")])
    assert result.exit_code == 1 and "no ollama models at" in result.output


# --- verify and prune ---------------------------------------------------------------


def test_verify_reports_corruption(tmp_home, tmp_path, smollm2_gguf):
    # A copy with its last byte changed, so its blob is its own and not the
    # starter's (which is a hardlink to the installed wheel's file).
    data = bytearray(smollm2_gguf.read_bytes())
    data[-1] ^= 0xFF
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(bytes(data))
    run("import", str(copy), "--name", "victim")
    assert run("verify", "victim").exit_code == 0
    v = resolve(open_index(), "victim")
    with open(v.main_path, "r+b") as f:
        f.seek(5_000_000)
        f.write(b"\x00\x01\x02\x03")
    result = CliRunner().invoke(cli, ["verify", "victim"])
    assert result.exit_code == 1
    assert "CORRUPT  victim:q4_1" in result.output and "sha256 is" in result.output
    report = json.loads(CliRunner().invoke(cli, ["verify", "--json"]).output)
    assert any(not r["ok"] for r in report)


def test_prune_removes_orphans_and_stale_files_only(tmp_home, tmp_path, smollm2_gguf):
    run("import", str(smollm2_gguf), "--name", "keep")
    orphan_sha, orphan = blobs.write_bytes(b"orphan bytes")
    stale_tmp = get_paths().blobs / ".sha256-x.tmp"
    stale_tmp.write_bytes(b"half")
    partials = get_paths().partials
    partials.mkdir(parents=True)
    old, fresh = partials / "old.part", partials / "fresh.part"
    old.write_bytes(b"o" * 10)
    fresh.write_bytes(b"f" * 10)
    os.utime(old, (0, 0))
    result = run("prune", "--dry-run")
    assert "orphan blob sha256-" in result.output and "Nothing removed" in result.output
    assert orphan.exists()
    result = run("prune", "-y")
    assert "Freed" in result.output
    assert not orphan.exists() and not stale_tmp.exists() and not old.exists()
    assert fresh.exists()  # a recent partial may still resume
    assert resolve(open_index(), "keep").main_path.exists()
    assert "Nothing to prune" in run("prune", "-y").output


def test_reindex_blobs_after_index_is_moved_aside(tmp_home, hub_files):
    # Not the starter's bytes: the starter is indexed again on every open, so only a
    # file of other bytes shows whether `import --blobs` re-indexed anything.
    other = hub_files["q8_0"]
    precious = run("import", str(other), "--name", "precious")
    assert precious.exit_code == 0, precious.output
    sha = blobs.sha256_file(other)
    index = get_paths().index_db
    for f in index.parent.glob("index.db*"):
        f.rename(f.with_name(f.name + ".bad"))
    assert not any(f.sha256 == sha for v in list_variants(open_index()) for f in v.files)
    result = run("import", "--blobs")
    assert result.exit_code == 0
    [found] = [v for v in list_variants(open_index()) if any(f.sha256 == sha for f in v.files)]
    assert found.provenance == {"reindexed_blob": sha} and found.main_path.exists()
    assert found.quant == "q8_0"     # the label of the copy's header (its file type), found again


def test_full_disk_while_copying_into_the_store(tmp_home, tmp_path):
    """A write that hits a file-size limit (a stand-in for a full disk) gives one clear line and leaves no temp file."""
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3_000_000))
    code = textwrap.dedent(
        f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))
        from localq.store import blobs
        from localq.errors import StoreError
        try:
            blobs.add_file({str(src)!r}, link=False)
        except StoreError as exc:
            print(exc.one_line())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert "disk full while writing blob" in out.stdout, out.stderr
    assert blobs.stale_temp_files() == [] and blobs.list_blobs() == {}


def test_import_onto_a_full_disk(mounted_tmpfs, monkeypatch, smollm2_gguf):
    """A real filesystem too small for the model: one clear line, no temp file, nothing indexed."""
    home = mounted_tmpfs(2048)
    monkeypatch.setenv("LOCALQ_HOME", str(home))
    open_index()
    result = CliRunner().invoke(cli, ["import", str(smollm2_gguf), "--name", "big"])
    assert result.exit_code == 1
    assert "disk full while writing blob" in result.output and "needed 93.8 MiB" in result.output
    assert blobs.stale_temp_files() == []
    assert [v for v in list_variants(open_index()) if v.model == "big"] == []


def test_readonly_cache(mounted_tmpfs, monkeypatch, smollm2_gguf):
    home = mounted_tmpfs(4096)
    monkeypatch.setenv("LOCALQ_HOME", str(home))
    open_index().conn.close()
    mounted_tmpfs.remount_readonly(home)
    result = CliRunner().invoke(cli, ["import", str(smollm2_gguf), "--name", "ro"])
    assert result.exit_code == 1
    error_lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and "the cache directory is read-only" in error_lines[0]
    listing = CliRunner().invoke(cli, ["ls", "--json"])  # reading still works
    assert listing.exit_code == 0 and listing.stdout.strip().endswith("[]")


def test_space_freed_counts_only_what_removal_gives_back(tmp_home, tmp_path, smollm2_gguf):
    from localq.cache import space_freed

    data = bytearray(smollm2_gguf.read_bytes()[:2_000_000])
    data[-1] ^= 0xFF
    linked_src = tmp_path / "linked.bin"
    linked_src.write_bytes(bytes(data))
    copied = tmp_path / "copied.bin"
    copied.write_bytes(bytes(data[:-1]) + b"x")
    db = open_index()
    sha_l, _ = blobs.add_file(linked_src, link=True)   # the original keeps a second link
    sha_c, _ = blobs.add_file(copied, link=False)
    from localq.store.index import FileEntry, add_variant

    a = add_variant(db, model="a", source_kind="import", quant="q4_0", format="gguf", files=[FileEntry("a.gguf", sha_l, len(data))])
    b = add_variant(db, model="b", source_kind="import", quant="q4_0", format="gguf", files=[FileEntry("b.gguf", sha_c, len(data))])
    assert space_freed(a, [a, b]) == (0, True)
    assert space_freed(b, [a, b]) == (len(data), False)
    c = add_variant(db, model="c", source_kind="import", quant="q4_0", format="gguf", files=[FileEntry("c.gguf", sha_c, len(data))])
    assert space_freed(b, [a, b, c]) == (0, False)  # c still uses the blob
    result = run("rm", "a", input="n\n")
    assert "freeing 0 B (hardlinked from elsewhere: that copy stays)?" in result.output


def test_a_mistyped_size_names_no_model_and_rm_removes_nothing(tmp_home, smollm2_gguf, monkeypatch):
    """`rm smollm2:135n -y` (a typo of 135m) once removed smollm2:135m: a tag that is neither a
    size nor a quant must not fall back to "any size of the family"."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    db = open_index()
    starter = ensure_starter(db)
    result = run("rm", "smollm2:135n", "-y")
    print(result.output)
    assert result.exit_code == 1 and "not installed" in result.output
    assert starter.ref in {v.ref for v in list_variants(open_index())}
    assert resolve(db, "smollm2").id == starter.id           # a bare family name still means any size
    assert resolve(db, "smollm2:q4_1").id == starter.id      # and so does a family name with a quant
