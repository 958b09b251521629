"""The entry point users run: `vpnd run`, the installed console script, in a namespace of its own.

Each test starts `.venv/bin/vpnd --config-dir D/etc --run-dir D/run run` (uvloop, as installed by
packaging/bootstrap.sh) in a server namespace, dials it with `vpnd client` from a client
namespace, and stops it by PID. What is proven: the first start writes the embedded default and
serves it; a saved config.boot loads; SIGHUP applies an edited one without dropping a session; a
broken one is refused on SIGHUP (the old configuration keeps running) and at start, with the
messages `vpnd configure` gives for it. Needs root; 80-95 s in all on a loaded 2-core machine
(each test starts the daemon two or three times and dials it once or twice).
"""

from __future__ import annotations

import importlib.util
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.test_tunnel import ping
from tests.support.netns import REPO, Lab, Namespace, Veth, require_root_netns
from tests.support.peers import unavailable
from tests.support.vpn_client import Client, LoggedProcess
from vpnd.config.tree import ConfigTree
from vpnd.paths import Paths

pytestmark = pytest.mark.root

VPND = REPO / ".venv" / "bin" / "vpnd"
GATEWAY = "10.254.255.1"  # the embedded default's
READY = "vpnd ready"
USERS = ["vpn", "sstp", "authentication", "local-users", "username"]


@dataclass
class Site:
    lab: Lab
    server: Namespace
    client: Namespace
    veth: Veth
    paths: Paths
    workdir: Path
    daemon: LoggedProcess | None = None
    _logs: int = 0

    def _log_path(self, what: str) -> Path:
        self._logs += 1
        return self.workdir / f"{self._logs:02d}-{what}.log"

    def vpnd(self, *argv: str) -> list[str]:
        return [str(VPND), "--config-dir", str(self.paths.config_dir), "--run-dir", str(self.paths.run_dir),
                *argv]

    def start(self) -> LoggedProcess:
        log = self._log_path("vpnd-run")
        self.daemon = LoggedProcess(self.lab.start(self.server, *self.vpnd("run"), log=log), log, self.lab)
        return self.daemon

    def stop(self) -> None:
        assert self.daemon is not None
        assert self.daemon.stop() == 0, self.daemon.log()
        self.daemon = None

    def dial(self, user: str, password: str) -> Client:
        log = self._log_path(f"client-{user}")
        argv = self.vpnd("client", "--server", str(self.veth.address_a.ip), "--sni", socket.gethostname(),
                         "--ca", str(self.paths.tls_dir / "server.pem"), "--user", user,
                         "--password", password, "--no-default-route", "--ifname", f"sstpc{self._logs}")
        client = Client(self.lab.start(self.client, *argv, log=log), log, self.lab, argv=argv)
        client.wait_connected()
        return client

    def configure(self, *lines: str, config_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
        argv = self.vpnd("configure", *(word for line in lines for word in ("-c", line)))
        if config_dir is not None:
            argv[2] = str(config_dir)
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    def edit_saved(self, *, set_: tuple[list[str], ...] = (), delete: tuple[list[str], ...] = ()) -> None:
        """Edit config.boot the way an operator's editor does, behind the daemon's back."""
        tree = ConfigTree.from_boot_text(self.paths.saved_config.read_text())
        for path in set_:
            tree.set(path)
        for path in delete:
            tree.delete(path)
        self.paths.saved_config.write_text(tree.to_boot_text(secrets=True))

    def reload(self, outcome: str) -> str:
        """SIGHUP, then the log line that says how it went."""
        assert self.daemon is not None
        before = len(re.findall(outcome, self.daemon.log()))
        self.daemon.process.send_signal(signal.SIGHUP)
        return self.daemon.wait_log(outcome + ".*", count=before + 1)[0]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    require_root_netns()
    if not VPND.exists():
        unavailable(f"{VPND}: the console script (packaging/bootstrap.sh installs it)")
    lab = Lab()
    try:
        server, client = lab.namespace(), lab.namespace()
        veth = lab.veth(server, client)
        yield Site(lab, server, client, veth, Paths(tmp_path / "etc", tmp_path / "run"), tmp_path)
    finally:
        lab.cleanup()
    lab.assert_clean()


def _demo_password(daemon: LoggedProcess) -> str:
    return daemon.wait_log(r"demo user: demo  password: (\S+)")[1]


def test_first_start_writes_the_default_and_a_saved_config_loads(site: Site) -> None:
    daemon = site.start()
    password = _demo_password(daemon)
    daemon.wait_log(READY)
    if importlib.util.find_spec("uvloop") is not None:  # the [fast] extra bootstrap.sh installs
        assert "event loop: uvloop" in daemon.log()
    assert site.paths.saved_config.stat().st_mode & 0o777 == 0o600
    # What runs is recorded by the daemon, and is what it wrote.
    assert site.paths.running_config.read_text() == site.paths.saved_config.read_text()
    demo = site.dial("demo", password)
    assert ping(site.server, demo.address, count=2) == 2
    demo.stop()
    site.stop()
    assert not site.paths.running_config.exists()  # nothing runs any more

    # Offline, as after an install: configure, commit, save; then the next start loads it.
    done = site.configure("set vpn sstp authentication local-users username alice password alice-pw",
                          "commit", "save")
    assert done.returncode == 0, done.stderr
    assert "vpnd is not running" in done.stdout
    daemon = site.start()
    daemon.wait_log(READY)
    assert "wrote the embedded default" not in daemon.log()
    alice = site.dial("alice", "alice-pw")
    assert ping(site.server, alice.address, count=2) == 2


def test_sighup_applies_an_edited_config_and_refuses_a_broken_one(site: Site) -> None:
    daemon = site.start()
    password = _demo_password(daemon)
    daemon.wait_log(READY)
    demo = site.dial("demo", password)

    site.edit_saved(set_=([*USERS, "bob", "password", "bob-pw"],
                          ["vpn", "sstp", "name-server", "10.254.255.53"]))
    assert "reload: " in site.reload("reload: |reload refused")
    bob = site.dial("bob", "bob-pw")
    assert "bob" in site.paths.running_config.read_text()
    # The session that was up before the reload is the same one, and still carries traffic.
    assert demo.process.poll() is None and len(re.findall("connected: ", demo.log())) == 1
    assert ping(site.server, demo.address, count=2) == 2
    bob.stop()

    # Broken: bob deleted (fine) and a default pool that does not exist (not fine).
    running_before = site.paths.running_config.read_text()
    site.edit_saved(delete=([*USERS, "bob"],), set_=(["vpn", "sstp", "default-pool", "NOPE"],))
    refused = site.reload("reload: |reload refused")
    assert refused.startswith("reload refused, still running the previous configuration")
    assert 'vpn sstp default-pool: pool "NOPE" does not exist' in daemon.log()
    assert site.paths.running_config.read_text() == running_before
    site.dial("bob", "bob-pw").stop()  # the old configuration, with bob, still runs
    assert len(re.findall("connected: ", demo.log())) == 1
    assert ping(site.server, demo.address, count=2) == 2


def test_a_broken_config_boot_is_refused_at_start_with_the_messages_of_a_commit(site: Site) -> None:
    daemon = site.start()
    daemon.wait_log(READY)
    site.stop()
    site.edit_saved(set_=(["vpn", "sstp", "default-pool", "NOPE"],
                          ["vpn", "sstp", "default-ipv6-pool", "NOPE6"]))
    # The same file committed in a configuration directory of its own.
    commit = site.configure(f"load {site.paths.saved_config}", "commit", config_dir=site.workdir / "other")
    assert commit.returncode == 1
    messages = [line.strip() for line in commit.stderr.splitlines()]
    reasons = messages[messages.index("Commit failed:") + 1:]
    assert len(reasons) >= 2, commit.stderr

    daemon = site.start()
    assert daemon.process.wait(timeout=60) == 1
    log = daemon.log()
    assert f"cannot start: {site.paths.saved_config} is refused:" in log
    started = log[log.index("cannot start"):].splitlines()
    assert [line.strip() for line in started[1:1 + len(reasons)]] == reasons
    assert not site.paths.running_config.exists()
