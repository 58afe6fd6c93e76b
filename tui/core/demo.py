"""`servermove demo`: a real move on this machine, no SSH, no root, no setup.

It generates a data directory (about 200 MB in a few thousand files) in a temporary directory,
puts one server "demo" on the local target in a temporary inventory (the user's servers.toml is
never touched), starts its service (a small program that keeps writing into the data,
tui/core/demo_service.py), and opens the app on that server with a new path filled in. Pressing
Apply runs the real mover as a service move: live passes while the service writes, then the
stop, the final copy, the symlink, the start and the check, the first pass throttled to about
15 seconds; the screen shows its seconds of downtime. The service is stopped and everything
removed when the app ends.

This module makes the data; `tui.app.app.run_demo` opens the app on it.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tui.core.inventory import ServerEntry, ServiceConfig, add_server

DEMO_SERVER = "demo"
DEMO_SEED = 20240611
DEMO_COPY_SECONDS = 15
SMALL_FILES = 2400
SMALL_FILE_MAX = 64 * 1024
BIG_FILES = 6
BIG_FILE_SIZE = 20 * 1024 * 1024
FOLDERS = ("photos/2023", "photos/2024", "db/tables", "logs/archive", "uploads/avatars",
           "uploads/documents", "cache/thumbnails", "config")
DEMO_SERVICE = Path(__file__).with_name("demo_service.py")
# A second filesystem makes the move a real copy (a move within one filesystem is a rename).
OTHER_FILESYSTEMS = ("/dev/shm", os.environ.get("XDG_RUNTIME_DIR", ""))


@dataclass(frozen=True)
class DemoSetup:
    root: Path            # everything the demo made on the source side; removed at the end
    data_path: Path       # the demo server's data directory
    new_path: Path        # where the demo moves it
    destination_root: Path  # the temporary directory holding new_path; removed at the end
    inventory_path: Path
    bytes_total: int

    @property
    def bwlimit(self) -> str:
        """A rate (in the mover's binary K units) that makes the copy take DEMO_COPY_SECONDS."""
        return f"{max(1, self.bytes_total // DEMO_COPY_SECONDS // 1024)}K"


def generate_tree(root: Path, *, seed: int = DEMO_SEED, small_files: int = SMALL_FILES,
                  big_files: int = BIG_FILES, big_file_size: int = BIG_FILE_SIZE) -> int:
    """Fill `root` with reproducible pseudo-random files; returns the bytes written."""
    rng = random.Random(seed)
    written = 0
    for folder in FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for index in range(small_files):
        folder = FOLDERS[index % len(FOLDERS)]
        data = rng.randbytes(rng.randint(512, SMALL_FILE_MAX))
        (root / folder / f"item-{index:05d}.bin").write_bytes(data)
        written += len(data)
    for index in range(big_files):
        with open(root / "db/tables" / f"table-{index}.db", "wb") as out:
            for _ in range(big_file_size // (1 << 20)):
                out.write(rng.randbytes(1 << 20))
        written += big_file_size
    return written


def _destination_parent(source: Path) -> Path:
    """A directory on another filesystem than `source` with room for it, if there is one."""
    source_device = source.stat().st_dev
    for candidate in OTHER_FILESYSTEMS:
        if not candidate or not os.path.isdir(candidate) or not os.access(candidate, os.W_OK):
            continue
        if os.stat(candidate).st_dev != source_device and (
                shutil.disk_usage(candidate).free > 2 * SMALL_FILES * SMALL_FILE_MAX
                + 2 * BIG_FILES * BIG_FILE_SIZE):
            return Path(candidate)
    return source.parent


def demo_service(data_path: Path, pidfile: Path) -> ServiceConfig:
    """The demo server's service: a small program writing into its data while it runs
    (tui/core/demo_service.py), stopped, started and checked by commands, moved by symlink."""
    def command(*args: Path | str) -> tuple[str, ...]:
        return (sys.executable, str(DEMO_SERVICE), *map(str, args))
    return ServiceConfig(stop=command("stop", pidfile), start=command("start", data_path, pidfile),
                         check=command("check", pidfile), check_timeout=30, cutover="symlink")


@contextmanager
def demo_setup(**generate_options: int) -> Iterator[DemoSetup]:
    """Make the demo's data, destination and inventory; remove all of it afterwards."""
    root = Path(tempfile.mkdtemp(prefix="servermove-demo-"))
    destination_root: Path | None = None
    try:
        data_path = root / "srv" / "app-data"
        data_path.mkdir(parents=True)
        bytes_total = generate_tree(data_path, **generate_options)
        destination_root = Path(tempfile.mkdtemp(prefix="servermove-demo-dst-",
                                                 dir=_destination_parent(root)))
        inventory_path = root / "servers.toml"
        pidfile = root / "service.pid"
        service = demo_service(data_path, pidfile)
        add_server(ServerEntry(DEMO_SERVER, "local", str(data_path), service=service),
                   inventory_path)
        subprocess.run(service.start, check=True, timeout=30)
        yield DemoSetup(root, data_path, destination_root / "app-data", destination_root,
                        inventory_path, bytes_total)
    finally:
        # The service first: it must not write into what is being removed.
        subprocess.run(demo_service(root, root / "service.pid").stop, capture_output=True,
                       timeout=30)
        shutil.rmtree(root, ignore_errors=True)
        if destination_root is not None:
            shutil.rmtree(destination_root, ignore_errors=True)
