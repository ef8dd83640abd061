"""Confirm a search on fresh seeds: ``python -m study.confirm --study hpo-d2m --seeds 3``.

A search picks its best trial on one seed out of many tries, so its best value is biased upwards. This
retrains the best configuration of a finished search, the paper-default setting (the ablation's
CSAM-ReID + ULA(750) + KD(0.5)) and the supervised-on-target upper bound on seeds the search never used,
as a grid study of its own (``<study>-confirm``: a new MLflow parent run, its own report), whose table
gives each with its interval and the paired gain of the searched setting over the paper default.

Where the search varied the adaptation budget (cycles, epochs per cycle, learning rate), a fourth row runs the
paper default at the searched best's budget, so that the table separates better settings from a bigger budget.
``--synthetic-seed N`` confirms on a fresh draw of the synthetic benchmark (new identities, same two domains:
``data.synthetic_seed``), data the search never saw, in ``<study>-confirm-synthetic<N>``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

import yaml

from study.paths import CONFIRM_SPACES_DIR, StudyPaths
from study.spaces import (
    SpaceError,
    SpaceFile,
    check_overrides,
    direction_overrides,
    load_space,
    selection_of,
)

if TYPE_CHECKING:
    import pandas as pd

PAPER_DEFAULT_VARIANT = "ULA(750)+KD(0.5)"
FIRST_FRESH_SEED = 100  # confirmation seeds start here, away from the 0, 1, 2 of grids and searches
GOAL_MAP = 10.0  # the searched setting should beat the paper default by this many target mAP points
# Set by the grid (seed) or by the direction; never carried over from the searched trial.
NOT_CARRIED = ("runtime.seed", "data.source", "data.target")
BUDGET_KEYS = ("adapt.cycles", "adapt.cycle_epochs", "adapt.lr")  # the adaptation budget a search may vary
AT_BUDGET = "paper default at the searched budget"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m study.confirm", description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="a finished search study (its MLflow experiment name)")
    parser.add_argument("--seeds", type=int, default=3, help="how many fresh seeds (default 3)")
    parser.add_argument("--synthetic-seed", type=int, help="confirm on a fresh draw of the synthetic benchmark "
                        "generated from this data.synthetic_seed (one the search did not use)")
    parser.add_argument("--name", help="confirmation study name (default: STUDY-confirm, or STUDY-confirm-"
                        "syntheticN with --synthetic-seed N; the search's report shows those named STUDY-confirm*)")
    parser.add_argument("--results-dir", default="results", help="as for study.run (default: results)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///RESULTS_DIR/mlflow.db)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted confirmation")
    parser.add_argument("--max-concurrent", type=int, help="trials at once (default: CPUs // cpus per trial)")
    parser.add_argument("--address", help="Ray cluster address, as for study.run")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from study.run import main as run_main

    draw = "" if args.synthetic_seed is None else f"-synthetic{args.synthetic_seed}"
    paths = StudyPaths.resolve(args.name or f"{args.study}-confirm{draw}", args.results_dir,
                               tracking_uri=args.tracking_uri)
    try:
        if args.seeds < 1:
            raise SpaceError(f"--seeds {args.seeds} is out of range: pass how many fresh seeds, e.g. --seeds 3")
        space = confirmation_space(args.study, paths.tracking_uri, args.seeds, paths.name, args.synthetic_seed)
    except (SpaceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    space_file = paths.results_dir / CONFIRM_SPACES_DIR / f"{paths.name}.yaml"
    if not args.resume:
        space_file.parent.mkdir(parents=True, exist_ok=True)
        flag = "" if args.synthetic_seed is None else f" --synthetic-seed {args.synthetic_seed}"
        space_file.write_text(f"# Written by python -m study.confirm --study {args.study} --seeds {args.seeds}{flag}\n"
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


def confirmation_space(study: str, tracking_uri: str, num_seeds: int, name: str,
                       synthetic_seed: int | None = None) -> SpaceFile:
    """The grid (a validated space file) that retrains the search's best trial beside its references."""
    from study.report.load import LoadedStudy

    searched = LoadedStudy.load(study, tracking_uri)
    if searched.space.get("kind") != "search":
        raise SpaceError(f"study {study!r} is a {searched.space.get('kind', 'unknown')} study: confirm a search study")
    best, best_value = best_trial(searched)
    space, best_flat = searched.space, trial_config_flat(best)
    direction, preset_name, fixed = space["directions"][0], space["preset"], dict(space.get("fixed") or {})
    best_set = config_diff(best_flat, fixed, preset_name, direction)
    budget = searched_budget(best_flat, space)
    used = set(searched.trials["seed"].dropna().astype(int))
    seeds = [seed for seed in range(FIRST_FRESH_SEED, FIRST_FRESH_SEED + num_seeds + len(used)) if seed not in used]
    on = "fresh seeds" + ("" if synthetic_seed is None else
                          f" and a fresh draw of the synthetic benchmark (data.synthetic_seed={synthetic_seed})")
    return SpaceFile.model_validate({
        "name": name,
        "description": (f"The best trial of {study} ({best['tags.mlflow.runName']}, final target mAP "
                        f"{best_value:.2f} on seed(s) {sorted(used)}) against the paper default and the "
                        f"supervised upper bound, on {on}"),
        "kind": "grid",
        "selection": selection_of(space),  # the searched best was chosen as the search chose it
        "preset": preset_name,
        "directions": [direction],
        "seeds": seeds[:num_seeds],
        "fixed": {**fixed, **fresh_draw(study, space, synthetic_seed)},
        "variants": confirmation_variants(best_set, direction, preset_name, budget),
        "tables": [confirmation_table(study, best["tags.mlflow.runName"], bool(budget), on)],
        "scheduler": {"type": "none"},
        "resources": space.get("resources") or {"cpus_per_trial": 1, "gpus_per_trial": 0},
    })


def fresh_draw(study: str, space: dict[str, Any], synthetic_seed: int | None) -> dict[str, Any]:
    """The override that confirms on a fresh draw of the synthetic benchmark; refused where there is no such
    draw (real data) or the search ran on that one."""
    if synthetic_seed is None:
        return {}
    from reidmodel.config import preset
    from reidmodel.data.synthetic import SYNTHETIC_DOMAINS

    direction = space["directions"][0]
    base = check_overrides(preset(space["preset"]), space.get("fixed") or {}, f"study {study!r}: fixed")
    if base.data.root is not None or not set(direction_overrides(direction).values()) <= set(SYNTHETIC_DOMAINS):
        raise SpaceError(f"--synthetic-seed: study {study!r} runs on real data ({direction}): a fresh draw exists "
                         "only for the embedded synthetic benchmark; drop --synthetic-seed")
    if base.data.synthetic_seed == synthetic_seed or "data.synthetic_seed" in (space.get("params") or {}):
        raise SpaceError(f"--synthetic-seed {synthetic_seed}: the search {study!r} itself ran on data.synthetic_seed="
                         f"{base.data.synthetic_seed}: pass a seed it never used, e.g. --synthetic-seed 7")
    check_overrides(base, {"data.synthetic_seed": synthetic_seed}, "--synthetic-seed")
    return {"data.synthetic_seed": synthetic_seed}


def searched_budget(best_flat: dict[str, Any], space: dict[str, Any]) -> dict[str, Any]:
    """The searched best's adaptation budget, for the budget keys the search varied, where it differs from the
    paper default's: what the paper default runs with in the row that separates budget from settings."""
    from reidmodel.config import apply_overrides, flatten, preset

    overrides = {**(space.get("fixed") or {}), **direction_overrides(space["directions"][0]),
                 **paper_default_set(space["preset"])}
    paper = flatten(apply_overrides(preset(space["preset"]), overrides).to_dict())
    return {key: best_flat[key] for key in BUDGET_KEYS
            if key in (space.get("params") or {}) and json.dumps(best_flat[key]) != json.dumps(paper[key])}


def confirmation_variants(best_set: dict[str, Any], direction: str, preset_name: str = "cpu",
                          budget: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The paper default (and, given a searched budget, the paper default at that budget), the searched best and
    the supervised-on-target upper bound, as grid variants."""
    paper_set = paper_default_set(preset_name)
    target = direction.split("->")[1].strip()
    supervised_set = {**paper_set, "data.source": target, "adapt.cycles": 0, "ula.enabled": False}
    return [
        {"name": "paper default", "set": paper_set},
        *([{"name": AT_BUDGET, "set": {**paper_set, **budget}}] if budget else []),
        {"name": "searched best", "set": best_set},
        {"name": "supervised on target", "set": supervised_set},
    ]


def confirmation_table(study: str, best_run_name: str, at_budget: bool = False,
                       on: str = "fresh seeds") -> dict[str, Any]:
    """The report table: each row against the paper default, with the claims that the search paid off (and,
    with the budget row, that it did beyond its budget)."""
    budget_row = {"variant": AT_BUDGET, "label": f"{AT_BUDGET} (its cycles, epochs per cycle and lr)",
                  "reference": "paper default"}
    budget_claim = {"text": "The searched settings beat the paper default at the same budget",
                    "variant": "searched best", "over": AT_BUDGET}
    return {
        "id": "confirmation",
        "title": f"Confirmation of {study} on {on} (each row against the paper default)",
        "metrics": ["R1", "mAP"],
        "rows": [
            {"variant": "paper default", "label": f"paper default ({PAPER_DEFAULT_VARIANT} of the ablation)"},
            *([budget_row] if at_budget else []),
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
            *([budget_claim] if at_budget else []),
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
