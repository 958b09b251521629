"""The real Linux SSTP client (sstpc 1.0.18) against our daemon, directly and through HAProxy, and
the man in the middle that the crypto binding must stop.

Everything runs in a network namespace of its own (``python -m tests.interop.test_sstpc_daemon``
inside it prints JSON): three daemons with real TLS and TUN devices, one HAProxy (started and
stopped by PID), sstpc processes whose PPP side is our PppLink (tests/support/sstpc.py), and for
the relay case also our own client (`vpnd client`) as a process. An AF_PACKET tap counts the
packets on every tunnel interface, so "no packet crossed" is what the kernel saw.

Cases, each with a fresh sstpc:
- direct: MS-CHAPv2 (real MPPE keys) and PAP (zero HLAK) reach Call Connected, the daemon verifies
  sstpc's Compound MAC, and pings pass; with wrong keys handed to sstpc the daemon refuses.
- HAProxy TCP passthrough with ``send-proxy-v2``, and HAProxy terminating TLS with its certificate
  hash pinned in the daemon (offload): sessions come up and pass traffic.
- HAProxy as a TLS-inspecting relay (its own certificate towards the client, TLS again towards the
  daemon, nothing pinned): sstpc and our client with certificate checks off both get through TLS
  and authentication, then the daemon aborts at Call Connected; not one IP packet crosses.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import ssl
import sys
import tempfile
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from tests.support.haproxy import HAProxy, Route
from tests.support.latency import LatencyLink
from tests.support.packet_counter import PacketCounter
from tests.support.packets import icmp_echo
from tests.support.peers import require_program
from tests.support.probes import LogCollector
from tests.support.scenario import run_scenario
from tests.support.sstpc import SstpcError, SstpcPeer
from vpnd.config.definitions import Config
from vpnd.proto.ppp.auth.types import AuthMethod, AuthSucceeded, MppeKeys
from vpnd.server.daemon import Daemon
from vpnd.server.tls import make_self_signed

pytestmark = pytest.mark.interop

USER, PASSWORD = "alice", "sstpc-daemon-pw"
HAPROXY_SOURCE = "127.0.0.9"
# name: (daemon port, octet of its pool, interface prefix); the namespace is private.
DAEMONS = {"direct": (4461, 91, "sda"), "passthrough": (4462, 92, "sdb"), "offload": (4463, 93, "sdc")}
RELAY_PORTS = {"passthrough": 8462, "offload": 8463, "mitm": 8461}
WRONG_KEYS = MppeKeys(send_key=bytes(range(16)), recv_key=bytes(range(16, 32)))


def _gateway(octet: int) -> str:
    return f"10.{octet}.255.1"


def _config(cert: Path, key: Path, port: int, octet: int, extra: dict[str, Any]) -> Config:
    return Config.model_validate({"vpn": {"sstp": {
        "authentication": {"local-users": {"username": {USER: {"password": PASSWORD}}},
                           # eap is offered first; the mschapv2 and pap cases Nak it (fall-back).
                           "protocols": ["pap", "mschap-v2", "eap"]},
        "client-ip-pool": {"P": {"range": [f"10.{octet}.0.0/24"]}}, "default-pool": "P",
        "gateway-address": _gateway(octet), "port": port,
        "ssl": {"cert-file": str(cert), "key-file": str(key)}, **extra,
    }}})


async def _wait(condition: Any, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def _sstpc_case(program: str, daemon: Daemon, port: int, gateway: str, method: AuthMethod,
                      key_override: MppeKeys | None = None) -> dict[str, Any]:
    # sstpc dials through a link with a LAN's latency (see tests/support/latency.py).
    link = LatencyLink(port)
    peer = SstpcPeer("127.0.0.1", await link.start(), username=USER, password=PASSWORD,
                     methods=(method,), key_override=key_override, program=program)
    before = dict(daemon.stats.counters)
    outcome: dict[str, Any] = {}
    try:
        await asyncio.wait_for(peer.start(), 30)
        with contextlib.suppress(TimeoutError, SstpcError):
            await peer.wait_until(lambda: any(isinstance(e, AuthSucceeded) for e in peer.events), 10)
        outcome["authenticated"] = any(isinstance(e, AuthSucceeded) for e in peer.events)
        if key_override is None:
            outcome["address"] = str(await peer.wait_ipv4(15))
            rows = [row for row in daemon.sessions() if row["state"] == "active"]
            outcome["session"] = rows[-1] if rows else None
            outcome["pings"] = 0
            for seq in range(1, 4):
                await peer.ping(IPv4Address(gateway), seq)
                outcome["pings"] += 1
        else:
            # Echo Requests pushed in right after authentication: none may cross.
            address = peer.local_address or IPv4Address("10.0.0.2")
            for seq in range(1, 4):
                with contextlib.suppress(SstpcError, OSError):
                    await peer.send_ip(
                        icmp_echo(address, IPv4Address(gateway), 0x5151, seq, b"must not pass"))
            outcome["daemon_ended"] = await _wait(lambda: not daemon.connections, 15)
            outcome["sstpc_exit"] = await peer.wait_exit(10)
    finally:
        await peer.stop()
        await link.stop()
    await _wait(lambda: not daemon.connections, 10)
    outcome["keys_sent"] = peer.keys_sent is not None
    outcome["plugin_acked"] = peer.plugin_acked
    outcome["stalls"] = peer.stalls
    outcome["sstpc_log"] = [line for line in peer.log.splitlines()
                            if "CONNECTED" in line or "Established" in line or "ABORT" in line
                            or "aborted" in line][:12]
    after = daemon.stats.counters
    outcome["counters"] = {name: after[name] - before.get(name, 0) for name in after
                           if after[name] != before.get(name, 0)}
    return outcome


async def _our_client_case(port: int) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vpnd.cli.main", "client", "--server", "127.0.0.1", "--port", str(port),
        "--no-verify", "--user", USER, "--password", PASSWORD, "--ifname", "mitmc0",
        "--no-default-route", "--once", "--log-level", "info",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 40)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
    return {"exit": process.returncode, "log": output.decode(errors="replace")[-3000:]}


async def scenario(sstpc: str, haproxy_program: str) -> dict[str, Any]:
    log = LogCollector.on()
    work = Path(tempfile.mkdtemp(prefix="vpnd-sstpc-daemon-"))
    cert, key = make_self_signed(work, "vpn.test")
    relay_cert, relay_key = make_self_signed(work / "relay", "vpn.test")
    pem = work / "relay" / "relay.pem"
    pem.write_bytes(relay_cert.read_bytes() + relay_key.read_bytes())
    pem.chmod(0o600)
    relay_sha256 = hashlib.sha256(ssl.PEM_cert_to_DER_cert(relay_cert.read_text())).hexdigest()
    extras: dict[str, dict[str, Any]] = {
        "direct": {},
        "passthrough": {"accept-proxy-protocol": True, "proxy-protocol-source": [f"{HAPROXY_SOURCE}/32"]},
        "offload": {"tls-offload": {"certificate-hash-sha256": relay_sha256}},
    }
    daemons = {name: Daemon(_config(cert, key, port, octet, extras[name]), listen_host="127.0.0.1",
                            ifname_prefix=prefix)
               for name, (port, octet, prefix) in DAEMONS.items()}
    haproxy = HAProxy(haproxy_program, work / "haproxy", [
        Route("passthrough", RELAY_PORTS["passthrough"], DAEMONS["passthrough"][0], send_proxy="v2",
              source=HAPROXY_SOURCE),
        Route("offload", RELAY_PORTS["offload"], DAEMONS["offload"][0], tls_pem=pem),
        Route("mitm", RELAY_PORTS["mitm"], DAEMONS["direct"][0], tls_pem=pem, backend_tls=True),
    ])
    counter = PacketCounter("sda", "sdb", "sdc", "mitmc")
    result: dict[str, Any] = {}
    for daemon in daemons.values():
        await daemon.start()
    haproxy.start()
    counter.start()
    direct, direct_port, direct_gw = daemons["direct"], DAEMONS["direct"][0], _gateway(DAEMONS["direct"][1])
    try:
        result["mschapv2"] = await _sstpc_case(sstpc, direct, direct_port, direct_gw, AuthMethod.MSCHAP_V2)
        result["pap"] = await _sstpc_case(sstpc, direct, direct_port, direct_gw, AuthMethod.PAP)
        result["eap"] = await _sstpc_case(sstpc, direct, direct_port, direct_gw, AuthMethod.EAP)
        result["tun_packets_before_refusals"] = dict(counter.counts)
        result["wrong_keys"] = await _sstpc_case(sstpc, direct, direct_port, direct_gw, AuthMethod.MSCHAP_V2,
                                                 key_override=WRONG_KEYS)
        result["mitm_sstpc"] = await _sstpc_case(sstpc, direct, RELAY_PORTS["mitm"], direct_gw,
                                                 AuthMethod.MSCHAP_V2, key_override=WRONG_KEYS)
        before = dict(direct.stats.counters)
        result["mitm_client"] = await _our_client_case(RELAY_PORTS["mitm"])
        result["mitm_client"]["counters"] = {
            name: value - before.get(name, 0) for name, value in direct.stats.counters.items()
            if value != before.get(name, 0)}
        result["tun_packets_after_refusals"] = dict(counter.counts)
        for name in ("passthrough", "offload"):
            result[name] = await _sstpc_case(sstpc, daemons[name], RELAY_PORTS[name],
                                             _gateway(DAEMONS[name][1]), AuthMethod.MSCHAP_V2)
    finally:
        result["tun_packets"] = counter.stop()
        result["haproxy_exit"] = haproxy.stop()
        for daemon in daemons.values():
            await daemon.stop()
    result["binding_log"] = [line for line in log.lines if "binding" in line]
    return result


@pytest.fixture(scope="module")
def outcome() -> dict[str, Any]:
    sstpc = require_program("sstpc")
    haproxy = require_program("haproxy")
    return run_scenario("tests.interop.test_sstpc_daemon", sstpc, haproxy, timeout=300)


def _assert_up(case: dict[str, Any]) -> None:
    assert case["authenticated"] and case["pings"] == 3, case
    assert case["plugin_acked"], case
    assert any("Established" in line for line in case["sstpc_log"]), case
    assert not any("ABORT" in line for line in case["sstpc_log"]), case
    assert case["counters"].get("binding_failed", 0) == 0, case


def test_mschapv2_binding_verified_by_the_daemon(outcome: dict[str, Any]) -> None:
    case = outcome["mschapv2"]
    _assert_up(case)
    assert case["keys_sent"]  # sstpc bound the call with the real MS-CHAPv2 MPPE keys
    assert case["session"]["username"] == USER and case["session"]["ip"] == case["address"]
    assert case["session"]["auth"] == "mschap-v2"  # our PPP peer without EAP Nak'd it: fall-back


def test_pap_binds_with_the_zero_key(outcome: dict[str, Any]) -> None:
    case = outcome["pap"]
    _assert_up(case)
    assert not case["keys_sent"]
    assert case["session"]["auth"] == "pap"


def test_eap_mschapv2_binding_made_by_sstpc_verifies(outcome: dict[str, Any]) -> None:
    """sstpc computes the Compound MAC from the EAP-MSCHAPv2 keys our PPP peer handed it, the way
    sstp-pppd-plugin.so hands pppd's: a third-party check of the EAP-MSCHAPv2 HLAK. (Windows'
    own EAP stack could not be run here.)"""
    case = outcome["eap"]
    _assert_up(case)
    assert case["keys_sent"]
    assert case["session"]["auth"] == "eap-mschap-v2"


def test_tunnel_carried_the_pings(outcome: dict[str, Any]) -> None:
    # 2 sessions × 3 Echo Requests in and 3 Replies out on the daemon's TUN devices.
    seen = outcome["tun_packets_before_refusals"]
    assert sum(count for name, count in seen.items() if name.startswith("sda")) >= 12, seen


def test_wrong_keys_are_refused_at_call_connected(outcome: dict[str, Any]) -> None:
    case = outcome["wrong_keys"]
    assert case["authenticated"] and case["keys_sent"] and case["plugin_acked"], case
    assert case["daemon_ended"], case
    assert any("ABORT" in line or "aborted" in line for line in case["sstpc_log"]), case
    assert case["sstpc_exit"] is not None


def test_tls_inspecting_relay_is_refused_for_sstpc(outcome: dict[str, Any]) -> None:
    # Through the relay sstpc hashes the relay's certificate: the daemon must abort.
    case = outcome["mitm_sstpc"]
    assert case["authenticated"] and case["daemon_ended"], case
    assert any("ABORT" in line or "aborted" in line for line in case["sstpc_log"]), case
    assert any("certificate hash mismatch" in line for line in outcome["binding_log"]), outcome["binding_log"]


def test_tls_inspecting_relay_is_refused_for_our_client(outcome: dict[str, Any]) -> None:
    case = outcome["mitm_client"]
    assert case["exit"] not in (0, None), case["log"]
    assert "connected:" not in case["log"], case["log"]
    assert case["counters"].get("binding_failed", 0) >= 1, case


def test_no_packet_crossed_during_refusals(outcome: dict[str, Any]) -> None:
    assert outcome["tun_packets_after_refusals"] == outcome["tun_packets_before_refusals"]


def test_through_haproxy_passthrough_with_proxy_v2(outcome: dict[str, Any]) -> None:
    case = outcome["passthrough"]
    _assert_up(case)
    assert case["session"]["calling-sid"] == "127.0.0.1"  # sstpc's address, not HAProxy's


def test_through_haproxy_tls_offload_with_pinned_hash(outcome: dict[str, Any]) -> None:
    _assert_up(outcome["offload"])


def test_haproxy_stopped_by_pid(outcome: dict[str, Any]) -> None:
    assert outcome["haproxy_exit"] is not None


if __name__ == "__main__":
    print(json.dumps(asyncio.run(scenario(sys.argv[1], sys.argv[2])), default=str))
    sys.stdout.flush()
