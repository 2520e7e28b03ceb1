"""Fixtures: one shared agentcastd (--auth=none, an API key, a small --max-publish-size)
for the tests that need nothing special, a `Client` and an `AsyncClient` on it, and `api`,
which runs a test once through each (the async one on a loop thread)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import agentcast
from harness import Daemon, LoopThread

KEY = "test-key"
MAX_PUBLISH = 16 * 1024
_ids = itertools.count(1)


def uid(prefix: str = "u") -> str:
    """A user (or run) id unique in this test process."""
    return f"{prefix}-{os.getpid()}-{next(_ids)}"


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    d = Daemon(["--auth=none", "--api-key", KEY, "--max-publish-size", str(MAX_PUBLISH)]).start()
    yield d
    assert d.stop() == 0


@pytest.fixture
def client(daemon: Daemon) -> Iterator[agentcast.Client]:
    with agentcast.Client(daemon.url, api_key=KEY) as c:
        yield c


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


class Api:
    """Calls a client method by name, blocking: on a `Client` directly, on an
    `AsyncClient` by running the coroutine on the loop thread."""

    def __init__(self, mode: str, target: Any, lt: LoopThread) -> None:
        self.mode = mode
        self.target = target
        self.lt = lt

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.target, name)

        def call(*args: Any, **kw: Any) -> Any:
            if self.mode == "sync":
                return method(*args, **kw)
            return self.lt.run(method(*args, **kw))

        return call


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest, daemon: Daemon, loop_thread: LoopThread) -> Iterator[Api]:
    yield from make_api(request.param, daemon.url, KEY, loop_thread)


def make_api(
    mode: str, url: str, key: str | None, lt: LoopThread, **kw: Any
) -> Iterator[Api]:
    if mode == "sync":
        with agentcast.Client(url, api_key=key, **kw) as c:
            yield Api(mode, c, lt)
    else:
        ac = agentcast.AsyncClient(url, api_key=key, **kw)
        yield Api(mode, ac, lt)
        lt.run(ac.aclose())
