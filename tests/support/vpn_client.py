"""A `vpnd client` process started by a test `Lab`, and what its log says about the session."""

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
class Client:
    """One `vpnd client` process and what its log says."""

    process: subprocess.Popen[str]
    log_path: Path
    lab: Lab
    address: IPv4Address | None = None
    peer: IPv4Address | None = None
    ifname: str | None = None
    mtu: int | None = None
    argv: list[str] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait_connected(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # The last session counts: a client that reconnected logs one line per session.
            found = next(reversed(list(CONNECTED.finditer(self.log()))), None)
            if found is not None:
                self.address, self.peer = IPv4Address(found[1]), IPv4Address(found[2])
                self.ifname, self.mtu = found[3], int(found[4])
                return
            if self.process.poll() is not None:
                raise AssertionError(f"client exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"client not connected after {timeout} s:\n{self.log()}")

    def wait_log(self, pattern: str, timeout: float = 20, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(re.findall(pattern, self.log())) >= count:
                return
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not logged {count} time(s) within {timeout} s:\n{self.log()}")

    def stop(self) -> int:
        return self.lab.stop(self.process)
