"""Runs as context managers (sync and async) and the seed's emitter names: the exact
events a user's client receives, and the run's state at the gateway."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import agentcast
from conftest import KEY, uid
from harness import Daemon, history, history_sync


def seq_of(msgs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(m["type"], m["data"]) for m in msgs]


def test_run_success(client: agentcast.Client, daemon: Daemon) -> None:
    user = uid()
    with client.run(user, agent="researcher", thread_id="t1") as run:
        run.thinking("Looking it up")
        with run.tool("search", {"q": "oslo"}, tool_call_id="c1") as call:
            call.result({"celsius": -3})
        run.complete("It is -3 °C in Oslo.")
    msgs = history_sync(daemon.ws_url, user)
    assert seq_of(msgs) == [
        ("agent_started", {"agent": "researcher"}),
        ("agent_thinking", {"thought": "Looking it up"}),
        ("tool_executing", {"tool": "search", "tool_call_id": "c1", "args": {"q": "oslo"}}),
        ("tool_completed", {"tool": "search", "tool_call_id": "c1", "result": {"celsius": -3}}),
        ("agent_completed", {"result": "It is -3 °C in Oslo."}),
    ]
    assert {(m["run_id"], m["thread_id"]) for m in msgs} == {(run.run_id, "t1")}
    state = client.run_state(run.run_id)
    assert (state["state"], state["closed_by"]) == ("closed", "agent_completed")


def test_run_exception_inside_a_tool_block_publishes_agent_error_naming_the_tool(
    client: agentcast.Client, daemon: Daemon
) -> None:
    user = uid()
    with pytest.raises(KeyError):
        with client.run(user, agent="a") as run:
            with run.tool("lookup", tool_call_id="c9"):
                raise KeyError("no such city")
    msgs = history_sync(daemon.ws_url, user)
    assert seq_of(msgs) == [
        ("agent_started", {"agent": "a"}),
        ("tool_executing", {"tool": "lookup", "tool_call_id": "c9"}),
        ("agent_error", {"tool": "lookup", "tool_call_id": "c9",
                         "error": "tool lookup failed: 'no such city'"}),
    ]
    assert client.run_state(run.run_id)["closed_by"] == "agent_error"


def test_run_exception_inside_the_run_publishes_agent_error_with_its_text(
    client: agentcast.Client, daemon: Daemon
) -> None:
    user = uid()
    with pytest.raises(RuntimeError, match="model overloaded"):
        with client.run(user, agent="a", run_id=uid("run")) as run:
            run.thinking("hm")
            raise RuntimeError("model overloaded")
    assert seq_of(history_sync(daemon.ws_url, user)) == [
        ("agent_started", {"agent": "a"}),
        ("agent_thinking", {"thought": "hm"}),
        ("agent_error", {"error": "model overloaded"}),
    ]
    assert client.run_state(run.run_id)["state"] == "closed"


def test_a_refused_closing_event_is_noted_on_the_exception_not_hiding_it(
    client: agentcast.Client,
) -> None:
    user, run_id = uid(), uid("run")
    with pytest.raises(ValueError) as e:
        with client.run(user, agent="a", run_id=run_id):
            client.publish({"user_id": user, "type": "agent_completed", "run_id": run_id,
                            "data": {"result": "closed behind the run's back"}})
            raise ValueError("boom")
    assert any("run_id: run closed" in n for n in e.value.__notes__)


async def _async_runs(url: str, ws: str) -> None:
    async with agentcast.AsyncClient(url, api_key=KEY) as ac:
        ok, tool_fail, run_fail = uid(), uid(), uid()
        async with ac.run(ok, agent="r") as run:
            await run.thinking("t")
            async with run.tool("calc", {"x": 1}, tool_call_id="c1") as call:
                call.result(2)
            await run.custom("progress", {"pct": 50})
            run.complete(2)
        assert seq_of(await history(ws, ok)) == [
            ("agent_started", {"agent": "r"}),
            ("agent_thinking", {"thought": "t"}),
            ("tool_executing", {"tool": "calc", "tool_call_id": "c1", "args": {"x": 1}}),
            ("tool_completed", {"tool": "calc", "tool_call_id": "c1", "result": 2}),
            ("progress", {"pct": 50}),
            ("agent_completed", {"result": 2}),
        ]
        with pytest.raises(ZeroDivisionError):
            async with ac.run(tool_fail, agent="r") as run:
                async with run.tool("calc", tool_call_id="c2"):
                    1 / 0
        assert seq_of(await history(ws, tool_fail))[-1] == (
            "agent_error",
            {"tool": "calc", "tool_call_id": "c2", "error": "tool calc failed: division by zero"},
        )
        with pytest.raises(asyncio.CancelledError):
            async with ac.run(run_fail, agent="r"):
                raise asyncio.CancelledError()
        assert seq_of(await history(ws, run_fail)) == [
            ("agent_started", {"agent": "r"}),
            ("agent_error", {"error": "CancelledError"}),
        ]


def test_async_runs_success_tool_exception_and_run_exception(daemon: Daemon) -> None:
    asyncio.run(_async_runs(daemon.url, daemon.ws_url))


def test_emitter_with_the_seeds_names(client: agentcast.Client, daemon: Daemon) -> None:
    user, run_id = uid(), uid("run")
    em = client.emitter(user, thread_id="t1", run_id=run_id)
    em.emit_agent_started({"agent": "x"})
    em.notify_agent_thinking("step 1", step=1)
    em.emit_agent_thinking({"thought": "step 2"})
    em.notify_tool_executing("search", args={"q": "a"})
    em.notify_tool_completed("search", ["hit"])
    em.emit_tool_executing({"tool": "calc", "tool_call_id": "k"})
    em.emit_tool_completed({"tool": "calc", "tool_call_id": "k", "result": 3})
    em.notify_custom("progress", {"pct": 90})
    em.notify_agent_completed("done", tokens=12)
    msgs = history_sync(daemon.ws_url, user)
    types = [m["type"] for m in msgs]
    assert types == ["agent_started", "agent_thinking", "agent_thinking", "tool_executing",
                     "tool_completed", "tool_executing", "tool_completed", "progress",
                     "agent_completed"]
    assert msgs[1]["data"] == {"thought": "step 1", "step": 1}
    call_id = msgs[3]["data"]["tool_call_id"]
    assert msgs[4]["data"] == {"tool": "search", "result": ["hit"], "tool_call_id": call_id}
    assert msgs[8]["data"] == {"result": "done", "tokens": 12}
    assert em.get_stats() == {
        "user_id": user,
        "event_counts": {"agent_started": 1, "agent_thinking": 2, "tool_executing": 2,
                         "tool_completed": 2, "agent_completed": 1, "progress": 1},
        "total_events": 9,
    }
    other = client.emitter(uid(), run_id=uid("run"))
    other.notify_agent_started("y")
    other.emit_agent_completed({"result": "r"})
    with pytest.raises(agentcast.ConflictError):
        other.notify_agent_error("too late")
    assert other.get_stats()["total_events"] == 2  # refused events are not counted


async def _async_emitter(url: str, ws: str) -> None:
    user = uid()
    async with agentcast.AsyncClient(url, api_key=KEY) as ac:
        em = ac.emitter(user, run_id=uid("run"))
        await em.notify_agent_started("x")
        await em.emit_tool_executing({"tool": "t"})
        await em.emit_tool_completed({"tool": "t", "result": 1})
        await em.notify_tool_executing("t")
        await em.notify_tool_completed("t", 2)
        await em.emit_agent_thinking({"thought": "."})
        await em.notify_agent_error("failed", code=7)
    msgs = await history(ws, user)
    assert [m["type"] for m in msgs] == ["agent_started", "tool_executing", "tool_completed",
                                         "tool_executing", "tool_completed", "agent_thinking",
                                         "agent_error"]
    assert msgs[1]["data"]["tool_call_id"] == msgs[2]["data"]["tool_call_id"]
    assert msgs[3]["data"]["tool_call_id"] == msgs[4]["data"]["tool_call_id"]
    assert msgs[1]["data"]["tool_call_id"] != msgs[3]["data"]["tool_call_id"]
    assert msgs[6]["data"] == {"error": "failed", "code": 7}
    assert em.get_stats()["total_events"] == 7


def test_async_emitter_with_the_seeds_names(daemon: Daemon) -> None:
    asyncio.run(_async_emitter(daemon.url, daemon.ws_url))
