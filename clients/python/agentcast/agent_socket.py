"""The publisher socket `GET /v1/agent`: one WebSocket on which each text frame is a
publish body and each gets one reply frame, in order. Publishes are pipelined (sent at
once, replies matched in send order); when the connection breaks, the socket reconnects
with backoff and sends again, with the same idempotency keys, everything still unanswered,
so an event the gateway had taken before the break comes back as `duplicate` instead of
being published twice. A reply `503` is retried the same way, after a backoff, behind what
was pipelined after it: callers that need a strict order between two events await the
first before publishing the second.

    async with client.agent_socket() as s:
        results = await asyncio.gather(*(s.publish(e) for e in events))"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, cast

from . import _base
from ._base import Event, PublishResult, RetryPolicy
from .errors import (
    AgentcastError,
    ConnectionFailedError,
    PayloadTooLargeError,
    error_for,
)

CLOSE_TOO_BIG = 1009


class _WebSocket(Protocol):
    close_code: int | None

    async def send(self, message: str) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...

    def __aiter__(self) -> AsyncIterator[str | bytes]: ...


async def _open(url: str, headers: dict[str, str], timeout: float) -> _WebSocket:
    """Connects with whichever client this `websockets` has: the asyncio one (13+) or the
    legacy one (10-12)."""
    try:
        mod: Any = importlib.import_module("websockets.asyncio.client")
        ws = await mod.connect(url, additional_headers=headers, open_timeout=timeout, max_size=None)
    except ModuleNotFoundError:
        mod = importlib.import_module("websockets.client")
        ws = await mod.connect(url, extra_headers=headers, open_timeout=timeout, max_size=None)
    return cast(_WebSocket, ws)


def _handshake_status(exc: BaseException) -> int | None:
    """The HTTP status of a refused handshake, from either client's exception."""
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _handshake_body(exc: BaseException, status: int) -> Any:
    """The refusal's JSON body where the client kept it (websockets 13+), else a reason."""
    raw = getattr(getattr(exc, "response", None), "body", None)
    if isinstance(raw, bytes):
        body = _base.decode(raw)
        if isinstance(body, dict):
            return body
    return {"error": f"handshake refused with HTTP {status}"}


@dataclass
class _Pending:
    text: str
    n: int | None  # events in a batch; None for one event
    future: asyncio.Future[Any]
    tries: int = 1


class AgentSocket:
    """See the module docstring. Made by `AsyncClient.agent_socket()`; use as an async
    context manager (or `await connect()` / `await close()`)."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.retry = retry if retry is not None else RetryPolicy()
        self.timeout = timeout
        self.reconnects = 0
        self._headers = _base.auth_headers(api_key)
        self._pending: deque[_Pending] = deque()
        self._delayed = 0
        self._nsent = 0  # the head of _pending sent on this connection, unanswered
        self._solo = 0  # after a 1009: how many to send one at a time to find the culprit
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._broken: AgentcastError | None = None
        self._ws: _WebSocket | None = None

    async def __aenter__(self) -> AgentSocket:
        await self.connect()
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(wait=ev is None)

    async def connect(self) -> None:
        """Opens the socket; raises AuthenticationError (401) or ConnectionFailedError."""
        self._main = asyncio.create_task(self._run())
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({ready, self._main}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._broken is not None:
            raise self._broken

    async def close(self, *, wait: bool = True) -> None:
        """With `wait`, first lets every publish get its answer; then closes. Without,
        publishes still unanswered are cancelled."""
        if wait:
            futures = [p.future for p in self._pending]
            while futures or self._delayed:
                await asyncio.gather(*futures, return_exceptions=True)
                futures = [p.future for p in self._pending]
                if self._delayed and not futures:
                    await asyncio.sleep(0.01)
        ws, self._ws = self._ws, None
        if self._main is not None:
            self._main.cancel()
            await asyncio.gather(self._main, return_exceptions=True)
        if ws is not None:
            await ws.close()
        while self._pending:  # abandoned by close(wait=False)
            self._pending.popleft().future.cancel()

    def submit(self, event: Event) -> asyncio.Future[PublishResult]:
        """Queues one event for sending now and returns the future of its result."""
        return self._submit(_base.with_key(event), None)

    def submit_batch(self, events: Sequence[Event]) -> asyncio.Future[list[PublishResult]]:
        """Queues an array (all or nothing) and returns the future of its results."""
        body = _base.events_of(events)
        return self._submit(body, len(body))

    async def publish(self, event: Event) -> PublishResult:
        """Publishes one event; the same errors as `Client.publish`."""
        return await self.submit(event)

    async def publish_batch(self, events: Sequence[Event]) -> list[PublishResult]:
        return await self.submit_batch(events)

    def _submit(self, body: Any, n: int | None) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._broken is not None:
            fut.set_exception(self._broken)
            return fut
        self._pending.append(_Pending(json.dumps(body, separators=(",", ":"), ensure_ascii=False), n, fut))
        self._wake.set()
        return fut

    def _fail_all(self, err: AgentcastError) -> None:
        while self._pending:
            p = self._pending.popleft()
            if not p.future.done():
                p.future.set_exception(err)

    async def _run(self) -> None:
        policy = self.retry
        failures = 0
        while True:
            try:
                ws = await _open(self.url, self._headers, self.timeout)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                status = _handshake_status(e)
                if status is not None and status != 503:
                    self._broken = error_for(status, _handshake_body(e, status))
                    self._fail_all(self._broken)
                    return
                failures += 1
                wait = policy.next_wait(failures - 1, status or e)
                if wait is None:
                    self._broken = ConnectionFailedError(
                        0, f"{self.url} unreachable after {failures} attempts: {e!r}"
                    )
                    self._broken.__cause__ = e
                    self._fail_all(self._broken)
                    return
                await asyncio.sleep(wait)
                continue
            if self._ready.is_set():
                self.reconnects += 1
            self._ws = ws
            self._ready.set()
            self._nsent = 0
            sender = asyncio.create_task(self._send_loop(ws))
            try:
                answered = await self._recv_loop(ws)
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
                self._ws = None
            if ws.close_code == CLOSE_TOO_BIG and self._pending:
                self._too_big()
                continue
            if answered:
                failures = 0
                continue
            # Closed without answering anything: back off as after a failed connect, so a
            # gateway that keeps closing is not hammered, and give up in the end.
            failures += 1
            wait = policy.next_wait(failures - 1, ws.close_code or 1006)
            if wait is None:
                self._broken = ConnectionFailedError(
                    0, f"{self.url} closed the socket {failures} times without answering"
                )
                self._fail_all(self._broken)
                return
            await asyncio.sleep(wait)

    def _too_big(self) -> None:
        """The gateway closed with 1009: one of the messages in flight was over its
        --max-publish-size, but which one the close does not say (the answers of those
        before it may be lost with the connection). With one in flight, that is the one;
        otherwise they are sent again one at a time (same keys: those already taken come
        back as duplicates) until the culprit closes the connection alone."""
        if self._nsent == 1 or self._solo > 0:
            p = self._pending.popleft()
            self._solo = max(0, self._solo - 1)
            if not p.future.done():
                p.future.set_exception(
                    PayloadTooLargeError(413, "message over --max-publish-size (close 1009)")
                )
        else:
            self._solo = self._nsent

    async def _send_loop(self, ws: _WebSocket) -> None:
        while True:
            if self._nsent < len(self._pending) and (self._solo == 0 or self._nsent == 0):
                p = self._pending[self._nsent]
                self._nsent += 1
                await ws.send(p.text)
            else:
                self._wake.clear()
                await self._wake.wait()

    async def _recv_loop(self, ws: _WebSocket) -> int:
        answered = 0
        try:
            async for msg in ws:
                answered += 1
                if not self._pending:
                    raise AgentcastError(0, f"reply with nothing pending: {msg!r}")
                p = self._pending.popleft()
                self._nsent = max(0, self._nsent - 1)
                self._solo = max(0, self._solo - 1)
                self._wake.set()
                self._answer(p, json.loads(msg))
        except asyncio.CancelledError:
            raise
        except Exception:
            pass  # the connection broke: what is still pending is sent again
        return answered

    def _answer(self, p: _Pending, body: Any) -> None:
        if p.future.done():
            return
        if isinstance(body, dict) and "error" in body:
            status = body.get("status")
            status = status if isinstance(status, int) else 400
            wait = self.retry.next_wait(p.tries - 1, 503) if status == 503 else None
            if wait is not None:
                p.tries += 1
                self._delayed += 1
                asyncio.get_running_loop().call_later(wait, self._requeue, p)
                return
            p.future.set_exception(error_for(status, body))
            return
        try:
            if p.n is None:
                p.future.set_result(_base.publish_result(200, body))
            else:
                p.future.set_result(_base.batch_results(200, body, p.n))
        except AgentcastError as e:
            p.future.set_exception(e)

    def _requeue(self, p: _Pending) -> None:
        self._delayed -= 1
        if self._broken is not None:
            if not p.future.done():
                p.future.set_exception(self._broken)
            return
        self._pending.append(p)
        self._wake.set()
