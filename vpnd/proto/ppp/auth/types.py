"""What the PPP authenticator asks a verifier, and what the verifier answers.

The authenticator (server role) never decides by itself: it emits an ``AuthRequest`` and waits
for an ``AuthDecision``, which may arrive much later (RADIUS). Local tables, RADIUS and tests all
answer the same question through these types.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol


class AuthMethod(enum.Enum):
    """Authentication protocols, with their LCP Authentication-Protocol option value."""

    PAP = "pap"
    CHAP_MD5 = "chap"
    MSCHAP_V1 = "mschap"
    MSCHAP_V2 = "mschap-v2"
    EAP = "eap"

    @property
    def lcp_option_value(self) -> bytes:
        """Value of LCP option 3 for this method (RFC 1334, RFC 1994, RFC 2433, RFC 2759)."""
        return _LCP_VALUES[self]

    @classmethod
    def from_lcp_option_value(cls, value: bytes) -> AuthMethod | None:
        for method, encoded in _LCP_VALUES.items():
            if encoded == bytes(value):
                return method
        return None

    @property
    def yields_keys(self) -> bool:
        """Whether the method produces MPPE keys (and so a non-zero SSTP HLAK)."""
        return self in (AuthMethod.MSCHAP_V1, AuthMethod.MSCHAP_V2, AuthMethod.EAP)


_LCP_VALUES: dict[AuthMethod, bytes] = {
    AuthMethod.PAP: b"\xc0\x23",
    AuthMethod.CHAP_MD5: b"\xc2\x23\x05",
    AuthMethod.MSCHAP_V1: b"\xc2\x23\x80",
    AuthMethod.MSCHAP_V2: b"\xc2\x23\x81",
    AuthMethod.EAP: b"\xc2\x27",  # RFC 3748 §7.1 (no data: the method is chosen inside EAP)
}


@dataclass(frozen=True, slots=True)
class MppeKeys:
    """MPPE master (start) keys, 16 bytes each, in the view of the side holding them."""

    send_key: bytes
    recv_key: bytes
    # The SSTP HLAK when the method defines it apart from the two master keys: EAP methods whose
    # MSK gives it (MS-SSTP §3.2.5.2: the first 32 bytes of the MSK). None: built from the keys.
    hlak: bytes | None = None


@dataclass(frozen=True, slots=True)
class PapRequest:
    username: str
    password: bytes


@dataclass(frozen=True, slots=True)
class ChapMd5Request:
    username: str
    identifier: int
    challenge: bytes
    response: bytes


@dataclass(frozen=True, slots=True)
class MsChapV1Request:
    username: str
    challenge: bytes  # 8 bytes
    lm_response: bytes  # 24 bytes (may be zeros)
    nt_response: bytes  # 24 bytes
    use_nt: bool


@dataclass(frozen=True, slots=True)
class MsChapV2Request:
    username: str  # as the peer sent it, domain prefix included
    authenticator_challenge: bytes  # 16 bytes
    peer_challenge: bytes  # 16 bytes
    nt_response: bytes  # 24 bytes


@dataclass(frozen=True, slots=True)
class EapRelayRequest:
    """One EAP Response of the peer for a backend that runs the EAP method itself (RADIUS,
    RFC 3579). ``relay_state`` is the opaque value the backend asked to get back with the next
    Response (RADIUS State); None on the first one."""

    username: str  # the EAP identity
    eap_message: bytes  # the whole EAP packet
    relay_state: bytes | None = None


AuthRequest = PapRequest | ChapMd5Request | MsChapV1Request | MsChapV2Request | EapRelayRequest


@dataclass(frozen=True, slots=True)
class AuthDecision:
    """A verifier's answer.

    ``authenticator_response`` is the MS-CHAPv2 ``S=<40 hex>`` string (required on accept for
    MS-CHAPv2). ``keys`` are the server's view of the MPPE keys (send = server to client).
    ``message`` goes to the peer (PAP message, CHAP/MS-CHAP text); ``error_code`` is the MS-CHAP
    error number used in a Failure (691 when not given). ``attributes`` carries whatever the
    backend wants the session to apply (address, timeouts, rate); the PPP layer does not read it.
    ``unavailable``: a refusal without a verdict on the credentials (the backend did not answer
    or failed), which failed-login throttling must not hold against the client. ``cause``: why,
    for the operator's log, when that says more than the peer should hear (a server's address,
    a configuration fix); empty means ``message``.
    """

    accepted: bool
    message: str = ""
    authenticator_response: str | None = None
    keys: MppeKeys | None = None
    error_code: int = 691
    attributes: dict[str, object] = field(default_factory=dict)
    unavailable: bool = False
    cause: str = ""
    # EAP relayed to a backend: the EAP packet it sent for the peer (its Request, Success or
    # Failure); ``eap_continue``: not a verdict yet, the peer must answer ``eap_message`` and the
    # answer goes back with ``relay_state``.
    eap_message: bytes | None = None
    eap_continue: bool = False
    relay_state: bytes | None = None


@dataclass(frozen=True, slots=True)
class AuthRequested:
    """The authenticator needs a decision; answer with ``ServerAuth.decide``."""

    request: AuthRequest


@dataclass(frozen=True, slots=True)
class AuthSucceeded:
    """Authentication finished successfully.

    ``keys`` are MPPE keys in the view of the side that emits the event (server: send = to the
    client; client: send = to the server), or None for PAP/CHAP-MD5.
    """

    method: AuthMethod
    username: str
    keys: MppeKeys | None
    message: str = ""
    attributes: dict[str, object] = field(default_factory=dict)
    eap_method: str | None = None  # EAP only: the method inside, e.g. "mschap-v2"

    @property
    def method_name(self) -> str:
        """What logs and `show sessions` call the method: "mschap-v2", "eap-mschap-v2"."""
        return _method_name(self.method, self.eap_method)


@dataclass(frozen=True, slots=True)
class AuthFailed:
    method: AuthMethod
    username: str
    reason: str
    eap_method: str | None = None

    @property
    def method_name(self) -> str:
        return _method_name(self.method, self.eap_method)


def _method_name(method: AuthMethod, eap_method: str | None) -> str:
    return f"{method.value}-{eap_method}" if eap_method else method.value


AuthEvent = AuthRequested | AuthSucceeded | AuthFailed


class ServerAuth(Protocol):
    """Authenticator role of one authentication run (one object per PPP link).

    Packets are PAP/CHAP packets (code, identifier, length, data) without the PPP header.
    """

    method: AuthMethod

    @property
    def protocol(self) -> int: ...  # PPP protocol number: 0xC023 (PAP) or 0xC223 (CHAP family)

    def start(self, now: float) -> None: ...  # LCP is Opened: CHAP sends its Challenge
    def receive(self, packet: bytes, now: float) -> None: ...
    def decide(self, decision: AuthDecision, now: float) -> None: ...
    def packets_to_send(self) -> list[bytes]: ...  # drained on each call
    def next_event(self) -> AuthEvent | None: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...


class ClientAuth(Protocol):
    """Peer (client) role of one authentication run."""

    method: AuthMethod

    @property
    def protocol(self) -> int: ...

    def start(self, now: float) -> None: ...  # LCP is Opened: PAP sends Authenticate-Request
    def receive(self, packet: bytes, now: float) -> None: ...
    def packets_to_send(self) -> list[bytes]: ...
    def next_event(self) -> AuthSucceeded | AuthFailed | None: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
