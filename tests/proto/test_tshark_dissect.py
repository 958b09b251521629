"""An independent dissector (tshark) reads our bytes as the SSTP and PPP we meant to send.

The in-memory conversation is written to a pcap as TCP over loopback addresses (no TLS) and
decoded by tshark: message types, nonce, hash protocol, PPP protocols and codes, and the ICMP
packets carried inside PPP must all come out as expected.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.packets import icmp_echo
from tests.support.pcap import tshark_fields, write_tcp_conversation
from tests.support.wire import CLIENT_ADDRESS, GATEWAY, make_wire
from vpnd.proto.ppp.auth.types import AuthMethod

FIELDS = ["frame.number", "ip.src", "sstp.messagetype", "sstp.hash", "sstp.nonce", "sstp.cert_hash",
          "ppp.protocol", "ppp.code", "chap.code", "icmp.type", "icmp.seq"]


def _dissect(pcap: Path) -> list[dict[str, list[str]]]:
    return tshark_fields(pcap, FIELDS)


def _all(rows: list[dict[str, list[str]]], name: str) -> list[str]:
    return [value for row in rows for value in row.get(name, [])]


@pytest.mark.parametrize("method", [AuthMethod.MSCHAP_V2, AuthMethod.PAP])
def test_tshark_decodes_the_conversation(tmp_path: Path, method: AuthMethod) -> None:
    wire = make_wire(method)
    channel = wire.server.channel
    assert channel is not None and channel.nonce is not None
    nonce = channel.nonce
    wire.client.send_ip_packets([icmp_echo(CLIENT_ADDRESS, GATEWAY, 7, seq, b"ping" * 10) for seq in (1, 2)])
    wire.server.send_ip_packets([icmp_echo(GATEWAY, CLIENT_ADDRESS, 7, 1, b"ping" * 10, reply=True)])
    wire.pump()
    wire.client.close(wire.now, "user hang-up")
    wire.pump()
    pcap = tmp_path / "conversation.pcap"
    write_tcp_conversation(pcap, wire.segments)

    rows = _dissect(pcap)
    message_types = _all(rows, "sstp.messagetype")
    # Connect Request, Connect Ack, Call Connected, Call Disconnect, Disconnect Ack, in order.
    assert [int(t, 16) for t in message_types] == [1, 2, 4, 6, 7]
    assert [int(h, 16) for h in _all(rows, "sstp.hash")] == [0x03, 0x02]  # offered both, chose SHA256
    nonces = {n.replace(":", "").lower() for n in _all(rows, "sstp.nonce")}
    assert nonces == {nonce.hex()}
    cert_hashes = {h.replace(":", "").lower() for h in _all(rows, "sstp.cert_hash")}
    assert len(cert_hashes) == 1 and len(cert_hashes.pop()) == 64

    protocols = {int(p, 16) for p in _all(rows, "ppp.protocol")}
    auth_protocol = 0xC223 if method is AuthMethod.MSCHAP_V2 else 0xC023
    assert {0xC021, auth_protocol, 0x8021, 0x8057, 0x0021} <= protocols
    if method is AuthMethod.MSCHAP_V2:
        assert [int(c) for c in _all(rows, "chap.code")] == [1, 2, 3]  # Challenge, Response, Success
    icmp = list(zip(_all(rows, "icmp.type"), _all(rows, "icmp.seq"), strict=True))
    assert icmp == [("8", "1"), ("8", "2"), ("0", "1")]
