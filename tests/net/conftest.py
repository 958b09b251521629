"""A network namespace per test module for the kernel-side tests.

The kernel tests run their scenario in a child process inside the namespace (`ip netns exec`),
so nothing they create can leak into the host's namespace, and a crash or timeout of the child
takes its TUN interfaces with it. Deleting the namespace removes whatever is left.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.peers import require_kernel

REPO = Path(__file__).resolve().parents[2]
SCENARIO_SCRIPT = Path(__file__).resolve().parent / "test_tun.py"


def require_root_and_netns() -> None:
    """Root, ip and /dev/net/tun; under CI=true, where these tests must run, fail without them."""
    require_kernel("kernel tests: network namespaces, TUN")


@dataclass(frozen=True)
class Netns:
    name: str

    def _command(self, scenario: str, args: tuple[str, ...]) -> list[str]:
        return ["ip", "netns", "exec", self.name, sys.executable, str(SCENARIO_SCRIPT), scenario, *args]

    def run(self, scenario: str, *args: str, timeout: float = 60) -> Any:
        """Run a scenario of test_tun.py inside the namespace and return the JSON it printed."""
        done = subprocess.run(
            self._command(scenario, args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            cwd=REPO,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"scenario {scenario} failed ({done.returncode}):\n{done.stderr}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def start(self, scenario: str, *args: str) -> subprocess.Popen[str]:
        """Start a scenario that keeps running; talk to it through its stdin and stdout."""
        return subprocess.Popen(
            self._command(scenario, args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            cwd=REPO,
        )

    def ip_json(self, *args: str) -> Any:
        done = subprocess.run(
            ["ip", "-n", self.name, "-j", *args], capture_output=True, text=True, check=True, timeout=30
        )
        return json.loads(done.stdout or "[]")


@pytest.fixture(scope="module")
def netns() -> Iterator[Netns]:
    require_root_and_netns()
    name = f"vpndt-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=30)
        yield Netns(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)
