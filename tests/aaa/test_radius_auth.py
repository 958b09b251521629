"""RADIUS authentication against a real FreeRADIUS, and against a small scripted UDP responder
for what FreeRADIUS will not do (stay silent, forge replies, answer from the wrong place)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyrad.packet import AuthPacket

from tests.support.freeradius import FreeRadius, RadiusClientEntry
from tests.support.peers import require_program
from vpnd.aaa.dictionary import load_dictionary
from vpnd.aaa.mppe_keys import encrypt_mppe_key
from vpnd.aaa.radius import (
    ACCESS_ACCEPT,
    ACCESS_REJECT,
    ACCOUNTING_REQUEST,
    ACCOUNTING_RESPONSE,
    NO_ANSWER_MESSAGE,
    FramedRoute,
    NasSettings,
    RadiusAuthenticator,
    RadiusClient,
    RadiusError,
    RadiusServerSpec,
    SessionContext,
    parse_framed_route,
    verify_reply,
)
from vpnd.config.definitions import Radius
from vpnd.config.model import model_from_tree
from vpnd.config.tree import ConfigTree
from vpnd.config.verify import verify
from vpnd.proto.crypto.mppe import mschapv2_mppe_keys
from vpnd.proto.crypto.mschap import (
    chap_md5_response,
    mschapv1_nt_response,
    mschapv2_authenticator_response,
    mschapv2_nt_response,
    nt_password_hash,
)
from vpnd.proto.ppp.auth.factory import make_client_auth, make_server_auth
from vpnd.proto.ppp.auth.types import (
    AuthDecision,
    AuthFailed,
    AuthMethod,
    AuthRequest,
    AuthRequested,
    AuthSucceeded,
    ChapMd5Request,
    MsChapV1Request,
    MsChapV2Request,
    PapRequest,
)

SECRET = b"testing123"
LOCALHOST = IPv4Address("127.0.0.1")
CONTEXT = SessionContext("sstp7", "192.0.2.10", "198.51.100.1", "sess-0007", 7)
NAS = NasSettings("vpnd-test", IPv4Address("198.51.100.1"))

USERS = """
alice   Cleartext-Password := "alicepass"
        Framed-IP-Address = 10.99.0.10,
        Session-Timeout = 3600,
        Idle-Timeout = 300,
        Acct-Interim-Interval = 60,
        Framed-MTU = 1400,
        Filter-Id = "1000/2000",
        Mikrotik-Rate-Limit = "1000k/2000k",
        Cisco-AVPair = "subscriber:sub-qos-policy-out=gold",
        Class = 0x616c696365,
        Class += 0x00ff01,
        Framed-Route = "192.168.50.0/24 0.0.0.0 1",
        MS-Primary-DNS-Server = 10.0.0.53,
        MS-Secondary-DNS-Server = 10.0.0.54,
        Reply-Message = "hello alice"

pooluser Cleartext-Password := "poolpass"
        Framed-IP-Address = 255.255.255.254,
        Framed-Pool = "gold"

sixuser Cleartext-Password := "sixpass"
        Framed-IPv6-Prefix = 2001:db8:1:2::/64,
        Framed-Interface-Id = 211:22ff:fe33:4455,
        Delegated-IPv6-Prefix = 2001:db8:100:4200::/56,
        Framed-IPv6-Route = "2001:db8:5::/48 :: 1",
        Framed-IPv6-Route += "2001:db8:6::1 2001:db8:1:2::1 10 20",
        Framed-IPv6-Route += "2001:db8:7::/48",
        Framed-IPv6-Route += "not-a-route ::",
        DNS-Server-IPv6-Address = 2001:db8::53,
        DNS-Server-IPv6-Address += 2001:db8::54,
        DNS-Server-IPv6-Address += 2001:db8::55,
        DNS-Server-IPv6-Address += 2001:db8::56

mallory Auth-Type := Reject
        Reply-Message = "rejected by test policy"
"""


@pytest.fixture(scope="module")
def radius():
    require_program("freeradius")
    # The server insists on a Message-Authenticator in our requests: proves ours are right.
    server = FreeRadius(USERS, [RadiusClientEntry("vpnd", "127.0.0.1", SECRET.decode(), True)])
    server.start()
    yield server
    server.cleanup()


def real_server(radius: FreeRadius, **options) -> RadiusServerSpec:
    return RadiusServerSpec(LOCALHOST, SECRET, radius.auth_port, radius.acct_port, **options)


def auth_request(method: AuthMethod, username: str, password: str) -> AuthRequest:
    """What the PPP layer would hand the backend for this user and password."""
    password_hash = nt_password_hash(password)
    if method is AuthMethod.PAP:
        return PapRequest(username, password.encode())
    if method is AuthMethod.CHAP_MD5:
        challenge = os.urandom(16)
        return ChapMd5Request(username, 9, challenge, chap_md5_response(9, password.encode(), challenge))
    if method is AuthMethod.MSCHAP_V1:
        challenge = os.urandom(8)
        nt_response = mschapv1_nt_response(challenge, password_hash)
        return MsChapV1Request(username, challenge, bytes(24), nt_response, True)
    authenticator_challenge, peer_challenge = os.urandom(16), os.urandom(16)
    nt_response = mschapv2_nt_response(authenticator_challenge, peer_challenge, username, password_hash)
    return MsChapV2Request(username, authenticator_challenge, peer_challenge, nt_response)


async def authenticate(
    servers, request, *, timeout=1.0, max_try=1, **options,
) -> tuple[AuthDecision, RadiusClient]:
    client = RadiusClient(servers, timeout=timeout, max_try=max_try, **options)
    try:
        return await RadiusAuthenticator(client, NAS).authenticate(request, CONTEXT), client
    finally:
        await client.close()


# --- a scripted RADIUS responder ----------------------------------------------------------------


class FakeRadius(asyncio.DatagramProtocol):
    """Answers Access-Requests the way ``mode`` says, with replies built by pyrad (not by the code
    under test). Modes: silent, good, bad-response-authenticator, bad-message-authenticator,
    no-message-authenticator, forged-then-good."""

    def __init__(self, mode: str, *, code: int = ACCESS_ACCEPT, attributes=(), delay: float = 0.0,
                 secret: bytes = SECRET) -> None:
        self.mode = mode
        self.code = code
        self.attributes = list(attributes)
        self.delay = delay
        self.secret = secret
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self.requests: list[AuthPacket] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.extra: Callable[[AuthPacket, AuthPacket], None] | None = None

    @property
    def port(self) -> int:
        return self.transport.get_extra_info("sockname")[1]

    def spec(self, **options) -> RadiusServerSpec:
        return RadiusServerSpec(LOCALHOST, self.secret, self.port, 0, **options)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.received.append((data, addr))
        request = AuthPacket(packet=data, secret=self.secret, dict=load_dictionary())
        self.requests.append(request)
        if self.mode == "silent":
            return
        asyncio.get_running_loop().call_later(self.delay, self._answer, request, addr)

    def reply_packet(self, request: AuthPacket, *, sign: bool = True) -> bytes:
        reply = request.CreateReply(message_authenticator=sign)
        reply.code = self.code
        for name, value in self.attributes:
            reply.AddAttribute(name, value(request) if callable(value) else value)
        packet = reply.ReplyPacket()
        assert has_message_authenticator(packet) == sign
        return packet

    def _answer(self, request: AuthPacket, addr) -> None:
        good = self.reply_packet(request)
        if self.mode == "good":
            packets = [good]
        elif self.mode == "bad-response-authenticator":
            packets = [good[:4] + bytes(b ^ 0x5A for b in good[4:20]) + good[20:]]
        elif self.mode == "bad-message-authenticator":
            packets = [resign(flip_message_authenticator(good), request.authenticator, self.secret)]
        elif self.mode == "no-message-authenticator":
            packets = [self.reply_packet(request, sign=False)]
        elif self.mode == "forged-then-good":
            packets = [resign(flip_message_authenticator(good), request.authenticator, self.secret), good]
        else:
            raise AssertionError(self.mode)
        for packet in packets:
            self.transport.sendto(packet, addr)


def has_message_authenticator(packet: bytes) -> bool:
    offset = 20
    while offset < len(packet):
        if packet[offset] == 80:
            return True
        offset += packet[offset + 1]
    return False


def flip_message_authenticator(packet: bytes) -> bytes:
    offset = 20
    while offset < len(packet):
        if packet[offset] == 80:
            value = packet[offset + 2 : offset + 18]
            return packet[: offset + 2] + bytes(b ^ 0xFF for b in value) + packet[offset + 18 :]
        offset += packet[offset + 1]
    raise AssertionError("no Message-Authenticator")


def resign(packet: bytes, request_authenticator: bytes, secret: bytes) -> bytes:
    """A correct Response Authenticator over whatever the packet holds (RFC 2865 section 3)."""
    digest = hashlib.md5(packet[:4] + request_authenticator + packet[20:] + secret).digest()
    return packet[:4] + digest + packet[20:]


async def start_fake(mode: str, host: str = "127.0.0.1", **options) -> FakeRadius:
    _, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: FakeRadius(mode, **options), local_addr=(host, 0),
    )
    return protocol


def dead_port() -> socket.socket:
    """A bound UDP socket nobody reads: requests vanish without an ICMP error."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def packets_waiting(sock: socket.socket) -> int:
    sock.setblocking(False)
    count = 0
    while True:
        try:
            sock.recv(4096)
        except BlockingIOError:
            return count
        count += 1


# --- against FreeRADIUS -------------------------------------------------------------------------


def run_ppp_authentication(method: AuthMethod, username: str, password: str, backend: RadiusAuthenticator):
    """Our PPP authenticator and peer state machines, with RADIUS deciding in between."""

    async def run():
        server = make_server_auth(method)
        peer = make_client_auth(method, username=username, password=password)
        now = 0.0
        server.start(now)
        peer.start(now)
        decision = None
        for _ in range(20):
            for packet in peer.packets_to_send():
                server.receive(packet, now)
            for packet in server.packets_to_send():
                peer.receive(packet, now)
            while (event := server.next_event()) is not None:
                if isinstance(event, AuthRequested):
                    decision = await backend.authenticate(event.request, CONTEXT)
                    server.decide(decision, now)
                else:
                    server_event = event
            peer_event = peer.next_event()
            if peer_event is not None:
                return decision, server_event, peer_event
        raise AssertionError("authentication did not finish")

    return asyncio.run(run())


@pytest.mark.parametrize("method", list(AuthMethod))
def test_each_method_is_accepted_through_the_ppp_state_machines(radius, method):
    client = RadiusClient([real_server(radius)], timeout=2, max_try=2)
    decision, server_event, peer_event = run_ppp_authentication(
        method, "alice", "alicepass", RadiusAuthenticator(client, NAS),
    )
    assert decision.accepted
    assert isinstance(server_event, AuthSucceeded) and isinstance(peer_event, AuthSucceeded)
    if method.yields_keys:
        # The peer derived its keys itself; RADIUS gave the server's. They must mirror each other.
        assert server_event.keys is not None and peer_event.keys is not None
        assert server_event.keys.send_key == peer_event.keys.recv_key
        assert server_event.keys.recv_key == peer_event.keys.send_key
    else:
        assert decision.keys is None
    if method is AuthMethod.MSCHAP_V2:
        # The peer only succeeds after checking the S= value that FreeRADIUS computed.
        assert decision.authenticator_response is not None
    assert client.statistics()[0]["accepts"] == 1


@pytest.mark.parametrize("method", list(AuthMethod))
def test_wrong_password_is_rejected_through_the_ppp_state_machines(radius, method):
    client = RadiusClient([real_server(radius)], timeout=2, max_try=2)
    decision, server_event, peer_event = run_ppp_authentication(
        method, "alice", "wrong", RadiusAuthenticator(client, NAS),
    )
    assert not decision.accepted and not decision.unavailable  # a verdict: throttling counts it
    assert decision.error_code == 691
    assert isinstance(server_event, AuthFailed) and isinstance(peer_event, AuthFailed)
    assert client.statistics()[0]["rejects"] == 1


def test_mschapv2_decision_matches_our_own_derivation(radius):
    request = auth_request(AuthMethod.MSCHAP_V2, "alice", "alicepass")
    assert isinstance(request, MsChapV2Request)
    decision, _ = asyncio.run(authenticate([real_server(radius)], request))
    password_hash = nt_password_hash("alicepass")
    assert decision.accepted
    assert decision.keys == mschapv2_mppe_keys(password_hash, request.nt_response, is_server=True)
    assert decision.authenticator_response == mschapv2_authenticator_response(
        password_hash, request.nt_response, request.peer_challenge, request.authenticator_challenge, "alice",
    )


def test_reject_passes_reply_message(radius):
    decision, client = asyncio.run(authenticate([real_server(radius)], PapRequest("mallory", b"x")))
    assert not decision.accepted
    assert decision.message == "rejected by test policy"
    assert client.statistics()[0]["rejects"] == 1


def test_reply_attributes_are_parsed(radius):
    decision, _ = asyncio.run(authenticate([real_server(radius)], PapRequest("alice", b"alicepass")))
    assert decision.accepted
    attributes = decision.attributes
    assert attributes["framed_ip"] == IPv4Address("10.99.0.10")
    assert attributes["session_timeout"] == 3600
    assert attributes["idle_timeout"] == 300
    assert attributes["acct_interim_interval"] == 60
    assert attributes["framed_mtu"] == 1400
    assert attributes["class"] == [b"alice", b"\x00\xff\x01"]
    assert attributes["framed_routes"] == [FramedRoute(IPv4Network("192.168.50.0/24"), None, 1)]
    assert attributes["dns"] == [IPv4Address("10.0.0.53"), IPv4Address("10.0.0.54")]
    assert attributes["rate_limit_attributes"] == {
        "Filter-Id": ["1000/2000"],
        "Mikrotik-Rate-Limit": ["1000k/2000k"],
        "Cisco-AVPair": ["subscriber:sub-qos-policy-out=gold"],
    }
    assert attributes["reply_message"] == decision.message == "hello alice"
    assert attributes["radius"]["Session-Timeout"] == [3600]


def test_ipv6_reply_attributes_are_typed(radius, caplog):
    caplog.set_level(logging.WARNING, "vpnd.radius")
    decision, _ = asyncio.run(authenticate([real_server(radius)], PapRequest("sixuser", b"sixpass")))
    assert decision.accepted
    attributes = decision.attributes
    assert attributes["framed_ipv6_prefix"] == IPv6Network("2001:db8:1:2::/64")
    assert attributes["framed_interface_id"] == bytes.fromhex("021122fffe334455")
    assert attributes["delegated_ipv6_prefix"] == IPv6Network("2001:db8:100:4200::/56")
    assert attributes["framed_ipv6_routes"] == [
        FramedRoute(IPv6Network("2001:db8:5::/48"), None, 1),
        FramedRoute(IPv6Network("2001:db8:6::1/128"), IPv6Address("2001:db8:1:2::1"), 10),
        FramedRoute(IPv6Network("2001:db8:7::/48")),
    ]
    assert "not-a-route" in caplog.text
    # Three at most, as many as router advertisements and the config carry.
    assert attributes["dns_ipv6"] == [IPv6Address(f"2001:db8::{n}") for n in (53, 54, 55)]
    assert "framed_ip" in attributes and attributes["framed_ip"] is None


def test_framed_ipv6_route_parsing() -> None:
    assert parse_framed_route("2001:db8::/32 fe80::1", ipv6=True) == FramedRoute(
        IPv6Network("2001:db8::/32"), IPv6Address("fe80::1"))
    assert parse_framed_route("2001:db8::1:0/112", ipv6=True) == FramedRoute(IPv6Network("2001:db8::1:0/112"))
    for bad in ("", "2001:db8::/129", "2001:db8::/48 10.0.0.1", "2001:db8::/48 :: -1", "2001:db8::/48 :: x"):
        assert parse_framed_route(bad, ipv6=True) is None


def test_pool_address_means_choose_from_the_pool(radius):
    decision, _ = asyncio.run(authenticate([real_server(radius)], PapRequest("pooluser", b"poolpass")))
    assert decision.accepted
    assert decision.attributes["framed_ip"] is None
    assert decision.attributes["framed_pool"] == "gold"


def test_failover_to_the_second_server_and_fail_time_skips_the_dead_one(radius):
    dead = dead_port()
    try:
        dead_spec = RadiusServerSpec(LOCALHOST, SECRET, dead.getsockname()[1], 0, priority=10, fail_time=30)

        async def run():
            client = RadiusClient([dead_spec, real_server(radius)], timeout=0.3, max_try=2)
            try:
                authenticator = RadiusAuthenticator(client, NAS)
                started = time.monotonic()
                first = await authenticator.authenticate(PapRequest("alice", b"alicepass"), CONTEXT)
                first_time = time.monotonic() - started
                started = time.monotonic()
                second = await authenticator.authenticate(PapRequest("alice", b"alicepass"), CONTEXT)
                return first, first_time, second, time.monotonic() - started, client.statistics()
            finally:
                await client.close()

        first, first_time, second, second_time, stats = asyncio.run(run())
    finally:
        waiting = packets_waiting(dead)
        dead.close()
    assert first.accepted and second.accepted
    assert first_time >= 0.55  # two tries of 0.3 s at the dead server first
    assert second_time < 0.25  # straight to the live server
    assert waiting == 2  # max-try packets, and none for the second request
    dead_stats, live_stats = stats
    assert dead_stats["state"] == "failed"
    assert (dead_stats["requests"], dead_stats["retransmissions"], dead_stats["timeouts"]) == (1, 1, 2)
    assert dead_stats["failures"] == 1
    assert live_stats["accepts"] == 2 and live_stats["state"] == "active"
    assert live_stats["last-rtt-ms"] is not None


@pytest.mark.parametrize(
    "mode", ["bad-response-authenticator", "bad-message-authenticator", "no-message-authenticator"],
)
def test_forged_accept_is_dropped_counted_and_never_honoured(radius, mode):
    """The forger answers first with an Accept for a user FreeRADIUS rejects."""

    async def run():
        fake = await start_fake(mode, attributes=[("Framed-IP-Address", "10.66.6.6")])
        try:
            decision, client = await authenticate(
                [fake.spec(priority=10), real_server(radius)], PapRequest("mallory", b"x"), timeout=0.3,
            )
            return decision, client.statistics(), len(fake.received)
        finally:
            fake.transport.close()

    decision, stats, received = asyncio.run(run())
    assert received == 1
    assert not decision.accepted
    assert decision.message == "rejected by test policy"  # from FreeRADIUS, after failover
    assert stats[0]["dropped-bad-authenticator"] == 1
    assert stats[0]["accepts"] == 0 and stats[0]["timeouts"] == 1
    assert stats[1]["rejects"] == 1


def test_forged_reply_does_not_stop_the_genuine_one():
    async def run():
        fake = await start_fake("forged-then-good")
        try:
            decision, client = await authenticate([fake.spec()], PapRequest("bob", b"pw"), timeout=1)
            return decision, client.statistics()[0]
        finally:
            fake.transport.close()

    decision, stats = asyncio.run(run())
    assert decision.accepted
    assert stats["dropped-bad-authenticator"] == 1 and stats["accepts"] == 1


def test_signed_replies_are_required_only_when_configured():
    async def run():
        fake = await start_fake("no-message-authenticator")
        try:
            decision, _ = await authenticate(
                [fake.spec(require_message_authenticator=False)], PapRequest("bob", b"pw"),
            )
            return decision
        finally:
            fake.transport.close()

    assert asyncio.run(run()).accepted


def test_unsigned_reply_with_eap_message_is_refused_even_when_unsigned_replies_are_accepted():
    """RFC 3579 section 3.2: a reply carrying EAP-Message must carry a Message-Authenticator,
    whatever `accept-unsigned-replies` says. (A scripted responder: FreeRADIUS signs EAP.)"""

    async def run():
        fake = await start_fake("no-message-authenticator", attributes=[("EAP-Message", b"\x03\x01\x00\x04")])
        try:
            decision, client = await authenticate(
                [fake.spec(require_message_authenticator=False)], PapRequest("bob", b"pw"), timeout=0.3,
            )
            return decision, client.statistics()[0]
        finally:
            fake.transport.close()

    decision, stats = asyncio.run(run())
    assert not decision.accepted
    assert stats["dropped-bad-authenticator"] == 1 and stats["accepts"] == 0


def test_max_try_retransmits_the_same_packet_then_gives_up(caplog):
    async def run():
        fake = await start_fake("silent")
        try:
            decision, client = await authenticate(
                [fake.spec()], PapRequest("bob", b"pw"), timeout=0.1, max_try=3,
            )
            return decision, client.statistics()[0], fake.received
        finally:
            fake.transport.close()

    with caplog.at_level(logging.WARNING, logger="vpnd.radius"):
        decision, stats, received = asyncio.run(run())
    assert not decision.accepted and decision.unavailable  # no verdict: not held against the client
    assert decision.message == NO_ANSWER_MESSAGE
    assert len(received) == 3
    assert len({data for data, _ in received}) == 1  # same Identifier and Request Authenticator
    assert (stats["requests"], stats["retransmissions"], stats["timeouts"]) == (1, 2, 3)
    assert any("did not answer" in record.getMessage() for record in caplog.records)
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert any("no answer" in message for message in errors)


def test_access_request_contents():
    """Every attribute of the Access-Request, decoded and checked by pyrad at the receiving end."""

    async def run():
        fake = await start_fake("good", code=ACCESS_REJECT)
        try:
            for method in (AuthMethod.PAP, AuthMethod.CHAP_MD5, AuthMethod.MSCHAP_V1, AuthMethod.MSCHAP_V2):
                await authenticate([fake.spec()], auth_request(method, "DOM\\carol", "carolpass"))
            return fake.requests
        finally:
            fake.transport.close()

    pap, chap, mschap1, mschap2 = asyncio.run(run())
    for packet in (pap, chap, mschap1, mschap2):
        assert packet.message_authenticator and packet.verify_message_authenticator()
        assert packet["User-Name"] == ["DOM\\carol"]
        assert packet["NAS-Identifier"] == ["vpnd-test"]
        assert packet["NAS-IP-Address"] == ["198.51.100.1"]
        assert packet["NAS-Port"] == [7]
        assert packet["NAS-Port-Id"] == ["sstp7"]
        assert packet["NAS-Port-Type"] == ["Virtual"]
        assert packet["Service-Type"] == ["Framed-User"]
        assert packet["Framed-Protocol"] == ["PPP"]
        assert packet["Calling-Station-Id"] == ["192.0.2.10"]
        assert packet["Called-Station-Id"] == ["198.51.100.1"]
        assert packet["Acct-Session-Id"] == ["sess-0007"]
    assert pap.PwDecrypt(pap["User-Password"][0]) == "carolpass"
    assert "User-Password" not in chap and "User-Password" not in mschap2
    chap_password = chap["CHAP-Password"][0]
    assert len(chap_password) == 17 and chap_password[0] == 9
    assert chap_password[1:] == chap_md5_response(9, b"carolpass", chap["CHAP-Challenge"][0])
    response1 = mschap1["MS-CHAP-Response"][0]
    assert len(response1) == 50 and response1[1] == 1  # Ident, Flags (use NT), LM, NT
    challenge1 = mschap1["MS-CHAP-Challenge"][0]
    assert response1[26:] == mschapv1_nt_response(challenge1, nt_password_hash("carolpass"))
    response2 = mschap2["MS-CHAP2-Response"][0]
    assert len(response2) == 50 and response2[1] == 0 and response2[18:26] == bytes(8)
    expected_nt = mschapv2_nt_response(
        mschap2["MS-CHAP-Challenge"][0], response2[2:18], "DOM\\carol", nt_password_hash("carolpass"),
    )
    assert response2[26:] == expected_nt


def test_mschapv2_accept_without_keys_is_accepted_with_a_warning(caplog):
    request = auth_request(AuthMethod.MSCHAP_V2, "bob", "bobpass")
    success = mschapv2_authenticator_response(
        nt_password_hash("bobpass"), request.nt_response, request.peer_challenge,
        request.authenticator_challenge, "bob",
    )

    async def run():
        fake = await start_fake("good", attributes=[("MS-CHAP2-Success", b"\x05" + success.encode())])
        try:
            return (await authenticate([fake.spec()], request))[0]
        finally:
            fake.transport.close()

    with caplog.at_level(logging.WARNING, logger="vpnd.radius"):
        decision = asyncio.run(run())
    assert decision.accepted and decision.keys is None
    assert decision.authenticator_response == success
    assert any("crypto binding will fail" in record.getMessage() for record in caplog.records)


def test_mschapv2_keys_from_a_scripted_server_are_decrypted():
    request = auth_request(AuthMethod.MSCHAP_V2, "bob", "bobpass")
    success = "S=" + "AB" * 20
    send, recv = os.urandom(16), os.urandom(16)
    attributes = [
        ("MS-CHAP2-Success", b"\x01" + success.encode()),
        ("MS-MPPE-Send-Key", lambda req: encrypt_mppe_key(send, SECRET, req.authenticator)),
        ("MS-MPPE-Recv-Key", lambda req: encrypt_mppe_key(recv, SECRET, req.authenticator)),
    ]

    async def run():
        fake = await start_fake("good", attributes=attributes)
        try:
            return (await authenticate([fake.spec()], request))[0]
        finally:
            fake.transport.close()

    decision = asyncio.run(run())
    assert decision.accepted
    assert (decision.keys.send_key, decision.keys.recv_key) == (send, recv)


def test_mschapv2_accept_without_success_is_refused():
    async def run():
        fake = await start_fake("good")
        try:
            return (await authenticate([fake.spec()], auth_request(AuthMethod.MSCHAP_V2, "bob", "x")))[0]
        finally:
            fake.transport.close()

    assert not asyncio.run(run()).accepted


def test_mschap_error_sets_the_error_code_and_message():
    async def run():
        fake = await start_fake("good", code=ACCESS_REJECT, attributes=[
            ("MS-CHAP-Error", "\x01E=648 R=0 C=00112233445566778899AABBCCDDEEFF V=3 M=Password expired"),
        ])
        try:
            return (await authenticate([fake.spec()], auth_request(AuthMethod.MSCHAP_V2, "bob", "x")))[0]
        finally:
            fake.transport.close()

    decision = asyncio.run(run())
    assert not decision.accepted
    assert decision.error_code == 648
    assert decision.message == "Password expired"


def test_requests_share_sockets_and_open_another_when_identifiers_run_out():
    async def run():
        fake = await start_fake("good", delay=1.0)
        client = RadiusClient([fake.spec()], timeout=3, max_try=1)
        try:
            authenticator = RadiusAuthenticator(client, NAS)
            tasks = [
                asyncio.create_task(authenticator.authenticate(PapRequest(f"user{i}", b"pw"), CONTEXT))
                for i in range(300)
            ]
            while len(fake.received) < 300:  # all sent, none answered yet
                await asyncio.sleep(0.01)
            sockets_in_flight = client.socket_count()
            decisions = await asyncio.gather(*tasks)
            return decisions, sockets_in_flight, client.socket_count(), fake.received
        finally:
            await client.close()
            fake.transport.close()

    decisions, sockets_in_flight, sockets_after, received = asyncio.run(run())
    assert all(decision.accepted for decision in decisions)
    assert sockets_in_flight == 2
    assert sockets_after == 1  # the extra socket closes once idle
    sources = {addr for _, addr in received}
    assert len(sources) == 2
    for source in sources:
        identifiers = [data[1] for data, addr in received if addr == source]
        assert len(identifiers) == len(set(identifiers))  # no Identifier used twice at once
    assert sorted(len([1 for _, addr in received if addr == s]) for s in sources) == [44, 256]


def test_source_address_is_bound():
    async def run():
        fake = await start_fake("good")
        try:
            decision, _ = await authenticate(
                [fake.spec()], PapRequest("bob", b"pw"), source_address=IPv4Address("127.0.0.2"),
            )
            return decision, fake.received[0][1]
        finally:
            fake.transport.close()

    decision, source = asyncio.run(run())
    assert decision.accepted
    assert source[0] == "127.0.0.2"


def test_disabled_server_gets_nothing():
    async def run():
        disabled, live = await start_fake("good"), await start_fake("good")
        try:
            decision, _ = await authenticate(
                [disabled.spec(disable=True, priority=100), live.spec()], PapRequest("bob", b"pw"),
            )
            return decision, len(disabled.received), len(live.received)
        finally:
            disabled.transport.close()
            live.transport.close()

    decision, disabled_count, live_count = asyncio.run(run())
    assert decision.accepted
    assert (disabled_count, live_count) == (0, 1)


def test_server_order_priority_backup_disable():
    def spec(last_octet, **options):
        return RadiusServerSpec(IPv4Address(f"192.0.2.{last_octet}"), SECRET, **options)

    servers = [
        spec(1, backup=True, priority=200), spec(2, priority=5), spec(3), spec(4, priority=5),
        spec(5, disable=True, priority=250), spec(6, disable_accounting=True, priority=9),
    ]
    client = RadiusClient(servers)
    assert [s.name[-1] for s in client.servers_in_order("auth")] == ["6", "2", "4", "3", "1"]
    assert [s.name[-1] for s in client.servers_in_order("acct")] == ["2", "4", "3", "1"]


def test_from_config():
    config = Radius.model_validate({
        "server": {
            "192.0.2.1": {"key": "one", "priority": 3, "fail-time": 20},
            "192.0.2.2": {"key": "two", "backup": True, "port": 11812, "acct-port": 11813},
            "192.0.2.3": {},  # no key: unusable
        },
        "timeout": 5, "max-try": 4, "source-address": "127.0.0.1", "nas-identifier": "nas1",
    })
    client = RadiusClient.from_config(config)
    assert (client.timeout, client.max_try, client.source_address) == (5.0, 4, IPv4Address("127.0.0.1"))
    first, second = client.servers
    assert (first.secret, first.priority, first.fail_time, first.auth_port) == (b"one", 3, 20.0, 1812)
    assert (second.secret, second.backup, second.auth_port, second.acct_port) == (b"two", True, 11812, 11813)
    assert NasSettings.from_config(config) == NasSettings("nas1", None)


@given(st.binary(max_size=120))
def test_verify_reply_raises_only_radius_errors(data):
    try:
        verify_reply(data, bytes(16), SECRET, require_message_authenticator=True)
    except RadiusError:
        return
    raise AssertionError("random bytes passed verification")


def test_accounting_request_with_message_authenticator_is_recorded(radius):
    """The same client serves accounting: FreeRADIUS checks our signed Accounting-Request."""

    async def run():
        client = RadiusClient([real_server(radius)], timeout=2, max_try=1)
        try:
            reply = await client.request(ACCOUNTING_REQUEST, [
                ("User-Name", "alice"), ("Acct-Status-Type", "Start"), ("Acct-Session-Id", "acct-test-1"),
            ])
            return reply, client.statistics()[0]
        finally:
            await client.close()

    reply, stats = asyncio.run(run())
    assert reply.code == ACCOUNTING_RESPONSE
    assert stats["accounting-responses"] == 1
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        records = [r for r in radius.detail_records() if r.get("Acct-Session-Id") == ["acct-test-1"]]
        if records:
            break
        time.sleep(0.02)
    assert records and records[0]["Acct-Status-Type"] == ["Start"]
    assert "Message-Authenticator" in records[0]


def test_accept_unsigned_replies_is_an_explicit_per_server_choice() -> None:
    """`accept-unsigned-replies` relaxes the Message-Authenticator requirement for that server
    only, and verify warns about it (BlastRADIUS)."""
    radius = Radius.model_validate({"server": {
        "192.0.2.1": {"key": "k1"},
        "192.0.2.2": {"key": "k2", "accept-unsigned-replies": True},
    }})
    specs = {str(spec.address): spec for spec in RadiusClient.from_config(radius).servers}
    assert specs["192.0.2.1"].require_message_authenticator is True
    assert specs["192.0.2.2"].require_message_authenticator is False

    tree = ConfigTree.from_commands([
        "set vpn sstp authentication mode radius",
        "set vpn sstp authentication radius server 192.0.2.2 key k2",
        "set vpn sstp authentication radius server 192.0.2.2 accept-unsigned-replies",
    ])

    class NoPorts:
        def port_in_use(self, port: int) -> str | None:
            return None

    warnings = verify(model_from_tree(tree), probe=NoPorts()).warnings
    assert any("accept-unsigned-replies" in w and "BlastRADIUS" in w for w in warnings)
