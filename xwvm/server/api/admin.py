"""/admin/certs: client certificates of the server CA (issue, list, revoke) and its CRL."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from xwvm.server.api.base import cfg, commit, db, json_body, principal
from xwvm.server.auth import x509
from xwvm.server.db.models import ClientCert

bp = Blueprint("admin", __name__)

ISSUE = {"type": "object", "additionalProperties": False, "required": ["login", "csr"],
         "properties": {"login": {"type": "string", "minLength": 1, "maxLength": 128},
                        "csr": {"type": "string", "minLength": 1, "maxLength": 65536}}}


def _view(row: ClientCert) -> dict[str, Any]:
    return {"serial": row.serial, "user": row.user_uid, "subject": row.subject,
            "sha256": row.fingerprint, "issued_at": row.issued_at.isoformat(),
            "not_after": row.not_after.isoformat(),
            "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None}


@bp.post("/admin/certs")
def issue_cert():
    body = json_body(ISSUE)
    row, pem = x509.issue(db(), cfg(), principal(), body["login"], body["csr"])
    commit()
    return jsonify(certificate=pem.decode(), ca=cfg().ca_cert.read_text(), **_view(row)), 201


@bp.get("/admin/certs")
def list_certs():
    return jsonify([_view(r) for r in x509.list_certs(db(), principal())])


@bp.post("/admin/certs/<serial>/revoke")
def revoke_cert(serial: str):
    row = x509.revoke(db(), cfg(), principal(), serial)  # and the sessions it opened
    commit()
    return jsonify(_view(row))


@bp.get("/ca/crl")
def crl():
    """The server CA's certificate revocation list (public, like the CA itself)."""
    return Response(x509.crl_pem(db(), cfg()), mimetype="application/pkix-crl")
