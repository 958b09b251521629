"""A server session and a client session wired back to back in memory, with a fake clock.

The pair moves bytes both ways until nothing moves, answers the server's authentication
requests from a password table, hands out addresses when asked, and records every chunk in
order (for pcap export). Tests reach in to tamper with bytes through ``tamper_to_server`` /
``tamper_to_client``.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from vpnd.proto.ppp.auth.types import AuthMethod
from vpnd.proto.ppp.auth.verify import decide_with_password
from vpnd.proto.ppp.ipcp import Ipv4Settings
from vpnd.proto.ppp.lcp import LcpSettings
from vpnd.proto.ppp.link import LinkSettings
from vpnd.proto.ppp.mppe import MppeSettings
from vpnd.proto.session import (
    AuthRequested,
    ClientSession,
    ClientSessionSettings,
    Ipv4AddressNeeded,
    ServerSession,
    ServerSessionSettings,
    SessionEvent,
)
from vpnd.proto.sstp.packets import HashProtocol

CERT_DER = b"0\x82 stand-in for the DER bytes of the server certificate"
SERVER_CERT_HASHES = {
    HashProtocol.SHA1: hashlib.sha1(CERT_DER).digest(),
    HashProtocol.SHA256: hashlib.sha256(CERT_DER).digest(),
}
GATEWAY = IPv4Address("10.66.0.1")
CLIENT_ADDRESS = IPv4Address("10.66.0.2")
DNS = (IPv4Address("10.66.0.53"),)


def seeded_random(seed: int) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return lambda n: bytes(rng.getrandbits(8) for _ in range(n))


@dataclass
class Wire:
    server: ServerSession
    client: ClientSession
    passwords: dict[str, str]
    now: float = 0.0
    segments: list[tuple[bool, bytes]] = field(default_factory=list)  # (from_client, bytes)
    server_events: list[SessionEvent] = field(default_factory=list)
    client_events: list[SessionEvent] = field(default_factory=list)
    tamper_to_server: Callable[[bytes], bytes] | None = None
    tamper_to_client: Callable[[bytes], bytes] | None = None
    answer_auth: bool = True
    mppe_override: MppeSettings | None = None  # what a RADIUS Accept would ask for this session
    ipv4: Ipv4Settings = field(default_factory=lambda: Ipv4Settings(GATEWAY, CLIENT_ADDRESS, DNS))

    def pump(self, rounds: int = 200) -> None:
        """Move bytes and handle events until both sides are quiet."""
        for _ in range(rounds):
            moved = self._flush()
            moved |= self._handle_events()
            if not moved:
                return
        raise AssertionError("the conversation did not settle")

    def advance(self, seconds: float, step: float = 0.5) -> None:
        """Let time pass, firing due timers on both sides and pumping in between."""
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for session in (self.server, self.client):
                deadline = session.get_timer()
                if deadline is not None and deadline <= self.now:
                    session.handle_timer(self.now)
            self.pump()

    def _flush(self) -> bool:
        moved = False
        data = self.client.data_to_send()
        if data:
            moved = True
            if self.tamper_to_server is not None:
                data = self.tamper_to_server(data)
            self.segments.append((True, data))
            if data:
                self.server.receive_data(data, self.now)
        data = self.server.data_to_send()
        if data:
            moved = True
            if self.tamper_to_client is not None:
                data = self.tamper_to_client(data)
            self.segments.append((False, data))
            if data:
                self.client.receive_data(data, self.now)
        return moved

    def _handle_events(self) -> bool:
        moved = False
        while (event := self.server.next_event()) is not None:
            moved = True
            self.server_events.append(event)
            if isinstance(event, AuthRequested) and self.answer_auth:
                password = self.passwords.get(event.request.username)
                self.server.decide(decide_with_password(event.request, password), self.now,
                                   self.mppe_override)
            elif isinstance(event, Ipv4AddressNeeded):
                self.server.assign_ipv4(self.ipv4, self.now)
        while (event := self.client.next_event()) is not None:
            moved = True
            self.client_events.append(event)
        return moved

    def server_saw(self, kind: type) -> list[SessionEvent]:
        return [e for e in self.server_events if isinstance(e, kind)]

    def client_saw(self, kind: type) -> list[SessionEvent]:
        return [e for e in self.client_events if isinstance(e, kind)]


def make_wire(
    method: AuthMethod = AuthMethod.MSCHAP_V2,
    *,
    password: str = "s3cret",
    server_password: str = "s3cret",
    ipv6: bool = True,
    server_methods: tuple[AuthMethod, ...] | None = None,
    client_cert_hashes: dict[HashProtocol, bytes] | None = None,
    offered_hashes: int = HashProtocol.SHA1 | HashProtocol.SHA256,
    seed: int = 7,
    start: bool = True,
) -> Wire:
    random_bytes = seeded_random(seed)
    server = ServerSession(
        ServerSessionSettings(
            cert_hashes=SERVER_CERT_HASHES,
            link=LinkSettings(lcp=LcpSettings(auth_methods=server_methods or (method,)), ipv6_enabled=ipv6),
            offered_hashes=offered_hashes,
        ),
        0.0,
        now_wallclock=1_763_700_000.0,
        random_bytes=random_bytes,
    )
    client = ClientSession(
        ClientSessionSettings(
            host="vpn.example.net",
            username="alice",
            password=password,
            link=LinkSettings(lcp=LcpSettings(auth_methods=(method,)), ipv6_enabled=ipv6),
        ),
        random_bytes=random_bytes,
    )
    wire = Wire(server, client, {"alice": server_password})
    if start:
        client.start(client_cert_hashes or SERVER_CERT_HASHES, 0.0)
        wire.pump()
    return wire


def sstp_data_frames(wire: Wire, *, from_client: bool, since: int = 0) -> list[bytes]:
    """PPP frames of every SSTP data packet one side sent (after the HTTP exchange)."""
    chunks = [data for sender, data in wire.segments[since:] if sender == from_client]
    stream = b"".join(chunks)
    if since == 0:
        stream = stream[stream.index(b"\r\n\r\n") + 4 :]
    frames = []
    while stream:
        assert stream[0] == 0x10
        length = struct.unpack_from("!H", stream, 2)[0] & 0x0FFF
        packet, stream = stream[:length], stream[length:]
        if packet[1] == 0x00:
            frames.append(packet[4:])
    return frames


def ppp_protocol(frame: bytes) -> int:
    assert frame[:2] == b"\xff\x03"
    return int(struct.unpack_from("!H", frame, 2)[0])
