"""The daemon as a RADIUS NAS, end to end (run inside a namespace by test_radius_nas.py).

A real FreeRADIUS authenticates and accounts, the real radclient sends CoA and Disconnect,
dialers connect over real TLS, and tc shapes the session interface. Prints JSON.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.support.dialer import Dialer
from tests.support.freeradius import FreeRadius, running_freeradius
from tests.support.probes import LogCollector
from vpnd.config.definitions import Config
from vpnd.proto.ppp.mppe import MppePolicy
from vpnd.server.daemon import Daemon
from vpnd.server.tls import make_self_signed

PORT = 4443
DAE_PORT = 3799
# MS-MPPE-Encryption-Types 4 is 128-bit in RFC 2548; FreeRADIUS 3.2's dictionary calls 2 (RFC:
# 40-bit) "RC4-128bit-Allowed", so the number is used, as the README tells operators to.
USERS = """\
alice   Cleartext-Password := "alice-pw"
        Framed-IP-Address = 10.79.0.77,
        Session-Timeout = 3600,
        Acct-Interim-Interval = 60,
        Filter-Id = "5000/1000",
        Framed-Route = "192.168.50.0/24 0.0.0.0 1",
        Framed-Route = "192.168.51.7",
        Class = "cls-alice"
bob     Cleartext-Password := "bob-pw"
erin    Cleartext-Password := "erin-pw"
        MS-MPPE-Encryption-Policy = Encryption-Required,
        MS-MPPE-Encryption-Types = 4
frank   Cleartext-Password := "frank-pw"
        Framed-IPv6-Prefix = 2001:db8:77:1::/64,
        Delegated-IPv6-Prefix = 2001:db8:7700::/56,
        Framed-IPv6-Route = "2001:db8:78::/48 :: 1",
        Framed-Interface-Id = 0:0:0:42
mallory Auth-Type := Reject
        Reply-Message = "rejected by test policy"
"""


def tc_rate(ifname: str) -> int | None:
    """The HTB class rate (bit/s) on the session interface, as the kernel shows it (this
    iproute2 prints classes as text even with -j)."""
    out = subprocess.run(["tc", "class", "show", "dev", ifname], capture_output=True, text=True, check=False)
    match = re.search(r"class htb \S+ .*?\brate (\d+(?:\.\d+)?)([KMG]?)bit", out.stdout)
    if match is None:
        return None
    scale = {"": 1, "K": 1_000, "M": 1_000_000, "G": 1_000_000_000}[match.group(2)]
    return int(float(match.group(1)) * scale)


async def radclient(kind: str, attributes: str) -> str:
    """The real radclient, run without blocking the loop the daemon answers on."""
    process = await asyncio.create_subprocess_exec(
        "radclient", "-x", "-r", "1", "-t", "3", f"127.0.0.1:{DAE_PORT}", kind, "dae-secret",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await process.communicate(attributes.encode())
    return out.decode(errors="replace")


async def scenario(work: Path, radius: FreeRadius) -> dict[str, Any]:
    log = LogCollector.on()
    cert, key = make_self_signed(work, "vpn.test")
    on_change = work / "on-change"
    on_change.write_text(f'#!/bin/sh\necho "$PEERNAME $1 $5" >> {work / "changes"}\n')
    on_change.chmod(0o755)
    auth_port = radius.auth_address[1]
    acct_port = radius.acct_address[1]
    config = Config.model_validate({"vpn": {"sstp": {
        "authentication": {"mode": "radius", "radius": {
            "server": {"127.0.0.1": {"key": "testing123", "port": auth_port, "acct-port": acct_port}},
            "nas-identifier": "vpnd-test",
            "dynamic-author": {"server": "127.0.0.1", "port": DAE_PORT, "key": "dae-secret"},
            "rate-limit": {"enable": True},
        }},
        "client-ip-pool": {"P": {"range": ["10.79.0.0/24"]}}, "default-pool": "P",
        "client-ipv6-pool": {"V6": {"prefix": {"2001:db8:79::/48": {"mask": 64}}}},
        "ppp-options": {"ipv6": "allow"},
        "gateway-address": "10.79.255.1", "port": PORT,
        "ssl": {"cert-file": str(cert), "key-file": str(key)},
        "extended-scripts": {"on-change": str(on_change)},
    }}})
    daemon = Daemon(config, listen_host="127.0.0.1", state_dir=work / "state")
    await daemon.start()
    result: dict[str, Any] = {}
    alice = Dialer("127.0.0.1", PORT, "alice", "alice-pw")
    await alice.connect()
    await asyncio.wait_for(alice.up.wait(), 15)
    result["alice_address"] = str(alice.address)
    result["alice_pings"] = await alice.ping(3)
    connection = next(iter(daemon.connections.values()))
    ifname = connection.info.ifname
    assert ifname is not None
    result["ifname"] = ifname
    result["rate_after_accept"] = tc_rate(ifname)
    routes = subprocess.run(["ip", "-j", "route", "show", "dev", ifname], capture_output=True, text=True,
                            check=True)
    result["routes"] = sorted(route["dst"] for route in json.loads(routes.stdout))
    result["show_rate"] = daemon.sessions()[0]["rate-limit"]

    mallory = Dialer("127.0.0.1", PORT, "mallory", "whatever")
    await mallory.connect()
    await asyncio.wait_for(mallory.ended.wait(), 15)
    result["mallory_failure"] = mallory.auth_failure

    result["coa"] = await radclient("coa", 'User-Name = "alice", Filter-Id = "2000/500"\n')
    await asyncio.sleep(0.3)
    result["rate_after_coa"] = tc_rate(ifname)
    for _ in range(100):  # the on-change script runs beside the loop: give it up to 5 s
        if (work / "changes").exists():
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)
    result["on_change"] = (work / "changes").read_text() if (work / "changes").exists() else ""
    result["coa_unknown"] = await radclient("coa", 'User-Name = "nobody", Filter-Id = "1/1"\n')

    session_id = connection.info.session_id
    result["disconnect"] = await radclient("disconnect", f'Acct-Session-Id = "{session_id}"\n')
    await asyncio.wait_for(alice.ended.wait(), 10)
    result["alice_reason"] = alice.close_reason
    await asyncio.sleep(1.5)  # the Stop goes out through the spool
    result["alice_counters"] = dict(daemon.stats.counters)  # before anyone else adds bytes

    # RADIUS requires MPPE for erin (128-bit only): a client without CCP (as Windows) is refused,
    # one that negotiates MPPE gets through with 128-bit keys and its IP goes encrypted.
    erin_plain = Dialer("127.0.0.1", PORT, "erin", "erin-pw")
    await erin_plain.connect()
    await asyncio.wait_for(erin_plain.ended.wait(), 15)
    result["erin_plain"] = {"up": erin_plain.up.is_set(), "reason": erin_plain.close_reason,
                            "log": [line for line in log.lines if " erin " in line]}
    erin = Dialer("127.0.0.1", PORT, "erin", "erin-pw", mppe=MppePolicy.PREFER)
    await erin.connect()
    await asyncio.wait_for(erin.up.wait(), 15)
    erin_connection = next(c for c in daemon.connections.values() if c.info.username == "erin")
    result["erin_pings"] = await erin.ping(3)
    cipher = erin_connection.session.link.mppe
    result["erin_mppe"] = {"tx": erin_connection.session.mppe_tx_packets,
                           "rx": erin_connection.session.mppe_rx_packets,
                           "bits": None if cipher is None else cipher.encryptor.key_bits}
    await erin.hang_up()
    await asyncio.sleep(1.5)

    # RADIUS names frank's IPv6 prefix, delegated prefix, a route behind him and his interface id.
    frank = Dialer("127.0.0.1", PORT, "frank", "frank-pw", ipv6=True)
    await frank.connect()
    await asyncio.wait_for(frank.up.wait(), 15)
    frank_row = next(row for row in daemon.sessions() if row["username"] == "frank")
    frank_connection = next(c for c in daemon.connections.values() if c.info.username == "frank")
    await asyncio.sleep(0.2)
    routes6 = subprocess.run(["ip", "-j", "-6", "route", "show", "dev", str(frank_row["ifname"])],
                             capture_output=True, text=True, check=True)
    ipv6cp = frank_connection.session.link.ipv6cp
    peer_id = ipv6cp.peer_interface_id if ipv6cp is not None else None
    result["frank"] = {"ip6": frank_row["ip6"], "peer_id": peer_id.hex() if peer_id else None,
                       "routes": sorted(r["dst"] for r in json.loads(routes6.stdout)),
                       "leases": [str(lease.prefix) for lease in frank_connection.prefix_leases]}
    await frank.hang_up()
    await asyncio.sleep(1.5)

    links = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True)
    result["links_after"] = [link["ifname"] for link in json.loads(links.stdout)]
    result["statistics"] = daemon.statistics()
    await daemon.stop()
    result["detail"] = radius.detail_records()
    return result


def main() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="vpnd-radius-"))
    with running_freeradius(USERS) as radius:
        return asyncio.run(scenario(work, radius))


if __name__ == "__main__":
    print(json.dumps(main(), default=str))
