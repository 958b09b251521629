"""EAP pass-through (RFC 3579) against a real FreeRADIUS with its eap module: our EAP peer, the
relaying authenticator of the PPP core and the RADIUS backend, with FreeRADIUS running the method.

PEAP runs TLS 1.2, EAP-TLS TLS 1.2 and 1.3 (RFC 9190) between our peer and FreeRADIUS, with a
CA, server and client certificates and a CRL the test makes. Needs freeradius (skipped without
it, failed under CI=true). About 15 s.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyrad.packet import AuthPacket

from tests.config.test_session import Pki
from tests.support.freeradius import EapTlsFiles, FreeRadius, RadiusClientEntry
from tests.support.peers import require_program
from vpnd.aaa.dictionary import load_dictionary
from vpnd.aaa.radius import (
    EAP_MESSAGE_CHUNK,
    NasSettings,
    RadiusAuthenticator,
    RadiusClient,
    RadiusReply,
    RadiusServerSpec,
    SessionContext,
    join_eap_message,
    split_eap_message,
)
from vpnd.proto.eap.client import EapClient
from vpnd.proto.eap.relay import EapRelayServer
from vpnd.proto.ppp.auth.types import AuthDecision, AuthEvent, AuthFailed, AuthRequested, AuthSucceeded
from vpnd.proto.sstp.binding import hlak_from_keys

SECRET = b"eap-relay-secret"
LOCALHOST = IPv4Address("127.0.0.1")
CONTEXT = SessionContext("sstp3", "192.0.2.30", "198.51.100.1", "sess-eap-3", 3)
NAS = NasSettings("vpnd-test", IPv4Address("198.51.100.1"))
USERS = '''
alice   Cleartext-Password := "alicepass"
        Reply-Message = "hello alice",
        Framed-IP-Address = 10.99.0.33
'''


@pytest.fixture(scope="module")
def radius() -> Iterator[FreeRadius]:
    require_program("freeradius")
    # require_message_authenticator: FreeRADIUS checks ours on every round trip.
    server = FreeRadius(USERS, [RadiusClientEntry("vpnd", "127.0.0.1", SECRET.decode(), True)],
                        eap_types=("mschapv2",))
    server.start()
    yield server
    server.cleanup()


def test_eap_message_is_split_into_253_byte_attributes_and_joined_back() -> None:
    packet = bytes(range(256)) * 3  # 768 bytes: 253 + 253 + 253 + 9
    chunks = split_eap_message(packet)
    assert [len(c) for c in chunks] == [EAP_MESSAGE_CHUNK] * 3 + [9]
    dictionary = load_dictionary()
    reply = AuthPacket(code=11, id=1, secret=SECRET, authenticator=bytes(16), dict=dictionary)
    for chunk in chunks:
        reply.AddAttribute("EAP-Message", chunk)
    decoded = AuthPacket(packet=reply.RequestPacket(), secret=SECRET, dict=dictionary)
    server = RadiusServerSpec(LOCALHOST, SECRET, 1812, 1813)
    assert join_eap_message(RadiusReply(11, decoded, bytes(16), server, 0.0)) == packet
    with pytest.raises(ValueError):
        split_eap_message(b"")


def _relay(radius: FreeRadius, username: str, password: str, eap_ca: bytes | None = None,
           certificate: bytes | None = None, key: bytes | None = None,
           ) -> tuple[list[AuthEvent], list[AuthEvent], list[AuthDecision]]:
    """Peer and relaying authenticator back to back, FreeRADIUS deciding each round trip."""
    backend = RadiusAuthenticator(
        RadiusClient([RadiusServerSpec(LOCALHOST, SECRET, radius.auth_port, radius.acct_port)],
                     timeout=2, max_try=2), NAS)

    async def run() -> tuple[list[AuthEvent], list[AuthEvent], list[AuthDecision]]:
        server = EapRelayServer()
        peer = EapClient(username=username, password=password, eap_ca=eap_ca, certificate=certificate,
                         key=key)
        server_events: list[AuthEvent] = []
        peer_events: list[AuthEvent] = []
        decisions: list[AuthDecision] = []
        server.start(0.0)
        peer.start(0.0)
        for _ in range(80):
            for packet in server.packets_to_send():
                peer.receive(packet, 0.0)
            for packet in peer.packets_to_send():
                server.receive(packet, 0.0)
            while (event := server.next_event()) is not None:
                if isinstance(event, AuthRequested):
                    decision = await backend.authenticate(event.request, CONTEXT)
                    decisions.append(decision)
                    server.decide(decision, 0.0)
                else:
                    server_events.append(event)
            while (peer_event := peer.next_event()) is not None:
                peer_events.append(peer_event)
            if server_events and peer_events:
                return server_events, peer_events, decisions
        if peer_events:  # the peer gave up; the server would wait for its exchange deadline
            return server_events, peer_events, decisions
        raise AssertionError(f"EAP did not finish: {server_events} {peer_events} {decisions}")

    return asyncio.run(run())


def test_eap_mschapv2_through_freeradius_logs_in_and_keys_bind(radius: FreeRadius) -> None:
    server_events, peer_events, decisions = _relay(radius, "alice", "alicepass")
    # Identity, Challenge/Response, Success-Request/Response: State carried every continuation.
    assert [d.eap_continue for d in decisions] == [True, True, False]
    assert all(d.relay_state for d in decisions[:2])
    [server_ok], [peer_ok] = server_events, peer_events
    assert isinstance(server_ok, AuthSucceeded) and isinstance(peer_ok, AuthSucceeded)
    assert server_ok.method_name == "eap-mschap-v2" and server_ok.username == "alice"
    # The HLAK from FreeRADIUS's MS-MPPE-Recv/Send-Key equals the one our peer derived itself.
    assert server_ok.keys is not None and peer_ok.keys is not None
    assert hlak_from_keys(server_ok.keys, is_server=True) == hlak_from_keys(peer_ok.keys, is_server=False)
    assert decisions[-1].attributes.get("framed_ip") == IPv4Address("10.99.0.33")
    assert decisions[-1].message == "hello alice"


def test_wrong_password_through_freeradius_is_refused_with_the_cause(radius: FreeRadius) -> None:
    server_events, peer_events, decisions = _relay(radius, "alice", "not-alices")
    [server_failed], [peer_failed] = server_events, peer_events
    assert isinstance(server_failed, AuthFailed) and isinstance(peer_failed, AuthFailed)
    assert server_failed.method_name == "eap-mschap-v2"
    assert not decisions[-1].accepted and not decisions[-1].unavailable
    assert peer_failed.reason.startswith("EAP-MSCHAPv2 E=691"), peer_failed
    # FreeRADIUS's users file puts alice's Reply-Message into the Reject as well.
    assert server_failed.reason == "Access-Reject from the RADIUS server (hello alice)"


# --- PEAP with EAP-MSCHAPv2 inside: TLS between our peer and FreeRADIUS, vpnd relays -----------------


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture(scope="module")
def peap_radius(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreeRadius]:
    require_program("freeradius")
    files = _pem_files(pki, tmp_path_factory.mktemp("peap-pki"))
    server = FreeRadius(USERS, [RadiusClientEntry("vpnd", "127.0.0.1", SECRET.decode(), True)],
                        eap_types=("peap", "mschapv2"), eap_tls=files)
    server.start()
    yield server
    server.cleanup()


def _pem_files(pki: Pki, directory: Path) -> EapTlsFiles:
    files = EapTlsFiles(directory / "server.pem", directory / "server.key", directory / "ca.pem")
    files.certificate.write_bytes(pki.srv.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(pki.srv_key.private_bytes(serialization.Encoding.PEM,
                                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                                    serialization.NoEncryption()))
    files.ca.write_bytes(pki.ca.public_bytes(serialization.Encoding.PEM))
    return files


def test_peap_mschapv2_through_freeradius_logs_in_and_keys_bind(peap_radius: FreeRadius, pki: Pki) -> None:
    ca = pki.ca.public_bytes(serialization.Encoding.PEM)
    server_events, peer_events, decisions = _relay(peap_radius, "alice", "alicepass", eap_ca=ca)
    [server_ok], [peer_ok] = server_events, peer_events
    assert isinstance(server_ok, AuthSucceeded) and isinstance(peer_ok, AuthSucceeded), (server_ok, peer_ok)
    assert server_ok.method_name == peer_ok.method_name == "eap-peap"
    # The MSK our peer exported from its TLS equals the one FreeRADIUS sent as MS-MPPE-Recv-Key.
    assert server_ok.keys is not None and peer_ok.keys is not None
    server_hlak = hlak_from_keys(server_ok.keys, is_server=True)
    assert server_hlak == hlak_from_keys(peer_ok.keys, is_server=False) != bytes(32)
    assert len(decisions) > 5  # TLS flights, inner Identity, MS-CHAPv2, Result TLV


def test_peap_with_a_wrong_inner_password_is_refused_with_the_cause(peap_radius: FreeRadius,
                                                                     pki: Pki) -> None:
    ca = pki.ca.public_bytes(serialization.Encoding.PEM)
    server_events, peer_events, _ = _relay(peap_radius, "alice", "not-alices", eap_ca=ca)
    [server_failed], [peer_failed] = server_events, peer_events
    assert isinstance(server_failed, AuthFailed) and isinstance(peer_failed, AuthFailed)
    assert server_failed.method_name == "eap-peap"
    assert peer_failed.reason.startswith("PEAP: inner EAP-MSCHAPv2 E=691"), peer_failed


def test_peap_to_a_server_of_another_ca_is_refused(peap_radius: FreeRadius) -> None:
    stranger = Pki().ca.public_bytes(serialization.Encoding.PEM)
    _, peer_events, _ = _relay(peap_radius, "alice", "alicepass", eap_ca=stranger)
    [peer_failed] = peer_events
    assert isinstance(peer_failed, AuthFailed)
    assert peer_failed.reason.startswith("PEAP: TLS handshake failed"), peer_failed
    assert "certificate verify failed" in peer_failed.reason


# --- EAP-TLS with a client certificate: TLS 1.2 and 1.3 (RFC 9190) -----------------------------------


def _client_certificate(pki: Pki, name: str, *,
                        days: tuple[int, int] = (-1, 365)) -> tuple[bytes, bytes, int]:
    """PEM certificate and key for ``name`` issued by the test CA, valid from/until ``days``
    around now; and its serial number."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    serial = x509.random_serial_number()
    certificate = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(pki.ca.subject)
                   .public_key(key.public_key())
                   .serial_number(serial)
                   .not_valid_before(now + datetime.timedelta(days=days[0]))
                   .not_valid_after(now + datetime.timedelta(days=days[1]))
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                   .sign(pki.ca_key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem, serial


def with_crl(pki: Pki, files: EapTlsFiles, revoked_serial: int, *, max_version: str = "1.2") -> EapTlsFiles:
    """``files`` with the CA's CRL (revoking ``revoked_serial``) added to its CA file, checked."""
    now = datetime.datetime.now(datetime.UTC)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(pki.ca.subject)
           .last_update(now - datetime.timedelta(days=1)).next_update(now + datetime.timedelta(days=30))
           .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(revoked_serial)
                                    .revocation_date(now - datetime.timedelta(hours=1)).build())
           .sign(pki.ca_key, hashes.SHA256()))
    files.ca.write_bytes(files.ca.read_bytes() + crl.public_bytes(serialization.Encoding.PEM))
    return EapTlsFiles(files.certificate, files.key, files.ca, max_version=max_version, check_crl=True)


@dataclass
class TlsLab:
    radius: FreeRadius
    ca: bytes
    good: tuple[bytes, bytes, int]
    expired: tuple[bytes, bytes, int]
    revoked: tuple[bytes, bytes, int]


@pytest.fixture(scope="module", params=["1.2", "1.3"])
def tls_lab(request: pytest.FixtureRequest, pki: Pki,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsLab]:
    require_program("freeradius")
    directory = tmp_path_factory.mktemp("eap-tls-pki")
    files = _pem_files(pki, directory)
    good = _client_certificate(pki, "alice")
    expired = _client_certificate(pki, "alice", days=(-30, -1))
    revoked = _client_certificate(pki, "alice")
    ca_pem = files.ca.read_bytes()
    tls_files = with_crl(pki, files, revoked[2], max_version=request.param)
    server = FreeRadius(USERS, [RadiusClientEntry("vpnd", "127.0.0.1", SECRET.decode(), True)],
                        eap_types=("tls",), eap_tls=tls_files)
    server.start()
    yield TlsLab(server, ca_pem, good, expired, revoked)
    server.cleanup()


def _eap_tls(lab: TlsLab, which: tuple[bytes, bytes, int]) -> tuple[list[AuthEvent], list[AuthEvent],
                                                                    list[AuthDecision]]:
    return _relay(lab.radius, "alice", "", eap_ca=lab.ca, certificate=which[0], key=which[1])


def test_eap_tls_through_freeradius_logs_in_and_keys_bind(tls_lab: TlsLab) -> None:
    server_events, peer_events, _ = _eap_tls(tls_lab, tls_lab.good)
    [server_ok], [peer_ok] = server_events, peer_events
    assert isinstance(server_ok, AuthSucceeded) and isinstance(peer_ok, AuthSucceeded), (server_ok, peer_ok)
    assert server_ok.method_name == peer_ok.method_name == "eap-tls"
    assert server_ok.keys is not None and peer_ok.keys is not None
    server_hlak = hlak_from_keys(server_ok.keys, is_server=True)
    assert server_hlak == hlak_from_keys(peer_ok.keys, is_server=False) != bytes(32)


@pytest.mark.parametrize("which", ["expired", "revoked"])
def test_expired_and_revoked_client_certificates_are_refused_with_the_cause(tls_lab: TlsLab,
                                                                            which: str) -> None:
    server_events, peer_events, _ = _eap_tls(tls_lab, getattr(tls_lab, which))
    assert not any(isinstance(e, AuthSucceeded) for e in server_events + peer_events)
    [peer_failed] = peer_events
    assert isinstance(peer_failed, AuthFailed)
    assert peer_failed.reason.startswith("EAP-TLS: the server refused our certificate"), peer_failed
    assert peer_failed.method_name == "eap-tls"
    # The verdict on the certificate is the RADIUS server's; its log says why.
    cause = {"expired": "certificate has expired", "revoked": "certificate revoked"}[which]
    assert cause in tls_lab.radius.log_text()
