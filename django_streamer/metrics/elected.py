"""A thread per process that works only while its process is the host's elected one.

The django-prometheus mirror (:mod:`.mirror`) and the fleet publisher
(:mod:`.fleet`) both need one process per host to do a job every second. Each
process starts the thread with its first stream; the thread takes a lock file
in the metrics directory (``flock``, held until the process exits, then taken
by another process of the host within a tick) and does the job only while it
holds it. A failing tick is logged once, and once again when it recovers.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading

from ..conf import conf
from ..core.statedir import ensure_private_dir, open_private_file
from .store import get_store

__all__ = ["ElectedThread", "elect", "open_election_lock"]

log = logging.getLogger("django_streamer")


def open_election_lock(name: str) -> int:
    """The lock file ``name`` in the metrics directory: private, never followed
    through a symlink, and close-on-exec so a spawned program cannot keep this
    process elected."""
    store = get_store()
    ensure_private_dir(store.directory, owned_from=store.owned_from)
    return open_private_file(os.path.join(store.directory, name))


def elect(lock: int) -> bool:
    """Whether this process holds ``lock`` (and so is the host's elected one) now."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


class ElectedThread:
    """Subclasses name the thread, the lock file and the job; see the module doc.

    ``target()`` says what to work on (read at every tick, so settings may
    change), or ``None`` while the job is off; ``tick(target)`` does the job.
    Both are per process: a forked worker checks (and starts) again.
    """

    thread_name = "django-streamer"
    lock_name = ".elected.lock"
    interval = 1.0
    what = "the elected thread"  # for the log

    def __init__(self) -> None:
        # The settings generation (conf.generation) at which this process last
        # looked if the job is on, -1 for never: not a pid, as os.getpid() is a
        # system call per stream (glibc no longer caches it), and a setting
        # changed since (e.g. STREAMER_REDIS_URL set) is looked at again.
        # Public: the stream recorder compares it itself, to spare two calls.
        self.checked = -1
        self._started_pid = 0  # the process that runs the thread
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        os.register_at_fork(after_in_child=self._forget_check)

    def _forget_check(self) -> None:
        self.checked = -1

    def target(self) -> str | None:
        raise NotImplementedError

    def tick(self, target: str) -> None:
        raise NotImplementedError

    def start_once(self) -> None:
        """Per stream: one comparison once this process has looked."""
        if self.checked != conf.generation:
            self.ensure()

    def ensure(self) -> None:
        """Start the thread in this process, once, when the job is on."""
        pid = os.getpid()
        self.checked = conf.generation
        if self.target() is None:
            return
        with self._lock:
            if self._started_pid == pid:
                return
            self._started_pid = pid
            thread = self._thread = threading.Thread(
                target=self._loop, args=(self._stop,), name=self.thread_name, daemon=True
            )
        thread.start()

    def reset(self) -> None:
        """Stop this process's thread; the next stream starts another.

        Waits (a tick at most) for the thread to end, so two never run at once.
        """
        with self._lock:
            self._stop.set()
            self._stop = threading.Event()
            self.checked, self._started_pid = -1, 0
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.interval + 1.0)

    def _loop(self, stop: threading.Event) -> None:
        lock, leader, failing = -1, False, False
        while not stop.wait(self.interval):
            target = self.target()
            if target is None:
                continue
            try:
                # Opened here, not before the loop: the thread starts with the
                # first stream, before that stream has made the store directory.
                if lock < 0:
                    lock = open_election_lock(self.lock_name)
                if not leader:
                    leader = elect(lock)
                    if not leader:
                        continue
                self.tick(target)
                if failing:
                    log.warning("django-streamer: %s works again", self.what)
                failing = False
            except Exception as exc:  # a bad tick must not end the thread; logged once
                if not failing:
                    log.warning("django-streamer: %s failed: %s", self.what, exc)
                failing = True
        if lock >= 0:
            os.close(lock)  # gives up the election
