"""Item 4: cache entries carry a checksum; a corrupt entry is detected, named in the log, moved aside and
retrained instead of failing every trial that shares its key."""

import json
import logging

import torch

from study.cache import PretrainCache

SIGNATURE = {"data": {"source": "synthetic_duke"}, "seed": 0}


def save_weights(path):
    torch.save({"model": {"w": torch.ones(64, 64)}}, path)


def test_truncated_entry_is_moved_aside_and_retrained(tmp_path, caplog):
    cache = PretrainCache(tmp_path)
    checkpoint, hit = cache.get_or_train(SIGNATURE, save_weights)
    assert not hit and json.loads(checkpoint.with_suffix(".json").read_text())["sha256"]
    good = checkpoint.read_bytes()
    checkpoint.write_bytes(good[: len(good) // 2])  # a copy or a write cut short

    calls = []
    with caplog.at_level(logging.WARNING, logger="study.cache"):
        again, hit = cache.get_or_train(SIGNATURE, lambda path: (calls.append(path), save_weights(path)))
    assert not hit and len(calls) == 1 and again == checkpoint
    assert torch.load(again, weights_only=True)["model"]["w"].shape == (64, 64)
    assert (tmp_path / f"{checkpoint.name}.corrupt").read_bytes() == good[: len(good) // 2]
    assert f"pre-training cache entry {checkpoint} is damaged (its sha256 does not match)" in caplog.text
    assert cache.get_or_train(SIGNATURE, save_weights) == (checkpoint, True)  # whole again: a plain hit


def test_entry_without_checksum_is_checked_once_by_loading_it(tmp_path):
    cache = PretrainCache(tmp_path)
    checkpoint, _ = cache.get_or_train(SIGNATURE, save_weights)
    sidecar = checkpoint.with_suffix(".json")
    metadata = json.loads(sidecar.read_text())
    sha = metadata.pop("sha256")
    sidecar.write_text(json.dumps(metadata))  # as entries were written before checksums
    assert cache.get_or_train(SIGNATURE, save_weights) == (checkpoint, True)
    assert json.loads(sidecar.read_text())["sha256"] == sha  # kept, and now checksummed

    sidecar.write_text(json.dumps(metadata))
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    assert cache.get_or_train(SIGNATURE, save_weights) == (checkpoint, False)
    assert (tmp_path / f"{checkpoint.name}.corrupt").is_file()
