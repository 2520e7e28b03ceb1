"""HS256 tokens for the browser's `/ws` connection, minted by the backend with the
gateway's `--jwt-secret` (stdlib hmac: no JWT library needed for one algorithm)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def mint(
    user_id: str,
    secret: str | bytes,
    ttl: float = 3600,
    *,
    claims: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> str:
    """A compact JWT, `alg` HS256, with `sub` = `user_id`, `iat` now and `exp` now + `ttl`
    seconds, plus any extra `claims`. The gateway verifies the signature, `exp` and `nbf`."""
    if not user_id:
        raise ValueError("user_id is required")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    t = int(now if now is not None else time.time())
    payload: dict[str, Any] = {**(claims or {}), "sub": user_id, "iat": t, "exp": t + int(ttl)}
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = (
        _b64(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
    )
    key = secret.encode() if isinstance(secret, str) else secret
    sig = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + _b64(sig)
