"""``localq pull MODEL-int4-gN``: no INT4 checkpoint is on the Hub, so pull the source weights and quantize them here.

INT4 checkpoints are localq's own format (``localq quantize --to int4-gN``),
made for the torch version at hand; nobody publishes them. A pull of one is
three steps, each a service localq already has:

1. the model's safetensors source: the catalog entry's ``source_repo`` (for
   ``hf.co/ORG/REPO:int4-gN``, that repository, or the source of the catalog
   entry whose GGUF repository it is), pulled as ``hf.co/ORG/REPO:source`` by
   ``download.pull`` (resumable, verified, stored and indexed like any pull;
   kept afterwards, so the next group size needs no download);
2. ``localq quantize``'s ``int4-`` target on it (``jobs.quantize``),
   round-to-nearest, stored as ``MODEL-int4-gN`` with its provenance;
3. nothing else: an INT4 variant already installed is the answer as it is.

Downloading gigabytes and quantizing for minutes is not what a pull usually
does, so ``plan`` says what will happen (``Int4Pull.question``) and the
caller asks first; ``go_ahead`` decides (``-y``; with no terminal to ask on
and no ``-y``, an error that says to pass it). What ``plan`` can check before
any byte is fetched it does: torch is installed, the architecture is one the
torch INT4 backend runs, and (from the catalog's numbers) the group size
divides the model's rows.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from localq.errors import InvalidReference, LocalqError, ModelNotFound
from localq.names import INT4_QUANTS, ModelRef, parse

TORCH_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")   # localq.backends.torch_int4.model's, by model_type


def wanted(ref: str) -> bool:
    """True when ``ref`` names an INT4 quant (``smollm2:135m-int4-g64``, ``hf.co/ORG/REPO:int4-g128``)."""
    try:
        parsed = parse(ref)
    except LocalqError:
        return False
    return parsed.kind in ("catalog", "hf") and parsed.quant in INT4_QUANTS


@dataclass
class Int4Pull:
    """What ``run`` will do for one INT4 reference."""

    ref: str                    # as it will be installed: smollm2:135m-int4-g64
    model: str                  # the index's model name the variant is stored under
    target: str                 # int4-g32 / int4-g64 / int4-g128
    source_ref: str             # the source pull: hf.co/ORG/REPO:source
    installed: object = None    # the INT4 variant, when it is already installed
    source_installed: object = None   # the stored source at the Hub's revision, when present
    source_size: int | None = None    # bytes the source pull fetches at most (None offline)
    source_quant: str = ""      # the source's dtype (bf16, f16, f32)

    @property
    def question(self) -> str:
        """The one line that says what will happen, ending in a question."""
        from localq.units import size as human_size

        if self.source_installed is not None:
            fetch = f"quantize the installed {self.source_installed.ref}"
        else:
            size = f", {human_size(self.source_size)}" if self.source_size is not None else ""
            fetch = f"pull its safetensors source {self.source_ref} ({self.source_quant}{size}) and quantize it"
        return (f"no {self.target} checkpoint of {self.model} is on the Hub (localq makes INT4 itself): "
                f"localq will {fetch} here to {self.target} (round-to-nearest). Go ahead?")


def plan(ref_text: str, db, *, revision: str | None = None, offline: bool = False) -> Int4Pull:
    """The plan for ``ref_text``; refuses before any download what could not be made."""
    from localq.hub import catalog_entry_for_repo, resolve
    from localq.store.index import find

    ref = parse(ref_text)
    target = ref.quant
    entry, model, source_repo = _source_of(ref, catalog_entry_for_repo)
    pull = Int4Pull(ref="", model=model, target=target, source_ref=f"hf.co/{source_repo}:source")
    pull.ref = f"{model}:{target}" if model.startswith("hf.co/") else f"{model}-{target}"
    pull.installed = next((v for v in find(db, pull.ref) if v.format == "int4"), None)
    if pull.installed is not None:
        return pull
    check_can_make(entry, target)
    stored = [v for v in find(db, f"hf.co/{source_repo}") if v.format == "safetensors"]
    if offline:
        if not stored:
            raise LocalqError(f"offline: {pull.ref} is not installed, nor its source {pull.source_ref}",
                              f"connect to the network and run `localq pull {pull.ref}`")
        pull.source_installed = stored[0]
        return pull
    source = resolve(pull.source_ref, revision=revision)
    if source.format != "safetensors":
        raise LocalqError(f"{source_repo} holds {source.quant} weights, not a safetensors source to quantize",
                          "pull a GGUF quant instead, e.g. `localq pull MODEL-q4_k_m`")
    if (source.architecture or "").lower() not in TORCH_ARCHITECTURES:
        raise LocalqError(f"the torch INT4 backend does not run {source_repo}'s {source.architecture} architecture",
                          f"it runs {', '.join(TORCH_ARCHITECTURES)}; pull a GGUF quant with llama.cpp instead")
    pull.source_size, pull.source_quant = source.size, source.quant
    pull.source_installed = next((v for v in stored if v.revision == source.revision), None)
    return pull


def _source_of(ref: ModelRef, entry_for_repo) -> tuple[object, str, str]:
    """(catalog entry or None, model name to store under, the source repository) for an INT4 reference."""
    if ref.kind == "hf":
        entry = entry_for_repo(ref.repo_id)
        return entry, ref.model, (entry.source_repo if entry else ref.repo_id)
    from localq.catalog import find as find_entry

    entry = find_entry(ref.name, ref.size)
    if entry is None:
        raise ModelNotFound(f"no model named {ref.name!r}{f' of size {ref.size}' if ref.size else ''} in the catalog",
                            "see `localq catalog`, or name a Hub repository as hf.co/ORG/REPO:int4-g128")
    if not entry.source_repo:
        raise InvalidReference(f"the catalog knows no safetensors source for {entry.ref}",
                               f"pull a GGUF quant instead, e.g. `localq pull {entry.ref}-q4_k_m`")
    return entry, entry.ref, entry.source_repo


def check_can_make(entry, target: str) -> None:
    """Refuse, before any download, what quantizing would refuse after it."""
    from localq.quantize.int4 import group_of

    if importlib.util.find_spec("torch") is None:
        raise LocalqError(f"making {target} needs torch, which is not installed", "pip install 'localq[torch]'")
    group = group_of(target)
    if entry is None:
        return                  # the rows are known once config.json is here: quantize checks them then
    rows = {"hidden_size": entry.hidden_size, "intermediate_size": entry.intermediate_size,
            "heads x head_dim": entry.heads * entry.head_dim}
    for what, k in rows.items():
        if k % group:
            fits = [g for g in (128, 64, 32) if all(n % g == 0 for n in rows.values())]
            raise LocalqError(f"group size {group} does not divide {entry.ref}'s rows ({what} {k})",
                              f"pull {entry.ref}-int4-g{fits[0]} instead" if fits else "pull a GGUF quant instead")


def go_ahead(pull: Int4Pull, yes: bool, interactive: bool, ask: Callable[[str], bool]) -> bool:
    """Whether to run ``pull``: nothing to do or ``yes`` -> True; else ask, or fail when no one can answer."""
    if pull.installed is not None or yes:
        return True
    if not interactive:
        raise LocalqError(f"{pull.ref} is made here, not downloaded: {pull.question.removesuffix(' Go ahead?')}",
                          f"pass -y to go ahead without being asked: localq pull {pull.ref} -y")
    return ask(pull.question)


@dataclass
class Int4PullResult:
    variant: object
    status: str                 # "installed" (already there) or "made"
    source: object = None       # the source variant quantized
    downloaded: int = 0         # bytes the source pull fetched


def run(pull: Int4Pull, db, *, revision: str | None = None, max_rate=None, retries: int | None = None,
        offline: bool = False, on_progress=None, say: Callable[[str], None] = print) -> Int4PullResult:
    """Pull the source (unless it is installed) and quantize it to ``pull.target``; the INT4 variant stored."""
    from localq.download import pull as download_pull
    from localq.quantize import jobs, output

    if pull.installed is not None:
        return Int4PullResult(pull.installed, "installed")
    downloaded = 0
    source = pull.source_installed
    if source is None or not offline:
        options = {"retries": retries} if retries is not None else {}
        result = download_pull(pull.source_ref, db=db, revision=revision, max_rate=max_rate, offline=offline,
                               on_progress=on_progress, **options)
        source, downloaded = result.variant, result.downloaded
    say(f"quantizing {source.ref} to {pull.target} here (round-to-nearest)")
    # The stored source as a directory of its files under their names, the result filed under the model named.
    stored = jobs.Source(output.variant_directory(source), "hf", pull.model, temporary=True)
    made = jobs.quantize(db, stored, [pull.target], jobs.Options())
    return Int4PullResult(made[0].variant, "made", source, downloaded)
