"""Runs as context managers, so that no run is left hanging on a person's screen:

    with client.run("u1", agent="researcher") as run:      # agent_started
        run.thinking("Looking it up")                       # agent_thinking
        with run.tool("search", {"q": "oslo"}) as call:    # tool_executing
            call.result(search("oslo"))                     # tool_completed on exit
        run.complete("It is -3 °C in Oslo.")                # agent_completed on exit

An exception inside a tool block publishes `agent_error` naming the tool; an exception
anywhere else in the run publishes `agent_error` with its text; either way the exception
goes on. `AsyncRun` is the `async with` twin."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

from ._base import PublishResult, new_key
from .emitter import AsyncEmitter, Emitter, _EmitterState
from .errors import AgentcastError


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class _RunState:
    def __init__(self, emitter: _EmitterState, agent: str) -> None:
        if emitter.run_id is None:
            emitter.run_id = "run-" + new_key()
        self.run_id: str = emitter.run_id
        self.agent = agent
        self.closed = False
        self._result: Any = ""

    def complete(self, result: Any) -> None:
        """The result `agent_completed` carries when the block ends (default "")."""
        self._result = result

    def _closing(self, ev: BaseException | None) -> tuple[str, dict[str, Any]]:
        self.closed = True
        if ev is None:
            return "agent_completed", {"result": self._result}
        return "agent_error", {"error": _text(ev)}


class _CallState:
    def __init__(self, run: _RunState, tool: str, args: Any, tool_call_id: str | None) -> None:
        self.run = run
        self.tool = tool
        self.args = args
        self.tool_call_id = tool_call_id or "call-" + new_key()[:16]
        self._result: Any = ""

    def result(self, value: Any) -> None:
        """The result `tool_completed` carries when the block ends (default "")."""
        self._result = value

    def _start(self) -> dict[str, Any]:
        d: dict[str, Any] = {"tool": self.tool, "tool_call_id": self.tool_call_id}
        if self.args is not None:
            d["args"] = self.args
        return d

    def _closing(self, ev: BaseException | None) -> tuple[str, dict[str, Any]]:
        d: dict[str, Any] = {"tool": self.tool, "tool_call_id": self.tool_call_id}
        if ev is None:
            return "tool_completed", {**d, "result": self._result}
        self.run.closed = True
        return "agent_error", {**d, "error": f"tool {self.tool} failed: {_text(ev)}"}


def _note(ev: BaseException | None, err: AgentcastError) -> bool:
    """Attaches a failure to publish the closing event to the exception already on its
    way (True), rather than hiding that exception behind it."""
    if ev is None:
        return False
    ev.add_note(f"agentcast: the closing event was not published: {err}")
    return True


class Run(_RunState):
    """A blocking run; see the module docstring. `run_id` is the caller's or generated."""

    def __init__(self, emitter: Emitter, agent: str) -> None:
        super().__init__(emitter, agent)
        self.emitter = emitter

    def __enter__(self) -> Run:
        self.emitter.notify_agent_started(self.agent)
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.closed:
            return
        event_type, data = self._closing(ev)
        try:
            self.emitter.notify_custom(event_type, data)
        except AgentcastError as err:
            if not _note(ev, err):
                raise

    def thinking(self, thought: str, **kw: Any) -> PublishResult:
        return self.emitter.notify_agent_thinking(thought, **kw)

    def custom(self, event_type: str, data: Mapping[str, Any]) -> PublishResult:
        return self.emitter.notify_custom(event_type, data)

    def tool(self, name: str, args: Any = None, *, tool_call_id: str | None = None) -> ToolCall:
        return ToolCall(self, name, args, tool_call_id)


class ToolCall(_CallState):
    def __init__(self, run: Run, tool: str, args: Any, tool_call_id: str | None) -> None:
        super().__init__(run, tool, args, tool_call_id)
        self.emitter = run.emitter

    def __enter__(self) -> ToolCall:
        self.emitter.emit_tool_executing(self._start())
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        event_type, data = self._closing(ev)
        try:
            self.emitter.notify_custom(event_type, data)
        except AgentcastError as err:
            if not _note(ev, err):
                raise


class AsyncRun(_RunState):
    """The `async with` twin of `Run`."""

    def __init__(self, emitter: AsyncEmitter, agent: str) -> None:
        super().__init__(emitter, agent)
        self.emitter = emitter

    async def __aenter__(self) -> AsyncRun:
        await self.emitter.notify_agent_started(self.agent)
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.closed:
            return
        event_type, data = self._closing(ev)
        try:
            await self.emitter.notify_custom(event_type, data)
        except AgentcastError as err:
            if not _note(ev, err):
                raise

    async def thinking(self, thought: str, **kw: Any) -> PublishResult:
        return await self.emitter.notify_agent_thinking(thought, **kw)

    async def custom(self, event_type: str, data: Mapping[str, Any]) -> PublishResult:
        return await self.emitter.notify_custom(event_type, data)

    def tool(
        self, name: str, args: Any = None, *, tool_call_id: str | None = None
    ) -> AsyncToolCall:
        return AsyncToolCall(self, name, args, tool_call_id)


class AsyncToolCall(_CallState):
    def __init__(self, run: AsyncRun, tool: str, args: Any, tool_call_id: str | None) -> None:
        super().__init__(run, tool, args, tool_call_id)
        self.emitter = run.emitter

    async def __aenter__(self) -> AsyncToolCall:
        await self.emitter.emit_tool_executing(self._start())
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        event_type, data = self._closing(ev)
        try:
            await self.emitter.notify_custom(event_type, data)
        except AgentcastError as err:
            if not _note(ev, err):
                raise
