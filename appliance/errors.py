"""The guest's one error class: what went wrong, in words, and the HTTP status when it
came from the server (0: no answer at all)."""

from __future__ import annotations


class GuestError(Exception):
    def __init__(self, message: str, status: int | None = None, code: str = "guest_error"
                 ) -> None:
        super().__init__(message)
        self.message, self.status, self.code = message, status, code

    def __str__(self) -> str:
        return self.message

