"""Fixtures: real xwvm servers (SQLite, or PostgreSQL from Debian's package), real workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import PostgresServer
from tests.support.processes import ADMIN_PASSWORD, ServerProcess, run_cli


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path).init().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for a module of tests that do not disturb each other."""
    srv = ServerProcess(tmp_path_factory.mktemp("srv")).init().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    pg = PostgresServer().start()
    yield pg
    pg.stop()


@pytest.fixture
def cli_home(server: ServerProcess, tmp_path: Path) -> Path:
    """A client configuration directory logged in as the admin of ``server``."""
    home = tmp_path / "cli"
    run_cli(["login", "--server", server.url, "--ca", str(server.ca), "--user", "admin",
             "--password-file", str(server.password_file)], home)
    return home


__all__ = ["ADMIN_PASSWORD"]
