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

``--beside OTHER`` retrains the best of a second search of the same direction and data in the same grid, each
pick named by how it was selected ("label-free best", "oracle best"), each with the paper default at its budget:
a label-free search confirmed head to head with the oracle search it should come close to. A method setting that
only one of the two searches fixed travels with that search's pick; the references run as both share. OTHER is a search
study, or the confirmation space study.confirm wrote for one (``results/spaces/<other>-confirm.yaml``), which
holds its best setting where the search's runs are no longer in the store.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from study.paths import CONFIRM_SPACES_DIR, StudyPaths
from study.spaces import (
    SELECTIONS,
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
    parser.add_argument("--beside", help="also confirm the best of this search (same direction and draw) in the "
                        "same grid: a search study, or the confirmation space study.confirm wrote for it")
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
        space = confirmation_space(args.study, paths.tracking_uri, args.seeds, paths.name, args.synthetic_seed,
                                   args.beside)
    except (SpaceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    space_file = paths.results_dir / CONFIRM_SPACES_DIR / f"{paths.name}.yaml"
    if not args.resume:
        space_file.parent.mkdir(parents=True, exist_ok=True)
        flag = "" if args.synthetic_seed is None else f" --synthetic-seed {args.synthetic_seed}"
        flag += f" --beside {args.beside} --name {paths.name}" if args.beside else ""
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


@dataclass(frozen=True)
class Pick:
    """A search's best setting and how it was chosen: what a confirmation grid retrains."""

    study: str
    selection: str  # label_free / validation / oracle: what of the target's labels chose it
    settings: dict[str, Any]  # overrides over the grid's fixed settings and direction
    budget: dict[str, Any]  # its adaptation budget, where the search varied it and it differs from the default's
    label: str  # the best trial's run name
    found: str  # how good it looked in the search, e.g. "final target_mAP 82.77 on seed(s) [0]"
    used: frozenset[int] = frozenset()  # the seeds it was searched on: a confirmation must not use them
    fresh: frozenset[int] | None = None  # where its searched seeds are unknown: seeds known fresh to it


def confirmation_space(study: str, tracking_uri: str, num_seeds: int, name: str,
                       synthetic_seed: int | None = None, beside: str | None = None) -> SpaceFile:
    """The grid (a validated space file) that retrains the search's best trial (and the best of the search
    beside it) next to the references."""
    pick, space = search_pick(study, tracking_uri)
    picks, fixed = [pick], {**(space.get("fixed") or {}), **fresh_draw(study, space, synthetic_seed)}
    if beside:
        other, its_fixed = beside_pick(beside, tracking_uri, space, fixed, synthetic_seed)
        common = {key: value for key, value in fixed.items() if key in its_fixed and _same(its_fixed[key], value)}
        picks, fixed = [carried(pick, fixed, common), carried(other, its_fixed, common)], common
    used = set().union(*(p.used for p in picks))
    seeds = [seed for seed in range(FIRST_FRESH_SEED, FIRST_FRESH_SEED + num_seeds + len(used)) if seed not in used]
    for other in picks[1:]:
        if other.fresh is not None and not set(seeds[:num_seeds]) <= other.fresh:
            raise SpaceError(f"--beside {beside}: it confirmed on seeds {sorted(other.fresh)}, not all of "
                             f"{seeds[:num_seeds]}: pass --seeds {len(other.fresh)} or fewer")
    on = "fresh seeds" + ("" if synthetic_seed is None else
                          f" and a fresh draw of the synthetic benchmark (data.synthetic_seed={synthetic_seed})")
    found = " beside ".join(f"the best trial of {p.study} ({p.label}, {p.found})" for p in picks)
    return SpaceFile.model_validate({
        "name": name,
        "description": f"{found[0].upper()}{found[1:]}, against the paper default and the supervised upper bound, "
                       f"on {on}",
        "kind": "grid",
        "selection": max((p.selection for p in picks), key=SELECTIONS.index),  # as the most label-reading pick
        "preset": space["preset"],
        "directions": [space["directions"][0]],
        "seeds": seeds[:num_seeds],
        "fixed": fixed,
        "variants": confirmation_variants(picks, space["directions"][0], space["preset"]),
        "tables": [confirmation_table(picks, on)],
        "scheduler": {"type": "none"},
        "resources": space.get("resources") or {"cpus_per_trial": 1, "gpus_per_trial": 0},
    })


def search_pick(study: str, tracking_uri: str) -> tuple[Pick, dict[str, Any]]:
    """The best trial of a finished search study and the space it ran."""
    from study.report.load import LoadedStudy

    searched = LoadedStudy.load(study, tracking_uri)
    if searched.space.get("kind") != "search":
        raise SpaceError(f"study {study!r} is a {searched.space.get('kind', 'unknown')} study: confirm a search study")
    best, metric, value = best_trial(searched)
    space, best_flat = searched.space, trial_config_flat(best)
    used = set(searched.trials["seed"].dropna().astype(int))
    settings = config_diff(best_flat, dict(space.get("fixed") or {}), space["preset"], space["directions"][0])
    return Pick(study, selection_of(space), settings, searched_budget(best_flat, space), best["tags.mlflow.runName"],
                f"final {metric} {value:.2f} on seed(s) {sorted(used)}", frozenset(used)), space


def beside_pick(beside: str, tracking_uri: str, space: dict[str, Any], fixed: dict[str, Any],
                synthetic_seed: int | None) -> tuple[Pick, dict[str, Any]]:
    """The pick of the search confirmed beside and its fixed settings: refused in one line unless it searched the
    same direction, preset and data (the same draw), or where it chose as the first search did."""
    if beside.endswith((".yaml", ".yml")):
        pick, its_space = committed_pick(Path(beside))
        its_fixed = its_space.get("fixed") or {}
    else:
        pick, its_space = search_pick(beside, tracking_uri)
        its_fixed = {**(its_space.get("fixed") or {}), **fresh_draw(beside, its_space, synthetic_seed)}
    for what, mine, its in (("direction", space["directions"][0], its_space["directions"][0]),
                            ("preset", space["preset"], its_space["preset"]),
                            ("data settings", _data(fixed), _data(its_fixed))):
        if not _same(mine, its):
            raise SpaceError(f"--beside {beside}: its {what} ({its}) differ from the first search's ({mine}): "
                             "confirm side by side only searches of the same data")
    if pick.selection == selection_of(space):
        raise SpaceError(f"--beside {beside}: both searches chose by {pick.selection}: confirm each on its own")
    return pick, its_fixed


def carried(pick: Pick, its_fixed: dict[str, Any], common: dict[str, Any]) -> Pick:
    """The pick with the fixed settings of its search that the grid does not fix for both (K taken from the
    clusters, say) in its own settings: each pick runs as its search ran it, the references as both share."""
    own = {key: value for key, value in its_fixed.items() if key not in common}
    return replace(pick, settings={**own, **pick.settings})


def _data(fixed: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fixed.items() if key.startswith("data.")}


def _same(mine: Any, its: Any) -> bool:
    return json.dumps(mine, sort_keys=True) == json.dumps(its, sort_keys=True)


def committed_pick(path: Path) -> tuple[Pick, dict[str, Any]]:
    """The searched best of a confirmation space study.confirm wrote: a search whose runs are gone still has its
    best setting there."""
    where = f"--beside {path}"
    if not path.is_file():
        raise SpaceError(f"{where}: no such file: pass a search study or results/spaces/<study>-confirm.yaml")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict) or "searched best" not in {v.get("name") for v in raw.get("variants") or []}:
        raise SpaceError(f"{where}: not a confirmation space study.confirm wrote: pass a search study or "
                         "results/spaces/<study>-confirm.yaml")
    if "selection" not in raw:
        raise SpaceError(f"{where} declares no selection: add what its search chose by, e.g. 'selection: oracle'")
    variants = {v["name"]: v["set"] for v in raw["variants"]}
    best = variants["searched best"]
    budget = {key: best[key] for key in BUDGET_KEYS if key in best}
    row = next(r for r in raw["tables"][0]["rows"] if r["variant"] == "searched best")
    label = row["label"].removeprefix("searched best (").removesuffix(")")
    study = raw["name"].removesuffix("-confirm")
    # Its search's seeds are not in the file, but the seeds it confirmed on were fresh to that search.
    pick = Pick(study, raw["selection"], best, budget, label, f"as confirmed in {path.name}",
                fresh=frozenset(raw.get("seeds") or []))
    return pick, raw


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
            if key in (space.get("params") or {}) and not _same(best_flat[key], paper[key])}


def confirmation_variants(picks: list[Pick], direction: str, preset_name: str = "cpu") -> list[dict[str, Any]]:
    """The paper default; per pick, the paper default at its budget (where it has one) and the pick; the
    supervised-on-target upper bound: as grid variants."""
    paper_set = paper_default_set(preset_name)
    target = direction.split("->")[1].strip()
    supervised_set = {**paper_set, "data.source": target, "adapt.cycles": 0, "ula.enabled": False}
    variants = [{"name": "paper default", "set": paper_set}]
    for index, pick in enumerate(picks):
        best, at_budget = variant_names(pick, len(picks))
        own_row = budget_variant(picks, index) == at_budget
        variants += [{"name": at_budget, "set": {**paper_set, **pick.budget}}] if own_row else []
        variants.append({"name": best, "set": pick.settings})
    return [*variants, {"name": "supervised on target", "set": supervised_set}]


def variant_names(pick: Pick, num_picks: int) -> tuple[str, str]:
    """The pick's variant and its budget row's: 'searched best' alone, named by its selection beside another."""
    if num_picks == 1:
        return "searched best", AT_BUDGET
    chosen = pick.selection.replace("_", "-")
    return f"{chosen} best", f"paper default at the {chosen} budget"


def budget_variant(picks: list[Pick], index: int) -> str | None:
    """The row that runs the paper default at this pick's budget: its own, or an earlier pick's with the same
    budget (a grid runs each setting once); None without a searched budget."""
    if not picks[index].budget:
        return None
    first = next(i for i, pick in enumerate(picks) if pick.budget == picks[index].budget)
    return variant_names(picks[first], len(picks))[1]


def confirmation_table(picks: list[Pick], on: str = "fresh seeds") -> dict[str, Any]:
    """The report table: each row against the paper default, with the claims that each search paid off (and,
    with a budget row, that it did beyond its budget) and, for two picks, which was better."""
    rows = [{"variant": "paper default", "label": f"paper default ({PAPER_DEFAULT_VARIANT} of the ablation)"}]
    claims, names = [], [variant_names(pick, len(picks))[0] for pick in picks]
    for index, pick in enumerate(picks):
        best, at_budget = variant_names(pick, len(picks))
        who = "The searched setting" if len(picks) == 1 else f"The {best.removesuffix(' best')} pick"
        if pick.budget and budget_variant(picks, index) == at_budget:
            rows.append({"variant": at_budget, "label": f"{at_budget} (its cycles, epochs per cycle and lr)",
                         "reference": "paper default"})
        rows.append({"variant": best, "label": f"{best} ({pick.label})" if len(picks) == 1 else
                     f"{best}: {pick.study}'s pick ({pick.label})", "reference": "paper default"})
        claims.append({"text": f"{who} beats the paper default", "variant": best, "over": "paper default"})
        claims += [{**claims[-1], "margin": GOAL_MAP}] if len(picks) == 1 else []
        claims += [{"text": f"{who} beats the paper default at the same budget", "variant": best,
                    "over": budget_variant(picks, index)}] if pick.budget else []
    if len(picks) == 2:
        claims.append({"text": f"The {names[1].removesuffix(' best')} pick beats the "
                               f"{names[0].removesuffix(' best')} pick", "variant": names[1], "over": names[0]})
    rows.append({"variant": "supervised on target", "label": "supervised on target (upper bound)",
                 "reference": "paper default"})
    return {
        "id": "confirmation",
        "title": f"Confirmation of {' beside '.join(p.study for p in picks)} on {on} (each row against the paper "
                 "default)",
        "metrics": ["R1", "mAP"],
        "rows": rows,
        "claims": claims,
    }


def best_trial(searched) -> tuple[pd.Series, str, float]:
    """The run (a row of the search's runs frame) of the finished trial (all cycles reached) with the best
    final value of the first objective, that objective and the value."""
    from study.report.load import final_values

    search = searched.space.get("search", {})
    objective = (search.get("objectives") or [{"metric": search.get("metric", "target_mAP"),
                                               "mode": search.get("mode", "max")}])[0]
    metric = objective["metric"]
    last = final_values(searched.cycles, searched.trials, [metric]) if metric in searched.cycles else None
    if last is None or last[metric].isna().all():
        raise SpaceError("no trial of this study finished all its cycles: nothing to confirm")
    row = last.loc[last[metric].idxmax() if objective["mode"] == "max" else last[metric].idxmin()]
    return searched.children.set_index("run_id").loc[row["run_id"]], metric, float(row[metric])


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
            if key not in NOT_CARRIED and key != "preset" and not _same(value, base.get(key))}


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
