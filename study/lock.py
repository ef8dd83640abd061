"""The locks a study's driver takes in its results folder.

Whether a driver still lives decides what a RUNNING parent run means: a study in progress, or one whose driver
was killed outright (SIGKILL, a crash, a reboot) and that the next ``--resume`` or ``study.report`` must close.
An ``fcntl`` lock answers that without guessing from process ids: the kernel releases it when the process dies,
however it dies. The locks live in the results folder, so they cover the drivers that share that folder (one
machine, or a shared file system with working ``flock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from study.paths import LOCKS_DIR

RESERVE_BYTES = 4 << 20  # room to close the study's runs and say why once the disk is full


class StudyRunning(RuntimeError):
    """Another driver holds the study's lock."""


class DriverLock:
    """``<results>/locks/<study>.lock``, holding ``HOST:PID`` of the driver that has it, and beside it a reserve
    file the driver deletes when the disk fills up, so that closing its MLflow runs still finds room."""

    def __init__(self, results_dir: Path, study_name: str):
        self.path = Path(results_dir) / LOCKS_DIR / f"{study_name}.lock"
        self.reserve = self.path.with_suffix(".reserve")
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

    def hold_reserve(self) -> None:
        with contextlib.suppress(OSError), open(self.reserve, "wb") as handle:
            handle.write(b"\0" * RESERVE_BYTES)

    def free_reserve(self) -> None:
        self.reserve.unlink(missing_ok=True)

    def release(self) -> None:
        if self._fd is not None:
            self.free_reserve()
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> DriverLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def store_lock(results_dir: Path) -> Iterator[None]:
    """Serialises the creation of the results folder's SQLite stores: two first starts at once would otherwise
    race through MLflow's and Optuna's schema creation, and one dies on 'table ... already exists'."""
    path = Path(results_dir) / LOCKS_DIR / "stores.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
