"""The project's one error base: a message, a machine-readable code and an HTTP status."""

from __future__ import annotations

from typing import Any


class XwvmError(Exception):
    """A user-facing error. ``status`` is the HTTP status the API answers with."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class BadRequest(XwvmError):
    status, code = 400, "bad_request"


class Unauthorized(XwvmError):
    status, code = 401, "unauthorized"


class Forbidden(XwvmError):
    status, code = 403, "forbidden"


class NotFound(XwvmError):
    status, code = 404, "not_found"


class Conflict(XwvmError):
    status, code = 409, "conflict"


class TooLarge(XwvmError):
    status, code = 413, "too_large"


class RangeNotSatisfiable(XwvmError):
    status, code = 416, "range_not_satisfiable"
