"""Run vpnd's daemon for end-to-end tests, inside a network namespace.

Launcher (what runs in the namespace)::

    ip netns exec NS .venv/bin/python -m tests.support.daemon --config JSON --stats FILE [--state-dir DIR]
        [--ifname-prefix PREFIX]

builds ``Config.model_validate(JSON)``, runs ``Daemon(cfg, listen_host="0.0.0.0")`` until SIGTERM
(with ``--state-dir`` the daemon keeps its state there, e.g. the RADIUS accounting spool;
``--ifname-prefix`` lets it share a namespace with another daemon),
and writes ``{"seq", "statistics", "sessions"}`` as JSON to FILE once listening, on every SIGUSR1
and at exit. `TestDaemon` is the fixture-side handle: start, wait_listening, statistics, stop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.netns import PYTHON, Lab, Namespace
from vpnd.config.definitions import Config
from vpnd.server.daemon import Daemon


def _dump(daemon: Daemon, path: Path, seq: int) -> None:
    data = {"seq": seq, "statistics": daemon.statistics(), "sessions": daemon.sessions()}
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, default=str))
    temporary.replace(path)


async def _serve(config_json: str, stats_path: Path, state_dir: Path | None = None,
                 ifname_prefix: str = "sstp") -> None:
    config = Config.model_validate(json.loads(config_json))
    daemon = Daemon(config, listen_host="0.0.0.0", state_dir=state_dir, ifname_prefix=ifname_prefix)
    await daemon.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    seq = 0

    def dump() -> None:
        nonlocal seq
        seq += 1
        _dump(daemon, stats_path, seq)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, dump)
    dump()  # the file's presence says "listening"
    await stop.wait()
    await daemon.stop()
    dump()


def launcher_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run vpnd's daemon from a JSON config (tests only)")
    parser.add_argument("--config", required=True, help="the configuration as JSON")
    parser.add_argument("--stats", required=True, type=Path, help="where to write statistics")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="the daemon's state directory (accounting spool); none by default")
    parser.add_argument("--ifname-prefix", default="sstp", help="session interface names (default sstp)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(_serve(args.config, args.stats, args.state_dir, args.ifname_prefix))
    return 0


class TestDaemon:
    """The daemon in ``namespace``, started through `lab` so cleanup can stop it by PID."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, lab: Lab, namespace: Namespace, config: dict[str, Any], workdir: Path,
                 state_dir: Path | None = None, ifname_prefix: str = "sstp") -> None:
        self.lab = lab
        self.state_dir = state_dir
        self.ifname_prefix = ifname_prefix
        self.namespace = namespace
        self.config = config
        self.log_path = workdir / "daemon.log"
        self.stats_path = workdir / "daemon-stats.json"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.stats_path.unlink(missing_ok=True)
        state = ["--state-dir", str(self.state_dir)] if self.state_dir is not None else []
        self.process = self.lab.start(self.namespace, PYTHON, "-m", "tests.support.daemon",
                                      "--config", json.dumps(self.config), "--stats", str(self.stats_path),
                                      *state, "--ifname-prefix", self.ifname_prefix, log=self.log_path)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait_listening(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not self.stats_path.exists():
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon not listening after {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    def _read(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.stats_path.read_text())
        return data

    def statistics(self, timeout: float = 10) -> dict[str, Any]:
        """A fresh dump (SIGUSR1, then wait for the next sequence number)."""
        assert self.process is not None and self.process.poll() is None, "daemon is not running"
        before = self._read()["seq"]
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self._read()
            if data["seq"] > before:
                return data
            time.sleep(0.02)
        raise AssertionError("daemon did not dump its statistics")

    def stop(self) -> int:
        if self.process is None:
            return 0
        code = self.lab.stop(self.process)
        self.process = None
        return code


if __name__ == "__main__":
    sys.exit(launcher_main())
