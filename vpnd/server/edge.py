"""What happens to a connection between accept() and TLS: SSTP behind a load balancer.

* PROXY protocol (``accept-proxy-protocol``): only the configured balancers may send the header;
  it is read before anything else, within ``PROXY_HEADER_TIMEOUT``, and the client it names
  becomes the connection's peer (Calling-Station-Id, log label). A connection from anyone else,
  or without a valid header in time, is dropped and counted.
* TLS offload (``tls-offload``): the listener speaks plain HTTP/SSTP and the crypto binding checks
  the configured hashes of the balancer's certificate instead of ours.

The header is read without ever reading past it: each readiness peeks at what is queued, feeds
the sans-I/O reader and then takes from the socket exactly the bytes that belong to the header.
What follows (the client's TLS ClientHello, often in the same segment) stays in the kernel for
the TLS stream, so nothing has to be handed over.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from vpnd.config.definitions import SstpServer
from vpnd.proto.errors import ProtocolError
from vpnd.proto.proxy import MAX_V2_LENGTH, V2_FIXED_LENGTH, ProxyHeader, ProxyHeaderReader
from vpnd.proto.sstp.packets import HashProtocol

log = logging.getLogger("vpnd")

PROXY_HEADER_TIMEOUT = 5.0  # seconds a balancer has to send the whole header
_PEEK_SIZE = V2_FIXED_LENGTH + MAX_V2_LENGTH


def canonical_host(host: str) -> str:
    """An address as the rest of vpnd shows it: IPv4-mapped IPv6 as plain IPv4."""
    try:
        address = ip_address(host)
    except ValueError:
        return host
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@dataclass(frozen=True, slots=True)
class EdgePolicy:
    proxy_protocol: bool
    proxy_sources: tuple[IPv4Network | IPv6Network, ...]
    offload_hashes: Mapping[HashProtocol, bytes] | None  # None: we terminate TLS ourselves
    header_timeout: float

    @classmethod
    def from_config(cls, sstp: SstpServer) -> EdgePolicy:
        offload = sstp.tls_offload
        hashes: dict[HashProtocol, bytes] | None = None
        if offload is not None:
            hashes = {}
            if offload.certificate_hash_sha256 is not None:
                hashes[HashProtocol.SHA256] = bytes.fromhex(offload.certificate_hash_sha256)
            if offload.certificate_hash_sha1 is not None:
                hashes[HashProtocol.SHA1] = bytes.fromhex(offload.certificate_hash_sha1)
        return cls(
            proxy_protocol=sstp.accept_proxy_protocol,
            proxy_sources=tuple(ip_network(prefix) for prefix in sstp.proxy_protocol_source),
            offload_hashes=hashes,
            header_timeout=PROXY_HEADER_TIMEOUT,
        )

    @property
    def offload(self) -> bool:
        return self.offload_hashes is not None

    def source_allowed(self, host: str) -> bool:
        try:
            address = ip_address(canonical_host(host))
        except ValueError:
            return False
        return any(address in network for network in self.proxy_sources)

    def cert_hashes(self, own: Mapping[HashProtocol, bytes]) -> dict[HashProtocol, bytes]:
        """The hashes the crypto binding checks: the balancer's with offload, else our certificate's."""
        return dict(self.offload_hashes if self.offload_hashes is not None else own)


_cached: tuple[SstpServer, EdgePolicy] | None = None


def edge_policy(sstp: SstpServer) -> EdgePolicy:
    """The policy of this config object (recomputed only when a new config was applied)."""
    global _cached  # noqa: PLW0603 - one entry: the running config
    if _cached is None or _cached[0] is not sstp:
        _cached = (sstp, EdgePolicy.from_config(sstp))
    return _cached[1]


class ProxyHeaderRead:
    """Reads one PROXY header off a fresh non-blocking socket, then calls exactly one of
    ``on_header(header)`` or ``on_failure(kind, reason)`` (kind: "timeout", "invalid", "closed").
    The socket is left open either way: the caller decides what to do with it."""

    def __init__(self, sock: socket.socket, *, timeout: float,
                 on_header: Callable[[ProxyHeader], None], on_failure: Callable[[str, str], None]) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock = sock
        self._reader = ProxyHeaderReader()
        self._on_header = on_header
        self._on_failure = on_failure
        self.done = False
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._on_readable)
        self._timer = self.loop.call_later(timeout, self._fail, "timeout",
                                           f"no complete PROXY header within {timeout:g} s")

    def _finish(self) -> None:
        self.done = True
        self._timer.cancel()
        self.loop.remove_reader(self.sock.fileno())

    def _fail(self, kind: str, reason: str) -> None:
        if not self.done:
            self._finish()
            self._on_failure(kind, reason)

    def cancel(self) -> None:
        """Stop reading without calling back (the caller closes the socket)."""
        if not self.done:
            self._finish()

    def _on_readable(self) -> None:
        try:
            queued = self.sock.recv(_PEEK_SIZE, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._fail("closed", f"connection error: {error.strerror or error}")
            return
        if not queued:
            self._fail("closed", "closed before sending a PROXY header")
            return
        try:
            result = self._reader.feed(queued)
        except ProtocolError as error:
            self._fail("invalid", str(error))
            return
        # Take what belongs to the header; all of it when the header is not complete yet.
        wanted = len(queued) - (len(result.remainder) if result is not None else 0)
        try:
            taken = self.sock.recv(wanted)
        except OSError as error:
            self._fail("closed", f"connection error: {error.strerror or error}")
            return
        if len(taken) != wanted:  # what MSG_PEEK showed is queued; anything else is a broken socket
            self._fail("closed", "the socket lost queued bytes")
            return
        if result is not None:
            self._finish()
            self._on_header(result.header)


class HeaderReads:
    """The PROXY header reads in progress on one listener (bounded by the caller's limits)."""

    def __init__(self) -> None:
        self._reads: set[ProxyHeaderRead] = set()

    def __len__(self) -> int:
        return len(self._reads)

    def start(self, sock: socket.socket, timeout: float, on_header: Callable[[ProxyHeader], None],
              on_failure: Callable[[str, str], None]) -> ProxyHeaderRead:
        def header(value: ProxyHeader) -> None:
            self._reads.discard(read)
            on_header(value)

        def failure(kind: str, reason: str) -> None:
            self._reads.discard(read)
            on_failure(kind, reason)

        read = ProxyHeaderRead(sock, timeout=timeout, on_header=header, on_failure=failure)
        self._reads.add(read)
        return read

    def close_all(self) -> None:
        for read in list(self._reads):
            read.cancel()
            read.sock.close()
        self._reads.clear()


def client_of(header: ProxyHeader, connection_peer: tuple[str, int]) -> tuple[str, int]:
    """The client the connection stands for: the header's source, or (LOCAL, UNKNOWN, UNSPEC) the
    connection's own peer."""
    if header.source is None:
        return connection_peer
    return canonical_host(header.source.host), header.source.port
