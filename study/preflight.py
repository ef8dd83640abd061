"""Checks run before Ray starts, each failing with one line (SpaceError -> ``error: ...``, exit code 2).

What a trial would otherwise find out minutes into a study, after a cluster start-up and pre-training: a
metric no cycle reports, a device or GPU count the machine lacks, an unreadable pretrained file, an
unreachable tracking server (or one that is not MLflow) or Ray address, a Ray token missing, a results folder
that is not writable or already belongs to another study, an mlflow.db or optuna.db that is damaged or another
program's, and a ``--resume`` whose config differs from the study's first start.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path
from urllib.parse import urlparse

from reidmodel.config import ExperimentConfig, apply_overrides
from reidmodel.cycle_metrics import cycle_metric_names
from reidmodel.messages import suggest
from study.paths import OPTUNA_DB, PARTIAL_SUFFIX, StudyPaths
from study.spaces import Resources, SpaceError, StudySpace

TIMEOUT_S = 5.0  # per network probe; a tracking URI or address check fails within about 10 s
TOKEN_FIX = ("run the driver with RAY_AUTH_MODE=token and the cluster's token in ~/.ray/auth_token, RAY_AUTH_TOKEN_PATH "
             "or RAY_AUTH_TOKEN (README: On a Ray cluster)")
# The tables each library creates first in its SQLite store: a file without them is not (or no longer) its store.
STORE_TABLES = {"MLflow": ("alembic_version", "experiments", "runs"), "Optuna": ("alembic_version", "studies", "trials")}
MLFLOW_PROBE = "/api/2.0/mlflow/experiments/search?max_results=1"  # an MLflow server answers {"experiments": [...]}
# Asks the GCS for the cluster id as ray.init would, with Ray's own token handling, in a child process so that a
# port that is not a GCS costs seconds (Ray's client otherwise retries for about a minute).
_GCS_PROBE = """
import sys
from ray._raylet import GcsClient
if sys.argv[2] == "auto":  # ray.init turns token auth on by itself only for an address it found
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available)
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
try:
    GcsClient(address=sys.argv[1])
except Exception as exc:
    print("probe:", type(exc).__name__)
else:
    print("probe: ok")
"""


def check_before_ray(space: StudySpace, args: argparse.Namespace, paths: StudyPaths) -> None:
    """Everything about a study that can be known before Ray starts; raises SpaceError with one line."""
    check_metrics(space)
    check_results_folder(paths, resume=args.resume)
    check_free_space(paths.results_dir, args.min_free_mb)
    configs = candidate_configs(space)
    gpus_flag = "--gpus-per-trial" if args.gpus_per_trial is not None else f"{space.path}: resources.gpus_per_trial"
    check_devices(configs, space.resources, gpus_flag, local=args.address is None)
    check_pretrained(configs)
    check_tracking_uri(paths.tracking_uri)
    if paths.optuna_storage is not None:
        check_store(paths.results_dir / OPTUNA_DB, "Optuna", "pass another --results-dir")
    if args.address is not None:
        check_address(args.address)
    if args.resume:
        check_resume(space, paths)


def check_metrics(space: StudySpace) -> None:
    """The search and scheduler metrics must be names a cycle reports, or the study fails after pre-training."""
    reported = cycle_metric_names()
    for metric in space.search.metrics:
        if metric not in reported:
            hint = suggest(metric, reported, otherwise=f"use one of {', '.join(reported)}")
            raise SpaceError(f"{space.path}: search metric {metric!r} is not a metric a cycle reports: {hint}")


def check_results_folder(paths: StudyPaths, resume: bool) -> None:
    """Writable, and owned: a study writes only its own results folder, so a new study may not take a name
    that already has one (committed or not)."""
    results_dir, name = paths.results_dir, paths.name
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=results_dir, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise SpaceError(f"--results-dir {results_dir} is not writable ({exc.strerror or exc}): "
                         "pass a folder you can write") from exc
    if paths.local_storage:
        _check_creatable(Path(paths.storage), "--storage")
    if resume:
        return
    for folder in (results_dir / name, results_dir / f"{name}{PARTIAL_SUFFIX}"):
        if folder.exists():
            raise SpaceError(f"{folder} already holds the results of a study named {name!r}: pass --resume to "
                             "continue that study, --name NEW to start another, or move the folder away to redo it")


def check_free_space(results_dir: Path, min_free_mb: float) -> None:
    """A study that fills its disk ends with SQLite's 'database or disk is full' half-way: refuse it up front."""
    free_mb = shutil.disk_usage(results_dir).free / 2**20
    if free_mb < min_free_mb:
        raise SpaceError(f"--results-dir {results_dir} has {free_mb:.0f} MB free, and a study needs at least "
                         f"{min_free_mb:g} MB (checkpoints, caches, the MLflow store): free space there, pass another "
                         "--results-dir, or lower --min-free-mb")


def candidate_configs(space: StudySpace) -> list[ExperimentConfig]:
    """The base config, each grid variant, and each categorical value of a search: the configs whose device
    and pretrained weights a trial may use."""
    base = space.base_config()
    configs = [base] + [apply_overrides(base, variant.set) for variant in space.variants]
    for key, dist in space.params.items():
        if dist.type in ("choice", "grid"):
            configs += [apply_overrides(base, {key: value}) for value in dist.values]
    return configs


def check_devices(configs: list[ExperimentConfig], resources: Resources, gpus_flag: str, local: bool) -> None:
    """GPUs asked for must exist (a local run; a cluster's are checked once connected), and runtime.device must
    be one a trial can see: Ray hides every GPU from a trial that reserves none, and numbers its own from 0."""
    gpus = resources.gpus_per_trial
    devices = sorted({config.runtime.device for config in configs if config.runtime.device.startswith("cuda")})
    visible = None  # GPUs of this machine, counted for a local run only
    if local and (gpus > 0 or devices):
        import torch  # only here: seconds of import that a CPU study does not need to fail fast

        visible = torch.cuda.device_count()
    if visible is not None and gpus > 0 and visible < math.ceil(gpus):
        raise SpaceError(f"{gpus_flag} {gpus:g} but this machine has {visible} GPU(s) visible to torch: pass "
                         "--gpus-per-trial 0 to train on the CPU, or --address a Ray cluster with GPUs")
    for device in devices:
        if gpus == 0:
            raise SpaceError(f"runtime.device={device} but trials reserve no GPU ({gpus_flag} 0) and Ray hides the "
                             "GPUs from them: pass --gpus-per-trial 1 (or a fraction), or set runtime.device=auto")
        if visible == 0:
            raise SpaceError(f"runtime.device={device} but no CUDA device is visible here: set runtime.device=cpu "
                             "or auto")
        index = int(device.partition(":")[2] or 0)
        if index >= math.ceil(gpus):
            raise SpaceError(f"runtime.device={device} but each trial sees {math.ceil(gpus)} GPU(s), numbered from "
                             "0 by Ray: use runtime.device=cuda")


def check_pretrained(configs: list[ExperimentConfig]) -> None:
    """Load every distinct pretrained state dict once (weights only), as the trials will."""
    for backbone, pretrained in sorted({(c.model.backbone, c.model.pretrained) for c in configs}):
        if pretrained == "none":
            continue
        from reidmodel.model import build_backbone

        try:
            build_backbone(backbone, pretrained)
        except (ValueError, RuntimeError) as exc:
            raise SpaceError(f"model.pretrained={pretrained}: {' '.join(str(exc).split())}") from exc


def check_tracking_uri(uri: str) -> None:
    """An MLflow server answers as one; a SQLite store's folder can be written and its file, when there is one,
    is MLflow's; a file store's folder can be written."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        check_mlflow_server(uri)
    elif parsed.scheme == "sqlite":
        database = uri[len("sqlite:///"):]
        if database and database != ":memory:":
            _check_creatable(Path(database).expanduser().parent, f"--tracking-uri {uri}")
            check_store(Path(database).expanduser(), "MLflow", "pass another --results-dir or --tracking-uri")
    elif parsed.scheme in ("", "file"):
        _check_creatable(Path(parsed.path).expanduser(), f"--tracking-uri {uri}")
    elif parsed.hostname and parsed.port:
        _check_tcp(parsed.hostname, parsed.port, f"--tracking-uri {uri}")


def check_mlflow_server(uri: str) -> None:
    """The server answers /health, and its REST API answers as MLflow's does (any web server answers 200 on some
    /health page). 401 or 403: a server that wants credentials, which MLflow reads from its environment."""
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=TIMEOUT_S).close()
        with urllib.request.urlopen(f"{uri.rstrip('/')}{MLFLOW_PROBE}", timeout=TIMEOUT_S) as answer:
            body = json.loads(answer.read(1_000_000))
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return
        problem = f"GET {urlparse(exc.url).path}: HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        reason = getattr(reason, "strerror", None) or reason
        raise SpaceError(f"--tracking-uri {uri} is not reachable ({reason}; waited up to {TIMEOUT_S:g} s): start "
                         "the MLflow server or pass a --tracking-uri the driver can reach") from exc
    except ValueError:  # not JSON (an HTML page, say), or not text
        problem = f"GET {MLFLOW_PROBE.partition('?')[0]} is not JSON"
    else:
        if isinstance(body, dict) and set(body) <= {"experiments", "next_page_token"}:
            return
        problem = f"GET {MLFLOW_PROBE.partition('?')[0]} is JSON without MLflow's experiments"
    raise SpaceError(f"--tracking-uri {uri} answers, but not as an MLflow server ({problem}): pass the URI "
                     "`mlflow server` listens on")


def check_store(database: Path, library: str, fix: str) -> None:
    """A SQLite file that ``library`` will open must be a whole database holding its tables, or not exist yet
    (the library creates it): else the study fails after Ray starts, in a SQLAlchemy traceback. Opened
    read-only, so nothing is written into a file that is not the library's."""
    problem = _store_problem(database, STORE_TABLES[library])
    if problem:
        raise SpaceError(f"{database} is not a usable {library} database ({problem}): move it aside, or {fix}")


def _store_problem(database: Path, needed: tuple[str, ...]) -> str | None:
    if database.is_dir():
        return "it is a folder"
    try:
        with closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        return f"SQLite cannot read it: {exc}" if database.exists() else None
    if verdict != "ok":
        return f"SQLite's quick_check: {' '.join(verdict.split())[:200]}"
    missing = [table for table in needed if table not in tables]
    if tables and missing:  # no tables at all: an empty file the library fills
        return f"it has no table {', '.join(missing)}; its tables: {', '.join(sorted(tables)[:5])}"
    return None


def check_address(address: str) -> None:
    """The Ray cluster answers within seconds and accepts this driver's token."""
    if address.startswith("ray://"):
        parsed = urlparse(address)
        if not parsed.hostname or not parsed.port:
            raise SpaceError(f"--address {address} is not ray://HOST:PORT")
        _check_tcp(parsed.hostname, parsed.port, f"--address {address}")
        return
    target = _resolve_address(address)
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise SpaceError(f"--address {address} is not HOST:PORT, ray://HOST:PORT or auto")
    _check_tcp(host, int(port), f"--address {address}" + (f" ({target})" if target != address else ""))
    env = {**os.environ, "RAY_py_gcs_connect_timeout_s": "3", "RAY_gcs_rpc_server_connect_timeout_s": "3"}
    try:
        probe = subprocess.run([sys.executable, "-c", _GCS_PROBE, target, address], env=env, capture_output=True,
                               text=True, timeout=30)
    except subprocess.TimeoutExpired:
        probe = None
    verdict = probe.stdout.strip().rpartition("probe: ")[2] if probe is not None else "timeout"
    if verdict == "AuthenticationError":
        raise SpaceError(f"--address {address}: the Ray cluster at {target} refused this driver's token (missing "
                         f"or wrong): {TOKEN_FIX}")
    if verdict in ("RpcError", "timeout"):
        raise SpaceError(f"--address {address}: {target} accepts connections but no Ray GCS answers there: pass the "
                         "address `ray start --head` printed (HOST:6379 by default)")


def check_resume(space: StudySpace, paths: StudyPaths) -> None:
    """A resumed study runs its unfinished trials with the config they started with (Tune restores it), so a
    changed --space, --set, --directions or --data-root would be silently ignored: refuse it, naming the keys.
    The whole space the first start logged (search_space.json) is compared, read back through the schema so that
    a default added since is no change; where and with how much it runs (resources, the file's path) may change."""
    from mlflow import MlflowClient

    from reidmodel.config import flatten
    from study.tracking import latest_parent, logged_space

    client = MlflowClient(paths.tracking_uri)
    experiment = client.get_experiment_by_name(paths.name)
    parent = experiment and latest_parent(client, experiment.experiment_id)
    logged = parent and logged_space(client, parent)
    if not logged:  # a study started before its space was logged: nothing to compare with
        return
    try:
        before = flatten(StudySpace.model_validate(logged).run_identity())
    except ValueError:  # a space of an older schema: compared as logged
        before = flatten({k: v for k, v in logged.items() if k not in ("resources", "path")})
    now = flatten(space.run_identity())
    changed = [f"{key} {before.get(key, '(unset)')} -> {now.get(key, '(unset)')}"
               for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)]
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise SpaceError(f"--resume: the study's config changed since its first start ({'; '.join(changed[:3])}{more}): "
                         "resume with the first start's --space, --set, --directions and --data-root, or start a "
                         "new study with --name NEW")


def _resolve_address(address: str) -> str:
    """``auto`` -> the HOST:PORT it stands for: RAY_ADDRESS, else Ray's record of the last ``ray start`` (or, as
    ray.init does, a Ray of this machine found running)."""
    if address != "auto":
        return address
    from ray._common.utils import get_ray_address_file
    from ray._private.services import canonicalize_bootstrap_address

    try:
        target = canonicalize_bootstrap_address("auto")
    except ConnectionError:
        target = None
    if target is None:
        raise SpaceError(f"--address auto: no running Ray cluster found (RAY_ADDRESS is unset and "
                         f"{get_ray_address_file(None)} names none): start one with `ray start --head`, pass "
                         "HOST:PORT, or drop --address for a local Ray")
    return target


def _check_tcp(host: str, port: int, what: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_S):
            pass
    except OSError as exc:
        raise SpaceError(f"{what}: nothing answers at {host}:{port} ({exc.strerror or exc}; waited up to "
                         f"{TIMEOUT_S:g} s): start it, or fix the host and port") from exc


def _check_creatable(folder: Path, flag: str) -> None:
    """A file can be created in the folder, or in its nearest existing parent when it is still to be made
    (permission bits say little to root: /proc and read-only mounts refuse only an actual write)."""
    existing = folder.expanduser().resolve()
    while not existing.exists():
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise SpaceError(f"{flag}: {folder} cannot be written ({exc.strerror or exc}): pass a folder you can "
                         "write") from exc
