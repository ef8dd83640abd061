"""Issue 19 item 5: a damaged or foreign store (mlflow.db, optuna.db, a tracking server that is not MLflow) and a
description MLflow would refuse are each refused before Ray starts, in one line, and nothing is written into
a file that is not the store the study expected."""

import os
import sqlite3
from contextlib import closing

import pytest
import yaml

from study.preflight import check_mlflow_server, check_store
from study.run import main
from study.spaces import DESCRIPTION_LIMIT, SpaceError

from .helpers import REPO, refused_in_one_line, serving, snapshot, tiny_search_space

MLFLOW_TABLES = ("alembic_version", "experiments", "runs")


def sqlite_file(path, tables, rows: int = 200):
    """A SQLite database with ``tables``, ``rows`` of 500 characters in the first: many pages, as a store has."""
    with closing(sqlite3.connect(path)) as db:
        for table in tables:
            db.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, value TEXT)")
        db.executemany(f"INSERT INTO {tables[0]} (value) VALUES (?)", [("x" * 500,)] * rows)
        db.commit()
    return path


def garbage(path):
    path.write_bytes(os.urandom(8192))


def truncated_store(path):
    # Stands for a real mlflow.db cut in half (the catalogue cuts a real one): the same tables, many pages.
    whole = sqlite_file(path, MLFLOW_TABLES).read_bytes()
    check_store(path, "MLflow", "")  # whole, it is accepted
    path.write_bytes(whole[: len(whole) // 2])


CASES = {
    "garbage mlflow.db": (garbage, "mlflow.db", "smoke", "is not a usable MLflow database (SQLite cannot read it: "
                                                         "file is not a database): move it aside, or pass another "
                                                         "--results-dir or --tracking-uri"),
    "truncated mlflow.db": (truncated_store, "mlflow.db", "smoke",
                            "is not a usable MLflow database (SQLite cannot read it: database disk image is malformed)"),
    "another program's database as mlflow.db": (
        lambda path: sqlite_file(path, ("notes",)), "mlflow.db", "smoke",
        "is not a usable MLflow database (it has no table alembic_version, experiments, runs; its tables: notes)"),
    "garbage optuna.db (a search)": (garbage, "optuna.db", "search",
                                     "optuna.db is not a usable Optuna database (SQLite cannot read it: file is not "
                                     "a database): move it aside, or pass another --results-dir"),
    "an MLflow store as optuna.db": (lambda path: sqlite_file(path, MLFLOW_TABLES), "optuna.db", "search",
                                     "it has no table studies, trials"),
}


@pytest.mark.parametrize("case", CASES)
def test_damaged_or_foreign_store_is_refused_untouched(tmp_path, capsys, case):
    damage, filename, space, message = CASES[case]
    results = tmp_path / "results"
    results.mkdir()
    damage(results / filename)
    before = snapshot(results)
    space = str(tiny_search_space(tmp_path, "search")) if space == "search" else space
    err = refused_in_one_line(capsys, lambda: main(["--space", space, "--results-dir", str(results)]), message)
    assert str(results / filename) in err
    assert snapshot(results) == before and sorted(p.name for p in results.iterdir()) == [filename]


def test_a_fresh_or_empty_store_is_accepted(tmp_path):
    check_store(tmp_path / "mlflow.db", "MLflow", "")  # missing: MLflow creates it
    (tmp_path / "empty.db").write_bytes(b"")  # an empty SQLite file: the library creates its tables in it
    check_store(tmp_path / "empty.db", "Optuna", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]  # nothing created by the check
    with pytest.raises(SpaceError, match=r"is not a usable MLflow database \(it is a folder\)"):
        check_store(tmp_path, "MLflow", "")  # a folder where the file should be


def test_tracking_server_that_answers_health_but_is_not_mlflow(tmp_path, capsys):
    results = tmp_path / "results"
    with serving() as uri:
        argv = ["--space", "smoke", "--tracking-uri", uri, "--results-dir", str(results)]
        refused_in_one_line(capsys, lambda: main(argv),
                            f"--tracking-uri {uri} answers, but not as an MLflow server (GET "
                            "/api/2.0/mlflow/experiments/search is not JSON): pass the URI `mlflow server` listens on")
    assert not (results / "mlflow.db").exists() and not (results / "ray").exists()


@pytest.mark.parametrize("body, accepted", [
    (b'{"experiments": [{"experiment_id": "0", "name": "Default"}], "next_page_token": "x"}', True),
    (b"{}", True),  # an MLflow server with no experiment: protobuf's JSON leaves the empty list out
    (b'{"status": "ok"}', False),
    (b"[1, 2]", False),
])
def test_mlflow_server_shape(body, accepted):
    with serving(body, "application/json") as uri:
        if accepted:
            check_mlflow_server(uri)
        else:
            with pytest.raises(SpaceError, match="is JSON without MLflow's experiments"):
                check_mlflow_server(uri)


def test_description_over_mlflows_tag_limit(tmp_path, capsys):
    from mlflow.utils.validation import MAX_EXPERIMENT_TAG_VAL_LENGTH

    assert DESCRIPTION_LIMIT == MAX_EXPERIMENT_TAG_VAL_LENGTH  # the experiment's note: longer is refused by MLflow
    space = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    space["description"] = "d" * (DESCRIPTION_LIMIT + 1)
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(space))
    results = tmp_path / "results"
    err = refused_in_one_line(capsys, lambda: main(["--space", str(path), "--results-dir", str(results)]),
                              f"{path}: description is 20,001 characters long: shorten it to at most 20,000")
    assert len(err) < 300 and not results.exists()
    space["description"] = "d" * DESCRIPTION_LIMIT
    path.write_text(yaml.safe_dump(space))
    from study.spaces import load_space

    assert len(load_space(path).description) == DESCRIPTION_LIMIT
