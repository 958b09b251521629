"""EAP-TLS in the authenticator role (RFC 5216, RFC 9190): client certificates checked here.

The client's chain must end in the configured CA, be within its validity and, with a CRL, not
be revoked; OpenSSL's verdict is kept in words ("certificate has expired") for the log. The user
name comes from the certificate field the operator chose. TLS 1.2 and 1.3; with 1.3 the server
sends the one-byte commitment message after the handshake (RFC 9190 §2.5). Framing and keys are
those of ``vpnd.proto.eap.tls``: the MSK is exported from the TLS session and MSK[0:32] is the
SSTP HLAK. TLS runs in pyOpenSSL memory BIOs: no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID, ObjectIdentifier
from OpenSSL import SSL, crypto

from vpnd.proto.eap.tls import (
    EAP_TLS_TYPE_CONTEXT,
    FLAG_LENGTH,
    FLAG_MORE,
    FLAG_START,
    FRAGMENT_SIZE,
    MAX_MESSAGE,
    MSK_LABEL,
    MSK_LABEL_TLS13,
    TlsMethodError,
)

__all__ = ["EapTlsServerSettings", "TlsServer", "username_from_certificate"]

UsernameSource = Literal["common-name", "email", "upn"]
_UPN = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")  # Microsoft User Principal Name (otherName)
# X509_V_ERR_* codes in words, for the log (OpenSSL's x509_vfy.h).
_VERIFY_ERRORS = {
    2: "the issuer certificate is unknown", 3: "there is no CRL for the CA", 7: "the signature is invalid",
    9: "certificate is not yet valid", 10: "certificate has expired", 11: "the CRL is not yet valid",
    12: "the CRL has expired", 18: "certificate is self-signed",
    19: "a self-signed certificate is in the chain",
    20: "the issuing CA is unknown", 21: "unable to verify the first certificate", 23: "certificate revoked",
    24: "invalid CA certificate", 26: "certificate not allowed for client authentication",
}


@dataclass(frozen=True, slots=True)
class EapTlsServerSettings:
    """PEM: our certificate (chain) and key, the CA(s) of client certificates, an optional CRL."""

    certificate: bytes
    key: bytes
    client_ca: bytes
    crl: bytes | None = None
    username_from: UsernameSource = "common-name"
    tls13: bool = True  # False: TLS 1.2 at most


def username_from_certificate(certificate: x509.Certificate, source: UsernameSource) -> str | None:
    if source == "common-name":
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else None
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if source == "email":
        emails = san.get_values_for_type(x509.RFC822Name) if san is not None else []
        if emails:
            return emails[0]
        subject = certificate.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)
        return str(subject[0].value) if subject else None
    for other in san.get_values_for_type(x509.OtherName) if san is not None else []:
        if other.type_id == _UPN:
            return _der_utf8(other.value)
    return None


def _der_utf8(der: bytes) -> str | None:
    """The text of a DER UTF8String (tag 12), short or long length form."""
    if len(der) < 2 or der[0] != 0x0C:
        return None
    length, offset = der[1], 2
    if length & 0x80:
        count = length & 0x7F
        length, offset = int.from_bytes(der[2:2 + count], "big"), 2 + count
    return der[offset:offset + length].decode("utf-8", errors="replace")


class TlsServer:
    """One EAP-TLS run, server side: ``start()`` gives the Start, ``handle(data)`` turns each
    Response's Type-Data into the next Request's, or None once the method is complete (then
    ``username`` and ``msk`` are set). TlsMethodError says why the client was refused."""

    def __init__(self, settings: EapTlsServerSettings, *, fragment_size: int = FRAGMENT_SIZE) -> None:
        self._settings = settings
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_max_proto_version(SSL.TLS1_3_VERSION if settings.tls13 else SSL.TLS1_2_VERSION)
        context.set_options(SSL.OP_NO_TICKET)
        chain = x509.load_pem_x509_certificates(settings.certificate)
        context.use_certificate(chain[0])
        for extra in chain[1:]:
            context.add_extra_chain_cert(extra)
        key = serialization.load_pem_private_key(settings.key, password=None)
        context.use_privatekey(key)  # type: ignore[arg-type]
        self._refusal = ""
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._verify)
        store = context.get_cert_store()
        if store is None:
            raise TlsMethodError("TLS context has no certificate store")
        for ca in x509.load_pem_x509_certificates(settings.client_ca):
            store.add_cert(crypto.X509.from_cryptography(ca))
        if settings.crl is not None:
            store.add_crl(x509.load_pem_x509_crl(settings.crl))
            store.set_flags(crypto.X509StoreFlags.CRL_CHECK)
        self._tls = SSL.Connection(context, None)
        self._tls.set_accept_state()
        self._fragment_size = fragment_size
        self._incoming = bytearray()
        self._outgoing = b""
        self._first_fragment = True
        self._handshake_done = False
        self.username: str | None = None
        self.msk: bytes | None = None

    def _verify(self, connection: SSL.Connection, certificate: crypto.X509, errno: int, depth: int,
                ok: int) -> bool:
        if not ok and not self._refusal:
            what = _VERIFY_ERRORS.get(errno, f"verification error {errno}")
            subject = certificate.to_cryptography().subject.rfc4514_string()
            self._refusal = f"client certificate refused: {what} ({subject})"
        return bool(ok)

    def start(self) -> bytes:
        return bytes([FLAG_START])

    def handle(self, data: bytes) -> bytes | None:
        if not data:
            raise TlsMethodError("EAP-TLS Response without Flags")
        flags, body = data[0], data[1:]
        if flags & FLAG_LENGTH:
            if len(body) < 4:
                raise TlsMethodError("EAP-TLS TLS Message Length is truncated")
            if struct.unpack_from("!I", body)[0] > MAX_MESSAGE:
                raise TlsMethodError("EAP-TLS message longer than 64 KiB")
            body = body[4:]
        if not body and not flags & FLAG_MORE:
            if self._outgoing:
                return self._next_fragment()  # the peer acknowledged our fragment
            if self._handshake_done:
                return None  # the peer acknowledged our last flight: done
        self._incoming += body
        if len(self._incoming) > MAX_MESSAGE:
            raise TlsMethodError("EAP-TLS fragments exceed 64 KiB")
        if flags & FLAG_MORE:
            return b"\x00"  # acknowledge: more to come
        message, self._incoming = bytes(self._incoming), bytearray()
        if message:
            self._tls.bio_write(message)
        if not self._handshake_done:
            self._handshake()
        self._collect()
        return self._next_fragment()

    def _handshake(self) -> None:
        try:
            self._tls.do_handshake()
        except SSL.WantReadError:
            return
        except SSL.Error as error:
            raise TlsMethodError(self._refusal or f"TLS handshake failed: {error}") from None
        self._handshake_done = True
        peer = self._tls.get_peer_certificate(as_cryptography=True)
        if peer is None:
            raise TlsMethodError("the client sent no certificate")
        self.username = username_from_certificate(peer, self._settings.username_from)
        if not self.username:
            raise TlsMethodError(f"the client certificate has no {self._settings.username_from}")
        if self._tls.get_protocol_version_name() == "TLSv1.3":
            self.msk = self._tls.export_keying_material(MSK_LABEL_TLS13, 128, EAP_TLS_TYPE_CONTEXT)[:64]
            self._tls.send(b"\x00")  # RFC 9190 §2.5: the commitment message
        else:
            self.msk = self._tls.export_keying_material(MSK_LABEL, 64)

    def _collect(self) -> None:
        while True:
            try:
                chunk = self._tls.bio_read(65536)
            except SSL.WantReadError:
                return
            if not chunk:
                return
            self._outgoing += chunk

    def _next_fragment(self) -> bytes:
        if not self._outgoing:
            return b"\x00"
        piece, rest = self._outgoing[:self._fragment_size], self._outgoing[self._fragment_size:]
        flags = FLAG_MORE if rest else 0
        header = bytes([flags])
        if self._first_fragment and rest:
            header = bytes([flags | FLAG_LENGTH]) + struct.pack("!I", len(self._outgoing))
        self._outgoing = rest
        self._first_fragment = not rest
        return header + piece
