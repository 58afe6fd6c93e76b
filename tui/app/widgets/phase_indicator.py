"""calculating → copying → verifying → cleaning → complete, with done phases ticked, the current
one highlighted, and an error or a cancel shown at the phase where it happened. A service move
shows its own list (syncing with the pass number, stopping, …, checking)."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tui.core.progress import MoveProgress
from tui.core.protocol import PHASE_ORDER, SERVICE_PHASE_ORDER, Phase

SEPARATOR = " → "


def phase_line(progress: MoveProgress | None) -> Text:
    """The indicator as styled text (headless, so tests can read it without a screen)."""
    service = progress is not None and progress.service_move
    # A service move's ten phases do not fit on one line of a small terminal: they wrap.
    line = Text(no_wrap=not service, overflow="fold" if service else "ellipsis")
    current = progress.phase if progress else None
    reached = progress.phases_reached if progress else []
    stopped_at = progress.failed_phase if progress else None
    order = SERVICE_PHASE_ORDER if service else PHASE_ORDER
    for index, phase in enumerate(order):
        if index:
            line.append(SEPARATOR, style="dim")
        if stopped_at is phase:
            word = "cancelled" if current is Phase.CANCELLED else "error"
            style = "bold yellow" if current is Phase.CANCELLED else "bold red"
            line.append(f"✘ {phase.value} ({word})", style=style)
        elif phase is current and phase is not Phase.COMPLETE:
            line.append(f"▶ {_named(phase, progress)}", style="bold reverse")
        elif phase in reached:
            line.append(f"✔ {phase.value}", style="green")
        else:
            line.append(f"○ {phase.value}", style="dim")
    return line


def _named(phase: Phase, progress: MoveProgress | None) -> str:
    """The current phase's name: a service move's live pass says its number."""
    if phase is Phase.SYNCING and progress is not None and progress.pass_number is not None:
        return f"{phase.value} (pass {progress.pass_number})"
    return phase.value


class PhaseIndicator(Widget):
    """One line: where the move is in its phases."""

    progress: reactive[MoveProgress | None] = reactive(None, always_update=True)

    def render(self) -> Text:
        return phase_line(self.progress)
