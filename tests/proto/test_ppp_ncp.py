"""IPCP, IPV6CP and CCP option policies, including Windows' observed IPCP request."""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpnd.proto.ppp.ccp import RESET_REQUEST, Ccp
from vpnd.proto.ppp.frames import (
    CONFIGURE_ACK,
    CONFIGURE_NAK,
    CONFIGURE_REJECT,
    CONFIGURE_REQUEST,
    ControlPacket,
    Option,
    decode_control,
    decode_options,
    encode_options,
)
from vpnd.proto.ppp.fsm import OptionFsm, State
from vpnd.proto.ppp.ipcp import IpcpClient, IpcpServer, Ipv4Settings
from vpnd.proto.ppp.ipv6cp import Ipv6cp, PeerIdWish, link_local_address

GATEWAY = IPv4Address("10.8.0.1")
PEER = IPv4Address("10.8.0.23")
DNS = (IPv4Address("192.0.2.53"), IPv4Address("192.0.2.54"))


def sent(fsm: OptionFsm) -> list[ControlPacket]:
    return [decode_control(p) for p in fsm.packets_to_send()]


def started(fsm: OptionFsm) -> OptionFsm:
    fsm.open(0.0)
    fsm.up(0.0)
    return fsm


def converge(a: OptionFsm, b: OptionFsm) -> None:
    for _ in range(40):
        moved = False
        for source, sink in ((a, b), (b, a)):
            for packet in source.packets_to_send():
                sink.receive(packet, 0.0)
                moved = True
        if not moved:
            return


def req(identifier: int, hex_options: str) -> bytes:
    return ControlPacket(CONFIGURE_REQUEST, identifier, bytes.fromhex(hex_options)).encode()


def test_windows_ipcp_request_is_naked_and_rejected_into_shape() -> None:
    server = started(IpcpServer(Ipv4Settings(GATEWAY, PEER, dns=DNS)))
    [ours] = sent(server)
    assert ours.data == bytes.fromhex("03060a080001")  # just <addr gateway>

    windows = "030600000000" "810600000000" "820600000000" "830600000000" "840600000000"
    server.receive(req(5, windows), 0.1)
    [rej] = sent(server)
    assert (rej.code, rej.identifier) == (CONFIGURE_REJECT, 5)
    assert rej.data == bytes.fromhex("820600000000" "840600000000")

    server.receive(req(6, "030600000000" "810600000000" "830600000000"), 0.2)
    [nak] = sent(server)
    assert (nak.code, nak.identifier) == (CONFIGURE_NAK, 6)
    assert nak.data == bytes.fromhex("03060a080017" "8106c0000235" "8306c0000236")

    final = "03060a080017" "8106c0000235" "8306c0000236"
    server.receive(req(7, final), 0.3)
    [ack] = sent(server)
    assert (ack.code, ack.identifier, ack.data) == (CONFIGURE_ACK, 7, bytes.fromhex(final))
    server.receive(ControlPacket(CONFIGURE_ACK, ours.identifier, ours.data).encode(), 0.4)
    assert server.state is State.OPENED
    assert server.peer_address == PEER


def test_server_without_dns_rejects_dns_and_wins_and_vj() -> None:
    server = started(IpcpServer(Ipv4Settings(GATEWAY, PEER)))
    sent(server)
    server.receive(req(1, "0206002d0f01" "030600000000" "810600000000" "830600000000"), 0.1)
    [rej] = sent(server)
    assert rej.code == CONFIGURE_REJECT
    assert rej.data == bytes.fromhex("0206002d0f01" "810600000000" "830600000000")


def test_server_naks_other_address_and_asks_for_a_missing_one() -> None:
    server = started(IpcpServer(Ipv4Settings(GATEWAY, PEER)))
    sent(server)
    server.receive(req(1, "0306c0a80101"), 0.1)
    [nak] = sent(server)
    assert (nak.code, nak.data) == (CONFIGURE_NAK, bytes.fromhex("03060a080017"))
    server.receive(req(2, ""), 0.1)
    [nak] = sent(server)
    assert (nak.code, nak.data) == (CONFIGURE_NAK, bytes.fromhex("03060a080017"))


def test_client_and_server_back_to_back() -> None:
    server = started(IpcpServer(Ipv4Settings(GATEWAY, PEER, dns=DNS[:1])))
    client = started(IpcpClient())
    first = client.packets_to_send()
    assert decode_options(decode_control(first[0]).data) == [
        Option(3, bytes(4)),
        Option(129, bytes(4)),
        Option(131, bytes(4)),
    ]
    for packet in first:
        server.receive(packet, 0.0)
    converge(server, client)
    assert server.state is State.OPENED and client.state is State.OPENED
    assert client.local_address == PEER
    assert client.peer_address == GATEWAY
    assert client.dns == DNS[:1]
    assert server.peer_address == PEER


def test_client_refuses_zero_server_address_and_fails_without_address() -> None:
    client = started(IpcpClient(request_dns=False))
    [ours] = sent(client)
    client.receive(req(1, "030600000000" "0206002d0f01"), 0.1)
    [rej] = sent(client)
    assert rej.code == CONFIGURE_REJECT
    assert rej.data == bytes.fromhex("030600000000" "0206002d0f01")
    client.receive(ControlPacket(CONFIGURE_REJECT, ours.identifier, ours.data).encode(), 0.2)
    assert client.state is State.CLOSING
    assert "refused to assign" in client.close_reason


def test_ipv4_settings_validation() -> None:
    with pytest.raises(ValueError):
        Ipv4Settings(GATEWAY, IPv4Address(0))
    with pytest.raises(ValueError):
        Ipv4Settings(GATEWAY, PEER, dns=(*DNS, DNS[0]))


def counting(start: int):  # type: ignore[no-untyped-def]
    counter = itertools.count(start)
    return lambda n: next(counter).to_bytes(n, "big")


def test_ipv6cp_zero_id_is_naked_with_fresh_nonzero_id() -> None:
    ours_id = bytes.fromhex("0200000000000001")
    fsm = started(Ipv6cp(ours_id, counting(7)))
    [ours] = sent(fsm)
    assert ours.data == bytes.fromhex("010a") + ours_id
    fsm.receive(req(1, "010a0000000000000000"), 0.1)
    [nak] = sent(fsm)
    assert nak.code == CONFIGURE_NAK
    [suggestion] = decode_options(nak.data)
    assert suggestion.type == 1 and suggestion.value == (7).to_bytes(8, "big")
    # Colliding with ours is Nak'd too.
    fsm.receive(req(2, "010a" + ours_id.hex()), 0.1)
    [nak] = sent(fsm)
    assert nak.code == CONFIGURE_NAK
    assert decode_options(nak.data)[0].value not in (ours_id, bytes(8))
    fsm.receive(req(3, "010a1111111111111111"), 0.1)
    assert sent(fsm)[0].code == CONFIGURE_ACK


def test_ipv6cp_peers_converge_and_nak_changes_our_id() -> None:
    same = bytes.fromhex("0000000000000042")  # both start with the same identifier
    a = started(Ipv6cp(same, random_bytes=counting(100)))
    b = started(Ipv6cp(same, random_bytes=counting(200)))
    assert a.local_interface_id == b.local_interface_id
    converge(a, b)
    assert a.state is State.OPENED and b.state is State.OPENED
    assert a.local_interface_id != b.local_interface_id
    assert a.peer_interface_id == b.local_interface_id
    assert b.peer_interface_id == a.local_interface_id
    assert str(link_local_address(bytes.fromhex("0000000000000001"))) == "fe80::1"


def test_ipv6cp_rejects_other_options_and_bad_lengths() -> None:
    fsm = started(Ipv6cp(random_bytes=counting(1)))
    sent(fsm)
    fsm.receive(req(1, "0204002d" "0109aaaaaaaaaaaaaa"), 0.1)
    [rej] = sent(fsm)
    assert (rej.code, rej.data) == (CONFIGURE_REJECT, bytes.fromhex("0204002d" "0109aaaaaaaaaaaaaa"))
    with pytest.raises(ValueError):
        Ipv6cp(bytes(8))


def test_ccp_rejects_every_option_by_default_and_opens_empty() -> None:
    ccp = started(Ccp())
    [ours] = sent(ccp)
    assert ours.data == b""
    mppe = encode_options([Option(18, bytes.fromhex("01000040"))])
    ccp.receive(ControlPacket(CONFIGURE_REQUEST, 1, mppe).encode(), 0.1)
    [rej] = sent(ccp)
    assert (rej.code, rej.data) == (CONFIGURE_REJECT, mppe)
    ccp.receive(ControlPacket(CONFIGURE_REQUEST, 2).encode(), 0.2)
    ccp.receive(ControlPacket(CONFIGURE_ACK, ours.identifier).encode(), 0.3)
    assert ccp.state is State.OPENED
    ccp.receive(ControlPacket(RESET_REQUEST, 9).encode(), 0.4)
    assert [p.code for p in sent(ccp)] == [CONFIGURE_ACK]  # no Code-Reject for Reset-Request


def test_ccp_policy_hook_can_accept() -> None:
    ccp = started(Ccp(policy=lambda option: option.type == 18))
    sent(ccp)
    mppe = encode_options([Option(18, bytes.fromhex("01000040"))])
    ccp.receive(ControlPacket(CONFIGURE_REQUEST, 1, mppe).encode(), 0.1)
    [ack] = sent(ccp)
    assert ack.code == CONFIGURE_ACK
    assert ccp.peer_options == [Option(18, bytes.fromhex("01000040"))]


def make_ncps() -> list[OptionFsm]:
    return [
        IpcpServer(Ipv4Settings(GATEWAY, PEER, dns=DNS, wins=DNS[:1])),
        IpcpClient(request_wins=True),
        Ipv6cp(random_bytes=counting(5)),
        Ipv6cp(random_bytes=counting(5), peer_id=lambda: PeerIdWish(bytes(7) + b"\x02", accept_own=False)),
        Ccp(),
    ]


option_bytes = st.lists(
    st.tuples(st.sampled_from([1, 2, 3, 129, 130, 131, 132, 18, 200]), st.binary(max_size=10)), max_size=6
).map(lambda pairs: encode_options([Option(k, v) for k, v in pairs]))


@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.tuples(st.integers(1, 16), st.integers(0, 255), option_bytes).map(
                lambda t: ControlPacket(t[0], t[1], t[2]).encode()
            ),
        ),
        max_size=20,
    )
)
def test_ncps_never_raise_on_random_packets(packets: list[bytes]) -> None:
    for fsm in make_ncps():
        started(fsm)
        now = 0.0
        for packet in packets:
            fsm.receive(packet, now)
            now += 1.1
            fsm.handle_timer(now)
            for raw in fsm.packets_to_send():
                decode_control(raw)
