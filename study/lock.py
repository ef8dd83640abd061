"""The lock a study's driver holds while it runs.

Whether a driver still lives decides what a RUNNING parent run means: a study in progress, or one whose
driver was killed outright (SIGKILL, a crash, a reboot) and that the next ``--resume`` or ``study.report``
must close. An ``fcntl`` lock answers that without guessing from process ids: the kernel releases it when the
process dies, however it dies. It lives beside the study's other state in the results folder, so it covers the
drivers that share that folder (one machine, or a shared file system with working ``flock``).
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

LOCKS_DIR = "locks"


class StudyRunning(RuntimeError):
    """Another driver holds the study's lock."""


class DriverLock:
    """``<results>/locks/<study>.lock``, holding ``HOST:PID`` of the driver that has it."""

    def __init__(self, results_dir: Path, study_name: str):
        self.path = Path(results_dir) / LOCKS_DIR / f"{study_name}.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise StudyRunning naming the driver that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StudyRunning(holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()}:{os.getpid()}".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> DriverLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
