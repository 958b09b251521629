"""The real Linux SSTP client (sstpc 1.0.18) against our protocol core on a TLS socket.

sstpc does the SSTP layer (HTTP, Connect Request, crypto binding, echo) and our PppLink does PPP
behind it (see tests/support/sstpc.py), so the SSTP bytes, and above all sstpc's own Compound
MAC, are checked by our ServerSession. The last test hands sstpc wrong MPPE keys: its binding
must then fail on our side, which proves the server really checks it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address

import pytest

from tests.support.latency import LatencyLink
from tests.support.packets import icmp_echo
from tests.support.peers import require_program
from tests.support.sstpc import SstpcError, SstpcPeer
from tests.support.tls_server import ServedConnection, SessionTestServer
from vpnd.proto.ppp.auth.types import AuthMethod, MppeKeys
from vpnd.proto.session import AuthSucceeded, BindingVerified, Ipv4Up
from vpnd.proto.sstp.packets import HashProtocol

pytestmark = pytest.mark.interop

USERS = {"alice": "interop-pass-1"}
GATEWAY = IPv4Address("10.77.0.1")
PEER = IPv4Address("10.77.0.2")


def run_with_server(methods: tuple[AuthMethod, ...],
                    body: Callable[[SessionTestServer, SstpcPeer], Awaitable[None]],
                    key_override: MppeKeys | None = None) -> tuple[SstpcPeer, ServedConnection]:
    """Start our server and sstpc, run ``body``, stop both; the peer and the connection it made."""
    program = require_program("sstpc")

    async def main() -> tuple[SstpcPeer, ServedConnection]:
        server = SessionTestServer("127.0.0.1", methods=methods, users=USERS, peer_address=PEER,
                                   gateway=GATEWAY)
        await server.start()
        link = LatencyLink(server.port)  # sstpc dials over a link with a LAN's latency (see there)
        peer = SstpcPeer("127.0.0.1", await link.start(), username="alice", password=USERS["alice"],
                         methods=methods, key_override=key_override, program=program)
        try:
            await asyncio.wait_for(peer.start(), 25)
            await asyncio.wait_for(body(server, peer), 20)
        finally:
            await peer.stop()
            await link.stop()
            await server.stop()
        return peer, last_connection(server)

    return asyncio.run(main())


def last_connection(server: SessionTestServer) -> ServedConnection:
    assert server.connections, "sstpc never reached our server"
    return server.connections[-1]  # an earlier one may belong to a stalled first attempt


async def connect_and_ping(server: SessionTestServer, peer: SstpcPeer) -> None:
    assert await peer.wait_ipv4(15) == PEER
    assert peer.peer_address == GATEWAY
    connection = last_connection(server)
    assert await server.wait_for(lambda: bool(connection.saw(Ipv4Up)), 5)
    for seq in range(1, 4):
        result = await peer.ping(GATEWAY, seq)
        assert result.seq == seq
    assert connection.echo_requests == 3
    assert connection.session.rx_packets == 3 and connection.session.tx_packets == 3


def check_established(peer: SstpcPeer, connection: ServedConnection) -> None:
    # Our server verified the Compound MAC that sstpc computed itself, over SHA256.
    assert connection.saw(BindingVerified) == [BindingVerified(HashProtocol.SHA256)]
    up = connection.saw(Ipv4Up)
    assert len(up) == 1 and up[0].peer == PEER  # type: ignore[union-attr]
    assert peer.plugin_acked
    assert "TYPE(4): CONNECTED" in peer.log, peer.log  # sstpc's trace of the Call Connected it sent
    assert "Connection Established" in peer.log, peer.log
    assert "ABORT" not in peer.log


def server_keys(connection: ServedConnection) -> MppeKeys | None:
    succeeded = connection.saw(AuthSucceeded)
    assert len(succeeded) == 1
    return succeeded[0].keys  # type: ignore[union-attr]


def test_mschapv2_binding_verified_and_ping() -> None:
    peer, connection = run_with_server((AuthMethod.MSCHAP_V2,), connect_and_ping)
    check_established(peer, connection)
    # sstpc was handed the real MPPE keys, in the client's view of the server's keys.
    keys = server_keys(connection)
    assert keys is not None and peer.keys_sent == MppeKeys(send_key=keys.recv_key, recv_key=keys.send_key)


def test_pap_binds_with_the_zero_hlak_and_pings() -> None:
    peer, connection = run_with_server((AuthMethod.PAP,), connect_and_ping)
    check_established(peer, connection)
    # No MPPE keys on either side: both bound the call with the all-zero HLAK.
    assert peer.keys_sent is None and server_keys(connection) is None


def test_wrong_keys_make_our_server_refuse_the_binding() -> None:
    wrong = MppeKeys(send_key=bytes(range(16)), recv_key=bytes(range(16, 32)))
    exit_codes: list[int | None] = []

    async def body(server: SessionTestServer, peer: SstpcPeer) -> None:
        connection = last_connection(server)
        # Push Echo Requests in as soon as authentication is through: with the binding refused,
        # not one of them may reach the other side.
        with contextlib.suppress(TimeoutError, SstpcError):
            await peer.wait_until(lambda: any(isinstance(e, AuthSucceeded) for e in peer.events), 10)
        for seq in range(1, 4):
            with contextlib.suppress(SstpcError, OSError):
                await peer.send_ip(icmp_echo(PEER, GATEWAY, 0x5151, seq, b"must not pass"))
        assert await server.wait_for(connection.done.is_set, 10)
        exit_codes.append(await peer.wait_exit(10))

    peer, connection = run_with_server((AuthMethod.MSCHAP_V2,), body, key_override=wrong)
    assert peer.keys_sent == wrong and peer.plugin_acked
    reason = connection.close_reason or ""
    assert "crypto binding failed" in reason and "compound mac" in reason.lower(), reason
    assert not connection.saw(BindingVerified) and not connection.saw(Ipv4Up)
    assert connection.session.rx_packets == 0 and connection.echo_requests == 0
    # sstpc got our Call Abort and gave up on its own.
    assert "ABORT" in peer.log and "Connection was aborted" in peer.log, peer.log
    assert exit_codes and exit_codes[0] is not None, "sstpc did not exit after the abort"
