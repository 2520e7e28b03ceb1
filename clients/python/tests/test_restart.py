"""Retries across a daemon restart. The daemon runs on the Redis broker (a redis-server
the test starts), so its idempotency keys outlive it: an event the first daemon took but
never acknowledged is acknowledged once by the second, with its first seq, and a real
WebSocket client resuming from seq 0 receives every event exactly once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import agentcast
from agentcast import PublishResult
from conftest import KEY, uid
from harness import Daemon, LossyProxy, RedisServer, history, history_sync, wait_until


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    r = RedisServer().start()
    yield r
    r.dispose()


@pytest.fixture
def node(redis: RedisServer) -> Iterator[Daemon]:
    d = Daemon(["--auth=none", "--api-key", KEY, f"--broker={redis.url}",
                "--redis-prefix", f"py-{uid('p')}:"]).start()
    yield d
    assert d.stop() == 0


def ev(user: str, i: int) -> dict[str, Any]:
    return {"user_id": user, "type": "note", "data": {"i": i}}


def test_http_publish_taken_then_daemon_restarted_is_acknowledged_once(node: Daemon) -> None:
    proxy = LossyProxy(node.port).start()
    retries: list[agentcast.RetryAttempt] = []
    policy = agentcast.RetryPolicy(attempts=400, base_delay=0.01, max_delay=0.05,
                                   on_retry=retries.append)
    user = uid()
    out: dict[str, Any] = {}
    try:
        with agentcast.Client(proxy.url, api_key=KEY, retry=policy) as c:
            assert c.publish(ev(user, 0)) == PublishResult(1, 0)
            proxy.refusing.set()
            proxy.drop_next_answer()

            def publish() -> None:
                try:
                    out["result"] = c.publish(ev(user, 1))
                except Exception as e:  # reported below
                    out["error"] = e

            t = threading.Thread(target=publish)
            t.start()
            wait_until(lambda: proxy.dropped == 1 and proxy.refused >= 1, 20, "answer lost, retrying")
            node.stop()
            node.restart()
            proxy.refusing.clear()
            t.join(30)
            assert not t.is_alive()
            assert "error" not in out, out
            assert out["result"] == PublishResult(2, 0, duplicate=True)
            assert c.publish(ev(user, 2)) == PublishResult(3, 0)
    finally:
        proxy.close()
    assert len(retries) >= 2 and isinstance(retries[0].reason, Exception)
    msgs = history_sync(node.ws_url, user)
    assert [(m["seq"], m["data"]["i"]) for m in msgs] == [(1, 0), (2, 1), (3, 2)]


async def _async_waits_out_a_restart(d: Daemon) -> None:
    user = uid()
    retried = asyncio.Event()
    policy = agentcast.RetryPolicy(attempts=400, base_delay=0.01, max_delay=0.05,
                                   on_retry=lambda a: retried.set())
    async with agentcast.AsyncClient(d.url, api_key=KEY, retry=policy) as ac:
        assert (await ac.publish(ev(user, 0))).seq == 1
        await asyncio.to_thread(d.stop)
        task = asyncio.create_task(ac.publish_batch([ev(user, 1), ev(user, 2)]))
        await asyncio.wait_for(retried.wait(), 20)
        await asyncio.to_thread(d.restart)
        rs = await asyncio.wait_for(task, 30)
        assert [(r.seq, r.duplicate) for r in rs] == [(2, False), (3, False)]
    msgs = await history(d.ws_url, user)
    assert [(m["seq"], m["data"]["i"]) for m in msgs] == [(1, 0), (2, 1), (3, 2)]


def test_async_publish_waits_out_a_daemon_restart(node: Daemon) -> None:
    asyncio.run(_async_waits_out_a_restart(node))


async def _socket_across_restart(d: Daemon) -> None:
    proxy = LossyProxy(d.port).start()
    user = uid()
    policy = agentcast.RetryPolicy(attempts=400, base_delay=0.01, max_delay=0.05)
    try:
        async with agentcast.AsyncClient(proxy.url, api_key=KEY, retry=policy) as ac:
            async with ac.agent_socket() as s:
                first = await asyncio.gather(*(s.publish(ev(user, i)) for i in range(100)))
                proxy.refusing.set()
                proxy.drop_next_answer()
                rest = [s.submit(ev(user, i)) for i in range(100, 200)]
                await asyncio.to_thread(
                    wait_until, lambda: proxy.dropped == 1 and proxy.refused >= 1, 20,
                    "answers lost, reconnecting")
                await asyncio.to_thread(d.stop)
                await asyncio.to_thread(d.restart)
                proxy.refusing.clear()
                results = first + list(await asyncio.wait_for(asyncio.gather(*rest), 30))
                assert s.reconnects >= 1
    finally:
        proxy.close()
    assert [r.seq for r in results] == list(range(1, 201))
    assert not any(r.duplicate for r in first)
    assert any(r.duplicate for r in results[100:])  # taken by the first daemon, answered by the second
    msgs = await history(d.ws_url, user)
    assert [(m["seq"], m["data"]["i"]) for m in msgs] == [(i + 1, i) for i in range(200)]


def test_agent_socket_resends_unanswered_with_the_same_keys_across_a_restart(node: Daemon) -> None:
    asyncio.run(_socket_across_restart(node))


async def _broker_outage(d: Daemon, redis: RedisServer) -> None:
    user = uid()
    reasons: list[BaseException | int] = []
    saw_503 = asyncio.Event()

    def on_retry(a: agentcast.RetryAttempt) -> None:
        reasons.append(a.reason)
        if a.reason == 503:
            saw_503.set()

    policy = agentcast.RetryPolicy(attempts=600, base_delay=0.01, max_delay=0.05, on_retry=on_retry)
    async with agentcast.AsyncClient(d.url, api_key=KEY, retry=policy) as ac:
        assert (await ac.publish(ev(user, 0))).seq == 1
        await asyncio.to_thread(redis.stop)
        for _ in range(400):  # the daemon notices the lost connection on its loop
            if (health := await ac.healthz())["status"] != "ok":
                break
            await asyncio.sleep(0.025)
        assert health == {"status": "degraded", "broker": "down"}
        quick = agentcast.RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.01)
        async with agentcast.AsyncClient(d.url, api_key=KEY, retry=quick) as impatient:
            with pytest.raises(agentcast.UnavailableError) as e:
                await impatient.publish(ev(user, 9))
            assert (e.value.status, e.value.error) == (503, "broker unavailable")
        async with ac.agent_socket() as s:
            http = asyncio.create_task(ac.publish(ev(user, 1)))
            await asyncio.wait_for(saw_503.wait(), 20)
            saw_503.clear()
            sock = s.submit(ev(user, 2))
            await asyncio.wait_for(saw_503.wait(), 20)
            await asyncio.to_thread(redis.restart)
            r_http = await asyncio.wait_for(http, 30)
            r_sock = await asyncio.wait_for(sock, 30)
        # Every loop of the daemon (--threads) reconnects to Redis on its own backoff: the
        # publishes above went through their owners' links; /healthz is "ok" once every
        # loop's link is back.
        for _ in range(400):
            if (await ac.healthz())["status"] == "ok":
                break
            await asyncio.sleep(0.025)
        assert (await ac.healthz())["status"] == "ok"
    # Redis came back empty: a new epoch whose seqs start again at 1.
    assert sorted([r_http.seq or 0, r_sock.seq or 0]) == [1, 2]
    assert 503 in reasons
    msgs = await history(d.ws_url, user)
    assert sorted(m["data"]["i"] for m in msgs) == [1, 2]


def test_503_while_the_broker_is_down_is_retried_until_it_is_back(node: Daemon, redis: RedisServer) -> None:
    asyncio.run(_broker_outage(node, redis))
