"""EAP through the daemon to a real FreeRADIUS (RFC 3579 pass-through), with TUNs in namespaces.

FreeRADIUS runs PEAP (TLS 1.2, certificates made by the test) and EAP-MSCHAPv2 in its eap
module; vpnd only relays. `vpnd client --auth eap` logs in with each (without --eap-ca it Naks
PEAP and FreeRADIUS falls back to EAP-MSCHAPv2), the crypto binding verifies with the keys
FreeRADIUS sent (no IP passes before it does), the Access-Accept's Framed-IP-Address is
applied, traffic passes, and accounting Start and Stop reach FreeRADIUS's detail file; a wrong
password, plain or inside PEAP, is refused with the cause in the logs. EAP-TLS logs in with a
client certificate; an expired and a revoked one (CRL) are refused, FreeRADIUS's log naming why.

Interop note: Windows' own EAP stack (PEAP, EAP-TLS profiles) could not be run here; the relay
and the HLAK (MS-MPPE-Recv-Key = MSK[0:32], MS-SSTP §3.2.5.2) follow the specs.

Needs root (namespaces, TUN) and freeradius. About 45 s alone, 2 min beside other test runs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tests.aaa.test_radius_eap import _client_certificate, _pem_files, with_crl
from tests.config.test_session import Pki
from tests.e2e.conftest import E2E, GATEWAY, SERVER_NAME, server_config
from tests.e2e.test_tunnel import assert_nothing_left, ping
from tests.support.daemon import TestDaemon
from tests.support.freeradius import FreeRadius, freeradius_in
from tests.support.netns import Lab, require_root_netns
from tests.support.peers import require_program
from vpnd.server.tls import make_self_signed

pytestmark = pytest.mark.root

PASSWORD = "dave-eap-secret"
ADDRESS = IPv4Address("10.66.0.77")
USERS = f"""\
dave    Cleartext-Password := "{PASSWORD}"
        Framed-IP-Address = {ADDRESS}
"""


@dataclass
class EapLab:
    e2e: E2E
    radius: FreeRadius
    radius_ca: Path  # the CA of FreeRADIUS's PEAP certificate


@pytest.fixture(scope="module")
def eap_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EapLab]:
    require_root_netns()
    require_program("freeradius")
    workdir = tmp_path_factory.mktemp("eap-radius-e2e")
    cert, key = make_self_signed(workdir, SERVER_NAME)
    lab = Lab()
    radius: FreeRadius | None = None
    try:
        server = lab.namespace()
        client = lab.namespace()
        veth = lab.veth(server, client)
        pki = Pki()
        pki_dir = workdir / "radius-pki"
        pki_dir.mkdir()
        certificates = {}
        for name, days in (("good", (-1, 365)), ("expired", (-30, -1)), ("revoked", (-1, 365))):
            client_pem, client_key, serial = _client_certificate(pki, "dave", days=days)
            (pki_dir / f"{name}.pem").write_bytes(client_pem)
            (pki_dir / f"{name}.key").write_bytes(client_key)
            certificates[name] = serial
        tls = with_crl(pki, _pem_files(pki, pki_dir), certificates["revoked"])
        # PEAP is FreeRADIUS's first offer; a client without --eap-ca Naks it for EAP-MSCHAPv2,
        # one with a certificate Naks it for EAP-TLS.
        radius = freeradius_in(server, workdir, USERS, eap_types=("peap", "mschapv2", "tls"), eap_tls=tls)
        radius.start()
        config = server_config(cert, key)
        config["vpn"]["sstp"]["authentication"] = {"mode": "radius", "protocols": ["eap", "mschap-v2"],
                                                   "radius": {
            "server": {"127.0.0.1": {"key": radius.secret, "port": radius.auth_port,
                                     "acct-port": radius.acct_port}},
            "nas-identifier": "vpnd-eap-e2e"}}
        daemon = TestDaemon(lab, server, config, workdir, state_dir=workdir / "state")
        daemon.start()
        daemon.wait_listening()
        yield EapLab(E2E(lab, server, client, veth, daemon, cert, cert, workdir), radius, tls.ca)
    finally:
        if radius is not None:
            radius.cleanup()
        lab.cleanup()
    lab.assert_clean()


def test_eap_mschapv2_through_freeradius_binds_and_is_accounted(eap_lab: EapLab) -> None:
    e2e = eap_lab.e2e
    client = e2e.start_client("dave", "--auth", "eap", "--ifname", "sstpc5", "--no-default-route",
                              password=PASSWORD)
    try:
        client.wait_connected()
        assert client.address == ADDRESS  # the Access-Accept's Framed-IP-Address
        assert "authenticated with eap-mschap-v2" in e2e.daemon.log()
        assert ping(e2e.client, GATEWAY) == 3
        assert ping(e2e.server, ADDRESS) == 3
        [session] = e2e.daemon.statistics()["sessions"]
        assert (session["username"], session["auth"]) == ("dave", "eap-mschap-v2")
    finally:
        assert client.stop() == 0, client.log()
    deadline = time.monotonic() + 10
    while (stats := e2e.daemon.statistics()["statistics"])["accounting"]["spool"]["records"]:
        assert time.monotonic() < deadline, stats["accounting"]
        time.sleep(0.1)
    records = [r for r in eap_lab.radius.detail_records() if r.get("User-Name") == ["dave"]]
    assert [r["Acct-Status-Type"][0] for r in records] == ["Start", "Stop"]
    assert records[0]["Framed-IP-Address"] == [str(ADDRESS)]
    assert_nothing_left(e2e, ["sstpc5"])


def test_wrong_password_through_freeradius_is_refused_with_the_cause(eap_lab: EapLab) -> None:
    e2e = eap_lab.e2e
    done = e2e.run_client("dave", "--auth", "eap", "--ifname", "sstpc6", password="not-daves", timeout=40)
    assert done.returncode != 0 and "connected:" not in done.stderr
    assert "authentication failed: EAP-MSCHAPv2 E=691" in done.stderr, done.stderr
    assert re.search(r"dave .*authentication failed \(eap-mschap-v2\): Access-Reject from the RADIUS server",
                     e2e.daemon.log()), e2e.daemon.log()[-3000:]
    assert_nothing_left(e2e, ["sstpc6"])


def test_peap_through_freeradius_binds_and_carries_traffic(eap_lab: EapLab) -> None:
    e2e = eap_lab.e2e
    client = e2e.start_client("dave", "--auth", "eap", "--eap-ca", str(eap_lab.radius_ca),
                              "--ifname", "sstpc4", "--no-default-route", password=PASSWORD)
    try:
        client.wait_connected()
        assert client.address == ADDRESS
        assert "authenticated with eap-peap" in e2e.daemon.log()
        assert ping(e2e.client, GATEWAY) == 3  # IP passes only after the binding made from the MSK
        [session] = e2e.daemon.statistics()["sessions"]
        assert session["auth"] == "eap-peap"
    finally:
        assert client.stop() == 0, client.log()
    assert_nothing_left(e2e, ["sstpc4"])


def test_peap_with_a_wrong_inner_password_is_refused_with_the_cause(eap_lab: EapLab) -> None:
    e2e = eap_lab.e2e
    done = e2e.run_client("dave", "--auth", "eap", "--eap-ca", str(eap_lab.radius_ca),
                          "--ifname", "sstpc3", password="not-daves", timeout=40, host=e2e.another_host())
    assert done.returncode != 0 and "connected:" not in done.stderr
    assert "authentication failed: PEAP: inner EAP-MSCHAPv2 E=691" in done.stderr, done.stderr
    assert re.search(r"dave .*authentication failed \(eap-peap\): Access-Reject", e2e.daemon.log()), \
        e2e.daemon.log()[-3000:]


def _eap_tls_args(eap_lab: EapLab, which: str) -> list[str]:
    directory = eap_lab.radius_ca.parent
    return ["--auth", "eap", "--eap-ca", str(eap_lab.radius_ca),
            "--eap-cert", str(directory / f"{which}.pem"), "--eap-key", str(directory / f"{which}.key")]


def test_eap_tls_through_freeradius_binds_and_carries_traffic(eap_lab: EapLab) -> None:
    e2e = eap_lab.e2e
    client = e2e.start_client("dave", *_eap_tls_args(eap_lab, "good"), "--ifname", "sstpc2",
                              "--no-default-route", password="unused")
    try:
        client.wait_connected()
        assert "authenticated with eap-tls" in e2e.daemon.log()
        assert client.address is not None
        assert ping(e2e.client, GATEWAY) == 3  # IP passes only after the binding made from the MSK
    finally:
        assert client.stop() == 0, client.log()
    assert_nothing_left(e2e, ["sstpc2"])


@pytest.mark.parametrize(("which", "cause"), [("expired", "certificate has expired"),
                                              ("revoked", "certificate revoked")])
def test_expired_and_revoked_certificates_are_refused_with_the_cause(eap_lab: EapLab, which: str,
                                                                     cause: str) -> None:
    e2e = eap_lab.e2e
    done = e2e.run_client("dave", *_eap_tls_args(eap_lab, which), "--ifname", "sstpc1", password="unused",
                          timeout=40, host=e2e.another_host())
    assert done.returncode != 0 and "connected:" not in done.stderr
    assert "authentication failed: EAP-TLS: the server refused our certificate" in done.stderr, done.stderr
    assert re.search(r"dave .*authentication failed \(eap-tls\): Access-Reject", e2e.daemon.log())
    assert cause in eap_lab.radius.log_text()  # the verdict is FreeRADIUS's, and its log says why
