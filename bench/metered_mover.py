"""remote/mover.py with a meter on its progress reporting, for the benchmark only.

Loads the unmodified mover as a module and measures the CPU time of everything that reports
progress: the reporter thread, whole (its ticks, the JSON, the writes, the cancel-file polls),
and each event the main thread prints itself (phase changes). When the mover exits it writes
{"reporting_cpu_s": ...} to the file named by $SERVERMOVE_BENCH_METER.

Against the run's wall time this bounds what reporting costs: the copy can be held up while the
reporter runs, never for longer than the reporter runs. Unlike timing a quiet run against a
normal one, it does not drown in the noise of a shared machine.

    SERVERMOVE_BENCH_METER=FILE python3 bench/metered_mover.py move [...] SRC DST
"""

import importlib.util
import json
import os
import sys
import threading
import time

MOVER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "remote",
                     "mover.py")


def main():
    spec = importlib.util.spec_from_file_location("servermove_mover", MOVER)
    mover = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mover)
    spent = [0.0]
    main_thread = threading.current_thread()
    reporter, emit = mover.Move._reporter, mover.Emitter.emit

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

    mover.Move._reporter = metered_reporter
    mover.Emitter.emit = metered_emit
    status = mover.main(sys.argv[1:])
    with open(os.environ["SERVERMOVE_BENCH_METER"], "w") as out:
        json.dump({"reporting_cpu_s": spent[0]}, out)
    return status


if __name__ == "__main__":
    sys.exit(main())
