"""remote/mover.py with progress events throttled to the minimum, for the benchmark only.

The mover has no option for this, so this wrapper loads the unmodified mover as a module and
stretches its tick and heartbeat intervals: only phase changes (and the plan) are printed. Timing
it against the normal mover gives the cost of progress reporting.

    python3 bench/quiet_mover.py move [...] SRC DST      (same arguments as remote/mover.py)
"""

import importlib.util
import os
import sys

MOVER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "remote",
                     "mover.py")


def main():
    spec = importlib.util.spec_from_file_location("servermove_mover", MOVER)
    mover = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mover)
    mover.TICK_SECONDS = 1e6
    mover.HEARTBEAT_SECONDS = 1e6
    return mover.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
