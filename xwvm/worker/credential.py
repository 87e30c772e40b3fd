"""The worker credential file written by `xwvm worker enroll`."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from xwvm.errors import XwvmError


@dataclass
class Credential:
    server: str
    login: str
    password: str
    ca_pem: str | None = None

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"kind": "xwvm-worker-credential", "version": 1, **asdict(self)}, f,
                      indent=2)

    @classmethod
    def load(cls, path: Path) -> Credential:
        try:
            raw = json.loads(Path(path).read_text())
            if raw.get("kind") != "xwvm-worker-credential":
                raise ValueError("not a worker credential file")
            return cls(server=raw["server"], login=raw["login"], password=raw["password"],
                       ca_pem=raw.get("ca_pem"))
        except (ValueError, KeyError, TypeError) as e:
            raise XwvmError(f"{path}: bad worker credential ({e})", code="bad_credential") \
                from None
