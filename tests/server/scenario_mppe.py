"""`ppp-options mppe require` on the real daemon (run in a namespace by test_mppe_daemon.py).

A dialer that negotiates MPPE passes ICMP through encrypted 0x00FD frames; a Windows-like dialer
(CCP Protocol-Rejected) is refused. Prints JSON.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from tests.support.dialer import Dialer
from vpnd.config.definitions import Config
from vpnd.proto.ppp.mppe import MppePolicy
from vpnd.server.daemon import Daemon
from vpnd.server.tls import make_self_signed

PORT = 4443


async def main() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="vpnd-mppe-"))
    cert, key = make_self_signed(work, "vpn.test")
    config = Config.model_validate({"vpn": {"sstp": {
        "authentication": {"protocols": ["mschap-v2"],
                           "local-users": {"username": {"alice": {"password": "alice-pw"}}}},
        "client-ip-pool": {"P": {"range": ["10.82.0.0/24"]}}, "gateway-address": "10.82.255.1",
        "port": PORT, "ppp-options": {"mppe": "require"},
        "ssl": {"cert-file": str(cert), "key-file": str(key)},
    }}})
    daemon = Daemon(config, listen_host="127.0.0.1")
    await daemon.start()
    result: dict[str, Any] = {}
    encrypted = Dialer("127.0.0.1", PORT, "alice", "alice-pw", mppe=MppePolicy.REQUIRE)
    await encrypted.connect()
    await asyncio.wait_for(encrypted.up.wait(), 15)
    result["mppe_pings"] = await encrypted.ping(3)
    connection = next(iter(daemon.connections.values()))
    result["server_mppe_on"] = connection.session.link.mppe is not None
    await encrypted.hang_up()
    plain = Dialer("127.0.0.1", PORT, "alice", "alice-pw")
    await plain.connect()
    await asyncio.wait_for(plain.ended.wait(), 20)
    result["plain_up"] = plain.up.is_set()
    result["plain_reason"] = plain.close_reason
    await asyncio.sleep(1.5)
    result["statistics"] = daemon.statistics()
    await daemon.stop()
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main()), default=str))
