"""The Discover section: the catalog, and for each model every quant judged for this machine.

Left, the catalog (``catalog.search``, as ``localq search``) with the best
quant for this machine and whether it fits. Right, the selected model's quants
as ``localq recommend`` sees them (``recommend.recommend`` with the app's
profile): memory needed, fit (✓ fits, ~ fits but not in what is free right
now, ✗ too big), estimated (or benchmarked) tokens/s and expected quality (+PPL: the
perplexity increase over the unquantized model; a line under the table says
which model each figure was measured on: llama.cpp's table for Llama-3-8B,
unless localq measured this model); the recommended row
is marked ★ and the recommender's reason is written under the table. On a
machine that runs torch INT4 (an NVIDIA GPU), the INT4 quants are listed too,
"made here": no Hub holds them, so pulling one pulls the model's source and
quantizes it, after asking (``int4_plans``). ``p`` pulls the highlighted quant
(or the recommended one from the left list): the pull runs in the Downloads
section.

Below 100 columns the quants table goes under the catalog instead of beside
it, so every column stays readable at 80x24.

The recommender is pure and fast (all models take milliseconds), so it runs
on the UI thread when the profile or the search changes.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Static

from localq.backends import backend_label
from localq.recommend.suggest import comfortable, pull_ref
from localq.tui.screens.base import SectionScreen, show_error
from localq.units import size

FIT_MARKS = {"fits": ("✓", "green"), "tight": ("~", "yellow"), "too big": ("✗", "red")}


def fit_of(plan) -> str:
    """``fits``, ``tight`` (fits the machine but not what is free now) or ``too big``."""
    if plan is None or not plan.fits:
        return "too big"
    return "fits" if plan.fits_now else "tight"


def fit_text(plan) -> Text:
    mark, colour = FIT_MARKS[fit_of(plan)]
    return Text(mark, style=f"bold {colour}")



def plan_key(plan) -> str:
    """A quants-table row's key: one quant can run on one backend on two devices (llama.cpp: the GPU, the CPU)."""
    return f"{plan.backend}:{plan.device}:{plan.quant}"


def int4_plans(profile, model, speeds=None) -> list:
    """The INT4 quants this machine runs (torch INT4 on NVIDIA): on no Hub, made here from the model's source.

    The pull recommendation chooses among quants a repository holds (``recommend_pull``), so they are
    listed beside it, never chosen for it; pulling one asks first (``LocalqApp.start_pull``).
    """
    from localq.errors import LocalqError
    from localq.quantize.pull_source import check_can_make
    from localq.recommend import recommend

    if not getattr(model, "source_repo", None):
        return []

    def makeable(quant: str) -> bool:       # e.g. no g128 for rows of 576 (SmolLM2)
        try:
            check_can_make(model, quant)
        except LocalqError:
            return False
        return True

    plans = recommend(profile, model, speeds=speeds).plans
    return [p for p in plans if p.quant.startswith("int4") and p.ready and makeable(p.quant)]

class DiscoverScreen(SectionScreen):
    """Search the catalog; see each quant's fit, speed and quality here; pull one."""

    SECTION = "discover"
    TITLE_TEXT = "Discover"
    # Below 100 columns the quants go under the catalog instead of beside it.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    BINDINGS = [
        Binding("slash", "search", "search", key_display="/", tooltip="search the catalog"),
        Binding("f", "toggle_fits", "fits only", tooltip="show only the models that fit this machine"),
        Binding("p", "pull", "pull", tooltip="pull the highlighted quant (or the recommended one)"),
        Binding("q", "quantize", "quantize",
                tooltip="quantize the installed model to the highlighted quant with llama.cpp, in the background"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.fits_only = False
        self.models: list = []
        self.recommendations: dict[str, object] = {}
        self.made_here: dict = {}      # model ref -> the INT4 plans made here (int4_plans)
        self._shown_model = None

    def compose_body(self) -> ComposeResult:
        yield Input(placeholder="/ search models (name, family, architecture…)", id="discover-search",
                    compact=True)
        with Horizontal(id="discover-body"):
            models = DataTable(id="discover-models", cursor_type="row")
            models.add_columns("MODEL", "PARAMS", "BEST HERE", "FIT")
            yield models
            with Vertical(id="discover-detail"):
                yield Static("", id="discover-title", markup=False)
                quants = DataTable(id="discover-quants", cursor_type="row")
                quants.add_columns("", "QUANT", "BACKEND", "NEEDS", "FIT", "TOK/S", "+PPL")
                yield quants
                yield Static("", id="discover-reason", markup=False)

    def on_mount(self) -> None:
        self.watch(self.app, "profile", self.refresh_catalog)
        self.query_one("#discover-models").focus()

    # --- the catalog --------------------------------------------------------------

    def refresh_catalog(self, *_args) -> None:
        from localq.calibration import local_speeds_for
        from localq.catalog import format_parameters, search
        from localq.recommend import recommend_pull

        profile = self.app.profile
        needle = self.query_one("#discover-search", Input).value
        self.models = search(needle)
        self.recommendations = {}
        self.made_here = {}
        if profile is not None:
            speeds_for = local_speeds_for(profile)   # localq bench's figures, as `localq recommend` uses them
            for model in self.models:
                try:
                    self.recommendations[model.ref] = recommend_pull(profile, model, speeds=speeds_for(model.ref))
                    self.made_here[model.ref] = int4_plans(profile, model, speeds_for(model.ref))
                except Exception as exc:
                    show_error(self.app, exc)
                    break
        models = self.models
        if self.fits_only and self.recommendations:
            models = [m for m in models if fit_of(self._choice(m)) != "too big"]
            # Recommended first: the largest models that run at a comfortable speed, then the rest.
            models.sort(key=lambda m: (not comfortable(self._choice(m)), -m.parameters))
        table = self.query_one("#discover-models", DataTable)
        selected = self.selected_model()
        table.clear()
        for model in models:
            choice = self._choice(model)
            best = "…" if profile is None else (choice.quant.upper() if choice else "none fits")
            table.add_row(model.ref, format_parameters(model.parameters), best,
                          fit_text(choice) if profile is not None else "", key=model.ref)
        if selected is not None and selected.ref in table.rows:
            table.move_cursor(row=table.get_row_index(selected.ref))
        self.show_model()

    def _choice(self, model):
        rec = self.recommendations.get(model.ref)
        return rec.choice if rec else None

    def selected_model(self):
        table = self.query_one("#discover-models", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((m for m in self.models if m.ref == key), None)

    # --- one model's quants ---------------------------------------------------------

    @on(DataTable.RowHighlighted, "#discover-models")
    def show_model(self) -> None:
        model = self.selected_model()
        quants = self.query_one("#discover-quants", DataTable)
        quants.clear()
        title = self.query_one("#discover-title", Static)
        reason = self.query_one("#discover-reason", Static)
        self._shown_model = model
        if model is None:
            title.update("No models match." if self.query_one("#discover-search", Input).value else "")
            reason.update("")
            return
        title.update(f"{model.title} · {model.context_length // 1024}K context · {model.license}\n{model.description}")
        rec = self.recommendations.get(model.ref)
        if rec is None:
            reason.update("probing this machine…")
            return
        plans = rec.plans + self.made_here.get(model.ref, [])
        devices = {}
        for plan in plans:
            devices.setdefault(plan.backend, set()).add(plan.device)
        for plan in plans:
            star = Text("★", style="bold yellow") if plan is rec.choice else ""
            backend = backend_label(plan.backend)
            if len(devices[plan.backend]) > 1:       # llama.cpp on the GPU and on the CPU: say which row is which
                backend += f" {plan.device}"
            if not plan.ready:
                backend += " (not installed)"
            elif plan.quant.startswith("int4"):
                backend += " (made here)"
            quants.add_row(star, plan.quant.upper() if plan.backend == "llamacpp" else plan.quant, backend,
                           size(plan.total_bytes), fit_text(plan), f"{plan.tokens_per_second:.0f}",
                           f"+{plan.ppl_delta:.2f}", key=plan_key(plan))
        lines = [rec.reason] + [f"! {w}" for w in rec.warnings]
        if rec.plans:
            from localq.recommend import quality_note

            lines.append(quality_note(rec.plans, model.ref))
        reason.update("\n".join(lines))

    def selected_plan(self):
        """The highlighted quant's plan when the quants table has the focus, else the recommended one."""
        rec = self.recommendations.get(self._shown_model.ref) if self._shown_model else None
        if rec is None:
            return None
        quants = self.query_one("#discover-quants", DataTable)
        if self.focused is quants and quants.row_count:
            key = quants.coordinate_to_cell_key(quants.cursor_coordinate).row_key.value
            plans = rec.plans + self.made_here.get(self._shown_model.ref, [])
            return next((p for p in plans if plan_key(p) == key), None)
        return rec.choice

    # --- actions --------------------------------------------------------------------

    @on(DataTable.RowSelected, "#discover-models")
    def _to_quants(self) -> None:
        self.query_one("#discover-quants").focus()

    @on(DataTable.RowSelected, "#discover-quants")
    def _selected_quant(self) -> None:
        self.action_pull()

    def action_pull(self) -> None:
        model, plan = self._shown_model, self.selected_plan()
        if model is None:
            return
        if plan is None:
            self.notify(f"no quant of {model.ref} fits this machine; pick one in the table to pull it anyway",
                        severity="warning")
            return
        self.app.start_pull(pull_ref(model, plan.quant))     # an int4- quant: made here, after asking

    def action_quantize(self) -> None:
        """Quantize the shown model from its installed copy (``quantize_job``), to the highlighted quant."""
        from localq.quantize.gguf_quant import wants_llamacpp
        from localq.store.index import list_variants
        from localq.tui.screens import quantize_job
        from localq.tui.screens.base import index_db

        model, plan = self._shown_model, self.selected_plan()
        if model is None:
            return
        try:
            with index_db() as db:
                source = quantize_job.best_source(list_variants(db), model.ref)
        except Exception as exc:  # noqa: BLE001 - shown, never a crash of the app
            show_error(self.app, exc)
            return
        if source is None:
            self.notify(f"{model.ref} is not installed: pull a quant first (p), then make others from it here",
                        severity="warning")
            return
        wanted = plan.quant.upper() if plan is not None and plan.backend == "llamacpp" else ""
        suggested = wanted if wanted and wants_llamacpp([wanted]) else quantize_job.SUGGESTED
        quantize_job.ask(self, source, quantize_job.status_line(self, "#discover-detail"), suggested)

    def action_search(self) -> None:
        self.query_one("#discover-search", Input).focus()

    @on(Input.Changed, "#discover-search")
    def _search_changed(self) -> None:
        self.refresh_catalog()

    @on(Input.Submitted, "#discover-search")
    def _search_done(self) -> None:
        self.query_one("#discover-models").focus()

    def action_toggle_fits(self) -> None:
        self.fits_only = not self.fits_only
        self.notify("showing the models that fit, recommended first" if self.fits_only else "showing every model",
                    timeout=2)
        self.refresh_catalog()

    def key_escape(self) -> None:
        if self.focused is self.query_one("#discover-search"):
            self.query_one("#discover-models").focus()
        elif self.focused is self.query_one("#discover-quants"):
            self.query_one("#discover-models").focus()
