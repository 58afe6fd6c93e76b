"""`python -m tui` is `servermove`."""

import sys

from tui.cli import main

sys.exit(main())
