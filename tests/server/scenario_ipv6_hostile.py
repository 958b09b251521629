"""Hostile IPv6 link traffic from inside a session, against the real daemon (run in a namespace by
test_ipv6_hostile.py; prints JSON).

An authenticated client with IPv6 up sends what ND and DHCPv6 must survive: router solicitations
that break RFC 4861's rules, floods of solicitations, advertisements and DHCPv6 server messages
that only the server may send, DHCPv6 messages with lying lengths or random bodies, IPv6 packets
too short for a header. Afterwards the daemon must still answer a well-formed solicitation on
the same session, a second session beside it must still pass traffic, and none of the attack may
have reached the kernel (the session's TUN counters).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import tempfile
from collections import Counter
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

from tests.support.dialer import Dialer
from vpnd.config.definitions import Config
from vpnd.proto.ipv6.nd import build_neighbor_solicitation, build_router_solicitation
from vpnd.proto.ipv6.packets import (
    ALL_DHCP_RELAY_AGENTS_AND_SERVERS,
    ALL_NODES,
    ALL_ROUTERS,
    DHCPV6_CLIENT_PORT,
    DHCPV6_SERVER_PORT,
    build_icmpv6,
    build_udp,
    classify,
)
from vpnd.proto.ppp.ipv6cp import link_local_address
from vpnd.server.daemon import Daemon
from vpnd.server.tls import make_self_signed

PORT = 4443


def attack(own: IPv6Address, server: IPv6Address) -> dict[str, list[bytes]]:
    rng = random.Random(66)
    rs = build_router_solicitation(own)

    def to_dhcp_server(payload: bytes) -> bytes:
        return build_udp(own, ALL_DHCP_RELAY_AGENTS_AND_SERVERS, DHCPV6_CLIENT_PORT, DHCPV6_SERVER_PORT,
                         payload, hop_limit=1)

    return {
        "rs_hop_limit_1": [build_icmpv6(own, ALL_ROUTERS, 133, 0, bytes(4), hop_limit=1)],
        "rs_bad_checksum": [rs[:-2] + bytes([rs[-2] ^ 0xFF, rs[-1]])],
        "rs_truncated": [rs[:44]],
        "rs_option_length_zero": [build_icmpv6(own, ALL_ROUTERS, 133, 0, bytes(4) + bytes([1]) + bytes(7))],
        "rs_flood": [rs] * 500,
        "ns_flood": [build_neighbor_solicitation(own, server, server)] * 300,
        "ra_from_client": [build_icmpv6(own, ALL_NODES, 134, 0, bytes(12))],
        "dhcp_reply_from_client": [build_udp(own, ALL_NODES, DHCPV6_SERVER_PORT, DHCPV6_CLIENT_PORT,
                                             bytes([7]) + bytes(3), hop_limit=1)],
        "dhcp_empty": [to_dhcp_server(b"")],
        "dhcp_lying_option": [to_dhcp_server(bytes([1, 0, 0, 1]) + bytes([0, 1, 0xFF, 0xFF]))],
        "dhcp_random": [to_dhcp_server(rng.randbytes(rng.randrange(1, 1200))) for _ in range(200)],
        "too_short_for_a_header": [bytes([0x60]) + bytes(9), bytes([0x60]) + os.urandom(30)],
    }


async def scenario(work: Path) -> dict[str, Any]:
    cert, key = make_self_signed(work, "vpn.test")
    config = Config.model_validate({"vpn": {"sstp": {
        "authentication": {"local-users": {"username": {"eve": {"password": "eve-pw"},
                                                        "ctl": {"password": "ctl-pw"}}}},
        "client-ip-pool": {"P": {"range": ["10.84.0.0/24"]}}, "gateway-address": "10.84.255.1",
        "client-ipv6-pool": {"V6": {"prefix": {"2001:db8:84::/48": {"mask": 64}},
                                    "delegate": {"2001:db8:8400::/40": {"delegation-prefix": 56}}}},
        "ppp-options": {"ipv6": "prefer"}, "port": PORT,
        "ssl": {"cert-file": str(cert), "key-file": str(key)},
    }}})
    daemon = Daemon(config, listen_host="127.0.0.1")
    await daemon.start()
    result: dict[str, Any] = {}
    control = Dialer("127.0.0.1", PORT, "ctl", "ctl-pw")
    eve = Dialer("127.0.0.1", PORT, "eve", "eve-pw", ipv6=True)
    for dialer in (control, eve):
        await dialer.connect()
        await asyncio.wait_for(dialer.up.wait(), 15)
    await asyncio.wait_for(eve.ipv6_up.wait(), 15)
    assert eve.interface_id is not None
    own = link_local_address(eve.interface_id)
    eve_connection = next(c for c in daemon.connections.values() if c.info.username == "eve")
    ipv6cp = eve_connection.session.link.ipv6cp
    assert ipv6cp is not None
    server = link_local_address(ipv6cp.local_interface_id)
    ifname = eve_connection.info.ifname
    await asyncio.sleep(1.0)
    tun_before = _rx_packets(str(ifname))
    result["cases"] = {}
    for name, packets in attack(own, server).items():
        before = len(eve.ipv6_received)
        eve.send_ipv6(packets)
        await asyncio.sleep(0.2)
        kinds = Counter(classify(p).value for p in eve.ipv6_received[before:])
        result["cases"][name] = {"sent": len(packets), "answers": sum(kinds.values()), "kinds": dict(kinds)}
    await asyncio.sleep(1.2)  # past the 1 s bound on answers to one solicitor
    before = len(eve.ipv6_received)
    eve.send_ipv6([build_router_solicitation(own)])
    await asyncio.sleep(1.0)
    result["answer_after"] = [classify(p).value for p in eve.ipv6_received[before:]]
    result["tun_rx_during_attack"] = _rx_packets(str(ifname)) - tun_before
    result["control_pings"] = await control.ping(3)
    result["eve_up"] = not eve.ended.is_set()
    result["sessions"] = len(daemon.connections)
    for dialer in (control, eve):
        await dialer.hang_up()
    await asyncio.sleep(0.5)
    result["leases_after"] = [str(lease.prefix) for lease in daemon.ipam6.leases()]
    await daemon.stop()
    return result


def _rx_packets(ifname: str) -> int:
    """Packets the kernel took in from the daemon on the session's TUN (its TX from our side)."""
    shown = json.loads(subprocess.run(["ip", "-j", "-s", "link", "show", ifname], capture_output=True,
                                      text=True, check=True).stdout)
    return int(shown[0]["stats64"]["tx"]["packets"])


if __name__ == "__main__":
    print(json.dumps(asyncio.run(scenario(Path(tempfile.mkdtemp(prefix="vpnd-ipv6-hostile-")))),
                     default=str))
