"""In-process fixtures: a real migrated database (SQLite here; PostgreSQL where marked)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from xwvm.server.db.engine import make_engine, make_sessionmaker, migrate
from xwvm.server.db.models import App, AppBinary, Data, Host, User, Work
from xwvm.server.rights import PUBLIC, Level


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'test.db'}")
    migrate(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def db(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as s:
        yield s


@dataclass
class World:
    """Builds users, apps, hosts and jobs directly with the models (no HTTP)."""

    db: Session
    apps: dict[str, App] = field(default_factory=dict)

    def user(self, login: str, level: Level = Level.STANDARD, group: str | None = None,
             **kw: object) -> User:
        u = User(login=login, rights=int(level), group_uid=group, owner_uid="x",
                 access_rights=0o700, **kw)
        self.db.add(u)
        self.db.flush()
        return u

    def app(self, name: str, owner: User, platforms: tuple[str, ...] = ("linux/x86_64",),
            kind: str = "native") -> App:
        a = App(name=name, kind=kind, owner_uid=owner.uid, access_rights=PUBLIC)
        self.db.add(a)
        self.db.flush()
        for plat in platforms:
            d = Data(name=f"{name}-{plat}", owner_uid=owner.uid, access_rights=PUBLIC,
                     status="available", size=1, sha256="0" * 64)
            self.db.add(d)
            self.db.flush()
            os_name, arch = plat.split("/")
            self.db.add(AppBinary(app_uid=a.uid, os=os_name, arch=arch, data_uid=d.uid))
        self.apps[name] = a
        return a

    def host(self, worker: User, os: str = "linux", arch: str = "x86_64", memory_mb: int = 4096,
             cpus: int = 2, shared: tuple[str, ...] = ()) -> Host:
        h = Host(name=f"h-{worker.login}", worker_user_uid=worker.uid, owner_uid=worker.owner_uid,
                 os=os, arch=arch,
                 cpus=cpus, memory_mb=memory_mb, disk_mb=100_000, shared_apps=list(shared),
                 alive_period=60)
        self.db.add(h)
        self.db.flush()
        return h

    def jobs(self, owner: User, app: App, n: int, status: str = "PENDING",
             **kw: object) -> list[Work]:
        kw.setdefault("access_rights", PUBLIC)
        rows = [Work(app_uid=app.uid, status=status, owner_uid=owner.uid,
                     group_uid=owner.group_uid, **kw) for _ in range(n)]
        self.db.add_all(rows)
        self.db.flush()
        return rows


@pytest.fixture
def world(db: Session) -> World:
    return World(db)
