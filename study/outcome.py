"""What a study's end means, so that an interrupted or failed study never passes for a finished one.

Exit code, MLflow status and report folder follow from one count of the trials:

| outcome | exit code | parent run | report |
|---|---|---|---|
| every trial finished (or stopped early by a scheduler) | 0 | FINISHED | ``results/<name>/`` |
| some trial failed | 1 | FAILED | ``results/<name>.partial/`` |
| interrupted (SIGINT/SIGTERM): trials left unfinished | 130 | KILLED | ``results/<name>.partial/`` |

study.publish writes the report into the folder the parent run's status names.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from reidmodel.messages import one_line as message_line

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130  # the shell's code for SIGINT
INTERRUPTED = "interrupted"  # stop_reason of a trial run the study's end left unfinished

# Errors that come back unchanged when the same trial runs again: bad config or data, a programming error, a
# diverged training. Anything else (OSError, CUDA and Ray errors, a killed process) may pass on a retry.
DETERMINISTIC_ERRORS = (ValueError, TypeError, LookupError, AttributeError, ArithmeticError, NotImplementedError)


def one_line(exc: BaseException) -> str:
    """The exception's type and message on one line, as a trial's ``error`` tag shows it."""
    return f"{type(exc).__name__}: {message_line(exc)}"


def is_deterministic(exc: BaseException) -> bool:
    return isinstance(exc, DETERMINISTIC_ERRORS)


DISK_FULL_MESSAGES = ("database or disk is full", "No space left on device")


def disk_full(exc: BaseException) -> str | None:
    """The message of a full disk anywhere in the exception's chain (an OSError ENOSPC, SQLite's 'database or disk
    is full', however wrapped by MLflow or Ray), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return message_line(exc)
        # MLflow and Ray wrap it: the line that says so, out of a chained message or a remote traceback.
        said = [line.strip() for line in str(exc).splitlines() if any(m in line for m in DISK_FULL_MESSAGES)]
        if said:
            return said[-1][:200]
        exc = exc.__cause__ or exc.__context__
    return None


@dataclass(frozen=True)
class StudyOutcome:
    expected: int
    finished: int  # ran to its end, or was stopped early by a scheduler or stopper
    failed: int

    @classmethod
    def of(cls, space, trial_runs: list) -> StudyOutcome:
        """Counted from the study's trial runs once its end closed them all (study.tracking): FINISHED, or KILLED
        early by the scheduler or a stopper, is finished; KILLED as ``interrupted`` (Ctrl-C, SIGTERM, a dead
        driver) is not. Trials not created yet (a search cut short) count as unfinished."""
        expected = len(space.trials()) if space.kind == "grid" else space.search.num_samples
        statuses = [(run.info.status, run.data.tags.get("stop_reason")) for run in trial_runs]
        finished = sum(status == "FINISHED" or (status == "KILLED" and reason not in (None, INTERRUPTED))
                       for status, reason in statuses)
        failed = sum(status == "FAILED" for status, _ in statuses)
        return cls(max(expected, len(statuses)), finished, failed)

    @property
    def unfinished(self) -> int:
        return self.expected - self.finished - self.failed

    @property
    def status(self) -> str:
        """The parent run's MLflow status."""
        return "KILLED" if self.unfinished else "FAILED" if self.failed else "FINISHED"

    @property
    def exit_code(self) -> int:
        return EXIT_INTERRUPTED if self.unfinished else EXIT_FAILED if self.failed else 0

    def summary(self, name: str) -> str | None:
        """One line for stderr when the study did not finish, naming what to do next."""
        if self.unfinished:
            return (f"study {name!r} interrupted: {self.unfinished} of {self.expected} trials unfinished; "
                    "continue it with the same command and --resume")
        if self.failed:
            return (f"study {name!r} finished with {self.failed} failed trial(s) of {self.expected}: see their "
                    "error tag in MLflow; after fixing the cause, --resume runs them again")
        return None
