"""The publisher socket /v1/agent through AsyncClient.agent_socket(): pipelining, typed
error replies, the handshake's 401, close 1009, and reconnection with the same idempotency
keys when the gateway's answers are lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import agentcast
from conftest import KEY, MAX_PUBLISH, uid
from harness import Daemon, LossyProxy, history


def ev(user: str, i: int) -> dict[str, Any]:
    return {"user_id": user, "type": "note", "data": {"i": i}}


async def _pipelined(d: Daemon) -> None:
    user = uid()
    async with agentcast.AsyncClient(d.url, api_key=KEY) as ac:
        async with ac.agent_socket() as s:
            futs = [s.submit(ev(user, i)) for i in range(500)]
            results = await asyncio.gather(*futs)
            batch = await s.publish_batch([ev(user, 500), ev(user, 501)])
            with pytest.raises(agentcast.ConflictError) as e409:
                await s.publish({"user_id": user, "type": "agent_thinking", "run_id": uid("r"),
                                 "data": {"thought": "x"}})
            with pytest.raises(agentcast.BadRequestError) as e400:
                await s.publish_batch([ev(user, 0), {"user_id": user, "type": "ping"}])
            after = await s.publish(ev(user, 502))
    assert [r.seq for r in results] == list(range(1, 501))
    assert [r.seq for r in batch] == [501, 502]
    assert (e409.value.status, e409.value.error) == (409, "run_id: run not open")
    assert (e400.value.status, e400.value.index, e400.value.error) == (400, 1, "type: reserved")
    assert after.seq == 503
    msgs = await history(d.ws_url, user)
    assert [m["data"]["i"] for m in msgs] == list(range(503))


def test_pipelined_publishes_are_answered_in_order_with_typed_errors(daemon: Daemon) -> None:
    asyncio.run(_pipelined(daemon))


async def _refused(d: Daemon) -> None:
    for key in ("wrong", None):
        async with agentcast.AsyncClient(d.url, api_key=key) as ac:
            with pytest.raises(agentcast.AuthenticationError) as e:
                async with ac.agent_socket():
                    pass
            assert e.value.status == 401


def test_the_handshake_refused_with_401_raises_authentication_error(daemon: Daemon) -> None:
    asyncio.run(_refused(daemon))


async def _too_big(d: Daemon) -> None:
    user = uid()
    async with agentcast.AsyncClient(d.url, api_key=KEY) as ac:
        async with ac.agent_socket() as s:
            first = s.submit(ev(user, 0))
            big = s.submit({"user_id": user, "type": "note", "data": {"b": "x" * MAX_PUBLISH}})
            last = s.submit(ev(user, 1))
            assert (await first).seq == 1
            with pytest.raises(agentcast.PayloadTooLargeError):
                await big
            assert (await last).seq == 2
            assert s.reconnects >= 1
    assert [m["data"] for m in await history(d.ws_url, user)] == [{"i": 0}, {"i": 1}]


def test_a_message_over_max_publish_size_fails_alone_and_the_socket_goes_on(daemon: Daemon) -> None:
    asyncio.run(_too_big(daemon))


async def _lost_answers(d: Daemon) -> None:
    proxy = LossyProxy(d.port).start()
    user = uid()
    try:
        async with agentcast.AsyncClient(proxy.url, api_key=KEY) as ac:
            async with ac.agent_socket() as s:
                assert (await s.publish(ev(user, 0))).seq == 1
                proxy.drop_next_answer()
                results = await asyncio.gather(*(s.publish(ev(user, i)) for i in range(1, 51)))
                assert s.reconnects >= 1
    finally:
        proxy.close()
    assert proxy.dropped == 1
    # The gateway took some events whose answers were lost: they come back as duplicates
    # with their first seq, and no event was published twice.
    assert any(r.duplicate for r in results)
    assert sorted(r.seq or 0 for r in results) == list(range(2, 52))
    msgs = await history(d.ws_url, user)
    assert [m["seq"] for m in msgs] == list(range(1, 52))
    assert [m["data"]["i"] for m in msgs] == list(range(51))


def test_lost_answers_are_resent_with_the_same_keys_after_reconnecting(daemon: Daemon) -> None:
    asyncio.run(_lost_answers(daemon))


async def _emitter_on_socket(d: Daemon) -> None:
    user = uid()
    async with agentcast.AsyncClient(d.url, api_key=KEY) as ac:
        async with ac.agent_socket() as s:
            em = agentcast.AsyncEmitter(s, user, run_id=uid("run"))
            await em.notify_agent_started("a")
            await em.notify_agent_completed("r")
    assert [m["type"] for m in await history(d.ws_url, user)] == ["agent_started", "agent_completed"]


def test_an_async_emitter_publishes_through_the_socket(daemon: Daemon) -> None:
    asyncio.run(_emitter_on_socket(daemon))
