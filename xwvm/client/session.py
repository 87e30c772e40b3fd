"""The client's saved login: server URL, pinned CA and bearer token."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from xwvm.client.sdk import Client
from xwvm.errors import XwvmError


def config_dir() -> Path:
    env = os.environ.get("XWVM_CONFIG_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "xwvm"


@dataclass
class Session:
    server: str
    ca: str | None
    token: str
    login: str
    expires_at: str

    @staticmethod
    def path() -> Path:
        return config_dir() / "session.json"

    def save(self) -> None:
        path = self.path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f, indent=2)
        os.replace(tmp, path)

    @classmethod
    def load(cls) -> Session:
        path = cls.path()
        if not path.is_file():
            raise XwvmError(f"not logged in (no {path}): run 'xwvm login' first",
                            code="not_logged_in")
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as e:
            raise XwvmError(f"{path} is damaged ({e}): run 'xwvm login' again",
                            code="bad_session") from None

    def client(self) -> Client:
        return Client(self.server, self.ca, self.token)

    @classmethod
    def forget(cls) -> None:
        cls.path().unlink(missing_ok=True)
