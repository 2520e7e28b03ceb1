"""The LangChain / LangGraph callback methods of `agentcast.langchain`, kept free of any
LangChain import so the mapping can be read (and exercised) without the framework. The
signatures are langchain-core's `BaseCallbackHandler`'s (callbacks/base.py); every method
takes `**kwargs` as LangChain passes more keywords over time.

Mapping (one agentcast run per outermost LangChain run):
- the outermost chain / chat model / LLM / tool start -> `agent_started` (`agent`: its name)
- streamed tokens -> `agent_thinking`, coalesced (`flush_interval` s or `flush_chars`)
- tool start / end -> `tool_executing` / `tool_completed`; `tool_call_id` is LangChain's
  run id of the tool call (the model's own id, when the output is a ToolMessage, is added
  to `tool_completed` as `model_tool_call_id`)
- the outermost run's end -> `agent_completed` (`result`: its output)
- any error (chain, model, tool) -> `agent_error`; the run is then closed, and later
  callbacks of it publish nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any
from uuid import UUID

from ._adapt import TokenBuffer, jsonable
from .emitter import AsyncEmitter, Emitter

Out = list[tuple[str, dict[str, Any]]]


def _name(serialized: dict[str, Any] | None, kwargs: dict[str, Any], default: str) -> str:
    name = kwargs.get("name")
    if isinstance(name, str) and name:
        return name
    if serialized:
        n = serialized.get("name")
        if isinstance(n, str) and n:
            return n
        ident = serialized.get("id")
        if isinstance(ident, list) and ident and isinstance(ident[-1], str):
            return ident[-1]
    return default


def _chain_result(outputs: Any) -> Any:
    if isinstance(outputs, dict):
        if "output" in outputs:
            return jsonable(outputs["output"])
        msgs = outputs.get("messages")
        if isinstance(msgs, list) and msgs:
            return jsonable(msgs[-1])
    return jsonable(outputs)


def _llm_text(response: Any) -> Any:
    gens = getattr(response, "generations", None)
    if isinstance(gens, list) and gens and isinstance(gens[-1], list) and gens[-1]:
        g = gens[-1][-1]
        msg = getattr(g, "message", None)
        return jsonable(msg if msg is not None else getattr(g, "text", g))
    return jsonable(response)


class _Mapping:
    """The state of one handler: which LangChain run is the agentcast run, open tools,
    the token buffer. Each step returns the events to publish, in order."""

    def __init__(
        self,
        agent_name: str | None,
        flush_interval: float,
        flush_chars: int,
        clock: Callable[[], float],
    ) -> None:
        self.agent_name = agent_name
        self.root: UUID | None = None
        self.closed = False
        self.tools: dict[UUID, str] = {}
        self.tokens = TokenBuffer(flush_interval, flush_chars, clock)

    def _flushed(self) -> Out:
        text = self.tokens.flush()
        return [("agent_thinking", {"thought": text})] if text else []

    def start(self, run_id: UUID, parent: UUID | None, name: str) -> Out:
        if self.root is not None or self.closed or parent is not None:
            return []
        self.root = run_id
        return [("agent_started", {"agent": self.agent_name or name})]

    def open(self) -> bool:
        return self.root is not None and not self.closed

    def end(self, run_id: UUID, result: Any) -> Out:
        if run_id != self.root or self.closed:
            return []
        self.closed = True
        return self._flushed() + [("agent_completed", {"result": result})]

    def error(self, run_id: UUID, error: BaseException, extra: dict[str, Any]) -> Out:
        if not self.open():
            return []
        self.closed = True
        text = str(error) or type(error).__name__
        if extra:
            text = f"tool {extra['tool']} failed: {text}"
        return self._flushed() + [("agent_error", {**extra, "error": text})]

    def token(self, token: str) -> Out:
        if not self.open():
            return []
        text = self.tokens.add(token)
        return [("agent_thinking", {"thought": text})] if text else []

    def llm_end(self, run_id: UUID, response: Any) -> Out:
        if not self.open():
            return []
        return self._flushed() + self.end(run_id, _llm_text(response))

    def tool_start(self, run_id: UUID, parent: UUID | None, name: str, args: Any) -> Out:
        out = self.start(run_id, parent, name)
        if not self.open():
            return out
        self.tools[run_id] = name
        data = {"tool": name, "tool_call_id": str(run_id), "args": jsonable(args)}
        return out + self._flushed() + [("tool_executing", data)]

    def tool_end(self, run_id: UUID, output: Any) -> Out:
        name = self.tools.pop(run_id, None)
        if name is None or not self.open():
            return []
        data: dict[str, Any] = {"tool": name, "tool_call_id": str(run_id), "result": jsonable(output)}
        model_id = getattr(output, "tool_call_id", None)
        if isinstance(model_id, str):
            data["model_tool_call_id"] = model_id
        return [("tool_completed", data)] + self.end(run_id, data["result"])

    def tool_error(self, run_id: UUID, error: BaseException) -> Out:
        name = self.tools.pop(run_id, None)
        extra = {"tool": name, "tool_call_id": str(run_id)} if name is not None else {}
        return self.error(run_id, error, extra)


class CallbackMethods:
    """The blocking handler's methods (see the module docstring); publishes through an
    `Emitter` whose `run_id` is the agentcast run (one is generated when it has none)."""

    def __init__(
        self,
        emitter: Emitter,
        *,
        agent_name: str | None = None,
        flush_interval: float = 0.25,
        flush_chars: int = 400,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if emitter.run_id is None:
            emitter.run_id = "run-" + uuid.uuid4().hex
        self.emitter = emitter
        self._map = _Mapping(agent_name, flush_interval, flush_chars, clock)

    def _send(self, out: Out) -> None:
        for event_type, data in out:
            self.emitter.notify_custom(event_type, data)

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._send(self._map.start(run_id, parent_run_id, _name(serialized, kwargs, "agent")))

    def on_chain_end(
        self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._send(self._map.end(run_id, _chain_result(outputs)))

    def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._send(self._map.error(run_id, error, {}))

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._send(self._map.start(run_id, parent_run_id, _name(serialized, kwargs, "model")))

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._send(self._map.start(run_id, parent_run_id, _name(serialized, kwargs, "llm")))

    def on_llm_new_token(
        self,
        token: str,
        *,
        chunk: Any = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._send(self._map.token(token))

    def on_llm_end(
        self, response: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._send(self._map.llm_end(run_id, response))

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._send(self._map.error(run_id, error, {}))

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = _name(serialized, {}, "tool")
        args = inputs if inputs is not None else input_str
        self._send(self._map.tool_start(run_id, parent_run_id, name, args))

    def on_tool_end(
        self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._send(self._map.tool_end(run_id, output))

    def on_tool_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._send(self._map.tool_error(run_id, error))


class AsyncCallbackMethods:
    """The asyncio twin of `CallbackMethods` (langchain-core's `AsyncCallbackHandler`),
    publishing through an `AsyncEmitter`."""

    def __init__(
        self,
        emitter: AsyncEmitter,
        *,
        agent_name: str | None = None,
        flush_interval: float = 0.25,
        flush_chars: int = 400,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if emitter.run_id is None:
            emitter.run_id = "run-" + uuid.uuid4().hex
        self.emitter = emitter
        self._map = _Mapping(agent_name, flush_interval, flush_chars, clock)

    async def _send(self, out: Out) -> None:
        for event_type, data in out:
            await self.emitter.notify_custom(event_type, data)

    async def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        await self._send(self._map.start(run_id, parent_run_id, _name(serialized, kwargs, "agent")))

    async def on_chain_end(
        self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        await self._send(self._map.end(run_id, _chain_result(outputs)))

    async def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        await self._send(self._map.error(run_id, error, {}))

    async def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        await self._send(self._map.start(run_id, parent_run_id, _name(serialized, kwargs, "model")))

    async def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        await self._send(self._map.start(run_id, parent_run_id, _name(serialized, kwargs, "llm")))

    async def on_llm_new_token(
        self,
        token: str,
        *,
        chunk: Any = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        await self._send(self._map.token(token))

    async def on_llm_end(
        self, response: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        await self._send(self._map.llm_end(run_id, response))

    async def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        await self._send(self._map.error(run_id, error, {}))

    async def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = _name(serialized, {}, "tool")
        args = inputs if inputs is not None else input_str
        await self._send(self._map.tool_start(run_id, parent_run_id, name, args))

    async def on_tool_end(
        self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        await self._send(self._map.tool_end(run_id, output))

    async def on_tool_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        await self._send(self._map.tool_error(run_id, error))
