"""Local EAP-TLS: the authenticator checks client certificates itself (chain, validity, CRL) and
takes the user name from the certificate; our EAP-TLS peer on the other end, TLS 1.2 and 1.3.

Interop note: the peer here is ours; against FreeRADIUS it is checked in tests/aaa. Windows'
EAP-TLS client could not be run here: framing and keys follow RFC 5216/9190 and MS-SSTP.
About 3 s (RSA keys).
"""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.aaa.test_radius_eap import _client_certificate
from tests.config.test_session import Pki
from vpnd.proto.eap.client import EapClient
from vpnd.proto.eap.server import EapServer
from vpnd.proto.eap.tls_server import EapTlsServerSettings, username_from_certificate
from vpnd.proto.ppp.auth.types import AuthEvent, AuthFailed, AuthSucceeded
from vpnd.proto.sstp.binding import hlak_from_keys


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _settings(pki: Pki, *, crl_serial: int | None = None, tls13: bool = True) -> EapTlsServerSettings:
    key = pki.srv_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    crl = None
    if crl_serial is not None:
        now = datetime.datetime.now(datetime.UTC)
        crl = _pem_crl(x509.CertificateRevocationListBuilder().issuer_name(pki.ca.subject)
                       .last_update(now - datetime.timedelta(days=1))
                       .next_update(now + datetime.timedelta(days=9))
                       .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(crl_serial)
                                                .revocation_date(now).build())
                       .sign(pki.ca_key, hashes.SHA256()))
    return EapTlsServerSettings(_pem(pki.srv), key, _pem(pki.ca), crl, tls13=tls13)


def _pem_crl(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def _run(settings: EapTlsServerSettings, pki: Pki, client_cert: tuple[bytes, bytes, int]
         ) -> tuple[list[AuthEvent], list[AuthEvent]]:
    server = EapServer(tls=settings)
    client = EapClient(username="ignored-identity", password="", eap_ca=_pem(pki.ca),
                       certificate=client_cert[0], key=client_cert[1])
    server.start(0.0)
    client.start(0.0)
    server_events: list[AuthEvent] = []
    client_events: list[AuthEvent] = []
    for _ in range(40):
        for packet in server.packets_to_send():
            client.receive(packet, 0.0)
        for packet in client.packets_to_send():
            server.receive(packet, 0.0)
        while (event := server.next_event()) is not None:
            server_events.append(event)
        while (client_event := client.next_event()) is not None:
            client_events.append(client_event)
        if server_events and client_events:
            break
    return server_events, client_events


@pytest.mark.parametrize("tls13", [True, False], ids=["tls1.3", "tls1.2"])
def test_local_eap_tls_logs_in_with_the_certificates_name_and_keys_bind(pki: Pki, tls13: bool) -> None:
    server_events, client_events = _run(_settings(pki, tls13=tls13), pki, _client_certificate(pki, "carol"))
    [server_ok], [client_ok] = server_events, client_events
    assert isinstance(server_ok, AuthSucceeded) and isinstance(client_ok, AuthSucceeded)
    assert server_ok.username == "carol" and server_ok.method_name == client_ok.method_name == "eap-tls"
    assert server_ok.keys is not None and client_ok.keys is not None
    assert hlak_from_keys(server_ok.keys, is_server=True) == hlak_from_keys(client_ok.keys, is_server=False)


@pytest.mark.parametrize(("which", "cause"), [("expired", "certificate has expired"),
                                              ("revoked", "certificate revoked"),
                                              # another CA of the same name: its signature fails
                                              ("stranger", "the signature is invalid")])
def test_expired_revoked_and_unknown_ca_certificates_are_refused_with_the_cause(
        pki: Pki, which: str, cause: str) -> None:
    if which == "stranger":
        certificate = _client_certificate(Pki(), "carol")
    else:
        certificate = _client_certificate(pki, "carol", days=(-30, -1) if which == "expired" else (-1, 30))
    settings = _settings(pki, crl_serial=certificate[2] if which == "revoked" else 1)
    server_events, client_events = _run(settings, pki, certificate)
    [server_failed] = server_events
    assert isinstance(server_failed, AuthFailed), server_failed
    assert server_failed.reason.startswith(f"EAP-TLS: client certificate refused: {cause}"), server_failed
    assert server_failed.method_name == "eap-tls"
    assert not any(isinstance(e, AuthSucceeded) for e in client_events)


def test_user_name_from_email_or_upn() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    upn = x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x11dave@corp.example")
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Dave")]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Dave")]))
                   .public_key(key.public_key()).serial_number(1)
                   .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("dave@mail.example"), upn]),
                                  critical=False)
                   .sign(key, hashes.SHA256()))
    assert username_from_certificate(certificate, "common-name") == "Dave"
    assert username_from_certificate(certificate, "email") == "dave@mail.example"
    assert username_from_certificate(certificate, "upn") == "dave@corp.example"
