"""Tiny search studies on the smoke space's data, run through the real CLIs (shared by the e2e tests), and the
trial context of tests that build a trial's config without Ray."""

import subprocess
import sys
from pathlib import Path

import yaml

from study.trial import TrialContext

REPO = Path(__file__).resolve().parent.parent


def tiny_search(folder: Path, name: str, params: dict, search: dict, **extra) -> Path:
    """Write a search space over the smoke space's tiny data; returns its path."""
    smoke = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    space = {"name": name, "kind": "search", "preset": "cpu", "directions": smoke["directions"],
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
    empty = {"name": "test", "space": "test", "preset": "cpu", "fixed": {}, "tracking_uri": "", "parent_run_id": "",
             "cache_dir": "", "cpus_per_trial": 1, "scheduler": "none"}
    return TrialContext(**{**empty, **fields}).as_param()
