"""TLS material for the listener: load it from the config, make the embedded default's.

The crypto-binding check needs the hash of exactly the certificate a client sees, so the
loaded leaf certificate's DER is kept next to the SSLContext.

With `host-name` set, the ClientHello must name that host (SNI): any other name, or none, ends
the handshake with a fatal unrecognized_name alert before any key exchange work is done for it;
``refused_server_name`` tells the connection afterwards that this was the reason.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ssl
import tempfile
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vpnd.config.definitions import Config, ServerSsl
from vpnd.paths import write_atomic
from vpnd.proto.eap.tls_server import EapTlsServerSettings
from vpnd.proto.sstp.packets import HashProtocol


class TlsConfigError(Exception):
    """The configured TLS material cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    context: ssl.SSLContext
    leaf_der: bytes
    description: str  # subject and validity, for the log
    eap_tls: EapTlsServerSettings | None = None  # local EAP-TLS, when configured

    @property
    def cert_hashes(self) -> dict[HashProtocol, bytes]:
        return {
            HashProtocol.SHA1: hashlib.sha1(self.leaf_der).digest(),
            HashProtocol.SHA256: hashlib.sha256(self.leaf_der).digest(),
        }


with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    _VERSIONS = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1,
                 "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_LEGACY_VERSIONS = ("1.0", "1.1")

# Handshakes the host-name check refused, with the name they asked for (None: no SNI). Weak keys:
# an entry goes with its connection's TLS object.
_REFUSED_SNI: weakref.WeakKeyDictionary[ssl.SSLObject, str | None] = weakref.WeakKeyDictionary()


class _HostNameCheck:
    """``SSLContext.sni_callback``: only ``host_name`` may be asked for."""

    def __init__(self, host_name: str) -> None:
        self.host_name = host_name.rstrip(".").lower()

    def __call__(self, tls_object: ssl.SSLObject, server_name: str | None,
                 context: ssl.SSLContext) -> int | None:
        if server_name is not None and server_name.rstrip(".").lower() == self.host_name:
            return None
        _REFUSED_SNI[tls_object] = server_name
        return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME


def refused_server_name(tls_object: ssl.SSLObject) -> tuple[bool, str | None]:
    """(True, the SNI sent or None) when the host-name check ended this handshake."""
    if tls_object in _REFUSED_SNI:
        return True, _REFUSED_SNI[tls_object]
    return False, None


def _pem_blocks(cert_pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(cert_pem)
    except ValueError as error:
        raise TlsConfigError(f"certificate is not valid PEM: {error}") from error


def _der_to_pem(der_b64: str) -> bytes:
    cert = x509.load_der_x509_certificate(base64.b64decode(der_b64))
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_from_pki(key_b64: str) -> bytes:
    key = serialization.load_der_private_key(base64.b64decode(key_b64), password=None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def material_pems(config: Config, ssl_config: ServerSsl) -> tuple[bytes, bytes]:
    """(certificate chain PEM, private key PEM) from files or from the `pki` section."""
    if ssl_config.certificate is not None:
        entry = config.pki.certificate.get(ssl_config.certificate)
        if entry is None or entry.certificate is None or entry.private is None or entry.private.key is None:
            raise TlsConfigError(f"pki certificate {ssl_config.certificate}: certificate or key missing")
        chain = _der_to_pem(str(entry.certificate))
        for name in ssl_config.intermediate_certificate:
            ca = config.pki.ca.get(name)
            if ca is not None and ca.certificate is not None:
                chain += _der_to_pem(str(ca.certificate))
        return chain, _key_from_pki(entry.private.key.get_secret_value())
    if ssl_config.cert_file is None or ssl_config.key_file is None:
        raise TlsConfigError("vpn sstp ssl: a certificate is required "
                             "(cert-file and key-file, or certificate)")
    try:
        chain = Path(ssl_config.cert_file).read_bytes()
        if ssl_config.chain_file is not None:
            chain += b"\n" + Path(ssl_config.chain_file).read_bytes()
        key = Path(ssl_config.key_file).read_bytes()
    except OSError as error:
        raise TlsConfigError(f"cannot read TLS material: {error}") from error
    return chain, key


def eap_tls_settings(config: Config, chain_pem: bytes, key_pem: bytes) -> EapTlsServerSettings | None:
    """Local EAP-TLS (`authentication eap-tls`, mode local, eap allowed): our SSTP certificate
    and key also serve EAP-TLS; client certificates must come from the configured CA."""
    sstp = config.vpn.sstp
    auth = sstp.authentication if sstp is not None else None
    if auth is None or auth.eap_tls is None or auth.mode != "local" or "eap" not in auth.protocols:
        return None
    name = auth.eap_tls.ca_certificate
    ca = config.pki.ca.get(name) if name is not None else None
    if ca is None or ca.certificate is None:
        raise TlsConfigError(f"authentication eap-tls ca-certificate: pki ca {name} has no certificate")
    crl = None
    if auth.eap_tls.crl_file is not None:
        try:
            crl = Path(auth.eap_tls.crl_file).read_bytes()
            x509.load_pem_x509_crl(crl)
        except (OSError, ValueError) as error:
            raise TlsConfigError(f"authentication eap-tls crl-file: {error}") from error
    return EapTlsServerSettings(chain_pem, key_pem, _der_to_pem(str(ca.certificate)), crl,
                                auth.eap_tls.username)


@dataclass(frozen=True, slots=True)
class TlsSource:
    """What the listener's TLS context is built from: bytes and options, no live objects, so a
    plan that carries it can be handed to another process."""

    chain_pem: bytes
    key_pem: bytes
    version_min: str
    ciphers: str | None
    host_name: str | None
    eap_tls: EapTlsServerSettings | None = None  # local EAP-TLS, when configured

    def load(self) -> TlsMaterial:
        certs = _pem_blocks(self.chain_pem)
        if not certs:
            raise TlsConfigError("no certificate found in the configured file")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        legacy = self.version_min in _LEGACY_VERSIONS
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1 and TLSv1_1: asked for explicitly
            context.minimum_version = _VERSIONS[self.version_min]
        # No renegotiation (accel-ppp misspells this flag and leaves it on), no compression.
        context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
        if self.host_name is not None:
            context.sni_callback = _HostNameCheck(self.host_name)
        ciphers = self.ciphers
        if legacy:  # OpenSSL 3 refuses TLS 1.0/1.1 handshakes (SHA-1 signatures) above level 0
            ciphers = f"{ciphers or 'DEFAULT'}:@SECLEVEL=0"
        if ciphers is not None:
            try:
                context.set_ciphers(ciphers)
            except ssl.SSLError as error:
                raise TlsConfigError(f"ciphers {self.ciphers!r}: {error}") from error
        # The ssl module loads a chain only from files: hand it private temporary files.
        with tempfile.TemporaryDirectory(prefix="vpnd-tls-") as tmp:
            cert_path, key_path = Path(tmp) / "chain.pem", Path(tmp) / "key.pem"
            write_atomic(cert_path, self.chain_pem, mode=0o600)
            write_atomic(key_path, self.key_pem, mode=0o600)
            try:
                context.load_cert_chain(cert_path, key_path)
            except ssl.SSLError as error:
                raise TlsConfigError(f"certificate and key do not load together: {error}") from error
        leaf = certs[0]
        description = (f"{leaf.subject.rfc4514_string()}, valid until "
                       f"{leaf.not_valid_after_utc:%Y-%m-%d}, {len(certs) - 1} intermediate(s)")
        return TlsMaterial(context, leaf.public_bytes(serialization.Encoding.DER), description,
                           self.eap_tls)


def tls_source(config: Config) -> TlsSource:
    """Read the configured certificate chain and key (files or `pki`)."""
    sstp = config.vpn.sstp
    if sstp is None or sstp.ssl is None:
        raise TlsConfigError("vpn sstp ssl is not configured")
    chain_pem, key_pem = material_pems(config, sstp.ssl)
    ciphers = str(sstp.ssl.ciphers) if sstp.ssl.ciphers else None
    return TlsSource(chain_pem, key_pem, sstp.ssl.tls_version_min, ciphers, sstp.host_name,
                     eap_tls_settings(config, chain_pem, key_pem))


def build_tls(config: Config) -> TlsMaterial:
    return tls_source(config).load()


def make_self_signed(directory: Path, common_name: str,
                     addresses: Sequence[IPv4Address | IPv6Address] = ()) -> tuple[Path, Path]:
    """A self-signed RSA-2048 server certificate and key (0600), for the embedded default.

    RSA, not ECDSA: some Windows SSTP clients only managed ECDSA over TLS 1.3. ``addresses``
    become IP subject alternative names, so that a client dialling an address can verify it.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(common_name), *(x509.IPAddress(address) for address in addresses)]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    write_atomic(key_path, key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()), mode=0o600)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return cert_path, key_path
