"""The error catalogue: one exception type with a stable code, message and HTTP status."""
from __future__ import annotations

from typing import Any

# code -> (HTTP status, default message). Codes are part of the wire contract.
CATALOGUE: dict[str, tuple[int, str]] = {
    "VALIDATION_ERROR": (400, "The request is not valid."),
    "BAD_REQUEST": (400, "The request could not be understood."),
    "UNAUTHORIZED": (401, "Authentication is required."),
    "INVALID_CREDENTIALS": (401, "Wrong username or password."),
    "INVALID_TOKEN": (401, "The token is not valid."),
    "TOKEN_EXPIRED": (401, "The token has expired."),
    "TOKEN_REVOKED": (401, "The token has been revoked."),
    "FORBIDDEN": (403, "You are not allowed to do this."),
    "USER_BANNED": (403, "This account is banned."),
    "NOT_FOUND": (404, "Not found."),
    "USER_NOT_FOUND": (404, "No such user."),
    "ROOM_NOT_FOUND": (404, "No such room."),
    "METHOD_NOT_ALLOWED": (405, "Method not allowed."),
    "CONFLICT": (409, "This conflicts with the current state."),
    "NOT_IN_ROOM": (409, "Join the room (join_room) before sending or typing to it."),
    "LIMIT_REACHED": (409, "A limit of this server has been reached."),
    "PAYLOAD_TOO_LARGE": (413, "The payload is too large."),
    "UNSUPPORTED_MEDIA_TYPE": (415, "Send a JSON body (Content-Type: application/json)."),
    "UNKNOWN_EVENT": (400, "This event is not known."),
    "RATE_LIMITED": (429, "Too many requests; slow down."),
    "UNAVAILABLE": (503, "The service is unavailable; try again shortly."),
    "INTERNAL_ERROR": (500, "Something went wrong on the server."),
}


class NexusError(Exception):
    """An error a client may see: a catalogue code, a safe message, optional details, and for an
    error worth retrying (RATE_LIMITED, UNAVAILABLE) when to retry."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        details: Any = None,
        status: int | None = None,
        retry_after_ms: int | None = None,
    ):
        if code not in CATALOGUE:
            raise ValueError(f"unknown error code {code!r}")
        default_status, default_message = CATALOGUE[code]
        super().__init__(message or default_message)
        self.code = code
        self.message = message or default_message
        self.details = details
        self.status = status or default_status
        self.retry_after_ms = retry_after_ms

    def to_dict(self) -> dict[str, Any]:
        """The `error` object of the wire contract. A retry hint is `retryAfterMs`, both beside the
        code and in `details` (where rate-limit refusals have always carried it)."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        details = self.details
        if self.retry_after_ms is not None:
            error["retryAfterMs"] = self.retry_after_ms
            if details is None or isinstance(details, dict):
                details = {"retryAfterMs": self.retry_after_ms, **(details or {})}
        if details is not None:
            error["details"] = details
        return error


def error_payload(code: str, message: str | None = None, **extra: Any) -> dict[str, Any]:
    """`{"success": false, "error": {...}}` for a catalogue code."""
    error = NexusError(code, message).to_dict()
    error.update(extra)
    return {"success": False, "error": error}
