"""Item 3: what can be checked before Ray starts is, each failing in seconds with one line and exit code 2;
without --address the study starts its own Ray even when a dead cluster is on record."""

import http.server
import socket
import threading
import time

import pytest
import torch
import yaml

from study.run import main
from study.spaces import load_space
from study.tracking import StudyTracker

from .helpers import REPO

NO_GPU = not torch.cuda.is_available()


def _space_with(tmp_path, **search):
    space = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    space["search"] = search
    path = tmp_path / "metric.yaml"
    path.write_text(yaml.safe_dump(space))
    return str(path)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


CASES = {
    "metric typo": (lambda tmp: ["--space", _space_with(tmp, metric="target_mAPP")],
                    "search metric 'target_mAPP' is not a metric a cycle reports: did you mean target_mAP?"),
    "unknown device": (lambda tmp: ["--set", "runtime.device=tpu"], "runtime.device='tpu' is not allowed"),
    "cuda for trials without a GPU": (lambda tmp: ["--set", "runtime.device=cuda"], "Ray hides the GPUs from them"),
    "pretrained not a state dict": (lambda tmp: ["--set", "model.pretrained=/etc/passwd"],
                                    "could not be read as a torch state dict"),
    "tracking URI unreachable": (lambda tmp: ["--tracking-uri", f"http://127.0.0.1:{_closed_port()}"],
                                 "is not reachable (Connection refused"),
    "address unreachable": (lambda tmp: ["--address", f"127.0.0.1:{_closed_port()}"], "nothing answers at 127.0.0.1"),
    "results folder not writable": (lambda tmp: ["--results-dir", str(tmp / "a-file" / "results")],
                                    "is not writable"),
    "tracking store not writable": (lambda tmp: ["--tracking-uri", "sqlite:////proc/mlflow.db"],
                                    "--tracking-uri sqlite:////proc/mlflow.db: /proc cannot be written"),
    "storage not writable": (lambda tmp: ["--storage", "/proc/ray-results"], "--storage: /proc/ray-results cannot"),
}
if NO_GPU:
    CASES["GPU asked for, none here"] = (lambda tmp: ["--gpus-per-trial", "1"],
                                         "--gpus-per-trial 1 but this machine has 0 GPU(s)")
    CASES["cuda without CUDA"] = (lambda tmp: ["--set", "runtime.device=cuda", "--gpus-per-trial", "0.5"],
                                  "--gpus-per-trial 0.5 but this machine has 0 GPU(s)")


@pytest.mark.parametrize("case", CASES)
def test_bad_input_fails_before_ray_in_one_line(tmp_path, capsys, case):
    (tmp_path / "a-file").write_text("a file where a folder should be")
    argv, message = CASES[case]
    argv = argv(tmp_path)
    if "--space" not in argv:
        argv = ["--space", "smoke", *argv]
    if "--results-dir" not in argv:
        argv += ["--results-dir", str(tmp_path / "results")]
    started = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - started < 15
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "results" / "ray").exists() and not (tmp_path / "results" / "mlflow.db").exists()


def test_tracking_uri_that_is_not_mlflow(tmp_path, capsys):
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # 501 to any GET
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_port}"
        assert main(["--space", "smoke", "--tracking-uri", uri, "--results-dir", str(tmp_path)]) == 2
    finally:
        server.shutdown()
    assert f"--tracking-uri {uri} answers, but not as an MLflow server (GET /health: HTTP 501)" in capsys.readouterr().err


def test_address_auto_without_a_cluster(tmp_path, capsys, monkeypatch):
    import ray._private.services

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # Ray's record of the last `ray start`: RAY_TMPDIR/ray/
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray._private.services, "find_gcs_addresses", lambda: [])  # other Rays of this machine
    argv = ["--space", "smoke", "--address", "auto", "--results-dir", str(tmp_path / "results")]
    assert main(argv) == 2
    assert "--address auto: no running Ray cluster found" in capsys.readouterr().err
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{_closed_port()}")  # a dead cluster
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --address auto (") and "): nothing answers at " in err  # named, not retried


def test_resume_with_a_changed_config_is_refused_naming_the_keys(tmp_path, capsys):
    results = tmp_path / "results"
    (results / "ray" / "smoke").mkdir(parents=True)
    (results / "ray" / "smoke" / "tuner.pkl").write_bytes(b"")  # a study that started and stopped
    tracker = StudyTracker(f"sqlite:///{results / 'mlflow.db'}", "smoke")
    tracker.start(load_space("smoke").model_dump(mode="json"), {}, resume=False)
    tracker.finish("KILLED")
    capsys.readouterr()  # MLflow's own log lines while creating the store
    argv = ["--space", "smoke", "--resume", "--results-dir", str(results)]
    assert main([*argv, "--set", "adapt.cycles=3", "ula.eps_quantile=0.05"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume: the study's config changed since its first start" in err
    assert "fixed.adapt.cycles 1 -> 3" in err and "fixed.ula.eps_quantile 0.03 -> 0.05" in err


@pytest.mark.slow
def test_without_address_a_dead_cluster_on_record_is_not_joined(faulty_study):
    # faulty_study ran with RAY_TMPDIR holding a ray_current_cluster that names a dead GCS.
    assert "Number of trials: 2/2" in faulty_study["proc"].stdout
