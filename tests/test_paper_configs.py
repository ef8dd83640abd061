"""configs/: the paper's two directions, read by the same loader as ``python -m reidmodel.train --config``."""

from pathlib import Path

import pytest

from reidmodel.config import apply_overrides, load_config, preset
from reidmodel.train import main

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DIRECTIONS = [("paper_duke2market.yaml", "dukemtmc", "market1501"), ("paper_market2duke.yaml", "market1501", "dukemtmc")]


@pytest.mark.parametrize("name, source, target", DIRECTIONS)
def test_paper_config_is_the_paper_preset_in_one_direction(name, source, target, tmp_path):
    config = load_config(CONFIGS / name, [f"data.root={tmp_path}"], default_preset="cpu")
    expected = {"data.root": str(tmp_path), "data.source": source, "data.target": target}
    assert config == apply_overrides(preset("paper"), expected)


@pytest.mark.parametrize("name", [name for name, _, _ in DIRECTIONS])
def test_train_without_data_root_says_what_to_set(name, tmp_path, capsys):
    assert main(["--config", str(CONFIGS / name), "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs data.root" in err
