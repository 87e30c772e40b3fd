"""Confinement over many scheduling rounds, through real HTTP: private, group and public jobs
of two groups (cms, atlas) are offered again and again to four worker accounts confined in
different ways, and no job ever reaches a worker that may not run it; a worker never reads
the data of a job it was not given (scheduler/matching.py confinement, policy.py
check_data_read)."""

from __future__ import annotations

import hashlib
import random
import uuid
from collections import Counter
from dataclasses import dataclass

import pytest
import requests

from tests.support.processes import ServerProcess
from xwvm.client.sdk import Client

PASSWORD = "confine-password-1"
ROUNDS = 200
WORKERS = ("atlas_project", "public", "cms_user2", "cms_project")


@dataclass
class Job:
    uid: str
    kind: str  # private (700, cms), group (750, cms), public (755, atlas)
    input_uid: str
    content: bytes


@dataclass
class Pool:
    server: ServerProcess
    admin: Client
    workers: dict[str, Client]
    hosts: dict[str, str]
    jobs: dict[str, Job]
    http: requests.Session
    app: str
    cms1_login: str

    def get(self, who: str, path: str) -> requests.Response:
        return self.http.get(f"{self.server.url}/api/v1{path}", verify=str(self.server.ca),
                             headers={"Authorization": f"Bearer {self.workers[who].token}"},
                             timeout=60)


# Which kinds of job each worker may be given (scheduler/matching.py confinement):
#  - a worker a user enrolled runs that user's jobs only (cms_user2 was enrolled by a cms
#    user who submitted nothing: it never gets anything);
#  - a project worker runs its group's jobs that the group may read (750, 755);
#  - a public worker runs jobs everyone may read (755).
MAY_RUN = {"atlas_project": {"public"}, "public": {"public"}, "cms_user2": set(),
           "cms_project": {"group"}}


@pytest.fixture(scope="module")
def pool(shared_server: ServerProcess) -> Pool:
    admin = shared_server.client()
    suffix = uuid.uuid4().hex[:6]
    cms, atlas = f"cms-{suffix}", f"atlas-{suffix}"
    admin.create_group(cms)
    admin.create_group(atlas)
    users = {}
    for role, group in (("cms1", cms), ("cms2", cms), ("atlas1", atlas)):
        login = f"{role}-{suffix}"
        admin.create_user(login, PASSWORD, "standard", group)
        users[role] = shared_server.client(login, PASSWORD)
    app = f"confine-{suffix}"
    admin.create_app(app, kind="shared")

    jobs: dict[str, Job] = {}
    for kind, owner, mode in (("private", "cms1", "700"), ("group", "cms1", "750"),
                              ("public", "atlas1", "755")):
        for i in range(4):
            content = f"{kind} input {i} {uuid.uuid4()}".encode()
            c = users[owner]
            d = c.post("/data", {"name": "in.txt", "size": len(content),
                                 "sha256": hashlib.sha256(content).hexdigest(),
                                 "access_rights": "700"})
            c.request("PUT", f"/data/{d['uid']}/content", data=content)
            w = c.submit(app, access_rights=mode, inputs=[{"data": d["uid"], "name": "in.txt"}])
            assert (w["status"], w["access_rights"]) == ("PENDING", mode)
            jobs[w["uid"]] = Job(w["uid"], kind, d["uid"], content)

    creds = {"atlas_project": admin.enroll_worker(project=atlas),
             "public": admin.enroll_worker(public=True),
             "cms_user2": users["cms2"].enroll_worker(),
             "cms_project": admin.enroll_worker(project=cms)}
    workers, hosts = {}, {}
    for name, cred in creds.items():
        c = shared_server.client(cred["login"], cred["password"])
        host = c.register_host({"name": f"{name}-{suffix}", "os": "linux", "arch": "x86_64",
                                "cpus": 2, "memory_mb": 2048, "disk_mb": 4096,
                                "shared_apps": [app]})
        workers[name], hosts[name] = c, host["uid"]
    assert creds["cms_user2"]["user"]["confined_to_user"] == users["cms2"].whoami()["uid"]
    return Pool(shared_server, admin, workers, hosts, jobs, requests.Session(), app,
                f"cms1-{suffix}")


def _refused_not_assigned(resp: requests.Response) -> None:
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"] == "forbidden_not_assigned", resp.text


def test_jobs_reach_only_the_workers_that_may_run_them(pool: Pool) -> None:
    rng = random.Random(20260)
    given: Counter[tuple[str, str]] = Counter()  # (worker, job kind) -> times
    private_inputs = [j.input_uid for j in pool.jobs.values() if j.kind == "private"]
    for round_no in range(ROUNDS):
        name = rng.choice(WORKERS)
        worker = pool.workers[name]
        answer = worker.request_work(pool.hosts[name])
        if "work" not in answer:
            assert "retry_after" in answer, answer
            continue
        uid = answer["work"]["uid"]
        assert uid in pool.jobs, (round_no, name, answer["work"])
        job = pool.jobs[uid]
        given[(name, job.kind)] += 1
        assert job.kind in MAY_RUN[name], (round_no, name, job)
        # The worker reads its job's input; no other worker does, whatever it holds now.
        resp = pool.get(name, f"/data/{job.input_uid}/content")
        assert (resp.status_code, resp.content) == (200, job.content), resp.text
        intruder = rng.choice([w for w in WORKERS if w != name])
        _refused_not_assigned(pool.get(intruder, f"/data/{job.input_uid}/content"))
        _refused_not_assigned(pool.get(intruder, f"/data/{job.input_uid}"))
        _refused_not_assigned(pool.get(intruder, f"/works/{uid}"))
        # Nobody ever holds a private job, so nobody reads its data.
        _refused_not_assigned(pool.get(name, f"/data/{rng.choice(private_inputs)}/content"))
        # Give the job back: it is offered again in the next rounds.
        assert worker.report(uid, "PENDING")["status"] == "PENDING"
        # ... and once given back, its data is out of the worker's reach again.
        _refused_not_assigned(pool.get(name, f"/data/{job.input_uid}/content"))

    # The private jobs were never handed out; the others were, to the right workers.
    assert not any(kind == "private" for _, kind in given), given
    assert given[("public", "public")] > 0, given
    assert given[("atlas_project", "public")] > 0, given
    assert given[("cms_project", "group")] > 0, given
    assert not any(name == "cms_user2" for name, _ in given), given
    for job in pool.jobs.values():
        w = pool.admin.get_work(job.uid)
        assert (w["status"], w["host"]) == ("PENDING", None), w


def test_private_jobs_go_to_their_owners_own_worker_only(pool: Pool,
                                                         shared_server: ServerProcess) -> None:
    """The one worker that may run the cms user's private jobs: one that user enrolled."""
    owner = shared_server.client(pool.cms1_login, PASSWORD)
    cred = owner.enroll_worker()
    mine = shared_server.client(cred["login"], cred["password"])
    host = mine.register_host({"name": "cms1-own", "os": "linux", "arch": "x86_64", "cpus": 2,
                               "memory_mb": 2048, "disk_mb": 4096, "shared_apps": [pool.app]})
    seen: Counter[str] = Counter()
    for _ in range(3 * len(pool.jobs)):
        answer = mine.request_work(host["uid"])
        if "work" not in answer:
            break
        job = pool.jobs[answer["work"]["uid"]]
        seen[job.kind] += 1
        assert job.kind in ("private", "group"), job  # its user's jobs, whatever the mode
    assert seen["private"] == sum(j.kind == "private" for j in pool.jobs.values()), seen
