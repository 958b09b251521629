"""Rate limits measured through the tunnel: FreeRADIUS's Filter-Id, a CoA that changes it, a local user's.

The daemon and a private FreeRADIUS run in the server namespace, `vpnd client` in the client
namespace, and iperf3 measures what really passes: ``iperf3 -s`` is bound to the gateway
address (the server end of the session's TUN), the client runs ``-t 4`` once each way. The
receiver's figure must be within 10 % of the configured rate. The shaper counts IP packets, so
the TCP payload iperf3 reports sits a few per cent under the configured rate.

Needs root (namespaces, TUN, tc), freeradius, radclient and iperf3.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import E2E, GATEWAY, SERVER_NAME, USERS, Client, server_config
from tests.support.daemon import TestDaemon
from tests.support.freeradius import FreeRadius
from tests.support.netns import Lab, Namespace, require_root_netns
from tests.support.peers import require_program
from vpnd.server.tls import make_self_signed

pytestmark = pytest.mark.root

DAE_PORT = 3799
DAE_SECRET = "dae-e2e-secret"
TOLERANCE = 0.10
SECONDS = 4
RADIUS_USERS = f"""\
alice   Cleartext-Password := "{USERS['alice']}"
        Filter-Id = "5000/1000"
"""


@dataclass(frozen=True)
class Rates:
    download_kbit: float
    upload_kbit: float


@dataclass
class RateLab:
    e2e: E2E
    radius: FreeRadius
    key: Path


def radius_daemon_config(cert: Path, key: Path, radius: FreeRadius) -> dict[str, Any]:
    config = server_config(cert, key)
    config["vpn"]["sstp"]["authentication"] = {"mode": "radius", "radius": {
        "server": {"127.0.0.1": {"key": radius.secret, "port": radius.auth_port,
                                 "acct-port": radius.acct_port}},
        "nas-identifier": "vpnd-e2e",
        "dynamic-author": {"server": "127.0.0.1", "port": DAE_PORT, "key": DAE_SECRET},
        "rate-limit": {"enable": True},
    }}
    return config


def local_daemon_config(cert: Path, key: Path) -> dict[str, Any]:
    config = server_config(cert, key)
    users = config["vpn"]["sstp"]["authentication"]["local-users"]["username"]
    users["alice"]["rate-limit"] = {"upload": 1000, "download": 5000}
    return config


def freeradius_in(namespace: Namespace, workdir: Path, users: str = RADIUS_USERS,
                  **options: Any) -> FreeRadius:
    """FreeRADIUS started inside ``namespace``: ``ip netns exec`` execs the server, so the PID the
    harness holds (and stops) is FreeRADIUS's own. ``options`` go to ``FreeRadius``."""
    wrapper = workdir / "freeradius-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {namespace.name} freeradius "$@"\n')
    wrapper.chmod(0o755)
    return FreeRadius(users, program=str(wrapper), **options)


@pytest.fixture(scope="module")
def rate_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RateLab]:
    require_root_netns()
    for program in ("freeradius", "radclient", "iperf3", "tc"):
        require_program(program)
    workdir = tmp_path_factory.mktemp("radius-e2e")
    cert, key = make_self_signed(workdir, SERVER_NAME)
    lab = Lab()
    radius: FreeRadius | None = None
    try:
        server = lab.namespace()
        client = lab.namespace()
        veth = lab.veth(server, client)
        radius = freeradius_in(server, workdir)
        radius.start()
        config = radius_daemon_config(cert, key, radius)
        daemon = TestDaemon(lab, server, config, workdir, state_dir=workdir / "state")
        daemon.start()
        daemon.wait_listening()
        yield RateLab(E2E(lab, server, client, veth, daemon, cert, cert, workdir), radius, key)
    finally:
        if radius is not None:
            radius.cleanup()
        lab.cleanup()
    lab.assert_clean()


def iperf(e2e: E2E, *, download: bool) -> float:
    """kbit/s of one ``iperf3 -t 4`` run, as its receiving end counted them."""
    extra = ["-R"] if download else []
    done = e2e.client.run("iperf3", "-c", str(GATEWAY), "-t", str(SECONDS), "-J", *extra,
                          timeout=SECONDS + 30)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    return float(report["end"]["sum_received"]["bits_per_second"]) / 1000


def measure(e2e: E2E, client: Client, label: str) -> Rates:
    """Both directions through the tunnel, with an iperf3 server on the gateway address."""
    log = e2e.workdir / f"iperf3-server-{time.monotonic_ns()}.log"
    server = e2e.lab.start(e2e.server, "iperf3", "-s", "-B", str(GATEWAY), "--forceflush", log=log)
    try:
        deadline = time.monotonic() + 10
        while "Server listening" not in (log.read_text() if log.exists() else ""):
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "iperf3 server did not start"
            time.sleep(0.05)
        rates = Rates(download_kbit=iperf(e2e, download=True), upload_kbit=iperf(e2e, download=False))
    finally:
        e2e.lab.stop(server)
    print(f"{label}: download {rates.download_kbit:.0f} kbit/s, upload {rates.upload_kbit:.0f} kbit/s "
          f"(client {client.address} via {client.ifname})")
    return rates


def assert_rates(measured: Rates, download_kbit: int, upload_kbit: int) -> None:
    assert measured.download_kbit == pytest.approx(download_kbit, rel=TOLERANCE), measured
    assert measured.upload_kbit == pytest.approx(upload_kbit, rel=TOLERANCE), measured


def radclient(e2e: E2E, kind: str, attributes: str) -> str:
    done = e2e.server.run("radclient", "-x", "-r", "1", "-t", "3", f"127.0.0.1:{DAE_PORT}", kind, DAE_SECRET,
                          input=attributes, timeout=20)
    return done.stdout + done.stderr


def shown_rate(e2e: E2E) -> list[object]:
    return [session["rate-limit"] for session in e2e.daemon.statistics()["sessions"]]


def test_radius_filter_id_and_coa_shape_the_tunnel(rate_lab: RateLab) -> None:
    e2e = rate_lab.e2e
    client = e2e.start_client("alice", "--ifname", "sstpc0", "--no-default-route")
    try:
        client.wait_connected()
        assert shown_rate(e2e) == ["5000/1000"]
        assert_rates(measure(e2e, client, "Filter-Id 5000/1000"), download_kbit=5000, upload_kbit=1000)

        answer = radclient(e2e, "coa", 'User-Name = "alice", Filter-Id = "2000/3000"\n')
        assert "Received CoA-ACK" in answer, answer
        assert shown_rate(e2e) == ["2000/3000"]
        assert_rates(measure(e2e, client, "after CoA 2000/3000"), download_kbit=2000, upload_kbit=3000)
    finally:
        assert client.stop() == 0
    # The accounting spool delivered everything (Start and Stop reached FreeRADIUS).
    deadline = time.monotonic() + 10
    while (stats := e2e.daemon.statistics()["statistics"])["accounting"]["spool"]["records"]:
        assert time.monotonic() < deadline, stats["accounting"]
        time.sleep(0.1)
    kinds = [record["Acct-Status-Type"][0] for record in rate_lab.radius.detail_records()]
    assert kinds == ["Accounting-On", "Start", "Stop"]


def test_local_user_rate_limit_shapes_the_same(rate_lab: RateLab) -> None:
    e2e = rate_lab.e2e
    e2e.daemon.stop()
    workdir = e2e.workdir / "local"
    workdir.mkdir()
    local = TestDaemon(e2e.lab, e2e.server, local_daemon_config(e2e.cert, rate_lab.key), workdir)
    local.start()
    local.wait_listening()
    e2e.daemon = local
    client = e2e.start_client("alice", "--ifname", "sstpc1", "--no-default-route")
    try:
        client.wait_connected()
        assert shown_rate(e2e) == ["5000/1000"]
        assert_rates(measure(e2e, client, "local user 5000/1000"), download_kbit=5000, upload_kbit=1000)
    finally:
        assert client.stop() == 0
