"""The TLS-based EAP methods in the peer role: EAP-TLS (Type 13, RFC 5216 and RFC 9190) and
PEAPv0 (Type 25, draft-kamath-pppext-peapv0, MS-PEAP) with EAP-MSCHAPv2 inside.

TLS runs in pyOpenSSL memory BIOs: bytes in, bytes out, no socket, so this stays sans-I/O.
(The standard ``ssl`` module cannot export keying material, and the MSK is exactly that.)

Framing (RFC 5216 §3.1, shared by PEAP): ``Flags(1) [TLS Message Length(4)] [TLS data]`` with
L (length included), M (more fragments) and S (start). A fragment with M set is answered with an
empty Response; our own long messages go out in ``fragment_size`` pieces, each sent after the
server's empty Request. Inside the PEAP tunnel, PEAPv0 sends EAP packets without their four-byte
header except EAP-TLV (Type 33), whose Result TLV ends the method; Requests are accepted either
way.

Keys: with TLS 1.2 (EAP-TLS and PEAPv0) MSK = PRF(master_secret, "client EAP encryption",
client_random ‖ server_random)[0:64], the TLS exporter without context; with TLS 1.3 (EAP-TLS,
RFC 9190 §2.3) MSK = TLS-Exporter("EXPORTER_EAP_TLS_Key_Material", 0x0D, 128)[0:64]. The SSTP
HLAK is MSK[0:32] (MS-SSTP §3.2.5.2), which the RADIUS server hands the NAS as
MS-MPPE-Recv-Key.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto

from vpnd.proto.eap.packets import EapCode, EapPacket, decode_eap

__all__ = ["TlsMethodError", "TlsPeer"]

FLAG_LENGTH = 0x80
FLAG_MORE = 0x40
FLAG_START = 0x20
VERSION_BITS = 0  # PEAPv0; EAP-TLS has no version bits
TLV_TYPE = 33
RESULT_TLV = 3
RESULT_SUCCESS = 1
RESULT_FAILURE = 2
FRAGMENT_SIZE = 1000  # TLS bytes per Response; fits any PPP MRU we accept
MAX_MESSAGE = 64 * 1024  # a TLS flight larger than this is hostile
MSK_LABEL = b"client EAP encryption"
MSK_LABEL_TLS13 = b"EXPORTER_EAP_TLS_Key_Material"
EAP_TLS_TYPE_CONTEXT = b"\x0d"

# One inner EAP Request in, the Response (or None) out; the inner method's own object.
InnerAnswer = Callable[[EapPacket], bytes | None]


class TlsMethodError(Exception):
    """The exchange cannot go on; the message says why in words."""


class TlsPeer:
    """One EAP-TLS or PEAP run. For PEAP, ``answer`` handles the tunnelled EAP Requests (a full
    EAP packet in, the full Response out) and ``inner_proved`` says whether the inner method
    authenticated the server and succeeded. For EAP-TLS, ``answer`` is None and
    ``certificate``/``key`` (PEM) are what we prove ourselves with; TLS 1.3 is allowed."""

    def __init__(self, ca_pem: bytes, answer: InnerAnswer | None = None,
                 inner_proved: Callable[[], bool] | None = None, *,
                 certificate: bytes | None = None, key: bytes | None = None,
                 fragment_size: int = FRAGMENT_SIZE) -> None:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        # PEAP over TLS 1.3 is not settled (FreeRADIUS 3.2 and Windows keep PEAP on TLS 1.2).
        context.set_max_proto_version(SSL.TLS1_2_VERSION if answer is not None else SSL.TLS1_3_VERSION)
        context.set_verify(SSL.VERIFY_PEER, _keep_verdict)
        if certificate is not None and key is not None:
            try:
                chain = x509.load_pem_x509_certificates(certificate)
                context.use_certificate(chain[0])
                for extra in chain[1:]:
                    context.add_extra_chain_cert(extra)
                context.use_privatekey(serialization.load_pem_private_key(key, password=None))  # type: ignore[arg-type]
                context.check_privatekey()
            except (ValueError, TypeError, SSL.Error) as error:
                raise TlsMethodError(f"client certificate or key unusable: {error}") from None
        store = context.get_cert_store()
        if store is None:
            raise TlsMethodError("TLS context has no certificate store")
        for ca in x509.load_pem_x509_certificates(ca_pem):
            store.add_cert(crypto.X509.from_cryptography(ca))
        self._tls = SSL.Connection(context, None)
        self._tls.set_connect_state()
        self._answer = answer
        self._inner_proved = inner_proved or (lambda: False)
        self._fragment_size = fragment_size
        self._incoming = bytearray()
        self._expected = 0
        self._outgoing = b""  # TLS bytes still to send, in fragments
        self._first_fragment = True
        self.started = False
        self.succeeded = False  # PEAP: Result TLV success; EAP-TLS: handshake done
        self.msk: bytes | None = None
        self.failure = ""

    def handle(self, data: bytes) -> bytes:
        """Type-Data of one EAP-TLS/PEAP Request from the server → Type-Data of our Response.
        Raises TlsMethodError when the exchange has to end."""
        if not data:
            raise TlsMethodError("Request without Flags")
        flags = data[0]
        if flags & FLAG_START:
            if self.started:
                raise TlsMethodError("Start in the middle of the exchange")
            self.started = True
            self._handshake()
            return self._next_fragment()
        if not self.started:
            raise TlsMethodError("Request before Start")
        body = data[1:]
        if flags & FLAG_LENGTH:
            if len(body) < 4:
                raise TlsMethodError("TLS Message Length is truncated")
            self._expected = struct.unpack_from("!I", body)[0]
            if self._expected > MAX_MESSAGE:
                raise TlsMethodError(f"TLS message of {self._expected} bytes is too long")
            body = body[4:]
        if not body and not flags & FLAG_MORE and self._outgoing:
            return self._next_fragment()  # the server acknowledged our fragment
        self._incoming += body
        if len(self._incoming) > MAX_MESSAGE:
            raise TlsMethodError("fragments exceed 64 KiB")
        if flags & FLAG_MORE:
            return bytes([VERSION_BITS])  # acknowledge: more to come
        message, self._incoming = bytes(self._incoming), bytearray()
        self._expected = 0
        if message:
            self._tls.bio_write(message)
        if not self._handshake():
            return self._next_fragment()
        self._read_application_data()
        return self._next_fragment()

    def _handshake(self) -> bool:
        """Drive the handshake; True once it is complete."""
        try:
            self._tls.do_handshake()
        except SSL.WantReadError:
            self._collect()
            return False
        except SSL.Error as error:
            raise TlsMethodError(f"TLS handshake failed: {_tls_reason(error)}") from None
        self._collect()
        if self.msk is None:
            if self._tls.get_protocol_version_name() == "TLSv1.3":
                self.msk = self._tls.export_keying_material(MSK_LABEL_TLS13, 128, EAP_TLS_TYPE_CONTEXT)[:64]
            else:
                self.msk = self._tls.export_keying_material(MSK_LABEL, 64)
            if self._answer is None:
                self.succeeded = True  # EAP-TLS: the server proved itself; EAP-Success decides
        return True

    def _read_application_data(self) -> None:
        while True:
            try:
                inner = self._tls.recv(MAX_MESSAGE)
            except SSL.WantReadError:
                break
            except (SSL.ZeroReturnError, SSL.Error) as error:
                raise TlsMethodError(f"TLS closed: {_tls_reason(error)}") from None
            if self._answer is None:
                continue  # EAP-TLS 1.3: the server's one-byte commitment message (RFC 9190 §2.5)
            reply = self._inner(inner)
            if reply is not None:
                self._tls.send(reply)
        self._collect()

    def _inner(self, inner: bytes) -> bytes | None:
        """One tunnelled packet: a full EAP packet (EAP-TLV, or peers that send headers) or a
        PEAPv0 compressed one (Type and data only, Identifier taken as 0)."""
        packet: EapPacket
        compressed = not (len(inner) >= 5 and inner[0] in (EapCode.REQUEST, EapCode.RESPONSE)
                          and struct.unpack_from("!H", inner, 2)[0] == len(inner))
        if compressed:
            if not inner:
                return None
            packet = EapPacket(EapCode.REQUEST, 0, inner[0], inner[1:])
        else:
            packet = decode_eap(inner)
        if packet.type == TLV_TYPE:
            return self._result(packet)
        if self._answer is None:
            return None
        response = self._answer(packet)
        # PEAPv0: every Response but EAP-TLV goes without its header, even to a Request that
        # came with one (FreeRADIUS sends the inner Identity Request whole).
        return response[4:] if response is not None else None

    def _result(self, packet: EapPacket) -> bytes:
        result = _result_tlv(packet.data)
        ours = RESULT_SUCCESS if result == RESULT_SUCCESS and self._inner_proved() else RESULT_FAILURE
        if result == RESULT_SUCCESS and ours == RESULT_SUCCESS:
            self.succeeded = True
        elif not self.failure:
            self.failure = "the server ended the tunnel with a Failure result"
        tlv = struct.pack("!HHH", 0x8000 | RESULT_TLV, 2, ours)
        return EapPacket(EapCode.RESPONSE, packet.identifier, TLV_TYPE, tlv).encode()

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
        """The next piece of what TLS wrote (L on the first piece of a message, M while more
        follows), or an empty acknowledgement when there is nothing to send."""
        if not self._outgoing:
            self._first_fragment = True
            return bytes([VERSION_BITS])
        piece, rest = self._outgoing[:self._fragment_size], self._outgoing[self._fragment_size:]
        flags = VERSION_BITS | (FLAG_MORE if rest else 0)
        header = bytes([flags])
        if self._first_fragment and rest:
            header = bytes([flags | FLAG_LENGTH]) + struct.pack("!I", len(self._outgoing))
        self._outgoing = rest
        self._first_fragment = not rest
        return header + piece


def _keep_verdict(connection: SSL.Connection, certificate: crypto.X509, errno: int, depth: int,
                  ok: int) -> bool:
    return bool(ok)


def _result_tlv(data: bytes) -> int | None:
    """The Status of the Result TLV among the TLVs of an EAP-TLV packet."""
    offset = 0
    while offset + 4 <= len(data):
        kind, length = struct.unpack_from("!HH", data, offset)
        value = data[offset + 4: offset + 4 + length]
        if kind & 0x3FFF == RESULT_TLV and len(value) == 2:
            return int.from_bytes(value, "big")
        offset += 4 + length
    return None


def _tls_reason(error: Exception) -> str:
    if isinstance(error, SSL.ZeroReturnError):
        return "the server closed TLS"
    details = error.args[0] if error.args else []
    if isinstance(details, list) and details:
        return "; ".join(str(item[-1]) for item in details if isinstance(item, tuple)) or str(error)
    return str(error) or type(error).__name__


