"""Confirm a search on fresh seeds: ``python -m study.confirm --study hpo-d2m --seeds 3``.

A search picks its best trial on one seed out of many tries, so its best value is biased upwards. This
retrains the best configuration of a finished search, the paper-default setting (the ablation's
CSAM-ReID + ULA(750) + KD(0.5)) and the supervised-on-target upper bound on seeds the search never used,
as a grid study of its own (``<study>-confirm``: a new MLflow parent run, its own report), whose table
gives each with its interval and the paired gain of the searched setting over the paper default.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

import yaml

from study.paths import CONFIRM_SPACES_DIR, StudyPaths
from study.spaces import SpaceError, SpaceFile, direction_overrides, load_space

if TYPE_CHECKING:
    import pandas as pd

PAPER_DEFAULT_VARIANT = "ULA(750)+KD(0.5)"
FIRST_FRESH_SEED = 100  # confirmation seeds start here, away from the 0, 1, 2 of grids and searches
GOAL_MAP = 10.0  # the searched setting should beat the paper default by this many target mAP points
# Set by the grid (seed) or by the direction; never carried over from the searched trial.
NOT_CARRIED = ("runtime.seed", "data.source", "data.target")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m study.confirm", description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="a finished search study (its MLflow experiment name)")
    parser.add_argument("--seeds", type=int, default=3, help="how many fresh seeds (default 3)")
    parser.add_argument("--name", help="confirmation study name (default: STUDY-confirm; the search's "
                        "report shows the confirmations named STUDY-confirm*)")
    parser.add_argument("--results-dir", default="results", help="as for study.run (default: results)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///RESULTS_DIR/mlflow.db)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted confirmation")
    parser.add_argument("--max-concurrent", type=int, help="trials at once (default: CPUs // cpus per trial)")
    parser.add_argument("--address", help="Ray cluster address, as for study.run")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from study.run import main as run_main

    paths = StudyPaths.resolve(args.name or f"{args.study}-confirm", args.results_dir, tracking_uri=args.tracking_uri)
    try:
        if args.seeds < 1:
            raise SpaceError(f"--seeds {args.seeds} is out of range: pass how many fresh seeds, e.g. --seeds 3")
        space = confirmation_space(args.study, paths.tracking_uri, args.seeds, paths.name)
    except (SpaceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    space_file = paths.results_dir / CONFIRM_SPACES_DIR / f"{paths.name}.yaml"
    if not args.resume:
        space_file.parent.mkdir(parents=True, exist_ok=True)
        space_file.write_text(f"# Written by python -m study.confirm --study {args.study} --seeds {args.seeds}\n"
                              + yaml.dump(space.model_dump(mode="json", exclude_defaults=True), Dumper=_PlainDumper,
                                          sort_keys=False))
    elif not space_file.is_file():
        print(f"error: --resume: no confirmation space {space_file}: drop --resume to start it", file=sys.stderr)
        return 2
    run_args = ["--space", str(space_file), "--name", paths.name, "--results-dir", str(paths.results_dir),
                "--tracking-uri", paths.tracking_uri]
    run_args += ["--resume"] if args.resume else []
    run_args += ["--max-concurrent", str(args.max_concurrent)] if args.max_concurrent else []
    run_args += ["--address", args.address] if args.address else []
    return run_main(run_args)


class _PlainDumper(yaml.SafeDumper):
    """Writes a list that two variants share out in full each time: a reader should not meet &id001 anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def confirmation_space(study: str, tracking_uri: str, num_seeds: int, name: str) -> SpaceFile:
    """The grid (a validated space file) that retrains the search's best trial beside its references."""
    from study.report.load import LoadedStudy

    searched = LoadedStudy.load(study, tracking_uri)
    if searched.space.get("kind") != "search":
        raise SpaceError(f"study {study!r} is a {searched.space.get('kind', 'unknown')} study: confirm a search study")
    best, best_value = best_trial(searched)
    direction = searched.space["directions"][0]
    fixed = dict(searched.space.get("fixed") or {})
    best_set = config_diff(trial_config_flat(best), fixed, searched.space["preset"], direction)
    used = set(searched.trials["seed"].dropna().astype(int))
    seeds = [seed for seed in range(FIRST_FRESH_SEED, FIRST_FRESH_SEED + num_seeds + len(used)) if seed not in used]
    return SpaceFile.model_validate({
        "name": name,
        "description": (f"The best trial of {study} ({best['tags.mlflow.runName']}, final target mAP "
                        f"{best_value:.2f} on seed(s) {sorted(used)}) against the paper default and the "
                        "supervised upper bound, on fresh seeds"),
        "kind": "grid",
        "preset": searched.space["preset"],
        "directions": [direction],
        "seeds": seeds[:num_seeds],
        "fixed": fixed,
        "variants": confirmation_variants(best_set, direction, searched.space["preset"]),
        "tables": [confirmation_table(study, best["tags.mlflow.runName"])],
        "scheduler": {"type": "none"},
        "resources": searched.space.get("resources") or {"cpus_per_trial": 1, "gpus_per_trial": 0},
    })


def confirmation_variants(best_set: dict[str, Any], direction: str, preset_name: str = "cpu") -> list[dict[str, Any]]:
    """The paper default, the searched best and the supervised-on-target upper bound, as grid variants."""
    paper_set = paper_default_set(preset_name)
    target = direction.split("->")[1].strip()
    supervised_set = {**paper_set, "data.source": target, "adapt.cycles": 0, "ula.enabled": False}
    return [
        {"name": "paper default", "set": paper_set},
        {"name": "searched best", "set": best_set},
        {"name": "supervised on target", "set": supervised_set},
    ]


def confirmation_table(study: str, best_run_name: str) -> dict[str, Any]:
    """The report table: each row against the paper default, with the claims that the search paid off."""
    return {
        "id": "confirmation",
        "title": f"Confirmation of {study} on fresh seeds (each row against the paper default)",
        "metrics": ["R1", "mAP"],
        "rows": [
            {"variant": "paper default", "label": f"paper default ({PAPER_DEFAULT_VARIANT} of the ablation)"},
            {"variant": "searched best", "label": f"searched best ({best_run_name})",
             "reference": "paper default"},
            {"variant": "supervised on target", "label": "supervised on target (upper bound)",
             "reference": "paper default"},
        ],
        "claims": [
            {"text": "The searched setting beats the paper default", "variant": "searched best",
             "over": "paper default"},
            {"text": "The searched setting beats the paper default", "variant": "searched best",
             "over": "paper default", "margin": GOAL_MAP},
        ],
    }


def best_trial(searched) -> tuple[pd.Series, float]:
    """The run (a row of the search's runs frame) of the finished trial (all cycles reached) with the best
    final value of the first objective, and that value."""
    from study.report.load import final_values

    search = searched.space.get("search", {})
    objective = (search.get("objectives") or [{"metric": search.get("metric", "target_mAP"),
                                               "mode": search.get("mode", "max")}])[0]
    metric = objective["metric"]
    last = final_values(searched.cycles, searched.trials, [metric]) if metric in searched.cycles else None
    if last is None or last[metric].isna().all():
        raise SpaceError("no trial of this study finished all its cycles: nothing to confirm")
    row = last.loc[last[metric].idxmax() if objective["mode"] == "max" else last[metric].idxmin()]
    return searched.children.set_index("run_id").loc[row["run_id"]], float(row[metric])


def trial_config_flat(run: pd.Series) -> dict[str, Any]:
    """The trial's own config (the config.yaml it logged), as dotted keys with list values kept."""
    import mlflow

    from reidmodel.config import config_from_dict, flatten

    config = config_from_dict(yaml.safe_load(mlflow.artifacts.load_text(f"{run['artifact_uri']}/config.yaml")))
    return flatten(config.to_dict())


def config_diff(flat: dict[str, Any], fixed: dict[str, Any], preset_name: str, direction: str) -> dict[str, Any]:
    """The keys where a trial's config differs from what the confirmation grid builds anyway."""
    from reidmodel.config import apply_overrides, flatten, preset

    base = flatten(apply_overrides(preset(preset_name), {**fixed, **direction_overrides(direction)}).to_dict())
    return {key: value for key, value in flat.items()
            if key not in NOT_CARRIED and key != "preset" and json.dumps(value) != json.dumps(base.get(key))}


def paper_default_set(preset_name: str = "cpu") -> dict[str, Any]:
    """The paper default as overrides. A paper-preset search (real data) gets every method setting of the paper
    preset, whatever the search fixed (hpo-modern fixes another clustering); a cpu-preset one the synthetic
    ablation's final row: its fixed settings, then the variant's own."""
    if preset_name == "paper":
        from reidmodel.config import preset

        return {key: value for key, value in preset("paper").flat().items()
                if key.split(".")[0] in ("model", "loss", "source", "ula", "kd", "adapt")}
    ablation = load_space("ablation")
    variant = next(v for v in ablation.variants if v.name == PAPER_DEFAULT_VARIANT)
    return {**ablation.fixed, **variant.set}


if __name__ == "__main__":
    sys.exit(main())
