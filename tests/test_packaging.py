"""The wheel: every package in it, and the search spaces inside the study package (not at the top of site-packages)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import setuptools

REPO = Path(__file__).resolve().parent.parent


def test_listed_packages_are_every_package_in_the_repository():
    tomllib = pytest.importorskip("tomllib")
    setuptools_config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = set(setuptools_config["package-dir"])
    found = set(setuptools.find_packages(where=str(REPO), include=["reidmodel*", "study*"]))
    assert set(setuptools_config["packages"]) == found | mapped, "add the missing package to pyproject.toml"


@pytest.mark.slow
def test_installed_wheel_finds_its_search_spaces(tmp_path):
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs a git checkout to copy the tracked files from")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    source = tmp_path / "source"
    for name in filter(None, tracked.decode().split("\0")):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "wheel"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"study/search_spaces/ablation.yaml", "study/search_spaces/hpo.yaml"} <= set(names)
    assert {name.split("/")[0] for name in names if "dist-info" not in name} == {"reidmodel", "study"}
    assert "reidmodel/data/synthetic/writer.py" in names

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = "import study.spaces as s; print(s.__file__); print(s.SPACES_DIR); print(*s.available_spaces())"
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}).stdout.splitlines()
    assert out[0].startswith(str(site)) and out[1] == str(site / "study" / "search_spaces")
    assert {"ablation", "hpo", "smoke"} <= set(out[2].split())
