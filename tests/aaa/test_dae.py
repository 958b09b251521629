"""RFC 5176 Dynamic Authorization server (vpnd.aaa.dae).

The server talks to sessions only through the `SessionRegistry` protocol, so these tests use a
fake registry that records what it is asked to do; a real daemon is not needed for this unit.
The requests come from the real FreeRADIUS `radclient` over UDP on 127.0.0.1 (missing radclient
fails under CI=true, skips otherwise). A few cases radclient cannot produce (broken attribute
framing, a wrong Message-Authenticator, non-UTF-8 text, random bytes) are fed to
`handle_datagram` directly as packets built with pyrad.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyrad import packet as radius_packet

from tests.support.peers import require_program
from vpnd.aaa.dae import (
    COA_ACK,
    COA_NAK,
    COA_REQUEST,
    DISCONNECT_ACK,
    DISCONNECT_NAK,
    DISCONNECT_REQUEST,
    DynamicAuthorizationServer,
    listen_address,
)
from vpnd.aaa.dictionary import load_dictionary
from vpnd.config.definitions import DynamicAuthor, Radius

SECRET = "dae-test-secret"
NAS_IDENTIFIER = "vpnd-test"
NAS_IP = IPv4Address("127.0.0.1")


@dataclass(frozen=True)
class FakeSession:
    acct_session_id: str
    username: str
    framed_ip: IPv4Address | None
    calling_station_id: str | None
    nas_port_id: str | None
    nas_port: int | None


ALICE_1 = FakeSession("sess-a1", "alice", IPv4Address("10.99.0.10"), "192.0.2.10", "sstp0", 0)
ALICE_2 = FakeSession("sess-a2", "alice", IPv4Address("10.99.0.11"), "192.0.2.11", "sstp1", 1)
BOB = FakeSession("sess-b1", "bob", IPv4Address("10.99.0.12"), "192.0.2.12", "sstp2", 2)


@dataclass
class FakeRegistry:
    live: list[FakeSession] = field(default_factory=lambda: [ALICE_1, ALICE_2, BOB])
    disconnected: list[tuple[str, str]] = field(default_factory=list)
    changes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    change_errors: dict[str, str] = field(default_factory=dict)
    disconnect_delay: float = 0.0

    def sessions(self) -> Iterable[FakeSession]:
        return list(self.live)

    def disconnect(self, session: FakeSession, cause: str) -> None:
        self.disconnected.append((session.acct_session_id, cause))
        self.live.remove(session)
        if self.disconnect_delay:
            time.sleep(self.disconnect_delay)  # a slow daemon: the client retransmits meanwhile

    def change(
        self,
        session: FakeSession,
        *,
        rate_attributes: Mapping[str, Sequence[str]],
        session_timeout: int | None,
        idle_timeout: int | None,
        classes: Sequence[bytes] | None = None,
    ) -> str | None:
        error = self.change_errors.get(session.acct_session_id)
        if error is None:
            self.changes.append((session.acct_session_id, {
                "rate_attributes": {name: list(values) for name, values in rate_attributes.items()},
                "session_timeout": session_timeout,
                "idle_timeout": idle_timeout,
                "classes": None if classes is None else list(classes),
            }))
        return error

    @property
    def untouched(self) -> bool:
        return not self.disconnected and not self.changes


def make_server(registry: FakeRegistry, **options: Any) -> DynamicAuthorizationServer:
    options.setdefault("nas_identifier", NAS_IDENTIFIER)
    options.setdefault("nas_ip_address", NAS_IP)
    return DynamicAuthorizationServer(registry, SECRET.encode(), **options)


# --- radclient ------------------------------------------------------------------------------------


@dataclass
class RadclientResult:
    returncode: int
    reply: str | None  # "Disconnect-ACK", "CoA-NAK", ... or None when nothing came back
    attributes: dict[str, list[str]]
    output: str

    def error_cause(self) -> str | None:
        values = self.attributes.get("Error-Cause")
        return None if values is None else values[0]


def parse_radclient(returncode: int, output: str) -> RadclientResult:
    reply: str | None = None
    attributes: dict[str, list[str]] = {}
    in_reply = False
    for line in output.splitlines():
        if line.startswith("Received "):
            reply = line.split()[1]
            in_reply = True
        elif line.startswith("Sent "):
            in_reply = False
        elif in_reply and line.startswith("\t") and " = " in line:
            name, value = line.strip().split(" = ", 1)
            attributes.setdefault(name, []).append(value.strip('"'))
    return RadclientResult(returncode, reply, attributes, output)


async def radclient(port: int, command: str, attributes: str, *, secret: str = SECRET,
                    retries: int = 1, timeout: float = 1.0) -> RadclientResult:
    program = require_program("radclient")
    process = await asyncio.create_subprocess_exec(
        program, "-x", "-r", str(retries), "-t", str(timeout), f"127.0.0.1:{port}", command, secret,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate(attributes.encode())
    assert process.returncode is not None
    return parse_radclient(process.returncode, output.decode(errors="replace"))


def exchange(server: DynamicAuthorizationServer, command: str, attributes: str,
             **radclient_options: Any) -> RadclientResult:
    """Start the listener on a free port, send one request with radclient, stop the listener."""
    require_program("radclient")

    async def scenario() -> RadclientResult:
        _, port = await server.start("127.0.0.1", 0)
        try:
            return await radclient(port, command, attributes, **radclient_options)
        finally:
            server.close()

    return asyncio.run(scenario())


# --- ACK paths ------------------------------------------------------------------------------------


def test_disconnect_ends_the_one_matching_session() -> None:
    registry = FakeRegistry()
    server = make_server(registry)
    result = exchange(server, "disconnect",
                      'User-Name = "alice", Acct-Session-Id = "sess-a2", '
                      f'NAS-Identifier = "{NAS_IDENTIFIER}", NAS-IP-Address = {NAS_IP}')
    assert result.reply == "Disconnect-ACK", result.output
    assert result.returncode == 0
    assert registry.disconnected == [("sess-a2", "Admin-Reset")]
    assert registry.changes == []
    counters = server.counters
    assert counters.disconnect_requests == counters.disconnect_acks == counters.sessions_disconnected == 1
    assert counters.dropped == 0


def test_disconnect_ends_every_matching_session() -> None:
    registry = FakeRegistry()
    result = exchange(make_server(registry), "disconnect", 'User-Name = "alice"')
    assert result.reply == "Disconnect-ACK", result.output
    assert sorted(registry.disconnected) == [("sess-a1", "Admin-Reset"), ("sess-a2", "Admin-Reset")]
    assert registry.live == [BOB]


@pytest.mark.parametrize(("attributes", "expected"), [
    ('Acct-Session-Id = "sess-b1"', "sess-b1"),
    ("Framed-IP-Address = 10.99.0.11", "sess-a2"),
    ('Calling-Station-Id = "192.0.2.10"', "sess-a1"),
    ('NAS-Port-Id = "sstp2"', "sess-b1"),
    ("NAS-Port = 1", "sess-a2"),
    ('User-Name = "alice", Framed-IP-Address = 10.99.0.10, NAS-Port-Id = "sstp0"', "sess-a1"),
])
def test_each_identifying_attribute_selects_sessions(attributes: str, expected: str) -> None:
    registry = FakeRegistry()
    result = exchange(make_server(registry), "disconnect", attributes)
    assert result.reply == "Disconnect-ACK", result.output
    assert registry.disconnected == [(expected, "Admin-Reset")]


def test_coa_passes_rates_timeouts_and_class_to_the_registry() -> None:
    registry = FakeRegistry()
    server = make_server(registry)
    result = exchange(server, "coa",
                      'Acct-Session-Id = "sess-a1", Filter-Id = "500/700", '
                      'Mikrotik-Rate-Limit = "500k/700k", Cisco-AVPair = "ip:rate-limit=1", '
                      'Cisco-AVPair = "ip:rate-limit=2", Session-Timeout = 600, Idle-Timeout = 120, '
                      "Class = 0x6e6577")
    assert result.reply == "CoA-ACK", result.output
    assert registry.changes == [("sess-a1", {
        "rate_attributes": {
            "Cisco-AVPair": ["ip:rate-limit=1", "ip:rate-limit=2"],
            "Filter-Id": ["500/700"],
            "Mikrotik-Rate-Limit": ["500k/700k"],
        },
        # Class and Session-Timeout in one request: both are applied.
        "session_timeout": 600,
        "idle_timeout": 120,
        "classes": [b"new"],
    })]
    assert registry.disconnected == []
    counters = server.counters
    assert counters.coa_requests == counters.coa_acks == counters.sessions_changed == 1


def test_coa_changes_every_matching_session() -> None:
    registry = FakeRegistry()
    result = exchange(make_server(registry), "coa", 'User-Name = "alice", Filter-Id = "100/100"')
    assert result.reply == "CoA-ACK", result.output
    assert sorted(session_id for session_id, _ in registry.changes) == ["sess-a1", "sess-a2"]
    assert all(change["rate_attributes"] == {"Filter-Id": ["100/100"]} and change["session_timeout"] is None
               for _, change in registry.changes)


def test_ack_carries_a_valid_message_authenticator_when_the_request_had_one() -> None:
    registry = FakeRegistry()
    result = exchange(make_server(registry), "disconnect",
                      'User-Name = "bob", Message-Authenticator = 0x00')
    # radclient checks the Response Authenticator and the Message-Authenticator of the reply.
    assert result.reply == "Disconnect-ACK", result.output
    assert "Message-Authenticator" in result.attributes
    assert registry.disconnected == [("sess-b1", "Admin-Reset")]


# --- NAKs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("command", "attributes", "error_cause"), [
    ("disconnect", 'User-Name = "nobody"', "Session-Context-Not-Found"),
    ("coa", 'Acct-Session-Id = "sess-zz", Filter-Id = "1/1"', "Session-Context-Not-Found"),
    # every identifying attribute must match: alice does not have bob's address
    ("disconnect", 'User-Name = "alice", Framed-IP-Address = 10.99.0.12', "Session-Context-Not-Found"),
    ("disconnect", 'User-Name = "alice", NAS-Identifier = "other-nas"', "NAS-Identification-Mismatch"),
    ("coa", 'User-Name = "alice", NAS-IP-Address = 192.0.2.99, Filter-Id = "1/1"',
     "NAS-Identification-Mismatch"),
    ("coa", 'User-Name = "alice", Framed-Route = "10.0.0.0/8 10.99.0.10"', "Unsupported-Attribute"),
    ("coa", 'User-Name = "alice", Called-Station-Id = "vpn.example"', "Unsupported-Attribute"),
    ("disconnect", 'User-Name = "alice", Filter-Id = "1/1"', "Unsupported-Attribute"),
    ("disconnect", f'NAS-Identifier = "{NAS_IDENTIFIER}"', "Missing-Attribute"),
    ("coa", "Session-Timeout = 60", "Missing-Attribute"),
    ("coa", 'User-Name = "alice", Session-Timeout = 60, Session-Timeout = 70', "Invalid-Request"),
    ("coa", 'User-Name = "alice", Service-Type = Authorize-Only', "Unsupported-Service"),
])
def test_nak_error_causes(command: str, attributes: str, error_cause: str) -> None:
    registry = FakeRegistry()
    server = make_server(registry)
    result = exchange(server, command, attributes)
    assert result.reply == ("Disconnect-NAK" if command == "disconnect" else "CoA-NAK"), result.output
    assert result.error_cause() == error_cause
    assert registry.untouched
    naks = server.counters.disconnect_naks if command == "disconnect" else server.counters.coa_naks
    assert naks == 1


def test_failed_change_is_nak_resources_unavailable() -> None:
    registry = FakeRegistry(change_errors={"sess-a2": "tc refused the qdisc"})
    server = make_server(registry)
    result = exchange(server, "coa", 'User-Name = "alice", Filter-Id = "100/100"')
    assert result.reply == "CoA-NAK", result.output
    assert result.error_cause() == "Resources-Unavailable"
    assert [session_id for session_id, _ in registry.changes] == ["sess-a1"]
    assert server.counters.naks_by_error_cause == {506: 1}


def test_nak_carries_a_valid_message_authenticator_when_the_request_had_one() -> None:
    registry = FakeRegistry()
    result = exchange(make_server(registry), "coa",
                      'User-Name = "nobody", Filter-Id = "1/1", Message-Authenticator = 0x00')
    assert result.reply == "CoA-NAK", result.output
    assert result.error_cause() == "Session-Context-Not-Found"
    assert "Message-Authenticator" in result.attributes


# --- security -------------------------------------------------------------------------------------


def test_request_with_the_wrong_secret_is_dropped() -> None:
    registry = FakeRegistry()
    server = make_server(registry)
    result = exchange(server, "disconnect", 'User-Name = "alice"', secret="not-the-secret")
    assert result.reply is None, result.output
    assert result.returncode != 0
    assert server.counters.dropped_bad_authenticator >= 1
    assert server.counters.disconnect_requests == 0
    assert registry.untouched


def test_request_from_a_source_not_allowed_is_dropped() -> None:
    registry = FakeRegistry()
    server = make_server(registry, allowed_clients=["192.0.2.0/24"])
    result = exchange(server, "disconnect", 'User-Name = "alice"')
    assert result.reply is None, result.output
    assert server.counters.dropped_source_not_allowed >= 1
    assert registry.untouched

    allowed = make_server(registry, allowed_clients=["192.0.2.0/24", "127.0.0.1"])
    assert exchange(allowed, "disconnect", 'User-Name = "bob"').reply == "Disconnect-ACK"
    assert registry.disconnected == [("sess-b1", "Admin-Reset")]


def test_stale_event_timestamp_is_dropped_as_a_replay() -> None:
    registry = FakeRegistry()
    server = make_server(registry)
    stale = int(time.time()) - 3600
    result = exchange(server, "disconnect", f'User-Name = "alice", Event-Timestamp = {stale}')
    assert result.reply is None, result.output
    assert server.counters.dropped_stale_timestamp >= 1
    assert registry.untouched

    current = int(time.time())
    result = exchange(server, "disconnect", f'User-Name = "bob", Event-Timestamp = {current}')
    assert result.reply == "Disconnect-ACK", result.output
    assert registry.disconnected == [("sess-b1", "Admin-Reset")]


def test_missing_event_timestamp_is_refused_when_required() -> None:
    registry = FakeRegistry()
    server = make_server(registry, require_event_timestamp=True)
    result = exchange(server, "disconnect", 'User-Name = "alice"')
    assert result.reply == "Disconnect-NAK", result.output
    assert result.error_cause() == "Invalid-Request"
    assert registry.untouched


def test_retransmission_gets_the_cached_reply_without_acting_twice() -> None:
    # The registry takes longer than radclient's timeout, so radclient sends the same packet
    # (same Identifier and authenticator) again while the first copy is being handled.
    registry = FakeRegistry(disconnect_delay=1.3)
    server = make_server(registry)
    result = exchange(server, "disconnect", 'User-Name = "bob"', retries=3, timeout=1.0)
    assert result.output.count("Sent Disconnect-Request") >= 2, result.output
    assert result.reply == "Disconnect-ACK"
    assert registry.disconnected == [("sess-b1", "Admin-Reset")]
    assert server.counters.duplicates >= 1
    assert server.counters.disconnect_requests == 1


# --- cases radclient cannot produce (packets built with pyrad) ------------------------------------

SOURCE = ("127.0.0.1", 40000)


def build_request(code: int, message_authenticator: bool = False, **attributes: Any) -> Any:
    request = radius_packet.CoAPacket(code, id=7, secret=SECRET.encode(), dict=load_dictionary(),
                                      **attributes)
    if message_authenticator:
        request.add_message_authenticator()
    request.raw = request.RequestPacket()
    return request


def decode_reply(request: Any, raw_reply: bytes | None) -> Any:
    assert raw_reply is not None
    reply = radius_packet.Packet(secret=SECRET.encode(), dict=load_dictionary(), packet=raw_reply)
    assert request.VerifyReply(reply, raw_reply), "bad Response Authenticator or Message-Authenticator"
    return reply


def with_authenticator(code: int, identifier: int, attributes: bytes) -> bytes:
    header = struct.pack("!BBH", code, identifier, 20 + len(attributes))
    return header + hashlib.md5(header + bytes(16) + attributes + SECRET.encode()).digest() + attributes


def test_reply_authenticators_verify_with_pyrad() -> None:
    registry = FakeRegistry()
    server = make_server(registry)
    request = build_request(COA_REQUEST, message_authenticator=True, User_Name="bob", Session_Timeout=30,
                            Proxy_State=[b"hop-1", b"hop-2"])
    reply = decode_reply(request, server.handle_datagram(request.raw, SOURCE))
    assert reply.code == COA_ACK
    assert reply.message_authenticator
    assert reply[33] == [b"hop-1", b"hop-2"]  # Proxy-State copied in order
    assert registry.changes[0][1]["session_timeout"] == 30


def test_bad_message_authenticator_is_dropped() -> None:
    registry = FakeRegistry()
    server = make_server(registry)
    request = build_request(DISCONNECT_REQUEST, message_authenticator=True, User_Name="alice")
    raw = bytearray(request.raw)
    position = raw.index(bytes([80, 18])) + 2
    raw[position] ^= 0xFF
    forged = with_authenticator(raw[0], raw[1], bytes(raw[20:]))  # Request Authenticator stays right
    assert server.handle_datagram(forged, SOURCE) is None
    assert server.counters.dropped_bad_message_authenticator == 1
    assert registry.untouched


def test_missing_message_authenticator_is_dropped_when_required() -> None:
    registry = FakeRegistry()
    server = make_server(registry, require_message_authenticator=True)
    request = build_request(DISCONNECT_REQUEST, User_Name="alice")
    assert server.handle_datagram(request.raw, SOURCE) is None
    assert registry.untouched
    signed = build_request(DISCONNECT_REQUEST, message_authenticator=True, User_Name="bob")
    assert decode_reply(signed, server.handle_datagram(signed.raw, SOURCE)).code == DISCONNECT_ACK


def test_broken_attribute_framing_is_nak_invalid_request() -> None:
    registry = FakeRegistry()
    server = make_server(registry)
    raw = with_authenticator(DISCONNECT_REQUEST, 9, bytes([1, 7]) + b"bob")  # length runs past the end
    reply = server.handle_datagram(raw, SOURCE)
    assert reply is not None
    assert reply[0] == DISCONNECT_NAK and reply[1] == 9
    assert hashlib.md5(reply[:4] + raw[4:20] + reply[20:] + SECRET.encode()).digest() == reply[4:20]
    assert reply[20:] == bytes([101, 6]) + struct.pack("!I", 404)
    assert registry.untouched


def test_wrong_sized_value_is_nak_invalid_request() -> None:
    registry = FakeRegistry()
    server = make_server(registry)
    raw = with_authenticator(COA_REQUEST, 3, bytes([1, 5]) + b"bob" + bytes([27, 4, 0, 1]))  # 2-octet integer
    request_stub = radius_packet.Packet(secret=SECRET.encode(), dict=load_dictionary(), packet=raw)
    reply = server.handle_datagram(raw, SOURCE)
    assert reply is not None
    decoded = radius_packet.Packet(secret=SECRET.encode(), dict=load_dictionary(), packet=reply)
    assert request_stub.VerifyReply(decoded, reply)
    assert decoded.code == COA_NAK and decoded["Error-Cause"] == ["Invalid-Request"]
    assert registry.untouched


def test_rate_attribute_that_is_not_text_is_nak_invalid_attribute_value() -> None:
    registry = FakeRegistry()
    server = make_server(registry)
    request = build_request(COA_REQUEST, User_Name="bob")
    request[11] = [b"\xff\xfe"]  # Filter-Id, not UTF-8
    request.raw = request.RequestPacket()
    reply = decode_reply(request, server.handle_datagram(request.raw, SOURCE))
    assert reply.code == COA_NAK and reply["Error-Cause"] == ["Invalid-Attribute-Value"]
    assert registry.untouched


def test_unknown_vendor_attribute_is_unsupported() -> None:
    registry = FakeRegistry()
    server = make_server(registry)
    request = build_request(COA_REQUEST, User_Name="bob")
    request[(99999, 1)] = [b"x"]
    request.raw = request.RequestPacket()
    reply = decode_reply(request, server.handle_datagram(request.raw, SOURCE))
    assert reply["Error-Cause"] == ["Unsupported-Attribute"]


def test_other_codes_and_short_datagrams_are_dropped() -> None:
    server = make_server(FakeRegistry())
    assert server.handle_datagram(b"\x28\x01\x00", SOURCE) is None
    access_request = with_authenticator(1, 1, bytes([1, 5]) + b"bob")
    assert server.handle_datagram(access_request, SOURCE) is None
    assert server.counters.dropped_malformed == 2


def test_counters_flatten_for_show_statistics() -> None:
    registry = FakeRegistry()
    server = make_server(registry)
    server.handle_datagram(build_request(DISCONNECT_REQUEST, User_Name="nobody").raw, SOURCE)
    server.handle_datagram(build_request(DISCONNECT_REQUEST, User_Name="bob").raw, SOURCE)
    flat = server.counters.as_dict()
    assert flat["received"] == 2
    assert flat["disconnect_acks"] == 1 and flat["disconnect_naks"] == 1
    assert flat["nak_error_cause_503"] == 1
    assert all(isinstance(value, int) for value in flat.values())


def test_from_config() -> None:
    registry = FakeRegistry()
    assert DynamicAuthorizationServer.from_config(Radius(), registry) is None
    no_key = Radius.model_validate({"dynamic_author": {"server": "127.0.0.1"}})
    assert DynamicAuthorizationServer.from_config(no_key, registry) is None
    radius = Radius.model_validate({
        "nas_identifier": "nas-7",
        "dynamic_author": DynamicAuthor.model_validate({"server": "127.0.0.1", "port": 3799, "key": SECRET}),
    })
    server = DynamicAuthorizationServer.from_config(radius, registry)
    assert server is not None
    assert listen_address(radius) == ("127.0.0.1", 3799)
    mismatch = build_request(DISCONNECT_REQUEST, User_Name="bob", NAS_Identifier="nas-8")
    assert decode_reply(mismatch, server.handle_datagram(mismatch.raw, SOURCE))["Error-Cause"] == [
        "NAS-Identification-Mismatch"]
    ours = build_request(DISCONNECT_REQUEST, User_Name="bob", NAS_Identifier="nas-7")
    assert decode_reply(ours, server.handle_datagram(ours.raw, SOURCE)).code == DISCONNECT_ACK


# --- robustness -----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_datagrams_never_raise(data: bytes) -> None:
    server = make_server(FakeRegistry())
    assert server.handle_datagram(data, SOURCE) is None  # no valid authenticator: always silent


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(code=st.sampled_from([DISCONNECT_REQUEST, COA_REQUEST]), identifier=st.integers(0, 255),
       attributes=st.one_of(
           st.binary(max_size=200),
           st.lists(st.tuples(st.sampled_from([1, 4, 5, 6, 8, 11, 25, 26, 27, 28, 31, 32, 33, 44, 55, 80, 87,
                                               95, 101, 200]),
                              st.binary(max_size=20)), max_size=6).map(
               lambda items: b"".join(bytes([kind, len(value) + 2]) + value for kind, value in items)),
       ))
def test_authenticated_garbage_is_answered_or_dropped_never_raises(code: int, identifier: int,
                                                                   attributes: bytes) -> None:
    server = make_server(FakeRegistry())
    raw = with_authenticator(code, identifier, attributes)
    reply = server.handle_datagram(raw, SOURCE)
    if reply is None:
        return
    answers = (DISCONNECT_ACK, DISCONNECT_NAK) if code == DISCONNECT_REQUEST else (COA_ACK, COA_NAK)
    assert reply[0] in answers
    assert reply[1] == identifier
    assert struct.unpack("!H", reply[2:4])[0] == len(reply)
    assert hashlib.md5(reply[:4] + raw[4:20] + reply[20:] + SECRET.encode()).digest() == reply[4:20]
