"""A TCP forwarder that gives a loopback path the latency of a real network link.

sstpc 1.0.18 arms its receive event only when its first SSL_write had to wait: when the server's
whole first TLS flight is already there the instant it sends its ClientHello, which only happens
on a link with no delay at all, it never reads the HTTP answer and stalls (about one time in
three on loopback). This kernel has no netem, so a path that should look like a LAN or
WAN runs through this forwarder instead: every chunk is passed on ``delay`` seconds after it
arrived, in both directions, in order; closing one side closes the other.
"""

from __future__ import annotations

import asyncio
import contextlib


class LatencyLink:
    def __init__(self, target_port: int, delay: float = 0.002, host: str = "127.0.0.1") -> None:
        self.target_port = target_port
        self.delay = delay
        self.host = host
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=3)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.close()
            return
        pipes = [asyncio.create_task(self._pipe(reader, target_writer)),
                 asyncio.create_task(self._pipe(target_reader, writer))]
        self._tasks.update(pipes)
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for pipe in pipes:
            pipe.cancel()
            self._tasks.discard(pipe)
        for end in (writer, target_writer):
            end.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while chunk := await reader.read(65536):
                loop.call_later(self.delay, _write, writer, chunk)
            await asyncio.sleep(self.delay)  # what is in flight arrives before the close


def _write(writer: asyncio.StreamWriter, chunk: bytes) -> None:
    if not writer.is_closing():
        writer.write(chunk)
