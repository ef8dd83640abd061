import subprocess
import sys
from pathlib import Path

from fakedata import write_market, write_msmt17

REPO = Path(__file__).resolve().parents[1]


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "reidmodel.data", *map(str, args)], capture_output=True, text=True, cwd=REPO
    )


def test_prints_summary(tmp_path):
    folder = write_msmt17(tmp_path, "V2")
    result = _run(folder, "--format", "msmt17", "--verify-images")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"=> Loaded msmt17 from {folder}"
    assert [line.split("|")[0].strip() for line in lines[4:7]] == ["train", "query", "gallery"]
    assert [int(x) for x in lines[4].split("|")[1:]] == [3, 4, 4]


def test_errors_are_one_line_exit_2(tmp_path):
    folder = write_market(tmp_path)
    bad = folder / "bounding_box_train" / "0002_c1s1_000451_03.jpg"
    bad.write_bytes(b"garbage")
    result = _run(folder, "--verify-images")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: cannot decode image {bad}")
    result = _run(tmp_path / "missing")
    assert result.returncode == 2 and result.stderr.startswith(f"error: dataset folder {tmp_path / 'missing'}")
