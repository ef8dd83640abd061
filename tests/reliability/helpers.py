"""Shared by the reliability tests and the catalogue: tiny spaces, the real CLIs, MLflow and folder snapshots."""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
FAULT_ENV = "REID_STUDY_TEST_FAULT"  # study.trainable's test-only hook
REFUSAL_S = 5.0  # a bad input is refused within this many seconds (in-process: without the CLI's imports)


def tiny_space(folder: Path, name: str, variants: list[dict] | None = None, **fixed) -> Path:
    """The smoke space (tiny synthetic data, one direction) renamed, with other variants or fixed keys."""
    space = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    space["name"] = name
    space["fixed"].update(fixed)
    if variants is not None:
        space["variants"] = variants
        space.pop("tables")  # the smoke space's table names its own variants
    path = Path(folder) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def tiny_search_space(folder: Path, name: str) -> Path:
    """The smoke space as a one-trial Optuna search over kd.mu: a study that keeps an optuna.db."""
    space = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    for key in ("variants", "tables"):
        space.pop(key)
    space.update(name=name, kind="search", selection="oracle", params={"kd.mu": {"type": "uniform", "low": 0.1, "high": 0.9}},
                 search={"num_samples": 1})
    path = Path(folder) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def refused_in_one_line(capsys, run, message: str) -> str:
    """``run()`` returns (or exits with) 2 within REFUSAL_S, printing one stderr line that holds ``message``."""
    started = time.monotonic()
    try:
        code = run()
    except SystemExit as exit_:  # argparse's parser.exit
        code = exit_.code
    seconds = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, (code, err)
    assert seconds < REFUSAL_S, f"refused after {seconds:.1f} s"
    return err


HTML_PAGE = b"<html><body>It works!</body></html>"


@contextmanager
def serving(body: bytes = HTML_PAGE, kind: str = "text/html"):
    """A web server on 127.0.0.1 that answers any GET with 200 and ``body`` (as one with a /health page does);
    yields its URI."""
    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def cli(module: str, *args: str, env: dict | None = None, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def start(module: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def interrupt_when(proc: subprocess.Popen, condition, sig: int, what: str, timeout: float = 300) -> str:
    """Send ``sig`` to the driver once ``condition()`` holds; returns the driver's output."""
    def reached() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the study ended before {what}: {proc.stdout.read()[-3000:]}")
        return condition()

    wait_for(reached, timeout, what)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=180)
    return output


def checkpoint_saved(experiment: Path, cycle: int):
    return lambda: bool(list(experiment.glob(f"*/checkpoint_{cycle:06d}")))


def runs(results: Path, study: str):
    """(parent, children) of the study's latest parent run in results/mlflow.db."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(study)
    found = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    parent = next(r for r in found if r.data.tags.get("study.role") == "parent")
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return client, parent, children


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path: equal snapshots, untouched folder."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def finished_study_folder(results: Path, name: str = "finished") -> Path:
    """Stands for a committed study's results: the folder a failed or interrupted study must not touch."""
    folder = results / name
    folder.mkdir(parents=True)
    (folder / "README.md").write_text("# a finished study\n")
    (folder / "table1.csv").write_text("variant,mAP\nULA,24.1\n")
    return folder


def stop(proc: subprocess.Popen) -> None:
    """SIGKILL a driver a test started, if it still runs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


HEAD_SCRIPT = """
import sys, ray
ray.init(address="local", num_cpus=1, include_dashboard=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # runs until the test closes stdin; ray.shutdown then runs at exit
"""


def start_token_head(token: str) -> tuple[subprocess.Popen, str]:
    """A one-node Ray started as study.run starts its local one; Ray 2.60 guards it with a token (``token`` here,
    not ~/.ray/auth_token). Stopped by closing its stdin, never ``ray stop``, which stops every Ray of the machine."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_AUTH_MODE"}
    env["RAY_AUTH_TOKEN"] = token
    proc = subprocess.Popen([sys.executable, "-c", HEAD_SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    address = proc.stdout.readline().strip()
    if not address:
        stop(proc)
        raise AssertionError("the token-auth Ray head did not start")
    return proc, address


def stop_head(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        stop(proc)
