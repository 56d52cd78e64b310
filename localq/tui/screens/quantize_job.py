"""Quantizing from the app, shared by the Models and Discover sections: the dialog, then a background job.

Both sections call ``ask`` with the installed variant to quantize from: a
dialog asks for the target types (left empty, it takes the suggestion shown in
the box) and, for a source that is already quantized, whether to requantize
(a second rounding error on top of the first). Then ``quantize.jobs.quantize``,
the service ``localq quantize`` calls, runs in a thread worker: its progress
goes to a line of the calling screen, each stored result to a notification,
and every section reloads (``index_changed``). A stored safetensors model is a
source too (converted on the way to a GGUF of its own float type), as is any GGUF.

Discover quantizes a catalog model from its installed copy: ``best_source``
picks the one that loses least (unquantized first).
"""

from __future__ import annotations

from collections.abc import Callable

from localq.tui.screens.base import index_db, report_error, show_error

FLOAT_QUANTS = ("F32", "BF16", "F16")
SUGGESTED = "Q4_K_M Q8_0"

ShowFn = Callable[[str], None]   # puts one line of progress on the calling screen (UI thread)


def can_quantize(variant) -> bool:
    """Whether llama.cpp's quantizer can start from this installed variant (a GGUF, or safetensors)."""
    return variant is not None and variant.format in ("gguf", "safetensors")


def best_source(variants, model: str):
    """The installed variant of ``model`` to quantize from, or None when there is none.

    Unquantized first (F32, BF16, F16: quantizing them rounds once), a GGUF
    before safetensors (no conversion), then the largest quantized GGUF.
    """
    mine = [v for v in variants if v.model == model and can_quantize(v)]
    return min(mine, key=lambda v: (v.quant.upper() not in FLOAT_QUANTS, v.format != "gguf", -(v.size or 0)),
               default=None)


def status_line(screen, container: str) -> ShowFn:
    """A progress line at the end of ``container`` (a selector), mounted the first time it is shown."""
    from textual.widgets import Static

    line_id = f"{screen.SECTION}-quantize-job"

    def show(text: str) -> None:
        found = screen.query(f"#{line_id}")
        if found:
            line = found.first(Static)
        else:
            line = Static("", id=line_id, markup=False)
            line.styles.padding = (0, 1)
            screen.query_one(container).mount(line)
        line.update(text)

    return show


def ask(screen, variant, show: ShowFn, suggested: str = SUGGESTED) -> None:
    """The quantize dialog for ``variant``; OK starts the background job (``start``)."""
    from localq.tui.screens.dialogs import PromptDialog

    source_type = variant.quant.upper()
    requant = source_type not in FLOAT_QUANTS

    def answered(values: dict | None) -> None:
        if values is None:
            return
        types = (values.get("types") or suggested).replace(",", " ").split()
        allow = (values.get("requantize") or "").strip().lower() in ("y", "yes")
        if requant and not allow:
            show_error(screen.app, ValueError(f"{variant.ref} is already {source_type}: answer yes to requantize"))
        else:
            start(screen, variant, types, allow, show)

    note = (f"Runs llama.cpp's quantizer on {variant.ref} in the background; the results are stored beside it "
            f"(left empty: {suggested}). "
            + (f"{variant.ref} is already {source_type}: requantizing adds a second rounding error to the first."
               if requant else ""))
    fields = [("types", "Types", suggested)]
    if requant:
        fields.append(("requantize", "Requantize? (yes/no)", "no"))
    screen.app.push_screen(PromptDialog(f"Quantize {variant.ref}", fields, ok="Quantize", note=note.strip()),
                           answered)


def start(screen, variant, types: list[str], allow_requantize: bool, show: ShowFn) -> None:
    """Quantize ``variant`` to ``types`` in a thread worker of ``screen``, showing progress with ``show``."""
    app = screen.app

    def job() -> None:
        from localq.quantize.jobs import Options, quantize, source_of_variant

        def progress(stage: str, done: int, total: int, what: str) -> None:
            app.call_from_thread(show, f"quantizing {variant.ref} to {stage}: {done}/{total} {what}")

        app.call_from_thread(app.notify, f"quantizing {variant.ref} to {', '.join(types)}…", timeout=3)
        try:
            with index_db() as db:
                made = quantize(db, source_of_variant(variant), types, Options(allow_requantize=allow_requantize),
                                on_progress=progress)
        except Exception as exc:  # noqa: BLE001 - any failure becomes the error notification
            app.call_from_thread(show, f"quantizing {variant.ref} failed")
            report_error(app, exc)
            return
        for p in made:
            fell = f", {len(p.fallbacks)} tensors fell back" if p.fallbacks else ""
            app.call_from_thread(app.notify, f"stored {p.variant.ref} ({p.variant.size / 1e6:.1f} MB{fell})")
        app.call_from_thread(show, "stored " + ", ".join(p.variant.ref for p in made))
        app.call_from_thread(app.post_message_to_sections, "index_changed")

    screen.run_worker(job, thread=True, group="quantize", name=f"quantize {variant.ref}")
