"""EAP peer (RFC 3748 §4) with EAP-MSCHAPv2: what `vpnd client` answers when a server asks for EAP.

Identity and Notification are answered, EAP-MSCHAPv2 is run (the server's S= value checked as
in PPP MS-CHAPv2), and any other method is Nak'd with the ones we speak. A Request repeated with
the Identifier we last answered gets our Response again without being processed twice (§4.1).
EAP-Success counts only after the method proved the server (§4.2); EAP-Failure always ends it.
"""

from __future__ import annotations

import enum
import hmac
import os
from collections.abc import Callable

from vpnd.proto.crypto.mppe import mschapv2_mppe_keys
from vpnd.proto.crypto.mschap import (
    mschapv2_authenticator_response,
    mschapv2_nt_response,
    nt_password_hash,
)
from vpnd.proto.eap.mschapv2 import MsChapV2Message, OpCode, decode_mschapv2, encode_mschapv2
from vpnd.proto.eap.packets import EapCode, EapPacket, EapType, decode_eap, encode_nak, method_name
from vpnd.proto.eap.tls import TlsMethodError, TlsPeer
from vpnd.proto.errors import ProtocolError
from vpnd.proto.fifo import Fifo
from vpnd.proto.ppp.auth.chap import parse_mschap_failure
from vpnd.proto.ppp.auth.types import AuthFailed, AuthMethod, AuthSucceeded, MppeKeys
from vpnd.proto.ppp.frames import PROTO_EAP

__all__ = ["EapClient"]

# How long the peer waits, from start, for EAP-Success or EAP-Failure.
CLIENT_TIMEOUT = 60.0
_SUPPORTED = (EapType.MSCHAP_V2,)
_INNER = method_name(EapType.MSCHAP_V2)


class _State(enum.Enum):
    INITIAL = "initial"
    RUNNING = "running"
    DONE = "done"


class EapClient:
    """Peer role for PPP protocol 0xC227."""

    method = AuthMethod.EAP

    def __init__(
        self,
        *,
        username: str,
        password: str,
        random_bytes: Callable[[int], bytes] = os.urandom,
        timeout: float = CLIENT_TIMEOUT,
        eap_ca: bytes | None = None,
        certificate: bytes | None = None,
        key: bytes | None = None,
    ) -> None:
        """``eap_ca``: PEM of the CA(s) the server's certificate must chain to in PEAP and
        EAP-TLS; without it both are Nak'd (a tunnel to an unchecked server would hand it the
        password hash). ``certificate`` and ``key`` (PEM) enable EAP-TLS."""
        self._eap_ca = eap_ca
        self._certificate = certificate if key is not None else None
        self._key = key
        self._tls_method: TlsPeer | None = None
        self._tls_type: int | None = None
        self._inner: EapClient | None = None
        self._username = username
        self._password = password
        self._random_bytes = random_bytes
        self._timeout = timeout
        self._state = _State.INITIAL
        self._deadline: float | None = None
        self._last: tuple[int, int, bytes, bytes] | None = None  # id, type, request data, response
        self._expected_success: str | None = None  # the S= value our Response makes the server send
        self._keys: MppeKeys | None = None
        self._server_proved = False
        self._server_message = ""
        self._failure = ""
        self._outgoing: list[bytes] = []
        self._events: Fifo[AuthSucceeded | AuthFailed] = Fifo()

    @property
    def protocol(self) -> int:
        return PROTO_EAP

    def start(self, now: float) -> None:
        if self._state is _State.INITIAL:
            self._state = _State.RUNNING
            self._deadline = now + self._timeout

    def receive(self, packet: bytes, now: float) -> None:
        if self._state is not _State.RUNNING:
            return
        try:
            eap = decode_eap(packet)
        except ProtocolError:
            return
        if eap.code is EapCode.SUCCESS:
            tls = self._tls_method
            if tls is not None and tls.succeeded and tls.msk is not None and self._tls_type is not None:
                msk = tls.msk  # client view: send = MSK[0:32] (the server's MS-MPPE-Recv-Key)
                keys = MppeKeys(send_key=msk[:16], recv_key=msk[32:48], hlak=msk[:32])
                self._finish(AuthSucceeded(method=self.method, username=self._username, keys=keys,
                                           eap_method=method_name(self._tls_type)))
            elif tls is None and self._server_proved:
                self._finish(AuthSucceeded(method=self.method, username=self._username, keys=self._keys,
                                           message=self._server_message, eap_method=_INNER))
            else:
                self._fail("EAP-Success before the method proved the server")
            return
        if eap.code is EapCode.FAILURE:
            self._fail(self._failure_reason() or "authenticator sent EAP-Failure")
            return
        if eap.code is not EapCode.REQUEST or eap.type is None:
            return
        last = self._last
        if last is not None and last[:3] == (eap.identifier, eap.type, eap.data):
            self._outgoing.append(last[3])  # a retransmitted Request: our Response got lost
            return
        response = self._answer(eap.type, eap.data)
        if response is None:
            return
        encoded = EapPacket(EapCode.RESPONSE, eap.identifier, response[0], response[1]).encode()
        self._last = (eap.identifier, eap.type, eap.data, encoded)
        self._outgoing.append(encoded)

    def _answer(self, eap_type: int, data: bytes) -> tuple[int, bytes] | None:
        if eap_type == EapType.IDENTITY:
            return EapType.IDENTITY, self._username.encode("utf-8")
        if eap_type == EapType.NOTIFICATION:
            return EapType.NOTIFICATION, b""  # RFC 3748 §5.2: an empty Response acknowledges it
        if eap_type == EapType.MSCHAP_V2:
            try:
                message = decode_mschapv2(data)
            except ProtocolError:
                return None
            reply = self._mschapv2(message)
            return None if reply is None else (EapType.MSCHAP_V2, encode_mschapv2(reply))
        if eap_type in self._tls_types() and self._tls_type in (None, eap_type):
            return self._tls_step(eap_type, data)
        if eap_type in (EapType.NAK, EapType.EXPANDED):
            return None
        supported = (*self._tls_types(), *_SUPPORTED)
        return EapType.NAK, encode_nak(tuple(int(t) for t in supported))

    def _tls_types(self) -> tuple[int, ...]:
        """The TLS-based methods we run: with a certificate EAP-TLS alone (a server that offers
        PEAP first gets a Nak asking for EAP-TLS), else PEAP."""
        if self._eap_ca is None:
            return ()
        return (EapType.TLS,) if self._certificate is not None else (EapType.PEAP,)

    def _tls_step(self, eap_type: int, data: bytes) -> tuple[int, bytes] | None:
        name = "PEAP" if eap_type == EapType.PEAP else "EAP-TLS"
        try:
            if self._tls_method is None:
                self._tls_type = eap_type
                if eap_type == EapType.PEAP:
                    inner = EapClient(username=self._username, password=self._password,
                                      random_bytes=self._random_bytes)
                    inner.start(0.0)
                    self._inner = inner
                    self._tls_method = TlsPeer(self._eap_ca or b"", self._inner_answer,
                                               lambda: inner.proved_server and not inner.failure)
                else:
                    self._tls_method = TlsPeer(self._eap_ca or b"", certificate=self._certificate,
                                               key=self._key)
            return eap_type, self._tls_method.handle(data)
        except TlsMethodError as error:
            self._fail(f"{name}: {error}")
            return None

    def _inner_answer(self, request: EapPacket) -> bytes | None:
        inner = self._inner
        if inner is None:
            return None
        inner.receive(request.encode(), 0.0)
        answers = inner.packets_to_send()
        return answers[-1] if answers else None

    def _failure_reason(self) -> str:
        inner = self._inner
        if inner is not None and inner.failure:
            return f"PEAP: inner {inner.failure}"
        tls = self._tls_method
        if tls is not None and tls.failure:
            return f"PEAP: {tls.failure}"
        if tls is not None and self._tls_type == EapType.TLS:
            # With TLS 1.3 our handshake is complete before the server has judged our certificate.
            return ("EAP-TLS: the server refused our certificate or the TLS handshake (expired, "
                    "revoked or of a CA it does not trust?)")
        if tls is not None and tls.msk is None:
            return "PEAP: the server refused during the TLS handshake"
        return self._failure

    @property
    def proved_server(self) -> bool:
        """EAP-MSCHAPv2 checked the server's authenticator response."""
        return self._server_proved

    @property
    def failure(self) -> str:
        """Why the method failed, as the server said it (empty while it has not)."""
        return self._failure

    def _mschapv2(self, message: MsChapV2Message) -> MsChapV2Message | None:
        if message.opcode is OpCode.CHALLENGE:
            if len(message.value) != 16:
                return None
            password_hash = nt_password_hash(self._password)
            peer_challenge = self._random_bytes(16)
            nt_response = mschapv2_nt_response(message.value, peer_challenge, self._username, password_hash)
            self._keys = mschapv2_mppe_keys(password_hash, nt_response, is_server=False)
            self._expected_success = mschapv2_authenticator_response(
                password_hash, nt_response, peer_challenge, message.value, self._username)
            value = peer_challenge + bytes(8) + nt_response + b"\x00"
            return MsChapV2Message(OpCode.RESPONSE, message.mschap_id, value=value,
                                   name=self._username.encode("utf-8"))
        text = message.message.decode("utf-8", errors="replace")
        if message.opcode is OpCode.SUCCESS and self._expected_success is not None:
            if not hmac.compare_digest(text[:42].upper().encode(), self._expected_success.encode()):
                self._fail("EAP-MSCHAPv2: server authenticator response invalid")
                return None
            self._server_proved = True
            self._server_message = text[42:].removeprefix(" ").removeprefix("M=")
            return MsChapV2Message(OpCode.SUCCESS, short=True)
        if message.opcode is OpCode.FAILURE:
            failure = parse_mschap_failure(text)
            detail = failure.message or "authentication failed"
            code = f"E={failure.error_code}: " if failure.error_code is not None else ""
            self._failure = f"EAP-MSCHAPv2 {code}{detail}"
            return MsChapV2Message(OpCode.FAILURE, short=True)
        return None

    def _finish(self, event: AuthSucceeded | AuthFailed) -> None:
        self._state = _State.DONE
        self._deadline = None
        self._events.append(event)

    def _fail(self, reason: str) -> None:
        inner = method_name(self._tls_type) if self._tls_type is not None else _INNER
        self._finish(AuthFailed(method=self.method, username=self._username, reason=reason,
                                eap_method=inner))

    def packets_to_send(self) -> list[bytes]:
        packets, self._outgoing = self._outgoing, []
        return packets

    def next_event(self) -> AuthSucceeded | AuthFailed | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> None:
        if self._deadline is None or now < self._deadline or self._state is not _State.RUNNING:
            return
        self._fail(self._failure_reason() or "no EAP-Success or EAP-Failure from the authenticator")
