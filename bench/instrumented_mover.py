"""remote/mover.py with its progress reporting instrumented, for the benchmark only.

The unmodified mover is loaded as a module and run with one of two changes:

    python3 bench/instrumented_mover.py quiet move [...] SRC DST
        progress events throttled to the minimum (tick and heartbeat intervals stretched): only
        the plan and the phase changes are printed. Timed against the normal mover, it shows
        what reporting costs, when the machine is quiet enough to tell.

    SERVERMOVE_BENCH_METER=FILE python3 bench/instrumented_mover.py metered move [...] SRC DST
        the CPU time of everything that reports progress is measured: the reporter thread,
        whole (its ticks, the JSON, the writes, the cancel-file polls), and each event the main
        thread prints itself (phase changes). On exit {"reporting_cpu_s": ...} goes to FILE.
        Against the run's wall time this bounds what reporting costs: the copy can be held up
        while the reporter runs, never for longer than it runs; and unlike two timed runs it
        does not drown in the noise of a shared machine.
"""

import importlib.util
import json
import os
import sys
import threading
import time

MOVER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "remote",
                     "mover.py")


def quiet(mover):
    mover.TICK_SECONDS = 1e6
    mover.HEARTBEAT_SECONDS = 1e6
    return lambda: None


def metered(mover):
    spent = [0.0]
    main_thread = threading.current_thread()
    reporter, emit = mover.Progress._reporter, mover.Emitter.emit

    def metered_reporter(self):
        try:
            reporter(self)
        finally:
            spent[0] += time.thread_time()  # this thread's CPU time, all of it reporting

    def metered_emit(self, *args, **kwargs):
        if threading.current_thread() is not main_thread:
            return emit(self, *args, **kwargs)  # the reporter's: already in its thread time
        started = time.thread_time()
        try:
            return emit(self, *args, **kwargs)
        finally:
            spent[0] += time.thread_time() - started

    def report():
        with open(os.environ["SERVERMOVE_BENCH_METER"], "w") as out:
            json.dump({"reporting_cpu_s": spent[0]}, out)

    mover.Progress._reporter = metered_reporter
    mover.Emitter.emit = metered_emit
    return report


def main():
    spec = importlib.util.spec_from_file_location("servermove_mover", MOVER)
    mover = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mover)
    finish = {"quiet": quiet, "metered": metered}[sys.argv[1]](mover)
    status = mover.main(sys.argv[2:])
    finish()
    return status


if __name__ == "__main__":
    sys.exit(main())
