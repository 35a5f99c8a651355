"""One worker per job: an OS lock on a job folder, so that any number of sweep processes can share it.

Two `make sweep` into one `hydra.sweep.dir`, or two SLURM arrays after a requeue, each try every job;
the first to lock a job trains it and the others pass it over. The lock is `flock` on `<job>/.lock`,
which the kernel releases when its holder dies, however it dies, so a killed sweep never leaves a job
locked. On a shared file system (NFS v4, Lustre, GPFS) flock works across machines.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

LOCK_FILE = ".lock"


class JobLock:
    """`with JobLock(folder) as lock:` tries once, without waiting; `lock.held` says whether it got it."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_FILE
        self.held = False
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode())
        self._fd, self.held = fd, True
        return True

    def holder(self) -> str:
        """Who holds the lock (pid@host), as far as its file says."""
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd, self.held = None, False

    def __enter__(self) -> JobLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(folder: str | Path) -> bool:
    """Whether some process holds `folder`'s job lock now (for the summary: running, not killed)."""
    path = Path(folder) / LOCK_FILE
    if not path.is_file():
        return False
    lock = JobLock(folder)
    if lock.acquire():
        lock.release()
        return False
    return True
