"""Every negotiation phase of a server session has a deadline, and the session says which one ran
out (NegotiationTimedOut) so the daemon can count it: HTTP (TLS included, from the session's
start), the SSTP Call Connect Request, LCP, authentication (the backend's answer included), Call
Connected, and the NCPs after Call Connected."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.proto.test_session import split_sstp
from tests.proto.test_session_negative import (
    CONNECT_REQUEST,
    HTTP_REQUEST,
    drain,
    new_server,
    only_closed,
    run_timers,
    server_after_http,
)
from tests.support.wire import SERVER_CERT_HASHES, Wire, make_wire, seeded_random
from vpnd.proto.http import HttpPolicy
from vpnd.proto.ppp.auth.types import AuthMethod
from vpnd.proto.ppp.lcp import LcpSettings
from vpnd.proto.ppp.link import LinkSettings
from vpnd.proto.session import HttpRefused, Ipv4Up, NegotiationTimedOut, ServerSession, ServerSessionSettings
from vpnd.proto.sstp.channel import ChannelSettings

PROTO_IPCP = b"\x80\x21"


LINK = LinkSettings(lcp=LcpSettings(auth_methods=(AuthMethod.MSCHAP_V2,)))


def server(**settings: object) -> ServerSession:
    return ServerSession(ServerSessionSettings(cert_hashes=SERVER_CERT_HASHES, link=LINK, **settings), 0.0,
                         random_bytes=seeded_random(3))


def timed_out(events: list[object]) -> list[NegotiationTimedOut]:
    return [e for e in events if isinstance(e, NegotiationTimedOut)]


def without_ppp(protocol: bytes) -> Callable[[bytes], bytes]:
    """A tamper function dropping the SSTP data packets that carry PPP ``protocol``."""

    def tamper(data: bytes) -> bytes:
        packets, rest = split_sstp(data)
        kept = [p for p in packets if p[1] & 1 or p[4:8] != b"\xff\x03" + protocol]
        return b"".join(kept) + rest

    return tamper


def test_http_phase() -> None:
    server = new_server(100.0, http_timeout=20.0)
    server.receive_data(b"SSTP_DUPLEX_POST /sra_", 101.0)
    run_timers(server, 120.0)
    events = drain(server)
    assert timed_out(events) == [NegotiationTimedOut("http", 20.0)]
    assert only_closed(events).reason == "no SSTP_DUPLEX_POST within 20 s"


def test_sstp_connect_phase() -> None:
    server = server_after_http(10.0)
    run_timers(server, 80.0)
    assert timed_out(drain(server)) == [NegotiationTimedOut("sstp-connect", 60.0)]


def test_lcp_phase() -> None:
    # LCP gives up on its own after 10 unanswered Configure-Requests (30 s); the phase deadline
    # is what ends a peer that keeps LCP negotiating, shown here by a deadline shorter than that.
    session = server(channel=ChannelSettings(negotiation_timeout=10.0))
    session.receive_data(HTTP_REQUEST + CONNECT_REQUEST, 1.0)
    run_timers(session, 12.0)
    assert timed_out(drain(session)) == [NegotiationTimedOut("lcp", 10.0)]


def test_authentication_phase_includes_waiting_for_the_backend() -> None:
    wire = make_wire(AuthMethod.MSCHAP_V2, start=False)
    wire.answer_auth = False  # the backend (RADIUS, say) never answers
    wire.client.start(SERVER_CERT_HASHES, 0.0)
    wire.pump()
    wire.advance(65.0)
    assert timed_out(wire.server_events) == [NegotiationTimedOut("authentication", 60.0)]


def test_call_connected_phase() -> None:
    wire = make_wire(AuthMethod.MSCHAP_V2, start=False)
    call_connected = bytes.fromhex("10010070 00040001")
    wire.tamper_to_server = lambda data: b"".join(
        p for p in split_sstp(data)[0] if not p.startswith(call_connected)) + split_sstp(data)[1]
    wire.client.start(SERVER_CERT_HASHES, 0.0)
    wire.pump()
    wire.advance(62.0)
    assert timed_out(wire.server_events) == [NegotiationTimedOut("call-connected", 60.0)]


def test_ncp_phase_after_call_connected() -> None:
    # As with LCP, the IPCP state machine gives up by itself after 30 s of silence; the phase
    # deadline bounds the phase whatever the NCPs do, shown with a deadline shorter than that.
    wire = Wire(server(ncp_timeout=10.0), make_wire(ipv6=False, start=False).client, {"alice": "s3cret"})
    wire.tamper_to_server = without_ppp(PROTO_IPCP)  # the client's IPCP never arrives
    wire.client.start(SERVER_CERT_HASHES, 0.0)
    wire.pump()
    assert wire.server.channel is not None and wire.server.channel.state.name == "SERVER_CALL_CONNECTED"
    wire.advance(9.5)
    assert not wire.server.closed and timed_out(wire.server_events) == []
    wire.advance(5.0)
    assert timed_out(wire.server_events) == [NegotiationTimedOut("ncp", 10.0)]
    closed = only_closed(wire.server_events)
    assert closed.reason == "negotiation timeout: no IP negotiated within 10 s of Call Connected"
    assert wire.client.closed  # told by Terminate-Request and Call Disconnect, not dropped


def test_ncp_deadline_ends_once_ip_is_up() -> None:
    wire = make_wire(AuthMethod.MSCHAP_V2)
    assert wire.server_saw(Ipv4Up)
    wire.advance(600.0, step=5.0)  # keepalives only: nothing times out
    assert not wire.server.closed and timed_out(wire.server_events) == []


@pytest.mark.parametrize(("host", "wrong"), [("vpn.example.net", False), ("other.example.net", True)])
def test_wrong_host_is_marked(host: str, wrong: bool) -> None:
    session = server(http=HttpPolicy(host_name="vpn.example.net"))
    request = HTTP_REQUEST.replace(b"Host: vpn.example.net", b"Host: " + host.encode())
    session.receive_data(request.replace(b"/sra_", b"/not-sstp_"), 1.0)  # refused either way
    refused = [e for e in drain(session) if isinstance(e, HttpRefused)]
    assert len(refused) == 1 and refused[0].status == 404 and refused[0].wrong_host is wrong
