"""TlsStream over a real socketpair with real TLS (self-signed certificate), both ends streams."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from vpnd.runtime.tls_stream import HIGH_WATER, PLAINTEXT_BUFFER, TlsStream
from vpnd.server.tls import make_self_signed

HOSTNAME = "vpn.test"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_self_signed(tmp_path_factory.mktemp("cert"), HOSTNAME)


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def client_context(certificate: tuple[Path, Path] | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if certificate is not None:
        context.load_verify_locations(certificate[0])
    return context


class End:
    """One side of the pair: a TlsStream and everything its callbacks reported."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, *, server_side: bool) -> None:
        self.received = bytearray()
        self.read_done = 0
        self.lost: list[str] = []
        self.backpressure: list[bool] = []
        self.handshake_failed: list[str] = []
        self.established = asyncio.get_running_loop().create_future()
        self.changed = asyncio.Event()
        self.stream = TlsStream(
            sock, context, server_side=server_side,
            server_hostname=None if server_side else HOSTNAME,
            plaintext=bytearray(PLAINTEXT_BUFFER), peer="client" if server_side else "the server",
            on_plaintext=self._plaintext, on_read_done=self._read_done, on_lost=self._lost,
            on_backpressure=self._backpressure, on_established=self._established,
            on_handshake_failed=self._handshake_failed)

    def _plaintext(self, view: memoryview) -> None:
        self.received += view  # the view is only valid during the call
        self.changed.set()

    def _read_done(self) -> None:
        self.read_done += 1
        self.stream.flush()  # like the connections' answer to what they read (the handshake's end)
        self.changed.set()

    def _lost(self, reason: str) -> None:
        self.lost.append(reason)
        self.stream.close()
        self.changed.set()

    def _backpressure(self, paused: bool) -> None:
        self.backpressure.append(paused)
        self.changed.set()

    def _established(self) -> None:
        self.established.set_result(True)

    def _handshake_failed(self, reason: str) -> None:
        self.handshake_failed.append(reason)
        self.stream.close()
        self.changed.set()
        if not self.established.done():
            self.established.set_result(False)


async def wait_for(condition: Callable[[], bool], *ends: End, timeout: float = 10.0) -> None:
    async def loop() -> None:
        while not condition():
            waits = [asyncio.ensure_future(end.changed.wait()) for end in ends]
            await asyncio.wait(waits, timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()
            for end in ends:
                end.changed.clear()
    await asyncio.wait_for(loop(), timeout)


def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


async def connected(certificate: tuple[Path, Path]) -> tuple[End, End]:
    server_sock, client_sock = pair()
    server = End(server_sock, server_context(certificate), server_side=True)
    client = End(client_sock, client_context(certificate), server_side=False)
    server.stream.start()
    client.stream.start()
    assert client.stream.handshake() is False  # ClientHello sent, waiting for the server
    assert await asyncio.wait_for(server.established, 10) is True
    assert await asyncio.wait_for(client.established, 10) is True
    return server, client


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


def test_handshake_completes_both_ways_and_small_data_flows(certificate: tuple[Path, Path]) -> None:
    async def test() -> None:
        server, client = await connected(certificate)
        assert not server.stream.handshaking and not client.stream.handshaking
        assert server.stream.tls.version() == client.stream.tls.version()
        assert client.stream.tls.version() in {"TLSv1.2", "TLSv1.3"}
        client.stream.write(b"hello server")
        await wait_for(lambda: bytes(server.received) == b"hello server", server)
        server.stream.write(b"hello client")
        await wait_for(lambda: bytes(client.received) == b"hello client", client)
        assert server.read_done >= 1 and client.read_done >= 1
        assert server.lost == [] and client.lost == [] and server.handshake_failed == []
        server.stream.close()
        client.stream.close()
    run(test)


@pytest.mark.parametrize("direction", ["client_to_server", "server_to_client"])
def test_large_transfer_pauses_above_high_water_and_resumes(
        certificate: tuple[Path, Path], direction: str) -> None:
    async def test() -> None:
        server, client = await connected(certificate)
        sender, receiver = (client, server) if direction == "client_to_server" else (server, client)
        sender.stream.enable_backpressure()
        payload = os.urandom(3 * HIGH_WATER)
        # Written in one go, without yielding: the socket takes a few hundred KiB, the rest queues.
        for offset in range(0, len(payload), 64 * 1024):
            sender.stream.write(payload[offset:offset + 64 * 1024])
        assert sender.stream.paused
        assert sender.backpressure == [True]
        assert sender.stream.pending_bytes > HIGH_WATER
        await wait_for(lambda: len(receiver.received) >= len(payload), sender, receiver, timeout=30)
        assert hashlib.sha256(receiver.received).digest() == hashlib.sha256(payload).digest()
        assert sender.backpressure == [True, False]
        assert not sender.stream.paused and sender.stream.pending_bytes == 0
        # Many reads, each handing over whole records through the one plaintext buffer.
        assert receiver.read_done > 1
        assert sender.lost == [] and receiver.lost == []
        server.stream.close()
        client.stream.close()
    run(test)


def test_no_backpressure_reports_until_enabled(certificate: tuple[Path, Path]) -> None:
    async def test() -> None:
        server, client = await connected(certificate)
        payload = os.urandom(2 * HIGH_WATER)
        client.stream.write(payload)
        assert client.stream.pending_bytes > HIGH_WATER
        await wait_for(lambda: len(server.received) >= len(payload), server, client, timeout=30)
        assert bytes(server.received) == payload
        assert client.backpressure == [] and not client.stream.paused
        server.stream.close()
        client.stream.close()
    run(test)


def test_peer_tcp_close_is_reported_as_lost(certificate: tuple[Path, Path]) -> None:
    async def test() -> None:
        server, client = await connected(certificate)
        client.stream.write(b"last words")
        client.stream.close()
        assert client.stream.closed and client.stream.sock.fileno() == -1
        assert not client.stream.reading
        await wait_for(lambda: bool(server.lost), server)
        assert bytes(server.received) == b"last words"
        assert server.lost == ["client closed the TCP connection"]
        assert client.lost == []  # no callback after our own close()
    run(test)


def test_peer_tls_close_notify_is_reported_as_lost(certificate: tuple[Path, Path]) -> None:
    async def test() -> None:
        server, client = await connected(certificate)
        with contextlib.suppress(ssl.SSLWantReadError):
            server.stream.tls.unwrap()  # sends close_notify
        server.stream.flush()
        await wait_for(lambda: bool(client.lost), client)
        assert client.lost == ["the server closed TLS"]
        server.stream.close()
    run(test)


def test_corrupt_record_is_a_tls_error(certificate: tuple[Path, Path]) -> None:
    async def test() -> None:
        server, client = await connected(certificate)
        # An application-data record that no key decrypts, written beside the TLS object.
        client.stream.sock.send(b"\x17\x03\x03\x00\x40" + bytes(64))
        await wait_for(lambda: bool(server.lost), server)
        assert len(server.lost) == 1 and server.lost[0].startswith("TLS error: ")
        assert server.received == bytearray()
        client.stream.close()
    run(test)


def test_handshake_failures_reach_on_handshake_failed(certificate: tuple[Path, Path]) -> None:
    async def test() -> None:
        server_sock, client_sock = pair()
        server = End(server_sock, server_context(certificate), server_side=True)
        client = End(client_sock, client_context(None), server_side=False)  # trusts nothing
        server.stream.start()
        client.stream.start()
        client.stream.handshake()
        assert await asyncio.wait_for(client.established, 10) is False
        assert client.handshake_failed == ["CERTIFICATE_VERIFY_FAILED"]
        await wait_for(lambda: bool(server.handshake_failed or server.lost), server)
        # The client's alert tells the server why (TLS 1.3 verifies after the server's Finished).
        assert server.handshake_failed and "UNKNOWN_CA" in server.handshake_failed[0]
        assert server.received == bytearray() and client.received == bytearray()
    run(test)


def test_plain_http_to_a_tls_server_fails_the_handshake(certificate: tuple[Path, Path]) -> None:
    async def test() -> None:
        server_sock, raw = pair()
        server = End(server_sock, server_context(certificate), server_side=True)
        server.stream.start()
        raw.send(b"GET / HTTP/1.1\r\nHost: vpn.test\r\n\r\n")
        await wait_for(lambda: bool(server.handshake_failed), server)
        assert server.handshake_failed == ["HTTP_REQUEST"]
        assert server.stream.closed and server.read_done == 0
        raw.close()
    run(test)


def test_write_is_dropped_until_the_handshake_is_done(certificate: tuple[Path, Path]) -> None:
    async def test() -> None:
        server_sock, raw = pair()
        server = End(server_sock, server_context(certificate), server_side=True)
        server.stream.write(b"too early")
        assert server.stream.pending_bytes == 0
        with pytest.raises(BlockingIOError):
            raw.recv(100)
        server.stream.close()
        server.stream.close()  # idempotent
        raw.close()
    run(test)
