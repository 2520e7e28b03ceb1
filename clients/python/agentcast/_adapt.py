"""What the framework adapters share, without importing any framework: turning a
framework's values into JSON for `data`, and coalescing streamed tokens into a few
`agent_thinking` events."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any


def jsonable(value: Any) -> Any:
    """`value` if it is JSON already; a message's `content`; a pydantic model's dump;
    else its `str()`."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        pass
    content = getattr(value, "content", None)
    if content is not None and content is not value:
        return jsonable(content)
    dump = getattr(value, "model_dump", None) or getattr(value, "dict", None)
    if callable(dump):
        try:
            return jsonable(dump())
        except Exception:
            pass
    return str(value)


class TokenBuffer:
    """Collects streamed tokens; `add()` returns the text to publish once `max_chars` are
    buffered or `interval` seconds passed since the last flush, else None."""

    def __init__(
        self, interval: float, max_chars: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.max_chars = max_chars
        self.clock = clock
        self._parts: list[str] = []
        self._size = 0
        self._since = clock()

    def add(self, token: str) -> str | None:
        self._parts.append(token)
        self._size += len(token)
        if self._size >= self.max_chars or self.clock() - self._since >= self.interval:
            return self.flush()
        return None

    def flush(self) -> str | None:
        """The buffered text (None when empty); restarts the interval."""
        self._since = self.clock()
        if not self._parts:
            return None
        text = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        return text
