"""examples/fastapi_app.py end to end: agentcastd (--auth=jwt, an API key) and the example
under uvicorn, both started here; a browser-like client gets its token from the app,
connects to the gateway with it, starts a run through the app and receives the run."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import uid
from harness import HOST, REPO, Daemon, free_port, user_socket, wait_until

SECRET = "fastapi-example-secret"
KEY = "fastapi-example-key"


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Daemon, str]]:
    d = Daemon(["--auth=jwt", "--api-key", KEY], env={"AGENTCAST_JWT_SECRET": SECRET}).start()
    port = free_port()
    env = {**os.environ, "AGENTCAST_URL": d.url, "AGENTCAST_API_KEY": KEY,
           "AGENTCAST_JWT_SECRET": SECRET}
    app = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(REPO / "examples"),
         "fastapi_app:app", "--host", HOST, "--port", str(port), "--log-level", "warning"],
        env=env, stdin=subprocess.DEVNULL,
    )
    url = f"http://{HOST}:{port}"

    def up() -> bool:
        if app.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {app.returncode}")
        try:
            return httpx.get(url + "/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(up, 30, "the example app answering /healthz", every=0.1)
        yield d, url
    finally:
        app.terminate()
        try:
            assert app.wait(15) == 0
        finally:
            if app.poll() is None:
                app.kill()
            assert d.stop() == 0


async def _run_for(d: Daemon, url: str, user: str, message: str) -> tuple[str, list[dict[str, Any]]]:
    async with httpx.AsyncClient(base_url=url, headers={"X-User-Id": user}) as app:
        tok = (await app.post("/token")).json()
        assert tok["ws_url"].startswith(d.ws_url + "/ws?token=")
        async with user_socket(d.ws_url, token=tok["token"]) as inbox:
            assert inbox.connected["user_id"] == user
            r = await app.post("/runs", json={"message": message, "thread_id": "t1"})
            assert r.status_code == 202, r.text
            run_id = r.json()["run_id"]
            msgs = [await inbox.next()]
            while msgs[-1]["type"] not in ("agent_completed", "agent_error"):
                msgs.append(await inbox.next())
        state = (await app.get(f"/runs/{run_id}")).json()
        assert (state["state"], state["closed_by"]) == ("closed", "agent_completed")
        other = await app.get(f"/runs/{run_id}", headers={"X-User-Id": user + "-other"})
        assert other.status_code == 404
    return run_id, msgs


def test_the_fastapi_example_streams_a_run_to_the_signed_in_user(stack: tuple[Daemon, str]) -> None:
    d, url = stack
    user = uid("fastapi")
    run_id, msgs = asyncio.run(_run_for(d, url, user, "how many words are here"))
    assert {(m["run_id"], m["thread_id"], m["user_id"]) for m in msgs} == {(run_id, "t1", user)}
    types = [m["type"] for m in msgs]
    assert types == ["agent_started"] + ["agent_thinking"] * 8 + [
        "tool_executing", "tool_completed", "agent_completed"]
    assert "".join(m["data"]["thought"] for m in msgs[1:9]) == "Let me count the words of your message. "
    assert msgs[9]["data"]["args"] == {"text": "how many words are here"}
    assert msgs[10]["data"]["result"] == {"words": 5}
    assert msgs[11]["data"]["result"] == "Your message has 5 words."
    assert [m["seq"] for m in msgs] == list(range(1, 13))


def test_the_fastapi_example_refuses_a_request_without_a_user(stack: tuple[Daemon, str]) -> None:
    _, url = stack
    assert httpx.post(url + "/token").status_code == 401
    assert httpx.post(url + "/runs", json={"message": "x"}).status_code == 401
