"""The login throttle on the real daemon: who waits, and who does not (issue 17; run in a
namespace of its own by test_throttle.py, prints JSON). Local users, real TLS and TUN; each
dialer connects from an address of 127.0.0.0/8 of its own choosing, so one namespace holds a
NAT address, twenty addresses of a distributed guesser and a spraying address. The defaults
apply except `authentication-failure-delay 2`, which keeps the waits (and the test) short.

* nat: six wrong passwords for alice from A; then bob, and dave who never logged in from A,
  log in from A as fast as bob did before the failures, while alice's next attempt from A (with
  the right password: success waits like failure) is held.
* many_addresses: alice fails from twenty addresses; alice is held at a twenty-first, not at A
  where she logged in; bob and carol from those addresses are not held.
* spraying: fifty user names fail from S in groups of ten; the groups past the threshold (20)
  are held; then dave is held at S, not elsewhere, and carol, who logged in from S before, is not.
* flood: a second daemon whose tables hold 40 failing and 10 trusted pairs takes failures of
  random names from random addresses and logins from random addresses; the tables stay within
  their bounds and a new user is not held afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.support.probes import LogCollector, dial
from vpnd.config.definitions import Config
from vpnd.server import limits
from vpnd.server.daemon import Daemon
from vpnd.server.tls import make_self_signed

PORT, FLOOD_PORT = 4443, 4444
USERS = ("alice", "bob", "carol", "dave")
NAT, SPRAYER = "127.0.1.1", "127.0.3.1"
FLOOD_PAIRS, FLOOD_TRUSTED = 40, 10


def daemon_config(cert: Path, key: Path, port: int, octet: int, **sstp: Any) -> Config:
    return Config.model_validate({"vpn": {"sstp": {
        "authentication": {"local-users": {"username": {user: {"password": f"{user}-pw"} for user in USERS}}},
        "client-ip-pool": {"P": {"range": [f"10.{octet}.0.0/24"]}}, "default-pool": "P",
        "gateway-address": f"10.{octet}.255.1", "port": port,
        "ssl": {"cert-file": str(cert), "key-file": str(key)},
        "limits": {"authentication-failure-delay": 2}, **sstp,
    }}})


def held(daemon: Daemon) -> dict[str, int]:
    throttle = daemon.statistics()["auth_throttle"]
    assert isinstance(throttle, dict)
    return dict(throttle["held"])


async def attempt(port: int, user: str, source: str, *, right: bool = True, daemon: Daemon | None = None,
                  host: str = "127.0.0.1") -> dict[str, Any]:
    """One login of ``user`` from ``source``: whether it came up, how long it took from the first
    byte to the answer, and (given the daemon) which reasons held it."""
    before = held(daemon) if daemon is not None else {}
    started = asyncio.get_running_loop().time()
    dialer = await dial(port, user, f"{user}-pw" if right else "wrong", host=host, source=source)
    outcome: dict[str, Any] = {"up": dialer.up.is_set(), "failure": dialer.auth_failure,
                               "seconds": round(asyncio.get_running_loop().time() - started, 3)}
    if daemon is not None:
        outcome["held"] = {reason: n - before[reason] for reason, n in held(daemon).items()
                           if n > before[reason]}
    await dialer.hang_up()
    return outcome


async def nat(daemon: Daemon) -> dict[str, Any]:
    await attempt(PORT, "carol", "127.0.1.9")  # warm-up: the first session pays for imports and caches
    result: dict[str, Any] = {"bob_before": await attempt(PORT, "bob", NAT, daemon=daemon)}
    result["alice_wrong"] = [await attempt(PORT, "alice", NAT, right=False, daemon=daemon) for _ in range(6)]
    result["bob_after"] = await attempt(PORT, "bob", NAT, daemon=daemon)
    result["dave_after"] = await attempt(PORT, "dave", NAT, daemon=daemon)  # never logged in from NAT
    result["alice_next"] = await attempt(PORT, "alice", NAT, daemon=daemon)
    return result


async def many_addresses(daemon: Daemon) -> dict[str, Any]:
    guessers = [f"127.0.2.{i}" for i in range(1, 21)]
    result: dict[str, Any] = {"wrong": await asyncio.gather(*(
        attempt(PORT, "alice", source, right=False) for source in guessers))}
    result["alice_elsewhere"] = await attempt(PORT, "alice", "127.0.2.21", daemon=daemon)
    result["alice_at_nat"] = await attempt(PORT, "alice", NAT, daemon=daemon)  # she logged in there
    result["others"] = [await attempt(PORT, user, source, daemon=daemon)
                        for user, source in (("bob", guessers[0]), ("bob", guessers[19]),
                                             ("carol", guessers[7]), ("carol", "127.0.2.21"))]
    result["tables"] = daemon.statistics()["auth_throttle"]
    return result


async def spraying(daemon: Daemon) -> dict[str, Any]:
    result: dict[str, Any] = {"carol_first": await attempt(PORT, "carol", SPRAYER, daemon=daemon)}
    groups = []
    for group in range(5):
        before = held(daemon)
        wrong = await asyncio.gather(*(attempt(PORT, f"user{group * 10 + i:02d}", SPRAYER, right=False)
                                       for i in range(10)))
        groups.append({"failures": sum(not outcome["up"] for outcome in wrong),
                       "held": {reason: n - before[reason] for reason, n in held(daemon).items()}})
    result["groups"] = groups
    result["dave_at_sprayer"] = await attempt(PORT, "dave", SPRAYER, daemon=daemon)
    result["dave_elsewhere"] = await attempt(PORT, "dave", "127.0.3.2", daemon=daemon)
    result["carol_again"] = await attempt(PORT, "carol", SPRAYER, daemon=daemon)
    return result


async def flood(cert: Path, key: Path) -> dict[str, Any]:
    limits.MAX_FAILING_PAIRS, limits.MAX_TRUSTED_PAIRS = FLOOD_PAIRS, FLOOD_TRUSTED
    daemon = Daemon(daemon_config(cert, key, FLOOD_PORT, 85), listen_host="127.0.0.1", ifname_prefix="thf")
    await daemon.start()
    chance = random.Random(17)

    def somewhere() -> str:
        return f"127.{chance.randrange(10, 250)}.{chance.randrange(256)}.{chance.randrange(1, 255)}"

    samples = []
    for _ in range(4):  # 100 failing pairs and 12 trusted ones: more than the tables hold
        names = [f"u{chance.getrandbits(40):x}" for _ in range(25)]
        await asyncio.gather(*(attempt(FLOOD_PORT, name, somewhere(), right=False) for name in names),
                             *(attempt(FLOOD_PORT, "bob", somewhere()) for _ in range(3)))
        samples.append(daemon.statistics()["auth_throttle"]["tables"])  # type: ignore[index]
    result = {"samples": samples, "held": held(daemon),
              "carol_after": await attempt(FLOOD_PORT, "carol", "127.0.9.9", daemon=daemon)}
    await daemon.stop()
    return result


async def scenario(work: Path) -> dict[str, Any]:
    logs = LogCollector.on()
    cert, key = make_self_signed(work, "vpn.test")
    daemon = Daemon(daemon_config(cert, key, PORT, 84), listen_host="127.0.0.1", ifname_prefix="tht")
    await daemon.start()
    result: dict[str, Any] = {"nat": await nat(daemon)}
    result["many_addresses"] = await many_addresses(daemon)
    result["spraying"] = await spraying(daemon)
    result["statistics"] = daemon.statistics()
    await daemon.stop()
    result["flood"] = await flood(cert, key)
    result["info_logs"] = logs.at_least(logging.INFO)
    return result


def main() -> dict[str, Any]:
    return asyncio.run(scenario(Path(tempfile.mkdtemp(prefix="vpnd-throttle-"))))


if __name__ == "__main__":
    print(json.dumps(main(), default=str))
    sys.stdout.flush()
