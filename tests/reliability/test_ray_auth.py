"""Item 8: a driver without the cluster's Ray token (or with a wrong one) fails in seconds with one line naming
the fix; README says what listens where, how the token is made and shared, and what --storage trusts."""

import time

import pytest

from study.preflight import check_address
from study.run import build_parser, main

from .helpers import REPO, start_token_head, stop_head

TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.mark.slow
def test_missing_or_wrong_token_is_one_line(tmp_path, capsys, monkeypatch):
    head, address = start_token_head(TOKEN)
    try:
        argv = ["--space", "smoke", "--address", address, "--results-dir", str(tmp_path)]
        for env in ({}, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "f" * 32}):
            monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
            monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            started = time.monotonic()
            assert main(argv) == 2
            assert time.monotonic() - started < 20
            err = capsys.readouterr().err
            assert err.count("\n") == 1, err
            assert "refused this driver's token (missing or wrong): run the driver with RAY_AUTH_MODE=token" in err
        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
        check_address(address)  # the right token passes
    finally:
        stop_head(head)


def test_readme_and_help_say_what_listens_and_what_storage_trusts():
    readme = (REPO / "README.md").read_text()
    cluster = readme[readme.index("### On a Ray cluster"):readme.index("## The embedded synthetic benchmark")]
    for needed in ("ray get-auth-token --generate", "RAY_AUTH_MODE=token", "What listens where", "ss -ltnp",
                   "can run code on the driver"):
        assert needed in cluster, needed
    assert "--tracking-uri http://127.0.0.1" not in cluster  # workers on other nodes could not reach it
    help_text = " ".join(build_parser().format_help().split())
    assert "whoever can write there can run code as this driver" in help_text
