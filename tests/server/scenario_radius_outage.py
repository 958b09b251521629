"""RADIUS outage, daemon crash and session ends (run inside a namespace by test_radius_outage.py).

Real FreeRADIUS, real TLS dialers, real TUNs. Three daemons, one after another or side by side,
each with its own NAS-Identifier so the shared detail file tells their records apart:

* ``vpnd-outage`` (in this process): sessions come up; more sessions end by Session-Timeout,
  Idle-Timeout, `vpnd reset user` through the control socket, and the client's hang-up; then
  FreeRADIUS is stopped (SIGTERM by its PID) for about 5 s while a session ends and
  Interim-Updates fall due, and started again: the spool must deliver every record.
* then, side by side:
  ``vpnd-crash`` (the test launcher, a process of its own): a session, SIGKILL, then the same
  state directory again; and ``vpnd-echo`` (in this process): LCP echoes every second, a
  session with Idle-Timeout 3 that carries no user traffic.

Blocking work (starting and stopping FreeRADIUS, the CLI) runs off the event loop the daemons
answer on. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.support.dialer import Dialer
from tests.support.freeradius import FreeRadius, running_freeradius
from tests.support.netns import PYTHON, REPO
from vpnd.aaa.accounting import Accounting, AccountingSession
from vpnd.config.definitions import Config
from vpnd.paths import Paths
from vpnd.server.control import ControlServer
from vpnd.server.daemon import Daemon
from vpnd.server.tls import make_self_signed

OUTAGE_PORT, ECHO_PORT, CRASH_PORT = 4443, 4444, 4445
OUTAGE_SECONDS = 5.0
INTERIM = 10  # Acct-Interim-Interval from the Access-Accept; also the daemon's floor

USERS = """\
steady1 Cleartext-Password := "pw-steady1"
        Acct-Interim-Interval = 10
steady2 Cleartext-Password := "pw-steady2"
        Acct-Interim-Interval = 10
leaver  Cleartext-Password := "pw-leaver"
        Acct-Interim-Interval = 10
timed   Cleartext-Password := "pw-timed"
        Session-Timeout = 3
idler   Cleartext-Password := "pw-idler"
        Idle-Timeout = 3
resetme Cleartext-Password := "pw-resetme"
quitter Cleartext-Password := "pw-quitter"
echoer  Cleartext-Password := "pw-echoer"
        Idle-Timeout = 3
crashed Cleartext-Password := "pw-crashed"
        Class = "cls-crashed"
"""


def daemon_config(radius: FreeRadius, cert: Path, key: Path, *, port: int, nas: str, net: int,
                  lcp_echo_interval: int = 30) -> dict[str, Any]:
    """A RADIUS NAS on ``port`` with the pool 10.<net>.0.0/24; fast RADIUS tries (1 s, 2 tries)."""
    return {"vpn": {"sstp": {
        "authentication": {"mode": "radius", "radius": {
            "server": {"127.0.0.1": {"key": radius.secret, "port": radius.auth_port,
                                     "acct-port": radius.acct_port}},
            "nas-identifier": nas, "timeout": 1, "max-try": 2,
            "acct-timeout": 0,  # sessions outlive the outage (tests/server/test_acct_timeout.py ends them)
        }},
        "client-ip-pool": {"P": {"range": [f"10.{net}.0.0/24"]}}, "default-pool": "P",
        "gateway-address": f"10.{net}.255.1", "port": port,
        "ssl": {"cert-file": str(cert), "key-file": str(key)},
        "ppp-options": {"lcp-echo-interval": lcp_echo_interval},
    }}}


def password(user: str) -> str:
    return f"pw-{user}"


async def dial(port: int, user: str) -> Dialer:
    dialer = Dialer("127.0.0.1", port, user, password(user))
    await dialer.connect()
    await asyncio.wait_for(dialer.up.wait(), 15)
    return dialer


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``condition()`` held; raises on timeout."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def spool_records(daemon: Daemon) -> int:
    accounting = daemon.statistics()["accounting"]
    assert isinstance(accounting, dict)
    return int(accounting["spool"]["records"])


def count_recorded(accounting: Accounting, recorded: list[tuple[str, str]]) -> None:
    """Note every Start, Interim-Update and Stop the spool took (the method returned True)."""
    methods: list[tuple[str, str]] = [("start", "Start"), ("interim", "Interim-Update"), ("stop", "Stop")]
    for name, status in methods:
        original: Callable[..., Awaitable[bool]] = getattr(accounting, name)

        async def counted(session: AccountingSession, *args: object,
                          _original: Callable[..., Awaitable[bool]] = original,
                          _status: str = status) -> bool:
            done = await _original(session, *args)
            if done:
                recorded.append((session.acct_session_id, _status))
            return done

        setattr(accounting, name, counted)


def records_of(radius: FreeRadius, nas: str) -> list[dict[str, list[str]]]:
    return [r for r in radius.detail_records() if r.get("NAS-Identifier") == [nas]]


async def vpnd_cli(paths: Paths, *argv: str) -> str:
    process = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "vpnd.cli.main", "--config-dir", str(paths.config_dir), "--run-dir", str(paths.run_dir),
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=REPO)
    out, _ = await process.communicate()
    return f"rc={process.returncode} {out.decode(errors='replace').strip()}"


async def links() -> list[str]:
    process = await asyncio.create_subprocess_exec("ip", "-j", "link", stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    return [link["ifname"] for link in json.loads(out)]


# --- session ends ------------------------------------------------------------------------------


async def session_ends(daemon: Daemon, paths: Paths) -> dict[str, Any]:
    """Session-Timeout, Idle-Timeout, reset through the control socket, hang-up; how long each took."""
    dialers = {user: await dial(OUTAGE_PORT, user) for user in ("timed", "idler", "resetme", "quitter")}
    started = time.monotonic()
    result: dict[str, Any] = {"reset_cli": await vpnd_cli(paths, "reset", "user", "resetme")}
    await dialers["quitter"].hang_up()
    for user in ("timed", "idler", "resetme"):
        await asyncio.wait_for(dialers[user].ended.wait(), 10)
    result["durations"] = {user: round(time.monotonic() - started, 2) for user in ("timed", "idler")}
    result["client_reasons"] = {user: dialer.close_reason for user, dialer in dialers.items()}
    return result


async def idle_with_keepalives(radius: FreeRadius, cert: Path, key: Path, work: Path) -> dict[str, Any]:
    """Idle-Timeout 3 on a daemon that sends LCP echoes every second; nothing else is sent."""
    config = Config.model_validate(daemon_config(radius, cert, key, port=ECHO_PORT, nas="vpnd-echo", net=77,
                                                 lcp_echo_interval=1))
    daemon = Daemon(config, listen_host="127.0.0.1", state_dir=work / "state-echo", ifname_prefix="sstpe")
    await daemon.start()
    try:
        dialer = await dial(ECHO_PORT, "echoer")
        started = time.monotonic()
        try:
            await asyncio.wait_for(dialer.ended.wait(), 6)
            ended_after: float | None = round(time.monotonic() - started, 2)
        except TimeoutError:
            ended_after = None
        await dialer.hang_up()
    finally:
        await daemon.stop()
    return {"ended_after": ended_after, "client_reason": dialer.close_reason,
            "detail": records_of(radius, "vpnd-echo")}


# --- outage ------------------------------------------------------------------------------------


async def outage(radius: FreeRadius, cert: Path, key: Path, work: Path) -> dict[str, Any]:
    config = Config.model_validate(daemon_config(radius, cert, key, port=OUTAGE_PORT, nas="vpnd-outage",
                                                 net=78))
    daemon = Daemon(config, listen_host="127.0.0.1", state_dir=work / "state-outage")
    assert daemon.aaa.accounting is not None
    recorded: list[tuple[str, str]] = []
    count_recorded(daemon.aaa.accounting, recorded)
    paths = Paths.from_env(config_dir=work / "config", run_dir=work / "run")
    control = ControlServer(daemon, paths.control_socket)
    await daemon.start()
    await control.start()
    result: dict[str, Any] = {}
    steady = [await dial(OUTAGE_PORT, "steady1")]
    first_up = time.monotonic()
    steady.append(await dial(OUTAGE_PORT, "steady2"))
    leaver = await dial(OUTAGE_PORT, "leaver")
    result["session_ids"] = {c.info.username: c.info.session_id for c in daemon.connections.values()}

    result["ends"] = await session_ends(daemon, paths)
    await wait_for(lambda: spool_records(daemon) == 0, 10, "spool empty before the outage")

    # The outage: from 6 s after the first session came up, so the first Interims fall inside it.
    await asyncio.sleep(max(0.0, first_up + INTERIM - 4 - time.monotonic()))
    await asyncio.to_thread(radius.stop)
    stopped_at = time.monotonic()
    result["stopped_wall"] = time.time()
    await leaver.hang_up()  # its Stop falls into the outage
    result["pings_during_outage"] = [await dialer.ping(3) for dialer in steady]
    await asyncio.sleep(max(0.0, stopped_at + OUTAGE_SECONDS - time.monotonic()))
    result["pending_at_restart"] = spool_records(daemon)
    result["accounting_during_outage"] = daemon.statistics()["accounting"]
    result["restarting_wall"] = time.time()
    await asyncio.to_thread(radius.start)
    result["outage_seconds"] = round(time.monotonic() - stopped_at, 2)
    result["drained_after"] = round(await wait_for(lambda: spool_records(daemon) == 0, 25,
                                                   "spool delivered after the outage"), 2)
    result["pings_after"] = [await dialer.ping(3) for dialer in steady]
    result["sessions_before_stop"] = sorted(str(row["username"]) for row in daemon.sessions())
    for dialer in steady:
        await dialer.hang_up()
    await wait_for(lambda: not daemon.connections, 5, "steady sessions closed")
    await control.stop()
    await daemon.stop()
    result["final_statistics"] = daemon.statistics()
    result["recorded"] = recorded
    result["detail"] = records_of(radius, "vpnd-outage")
    return result


# --- crash -------------------------------------------------------------------------------------


class LaunchedDaemon:
    """tests.support.daemon in its own process (same namespace), with a state directory."""

    def __init__(self, config: dict[str, Any], work: Path, state_dir: Path, *,
                 ready_timeout: float = 20) -> None:
        self.config = config
        self.work = work
        self.state_dir = state_dir
        self.ready_timeout = ready_timeout
        self.stats_path = work / "crash-stats.json"
        self.process: asyncio.subprocess.Process | None = None
        self.runs = 0

    async def start(self) -> None:
        self.runs += 1
        self.stats_path.unlink(missing_ok=True)
        log = open(self.work / f"crash-daemon-{self.runs}.log", "w")  # noqa: SIM115 (the child keeps it)
        self.process = await asyncio.create_subprocess_exec(
            PYTHON, "-m", "tests.support.daemon", "--config", json.dumps(self.config),
            "--stats", str(self.stats_path), "--state-dir", str(self.state_dir),
            stdout=log, stderr=asyncio.subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        log.close()
        process = self.process
        await wait_for(lambda: self.stats_path.exists() or process.returncode is not None, self.ready_timeout,
                       "daemon listening")
        assert process.returncode is None, self.log()

    def log(self) -> str:
        return (self.work / f"crash-daemon-{self.runs}.log").read_text(errors="replace")

    async def dump(self) -> dict[str, Any]:
        assert self.process is not None
        before = json.loads(self.stats_path.read_text())["seq"]
        self.process.send_signal(signal.SIGUSR1)
        await wait_for(lambda: json.loads(self.stats_path.read_text())["seq"] > before, 10, "statistics dump")
        data: dict[str, Any] = json.loads(self.stats_path.read_text())
        return data

    async def signal_and_wait(self, signum: int) -> int:
        assert self.process is not None
        os.kill(self.process.pid, signum)
        code = await asyncio.wait_for(self.process.wait(), 15)
        self.process = None
        return code


async def crash(radius: FreeRadius, cert: Path, key: Path, work: Path) -> dict[str, Any]:
    config = daemon_config(radius, cert, key, port=CRASH_PORT, nas="vpnd-crash", net=76)
    daemon = LaunchedDaemon(config, work, work / "state-crash")
    result: dict[str, Any] = {}
    await daemon.start()
    dialer = await dial(CRASH_PORT, "crashed")
    result["ping_before"] = await dialer.ping(2)
    await wait_for(lambda: any(r["Acct-Status-Type"] == ["Start"] for r in records_of(radius, "vpnd-crash")),
                   10, "Start delivered")
    sessions = (await daemon.dump())["sessions"]
    result["ifname"] = sessions[0]["ifname"]
    result["session_id"] = sessions[0]["sid"]
    result["links_before_kill"] = await links()
    result["kill_code"] = await daemon.signal_and_wait(signal.SIGKILL)
    await asyncio.wait_for(dialer.ended.wait(), 10)
    result["links_after_kill"] = await links()
    await dialer.hang_up()

    await daemon.start()  # the same state directory
    result["restart_log"] = daemon.log()
    await wait_for(lambda: any(r["Acct-Status-Type"] == ["Stop"] for r in records_of(radius, "vpnd-crash")),
                   15, "NAS-Reboot Stop delivered")
    result["term_code"] = await daemon.signal_and_wait(signal.SIGTERM)
    result["final_statistics"] = json.loads(daemon.stats_path.read_text())["statistics"]
    result["detail"] = records_of(radius, "vpnd-crash")
    return result


async def scenario(work: Path, radius: FreeRadius) -> dict[str, Any]:
    cert, key = make_self_signed(work, "vpn.test")
    result: dict[str, Any] = {"outage": await outage(radius, cert, key, work)}
    # Independent of each other: side by side, on their own ports, pools and interface names.
    result["crash"], result["echo"] = await asyncio.gather(crash(radius, cert, key, work),
                                                           idle_with_keepalives(radius, cert, key, work))
    result["links_at_end"] = await links()
    return result


def main() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="vpnd-radius-outage-"))
    with running_freeradius(USERS) as radius:
        return asyncio.run(scenario(work, radius))


if __name__ == "__main__":
    print(json.dumps(main(), default=str))
    sys.stdout.flush()
