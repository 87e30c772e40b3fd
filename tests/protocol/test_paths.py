"""The endpoint paths the worker, the nested worker and the SDK share are the server's routes."""

from __future__ import annotations

from xwvm.protocol import paths


def test_paths_name_the_servers_routes() -> None:
    assert paths.host_heartbeat("h1") == "/hosts/h1/heartbeat"
    assert paths.host_work("h1") == "/hosts/h1/work"
    assert paths.work_progress("w1") == "/works/w1/progress"
    assert paths.pilot_work("w1") == "/works/w1/pilot-work"
    assert paths.work_result("w1") == "/works/w1/result"
    assert paths.work_report("w1") == "/works/w1/report"
    assert paths.data_content("d1") == "/data/d1/content"
    assert (paths.LOGIN, paths.X509_CHALLENGE, paths.X509_LOGIN, paths.WORKERS_ENROLL) == (
        "/auth/login", "/auth/x509/challenge", "/auth/x509/login", "/workers/enroll")
    assert paths.template_artifact("t1", "disk", "qcow2") == \
        "/templates/t1/artifacts/disk?format=qcow2"


def test_every_path_is_a_route_of_the_server() -> None:
    from flask import Flask

    from xwvm.server import api
    app = Flask("routes")
    api.register(app)
    routes = app.url_map.bind("localhost")
    for method, path in (
            ("POST", paths.HOSTS), ("POST", paths.host_heartbeat("X")),
            ("POST", paths.host_work("X")), ("GET", paths.work("X")),
            ("PUT", paths.work_result("X")), ("POST", paths.work_report("X")),
            ("POST", paths.work_progress("X")),
            ("POST", paths.pilot_work("X")), ("GET", paths.data_content("X")),
            ("PUT", paths.data_content("X")), ("POST", paths.LOGIN),
            ("POST", paths.X509_CHALLENGE), ("POST", paths.X509_LOGIN),
            ("POST", paths.WORKERS_ENROLL),
            ("GET", paths.template_artifact("X", "disk")),
            ("GET", paths.template_chunks("X", "disk"))):
        routes.match("/api/v1" + path, method=method)  # raises NotFound / MethodNotAllowed
