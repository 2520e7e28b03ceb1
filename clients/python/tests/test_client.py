"""Every method of Client and AsyncClient (each test runs once through each) against the
real daemon; what the user's WebSocket receives is checked with a real client."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import httpx
import pytest

import agentcast
from agentcast import PublishResult
from conftest import KEY, MAX_PUBLISH, Api, make_api, uid
from harness import Daemon, LoopThread, history_sync, user_socket


def ev(user: str, type_: str = "note", **data: Any) -> dict[str, Any]:
    return {"user_id": user, "type": type_, "data": data}


def test_publish_reaches_the_user_once_with_a_generated_idempotency_key(api: Api, daemon: Daemon) -> None:
    user = uid()
    r1 = api.publish(ev(user, i=1))
    r2 = api.publish(ev(user, i=2))
    assert (r1, r2) == (PublishResult(1, 0), PublishResult(2, 0))
    got = history_sync(daemon.ws_url, user)
    assert [(m["seq"], m["type"], m["data"]) for m in got] == [
        (1, "note", {"i": 1}),
        (2, "note", {"i": 2}),
    ]


def test_a_repeated_idempotency_key_is_acknowledged_with_the_first_seq(api: Api, daemon: Daemon) -> None:
    user = uid()
    e = {**ev(user, i=1), "idempotency_key": "k-1"}
    assert api.publish(e) == PublishResult(1, 0)
    assert api.publish(e) == PublishResult(1, 0, duplicate=True)
    assert [m["seq"] for m in history_sync(daemon.ws_url, user)] == [1]


def test_publish_batch_is_in_order_and_delivered_to_an_open_connection(
    api: Api, daemon: Daemon, loop_thread: LoopThread
) -> None:
    user = uid()

    async def watch() -> list[dict[str, Any]]:
        async with user_socket(daemon.ws_url, user_id=user) as inbox:
            started.set()
            return await inbox.take(3)

    started = asyncio.Event()
    fut = asyncio.run_coroutine_threadsafe(watch(), loop_thread.loop)
    loop_thread.run(asyncio.wait_for(started.wait(), 10))
    rs = api.publish_batch([ev(user, i=i) for i in range(3)])
    assert [r.seq for r in rs] == [1, 2, 3]
    assert all(r.delivered == 1 for r in rs)
    live = fut.result(10)
    assert [(m["seq"], m["data"]["i"]) for m in live] == [(1, 0), (2, 1), (3, 2)]


def test_400_raises_bad_request_with_the_gateways_reason(api: Api) -> None:
    with pytest.raises(agentcast.BadRequestError) as e:
        api.publish(ev(uid(), "Bad Type"))
    assert (e.value.status, e.value.error) == (400, "type: malformed")
    with pytest.raises(agentcast.BadRequestError) as e:
        api.publish({"user_id": uid(), "type": "tool_executing", "data": {"tool": "t"}})
    assert e.value.error == "data.tool_call_id: required for tool_executing"


def test_400_in_a_batch_names_the_index_and_publishes_nothing(api: Api, daemon: Daemon) -> None:
    user = uid()
    with pytest.raises(agentcast.BadRequestError) as e:
        api.publish_batch([ev(user, i=0), ev(user, "connected")])
    assert (e.value.index, e.value.error) == (1, "type: reserved")
    api.publish(ev(user, i=9))
    assert [m["data"] for m in history_sync(daemon.ws_url, user)] == [{"i": 9}]


def test_401_raises_authentication_error(daemon: Daemon, loop_thread: LoopThread) -> None:
    for mode in ("sync", "async"):
        for key, reason in (("wrong", "invalid api key"), (None, "api key required")):
            for a in make_api(mode, daemon.url, key, loop_thread):
                with pytest.raises(agentcast.AuthenticationError) as e:
                    a.publish(ev(uid()))
                assert (e.value.status, e.value.error) == (401, reason)
                with pytest.raises(agentcast.AuthenticationError):
                    a.stats()


def test_409_raises_conflict_for_the_run_lifecycle(api: Api) -> None:
    user, run = uid(), uid("run")
    with pytest.raises(agentcast.ConflictError) as e:
        api.publish({**ev(user, "agent_thinking", thought="x"), "run_id": run})
    assert (e.value.status, e.value.error) == (409, "run_id: run not open")
    api.publish({**ev(user, "agent_started", agent="a"), "run_id": run})
    with pytest.raises(agentcast.ConflictError) as e:
        api.publish({**ev(user, "agent_started", agent="a"), "run_id": run})
    assert e.value.error == "run_id: run already open"


def test_413_raises_payload_too_large(api: Api) -> None:
    with pytest.raises(agentcast.PayloadTooLargeError) as e:
        api.publish(ev(uid(), blob="x" * MAX_PUBLISH))
    assert e.value.status == 413


def test_stats_healthz_and_run_state(api: Api) -> None:
    user, run = uid(), uid("run")
    before = api.stats()["events_total"]
    api.publish({**ev(user, "agent_started", agent="planner"), "run_id": run, "thread_id": "t1"})
    assert api.stats()["events_total"] == before + 1
    assert api.healthz() == {"status": "ok", "broker": "up"}
    state = api.run_state(run)
    assert (state["run_id"], state["user_id"], state["thread_id"], state["state"]) == (
        run, user, "t1", "open",
    )
    with pytest.raises(agentcast.NotFoundError) as e:
        api.run_state("no such/run")
    assert e.value.error == "run_id: unknown run"


def test_disconnect_closes_the_users_connections_with_4003(
    api: Api, daemon: Daemon, loop_thread: LoopThread
) -> None:
    user = uid()

    async def watch() -> tuple[dict[str, Any], int]:
        async with user_socket(daemon.ws_url, user_id=user) as inbox:
            started.set()
            closing = await inbox.next()
            try:
                await asyncio.wait_for(inbox.ws.recv(), 10)
            except Exception:
                pass
            return closing, int(inbox.ws.close_code)

    started = asyncio.Event()
    fut = asyncio.run_coroutine_threadsafe(watch(), loop_thread.loop)
    loop_thread.run(asyncio.wait_for(started.wait(), 10))
    assert api.disconnect(user_id=user) == 1
    closing, code = fut.result(10)
    assert closing["type"] == "closing" and closing["data"]["code"] == 4003
    assert code == 4003
    with pytest.raises(agentcast.NotFoundError):
        api.disconnect(connection_id="c-not-open")
    with pytest.raises(ValueError):
        api.disconnect()


def test_an_unreachable_gateway_raises_connection_failed_after_the_retries(loop_thread: LoopThread) -> None:
    from harness import free_port

    attempts: list[agentcast.RetryAttempt] = []
    policy = agentcast.RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02, on_retry=attempts.append)
    for mode in ("sync", "async"):
        attempts.clear()
        for a in make_api(mode, f"http://127.0.0.1:{free_port()}", KEY, loop_thread, retry=policy):
            with pytest.raises(agentcast.ConnectionFailedError) as e:
                a.publish(ev(uid()))
            assert e.value.status == 0
        assert [x.attempt for x in attempts] == [1, 2]
        assert all(0.005 <= x.delay <= 0.02 for x in attempts)


def test_a_direct_message_reaches_that_one_connection_without_a_seq(
    api: Api, daemon: Daemon, loop_thread: LoopThread
) -> None:
    user = uid()

    async def watch() -> dict[str, Any]:
        async with user_socket(daemon.ws_url, user_id=user) as inbox:
            conn.set_result(inbox.connected["data"]["connection_id"])
            return await inbox.next()

    conn: concurrent.futures.Future[str] = concurrent.futures.Future()
    fut = asyncio.run_coroutine_threadsafe(watch(), loop_thread.loop)
    cid = conn.result(10)
    r = api.publish({**ev(user, "hint", text="only here"), "connection_id": cid})
    assert r == PublishResult(None, 1)
    msg = fut.result(10)
    assert (msg["type"], msg["data"], "seq" in msg) == ("hint", {"text": "only here"}, False)
    with pytest.raises(agentcast.NotFoundError) as e:
        api.publish({**ev(user, "hint"), "connection_id": "c-gone"})
    assert e.value.error == "connection_id: not open for this user"


def test_connections_have_tcp_nodelay(daemon: Daemon) -> None:
    """Without TCP_NODELAY each publish waits for the gateway's delayed ACK (40 ms): httpx
    sends a request's headers and body in two writes, and Nagle holds the second."""
    from agentcast import client as mod

    for cls, backend in ((httpx.HTTPTransport, mod._NoDelayBackend),
                         (httpx.AsyncHTTPTransport, mod._AsyncNoDelayBackend)):
        pool = mod._nodelay(cls, backend)._pool
        if getattr(pool, "_socket_options", None) is not None:  # httpx >= 0.24
            assert pool._socket_options == mod._NODELAY
            continue
        assert isinstance(pool._network_backend, backend)
        if cls is httpx.HTTPTransport:
            stream = pool._network_backend.connect_tcp("127.0.0.1", daemon.port)
            assert stream.get_extra_info("socket").getsockopt(*mod._NODELAY[0][:2]) != 0
            stream.close()
        else:
            async def check() -> None:
                stream = await pool._network_backend.connect_tcp("127.0.0.1", daemon.port)
                assert stream.get_extra_info("socket").getsockopt(*mod._NODELAY[0][:2]) != 0
                await stream.aclose()

            asyncio.run(check())
