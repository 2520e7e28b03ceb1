"""What the synchronous and asynchronous clients share and that does no I/O: the event
and reply shapes, idempotency keys, the retry schedule, the mapping of replies to results
or typed errors. The clients only move bytes and sleep."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import AgentcastError, error_for

Event = Mapping[str, Any]
"""One publish object: `user_id`, `type`, `data`, optional `run_id`, `thread_id`,
`connection_id`, `idempotency_key` (see the gateway's README)."""

CRITICAL_EVENTS = (
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
)

DEFAULT_URL = "http://127.0.0.1:8080"


@dataclass(frozen=True)
class PublishResult:
    """The gateway's answer to one event: its `seq` (None for a direct message),
    the connections it was handed to, and whether its idempotency key had been seen (then
    `seq` is the first publish's and nothing was published again)."""

    seq: int | None
    delivered: int
    duplicate: bool = False

    @classmethod
    def from_json(cls, obj: Any) -> PublishResult:
        if not isinstance(obj, dict) or not isinstance(obj.get("delivered"), int):
            raise AgentcastError(200, f"unexpected reply: {obj!r}", body=obj)
        seq = obj.get("seq")
        return cls(
            seq=seq if isinstance(seq, int) else None,
            delivered=obj["delivered"],
            duplicate=obj.get("duplicate") is True,
        )


@dataclass(frozen=True)
class RetryAttempt:
    """Handed to `RetryPolicy.on_retry` before each wait: the attempt that failed (1 for
    the first), the seconds it will wait, and why (a transport error or an HTTP status)."""

    attempt: int
    delay: float
    reason: BaseException | int


@dataclass(frozen=True)
class RetryPolicy:
    """Capped, jittered exponential backoff: after failed attempt n (0-based) the client
    waits a uniformly random time in [d/2, d] with d = min(max_delay, base_delay * 2**n).
    `attempts` counts the first try. Publishes are retried with the same idempotency keys,
    so a retry is never a duplicate."""

    attempts: int = 6
    base_delay: float = 0.1
    max_delay: float = 2.0
    on_retry: Callable[[RetryAttempt], None] | None = None

    def delay(self, failed_attempt: int) -> float:
        d = min(self.max_delay, self.base_delay * (2 ** min(failed_attempt, 30)))
        return random.uniform(d / 2, d)

    def next_wait(self, failed_attempt: int, reason: BaseException | int) -> float | None:
        """The wait before trying again after `failed_attempt` (0-based) failed for
        `reason`, told to `on_retry`; None when no attempt is left."""
        if failed_attempt + 1 >= self.attempts:
            return None
        wait = self.delay(failed_attempt)
        if self.on_retry is not None:
            self.on_retry(RetryAttempt(failed_attempt + 1, wait, reason))
        return wait


NO_RETRY = RetryPolicy(attempts=1)


def new_key() -> str:
    """A fresh idempotency key."""
    return uuid.uuid4().hex


def with_key(event: Event) -> dict[str, Any]:
    """A copy of `event` carrying an idempotency key (the caller's, else a new one), so
    that every retry of it sends the same key."""
    if not isinstance(event, Mapping):
        raise TypeError(f"an event is a mapping, not {type(event).__name__}")
    out = dict(event)
    if out.get("idempotency_key") is None:
        out["idempotency_key"] = new_key()
    return out


def encode(body: Any) -> bytes:
    """Compact UTF-8 JSON, as the gateway forwards it."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode(content: bytes) -> Any:
    try:
        return json.loads(content) if content else None
    except ValueError:
        return content.decode("utf-8", "replace")


def check(status: int, body: Any) -> Any:
    """`body` when `status` is 2xx, else raises the typed error."""
    if 200 <= status < 300:
        return body
    raise error_for(status, body)


def publish_result(status: int, body: Any) -> PublishResult:
    return PublishResult.from_json(check(status, body))


def batch_results(status: int, body: Any, n: int) -> list[PublishResult]:
    body = check(status, body)
    if not isinstance(body, list) or len(body) != n:
        raise AgentcastError(status, f"expected {n} replies, got {body!r}", body=body)
    return [PublishResult.from_json(r) for r in body]


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def ws_url(http_url: str, path: str) -> str:
    """The WebSocket URL of `path` on the gateway at `http_url`."""
    base = http_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return base + path


def disconnect_body(user_id: str | None, connection_id: str | None) -> dict[str, str]:
    if user_id is None and connection_id is None:
        raise ValueError("disconnect needs user_id, connection_id or both")
    body: dict[str, str] = {}
    if user_id is not None:
        body["user_id"] = user_id
    if connection_id is not None:
        body["connection_id"] = connection_id
    return body


def disconnected(body: Any) -> int:
    if isinstance(body, dict) and isinstance(body.get("disconnected"), int):
        n: int = body["disconnected"]
        return n
    raise AgentcastError(200, f"unexpected reply: {body!r}", body=body)


def as_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise AgentcastError(200, f"unexpected reply: {body!r}", body=body)
    return body


def events_of(events: Sequence[Event]) -> list[dict[str, Any]]:
    if isinstance(events, (str, bytes, Mapping)):
        raise TypeError("publish_batch takes a sequence of events")
    out = [with_key(e) for e in events]
    if not out:
        raise ValueError("publish_batch needs at least one event")
    return out
