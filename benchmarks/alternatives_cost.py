"""Cost of the later methods against the paper's (issue 20): one cpu-preset adaptation cycle of every row of
search_spaces/modern.yaml, all from one pre-trained source model (the same first clustering, the same epochs),
and one whole trial of the EMA(0.999) row, whose steps per cycle the matched momentum is computed from.

    python -m benchmarks.alternatives_cost [--direction 'synthetic_duke->synthetic_market'] [--seed 0]
        [--threads 1] [--cache results/cache] [--out results/benchmarks.md]

The source model comes from the study's pre-training cache (trained into it when missing, a few minutes), so a
later study run with the same --results-dir reuses it. Prints the figures and writes them as the section
"Cost of the later methods" of --out (replacing an earlier one), naming the command and the machine.
One thread by default: a grid trial runs on one (resources.cpus_per_trial).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from benchmarks.common import load_average, machine, write_section
from reidmodel.checkpoint import load_cycle
from reidmodel.config import ExperimentConfig, apply_overrides
from reidmodel.pipeline import pretrain_signature, pretrain_source, run_experiment
from study.cache import PretrainCache
from study.spaces import direction_overrides, load_space

HEADING = "## Cost of the later methods (issue 20): one adaptation cycle per row of search_spaces/modern.yaml"
FULL_TRIAL_ROW = "EMA(0.999)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--direction", default="synthetic_duke->synthetic_market")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a grid trial runs on 1)")
    parser.add_argument("--cache", type=Path, default=Path("results/cache"), help="the pre-training cache")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    space = load_space("modern")
    base = apply_overrides(space.base_config(), {**direction_overrides(args.direction), "runtime.seed": args.seed,
                                                 "runtime.threads": args.threads})
    load_before = load_average()
    source, pretrain_seconds = cached_source(base, args.cache)
    rows = [time_one_cycle(apply_overrides(base, variant.set), variant.name, source) for variant in space.variants]
    full = full_trial(apply_overrides(base, next(v.set for v in space.variants if v.name == FULL_TRIAL_ROW)), source)
    command = "python -m benchmarks.alternatives_cost" + ("" if not (argv or sys.argv[1:]) else
                                                          " " + shlex.join(argv or sys.argv[1:]))
    section = report(rows, full, pretrain_seconds, len(space.trials()), command, (load_before, load_average()),
                     args)
    print(section)
    write_section(args.out, HEADING, section)
    return 0


def cached_source(config: ExperimentConfig, cache: Path) -> tuple[Path, float | None]:
    """The source model from the study's cache, and its pre-training seconds (from the cache's record)."""
    checkpoint, hit = PretrainCache(cache).get_or_train(
        pretrain_signature(config), lambda path: pretrain_source(config, path))
    seconds = json.loads(checkpoint.with_suffix(".json").read_text()).get("train_seconds")
    print(f"source model: {'cache hit' if hit else 'trained'} {checkpoint.name} ({seconds} s)", flush=True)
    return checkpoint, seconds


def time_one_cycle(config: ExperimentConfig, name: str, source: Path) -> dict:
    """Cycle 0 (evaluation only) and cycle 1 (ULA, fine-tuning, teacher, evaluation) of one row."""
    config = apply_overrides(config, {"adapt.cycles": 1})
    cpu = time.process_time()
    with tempfile.TemporaryDirectory() as folder:
        cycles = run_experiment(config, workdir=Path(folder), source_checkpoint=source)
    row = {"row": name, "cycle0_s": cycles[0]["time_s"], "cycle1_s": cycles[1]["time_s"],
           "cpu_s": time.process_time() - cpu, "labelled": cycles[1]["ula_num_labelled"],
           "mAP": cycles[1]["target_mAP"]}
    print(row, flush=True)
    return row


def full_trial(config: ExperimentConfig, source: Path) -> dict:
    """A whole trial; the mean teacher's step count after each cycle gives the steps per cycle."""
    steps: list[int] = []
    started, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as folder:
        run_experiment(config, lambda _, checkpoint: steps.append(load_cycle(checkpoint).teacher_steps),
                       workdir=Path(folder), source_checkpoint=source)
    per_cycle = [later - earlier for earlier, later in zip(steps, steps[1:], strict=False)]
    trial = {"seconds": time.perf_counter() - started, "cpu_s": time.process_time() - cpu,
             "steps_per_cycle": per_cycle}
    print(trial, flush=True)
    return trial


def report(rows: list[dict], full: dict, pretrain_seconds, trials: int, command: str, loads, args) -> str:
    info = machine()
    steps = full["steps_per_cycle"]
    mean_steps = sum(steps) / len(steps)
    paper = rows[0]["cpu_s"]
    warm, cold = grid_estimate(rows, full, 0.0, trials), grid_estimate(rows, full, pretrain_seconds or 0.0, trials)
    lines = [
        HEADING, "",
        f"Regenerated by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {args.direction}, seed "
        f"{args.seed}, {args.threads} torch thread(s). Machine: {info['cpu']}, {info['cpus']} CPUs, torch "
        f"{info['torch']}; load average {loads[0]} at the start, {loads[1]} at the end (other work on the "
        "machine slows the figures down).", "",
        "Every row starts from the same source model, so cycle 1 clusters the same features: the same pseudo "
        "labels and training steps for all rows but the one without expansion (fewer labelled images).", "",
        "The CPU time of the run (cycle 0, the same evaluation for every row, plus cycle 1) is the comparison; "
        "the wall time of cycle 1 moves with the machine's load between rows.", "",
        "| row | CPU of cycles 0 + 1 (s) | x paper | cycle 1 wall (s) | labelled | target mAP after cycle 1 |",
        "|---|---|---|---|---|---|",
        *[f"| {r['row']} | {r['cpu_s']:.1f} | {r['cpu_s'] / paper:.2f} | {r['cycle1_s']:.1f} | "
          f"{r['labelled']:.0f} | {r['mAP']:.1f} |" for r in rows], "",
        f"- Cycle 0 (evaluation of the source model, both domains): {rows[0]['cycle0_s']:.1f} s.",
        f"- Source pre-training (from the cache's record): {pretrain_seconds} s.",
        f"- A whole {FULL_TRIAL_ROW} trial (5 cycles): {full['seconds']:.0f} s wall, {full['cpu_s']:.0f} s CPU; "
        f"training steps per cycle "
        f"{steps} (mean {mean_steps:.1f}), so the momentum that keeps half of the teacher per cycle is "
        f"0.5^(1/{mean_steps:.1f}) = {0.5 ** (1 / mean_steps):.4f}.",
        f"- The grid ({trials} trials, 2 at a time on 2 cores), each trial's wall time scaled from the whole "
        f"trial above by its row's CPU time: about {warm / 60:.0f} min when the cache already holds the 6 "
        "source models (they are the ablation's and the extension's: same pre-training), about "
        f"{cold / 60:.0f} min with an empty cache. Both at this load; on idle cores a trial takes about its "
        "CPU time.",
    ]
    return "\n".join(lines) + "\n"


def grid_estimate(rows: list[dict], full: dict, pretrain_seconds, trials: int) -> float:
    """Seconds of wall time: every (seed, direction) pre-trains once, then every row runs its trial, two at once.
    A row's trial is the whole trial's wall time scaled by CPU time, which the machine's load moves less."""
    reference = next(r["cpu_s"] for r in rows if r["row"] == FULL_TRIAL_ROW)
    per_repeat = sum(full["seconds"] * r["cpu_s"] / reference for r in rows)
    repeats = trials // len(rows)
    pretraining = (pretrain_seconds or 0.0) * repeats
    return (pretraining + per_repeat * repeats) / 2
