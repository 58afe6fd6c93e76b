"""The server inventory: `servers.toml` in the user's config dir, one table per server.

    # comments survive edits made in the UI
    [web1]
    target = "admin@web1.example.com:2222"   # an ssh alias, [user@]host[:port] or "local"
    data_path = "/var/lib/app"
    sudo = true                               # optional
    python = "/usr/bin/python3"               # optional
    service = "systemd:app.service"           # optional: the service that uses data_path

The service keys: `stop`, `start`, `check` (a string runs with /bin/sh -c on the server, an
array of words without a shell), `check_timeout` (seconds, default 60) and `cutover` ("none",
"symlink" or "config:FILE"); `service = "systemd:UNIT"` or `"docker:NAME"` gives the three
commands, and explicit keys override them. A move of the server's data_path then moves the
running service (`servermove move NAME …`, the TUI's Apply) unless `--no-service`.

`keep_old = "7d"` (or "12h", "30m", "45s"): a move of this server keeps the old copy read-only
beside the source for that long instead of deleting it (`servermove clean NAME` removes it once
due, and so does the server's next move).

Reading uses tomllib; edits go through tomlkit so the user's comments and layout survive, and
are written atomically. A broken file raises `InventoryError` naming the file and the line.
Headless: no Textual.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomlkit

from tui.core import locations
from tui.core.errors import BadInput, ServermoveError

FILE_HEADER = """\
# servermove inventory: one table per server. Edit by hand or in the app (`servermove`).
#
# [name]
# target = "admin@host:22"     # an ssh alias from ~/.ssh/config, [user@]host[:port], or "local"
# data_path = "/var/lib/app"   # the directory servermove moves
# sudo = false                 # optional: run the mover with sudo
# python = "/usr/bin/python3"  # optional: the server's python
"""

_SERVICE_KEYS = ("service", "stop", "start", "check", "check_timeout", "cutover")
_KNOWN_KEYS = frozenset({"target", "data_path", "sudo", "python", "keep_old", *_SERVICE_KEYS})
CHECK_TIMEOUT_DEFAULT = 60
CHECK_TIMEOUT_MAX = 3600  # the mover refuses more
# systemd unit and docker container names: no spaces, no leading "-" (it would read as an option).
_UNIT_NAME = re.compile(r"[A-Za-z0-9_.@:\\][A-Za-z0-9_.@:\\-]*")
_CONTAINER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

Command = str | tuple[str, ...]
"""A service command: a string runs with /bin/sh -c, a tuple of words without a shell."""


class InventoryError(ServermoveError):
    """servers.toml cannot be read or does not say what a server needs."""


@dataclass(frozen=True)
class ServiceConfig:
    """The service whose data is the server's data_path: how the mover stops, starts and checks
    it, and how it is repointed to the new path (the cutover)."""

    stop: Command
    start: Command
    check: Command
    check_timeout: float = CHECK_TIMEOUT_DEFAULT
    cutover: str = "none"
    # The last line a passing check prints, for checks that exit 0 either way (docker inspect).
    check_output: str | None = None

    def to_mover(self) -> dict[str, Any]:
        """The service as the mover takes it (parse_service_spec in remote/mover.py)."""
        spec: dict[str, Any] = {"stop": _wire_command(self.stop),
                                "start": _wire_command(self.start),
                                "check": _wire_command(self.check),
                                "checkTimeout": self.check_timeout, "cutover": self.cutover}
        if self.check_output is not None:
            spec["checkOutput"] = self.check_output
        return spec


def _wire_command(command: Command) -> str | list[str]:
    return command if isinstance(command, str) else list(command)


@dataclass(frozen=True)
class ServerEntry:
    name: str
    target: str
    data_path: str
    sudo: bool = False
    python: str | None = None
    service: ServiceConfig | None = None
    keep_old: str | None = None  # as written ("7d"); keep_old_seconds() gives the seconds


KEEP_OLD_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
KEEP_OLD_MAX_SECONDS = 10 * 366 * 86400  # the mover refuses more
_KEEP_OLD = re.compile(r"([1-9][0-9]{0,5})([smhd])")


def keep_old_seconds(text: Any) -> int:
    """The seconds of a keep_old duration ("7d", "12h", "30m", "45s"); raises ValueError with
    the accepted forms in plain words."""
    match = _KEEP_OLD.fullmatch(text) if isinstance(text, str) else None
    seconds = int(match[1]) * KEEP_OLD_UNITS[match[2]] if match else 0
    if not 0 < seconds <= KEEP_OLD_MAX_SECONDS:
        raise ValueError(f"keep_old must be a duration in quotes: a whole number and a unit, "
                         f'like "7d", "12h", "30m" or "45s" (at most 3660d); got {text!r}')
    return seconds


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


def _shorthand_service(value: Any) -> dict[str, Any]:
    """The commands that `service = "systemd:UNIT"` or `"docker:NAME"` stands for; raises
    ValueError with the problem in plain words."""
    kind, _, name = value.partition(":") if isinstance(value, str) else ("", "", "")
    if kind == "systemd" and _UNIT_NAME.fullmatch(name):
        return {"stop": ("systemctl", "stop", name), "start": ("systemctl", "start", name),
                "check": ("systemctl", "is-active", "--quiet", name)}
    if kind == "docker" and _CONTAINER_NAME.fullmatch(name):
        # docker inspect exits 0 for a stopped container too: it is healthy when it prints true.
        return {"stop": ("docker", "stop", name), "start": ("docker", "start", name),
                "check": ("docker", "inspect", "-f", "{{.State.Running}}", name),
                "check_output": "true"}
    raise ValueError('service must be "systemd:UNIT" or "docker:NAME" with a unit or container '
                     "name (letters, digits, _ . - @ :)")


def _command(key: str, value: Any) -> Command:
    if isinstance(value, str) and value.strip() and "\0" not in value:
        return value
    if isinstance(value, list) and value and all(
            isinstance(word, str) and word and "\0" not in word for word in value):
        return tuple(value)
    raise ValueError(f"{key} must be a command in quotes (run by /bin/sh) or an array of "
                     "words (run without a shell)")


def _check_timeout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not 0 < value <= CHECK_TIMEOUT_MAX:
        raise ValueError(f"check_timeout must be a number of seconds, more than 0 and at most "
                         f"{CHECK_TIMEOUT_MAX}")
    return value


def _cutover(value: Any) -> str:
    if value in ("none", "symlink"):
        return value
    if isinstance(value, str) and value.startswith("config:"):
        problem = absolute_path_problem(value.removeprefix("config:"))
        if problem is None:
            return value
        raise ValueError(f"cutover config file {problem}")
    raise ValueError('cutover must be "none", "symlink" or "config:/path/to/the/config/file"')


def service_from_table(table: dict[str, Any]) -> ServiceConfig | None:
    """The service keys of one server's table; None when it has none. Raises ValueError with
    the problem (naming the key) in plain words."""
    if not any(key in table for key in _SERVICE_KEYS):
        return None
    keys: dict[str, Any] = {}
    if "service" in table:
        keys.update(_shorthand_service(table["service"]))
    for key in ("stop", "start", "check"):
        if key in table:
            keys[key] = _command(key, table[key])
    if "check" in table:
        keys.pop("check_output", None)  # the shorthand's expected output is for its own check
    missing = [key for key in ("stop", "start", "check") if key not in keys]
    if missing:
        raise ValueError(f"has no {missing[0]} command: a service needs stop, start and check "
                         '(or service = "systemd:UNIT" or "docker:NAME")')
    if "check_timeout" in table:
        keys["check_timeout"] = _check_timeout(table["check_timeout"])
    if "cutover" in table:
        keys["cutover"] = _cutover(table["cutover"])
    return ServiceConfig(**keys)


def command_words(command: Command) -> str:
    """A command as the server form shows it: a string as written, an array as shell words."""
    return command if isinstance(command, str) else shlex.join(command)


def service_from_form(fields: dict[str, str],
                      current: ServiceConfig | None) -> ServiceConfig | None:
    """The service as typed in the server form (`service`, `stop`, `start`, `check`, `cutover`;
    blank: not given); None when all are blank. A command shown unchanged keeps its form (an
    array stays an array). Raises BadInput with the problem in one line."""
    table: dict[str, Any] = {key: value.strip() for key, value in fields.items() if value.strip()}
    if not table:
        return None
    for key in ("stop", "start", "check"):
        old = getattr(current, key) if current is not None else None
        if old is not None and key in table and table[key] == command_words(old):
            table[key] = old if isinstance(old, str) else list(old)
    if current is not None and current.check_timeout != CHECK_TIMEOUT_DEFAULT:
        table["check_timeout"] = current.check_timeout
    try:
        service = service_from_table(table)
    except ValueError as exc:
        raise BadInput(f"service: {exc}") from None
    if service is not None and current is not None and "service" not in table \
            and current.check_output is not None and service.check == current.check:
        service = replace(service, check_output=current.check_output)  # a docker check's line
    return service


def _entry_from_table(name: str, table: Any, path: Path, text: str) -> ServerEntry:
    line = _line_of_table(text, name)
    where = f"{path}, line {line}" if line else str(path)

    def fail(problem: str) -> InventoryError:
        return InventoryError(f"{where}: server [{name}] {problem}")

    if not isinstance(table, dict):
        raise fail("is not a table (write it as [name] with target and data_path below)")
    unknown = sorted(set(table) - _KNOWN_KEYS)
    if unknown:
        raise fail(f"has unknown key {unknown[0]!r} (known: target, data_path, sudo, python, "
                   f"keep_old, {', '.join(_SERVICE_KEYS)})")
    for key in ("target", "data_path"):
        if not isinstance(table.get(key), str):
            raise fail(f"needs {key} = \"...\"")
    if not isinstance(table.get("sudo", False), bool):
        raise fail("sudo must be true or false")
    python = table.get("python")
    if python is not None and not isinstance(python, str):
        raise fail("python must be a path in quotes")
    try:
        service = service_from_table(table)
        keep_old = table.get("keep_old")
        if keep_old is not None:
            keep_old_seconds(keep_old)
    except ValueError as exc:
        raise fail(str(exc)) from None
    entry = ServerEntry(name, table["target"], table["data_path"], table.get("sudo", False),
                        python, service, keep_old)
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
    if entry.keep_old:
        table["keep_old"] = entry.keep_old
    elif "keep_old" in table:
        del table["keep_old"]
    _write_service(table, entry.service)
    return table


def _write_service(table: Any, service: ServiceConfig | None) -> None:
    """The service keys of a server's table: left as written (a shorthand stays one, its
    comments stay) when they already say `service`; else written out key by key."""
    written = {key: table[key] for key in _SERVICE_KEYS if key in table}
    try:
        current = service_from_table({key: item.unwrap() if hasattr(item, "unwrap") else item
                                      for key, item in written.items()})
    except ValueError:
        current = None  # what is written is broken: written again from `service`
    if current == service:
        return
    for key in written:
        del table[key]
    if service is None:
        return
    if service.check_output is not None:
        raise BadInput('a check that must print a given line is written only as service = '
                       '"docker:NAME"')
    for key in ("stop", "start", "check"):
        command = getattr(service, key)
        table[key] = command if isinstance(command, str) else list(command)
    if service.check_timeout != CHECK_TIMEOUT_DEFAULT:
        table["check_timeout"] = service.check_timeout
    if service.cutover != "none":
        table["cutover"] = service.cutover


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
