"""The exceptions of the SDK: one class per refusal of the gateway, each carrying the HTTP
status and the gateway's `error` text, plus the one raised when retries ran out."""

from __future__ import annotations

from typing import Any


class AgentcastError(Exception):
    """Base of every error the SDK raises. `status` is the HTTP status (0 when the gateway
    never answered), `error` the gateway's reason (`"run_id: run closed"`), `index` the
    position of the refused event in a batch (None otherwise)."""

    def __init__(
        self,
        status: int,
        error: str,
        *,
        index: int | None = None,
        body: Any = None,
    ) -> None:
        self.status = status
        self.error = error
        self.index = index
        self.body = body
        where = f" (event {index})" if index is not None else ""
        super().__init__(f"{status} {error}{where}" if status else error)


class BadRequestError(AgentcastError):
    """400: the event breaks a rule; `error` names the field."""


class AuthenticationError(AgentcastError):
    """401: the API key is missing or wrong."""


class NotFoundError(AgentcastError):
    """404: an unknown run, or a connection that is not open."""


class ConflictError(AgentcastError):
    """409: the event breaks its run's lifecycle (`run_id: run closed`, ...)."""


class PayloadTooLargeError(AgentcastError):
    """413 (or close 1009 on the publisher socket): the body is over --max-publish-size."""


class RateLimitedError(AgentcastError):
    """429: too many requests."""


class UnavailableError(AgentcastError):
    """503 after every retry: the gateway (or its broker) stayed unavailable."""


class ConnectionFailedError(AgentcastError):
    """The gateway could not be reached (or the connection broke) on every attempt.
    `status` is 0; `__cause__` is the last transport error."""


_BY_STATUS: dict[int, type[AgentcastError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    429: RateLimitedError,
    503: UnavailableError,
}


def error_for(status: int, body: Any) -> AgentcastError:
    """The typed exception for a refusal with `status` and the decoded JSON `body`."""
    reason = f"HTTP {status}"
    index: int | None = None
    if isinstance(body, dict):
        e = body.get("error")
        if isinstance(e, str):
            reason = e
        i = body.get("index")
        if isinstance(i, int):
            index = i
    cls = _BY_STATUS.get(status, AgentcastError)
    return cls(status, reason, index=index, body=body)
