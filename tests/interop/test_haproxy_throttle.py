"""The login throttle behind a real HAProxy 2.6 with PROXY protocol v2: its keys are the clients'
own addresses, not the balancer's (issue 17).

Runs inside a network namespace of its own (``python -m tests.interop.test_haproxy_throttle``
prints JSON): our daemon (accept-proxy-protocol, only 127.0.0.9 may send headers), HAProxy
connecting from 127.0.0.9 with ``send-proxy-v2``, and dialers reaching HAProxy from 127.0.5.1
(a sprayer: six user names fail, the threshold is five) and 127.0.5.2. If the throttle keyed on
the balancer's address, a new name would wait from both; it waits only from the sprayer.
About 15 s.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.server.scenario_throttle import attempt, daemon_config
from tests.support.haproxy import HAProxy, Route
from tests.support.peers import require_program
from tests.support.scenario import run_scenario
from vpnd.server.daemon import Daemon
from vpnd.server.tls import make_self_signed

pytestmark = pytest.mark.interop

HAPROXY_SOURCE, SPRAYER, NEIGHBOUR = "127.0.0.9", "127.0.5.1", "127.0.5.2"
DAEMON_PORT, HAPROXY_PORT = 4456, 8446


async def scenario(program: str) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="vpnd-haproxy-throttle-"))
    cert, key = make_self_signed(work, "vpn.test")
    daemon = Daemon(daemon_config(cert, key, DAEMON_PORT, 86, **{
        "accept-proxy-protocol": True, "proxy-protocol-source": [f"{HAPROXY_SOURCE}/32"],
        "limits": {"authentication-failure-delay": 2, "authentication-spraying-threshold": 5}}),
        listen_host="127.0.0.1", ifname_prefix="hpt")
    haproxy = HAProxy(program, work / "haproxy", [
        Route("throttle", HAPROXY_PORT, DAEMON_PORT, send_proxy="v2", source=HAPROXY_SOURCE)])
    await daemon.start()
    haproxy.start()
    result: dict[str, Any] = {}
    try:
        result["baseline"] = await attempt(HAPROXY_PORT, "bob", NEIGHBOUR, daemon=daemon)
        result["sprayed"] = [await attempt(HAPROXY_PORT, f"user{i}", SPRAYER, right=False, daemon=daemon)
                             for i in range(6)]
        result["dave_from_sprayer"] = await attempt(HAPROXY_PORT, "dave", SPRAYER, daemon=daemon)
        result["dave_from_neighbour"] = await attempt(HAPROXY_PORT, "dave", NEIGHBOUR, daemon=daemon)
        result["tables"] = daemon.statistics()["auth_throttle"]
    finally:
        result["haproxy_exit"] = haproxy.stop()
        result["haproxy_log"] = haproxy.log()[-2000:]
        await daemon.stop()
    return result


@pytest.fixture(scope="module")
def outcome() -> dict[str, Any]:
    program = require_program("haproxy")
    return run_scenario("tests.interop.test_haproxy_throttle", program)


def test_the_throttle_keys_on_the_clients_behind_the_balancer(outcome: dict[str, Any]) -> None:
    assert outcome["baseline"]["up"], outcome["haproxy_log"]
    assert [login["failure"] for login in outcome["sprayed"]] == ["E=691: Authentication failed"] * 6
    sprayer, neighbour = outcome["dave_from_sprayer"], outcome["dave_from_neighbour"]
    assert sprayer["up"] and sprayer["held"] == {"spraying_address": 1} and sprayer["seconds"] >= 1.0
    assert neighbour["up"] and neighbour["held"] == {}  # same balancer, another client
    tables = outcome["tables"]["tables"]
    assert tables["failing_addresses"] == 1 and tables["spraying_addresses"] == 1


def test_haproxy_stopped_by_pid(outcome: dict[str, Any]) -> None:
    assert outcome["haproxy_exit"] is not None


if __name__ == "__main__":
    print(json.dumps(asyncio.run(scenario(sys.argv[1])), default=str))
    sys.stdout.flush()
