"""Item 6: an undecodable image is found at dataset load, named, before any training; the data CLI decodes every
image by default."""

import shutil
import time
from pathlib import Path

import pytest
from fakedata import write_market

from reidmodel.config import apply_overrides
from reidmodel.data import DatasetError
from reidmodel.pipeline import load_domain, run_experiment

from .helpers import cli


def test_corrupt_image_stops_the_run_at_load_naming_the_file(tiny_config, tmp_path):
    source = next(Path(tiny_config.data.synthetic_cache).glob("*/synthetic_duke"))
    root = tmp_path / "data"
    shutil.copytree(source, root / "synthetic_duke")
    bad = sorted((root / "synthetic_duke" / "bounding_box_test").glob("*.jpg"))[3]
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    config = apply_overrides(tiny_config, {"data.root": str(root), "data.in_memory": False,
                                           "data.source": "synthetic_duke", "data.target": "synthetic_duke"})
    started = time.monotonic()
    with pytest.raises(DatasetError, match=f"cannot decode image {bad} .*: replace or delete the file"):
        load_domain(config, "synthetic_duke")
    reported = []
    with pytest.raises(DatasetError, match=str(bad)):
        run_experiment(config, lambda metrics, _: reported.append(metrics), workdir=tmp_path / "run")
    assert reported == [] and not (tmp_path / "run" / "source.pt").exists()  # nothing trained
    assert time.monotonic() - started < 30


def test_data_cli_decodes_every_image_by_default(tmp_path):
    folder = write_market(tmp_path)
    empty = folder / "query" / "0002_c4s1_000001_00.jpg"
    empty.write_bytes(b"")  # a 0-byte .jpg
    proc = cli("reidmodel.data", folder, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"error: cannot decode image {empty}")
    assert cli("reidmodel.data", folder, "--no-verify-images", timeout=60).returncode == 0
