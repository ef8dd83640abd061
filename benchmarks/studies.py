"""Study wall time and source pre-trainings, with and without the pre-training cache.

The smoke study runs twice into one fresh results folder: the first run fills the cache, the second
(another study name, same folder) finds it. The ablation study takes tens of minutes, so it is not
rerun: its figures are read from the report of a finished one under ``--studies-dir``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_COST = re.compile(r"- Cost: (?P<wall>[^;]+); source pre-training cache: (?P<pretrainings>\d+) pre-trainings "
                   r"for (?P<trials>\d+) trials \((?P<hits>\d+) hits\)")


def read_cost(readme: Path) -> dict | None:
    """The study report's cost line: wall time, pre-trainings, trials and cache hits."""
    if not readme.is_file():
        return None
    match = _COST.search(readme.read_text())
    if match is None:
        return None
    return {"wall": match["wall"], "pretrainings": int(match["pretrainings"]), "trials": int(match["trials"]),
            "hits": int(match["hits"])}


def run_smoke(results_dir: Path, name: str) -> dict:
    command = [sys.executable, "-m", "study.run", "--space", "smoke", "--name", name, "--results-dir", str(results_dir)]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return {"seconds": seconds, "command": "python " + " ".join(command[1:3] + command[3:5]),
            "cost": read_cost(results_dir / name / "README.md")}


def studies(ctx) -> dict:
    out = {"smoke": None, "ablation": read_cost(Path(ctx.studies_dir) / "ablation" / "README.md"),
           "ablation_readme": str(Path(ctx.studies_dir) / "ablation" / "README.md")}
    if not ctx.quick:
        with tempfile.TemporaryDirectory() as tmp:
            cold = run_smoke(Path(tmp), "smoke")
            warm = run_smoke(Path(tmp), "smoke_cached")
        out["smoke"] = {"cold": cold, "warm": warm}
        for label, run in (("first run", cold), ("second run", warm)):
            ctx.check(f"smoke study report read ({label})", run["cost"] is not None,
                      "" if run["cost"] is None else f"{run['cost']['pretrainings']} pre-trainings")
        if cold["cost"] and warm["cost"]:
            ctx.check("smoke study: the second run pre-trains nothing (cache hits)",
                      warm["cost"]["pretrainings"] == 0, f"{warm['cost']['hits']} hits")
    return out
