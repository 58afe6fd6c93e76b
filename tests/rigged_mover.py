"""remote/mover.py with one of its choices pinned, or a fault staged, for the tests:

    python3 tests/rigged_mover.py WAY[,WAY...] move [...] SRC DST

- `inline`, `threads`: the source is removed inline, or by the Remover's worker threads. The
  mover picks threads only once unlinks prove slow (Remover.SLOW_UNLINK_SECONDS), which depends
  on the disk; pinned, both paths run on any machine.
- `unmapped`: the verifier reads big copies back instead of mapping them, as it does on a
  filesystem that cannot map files.
- `corrupt-copy`: a disk that returns bad data: one byte of each chunk of a big file's copy is
  flipped after the chunk is written and before the verifier hears of it.
- `slow-clean`: the source is removed a file every 3 ms, so that a test's writer can change the
  files still there while the move cleans.
- `slower-clean`: each source file is removed a tenth of a second after its check, so that a
  test can catch the move in its cleaning phase (with `inline`: one file at a time).
- `eio-after-rename`: the destination disk reports a write-back error (EIO) in the flush after
  the copy was renamed into place.
- `all-racy`: a live pass of a service move trusts no file (every ctime counts as too close to
  the pass's start), as if each were written in the clock tick of its stat.
- `stall-after-rename`: the move sleeps a minute right after the copy was renamed into place,
  so that a test can kill it there.
- `write-after-rename`: a writer still at work: once the copy is in place, a byte is appended
  to SRC's `d0/file 0.bin` and a file `d1/late.bin` is added (the trees of cli_support's
  make_tree).
"""

import importlib.util
import os
import sys
import time

MOVER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "remote",
                     "mover.py")


def corrupt_each_chunk(mover) -> None:
    copy_range = mover.Copier.copy_range

    def rigged(self, rel, fin, fout, offset, end, on_chunk=None):
        if on_chunk is None:
            return copy_range(self, rel, fin, fout, offset, end)

        def corrupted(start, stop):
            byte = os.pread(fout, 1, start)[0]
            os.pwrite(fout, bytes([byte ^ 0xFF]), start)
            on_chunk(start, stop)

        return copy_range(self, rel, fin, fout, offset, end, corrupted)

    mover.Copier.copy_range = rigged


def slow_clean(mover) -> None:
    add = mover.Remover.add

    def rigged(self, *args):
        time.sleep(0.003)
        return add(self, *args)

    mover.Remover.add = rigged


def slower_cleaning(mover) -> None:
    remove = mover.Cleaner.remove

    def rigged(self, func, path):
        if func is os.unlink:
            time.sleep(0.1)
        return remove(self, func, path)

    remove_inline = mover.Remover.remove_inline

    def rigged_inline(self, *args):  # unlinks by name, without Cleaner.remove unless refused
        time.sleep(0.1)
        return remove_inline(self, *args)

    mover.Cleaner.remove = rigged
    mover.Remover.remove_inline = rigged_inline


def after_rename(mover, fault) -> None:
    """Run `fault(mover)` at every flush once the copy is at DST (the Publisher's `publish`)."""
    publish, flush = mover.Publisher.publish, mover.flush_filesystem
    published = []

    def rigged_publish(self):
        publish(self)
        published.append(True)

    def rigged_flush(fd):
        if published:
            fault(mover)
        return flush(fd)

    mover.Publisher.publish = rigged_publish
    mover.flush_filesystem = rigged_flush


def write_once(src: str):
    """A fault that writes to the source the first time it runs."""
    written = []

    def fault(_mover) -> None:
        if written:
            return
        written.append(True)
        with open(os.path.join(src, "d0", "file 0.bin"), "ab") as handle:
            handle.write(b"!")
        with open(os.path.join(src, "d1", "late.bin"), "wb") as handle:
            handle.write(b"written after the copy was checked")

    return fault


def eio(mover) -> None:
    raise OSError(mover.errno.EIO, os.strerror(mover.errno.EIO))


def main() -> int:
    spec = importlib.util.spec_from_file_location("servermove_mover", MOVER)
    assert spec is not None and spec.loader is not None
    mover = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mover)
    ways, argv = sys.argv[1].split(","), sys.argv[2:]
    for way in ways:
        if way in ("inline", "threads"):
            mover.Remover.WINDOW = 1
            mover.Remover.SLOW_UNLINK_SECONDS = {"threads": -1.0, "inline": float("inf")}[way]
        elif way == "unmapped":
            mover.Verifier.MAP_COPIES = False
        elif way == "corrupt-copy":
            corrupt_each_chunk(mover)
        elif way == "slow-clean":
            slow_clean(mover)
        elif way == "slower-clean":
            slower_cleaning(mover)
        elif way == "eio-after-rename":
            after_rename(mover, eio)
        elif way == "all-racy":
            mover.RACY_MARGIN_NS = 10 ** 18
        elif way == "write-after-rename":
            after_rename(mover, write_once(argv[-2]))
        elif way == "stall-after-rename":
            after_rename(mover, lambda _mover: time.sleep(60))
        else:
            raise SystemExit(f"rigged_mover.py: unknown way {way!r}")
    return mover.main(argv)


if __name__ == "__main__":
    sys.exit(main())
