"""`vpn sstp extended-scripts`: operator scripts run at session events, as accel-ppp's pppd_compat
module runs them for VyOS (on-pre-up, on-up, on-down, on-change).

A script gets what pppd_compat gives it. Arguments, in pppd's order: interface, tty ("none"),
speed ("0"), local IPv4 address, remote IPv4 address, Calling-Station-Id. Environment: PEERNAME,
CALLING_SID, CALLED_SID, IPV6_PREFIX and IPV6_DELEGATED_PREFIX when the session has them and, for
on-down, CONNECT_TIME, BYTES_SENT, BYTES_RCVD, PACKETS_SENT, PACKETS_RCVD (sent = to the client).
vpnd adds pppd's own IFNAME, IPLOCAL, IPREMOTE, its SESSION_ID (the Acct-Session-Id) and a PATH.

Scripts run as child processes awaited by the event loop, never waited for in it; each has
`timeout` seconds, after which its process group is killed. A failure (exit status, signal,
timeout, cannot start) is logged with the end of its output. on-pre-up decides: the session
comes up only when it exits 0 (pppd_compat ends the session otherwise); the others are told.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address, IPv6Address, IPv6Network

from vpnd.config.definitions import SstpServer

log = logging.getLogger("vpnd.scripts")

SCRIPT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OUTPUT_KEPT = 2048  # bytes of a script's output kept for the log


class Hook(Enum):
    """Session events, named as the `extended-scripts` nodes are."""

    PRE_UP = "on-pre-up"
    UP = "on-up"
    DOWN = "on-down"
    CHANGE = "on-change"


@dataclass(frozen=True, slots=True)
class SessionCounters:
    """A session's totals when it ends (server's view: sent = to the client)."""

    connect_time: int
    bytes_sent: int
    bytes_received: int
    packets_sent: int
    packets_received: int


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """What a script is told about its session."""

    ifname: str
    username: str
    session_id: str
    calling_station_id: str
    called_station_id: str
    local: IPv4Address | None = None
    remote: IPv4Address | None = None
    ipv6_address: tuple[IPv6Address, int] | None = None  # the client's address in its prefix
    delegated_prefix: IPv6Network | None = None
    counters: SessionCounters | None = None

    def arguments(self) -> list[str]:
        unset = "0.0.0.0"  # what pppd_compat passes without IPv4
        return [self.ifname, "none", "0", str(self.local or unset), str(self.remote or unset),
                self.calling_station_id]

    def environment(self) -> dict[str, str]:
        env = {
            "PATH": SCRIPT_PATH,
            "PEERNAME": self.username,
            "CALLING_SID": self.calling_station_id,
            "CALLED_SID": self.called_station_id,
            "IFNAME": self.ifname,
            "SESSION_ID": self.session_id,
        }
        if self.local is not None:
            env["IPLOCAL"] = str(self.local)
        if self.remote is not None:
            env["IPREMOTE"] = str(self.remote)
        if self.ipv6_address is not None:
            address, length = self.ipv6_address
            env["IPV6_PREFIX"] = f"{address}/{length}"
        if self.delegated_prefix is not None:
            env["IPV6_DELEGATED_PREFIX"] = str(self.delegated_prefix)
        if self.counters is not None:
            counters = self.counters
            env |= {
                "CONNECT_TIME": str(counters.connect_time),
                "BYTES_SENT": str(counters.bytes_sent),
                "BYTES_RCVD": str(counters.bytes_received),
                "PACKETS_SENT": str(counters.packets_sent),
                "PACKETS_RCVD": str(counters.packets_received),
            }
        return env


@dataclass(frozen=True, slots=True)
class ScriptResult:
    hook: Hook
    path: str
    returncode: int | None  # None: it did not run to its end (timeout, could not start)
    timed_out: bool = False
    error: str = ""  # why it could not start
    output: str = ""  # the end of what it printed

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        if self.error:
            return f"{self.hook.value} script {self.path} could not start: {self.error}"
        if self.timed_out:
            return f"{self.hook.value} script {self.path} timed out and was killed"
        assert self.returncode is not None
        if self.returncode < 0:
            return f"{self.hook.value} script {self.path} was killed by signal {-self.returncode}"
        return f"{self.hook.value} script {self.path} exited with status {self.returncode}"


@dataclass
class ScriptRunner:
    """The configured scripts, and the ones running now."""

    scripts: dict[Hook, str] = field(default_factory=dict)
    timeout: float = 30.0
    _running: set[asyncio.Task[ScriptResult]] = field(default_factory=set)

    def configure(self, sstp: SstpServer) -> None:
        """The paths and limit of ``vpn sstp extended-scripts`` for scripts started from now on
        (running ones keep theirs)."""
        config = sstp.extended_scripts
        if config is None:
            self.scripts = {}
            return
        self.scripts = {hook: path for hook in Hook
                        if (path := getattr(config, hook.value.replace("-", "_"))) is not None}
        self.timeout = float(config.timeout)

    def configured(self, hook: Hook) -> bool:
        return hook in self.scripts

    def run(self, hook: Hook, facts: SessionFacts,
            done: Callable[[ScriptResult], None] | None = None) -> None:
        """Start ``hook``'s script (if one is configured) for ``facts``'s session; ``done`` is
        called on the loop with the result."""
        path = self.scripts.get(hook)
        if path is None:
            return
        task = asyncio.get_running_loop().create_task(self._run(hook, path, facts, self.timeout))
        self._running.add(task)

        def finished(task: asyncio.Task[ScriptResult]) -> None:
            self._running.discard(task)
            if task.cancelled():
                return
            result = task.result()
            if done is not None:
                done(result)

        task.add_done_callback(finished)

    @property
    def running(self) -> int:
        return len(self._running)

    async def close(self, grace: float) -> None:
        """Give running scripts (on-down of the last sessions) ``grace`` seconds, then kill them."""
        if self._running:
            await asyncio.wait(set(self._running), timeout=grace)
        for task in list(self._running):
            task.cancel()
        if self._running:
            await asyncio.wait(set(self._running))

    async def _run(self, hook: Hook, path: str, facts: SessionFacts, timeout: float) -> ScriptResult:
        label = f"{facts.ifname} {facts.username}"
        try:
            process = await asyncio.create_subprocess_exec(
                path, *facts.arguments(), env=facts.environment(), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group: a timeout kills its children too
            )
        except OSError as error:
            result = ScriptResult(hook, path, None, error=error.strerror or str(error))
            log.warning("%s: %s", label, result.describe())
            return result
        assert process.stdout is not None
        output = bytearray()

        async def collect() -> None:
            assert process.stdout is not None
            while chunk := await process.stdout.read(4096):
                output.extend(chunk)
                del output[:-OUTPUT_KEPT]

        timed_out = False
        try:
            await asyncio.wait_for(asyncio.gather(collect(), process.wait()), timeout)
        except TimeoutError:
            # Exited, but a child it left behind may hold the output open: not a timeout.
            timed_out = process.returncode is None
        finally:
            if process.returncode is None:  # timed out, or the daemon is stopping
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(process.wait())
        text = output.decode(errors="replace").strip()
        result = ScriptResult(hook, path, None if timed_out else process.returncode, timed_out=timed_out,
                              output=text)
        if result.ok:
            log.debug("%s: %s script %s done", label, hook.value, path)
        else:
            tail = f"; output: {text[-500:]}" if text else ""
            log.warning("%s: %s%s", label, result.describe(), tail)
        return result
