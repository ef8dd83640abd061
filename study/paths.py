"""Where one study's files live, resolved once from the CLI and passed to study.run and study.preflight.

Kept free of MLflow and Ray imports (seconds each), so that bad input is still refused in about a second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RAY_DIR = "ray"
CACHE_DIR = "cache/pretrain"
MLFLOW_DB = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
OPTUNA_DB = "optuna.db"
LOCKS_DIR = "locks"
CONFIRM_SPACES_DIR = "spaces"  # the spaces study.confirm writes
NOTE = "mlflow.note.content"  # MLflow's description field: a study's description
PARTIAL_SUFFIX = ".partial"  # results/<name>.partial/: the report of a study that did not finish
# What the results folder keeps for itself beside one folder per study: a study may not take one of these names.
RESERVED_NAMES = (MLFLOW_DB, OPTUNA_DB, RAY_DIR, CACHE_DIR.split("/")[0], ARTIFACTS_DIR, LOCKS_DIR,
                  CONFIRM_SPACES_DIR)
MAX_NAME_LENGTH = 100  # keeps .<name>.partial.staging-<pid> and Ray's trial folders under 255 characters
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def name_problem(name: str, space_name: str) -> str | None:
    """Why ``name`` cannot name a study (its results folder, MLflow experiment, Ray experiment), or None. An empty
    one is an unset shell variable, say, that would silently run as the space's name."""
    if not name.strip():
        return f"is empty: pass a study name, or leave --name out to use the space's name ({space_name})"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long: use at most {MAX_NAME_LENGTH}"
    if not NAME_PATTERN.fullmatch(name):
        return "is not a folder name: use letters, digits, - and _, starting with a letter or digit"
    if name.lower() in RESERVED_NAMES:
        return (f"is a name the results folder keeps for itself ({', '.join(RESERVED_NAMES)}): pick another "
                "name")
    return None


def default_tracking_uri(results_dir: Path) -> str:
    """SQLite store beside the other results (MLflow 3 deprecated the plain file store)."""
    return f"sqlite:///{(Path(results_dir).expanduser().resolve() / MLFLOW_DB).as_posix()}"


@dataclass(frozen=True)
class StudyPaths:
    name: str
    results_dir: Path  # absolute: mlflow.db, optuna.db, caches and reports
    storage: str  # Ray Tune storage: an absolute folder or a URI
    tracking_uri: str
    optuna_storage: str | None  # a search's Optuna database; None for a grid
    cache_dir: Path  # the pre-trained source models the study's trials share

    @classmethod
    def resolve(cls, name: str, results_dir: str | Path, *, storage: str | None = None,
                tracking_uri: str | None = None, search: bool = False) -> StudyPaths:
        """The CLI's values, or their defaults under ``results_dir``; folders made absolute, nothing created."""
        results_dir = Path(results_dir).expanduser().resolve()
        storage = storage or str(results_dir / RAY_DIR)
        if "://" not in storage:
            storage = str(Path(storage).expanduser().resolve())
        return cls(
            name=name,
            results_dir=results_dir,
            storage=storage,
            tracking_uri=tracking_uri or default_tracking_uri(results_dir),
            optuna_storage=f"sqlite:///{(results_dir / OPTUNA_DB).as_posix()}" if search else None,
            cache_dir=results_dir / CACHE_DIR,
        )

    @property
    def local_storage(self) -> bool:
        """A folder (checked before Ray starts), not a URI such as s3://."""
        return "://" not in self.storage

    @property
    def experiment_path(self) -> str:
        """Ray Tune's folder of this study (tuner.pkl, one folder per trial)."""
        return f"{self.storage.rstrip('/')}/{self.name}"
