"""A `vpnd client` process started by a test `Lab`, and what its log says about the session;
`LoggedProcess`, what it is built on, serves any process whose log a test waits on (`vpnd run`)."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from tests.support.netns import Lab

CONNECTED = re.compile(r"connected: (\S+) peer (\S+) via (\S+) mtu (\d+)")


@dataclass
class LoggedProcess:
    """A process a `Lab` started, with its output in ``log_path``."""

    process: subprocess.Popen[str]
    log_path: Path
    lab: Lab

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait_log(self, pattern: str | re.Pattern[str], timeout: float = 20, count: int = 1) -> re.Match[str]:
        """The ``count``-th match of ``pattern`` in the log, once it is there; fails when the
        process exits without logging it, or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.process.poll() is not None  # before reading: its last lines are in
            found = list(re.finditer(pattern, self.log()))
            if len(found) >= count:
                return found[count - 1]
            if exited:
                raise AssertionError(f"process {self.process.pid} exited with {self.process.returncode} "
                                     f"before logging {pattern!r}:\n{self.log()}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"{pattern!r} not logged {count} time(s) within {timeout} s:\n"
                                     f"{self.log()}")
            time.sleep(0.05)

    def stop(self) -> int:
        return self.lab.stop(self.process)


@dataclass
class Client(LoggedProcess):
    """One `vpnd client` process and what its log says."""

    address: IPv4Address | None = None
    peer: IPv4Address | None = None
    ifname: str | None = None
    mtu: int | None = None
    argv: list[str] = field(default_factory=list)

    def wait_connected(self, timeout: float = 20) -> None:
        self.wait_log(CONNECTED, timeout)
        # The last session counts: a client that reconnected logs one line per session.
        found = list(CONNECTED.finditer(self.log()))[-1]
        self.address, self.peer = IPv4Address(found[1]), IPv4Address(found[2])
        self.ifname, self.mtu = found[3], int(found[4])
