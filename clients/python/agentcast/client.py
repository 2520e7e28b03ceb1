"""The HTTP clients: `Client` (blocking) and `AsyncClient` (asyncio), twins over one httpx
connection pool each. Publishes carry idempotency keys and are retried on connection
errors and 503 with the same keys; refusals raise the typed errors of `agentcast.errors`.
The publisher socket lives in `agentcast.agent_socket`, runs in `agentcast.runs`."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from . import _base
from ._base import DEFAULT_URL, Event, PublishResult, RetryPolicy
from .errors import ConnectionFailedError

if TYPE_CHECKING:
    from .agent_socket import AgentSocket
    from .emitter import AsyncEmitter, Emitter
    from .runs import AsyncRun, Run

_JSON = {"Content-Type": "application/json"}
_NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def _set_nodelay(stream: Any) -> Any:
    sock = stream.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return stream


class _NoDelayBackend:
    """httpcore's network backend with TCP_NODELAY on every connection (httpx < 0.24
    has no `socket_options`)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def connect_tcp(self, *args: Any, **kw: Any) -> Any:
        return _set_nodelay(self._inner.connect_tcp(*args, **kw))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _AsyncNoDelayBackend(_NoDelayBackend):
    async def connect_tcp(self, *args: Any, **kw: Any) -> Any:
        return _set_nodelay(await self._inner.connect_tcp(*args, **kw))


def _nodelay(cls: type[Any], backend: type[_NoDelayBackend]) -> Any:
    """A transport whose connections have TCP_NODELAY. httpx writes a request's headers
    and body with two send() calls: without it, Nagle's algorithm holds the body until
    the gateway's delayed ACK (40 ms on Linux), and a publish takes 40 ms instead of
    0.5. httpx >= 0.24 takes `socket_options`; before, the pool's backend is wrapped
    (left as it is, only slower, when that private layout is not there)."""
    kw: dict[str, Any] = {"socket_options": _NODELAY}
    try:
        return cls(**kw)
    except TypeError:
        transport = cls()
        pool = getattr(transport, "_pool", None)
        inner = getattr(pool, "_network_backend", None)
        if inner is not None and hasattr(inner, "connect_tcp"):
            setattr(pool, "_network_backend", backend(inner))
        return transport


class _Common:
    def __init__(self, url: str, api_key: str | None, retry: RetryPolicy | None) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.retry = retry if retry is not None else RetryPolicy()

    def _again(self, status: int, attempt: int, retry_503: bool) -> bool:
        """Whether an answer with `status` is retried (a 503, while attempts are left)."""
        return status == 503 and retry_503 and attempt + 1 < self.retry.attempts

    def _give_up(self, last: BaseException | None, attempts: int) -> ConnectionFailedError:
        err = ConnectionFailedError(
            0, f"agentcast at {self.url} unreachable after {attempts} attempts: {last!r}"
        )
        err.__cause__ = last
        return err


class Client(_Common):
    """A blocking client of one gateway. Thread-safe (httpx.Client is); close it, or use
    it as a context manager, to release its connections.

    `url`: the gateway's base URL; `api_key`: the `--api-key` it was started with;
    `timeout`: seconds for each attempt; `retry`: the backoff of publishes and reads."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, retry)
        self._http = httpx.Client(
            base_url=self.url,
            headers=_base.auth_headers(api_key),
            timeout=timeout,
            transport=transport or _nodelay(httpx.HTTPTransport, _NoDelayBackend),
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(
        self, method: str, path: str, body: Any = None, *, retry_503: bool = True
    ) -> tuple[int, Any]:
        content = _base.encode(body) if body is not None else None
        headers = _JSON if content is not None else None
        last: BaseException | None = None
        for attempt in itertools.count():
            reason: BaseException | int
            try:
                r = self._http.request(method, path, content=content, headers=headers)
            except httpx.TransportError as e:
                last = reason = e
            else:
                if not self._again(r.status_code, attempt, retry_503):
                    return r.status_code, _base.decode(r.content)
                reason = r.status_code
            wait = self.retry.next_wait(attempt, reason)
            if wait is None:
                break
            time.sleep(wait)
        raise self._give_up(last, self.retry.attempts)

    def publish(self, event: Event) -> PublishResult:
        """Publishes one event (`user_id`, `type`, `data`, ...). Raises BadRequestError,
        AuthenticationError, NotFoundError, ConflictError, PayloadTooLargeError, or,
        when retries run out, UnavailableError / ConnectionFailedError."""
        return _base.publish_result(*self._request("POST", "/v1/publish", _base.with_key(event)))

    def publish_batch(self, events: Sequence[Event]) -> list[PublishResult]:
        """Publishes several events in one request, all or nothing, in order."""
        body = _base.events_of(events)
        return _base.batch_results(*self._request("POST", "/v1/publish", body), len(body))

    def disconnect(self, *, user_id: str | None = None, connection_id: str | None = None) -> int:
        """Closes a user's connections (or one connection) with 4003; returns how many."""
        body = _base.disconnect_body(user_id, connection_id)
        return _base.disconnected(_base.check(*self._request("POST", "/v1/disconnect", body)))

    def stats(self) -> dict[str, Any]:
        """`GET /v1/stats`."""
        return _base.as_object(_base.check(*self._request("GET", "/v1/stats")))

    def run_state(self, run_id: str) -> dict[str, Any]:
        """`GET /v1/runs/{run_id}`; NotFoundError for an unknown run."""
        path = "/v1/runs/" + quote(run_id, safe="")
        return _base.as_object(_base.check(*self._request("GET", path)))

    def healthz(self) -> dict[str, Any]:
        """`GET /healthz`: `{"status":"ok","broker":"up"}`, or `degraded`/`down` (a 503
        that is an answer here, not an error)."""
        return _base.as_object(self._request("GET", "/healthz", retry_503=False)[1])

    def emitter(
        self, user_id: str, thread_id: str | None = None, run_id: str | None = None
    ) -> Emitter:
        """The seed's emitter for one user (and optionally one thread and run)."""
        from .emitter import Emitter

        return Emitter(self, user_id, thread_id=thread_id, run_id=run_id)

    def run(
        self,
        user_id: str,
        agent: str,
        *,
        thread_id: str | None = None,
        run_id: str | None = None,
    ) -> Run:
        """A run as a context manager: `agent_started` on entry, `agent_completed` (or
        `agent_error`) on exit."""
        from .runs import Run

        return Run(self.emitter(user_id, thread_id=thread_id, run_id=run_id), agent)


class AsyncClient(_Common):
    """The asyncio twin of `Client`: the same methods, awaited, plus `agent_socket()`."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, retry)
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=_base.auth_headers(api_key),
            timeout=timeout,
            transport=transport or _nodelay(httpx.AsyncHTTPTransport, _AsyncNoDelayBackend),
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(
        self, method: str, path: str, body: Any = None, *, retry_503: bool = True
    ) -> tuple[int, Any]:
        content = _base.encode(body) if body is not None else None
        headers = _JSON if content is not None else None
        last: BaseException | None = None
        for attempt in itertools.count():
            reason: BaseException | int
            try:
                r = await self._http.request(method, path, content=content, headers=headers)
            except httpx.TransportError as e:
                last = reason = e
            else:
                if not self._again(r.status_code, attempt, retry_503):
                    return r.status_code, _base.decode(r.content)
                reason = r.status_code
            wait = self.retry.next_wait(attempt, reason)
            if wait is None:
                break
            await asyncio.sleep(wait)
        raise self._give_up(last, self.retry.attempts)

    async def publish(self, event: Event) -> PublishResult:
        """See `Client.publish`."""
        status, body = await self._request("POST", "/v1/publish", _base.with_key(event))
        return _base.publish_result(status, body)

    async def publish_batch(self, events: Sequence[Event]) -> list[PublishResult]:
        """See `Client.publish_batch`."""
        body = _base.events_of(events)
        status, reply = await self._request("POST", "/v1/publish", body)
        return _base.batch_results(status, reply, len(body))

    async def disconnect(
        self, *, user_id: str | None = None, connection_id: str | None = None
    ) -> int:
        """See `Client.disconnect`."""
        body = _base.disconnect_body(user_id, connection_id)
        status, reply = await self._request("POST", "/v1/disconnect", body)
        return _base.disconnected(_base.check(status, reply))

    async def stats(self) -> dict[str, Any]:
        return _base.as_object(_base.check(*await self._request("GET", "/v1/stats")))

    async def run_state(self, run_id: str) -> dict[str, Any]:
        path = "/v1/runs/" + quote(run_id, safe="")
        return _base.as_object(_base.check(*await self._request("GET", path)))

    async def healthz(self) -> dict[str, Any]:
        return _base.as_object((await self._request("GET", "/healthz", retry_503=False))[1])

    def emitter(
        self, user_id: str, thread_id: str | None = None, run_id: str | None = None
    ) -> AsyncEmitter:
        from .emitter import AsyncEmitter

        return AsyncEmitter(self, user_id, thread_id=thread_id, run_id=run_id)

    def run(
        self,
        user_id: str,
        agent: str,
        *,
        thread_id: str | None = None,
        run_id: str | None = None,
    ) -> AsyncRun:
        """See `Client.run`; used with `async with`."""
        from .runs import AsyncRun

        return AsyncRun(self.emitter(user_id, thread_id=thread_id, run_id=run_id), agent)

    def agent_socket(self) -> AgentSocket:
        """The publisher socket `/v1/agent`: `async with client.agent_socket() as s:`."""
        from .agent_socket import AgentSocket

        return AgentSocket(
            _base.ws_url(self.url, "/v1/agent"), self.api_key, retry=self.retry, timeout=self.timeout
        )
