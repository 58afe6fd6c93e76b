"""Where servermove keeps its files: one function per XDG directory (via platformdirs).

Each can be redirected with an environment variable, so tests (and a user with an unusual setup)
never touch the real config. Headless: no Textual.
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_config_dir, user_data_dir

APP_NAME = "servermove"


def _dir(env_var: str, default: str) -> Path:
    override = os.environ.get(env_var)
    return Path(override).expanduser() if override else Path(default)


def config_dir() -> Path:
    """The user's settings: `servers.toml` lives here. Override: SERVERMOVE_CONFIG_DIR."""
    return _dir("SERVERMOVE_CONFIG_DIR", user_config_dir(APP_NAME))


def data_dir() -> Path:
    """Things servermove made and keeps (the moves log). Override: SERVERMOVE_DATA_DIR."""
    return _dir("SERVERMOVE_DATA_DIR", user_data_dir(APP_NAME))


def inventory_file() -> Path:
    return config_dir() / "servers.toml"


def ssh_config_file() -> Path:
    return Path("~/.ssh/config").expanduser()
