"""Content-addressed cache of source pre-training checkpoints.

Stage 1 (supervised training on the source domain) does not depend on any adaptation hyper-parameter, so
every trial of every study that shares its signature reuses one checkpoint. Concurrent trials asking for the
same missing entry are serialised with an fcntl lock per key: one trains, the others wait and then hit.
An entry exists only once its checkpoint was moved into place with os.replace, so a crash mid-training
never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path


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
        if checkpoint.is_file():
            return checkpoint, True
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{key}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if checkpoint.is_file():  # another process trained it while this one waited for the lock
                    return checkpoint, True
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
