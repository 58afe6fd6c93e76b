"""The headless core stays headless: importing any core module loads neither Textual nor rich.

The CLI, the TUI and the tests all build on these modules; a screen library creeping into them
would tie every script to a terminal. Each module is imported in a fresh interpreter, so what one
test imported cannot hide what another module pulls in.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CORE_MODULES = [
    "tui.errors",
    "tui.locations",
    "tui.targets",
    "tui.protocol",
    "tui.progress",
    "tui.history",
    "tui.inventory",
    "tui.ssh",
    "tui.runner",
    "tui.fleet",
]
UI_PACKAGES = ("textual", "rich")

PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted({name.split('.')[0] for name in sys.modules} & set(sys.argv[2:]))))
"""


def ui_packages_loaded_by(module: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", PROBE, module, *UI_PACKAGES],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_loads_no_ui_package(module: str) -> None:
    assert ui_packages_loaded_by(module) == []


def test_the_probe_sees_a_ui_package_when_one_is_imported() -> None:
    # Without this, a probe that never reported anything would pass every test above.
    assert ui_packages_loaded_by("tui.app") == ["rich", "textual"]
