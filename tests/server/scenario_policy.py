"""Who may log in, and what is answered at the edge, on the real daemon (run in a namespace of its
own by test_abuse.py; prints JSON). A real FreeRADIUS authenticates and records accounting.

* Authentication throttling (`limits authentication-failure-delay 4`): each wrong password for
  alice from 127.0.0.1 makes her next attempt from there wait longer (1, 2, then 4 s); a session
  that is up keeps passing traffic while one waits; the right password, after its wait, resets
  the count. (tests/server/scenario_throttle.py shows who else is, and is not, held.)
* `limits single-session replace`: alice logging in again ends her first session (accounting Stop
  with Acct-Terminate-Cause Port-Preempted); after a commit to `deny` a third login is refused.
* `host-name vpn.test`: a ClientHello naming another host, or none, is refused with a TLS alert,
  an HTTP Host naming another host with 404.
* `http-error`: a GET / is answered 404 (allow), not at all (deny), or 301 to the configured URL.
* With no RADIUS server answering, failed logins are not throttled: they are no verdict.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.hostile.cases import REQUEST, http_request
from tests.support.dialer import Dialer
from tests.support.freeradius import FreeRadius, running_freeradius
from tests.support.probes import LogCollector, dial, tls_exchange
from vpnd.config.definitions import Config
from vpnd.server.daemon import Daemon
from vpnd.server.plan import build_plan
from vpnd.server.tls import make_self_signed

PORT = 4443
USERS = """\
alice   Cleartext-Password := "alice-pw"
bob     Cleartext-Password := "bob-pw"
carol   Cleartext-Password := "carol-pw"
"""
GET_ROOT = b"GET / HTTP/1.1\r\nHost: vpn.test\r\n\r\n"


def config(cert: Path, key: Path, radius: FreeRadius, **sstp: Any) -> Config:
    return Config.model_validate({"vpn": {"sstp": {
        "authentication": {"mode": "radius", "radius": {"server": {"127.0.0.1": {
            "key": "testing123", "port": radius.auth_address[1], "acct-port": radius.acct_address[1]}}}},
        "client-ip-pool": {"P": {"range": ["10.83.0.0/24"]}}, "default-pool": "P",
        "gateway-address": "10.83.255.1", "port": PORT, "host-name": "vpn.test",
        "ssl": {"cert-file": str(cert), "key-file": str(key)},
        "limits": {"authentication-failure-delay": 4, "single-session": "replace"}, **sstp,
    }}})


def held(daemon: Daemon) -> int:
    """Authentication attempts the throttle held, whatever the reason."""
    throttle = daemon.statistics()["auth_throttle"]
    assert isinstance(throttle, dict)
    return sum(throttle["held"].values())


def counter(daemon: Daemon, name: str) -> int:
    counters = daemon.statistics()["counters"]
    assert isinstance(counters, dict)
    return int(counters.get(name, 0))


async def throttling(daemon: Daemon, carol: Dialer) -> dict[str, Any]:
    result: dict[str, Any] = {"wrong": []}
    for attempt in range(3):
        wrong = await dial(PORT, "alice", "not-her-password")
        await asyncio.wait_for(wrong.ended.wait(), 15)
        result["wrong"].append(wrong.auth_failure)
        if attempt == 1:
            result["held_after_two_failures"] = held(daemon)
    # The right password, after three failures: it waits 4 s. Meanwhile carol's traffic flows and
    # alice's connection is still waiting for its answer.
    right = asyncio.ensure_future(dial(PORT, "alice", "alice-pw"))
    while held(daemon) < 3:
        await asyncio.sleep(0.05)
    result["carol_pings_while_alice_waits"] = await carol.ping()
    waiting = [c for c in daemon.connections.values() if c.info.username == "alice" and not c.closed]
    result["alice_waiting"] = [(c.info.state, c.admitted_user) for c in waiting]
    alice = await right
    result["alice_up"] = alice.up.is_set()
    bob = await dial(PORT, "bob", "bob-pw")  # alice's failures never held bob
    result["bob_up"] = bob.up.is_set()
    result["throttled"] = held(daemon)
    await bob.hang_up()
    result["alice"] = alice
    return result


async def single_session(daemon: Daemon, first: Dialer, new_config: Config) -> dict[str, Any]:
    result: dict[str, Any] = {}
    second = await dial(PORT, "alice", "alice-pw")
    await asyncio.wait_for(first.ended.wait(), 10)
    result["replace"] = {"first_reason": first.close_reason, "second_up": second.up.is_set(),
                         "second_pings": await second.ping() if second.up.is_set() else 0,
                         "replaced": counter(daemon, "sessions_replaced")}
    result["apply"] = daemon.apply(build_plan(daemon.config, new_config)).applied
    third = await dial(PORT, "alice", "alice-pw")
    await asyncio.wait_for(third.ended.wait(), 10)
    result["deny"] = {"third_up": third.up.is_set(), "third_failure": third.auth_failure,
                      "second_pings": await second.ping()}
    await second.hang_up()
    return result


async def host_name() -> dict[str, Any]:
    cases = {
        "other_sni": tls_exchange("127.0.0.11", PORT, sni="other.test", data=REQUEST),
        "no_sni": tls_exchange("127.0.0.12", PORT, sni=None, data=REQUEST),
        "upper_case_sni": tls_exchange("127.0.0.13", PORT, sni="VPN.TEST", data=REQUEST, wait=1),
        "other_host": tls_exchange("127.0.0.14", PORT, sni="vpn.test", data=http_request(host="other.test")),
    }
    return dict(zip(cases, await asyncio.gather(*cases.values()), strict=True))


async def http_error(daemon: Daemon, configs: dict[str, Config]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, new in configs.items():
        daemon.apply(build_plan(daemon.config, new))
        result[name] = await tls_exchange("127.0.0.20", PORT, sni="vpn.test", data=GET_ROOT)
    return result


async def radius_down(cert: Path, key: Path, radius: FreeRadius) -> dict[str, Any]:
    """Failures without a verdict (no RADIUS server answers) are not held against the client."""
    nobody = {"mode": "radius", "radius": {"server": {"127.0.0.1": {"key": "testing123", "port": 9}},
                                           "timeout": 1, "max-try": 1}}
    daemon = Daemon(config(cert, key, radius, port=PORT + 1, authentication=nobody),
                    listen_host="127.0.0.1", ifname_prefix="lrd")
    await daemon.start()
    failures = []
    for _ in range(3):
        attempt = await dial(PORT + 1, "alice", "alice-pw")
        await asyncio.wait_for(attempt.ended.wait(), 15)
        failures.append(attempt.auth_failure)
    result = {"failures": failures, "throttled": held(daemon),
              "auth_failed": counter(daemon, "auth_failed")}
    await daemon.stop()
    return result


async def scenario(work: Path, radius: FreeRadius) -> dict[str, Any]:
    logs = LogCollector.on()
    cert, key = make_self_signed(work, "vpn.test")
    daemon = Daemon(config(cert, key, radius), listen_host="127.0.0.1", ifname_prefix="lrc",
                    state_dir=work / "state")
    await daemon.start()
    carol = await dial(PORT, "carol", "carol-pw")
    result: dict[str, Any] = {"carol_up": carol.up.is_set()}
    throttle = await throttling(daemon, carol)
    alice = throttle.pop("alice")
    result["throttling"] = throttle
    deny = config(cert, key, radius, limits={"authentication-failure-delay": 4, "single-session": "deny"})
    result["single_session"] = await single_session(daemon, alice, deny)
    result["host_name"] = await host_name()
    result["http_error"] = await http_error(daemon, {
        mode: config(cert, key, radius, **{"http-error": mode})
        for mode in ("allow", "deny", "https://portal.example.com/")})
    result["radius_down"] = await radius_down(cert, key, radius)
    await carol.hang_up()
    await asyncio.sleep(1.5)  # the Stops go out through the spool
    result["statistics"] = daemon.statistics()
    result["logs"] = logs.lines
    result["info_logs"] = logs.at_least(logging.INFO)
    await daemon.stop()
    result["detail"] = radius.detail_records()
    return result


def main() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="vpnd-policy-"))
    with running_freeradius(USERS) as radius:
        return asyncio.run(scenario(work, radius))


if __name__ == "__main__":
    print(json.dumps(main(), default=str))
    sys.stdout.flush()
