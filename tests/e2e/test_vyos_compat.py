"""Configurations written for VyOS, and the embedded default's certificate, end to end: the daemon
in a server namespace, `vpnd client` in a client namespace, real TUNs and TLS between.

- The certificate is the one the embedded default writes on first start (made inside the server
  namespace, so it names that namespace's address); clients dial the address and verify it.
- static-ip outside every pool is handed out and routed; a static-ip inside the pool is never
  leased to anyone else.
- extended-scripts: on-pre-up says yes or no (and a hanging one is killed without holding up
  other sessions), on-up and on-down get pppd_compat's arguments and variables.

Needs root (namespaces, TUN); about 60 s, 15 of them the script time limit of the hanging on-pre-up.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from ipaddress import IPv4Address, ip_network
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.e2e.conftest import E2E, GATEWAY, POOL, server_config
from tests.e2e.test_tunnel import ping
from tests.support.daemon import TestDaemon
from tests.support.netns import PYTHON, Lab, require_root_netns
from tests.support.vpn_client import Client

pytestmark = pytest.mark.root

PASSWORDS = {name: f"{name}-secret" for name in ("alice", "bob", "carol", "dave", "erin")}
OUTSIDE = IPv4Address("10.67.0.5")  # dave's static-ip: in no pool
INSIDE = IPv4Address("10.66.0.1")  # erin's static-ip: the first address the pool would hand out
SCRIPT_TIMEOUT = 15  # long enough for another client to come up while bob's pre-up hangs
RECORD = '{{ printf "%s\\n" "$@"; echo ---; env | sort; }} > "{directory}/{hook}-$PEERNAME"\n'
PRE_UP = """#!/bin/sh
case "$PEERNAME" in
  carol) echo "carol is not allowed today"; exit 3 ;;
  bob) touch "{directory}/bob-hanging"; sleep 60 ;;
esac
exit 0
"""


def write_script(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def recorded(path: Path, timeout: float = 10) -> tuple[list[str], dict[str, str]]:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} was not written"
        time.sleep(0.05)
    time.sleep(0.1)  # written in one go by a short script; let it finish
    arguments, _, environment = path.read_text().partition("---\n")
    return arguments.splitlines(), dict(line.split("=", 1) for line in environment.splitlines())


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    require_root_netns()
    workdir = tmp_path_factory.mktemp("vyos-compat")
    scripts = workdir / "scripts"
    scripts.mkdir()
    config_dir = workdir / "etc"
    lab = Lab()
    try:
        server = lab.namespace()
        client = lab.namespace()
        veth = lab.veth(server, client)
        # The embedded default's certificate, made where the daemon runs (it reads the addresses).
        made = server.run(PYTHON, "-c", "import sys; from pathlib import Path; from vpnd.paths import Paths; "
                          "from vpnd.server.main import embedded_default; "
                          "embedded_default(Paths(Path(sys.argv[1]), Path(sys.argv[2])))",
                          str(config_dir), str(workdir / "run"))
        assert made.returncode == 0, made.stderr
        cert, key = config_dir / "tls" / "server.pem", config_dir / "tls" / "server.key"
        config: dict[str, Any] = server_config(cert, key)
        sstp = config["vpn"]["sstp"]
        users = {name: {"password": secret} for name, secret in PASSWORDS.items()}
        users["dave"]["static-ip"] = str(OUTSIDE)
        users["erin"]["static-ip"] = str(INSIDE)
        sstp["authentication"]["local-users"]["username"] = users
        sstp["extended-scripts"] = {
            "on-pre-up": write_script(scripts / "pre-up", PRE_UP.format(directory=workdir)),
            **{f"on-{hook}": write_script(scripts / hook, "#!/bin/sh\n" + RECORD.format(directory=workdir,
                                                                                          hook=hook))
               for hook in ("up", "down")},
            "timeout": SCRIPT_TIMEOUT,
        }
        daemon = TestDaemon(lab, server, config, workdir)
        daemon.start()
        daemon.wait_listening()
        yield E2E(lab, server, client, veth, daemon, cert, cert, workdir)
    finally:
        lab.cleanup()
    lab.assert_clean()


def dial(e2e: E2E, user: str, *extra: str) -> Client:
    """`vpnd client` by address, verifying the server with the embedded default's certificate;
    each user has an interface of its own, so that two can be up at once."""
    argv = [PYTHON, "-m", "vpnd.cli.main", "client", "--server", e2e.server_address, "--ca", str(e2e.cert),
            "--user", user, "--password", PASSWORDS[user], "--no-default-route",
            "--ifname", f"sstpc{sorted(PASSWORDS).index(user)}", *extra]
    log_path = e2e.workdir / f"client-{user}-{time.monotonic_ns()}.log"
    return Client(e2e.lab.start(e2e.client, *argv, log=log_path), log_path, e2e.lab, argv=argv)


def test_embedded_default_certificate_names_the_host_address(lab: E2E) -> None:
    certificate = x509.load_pem_x509_certificate(lab.cert.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert lab.veth.address_a.ip in names.get_values_for_type(x509.IPAddress)
    client = dial(lab, "alice")
    try:
        client.wait_connected()  # by address, certificate checked against --ca: no --no-verify, no --sni
    finally:
        client.stop()


def test_static_ip_outside_every_pool_is_handed_out_and_routed(lab: E2E) -> None:
    client = dial(lab, "dave")
    try:
        client.wait_connected()
        assert client.address == OUTSIDE
        route = lab.server.ip_json("route", "get", str(OUTSIDE))
        assert route[0]["dev"].startswith("sstp"), route
        assert ping(lab.client, GATEWAY) == 3  # the client reaches the server through the tunnel
        assert ping(lab.server, OUTSIDE) == 3  # and the server routes the static address into it
    finally:
        client.stop()


def test_static_ip_inside_the_pool_is_never_leased_to_someone_else(lab: E2E) -> None:
    alice = dial(lab, "alice")
    try:
        alice.wait_connected()
        assert alice.address != INSIDE and alice.address in ip_network(POOL)
        erin = dial(lab, "erin")
        try:
            erin.wait_connected()
            assert erin.address == INSIDE
        finally:
            erin.stop()
    finally:
        alice.stop()


def test_on_up_and_on_down_get_pppd_compat_arguments_and_variables(lab: E2E) -> None:
    client = dial(lab, "alice")
    client.wait_connected()
    arguments, env = recorded(lab.workdir / "up-alice")
    assert client.ifname is not None and client.address is not None
    ifname = arguments[0]
    assert ifname.startswith("sstp")
    assert arguments == [ifname, "none", "0", str(GATEWAY), str(client.address), str(lab.veth.address_b.ip)]
    assert (env["PEERNAME"], env["CALLING_SID"], env["CALLED_SID"], env["IFNAME"], env["IPREMOTE"]) == \
        ("alice", str(lab.veth.address_b.ip), lab.server_address, ifname, str(client.address))
    assert env["SESSION_ID"]
    assert ping(lab.client, GATEWAY) == 3
    client.stop()
    arguments, env = recorded(lab.workdir / "down-alice")
    assert arguments[0] == ifname and env["SESSION_ID"]
    assert int(env["PACKETS_RCVD"]) >= 3 and int(env["BYTES_SENT"]) > 0 and int(env["CONNECT_TIME"]) >= 0
    (lab.workdir / "up-alice").unlink()
    (lab.workdir / "down-alice").unlink()


def daemon_log_once(e2e: E2E, text: str, mark: int = 0, timeout: float = 20) -> str:
    """The daemon's log from ``mark`` on, once ``text`` is in it."""
    deadline = time.monotonic() + timeout
    while text not in (log := e2e.daemon.log()[mark:]):
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{log[-3000:]}"
        time.sleep(0.1)
    return log


def test_on_pre_up_refusal_ends_the_session_and_says_why(lab: E2E) -> None:
    mark = len(lab.daemon.log())
    done = lab.client.run(PYTHON, "-m", "vpnd.cli.main", "client", "--server", lab.server_address,
                          "--ca", str(lab.cert), "--user", "carol", "--password", PASSWORDS["carol"],
                          "--ifname", "sstpc9", "--no-default-route", "--once", timeout=60)
    assert "disconnected after" in done.stderr + done.stdout  # ended by the server, at once
    log = daemon_log_once(lab, "refused by on-pre-up script", mark)
    assert "refused by on-pre-up script" in log and "exited with status 3" in log
    assert "carol is not allowed today" in log
    assert not (lab.workdir / "up-carol").exists() and not (lab.workdir / "down-carol").exists()


def test_a_hanging_on_pre_up_is_killed_and_holds_up_no_one_else(lab: E2E) -> None:
    mark = len(lab.daemon.log())
    bob = dial(lab, "bob", "--once")
    try:
        deadline = time.monotonic() + 20
        while not (lab.workdir / "bob-hanging").exists():
            assert time.monotonic() < deadline, bob.log()
            time.sleep(0.05)
        dave = dial(lab, "dave")  # while bob's script hangs
        try:
            dave.wait_connected()
            assert ping(lab.client, GATEWAY) == 3
        finally:
            dave.stop()
        # Logged as the session ends, after the script's time limit.
        lines = daemon_log_once(lab, "refused by on-pre-up script", mark, SCRIPT_TIMEOUT + 30).splitlines()
        dave_up = next(i for i, line in enumerate(lines) if " dave " in line and "session up" in line)
        bob_killed = next(i for i, line in enumerate(lines) if "timed out and was killed" in line)
        # dave's session came up before bob's script was given up on: nothing waited for it.
        assert dave_up < bob_killed
        assert "refused by on-pre-up script" in lab.daemon.log()[mark:]
        assert not (lab.workdir / "up-bob").exists()
    finally:
        bob.stop()
