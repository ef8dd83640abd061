"""Issue 19, items 1-4, 6 and 7: a study's name cannot hide the results folder's own files or outgrow a path, a
--resume sees any edit of a large grid, Ctrl-C with trials still pending ends as an interrupt, a full disk is
refused up front and, half-way, closes every run with one line, and two first starts share the new stores."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections import namedtuple

import pytest
import yaml

from study.paths import StudyPaths
from study.preflight import check_resume
from study.run import main
from study.spaces import SpaceError, load_space
from study.tracking import StudyTracker

from .helpers import REPO, checkpoint_saved, interrupt_when, runs, start, stop, tiny_space


@pytest.mark.parametrize("name, message", [
    ("mlflow.db", "is not a folder name"),
    ("ray", "is a name the results folder keeps for itself"),
    ("cache", "is a name the results folder keeps for itself"),
    ("mlartifacts", "is a name the results folder keeps for itself"),
    ("locks", "is a name the results folder keeps for itself"),
    ("spaces", "is a name the results folder keeps for itself"),
    (".hidden", "is not a folder name"),
    ("a" * 247, "is 247 characters long: use at most 100"),
    ("a" * 300, "is 300 characters long: use at most 100"),
    ("", "is empty"),
])
def test_a_name_that_would_hide_a_store_or_outgrow_a_path_is_refused(tmp_path, capsys, name, message):
    results = tmp_path / "results"
    assert main(["--space", "smoke", "--name", name, "--results-dir", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --name ") and message in err
    assert not results.exists()  # refused before anything was created


def test_resume_sees_an_edit_of_the_last_variant_of_a_large_grid(tmp_path):
    variants = [{"name": f"v{i}", "set": {"ula.eps_quantile": round(0.001 + i * 0.0005, 6)}} for i in range(130)]
    path = tiny_space(tmp_path, "large", variants)
    paths = StudyPaths.resolve("large", tmp_path / "results")
    StudyTracker(paths.tracking_uri, "large").start(load_space(path).model_dump(mode="json"), {}, resume=False)
    check_resume(load_space(path), paths)  # unchanged: accepted

    edited = yaml.safe_load(path.read_text())
    edited["variants"][129]["set"]["ula.eps_quantile"] = 0.5
    path.write_text(yaml.safe_dump(edited))
    with pytest.raises(SpaceError, match=r"config changed since its first start \(variants.*0\.5"):
        check_resume(load_space(path), paths)


def test_too_little_free_space_is_refused_before_ray(tmp_path, capsys, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(20 << 20, 0, 20 << 20))
    assert main(["--space", "smoke", "--results-dir", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has 20 MB free, and a study needs at least 200 MB" in err
    assert not (tmp_path / "results" / "mlflow.db").exists()


FIRST_START = textwrap.dedent("""
    import sys
    from study.lock import store_lock
    from study.tracking import StudyTracker
    from study.paths import default_tracking_uri
    results, name = sys.argv[1], sys.argv[2]
    with store_lock(results):
        StudyTracker(default_tracking_uri(results), name).start({"name": name}, {}, resume=False)
""")


def test_two_first_starts_at_once_create_the_stores_once(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    starts = [subprocess.Popen([sys.executable, "-c", FIRST_START, str(results), name], cwd=REPO,
                               stderr=subprocess.PIPE, text=True) for name in ("one", "two")]
    errors = [proc.communicate(timeout=120)[1] for proc in starts]
    assert [proc.returncode for proc in starts] == [0, 0], errors


@pytest.mark.slow
def test_ctrl_c_with_trials_still_pending(tmp_path):
    results = tmp_path / "results"
    space = tiny_space(tmp_path, "pending", None, **{"adapt.cycles": 3})
    proc = start("study.run", "--space", space, "--seeds", "2", "--max-concurrent", "4", "--results-dir", results)
    try:
        output = interrupt_when(proc, checkpoint_saved(results / "ray" / "pending", 0), signal.SIGINT,
                                "the first cycle")
    finally:
        stop(proc)
    assert proc.returncode == 130, output[-3000:]
    assert "TypeError" not in output and "Traceback" not in output
    assert "error: study 'pending' interrupted:" in output and "--resume" in output
    _, parent, children = runs(results, "pending")
    assert parent.info.status == "KILLED"
    assert "RUNNING" not in {child.info.status for child in children}
    assert (results / "pending.partial" / "README.md").read_text().startswith("> **Partial report**")


def _tmpfs(folder, megabytes: int) -> bool:
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
                             capture_output=True)
    return mounted.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_disk_that_fills_half_way_closes_every_run_with_one_line(tmp_path):
    results = tmp_path / "full"
    if not _tmpfs(results, 20):
        pytest.skip("this machine does not let the tests mount a tmpfs")
    try:
        proc = subprocess.run([sys.executable, "-m", "study.run", "--space", "smoke", "--results-dir", str(results),
                               "--min-free-mb", "1"], cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 1, proc.stderr[-3000:]
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: the disk of --results-dir {results} is full (") and "--resume" in last
        _, parent, children = runs(results, "smoke")
        assert parent.info.status != "RUNNING" and "RUNNING" not in {c.info.status for c in children}
    finally:
        subprocess.run(["umount", "--lazy", str(results)], check=False)  # Ray may still hold a file there
