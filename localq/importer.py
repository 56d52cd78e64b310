"""Bringing GGUF files that are already on disk into the index.

``import_file`` validates a GGUF (header, counts, that its tensor data is all
there), hashes it and stores it as a blob: a hardlink on the same filesystem,
else a copy. ``import_from`` finds the models that Ollama, the Hugging Face
cache and LM Studio already hold and indexes them by hardlink, trusting the
sha256 those tools put in their blob names (``localq verify`` re-checks it).
``import_blobs`` re-indexes the GGUF blobs of localq's own store, the way back
from an index that had to be moved aside.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from localq.errors import BadModelFile, LocalqError
from localq.names import GGUF_QUANTS, InvalidReference, parse
from localq.paths import hf_cache_root
from localq.store import blobs
from localq.store.index import FileEntry, Variant, add_variant

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Found:
    """A GGUF another tool holds: where, under which name, and its digest if the tool knows it."""

    path: Path
    model: str
    sha256: str | None
    tool: str


def quant_of(info, filename: str) -> str:
    """The variant's quant: what the file holds (``localq.quant_label``), named variants kept."""
    from localq.quant_label import label

    return label(info, filename).quant


def default_name(path: Path) -> str:
    """A model name made from a file name: ``SmolLM2-135M-Instruct.Q4_1.gguf`` -> ``smollm2-135m-instruct``."""
    stem = path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.stem
    stem = stem.lower()
    for quant in sorted(GGUF_QUANTS, key=len, reverse=True):
        stem = re.sub(rf"[.\-_]{re.escape(quant)}$", "", stem)
    name = re.sub(r"[^a-z0-9._-]+", "-", stem).strip("-._") or "model"
    return name[:64]


def check_name(name: str) -> str:
    """Validate a user-given model name; returns it in canonical form."""
    ref = parse(name)
    if ref.kind == "path" or ref.quant:
        raise InvalidReference(f"{name!r} cannot be a model name", "name it like mymodel or mymodel:v1, without a quant")
    return ref.format()


def import_file(
    db,
    path: str | Path,
    name: str | None = None,
    *,
    sha256: str | None = None,
    source_kind: str = "import",
    catalog_ref: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Variant:
    """Validate, hash, store and index one GGUF file.

    A file whose header llama.cpp would refuse or crash on (``check_loadable``)
    is refused here too: nothing that cannot run is indexed as runnable.
    """
    from localq.gguf_info import check_loadable, read_gguf_info

    path = Path(path).expanduser()
    try:
        exists = path.exists()
    except OSError as exc:    # a name too long for the filesystem, a loop of links ...
        raise BadModelFile(f"cannot read {str(path)[:200]}: {exc.strerror or exc}", "check the path") from None
    if not exists:
        raise BadModelFile(f"{path} does not exist", "check the path")
    if path.is_dir():
        raise BadModelFile(f"{path} is a directory, not a GGUF file", "name the .gguf file inside it")
    info = check_loadable(read_gguf_info(path), path.name)
    from localq.quant_label import label

    quant = label(info, path.name)
    model = check_name(name) if name else default_name(path)
    sha, _ = blobs.add_file(path, sha256, link=True, on_progress=on_progress)
    return add_variant(
        db,
        model=model,
        source_kind=source_kind,
        catalog_ref=catalog_ref,
        quant=quant.quant,
        format="gguf",
        files=[FileEntry(path.name, sha, info.size_bytes)],
        architecture=info.architecture,
        parameters=info.parameter_count,
        source=str(path.resolve()),
        provenance={"imported_from": str(path.resolve()), "tool": source_kind,
                    **({"quant_warning": quant.warning, "named_quant": quant.named} if quant.warning else {})},
    )


# --- other tools' stores ---------------------------------------------------------


def ollama_root() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")


def lmstudio_root() -> Path:
    for candidate in (Path.home() / ".lmstudio" / "models", Path.home() / ".cache" / "lm-studio" / "models"):
        if candidate.is_dir():
            return candidate
    return Path.home() / ".lmstudio" / "models"


def find_ollama(root: Path) -> list[Found]:
    """Ollama keeps manifests/<registry>/<namespace>/<name>/<tag> (JSON) and blobs/sha256-<hex>."""
    manifests = root / "manifests"
    found = []
    for manifest in sorted(p for p in manifests.rglob("*") if p.is_file()):
        parts = manifest.relative_to(manifests).parts
        if len(parts) < 3:
            continue
        name, tag = parts[-2].lower(), parts[-1].lower()
        try:
            layers = json.loads(manifest.read_text("utf-8")).get("layers", [])
        except (OSError, ValueError):
            continue
        for layer in layers:
            if layer.get("mediaType") == "application/vnd.ollama.image.model":
                digest = str(layer.get("digest", "")).removeprefix("sha256:")
                blob = root / "blobs" / f"sha256-{digest}"
                if _HEX64.match(digest) and blob.is_file():
                    found.append(Found(blob, f"{name}:{tag}", digest, "ollama"))
    return found


def find_hf_cache(root: Path) -> list[Found]:
    """The Hub cache keeps models--ORG--REPO/snapshots/<rev>/<file> as links to blobs/<sha256>."""
    found = []
    for repo_dir in sorted(root.glob("models--*--*")):
        _, org, repo = repo_dir.name.split("--", 2)
        seen = set()
        for snapshot_file in sorted(repo_dir.glob("snapshots/*/**/*.gguf")):
            target = snapshot_file.resolve()
            if not target.is_file() or "mmproj" in snapshot_file.name.lower() or target in seen:
                continue
            seen.add(target)
            digest = target.name if _HEX64.match(target.name) else None
            found.append(Found(target, f"hf.co/{org}/{repo}", digest, "hf-cache"))
    return found


def find_lmstudio(root: Path) -> list[Found]:
    """LM Studio keeps <publisher>/<repo>/<file>.gguf, named after the Hub repositories."""
    found = []
    for path in sorted(root.glob("*/*/**/*.gguf")):
        if "mmproj" in path.name.lower() or not path.is_file():
            continue
        publisher, repo = path.relative_to(root).parts[:2]
        found.append(Found(path, f"hf.co/{publisher}/{repo}", None, "lmstudio"))
    return found


FINDERS = {
    "ollama": (find_ollama, ollama_root),
    "hf-cache": (find_hf_cache, hf_cache_root),
    "lmstudio": (find_lmstudio, lmstudio_root),
}


def import_from(db, tool: str, root: str | Path | None = None) -> tuple[list[Variant], list[str]]:
    """Index every GGUF a tool holds; return (imported variants, one-line problems)."""
    if tool not in FINDERS:
        raise LocalqError(f"unknown tool {tool!r}", "use one of: " + ", ".join(FINDERS))
    finder, default_root = FINDERS[tool]
    root = Path(root).expanduser() if root else default_root()
    if not root.is_dir():
        raise LocalqError(f"no {tool} models at {root}", "pass the folder that holds them with --path")
    imported, problems = [], []
    for item in finder(root):
        try:
            imported.append(import_file(db, item.path, item.model, sha256=item.sha256, source_kind=tool))
        except LocalqError as exc:
            problems.append(f"{item.path}: {exc.one_line()}")
    return imported, problems


def import_blobs(db) -> tuple[list[Variant], list[str]]:
    """Re-index GGUF blobs of localq's own store that the index does not know."""
    from localq.gguf_info import check_loadable, read_gguf_info
    from localq.store.index import referenced_blobs

    known = referenced_blobs(db)
    imported, problems = [], []
    for sha, _size in sorted(blobs.list_blobs().items()):
        if sha in known:
            continue
        path = blobs.blob_path(sha)
        try:
            info = check_loadable(read_gguf_info(path))
        except LocalqError as exc:
            problems.append(f"{path.name}: {exc.message}")
            continue
        name = default_name(Path((info.name or sha[:12]) + ".gguf"))
        imported.append(
            add_variant(
                db, model=name, source_kind="import", quant=quant_of(info, name), format="gguf",
                files=[FileEntry(f"{name}.gguf", sha, info.size_bytes)], architecture=info.architecture,
                parameters=info.parameter_count, provenance={"reindexed_blob": sha},
            )
        )
    return imported, problems
