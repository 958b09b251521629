"""RADIUS client (RFC 2865/2866/2869) and the RADIUS authentication backend.

``RadiusClient`` sends requests over asyncio UDP sockets it shares between requests: one socket
carries up to 256 outstanding requests (the Identifier space) and more sockets are opened only
when the identifiers run out. Servers are tried in order (non-backup servers by priority, then
backup servers), each ``max_try`` times with ``timeout`` seconds per try; a server that stays
silent is skipped for ``fail_time`` seconds.

Every request carries a Message-Authenticator. Every reply must match the request: source
address, Identifier, expected code, Response Authenticator and Message-Authenticator (which an
Access-Accept, -Reject or -Challenge must carry: BlastRADIUS, CVE-2024-3596). A reply that
fails a check is dropped and counted; the request keeps waiting for the genuine answer.

``RadiusAuthenticator`` turns a PPP ``AuthRequest`` into an Access-Request and the answer into
an ``AuthDecision``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import itertools
import logging
import os
import random
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, Literal, cast

from pyrad.dictionary import Dictionary
from pyrad.packet import AuthPacket, Packet

from vpnd.aaa.dictionary import load_dictionary
from vpnd.aaa.mppe_keys import (
    MppeKeyError,
    decrypt_mschap_mppe_keys,
    md5_chain,
    mschapv1_keys_from_nt_key,
    server_mppe_keys,
)
from vpnd.config.definitions import Radius
from vpnd.config.verify import MAX_DNS_V6
from vpnd.histogram import RADIUS_LATENCY_BUCKETS, Histogram
from vpnd.proto.ppp.auth.types import (
    AuthDecision,
    AuthRequest,
    ChapMd5Request,
    EapRelayRequest,
    MppeKeys,
    MsChapV1Request,
    MsChapV2Request,
    PapRequest,
)
from vpnd.proto.ppp.ipv6cp import parse_interface_id

log = logging.getLogger("vpnd.radius")

# Packet codes (RFC 2865 section 3, RFC 2866 section 4, RFC 5997).
ACCESS_REQUEST = 1
ACCESS_ACCEPT = 2
ACCESS_REJECT = 3
ACCOUNTING_REQUEST = 4
ACCOUNTING_RESPONSE = 5
ACCESS_CHALLENGE = 11
STATUS_SERVER = 12

HEADER_LENGTH = 20
MAX_PACKET_LENGTH = 4096
AUTHENTICATOR_LENGTH = 16
USER_PASSWORD = 2
EAP_MESSAGE = 79
MESSAGE_AUTHENTICATOR = 80
MAX_PASSWORD_LENGTH = 128

EXPECTED_REPLIES: dict[int, frozenset[int]] = {
    ACCESS_REQUEST: frozenset({ACCESS_ACCEPT, ACCESS_REJECT, ACCESS_CHALLENGE}),
    ACCOUNTING_REQUEST: frozenset({ACCOUNTING_RESPONSE}),
    STATUS_SERVER: frozenset({ACCESS_ACCEPT, ACCOUNTING_RESPONSE}),
}
# Replies that must prove knowledge of the secret beyond the MD5 Response Authenticator.
SIGNED_REPLIES = frozenset({ACCESS_ACCEPT, ACCESS_REJECT, ACCESS_CHALLENGE})

IDENTIFIERS_PER_SOCKET = 256
MAX_SOCKETS_PER_FAMILY = 64

RequestKind = Literal["auth", "acct"]


class RadiusError(Exception):
    """A request that could not be sent or answered."""


class RadiusTimeoutError(RadiusError):
    """No server answered the request."""


# How to make a server sign its replies, for the log and the session's failure cause.
SIGN_REPLIES_FIX = ("make it sign its replies (FreeRADIUS: 3.2.5 or later, or "
                    "'update reply {{ Message-Authenticator := 0x00 }}' in post-auth and in "
                    "Post-Auth-Type REJECT) or set 'vpn sstp authentication radius server {server} "
                    "accept-unsigned-replies'")


class RadiusUnsignedRepliesError(RadiusError):
    """Servers answered, but every answer lacked the Message-Authenticator we require: a
    configuration mismatch to fix, not an outage. ``servers`` names them."""

    def __init__(self, servers: Sequence[str]) -> None:
        self.servers = list(servers)
        named = ", ".join(self.servers)
        super().__init__(f"RADIUS server {named} answered without Message-Authenticator (replies "
                         f"dropped, BlastRADIUS CVE-2024-3596): "
                         + SIGN_REPLIES_FIX.format(server=self.servers[0]))


# --- servers and their counters ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RadiusServerSpec:
    """One RADIUS server as the client uses it.

    ``priority`` orders the non-backup servers: the highest is tried first (it is the accel-ppp
    weight behind the VyOS ``priority`` option); equal priorities keep the configured order.
    Port 0 disables that service on the server.
    """

    address: IPv4Address | IPv6Address
    secret: bytes
    auth_port: int = 1812
    acct_port: int = 1813
    priority: int = 1
    backup: bool = False
    fail_time: float = 0.0
    disable: bool = False
    disable_accounting: bool = False
    require_message_authenticator: bool = True

    @property
    def name(self) -> str:
        return str(self.address)

    def port(self, kind: RequestKind) -> int:
        if kind == "acct":
            return 0 if self.disable_accounting else self.acct_port
        return self.auth_port


@dataclass(slots=True)
class ServerStatistics:
    """Counters of one server, for ``show statistics``."""

    server: str
    requests: int = 0  # requests handed to this server (first transmissions)
    retransmissions: int = 0
    accepts: int = 0
    rejects: int = 0
    challenges: int = 0
    accounting_responses: int = 0
    timeouts: int = 0  # tries left unanswered
    failures: int = 0  # requests given up on this server after max-try
    dropped_bad_authenticator: int = 0  # wrong Response Authenticator or Message-Authenticator
    dropped_malformed: int = 0  # undecodable, unexpected code, or unknown Identifier
    last_rtt: float | None = None  # seconds
    failed_until: float = 0.0  # monotonic time until which the server is skipped
    latency: Histogram = field(default_factory=lambda: Histogram(RADIUS_LATENCY_BUCKETS))  # verified replies

    def active(self, now: float) -> bool:
        """Not inside the fail-time that follows a run of unanswered tries."""
        return self.failed_until <= now

    def as_dict(self, now: float) -> dict[str, object]:
        return {
            "server": self.server,
            "state": "active" if self.active(now) else "failed",
            "requests": self.requests,
            "retransmissions": self.retransmissions,
            "accepts": self.accepts,
            "rejects": self.rejects,
            "challenges": self.challenges,
            "accounting-responses": self.accounting_responses,
            "timeouts": self.timeouts,
            "failures": self.failures,
            "dropped-bad-authenticator": self.dropped_bad_authenticator,
            "dropped-malformed": self.dropped_malformed,
            "last-rtt-ms": None if self.last_rtt is None else round(self.last_rtt * 1000, 3),
        }


@dataclass(frozen=True, slots=True)
class RadiusReply:
    """A verified reply, decoded with the client's dictionary."""

    code: int
    packet: Packet
    request_authenticator: bytes
    server: RadiusServerSpec
    rtt: float

    @property
    def secret(self) -> bytes:
        return self.server.secret

    def values(self, name: str) -> list[object]:
        """All values of attribute ``name`` (empty when absent or undecodable)."""
        try:
            return list(self.packet.get(name, []) or [])
        except Exception:  # pyrad raises KeyError and others for odd values
            return []

    def first(self, name: str) -> object | None:
        found = self.values(name)
        return found[0] if found else None


# --- packet encoding and verification ---------------------------------------------------------


def encode_attributes(dictionary: Dictionary, attributes: Iterable[tuple[str, object]]) -> bytes:
    """The attribute section for ``(name, value)`` pairs, in order, encoded with pyrad."""
    packet = AuthPacket(code=ACCESS_REQUEST, id=0, secret=b"-", authenticator=bytes(16), dict=dictionary)
    for name, value in attributes:
        packet.AddAttribute(name, value)
    return bytes(packet.RequestPacket()[HEADER_LENGTH:])


def hide_user_password(password: bytes, secret: bytes, request_authenticator: bytes) -> bytes:
    """RFC 2865 section 5.2: the password padded to 16-byte blocks, hidden with the secret."""
    if len(password) > MAX_PASSWORD_LENGTH:
        raise RadiusError("User-Password longer than 128 bytes")
    padded = password + bytes(-len(password) % 16 if password else 16)
    return md5_chain(padded, secret, request_authenticator, encrypt=True)


def build_request(
    code: int,
    identifier: int,
    attributes: bytes,
    secret: bytes,
    request_authenticator: bytes | None = None,
    *,
    message_authenticator: bool = True,
) -> tuple[bytes, bytes]:
    """(packet, Request Authenticator). Access-Request and Status-Server take a random
    authenticator; the others get the MD5 one of RFC 2866 section 3. The Message-Authenticator
    goes first, where a BlastRADIUS collision prefix cannot precede it."""
    if message_authenticator:
        attributes = bytes([MESSAGE_AUTHENTICATOR, 18]) + bytes(16) + attributes
    length = HEADER_LENGTH + len(attributes)
    if length > MAX_PACKET_LENGTH:
        raise RadiusError(f"request of {length} bytes exceeds 4096")
    header = struct.pack("!BBH", code, identifier, length)
    random_authenticator = code in (ACCESS_REQUEST, STATUS_SERVER)
    if random_authenticator:
        if request_authenticator is None or len(request_authenticator) != 16:
            raise RadiusError("Access-Request needs a 16-byte random Request Authenticator")
        vector = request_authenticator
    else:
        vector = bytes(16)
    if message_authenticator:
        mac = hmac.new(secret, header + vector + attributes, "md5").digest()
        attributes = attributes[:2] + mac + attributes[18:]
    if not random_authenticator:
        request_authenticator = hashlib.md5(header + vector + attributes + secret).digest()
    assert request_authenticator is not None
    return header + request_authenticator + attributes, request_authenticator


def _find_message_authenticator(attributes: bytes) -> tuple[int | None, bool]:
    """Offset of the Message-Authenticator value in the attribute section, and whether an
    EAP-Message is there too; RadiusError if the attributes do not parse or the attribute is
    malformed or repeated."""
    offset, found, eap = 0, None, False
    while offset < len(attributes):
        if offset + 2 > len(attributes):
            raise RadiusError("truncated attribute")
        kind, length = attributes[offset], attributes[offset + 1]
        if length < 2 or offset + length > len(attributes):
            raise RadiusError("bad attribute length")
        if kind == MESSAGE_AUTHENTICATOR:
            if length != 18 or found is not None:
                raise RadiusError("malformed or repeated Message-Authenticator")
            found = offset + 2
        eap = eap or kind == EAP_MESSAGE
        offset += length
    return found, eap


class BadAuthenticatorError(RadiusError):
    """A reply whose Response Authenticator or Message-Authenticator is wrong or missing."""


class UnsignedReplyError(BadAuthenticatorError):
    """A reply that must carry a Message-Authenticator and does not."""


def verify_reply(
    reply: bytes, request_authenticator: bytes, secret: bytes, *, require_message_authenticator: bool
) -> bytes:
    """The reply trimmed to its Length once both authenticators check out.

    Raises BadAuthenticatorError (forged or wrong secret) or RadiusError (malformed)."""
    if len(reply) < HEADER_LENGTH:
        raise RadiusError("reply shorter than its header")
    code, length = reply[0], struct.unpack_from("!H", reply, 2)[0]
    if length < HEADER_LENGTH or length > len(reply) or length > MAX_PACKET_LENGTH:
        raise RadiusError(f"reply Length {length} does not fit the {len(reply)} bytes received")
    reply = reply[:length]  # RFC 2865 section 3: octets beyond Length are padding
    attributes = reply[HEADER_LENGTH:]
    expected = hashlib.md5(reply[:4] + request_authenticator + attributes + secret).digest()
    if not hmac.compare_digest(expected, reply[4:HEADER_LENGTH]):
        raise BadAuthenticatorError("Response Authenticator mismatch")
    mac_offset, eap = _find_message_authenticator(attributes)
    if mac_offset is None:
        if eap:  # RFC 3579 section 3.2: whatever the server's age, EAP needs the signature
            raise UnsignedReplyError("reply with EAP-Message but without Message-Authenticator")
        if require_message_authenticator and code in SIGNED_REPLIES:
            raise UnsignedReplyError("reply without Message-Authenticator")
        return reply
    received = attributes[mac_offset : mac_offset + 16]
    zeroed = attributes[:mac_offset] + bytes(16) + attributes[mac_offset + 16 :]
    mac = hmac.new(secret, reply[:4] + request_authenticator + zeroed, "md5").digest()
    if not hmac.compare_digest(mac, received):
        raise BadAuthenticatorError("Message-Authenticator mismatch")
    return reply


# --- the UDP client ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    server: RadiusServerSpec
    address: tuple[str, int]
    request_authenticator: bytes
    expected_codes: frozenset[int]
    future: asyncio.Future[RadiusReply]
    sent_at: float = 0.0
    unsigned_replies: int = 0  # replies dropped for lacking a Message-Authenticator


class _RadiusSocket(asyncio.DatagramProtocol):
    """One UDP socket and the Identifiers outstanding on it."""

    def __init__(self, client: RadiusClient, family: int) -> None:
        self.client = client
        self.family = family
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[int, _Pending] = {}
        # Cycling through the space delays the reuse of an Identifier whose late reply may
        # still arrive; the random start makes consecutive runs differ.
        self._next_id = random.randrange(IDENTIFIERS_PER_SOCKET)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector transport is not a registered DatagramTransport subclass.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for pending in self.pending.values():
            if not pending.future.done():
                pending.future.set_exception(RadiusError("RADIUS socket closed"))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.client._on_datagram(self, data, (str(addr[0]), int(str(addr[1]))))

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable) surface here; the try simply times out.
        log.debug("RADIUS socket error: %s", exc)

    @property
    def full(self) -> bool:
        return len(self.pending) >= IDENTIFIERS_PER_SOCKET

    def allocate(self, pending: _Pending) -> int:
        for _ in range(IDENTIFIERS_PER_SOCKET):
            identifier = self._next_id
            self._next_id = (self._next_id + 1) % IDENTIFIERS_PER_SOCKET
            if identifier not in self.pending:
                self.pending[identifier] = pending
                return identifier
        raise RadiusError("no free RADIUS Identifier on this socket")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class RadiusClient:
    """Sends RADIUS requests to an ordered list of servers; see the module documentation."""

    def __init__(
        self,
        servers: Sequence[RadiusServerSpec],
        *,
        timeout: float = 3.0,
        max_try: int = 3,
        source_address: IPv4Address | IPv6Address | None = None,
        dictionary: Dictionary | None = None,
        clock: Callable[[], float] = time.monotonic,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if max_try < 1:
            raise ValueError("max_try must be at least 1")
        self.servers = list(servers)
        self.timeout = timeout
        self.max_try = max_try
        self.source_address = source_address
        self.dictionary = dictionary if dictionary is not None else load_dictionary()
        self._clock = clock
        self._random_bytes = random_bytes
        self._stats = {id(server): ServerStatistics(server.name) for server in self.servers}
        self._sockets: dict[int, list[_RadiusSocket]] = {}
        self._open_lock = asyncio.Lock()
        self._closed = False
        self.unmatched_replies = 0  # datagrams from unknown sources

    @classmethod
    def from_config(cls, radius: Radius, *, dictionary: Dictionary | None = None) -> RadiusClient:
        """A client for the ``authentication radius`` configuration node (servers without a key are
        left out: they could not authenticate anything)."""
        servers = []
        for address, server in radius.server.items():
            if server.key is None:
                log.warning("RADIUS server %s has no key; not used", address)
                continue
            servers.append(RadiusServerSpec(
                address=address,
                secret=server.key.get_secret_value().encode("ascii"),
                auth_port=server.port,
                acct_port=server.acct_port,
                priority=server.priority or 1,
                backup=server.backup,
                fail_time=float(server.fail_time),
                disable=server.disable,
                disable_accounting=server.disable_accounting,
                require_message_authenticator=not server.accept_unsigned_replies,
            ))
        return cls(
            servers, timeout=float(radius.timeout), max_try=radius.max_try,
            source_address=radius.source_address, dictionary=dictionary,
        )

    # --- public API --------------------------------------------------------------------------

    def statistics(self) -> list[dict[str, object]]:
        now = self._clock()
        return [self._stats[id(server)].as_dict(now) for server in self.servers]

    def server_statistics(self, server: RadiusServerSpec) -> ServerStatistics:
        return self._stats[id(server)]

    def server_states(self) -> list[tuple[ServerStatistics, bool]]:
        """Each server's counters, and whether it is active (outside its fail-time) now."""
        now = self._clock()
        return [(stats, stats.active(now)) for stats in (self._stats[id(s)] for s in self.servers)]

    def servers_in_order(self, kind: RequestKind) -> list[RadiusServerSpec]:
        """Servers to try, in order: available non-backup servers by priority, then backup ones.

        Servers inside their fail-time are skipped; when every server is, they are all tried
        (earliest recovery first) rather than failing the request without asking anyone."""
        now = self._clock()
        usable = [s for s in self.servers if not s.disable and s.port(kind)]
        ranked = sorted(usable, key=lambda s: (s.backup, -s.priority))  # sorted() keeps config order
        alive = [s for s in ranked if self._stats[id(s)].failed_until <= now]
        if alive:
            return alive
        return sorted(ranked, key=lambda s: self._stats[id(s)].failed_until)

    async def request(
        self,
        code: int,
        attributes: Sequence[tuple[str, object]],
        *,
        user_password: bytes | None = None,
        kind: RequestKind | None = None,
    ) -> RadiusReply:
        """Send a request (with a Message-Authenticator) and return the first verified reply.

        ``user_password`` is hidden per server (it depends on the secret). Raises RadiusTimeoutError
        when no server answers."""
        if self._closed:
            raise RadiusError("RADIUS client is closed")
        if kind is None:
            kind = "acct" if code == ACCOUNTING_REQUEST else "auth"
        encoded = encode_attributes(self.dictionary, attributes)
        servers = self.servers_in_order(kind)
        if not servers:
            raise RadiusTimeoutError(f"no RADIUS server configured for {kind}")
        unsigned: list[str] = []
        for server in servers:
            reply = await self._exchange(server, kind, code, encoded, user_password, unsigned=unsigned)
            if reply is not None:
                return reply
        if unsigned:
            raise RadiusUnsignedRepliesError(unsigned)
        raise RadiusTimeoutError("RADIUS servers did not answer: " + ", ".join(s.name for s in servers))

    async def close(self) -> None:
        self._closed = True
        for sockets in self._sockets.values():
            for sock in sockets:
                sock.close()
        self._sockets.clear()
        await asyncio.sleep(0)  # let the transports finish closing

    def socket_count(self) -> int:
        return sum(len(sockets) for sockets in self._sockets.values())

    # --- internals ---------------------------------------------------------------------------

    async def _exchange(
        self, server: RadiusServerSpec, kind: RequestKind, code: int, attributes: bytes,
        user_password: bytes | None, *, unsigned: list[str],
    ) -> RadiusReply | None:
        """Up to max_try transmissions of one encoded packet to ``server``; None on silence.
        A server whose replies were all dropped as unsigned is added to ``unsigned``."""
        stats = self._stats[id(server)]
        address = (str(server.address), server.port(kind))
        loop = asyncio.get_running_loop()
        expected = EXPECTED_REPLIES.get(code, frozenset())
        pending = _Pending(server, address, b"", expected, loop.create_future())
        sock = await self._socket_for(server.address)
        identifier = sock.allocate(pending)
        try:
            authenticator = self._random_bytes(16) if code in (ACCESS_REQUEST, STATUS_SERVER) else None
            body = attributes
            if user_password is not None:
                if authenticator is None:
                    raise RadiusError("User-Password only goes into an Access-Request")
                hidden = hide_user_password(user_password, server.secret, authenticator)
                body = bytes([USER_PASSWORD, 2 + len(hidden)]) + hidden + attributes
            packet, pending.request_authenticator = build_request(
                code, identifier, body, server.secret, authenticator,
            )
            for attempt in range(self.max_try):
                if sock.transport is None:
                    raise RadiusError("RADIUS socket closed")
                if attempt == 0:
                    stats.requests += 1
                else:
                    stats.retransmissions += 1
                pending.sent_at = self._clock()
                # RFC 5080 section 2.2.1: a retransmission to the same server is the same packet.
                sock.transport.sendto(packet, address)
                done, _ = await asyncio.wait({pending.future}, timeout=self.timeout)
                if done:
                    return pending.future.result()
                stats.timeouts += 1
                if pending.unsigned_replies:
                    # It answered, unsigned, and will answer a retransmission the same way.
                    unsigned.append(server.name)
                    return None
            stats.failures += 1
            if server.fail_time > 0:
                stats.failed_until = self._clock() + server.fail_time
            log.warning(
                "RADIUS server %s:%d did not answer %d tries of %.1f s%s",
                address[0], address[1], self.max_try, self.timeout,
                f"; skipped for {server.fail_time:g} s" if server.fail_time > 0 else "",
            )
            return None
        finally:
            if sock.pending.get(identifier) is pending:
                del sock.pending[identifier]
            self._maybe_close(sock)

    async def _socket_for(self, address: IPv4Address | IPv6Address) -> _RadiusSocket:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        sockets = self._sockets.setdefault(family, [])
        for sock in sockets:
            if not sock.full and sock.transport is not None:
                return sock
        async with self._open_lock:
            for sock in sockets:  # another task may have opened one meanwhile
                if not sock.full and sock.transport is not None:
                    return sock
            if len(sockets) >= MAX_SOCKETS_PER_FAMILY:
                raise RadiusError("too many outstanding RADIUS requests")
            bind_host = "::" if family == socket.AF_INET6 else "0.0.0.0"
            if self.source_address is not None and self.source_address.version == address.version:
                bind_host = str(self.source_address)
            loop = asyncio.get_running_loop()
            _, protocol = await loop.create_datagram_endpoint(
                lambda: _RadiusSocket(self, family), local_addr=(bind_host, 0), family=family,
            )
            sockets.append(protocol)
            return protocol

    def _maybe_close(self, sock: _RadiusSocket) -> None:
        """Close an extra socket once it is idle; the first one of a family stays open."""
        sockets = self._sockets.get(sock.family, [])
        if sock.pending or not sockets or sockets[0] is sock:
            return
        with contextlib.suppress(ValueError):
            sockets.remove(sock)
        sock.close()

    def _server_at(self, address: tuple[str, int]) -> RadiusServerSpec | None:
        host = _normal_host(address[0])
        for server in self.servers:
            if str(server.address) == host and address[1] in (server.auth_port, server.acct_port):
                return server
        return None

    def _on_datagram(self, sock: _RadiusSocket, data: bytes, source: tuple[str, int]) -> None:
        source = (_normal_host(source[0]), source[1])
        pending = sock.pending.get(data[1]) if len(data) >= 2 else None
        if pending is None or pending.address != source:
            server = self._server_at(source)
            if server is None:
                self.unmatched_replies += 1
            else:
                self._stats[id(server)].dropped_malformed += 1
            log.debug("RADIUS: dropped a datagram from %s:%d matching no request", *source)
            return
        stats = self._stats[id(pending.server)]
        if pending.future.done():
            return  # a duplicate of an answered reply
        code = data[0]
        try:
            if code not in pending.expected_codes:
                raise RadiusError(f"unexpected reply code {code}")
            reply = verify_reply(
                data, pending.request_authenticator, pending.server.secret,
                require_message_authenticator=pending.server.require_message_authenticator,
            )
            decoded = Packet(dict=self.dictionary, secret=pending.server.secret, packet=reply)
        except UnsignedReplyError as exc:
            stats.dropped_bad_authenticator += 1
            pending.unsigned_replies += 1
            log.warning("RADIUS: dropped a reply from %s:%d: %s; %s", source[0], source[1], exc,
                        SIGN_REPLIES_FIX.format(server=pending.server.name))
            return
        except BadAuthenticatorError as exc:
            stats.dropped_bad_authenticator += 1
            log.warning("RADIUS: dropped a reply from %s:%d: %s", source[0], source[1], exc)
            return
        except Exception as exc:  # RadiusError, pyrad's PacketError and its decoding errors
            stats.dropped_malformed += 1
            log.warning("RADIUS: dropped a malformed reply from %s:%d: %s", source[0], source[1], exc)
            return
        rtt = self._clock() - pending.sent_at
        stats.last_rtt = rtt
        stats.latency.observe(rtt)
        stats.failed_until = 0.0
        if code == ACCESS_ACCEPT:
            stats.accepts += 1
        elif code == ACCESS_REJECT:
            stats.rejects += 1
        elif code == ACCESS_CHALLENGE:
            stats.challenges += 1
        elif code == ACCOUNTING_RESPONSE:
            stats.accounting_responses += 1
        reply_object = RadiusReply(code, decoded, pending.request_authenticator, pending.server, rtt)
        pending.future.set_result(reply_object)


def _normal_host(host: str) -> str:
    """IPv4-mapped IPv6 sources compare equal to the IPv4 server address."""
    try:
        parsed = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(parsed, IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


# --- the authentication backend ---------------------------------------------------------------

NAS_PORT_TYPE_VIRTUAL = "Virtual"
CHOOSE_FROM_POOL = {IPv4Address("255.255.255.254"), IPv4Address("255.255.255.255")}
RATE_LIMIT_ATTRIBUTES = ("Filter-Id", "Mikrotik-Rate-Limit", "Cisco-AVPair")
NO_ANSWER_MESSAGE = "RADIUS servers did not answer"
# To the client when the servers answered unsigned: the details (addresses, fix) stay in the log.
UNSIGNED_MESSAGE = "authentication service misconfigured"
ERROR_AUTHENTICATION_FAILURE = 691
# Attributes not worth passing on: transport, secrets, and what the decision carries already.
_NOT_PASSED_ON = frozenset({
    "Message-Authenticator", "MS-MPPE-Send-Key", "MS-MPPE-Recv-Key", "MS-CHAP-MPPE-Keys",
    "MS-CHAP2-Success", "Proxy-State",
})


@dataclass(frozen=True, slots=True)
class NasSettings:
    """How this NAS names itself in requests (RFC 2865 wants NAS-Identifier or NAS-IP-Address)."""

    nas_identifier: str | None = None
    nas_ip_address: IPv4Address | None = None

    @classmethod
    def from_config(cls, radius: Radius) -> NasSettings:
        identifier = radius.nas_identifier
        address = radius.nas_ip_address
        if identifier is None and address is None:
            address = radius.source_address
        if identifier is None and address is None:
            identifier = socket.gethostname()
        return cls(identifier, address)


@dataclass(frozen=True, slots=True)
class SessionContext:
    """Facts about the session an Access-Request is made for."""

    ifname: str
    calling_station_id: str  # the client's outer address
    called_station_id: str = ""  # the address the client connected to
    acct_session_id: str = ""
    nas_port: int | None = None


@dataclass(slots=True)
class _MethodParts:
    attributes: list[tuple[str, object]] = field(default_factory=list)
    user_password: bytes | None = None


class RadiusAuthenticator:
    """The RADIUS authentication backend: ``await authenticate(request, context)``."""

    def __init__(self, client: RadiusClient, nas: NasSettings) -> None:
        self.client = client
        self.nas = nas

    async def authenticate(self, request: AuthRequest, context: SessionContext) -> AuthDecision:
        if isinstance(request, EapRelayRequest):
            return await relay_eap(self, request, context)
        attributes = self._common_attributes(request, context)
        method = _method_attributes(request)
        try:
            reply = await self.client.request(
                ACCESS_REQUEST, attributes + method.attributes, user_password=method.user_password,
            )
        except RadiusUnsignedRepliesError as exc:
            log.error("RADIUS: user %r on %s refused: %s", request.username, context.ifname, exc)
            return AuthDecision(False, message=UNSIGNED_MESSAGE, unavailable=True, cause=str(exc))
        except RadiusTimeoutError as exc:
            log.error("RADIUS: no answer for user %r on %s (%s)", request.username, context.ifname, exc)
            return AuthDecision(False, message=NO_ANSWER_MESSAGE, unavailable=True)
        except RadiusError as exc:
            log.error("RADIUS: request for user %r on %s failed: %s", request.username, context.ifname, exc)
            return AuthDecision(False, message=NO_ANSWER_MESSAGE, unavailable=True)
        if reply.code == ACCESS_ACCEPT:
            return self._accepted(request, reply, context)
        if reply.code == ACCESS_CHALLENGE:
            log.warning("RADIUS: Access-Challenge for user %r is not supported; rejecting", request.username)
            return AuthDecision(False, message="Access-Challenge is not supported")
        return _rejected(request, reply)

    def _common_attributes(self, request: AuthRequest, context: SessionContext) -> list[tuple[str, object]]:
        attributes: list[tuple[str, object]] = [("User-Name", request.username)]
        if self.nas.nas_identifier:
            attributes.append(("NAS-Identifier", self.nas.nas_identifier))
        if self.nas.nas_ip_address is not None:
            attributes.append(("NAS-IP-Address", str(self.nas.nas_ip_address)))
        if context.nas_port is not None:
            attributes.append(("NAS-Port", context.nas_port))
        attributes += [
            ("NAS-Port-Id", context.ifname),
            ("NAS-Port-Type", NAS_PORT_TYPE_VIRTUAL),
            ("Service-Type", "Framed-User"),
            ("Framed-Protocol", "PPP"),
        ]
        if context.calling_station_id:
            attributes.append(("Calling-Station-Id", context.calling_station_id))
        if context.called_station_id:
            attributes.append(("Called-Station-Id", context.called_station_id))
        if context.acct_session_id:
            attributes.append(("Acct-Session-Id", context.acct_session_id))
        return attributes

    def _accepted(self, request: AuthRequest, reply: RadiusReply, context: SessionContext) -> AuthDecision:
        authenticator_response: str | None = None
        if isinstance(request, MsChapV2Request):
            authenticator_response = _authenticator_response(reply.first("MS-CHAP2-Success"))
            if authenticator_response is None:
                # Without it the client cannot check the server and drops the link anyway.
                log.error("RADIUS: Access-Accept for %r lacks a valid MS-CHAP2-Success; rejecting",
                          request.username)
                return AuthDecision(False, message="RADIUS accepted without MS-CHAP2-Success",
                                    error_code=ERROR_AUTHENTICATION_FAILURE)
        keys = None
        if isinstance(request, MsChapV1Request | MsChapV2Request):
            keys = _mppe_keys(request, reply)
            if keys is None:
                log.warning(
                    "RADIUS: Access-Accept for %r on %s carries no usable MPPE keys: the client's SSTP "
                    "crypto binding will fail (configure the RADIUS server to send MS-MPPE-Send-Key "
                    "and MS-MPPE-Recv-Key)", request.username, context.ifname,
                )
        message = _text(reply.values("Reply-Message"))
        return AuthDecision(
            True,
            message=message,
            authenticator_response=authenticator_response,
            keys=keys,
            attributes=accept_attributes(reply),
        )


def _method_attributes(request: AuthRequest) -> _MethodParts:
    parts = _MethodParts()
    if isinstance(request, PapRequest):
        parts.user_password = request.password[:MAX_PASSWORD_LENGTH]
    elif isinstance(request, ChapMd5Request):
        parts.attributes = [
            ("CHAP-Password", bytes([request.identifier & 0xFF]) + request.response),
            ("CHAP-Challenge", request.challenge),
        ]
    elif isinstance(request, MsChapV1Request):
        # RFC 2548 section 2.3.2: Ident, Flags (1 = use the NT-Response), LM-Response, NT-Response.
        # The PPP layer does not pass the CHAP identifier on; servers do not check it.
        response = bytes([0, 1 if request.use_nt else 0]) + request.lm_response + request.nt_response
        parts.attributes = [("MS-CHAP-Challenge", request.challenge), ("MS-CHAP-Response", response)]
    elif isinstance(request, MsChapV2Request):
        # RFC 2548 section 2.3.9: Ident, Flags (0), Peer-Challenge, 8 reserved zeros, NT-Response.
        response = bytes([0, 0]) + request.peer_challenge + bytes(8) + request.nt_response
        parts.attributes = [
            ("MS-CHAP-Challenge", request.authenticator_challenge), ("MS-CHAP2-Response", response),
        ]
    return parts


def _authenticator_response(value: object) -> str | None:
    """``S=`` + 40 hex digits from MS-CHAP2-Success (Ident byte, then the string)."""
    if not isinstance(value, bytes) or len(value) < 43:
        return None
    text = value[1:43].decode("ascii", errors="replace")
    digits = text[2:]
    if not text.startswith("S=") or any(c not in "0123456789ABCDEFabcdef" for c in digits):
        return None
    return "S=" + digits.upper()


def _mppe_keys(request: MsChapV1Request | MsChapV2Request, reply: RadiusReply) -> MppeKeys | None:
    send, recv = reply.first("MS-MPPE-Send-Key"), reply.first("MS-MPPE-Recv-Key")
    try:
        if isinstance(send, bytes) and isinstance(recv, bytes):
            keys = server_mppe_keys(send, recv, reply.secret, reply.request_authenticator)
            if len(keys.send_key) >= 16 and len(keys.recv_key) >= 16:
                return MppeKeys(keys.send_key[:16], keys.recv_key[:16])
            log.warning("RADIUS: MPPE keys shorter than 16 bytes ignored")
            return None
        legacy = reply.first("MS-CHAP-MPPE-Keys")
        if isinstance(request, MsChapV1Request) and isinstance(legacy, bytes):
            _, nt_key = decrypt_mschap_mppe_keys(legacy, reply.secret, reply.request_authenticator)
            return mschapv1_keys_from_nt_key(nt_key, request.challenge)
    except MppeKeyError as exc:
        log.warning("RADIUS: MPPE keys in the Access-Accept do not decrypt: %s", exc)
    return None


def _rejected(request: AuthRequest, reply: RadiusReply) -> AuthDecision:
    message = _text(reply.values("Reply-Message"))
    error_code = ERROR_AUTHENTICATION_FAILURE
    error = reply.first("MS-CHAP-Error")
    if isinstance(error, bytes | str):
        text = error.decode("utf-8", errors="replace") if isinstance(error, bytes) else error
        # An Ident byte, then "E=691 R=0 C=... V=3 M=text" (RFC 2548 section 2.3.5); the search
        # for "E=" skips the Ident whatever its value.
        parsed_code, parsed_message = _parse_mschap_error(text)
        if parsed_code is not None:
            error_code = parsed_code
        if parsed_message and not message:
            message = parsed_message
    log.info("RADIUS: Access-Reject for user %r%s", request.username, f" ({message})" if message else "")
    return AuthDecision(False, message=message, error_code=error_code)


def _parse_mschap_error(text: str) -> tuple[int | None, str]:
    start = text.find("E=")
    if start < 0:
        return None, ""
    fields = text[start:]
    code: int | None = None
    digits = "".join(itertools.takewhile(str.isdigit, fields[2:]))
    if digits:
        code = int(digits)
    message = ""
    mark = fields.find(" M=")
    if mark >= 0:
        message = fields[mark + 3 :]
    return code, message


def _text(values: Sequence[object]) -> str:
    parts = [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in values]
    return "".join(parts)  # RFC 2865 section 5.18: multiple Reply-Messages are concatenated


# The dictionary's VALUE names, which pyrad hands back instead of the numbers (RFC 2548 §2.4.4-5).
MPPE_POLICY_VALUES = {"Encryption-Allowed": 1, "Encryption-Required": 2}
MPPE_TYPES_VALUES = {"RC4-40bit-Allowed": 2, "RC4-128bit-Allowed": 4, "RC4-40or128-bit-Allowed": 6}


def _mppe_number(value: object, names: dict[str, int]) -> int | None:
    if isinstance(value, int):
        return value
    return names.get(value) if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class FramedRoute:
    """One Framed-Route (RFC 2865 section 5.22) or Framed-IPv6-Route (RFC 3162 section 2.5):
    `prefix` routed to the session, through `gateway` (None: the session's own address, which
    0.0.0.0 or :: asks for) with `metric`."""

    prefix: IPv4Network | IPv6Network
    gateway: IPv4Address | IPv6Address | None = None
    metric: int | None = None


def parse_framed_route(text: str, *, ipv6: bool = False) -> FramedRoute | None:
    """``prefix[/len] [gateway [metric ...]]``; None (logged) when malformed. A prefix without a
    length is a host route (for IPv4 the RFC says classful; no NAS in use does that); only the
    first metric is kept."""
    name, network, address = ("Framed-IPv6-Route", IPv6Network, IPv6Address) if ipv6 else \
        ("Framed-Route", IPv4Network, IPv4Address)
    fields = text.split()
    try:
        host_length = 128 if ipv6 else 32
        prefix = network(fields[0] if "/" in fields[0] else f"{fields[0]}/{host_length}", strict=False)
        gateway = address(fields[1]) if len(fields) > 1 else None
        metric = int(fields[2]) if len(fields) > 2 else None
    except (ValueError, IndexError):
        log.warning("RADIUS: %s %r is malformed; ignored", name, text)
        return None
    if metric is not None and metric < 0:
        log.warning("RADIUS: %s %r has a negative metric; ignored", name, text)
        return None
    return FramedRoute(prefix, None if gateway is None or gateway.is_unspecified else gateway, metric)


def accept_attributes(reply: RadiusReply) -> dict[str, object]:
    """What a session applies from an Access-Accept, under the keys the daemon reads.

    Typed IPv6 values: ``framed_ipv6_prefix`` and ``delegated_ipv6_prefix`` (IPv6Network),
    ``framed_interface_id`` (8 bytes, non-zero), ``framed_ipv6_routes`` (list of
    FramedRoute) and ``dns_ipv6`` (list of IPv6Address, at most three); a key is absent, or
    its list empty, when the reply has no usable value."""
    attributes: dict[str, object] = {}
    framed_ip = _ipv4(reply.first("Framed-IP-Address"))
    attributes["framed_ip"] = None if framed_ip in CHOOSE_FROM_POOL else framed_ip
    netmask = _ipv4(reply.first("Framed-IP-Netmask"))
    if netmask is not None:
        attributes["framed_ip_netmask"] = netmask
    for key, name in (
        ("session_timeout", "Session-Timeout"), ("idle_timeout", "Idle-Timeout"),
        ("acct_interim_interval", "Acct-Interim-Interval"), ("framed_mtu", "Framed-MTU"),
    ):
        value = reply.first(name)
        if isinstance(value, int):
            attributes[key] = value
    for key, name in (
        ("framed_pool", "Framed-Pool"), ("framed_ipv6_pool", "Framed-IPv6-Pool"),
        ("delegated_ipv6_prefix_pool", "Delegated-IPv6-Prefix-Pool"), ("user_name", "User-Name"),
    ):
        value = reply.first(name)
        if isinstance(value, str):
            attributes[key] = value
    for key, name in (("framed_ipv6_prefix", "Framed-IPv6-Prefix"),
                      ("delegated_ipv6_prefix", "Delegated-IPv6-Prefix")):
        prefix = _ipv6_prefix(reply.first(name))
        if prefix is not None:
            attributes[key] = prefix
    interface_id = _interface_id(reply.first("Framed-Interface-Id"))
    if interface_id is not None:
        attributes["framed_interface_id"] = interface_id
    termination = reply.first("Termination-Action")
    if termination is not None:
        attributes["termination_action"] = termination
    policy = _mppe_number(reply.first("MS-MPPE-Encryption-Policy"), MPPE_POLICY_VALUES)
    if policy is not None:
        attributes["mppe_policy"] = policy
    types = _mppe_number(reply.first("MS-MPPE-Encryption-Types"), MPPE_TYPES_VALUES)
    if types is not None:
        attributes["mppe_types"] = types
    framed_routes = (parse_framed_route(str(v)) for v in reply.values("Framed-Route"))
    attributes["framed_routes"] = [route for route in framed_routes if route is not None]
    routes = (parse_framed_route(str(v), ipv6=True) for v in reply.values("Framed-IPv6-Route"))
    attributes["framed_ipv6_routes"] = [route for route in routes if route is not None]
    attributes["class"] = [v for v in reply.values("Class") if isinstance(v, bytes)]
    dns = [_ipv4(reply.first(name)) for name in ("MS-Primary-DNS-Server", "MS-Secondary-DNS-Server")]
    attributes["dns"] = [address for address in dns if address is not None]
    nbns = [_ipv4(reply.first(name)) for name in ("MS-Primary-NBNS-Server", "MS-Secondary-NBNS-Server")]
    attributes["nbns"] = [address for address in nbns if address is not None]
    dns_ipv6 = (_ipv6(v) for v in reply.values("DNS-Server-IPv6-Address"))
    attributes["dns_ipv6"] = [address for address in dns_ipv6 if address is not None][:MAX_DNS_V6]
    attributes["rate_limit_attributes"] = {
        name: [str(v) for v in reply.values(name)] for name in RATE_LIMIT_ATTRIBUTES if reply.values(name)
    }
    attributes["reply_message"] = _text(reply.values("Reply-Message"))
    attributes["radius"] = _all_attributes(reply.packet)
    return attributes


def _all_attributes(packet: Packet) -> dict[str, list[object]]:
    """Every reply attribute by name (for radattr-style scripts), without secrets and transport."""
    result: dict[str, list[object]] = {}
    for key in packet.keys():  # noqa: SIM118 (Packet.keys() turns codes into names)
        name = key if isinstance(key, str) else repr(key)
        if name in _NOT_PASSED_ON:
            continue
        try:
            result[name] = list(packet[key])
        except Exception:  # an undecodable value of an unknown attribute
            continue
    return result


def _ipv6(value: object) -> IPv6Address | None:
    try:
        return IPv6Address(str(value)) if value is not None else None
    except ValueError:
        return None


def _ipv6_prefix(value: object) -> IPv6Network | None:
    try:
        return IPv6Network(str(value), strict=False) if value is not None else None
    except ValueError:
        return None


def _interface_id(value: object) -> bytes | None:
    """Framed-Interface-Id as pyrad decodes it ("x:x:x:x"); zero means none."""
    try:
        return parse_interface_id(str(value)) if value is not None else None
    except ValueError:
        return None


def _ipv4(value: object) -> IPv4Address | None:
    if value is None:
        return None
    try:
        return IPv4Address(str(value))
    except ValueError:
        return None


# --- EAP pass-through (RFC 3579) ----------------------------------------------------------------

EAP_MESSAGE_CHUNK = 253  # the most an attribute value holds (RFC 3579 section 3.1)


def split_eap_message(packet: bytes) -> list[bytes]:
    """One EAP packet as the values of consecutive EAP-Message attributes."""
    if not packet:
        raise ValueError("an EAP packet is at least 4 bytes")
    return [packet[i:i + EAP_MESSAGE_CHUNK] for i in range(0, len(packet), EAP_MESSAGE_CHUNK)]


def join_eap_message(reply: RadiusReply) -> bytes | None:
    """The EAP packet of a reply's EAP-Message attributes (in order), or None without any."""
    parts = [value for value in reply.values("EAP-Message") if isinstance(value, bytes)]
    return b"".join(parts) if parts else None


def eap_keys(reply: RadiusReply) -> MppeKeys | None:
    """MPPE keys and HLAK of an EAP login from MS-MPPE-Send/Recv-Key (RFC 2548 section 2.4.2-3).

    For EAP methods the server puts MSK[0:32] in MS-MPPE-Recv-Key and MSK[32:64] in
    MS-MPPE-Send-Key (RFC 3579/RFC 5216); MS-SSTP's HLAK is MSK[0:32], which is what the client
    builds as well. A server that sends 16-byte MS-CHAPv2 keys instead (EAP-MSCHAPv2 keyed the
    PPP way) gets the MS-CHAPv2 HLAK, MasterReceiveKey || MasterSendKey, from the two keys."""
    send, recv = reply.first("MS-MPPE-Send-Key"), reply.first("MS-MPPE-Recv-Key")
    if not isinstance(send, bytes) or not isinstance(recv, bytes):
        return None
    try:
        keys = server_mppe_keys(send, recv, reply.secret, reply.request_authenticator)
    except MppeKeyError as exc:
        log.warning("RADIUS: MPPE keys in the Access-Accept do not decrypt: %s", exc)
        return None
    if len(keys.send_key) < 16 or len(keys.recv_key) < 16:
        log.warning("RADIUS: MPPE keys shorter than 16 bytes ignored")
        return None
    hlak = keys.recv_key[:32] if len(keys.recv_key) >= 32 else None
    return MppeKeys(keys.send_key[:16], keys.recv_key[:16], hlak=hlak)


async def relay_eap(authenticator: RadiusAuthenticator, request: EapRelayRequest,
                    context: SessionContext) -> AuthDecision:
    """One round trip of EAP pass-through: the peer's EAP Response in an Access-Request (with
    the State of the last Access-Challenge), the server's EAP packet back in the decision."""
    username = request.username
    attributes = authenticator._common_attributes(request, context)
    attributes += [("EAP-Message", chunk) for chunk in split_eap_message(request.eap_message)]
    if request.relay_state is not None:
        attributes.append(("State", request.relay_state))
    try:
        reply = await authenticator.client.request(ACCESS_REQUEST, attributes)
    except RadiusError as exc:
        log.error("RADIUS: EAP for user %r on %s got no answer (%s)", username, context.ifname, exc)
        stage = "challenge" if request.relay_state is not None else "request"
        return AuthDecision(False, message=f"RADIUS {stage} timed out: {exc}", unavailable=True)
    eap = join_eap_message(reply)
    if reply.first("Message-Authenticator") is None:
        # RFC 3579 section 3.2: a reply carrying EAP must be signed, whatever the server's settings.
        log.error("RADIUS: EAP reply for user %r without Message-Authenticator discarded", username)
        return AuthDecision(False, message="RADIUS EAP reply without Message-Authenticator", unavailable=True)
    if reply.code == ACCESS_CHALLENGE:
        state = reply.first("State")
        if eap is None:
            return AuthDecision(False, message="RADIUS Access-Challenge without EAP-Message")
        return AuthDecision(False, eap_message=eap, eap_continue=True,
                            relay_state=state if isinstance(state, bytes) else None)
    if reply.code == ACCESS_ACCEPT:
        keys = eap_keys(reply)
        if keys is None:
            log.warning("RADIUS: EAP Access-Accept for %r on %s carries no usable MPPE keys: the SSTP "
                        "crypto binding will fail", username, context.ifname)
        return AuthDecision(True, message=_text(reply.values("Reply-Message")), keys=keys,
                            attributes=accept_attributes(reply), eap_message=eap)
    reply_message = _text(reply.values("Reply-Message"))
    message = "Access-Reject from the RADIUS server" + (f" ({reply_message})" if reply_message else "")
    log.info("RADIUS: EAP %s for user %r", message, username)
    return AuthDecision(False, message=message, eap_message=eap)
