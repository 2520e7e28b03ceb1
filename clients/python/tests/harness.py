"""The real parts the Python SDK's tests drive: agentcastd (started on 127.0.0.1, port 0
or a given port, stopped and restarted on the same port), a redis-server without
persistence, a WebSocket user client (`websockets`), and a TCP proxy that can swallow the
gateway's answers (a publish taken but never acknowledged). Every wait is bounded."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[3]
BIN = os.environ.get("AGENTCAST_BIN") or str(REPO / "build" / "agentcastd")
REDIS_BIN = os.environ.get("REDIS_SERVER_BIN", "/usr/bin/redis-server")
HOST = "127.0.0.1"
_LISTENING = re.compile(r"event=listening\b.*\baddr=([0-9.]+):(\d+)")
_SANITIZER = re.compile(
    r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: \w+Sanitizer"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(pred: Callable[[], bool], timeout: float, what: str, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timeout after {timeout} s: {what}")
        time.sleep(every)


class Daemon:
    """agentcastd with `args`; `start()` waits for its `event=listening` line."""

    def __init__(self, args: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.env = env or {}
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.logs: list[str] = []

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    def start(self, timeout: float = 10.0) -> Daemon:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCAST_")}
        env.update(self.env)
        proc = subprocess.Popen(
            [BIN, "--listen", f"{HOST}:{self.port}", *self.args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.proc = proc
        found: list[int] = []
        ready = threading.Event()

        def read() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                self.logs.append(line.rstrip("\n"))
                m = _LISTENING.search(line)
                if m and not found:
                    found.append(int(m.group(2)))
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout) or not found:
            self.kill()
            raise RuntimeError(f"agentcastd did not start: {self.args}\n" + "\n".join(self.logs))
        self.port = found[0]
        return self

    def restart(self, timeout: float = 10.0) -> Daemon:
        """Starts again on the same port (after stop())."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.start()
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code. Raises when the daemon had crashed."""
        proc = self.proc
        if proc is None:
            return 0
        self.proc = None
        crashed = proc.poll()
        if crashed is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                raise RuntimeError("agentcastd did not exit on SIGTERM")
            time.sleep(0.05)  # the last lines of stderr
            report = self.sanitizer_report()
            if report:
                raise RuntimeError(f"agentcastd sanitizer report:\n{report}")
            return code
        if crashed < 0:
            raise RuntimeError(f"agentcastd died of signal {-crashed}:\n" + "\n".join(self.logs[-30:]))
        return crashed

    def sanitizer_report(self) -> str | None:
        """The sanitizer report in the daemon's output (ASan/UBSan builds), or None."""
        for i, line in enumerate(self.logs):
            if _SANITIZER.search(line):
                return "\n".join(self.logs[max(0, i - 2) : i + 60])
        return None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None


class RedisServer:
    """redis-server on a free loopback port, no persistence (a restart comes back empty)."""

    def __init__(self) -> None:
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = tempfile.mkdtemp(prefix="agentcast-py-redis-")

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    def ping(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> RedisServer:
        for _ in range(5):
            self.port = free_port()
            if self._spawn():
                return self
        raise RuntimeError("redis-server did not start")

    def restart(self, timeout: float = 10.0) -> RedisServer:
        """Starts again on the same port (after stop()); the data set is empty."""
        deadline = time.monotonic() + timeout
        while not self._spawn():
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not restart on port {self.port}")
            time.sleep(0.1)
        return self

    def _spawn(self) -> bool:
        self.proc = subprocess.Popen(
            [REDIS_BIN, "--port", str(self.port), "--bind", HOST, "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--logfile", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.ping():
                return True
            time.sleep(0.02)
        self.stop()
        return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None

    def dispose(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- the user's side: a real WebSocket client ------------------------------------------


async def _ws_connect(url: str, headers: dict[str, str] | None = None) -> Any:
    try:
        mod: Any = importlib.import_module("websockets.asyncio.client")
        return await mod.connect(url, additional_headers=headers or {}, open_timeout=10)
    except ModuleNotFoundError:
        mod = importlib.import_module("websockets.client")
        return await mod.connect(url, extra_headers=headers or {}, open_timeout=10)


class Inbox:
    """A user connection's messages: `connected` (the first one), then `next()`."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.connected: dict[str, Any] = {}

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next message that is not a `ping`."""
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
            msg: dict[str, Any] = json.loads(raw)
            if msg.get("type") != "ping":
                return msg

    async def take(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        return [await self.next(timeout) for _ in range(n)]

    async def until_seq(self, last: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Every message up to and including the event with seq `last`."""
        out: list[dict[str, Any]] = []
        while not out or out[-1].get("seq") != last:
            out.append(await self.next(timeout))
            if len(out) > 100_000:
                raise AssertionError("runaway stream")
        return out


@asynccontextmanager
async def user_socket(ws_base: str, **query: Any) -> AsyncIterator[Inbox]:
    """A `/ws` connection with `query` (user_id=, token=, last_seq=, ...)."""
    ws = await _ws_connect(f"{ws_base}/ws?{urlencode(query)}")
    try:
        inbox = Inbox(ws)
        inbox.connected = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert inbox.connected["type"] == "connected", inbox.connected
        yield inbox
    finally:
        await ws.close()


async def history(ws_base: str, user_id: str) -> list[dict[str, Any]]:
    """Everything retained for `user_id`, from seq 1 to the newest, as a client resuming
    with last_seq=0 receives it (its `connected` says what the newest seq is)."""
    async with user_socket(ws_base, user_id=user_id, last_seq=0) as inbox:
        newest = inbox.connected["data"]["last_seq"]
        return await inbox.until_seq(newest) if newest else []


def history_sync(ws_base: str, user_id: str) -> list[dict[str, Any]]:
    return asyncio.run(history(ws_base, user_id))


# ---- a proxy that can lose the gateway's answers -----------------------------------------


class LossyProxy:
    """A TCP proxy on a free loopback port in front of 127.0.0.1:`upstream`, on its own
    thread. `drop_next_answer()`: the next bytes the upstream sends on any connection are
    thrown away and that client connection is closed, so what the gateway took is never
    acknowledged. `dropped` counts such losses. While `refusing` is set, new connections
    are closed at once (as if the gateway were down); `refused` counts them."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = 0
        self.dropped = 0
        self.refused = 0
        self.refusing = threading.Event()
        self._drop = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> LossyProxy:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = fut.result(10)
        return self

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    def drop_next_answer(self) -> None:
        self._drop.set()

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for w in self._writers:
                w.transport.abort()
            await asyncio.sleep(0.05)  # let the handlers see their connections go

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        if self.refusing.is_set():
            self.refused += 1
            cw.transport.abort()
            return
        try:
            ur, uw = await asyncio.open_connection(HOST, self.upstream)
        except OSError:
            cw.close()
            return
        self._writers.update((cw, uw))

        async def up() -> None:
            while data := await cr.read(65536):
                uw.write(data)
                await uw.drain()
            uw.close()

        async def down() -> None:
            while data := await ur.read(65536):
                if self._drop.is_set():
                    self._drop.clear()
                    self.dropped += 1
                    cw.transport.abort()
                    uw.close()
                    return
                cw.write(data)
                await cw.drain()
            cw.close()

        try:
            await asyncio.gather(up(), down())
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(cw)
            self._writers.discard(uw)
            cw.close()
            uw.close()


class LoopThread:
    """An asyncio loop on its own thread, for running an AsyncClient from sync tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
