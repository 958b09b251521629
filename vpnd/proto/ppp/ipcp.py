"""IPCP (RFC 1332, RFC 1877) in both roles.

Server: the peer gets exactly the address IPAM assigned — 0.0.0.0 or any other address is Nak'd
with it, and a request without an address is Nak'd to include it. DNS (129/131) and WINS
(130/132) are Nak'd with configured values or Rejected when none is configured; VJ compression
and everything else is Rejected. Our own Configure-Request is just IP-Address = gateway.

Client: ask for IP-Address, primary and secondary DNS as 0.0.0.0, take the Nak'd values, drop
what the server rejects, and acknowledge the server's own address.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from vpnd.proto.ppp.frames import Option
from vpnd.proto.ppp.fsm import FsmTimers, NegotiationFailedError, OptionFsm, RequestJudgement

OPT_ADDRESSES = 1  # RFC 1172, deprecated
OPT_COMPRESSION = 2
OPT_ADDRESS = 3
OPT_DNS1 = 129
OPT_WINS1 = 130
OPT_DNS2 = 131
OPT_WINS2 = 132

_UNSPECIFIED = IPv4Address(0)


@dataclass(frozen=True, slots=True)
class Ipv4Settings:
    """Addresses of one session: our end (gateway), the peer's, and what we tell it."""

    local: IPv4Address
    peer: IPv4Address
    dns: tuple[IPv4Address, ...] = ()
    wins: tuple[IPv4Address, ...] = ()

    def __post_init__(self) -> None:
        if len(self.dns) > 2 or len(self.wins) > 2:
            raise ValueError("IPCP carries at most two DNS and two WINS servers")
        if self.peer == _UNSPECIFIED:
            raise ValueError("the peer address must not be 0.0.0.0")


def _address_option(kind: int, address: IPv4Address) -> Option:
    return Option(kind, address.packed)


class IpcpServer(OptionFsm):
    name = "IPCP"

    def __init__(self, settings: Ipv4Settings, timers: FsmTimers | None = None) -> None:
        super().__init__(timers)
        self.settings = settings
        self._send_address = True
        self.peer_address: IPv4Address | None = None
        self._offers: dict[int, IPv4Address] = {}
        for kind, values, index in (
            (OPT_DNS1, settings.dns, 0),
            (OPT_DNS2, settings.dns, 1),
            (OPT_WINS1, settings.wins, 0),
            (OPT_WINS2, settings.wins, 1),
        ):
            if len(values) > index:
                self._offers[kind] = values[index]

    @property
    def local_address(self) -> IPv4Address:
        return self.settings.local

    def build_request(self) -> list[Option]:
        return [_address_option(OPT_ADDRESS, self.settings.local)] if self._send_address else []

    def judge_request(self, options: list[Option]) -> RequestJudgement:
        judgement = RequestJudgement()
        saw_address = False
        for option in options:
            if len(option.value) != 4:
                judgement.rejected.append(option)
            elif option.type == OPT_ADDRESS:
                saw_address = True
                if option.value != self.settings.peer.packed:
                    judgement.naked.append((option, _address_option(OPT_ADDRESS, self.settings.peer)))
            elif option.type in (OPT_DNS1, OPT_DNS2, OPT_WINS1, OPT_WINS2):
                offer = self._offers.get(option.type)
                if offer is None:
                    judgement.rejected.append(option)
                elif option.value != offer.packed:
                    judgement.naked.append((option, _address_option(option.type, offer)))
            else:
                judgement.rejected.append(option)
        if not saw_address:
            # RFC 1332 §3.3: append the option to a Nak when the peer must learn its address.
            judgement.naked.append((None, _address_option(OPT_ADDRESS, self.settings.peer)))
        return judgement

    def peer_request_acked(self, options: list[Option]) -> None:
        self.peer_address = self.settings.peer

    def apply_reject(self, options: list[Option]) -> None:
        if any(option.type == OPT_ADDRESS for option in options):
            self._send_address = False


class IpcpClient(OptionFsm):
    name = "IPCP"

    def __init__(
        self, request_dns: bool = True, request_wins: bool = False, timers: FsmTimers | None = None
    ) -> None:
        super().__init__(timers)
        kinds = [OPT_ADDRESS]
        if request_dns:
            kinds += [OPT_DNS1, OPT_DNS2]
        if request_wins:
            kinds += [OPT_WINS1, OPT_WINS2]
        self._wanted: dict[int, IPv4Address] = dict.fromkeys(kinds, _UNSPECIFIED)
        self.local_address: IPv4Address = _UNSPECIFIED
        self.peer_address: IPv4Address | None = None
        self.dns: tuple[IPv4Address, ...] = ()
        self.wins: tuple[IPv4Address, ...] = ()

    def build_request(self) -> list[Option]:
        return [_address_option(kind, value) for kind, value in self._wanted.items()]

    def judge_request(self, options: list[Option]) -> RequestJudgement:
        judgement = RequestJudgement()
        for option in options:
            # The server tells us its own address; we have nothing better to suggest for 0.0.0.0.
            valid_address = len(option.value) == 4 and option.value != _UNSPECIFIED.packed
            if not (option.type == OPT_ADDRESS and valid_address):
                judgement.rejected.append(option)
        return judgement

    def peer_request_acked(self, options: list[Option]) -> None:
        self.peer_address = None
        for option in options:
            if option.type == OPT_ADDRESS:
                self.peer_address = IPv4Address(option.value)

    def apply_nak(self, options: list[Option]) -> None:
        for option in options:
            if option.type in self._wanted and len(option.value) == 4:
                self._wanted[option.type] = IPv4Address(option.value)

    def apply_reject(self, options: list[Option]) -> None:
        for option in options:
            if option.type == OPT_ADDRESS and self._wanted.get(OPT_ADDRESS) == _UNSPECIFIED:
                raise NegotiationFailedError("IPCP: peer refused to assign an IPv4 address")
            self._wanted.pop(option.type, None)

    def request_acked(self, options: list[Option]) -> None:
        values = {option.type: IPv4Address(option.value) for option in options if len(option.value) == 4}
        self.local_address = values.get(OPT_ADDRESS, _UNSPECIFIED)
        self.dns = tuple(
            values[k] for k in (OPT_DNS1, OPT_DNS2) if k in values and values[k] != _UNSPECIFIED
        )
        self.wins = tuple(
            values[k] for k in (OPT_WINS1, OPT_WINS2) if k in values and values[k] != _UNSPECIFIED
        )
