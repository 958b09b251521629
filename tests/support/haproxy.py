"""A private HAProxy (Debian `haproxy`, 2.6) for interop tests, started and stopped by PID.

`HAProxy(program, workdir, routes)` writes one ``haproxy.cfg`` with a TCP frontend/backend pair
per `Route` and runs ``haproxy -db -f haproxy.cfg`` (foreground, no daemon, no pid file, no
chroot, no user switch); its output goes to ``haproxy.log`` in ``workdir``. `start()` returns
once every frontend accepts connections; `stop()` ends that one process (SIGTERM, then SIGKILL).
Everything binds to loopback addresses only.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal


@dataclass(frozen=True)
class Route:
    """``bind:listen`` → ``127.0.0.1:target``, or → every address of ``servers`` (``host:port``)
    balanced by least connections, each health-checked (``check``: 1 s apart, down after 2
    failures) and a connection that fails on one server retried on another. ``tls_pem``: terminate
    TLS with this PEM (certificate then private key); ``send_proxy``: write a PROXY header of that
    version to the backend; ``source``: the backend connection's source address."""

    name: str
    listen: int
    target: int
    tls_pem: Path | None = None
    send_proxy: Literal["v1", "v2"] | None = None
    source: str | None = None
    backend_tls: bool = False
    bind: str = "127.0.0.1"
    servers: tuple[str, ...] = ()
    check: bool = False


def config_text(routes: list[Route]) -> str:
    lines = [
        "global",
        "    maxconn 256",
        "",
        "defaults",
        "    mode tcp",
        "    timeout connect 5s",
        "    timeout client 2m",
        "    timeout server 2m",
    ]
    for route in routes:
        tls = f" ssl crt {route.tls_pem}" if route.tls_pem is not None else ""
        options = ""
        if route.source is not None:
            options += f" source {route.source}"
        if route.backend_tls:
            options += " ssl verify none"
        if route.send_proxy == "v1":
            options += " send-proxy"
        elif route.send_proxy == "v2":
            options += " send-proxy-v2"
        if route.check:
            options += " check inter 1s fall 2 rise 2"
        servers = route.servers or (f"127.0.0.1:{route.target}",)
        backend = [f"backend be_{route.name}"]
        if len(servers) > 1:
            backend += ["    balance leastconn", "    option redispatch", "    retries 3"]
        backend += [f"    server vpnd{number} {address}{options}" for number, address in enumerate(servers)]
        lines += [
            "",
            f"frontend fe_{route.name}",
            f"    bind {route.bind}:{route.listen}{tls}",
            f"    default_backend be_{route.name}",
            "",
            *backend,
        ]
    return "\n".join(lines) + "\n"


class HAProxy:
    def __init__(self, program: str, workdir: Path, routes: list[Route],
                 namespace_prefix: Sequence[str] = ()) -> None:
        """``namespace_prefix``: run HAProxy through it (e.g. ``ip netns exec NS``)."""
        self.namespace_prefix = list(namespace_prefix)
        self.program = program
        self.workdir = workdir
        self.routes = routes
        self.config_path = workdir / "haproxy.cfg"
        self.log_path = workdir / "haproxy.log"
        self.process: subprocess.Popen[Any] | None = None
        self._log_file: IO[bytes] | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 15.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(config_text(self.routes))
        command = [*self.namespace_prefix, self.program, "-f", str(self.config_path)]
        check = subprocess.run([*command, "-c"], capture_output=True, text=True, timeout=30, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refuses its config:\n{check.stdout}{check.stderr}")
        self._log_file = self.log_path.open("wb")
        self.process = subprocess.Popen([*command, "-db"], stdin=subprocess.DEVNULL, stdout=self._log_file,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        waiting = [route.listen for route in self.routes]
        while waiting:
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"haproxy not listening on {waiting} after {timeout} s:\n{self.log()}")
            listening = _listening_ports(self.namespace_prefix)
            waiting = [port for port in waiting if port not in listening]
            if waiting:
                time.sleep(0.05)

    def stop(self) -> int | None:
        """End our haproxy process by its PID; its exit code (None if it never started)."""
        process, self.process = self.process, None
        code = None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
            code = process.returncode
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code


def _listening_ports(namespace_prefix: Sequence[str]) -> set[int]:
    """The TCP ports something listens on in HAProxy's namespace (read from /proc, so the check
    itself opens no connection that the frontend would relay to a backend)."""
    table = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        if namespace_prefix:
            table = subprocess.run([*namespace_prefix, "cat", "/proc/net/tcp"], capture_output=True,
                                   text=True, timeout=10, check=False).stdout
        else:
            table = Path("/proc/net/tcp").read_text()
    rows = (line.split() for line in table.splitlines()[1:])
    return {int(fields[1].rsplit(":", 1)[1], 16) for fields in rows if len(fields) > 3 and fields[3] == "0A"}
