"""A small asyncio TLS server that runs our ServerSession, for real peers before the daemon exists.

Every accepted connection gets its own ServerSession, driven from the TLS stream and the loop's
clock: passwords come from ``users``, every session is given the same ``peer_address``, and ICMP
Echo Requests that come out of the tunnel are answered through it, so the peer can ping the
gateway (or any address) through the tunnel. The certificate is a fresh self-signed RSA-2048 one
(CN "vpnd.test") written to a temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import socket
import ssl
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support.packets import icmp_echo
from vpnd.proto.ppp.auth.types import AuthMethod
from vpnd.proto.ppp.auth.verify import decide_with_password
from vpnd.proto.ppp.ipcp import Ipv4Settings
from vpnd.proto.ppp.lcp import LcpSettings
from vpnd.proto.ppp.link import LinkSettings
from vpnd.proto.session import (
    AuthRequested,
    Ipv4AddressNeeded,
    ServerSession,
    ServerSessionSettings,
    SessionClosed,
    SessionEvent,
)
from vpnd.proto.sstp.packets import HashProtocol

CERT_COMMON_NAME = "vpnd.test"
READ_SIZE = 65536
DEFAULT_GATEWAY = IPv4Address("10.77.0.1")
DEFAULT_PEER_ADDRESS = IPv4Address("10.77.0.2")


def write_self_signed_certificate(directory: Path,
                                  common_name: str = CERT_COMMON_NAME) -> tuple[Path, Path, bytes]:
    """RSA-2048 self-signed certificate: (cert PEM path, key PEM path, cert DER)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, cert.public_bytes(serialization.Encoding.DER)


def echo_reply_for(packet: bytes) -> bytes | None:
    """The Echo Reply for an IPv4 ICMP Echo Request (options-free header), else None."""
    if len(packet) < 28 or packet[0] != 0x45 or packet[9] != 1 or packet[20] != 8:
        return None
    total = struct.unpack_from("!H", packet, 2)[0]
    if total > len(packet) or total < 28:
        return None
    src, dst = IPv4Address(packet[12:16]), IPv4Address(packet[16:20])
    ident, seq = struct.unpack_from("!HH", packet, 24)
    return icmp_echo(dst, src, ident, seq, packet[28:total], reply=True)


@dataclass
class ServedConnection:
    """One accepted TLS connection and what its session did."""

    session: ServerSession
    events: list[SessionEvent] = field(default_factory=list)
    echo_requests: int = 0
    other_packets: int = 0
    peer_eof: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def saw(self, kind: type) -> list[SessionEvent]:
        return [event for event in self.events if isinstance(event, kind)]

    @property
    def close_reason(self) -> str | None:
        """SessionClosed's reason; if the peer hung up first, the cause the session had noted."""
        closed = [event for event in self.events if isinstance(event, SessionClosed)]
        return closed[0].reason if closed else self.session.end_reason


class SessionTestServer:
    """TLS on ``host:port`` (0 = any free port, read ``port`` after ``start``), one ServerSession
    per connection, recorded in ``connections``. ``cert_der``/``cert_path``: what peers are shown.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        methods: tuple[AuthMethod, ...] = (AuthMethod.MSCHAP_V2,),
        users: dict[str, str],
        peer_address: IPv4Address = DEFAULT_PEER_ADDRESS,
        gateway: IPv4Address = DEFAULT_GATEWAY,
        dns: tuple[IPv4Address, ...] = (),
        offered_hashes: int = HashProtocol.SHA1 | HashProtocol.SHA256,
    ) -> None:
        self.host = host
        self.port = port
        self.users = dict(users)
        self.ipv4 = Ipv4Settings(gateway, peer_address, dns)
        self._tempdir = tempfile.TemporaryDirectory(prefix="vpnd-tls-")
        cert_path, key_path, self.cert_der = write_self_signed_certificate(Path(self._tempdir.name))
        self.cert_path = cert_path
        self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ssl.load_cert_chain(cert_path, key_path)
        self.settings = ServerSessionSettings(
            cert_hashes={
                HashProtocol.SHA1: hashlib.sha1(self.cert_der).digest(),
                HashProtocol.SHA256: hashlib.sha256(self.cert_der).digest(),
            },
            link=LinkSettings(lcp=LcpSettings(auth_methods=methods)),
            offered_hashes=offered_hashes,
        )
        self.connections: list[ServedConnection] = []
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        listener = socket.create_server((self.host, self.port))
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._accept_task = asyncio.create_task(self._accept_loop(listener))

    async def stop(self) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
            await asyncio.wait({self._accept_task}, timeout=2.0)
            self._accept_task = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=3.0)
        self._tempdir.cleanup()

    async def wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Poll ``condition`` until it holds or ``timeout`` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    # ---- one connection ---------------------------------------------------------------------

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _address = await loop.sock_accept(listener)
            task = asyncio.create_task(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READ_SIZE)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await asyncio.wait_for(
                loop.connect_accepted_socket(lambda: protocol, conn, ssl=self._ssl), 10.0)
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
            conn.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        session = ServerSession(self.settings, loop.time(), now_wallclock=time.time())
        connection = ServedConnection(session)
        self.connections.append(connection)
        try:
            await self._drive(connection, reader, writer)
        except (ConnectionError, ssl.SSLError, OSError):
            connection.peer_eof = True
        finally:
            connection.done.set()
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2.0)

    async def _drive(self, connection: ServedConnection, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        session = connection.session
        loop = asyncio.get_running_loop()
        while True:
            self._handle_events(connection, loop.time())
            out = session.data_to_send()
            if out:
                writer.write(out)
                await writer.drain()
            if session.closed:
                return  # SessionClosed: everything it wanted to say has been flushed
            deadline = session.get_timer()
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                async with asyncio.timeout(timeout):  # not wait_for: it may swallow a cancellation
                    data = await reader.read(READ_SIZE)
            except TimeoutError:
                session.handle_timer(loop.time())
                continue
            if not data:
                connection.peer_eof = True
                return
            session.receive_data(data, loop.time())

    def _handle_events(self, connection: ServedConnection, now: float) -> None:
        session = connection.session
        moved = True
        while moved:
            moved = False
            while (event := session.next_event()) is not None:
                moved = True
                connection.events.append(event)
                if isinstance(event, AuthRequested):
                    password = self.users.get(event.request.username)
                    session.decide(decide_with_password(event.request, password), now)
                elif isinstance(event, Ipv4AddressNeeded):
                    session.assign_ipv4(self.ipv4, now)
            replies = []
            for packet in session.take_ip_packets():
                reply = echo_reply_for(bytes(packet))
                if reply is None:
                    connection.other_packets += 1
                else:
                    connection.echo_requests += 1
                    replies.append(reply)
            if replies:
                session.send_ip_packets(replies)
