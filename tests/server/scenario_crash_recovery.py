"""Crash hygiene and accounting through an outage (run in a namespace of its own by
tests/server/test_crash_recovery.py; with bigger numbers by bench/crash.py and bench/outage.py).

Two FreeRADIUS servers: ``auth`` (127.0.0.1) answers every Access-Request; ``acct``
(127.0.0.2) takes the accounting (auth sends none) and is the one stopped for the outage. Two
daemons side by side, each in a process of its own with its own state directory, and both naming
their interfaces sstpN: A, under test, and B, a bystander with a few sessions. Every session is
dual stack (a routed /64) and rate limited (Filter-Id: an HTB on the TUN, an IFB for upload).

1. ``--sessions`` sessions to A, ``--others`` to B; every Start answered.
2. Unless ``--no-outage``: the accounting server is stopped (by its PID).
3. ``--rounds`` churn rounds spread over ``--outage`` seconds: a session of A hangs up (an initial
   one, or the last one dialled during the outage) and a new one is dialled; it takes the freed
   name and address, so A holds the same names and addresses throughout.
4. With ``--kill``, halfway through the rounds: SIGKILL A and note what it left in the kernel;
   start it again on the same directories and note what is left once it is ready (nothing of A
   may be; everything of B must be); dial as many sessions as A had.
5. The remaining rounds; the accounting server comes back; the spool drains (seconds, CPU of A).
6. Everyone hangs up, both daemons stop (SIGTERM); the kernel is back to its baseline.

Prints one JSON line: what happened to every session of A (its Acct-Session-Id and how it ended),
the kernel snapshots as differences from the baseline, timings, and the accounting server's
detail records of A and B.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from tests.server.scenario_radius_outage import LaunchedDaemon, records_of
from tests.support.dialer import Dialer
from tests.support.freeradius import FreeRadius, running_freeradius
from tests.support.kernel_state import DeviceState, added, snapshot
from vpnd.net.shaper import ifb_name
from vpnd.server.tls import make_self_signed

AUTH_HOST, ACCT_HOST = "127.0.0.1", "127.0.0.2"
PORT_A, PORT_B = 4447, 4448
NET_A, NET_B = 70, 71  # pools 10.NET.0.0/22 and 2001:db8:NET::/48
NAS_A, NAS_B = "vpnd-crash-a", "vpnd-crash-b"
PASSWORD = "pw-all"
RATE = "8000/2000"  # Filter-Id: download/upload kbit/s
DIAL_AT_ONCE = 20
DIAL_TRIES, DIAL_TIMEOUT = 3, 60.0  # a loaded machine may lose a dial; the daemon is not judged by it


def users(interim: int) -> str:
    reply = [f'Filter-Id = "{RATE}"'] + ([f"Acct-Interim-Interval = {interim}"] if interim else [])
    return f'DEFAULT Cleartext-Password := "{PASSWORD}"\n        ' + ",\n        ".join(reply) + "\n"


def daemon_config(auth: FreeRadius, acct: FreeRadius, cert: Path, key: Path, *, port: int, nas: str,
                  net: int) -> dict[str, Any]:
    return {"vpn": {"sstp": {
        "authentication": {"mode": "radius", "radius": {
            "server": {
                AUTH_HOST: {"key": auth.secret, "port": auth.auth_port, "acct-port": auth.acct_port,
                            "disable-accounting": True},
                # Accounting only: a backup is asked for authentication only when auth is silent.
                ACCT_HOST: {"key": acct.secret, "port": acct.auth_port, "acct-port": acct.acct_port,
                            "backup": True},
            },
            # Generous tries: on a loaded machine a late answer makes a resend (a second record).
            "nas-identifier": nas, "timeout": 10, "max-try": 2, "acct-timeout": 0,
            "rate-limit": {"enable": True},
        }},
        "client-ip-pool": {"P": {"range": [f"10.{net}.0.0/22"]}}, "default-pool": "P",
        "client-ipv6-pool": {"V6": {"prefix": {f"2001:db8:{net}::/48": {"mask": 64}}}},
        "default-ipv6-pool": "V6", "ppp-options": {"ipv6": "allow"},
        "gateway-address": f"10.{net}.255.1", "port": port,
        "ssl": {"cert-file": str(cert), "key-file": str(key)},
    }}}


@dataclass
class Dialled:
    dialer: Dialer
    sid: str = ""
    ifname: str = ""
    ip: str = ""
    ip6: str = ""
    run: int = 1  # which run of A it belonged to
    ended: str = ""  # "hang-up" or "killed"


class Instance:
    """One daemon (a LaunchedDaemon) and the sessions dialled to it."""

    def __init__(self, name: str, config: dict[str, Any], work: Path, ready_timeout: float) -> None:
        directory = work / name
        directory.mkdir()
        self.daemon = LaunchedDaemon(config, directory, directory / "state", ready_timeout=ready_timeout)
        self.port = int(config["vpn"]["sstp"]["port"])
        self.sessions: list[Dialled] = []
        self.names = (f"{name}{n}" for n in itertools.count())
        self.dial_failures: list[str] = []  # dials that did not come up in time and were tried again

    async def dial(self, count: int) -> list[Dialled]:
        gate = asyncio.Semaphore(DIAL_AT_ONCE)

        async def one(user: str) -> Dialled:
            async with gate:
                for _attempt in range(DIAL_TRIES - 1):
                    dialer = Dialer("127.0.0.1", self.port, user, PASSWORD, ipv6=True)
                    try:
                        await dialer.connect()
                        await asyncio.wait_for(dialer.up.wait(), DIAL_TIMEOUT)
                        await asyncio.wait_for(dialer.ipv6_up.wait(), DIAL_TIMEOUT)
                        return Dialled(dialer, run=self.daemon.runs)
                    except (OSError, TimeoutError) as error:
                        self.dial_failures.append(f"{user}: {error!r} ({dialer.close_reason})")
                        await dialer.hang_up()
                dialer = Dialer("127.0.0.1", self.port, user, PASSWORD, ipv6=True)
                await dialer.connect()
                await asyncio.wait_for(dialer.up.wait(), DIAL_TIMEOUT)
                await asyncio.wait_for(dialer.ipv6_up.wait(), DIAL_TIMEOUT)
                return Dialled(dialer, run=self.daemon.runs)

        dialled = list(await asyncio.gather(*(one(next(self.names)) for _ in range(count))))
        rows = {str(row["ip"]): row for row in (await self.daemon.dump())["sessions"]}
        for entry in dialled:
            row = rows[str(entry.dialer.address)]
            entry.sid, entry.ifname, entry.ip, entry.ip6 = row["sid"], row["ifname"], row["ip"], row["ip6"]
        self.sessions += dialled
        return dialled

    def live(self) -> list[Dialled]:
        return [entry for entry in self.sessions if not entry.ended]

    async def hang_up(self, entry: Dialled) -> None:
        await entry.dialer.hang_up()
        entry.ended = "hang-up"

    async def spool_records(self) -> int:
        return int((await self.daemon.dump())["statistics"]["accounting"]["spool"]["records"])

    async def wait_spool_empty(self, timeout: float) -> float:
        started = time.monotonic()
        while await self.spool_records():
            if time.monotonic() - started > timeout:
                raise AssertionError(f"spool not empty within {timeout} s")
            await asyncio.sleep(0.5)
        return time.monotonic() - started

    def kill(self) -> None:
        """On the way out after a failure: nothing of the daemon may outlive the scenario."""
        if self.daemon.process is not None and self.daemon.process.returncode is None:
            self.daemon.process.kill()

    def owned_devices(self) -> set[str]:
        return {name for entry in self.live() for name in (entry.ifname, ifb_name(entry.ifname))}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_of(instance: Instance) -> int:
    assert instance.daemon.process is not None
    return instance.daemon.process.pid


def leftovers(baseline: dict[str, DeviceState], now: dict[str, DeviceState],
              allowed: set[str]) -> dict[str, Any]:
    """What ``now`` holds beyond ``baseline``, except on the ``allowed`` devices."""
    return {name: state for name, state in added(baseline, now).items() if name not in allowed}


async def kernel() -> dict[str, DeviceState]:
    return await asyncio.to_thread(snapshot)


async def churn(a: Instance, rounds: int, spacing: float, churned: list[Dialled]) -> None:
    """Each round: one session of A hangs up (alternately an initial one and the last one dialled
    during the outage), then a new one is dialled."""
    for number in range(rounds):
        await asyncio.sleep(spacing)
        recent = [entry for entry in churned if not entry.ended]
        initial = [entry for entry in a.live() if entry not in churned]
        victim = recent[-1] if number % 2 and recent else initial[0]
        await a.hang_up(victim)
        await asyncio.sleep(0.3)  # the daemon releases the name and address before the next dial
        churned += await a.dial(1)


async def scenario(work: Path, auth: FreeRadius, acct: FreeRadius,
                   options: argparse.Namespace) -> dict[str, Any]:
    cert, key = make_self_signed(work, "vpn.test")
    ready = 30 + options.sessions / 10
    a = Instance("a", daemon_config(auth, acct, cert, key, port=PORT_A, nas=NAS_A, net=NET_A), work, ready)
    b = Instance("b", daemon_config(auth, acct, cert, key, port=PORT_B, nas=NAS_B, net=NET_B), work, ready)
    try:
        return await steps(a, b, acct, options)
    except BaseException:
        a.kill()
        b.kill()
        raise


async def steps(a: Instance, b: Instance, acct: FreeRadius,
                options: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"options": vars(options)}
    baseline = await kernel()
    await asyncio.gather(a.daemon.start(), b.daemon.start())
    started = time.monotonic()
    await b.dial(options.others)
    await a.dial(options.sessions)
    result["dial_seconds"] = round(time.monotonic() - started, 2)
    await asyncio.gather(a.wait_spool_empty(60 + options.sessions / 5), b.wait_spool_empty(60))
    with_sessions = await kernel()
    result["with_sessions"] = {
        "a_ifbs_shaped": sum(1 for e in a.live() if with_sessions[ifb_name(e.ifname)].qdiscs),
        "a_tuns_shaped": sum(1 for e in a.live() if with_sessions[e.ifname].qdiscs >= 3),  # htb leaf ingress
        "a_routes": sum(with_sessions[e.ifname].routes for e in a.live()),
    }
    b_devices = b.owned_devices()

    outage = not options.no_outage
    if outage:
        await asyncio.to_thread(acct.stop)
    outage_started = time.monotonic()
    spacing = options.outage / (options.rounds + 1)
    churned: list[Dialled] = []
    before_kill = options.rounds // 2 if options.kill else options.rounds
    await churn(a, before_kill, spacing, churned)

    if options.kill:
        held = sorted((e.ifname, e.ip, e.ip6) for e in a.live())
        result["held_at_kill"] = len(held)
        result["kill_code"] = await a.daemon.signal_and_wait(signal.SIGKILL)
        for entry in a.live():
            await asyncio.wait_for(entry.dialer.ended.wait(), 30)
            entry.ended = "killed"
        after_kill = await kernel()
        result["left_by_the_dead"] = leftovers(baseline, after_kill, b_devices)
        restart = time.monotonic()
        await a.daemon.start()
        result["ready_after_restart"] = round(time.monotonic() - restart, 2)
        after_restart = await kernel()
        result["left_after_restart"] = leftovers(baseline, after_restart, b_devices)
        result["b_devices_intact"] = all(after_restart.get(name) == with_sessions[name] for name in b_devices)
        result["b_pings_after_restart"] = [await entry.dialer.ping(1) for entry in b.live()]
        cleanup = re.search(r"removed (\d+) devices .* in ([\d.]+) s", a.daemon.log())
        result["cleanup"] = {"devices": int(cleanup[1]), "seconds": float(cleanup[2])} if cleanup else None
        result["restart_log_tail"] = a.daemon.log()[-1500:]
        if not outage:  # the NAS-Reboot Stops go at once
            result["stops_delivered_after_ready"] = round(await a.wait_spool_empty(120 + options.sessions), 2)
        redial = time.monotonic()
        fresh = await a.dial(len(held))
        result["redial_seconds"] = round(time.monotonic() - redial, 2)
        # Names go lowest first (B's skipped): exactly the dead process's. Addresses: the restarted
        # pool starts at its first address again; most of those were the dead process's.
        lowest = [str(ip) for ip in itertools.islice(IPv4Network(f"10.{NET_A}.0.0/22").hosts(), len(held))]
        result["fresh"] = {
            "same_ifnames": sorted(e.ifname for e in fresh) == sorted(name for name, _, _ in held),
            "lowest_addresses": sorted((e.ip for e in fresh), key=IPv4Address) == lowest,
            "addresses_of_the_dead": len({e.ip for e in fresh} & {ip for _, ip, _ in held}),
            "ipv6_prefixes_of_the_dead": len({e.ip6 for e in fresh} & {ip6 for _, _, ip6 in held}),
        }
        await churn(a, options.rounds - before_kill, spacing, churned)

    await asyncio.sleep(max(0.0, outage_started + options.outage - time.monotonic()))
    result["outage_seconds"] = round(time.monotonic() - outage_started, 2) if outage else 0
    result["pending_at_return"] = await a.spool_records()
    if outage:
        cpu_before = cpu_seconds(pid_of(a))
        await asyncio.to_thread(acct.start)
        returned_wall = time.time()
        drain = await a.wait_spool_empty(120 + result["pending_at_return"] / 5)
        arrived = [r for r in records_of(acct, NAS_A) if int(r["Timestamp"][0]) >= int(returned_wall)]
        stamps = sorted(int(r["Timestamp"][0]) for r in arrived)
        result["drain"] = {
            "seconds": round(drain, 2),
            "cpu_seconds": round(cpu_seconds(pid_of(a)) - cpu_before, 2),
            "records": len(arrived),
            "first_after": stamps[0] - returned_wall if stamps else None,
            "spread_seconds": stamps[-1] - stamps[0] if stamps else None,
        }

    for instance in (a, b):
        for entry in instance.live():
            await instance.hang_up(entry)
    await asyncio.gather(a.wait_spool_empty(60), b.wait_spool_empty(60))
    result["term_codes"] = [await a.daemon.signal_and_wait(signal.SIGTERM),
                            await b.daemon.signal_and_wait(signal.SIGTERM)]
    result["left_at_end"] = leftovers(baseline, await kernel(), set())
    result["sessions_a"] = [{"sid": e.sid, "ifname": e.ifname, "ip": e.ip, "run": e.run, "ended": e.ended,
                             "churned": e in churned} for e in a.sessions]
    result["sessions_b"] = [e.sid for e in b.sessions]
    result["dial_failures"] = a.dial_failures + b.dial_failures
    result["detail_a"] = records_of(acct, NAS_A)
    result["detail_b"] = records_of(acct, NAS_B)
    return result


def check_accounting(result: dict[str, Any]) -> dict[str, Any]:
    """A's sessions in the accounting server's detail file: every session has one Start first and
    one Stop last with the cause its end calls for, Interim-Updates between them in order, and no
    record twice. Returns the sessions that break a rule, by rule, and the counts.

    An event is (status, Acct-Session-Time, Event-Timestamp). The same event with another
    Acct-Delay-Time is a resend, a new RADIUS packet sent when no answer came in time (the first
    may have arrived late): counted under "resent", it is the at-least-once RADIUS accounting
    cannot avoid. The same packet twice (same Acct-Delay-Time too) breaks the rule "twice"."""
    sessions = {s["sid"]: s for s in result["sessions_a"]}
    by_session: dict[str, list[dict[str, list[str]]]] = {}
    for record in result["detail_a"]:
        if record["Acct-Status-Type"][0] in ("Start", "Interim-Update", "Stop"):
            by_session.setdefault(record["Acct-Session-Id"][0], []).append(record)
    broken: dict[str, list[str]] = {"missing": sorted(set(sessions) - set(by_session)),
                                    "unknown": sorted(set(by_session) - set(sessions)),
                                    "twice": [], "order": [], "cause": []}
    resent = reboot_stops = 0
    for sid, records in by_session.items():
        seen: dict[tuple[str, str, str], set[str]] = {}
        events: list[dict[str, list[str]]] = []
        for r in records:
            event = (r["Acct-Status-Type"][0], r.get("Acct-Session-Time", ["0"])[0], r["Event-Timestamp"][0])
            delays = seen.setdefault(event, set())
            delay = r.get("Acct-Delay-Time", ["0"])[0]
            if not delays:
                events.append(r)
            elif delay in delays:
                broken["twice"].append(sid)
            else:
                resent += 1
            delays.add(delay)
        kinds = [r["Acct-Status-Type"][0] for r in events]
        times = [int(r.get("Acct-Session-Time", ["0"])[0]) for r in events]
        framed = kinds[0] == "Start" and kinds[-1] == "Stop" and kinds.count("Start") == 1 \
            and kinds.count("Stop") == 1
        if not framed or times != sorted(times):
            broken["order"].append(sid)
        expected = "NAS-Reboot" if sessions.get(sid, {}).get("ended") == "killed" else "User-Request"
        if events[-1].get("Acct-Terminate-Cause") != [expected]:
            broken["cause"].append(sid)
        reboot_stops += events[-1].get("Acct-Terminate-Cause") == ["NAS-Reboot"]
    kinds = Counter(r["Acct-Status-Type"][0] for r in result["detail_a"])
    return {"broken": broken, "resent": resent, "records": dict(kinds), "sessions": len(sessions),
            "nas_reboot_stops": reboot_stops}


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=30, help="sessions of A")
    parser.add_argument("--others", type=int, default=3, help="sessions of B, the bystander")
    parser.add_argument("--rounds", type=int, default=4, help="churn rounds during the outage")
    parser.add_argument("--outage", type=float, default=0.0, help="least seconds accounting is down")
    parser.add_argument("--no-outage", action="store_true", help="keep the accounting server up")
    parser.add_argument("--kill", action="store_true", help="SIGKILL and restart A halfway through")
    parser.add_argument("--interim", type=int, default=0, help="Acct-Interim-Interval (0: none)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    options = parse(argv)
    work = Path(tempfile.mkdtemp(prefix="vpnd-crash-recovery-"))
    with running_freeradius(users(options.interim)) as auth, \
            running_freeradius(users(options.interim), host=ACCT_HOST) as acct:
        return asyncio.run(scenario(work, auth, acct, options))


if __name__ == "__main__":
    print(json.dumps(main(), default=str))
    sys.stdout.flush()
