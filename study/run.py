"""Run a study: ``python -m study.run --space ablation``.

Everything is validated before Ray starts (space, directions, --set keys, data root, and study.preflight's
checks), so a typo costs a second, not a cluster start-up. Finished trials live in Ray Tune's experiment folder
and in MLflow; ``--resume`` continues the unfinished ones without re-running the rest. Exit codes (see
study.outcome): 0 finished, 1 failed trials, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from reidmodel.config import PRESETS
from study.lock import DriverLock, StudyRunning, store_lock
from study.outcome import EXIT_FAILED, EXIT_INTERRUPTED, StudyOutcome, disk_full, one_line
from study.paths import StudyPaths, name_problem
from study.preflight import TOKEN_FIX, check_before_ray
from study.spaces import (
    Distribution,
    Resources,
    SpaceError,
    StudySpace,
    available_spaces,
    encode_choice,
    load_space,
    parse_set_args,
)
from study.trial import TrialConfigs, TrialContext

if TYPE_CHECKING:  # MLflow's import takes seconds: only once the study starts
    from study.tracking import StudyTracker


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m study.run", description=__doc__.splitlines()[0])
    parser.add_argument("--space", required=True,
                        help=f"a name in search_spaces/ ({', '.join(available_spaces())}) or a YAML path")
    parser.add_argument("--data-root", help="folder holding the datasets (default: the embedded synthetic benchmark)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="run the space on this reidmodel preset instead "
                                                                 "of its own (paper: ResNet-50, 256x128)")
    parser.add_argument("--directions", nargs="+", metavar="SRC->TGT", help="replace the space's directions")
    parser.add_argument("--name", help="study name (default: the space's name)")
    parser.add_argument("--seeds", type=int, metavar="N",
                        help="repeat every trial of a grid with seeds 0..N-1 (default: the space's seeds)")
    parser.add_argument("--resume", action="store_true", help="continue the study's unfinished and errored trials")
    parser.add_argument("--address", help="Ray cluster: HOST:PORT, auto or ray://HOST:PORT (default: a local Ray); "
                                           "a cluster with token auth needs RAY_AUTH_MODE=token and its token")
    parser.add_argument("--storage", help="Ray Tune storage: a folder or a URI (default: RESULTS_DIR/ray). --resume "
                                          "unpickles tuner.pkl and the searcher state from it: whoever can write "
                                          "there can run code as this driver, so keep it writable by you alone")
    parser.add_argument("--results-dir", default="results", help="root of mlflow.db, optuna.db, caches and reports")
    parser.add_argument("--cpus-per-trial", type=int, help="override the space's resources.cpus_per_trial")
    parser.add_argument("--gpus-per-trial", type=float, help="override the space's resources.gpus_per_trial")
    parser.add_argument("--max-concurrent", type=int, help="trials at once (default: CPUs // cpus per trial)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///RESULTS_DIR/mlflow.db)")
    parser.add_argument("--min-free-mb", type=float, default=200,
                        help="refuse to start with less free space in --results-dir (default: 200 MB)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="config overrides for every trial (variants and sampled params still win)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        space, paths = prepare(args)
        check_before_ray(space, args, paths)
        with DriverLock(paths.results_dir, paths.name) as lock:
            return run_study(space, args, paths, lock)
    except SpaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DiskFull as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except StudyRunning as holder:
        print(f"error: study {paths.name!r} is running now (driver {holder}): let it end or stop it (Ctrl-C) "
              "before starting or resuming it again", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C, which Ray Tune leaves to Python
        print(f"error: study {paths.name!r} interrupted: continue it with the same command and --resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED


def prepare(args: argparse.Namespace) -> tuple[StudySpace, StudyPaths]:
    """All checks that need neither Ray nor MLflow; raises SpaceError with one line."""
    if args.data_root is not None and not Path(args.data_root).expanduser().is_dir():
        raise SpaceError(f"--data-root {args.data_root} is not a folder: pass the folder holding the datasets")
    if args.seeds is not None and args.seeds < 1:
        raise SpaceError(f"--seeds {args.seeds} is out of range: pass the number of seeds, e.g. --seeds 3")
    seeds = list(range(args.seeds)) if args.seeds is not None else None
    space = load_space(args.space, args.data_root, args.directions, parse_set_args(args.overrides), seeds,
                       preset_name=args.preset)
    if args.data_root is not None:
        check_datasets(space, args.data_root)
    for flag, value in (("cpus_per_trial", args.cpus_per_trial), ("gpus_per_trial", args.gpus_per_trial),
                        ("max_concurrent", args.max_concurrent)):
        if value is not None:
            if value < (0 if flag == "gpus_per_trial" else 1):
                raise SpaceError(f"--{flag.replace('_', '-')} {value} is out of range: pass a positive number")
            setattr(space.resources, flag, value)
    return space, study_paths(args, space)


def check_datasets(space: StudySpace, data_root: str) -> None:
    """Every dataset the directions name loads from --data-root (layout, and queries that can be evaluated)."""
    from reidmodel.data import DatasetError, resolve_dataset

    for name in dict.fromkeys(name.strip() for direction in space.directions for name in direction.split("->")):
        try:
            resolve_dataset(name, data_root)
        except DatasetError as exc:
            raise SpaceError(f"--data-root: {exc}") from exc


def study_paths(args: argparse.Namespace, space: StudySpace) -> StudyPaths:
    """The study's name, checked, and its folders; a new study may not take an existing one's, a resumed one
    must exist (tuner.pkl is what Tuner.can_restore looks for: checked here without starting Ray)."""
    name = space.name if args.name is None else args.name
    problem = name_problem(name, space.name)
    if problem:
        raise SpaceError(f"--name {name[:120]!r} {problem}")
    paths = StudyPaths.resolve(name, args.results_dir, storage=args.storage, tracking_uri=args.tracking_uri,
                               search=space.kind == "search")
    experiment = Path(paths.experiment_path)
    if paths.local_storage and args.resume and not (experiment / "tuner.pkl").is_file():
        raise SpaceError(f"--resume: no study {name!r} under {paths.storage}: drop --resume to start it")
    if paths.local_storage and experiment.exists() and not args.resume:
        raise SpaceError(f"study {name!r} already exists under {paths.storage}: pass --resume to continue it or "
                         "--name NEW to start another")
    return paths


def run_study(space: StudySpace, args: argparse.Namespace, paths: StudyPaths, lock: DriverLock) -> int:
    import ray

    from study.tracking import StudyTracker

    # Ray's newer console output ignores a passed ProgressReporter; the CLIReporter shows the columns that matter.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # SIGTERM (a batch scheduler, kill) stops the study as Ctrl-C does: Ray Tune saves its state and returns.
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        try:
            connect_ray(args.address, space.resources)
        except SpaceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        lock.hold_reserve()
        with store_lock(paths.results_dir):  # the first start creates the SQLite stores: one driver at a time
            tracker = StudyTracker(paths.tracking_uri, paths.name)
            tracker.start(space.model_dump(mode="json"), _cli_dict(args), resume=args.resume)
            if paths.optuna_storage:  # a search's Optuna database, whose schema creation races the same way
                import optuna

                optuna.storages.RDBStorage(paths.optuna_storage)
        try:
            return fit_and_report(space, args, paths, tracker)
        except BaseException as exc:
            end_after(exc, tracker, lock, paths, args.min_free_mb)
    finally:
        ray.shutdown()


def fit_and_report(space: StudySpace, args: argparse.Namespace, paths: StudyPaths, tracker: StudyTracker) -> int:
    """Run the trials, close the runs with the study's outcome and publish its report; returns the exit code."""
    import ray

    resources = space.resources
    max_concurrent = resources.max_concurrent or max(
        1, int(ray.cluster_resources().get("CPU", 1)) // resources.cpus_per_trial)
    tuner = make_tuner(space, paths, parent_run_id=tracker.run_id, max_concurrent=max_concurrent, resume=args.resume)
    started = time.perf_counter()
    results = tuner.fit()
    ray.shutdown()  # its workers' last log lines reach the console now, not after the study's closing lines
    print_summary(space, results)
    tracker.close_unfinished_trials()
    outcome = StudyOutcome.of(space, tracker.trial_runs())
    tracker.finish(outcome.status, {"study_wall_seconds": time.perf_counter() - started, "trials": len(results)})
    return report_study(tracker, paths, outcome)


class DiskFull(RuntimeError):
    """The results folder's disk filled up: said in one line once Ray is down (its workers' last logs come first)."""


def end_after(exc: BaseException, tracker: StudyTracker, lock: DriverLock, paths: StudyPaths,
              min_free_mb: float) -> NoReturn:
    """A study that ends in an exception leaves no run RUNNING and none FINISHED. A full disk (the reserve freed
    to make room for closing the runs) becomes DiskFull; anything else is raised again."""
    full = disk_full(exc)
    if full:
        lock.free_reserve()
    try:
        tracker.close_unfinished_trials()
        tracker.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
    except Exception:
        if not full:
            raise
    if not full:
        raise exc
    raise DiskFull(f"the disk of --results-dir {paths.results_dir} is full ({full}): free space (a study needs at "
                   f"least --min-free-mb {min_free_mb:g} MB) and continue it with --resume") from exc


def connect_ray(address: str | None, resources: Resources) -> None:
    """Start a local Ray, never a cluster that /tmp/ray/ray_current_cluster names (a dead one would be
    retried forever), or join ``address``; then check that one node can hold a trial."""
    import ray

    if address is None:
        ray.init(address="local", include_dashboard=False, configure_logging=False)
    else:
        try:
            ray.init(address=address, include_dashboard=False, configure_logging=False)
        except Exception as exc:  # AuthenticationError, ConnectionError: the probe passed but the join did not
            hint = TOKEN_FIX if type(exc).__name__ == "AuthenticationError" else "check the address and the head"
            raise SpaceError(f"--address {address}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}: "
                             f"{hint}") from exc
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    for key, need, flag in (("CPU", resources.cpus_per_trial, "--cpus-per-trial"),
                            ("GPU", resources.gpus_per_trial, "--gpus-per-trial")):
        most = max((node.get(key, 0) for node in nodes), default=0)
        if need > most:
            where = "this machine" if address is None else f"the Ray cluster at {address}"
            raise SpaceError(f"each trial needs {need:g} {key}(s) but no node of {where} has more than {most:g}: "
                             f"pass {flag} {most:g} or less, or add a node that has them")


def make_tuner(space: StudySpace, paths: StudyPaths, *, parent_run_id: str, max_concurrent: int,
               resume: bool) -> Any:
    """Ray Tune's Tuner: restored from the study's tuner.pkl (its trials keep the settings they started with),
    or a new one."""
    from ray import tune

    from study.tracking import TrialLogger
    from study.trainable import DegenerateULAStopper, train_trial

    resources = space.resources
    trainable = tune.with_resources(train_trial, {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial})
    if resume:
        return tune.Tuner.restore(paths.experiment_path, trainable=trainable, resume_unfinished=True,
                                  resume_errored=True)
    configs = TrialConfigs()  # the stopper's and the logger's, built once per trial
    return tune.Tuner(
        trainable,
        param_space=param_space(space, TrialContext.for_study(space, paths)),
        tune_config=tune_config(space, paths, max_concurrent),
        run_config=tune.RunConfig(
            name=paths.name,
            storage_path=paths.storage,
            failure_config=tune.FailureConfig(max_failures=1),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),  # resuming needs the last one only
            progress_reporter=progress_reporter(space),
            verbose=1,  # status tables only, not every trial result
            stop=DegenerateULAStopper(configs),
            callbacks=[TrialLogger(paths.tracking_uri, parent_run_id, paths.name, space.scheduler.type, configs)],
        ),
    )


def report_study(tracker: StudyTracker, paths: StudyPaths, outcome: StudyOutcome) -> int:
    """Publish the report and log it on the parent run; returns the study's exit code."""
    from study.publish import publish_report

    try:
        report_path = publish_report(paths.name, paths.results_dir, paths.tracking_uri,
                                     optuna_storage=paths.optuna_storage)
    except Exception as exc:  # the trials are stored: only the report needs another try
        print(f"error: report not written ({type(exc).__name__}: {exc}): the trials are stored, rerun "
              f"python -m study.report --study {paths.name} --results-dir {paths.results_dir}",
              file=sys.stderr)
        return outcome.exit_code or 1
    tracker.log_report(report_path.parent)
    print(f"report: {report_path}")
    summary = outcome.summary(paths.name)
    if summary:
        print(f"error: {summary}", file=sys.stderr)
    return outcome.exit_code


def param_space(space: StudySpace, context: TrialContext) -> dict[str, Any]:
    """The Tune config (see study.trial): the context under ``study``, the grid's (direction x variant x seed) or
    the sampled keys."""
    from ray import tune

    study = context.as_param()
    if space.kind == "grid":
        variants = [{"name": v.name, "set": v.set} for v in space.variants]
        return {
            "study": study,
            "direction": tune.grid_search(space.directions),
            "variant": tune.grid_search(variants),
            "seed": tune.grid_search(space.seeds),
        }
    out: dict[str, Any] = {"study": study, "direction": space.directions[0], "seed": space.seeds[0]}
    for key, dist in space.params.items():
        out[key] = tune_domain(dist)
    return out


def tune_domain(dist: Distribution) -> Any:
    """A space distribution as a Tune domain (``grid`` is a categorical the sampler draws from)."""
    from ray import tune

    if dist.type in ("choice", "grid"):
        return tune.choice([encode_choice(v) for v in dist.values])
    if dist.type == "uniform":
        return tune.uniform(dist.low, dist.high)
    if dist.type == "loguniform":
        return tune.loguniform(dist.low, dist.high)
    return tune.qrandint(dist.low, dist.high, dist.step)


def tune_config(space: StudySpace, paths: StudyPaths, max_concurrent: int) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    settings = space.search
    scheduler = None
    if space.scheduler.type == "asha":
        # One report per cycle; cycle 0 is the source-only model, so training_iteration = cycle + 1.
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            metric=settings.metrics[0],
            mode=settings.modes[0],
            max_t=max_cycles(space) + 1,
            grace_period=space.scheduler.grace_period,
            reduction_factor=space.scheduler.reduction_factor,
        )
    if space.kind == "grid":
        return tune.TuneConfig(num_samples=1, scheduler=scheduler, max_concurrent_trials=max_concurrent)
    return tune.TuneConfig(
        num_samples=settings.num_samples,
        scheduler=scheduler,
        search_alg=optuna_search(space, paths.name, paths.optuna_storage, max_concurrent),
    )


def max_cycles(space: StudySpace) -> int:
    """The most cycles a trial can run: the searched range of adapt.cycles, else the base config's."""
    dist = space.params.get("adapt.cycles")
    if dist is None:
        return space.base_config().adapt.cycles
    return int(max(dist.extremes()))


def optuna_search(space: StudySpace, study_name: str, storage_url: str, max_concurrent: int) -> Any:
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    settings = space.search
    samplers = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "nsgaii": optuna.samplers.NSGAIISampler,
    }
    multi = len(settings.metrics) > 1
    searcher = OptunaSearch(
        metric=settings.metrics if multi else settings.metrics[0],
        mode=settings.modes if multi else settings.modes[0],
        sampler=samplers[settings.sampler](seed=settings.seed),
        study_name=study_name,
        storage=optuna.storages.RDBStorage(storage_url),
        points_to_evaluate=[{k: encode_choice(v) for k, v in point.params.items()}
                            for point in settings.start_points] or None,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)


def progress_reporter(space: StudySpace) -> Any:
    from ray import tune

    if space.kind == "grid":
        parameters = {"direction": "direction", "variant/name": "variant", "seed": "seed"}
    else:
        parameters = {key: key for key in space.params}
    return tune.CLIReporter(
        parameter_columns=parameters,
        metric_columns={"cycle": "cycle", "target_mAP": "mAP", "target_R1": "R1"},
        max_report_frequency=30,
        max_column_length=34,  # synthetic_duke->synthetic_market in full
    )


def print_summary(space: StudySpace, results: Any) -> None:
    """One line per trial. A trial still pending when the study was interrupted has reported nothing: its metrics
    are None and Ray's ResultGrid gives it a bare FileNotFoundError for the missing result file (a trial's own
    errors come wrapped in RayTaskError): shown with NaN, not as a failure."""
    print(f"\n{'direction':38} {'trial':34} {'cycle':>5} {'mAP':>6} {'R1':>6}")
    for result in results:
        config, metrics = result.config or {}, result.metrics or {}
        label = (config.get("variant") or {}).get("name") if space.kind == "grid" else ", ".join(
            f"{k}={_short(config.get(k))}" for k in space.params)
        head = f"{str(config.get('direction') or '?'):38} {str(label or '?'):34}"
        if result.error is not None and not isinstance(result.error, FileNotFoundError):
            # A trial's exception reaches the driver wrapped in Ray's RayTaskError; its cause says what happened.
            print(f"{head} error: {one_line(getattr(result.error, 'cause', None) or result.error)}")
            continue
        cycle, mean_ap, rank1 = (_number(metrics.get(key)) for key in ("cycle", "target_mAP", "target_R1"))
        print(f"{head} {cycle:>5} {mean_ap:6.2f} {rank1:6.2f}")


def _cli_dict(args: argparse.Namespace) -> dict[str, Any]:
    return {key: value for key, value in vars(args).items() if value not in (None, [], False)}


def _number(value: Any) -> float:
    return value if isinstance(value, (int, float)) else float("nan")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    sys.exit(main())
