"""vpnd's server PPP against a PPP it did not write: lwIP's (a port of pppd's state machines, built
from Debian's `lwip` source package by tests/lwip/build.sh), carried by the real sstpc.

Everything runs in a network namespace of its own (``python -m tests.interop.test_lwip_ppp`` inside
it prints JSON): three daemons with real TLS and TUN devices, one per MPPE policy (prefer with
IPv6 on, require, deny), all sending LCP Echo-Requests every second. Each case is one lwIP client
(tests/support/lwip.py) that accepts one authentication method and has MPPE off or required
(lwIP has no "prefer"). A case that comes up is checked for: the login, sstpc's crypto binding
made from the keys lwIP derived and verified by the daemon, IPCP (and IPV6CP with a SLAAC address
on the prefer daemon), three pings each way (lwIP's own pings, and the server's answered by lwIP's
stack), MPPE on or off as configured, LCP Echo both ways, and LCP Terminate from one end.

Where lwIP and vpnd differ, both follow the RFCs; the differences are asserted where they show:
- lwIP asks for Protocol-Field- and Address-and-Control-Field-Compression; vpnd Configure-Rejects
  both. Both options are optional to accept (RFC 1661 §6.5, §6.6), and SSTP carries PPP frames
  without HDLC framing in any case (MS-SSTP §3.1.5.3).
- With ``mppe prefer`` and an lwIP that does not do MPPE, vpnd first asks for MPPE by listing the
  option in a Configure-Nak of lwIP's empty CCP Configure-Request (RFC 1661 §5.3 allows a Nak to
  add options the peer should include); lwIP, not configured for it, asks again without it, and
  vpnd acknowledges. CCP opens with nothing, and IP goes in the clear.
- MPPE: vpnd offers all levels (+H +M +S +L), lwIP offers 128- and 40-bit; each Naks the other
  down to 128-bit stateless (RFC 3078 §2, the Nak names the one choice).
- With ``mppe deny`` vpnd answers CCP with an LCP Protocol-Reject (RFC 1661 §5.7); an lwIP that
  requires MPPE then ends the link itself, as pppd would.
- lwIP's Terminate-Request carries its reason ("User request"); vpnd's is empty. Both allowed
  (RFC 1661 §5.5: the Data field is uninterpreted).
- With MPPE required lwIP (as pppd) starts IPCP and IPV6CP only once CCP is open, and answers
  vpnd's earlier IPCP Configure-Request with a Terminate-Ack (RFC 1661 §4.1: Closed, RCR -> sta);
  vpnd stays in Req-Sent (RTA there changes nothing) and sends again when its restart timer
  expires (RFC 1661 §4.6, 3 s), so such sessions take about 3 s longer to get their address.
- MS-CHAPv1 gives lwIP one start key for both directions (RFC 3079 §2.4); MS-SSTP names no
  HLAK for MS-CHAPv1, and vpnd's key‖key is what sstpc binds with from lwIP's keys.
lwIP's MPPE needs MS-CHAP keys: with PAP or CHAP-MD5 and MPPE required it refuses to start CCP
and ends the link itself ("MPPE required, but MS-CHAP[v2] auth not performed"), so those
methods are tested with lwIP's MPPE off.

About 45 s on 2 cores (eight sessions, one after another).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
from dataclasses import asdict, dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from tests.support.latency import LatencyLink
from tests.support.lwip import FROM_SERVER, TO_SERVER, LwipPeer, LwipPeerError, require_lwip_peer
from tests.support.peers import require_program
from tests.support.ping import ping
from tests.support.probes import LogCollector
from tests.support.scenario import run_scenario
from vpnd.config.definitions import Config
from vpnd.proto.ppp.frames import (
    PROTO_CCP,
    PROTO_COMPRESSED,
    PROTO_IPCP,
    PROTO_IPV4,
    PROTO_IPV6,
    PROTO_IPV6CP,
    PROTO_LCP,
)
from vpnd.server.daemon import Daemon
from vpnd.server.tls import make_self_signed

pytestmark = pytest.mark.interop

USER, PASSWORD = "alice", "lwip-interop-pw"
# policy: (port, octet of its pool, interface prefix); the namespace is private.
DAEMONS = {"prefer": (4471, 71, "lwp"), "require": (4472, 72, "lwr"), "deny": (4473, 73, "lwd")}
IPV6_PREFIX = "2001:db8:71::/48"
LCP_CONFIGURE_REQUEST, LCP_CONFIGURE_REJECT = 1, 4
LCP_TERMINATE_REQUEST, LCP_TERMINATE_ACK, LCP_PROTOCOL_REJECT = 5, 6, 8
LCP_ECHO_REQUEST, LCP_ECHO_REPLY = 9, 10
CONFIGURE_ACK = 2
MPPE_TRANSMIT = "18"  # CCP option type of MPPE, as lwIP reports the chosen method
PINGS = 3


@dataclass(frozen=True)
class Case:
    name: str
    auth: str  # what lwIP accepts
    lwip_mppe: str  # off | require
    policy: str  # the daemon's ppp-options mppe
    up: bool  # whether the session must come up
    terminate: str = "lwip"  # who ends a session that came up: lwip | vpnd
    password: str = PASSWORD


CASES = [
    Case("pap", "pap", "off", "prefer", True, terminate="lwip"),
    Case("chap-md5", "chap", "off", "deny", True, terminate="vpnd"),
    Case("mschap-v1-mppe", "mschap", "require", "require", True, terminate="lwip"),
    Case("mschap-v2-mppe", "mschapv2", "require", "prefer", True, terminate="vpnd"),
    Case("mschap-v2-clear", "mschapv2", "off", "prefer", True, terminate="lwip"),
    Case("require-refuses-clear-peer", "mschapv2", "off", "require", False),
    Case("deny-refuses-mppe-peer", "mschapv2", "require", "deny", False),
    Case("wrong-password", "mschapv2", "off", "prefer", False, password="not-" + PASSWORD),
]


def _gateway(octet: int) -> str:
    return f"10.{octet}.255.1"


def _config(cert: Path, key: Path, policy: str) -> Config:
    port, octet, _prefix = DAEMONS[policy]
    ipv6: dict[str, Any] = {}
    if policy == "prefer":
        ipv6 = {"client-ipv6-pool": {"V6": {"prefix": {IPV6_PREFIX: {"mask": 64}}}},
                "default-ipv6-pool": "V6"}
    return Config.model_validate({"vpn": {"sstp": {
        "authentication": {"local-users": {"username": {USER: {"password": PASSWORD}}}},
        "client-ip-pool": {"P": {"range": [f"10.{octet}.0.0/24"]}}, "default-pool": "P",
        "gateway-address": _gateway(octet), "port": port,
        "ppp-options": {"mppe": policy, "lcp-echo-interval": 1,
                        "ipv6": "prefer" if policy == "prefer" else "deny"},
        "ssl": {"cert-file": str(cert), "key-file": str(key)}, **ipv6,
    }}})


async def _wait(condition: Any, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def _exercise(peer: LwipPeer, daemon: Daemon, case: Case, outcome: dict[str, Any]) -> None:
    """What a session that came up must do: pings both ways (IPv6 too where on), echoes, an end."""
    ip4 = await peer.wait_event("ip4", 20)
    outcome["address"] = ip4.fields["local"]
    await _wait(lambda: any(row["state"] == "active" for row in daemon.sessions()), 10)
    rows = [row for row in daemon.sessions() if row["state"] == "active"]
    outcome["session"] = rows[-1] if rows else None
    gateway = _gateway(DAEMONS[case.policy][1])
    for seq in range(1, PINGS + 1):
        await peer.ping(gateway, seq)
        outcome["pings_from_lwip"] += 1
    outcome["pings_from_server"] = await asyncio.to_thread(ping, ip4.fields["local"], PINGS)
    if case.policy == "prefer":
        ip6cp = await peer.wait_event("ip6cp", 10)
        slaac = await peer.wait_event("ip6", 15, lambda e: not ip_address(e.fields["address"]).is_link_local)
        outcome["ip6"] = str(ip_address(slaac.fields["address"]))
        outcome["pings6_from_server"] = await asyncio.to_thread(ping, outcome["ip6"], PINGS)
        for seq in range(1, PINGS + 1):
            await peer.ping(ip6cp.fields["peer"], 100 + seq)  # the server's link-local address
            outcome["pings6_from_lwip"] += 1
    # Both ends send LCP Echo-Requests every second: let a few go each way.
    await peer.wait_until(lambda: min(peer.tally.count(d, PROTO_LCP, LCP_ECHO_REPLY)
                                      for d in (TO_SERVER, FROM_SERVER)) >= 2,
                          10, "two echo replies each way")
    if case.terminate == "lwip":
        await peer.close()
    else:
        outcome["reset"] = daemon.reset(user=USER)


async def _lwip_case(program: str, sstpc: str, daemon: Daemon, case: Case) -> dict[str, Any]:
    # sstpc dials through a link with a LAN's latency: on bare loopback it stalls (latency.py).
    link = LatencyLink(DAEMONS[case.policy][0])
    peer = LwipPeer(program, "127.0.0.1", await link.start(), username=USER, password=case.password,
                    auth=case.auth, mppe=case.lwip_mppe, echo_interval=1, sstpc=sstpc)
    before = dict(daemon.stats.counters)
    outcome: dict[str, Any] = {"case": asdict(case), "pings_from_lwip": 0, "pings6_from_lwip": 0}
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await asyncio.wait_for(peer.start(), 30)
        if case.up:
            try:
                await _exercise(peer, daemon, case, outcome)
            except LwipPeerError as error:
                outcome["error"] = str(error)
                outcome["lwip_log"] = peer.lines[-400:]
        outcome["lwip_exit"] = await peer.wait_exit(15)
        outcome["daemon_ended"] = await _wait(lambda: not daemon.connections, 15)
    finally:
        await peer.stop()
        await link.stop()
        await _wait(lambda: not daemon.connections, 10)
    outcome["seconds"] = round(loop.time() - started, 1)
    outcome["events"] = [[event.name, event.text] for event in peer.events]
    outcome["keys_sent"] = peer.keys_sent is not None
    outcome["plugin_acked"] = peer.plugin_acked
    outcome["stalls"] = peer.stalls
    if peer.stalls:
        outcome["stalled_sstpc_log"] = peer.sstpc_log.split("--- retry ---")[0][-3000:]
    outcome["control"] = [[direction, protocol, code, count]
                          for (direction, protocol, code), count in peer.tally.control.items()]
    outcome["data"] = [[direction, protocol, count]
                       for (direction, protocol), count in peer.tally.data.items()]
    outcome["bad_fcs"] = peer.tally.bad_fcs
    outcome["timeline"] = [[t, d, f"0x{p:04x}", c] for t, d, p, c in peer.tally.timeline if c not in (9, 10)]
    outcome["lwip_trace"] = [line for line in peer.lines
                             if line.startswith(("sent [", "rcvd [")) and "Echo" not in line]
    outcome["sstpc_log"] = [line for line in peer.sstpc_log.splitlines()
                            if "CONNECTED" in line or "Established" in line or "ABORT" in line][:12]
    after = daemon.stats.counters
    outcome["counters"] = {name: after[name] - before.get(name, 0) for name in after
                           if after[name] != before.get(name, 0)}
    return outcome


async def scenario(program: str, sstpc: str) -> dict[str, Any]:
    log = LogCollector.on()
    work = Path(tempfile.mkdtemp(prefix="vpnd-lwip-"))
    cert, key = make_self_signed(work, "vpn.test")
    daemons = {policy: Daemon(_config(cert, key, policy), listen_host="127.0.0.1", ifname_prefix=prefix)
               for policy, (_port, _octet, prefix) in DAEMONS.items()}
    result: dict[str, Any] = {}
    for daemon in daemons.values():
        await daemon.start()
    try:
        for case in CASES:
            first_line = len(log.lines)
            result[case.name] = await _lwip_case(program, sstpc, daemons[case.policy], case)
            result[case.name]["daemon_log"] = [line for line in log.lines[first_line:] if "alice" in line]
    finally:
        for daemon in daemons.values():
            with contextlib.suppress(Exception):
                await daemon.stop()
    return result


@pytest.fixture(scope="module")
def outcome() -> dict[str, Any]:
    program = require_lwip_peer()
    sstpc = require_program("sstpc")
    return run_scenario("tests.interop.test_lwip_ppp", program, sstpc, timeout=300)


def test_a_missing_lwip_build_fails_under_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VPND_TEST_CACHE", str(tmp_path))  # an empty cache: nothing built there
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="lwIP PPP peer is not built"):
        require_lwip_peer()


def _count(case: dict[str, Any], direction: str, protocol: int, code: int) -> int:
    return sum(n for d, p, c, n in case["control"] if (d, p, c) == (direction, protocol, code))


def _event(case: dict[str, Any], name: str) -> str | None:
    return next((text for event, text in case["events"] if event == name), None)


def _data(case: dict[str, Any], direction: str, protocol: int) -> int:
    return sum(n for d, p, n in case["data"] if (d, p) == (direction, protocol))


UP = [case for case in CASES if case.up]


@pytest.mark.parametrize("case", UP, ids=[case.name for case in UP])
def test_logs_in_binds_and_passes_pings_both_ways(outcome: dict[str, Any], case: Case) -> None:
    result = outcome[case.name]
    assert "error" not in result, result
    authenticated = _event(result, "authenticated")
    assert authenticated is not None, result["events"]
    # MS-CHAP gives lwIP keys; sstpc binds the call with them (PAP and CHAP-MD5: the zero key).
    assert result["keys_sent"] == case.auth.startswith("mschap"), authenticated
    assert result["plugin_acked"] and any("Established" in line for line in result["sstpc_log"]), result
    assert not any("ABORT" in line for line in result["sstpc_log"]), result["sstpc_log"]
    assert result["counters"].get("binding_failed", 0) == 0, result["counters"]
    assert any("crypto binding verified" in line for line in result["daemon_log"]), result["daemon_log"]
    method = {"pap": "pap", "chap": "chap", "mschap": "mschap", "mschapv2": "mschap-v2"}[case.auth]
    assert result["session"]["auth"] == method and result["session"]["ip"] == result["address"], result
    assert result["pings_from_lwip"] == PINGS and result["pings_from_server"] == PINGS, result
    assert result["bad_fcs"] == 0


@pytest.mark.parametrize("case", UP, ids=[case.name for case in UP])
def test_mppe_is_on_exactly_when_both_sides_want_it(outcome: dict[str, Any], case: Case) -> None:
    result = outcome[case.name]
    ccp = _event(result, "ccp")
    encrypted = case.lwip_mppe == "require" and case.policy != "deny"
    if encrypted:
        assert ccp == f"transmit={MPPE_TRANSMIT} receive={MPPE_TRANSMIT}", result["events"]
        # Every IP packet crossed as a CCP datagram (0x00FD), none in the clear.
        assert min(_data(result, d, PROTO_COMPRESSED) for d in (TO_SERVER, FROM_SERVER)) >= PINGS * 2
        assert _data(result, TO_SERVER, PROTO_IPV4) == _data(result, FROM_SERVER, PROTO_IPV4) == 0
        assert any("MPPE on" in line for line in result["daemon_log"]), result["daemon_log"]
    else:
        assert ccp is None or MPPE_TRANSMIT not in ccp, ccp
        assert min(_data(result, d, PROTO_IPV4) for d in (TO_SERVER, FROM_SERVER)) >= PINGS * 2
    if case.policy == "deny":  # RFC 1661 §5.7: CCP is not spoken at all
        assert _count(result, FROM_SERVER, PROTO_LCP, LCP_PROTOCOL_REJECT) >= 1, result["control"]


@pytest.mark.parametrize("case", UP, ids=[case.name for case in UP])
def test_lcp_echo_both_ways_and_terminate(outcome: dict[str, Any], case: Case) -> None:
    result = outcome[case.name]
    for direction in (TO_SERVER, FROM_SERVER):
        assert _count(result, direction, PROTO_LCP, LCP_ECHO_REQUEST) >= 2, result["control"]
        assert _count(result, direction, PROTO_LCP, LCP_ECHO_REPLY) >= 2, result["control"]
    ender, answerer = (TO_SERVER, FROM_SERVER) if case.terminate == "lwip" else (FROM_SERVER, TO_SERVER)
    assert _count(result, ender, PROTO_LCP, LCP_TERMINATE_REQUEST) >= 1, result["control"]
    assert _count(result, answerer, PROTO_LCP, LCP_TERMINATE_ACK) >= 1, result["control"]
    assert result["lwip_exit"] == 0 and result["daemon_ended"], result
    reason = "closed by peer" if case.terminate == "lwip" else "administrative reset"
    assert any(reason in line for line in result["daemon_log"]), result["daemon_log"]


def test_ipv6cp_slaac_and_pings6_both_ways(outcome: dict[str, Any]) -> None:
    for case in (c for c in UP if c.policy == "prefer"):
        result = outcome[case.name]
        assert _event(result, "ip6cp") is not None, result["events"]
        assert result["ip6"].startswith("2001:db8:71:"), result["ip6"]
        assert result["pings6_from_server"] == PINGS and result["pings6_from_lwip"] == PINGS, result
        assert _data(result, TO_SERVER, PROTO_IPV6) + _data(result, TO_SERVER, PROTO_COMPRESSED) > 0


def test_ipv6cp_is_protocol_rejected_where_ipv6_is_denied(outcome: dict[str, Any]) -> None:
    result = outcome["chap-md5"]
    assert _event(result, "ip6cp") is None
    assert _count(result, TO_SERVER, PROTO_IPV6CP, LCP_CONFIGURE_REQUEST) >= 1
    assert any(line.startswith("rcvd [LCP ProtRej") and " 80 57 " in line for line in result["lwip_trace"]), \
        result["lwip_trace"]


def test_pfc_and_acfc_are_rejected_and_lwip_goes_on_without(outcome: dict[str, Any]) -> None:
    trace = outcome["pap"]["lwip_trace"]
    assert any(line.startswith("rcvd [LCP ConfRej") and "<pcomp> <accomp>" in line for line in trace), trace
    assert any(line.startswith("rcvd [LCP ConfAck") for line in trace), trace


def test_prefer_asks_a_clear_peer_for_mppe_then_accepts_it_without(outcome: dict[str, Any]) -> None:
    result = outcome["mschap-v2-clear"]
    trace = result["lwip_trace"]
    assert any(line.startswith("rcvd [CCP ConfNak") and "mppe" in line for line in trace), trace
    assert _count(result, FROM_SERVER, PROTO_CCP, CONFIGURE_ACK) >= 1
    assert any("MPPE not used" in line for line in result["daemon_log"]), result["daemon_log"]


def test_require_ends_a_session_without_mppe(outcome: dict[str, Any]) -> None:
    result = outcome["require-refuses-clear-peer"]
    assert _event(result, "authenticated") is not None and _event(result, "ip4") is None, result["events"]
    assert _count(result, FROM_SERVER, PROTO_LCP, LCP_TERMINATE_REQUEST) >= 1, result["control"]
    assert _data(result, TO_SERVER, PROTO_IPV4) == _data(result, FROM_SERVER, PROTO_IPV4) == 0
    assert _count(result, FROM_SERVER, PROTO_IPCP, CONFIGURE_ACK) == 0
    assert result["daemon_ended"], result


def test_deny_rejects_ccp_and_an_mppe_requiring_peer_leaves(outcome: dict[str, Any]) -> None:
    result = outcome["deny-refuses-mppe-peer"]
    assert _event(result, "ip4") is None, result["events"]
    assert _count(result, FROM_SERVER, PROTO_LCP, LCP_PROTOCOL_REJECT) >= 1, result["control"]
    assert _count(result, TO_SERVER, PROTO_LCP, LCP_TERMINATE_REQUEST) >= 1, result["control"]
    assert any(line.startswith("sent [LCP TermReq") and "MPPE required" in line
               for line in result["lwip_trace"]), result["lwip_trace"]
    assert result["daemon_ended"], result



def test_a_wrong_password_gets_ms_chap_v2_failure_and_lwip_gives_up(outcome: dict[str, Any]) -> None:
    result = outcome["wrong-password"]
    assert _event(result, "authenticated") is None and not result["keys_sent"], result["events"]
    assert any(line.startswith("rcvd [CHAP Failure") and "E=691" in line for line in result["lwip_trace"]), \
        result["lwip_trace"]
    assert _event(result, "status") == "7", result["events"]  # PPPERR_AUTHFAIL
    assert result["daemon_ended"] and any("authentication failed" in line for line in result["daemon_log"]), \
        result["daemon_log"]

if __name__ == "__main__":
    print(json.dumps(asyncio.run(scenario(sys.argv[1], sys.argv[2])), default=str))
    sys.stdout.flush()
