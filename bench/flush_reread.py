#!/usr/bin/env python3
"""What verifying against the disk instead of the page cache would cost (docs/performance.md).

    sudo python3 bench/flush_reread.py MOVER [ROUNDS] [--workdir /var/tmp]

Each round moves 4 x 256 MiB from a tmpfs to a directory on the disk under --workdir with MOVER,
then reads the copies back twice: from the page cache, and after dropping the copies' pages
with posix_fadvise(DONTNEED), as a verify from the disk would. Prints the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

SIZE = 256 << 20


def read_back(root: str, drop: bool) -> float:
    started = time.monotonic()
    for name in sorted(os.listdir(root)):
        fd = os.open(os.path.join(root, name), os.O_RDONLY)
        try:
            if drop:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            while os.read(fd, 4 << 20):
                pass
        finally:
            os.close(fd)
    return time.monotonic() - started


def one_round(mover: str, src_mount: str, disk: str, timings: dict[str, list[float]]) -> None:
    src = os.path.join(src_mount, "src")
    os.mkdir(src)
    for i in range(4):
        with open(os.path.join(src, f"f{i}"), "wb") as f:
            f.write(os.urandom(SIZE))
    dst = os.path.join(disk, "d")
    os.sync()
    started = time.monotonic()
    subprocess.run(["/usr/bin/python3", mover, "move", src, dst], check=True,
                   capture_output=True)
    timings["move"].append(time.monotonic() - started)
    timings["reread_cache"].append(read_back(dst, False))
    timings["reread_device"].append(read_back(dst, True))
    subprocess.run(["rm", "-rf", dst], check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mover")
    parser.add_argument("rounds", type=int, nargs="?", default=5)
    parser.add_argument("--workdir", default="/var/tmp")
    args = parser.parse_args()
    disk = tempfile.mkdtemp(dir=args.workdir, prefix="flush-reread-")
    src_mount = tempfile.mkdtemp(prefix="flush-reread-src-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200m", "bench", src_mount], check=True)
    timings: dict[str, list[float]] = {"move": [], "reread_cache": [], "reread_device": []}
    try:
        for _ in range(args.rounds):
            one_round(args.mover, src_mount, disk, timings)
    finally:
        subprocess.run(["umount", src_mount], check=False)
        os.rmdir(src_mount)
        subprocess.run(["rm", "-rf", disk], check=False)
    print(json.dumps({k: round(statistics.median(v), 3) for k, v in timings.items()}))


if __name__ == "__main__":
    main()
