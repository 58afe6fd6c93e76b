"""Every sentence and number a user reads about a move, written once for the CLI and the TUI:
how a move ended, where it stopped, the plan, the free space, and what the bars count.

The presenters (tui/cli.py, the app's widgets and screens) only arrange these words; when one
sentence changes here, both front ends say the new thing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tui.core.formatting import human_count, human_duration, human_rate, human_size
from tui.core.protocol import Phase

if TYPE_CHECKING:
    from tui.core.progress import MoveProgress
    from tui.core.protocol import FsStatEvent, PlanEvent

BEFORE_ANY_PHASE = "starting"  # where a move stopped that never reported a phase


# -- how a move ended ---------------------------------------------------------------------------

def stopped_while(progress: MoveProgress) -> str:
    """The phase a failed or cancelled move was in, as in "failed while copying"."""
    return progress.failed_phase.value if progress.failed_phase else BEFORE_ANY_PHASE


def reused_note(progress: MoveProgress) -> str:
    """What a resumed move took over from the move cut short ("" for any other move)."""
    if not progress.bytes_reused:
        return ""
    return f" ({human_size(progress.bytes_reused)} reused from the move cut short)"


def renamed_sentence(progress: MoveProgress) -> str | None:
    """The outcome of a same-filesystem rename, which counts nothing; None for any other move."""
    if progress.phase is not Phase.COMPLETE or not progress.uncounted_rename:
        return None
    assert progress.plan is not None  # uncounted_rename needs a plan
    return (f"Renamed {progress.plan.src} to {progress.plan.dst} (same filesystem: one "
            "atomic rename, nothing copied).")


def outcome(progress: MoveProgress) -> str:
    """One line in plain words: what happened and where the data is."""
    if progress.phase is Phase.COMPLETE:
        return renamed_sentence(progress) or f"Move complete{reused_note(progress)}."
    if progress.phase in (Phase.ERROR, Phase.CANCELLED):
        what = "Move cancelled" if progress.phase is Phase.CANCELLED else "Move failed"
        text = f"{what} while {stopped_while(progress)}"
        if progress.error:
            # The mover's own words already say where the data is.
            return f"{text}: {progress.error.rstrip('.')}."
        if progress.data_state is not None:
            text += f" ({progress.data_state.explain()})"
        return text + "."
    return "Move in progress." if progress.phase else "Not started."


def moved_figures(progress: MoveProgress) -> tuple[str, str, str, str | None]:
    """(size, files, time, average rate or None) of a move that ended: the figures both the
    CLI's summary and the TUI's outcome panel give."""
    average = progress.average_rate
    return (human_size(progress.bytes_total), human_count(progress.files_total),
            human_duration(progress.elapsed), human_rate(average) if average else None)


# -- what the bars count ------------------------------------------------------------------------

def bar_label(progress: MoveProgress) -> str:
    """What the bytes bar counts: verified bytes while verifying, copied bytes otherwise."""
    return "Verified" if progress.phase is Phase.VERIFYING else "Copied"


def bar_counts(progress: MoveProgress) -> tuple[int, int, int, int]:
    """(bytes done, bytes total, files done, files total) for the phase being shown: verified
    counts while verifying, copied counts otherwise."""
    verifying = progress.phase is Phase.VERIFYING
    bytes_done = progress.bytes_verified if verifying else progress.bytes_copied
    files_done = progress.files_verified if verifying else progress.files_copied
    return bytes_done, progress.bytes_total, files_done, progress.files_total


# -- free space ---------------------------------------------------------------------------------

def free_after(plan: PlanEvent) -> tuple[str, bool] | None:
    """(free space at the destination once the move is done, whether that is enough), or None
    for a rename or a mover that did not measure it."""
    if plan.method == "rename" or plan.dst_free_bytes is None:
        return None
    after = plan.dst_free_bytes - plan.space_needed
    return human_size(max(after, 0)), after >= 0


def free_space_text(stat: FsStatEvent | None) -> str:
    """`free 12.3 GB of 50 GB on /srv` for an FsStatEvent."""
    if stat is None or stat.free_bytes is None:
        return "free space unknown"
    total = f" of {human_size(stat.total_bytes)}" if stat.total_bytes else ""
    mount = f" on {stat.mount_point}" if getattr(stat, "mount_point", None) else ""
    return f"free {human_size(stat.free_bytes)}{total}{mount}"


# -- the plan -----------------------------------------------------------------------------------

def open_files_sentences(plan: PlanEvent) -> list[str]:
    """What the mover's check for programs using the source found, as sentences without a final
    period ([] from a mover without the check). A program writing there refuses the move, so a
    plan only ever reports readers."""
    if plan.open_files_check is None:
        return []
    if plan.open_files_check == "own processes only":
        scope = "only this user's own programs were checked: run as root to check all"
    elif plan.open_files_unchecked:
        scope = (f"all programs were checked but {plan.open_files_unchecked:,} that could not be "
                 "inspected")
    else:
        scope = "all programs were checked"
    sentences = [f"No program writes in the source ({scope})"]
    readers = plan.source_readers
    if readers:
        named = ", ".join(f"pid {r.pid} ({r.command}) {r.path}" for r in readers[:3])
        if len(readers) > 3:
            named += f" and {len(readers) - 3:,} more"
        them = "it" if len(readers) == 1 else "them"
        sentences.append(f"Reading from it: {named} — restart {them} after the move")
    return sentences


def plan_lines(plan: PlanEvent) -> list[str]:
    """The dry run's plan in plain words, for the TUI's confirmation."""
    if plan.method == "rename":
        how = "Rename: same filesystem, one atomic step, no copy needed."
    else:
        how = (f"Copy across filesystems, verify ({plan.verify}), then remove the source.")
    lines = [f"From  {plan.src}", f"To    {plan.dst}", "", how,
             f"{human_size(plan.bytes_total)} in {human_count(plan.files_total)} files and "
             f"{human_count(plan.dirs_total)} directories."]
    free = free_after(plan)
    if free is not None:
        lines.append(f"Free at the destination after the move: {free[0]}"
                     + ("" if free[1] else "  — NOT ENOUGH SPACE"))
    if plan.bwlimit:
        lines.append(f"Bandwidth limit: {human_size(plan.bwlimit)}/s.")
    lines.extend(f"{sentence}." for sentence in open_files_sentences(plan))
    if plan.created_parents:
        lines.append(f"Makes the missing directories {', '.join(plan.created_parents)}.")
    return lines


def plan_line(plan: PlanEvent) -> str:
    """The plan on one line, for the CLI."""
    if not plan.counted:
        return _with_open_files("plan: rename (same filesystem: one atomic step, nothing to copy)",
                                plan)
    if plan.finishes:
        return (f"plan: finish move {plan.resumes}, cut short while removing the source: "
                f"{plan.files_total:,} entries left in it are checked against the destination, "
                "then removed")
    how = "rename (same filesystem)" if plan.method == "rename" else "copy across filesystems"
    text = (f"plan: {how}, {human_size(plan.bytes_total)} in {plan.files_total:,} files and "
            f"{plan.dirs_total:,} directories, verify {plan.verify}")
    free = free_after(plan)
    if free is not None:
        text += f"; {free[0]} free after" + ("" if free[1] else " — not enough space")
    if plan.created_parents:
        text += f"; makes {', '.join(plan.created_parents)}"
    if plan.resumes:
        text += f"; resumes move {plan.resumes}, cut short: its finished copies are reused"
    return _with_open_files(text, plan)


def _with_open_files(text: str, plan: PlanEvent) -> str:
    """The plan line with what the check for programs using the source found."""
    return "; ".join([text, *(s[0].lower() + s[1:] for s in open_files_sentences(plan))])
