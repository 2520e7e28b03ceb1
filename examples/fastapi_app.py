"""An agent backend in the shape of the seed design's FastAPI service, on agentcast: the
browser asks `/token` for its WebSocket token, opens `ws_url` on the gateway, and posts a
message to `/runs`; the agent's run streams to every tab of that user through the gateway.

    AGENTCAST_URL=http://127.0.0.1:8080 AGENTCAST_API_KEY=KEY AGENTCAST_JWT_SECRET=S \\
        uvicorn --app-dir examples fastapi_app:app --port 8000
    # (agentcastd --auth=jwt with the same AGENTCAST_JWT_SECRET, --api-key KEY)

The signed-in user comes from the `X-User-Id` header here: replace `current_user` with your
own session or OAuth check; everything else stays."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel

import agentcast
from agentcast import tokens

GATEWAY_URL = os.environ.get("AGENTCAST_URL", "http://127.0.0.1:8080")
GATEWAY_WS_URL = os.environ.get(
    "AGENTCAST_WS_URL", GATEWAY_URL.replace("http://", "ws://").replace("https://", "wss://")
)
API_KEY = os.environ.get("AGENTCAST_API_KEY")
JWT_SECRET = os.environ.get("AGENTCAST_JWT_SECRET", "")
TOKEN_TTL = float(os.environ.get("AGENTCAST_TOKEN_TTL", "3600"))

app = FastAPI(title="agent backend (agentcast example)")
gateway = agentcast.AsyncClient(GATEWAY_URL, api_key=API_KEY)
_runs: set[asyncio.Task[None]] = set()
log = logging.getLogger("agent-backend")


class RunRequest(BaseModel):
    message: str
    thread_id: str | None = None


def current_user(x_user_id: str | None = Header(default=None)) -> str:
    """The signed-in user (a stand-in: use your real authentication here)."""
    if not x_user_id:
        raise HTTPException(status_code=401, detail="sign in first (X-User-Id)")
    return x_user_id


@app.get("/healthz")
async def healthz() -> dict[str, Any]:
    return {"status": "ok", "gateway": await gateway.healthz()}


@app.post("/token")
async def token(user: str = Depends(current_user)) -> dict[str, Any]:
    """The browser's token for the gateway's `/ws` (HS256, `sub` = the user)."""
    if not JWT_SECRET:
        raise HTTPException(status_code=500, detail="AGENTCAST_JWT_SECRET is not set")
    t = tokens.mint(user, JWT_SECRET, ttl=TOKEN_TTL)
    return {"token": t, "ws_url": f"{GATEWAY_WS_URL}/ws?token={t}", "expires_in": TOKEN_TTL}


@app.post("/runs", status_code=202)
async def start_run(req: RunRequest, user: str = Depends(current_user)) -> dict[str, str]:
    """Starts the agent on `req.message` for the signed-in user; the answer streams to
    the user's connections, this request returns at once."""
    run_id = "run-" + uuid.uuid4().hex
    task = asyncio.create_task(agent(user, run_id, req))
    _runs.add(task)
    task.add_done_callback(_finished)
    return {"run_id": run_id}


def _finished(task: asyncio.Task[None]) -> None:
    _runs.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("run failed: %r", task.exception())


@app.get("/runs/{run_id}")
async def run_state(run_id: str, user: str = Depends(current_user)) -> dict[str, Any]:
    try:
        state = await gateway.run_state(run_id)
    except agentcast.NotFoundError:
        raise HTTPException(status_code=404, detail="unknown run")
    if state.get("user_id") != user:
        raise HTTPException(status_code=404, detail="unknown run")
    return state


@app.on_event("shutdown")
async def shutdown() -> None:
    await asyncio.gather(*_runs, return_exceptions=True)
    await gateway.aclose()


async def agent(user: str, run_id: str, req: RunRequest) -> None:
    """The agent itself (a real one calls its model here): it thinks aloud, counts the
    words of the message with a tool, and answers. Any exception it raises reaches the
    user as `agent_error` (the run's context manager publishes it)."""
    async with gateway.run(user, agent="assistant", thread_id=req.thread_id, run_id=run_id) as run:
        for word in "Let me count the words of your message.".split():
            await run.thinking(word + " ")
        async with run.tool("word_count", {"text": req.message}) as call:
            count = len(req.message.split())
            call.result({"words": count})
        run.complete(f"Your message has {count} words.")
