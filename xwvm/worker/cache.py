"""The worker's content-addressed file cache: each sha256 downloaded once and verified."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from xwvm.client.sdk import sha256_file


class DataCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def path(self, sha256: str) -> Path:
        return self.root / sha256

    def _lock(self, sha256: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(sha256, threading.Lock())

    def get(self, sha256: str, fetch: Callable[[Path], None]) -> Path:
        """The cached file; ``fetch(dest)`` downloads it (resumably) when missing. Two
        callers wanting the same content cause one download."""
        with self._lock(sha256):
            final = self.path(sha256)
            if final.is_file():
                os.utime(final)  # recency, for eviction
                return final
            tmp = self.root / f"{sha256}.download"
            fetch(tmp)
            if sha256_file(tmp) != sha256:
                tmp.unlink()
                raise OSError(f"cached download does not match sha256 {sha256}")
            os.chmod(tmp, 0o444)
            os.replace(tmp, final)
            return final
