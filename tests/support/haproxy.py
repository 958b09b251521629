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
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal


@dataclass(frozen=True)
class Route:
    """``127.0.0.1:listen`` → ``127.0.0.1:target``. ``tls_pem``: terminate TLS with this PEM
    (certificate then private key); ``send_proxy``: write a PROXY header of that version to the
    backend; ``source``: the backend connection's source address."""

    name: str
    listen: int
    target: int
    tls_pem: Path | None = None
    send_proxy: Literal["v1", "v2"] | None = None
    source: str | None = None
    backend_tls: bool = False


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
        server = f"    server vpnd 127.0.0.1:{route.target}"
        if route.source is not None:
            server += f" source {route.source}"
        if route.backend_tls:
            server += " ssl verify none"
        if route.send_proxy == "v1":
            server += " send-proxy"
        elif route.send_proxy == "v2":
            server += " send-proxy-v2"
        lines += [
            "",
            f"frontend fe_{route.name}",
            f"    bind 127.0.0.1:{route.listen}{tls}",
            f"    default_backend be_{route.name}",
            "",
            f"backend be_{route.name}",
            server,
        ]
    return "\n".join(lines) + "\n"


class HAProxy:
    def __init__(self, program: str, workdir: Path, routes: list[Route]) -> None:
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
        check = subprocess.run([self.program, "-c", "-f", str(self.config_path)], capture_output=True,
                               text=True, timeout=30, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refuses its config:\n{check.stdout}{check.stderr}")
        self._log_file = self.log_path.open("wb")
        self.process = subprocess.Popen([self.program, "-db", "-f", str(self.config_path)],
                                        stdin=subprocess.DEVNULL, stdout=self._log_file,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        waiting = [route.listen for route in self.routes]
        while waiting:
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"haproxy not listening on {waiting} after {timeout} s:\n{self.log()}")
            waiting = [port for port in waiting if not _listening(port)]
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


def _listening(port: int) -> bool:
    """Whether something listens on TCP ``port`` in this namespace (read from /proc, so the check
    itself opens no connection that the frontend would relay to a backend)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False
