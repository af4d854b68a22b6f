"""Why the host limiter calls fcntl() through ctypes.PyDLL.

    .venv/bin/python bench/gil.py

Four threads each do ~10 us of Python work, then lock and unlock one byte with
F_OFD_SETLK (which never blocks). ``fcntl.fcntl`` releases the GIL around the
call, and with the other threads runnable, getting it back is what costs;
a PyDLL call keeps the GIL through the ~1 us syscall.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
import tempfile
import threading
import time

FLOCK = struct.Struct("hhxxxxqqixxxx")
libc = ctypes.PyDLL(None, use_errno=True)
keep_gil = libc.fcntl
keep_gil.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p]
keep_gil.restype = ctypes.c_int
F_OFD_SETLK = fcntl.F_OFD_SETLK  # type: ignore[attr-defined]


def work(mode: str, n: int, slot: int, directory: str) -> None:
    fd = os.open(f"{directory}/f", os.O_RDWR | os.O_CREAT)
    lock = FLOCK.pack(fcntl.F_WRLCK, 0, slot, 1, 0)
    unlock = FLOCK.pack(fcntl.F_UNLCK, 0, slot, 1, 0)
    x = 0
    for _ in range(n):
        for _ in range(300):
            x += 1
        if mode == "fcntl.fcntl":
            fcntl.fcntl(fd, F_OFD_SETLK, lock)
            fcntl.fcntl(fd, F_OFD_SETLK, unlock)
        elif mode == "PyDLL":
            keep_gil(fd, F_OFD_SETLK, lock)
            keep_gil(fd, F_OFD_SETLK, unlock)
    os.close(fd)


def main() -> None:
    directory = tempfile.mkdtemp()
    for mode in ["no lock", "fcntl.fcntl", "PyDLL"] * 2:
        threads = [
            threading.Thread(target=work, args=(mode, 20000, i, directory)) for i in range(4)
        ]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"{mode:12} {(time.perf_counter() - started) / 80000 * 1e6:.2f} us per iteration")


if __name__ == "__main__":
    main()
