"""The server inventory: `servers.toml` in the user's config dir, one table per server.

    # comments survive edits made in the UI
    [web1]
    target = "admin@web1.example.com:2222"   # an ssh alias, [user@]host[:port] or "local"
    data_path = "/var/lib/app"
    sudo = true                               # optional
    python = "/usr/bin/python3"               # optional

Reading uses tomllib; edits go through tomlkit so the user's comments and layout survive, and
are written atomically. A broken file raises `InventoryError` naming the file and the line.
Headless: no Textual.
"""

from __future__ import annotations

import os
import posixpath
import re
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomlkit

from tui import locations
from tui.errors import BadInput, ServermoveError

FILE_HEADER = """\
# servermove inventory: one table per server. Edit by hand or in the app (`servermove`).
#
# [name]
# target = "admin@host:22"     # an ssh alias from ~/.ssh/config, [user@]host[:port], or "local"
# data_path = "/var/lib/app"   # the directory servermove moves
# sudo = false                 # optional: run the mover with sudo
# python = "/usr/bin/python3"  # optional: the server's python
"""

_KNOWN_KEYS = frozenset({"target", "data_path", "sudo", "python"})


class InventoryError(ServermoveError):
    """servers.toml cannot be read or does not say what a server needs."""


@dataclass(frozen=True)
class ServerEntry:
    name: str
    target: str
    data_path: str
    sudo: bool = False
    python: str | None = None


@dataclass
class Inventory:
    path: Path
    servers: list[ServerEntry] = field(default_factory=list)
    exists: bool = True

    @property
    def names(self) -> list[str]:
        return [server.name for server in self.servers]

    def get(self, name: str) -> ServerEntry:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return name in self.names


def absolute_path_problem(text: str) -> str | None:
    """Why `text` is not usable as a data path, in plain words; None when it is fine."""
    if not text.strip():
        return "enter a path"
    if text != text.strip():
        return "remove the spaces around the path"
    if not text.startswith("/"):
        return "must be an absolute path (starting with /)"
    if "\0" in text:
        return "must not contain a NUL character"
    if posixpath.normpath(text) == "/":
        return "cannot be the root directory"
    return None


def validate_entry(entry: ServerEntry) -> None:
    """Refuse an entry the mover could not use, before it is written to the file."""
    if not entry.name.strip():
        raise BadInput("a server needs a name")
    if not entry.target.strip():
        raise BadInput(f"server {entry.name}: a target is needed (an ssh alias, host or local)")
    problem = absolute_path_problem(entry.data_path)
    if problem:
        raise BadInput(f"server {entry.name}: data path {problem}")


def _line_of_table(text: str, name: str) -> int | None:
    quoted = re.escape(name)
    pattern = re.compile(rf"^\s*\[\s*(?:{quoted}|\"{quoted}\"|'{quoted}')\s*\]")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return None


def _entry_from_table(name: str, table: Any, path: Path, text: str) -> ServerEntry:
    line = _line_of_table(text, name)
    where = f"{path}, line {line}" if line else str(path)

    def fail(problem: str) -> InventoryError:
        return InventoryError(f"{where}: server [{name}] {problem}")

    if not isinstance(table, dict):
        raise fail("is not a table (write it as [name] with target and data_path below)")
    unknown = sorted(set(table) - _KNOWN_KEYS)
    if unknown:
        raise fail(f"has unknown key {unknown[0]!r} (known: target, data_path, sudo, python)")
    for key in ("target", "data_path"):
        if not isinstance(table.get(key), str):
            raise fail(f"needs {key} = \"...\"")
    if not isinstance(table.get("sudo", False), bool):
        raise fail("sudo must be true or false")
    python = table.get("python")
    if python is not None and not isinstance(python, str):
        raise fail("python must be a path in quotes")
    entry = ServerEntry(name, table["target"], table["data_path"], table.get("sudo", False),
                        python)
    try:
        validate_entry(entry)
    except BadInput as exc:
        raise fail(exc.message.split(": ", 1)[-1]) from None
    return entry


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"{path}: cannot read it: {exc}") from None


def load_inventory(path: Path | None = None) -> Inventory:
    """Read servers.toml (the user's, unless `path` is given). A missing file is an empty
    inventory (with `exists` False: the app then offers the first-run screen)."""
    path = path or locations.inventory_file()
    text = _read_text(path)
    if text is None:
        return Inventory(path, [], exists=False)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib says "... (at line 3, column 7)": keep its words, lead with the file.
        raise InventoryError(f"{path}: not valid TOML: {exc}") from None
    servers = [_entry_from_table(name, table, path, text) for name, table in document.items()]
    return Inventory(path, servers)


def _edit(path: Path | None, change: Callable[[Any], Any]) -> Inventory:
    """Apply `change(document)` to the file with tomlkit (comments kept), write it atomically,
    and return the inventory as now on disk. `change` edits the document in place, or returns
    a new one."""
    path = path or locations.inventory_file()
    load_inventory(path)  # refuse to edit a file we could not read back
    text = _read_text(path)
    document = tomlkit.parse(text) if text is not None else tomlkit.parse(FILE_HEADER)
    document = change(document) or document
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".servers.", suffix=".toml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(tomlkit.dumps(document))
        if path.exists():
            os.chmod(tmp_name, path.stat().st_mode & 0o777)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return load_inventory(path)


def _table_for(entry: ServerEntry, keep: Any = None) -> Any:
    """The TOML table for `entry`; when `keep` (the old table) is given, edit it in place so
    comments inside it survive."""
    table = keep if keep is not None else tomlkit.table()
    table["target"] = entry.target
    table["data_path"] = entry.data_path
    if entry.sudo or "sudo" in table:
        table["sudo"] = entry.sudo
    if entry.python:
        table["python"] = entry.python
    elif "python" in table:
        del table["python"]
    return table


def _renamed(document: Any, old: str, new: str) -> Any:
    """A copy of the document with a top-level table renamed where it stands (deleting and
    re-adding it would move it, and its comments, to the end of the file)."""
    fresh = tomlkit.document()
    for key, item in document.body:
        if key is None:
            fresh.add(item)  # a comment or blank line between tables
        else:
            fresh.append(new if key.key == old else key.key, item)
    return fresh


def add_server(entry: ServerEntry, path: Path | None = None) -> Inventory:
    validate_entry(entry)

    def change(document: Any) -> None:
        if entry.name in document:
            raise BadInput(f"there is already a server called {entry.name}")
        document[entry.name] = _table_for(entry)

    return _edit(path, change)


def update_server(name: str, entry: ServerEntry, path: Path | None = None) -> Inventory:
    """Replace server `name` with `entry` (which may carry a new name)."""
    validate_entry(entry)

    def change(document: Any) -> Any:
        if name not in document:
            raise BadInput(f"there is no server called {name}")
        if entry.name != name:
            if entry.name in document:
                raise BadInput(f"there is already a server called {entry.name}")
            document = _renamed(document, name, entry.name)
        _table_for(entry, document[entry.name])
        return document

    return _edit(path, change)


def set_data_path(name: str, data_path: str, path: Path | None = None) -> Inventory:
    """After a completed move: the server's data now lives at `data_path`."""
    current = load_inventory(path).get(name)
    return update_server(name, replace(current, data_path=data_path), path)


def remove_server(name: str, path: Path | None = None) -> Inventory:
    def change(document: Any) -> None:
        if name not in document:
            raise BadInput(f"there is no server called {name}")
        del document[name]

    return _edit(path, change)


def ssh_host_aliases(config_file: Path | None = None) -> list[str]:
    """The concrete `Host` names in ~/.ssh/config (patterns like `*.example` are left out),
    offered as targets when adding a server."""
    config_file = config_file or locations.ssh_config_file()
    try:
        lines = config_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    aliases: list[str] = []
    for line in lines:
        words = line.strip().split()
        if len(words) < 2 or words[0].lower() != "host":
            continue
        for word in words[1:]:
            if word.startswith("#"):
                break
            if not any(ch in word for ch in "*?!") and word not in aliases:
                aliases.append(word)
    return aliases
