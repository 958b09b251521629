"""extended-scripts as child processes: pppd_compat's arguments and variables, time limit,
failures in the log, the loop never waiting. Real /bin/sh scripts; about 3 s."""

from __future__ import annotations

import asyncio
import logging
import time
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from pathlib import Path

import pytest

from vpnd.config.definitions import SstpServer
from vpnd.server.scripts import Hook, ScriptResult, ScriptRunner, SessionCounters, SessionFacts

FACTS = SessionFacts(
    ifname="sstp4", username="alice", session_id="0000000a", calling_station_id="192.0.2.7",
    called_station_id="198.51.100.1", local=IPv4Address("10.66.255.1"), remote=IPv4Address("10.66.0.9"),
    ipv6_address=(IPv6Address("2001:db8:66:1::42"), 64), delegated_prefix=IPv6Network("2001:db8:6600::/56"),
)
RECORD = '#!/bin/sh\n{ printf "%s\\n" "$@"; echo ---; env | sort; } > "$0.out"\n'


def script(directory: Path, name: str, body: str) -> str:
    path = directory / name
    path.write_text(body)
    path.chmod(0o755)
    return str(path)


def runner(sstp_scripts: dict[str, object]) -> ScriptRunner:
    sstp = SstpServer.model_validate({"extended-scripts": sstp_scripts})
    scripts = ScriptRunner()
    scripts.configure(sstp)
    return scripts


async def run_one(scripts: ScriptRunner, hook: Hook, facts: SessionFacts = FACTS) -> tuple[ScriptResult, int]:
    """The result, and how often the loop ran something else meanwhile."""
    done: asyncio.Future[ScriptResult] = asyncio.get_running_loop().create_future()
    scripts.run(hook, facts, done.set_result)
    ticks = 0
    while not done.done():
        await asyncio.sleep(0.01)
        ticks += 1
    return done.result(), ticks


def alive(pid: int, wait: float = 5.0) -> bool:
    """Whether ``pid`` still runs (a killed process whose parent has gone may stay a zombie
    until it is reaped: that counts as dead)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.05)
    return True


def recorded(path: str) -> tuple[list[str], dict[str, str]]:
    arguments, _, environment = Path(path + ".out").read_text().partition("---\n")
    return arguments.splitlines(), dict(line.split("=", 1) for line in environment.splitlines())


def test_arguments_and_variables_are_pppd_compat_s(tmp_path: Path) -> None:
    up = script(tmp_path, "up", RECORD)
    result, _ = asyncio.run(run_one(runner({"on-up": up}), Hook.UP))
    assert result.ok
    arguments, env = recorded(up)
    assert arguments == ["sstp4", "none", "0", "10.66.255.1", "10.66.0.9", "192.0.2.7"]
    assert {k: v for k, v in env.items() if k not in ("PWD", "SHLVL", "_")} == {
        "PEERNAME": "alice", "CALLING_SID": "192.0.2.7", "CALLED_SID": "198.51.100.1",
        "IPV6_PREFIX": "2001:db8:66:1::42/64", "IPV6_DELEGATED_PREFIX": "2001:db8:6600::/56",
        "IFNAME": "sstp4", "IPLOCAL": "10.66.255.1", "IPREMOTE": "10.66.0.9", "SESSION_ID": "0000000a",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    }


def test_on_down_gets_the_session_totals(tmp_path: Path) -> None:
    down = script(tmp_path, "down", RECORD)
    facts = SessionFacts("sstp5", "bob", "0000000b", "192.0.2.8", "198.51.100.1",
                         counters=SessionCounters(61, 1000, 2000, 10, 20))
    result, _ = asyncio.run(run_one(runner({"on-down": down}), Hook.DOWN, facts))
    assert result.ok
    arguments, env = recorded(down)
    assert arguments == ["sstp5", "none", "0", "0.0.0.0", "0.0.0.0", "192.0.2.8"]  # no IPv4
    assert (env["CONNECT_TIME"], env["BYTES_SENT"], env["BYTES_RCVD"], env["PACKETS_SENT"],
            env["PACKETS_RCVD"]) == ("61", "1000", "2000", "10", "20")
    assert "IPLOCAL" not in env and "IPV6_PREFIX" not in env


def test_a_hanging_script_is_killed_at_its_time_limit_without_holding_the_loop(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pid_file = tmp_path / "pid"
    # It leaves a child behind too: the whole process group goes.
    hang = script(tmp_path, "hang", f'#!/bin/sh\nsleep 60 &\necho $! > {pid_file}\necho started\nwait\n')
    with caplog.at_level(logging.WARNING, logger="vpnd.scripts"):
        result, ticks = asyncio.run(run_one(runner({"on-up": hang, "timeout": 1}), Hook.UP))
    assert result.timed_out and not result.ok and result.output == "started"
    assert ticks >= 20  # the loop ran all along (one tick per 10 ms of a 1 s limit, generously)
    assert not alive(int(pid_file.read_text()))
    assert any("on-up script" in r.getMessage() and "timed out and was killed" in r.getMessage()
               and "sstp4 alice" in r.getMessage() for r in caplog.records)


def test_failures_are_logged_with_their_output(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    failing = script(tmp_path, "failing", "#!/bin/sh\necho 'no route to the billing system' >&2\nexit 3\n")
    with caplog.at_level(logging.WARNING, logger="vpnd.scripts"):
        result, _ = asyncio.run(run_one(runner({"on-pre-up": failing}), Hook.PRE_UP))
        missing, _ = asyncio.run(run_one(runner({"on-change": str(tmp_path / "gone")}), Hook.CHANGE))
    assert result.returncode == 3 and not result.ok
    assert missing.returncode is None and missing.error
    messages = [r.getMessage() for r in caplog.records]
    assert any("on-pre-up script" in m and "exited with status 3" in m
               and "no route to the billing system" in m for m in messages)
    assert any("on-change script" in m and "could not start" in m for m in messages)


def test_unconfigured_hooks_run_nothing_and_close_kills_what_runs(tmp_path: Path) -> None:
    async def scenario() -> tuple[bool, int, int]:
        scripts = runner({"on-down": script(tmp_path, "slow", "#!/bin/sh\nsleep 60\n")})
        called: list[ScriptResult] = []
        scripts.run(Hook.UP, FACTS, called.append)  # no on-up: nothing starts
        scripts.run(Hook.DOWN, FACTS, called.append)
        await asyncio.sleep(0.2)
        running = scripts.running
        await scripts.close(grace=0.2)
        return scripts.configured(Hook.UP), running, scripts.running

    assert asyncio.run(scenario()) == (False, 1, 0)
