"""The query API's one error type: an HTTP status, a short code, and a message that says what
to do. Every error response is `{"error": code, "detail": message}` (`models.ErrorBody`)."""

from __future__ import annotations

from cbir.domain.errors import CbirError


class ApiError(CbirError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
