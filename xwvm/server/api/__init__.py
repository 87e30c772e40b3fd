"""The HTTP layer: thin Flask blueprints over xwvm.server.services, one per resource."""

from __future__ import annotations

from flask import Flask

from xwvm.protocol.paths import API_PREFIX


def register(app: Flask) -> None:
    from xwvm.server.api import (
        admin,
        apps,
        auth,
        contexts,
        data,
        events,
        hosts,
        objects,
        templates,
        uploads,
        users,
        works,
    )

    for module in (auth, users, apps, data, works, hosts, events, objects, contexts, uploads,
                   templates, admin):
        app.register_blueprint(module.bp, url_prefix=API_PREFIX)
