"""The seed's emitter (`UnifiedWebSocketEmitter`) on top of the gateway: one user, an
optional thread and run, the five critical events, `notify_*` wrappers and per-type counts.
`Emitter` publishes through anything with a blocking `publish(event)` (a `Client`),
`AsyncEmitter` through anything with an awaitable one (an `AsyncClient`, an `AgentSocket`).

Unlike the seed, a refused event raises (a typed `AgentcastError`) instead of being logged
and dropped, and `tool_call_id` (which the gateway requires) is generated when missing and
paired with the next `tool_completed` of the same tool."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from ._base import CRITICAL_EVENTS, Event, PublishResult, new_key


class Publisher(Protocol):
    def publish(self, event: Event) -> PublishResult: ...


class AsyncPublisher(Protocol):
    async def publish(self, event: Event) -> PublishResult: ...


class _EmitterState:
    """What both emitters do without I/O: build the event, pair tool call ids, count."""

    CRITICAL_EVENTS = CRITICAL_EVENTS

    def __init__(self, user_id: str, thread_id: str | None, run_id: str | None) -> None:
        self.user_id = user_id
        self.thread_id = thread_id
        self.run_id = run_id
        self._event_count: dict[str, int] = {t: 0 for t in CRITICAL_EVENTS}
        self._open_calls: dict[str, deque[str]] = {}

    def _event(self, event_type: str, data: Mapping[str, Any]) -> dict[str, Any]:
        d = dict(data)
        if event_type == "tool_executing" and d.get("tool_call_id") is None:
            d["tool_call_id"] = "call-" + new_key()[:16]
        elif event_type == "tool_completed" and d.get("tool_call_id") is None:
            calls = self._open_calls.get(str(d.get("tool")))
            if calls:
                d["tool_call_id"] = calls[0]
        ev: dict[str, Any] = {"user_id": self.user_id, "type": event_type, "data": d}
        if self.run_id is not None:
            ev["run_id"] = self.run_id
        if self.thread_id is not None:
            ev["thread_id"] = self.thread_id
        return ev

    def _done(self, ev: dict[str, Any]) -> None:
        t: str = ev["type"]
        self._event_count[t] = self._event_count.get(t, 0) + 1
        d = ev["data"]
        if t == "tool_executing":
            self._open_calls.setdefault(str(d.get("tool")), deque()).append(d["tool_call_id"])
        elif t == "tool_completed":
            calls = self._open_calls.get(str(d.get("tool")))
            if calls and d.get("tool_call_id") in calls:
                calls.remove(d["tool_call_id"])

    def get_stats(self) -> dict[str, Any]:
        """The seed's shape: `user_id`, `event_counts` (per type, published by this
        emitter), `total_events`."""
        return {
            "user_id": self.user_id,
            "event_counts": dict(self._event_count),
            "total_events": sum(self._event_count.values()),
        }


class Emitter(_EmitterState):
    """A blocking emitter; see the module docstring. Each call returns the gateway's
    `PublishResult`."""

    def __init__(
        self,
        publisher: Publisher,
        user_id: str,
        *,
        thread_id: str | None = None,
        run_id: str | None = None,
    ) -> None:
        super().__init__(user_id, thread_id, run_id)
        self.publisher = publisher

    def _emit(self, event_type: str, data: Mapping[str, Any]) -> PublishResult:
        ev = self._event(event_type, data)
        res = self.publisher.publish(ev)
        self._done(ev)
        return res

    def emit_agent_started(self, data: Mapping[str, Any]) -> PublishResult:
        return self._emit("agent_started", data)

    def emit_agent_thinking(self, data: Mapping[str, Any]) -> PublishResult:
        return self._emit("agent_thinking", data)

    def emit_tool_executing(self, data: Mapping[str, Any]) -> PublishResult:
        return self._emit("tool_executing", data)

    def emit_tool_completed(self, data: Mapping[str, Any]) -> PublishResult:
        return self._emit("tool_completed", data)

    def emit_agent_completed(self, data: Mapping[str, Any]) -> PublishResult:
        return self._emit("agent_completed", data)

    def notify_agent_started(self, agent_name: str, **kw: Any) -> PublishResult:
        return self._emit("agent_started", {"agent": agent_name, **kw})

    def notify_agent_thinking(self, thought: str, **kw: Any) -> PublishResult:
        return self._emit("agent_thinking", {"thought": thought, **kw})

    def notify_tool_executing(self, tool_name: str, **kw: Any) -> PublishResult:
        return self._emit("tool_executing", {"tool": tool_name, **kw})

    def notify_tool_completed(self, tool_name: str, result: Any, **kw: Any) -> PublishResult:
        return self._emit("tool_completed", {"tool": tool_name, "result": result, **kw})

    def notify_agent_completed(self, result: Any, **kw: Any) -> PublishResult:
        return self._emit("agent_completed", {"result": result, **kw})

    def notify_agent_error(self, error: str, **kw: Any) -> PublishResult:
        return self._emit("agent_error", {"error": error, **kw})

    def notify_custom(self, event_type: str, data: Mapping[str, Any]) -> PublishResult:
        return self._emit(event_type, data)


class AsyncEmitter(_EmitterState):
    """The asyncio twin of `Emitter` (the seed's methods were coroutines: code migrating
    from it keeps its `await`s)."""

    def __init__(
        self,
        publisher: AsyncPublisher,
        user_id: str,
        *,
        thread_id: str | None = None,
        run_id: str | None = None,
    ) -> None:
        super().__init__(user_id, thread_id, run_id)
        self.publisher = publisher

    async def _emit(self, event_type: str, data: Mapping[str, Any]) -> PublishResult:
        ev = self._event(event_type, data)
        res = await self.publisher.publish(ev)
        self._done(ev)
        return res

    async def emit_agent_started(self, data: Mapping[str, Any]) -> PublishResult:
        return await self._emit("agent_started", data)

    async def emit_agent_thinking(self, data: Mapping[str, Any]) -> PublishResult:
        return await self._emit("agent_thinking", data)

    async def emit_tool_executing(self, data: Mapping[str, Any]) -> PublishResult:
        return await self._emit("tool_executing", data)

    async def emit_tool_completed(self, data: Mapping[str, Any]) -> PublishResult:
        return await self._emit("tool_completed", data)

    async def emit_agent_completed(self, data: Mapping[str, Any]) -> PublishResult:
        return await self._emit("agent_completed", data)

    async def notify_agent_started(self, agent_name: str, **kw: Any) -> PublishResult:
        return await self._emit("agent_started", {"agent": agent_name, **kw})

    async def notify_agent_thinking(self, thought: str, **kw: Any) -> PublishResult:
        return await self._emit("agent_thinking", {"thought": thought, **kw})

    async def notify_tool_executing(self, tool_name: str, **kw: Any) -> PublishResult:
        return await self._emit("tool_executing", {"tool": tool_name, **kw})

    async def notify_tool_completed(
        self, tool_name: str, result: Any, **kw: Any
    ) -> PublishResult:
        return await self._emit("tool_completed", {"tool": tool_name, "result": result, **kw})

    async def notify_agent_completed(self, result: Any, **kw: Any) -> PublishResult:
        return await self._emit("agent_completed", {"result": result, **kw})

    async def notify_agent_error(self, error: str, **kw: Any) -> PublishResult:
        return await self._emit("agent_error", {"error": error, **kw})

    async def notify_custom(self, event_type: str, data: Mapping[str, Any]) -> PublishResult:
        return await self._emit(event_type, data)
