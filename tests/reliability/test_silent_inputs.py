"""Issue 19 item 8: inputs that used to pass without a word (a key given twice, a broken image link, an empty
--name, a seed too large for numpy, a report of a folder that does not exist, queries without a gallery match)
are each refused in one line with exit code 2, creating nothing."""

import os

import pytest
from fakedata import CUSTOM_FILES, UNMATCHED_FILES, write_market, write_market_layout

from reidmodel.config import ConfigError, load_config, read_yaml
from reidmodel.data.__main__ import main as data_main
from study.publish import main as report_main
from study.run import main

from .helpers import REPO, refused_in_one_line, snapshot

SMOKE = (REPO / "search_spaces" / "smoke.yaml").read_text()


def test_key_given_twice_in_a_space_file(tmp_path, capsys):
    path = tmp_path / "twice.yaml"
    path.write_text(SMOKE.replace("kind: grid\n", "kind: grid\npreset: paper\n"))  # and preset: cpu below
    argv = ["--space", str(path), "--results-dir", str(tmp_path / "results")]
    err = refused_in_one_line(capsys, lambda: main(argv), "key 'preset' is given twice, on lines 5 and 6: keep one")
    assert err.startswith(f"error: {path}: not valid YAML (") and not (tmp_path / "results").exists()
    path.write_text(SMOKE.replace("fixed:\n", "fixed:\n  adapt.cycles: 3\n"))  # nested: adapt.cycles twice
    refused_in_one_line(capsys, lambda: main(argv), "key 'adapt.cycles' is given twice, on lines 8 and 16")


def test_key_given_twice_in_a_config_file(tmp_path):
    (tmp_path / "config.yaml").write_text("preset: cpu\nula:\n  eps: 0.5\n  min_samples: 2\n  eps: 0.7\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(key 'eps' is given twice, on lines 3 and 5: keep one\)"):
        load_config(tmp_path / "config.yaml")
    # A merge key (<<) overrides the merged mapping's keys on purpose: still read as YAML defines it.
    assert read_yaml("a: &a {x: 1, y: 1}\nb:\n  <<: *a\n  x: 2\n") == {"a": {"x": 1, "y": 1}, "b": {"x": 2, "y": 1}}


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_broken_image_link_is_named(tmp_path, capsys, kind):
    folder = write_market(tmp_path)
    link = folder / "query" / "0002_c6s1_000009_00.jpg"
    link.symlink_to(tmp_path / "moved-away.jpg" if kind == "dangling" else link)
    before = snapshot(folder)
    refused_in_one_line(capsys, lambda: data_main([str(folder)]),
                        f"{link} is a broken symbolic link: it points to {os.readlink(link)}, which is missing or "
                        "loops: fix the link or delete it")
    assert snapshot(folder) == before


def test_empty_name(tmp_path, capsys):
    argv = ["--space", "smoke", "--name", "", "--results-dir", str(tmp_path / "results")]
    refused_in_one_line(capsys, lambda: main(argv),
                        "--name '' is empty: pass a study name, or leave --name out to use the space's name (smoke)")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("where, message", [
    (["--set", "runtime.seed=99999999999999999999"],
     "--set: runtime.seed=99999999999999999999 is out of range (>= 0, <= 4294967295): give a value in that range"),
    (["--set", "data.synthetic_seed=-1"], "--set: data.synthetic_seed=-1 is out of range (>= 0, <= 4294967295)"),
    ("seeds: [0, 18446744073709551616]\n", "seeds[1]=18446744073709551616 is out of range (<= 4294967295)"),
    ("search: {seed: 4294967296}\n", "search.seed=4294967296 is out of range (>= 0, <= 4294967295)"),
])
def test_seed_out_of_range_names_the_key(tmp_path, capsys, where, message):
    argv = ["--space", "smoke", "--results-dir", str(tmp_path / "results")]
    if isinstance(where, str):
        (tmp_path / "seeds.yaml").write_text(SMOKE + where)
        argv[1] = str(tmp_path / "seeds.yaml")
    else:
        argv += where
    refused_in_one_line(capsys, lambda: main(argv), message)
    assert not (tmp_path / "results").exists()
    with pytest.raises(ConfigError, match=r"runtime.seed=4294967296 is out of range"):  # reidmodel.train's --set
        load_config(None, ["runtime.seed=4294967296"])
    assert load_config(None, ["runtime.seed=4294967295"]).runtime.seed == 2**32 - 1


def test_report_of_a_missing_results_folder_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "typo"
    refused_in_one_line(capsys, lambda: report_main(["--study", "smoke", "--results-dir", str(missing)]),
                        f"--results-dir {missing} does not exist: pass the --results-dir the study ran with")
    assert not missing.exists()
    (tmp_path / "empty").mkdir()
    refused_in_one_line(capsys, lambda: report_main(["--study", "smoke", "--results-dir", str(tmp_path / "empty")]),
                        "holds no mlflow.db: pass the --results-dir the study ran with, or its --tracking-uri")
    assert list((tmp_path / "empty").iterdir()) == []
    (tmp_path / "empty" / "mlflow.db").write_bytes(b"not a database, 32 bytes long....")
    refused_in_one_line(capsys, lambda: report_main(["--study", "smoke", "--results-dir", str(tmp_path / "empty")]),
                        "mlflow.db is not a usable MLflow database (SQLite cannot read it: file is not a database)")


def test_queries_without_a_gallery_match(tmp_path, capsys):
    root = tmp_path / "data"
    write_market_layout(root / "good", CUSTOM_FILES)
    folder = write_market_layout(root / "unmatched", UNMATCHED_FILES)
    message = (f"{folder}: all 2 queries have no gallery match (a gallery image of the same id from another "
               "camera), so the dataset cannot be evaluated: add gallery images of the query ids")
    refused_in_one_line(capsys, lambda: data_main([str(folder)]), message)
    argv = ["--space", "smoke", "--data-root", str(root), "--directions", "good->unmatched",
            "--results-dir", str(tmp_path / "results")]
    refused_in_one_line(capsys, lambda: main(argv), f"--data-root: {message}")
    assert not (tmp_path / "results").exists()
    assert data_main([str(root / "good")]) == 0  # one query matched is enough to evaluate
