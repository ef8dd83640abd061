"""Tiny search studies on the smoke space's data, run through the real CLIs (shared by the e2e tests), and the
trial context of tests that build a trial's config without Ray."""

import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import yaml

from study.trial import TrialContext

REPO = Path(__file__).resolve().parent.parent


def tiny_search(folder: Path, name: str, params: dict, search: dict, **extra) -> Path:
    """Write a search space over the smoke space's tiny data, choosing on target labels unless ``extra`` says
    otherwise; returns its path."""
    smoke = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    space = {"name": name, "kind": "search", "selection": "oracle", "preset": "cpu", "directions": smoke["directions"],
             "fixed": smoke["fixed"], "params": params, "search": search,
             "resources": {"cpus_per_trial": 1, "max_concurrent": 2}, **extra}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def run_module(module: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def run_study(space: Path, results: Path) -> subprocess.CompletedProcess:
    proc = run_module("study.run", "--space", str(space), "--results-dir", str(results))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def trial_context(**fields) -> dict:
    """A TrialContext as it travels in a trial's params; the fields a test leaves out are empty or defaults."""
    empty = {"name": "test", "space": "test", "preset": "cpu", "fixed": {}, "cache_dir": "", "cpus_per_trial": 1,
             "scheduler": "none"}
    return TrialContext(**{**empty, **fields}).as_param()


class FakeTrial(SimpleNamespace):
    """What TrialLogger reads of a Ray Tune Trial, without Ray running."""

    def __str__(self) -> str:
        return self.name


def fake_trial(trial_id: str, *, error: BaseException | None = None, last_result: dict | None = None,
               variant: str = "ULA(750)", overrides: dict | None = None, name: str | None = None,
               direction: str = "synthetic_duke->synthetic_market", seed: int = 1) -> FakeTrial:
    context = trial_context(name="t", space="smoke", fixed={"adapt.cycles": 2})
    params = {"study": context, "direction": direction, "seed": seed,
              "variant": {"name": variant, "set": {"kd.enabled": False, **(overrides or {})}}}
    pickled = None
    if error is not None:  # Ray pickles the trial's exception wrapped, with the trial's own as its cause
        handle, pickled = tempfile.mkstemp(suffix=".pkl")
        os.write(handle, pickle.dumps(SimpleNamespace(cause=error)))
        os.close(handle)
    return FakeTrial(trial_id=trial_id, name=name or f"train_trial_{trial_id}", config=params, last_result=last_result or {}, error_file="/x/error.txt",
                     pickled_error_file=pickled)
