"""IPV6CP (RFC 5072): Interface-Identifier negotiation, same policy in both roles.

A zero identifier, or one equal to ours, is Nak'd with a fresh random non-zero identifier
(RFC 5072 §4.1, as SoftEther does). The link-local addresses are fe80::/64 + identifier.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from ipaddress import IPv6Address

from vpnd.proto.ppp.frames import Option
from vpnd.proto.ppp.fsm import FsmTimers, OptionFsm, RequestJudgement

OPT_INTERFACE_ID = 1
_ZERO_ID = bytes(8)


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


class Ipv6cp(OptionFsm):
    name = "IPV6CP"

    def __init__(
        self,
        interface_id: bytes | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        timers: FsmTimers | None = None,
    ) -> None:
        super().__init__(timers)
        if interface_id is not None and (len(interface_id) != 8 or interface_id == _ZERO_ID):
            raise ValueError("an interface identifier is 8 bytes and not all zero")
        self._random_bytes = random_bytes
        self.local_interface_id = interface_id or random_interface_id(random_bytes, set())
        self.peer_interface_id: bytes | None = None
        self._send_id = True
        self._last_seen_peer_id: bytes | None = None

    def build_request(self) -> list[Option]:
        return [Option(OPT_INTERFACE_ID, self.local_interface_id)] if self._send_id else []

    def judge_request(self, options: list[Option]) -> RequestJudgement:
        judgement = RequestJudgement()
        for option in options:
            if option.type != OPT_INTERFACE_ID or len(option.value) != 8:
                judgement.rejected.append(option)
                continue
            self._last_seen_peer_id = option.value
            if option.value in (_ZERO_ID, self.local_interface_id):
                fresh = random_interface_id(self._random_bytes, {self.local_interface_id, option.value})
                judgement.naked.append((option, Option(OPT_INTERFACE_ID, fresh)))
        return judgement

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
