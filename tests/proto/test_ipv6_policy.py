"""`ppp-options ipv6 deny|allow|prefer|require` as the link carries it out, against clients with
and without IPv6 (a client without it Protocol-Rejects IPV6CP, as RFC 1661 §5.7 asks)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.support.wire import SERVER_CERT_HASHES, Wire, make_wire, ppp_protocol, sstp_data_frames
from vpnd.proto.ppp.frames import PROTO_IPV6CP
from vpnd.proto.session import ClientSession, Ipv4Up, Ipv6Up, ServerSession, SessionClosed


def policy_wire(policy: str, client_ipv6: bool) -> Wire:
    base = make_wire(start=False)
    link = replace(base.server.settings.link, ipv6_enabled=policy != "deny", ipv6_passive=policy == "allow",
                   ipv6_required=policy == "require")
    server = ServerSession(replace(base.server.settings, link=link), 0.0, now_wallclock=1_763_700_000.0)
    client_link = replace(base.client.settings.link, ipv6_enabled=client_ipv6)
    client = ClientSession(replace(base.client.settings, link=client_link))
    wire = Wire(server, client, {"alice": "s3cret"})
    client.start(SERVER_CERT_HASHES, 0.0)
    wire.pump()
    return wire


def server_sent_ipv6cp(wire: Wire) -> bool:
    return any(ppp_protocol(f) == PROTO_IPV6CP for f in sstp_data_frames(wire, from_client=False))


@pytest.mark.parametrize(("policy", "client_ipv6", "ipv6_up", "server_asks"), [
    ("deny", True, False, False),
    ("allow", True, True, True),  # the client asked: the passive IPV6CP answers
    ("allow", False, False, False),  # nobody asked: not one IPV6CP packet from the server
    ("prefer", True, True, True),
    ("prefer", False, False, True),  # asked, was Protocol-Rejected, carried on with IPv4
    ("require", True, True, True),
])
def test_policy_against_a_client(policy: str, client_ipv6: bool, ipv6_up: bool, server_asks: bool) -> None:
    wire = policy_wire(policy, client_ipv6)
    assert wire.server_saw(Ipv4Up) and not wire.server_saw(SessionClosed)
    assert bool(wire.server_saw(Ipv6Up)) == ipv6_up
    assert server_sent_ipv6cp(wire) == server_asks


def test_require_ends_the_session_of_a_client_without_ipv6() -> None:
    wire = policy_wire("require", client_ipv6=False)
    closed = wire.server_saw(SessionClosed)
    assert closed and "IPv6 required" in closed[0].reason  # type: ignore[union-attr]
    assert not wire.server_saw(Ipv6Up)
