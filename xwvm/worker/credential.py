"""How a worker logs in: the credential file written by `xwvm worker enroll` (a worker
account's login and password), or an X.509 certificate and its key (`xwvm admin
issue-cert` for a worker account, or a grid CA's), given to `xwvm worker run`."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from xwvm.errors import XwvmError


@dataclass
class Credential:
    server: str
    login: str
    password: str | None
    ca_pem: str | None = None
    cert: Path | None = None  # X.509 login instead of the password: certificate and key
    key: Path | None = None

    @classmethod
    def x509(cls, server: str, cert: Path, key: Path, ca_pem: str | None) -> Credential:
        return cls(server=server, login="", password=None, ca_pem=ca_pem, cert=Path(cert),
                   key=Path(key))

    def login_with(self, client: Any) -> str:
        """Log ``client`` in; returns the token."""
        if self.cert is not None and self.key is not None:
            from xwvm.client.signer import signer
            return client.x509_login(self.cert.read_bytes(), signer(self.key))["token"]
        return client.login(self.login, self.password)["token"]

    def save(self, path: Path) -> None:
        if self.password is None:
            raise XwvmError("a certificate credential is not saved: pass --cert and --key",
                            code="bad_credential")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        # open()'s mode applies to a new file only: an existing 0644 one is tightened
        # before the password is written into it.
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            doc = {k: v for k, v in asdict(self).items() if k not in ("cert", "key")}
            json.dump({"kind": "xwvm-worker-credential", "version": 1, **doc}, f, indent=2)

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
