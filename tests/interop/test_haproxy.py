"""vpnd behind a real HAProxy 2.6: PROXY protocol v2 passthrough and TLS termination (offload).

Everything runs in a network namespace of its own (``python -m tests.interop.test_haproxy``
inside it prints JSON): our daemons with TUN devices, HAProxy (started and stopped by PID), and
dialers that connect to HAProxy and ping the gateway through the tunnel.

(a) TCP passthrough, ``send-proxy-v2``, HAProxy connecting from 127.0.0.9: the daemon allows only
    that source, so a session proves HAProxy's header was accepted, and its Calling-Station-Id
    must be the dialer's own address (127.0.0.1), not HAProxy's.
(b) TLS terminated at HAProxy with its own certificate, the daemon in offload mode with that
    certificate's SHA-256 configured: the dialer verifies nothing and is pinned by the binding.
(c) Both at once (offload plus ``send-proxy`` v1), as a TLS-terminating balancer is usually run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.support.dialer import Dialer
from tests.support.haproxy import HAProxy, Route
from tests.support.peers import require_program
from tests.support.scenario import run_scenario
from vpnd.config.definitions import Config
from vpnd.server.daemon import Daemon
from vpnd.server.tls import make_self_signed

pytestmark = pytest.mark.interop

HAPROXY_SOURCE = "127.0.0.9"
# (daemon port, HAProxy port) per case; the namespace is private, so fixed ports are free.
PASSTHROUGH, OFFLOAD, BOTH = (4453, 8443), (4454, 8444), (4455, 8445)


def _daemon_config(cert: Path, key: Path, port: int, octet: int, extra: dict[str, Any]) -> Config:
    return Config.model_validate({"vpn": {"sstp": {
        "authentication": {"local-users": {"username": {"alice": {"password": "alice-pw"}}}},
        "client-ip-pool": {"P": {"range": [f"10.{octet}.0.0/24"]}}, "default-pool": "P",
        "gateway-address": f"10.{octet}.255.1", "port": port,
        "ssl": {"cert-file": str(cert), "key-file": str(key)}, **extra,
    }}})


async def _session(daemon: Daemon, port: int) -> dict[str, Any]:
    dialer = Dialer("127.0.0.1", port, "alice", "alice-pw")
    await asyncio.wait_for(dialer.connect(), 10)
    done = {asyncio.ensure_future(dialer.up.wait()), asyncio.ensure_future(dialer.ended.wait())}
    await asyncio.wait(done, timeout=15, return_when=asyncio.FIRST_COMPLETED)
    outcome: dict[str, Any] = {"up": dialer.up.is_set(), "close_reason": dialer.close_reason,
                               "seen_sha256": dialer.cert_sha256.hex()}
    if dialer.up.is_set():
        outcome["pings"] = await dialer.ping()
        rows = [row for row in daemon.sessions() if row["state"] == "active"]
        outcome["calling_sid"] = rows[-1]["calling-sid"] if rows else None
    await dialer.hang_up()
    outcome["counters"] = daemon.statistics()["counters"]
    return outcome


async def scenario(program: str) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="vpnd-haproxy-"))
    cert, key = make_self_signed(work, "vpn.test")
    haproxy_cert, haproxy_key = make_self_signed(work / "haproxy", "vpn.test")
    pem = work / "haproxy" / "haproxy.pem"  # HAProxy wants the certificate and key in one file
    pem.write_bytes(haproxy_cert.read_bytes() + haproxy_key.read_bytes())
    pem.chmod(0o600)
    haproxy_sha256 = hashlib.sha256(ssl.PEM_cert_to_DER_cert(haproxy_cert.read_text())).hexdigest()
    proxy = {"accept-proxy-protocol": True, "proxy-protocol-source": [f"{HAPROXY_SOURCE}/32"]}
    offload = {"tls-offload": {"certificate-hash-sha256": haproxy_sha256}}
    daemons = {
        "passthrough": Daemon(_daemon_config(cert, key, PASSTHROUGH[0], 81, proxy),
                              listen_host="127.0.0.1", ifname_prefix="hpa"),
        "offload": Daemon(_daemon_config(cert, key, OFFLOAD[0], 82, offload),
                          listen_host="127.0.0.1", ifname_prefix="hpb"),
        "both": Daemon(_daemon_config(cert, key, BOTH[0], 83, {**proxy, **offload}),
                       listen_host="127.0.0.1", ifname_prefix="hpc"),
    }
    haproxy = HAProxy(program, work / "haproxy", [
        Route("passthrough", PASSTHROUGH[1], PASSTHROUGH[0], send_proxy="v2", source=HAPROXY_SOURCE),
        Route("offload", OFFLOAD[1], OFFLOAD[0], tls_pem=pem),
        Route("both", BOTH[1], BOTH[0], tls_pem=pem, send_proxy="v1", source=HAPROXY_SOURCE),
    ])
    result: dict[str, Any] = {"haproxy_sha256": haproxy_sha256}
    for daemon in daemons.values():
        await daemon.start()
    result["own_sha256"] = hashlib.sha256(daemons["offload"].tls.leaf_der).hexdigest()
    haproxy.start()
    try:
        for name, (_, listen) in (("passthrough", PASSTHROUGH), ("offload", OFFLOAD), ("both", BOTH)):
            result[name] = await _session(daemons[name], listen)
    finally:
        result["haproxy_exit"] = haproxy.stop()
        result["haproxy_log"] = haproxy.log()[-2000:]
        for daemon in daemons.values():
            await daemon.stop()
    return result


@pytest.fixture(scope="module")
def outcome() -> dict[str, Any]:
    program = require_program("haproxy")
    return run_scenario("tests.interop.test_haproxy", program)


def test_passthrough_with_proxy_v2_shows_the_real_client(outcome: dict[str, Any]) -> None:
    case = outcome["passthrough"]
    assert case["up"], (case["close_reason"], outcome["haproxy_log"])
    assert case["pings"] == 3
    # Only 127.0.0.9 (HAProxy) may connect, yet the session names the dialer's 127.0.0.1.
    assert case["calling_sid"] == "127.0.0.1"
    assert case["counters"].get("proxy_refused_source", 0) == 0
    assert case["seen_sha256"] == outcome["own_sha256"]  # passthrough: our own certificate


def test_tls_offload_binds_to_the_haproxy_certificate(outcome: dict[str, Any]) -> None:
    case = outcome["offload"]
    assert case["seen_sha256"] == outcome["haproxy_sha256"] != outcome["own_sha256"]
    assert case["up"], (case["close_reason"], outcome["haproxy_log"])
    assert case["pings"] == 3


def test_offload_with_proxy_v1(outcome: dict[str, Any]) -> None:
    case = outcome["both"]
    assert case["seen_sha256"] == outcome["haproxy_sha256"]
    assert case["up"], (case["close_reason"], outcome["haproxy_log"])
    assert case["pings"] == 3
    assert case["calling_sid"] == "127.0.0.1"


def test_haproxy_stopped_by_pid(outcome: dict[str, Any]) -> None:
    assert outcome["haproxy_exit"] is not None


if __name__ == "__main__":
    print(json.dumps(asyncio.run(scenario(sys.argv[1])), default=str))
    sys.stdout.flush()
