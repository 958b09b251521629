"""Small clients for scenarios that poke at a daemon's edge from a chosen source address: raw TCP,
TLS with a chosen SNI and nothing or a chosen request after it, a dialer that waits until it is
up or gone, and a log handler that keeps what the daemon logged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from typing import Any

from tests.support.dialer import Dialer


async def raw_exchange(source: str, port: int, data: bytes, wait: float = 5.0,
                       host: str = "127.0.0.1") -> dict[str, Any]:
    """Connect from ``source``, send ``data``, and report whether and when the daemon closed."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.bind((source, 0))
    sock.setblocking(False)
    started = loop.time()
    try:  # a connection refused with a reset may fail here already, on loopback
        await loop.sock_connect(sock, (host, port))
        if data:
            await loop.sock_sendall(sock, data)
        answer = await asyncio.wait_for(loop.sock_recv(sock, 4096), wait)
        closed = answer == b""
    except (ConnectionError, OSError):
        answer, closed = b"", True
    except TimeoutError:
        answer, closed = b"", False
    sock.close()
    return {"closed": closed, "answer": answer.decode("latin-1"), "after": loop.time() - started}


async def tls_exchange(source: str, port: int, *, sni: str | None, data: bytes = b"", wait: float = 5.0,
                       host: str = "127.0.0.1") -> dict[str, Any]:
    """TLS from ``source`` sending ``sni`` (None: no SNI), then ``data``; reports the handshake's
    outcome, what came back within ``wait`` seconds, and whether the daemon closed."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    result: dict[str, Any] = {"handshake": "ok", "answer": "", "closed": False}
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            host, port, ssl=context, server_hostname=sni or "", local_addr=(source, 0)), wait)
    except (ConnectionError, OSError, ssl.SSLError) as error:
        result.update(handshake=getattr(error, "reason", None) or type(error).__name__, closed=True)
        return result
    except TimeoutError:
        result["handshake"] = "timeout"
        return result
    if data:
        writer.write(data)
    answer = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), wait):
            answer += chunk
        result["closed"] = True
    except (ConnectionError, OSError, ssl.SSLError):
        result["closed"] = True
    except TimeoutError:
        pass
    result["answer"] = answer.decode("latin-1")
    writer.close()
    with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
        await writer.wait_closed()
    return result


async def dial(port: int, name: str = "alice", password: str = "alice-pw", *, wait: float = 15.0,
               host: str = "127.0.0.1", source: str | None = None) -> Dialer:
    """A Dialer (from ``source``, if given) that has come up, ended, or failed to connect
    (``close_reason`` says how)."""
    dialer = Dialer(host, port, name, password, source=source)
    try:
        await asyncio.wait_for(dialer.connect(), wait)
    except (ConnectionError, OSError, ssl.SSLError, TimeoutError) as error:
        dialer.close_reason = f"connect failed: {type(error).__name__}: {error}"
        dialer.ended.set()
        return dialer
    waiters = [asyncio.ensure_future(dialer.up.wait()), asyncio.ensure_future(dialer.ended.wait())]
    await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
    return dialer


class LogCollector(logging.Handler):
    """Keeps every message logged below the logger it is attached to."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.levels: list[int] = []  # each line's level

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.levels.append(record.levelno)

    def at_least(self, level: int) -> list[str]:
        """The lines logged at ``level`` or above."""
        return [line for line, at in zip(self.lines, self.levels, strict=True) if at >= level]

    @classmethod
    def on(cls, name: str = "vpnd") -> LogCollector:
        collector = cls()
        logger = logging.getLogger(name)
        logger.addHandler(collector)
        logger.setLevel(logging.DEBUG)
        return collector
