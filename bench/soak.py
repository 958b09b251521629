"""Soak: N sessions churning for a set time, ending by every path; nothing may be left behind.

Two real daemons share one network namespace (their own interface name prefixes), with a real
FreeRADIUS (tests/support/freeradius.py) that authenticates and takes accounting into its detail file:

  radius  (tests.support.daemon, interfaces sstrN): RADIUS authentication, Filter-Id rate limits
          (HTB + IFB per session), Dynamic Authorization; sessions end by client hang-up, TCP
          reset, dead peer (LCP echoes unanswered), Session-Timeout and DAE Disconnect (radclient).
  local   (`vpnd run`, interfaces sstpN): local users with rate limits; sessions end by admin reset
          (control socket) and by a `vpnd configure` commit that deletes the user. Deleting a user
          ends sessions only in mode local, and vpnd accounts to RADIUS only in mode radius, hence
          the second daemon; its sessions have no accounting records to check.

Each of N slots runs one session after another (ClientSession dialers, tests/support/dialer.py,
all in this process): connect, ping the gateway through the tunnel, stay up a random while, end
by the slot's next path in turn. Every --sample-every seconds the daemons' fds and RSS, the
namespace's TUNs, IFBs, routes, tc qdiscs and classes, the pools' leases and the spool files are
sampled. After --duration the slots stop; once both daemons are idle the last sample must equal
the baseline (taken after one warm-up session per daemon), RSS must not keep growing, and the
detail file must hold exactly one Start and one Stop for every session. Prints a table (baseline,
peak, end per resource) and exits 1 when anything leaked or a session went wrong.

usage: python bench/soak.py [--sessions 1000] [--duration 3600] [--sample-every 60] [--json FILE]
Root; everything runs in a namespace of its own, deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.daemon import TestDaemon
from tests.support.dialer import Dialer
from tests.support.freeradius import FreeRadius, running_freeradius
from tests.support.netns import PYTHON, Lab, Namespace
from vpnd.config.definitions import Config
from vpnd.config.model import tree_from_model
from vpnd.control import ControlError, request
from vpnd.paths import Paths
from vpnd.server.tls import make_self_signed

RADIUS_PORT, LOCAL_PORT, DAE_PORT = 4443, 4444, 3799
DAE_SECRET = "soak-dae"
RADIUS_NAS = "soak-radius"  # also the tally key of the radius daemon
LOCAL_DAEMON = "local"  # tally key of the local daemon (no accounting in mode local)
RATE = "2000/1000"  # kbit/s down/up: every session gets HTB classes (and an IFB for upload)


class End(Enum):
    """How a session ends; the slots take them in turn."""

    HANG_UP = "h"  # the client closes SSTP and PPP
    TCP_RESET = "k"  # RST, no goodbye
    DEAD_PEER = "d"  # the client stops answering; the daemon's LCP echoes fail
    SESSION_TIMEOUT = "t"  # Session-Timeout from the Access-Accept
    DAE_DISCONNECT = "x"  # radclient Disconnect-Request (RFC 5176)
    ADMIN_RESET = "a"  # reset user through the control socket
    COMMIT_DELETE = "c"  # `vpnd configure`: delete the user, commit

    @property
    def local(self) -> bool:
        return self in (End.ADMIN_RESET, End.COMMIT_DELETE)

    def user(self, slot: int) -> str:
        return f"{self.value}{slot}"


def password(user: str) -> str:
    return f"pw-{user}"


@dataclass
class Options:
    sessions: int
    duration: float
    sample_every: float
    life_min: float
    life_max: float
    ramp: float
    session_timeout: int
    echo_interval: int
    commit_every: float


# --- the rig: FreeRADIUS, two daemons --------------------------------------------------------------


def radius_users(options: Options) -> str:
    lines = []
    for slot in range(options.sessions):
        for end in End:
            if end.local:
                continue
            user = end.user(slot)
            lines.append(f'{user} Cleartext-Password := "{password(user)}"')
            extra = [f'Filter-Id = "{RATE}"']
            if end is End.SESSION_TIMEOUT:
                extra.append(f"Session-Timeout = {options.session_timeout}")
            lines.append("".join(f"        {item},\n" for item in extra).rstrip(",\n"))
    return "\n".join(lines) + "\n"


def service(cert: Path, key: Path, *, port: int, net: int, options: Options) -> dict[str, Any]:
    size = max(options.sessions, 64)
    prefix = 32 - (2 * size - 1).bit_length()
    return {
        "client-ip-pool": {"P": {"range": [f"10.{net}.0.0/{prefix}"]}}, "default-pool": "P",
        "gateway-address": f"10.{net}.255.254", "port": port,
        # self-signed, so it is its own CA (which `vpnd configure` wants before it commits)
        "ssl": {"cert-file": str(cert), "key-file": str(key), "ca-cert-file": str(cert)},
        "ppp-options": {"lcp-echo-interval": options.echo_interval, "lcp-echo-failure": 2},
    }


def radius_config(radius: FreeRadius, cert: Path, key: Path, options: Options) -> dict[str, Any]:
    sstp = service(cert, key, port=RADIUS_PORT, net=81, options=options)
    sstp["authentication"] = {"mode": "radius", "protocols": ["mschap-v2"], "radius": {
        "server": {"127.0.0.1": {"key": radius.secret, "port": radius.auth_port,
                                 "acct-port": radius.acct_port}},
        "nas-identifier": RADIUS_NAS,
        "dynamic-author": {"server": "127.0.0.1", "port": DAE_PORT, "key": DAE_SECRET},
        "rate-limit": {"enable": True},
    }}
    return {"vpn": {"sstp": sstp}}


def local_config(cert: Path, key: Path, options: Options) -> dict[str, Any]:
    sstp = service(cert, key, port=LOCAL_PORT, net=82, options=options)
    limit = {"download": 2000, "upload": 1000}
    users = {end.user(slot): {"password": password(end.user(slot)), "rate-limit": limit}
             for slot in range(options.sessions) for end in End if end.local}
    sstp["authentication"] = {"mode": "local", "protocols": ["mschap-v2"], "local-users": {"username": users}}
    return {"vpn": {"sstp": sstp}}


@dataclass
class Rig:
    """FreeRADIUS, the two daemons and where their state lives."""

    radius: FreeRadius
    radius_daemon: TestDaemon
    local_daemon: subprocess.Popen[str]
    local_paths: Paths
    lab: Lab

    @property
    def spool_dirs(self) -> list[Path]:
        assert self.radius_daemon.state_dir is not None
        return [self.radius_daemon.state_dir, self.local_paths.state_dir]

    def pids(self) -> dict[str, int]:
        assert self.radius_daemon.process is not None
        return {"radius": self.radius_daemon.process.pid, "local": self.local_daemon.pid}

    def statistics(self) -> dict[str, dict[str, Any]]:
        local: dict[str, Any] = request(self.local_paths.control_socket, "show-statistics")
        return {"radius": self.radius_daemon.statistics()["statistics"], "local": local}


def start_rig(lab: Lab, namespace: Namespace, radius: FreeRadius, work: Path, options: Options) -> Rig:
    cert, key = make_self_signed(work, "vpn.test")
    (work / "radius").mkdir()
    radius_daemon = TestDaemon(lab, namespace, radius_config(radius, cert, key, options), work / "radius",
                               state_dir=work / "radius" / "state", ifname_prefix="sstr")
    radius_daemon.start()
    paths = Paths.from_env(config_dir=work / "local" / "etc", run_dir=work / "local" / "run")
    paths.config_dir.mkdir(parents=True)
    config = Config.model_validate(local_config(cert, key, options))
    paths.saved_config.write_text(tree_from_model(config).to_boot_text(secrets=True))
    local_daemon = lab.start(namespace, PYTHON, "-m", "vpnd.cli.main", "--config-dir", str(paths.config_dir),
                             "--run-dir", str(paths.run_dir), "run", "--listen", "127.0.0.1",
                             "--log-level", "warning", log=work / "local" / "daemon.log")
    radius_daemon.wait_listening(60)
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(ControlError, OSError):
            request(paths.control_socket, "ping", timeout=2)
            break
        if local_daemon.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the local daemon did not come up:\n" +
                               (work / "local" / "daemon.log").read_text(errors="replace")[-3000:])
        time.sleep(0.2)
    return Rig(radius, radius_daemon, local_daemon, paths, lab)


# --- sampling -------------------------------------------------------------------------------------


def _count_json(*argv: str) -> int:
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)
    return len(json.loads(done.stdout or "[]"))


def tc_classes(devices: list[str]) -> int:
    """HTB classes on every device, with one tc process (batch mode)."""
    if not devices:
        return 0
    script = "".join(f"class show dev {device}\n" for device in devices)
    done = subprocess.run(["tc", "-force", "-batch", "-"], input=script, capture_output=True, text=True,
                          check=False, timeout=120)
    return sum(1 for line in done.stdout.splitlines() if line.startswith("class "))


def daemon_memory(pid: int) -> tuple[int, int]:
    """(RSS in KiB, open fds) of a process."""
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


RESOURCES = ("sessions", "fds radius", "fds local", "TUNs", "IFBs", "routes", "tc qdiscs", "tc classes",
             "pool leases", "spool records", "spool files", "RSS radius KiB", "RSS local KiB")
MUST_RETURN = RESOURCES[:11]  # all but RSS, which the allocator keeps: judged by its trend


def sample(rig: Rig) -> dict[str, int]:
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True,
                                      check=True, timeout=120).stdout or "[]")
    stats = rig.statistics()
    row = {
        "sessions": sum(s["sessions"]["starting"] + s["sessions"]["active"] for s in stats.values()),
        "TUNs": _count_json("ip", "-j", "link", "show", "type", "tun"),
        "IFBs": _count_json("ip", "-j", "link", "show", "type", "ifb"),
        "routes": _count_json("ip", "-j", "-4", "route", "show", "table", "all")
        + _count_json("ip", "-j", "-6", "route", "show", "table", "all"),
        "tc qdiscs": _count_json("tc", "-j", "qdisc", "show"),
        "tc classes": tc_classes([link["ifname"] for link in links]),
        "pool leases": sum(pool["used"] for s in stats.values() for pool in s["pools"].values()),
        "spool records": sum(s["accounting"]["spool"]["records"] for s in stats.values()
                             if "accounting" in s),
        "spool files": sum(1 for directory in rig.spool_dirs for path in directory.rglob("*")
                           if path.is_file()),
    }
    for name, pid in rig.pids().items():
        rss, fds = daemon_memory(pid)
        row[f"fds {name}"], row[f"RSS {name} KiB"] = fds, rss
    return row


# --- the churn ------------------------------------------------------------------------------------


@dataclass
class Tally:
    up: Counter[str] = field(default_factory=Counter)  # sessions up, per NAS
    ended: Counter[End] = field(default_factory=Counter)
    connect_failures: list[str] = field(default_factory=list)
    end_failures: list[str] = field(default_factory=list)
    pings_sent: Counter[str] = field(default_factory=Counter)
    pings_answered: Counter[str] = field(default_factory=Counter)
    ping_losses: list[str] = field(default_factory=list)


class Soak:
    def __init__(self, rig: Rig, options: Options) -> None:
        self.rig = rig
        self.options = options
        self.tally = Tally()
        self.stopping = asyncio.Event()
        self.to_delete: set[str] = set()  # users whose commit-delete is due
        self.deleted: set[str] = set()  # users deleted by the last commit, added back by the next
        self.commits: list[str] = []
        self.samples: list[dict[str, Any]] = []
        self.started = 0.0

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        await self.warm_up()
        baseline = await asyncio.to_thread(sample, self.rig)
        self.started = loop.time()
        self.samples.append({"t": 0.0, **baseline})
        print(f"baseline: {baseline}", flush=True)
        sampler = asyncio.create_task(self.sample_periodically())
        committer = asyncio.create_task(self.commit_periodically())
        slots = [asyncio.create_task(self.slot(index)) for index in range(self.options.sessions)]
        await asyncio.sleep(self.options.duration)
        self.stopping.set()
        await asyncio.gather(*slots)
        await self.commit()  # the deletions still due, and every deleted user back
        await self.commit()
        sampler.cancel()
        committer.cancel()
        settled = await self.settle()
        end = await asyncio.to_thread(sample, self.rig)
        self.samples.append({"t": loop.time() - self.started, **end})
        return {"baseline": baseline, "end": end, "settled_after": settled}

    async def warm_up(self) -> None:
        """One session per daemon, so lazily opened sockets and caches count in the baseline."""
        for end in (End.HANG_UP, End.ADMIN_RESET):
            dialer = await self.dial(end, 0)
            if dialer is None:
                raise RuntimeError(f"warm-up session failed: {self.tally.connect_failures}")
            await dialer.hang_up()
        self.tally = Tally()
        await self.settle()

    async def settle(self, timeout: float = 300) -> float:
        """Seconds until both daemons have no session and an empty spool."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            stats = await asyncio.to_thread(self.rig.statistics)
            busy = sum(s["sessions"]["starting"] + s["sessions"]["active"] for s in stats.values())
            busy += sum(s["accounting"]["spool"]["records"] + s["accounting"]["in_flight"]
                        for s in stats.values() if "accounting" in s)
            if busy == 0:
                await asyncio.sleep(2)  # kernel objects go just after the session
                return round(time.monotonic() - started, 1)
            await asyncio.sleep(1)
        return -1.0

    async def sample_periodically(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.options.sample_every)
            row = await asyncio.to_thread(sample, self.rig)
            self.samples.append({"t": round(loop.time() - self.started, 1), **row})
            print(f"t={self.samples[-1]['t']:7.1f}s " + " ".join(f"{k}={v}" for k, v in row.items())
                  + f" | up={sum(self.tally.up.values())} connect_failures={len(self.tally.connect_failures)}"
                  f" end_failures={len(self.tally.end_failures)}", flush=True)

    async def commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.options.commit_every)
            await self.commit()

    async def commit(self) -> None:
        due, back = sorted(self.to_delete), sorted(self.deleted - self.to_delete)
        if not due and not back:
            return
        self.to_delete -= set(due)
        base = ["vpn", "sstp", "authentication", "local-users", "username"]
        lines = [" ".join(["delete", *base, user]) for user in due]
        lines += [" ".join(["set", *base, user, "password", password(user)]) for user in back]
        lines += [" ".join(["set", *base, user, "rate-limit", direction, speed])
                  for user in back for direction, speed in (("download", "2000"), ("upload", "1000"))]
        lines.append("commit")
        paths = self.rig.local_paths
        process = await asyncio.create_subprocess_exec(
            PYTHON, "-m", "vpnd.cli.main", "--config-dir", str(paths.config_dir),
            "--run-dir", str(paths.run_dir), "configure", "-", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        out, _ = await process.communicate(("\n".join(lines) + "\n").encode())
        if process.returncode != 0:
            self.commits.append(f"rc={process.returncode}: {out.decode(errors='replace')[-500:]}")
            self.to_delete |= set(due)  # tried again at the next commit
            return
        self.deleted = (self.deleted - set(back)) | set(due)
        said = out.decode(errors="replace")[-300:]
        self.commits.append(f"deleted {len(due)}, added back {len(back)}: {said}")

    async def dial(self, end: End, slot: int) -> Dialer | None:
        user = end.user(slot)
        dialer = Dialer("127.0.0.1", LOCAL_PORT if end.local else RADIUS_PORT, user, password(user))
        try:
            await asyncio.wait_for(dialer.connect(), 60)
            await asyncio.wait_for(dialer.up.wait(), 60)
        except (TimeoutError, OSError) as error:
            self.tally.connect_failures.append(f"{user}: {error!r} {dialer.close_reason or ''}".strip())
            await dialer.hang_up()
            return None
        self.tally.up[LOCAL_DAEMON if end.local else RADIUS_NAS] += 1
        return dialer

    async def slot(self, index: int) -> None:
        ends = list(End)
        turn = index % len(ends)
        await self._pause(random.uniform(0, self.options.ramp))
        while not self.stopping.is_set():
            end = ends[turn % len(ends)]
            turn += 1
            dialer = await self.dial(end, index)
            if dialer is None:
                await self._pause(5)
                continue
            self.tally.pings_sent[end.name] += 2
            answered = await dialer.ping(2, timeout=10)
            self.tally.pings_answered[end.name] += answered
            if answered < 2:
                self.tally.ping_losses.append(f"{dialer.username} {dialer.address}: {answered}/2 "
                                              f"at t={asyncio.get_running_loop().time() - self.started:.0f}s")
            await self._pause(random.uniform(self.options.life_min, self.options.life_max))
            await self.end(dialer, end)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def end(self, dialer: Dialer, end: End) -> None:
        ends_by_server: dict[End, Callable[[], Awaitable[Any]]] = {
            End.DEAD_PEER: self._silence(dialer),
            End.SESSION_TIMEOUT: self._nothing,
            End.DAE_DISCONNECT: self._disconnect(dialer.username),
            End.ADMIN_RESET: self._admin_reset(dialer.username),
            End.COMMIT_DELETE: self._delete(dialer.username),
        }
        if end is End.HANG_UP:
            await dialer.hang_up()
        elif end is End.TCP_RESET:
            await dialer.reset_connection()
        else:
            await ends_by_server[end]()
            allowed = (self.options.echo_interval * 4 + 30 if end is End.DEAD_PEER
                       else self.options.session_timeout + 60 if end is End.SESSION_TIMEOUT
                       else self.options.commit_every + 120)
            try:
                await asyncio.wait_for(dialer.ended.wait(), allowed)
            except TimeoutError:
                self.tally.end_failures.append(f"{dialer.username}: {end.name} did not end it in {allowed} s")
            await dialer.hang_up()
        self.tally.ended[end] += 1

    @staticmethod
    async def _nothing() -> None:
        return None

    @staticmethod
    def _silence(dialer: Dialer) -> Callable[[], Awaitable[None]]:
        async def go() -> None:
            dialer.go_silent()
        return go

    def _disconnect(self, user: str) -> Callable[[], Awaitable[None]]:
        async def go() -> None:
            process = await asyncio.create_subprocess_exec(
                "radclient", "-r", "3", "-t", "5", f"127.0.0.1:{DAE_PORT}", "disconnect", DAE_SECRET,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT)
            out, _ = await process.communicate(f'User-Name = "{user}"\n'.encode())
            if process.returncode != 0:
                said = out.decode(errors="replace")[-200:]
                self.tally.end_failures.append(f"{user}: radclient rc={process.returncode} {said}")
        return go

    def _admin_reset(self, user: str) -> Callable[[], Awaitable[None]]:
        async def go() -> None:
            try:
                await asyncio.to_thread(request, self.rig.local_paths.control_socket, "reset", user=user)
            except (ControlError, OSError) as error:
                self.tally.end_failures.append(f"{user}: reset failed: {error}")
        return go

    def _delete(self, user: str) -> Callable[[], Awaitable[None]]:
        async def go() -> None:
            self.to_delete.add(user)
        return go


# --- verdict --------------------------------------------------------------------------------------


def accounting_check(radius: FreeRadius, tally: Tally) -> tuple[list[str], int]:
    """Exactly one Start and one Stop per session, and as many sessions as came up; and how many
    records the detail file holds twice.

    A record written twice attribute for attribute (Acct-Delay-Time and Event-Timestamp included)
    is one packet that the NAS retransmitted unchanged after its timeout, as RFC 5080 2.2.1 asks;
    FreeRADIUS keeps no reply cache for accounting and logs such a copy again. It counts once here
    and is reported; a second record that differs in anything is a second record and fails.
    """
    problems = []
    copies = 0
    for nas in (RADIUS_NAS,):
        kinds: dict[str, Counter[str]] = {}
        seen: set[str] = set()
        for record in radius.detail_records():
            if record.get("NAS-Identifier") != [nas] or "Acct-Session-Id" not in record:
                continue
            status = record["Acct-Status-Type"][0]
            if status not in ("Start", "Stop"):
                continue
            # FreeRADIUS adds Timestamp when it writes; the rest is what the NAS sent
            sent = json.dumps({k: v for k, v in record.items() if k != "Timestamp"}, sort_keys=True)
            if sent in seen:
                copies += 1
                continue
            seen.add(sent)
            kinds.setdefault(record["Acct-Session-Id"][0], Counter())[status] += 1
        wrong = {sid: dict(c) for sid, c in kinds.items() if c != Counter({"Start": 1, "Stop": 1})}
        if wrong:
            problems.append(f"{nas}: {len(wrong)} session(s) without exactly one Start and one Stop, "
                            f"e.g. {list(wrong.items())[:5]}")
        if len(kinds) != tally.up[nas] + 1:  # + the warm-up session
            problems.append(f"{nas}: {len(kinds)} sessions in the detail file, {tally.up[nas] + 1} came up")
    return problems, copies


def rss_trend(samples: list[dict[str, Any]], name: str) -> str | None:
    """RSS of the last third of the churn samples against the middle third: a leak keeps growing."""
    churn = samples[1:-1]
    third = len(churn) // 3
    if third == 0:
        return None
    middle = sum(s[name] for s in churn[third:2 * third]) / third
    last = sum(s[name] for s in churn[-third:]) / third
    if last > middle * 1.10 + 8192:
        return f"{name} keeps growing: {middle:.0f} -> {last:.0f} KiB (middle vs last third of the run)"
    return None


def table(samples: list[dict[str, Any]], baseline: dict[str, int], end: dict[str, int]) -> str:
    lines = [f"{'resource':16s} {'baseline':>10s} {'peak':>10s} {'end':>10s}  verdict"]
    for name in RESOURCES:
        peak = max(s[name] for s in samples)
        verdict = ("ok" if end[name] == baseline[name] else "LEAK") if name in MUST_RETURN else "trend"
        lines.append(f"{name:16s} {baseline[name]:>10d} {peak:>10d} {end[name]:>10d}  {verdict}")
    return "\n".join(lines)


def inside(args: argparse.Namespace, options: Options) -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = Path(tempfile.mkdtemp(prefix="vpnd-soak-"))
    lab = Lab()
    wall = time.monotonic()
    with running_freeradius(radius_users(options)) as radius:
        rig = start_rig(lab, Namespace(args.namespace), radius, work, options)
        try:
            soak = Soak(rig, options)
            result = asyncio.run(soak.run())
        finally:
            lab.cleanup()  # the daemons: SIGTERM by PID
        accounting, copies = accounting_check(radius, soak.tally)
        with contextlib.suppress(FileNotFoundError):
            shutil.copy(radius.detail_path, work / "radius-detail")  # kept with the logs on failure
    baseline, end = result["baseline"], result["end"]
    leaks = [f"{name}: baseline {baseline[name]}, end {end[name]}" for name in MUST_RETURN
             if end[name] != baseline[name]]
    leaks += [trend for name in ("RSS radius KiB", "RSS local KiB")
              if (trend := rss_trend(soak.samples, name))]
    tally = soak.tally
    report = {
        "options": options.__dict__, "wall_s": round(time.monotonic() - wall, 1),
        "settled_after_s": result["settled_after"], "baseline": baseline, "end": end,
        "peak": {name: max(s[name] for s in soak.samples) for name in RESOURCES},
        "samples": soak.samples, "sessions_up": dict(tally.up),
        "ended": {end_kind.name: count for end_kind, count in tally.ended.items()},
        "connect_failures": tally.connect_failures, "end_failures": tally.end_failures,
        "ping_losses": tally.ping_losses, "pings_sent": dict(tally.pings_sent),
        "pings_answered": dict(tally.pings_answered),
        "commits": soak.commits, "failed_commits": [c for c in soak.commits if c.startswith("rc=")],
        "leaks": leaks, "accounting_problems": accounting, "detail_retransmitted_copies": copies,
        "work_dir": str(work), "namespace": args.namespace,
    }
    print(table(soak.samples, baseline, end))
    print(f"sessions up: {dict(tally.up)}; ended by: {report['ended']}")
    print(f"pings answered {dict(tally.pings_answered)} of {dict(tally.pings_sent)}; "
          f"commits {len(soak.commits)}; settled {result['settled_after']} s after the churn")
    print(f"connect failures: {len(tally.connect_failures)} {tally.connect_failures[:5]}")
    print(f"end failures: {len(tally.end_failures)} {tally.end_failures[:5]}")
    print(f"accounting: {accounting or 'one Start and one Stop per session'}; {copies} record(s) "
          f"logged twice by FreeRADIUS (unchanged retransmissions after the NAS's timeout)")
    print(f"leaks: {leaks or 'none'}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    failed = bool(leaks or accounting or tally.end_failures or report["failed_commits"]
                  or len(tally.connect_failures) > max(2, sum(tally.up.values()) // 100))
    if failed:
        print(f"FAILED; the daemons' logs are in {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


def options_from(args: argparse.Namespace) -> Options:
    life_max = args.life_max or max(20.0, args.duration / 4)
    return Options(
        sessions=args.sessions, duration=args.duration, sample_every=args.sample_every,
        life_min=args.life_min or life_max / 3, life_max=life_max,
        ramp=args.ramp if args.ramp is not None else min(args.duration / 4, args.sessions / 2),
        session_timeout=args.session_timeout or max(5, int(life_max / 2)),
        echo_interval=args.echo_interval, commit_every=args.commit_every)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1000, help="sessions churning at once (default 1000)")
    parser.add_argument("--duration", type=float, default=3600, help="seconds of churn (default 3600)")
    parser.add_argument("--sample-every", type=float, default=60, help="seconds between samples (default 60)")
    parser.add_argument("--life-min", type=float, help="shortest session, s (default life-max / 3)")
    parser.add_argument("--life-max", type=float, help="longest session, s (default duration / 4, >= 20)")
    parser.add_argument("--ramp", type=float,
                        help="seconds over which the slots start (default sessions / 2, <= duration / 4)")
    parser.add_argument("--session-timeout", type=int,
                        help="Session-Timeout from RADIUS, s (default life-max / 2)")
    parser.add_argument("--echo-interval", type=int, default=10, help="LCP echo interval, s (2 missed: dead)")
    parser.add_argument("--commit-every", type=float, default=15, help="seconds between deleting commits")
    parser.add_argument("--json", help="write the full report (samples, failures) here")
    parser.add_argument("--namespace", help=argparse.SUPPRESS)  # set when running inside it
    args = parser.parse_args()
    options = options_from(args)
    # SIGTERM unwinds like Ctrl-C: the daemons, FreeRADIUS and the namespace are taken down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.namespace:
        return inside(args, options)
    if os.geteuid() != 0:
        parser.error("needs root (network namespace, TUN, tc)")
    lab = Lab()
    try:
        namespace = lab.namespace()
        forwarded = sys.argv[1:]
        process = lab.start(namespace, PYTHON, str(Path(__file__).resolve()), *forwarded,
                            "--namespace", namespace.name)
        return process.wait()
    finally:
        for process in lab.processes:
            lab.stop(process, timeout=120)  # time to stop its daemons and FreeRADIUS
        lab.cleanup()


if __name__ == "__main__":
    sys.exit(main())
