"""MPPE (RFC 3078) over CCP: the negotiation policy and the per-packet encrypt/decrypt transform.

Negotiation (CCP option 18, RFC 3078 §2): each side lists the strengths it supports in its own
Configure-Request; the responder Naks with the single strength it picks. As everywhere in CCP,
the options of *our* acknowledged request govern what the peer sends us (we decrypt with our
receive key), and the peer's acknowledged request governs what we send (our send key).

Only stateless mode (H bit) is offered and accepted: it re-keys before every packet, so a lost
or dropped packet never needs a CCP Reset-Request. SSTP runs over TCP, so stateful mode would
buy nothing but that machinery. Compression (MPPC, C bit) is never negotiated.

Data (RFC 3078 §3): protocol 00FD, a 2-byte header (A flushed 0x8000, C compressed 0x2000,
D encrypted 0x1000, 12-bit coherency count), then RC4 over the inner protocol and information.
Both counters start at 0xFFF, so the first packet carries count 0 and is sent under the first
re-keyed session key (as the Linux and Windows implementations do).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from vpnd.proto.crypto.mppe import initial_session_key, rekey_session_key
from vpnd.proto.crypto.rc4 import rc4
from vpnd.proto.errors import ProtocolError
from vpnd.proto.ppp.auth.types import MppeKeys
from vpnd.proto.ppp.frames import MAX_INFORMATION, Option
from vpnd.proto.ppp.fsm import NegotiationFailedError

__all__ = [
    "BIT_40",
    "BIT_56",
    "BIT_128",
    "BIT_MPPC",
    "BIT_STATELESS",
    "FLAG_COMPRESSED",
    "FLAG_ENCRYPTED",
    "FLAG_FLUSHED",
    "MAX_PLAIN_PAYLOAD",
    "MPPE_OVERHEAD",
    "OPT_MPPE",
    "MppeCipher",
    "MppeDecryptor",
    "MppeEncryptor",
    "MppeNegotiation",
    "MppePolicy",
    "MppeSettings",
    "decode_supported_bits",
    "mppe_option",
    "strength_of",
]

OPT_MPPE = 18

# Supported Bits of option 18, as one 32-bit number (RFC 3078 §2).
BIT_STATELESS = 0x0100_0000  # H
BIT_56 = 0x80  # M
BIT_128 = 0x40  # S
BIT_40 = 0x20  # L
BIT_OBSOLETE_D = 0x10  # D: obsolete, never offered
BIT_MPPC = 0x01  # C: MPPC compression (RFC 2118)
_STRENGTH_BITS = {128: BIT_128, 56: BIT_56, 40: BIT_40}
_STRENGTH_MASK = BIT_128 | BIT_56 | BIT_40

# Data header flags (RFC 3078 §3).
FLAG_FLUSHED = 0x8000  # A
FLAG_COMPRESSED = 0x2000  # C
FLAG_ENCRYPTED = 0x1000  # D
_COUNT_MASK = 0x0FFF
_COUNT_SPACE = 0x1000

_HEADER_LEN = 2
_INNER_PROTOCOL_LEN = 2
MPPE_OVERHEAD = _HEADER_LEN + _INNER_PROTOCOL_LEN
MAX_PLAIN_PAYLOAD = MAX_INFORMATION - MPPE_OVERHEAD  # largest IP packet that fits one SSTP frame
# Counts ahead by more than half the space are packets that arrived late (RFC 3078 §8.1).
_MAX_COUNT_STEP = _COUNT_SPACE // 2
_IP_PROTOCOLS = (0x0021, 0x0057)


class MppePolicy(enum.Enum):
    REQUIRE = "require"  # no MPPE, no link
    PREFER = "prefer"  # offer MPPE, carry on in the clear when the peer cannot
    DENY = "deny"  # CCP as configured without MPPE (the default: SSTP already runs in TLS)


@dataclass(frozen=True, slots=True)
class MppeSettings:
    policy: MppePolicy = MppePolicy.DENY
    key_lengths: frozenset[int] = field(default_factory=lambda: frozenset({40, 56, 128}))

    def __post_init__(self) -> None:
        if not self.key_lengths or not self.key_lengths <= _STRENGTH_BITS.keys():
            raise ValueError("MPPE key lengths must be a non-empty subset of {40, 56, 128}")


def mppe_option(bits: int) -> Option:
    return Option(OPT_MPPE, bits.to_bytes(4, "big"))


def decode_supported_bits(option: Option) -> int:
    """The 32-bit Supported Bits of option 18; ProtocolError when the length is not 6."""
    bits = option.u32()
    if option.type != OPT_MPPE or bits is None:
        raise ProtocolError("MPPE option must be type 18 with 4 bytes of supported bits")
    return bits


def strength_of(bits: int) -> int | None:
    """The key strength of a value with exactly one strength bit set, else None."""
    found = [strength for strength, bit in _STRENGTH_BITS.items() if bits & bit]
    return found[0] if len(found) == 1 else None


def _strongest(bits: int, allowed: frozenset[int]) -> int | None:
    for strength in (128, 56, 40):
        if strength in allowed and bits & _STRENGTH_BITS[strength]:
            return strength
    return None


class MppeNegotiation:
    """What CCP asks for and accepts about option 18; the outcome is read when CCP opens.

    ``send_bits``/``recv_bits`` are the acknowledged values for each direction (None: the
    direction runs without MPPE). ``failure`` is set when the policy is ``require`` and the peer
    made MPPE impossible; CCP then closes (the hooks raise NegotiationFailedError).
    """

    def __init__(self, settings: MppeSettings) -> None:
        self.settings = settings
        allowed = 0
        for strength in settings.key_lengths:
            allowed |= _STRENGTH_BITS[strength]
        self.our_bits = BIT_STATELESS | allowed
        self.asking = settings.policy is not MppePolicy.DENY
        self.send_bits: int | None = None
        self.recv_bits: int | None = None
        self.failure: str | None = None

    @property
    def required(self) -> bool:
        return self.settings.policy is MppePolicy.REQUIRE

    # -- our Configure-Request ------------------------------------------------------------------

    def request_options(self) -> list[Option]:
        return [mppe_option(self.our_bits)] if self.asking else []

    def request_acked(self, options: list[Option]) -> None:
        ours = [o for o in options if o.type == OPT_MPPE]
        self.recv_bits = decode_supported_bits(ours[0]) if ours else None

    def apply_nak(self, option: Option) -> None:
        """The peer suggests other bits: take its single strength when we allow it."""
        bits = option.u32()
        chosen = _strongest(bits, self.settings.key_lengths) if bits is not None else None
        if bits is not None and bits & BIT_STATELESS and chosen is not None:
            self.our_bits = BIT_STATELESS | _STRENGTH_BITS[chosen]
            return
        shown = f"0x{bits:08x}" if bits is not None else "a malformed option"
        self._give_up(f"peer suggested MPPE {shown}, which is not stateless at an allowed strength")

    def apply_reject(self) -> None:
        self._give_up("peer rejected MPPE")

    def _give_up(self, reason: str) -> None:
        self.asking = False
        if self.required:
            self.failure = f"MPPE required: {reason}"
            raise NegotiationFailedError(self.failure)

    # -- the peer's Configure-Request -----------------------------------------------------------

    def judge_peer_option(self, option: Option) -> Option | bool | None:
        """None: acknowledge; an Option: Nak with it; False: reject."""
        if not self.asking:
            return False  # symmetric outcome: no MPPE towards a peer that will not send it
        bits = option.u32()
        if bits is None:
            return False
        chosen = _strongest(bits, self.settings.key_lengths) or max(self.settings.key_lengths)
        wanted = BIT_STATELESS | _STRENGTH_BITS[chosen]
        return None if bits == wanted else mppe_option(wanted)

    def missing_peer_option(self) -> Option | None:
        """The peer asked for no MPPE: suggest it while we still want it (RFC 1661 allows that)."""
        if not self.asking:
            return None
        chosen = _strongest(self.our_bits, self.settings.key_lengths) or max(self.settings.key_lengths)
        return mppe_option(BIT_STATELESS | _STRENGTH_BITS[chosen])

    def peer_request_acked(self, options: list[Option]) -> None:
        theirs = [o for o in options if o.type == OPT_MPPE]
        self.send_bits = decode_supported_bits(theirs[0]) if theirs else None


# ---- the data transform ---------------------------------------------------------------------------


def _key_bits(bits: int) -> int:
    strength = strength_of(bits)
    if strength is None:
        raise ValueError(f"MPPE bits 0x{bits:08x} do not name exactly one key strength")
    return strength


class MppeEncryptor:
    """Stateless MPPE sender: one fresh session key per packet."""

    def __init__(self, start_key: bytes, key_bits: int) -> None:
        self.key_bits = key_bits
        self._start_key = bytes(start_key)
        self._session_key = initial_session_key(self._start_key, key_bits)
        self._count = _COUNT_MASK

    @property
    def coherency_count(self) -> int:
        """Count of the last packet sent (0xFFF before the first)."""
        return self._count

    def encrypt(self, protocol: int, payload: bytes | bytearray | memoryview) -> bytes:
        """Information field of one 00FD frame carrying ``protocol`` + ``payload``."""
        if len(payload) > MAX_PLAIN_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PLAIN_PAYLOAD}")
        self._count = (self._count + 1) & _COUNT_MASK
        self._session_key = rekey_session_key(self._start_key, self._session_key, self.key_bits)
        header = (FLAG_FLUSHED | FLAG_ENCRYPTED | self._count).to_bytes(2, "big")
        return header + rc4(self._session_key, protocol.to_bytes(2, "big") + bytes(payload))


class MppeDecryptor:
    """Stateless MPPE receiver.

    The key schedule only moves forward once a packet decrypts to an IP protocol number, so a
    damaged frame cannot push the receiver ahead of its peer.
    """

    def __init__(self, start_key: bytes, key_bits: int) -> None:
        self.key_bits = key_bits
        self._start_key = bytes(start_key)
        self._session_key = initial_session_key(self._start_key, key_bits)
        self._count = _COUNT_MASK

    @property
    def coherency_count(self) -> int:
        return self._count

    def decrypt(self, info: bytes | bytearray | memoryview) -> tuple[int, bytes]:
        """(inner protocol, payload) of one 00FD information field; ProtocolError when unusable."""
        if len(info) < _HEADER_LEN + 1:
            raise ProtocolError(f"MPPE frame of {len(info)} bytes is too short")
        header = (info[0] << 8) | info[1]
        if not header & FLAG_ENCRYPTED:
            raise ProtocolError("MPPE frame without the encrypted (D) flag")
        if header & FLAG_COMPRESSED:
            raise ProtocolError("MPPC-compressed frame, but compression was not negotiated")
        if not header & FLAG_FLUSHED:
            raise ProtocolError("stateless MPPE frame without the flushed (A) flag")
        count = header & _COUNT_MASK
        step = (count - self._count) % _COUNT_SPACE
        if step == 0 or step > _MAX_COUNT_STEP:
            raise ProtocolError(f"coherency count {count} is late or repeated (last {self._count})")
        session_key = self._session_key
        for _ in range(step):
            session_key = rekey_session_key(self._start_key, session_key, self.key_bits)
        plain = rc4(session_key, info[_HEADER_LEN:])
        if plain[0] & 0x01:  # protocol field compressed to one byte inside the ciphertext
            protocol, payload = plain[0], plain[1:]
        elif len(plain) >= 2:
            protocol, payload = (plain[0] << 8) | plain[1], plain[2:]
        else:
            raise ProtocolError("MPPE frame too short for the inner protocol field")
        if protocol not in _IP_PROTOCOLS:
            raise ProtocolError(f"MPPE frame decrypted to protocol 0x{protocol:04x}, not IP")
        if not payload:
            raise ProtocolError("MPPE frame with an empty IP packet")
        self._session_key = session_key
        self._count = count
        return protocol, payload


@dataclass(slots=True)
class MppeCipher:
    """Both directions of one MPPE run, in the view of the side holding it."""

    encryptor: MppeEncryptor
    decryptor: MppeDecryptor

    @classmethod
    def from_negotiation(cls, keys: MppeKeys, send_bits: int, recv_bits: int) -> MppeCipher:
        """``keys`` in this side's view (send = our direction); bits as acknowledged in CCP."""
        return cls(
            MppeEncryptor(keys.send_key, _key_bits(send_bits)),
            MppeDecryptor(keys.recv_key, _key_bits(recv_bits)),
        )
