"""remote/mover.py with the source removed one way for certain, for the tests.

The mover removes files inline and hands them to worker threads only once unlinks prove slow
(Remover.SLOW_UNLINK_SECONDS), which depends on the disk. This wrapper pins the choice, so both
paths run on any machine:

    python3 tests/remover_mover.py threads|inline move [...] SRC DST
"""

import importlib.util
import os
import sys

MOVER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "remote",
                     "mover.py")


def main() -> int:
    spec = importlib.util.spec_from_file_location("servermove_mover", MOVER)
    assert spec is not None and spec.loader is not None
    mover = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mover)
    way, argv = sys.argv[1], sys.argv[2:]
    mover.Remover.WINDOW = 1
    mover.Remover.SLOW_UNLINK_SECONDS = {"threads": -1.0, "inline": float("inf")}[way]
    return mover.main(argv)


if __name__ == "__main__":
    sys.exit(main())
