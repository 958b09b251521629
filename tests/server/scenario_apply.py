"""Hitless apply, run inside a network namespace by test_hitless_apply.py (prints JSON).

The daemon and several dialers share one event loop; each step commits a new config through
the control server's apply handler and records which sessions stayed up and still pass traffic.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.support.dialer import Dialer
from vpnd.config.definitions import Config
from vpnd.config.model import tree_from_model
from vpnd.server.control import ControlServer
from vpnd.server.daemon import Daemon
from vpnd.server.tls import make_self_signed

PORT = 4443


def config(tls: Path, cert: Path, key: Path, users: dict[str, dict[str, Any]], dns: list[str]) -> Config:
    return Config.model_validate({"vpn": {"sstp": {
        "authentication": {"local-users": {"username": users}},
        "client-ip-pool": {"P": {"range": ["10.77.0.0/24"]}}, "default-pool": "P",
        "gateway-address": "10.77.255.1", "name-server": dns, "port": PORT,
        # Self-signed: its own CA. The daemon verifies each apply as a commit does.
        "ssl": {"cert-file": str(cert), "key-file": str(key), "ca-cert-file": str(cert)},
    }}})


async def main() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="vpnd-apply-"))
    cert, key = make_self_signed(work, "vpn.test")
    users = {name: {"password": f"{name}-pw"} for name in ("alice", "bob", "carol")}
    current = config(work, cert, key, users, ["10.77.255.53"])
    daemon = Daemon(current, listen_host="127.0.0.1")
    await daemon.start()
    control = ControlServer(daemon, work / "vpnd.sock")
    result: dict[str, Any] = {"steps": []}

    def apply(new: Config) -> dict[str, Any]:
        answer = control.handle(json.dumps({"cmd": "apply",
                                            "config": tree_from_model(new).to_boot_text()}).encode())
        return answer

    dialers = {name: Dialer("127.0.0.1", PORT, name, f"{name}-pw") for name in users}
    for dialer in dialers.values():
        await dialer.connect()
    await asyncio.wait_for(asyncio.gather(*(d.up.wait() for d in dialers.values())), 15)
    result["addresses"] = {n: str(d.address) for n, d in dialers.items()}
    first_cert = dialers["alice"].cert_sha256

    async def step(name: str, new: Config) -> None:
        answer = apply(new)
        await asyncio.sleep(0.5)
        pings = {n: (await d.ping()) if not d.ended.is_set() else 0 for n, d in dialers.items()}
        result["steps"].append({"step": name, "answer": answer, "pings": pings,
                                "ended": {n: d.close_reason for n, d in dialers.items() if d.ended.is_set()},
                                "daemon_sessions": len(daemon.connections)})

    users["dave"] = {"password": "dave-pw"}
    current = config(work, cert, key, users, ["10.77.255.53"])
    await step("add user", current)
    dave = Dialer("127.0.0.1", PORT, "dave", "dave-pw")
    await dave.connect()
    await asyncio.wait_for(dave.up.wait(), 10)
    result["dave_pings"] = await dave.ping()
    await dave.hang_up()

    current = config(work, cert, key, users, ["10.77.255.53", "10.77.255.54"])
    await step("add name-server", current)

    new_cert, new_key = make_self_signed(work / "new", "vpn.test")
    current = config(work, new_cert, new_key, users, ["10.77.255.53", "10.77.255.54"])
    await step("new certificate", current)
    late = Dialer("127.0.0.1", PORT, "bob", "bob-pw")
    await late.connect()
    await asyncio.wait_for(late.up.wait(), 10)
    result["new_connection_sees_new_certificate"] = late.cert_sha256 != first_cert
    result["new_connection_pings"] = await late.ping()
    await late.hang_up()

    users["carol"] = {"password": "carol-pw", "disable": True}
    current = config(work, new_cert, new_key, users, ["10.77.255.53", "10.77.255.54"])
    await step("disable carol", current)
    await asyncio.wait_for(dialers["carol"].ended.wait(), 10)
    result["carol_reason"] = dialers["carol"].close_reason

    for dialer in dialers.values():
        await dialer.hang_up()
    await asyncio.sleep(1.5)
    result["final_statistics"] = daemon.statistics()
    await daemon.stop()
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main()), default=str))
    sys.stdout.flush()
