"""Connection limits on the real daemon, run in a namespace of its own by test_abuse.py (prints JSON).

Daemon "rate" (`limits connection-limit 1/min burst 2`, `negotiation-timeout 5`): two dialers from
127.0.0.1 come up, the third connection from there is refused before TLS and blocks the address,
another address still gets in; clients that stall after TCP, after TLS and after HTTP are cut off
by the phase deadline. Daemon "starting" (`max-concurrent-sessions 2`): two stalled connections
fill it, a third is refused, and once they are gone a dialer gets in. The refusal log's interval is
two seconds here instead of sixty, so its summary line shows up during the run.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.hostile.cases import REQUEST
from tests.support.probes import LogCollector, dial, raw_exchange, tls_exchange
from vpnd.cli.opmode import statistics_lines
from vpnd.config.definitions import Config
from vpnd.server.daemon import Daemon
from vpnd.server.limits import RefusalLog
from vpnd.server.tls import make_self_signed

RATE_PORT, STARTING_PORT = 4443, 4444


def config(cert: Path, key: Path, port: int, octet: int, extra: dict[str, Any]) -> Config:
    return Config.model_validate({"vpn": {"sstp": {
        "authentication": {"local-users": {"username": {"alice": {"password": "alice-pw"}}}},
        "client-ip-pool": {"P": {"range": [f"10.{octet}.0.0/24"]}}, "default-pool": "P",
        "gateway-address": f"10.{octet}.255.1", "port": port,
        "ssl": {"cert-file": str(cert), "key-file": str(key)}, **extra,
    }}})


def stalled(source: str, port: int) -> socket.socket:
    """A TCP connection that never says anything."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


async def rate_daemon(cert: Path, key: Path, logs: LogCollector) -> dict[str, Any]:
    daemon = Daemon(config(cert, key, RATE_PORT, 81, {"limits": {
        "connection-limit": "1/min", "burst": 2, "timeout": 60, "negotiation-timeout": 5}}),
        listen_host="127.0.0.1", ifname_prefix="lra")
    daemon.refusals = RefusalLog(interval=2.0)
    await daemon.start()
    result: dict[str, Any] = {}
    first, second = await dial(RATE_PORT), await dial(RATE_PORT)
    result["admitted_up"] = [first.up.is_set(), second.up.is_set()]
    third = await dial(RATE_PORT)
    result["third"] = {"up": third.up.is_set(), "reason": third.close_reason}
    result["blocked_again"] = [await raw_exchange("127.0.0.1", RATE_PORT, b"\x16\x03\x01", wait=3)
                               for _ in range(3)]
    # Meanwhile other addresses are served; these stall, each in another phase.
    stalls = await asyncio.gather(
        raw_exchange("127.0.0.3", RATE_PORT, b"", wait=20),  # TCP only: the TLS deadline
        tls_exchange("127.0.0.4", RATE_PORT, sni="vpn.test", wait=20),  # TLS, no HTTP request
        tls_exchange("127.0.0.5", RATE_PORT, sni="vpn.test", data=REQUEST, wait=20),  # no Connect Request
    )
    result["stalls"] = dict(zip(("tcp", "tls", "http"), stalls, strict=True))
    result["pings"] = [await first.ping(), await second.ping()]
    await asyncio.sleep(2.5)  # the refusal log's interval (2 s here) ends: the summary goes out
    result["statistics"] = daemon.statistics()
    result["show_statistics"] = statistics_lines(daemon.statistics())
    result["logs"] = [line for line in logs.lines if "refused" in line or "negotiation timeout" in line]
    for dialer in (first, second):
        await dialer.hang_up()
    await daemon.stop()
    return result


async def starting_daemon(cert: Path, key: Path) -> dict[str, Any]:
    daemon = Daemon(config(cert, key, STARTING_PORT, 82, {"max-concurrent-sessions": 2}),
                    listen_host="127.0.0.1", ifname_prefix="lrb")
    await daemon.start()
    result: dict[str, Any] = {}
    holders = [stalled("127.0.0.6", STARTING_PORT), stalled("127.0.0.7", STARTING_PORT)]
    while daemon.statistics()["sessions"]["starting"] < 2:  # type: ignore[index]
        await asyncio.sleep(0.05)
    refused = await dial(STARTING_PORT)
    result["while_full"] = {"up": refused.up.is_set(), "reason": refused.close_reason}
    for sock in holders:
        sock.close()
    while daemon.statistics()["sessions"]["starting"]:  # type: ignore[index]
        await asyncio.sleep(0.05)
    later = await dial(STARTING_PORT)
    result["after"] = {"up": later.up.is_set(), "pings": await later.ping() if later.up.is_set() else 0}
    await later.hang_up()
    result["statistics"] = daemon.statistics()
    await daemon.stop()
    return result


async def scenario() -> dict[str, Any]:
    logs = LogCollector.on()
    work = Path(tempfile.mkdtemp(prefix="vpnd-limits-"))
    cert, key = make_self_signed(work, "vpn.test")
    return {"rate": await rate_daemon(cert, key, logs), "starting": await starting_daemon(cert, key)}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(scenario()), default=str))
    sys.stdout.flush()
