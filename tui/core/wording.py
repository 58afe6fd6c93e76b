"""Every sentence and number a user reads about a move, written once for the CLI and the TUI:
how a move ended, where it stopped, the plan, the free space, and what the bars count.

The presenters (tui/cli.py, the app's widgets and screens) only arrange these words; when one
sentence changes here, both front ends say the new thing.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING

from tui.core.formatting import (
    counted,
    human_duration,
    human_eta,
    human_rate,
    human_seconds,
    human_size,
    local_time,
)
from tui.core.protocol import Phase, ServiceRunsFrom

if TYPE_CHECKING:
    from tui.core.moves_log import MoveRecord
    from tui.core.progress import MoveProgress
    from tui.core.protocol import (
        FsStatEvent,
        KeptCopyEvent,
        PlanEvent,
        ServiceCheckEvent,
        ServicePlan,
    )

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
    if progress.service_move and progress.finished:
        return service_outcome(progress)
    if progress.phase is Phase.COMPLETE:
        return (renamed_sentence(progress)
                or f"Move complete{reused_note(progress)}{kept_old_note(progress)}.")
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


NOT_RUNNING = "THE SERVICE IS NOT RUNNING"  # the mover's own loud words for `nowhere`


def service_outcome(progress: MoveProgress) -> str:
    """How a service move ended: where the service runs from now, how long it was down, and
    after a rollback why, and where the new copy was left."""
    down = _down_for(progress)
    plan = progress.plan
    if progress.phase is Phase.COMPLETE:
        return (f"Moved{reused_note(progress)}{moved_service_tail(progress)}"
                f"{kept_old_note(progress)}.")
    what = "Move cancelled" if progress.phase is Phase.CANCELLED else "Move failed"
    text = f"{what} while {stopped_while(progress)}"
    why = (progress.error or "").rstrip(".")
    if progress.service_runs_from is ServiceRunsFrom.NOWHERE:
        # Loud: the admin must start it by hand; the mover's words say where both copies are.
        return f"{text}: {why if NOT_RUNNING in why else f'{NOT_RUNNING}: {why}'}{down}."
    if progress.service_runs_from is ServiceRunsFrom.SOURCE and progress.downtime is not None \
            and plan is not None:
        back = f"; the service runs from the old path {plan.src} again"
        if back in why:  # put back after switching: say so first, then why
            return f"{text}{back}: {why.replace(back, '')}{down}."
    if not why and progress.data_state is not None:
        why = progress.data_state.explain()
    return f"{text}: {why}{down}." if why else f"{text}{down}."


def _down_for(progress: MoveProgress) -> str:
    return ("" if progress.downtime is None
            else f"; it was down for {human_seconds(progress.downtime)}")


def moved_service_tail(progress: MoveProgress) -> str:
    """`; the service runs from NEW; it was down for 2.4 s` after a service move that
    completed ("" for any other move)."""
    if not progress.service_move or progress.phase is not Phase.COMPLETE:
        return ""
    where = progress.plan.dst if progress.plan else "the new path"
    return f"; the service runs from {where}{_down_for(progress)}"


def due_time(unix_time: float | None) -> str:
    """A due time from the server's clock, in this machine's time zone."""
    if unix_time is None:
        return "an unknown time"
    return datetime.fromtimestamp(unix_time).astimezone().strftime("%Y-%m-%d %H:%M")


def clean_command(server: str) -> str:
    return f"servermove clean {server}" if server else "servermove clean SERVER"


KEEP_OLD_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60))


def keep_old_words(plan: PlanEvent) -> str:
    """What a move with keep_old does with the old copy instead of removing it."""
    seconds = plan.keep_old_seconds or 0
    unit, size = next(((unit, size) for unit, size in KEEP_OLD_UNITS
                       if seconds >= size and seconds % size == 0), ("second", 1))
    count = int(seconds // size)
    return (f"keep the old copy read-only beside the source for {counted(count, unit)}, "
            "then remove it")


def kept_old_words(progress: MoveProgress) -> str | None:
    """`the old copy is kept read-only at PATH until …` after a move that kept it (keep_old),
    None after any other."""
    if progress.old_copy_path is None or progress.phase is not Phase.COMPLETE:
        return None
    return (f"the old copy is kept read-only at {progress.old_copy_path} until "
            f"{due_time(progress.old_copy_due_at)}, then removed by "
            f"'{clean_command(progress.server_name)}' or the server's next move")


def kept_old_note(progress: MoveProgress) -> str:
    """kept_old_words as the tail of a sentence: `; the old copy is kept …` ("" if none)."""
    words = kept_old_words(progress)
    return f"; {words}" if words else ""


def kept_old_sentence(progress: MoveProgress) -> str | None:
    """kept_old_words as a sentence of its own (the TUI's outcome panel)."""
    words = kept_old_words(progress)
    return f"{words[0].upper()}{words[1:]}." if words else None


KEPT_ACTIONS = {"kept": "kept until {due}", "removed": "removed",
                "would remove": "due since {due}: would be removed",
                "gone": "already gone: forgotten",
                "left": "not removed ({why}): forgotten, delete it by hand if you want",
                "failed": "could not be removed ({why}): what is left of it is still there, "
                          "and listed again next time"}


def kept_copy_line(event: KeptCopyEvent) -> str:
    """One kept old copy in `servermove clean`'s output: where, how big, what was done."""
    size = ("" if event.size is None else
            f" ({human_size(event.size)} in {counted(event.files or 0, 'file')})")
    what = KEPT_ACTIONS.get(event.action, event.action).format(due=due_time(event.due_at),
                                                              why=event.why or "")
    return f"{event.path}{size}, the old copy of {event.src}: {what}"


def clean_summary(events: list[KeptCopyEvent], server: str, dry_run: bool) -> str:
    """The last line of `servermove clean`: what was freed, or that nothing is kept."""
    if not events:
        return f"no old copies kept on {server}"
    done = "would remove" if dry_run else "removed"
    gone = [event for event in events if event.action == done]
    freed = sum(event.size or 0 for event in gone)
    waiting = sum(event.action == "kept" for event in events)
    copies = counted(len(gone), "old copy")
    if dry_run:
        return (f"{copies} due on {server} would be removed (would free {human_size(freed)}); "
                f"{waiting} not due yet; nothing was changed")
    return f"{copies} removed on {server} (freed {human_size(freed)}); {waiting} not due yet"


def moved_figures(progress: MoveProgress) -> tuple[str, str, str, str | None]:
    """(size, files, time, average rate or None) of a move that ended: the figures both the
    CLI's summary and the TUI's outcome panel give."""
    average = progress.average_rate
    return (human_size(progress.bytes_total), counted(progress.files_total, "file"),
            human_duration(progress.elapsed), human_rate(average) if average else None)


def summary_line(progress: MoveProgress) -> str:
    """The CLI's last line about a move."""
    if progress.phase is Phase.COMPLETE and not progress.uncounted_rename:
        size, files, took, rate = moved_figures(progress)
        return (f"moved {size} in {files} in {took} ({rate or '—'}){reused_note(progress)}"
                f"{moved_service_tail(progress)}{kept_old_note(progress)}")
    return progress.outcome()


def outcome_words(progress: MoveProgress, *, server_name: str, new_path: str,
                  problem: str | None = None, start_failed: bool = False,
                  link_lost: bool = False) -> tuple[str, list[str], str]:
    """(title, lines, kind) saying what happened to a move that ended, for the TUI's outcome
    panel; kind is complete, error, cancelled or lost. `problem`: the app's own words for a
    move that could not start or lost its link."""
    if start_failed:
        return ("Could not start the move", [problem or "", "Nothing was changed on the server."],
                "error")
    if link_lost:
        return ("Connection lost",
                [problem or "",
                 "The move goes on on the server, which keeps its journal: servermove picks it "
                 f"up when you open it again, or follow it with: servermove attach "
                 f"{server_name}"], "lost")
    landed = f"The data is now at {new_path}; the inventory says so too."
    if progress.phase is Phase.COMPLETE and progress.uncounted_rename:
        return "Move complete", [progress.outcome(), landed], "complete"
    if progress.phase is Phase.COMPLETE:
        size, files, took, average = moved_figures(progress)
        return ("Move complete",
                [f"Moved {size} in {files} in {took}"
                 + (f" (average {average})." if average else "."),
                 *filter(None, [service_where(progress), landed,
                                kept_old_sentence(progress)])], "complete")
    return ended_badly_words(progress, problem)


def ended_badly_words(progress: MoveProgress,
                      problem: str | None) -> tuple[str, list[str], str]:
    """outcome_words of a move cancelled, failed, or ended without a result."""
    lines: list[str] = []
    where = stopped_while(progress)
    if progress.phase is Phase.CANCELLED:
        title, kind = f"Move cancelled while {where}", "cancelled"
        lines.append("The move was cancelled at your request.")
    elif progress.phase is Phase.ERROR:
        title, kind = f"Move failed while {where}", "error"
        lines.extend(service_failure_lines(progress)
                     or [progress.error or "The mover reported an error without details."])
    else:
        title, kind = "The mover stopped without a result", "error"
        lines.append(problem or "")
    if progress.data_state is not None:
        lines.append(f"Data: {progress.data_state.explain()}.")
    else:
        lines.append("The mover did not say where the data is: check both paths.")
    lines.extend(f"Warning: {warning}" for warning in progress.warnings[-3:])
    return title, lines, kind


def stats_line(progress: MoveProgress) -> str:
    """The TUI's line of figures under the bars: rate, ETA, elapsed; or why they stopped."""
    if progress.finished:
        return f"took {human_duration(progress.elapsed)}"
    if progress.link_lost:
        return (f"connection lost — reconnecting  ·  the move goes on on the server  ·  "
                f"elapsed {human_duration(progress.elapsed)}")
    return (f"{human_rate(progress.rate)}  ·  ETA {human_eta(progress.eta)}"
            f"  ·  elapsed {human_duration(progress.elapsed)}")


# -- a service move as it goes ------------------------------------------------------------------

def phase_words(progress: MoveProgress) -> str:
    """The phase as the CLI and the TUI name it: with the pass number while syncing and for the
    final copy of a service move, and the forecast downtime once a pass has measured it."""
    if progress.phase is None:
        return "connecting"
    text = progress.phase.value
    if progress.pass_number is not None and progress.phase in (Phase.SYNCING, Phase.COPYING):
        text += (f", pass {progress.pass_number}" if progress.phase is Phase.SYNCING
                 else f" (final pass {progress.pass_number})")
        if progress.phase is Phase.SYNCING and progress.forecast_downtime is not None:
            text += f", forecast downtime {human_seconds(progress.forecast_downtime)}"
    return text


def down_clock(progress: MoveProgress) -> str | None:
    """`service down for 3.2 s` while a service move has the service stopped; None otherwise."""
    down = progress.down_for
    return None if down is None else f"service down for {human_seconds(down)}"


def service_status(progress: MoveProgress) -> tuple[str, bool] | None:
    """The service's line under a service move's bars, and whether it says the service is down:
    the downtime clock while it is stopped, else that it runs and the forecast downtime once a
    live pass has measured it; None for any other move and once the move has ended."""
    if not progress.service_move or progress.finished:
        return None
    down = down_clock(progress)
    if down is not None:
        return down, True
    forecast = ("forecast downtime: measured after the first pass"
                if progress.forecast_downtime is None
                else f"forecast downtime {human_seconds(progress.forecast_downtime)}")
    return f"service running  ·  {forecast}", False


def service_where(progress: MoveProgress) -> str | None:
    """Where a service move's service runs now that the move has ended, and how long it was
    down, as one sentence; None for any other move or while it goes on."""
    if not progress.service_move or not progress.finished or progress.service_runs_from is None:
        return None
    plan = progress.plan
    src = plan.src if plan else "the old path"
    dst = plan.dst if plan else "the new path"
    down = ("" if progress.downtime is None
            else f" It was down for {human_seconds(progress.downtime)}.")
    where = progress.service_runs_from
    if where is ServiceRunsFrom.DESTINATION:
        return f"The service runs from {dst}.{down}"
    if where is ServiceRunsFrom.SOURCE and progress.downtime is None:
        return f"The service was not stopped: it runs from {src} as before."
    if where is ServiceRunsFrom.SOURCE:
        return f"The service runs from the old path {src} again.{down}"
    return f"{NOT_RUNNING}: start it by hand once you have read the error above.{down}"


def service_failure_lines(progress: MoveProgress) -> list[str] | None:
    """A failed or cancelled service move's outcome for the TUI: where the service runs first
    (the old path again after a rollback, with its downtime), then why, in the mover's words
    without that clause said twice; None for any other move."""
    where = service_where(progress)
    if where is None or progress.phase is Phase.COMPLETE:
        return None
    why = (progress.error or "").rstrip(".")
    if progress.service_runs_from is ServiceRunsFrom.SOURCE and progress.plan is not None:
        why = why.replace(f"; the service runs from the old path {progress.plan.src} again", "")
    return [where] + ([f"Why: {why}."] if why else [])


def record_service_note(record: MoveRecord) -> str | None:
    """A service move's line in the moves log: downtime, passes, cutover, where it runs from;
    None for any other move."""
    if record.serviceRunsFrom is None and record.downtimeSeconds is None and not record.passes:
        return None
    parts = [f"service down for {human_seconds(record.downtimeSeconds)}"
             if record.downtimeSeconds is not None else "service not stopped"]
    if record.passes:
        parts.append(counted(record.passes, "pass"))
    if record.cutover:
        parts.append(f"cutover {record.cutover}")
    if record.serviceRunsFrom:
        parts.append(f"runs from the {record.serviceRunsFrom}"
                     if record.serviceRunsFrom != ServiceRunsFrom.NOWHERE
                     else "NOT RUNNING at the end")
    return "; ".join(parts)


# -- what the bars count ------------------------------------------------------------------------

def bar_label(progress: MoveProgress) -> str:
    """What the bytes bar counts: verified bytes while verifying, copied bytes otherwise (a
    service move's live pass by its number, and its final delta)."""
    if progress.phase is Phase.VERIFYING:
        return "Verified"
    if progress.pass_number is not None and progress.phase is Phase.SYNCING:
        return f"Pass {progress.pass_number}"  # a live pass, while the service runs
    if progress.pass_number is not None and progress.phase is Phase.COPYING:
        return "Final"  # the final delta, while the service is down
    return "Copied"


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


# What the confirmation can say of the downtime before the move: a dry run copies nothing, so
# nothing has measured the rates the forecast comes from yet.
DOWNTIME_FORECAST_NOTE = ("Downtime: forecast from the first live pass's measured rates (stop, "
                          "final copy, start and check), shown as the move goes; the service "
                          "runs until then.")


def plan_lines(plan: PlanEvent) -> list[str]:
    """The dry run's plan in plain words, for the TUI's confirmation."""
    if plan.method == "rename":
        how = "Rename: same filesystem, one atomic step, no copy needed."
    else:
        how = (f"Copy across filesystems, verify ({plan.verify}), then "
               + (f"{keep_old_words(plan)}." if plan.keep_old_seconds else "remove the source."))
    lines = [f"From  {plan.src}", f"To    {plan.dst}", "", how,
             f"{human_size(plan.bytes_total)} in {counted(plan.files_total, 'file')} and "
             f"{counted(plan.dirs_total, 'directory')}."]
    free = free_after(plan)
    if free is not None:
        lines.append(f"Free at the destination after the move: {free[0]}"
                     + ("" if free[1] else "  — NOT ENOUGH SPACE"))
    if plan.bwlimit:
        lines.append(f"Bandwidth limit: {human_size(plan.bwlimit)}/s.")
    lines.extend(f"{sentence}." for sentence in open_files_sentences(plan))
    if plan.created_parents:
        lines.append(f"Makes the missing directories {', '.join(plan.created_parents)}.")
    if plan.service is not None:
        lines += ["", DOWNTIME_FORECAST_NOTE, "", "The service's steps, in order:"]
        lines += [f"{number}. {step}" for number, step in
                  enumerate(service_steps(plan.service, plan), 1)]
    return lines


def cutover_words(service: ServicePlan, plan: PlanEvent, *, short: bool = False) -> str:
    """How the service is pointed at the new path, in a phrase (`short`: without the paths)."""
    if service.cutover == "symlink":
        return "switch by symlink" + ("" if short else
                                      f": {plan.src} becomes a link to {plan.dst}")
    if service.config_file:
        return f"switch by editing {service.config_file}"
    return "put the copy in place" + ("" if short else
                                      f" at {plan.dst} (nothing repoints the service)")


def service_steps(service: ServicePlan, plan: PlanEvent) -> list[str]:
    """A service move's steps in plain words, in the order they run; a config cutover's lines
    that change follow its step."""
    switch = cutover_words(service, plan)
    switch = switch[0].upper() + switch[1:]
    if service.config_file:
        changed = [f"line {c.line}: {c.before!r} → {c.after!r}" for c in service.cutover_changes
                   if c.line is not None]
        switch += (": " + "; ".join(changed)) if changed else ""
    limit = (f", until the forecast downtime is under "
             f"{human_seconds(service.max_downtime_seconds)}"
             if service.max_downtime_seconds is not None else "")
    return [f"Copy while the service runs (live passes{limit})",
            f"Stop the service: {service.stop}",
            f"Copy what changed since the last pass and verify it ({plan.verify})",
            switch,
            f"Start the service: {service.start}",
            f"Check it until it passes: {service.check}",
            (keep_old_words(plan)[0].upper() + keep_old_words(plan)[1:]
             if plan.keep_old_seconds else "Remove the old copy")]


def plan_line(plan: PlanEvent) -> str:
    """The plan on one line, for the CLI."""
    if not plan.counted:
        return _with_open_files("plan: rename (same filesystem: one atomic step, nothing to copy)",
                                plan)
    if plan.finishes:
        return (f"plan: finish move {plan.resumes}, cut short while removing the source: "
                f"each of the {counted(plan.files_total, 'entry')} left in it is checked against "
                "the destination, then removed")
    how = "rename (same filesystem)" if plan.method == "rename" else "copy across filesystems"
    text = (f"plan: {how}, {human_size(plan.bytes_total)} in {counted(plan.files_total, 'file')} "
            f"and {counted(plan.dirs_total, 'directory')}, verify {plan.verify}")
    free = free_after(plan)
    if free is not None:
        text += f"; {free[0]} free after" + ("" if free[1] else " — not enough space")
    if plan.created_parents:
        text += f"; makes {', '.join(plan.created_parents)}"
    if plan.keep_old_seconds:
        text += f"; {keep_old_words(plan)}"
    if plan.resumes:
        text += f"; resumes move {plan.resumes}, cut short: its finished copies are reused"
    if plan.service is not None:
        text += ("; service: copy while running → stop → final copy → "
                 f"{cutover_words(plan.service, plan, short=True)} → start → check")
    return _with_open_files(text, plan)


def _with_open_files(text: str, plan: PlanEvent) -> str:
    """The plan line with what the check for programs using the source found."""
    return "; ".join([text, *(s[0].lower() + s[1:] for s in open_files_sentences(plan))])


# -- the downtime limit ---------------------------------------------------------------------------

def parse_max_downtime(text: str) -> tuple[float | None, str | None]:
    """(seconds, problem) for the downtime limit as typed: "" is no limit."""
    text = text.strip().removesuffix("s").strip()
    if not text:
        return None, None
    try:
        seconds = float(text)
    except ValueError:
        return None, "the downtime limit is a number of seconds, e.g. 10"
    if not 0 < seconds < float("inf"):
        return None, "the downtime limit must be more than 0 seconds"
    return seconds, None


# -- a server's service, on its screen ----------------------------------------------------------

def service_state(check: ServiceCheckEvent | None, problem: str | None = None) -> str:
    """What the last run of the service's check said: running, stopped or unknown, and when
    (`problem`: why it could not be run)."""
    if check is None:
        return f"unknown: {problem}" if problem else "unknown: not checked yet"
    when = (f"checked at {time.strftime('%H:%M:%S', time.localtime(check.checked_at))}"
            if check.checked_at is not None else "checked")
    if check.passed:
        return f"running ({when}: its check passed)"
    return f"stopped ({when}: its check {check.result})"


def cutover_summary(cutover: str, data_path: str) -> str:
    """How a server's service will be pointed at the new path, before there is a plan."""
    kind, _, config_file = cutover.partition(":")
    if kind == "symlink":
        return f"by symlink: {data_path} becomes a link to the new path"
    if kind == "config" and config_file:
        return f"by editing {config_file}: {data_path} is replaced there by the new path"
    return "none: the copy is put at the new path, nothing repoints the service"


def last_downtime(records: list[MoveRecord]) -> str:
    """The downtime of the newest service move among `records` (newest first)."""
    for record in records:
        if record.downtimeSeconds is not None:
            return (f"{human_seconds(record.downtimeSeconds)} (the move of "
                    f"{local_time(record.startedAt)})")
    if any(record.serviceRunsFrom is not None for record in records):
        return "none: its last service move did not stop it"
    return "no service move yet"
