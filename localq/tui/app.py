"""The localq terminal app: ``localq`` with no arguments opens it.

One app, one screen per section (Models, Discover, Downloads, Chat, Hardware),
each a Textual *mode* with its own screen stack, so a modal opened on Models
stays there while you look at Downloads. Sections are listed once, in
``localq.tui.navigation.SECTIONS``: the section keys, the navigation line, the
help screen and the command palette are all made from that list.

The app holds what every screen needs: the machine's ``HardwareProfile``
(probed in a thread worker at start, or given by a test) as a reactive that the
top bars watch. Everything slow runs in thread workers (see
``localq.tui.screens.base``); the UI thread never waits on the index, the
probe, a model or the network.

Decisions:
- ``alt+1`` ... ``alt+5`` switch sections from anywhere, also while a text box
  has the focus; the plain digits too when none has it (see
  ``localq.tui.navigation``). ``ctrl+p`` reaches every action from anywhere.
- ``ctrl+t`` toggles the dark and light themes; the choice (also one made in the
  palette's theme picker) is saved in ``config/tui.json`` for the next start.
- First start: the app opens on the welcome screen (``localq.tui.screens.welcome``)
  once, the first time it starts with these settings; ``config/tui.json``
  records that it was shown. ``w`` (or the palette's "Welcome") opens it again.
"""

from __future__ import annotations

import json

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.reactive import reactive
from textual.screen import ModalScreen

from localq.paths import get_paths
from localq.tui.navigation import SECTIONS, Section, keys_line, open_section, section_keys, switch_section

THEMES = ("textual-dark", "textual-light")


def _mode_factory(section: Section):
    # Screen modules are imported when a section is first opened, not at start.
    return lambda: section.screen_class()()


class LocalqCommands(Provider):
    """Command palette entries for every action of every section (see ``LocalqApp.palette_commands``)."""

    async def discover(self) -> Hits:
        for name, callback, help_text in self.app.palette_commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self.app.palette_commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, text=name, help=help_text)


class LocalqApp(App):
    """localq's terminal app."""

    CSS_PATH = "localq.tcss"
    TITLE = "localq"
    COMMANDS = App.COMMANDS | {LocalqCommands}
    MODES = {section.key: _mode_factory(section) for section in SECTIONS}
    BINDINGS = [
        Binding("question_mark,f1", "help", "help", key_display="?",
                tooltip="show every key binding (f1 works in text boxes too)"),
        Binding("ctrl+t", "toggle_theme", "theme", show=False, tooltip="toggle the dark and light themes"),
        Binding("w", "welcome", "welcome", show=False,
                tooltip="the welcome screen: this machine, the starter model, the recommended pulls"),
        Binding("ctrl+q", "quit", "quit", priority=True, tooltip="quit localq"),
    ] + [
        # One footer entry for them all: "alt+1-5 sections".
        Binding(f"alt+{number}", f"section('{section.key}')", "sections" if number == 1 else section.title,
                show=number == 1, priority=True, key_display=keys_line() if number == 1 else None,
                tooltip=f"go to {section.title} (also {number} outside a text box)")
        for number, section in enumerate(SECTIONS, start=1)
    ] + [
        Binding(str(number), f"section('{section.key}')", section.title, show=False,
                tooltip=f"go to {section.title}")
        for number, section in enumerate(SECTIONS, start=1)
    ]

    profile = reactive(None, init=False)  # HardwareProfile | None: None until the probe answers

    def __init__(self, profile=None, *, first_start: bool | None = None, start_section: str = "models"):
        """``profile``: use this machine profile instead of probing (tests, screenshots).
        ``first_start``: force the welcome screen on or off; None: on only if it was never shown."""
        from localq.tui.pulls import PullManager

        super().__init__()
        self.pulls = PullManager(self)
        self._given_profile = profile
        self._first_start = first_start
        self._start_section = start_section

    # --- start-up -----------------------------------------------------------------

    def on_mount(self) -> None:
        self._load_theme()
        self.theme_changed_signal.subscribe(self, self._save_theme)
        self.switch_mode(self._start_section)
        if self._given_profile is not None:
            self.profile = self._given_profile
        else:
            self.probe_machine()
        self.prepare_index()

    @work(thread=True, exclusive=True, group="probe")
    def probe_machine(self, remeasure: bool = False) -> None:
        """Probe the machine (the bandwidth figure is stored, so this is quick after the first time)."""
        from localq.tui.screens.base import report_error

        try:
            from localq.machine import machine_profile

            profile = machine_profile(remeasure=remeasure)
        except Exception as exc:  # the probe fails soft, but never let it take the app down
            report_error(self, exc)
            return
        self.call_from_thread(setattr, self, "profile", profile)

    @work(thread=True, exclusive=True, group="index")
    def prepare_index(self) -> None:
        """Open (and migrate) the index, index the starter model, then decide on the welcome screen."""
        from localq.store.pulls import pulls_to_resume
        from localq.starter import ensure_starter
        from localq.tui.screens.base import index_db, report_error

        try:
            with index_db() as db:
                ensure_starter(db)
                resume = pulls_to_resume(db)
        except Exception as exc:
            report_error(self, exc)
            return
        first = self._first_start
        if first is None:
            first = not self._settings().get("welcomed", False)
        self.call_from_thread(self._index_ready, first, resume)

    def _index_ready(self, first_start: bool, resume: list[str]) -> None:
        self.post_message_to_sections("index_changed")
        if resume:
            self.notify(f"resuming {len(resume)} download(s) stopped when localq last quit", timeout=4)
            for ref in resume:
                self.pulls.start(ref)
        if first_start:
            self.action_welcome()
            if self._first_start is None:
                self._save_setting("welcomed", True)

    def action_welcome(self) -> None:
        """Open the welcome screen (at first start, and with ``w``)."""
        from localq.tui.screens.welcome import WelcomeScreen

        if isinstance(self.screen, (WelcomeScreen, ModalScreen)):
            return
        self.push_screen(WelcomeScreen())

    def post_message_to_sections(self, method: str) -> None:
        """Call ``method`` on every section screen that is open and has it (e.g. to reload)."""
        for key in SECTIONS:
            for screen in self._screen_stacks.get(key.key, [])[:1]:
                handler = getattr(screen, method, None)
                if handler is not None:
                    handler()

    # --- pulls ----------------------------------------------------------------------

    def start_pull(self, ref: str) -> None:
        """Pull ``ref`` in the background; the Downloads section shows it.

        An ``int4-`` reference is made here, not downloaded (``quantize.pull_source``):
        as ``localq pull`` does, the app says what it will fetch and make, and asks first.
        """
        from localq.quantize import pull_source

        job = self.pulls.job_for(ref)
        if pull_source.wanted(ref) and not (job and job.active):
            self.run_worker(lambda: self._ask_int4_pull(ref), thread=True, group="int4-plan")
            return
        self.pulls.start(ref)
        self.notify(f"pulling {ref} (progress in Downloads, {section_keys('downloads')})", timeout=3)

    def _ask_int4_pull(self, ref: str) -> None:
        """(a thread) Plan the INT4 pull (the source's size comes from the Hub), then ask on the app's thread."""
        from localq.quantize import pull_source
        from localq.tui.screens.base import index_db, report_error

        try:
            with index_db() as db:
                plan = pull_source.plan(ref, db)
        except Exception as exc:  # a plan that cannot be made is shown, never a crash of the app
            report_error(self, exc)
            return
        if plan.installed is not None:
            self.call_from_thread(self.notify, f"{plan.installed.ref} is already installed")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.pulls.start(ref, int4_plan=plan)
                self.notify(f"pulling {plan.source_ref} to make {plan.ref} here (progress in Downloads, "
                            f"{section_keys('downloads')})", timeout=4)

        from localq.tui.screens.dialogs import ConfirmDialog

        question = plan.question.removesuffix(" Go ahead?")
        self.call_from_thread(self.push_screen, ConfirmDialog(f"Make {plan.ref} here?", question, yes="Pull and make"),
                              answered)

    def on_pull_changed(self, message) -> None:
        for screen in self._screen_stacks.get("downloads", [])[:1]:
            screen.on_pull_changed(message)

    async def action_quit(self) -> None:
        """Quit; running pulls stop where they are and resume at the next start."""
        self.pulls.stop_all()
        await super().action_quit()

    # --- sections -----------------------------------------------------------------

    def action_section(self, key: str) -> None:
        """Switch to a section (``localq.tui.navigation.switch_section``)."""
        switch_section(self, key)

    async def open_section(self, key: str):
        """Switch to a section (closing any dialog or the welcome screen) and return its screen."""
        return await open_section(self, key)

    # --- help, palette, theme --------------------------------------------------------

    def action_help(self) -> None:
        from localq.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def all_bindings(self) -> list[tuple[str, list[Binding]]]:
        """Every binding, grouped: the app's, then each section's, then the dialogs'."""
        groups = [("Everywhere", [b for b in self.BINDINGS if isinstance(b, Binding)])]
        for section in SECTIONS:
            cls = section.screen_class()
            groups.append((section.title, [b for b in cls.BINDINGS if isinstance(b, Binding)]))
            for title, bindings in getattr(cls, "EXTRA_BINDINGS", ()):
                groups.append((f"{section.title}: {title}", list(bindings)))
        from localq.tui.screens.welcome import WelcomeScreen

        groups.append(("Welcome (first start)", list(WelcomeScreen.BINDINGS)))
        return groups

    def palette_commands(self) -> list[tuple[str, object, str]]:
        """(name, callback, help) for the palette: each section, and each section's actions."""
        commands = []
        for number, section in enumerate(SECTIONS, start=1):
            commands.append((f"Go to {section.title}", self._opener(section.key),
                             f"open the {section.title} screen ({section_keys(section.key)})"))
        commands.append(("Help: all key bindings", self.action_help, "show every key (?)"))
        commands.append(("Welcome: this machine and the recommended pulls", self.action_welcome, "w"))
        commands.append(("Toggle dark / light theme", self.action_toggle_theme, "ctrl+t"))
        for section in SECTIONS:
            for binding in section.screen_class().BINDINGS:
                if isinstance(binding, Binding) and binding.description:
                    name = f"{section.title}: {getattr(binding, 'tooltip', '') or binding.description}"
                    commands.append((name, self._runner(section.key, binding.action),
                                     f"key {self.get_key_display(binding)}"))
        return commands

    def _opener(self, key: str):
        async def open_it() -> None:
            await self.open_section(key)
        return open_it

    def _runner(self, key: str, action: str):
        async def run_it() -> None:
            screen = await self.open_section(key)
            await screen.run_action(action)
        return run_it

    def action_toggle_theme(self) -> None:
        self.theme = THEMES[1] if self.theme == THEMES[0] else THEMES[0]

    def _settings_path(self):
        return get_paths().config / "tui.json"

    def _settings(self) -> dict:
        """The app's remembered settings (theme, whether the welcome screen was shown); {} if none."""
        try:
            settings = json.loads(self._settings_path().read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        return settings if isinstance(settings, dict) else {}

    def _save_setting(self, key: str, value) -> None:
        path = self._settings_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({**self._settings(), key: value}), "utf-8")
        except OSError:
            pass  # a read-only config directory only costs what was to be remembered

    def _load_theme(self) -> None:
        theme = self._settings().get("theme")
        if theme in self.available_themes:
            self.theme = theme

    def _save_theme(self, theme) -> None:
        self._save_setting("theme", theme.name)


def run_app() -> None:
    """Open the terminal app (the ``localq`` command with no arguments)."""
    LocalqApp().run()
