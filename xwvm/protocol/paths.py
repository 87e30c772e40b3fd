"""Every endpoint path the worker, the nested worker (in the guest) and the SDK share,
written once.

Ids are put in as given: callers pass ids they checked (:func:`xwvm.ids.check_uid`)."""

from __future__ import annotations

#: Where the API lives on the server; every path below is relative to it.
API_PREFIX = "/api/v1"
HOSTS = "/hosts"
#: A password login (the answer's token is the session's credential).
LOGIN = "/auth/login"
#: A certificate login: the challenge to sign, then the signed challenge.
X509_CHALLENGE = "/auth/x509/challenge"
X509_LOGIN = "/auth/x509/login"
#: A worker's enrolment (its project and whether it serves everyone).
WORKERS_ENROLL = "/workers/enroll"


def host_heartbeat(host_uid: str) -> str:
    return f"/hosts/{host_uid}/heartbeat"


def host_work(host_uid: str) -> str:
    """Where a worker asks for its next job."""
    return f"/hosts/{host_uid}/work"


def work(uid: str) -> str:
    """A job as its owner (or its worker) reads it."""
    return f"/works/{uid}"


def work_result(uid: str) -> str:
    """The job's results archive (PUT by the worker, GET by its owner)."""
    return f"/works/{uid}/result"


def work_report(uid: str) -> str:
    """The outer worker's report of a job's status."""
    return f"/works/{uid}/report"


def work_progress(uid: str) -> str:
    """A nested worker's sign of life; the answer says whether to stop."""
    return f"/works/{uid}/progress"


def pilot_work(pilot_uid: str) -> str:
    """A pilot VM's nested worker asks for its next job."""
    return f"/works/{pilot_uid}/pilot-work"


def data_content(uid: str) -> str:
    """A data object's bytes (PUT by its uploader, GET by a reader)."""
    return f"/data/{uid}/content"


def template_artifact(uid: str, role: str, fmt: str | None = None) -> str:
    return f"/templates/{uid}/artifacts/{role}" + (f"?format={fmt}" if fmt else "")


def template_chunks(uid: str, role: str) -> str:
    return f"/templates/{uid}/artifacts/{role}/chunks"
