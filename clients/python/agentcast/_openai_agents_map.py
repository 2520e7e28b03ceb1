"""The OpenAI Agents SDK hooks of `agentcast.openai_agents`, kept free of any import of
the `agents` package. The signatures are the SDK's `RunHooksBase` (lifecycle.py):
`on_agent_start(context, agent)`, `on_agent_end(context, agent, output)`,
`on_handoff(context, from_agent, to_agent)`, `on_tool_start(context, agent, tool)`,
`on_tool_end(context, agent, tool, result)`.

Mapping (one agentcast run per `Runner.run`):
- the first agent's start -> `agent_started` (`agent`: its name)
- a handoff -> the custom event `agent.handoff` (`from`, `to`)
- tool start / end -> `tool_executing` / `tool_completed`; `tool_call_id` is the model's
  (`context.tool_call_id`, which the SDK's ToolContext carries) when there is one, else one
  generated at start and paired with the next end of the same tool
- the final output (`on_agent_end`) -> `agent_completed` (`result`: the output)
- the SDK has no error hook: `await hooks.fail(exc)` (or `async with hooks.guard():`
  around `Runner.run`) publishes `agent_error`."""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ._adapt import jsonable
from .emitter import AsyncEmitter


def _name(obj: Any, default: str) -> str:
    name = getattr(obj, "name", None)
    return name if isinstance(name, str) and name else default


class RunHooksMethods:
    """See the module docstring; publishes through an `AsyncEmitter` (whose `run_id` is
    the agentcast run: one is generated when it has none). One instance per run."""

    def __init__(self, emitter: AsyncEmitter, *, agent_name: str | None = None) -> None:
        super().__init__()
        if emitter.run_id is None:
            emitter.run_id = "run-" + uuid.uuid4().hex
        self.emitter = emitter
        self.agent_name = agent_name
        self.started = False
        self.closed = False
        self._calls: dict[str, deque[str]] = {}

    async def _send(self, event_type: str, data: dict[str, Any]) -> None:
        if self.started and not self.closed:
            await self.emitter.notify_custom(event_type, data)

    async def on_agent_start(self, context: Any, agent: Any) -> None:
        if self.started or self.closed:
            return
        self.started = True
        await self.emitter.notify_agent_started(self.agent_name or _name(agent, "agent"))

    async def on_agent_end(self, context: Any, agent: Any, output: Any) -> None:
        await self._send("agent_completed", {"result": jsonable(output), "agent": _name(agent, "agent")})
        self.closed = True

    async def on_handoff(self, context: Any, from_agent: Any, to_agent: Any) -> None:
        await self._send(
            "agent.handoff", {"from": _name(from_agent, "agent"), "to": _name(to_agent, "agent")}
        )

    async def on_tool_start(self, context: Any, agent: Any, tool: Any) -> None:
        name = _name(tool, "tool")
        call_id = getattr(context, "tool_call_id", None)
        if not isinstance(call_id, str) or not call_id:
            call_id = "call-" + uuid.uuid4().hex[:16]
            self._calls.setdefault(name, deque()).append(call_id)
        data: dict[str, Any] = {"tool": name, "tool_call_id": call_id, "agent": _name(agent, "agent")}
        args = getattr(context, "tool_arguments", None)
        if isinstance(args, str):
            data["args"] = args
        await self._send("tool_executing", data)

    async def on_tool_end(self, context: Any, agent: Any, tool: Any, result: Any) -> None:
        name = _name(tool, "tool")
        call_id = getattr(context, "tool_call_id", None)
        if not isinstance(call_id, str) or not call_id:
            calls = self._calls.get(name)
            call_id = calls.popleft() if calls else "call-unknown"
        await self._send(
            "tool_completed", {"tool": name, "tool_call_id": call_id, "result": jsonable(result)}
        )

    async def fail(self, error: BaseException | str) -> None:
        """Publishes `agent_error` for a run that raised (once; nothing if it ended)."""
        text = error if isinstance(error, str) else (str(error) or type(error).__name__)
        await self._send("agent_error", {"error": text})
        self.closed = True

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """`async with hooks.guard(): await Runner.run(...)`: an exception escaping the
        block publishes `agent_error`, then goes on."""
        try:
            yield
        except BaseException as e:
            await self.fail(e)
            raise
