"""TLS for the SSTP client: the context, the server name check, failures in words.

Certificate checks follow `interfaces sstpc`: ``verify-server-certificate`` checks the chain against
the configured CA, ``verify-server-address-from-certificate`` checks the dialled name or address
against the certificate. When SNI is sent, OpenSSL checks the name during the handshake; without
SNI there is no name to hand OpenSSL, so the leaf is matched here after the handshake.
"""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from vpnd.proto.sstp.packets import HashProtocol

# OpenSSL X509_V_ERR_* codes (openssl/x509_vfy.h) and what we tell the operator.
_VERIFY_MESSAGES: dict[int, str] = {
    2: "unable to get issuer certificate",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate in chain",  # the leaf itself is self-signed and not trusted
    19: "self-signed certificate in chain",
    20: "unable to get issuer certificate",  # ... locally: the CA file does not hold it
    21: "unable to get issuer certificate",  # unable to verify the leaf signature
    26: "invalid purpose",  # no serverAuth in the extended key usage
    62: "server address does not match the certificate",  # host name mismatch
    64: "server address does not match the certificate",  # IP address mismatch
}


class ClientTlsError(Exception):
    """The TLS connection to the server cannot be trusted or set up; the message says why."""


@dataclass(frozen=True, slots=True)
class ClientTlsOptions:
    server_name: str  # what the server is called: checked against the certificate
    sni: str | None  # sent in the ClientHello (None: no SNI)
    verify_certificate: bool = True
    verify_name: bool = True
    ca_data: str | None = None  # PEM; None with verify_certificate: the system store
    tls_version: str = "any"  # any | only-1.2 | only-1.3


def make_client_context(options: ClientTlsOptions) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if options.tls_version == "only-1.2":
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    elif options.tls_version == "only-1.3":
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    # OpenSSL checks the name only when it is also the SNI (Python ties the two together).
    context.check_hostname = options.verify_certificate and options.verify_name and \
        options.sni is not None and options.sni == options.server_name
    if not options.verify_certificate:
        context.verify_mode = ssl.CERT_NONE
        return context
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        if options.ca_data is not None:
            context.load_verify_locations(cadata=options.ca_data)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    except (ssl.SSLError, ValueError) as error:
        raise ClientTlsError(f"cannot load the CA certificate: {error}") from error
    return context


def describe_tls_failure(error: BaseException) -> str:
    """One line for a failed handshake: certificate problems in words, the rest as OpenSSL says."""
    if isinstance(error, ssl.SSLCertVerificationError):
        code = error.verify_code
        words = _VERIFY_MESSAGES.get(code)
        if words is not None:
            return f"server certificate rejected: {words}"
        return f"server certificate rejected: {error.verify_message or error.reason} (code {code})"
    if isinstance(error, ssl.SSLError):
        return f"TLS handshake failed: {error.reason or error}"
    return f"TLS handshake failed: {error}"


def cert_hashes(der: bytes) -> dict[HashProtocol, bytes]:
    """Hashes of the certificate the server presented, for the crypto binding."""
    return {HashProtocol.SHA1: hashlib.sha1(der).digest(), HashProtocol.SHA256: hashlib.sha256(der).digest()}


def _dns_matches(pattern: str, name: str) -> bool:
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern == name:
        return True
    # RFC 6125: a wildcard stands for exactly one whole left-most label.
    if pattern.startswith("*.") and "." in name:
        return name.split(".", 1)[1] == pattern[2:] and pattern.count(".") >= 2
    return False


def certificate_matches(der: bytes, name: str) -> bool:
    """Whether the leaf certificate names ``name`` (a host name or an IP address literal)."""
    cert = x509.load_der_x509_certificate(der)
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        address = None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if address is not None:
        return san is not None and address in san.get_values_for_type(x509.IPAddress)
    if san is not None:
        dns_names = san.get_values_for_type(x509.DNSName)
        if dns_names:
            return any(_dns_matches(pattern, name) for pattern in dns_names)
    # No DNS names in a SAN: the common name is the fallback old certificates rely on.
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return any(_dns_matches(str(attribute.value), name) for attribute in common_names)


def check_after_handshake(options: ClientTlsOptions, context: ssl.SSLContext, der: bytes | None) -> None:
    """The checks OpenSSL could not make during the handshake (the name when no SNI was sent)."""
    if der is None:
        raise ClientTlsError("the server presented no certificate")
    if options.verify_certificate and options.verify_name and not context.check_hostname and \
            not certificate_matches(der, options.server_name):
        raise ClientTlsError("server certificate rejected: server address does not match the certificate "
                             f"({options.server_name})")
