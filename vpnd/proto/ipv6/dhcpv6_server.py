"""DHCPv6 server for one PPP session (RFC 8415 §18.3): prefix delegation and DNS, no addresses.

The session owns at most one delegated prefix, lent by the caller. The first client (DUID and
IAID) that gets it holds it until it releases it, stops renewing past the valid lifetime, or the
caller withdraws it; other IA_PDs are told NoPrefixAvail. IA_NA is always answered NoAddrsAvail:
addresses come from SLAAC. Each binding and unbinding is an event, so the runtime can add and
remove the route to the prefix via the client's link-local address.

Validation follows RFC 8415 §16: a message without the Client Identifier, with a Server Identifier
where none belongs, or naming another server is dropped silently. Confirm gets no answer: the
server knows no on-link prefixes to judge addresses by (§18.3.3). Relayed messages and unicast
service are not offered (the server is on the link). Anything malformed is dropped and counted
in ``dropped``; nothing raises.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from typing import Literal

from vpnd.proto.errors import ProtocolError
from vpnd.proto.fifo import Fifo
from vpnd.proto.ipv6.dhcpv6 import (
    INFINITY,
    IaNa,
    IaPd,
    IaPrefix,
    Message,
    MessageType,
    Status,
    StatusCode,
    build_dhcpv6_packet,
    parse_dhcpv6_packet,
)
from vpnd.proto.ipv6.packets import (
    ALL_DHCP_RELAY_AGENTS_AND_SERVERS,
    DHCPV6_CLIENT_PORT,
    DHCPV6_SERVER_PORT,
    Bytes,
)
from vpnd.proto.ppp.ipv6cp import link_local_address

NO_ADDRESSES = Status(StatusCode.NO_ADDRS_AVAIL, "addresses are assigned by SLAAC from router advertisements")
NO_PREFIX = Status(StatusCode.NO_PREFIX_AVAIL, "no prefix to delegate")
NO_BINDING = Status(StatusCode.NO_BINDING, "no binding for this IA")
SUCCESS = Status(StatusCode.SUCCESS, "")


@dataclass(frozen=True, slots=True)
class Dhcpv6ServerConfig:
    """Lifetimes of a delegation; T1 and T2 default to 0.5 and 0.8 × preferred (RFC 8415 §21.4)."""

    preferred_lifetime: int = 3600
    valid_lifetime: int = 7200
    t1: int | None = None
    t2: int | None = None
    rapid_commit: bool = True
    preference: int = 255  # the only server on the link: let the client request at once

    def __post_init__(self) -> None:
        if not 0 < self.preferred_lifetime <= self.valid_lifetime <= INFINITY:
            raise ValueError("lifetimes must satisfy 0 < preferred <= valid")
        if not 0 <= self.timers[0] <= self.timers[1] <= self.preferred_lifetime:
            raise ValueError("T1 and T2 must satisfy T1 <= T2 <= preferred lifetime")
        if not 0 <= self.preference <= 255:
            raise ValueError("preference is 0..255")

    @property
    def timers(self) -> tuple[int, int]:
        if self.preferred_lifetime == INFINITY:
            default = (INFINITY, INFINITY)
        else:
            default = (self.preferred_lifetime // 2, self.preferred_lifetime * 4 // 5)
        return (default[0] if self.t1 is None else self.t1, default[1] if self.t2 is None else self.t2)


@dataclass(frozen=True, slots=True)
class PrefixBinding:
    prefix: IPv6Network
    via: IPv6Address  # the client's link-local address: the next hop of the route
    client_id: bytes
    iaid: int
    valid_until: float | None  # None: infinite


@dataclass(frozen=True, slots=True)
class PrefixBound:
    """Route ``prefix`` via ``via`` on the session's interface (also sent when the next hop moves)."""

    prefix: IPv6Network
    via: IPv6Address
    client_id: bytes
    iaid: int
    valid_lifetime: int


@dataclass(frozen=True, slots=True)
class PrefixUnbound:
    """Remove the route; the client no longer holds ``prefix``."""

    prefix: IPv6Network
    via: IPv6Address
    reason: Literal["released", "expired", "withdrawn", "closed"]


ServerEvent = PrefixBound | PrefixUnbound


class Dhcpv6Server:
    """Feed it the packets `classify` calls DHCPV6_TO_SERVER."""

    def __init__(self, server_duid: bytes, interface_id: bytes, prefix: IPv6Network | None,
                 dns_servers: Sequence[IPv6Address] = (),
                 config: Dhcpv6ServerConfig | None = None) -> None:
        if not 3 <= len(server_duid) <= 130:
            raise ValueError("a DUID is 3 to 130 bytes")
        self.server_duid = server_duid
        self.address = link_local_address(interface_id)
        self.prefix = prefix
        self.dns_servers = tuple(dns_servers)
        self.config = config or Dhcpv6ServerConfig()
        self.binding: PrefixBinding | None = None
        self.closed = False
        self.dropped: Counter[str] = Counter()
        self.replies_sent = 0
        self._out: list[bytes] = []
        self._events: Fifo[ServerEvent] = Fifo()

    # ---- runtime API ----------------------------------------------------------------------

    def receive_packet(self, packet: Bytes, now: float) -> None:
        if self.closed:
            return
        try:
            datagram = parse_dhcpv6_packet(packet, DHCPV6_SERVER_PORT)
            if datagram.destination not in (ALL_DHCP_RELAY_AGENTS_AND_SERVERS, self.address):
                raise ProtocolError(f"sent to {datagram.destination}")
            answer = self._answer(datagram.message, datagram.source, now)
        except ProtocolError as error:
            self.dropped[f"invalid: {error}"] += 1
            return
        if answer is not None:
            self._out.append(build_dhcpv6_packet(self.address, datagram.source, DHCPV6_SERVER_PORT,
                                                 datagram.source_port or DHCPV6_CLIENT_PORT, answer))
            self.replies_sent += 1

    def packets_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> ServerEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        return self.binding.valid_until if self.binding is not None else None

    def handle_timer(self, now: float) -> None:
        binding = self.binding
        if binding is not None and binding.valid_until is not None and binding.valid_until <= now:
            self._unbind("expired")

    def set_prefix(self, prefix: IPv6Network | None) -> None:
        """Lend another prefix (or none); a binding of the old one ends as "withdrawn".

        The client learns of it at its next Renew or Rebind (no Reconfigure).
        """
        if self.binding is not None and self.binding.prefix != prefix:
            self._unbind("withdrawn")
        self.prefix = prefix

    def close(self) -> None:
        """The session ends: the binding (if any) ends as "closed" and packets are ignored."""
        if self.binding is not None:
            self._unbind("closed")
        self.closed = True

    # ---- message handling -----------------------------------------------------------------

    def _answer(self, message: Message, source: IPv6Address, now: float) -> Message | None:
        kind = message.type
        if message.client_id is None and kind is not MessageType.INFORMATION_REQUEST:
            raise ProtocolError(f"{kind.name} without a client identifier")
        if kind in (MessageType.SOLICIT, MessageType.CONFIRM, MessageType.REBIND):
            if message.server_id is not None:
                raise ProtocolError(f"{kind.name} with a server identifier")
        elif kind in (MessageType.REQUEST, MessageType.RENEW, MessageType.RELEASE, MessageType.DECLINE):
            if message.server_id != self.server_duid:
                raise ProtocolError(f"{kind.name} for another server")
        elif kind is MessageType.INFORMATION_REQUEST:
            if message.server_id not in (None, self.server_duid):
                raise ProtocolError("information request for another server")
            if message.ia_na or message.ia_pd:
                raise ProtocolError("information request with an IA")
        else:
            raise ProtocolError(f"{kind.name} is not sent by clients")

        if kind is MessageType.SOLICIT:
            commit = message.rapid_commit and self.config.rapid_commit
            ia_pd = tuple(self._assign(ia, message, source, now, commit=commit) for ia in message.ia_pd)
            ia_na = tuple(IaNa(ia.iaid, status=NO_ADDRESSES) for ia in message.ia_na)
            if commit:
                return self._reply(message, ia_na, ia_pd, rapid_commit=True)
            return Message(MessageType.ADVERTISE, message.transaction_id, message.client_id, self.server_duid,
                           ia_na, ia_pd, dns_servers=self.dns_servers, preference=self.config.preference)
        if kind is MessageType.REQUEST:
            ia_pd = tuple(self._assign(ia, message, source, now, commit=True) for ia in message.ia_pd)
            ia_na = tuple(IaNa(ia.iaid, status=NO_ADDRESSES) for ia in message.ia_na)
            return self._reply(message, ia_na, ia_pd)
        if kind in (MessageType.RENEW, MessageType.REBIND):
            rebind = kind is MessageType.REBIND
            ia_pd = tuple(self._extend(ia, message, source, now, may_create=rebind) for ia in message.ia_pd)
            ia_na = tuple(IaNa(ia.iaid, status=NO_BINDING) for ia in message.ia_na)
            return self._reply(message, ia_na, ia_pd)
        if kind is MessageType.RELEASE:
            ia_pd = tuple(filter(None, (self._release(ia, message) for ia in message.ia_pd)))
            ia_na = tuple(IaNa(ia.iaid, status=NO_BINDING) for ia in message.ia_na)
            return self._reply(message, ia_na, ia_pd, status=SUCCESS)
        if kind is MessageType.DECLINE:
            ia_na = tuple(IaNa(ia.iaid, status=NO_BINDING) for ia in message.ia_na)
            return self._reply(message, ia_na, (), status=SUCCESS)
        if kind is MessageType.CONFIRM:
            self.dropped["confirm: no on-link prefixes to judge addresses by"] += 1
            return None
        return self._reply(message, (), ())  # Information-request

    def _reply(self, request: Message, ia_na: tuple[IaNa, ...], ia_pd: tuple[IaPd, ...],
               status: Status | None = None, rapid_commit: bool = False) -> Message:
        return Message(MessageType.REPLY, request.transaction_id, request.client_id, self.server_duid, ia_na,
                       ia_pd, status, self.dns_servers, rapid_commit=rapid_commit)

    def _holds(self, message: Message, iaid: int) -> bool:
        binding = self.binding
        return binding is not None and binding.client_id == message.client_id and binding.iaid == iaid

    def _granted(self, iaid: int) -> IaPd:
        assert self.prefix is not None
        t1, t2 = self.config.timers
        prefix = IaPrefix(self.prefix, self.config.preferred_lifetime, self.config.valid_lifetime)
        return IaPd(iaid, t1, t2, (prefix,))

    def _assign(self, ia: IaPd, message: Message, source: IPv6Address, now: float, commit: bool) -> IaPd:
        """Solicit (offer or, with rapid commit, bind) and Request (bind). Prefixes the client
        asks for that are not ours go back with lifetimes 0 once we commit (§18.3.2)."""
        free = self.prefix is not None and (self.binding is None or self._holds(message, ia.iaid))
        if not free:
            return IaPd(ia.iaid, status=NO_PREFIX)
        granted = self._granted(ia.iaid)
        if not commit:
            return granted
        self._bind(message, ia.iaid, source, now)
        return IaPd(ia.iaid, granted.t1, granted.t2, granted.prefixes + self._stale(ia))

    def _extend(self, ia: IaPd, message: Message, source: IPv6Address, now: float, may_create: bool) -> IaPd:
        """Renew and Rebind (§18.3.4, §18.3.5): extend our binding, telling the client with
        lifetimes 0 about prefixes it lists that are not ours. Without a binding, a Renew gets
        NoBinding, so the client asks again with a Request; a Rebind takes the prefix if it is
        free (how a client moves to this server after the previous one went away), and otherwise
        learns that the prefixes it holds are not valid here."""
        free = self.prefix is not None and self.binding is None
        held = self._holds(message, ia.iaid) or (may_create and free)
        if held:
            self._bind(message, ia.iaid, source, now)
            granted = self._granted(ia.iaid)
            return IaPd(ia.iaid, granted.t1, granted.t2, granted.prefixes + self._stale(ia))
        stale = self._stale(ia)
        if may_create and stale:
            return IaPd(ia.iaid, prefixes=stale)
        return IaPd(ia.iaid, status=NO_BINDING)

    def _stale(self, ia: IaPd) -> tuple[IaPrefix, ...]:
        return tuple(IaPrefix(entry.prefix, 0, 0) for entry in ia.prefixes if entry.prefix != self.prefix)

    def _release(self, ia: IaPd, message: Message) -> IaPd | None:
        if self._holds(message, ia.iaid):
            self._unbind("released")
            return None
        return IaPd(ia.iaid, status=NO_BINDING)

    def _bind(self, message: Message, iaid: int, via: IPv6Address, now: float) -> None:
        assert self.prefix is not None and message.client_id is not None
        valid = self.config.valid_lifetime
        previous = self.binding
        self.binding = PrefixBinding(self.prefix, via, message.client_id, iaid,
                                     None if valid == INFINITY else now + valid)
        if previous is None or previous.via != via:
            self._events.append(PrefixBound(self.prefix, via, message.client_id, iaid, valid))

    def _unbind(self, reason: Literal["released", "expired", "withdrawn", "closed"]) -> None:
        binding = self.binding
        assert binding is not None
        self.binding = None
        self._events.append(PrefixUnbound(binding.prefix, binding.via, reason))
