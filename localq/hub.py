"""Hub resolution: from a model reference to the exact files to download.

(Over 400 lines: one reference goes through the catalog, the Hub's listing (which is not
trusted: paths, sizes and digests are checked), GGUF split sets, MLX and safetensors
repositories; the parts share the listing's parsing. Splitting by repository kind is the
next step.)

``resolve`` turns what a user typed into a :class:`PullPlan`: the repository,
the commit it stands at, and every file to fetch with its size and the sha256
the Hub's LFS records for it. Nothing is downloaded here except two small JSON
files of a safetensors repository (its ``config.json`` and weight index).

How references map to files:

- ``smollm2:135m-q8_0`` (catalog): the entry's ``gguf_repo``; ``...-mlx-4bit``
  takes the entry's MLX repository instead. int4 variants are never on the Hub
  (they are made locally from the source weights).
- ``hf.co/ORG/REPO:Q4_K_M``: the GGUF whose file name carries that quant,
  case-insensitive, as llama.cpp's ``-hf`` finds it. Each GGUF's quant is the
  last ``-``/``.``-separated word of its name that looks like a quant
  (``Q4_K_M``, ``IQ4_XS``, ``BF16``, ``UD-Q4_K_XL`` -> ``q4_k_xl``); a requested
  quant that is no such word matches as a whole word of the name instead.
- A split set (``NAME-00001-of-00003.gguf`` ...) is one model: all its parts.
- ``mmproj`` and ``imatrix`` files are sidecars, never the model.
- No quant named: the caller's ``choose_quant`` picks among the quants the
  repository has (``localq pull`` asks the recommender for this machine: see
  ``localq.download.orchestrate.recommended_quant``); when it has no answer,
  Q4_K_M or the nearest quant present (:func:`fallback_quant`). Resolution
  itself has no policy: it neither probes the machine nor recommends.
- A repository with no GGUF but safetensors weights: ``config.json``, the
  tokenizer files, the weights and their index. Indexed as format ``mlx`` with
  quant ``mlx-<bits>bit`` when the config carries MLX's ``quantization`` block,
  else as format ``safetensors`` with the config's dtype as quant (``bf16``,
  ``f16``, ``f32``; ``source`` when it names none).

huggingface_hub supplies the endpoint, the token and the metadata, and the
environment is read on every call: ``HF_ENDPOINT``, ``HF_TOKEN`` (or the token
``hf auth login`` saved) and ``HF_HUB_OFFLINE`` work as users expect.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from localq.errors import BadModelFile, HubError, InvalidReference, ModelNotFound
from localq.names import INT4_QUANTS, MLX_QUANTS, ModelRef, parse

DEFAULT_ENDPOINT = "https://huggingface.co"
API_RETRIES = 4              # tries of a metadata request that fails with 5xx or a dropped connection
API_BACKOFF_S = 0.5          # first wait between them; doubles each time

# The tokenizer and config files a safetensors model needs beside its weights.
SAFETENSORS_EXTRAS = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "tokenizer.model", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt", "chat_template.jinja", "chat_template.json",
)
SAFETENSORS_INDEX = "model.safetensors.index.json"
SIDECAR_WORDS = ("mmproj", "imatrix")

# For a repository the catalog does not know (the recommender cannot size it),
# the quant to take when none is named: the first of these the repository has.
# Q4_K_M is what Ollama's default tags and llama.cpp's ``-hf`` pick; the rest go
# outward from it, smaller-but-close first.
FALLBACK_QUANT_ORDER = (
    "q4_k_m", "q4_k_s", "q5_k_m", "iq4_xs", "q4_0", "q5_k_s", "iq4_nl", "q4_1", "q5_0",
    "q5_1", "q6_k", "q3_k_l", "q3_k_m", "q8_0", "q3_k_s", "iq3_m", "iq3_xs", "q2_k",
    "bf16", "f16", "f32",
)

_SPLIT_RE = re.compile(r"^(?P<base>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_QUANT_WORD_RE = re.compile(r"^(i?q\d+(_[a-z0-9]+)*|tq\d_\d|mxfp4(_moe)?|bf16|fp16|f16|fp32|f32)$")
_HEX_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_TAG_FILLER_WORDS = {"instruct", "it", "chat", "latest"}


@dataclass(frozen=True)
class RemoteFile:
    """One file of a repository, as the Hub describes it."""

    path: str                 # path inside the repository
    size: int
    sha256: str | None        # the LFS sha256; None for small files kept in git
    git_oid: str | None       # the git blob id (sha1); checks files that have no sha256
    url: str                  # where to GET it (the Hub redirects to its CDN)

    @property
    def key(self) -> str:
        """A name for this exact content, stable across processes: names its partial download."""
        # Only a well-formed digest names a file as it is: a listing's text never becomes a path.
        if self.sha256 and _HEX_RE.fullmatch(self.sha256):
            return f"sha256-{self.sha256}"
        if self.git_oid and _HEX_RE.fullmatch(self.git_oid):
            return f"git-{self.git_oid}"
        ids = f"{self.sha256}\0{self.git_oid}\0{self.url}"
        return "url-" + hashlib.sha256(ids.encode("utf-8", "surrogatepass")).hexdigest()

    @property
    def relpath(self) -> str:
        """The name it gets inside the variant: GGUF parts keep their base names (split sets
        must stay siblings); other files keep their repository path."""
        return self.path.rsplit("/", 1)[-1] if self.path.lower().endswith(".gguf") else self.path


@dataclass(frozen=True)
class PullPlan:
    """What a pull will fetch and how it will be indexed."""

    ref: str                          # the reference, canonical
    model: str                        # the index's model name: "smollm2:135m", "hf.co/ORG/REPO"
    source_kind: str                  # "catalog" or "hf"
    catalog_ref: str | None
    repo_id: str
    revision: str                     # the commit the files come from
    endpoint: str
    quant: str
    format: str                       # "gguf", "safetensors" or "mlx"
    files: tuple[RemoteFile, ...]
    available: dict[str, int] = field(default_factory=dict)  # GGUF quant -> bytes, what the repo has
    choice: str = "named"             # how the quant was chosen: named, recommended, default, source
    reason: str = ""                  # why, in words, when localq chose
    architecture: str | None = None   # from the catalog or config.json, when known
    parameters: int | None = None

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def repo_url(self) -> str:
        """The repository's address, without any credentials written into HF_ENDPOINT."""
        return f"{public_address(self.endpoint)}/{self.repo_id}"

    def to_dict(self) -> dict:
        return {
            "ref": self.ref, "model": self.model, "repo": self.repo_id, "revision": self.revision,
            "quant": self.quant, "format": self.format, "size": self.size, "choice": self.choice,
            "reason": self.reason, "available": self.available,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
        }


# --- environment -------------------------------------------------------------


def endpoint() -> str:
    """The Hub's address: ``HF_ENDPOINT`` (read now, not at import) or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def public_address(url: str) -> str:
    """``url`` without a ``user:password@`` part: what may be stored, logged or printed."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def offline_mode() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value, as huggingface_hub reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def request_headers() -> dict[str, str]:
    """huggingface_hub's headers (user agent, and the token from HF_TOKEN or `hf auth login`)."""
    from huggingface_hub.utils import build_hf_headers

    headers = build_hf_headers()
    headers["Accept-Encoding"] = "identity"  # byte offsets must be of the file itself
    return headers


def file_url(repo_id: str, path: str, revision: str, hub: str | None = None) -> str:
    from huggingface_hub import hf_hub_url

    return hf_hub_url(repo_id, path, revision=revision, endpoint=hub or endpoint())


# --- errors ------------------------------------------------------------------


def how_to_give_a_token() -> str:
    """How to give localq a Hub token: HF_TOKEN always works; the ``hf`` login command is
    named only when the installed huggingface_hub provides it."""
    from importlib.metadata import entry_points

    login = any(e.name == "hf" and e.value.startswith("huggingface_hub.") for e in entry_points(group="console_scripts"))
    return "set HF_TOKEN=hf_..." + (" or log in with `hf auth login`" if login else "")


def login_error(repo_id: str, status: int | None, hub: str | None = None) -> HubError:
    """The error for 401/403: the repository is private or gated, or the token lacks access."""
    code = f" ({status})" if status else ""
    return HubError(
        f"the Hub refused access to {repo_id}{code}: it is gated or private, or the token cannot read it",
        f"{how_to_give_a_token()}; for a gated model, accept its terms at {public_address(hub or endpoint())}/{repo_id}",
    )


def check_gated_access(repo_id: str, gated: bool) -> None:
    """Before anything is downloaded: a gated repository needs a token (and, on the Hub, the
    licence accepted by that account). With no token at all the pull would fail on its first
    file, so it stops here and says what is needed; with one, the Hub decides (401/403 then
    give ``login_error``)."""
    from huggingface_hub import get_token

    if gated and not get_token():
        raise HubError(
            f"{repo_id} is gated: pulling it needs a Hugging Face token of an account that accepted its licence",
            f"accept the licence at {public_address(endpoint())}/{repo_id}, then {how_to_give_a_token()} "
            f"(a read token from {public_address(endpoint())}/settings/tokens)",
        )


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a failed request (huggingface_hub, its HTTP client, or urllib), or None."""
    import urllib.error

    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is None and isinstance(exc, urllib.error.HTTPError):
        status = exc.code
    return status


def hub_error(exc: BaseException, repo_id: str, *, revision: str | None = None, path: str | None = None) -> HubError:
    """A HubError for a failed huggingface_hub call or HTTP request."""
    from huggingface_hub import errors as hf_errors

    hub = public_address(endpoint())
    status = status_of(exc)
    if isinstance(exc, hf_errors.GatedRepoError) or status in (401, 403):
        return login_error(repo_id, status, hub)
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return HubError(f"revision {revision!r} not found in {repo_id}", "check the branch, tag or commit name")
    if isinstance(exc, hf_errors.EntryNotFoundError) or (status == 404 and path):
        return HubError(f"{path} is not in {repo_id} at {(revision or 'main')[:12]}", "the repository changed; run the pull again")
    if isinstance(exc, hf_errors.RepositoryNotFoundError) or status == 404:
        return HubError(
            f"no repository {repo_id} on {hub}",
            "check the name (hf.co/ORG/REPO, as on the Hub's page), or `localq catalog` for known models",
        )
    if isinstance(exc, hf_errors.OfflineModeIsEnabled):
        return HubError("HF_HUB_OFFLINE is set: the Hub cannot be reached", "unset HF_HUB_OFFLINE to pull")
    if status is not None:
        return HubError(f"the Hub answered {status} for {repo_id}", "try again later")
    detail = public_address(str(exc)) if "@" in str(exc) else exc
    error = HubError(f"cannot reach {hub}: {detail}", "check the network connection and HF_ENDPOINT, then try again")
    error.unreachable = True  # no answer at all: a pull of an installed model can still say it is installed
    return error


def _client_errors() -> tuple[type, ...]:
    """The base errors of the HTTP client under huggingface_hub's session: httpx2 (2.x),
    httpx (1.x) or requests (older), whichever are installed."""
    import importlib

    found = []
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


def is_hub_failure(exc: BaseException) -> bool:
    """True for the failures of talking to the Hub (HTTP errors, network, offline mode)."""
    import http.client

    from huggingface_hub import errors as hf_errors

    return isinstance(exc, (
        hf_errors.HfHubHTTPError, hf_errors.OfflineModeIsEnabled, http.client.HTTPException, OSError, *_client_errors(),
    ))


def is_retryable(exc: BaseException) -> bool:
    """5xx, 408 and 429 answers and dropped, refused or silent connections are worth another try."""
    from huggingface_hub import errors as hf_errors

    status = status_of(exc)
    if status is not None:
        return status in (408, 429) or status >= 500
    return is_hub_failure(exc) and not isinstance(exc, (PermissionError, hf_errors.OfflineModeIsEnabled))


def _with_retries(call: Callable, repo_id: str, *, revision: str | None = None):
    """Run a metadata request, retrying transient failures with backoff; map the rest to HubError."""
    wait = API_BACKOFF_S
    for attempt in range(API_RETRIES):
        try:
            return call()
        except Exception as exc:
            if not is_hub_failure(exc):
                raise
            if attempt + 1 < API_RETRIES and is_retryable(exc):
                time.sleep(wait)
                wait *= 2
                continue
            raise hub_error(exc, repo_id, revision=revision) from exc


# --- quants in file names ----------------------------------------------------


def is_sidecar(path: str) -> bool:
    """mmproj (vision projector) and imatrix files ride along with models but are not one."""
    name = path.rsplit("/", 1)[-1].lower()
    return any(word in name for word in SIDECAR_WORDS)


def quant_in_name(path: str) -> str | None:
    """The quant a GGUF file name carries, lower case: ``Llama-3.2-1B-Q4_K_M.gguf`` -> ``q4_k_m``."""
    name = path.rsplit("/", 1)[-1]
    split = _SPLIT_RE.match(name)
    stem = split["base"] if split else re.sub(r"\.gguf$", "", name, flags=re.IGNORECASE)
    for word in reversed(re.split(r"[-.]", stem.lower())):
        if _QUANT_WORD_RE.match(word):
            return word
    return None


@dataclass(frozen=True)
class GGUFSet:
    """One model in a GGUF repository: a single file, or all parts of a split set."""

    name: str                     # path without the split suffix
    quant: str | None             # from the file name
    files: tuple[RemoteFile, ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def gguf_sets(files: list[RemoteFile]) -> list[GGUFSet]:
    """The repository's GGUF models, sidecars left out; a split set must have all its parts."""
    found: list[GGUFSet] = []
    splits: dict[str, list[tuple[int, int, RemoteFile]]] = {}
    for f in files:
        if not f.path.lower().endswith(".gguf") or is_sidecar(f.path):
            continue
        match = _SPLIT_RE.match(f.path)
        if match:
            splits.setdefault(match["base"], []).append((int(match["no"]), int(match["count"]), f))
        else:
            found.append(GGUFSet(f.path, quant_in_name(f.path), (f,)))
    for base, parts in splits.items():
        parts.sort(key=lambda p: p[0])
        count = parts[0][1]
        if [p[0] for p in parts] != list(range(1, count + 1)) or any(p[1] != count for p in parts):
            continue  # an incomplete set cannot be loaded; it is not offered
        found.append(GGUFSet(base, quant_in_name(parts[0][2].path), tuple(p[2] for p in parts)))
    return sorted(found, key=lambda s: (s.name.count("/"), len(s.name), s.name))


def available_quants(sets: list[GGUFSet]) -> dict[str, int]:
    """Quant -> bytes of the first set that carries it."""
    found: dict[str, int] = {}
    for s in sets:
        if s.quant and s.quant not in found:
            found[s.quant] = s.size
    return found


def match_quant(sets: list[GGUFSet], quant: str, repo_id: str, suggest: Callable[[str], str] | None = None) -> GGUFSet:
    """The set a requested quant names: by its quant word, else as a whole word of its name.

    A request that is itself a quant word (``q6_k``) matches only that quant:
    never ``Q6_K_L``, which is another file (other tensor types); the error then
    offers it by its own name.
    """
    exact = [s for s in sets if s.quant == quant]
    if exact:
        return exact[0]
    suggest = suggest or (lambda q: f"hf.co/{repo_id}:{q.upper()}")
    if _QUANT_WORD_RE.match(quant):
        near = sorted({s.quant for s in sets if s.quant and s.quant.startswith(quant + "_")})
        if near:
            raise HubError(
                f"{repo_id} has no {quant.upper()} file; it has {', '.join(q.upper() for q in near)}, "
                "which is another quant",
                f"pull it by its own name, e.g. {suggest(near[0])}",
            )
        loose = []
    else:
        word = re.compile(rf"(?<![a-z0-9]){re.escape(quant)}(?![a-z0-9])")
        loose = [s for s in sets if word.search(s.name.rsplit("/", 1)[-1].lower())]
    kinds = sorted({s.quant or s.name for s in loose})
    if len(kinds) > 1:
        raise HubError(f"{quant!r} matches several files in {repo_id}: {', '.join(kinds)}", "name one of them exactly")
    if loose:
        return loose[0]
    have = sorted(available_quants(sets))
    example = suggest(fallback_quant(available_quants(sets))) if have else None
    raise HubError(
        f"{repo_id} has no {quant.upper()} file; it has: {', '.join(have) or 'no file with a quant in its name'}",
        f"pull one of those, e.g. {example}" if example else "name the file's quant as it appears in its name",
    )


# --- the default quant --------------------------------------------------------


def fallback_quant(quants: dict[str, int]) -> str:
    """The first quant of FALLBACK_QUANT_ORDER the repository has, else its smallest file."""
    for quant in FALLBACK_QUANT_ORDER:
        if quant in quants:
            return quant
    return min(quants, key=lambda q: (quants[q], q))


# --- resolution ---------------------------------------------------------------


def resolve(
    ref: ModelRef | str,
    *,
    revision: str | None = None,
    choose_quant: Callable[[object, dict[str, int]], str | tuple[str, str, str] | None] | None = None,
) -> PullPlan:
    """The plan for pulling ``ref``: repository, commit, files with sizes and sha256.

    When ``ref`` names no quant, ``choose_quant(catalog_model_or_None, {quant:
    bytes})`` picks one: a quant, or (quant, how, why) for the plan's ``choice``
    and ``reason``, or None to leave it to :func:`fallback_quant`.
    Raises InvalidReference, ModelNotFound or HubError with what to do.
    """
    ref = parse(ref) if isinstance(ref, str) else ref
    if ref.kind == "path":
        raise InvalidReference(f"{ref.path!r} is a file, not a model to pull", f"index it with `localq import {ref.path}`")
    entry, repo_id, quant, model_name = _target(ref)
    try:
        info = _with_retries(lambda: _model_info(repo_id, revision), repo_id, revision=revision)
        catalog_gated = entry is not None and entry.gated and repo_id == entry.source_repo
        check_gated_access(repo_id, bool(getattr(info, "gated", False)) or catalog_gated)
        commit = info.sha or revision or "main"
        files, refused = _remote_files(info, repo_id, commit)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:   # a listing huggingface_hub cannot parse
        raise HubError(f"the Hub's answer for {repo_id} is malformed ({type(exc).__name__}: {exc})",
                       "check HF_ENDPOINT: it may not be a Hugging Face Hub") from None
    base = dict(
        ref=ref.format(), model=model_name, source_kind=ref.kind, catalog_ref=entry.ref if entry else None,
        repo_id=repo_id, revision=commit, endpoint=endpoint(),
        architecture=entry.architecture if entry else None, parameters=entry.parameters if entry else None,
    )
    sets = gguf_sets(files)
    wants_weights = quant is not None and (quant in MLX_QUANTS or quant == "source")
    if quant and not any(st.quant == quant for st in sets):
        refusal = _refused_for(refused, quant)
    else:
        refusal = refused[0][1] if refused and not sets and not any(f.path.endswith(".safetensors") for f in files) else None
    if refusal:
        raise HubError(refusal, "the Hub (or HF_ENDPOINT's server) sent a listing localq does not trust; nothing was downloaded")
    if sets and not wants_weights:
        return _gguf_plan(base, sets, quant, entry, repo_id, choose_quant)
    if any(f.path.endswith(".safetensors") for f in files):
        return _safetensors_plan(base, files, quant, repo_id, commit)
    if quant in MLX_QUANTS:
        raise HubError(f"{repo_id} holds no safetensors weights for {quant}", "pull a GGUF quant instead")
    raise HubError(f"{repo_id} holds no GGUF or safetensors model files", "pick a repository with GGUF files (often named ...-GGUF)")


def _target(ref: ModelRef):
    """(catalog entry or None, repository, requested quant, model name) for a reference."""
    from localq.catalog import find, load_catalog

    if ref.kind == "hf":
        return catalog_entry_for_repo(ref.repo_id), ref.repo_id, ref.hf_quant, ref.model

    entry = find(ref.name, ref.size)
    if entry is None:
        family = [m for m in load_catalog() if m.name == ref.name]
        if family:
            sizes = ", ".join(m.size for m in family)
            raise ModelNotFound(f"{ref.name} has no size {ref.size}", f"sizes in the catalog: {sizes}")
        raise ModelNotFound(
            f"no model named {ref.name!r} in the catalog",
            "see `localq catalog`, or pull a Hub repository as hf.co/ORG/REPO:QUANT",
        )
    quant = ref.quant
    _check_tag(ref, quant, entry)
    if quant in INT4_QUANTS:
        raise InvalidReference(
            f"{quant} variants are not on the Hub: they are made locally from the source weights",
            f"pull a GGUF quant instead, e.g. `localq pull {entry.ref}-q4_k_m`"
        )
    if quant in MLX_QUANTS:
        repo = entry.mlx_repos.get(quant)
        if not repo:
            have = ", ".join(sorted(entry.mlx_repos)) or "none"
            raise ModelNotFound(f"no {quant} repository known for {entry.ref} (MLX quants: {have})",
                                f"pull a GGUF quant instead, e.g. `localq pull {entry.ref}-q4_k_m`")
        return entry, repo, quant, entry.ref
    return entry, entry.gguf_repo, quant, entry.ref


def catalog_entry_for_repo(repo_id: str):
    """The catalog entry whose GGUF, source or MLX repository is ``repo_id`` (any case), or None."""
    from localq.catalog import load_catalog

    wanted = repo_id.lower()
    for entry in load_catalog():
        if wanted in {r.lower() for r in (entry.gguf_repo, entry.source_repo, *entry.mlx_repos.values())}:
            return entry
    return None


def _check_tag(ref: ModelRef, quant: str | None, entry) -> None:
    """A catalog tag is SIZE[-QUANT] (plus words like ``instruct``); anything else is a mistake."""
    if not ref.tag:
        return
    rest = ref.tag[: -len(quant)].rstrip("-") if quant else ref.tag
    unknown = [w for w in rest.split("-") if w and w != ref.size and w not in _TAG_FILLER_WORDS]
    if unknown:
        from localq.catalog import load_catalog

        sizes = ", ".join(m.size for m in load_catalog() if m.name == entry.name)
        raise InvalidReference(
            f"unknown tag {ref.tag!r} for {ref.name}: {'-'.join(unknown)!r} is not a size or a quant",
            f"write {ref.name}:SIZE or {ref.name}:SIZE-QUANT, e.g. {entry.ref}-q4_k_m (sizes: {sizes})",
        )


def _model_info(repo_id: str, revision: str | None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint()).model_info(repo_id, revision=revision, files_metadata=True)


def _remote_files(info, repo_id: str, commit: str) -> tuple[list[RemoteFile], list[tuple[str, str]]]:
    """The repository's files as the Hub lists them, each checked (see ``listing_problem``).

    A file whose entry is hostile or broken is left out: it is never offered,
    downloaded or recorded. Returns (files, refusals), one line per refused
    file, for the error a request that needed such a file gets.
    """
    hub = endpoint()
    files, refused = [], []
    for sibling in info.siblings or []:
        if sibling.size is None:
            raise HubError(f"the Hub gave no file sizes for {repo_id}", "the endpoint may not be a Hugging Face Hub; check HF_ENDPOINT")
        lfs = sibling.lfs if isinstance(sibling.lfs, dict) or sibling.lfs is None else None
        path = sibling.rfilename
        size = lfs.get("size") if lfs else sibling.size
        sha = lfs.get("sha256") if lfs else None
        problem = listing_problem(path, size, sha, lfs is not None)
        if problem:
            refused.append((path, f"{repo_id} lists {path!r}, refused: {problem}"))
            continue
        files.append(RemoteFile(
            path=path,
            size=int(size),
            sha256=sha.lower() if sha else None,
            git_oid=sibling.blob_id if isinstance(sibling.blob_id, str) else None,
            url=file_url(repo_id, path, commit, hub),
        ))
    return files, refused

_HEX64_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
MAX_FILE_BYTES = 2**50    # 1 PiB: no real model file is anywhere near that big in one piece


def listing_problem(path, size, sha256, is_lfs: bool) -> str | None:
    """Why a file entry of a Hub listing cannot be trusted, or None when it can.

    The name must be a relative path inside the repository (no ``..``, no
    leading ``/`` or ``\\``, no drive letter, no backslash, no NUL or control
    characters); the size a whole number from 0 to 1 PiB; an LFS sha256
    64 hex digits.
    """
    if not isinstance(path, str) or not path:
        return "the file name is empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return "the file name holds NUL or control characters"
    if path.startswith(("/", "\\")) or _DRIVE_RE.match(path):
        return "the file name is an absolute path"
    if "\\" in path:
        return "the file name holds a backslash"
    if any(part in ("..", ".", "") for part in path.split("/")):
        return "the file name climbs out of the repository (.., . or an empty part)"
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return f"its size {size!r} is not a whole number of bytes"
    if size > MAX_FILE_BYTES:
        return f"its size {size} is absurd (over 1 PiB)"
    if is_lfs and (not isinstance(sha256, str) or not _HEX64_RE.match(sha256)):
        return f"its sha256 {sha256!r} is not 64 hex digits"
    return None


def _refused_for(refused: list[tuple[str, str]], quant: str) -> str | None:
    """The refusal of a listed file a request for ``quant`` would have taken, if any."""
    for name, line in refused:
        if isinstance(name, str) and quant_in_name(name.replace("\\", "/")) == quant:
            return line
    return None


def _gguf_plan(base: dict, sets: list[GGUFSet], quant: str | None, entry, repo_id: str, choose_quant) -> PullPlan:
    quants = available_quants(sets)
    choice, reason = "named", ""
    if quant is None:
        if not quants:
            chosen = sets[0]
            return PullPlan(**base, quant=chosen.name.rsplit("/", 1)[-1].lower(), format="gguf",
                            files=chosen.files, available={}, choice="default",
                            reason="the only kind of GGUF in the repository")
        picked = choose_quant(entry, quants) if choose_quant is not None else None
        if picked is None:
            quant, choice = fallback_quant(quants), "default"
            reason = (f"{quant.upper()}: the catalog does not know this repository, so localq takes "
                      "the usual default of Ollama and llama.cpp among the quants it has")
        else:
            quant, choice, reason = picked if isinstance(picked, tuple) else (picked, "chosen", "chosen by the caller")
            if not isinstance(quant, str) or quant not in quants:
                raise HubError(f"{repo_id} has no {quant!r} file; it has: {', '.join(sorted(quants))}")
    model = base["model"]
    suggest = (lambda q: f"{model}-{q}") if base["source_kind"] == "catalog" else (lambda q: f"{model}:{q.upper()}")
    chosen = match_quant(sets, quant, repo_id, suggest)
    return PullPlan(**base, quant=quant, format="gguf",
                    files=chosen.files, available=quants, choice=choice, reason=reason)


def _safetensors_plan(base: dict, files: list[RemoteFile], quant: str | None, repo_id: str, commit: str) -> PullPlan:
    by_path = {f.path: f for f in files}
    config = _fetch_json(by_path.get("config.json"), repo_id, commit)
    if config is None:
        raise HubError(f"{repo_id} has safetensors weights but no config.json", "it is not a transformers model localq can use")
    if not isinstance(config, dict):
        raise HubError(f"{repo_id}'s config.json is not a JSON object", "the repository is broken; pick another")
    index = _fetch_json(by_path.get(SAFETENSORS_INDEX), repo_id, commit)
    if index is not None:
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise HubError(f"{repo_id}'s {SAFETENSORS_INDEX} has no weight_map of tensor names to files",
                           "the repository is broken; pick another")
        weights = sorted(set(weight_map.values()))
        bad = [w for w in weights if listing_problem(w, 0, None, False) or not w.endswith(".safetensors")]
        if bad:
            raise HubError(f"{repo_id}'s {SAFETENSORS_INDEX} names a file localq does not trust: {bad[0]!r}",
                           "the repository is broken or hostile; pick another")
        missing = [w for w in weights if w not in by_path]
        if missing:
            raise HubError(f"{repo_id}'s weight index names files it does not have: {', '.join(missing[:3])}")
        weights.append(SAFETENSORS_INDEX)
    else:
        weights = sorted(p for p in by_path if p.endswith(".safetensors") and "/" not in p)
    wanted = [p for p in SAFETENSORS_EXTRAS if p in by_path] + weights
    fmt, found_quant = weights_kind(config)
    if quant is not None and quant != "source" and quant != found_quant:
        raise HubError(f"{repo_id} holds {found_quant} weights, not {quant}", f"pull {repo_id}:{found_quant} or name no quant")
    base = {**base, "architecture": base["architecture"] or config.get("model_type")}
    return PullPlan(**base, quant=found_quant, format=fmt, files=tuple(by_path[p] for p in wanted),
                    available={}, choice="named" if quant else "source",
                    reason="" if quant else "the repository's safetensors weights")


def weights_kind(config: dict) -> tuple[str, str]:
    """(format, quant) of a safetensors model from its config.json."""
    quantization = config.get("quantization")
    bits = quantization.get("bits") if isinstance(quantization, dict) else None
    if isinstance(bits, int) and not isinstance(bits, bool) and 1 <= bits <= 16:
        return "mlx", f"mlx-{bits}bit"
    if bits is not None:
        raise HubError(f"config.json's quantization bits {bits!r} is not a bit width",
                       "the repository is broken; pick another")
    dtype = config.get("torch_dtype") or config.get("dtype")
    if not isinstance(dtype, str):
        dtype = None
    return "safetensors", {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}.get(dtype, "source")


def _fetch_json(remote: RemoteFile | None, repo_id: str, commit: str) -> dict | None:
    """A small JSON file of the repository, or None when it has none."""
    if remote is None:
        return None
    from huggingface_hub.utils import get_session

    def get():
        response = get_session().get(remote.url, headers=request_headers())
        response.raise_for_status()
        return response

    response = _with_retries(get, repo_id, revision=commit)
    data = response.content
    expected, actual, kind = (
        (remote.sha256, hashlib.sha256(data).hexdigest(), "sha256") if remote.sha256
        else (remote.git_oid, hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(), "git blob id")
    )
    if expected and actual != expected:
        raise BadModelFile(
            f"{remote.path} from {repo_id} is corrupt: its {kind} is {actual[:16]}..., the Hub says {expected[:16]}...",
            "try again; if it persists, the mirror or proxy in between alters files",
        )
    try:
        return json.loads(data)
    except ValueError as exc:
        raise HubError(f"{remote.path} in {repo_id} is not valid JSON", "the repository may be broken") from exc
