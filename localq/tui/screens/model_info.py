"""A model's metadata, as ``localq show`` prints it: facts, quant mix, chat template.

The GGUF header is read by ``localq.gguf_info.read_gguf_info`` (the same
function the CLI uses) in a thread worker; the dialog shows "reading…" until
it answers.
"""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from localq.cache import human_size
from localq.tui.screens.base import report_error


def count(n: int | None) -> str:
    """A large count as people write it: 134.5M, 8.0B."""
    if n is None:
        return "?"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def tilde(path: str) -> str:
    """A path with the home directory written as ``~``."""
    from pathlib import Path

    home = str(Path.home())
    return "~" + path[len(home):] if home != "/" and path.startswith(home + "/") else path


def info_facts(info, variant=None) -> list[tuple[str, str]]:
    """(label, value) rows about a GGUF file and, if given, the installed variant."""
    def unknown(value) -> str:
        return "?" if value is None else str(value)

    rows = []
    if variant is not None:
        rows.append(("model", variant.ref))
        rows.append(("from", tilde(variant.source or variant.provenance.get("tool", "?"))))
        rows.append(("sha256", variant.files[0].sha256 if variant.files else "?"))
    rows += [
        ("file", tilde(str(info.path))),
        ("size", f"{human_size(info.size_bytes)} (GGUF v{info.gguf_version})"),
        ("name", unknown(info.name)),
        ("architecture", unknown(info.architecture)),
        ("parameters", f"{count(info.parameter_count)} ({info.parameter_count:,})"),
        ("file type", f"{unknown(info.file_type)}, {info.bits_per_weight:.2f} bits per weight"),
        ("context length", unknown(info.context_length)),
        ("layers", unknown(info.block_count)),
        ("embedding", unknown(info.embedding_length)),
        ("attention heads", f"{unknown(info.head_count)} (KV {unknown(info.head_count_kv)})"),
        ("vocabulary", unknown(info.vocab_size)),
        ("tokenizer", unknown(info.tokenizer_model)),
        ("tensors", str(info.tensor_count)),
    ]
    if info.expert_count:
        rows.append(("experts", f"{info.expert_count} ({info.expert_used_count} used)"))
    return rows


class ModelInfoScreen(ModalScreen[None]):
    """Everything the GGUF header says about one installed variant."""

    BINDINGS = [Binding("escape,q,i", "close", "close")]

    def __init__(self, variant) -> None:
        super().__init__(classes="dialog")
        self.variant = variant

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog-box wide", id="info-box"):
            yield Label(f"{self.variant.ref}", classes="dialog-title", markup=False)
            yield Static("reading the GGUF header…", id="info-facts", markup=False)
            yield DataTable(id="info-mix", cursor_type="none", show_cursor=False)
            yield Static("", id="info-notes", markup=False)

    def on_mount(self) -> None:
        self.query_one("#info-mix").display = False
        self.load()

    @work(thread=True, exclusive=True)
    def load(self) -> None:
        from localq.gguf_info import read_gguf_info

        try:
            info = read_gguf_info(self.variant.main_path)
        except Exception as exc:
            report_error(self.app, exc)
            self.app.call_from_thread(self.query_one("#info-facts", Static).update, "could not read this file")
            return
        self.app.call_from_thread(self.show, info)

    def show(self, info) -> None:
        from rich.table import Table
        from rich.text import Text

        facts = Table.grid(padding=(0, 2))
        facts.add_column(style="bold", no_wrap=True)
        facts.add_column(overflow="fold")
        for label, value in info_facts(info, self.variant):
            facts.add_row(label, Text(value))
        self.query_one("#info-facts", Static).update(facts)
        table = self.query_one("#info-mix", DataTable)
        table.add_columns("quant mix", "tensors", "parameters", "size", "share")
        for type_name, part in info.quant_mix.items():
            share = part["bytes"] / info.tensor_bytes if info.tensor_bytes else 0
            table.add_row(type_name, str(part["count"]), count(part["n_elements"]),
                          human_size(part["bytes"]), f"{share:.0%}")
        table.display = True
        notes = []
        if info.rows_not_multiple_of_256:
            notes.append(
                f"note: {info.rows_not_multiple_of_256} of {info.matrix_tensor_count} weight matrices have rows "
                "that are not a multiple of 256; K-quants (Q4_K_M …) fall back to other types on them"
            )
        if info.chat_template is None:
            notes.append("chat template: none in this file")
        else:
            shown = info.chat_template[:300]
            more = f"… ({len(info.chat_template)} characters)" if len(info.chat_template) > 300 else ""
            notes.append(f"chat template:\n{shown}{more}")
        self.query_one("#info-notes", Static).update("\n\n".join(notes))

    def action_close(self) -> None:
        self.dismiss(None)
