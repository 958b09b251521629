"""Network namespaces, veth pairs and processes for end-to-end tests, cleaned up by name and PID.

A `Lab` remembers everything it creates: namespaces (random names ``vpndt-<hex>``), veth pairs and
the processes it started inside namespaces (``ip netns exec NS ...`` execs the command, so the
PID we hold is the program's own). `Lab.cleanup` stops those PIDs (SIGTERM, then SIGKILL) and
deletes those namespaces, nothing else; `Lab.assert_clean` checks that none of it is left.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.support.peers import require_kernel

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else "python3"
E2E_BLOCK = ipaddress.IPv4Network("10.250.0.0/16")


def require_root_netns() -> None:
    """Root, ip and /dev/net/tun; under CI=true, where these tests must run, fail without them."""
    require_kernel("end-to-end tests: network namespaces, TUN")


def _ip(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=timeout)


def namespaces() -> set[str]:
    listing = _ip("-j", "netns", "list", check=False).stdout.strip()
    return {entry["name"] for entry in json.loads(listing or "[]")}


def host_links() -> set[str]:
    return {link["ifname"] for link in json.loads(_ip("-j", "link", "show").stdout or "[]")}


class SubnetPicker:
    """/30 subnets out of 10.250.0.0/16: a random start per test run, then consecutive ones."""

    def __init__(self, block: ipaddress.IPv4Network = E2E_BLOCK) -> None:
        self._subnets = list(block.subnets(new_prefix=30))
        self._next = secrets.randbelow(len(self._subnets))

    def take(self) -> ipaddress.IPv4Network:
        subnet = self._subnets[self._next % len(self._subnets)]
        self._next += 1
        return subnet


@dataclass(frozen=True)
class Namespace:
    name: str

    def command(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, timeout: float = 60, check: bool = False,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*argv), capture_output=True, text=True, timeout=timeout,
                              check=check, cwd=REPO, input=input, env=_environment())

    def ip_json(self, *args: str) -> Any:
        done = _ip("-n", self.name, "-j", *args)
        return json.loads(done.stdout or "[]")

    def links(self) -> list[str]:
        return [link["ifname"] for link in self.ip_json("link", "show")]

    def routes(self) -> list[dict[str, Any]]:
        return list(self.ip_json("route", "show"))


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


@dataclass
class Veth:
    a: str  # interface name in the first namespace
    b: str
    address_a: ipaddress.IPv4Interface
    address_b: ipaddress.IPv4Interface


@dataclass
class Lab:
    """Everything one test module builds in the kernel, and how to take it all down again."""

    namespaces: list[Namespace] = field(default_factory=list)
    veths: list[Veth] = field(default_factory=list)
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)
    subnets: SubnetPicker = field(default_factory=SubnetPicker)
    _logs: list[IO[Any]] = field(default_factory=list)

    def namespace(self) -> Namespace:
        namespace = Namespace(f"vpndt-{secrets.token_hex(4)}")
        _ip("netns", "add", namespace.name)
        self.namespaces.append(namespace)
        _ip("-n", namespace.name, "link", "set", "lo", "up")
        return namespace

    def veth(self, a: Namespace, b: Namespace) -> Veth:
        """A veth pair between two namespaces with the two host addresses of a fresh /30."""
        subnet = self.subnets.take()
        first, second = (ipaddress.IPv4Interface(f"{host}/30") for host in subnet.hosts())
        tag = secrets.token_hex(3)
        veth = Veth(f"vt{tag}a", f"vt{tag}b", first, second)
        _ip("link", "add", veth.a, "netns", a.name, "type", "veth", "peer", "name", veth.b, "netns", b.name)
        self.veths.append(veth)
        for namespace, name, address in ((a, veth.a, first), (b, veth.b, second)):
            _ip("-n", namespace.name, "addr", "add", str(address), "dev", name)
            _ip("-n", namespace.name, "link", "set", name, "up")
        return veth

    def start(self, namespace: Namespace, *argv: str, log: Path | None = None,
              stdout: int | None = None) -> subprocess.Popen[str]:
        """Start a program inside a namespace; its output goes to ``log`` (or ``stdout``)."""
        sink: IO[Any] | int | None = stdout
        if log is not None:
            handle = log.open("w")
            self._logs.append(handle)
            sink = handle
        process = subprocess.Popen(namespace.command(*argv), stdout=sink,
                                   stderr=subprocess.STDOUT if log is not None else None,
                                   text=True, cwd=REPO, env=_environment())
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[Any], timeout: float = 10) -> int:
        """SIGTERM the PID we started, then SIGKILL it if it does not go; returns its exit code."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait(10)
        return int(process.returncode)

    def cleanup(self) -> None:
        for process in reversed(self.processes):
            self.stop(process, timeout=5)
        self.processes.clear()
        for handle in self._logs:
            handle.close()
        self._logs.clear()
        for namespace in self.namespaces:  # deleting a namespace takes its veth ends with it
            _ip("netns", "del", namespace.name, check=False)

    def assert_clean(self) -> None:
        """Nothing this lab created is left: no namespace, no veth end in the host, no process."""
        left_namespaces = {n.name for n in self.namespaces} & namespaces()
        assert not left_namespaces, f"namespaces left behind: {sorted(left_namespaces)}"
        names = {v.a for v in self.veths} | {v.b for v in self.veths}
        deadline = time.monotonic() + 5  # veth ends vanish asynchronously after the netns goes
        while (left_links := names & host_links()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left_links, f"interfaces left behind: {sorted(left_links)}"
        running = [p.pid for p in self.processes if p.poll() is None]
        assert not running, f"processes left running: {running}"
