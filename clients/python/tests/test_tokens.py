"""agentcast.tokens.mint, verified by the daemon itself (--auth=jwt): the user id of the
connection is the token's `sub`; a wrong secret and an expired token are refused."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator

import pytest

from agentcast import tokens
from conftest import uid
from harness import Daemon, user_socket

SECRET = "s3cret-for-tests"


@pytest.fixture(scope="module")
def jwt_daemon() -> Iterator[Daemon]:
    d = Daemon(["--auth=jwt"], env={"AGENTCAST_JWT_SECRET": SECRET}).start()
    yield d
    assert d.stop() == 0


def _claims(token: str) -> dict[str, object]:
    part = token.split(".")[1]
    out: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return out


async def _status(d: Daemon, token: str) -> int:
    try:
        async with user_socket(d.ws_url, token=token):
            return 101
    except Exception as e:
        status = getattr(e, "status_code", None) or getattr(getattr(e, "response", None), "status_code", 0)
        return int(status or 0)


def test_a_minted_token_is_accepted_and_names_the_user(jwt_daemon: Daemon) -> None:
    user = uid("jwt-ü")

    async def go() -> dict[str, object]:
        async with user_socket(jwt_daemon.ws_url, token=tokens.mint(user, SECRET, ttl=60)) as inbox:
            return inbox.connected

    connected = asyncio.run(go())
    assert connected["user_id"] == user
    c = _claims(tokens.mint(user, SECRET, ttl=60, claims={"role": "viewer"}))
    assert c["sub"] == user and c["role"] == "viewer"
    assert isinstance(c["exp"], int) and isinstance(c["iat"], int) and c["exp"] - c["iat"] == 60


def test_wrong_secret_and_expired_tokens_are_refused_with_401(jwt_daemon: Daemon) -> None:
    user = uid()
    assert asyncio.run(_status(jwt_daemon, tokens.mint(user, "other-secret"))) == 401
    old = tokens.mint(user, SECRET, ttl=10, now=time.time() - 3600)
    assert asyncio.run(_status(jwt_daemon, old)) == 401
    assert asyncio.run(_status(jwt_daemon, tokens.mint(user, SECRET.encode()))) == 101


def test_mint_rejects_what_would_never_verify() -> None:
    with pytest.raises(ValueError):
        tokens.mint("", SECRET)
    with pytest.raises(ValueError):
        tokens.mint("u", SECRET, ttl=0)
