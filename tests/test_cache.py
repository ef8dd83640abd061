import hashlib
import json
import multiprocessing
import time
from pathlib import Path

import pytest

from study.cache import PretrainCache

SIGNATURE = {"data": {"source": "synthetic_duke", "height": 64}, "model": {"attention": ["conv4"]}, "seed": 0}


def write_checkpoint(path: Path) -> None:
    path.write_bytes(b"weights")


def counting_train(counter: Path, path: Path) -> None:
    """Slow enough that a second process arrives while the first is still training."""
    with open(counter, "a") as f:
        f.write("x")
    time.sleep(0.5)
    path.write_bytes(b"weights")


def ask_cache(root: Path, counter: Path, out: Path) -> None:
    checkpoint, hit = PretrainCache(root).get_or_train(SIGNATURE, lambda p: counting_train(counter, p))
    out.write_text(f"{checkpoint}|{hit}")


def test_key_is_stable_and_order_independent(tmp_path):
    cache = PretrainCache(tmp_path)
    reordered = {"seed": 0, "model": {"attention": ["conv4"]}, "data": {"height": 64, "source": "synthetic_duke"}}
    assert cache.key(SIGNATURE) == cache.key(reordered)
    # sha256 of the canonical JSON, fixed so that a change of encoding (and a silent cache miss) fails here
    assert cache.key({"b": [1, 2], "a": 1}) == hashlib.sha256(b'{"a":1,"b":[1,2]}').hexdigest()
    assert len(cache.key(SIGNATURE)) == 64


@pytest.mark.parametrize("change", [
    {"seed": 1},
    {"model": {"attention": ["conv4", "conv5"]}},
    {"data": {"source": "synthetic_duke", "height": 128}},
])
def test_key_changes_with_any_field(tmp_path, change):
    cache = PretrainCache(tmp_path)
    assert cache.key({**SIGNATURE, **change}) != cache.key(SIGNATURE)


def test_key_rejects_unserialisable_signature(tmp_path):
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        PretrainCache(tmp_path).key({"root": Path("/data")})


def test_miss_then_hit(tmp_path):
    cache = PretrainCache(tmp_path / "cache")
    calls = []

    def train(path: Path) -> None:
        calls.append(path)
        write_checkpoint(path)

    checkpoint, hit = cache.get_or_train(SIGNATURE, train)
    assert not hit and len(calls) == 1
    assert checkpoint == tmp_path / "cache" / f"{cache.key(SIGNATURE)}.pt"
    assert checkpoint.read_bytes() == b"weights"
    assert calls[0].parent == checkpoint.parent and calls[0] != checkpoint  # trained into a temporary file
    metadata = json.loads(checkpoint.with_suffix(".json").read_text())
    assert metadata["signature"] == SIGNATURE and metadata["train_seconds"] >= 0

    again, hit = PretrainCache(tmp_path / "cache").get_or_train(SIGNATURE, train)
    assert hit and again == checkpoint and len(calls) == 1
    assert sorted(p.name for p in checkpoint.parent.iterdir() if not p.name.endswith(".lock")) == [
        checkpoint.with_suffix(".json").name, checkpoint.name]


def test_two_processes_train_once(tmp_path):
    counter = tmp_path / "calls.txt"
    counter.touch()
    context = multiprocessing.get_context("fork")
    outs = [tmp_path / f"out{i}.txt" for i in range(2)]
    workers = [context.Process(target=ask_cache, args=(tmp_path / "cache", counter, out)) for out in outs]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert counter.read_text() == "x"
    results = sorted(out.read_text().split("|") for out in outs)
    assert results[0][0] == results[1][0]
    assert sorted(hit for _, hit in results) == ["False", "True"]


def test_crash_in_train_leaves_no_entry_and_reraises(tmp_path):
    cache = PretrainCache(tmp_path)

    def crashing_train(path: Path) -> None:
        path.write_bytes(b"half")
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        cache.get_or_train(SIGNATURE, crashing_train)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []

    checkpoint, hit = cache.get_or_train(SIGNATURE, write_checkpoint)
    assert not hit and checkpoint.read_bytes() == b"weights"


def test_train_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="wrote no checkpoint"):
        PretrainCache(tmp_path).get_or_train(SIGNATURE, lambda path: None)
    assert not any(p.suffix == ".pt" for p in tmp_path.iterdir())
