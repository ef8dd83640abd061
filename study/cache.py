"""Content-addressed cache of source pre-training checkpoints.

Stage 1 (supervised training on the source domain) does not depend on any adaptation hyper-parameter, so
every trial of every study that shares its signature reuses one checkpoint. Concurrent trials asking for the
same missing entry are serialised with an fcntl lock per key: one trains, the others wait and then hit.
An entry exists only once its checkpoint was moved into place with os.replace, so a crash mid-training
never leaves a half-written checkpoint behind. Its sidecar JSON holds the checkpoint's sha256, checked on every
hit: an entry damaged later (a full disk, a copy cut short) is moved aside as ``*.corrupt``, named in the log,
and trained again instead of failing every trial that shares its key.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)


class PretrainCache:
    """Checkpoints at ``<root>/<key>.pt`` with ``<root>/<key>.json`` (signature and timing) beside them."""

    def __init__(self, root: Path):
        self.root = Path(root).expanduser().resolve()

    def key(self, signature: dict) -> str:
        """sha256 of the canonical JSON (sorted keys, no whitespace) so dict order does not matter."""
        try:
            canonical = json.dumps(signature, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        except TypeError as error:
            raise TypeError(f"pre-training signature is not JSON-serialisable ({error}); "
                            "convert paths and tuples to str/list before hashing") from None
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    def get_or_train(self, signature: dict, train: Callable[[Path], None]) -> tuple[Path, bool]:
        """Path of the checkpoint for this signature and whether it was a hit.

        On a miss ``train(tmp_path)`` must write the checkpoint to ``tmp_path``; it runs at most once per
        key even when several processes ask at the same time. Exceptions from ``train`` propagate and leave
        no entry.
        """
        key = self.key(signature)
        checkpoint = self.root / f"{key}.pt"
        if checkpoint.is_file() and self._damage(key) is None:
            return checkpoint, True
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{key}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if checkpoint.is_file():  # another process trained it while this one waited for the lock
                    damage = self._damage(key)
                    if damage is None:
                        return checkpoint, True
                    self._move_aside(key, damage)
                self._train_into(key, signature, train)
                return checkpoint, False
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _train_into(self, key: str, signature: dict, train: Callable[[Path], None]) -> None:
        # The temporary file lives in the cache folder so os.replace stays an atomic rename.
        tmp = self.root / f".{key}.{os.getpid()}.tmp"
        started = time.time()
        try:
            train(tmp)
            if not tmp.is_file():
                raise RuntimeError(f"pre-training finished but wrote no checkpoint at {tmp}; "
                                   "the train callable must save to the path it is given")
            metadata = {
                "key": key,
                "sha256": _sha256(tmp),
                "signature": signature,
                "train_seconds": round(time.time() - started, 3),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "hostname": socket.gethostname(),
            }
            tmp_metadata = tmp.with_suffix(".json.tmp")
            tmp_metadata.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
            os.replace(tmp_metadata, self.root / f"{key}.json")
            os.replace(tmp, self.root / f"{key}.pt")
        finally:
            tmp.unlink(missing_ok=True)
            tmp.with_suffix(".json.tmp").unlink(missing_ok=True)

    def _damage(self, key: str) -> str | None:
        """Why the entry cannot be trusted, or None when its checkpoint matches the sha256 in its sidecar.
        An entry written before checksums existed is checked once by loading it (weights only), then gets one."""
        checkpoint, sidecar = self.root / f"{key}.pt", self.root / f"{key}.json"
        try:
            metadata = json.loads(sidecar.read_text())
            if "sha256" in metadata:
                return None if metadata["sha256"] == _sha256(checkpoint) else "its sha256 does not match"
            import torch

            torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as exc:  # an unreadable sidecar or checkpoint: damaged either way
            return f"unreadable: {type(exc).__name__}: {' '.join(str(exc).split())}"
        metadata["sha256"] = _sha256(checkpoint)
        tmp = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, sidecar)
        return None

    def _move_aside(self, key: str, damage: str) -> None:
        """Keep a damaged entry for inspection as ``*.corrupt`` (replacing an older one) and free its key."""
        checkpoint = self.root / f"{key}.pt"
        for path in (checkpoint, self.root / f"{key}.json"):
            if path.exists():
                os.replace(path, path.with_name(path.name + ".corrupt"))
        log.warning("pre-training cache entry %s is damaged (%s): moved aside as %s.corrupt, training it again",
                    checkpoint, damage, checkpoint.name)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
