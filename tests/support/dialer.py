"""A light SSTP dialer for tests: our ClientSession over a real TLS connection, no TUN.

It keeps a session up (answers keepalives through the session's timers), sends ICMP echo
requests through the tunnel and collects the replies, and reports how the session ended. Many
of them run in one event loop, which is what tests of the daemon's session handling need; the
real client (`vpnd client`) is what carries traffic for users.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from tests.support.packets import icmp_echo
from vpnd.proto.ppp.auth.types import AuthMethod, ClientAuth
from vpnd.proto.ppp.lcp import LcpSettings
from vpnd.proto.ppp.link import LinkSettings
from vpnd.proto.ppp.mppe import MppePolicy, MppeSettings
from vpnd.proto.session import (
    AuthFailed,
    ClientSession,
    ClientSessionSettings,
    Ipv4Up,
    Ipv6Up,
    SessionClosed,
)
from vpnd.proto.sstp.packets import HashProtocol


def _retrieve(future: asyncio.Future[bytes]) -> None:
    if not future.cancelled():
        future.exception()


@functools.cache
def _tls_context(keylog: str | None) -> ssl.SSLContext:
    """One client context per key log, shared by every dialer: no CA store is loaded (a
    thousand dialers would each parse it), as tests pin the certificate through the binding."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if keylog is not None:
        context.keylog_filename = keylog
    return context


@dataclass
class Dialer:
    host: str
    port: int
    username: str
    password: str
    method: AuthMethod = AuthMethod.MSCHAP_V2
    # A PPP peer of the test's own making for the negotiated method (hostile peers); None: ours.
    client_auth: Callable[[AuthMethod], ClientAuth] | None = None
    keylog: str | None = None  # TLS key log file (NSS format) so a capture can be decrypted
    mppe: MppePolicy = MppePolicy.DENY  # deny: CCP is Protocol-Rejected, as Windows does
    ipv6: bool = False  # negotiate IPV6CP (the link comes up; ND and DHCPv6 are not spoken)
    source: str | None = None  # the local address to connect from (None: the kernel's choice)
    ipv6_up: asyncio.Event = field(default_factory=asyncio.Event)
    interface_id: bytes | None = None  # ours, once IPV6CP is up
    ipv6_received: list[bytes] = field(default_factory=list)  # IPv6 packets from the server
    up: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    address: IPv4Address | None = None
    gateway: IPv4Address | None = None
    close_reason: str | None = None
    auth_failure: str | None = None
    cert_sha256: bytes = b""
    replies: int = 0
    silent: bool = False  # a dead peer: what arrives is read and dropped, nothing is answered
    _session: ClientSession | None = None
    _writer: asyncio.StreamWriter | None = None
    _task: asyncio.Task[None] | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def connect(self) -> None:
        reader, writer = await asyncio.open_connection(
            self.host, self.port, ssl=_tls_context(self.keylog), server_hostname="vpn.test",
            local_addr=(self.source, 0) if self.source is not None else None)
        self._writer = writer
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        self.cert_sha256 = hashlib.sha256(der).digest()
        link = LinkSettings(lcp=LcpSettings(auth_methods=(self.method,)), ipv6_enabled=self.ipv6)
        session = ClientSession(ClientSessionSettings(host="vpn.test", username=self.username,
                                                      password=self.password, link=link,
                                                      mppe=MppeSettings(self.mppe)))
        if self.client_auth is not None:
            session.link._auth_factory = self.client_auth  # before LCP opens: the link builds it then
        self._session = session
        loop = asyncio.get_running_loop()
        session.start({HashProtocol.SHA256: self.cert_sha256, HashProtocol.SHA1: hashlib.sha1(der).digest()},
                      loop.time())
        self._task = asyncio.create_task(self._run(reader))

    async def _run(self, reader: asyncio.StreamReader) -> None:
        session = self._session
        assert session is not None and self._writer is not None
        loop = asyncio.get_running_loop()
        try:
            while not session.closed:
                self._pump()
                deadline = session.get_timer()
                timeout = None if deadline is None or self.silent else max(0.0, deadline - loop.time())
                read = asyncio.ensure_future(reader.read(65536))
                read.add_done_callback(_retrieve)  # a read cut short by hang-up must not warn
                wake = asyncio.ensure_future(self._wake.wait())
                done, _ = await asyncio.wait({read, wake}, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                self._wake.clear()
                wake.cancel()
                if read in done:
                    data = read.result()
                    if not data:
                        self.close_reason = session.end_reason or "server closed the connection"
                        break
                    if self.silent:
                        continue
                    session.receive_data(data, loop.time())
                    for packet in session.take_ip_packets():
                        if packet[0] >> 4 == 6:
                            self.ipv6_received.append(bytes(packet))
                        elif packet[9] == 1 and packet[20] == 0:  # ICMP echo reply
                            self.replies += 1
                else:
                    read.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                        await read
                deadline = session.get_timer()
                if deadline is not None and deadline <= loop.time() and not self.silent:
                    session.handle_timer(loop.time())
        except (ConnectionError, ssl.SSLError) as error:
            self.close_reason = f"connection lost: {error}"
        finally:
            self._pump()
            self.close_reason = self.close_reason or session.close_reason
            self.ended.set()
            with contextlib.suppress(Exception):
                self._writer.close()

    def _pump(self) -> None:
        session = self._session
        assert session is not None and self._writer is not None
        while (event := session.next_event()) is not None:
            if isinstance(event, Ipv4Up):
                self.address, self.gateway = event.local, event.peer
                self.up.set()
            elif isinstance(event, Ipv6Up):
                self.interface_id = event.local_interface_id
                self.ipv6_up.set()
            elif isinstance(event, AuthFailed):
                self.auth_failure = event.reason
            elif isinstance(event, SessionClosed):
                self.close_reason = event.reason
        data = session.data_to_send()
        if data:
            self._writer.write(data)

    async def ping(self, count: int = 3, timeout: float = 3.0) -> int:
        """Echo requests to the gateway through the tunnel; returns how many replies came."""
        assert self._session is not None and self.address is not None and self.gateway is not None
        before = self.replies
        packets = [icmp_echo(self.address, self.gateway, 0x77, seq, b"hitless" * 8) for seq in range(count)]
        self._session.send_ip_packets(packets)
        self._wake.set()
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.replies - before < count and loop.time() < end and not self.ended.is_set():
            await asyncio.sleep(0.02)
        return self.replies - before

    def send_ipv6(self, packets: list[bytes]) -> int:
        """Raw IPv6 packets into the tunnel, whatever they hold; how many the session took."""
        assert self._session is not None
        taken = self._session.send_ip_packets(packets, ipv6=True)
        self._wake.set()
        return taken

    def go_silent(self) -> None:
        """Stop answering (as a peer that died without closing TCP): the server's LCP echoes
        go unanswered until it gives up and closes the connection."""
        self.silent = True
        self._wake.set()

    async def reset_connection(self) -> None:
        """Abort the TCP connection with a RST (SO_LINGER 0), no SSTP or TLS goodbye."""
        assert self._writer is not None
        raw = self._writer.get_extra_info("socket")
        if raw is not None:
            with contextlib.suppress(OSError):
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.ended.wait(), 3.0)
            self._task.cancel()

    async def hang_up(self) -> None:
        if self._session is not None and not self._session.closed:
            self._session.close(asyncio.get_running_loop().time(), "test hang-up")
            self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.ended.wait(), 3.0)
            self._task.cancel()
