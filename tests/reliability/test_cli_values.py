"""Item 7: --set numbers in any YAML or Python float notation, one parser for both CLIs; a --directions value
the shell cut at '>' gets a hint to quote it."""

import pytest

from reidmodel.config import ConfigError, load_config, parse_overrides, preset
from study.run import build_parser, main, prepare

from .helpers import cli


@pytest.mark.parametrize("text, value", [("1e-5", 1e-5), ("1E-5", 1e-5), ("3.5e-4", 3.5e-4), ("1.0e5", 1e5),
                                         ("2e3", 2000.0), (".5e1", 5.0), ("-1e-3", -1e-3), ("0.001", 0.001)])
def test_float_notations(text, value):
    assert parse_overrides([f"adapt.lr={text}"]) == {"adapt.lr": value}


def test_both_clis_accept_1e_5(tmp_path):
    assert load_config(None, ["adapt.lr=1e-5"], default_preset="cpu").adapt.lr == 1e-5
    args = build_parser().parse_args(["--space", "smoke", "--set", "adapt.lr=1e-5", "--results-dir", str(tmp_path)])
    space, _ = prepare(args)
    assert space.base_config().adapt.lr == 1e-5 and space.fixed["adapt.lr"] == 1e-5
    (tmp_path / "config.yaml").write_text("preset: cpu\nadapt:\n  lr: 1e-5\n")  # config files read the same way
    assert load_config(tmp_path / "config.yaml").adapt.lr == 1e-5


def test_non_finite_numbers_are_refused():
    with pytest.raises(ConfigError, match=r"adapt.lr=inf is not a finite number"):
        load_config(None, ["adapt.lr=.inf"], default_preset="cpu")
    with pytest.raises(ConfigError, match="not a finite number"):
        load_config(None, ["source.lr=.nan"], default_preset="cpu")
    assert preset("cpu").adapt.lr == 3.5e-5


def test_direction_cut_by_the_shell_gets_a_quoting_hint(tmp_path, capsys):
    # `--directions dukemtmc->market1501` unquoted: the shell passes 'dukemtmc-' and writes a file market1501.
    assert main(["--space", "smoke", "--directions", "synthetic_duke-", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "direction 'synthetic_duke-' is not SRC->TGT" in err
    assert "quote it: the shell reads an unquoted > as a redirection" in err


def test_train_cli_accepts_1e_5_and_names_a_bad_value(tmp_path):
    proc = cli("reidmodel.train", "--set", "adapt.lr=1e-5", "--set", "ula.eps=abc", "--out", tmp_path / "run",
               timeout=60)
    assert proc.returncode == 2 and proc.stderr == ("error: ula.eps='abc' is not a number: give a number such as 0.5 or 1e-5 - DBSCAN "
                                             "neighbourhood radius (eps_mode=fixed)\n")
