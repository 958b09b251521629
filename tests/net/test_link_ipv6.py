"""IPv6 on a session TUN through KernelNet: link-local only from us, prefix and delegated routes.

The kernel part runs in a namespace of its own (``python -m tests.net.test_link_ipv6`` prints
JSON); the in-memory stand-in is checked against the same calls.
"""

from __future__ import annotations

import json
import subprocess
import sys
from ipaddress import IPv6Address, IPv6Interface, IPv6Network
from pathlib import Path
from typing import Any

from tests.support.scenario import run_scenario
from vpnd.net import KernelNet, MemoryNet, open_tun

LINK_LOCAL, PEER_LINK_LOCAL = IPv6Address("fe80::1"), IPv6Address("fe80::2")
PREFIX, DELEGATED = IPv6Network("2001:db8:1::/64"), IPv6Network("2001:db8:100::/56")
SLAAC = IPv6Interface("2001:db8:1::5/64")


def _ip_json(*args: str) -> Any:
    return json.loads(subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout)


def scenario() -> dict[str, Any]:
    with KernelNet() as net, open_tun("sstp9", mtu=1400) as tun:
        net.configure_ipv6(tun.name, LINK_LOCAL, 1400)
        net.configure_ipv6(tun.name, LINK_LOCAL, 1400)  # twice is harmless
        net.add_route(tun.name, PREFIX)
        net.add_route(tun.name, DELEGATED, PEER_LINK_LOCAL)
        net.add_address(tun.name, SLAAC)
        shown = _ip_json("-6", "addr", "show", "dev", tun.name)[0]["addr_info"]
        addresses = [f"{a['local']}/{a['prefixlen']}" for a in shown]
        routes = {r["dst"]: r.get("gateway") for r in _ip_json("-6", "route", "show", "dev", tun.name)}
        sysctl = {name: Path(f"/proc/sys/net/ipv6/conf/{tun.name}/{name}").read_text().strip()
                  for name in ("addr_gen_mode", "accept_ra")}
        net.remove_route(tun.name, DELEGATED)
        after_removal = [r["dst"] for r in _ip_json("-6", "route", "show", "dev", tun.name)]
    return {"addresses": addresses, "routes": routes, "sysctl": sysctl, "after_removal": after_removal}


def test_kernel_side_of_an_ipv6_session_link() -> None:
    result = run_scenario("tests.net.test_link_ipv6")
    # Our link-local address and the SLAAC one we were asked to add; nothing the kernel invented.
    assert sorted(result["addresses"]) == sorted([f"{LINK_LOCAL}/64", str(SLAAC)])
    assert result["sysctl"] == {"addr_gen_mode": "1", "accept_ra": "0"}
    assert result["routes"][str(DELEGATED)] == str(PEER_LINK_LOCAL)
    assert str(PREFIX) in result["routes"] and "fe80::/64" in result["routes"]
    assert str(DELEGATED) not in result["after_removal"]
    assert "sstp9" not in result["links_after"]


def test_memory_net_keeps_the_same_ipv6_state() -> None:
    net = MemoryNet()
    net.create_interface("sstp0")
    net.configure_ipv6("sstp0", LINK_LOCAL, 1400)
    net.add_route("sstp0", DELEGATED, PEER_LINK_LOCAL)
    net.add_address("sstp0", SLAAC)
    interface = net.interfaces["sstp0"]
    assert interface.addresses6 == {IPv6Interface(f"{LINK_LOCAL}/64"), SLAAC} and interface.up
    assert interface.gateways == {DELEGATED: PEER_LINK_LOCAL}
    net.remove_route("sstp0", DELEGATED)
    assert DELEGATED not in interface.routes and not interface.gateways


if __name__ == "__main__":
    print(json.dumps(scenario()))
    sys.stdout.flush()
