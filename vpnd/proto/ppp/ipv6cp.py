"""IPV6CP (RFC 5072): Interface-Identifier negotiation, same policy in both roles.

RFC 5072 §4.1, and what we add on top (the wish comes from `PeerIdWish`, which the link builds
from ``ipv6-peer-interface-id``, ``ipv6-accept-peer-interface-id`` and RADIUS):
* A zero identifier, or one equal to ours, is Nak'd with the identifier we want the peer to use,
  or a fresh random non-zero one when we have no preference (as SoftEther does).
* A distinct non-zero identifier is acknowledged (the RFC's rule), unless we want another one and
  the peer's own is not to be taken: then it is Nak'd toward ours. A compliant peer takes the
  suggestion (RFC 5072: it MUST). A peer that asks again for the same identifier after
  `INSIST_AFTER_NAKS` Naks gets it: the RFC's rule wins over our preference rather than the link
  failing, so Windows converges whatever it does with the Nak.
* When we want an identifier and the request leaves the option out, one Nak appends it (RFC
  5072 §4.1: only once; a peer that still leaves it out does not do the option).
* A Nak of our own identifier is followed (the RFC's MUST), unless it suggests the peer's own
  identifier or zero; then we pick a new random one.

The link-local addresses are fe80::/64 + identifier.
"""

from __future__ import annotations

import enum
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from vpnd.proto.ppp.frames import Option
from vpnd.proto.ppp.fsm import FsmTimers, OptionFsm, RequestJudgement

OPT_INTERFACE_ID = 1
INTERFACE_ID_LENGTH = 8
INSIST_AFTER_NAKS = 2
_ZERO_ID = bytes(INTERFACE_ID_LENGTH)
_UNIVERSAL_BIT = 0x02  # the "u" bit of a modified EUI-64 identifier (RFC 4291 appendix A)


def link_local_address(interface_id: bytes) -> IPv6Address:
    """fe80::/64 with the 8-byte interface identifier."""
    return IPv6Address(b"\xfe\x80" + bytes(6) + interface_id)


def random_interface_id(random_bytes: Callable[[int], bytes], avoid: set[bytes]) -> bytes:
    for _ in range(64):
        candidate = bytes(random_bytes(8))[:8].ljust(8, b"\x00")
        if candidate != _ZERO_ID and candidate not in avoid:
            return candidate
    # A broken random source must not hang us.
    counter = 1
    while (candidate := counter.to_bytes(8, "big")) in avoid:
        counter += 1
    return candidate


def parse_interface_id(text: str) -> bytes:
    """``x:x:x:x`` (four groups of 1-4 hex digits, as FreeRADIUS prints an ifid) to 8 bytes."""
    groups = text.split(":")
    if len(groups) != 4 or not all(
        1 <= len(group) <= 4 and all(c in "0123456789abcdefABCDEF" for c in group) for group in groups
    ):
        raise ValueError(f"{text!r} is not an interface identifier x:x:x:x")
    value = b"".join(int(group, 16).to_bytes(2, "big") for group in groups)
    if value == _ZERO_ID:
        raise ValueError("an interface identifier must not be zero")
    return value


def format_interface_id(interface_id: bytes) -> str:
    return ":".join(f"{int.from_bytes(interface_id[i:i + 2], 'big'):x}" for i in range(0, 8, 2))


def _reserved_interface_id(interface_id: bytes) -> bool:
    # RFC 5453: the subnet anycast identifiers fdff:ffff:ffff:ff80 .. fdff:ffff:ffff:ffff.
    return interface_id[:7] == bytes.fromhex("fdffffffffffff") and interface_id[7] >= 0x80


def interface_id_from_calling_sid(calling_station_id: str) -> bytes:
    """A stable identifier for one Calling-Station-Id (the client's outer address for SSTP).

    The first 8 bytes of SHA-256 over the UTF-8 text, exactly as sent in Calling-Station-Id, with
    the "u" bit cleared: the identifier is made up here, not a globally unique IEEE one (RFC 4291
    appendix A). Zero and the RFC 5453 reserved identifiers are skipped by hashing again with a
    counter appended. The same client address always gets the same identifier, which is what
    RFC 5072 recommends ("consistently reproducible"); only the peer's link sees it.
    """
    counter = 0
    while True:
        text = calling_station_id if counter == 0 else f"{calling_station_id}#{counter}"
        digest = bytearray(hashlib.sha256(text.encode("utf-8")).digest()[:INTERFACE_ID_LENGTH])
        digest[0] &= ~_UNIVERSAL_BIT & 0xFF
        candidate = bytes(digest)
        if candidate != _ZERO_ID and not _reserved_interface_id(candidate):
            return candidate
        counter += 1


def interface_id_from_ipv4(address: IPv4Address) -> bytes:
    """0:0:a.b:c.d for the client's IPv4 address a.b.c.d (the "u" bit stays 0)."""
    if address == IPv4Address(0):
        raise ValueError("0.0.0.0 gives no interface identifier")
    return bytes(4) + address.packed


class PeerIdSource(enum.Enum):
    """Where the identifier we want the peer to use comes from (``ipv6-peer-interface-id``)."""

    RANDOM = "random"
    CALLING_SID = "calling-sid"
    IPV4_ADDR = "ipv4-addr"
    FIXED = "fixed"


@dataclass(frozen=True, slots=True)
class PeerInterfaceIdPolicy:
    """``ipv6-peer-interface-id`` (with ``fixed`` holding the x:x:x:x value for FIXED)."""

    source: PeerIdSource
    fixed: bytes | None = None

    def __post_init__(self) -> None:
        if (self.source is PeerIdSource.FIXED) != (self.fixed is not None):
            raise ValueError("a fixed peer interface identifier needs its value, and only it")
        if self.fixed is not None and (len(self.fixed) != INTERFACE_ID_LENGTH or self.fixed == _ZERO_ID):
            raise ValueError("an interface identifier is 8 bytes and not all zero")

    @classmethod
    def parse(cls, text: str) -> PeerInterfaceIdPolicy:
        """The config value: random, calling-sid, ipv4-addr or x:x:x:x."""
        for source in (PeerIdSource.RANDOM, PeerIdSource.CALLING_SID, PeerIdSource.IPV4_ADDR):
            if text == source.value:
                return cls(source)
        return cls(PeerIdSource.FIXED, parse_interface_id(text))


@dataclass(frozen=True, slots=True)
class PeerIdWish:
    """What we want of the peer's identifier right now.

    ``interface_id``: the identifier we want the peer to use (None: no preference, a random one
    replaces a zero or colliding identifier). ``accept_own``: a distinct non-zero identifier the
    peer chose itself is acknowledged even when it is not ``interface_id``."""

    interface_id: bytes | None = None
    accept_own: bool = True


_NO_WISH = PeerIdWish()


class Ipv6cp(OptionFsm):
    """``peer_id`` is asked each time a peer request is judged, so the wish may rest on facts
    that arrive late (the IPv4 address, a RADIUS Framed-Interface-Id). Without it: no
    preference, the peer's own identifier is taken (RFC 5072 as written)."""

    name = "IPV6CP"

    def __init__(
        self,
        interface_id: bytes | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        timers: FsmTimers | None = None,
        *,
        peer_id: Callable[[], PeerIdWish] | None = None,
    ) -> None:
        super().__init__(timers)
        if interface_id is not None and (len(interface_id) != 8 or interface_id == _ZERO_ID):
            raise ValueError("an interface identifier is 8 bytes and not all zero")
        self._random_bytes = random_bytes
        self.local_interface_id = interface_id or random_interface_id(random_bytes, set())
        self.peer_interface_id: bytes | None = None
        self._peer_id = peer_id
        self._send_id = True
        self._last_seen_peer_id: bytes | None = None
        self._naked_peer_id: bytes | None = None
        self._naks_of_that_id = 0
        self._appended_option = False

    def build_request(self) -> list[Option]:
        return [Option(OPT_INTERFACE_ID, self.local_interface_id)] if self._send_id else []

    def _wish(self) -> tuple[bytes | None, bool]:
        """(the identifier we want the peer to use, if usable; whether the peer's own is taken)."""
        wish = self._peer_id() if self._peer_id is not None else _NO_WISH
        wanted = wish.interface_id
        if wanted is None or len(wanted) != 8 or wanted in (_ZERO_ID, self.local_interface_id):
            return None, wish.accept_own
        return wanted, wish.accept_own

    def _suggestion(self, wanted: bytes | None, peer_value: bytes | None) -> Option:
        """The option to put in a Nak: the wanted identifier, else a fresh random one."""
        if wanted is None:
            avoid = {self.local_interface_id, _ZERO_ID}
            if peer_value is not None:
                avoid.add(peer_value)
            wanted = random_interface_id(self._random_bytes, avoid)
        return Option(OPT_INTERFACE_ID, wanted)

    def judge_request(self, options: list[Option]) -> RequestJudgement:
        judgement = RequestJudgement()
        wanted, accept_own = self._wish()
        saw_id = False
        for option in options:
            if option.type != OPT_INTERFACE_ID or len(option.value) != 8:
                judgement.rejected.append(option)
                continue
            saw_id = True
            value = option.value
            self._last_seen_peer_id = value
            if value in (_ZERO_ID, self.local_interface_id) or not self._takes(value, wanted, accept_own):
                judgement.naked.append((option, self._suggestion(wanted, value)))
        if not saw_id and wanted is not None and not self._appended_option:
            self._appended_option = True
            judgement.naked.append((None, self._suggestion(wanted, None)))
        return judgement

    def _takes(self, value: bytes, wanted: bytes | None, accept_own: bool) -> bool:
        """Whether a distinct non-zero identifier the peer asks for is acknowledged."""
        if accept_own or wanted is None or value == wanted:
            return True
        if value == self._naked_peer_id:
            self._naks_of_that_id += 1
        else:
            self._naked_peer_id, self._naks_of_that_id = value, 1
        return self._naks_of_that_id > INSIST_AFTER_NAKS

    def peer_request_acked(self, options: list[Option]) -> None:
        self.peer_interface_id = None
        for option in options:
            if option.type == OPT_INTERFACE_ID:
                self.peer_interface_id = option.value

    def apply_nak(self, options: list[Option]) -> None:
        for option in options:
            if option.type != OPT_INTERFACE_ID or not self._send_id:
                continue
            avoid = {self._last_seen_peer_id or _ZERO_ID, _ZERO_ID}
            if len(option.value) == 8 and option.value not in avoid:
                self.local_interface_id = option.value
            else:
                avoid.add(self.local_interface_id)
                self.local_interface_id = random_interface_id(self._random_bytes, avoid)

    def apply_reject(self, options: list[Option]) -> None:
        if any(option.type == OPT_INTERFACE_ID for option in options):
            self._send_id = False
