"""The framework adapters against the real daemon. LangChain and the OpenAI Agents SDK are
not packaged in Debian 12 and PyPI is unreachable where these tests run, so the handlers'
methods are called here exactly as each framework calls them (the same positional and
keyword arguments, objects of the same shape), and the events a real WebSocket client
receives are checked. Where a framework is installed, the tests at the end also drive
the adapter with the framework itself; elsewhere they are reported as skipped, with why."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

import agentcast
from agentcast._langchain_map import AsyncCallbackMethods, CallbackMethods
from agentcast._openai_agents_map import RunHooksMethods
from conftest import KEY, uid
from harness import Daemon, history, history_sync

NOT_PACKAGED = "not packaged in Debian 12, and PyPI is unreachable here"


# Objects of the shapes LangChain hands its callbacks (langchain_core.messages /
# langchain_core.outputs); only the attributes the handler reads.
@dataclass
class AIMessage:
    content: str


@dataclass
class ChatGeneration:
    message: AIMessage
    text: str = ""


@dataclass
class LLMResult:
    generations: list[list[ChatGeneration]]


@dataclass
class ToolMessage:
    content: str
    tool_call_id: str
    name: str = ""


def types_and_data(msgs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(m["type"], m["data"]) for m in msgs]


def drive_langchain_run(h: CallbackMethods, tokens: list[str]) -> tuple[uuid.UUID, uuid.UUID]:
    """The callbacks of a LangGraph agent: graph start, a streamed chat model call, a tool
    call (invoked with a ToolCall, so its output is a ToolMessage), the graph's end."""
    root, model, tool = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    h.on_chain_start(None, {"messages": [("user", "weather in Oslo?")]}, run_id=root,
                     parent_run_id=None, tags=[], metadata={}, name="LangGraph")
    h.on_chat_model_start({"lc": 1, "type": "constructor", "id": ["langchain", "chat_models", "FakeChat"]},
                          [[object()]], run_id=model, parent_run_id=root, tags=["seq:step:1"],
                          metadata={"langgraph_step": 1}, invocation_params={}, options={"stop": None},
                          name=None, batch_size=1)
    for t in tokens:
        h.on_llm_new_token(t, chunk=None, run_id=model, parent_run_id=root, tags=["seq:step:1"])
    h.on_llm_end(LLMResult([[ChatGeneration(AIMessage("".join(tokens)))]]), run_id=model,
                 parent_run_id=root, tags=["seq:step:1"])
    h.on_tool_start({"name": "weather", "description": "Current weather"}, "{'city': 'Oslo'}",
                    run_id=tool, parent_run_id=root, tags=[], metadata={}, color="green",
                    name=None, inputs={"city": "Oslo"})
    return root, tool


def test_langchain_handler_maps_a_run_to_the_five_events(client: agentcast.Client, daemon: Daemon) -> None:
    user = uid()
    h = CallbackMethods(client.emitter(user, thread_id="t1"), flush_interval=math.inf, flush_chars=12)
    root, tool = drive_langchain_run(h, ["Let", " me", " look", " it", " up", " now"])
    h.on_tool_end(ToolMessage("-3 °C", tool_call_id="call_abc", name="weather"), run_id=tool,
                  parent_run_id=root, color="green", name="weather", tags=[])
    h.on_chain_end({"messages": [AIMessage("It is -3 °C in Oslo.")]}, run_id=root,
                   parent_run_id=None, tags=[])
    msgs = history_sync(daemon.ws_url, user)
    assert types_and_data(msgs) == [
        ("agent_started", {"agent": "LangGraph"}),
        ("agent_thinking", {"thought": "Let me look it"}),
        ("agent_thinking", {"thought": " up now"}),
        ("tool_executing", {"tool": "weather", "tool_call_id": str(tool), "args": {"city": "Oslo"}}),
        ("tool_completed", {"tool": "weather", "tool_call_id": str(tool), "result": "-3 °C",
                            "model_tool_call_id": "call_abc"}),
        ("agent_completed", {"result": "It is -3 °C in Oslo."}),
    ]
    assert {m["run_id"] for m in msgs} == {h.emitter.run_id}
    assert client.run_state(str(h.emitter.run_id))["closed_by"] == "agent_completed"


def test_langchain_tokens_are_coalesced_by_time(client: agentcast.Client, daemon: Daemon) -> None:
    now = [0.0]
    user = uid()
    h = CallbackMethods(client.emitter(user), flush_interval=0.25, flush_chars=10_000,
                        clock=lambda: now[0])
    root, model = uuid.uuid4(), uuid.uuid4()
    h.on_chain_start({"name": "RunnableSequence"}, {"input": "x"}, run_id=root, parent_run_id=None)
    for i, t in enumerate(["a", "b", "c", "d", "e"]):
        now[0] = i * 0.1  # 0.0 .. 0.4: 0.25 s have passed at "d" (0.3)
        h.on_llm_new_token(t, run_id=model, parent_run_id=root)
    h.on_llm_end(LLMResult([[ChatGeneration(AIMessage("abcde"))]]), run_id=model, parent_run_id=root)
    h.on_chain_end({"output": "abcde"}, run_id=root, parent_run_id=None)
    assert types_and_data(history_sync(daemon.ws_url, user)) == [
        ("agent_started", {"agent": "RunnableSequence"}),
        ("agent_thinking", {"thought": "abcd"}),
        ("agent_thinking", {"thought": "e"}),
        ("agent_completed", {"result": "abcde"}),
    ]


def test_langchain_tool_error_is_agent_error_and_closes_the_run(client: agentcast.Client, daemon: Daemon) -> None:
    user = uid()
    h = CallbackMethods(client.emitter(user), flush_interval=math.inf, flush_chars=1000)
    root, tool = drive_langchain_run(h, ["Checking"])
    h.on_tool_error(ConnectionError("weather service down"), run_id=tool, parent_run_id=root, tags=[])
    h.on_chain_error(ConnectionError("weather service down"), run_id=root, parent_run_id=None, tags=[])
    msgs = history_sync(daemon.ws_url, user)
    assert types_and_data(msgs)[-1] == (
        "agent_error",
        {"tool": "weather", "tool_call_id": str(tool), "error": "tool weather failed: weather service down"},
    )
    assert [m["type"] for m in msgs].count("agent_error") == 1
    assert client.run_state(str(h.emitter.run_id))["closed_by"] == "agent_error"


def test_langchain_a_bare_model_or_tool_call_is_a_run_of_its_own(client: agentcast.Client, daemon: Daemon) -> None:
    user = uid()
    model, tool = uuid.uuid4(), uuid.uuid4()
    h = CallbackMethods(client.emitter(user), flush_interval=math.inf, flush_chars=1000)
    h.on_chat_model_start({"name": "ChatFake"}, [[object()]], run_id=model, parent_run_id=None,
                          tags=[], metadata={})
    h.on_llm_new_token("4", run_id=model, parent_run_id=None)
    h.on_llm_end(LLMResult([[ChatGeneration(AIMessage("4"))]]), run_id=model, parent_run_id=None)
    t = CallbackMethods(client.emitter(user), flush_interval=math.inf, flush_chars=1000)
    t.on_tool_start({"name": "calc", "description": ""}, "2+2", run_id=tool, parent_run_id=None,
                    tags=[], metadata={}, inputs=None)
    t.on_tool_end(4, run_id=tool, parent_run_id=None, name="calc")
    assert types_and_data(history_sync(daemon.ws_url, user)) == [
        ("agent_started", {"agent": "ChatFake"}),
        ("agent_thinking", {"thought": "4"}),
        ("agent_completed", {"result": "4"}),
        ("agent_started", {"agent": "calc"}),
        ("tool_executing", {"tool": "calc", "tool_call_id": str(tool), "args": "2+2"}),
        ("tool_completed", {"tool": "calc", "tool_call_id": str(tool), "result": 4}),
        ("agent_completed", {"result": 4}),
    ]


async def _async_langchain(url: str, ws: str) -> None:
    user = uid()
    async with agentcast.AsyncClient(url, api_key=KEY) as ac:
        h = AsyncCallbackMethods(ac.emitter(user), agent_name="support-bot", flush_interval=0,
                                 flush_chars=1000)
        root, model = uuid.uuid4(), uuid.uuid4()
        await h.on_chain_start({"name": "AgentExecutor"}, {"input": "hi"}, run_id=root,
                               parent_run_id=None, tags=[], metadata={})
        await h.on_chat_model_start({"name": "Fake"}, [[object()]], run_id=model, parent_run_id=root)
        await h.on_llm_new_token("Hel", run_id=model, parent_run_id=root)
        await h.on_llm_new_token("lo", run_id=model, parent_run_id=root)
        await h.on_llm_error(TimeoutError("model timed out"), run_id=model, parent_run_id=root)
        await h.on_chain_error(TimeoutError("model timed out"), run_id=root, parent_run_id=None)
    assert types_and_data(await history(ws, user)) == [
        ("agent_started", {"agent": "support-bot"}),
        ("agent_thinking", {"thought": "Hel"}),
        ("agent_thinking", {"thought": "lo"}),
        ("agent_error", {"error": "model timed out"}),
    ]


def test_async_langchain_handler_maps_an_error_of_the_model(daemon: Daemon) -> None:
    asyncio.run(_async_langchain(daemon.url, daemon.ws_url))


# Objects of the shapes the OpenAI Agents SDK hands its RunHooks (agents.Agent,
# agents.FunctionTool, agents.RunContextWrapper, agents.tool_context.ToolContext).
@dataclass
class Agent:
    name: str


@dataclass
class FunctionTool:
    name: str


@dataclass
class RunContextWrapper:
    context: Any = None
    usage: dict[str, int] = field(default_factory=dict)


@dataclass
class ToolContext(RunContextWrapper):
    tool_name: str = ""
    tool_call_id: str = ""
    tool_arguments: str = ""


async def _openai_agents(url: str, ws: str) -> None:
    user, failing = uid(), uid()
    async with agentcast.AsyncClient(url, api_key=KEY) as ac:
        hooks = RunHooksMethods(ac.emitter(user, thread_id="t1"))
        triage, weather, tool = Agent("triage"), Agent("weather-agent"), FunctionTool("get_weather")
        ctx = RunContextWrapper()
        await hooks.on_agent_start(ctx, triage)
        await hooks.on_handoff(ctx, triage, weather)
        await hooks.on_agent_start(ctx, weather)
        tctx = ToolContext(tool_name="get_weather", tool_call_id="call_w1", tool_arguments='{"city":"Oslo"}')
        await hooks.on_tool_start(tctx, weather, tool)
        await hooks.on_tool_end(tctx, weather, tool, "-3 °C")
        await hooks.on_tool_start(ctx, weather, tool)  # an SDK without ToolContext
        await hooks.on_tool_end(ctx, weather, tool, "-4 °C")
        await hooks.on_agent_end(ctx, weather, "It is -3 °C in Oslo.")

        bad = RunHooksMethods(ac.emitter(failing))
        with pytest.raises(RuntimeError):
            async with bad.guard():
                await bad.on_agent_start(ctx, triage)
                raise RuntimeError("max turns exceeded")
    msgs = await history(ws, user)
    got = types_and_data(msgs)
    generated = got[5][1]["tool_call_id"]
    assert got == [
        ("agent_started", {"agent": "triage"}),
        ("agent.handoff", {"from": "triage", "to": "weather-agent"}),
        ("tool_executing", {"tool": "get_weather", "tool_call_id": "call_w1", "agent": "weather-agent",
                            "args": '{"city":"Oslo"}'}),
        ("tool_completed", {"tool": "get_weather", "tool_call_id": "call_w1", "result": "-3 °C"}),
        ("tool_executing", {"tool": "get_weather", "tool_call_id": generated, "agent": "weather-agent"}),
        ("tool_completed", {"tool": "get_weather", "tool_call_id": generated, "result": "-4 °C"}),
        ("agent_completed", {"result": "It is -3 °C in Oslo.", "agent": "weather-agent"}),
    ]
    assert types_and_data(await history(ws, failing)) == [
        ("agent_started", {"agent": "triage"}),
        ("agent_error", {"error": "max turns exceeded"}),
    ]


def test_openai_agents_hooks_map_a_run_with_a_handoff_and_tools(daemon: Daemon) -> None:
    asyncio.run(_openai_agents(daemon.url, daemon.ws_url))


# ---- the modules themselves, and the frameworks driving them where installed -------------


@pytest.mark.parametrize(
    "module, framework",
    [("agentcast.langchain", "langchain_core"), ("agentcast.openai_agents", "agents")],
)
def test_an_adapter_imports_only_with_its_framework(module: str, framework: str) -> None:
    if importlib.util.find_spec(framework) is None:
        with pytest.raises(ImportError, match="pip install 'agentcast\\["):
            importlib.import_module(module)
    else:
        importlib.import_module(module)


def _same_parameters(ours: Any, theirs: Any, names: list[str]) -> None:
    for n in names:
        a = [p.name for p in inspect.signature(getattr(ours, n)).parameters.values()]
        b = [p.name for p in inspect.signature(getattr(theirs, n)).parameters.values()]
        assert [x for x in b if x != "kwargs"] == [x for x in a if x in b and x != "kwargs"], n


def test_langchain_drives_the_handler(client: agentcast.Client, daemon: Daemon) -> None:
    pytest.importorskip("langchain_core", reason=f"langchain-core is {NOT_PACKAGED}")
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage as LCAIMessage
    from langchain_core.runnables import RunnableConfig, RunnableLambda
    from langchain_core.tools import tool

    from agentcast.langchain import AgentcastCallbackHandler

    _same_parameters(AgentcastCallbackHandler, BaseCallbackHandler,
                     ["on_chain_start", "on_chain_end", "on_llm_new_token", "on_tool_start",
                      "on_tool_end", "on_tool_error", "on_chain_error"])

    @tool
    def word_count(text: str) -> int:
        """Counts the words of a text."""
        return len(text.split())

    model = GenericFakeChatModel(messages=iter([LCAIMessage(content="Let me count")]))

    def agent(question: str, config: RunnableConfig) -> str:
        for _ in model.stream(question, config=config):
            pass
        return f"{word_count.invoke({'text': question}, config=config)} words"

    user = uid()
    h = AgentcastCallbackHandler(client.emitter(user), flush_interval=math.inf, flush_chars=10_000)
    assert RunnableLambda(agent, name="counter").invoke("a b c", config={"callbacks": [h]}) == "3 words"
    msgs = history_sync(daemon.ws_url, user)
    assert [m["type"] for m in msgs] == ["agent_started", "agent_thinking", "tool_executing",
                                         "tool_completed", "agent_completed"]
    assert msgs[0]["data"] == {"agent": "counter"}
    assert msgs[1]["data"] == {"thought": "Let me count"}
    assert msgs[3]["data"]["result"] == 3
    assert msgs[4]["data"] == {"result": "3 words"}


def test_openai_agents_hooks_are_the_sdks_run_hooks() -> None:
    pytest.importorskip("agents", reason=f"the OpenAI Agents SDK (openai-agents) is {NOT_PACKAGED}")
    from agents.lifecycle import RunHooksBase

    from agentcast.openai_agents import AgentcastRunHooks

    assert issubclass(AgentcastRunHooks, RunHooksBase)
    _same_parameters(AgentcastRunHooks, RunHooksBase,
                     ["on_agent_start", "on_agent_end", "on_handoff", "on_tool_start", "on_tool_end"])
