"""`xwvm server run`: the application served by gunicorn over TLS."""

from __future__ import annotations

import multiprocessing
from typing import Any

from gunicorn.app.base import BaseApplication

from xwvm.server.config import ServerConfig
from xwvm.server.db.engine import make_engine, migrate


class XwvmGunicorn(BaseApplication):
    def __init__(self, config: ServerConfig, options: dict[str, Any]) -> None:
        self.config_obj = config
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from xwvm.server.app import create_app
        return create_app(self.config_obj)


def run(config: ServerConfig, bind: str, workers: int | None = None, threads: int = 8,
        tls: bool = True) -> None:
    engine = make_engine(config.db_url)
    migrate(engine)  # a newer xwvm brings its schema changes with it
    engine.dispose()
    options: dict[str, Any] = {
        "bind": bind,
        "workers": workers or max(2, multiprocessing.cpu_count()),
        "threads": threads,
        "worker_class": "gthread",
        "timeout": 600,
        "graceful_timeout": 10,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
    }
    if tls:
        options.update(certfile=str(config.server_cert), keyfile=str(config.server_key))
    XwvmGunicorn(config, options).run()
