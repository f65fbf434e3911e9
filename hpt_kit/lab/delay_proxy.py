"""A loopback TCP proxy that adds network delay: what ``hpt-kit bench --part serve`` and the tests put
between a client and a policy server to stand for a real network.

Every byte read on one side is written on the other ``added_rtt_s / 2`` seconds later, in order, in
both directions, so a request and its reply together take ``added_rtt_s`` longer than on loopback.
Only latency is modelled: no bandwidth limit, no jitter, no loss. The proxy forwards TCP, so it
works for any client and leaves the websocket handshake (the token) and the messages untouched.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class DelayProxy:
    """``with DelayProxy(server_port, 0.05) as proxy: PolicyClient(proxy.url)``: 50 ms added round trip."""

    def __init__(self, target_port: int, added_rtt_s: float, host: str = "127.0.0.1"):
        if not added_rtt_s >= 0:
            raise ValueError(f"added_rtt_s: a delay >= 0 s, got {added_rtt_s}")
        self.target_port, self.host, self.half = target_port, host, added_rtt_s / 2
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def __enter__(self) -> DelayProxy:
        ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run(ready)), name="delay-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the delay proxy did not start")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _run(self, ready: threading.Event) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._connection, self.host, 0)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        async with server:
            await self._stop.wait()

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Bytes from ``reader`` to ``writer``, each ``half`` seconds after it was read."""
        loop = asyncio.get_running_loop()
        held: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            try:
                while (item := await held.get())[1]:
                    due, data = item
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()

        delivering = loop.create_task(deliver())
        try:
            while data := await reader.read(1 << 16):
                held.put_nowait((loop.time() + self.half, data))
        except OSError:
            pass
        held.put_nowait((0.0, b""))  # the end: close the other side once everything before it is written
        await delivering
