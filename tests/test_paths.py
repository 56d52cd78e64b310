"""LOCALQ_HOME moves every location; without it, the platform's own directories are used."""

from pathlib import Path

from localq.paths import get_paths


def test_localq_home_moves_everything(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALQ_HOME", str(tmp_path))
    paths = get_paths()
    for location in (paths.data, paths.cache, paths.config, paths.logs, paths.blobs, paths.partials, paths.index_db, paths.log_file):
        assert Path(location).is_relative_to(tmp_path)


def test_platform_directories_by_default(monkeypatch, tmp_path):
    monkeypatch.delenv("LOCALQ_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    paths = get_paths()
    assert paths.data == tmp_path / "xdg-data" / "localq"
    assert paths.cache == tmp_path / "xdg-cache" / "localq"
    assert paths.blobs == tmp_path / "xdg-data" / "localq" / "blobs"
