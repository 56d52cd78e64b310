"""The model index: which models are installed, as which variants, in which blobs.

A *model* is what a user names (``smollm2:135m``, ``hf.co/org/repo``); a
*variant* is one quantization of it in one format (``q4_1`` GGUF, ``mlx-4bit``);
a variant's *files* are blobs with a relative name (one GGUF, the parts of a
split set, or an MLX directory's files). Everything a write touches changes in
one transaction, so nothing half-written stays in the index.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from localq.errors import ModelNotFound
from localq.names import ModelRef, parse
from localq.store import blobs
from localq.store.db import write_transaction
from localq.store.migrations import now


@dataclass(frozen=True)
class FileEntry:
    relpath: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Variant:
    """One installed variant of a model, with its files."""

    id: int
    model: str
    quant: str
    format: str
    size: int
    source: str | None
    revision: str | None
    provenance: dict
    created: str
    last_used: str | None
    architecture: str | None
    parameters: int | None
    files: tuple[FileEntry, ...]

    @property
    def ref(self) -> str:
        """The reference that names exactly this variant."""
        if self.model.startswith("hf.co/"):
            return f"{self.model}:{self.quant}"
        if ":" in self.model:
            return f"{self.model}-{self.quant}"
        return f"{self.model}:{self.quant}"

    @property
    def main_path(self) -> Path:
        """The blob to load: the GGUF (first part of a split set), or the first file."""
        ordered = sorted(self.files, key=lambda f: f.relpath)
        gguf = [f for f in ordered if f.relpath.lower().endswith(".gguf")]
        return blobs.blob_path((gguf or ordered)[0].sha256)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ref"] = self.ref
        data["path"] = str(self.main_path)
        return data


def add_variant(
    db,
    *,
    model: str,
    source_kind: str,
    quant: str,
    format: str,
    files: list[FileEntry],
    catalog_ref: str | None = None,
    architecture: str | None = None,
    parameters: int | None = None,
    source: str | None = None,
    revision: str | None = None,
    provenance: dict | None = None,
) -> Variant:
    """Record a variant whose blobs are already in the store; replaces one with the same quant."""
    stamp = now()
    with write_transaction(db):
        row = db.execute("SELECT id FROM models WHERE name = ?", [model]).fetchone()
        if row:
            model_id = row[0]
            db.execute(
                "UPDATE models SET architecture = COALESCE(?, architecture), parameters = COALESCE(?, parameters),"
                " catalog_ref = COALESCE(?, catalog_ref) WHERE id = ?",
                [architecture, parameters, catalog_ref, model_id],
            )
        else:
            model_id = db.execute(
                "INSERT INTO models (name, source_kind, catalog_ref, architecture, parameters, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [model, source_kind, catalog_ref, architecture, parameters, stamp],
            ).lastrowid
        old = db.execute(
            "SELECT id FROM variants WHERE model_id = ? AND quant = ? AND format = ?", [model_id, quant, format]
        ).fetchone()
        values = [sum(f.size for f in files), source, revision, json.dumps(provenance or {}), stamp]
        if old:
            # Replaced in place, so chats that used it keep pointing at it; measurements
            # of bytes that changed no longer hold.
            variant_id = old[0]
            old_files = {r[0] for r in db.execute("SELECT sha256 FROM files WHERE variant_id = ?", [variant_id])}
            if old_files != {f.sha256 for f in files}:
                db.execute("DELETE FROM evaluations WHERE variant_id = ?", [variant_id])
                db.execute("DELETE FROM benchmarks WHERE variant_id = ?", [variant_id])
            db.execute("DELETE FROM files WHERE variant_id = ?", [variant_id])
            db.execute(
                "UPDATE variants SET size = ?, source = ?, revision = ?, provenance = ?, created = ? WHERE id = ?",
                values + [variant_id],
            )
            unused = [sha for sha in old_files - {f.sha256 for f in files}]
        else:
            variant_id = db.execute(
                "INSERT INTO variants (model_id, quant, format, size, source, revision, provenance, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [model_id, quant, format] + values,
            ).lastrowid
            unused = []
        for f in files:
            db.execute(
                "INSERT OR IGNORE INTO blobs (sha256, size, created) VALUES (?, ?, ?)", [f.sha256, f.size, stamp]
            )
            db.execute(
                "INSERT INTO files (variant_id, relpath, sha256, size) VALUES (?, ?, ?, ?)",
                [variant_id, f.relpath, f.sha256, f.size],
            )
        unused = [sha for sha in unused if not db.execute("SELECT 1 FROM files WHERE sha256 = ?", [sha]).fetchone()]
        for sha in unused:
            db.execute("DELETE FROM blobs WHERE sha256 = ?", [sha])
    for sha in unused:
        blobs.remove(sha)
    return get_variant(db, variant_id)


_VARIANT_SQL = """
SELECT v.id, m.name, v.quant, v.format, v.size, v.source, v.revision, v.provenance,
       v.created, v.last_used, m.architecture, m.parameters
FROM variants v JOIN models m ON m.id = v.model_id
"""


def _variant_from_row(db, row) -> Variant:
    files = tuple(
        FileEntry(*f)
        for f in db.execute(
            "SELECT relpath, sha256, size FROM files WHERE variant_id = ? ORDER BY relpath", [row[0]]
        ).fetchall()
    )
    return Variant(
        id=row[0], model=row[1], quant=row[2], format=row[3], size=row[4], source=row[5], revision=row[6],
        provenance=json.loads(row[7] or "{}"), created=row[8], last_used=row[9], architecture=row[10],
        parameters=row[11], files=files,
    )


def get_variant(db, variant_id: int) -> Variant:
    row = db.execute(_VARIANT_SQL + " WHERE v.id = ?", [variant_id]).fetchone()
    if row is None:
        raise ModelNotFound(f"no installed variant with id {variant_id}")
    return _variant_from_row(db, row)


def list_variants(db) -> list[Variant]:
    """Every installed variant, by model name then quant."""
    rows = db.execute(_VARIANT_SQL + " ORDER BY m.name, v.quant").fetchall()
    return [_variant_from_row(db, row) for row in rows]


def find(db, ref: ModelRef | str) -> list[Variant]:
    """The installed variants a reference may mean, best match first."""
    ref = parse(ref) if isinstance(ref, str) else ref
    candidates = list_variants(db)
    if ref.kind == "path":
        return []
    quant = ref.quant
    if ref.kind == "hf":
        matches = [v for v in candidates if v.model.lower() == ref.model.lower()]
    else:
        name = ref.model
        matches = [v for v in candidates if v.model == name or v.model == ref.format()]
        if not matches and ref.size is None and ref.tag in (None, ref.quant):
            # A bare family name ("smollm2", "smollm2:q4_1") means any installed size of it;
            # a tag that is neither a size nor a quant ("smollm2:135n", a typo) means none.
            matches = [v for v in candidates if v.model.split(":")[0] == ref.name]
        if not matches and ref.tag and not quant:
            matches = [v for v in candidates if v.model == f"{ref.name}:{ref.tag}"]
    if quant:
        matches = [v for v in matches if v.quant == quant]
    # The variant used last comes first, then the newest.
    return sorted(matches, key=lambda v: (v.last_used or "", v.created), reverse=True)


def close_names(db, text: str, n: int = 3) -> list[str]:
    """Installed references (and model names) that look like ``text``: for "did you mean ...?"."""
    import difflib

    variants = list_variants(db)
    names = sorted({v.ref for v in variants} | {v.model for v in variants})
    return difflib.get_close_matches(text.strip().lower(), names, n=n, cutoff=0.6)


def not_installed(db, ref: ModelRef | str, advice: str | None = None) -> ModelNotFound:
    """The error for a reference that names no installed model: what looks close, else ``advice``.

    ``advice`` is what to do when nothing is close (``resolve``: pull it; ``rm``
    passes None, since pulling a model to remove it helps no one). The installed
    models are listed either way.
    """
    text = ref if isinstance(ref, str) else ref.format()
    close = close_names(db, text)
    installed = sorted({v.ref for v in list_variants(db)})
    hints = [f"did you mean {' or '.join(close)}?"] if close else ([advice] if advice else [])
    if installed and not close:
        hints.append("installed: " + ", ".join(installed[:8]) + (" ..." if len(installed) > 8 else ""))
    elif not installed:
        hints.append("no models are installed")
    return ModelNotFound(f"model {text!r} is not installed", "; ".join(hints))


def resolve(db, ref: ModelRef | str) -> Variant:
    """The one installed variant a reference names, or ModelNotFound with what to do."""
    text = ref if isinstance(ref, str) else ref.format()
    found = find(db, ref)
    if found:
        return found[0]
    raise not_installed(db, ref, f"pull it with `localq pull {text}`")


def touch(db, variant_id: int) -> None:
    """Record that a variant was just used."""
    with write_transaction(db):
        db.execute("UPDATE variants SET last_used = ? WHERE id = ?", [now(), variant_id])


def referenced_blobs(db) -> set[str]:
    return {row[0] for row in db.execute("SELECT DISTINCT sha256 FROM files").fetchall()}


def remove_variant(db, variant_id: int) -> int:
    """Remove a variant from the index and free the blobs nothing else uses; return bytes freed."""
    with write_transaction(db):
        shas = [r[0] for r in db.execute("SELECT sha256 FROM files WHERE variant_id = ?", [variant_id]).fetchall()]
        model_id = db.execute("SELECT model_id FROM variants WHERE id = ?", [variant_id]).fetchone()
        db.execute("DELETE FROM files WHERE variant_id = ?", [variant_id])
        db.execute("UPDATE chats SET variant_id = NULL WHERE variant_id = ?", [variant_id])
        db.execute("DELETE FROM evaluations WHERE variant_id = ?", [variant_id])
        db.execute("DELETE FROM benchmarks WHERE variant_id = ?", [variant_id])
        db.execute("DELETE FROM variants WHERE id = ?", [variant_id])
        if model_id and not db.execute("SELECT 1 FROM variants WHERE model_id = ?", [model_id[0]]).fetchone():
            db.execute("DELETE FROM models WHERE id = ?", [model_id[0]])
        unused = [s for s in set(shas) if not db.execute("SELECT 1 FROM files WHERE sha256 = ?", [s]).fetchone()]
        for sha in unused:
            db.execute("DELETE FROM blobs WHERE sha256 = ?", [sha])
    # Files go after the commit: a crash between leaves an orphan blob for
    # `localq prune`, never an index row that points at nothing.
    return sum(blobs.remove(sha) for sha in unused)
