"""Debian 12's FreeRADIUS as installed: replies without Message-Authenticator (run inside a
namespace by test_radius_unsigned.py).

A real FreeRADIUS that does not sign its Access-Accept/Reject, the daemon, and dialers over real
TLS: first with the default (unsigned replies refused: what the client is told, what the log and
the session's failure cause say), then a second daemon with `accept-unsigned-replies` on that
server (the same logins succeed). Prints JSON.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.dialer import Dialer
from tests.support.freeradius import FreeRadius, running_freeradius
from tests.support.probes import LogCollector
from vpnd.config.definitions import Config
from vpnd.proto.ppp.auth.types import AuthMethod
from vpnd.server.daemon import Daemon
from vpnd.server.tls import make_self_signed

PORT = 4443
USERS = 'bob     Cleartext-Password := "bob-pw"\n'


def config(work: Path, radius: FreeRadius, *, accept_unsigned: bool) -> Config:
    cert, key = make_self_signed(work, "vpn.test")
    server: dict[str, Any] = {"key": radius.secret, "port": radius.auth_port, "acct-port": radius.acct_port}
    if accept_unsigned:
        server["accept-unsigned-replies"] = True
    return Config.model_validate({"vpn": {"sstp": {
        "authentication": {"mode": "radius", "radius": {"server": {"127.0.0.1": server}, "timeout": 2}},
        "client-ip-pool": {"P": {"range": ["10.81.0.0/24"]}}, "default-pool": "P",
        "gateway-address": "10.81.255.1", "port": PORT,
        "ssl": {"cert-file": str(cert), "key-file": str(key)},
    }}})


async def dial(method: AuthMethod) -> dict[str, Any]:
    dialer = Dialer("127.0.0.1", PORT, "bob", "bob-pw", method=method)
    started = time.monotonic()
    await dialer.connect()
    waiters = [asyncio.create_task(event.wait()) for event in (dialer.up, dialer.ended)]
    await asyncio.wait(waiters, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
    result = {"up": dialer.up.is_set(), "told": dialer.auth_failure, "seconds": time.monotonic() - started,
              "pings": await dialer.ping(2) if dialer.up.is_set() else 0}
    if dialer.up.is_set():
        await dialer.hang_up()
    return result


async def scenario(work: Path, radius: FreeRadius) -> dict[str, Any]:
    log = LogCollector.on()
    result: dict[str, Any] = {}
    for accept_unsigned in (False, True):
        mark = len(log.lines)
        daemon = Daemon(config(work, radius, accept_unsigned=accept_unsigned), listen_host="127.0.0.1",
                        state_dir=work / f"state-{accept_unsigned}")
        await daemon.start()
        key = "accepted" if accept_unsigned else "refused"
        result[key] = {method.value: await dial(method) for method in (AuthMethod.PAP, AuthMethod.MSCHAP_V2)}
        await asyncio.sleep(0.5)
        result[key]["statistics"] = daemon.statistics()
        await daemon.stop()
        result[key]["log"] = log.lines[mark:]
    return result


def main() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="vpnd-radius-unsigned-"))
    with running_freeradius(USERS, sign_replies=False) as radius:
        return asyncio.run(scenario(work, radius))


if __name__ == "__main__":
    print(json.dumps(main(), default=str))
