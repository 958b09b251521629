"""DHCPv6 prefix delegation client for our client's PPP link (RFC 8415 §18.2).

Solicit with one IA_PD (and Rapid Commit unless disabled) → Advertise → Request → Reply; Renew
at T1 to the server that delegated, Rebind to any server at T2, a fresh Solicit when every
prefix has expired; Release on `close`. Retransmissions follow §15 (IRT, MRT, MRC with ±10 %
jitter), the first Solicit waits a random 0..1 s. Renew ends at T2 and Rebind when the last
prefix expires, which is their MRD.

Events: `PrefixDelegated` (new or refreshed lifetimes), `PrefixLost`, `PrefixUnavailable` (the
server answered but has no prefix for us: we keep soliciting with back-off) and
`nd.DnsServers` (source "dhcpv6"). Malformed or foreign messages are dropped and counted.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv6Address, IPv6Network

from vpnd.proto.errors import ProtocolError
from vpnd.proto.fifo import Fifo
from vpnd.proto.ipv6.dhcpv6 import (
    INFINITY,
    OPTION_DNS_SERVERS,
    IaPd,
    IaPrefix,
    Message,
    MessageType,
    Status,
    StatusCode,
    build_dhcpv6_packet,
    parse_dhcpv6_packet,
)
from vpnd.proto.ipv6.nd import DnsServers
from vpnd.proto.ipv6.packets import (
    ALL_DHCP_RELAY_AGENTS_AND_SERVERS,
    DHCPV6_CLIENT_PORT,
    DHCPV6_SERVER_PORT,
    Bytes,
    first_timeout,
    next_timeout,
    random_fraction,
)
from vpnd.proto.ppp.ipv6cp import link_local_address

# RFC 8415 §7.6 transmission parameters (seconds; MRC 0 = unlimited).
SOL_MAX_DELAY = 1.0
SOL_TIMEOUT, SOL_MAX_RT = 1.0, 3600.0
REQ_TIMEOUT, REQ_MAX_RT, REQ_MAX_RC = 1.0, 30.0, 10
REN_TIMEOUT, REN_MAX_RT = 10.0, 600.0
REB_TIMEOUT, REB_MAX_RT = 10.0, 600.0
REL_TIMEOUT, REL_MAX_RC = 1.0, 4


class PdState(Enum):
    SOLICITING = "soliciting"
    REQUESTING = "requesting"
    BOUND = "bound"
    RENEWING = "renewing"
    REBINDING = "rebinding"
    RELEASING = "releasing"
    CLOSED = "closed"


# Per message: the state while it runs, IRT, MRT and MRC.
_PARAMETERS = {
    MessageType.SOLICIT: (PdState.SOLICITING, SOL_TIMEOUT, SOL_MAX_RT, 0),
    MessageType.REQUEST: (PdState.REQUESTING, REQ_TIMEOUT, REQ_MAX_RT, REQ_MAX_RC),
    MessageType.RENEW: (PdState.RENEWING, REN_TIMEOUT, REN_MAX_RT, 0),
    MessageType.REBIND: (PdState.REBINDING, REB_TIMEOUT, REB_MAX_RT, 0),
    MessageType.RELEASE: (PdState.RELEASING, REL_TIMEOUT, 0.0, REL_MAX_RC),
}


@dataclass(frozen=True, slots=True)
class PrefixDelegated:
    """``prefix`` is ours, new or with refreshed lifetimes (seconds, 0xFFFFFFFF = infinite)."""

    prefix: IPv6Network
    preferred_lifetime: int
    valid_lifetime: int


@dataclass(frozen=True, slots=True)
class PrefixLost:
    prefix: IPv6Network
    reason: str


@dataclass(frozen=True, slots=True)
class PrefixUnavailable:
    """The server has no prefix for us (its status); solicitation goes on with back-off."""

    status: Status


ClientEvent = PrefixDelegated | PrefixLost | PrefixUnavailable | DnsServers


@dataclass(slots=True)
class _Lease:
    preferred_lifetime: int
    valid_lifetime: int
    valid_until: float | None


@dataclass(slots=True)
class _Exchange:
    """One message and its retransmissions (RFC 8415 §15)."""

    type: MessageType
    transaction_id: int
    started: float
    next_send: float
    irt: float
    mrt: float
    mrc: int
    rt: float = 0.0
    sent: int = 0


class Dhcpv6PdClient:
    """Feed it the packets `classify` calls DHCPV6_TO_CLIENT."""

    def __init__(self, client_duid: bytes, interface_id: bytes, now: float, *, iaid: int = 1,
                 rapid_commit: bool = True, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        if not 3 <= len(client_duid) <= 130:
            raise ValueError("a DUID is 3 to 130 bytes")
        self.client_duid = client_duid
        self.address = link_local_address(interface_id)
        self.iaid = iaid
        self.rapid_commit = rapid_commit
        self._random_bytes = random_bytes
        self.state = PdState.SOLICITING
        self.server_id: bytes | None = None
        self.prefixes: dict[IPv6Network, _Lease] = {}
        self.dns_servers: tuple[IPv6Address, ...] = ()
        self.dropped: Counter[str] = Counter()
        self._t1_at: float | None = None
        self._t2_at: float | None = None
        self._offer: Message | None = None  # best Advertise while the first Solicit RT runs
        self._hints: tuple[IPv6Network, ...] = ()  # prefixes a Request asks for
        self._failed_requests = 0
        self._last_unavailable: Status | None = None
        self._out: list[bytes] = []
        self._events: Fifo[ClientEvent] = Fifo()
        self._exchange: _Exchange | None = None
        self._start(MessageType.SOLICIT, now + random_fraction(random_bytes) * SOL_MAX_DELAY)

    @property
    def current_transaction_id(self) -> int | None:
        """The transaction id of the exchange under way (answers must carry it), if any."""
        return self._exchange.transaction_id if self._exchange is not None else None

    # ---- runtime API ----------------------------------------------------------------------

    def receive_packet(self, packet: Bytes, now: float) -> None:
        exchange = self._exchange
        if exchange is None:
            return
        try:
            datagram = parse_dhcpv6_packet(packet, DHCPV6_CLIENT_PORT)
            message = datagram.message
            if message.type not in (MessageType.ADVERTISE, MessageType.REPLY):
                raise ProtocolError(f"{message.type.name} is not sent by servers")
            if message.transaction_id != exchange.transaction_id or exchange.sent == 0:
                raise ProtocolError("transaction id of no exchange of ours")
            if message.server_id is None:
                raise ProtocolError("no server identifier")
            if message.client_id != self.client_duid:
                raise ProtocolError("client identifier is not ours")
        except ProtocolError as error:
            self.dropped[f"invalid: {error}"] += 1
            return
        if message.type is MessageType.ADVERTISE:
            self._advertised(message, exchange, now)
        elif exchange.type is MessageType.SOLICIT and not message.rapid_commit:
            self.dropped["reply to a solicit without rapid commit"] += 1
        else:
            self._replied(message, exchange, now)

    def packets_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> ClientEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        deadlines = [lease.valid_until for lease in self.prefixes.values()]
        if self._exchange is not None:
            deadlines.append(self._exchange.next_send)
        if self.state is PdState.BOUND:
            deadlines.append(self._t1_at)
        if self.state in (PdState.BOUND, PdState.RENEWING):
            deadlines.append(self._t2_at)
        present = [deadline for deadline in deadlines if deadline is not None]
        return min(present) if present else None

    def handle_timer(self, now: float) -> None:
        expired = [prefix for prefix, lease in self.prefixes.items()
                   if lease.valid_until is not None and lease.valid_until <= now]
        for prefix in expired:
            del self.prefixes[prefix]
            self._events.append(PrefixLost(prefix, "valid lifetime expired"))
        holding = (PdState.BOUND, PdState.RENEWING, PdState.REBINDING)
        if expired and not self.prefixes and self.state in holding:
            self._hints = ()
            self._start(MessageType.SOLICIT, now)
        if self.state is PdState.BOUND and self._t1_at is not None and self._t1_at <= now:
            self._hints = tuple(self.prefixes)
            self._start(MessageType.RENEW, now)
        if self.state in (PdState.BOUND, PdState.RENEWING) and self._t2_at is not None and self._t2_at <= now:
            self._hints = tuple(self.prefixes)
            self._start(MessageType.REBIND, now)
        exchange = self._exchange
        if exchange is not None and exchange.next_send <= now:
            if exchange.type is MessageType.SOLICIT and self._offer is not None:
                self._request(self._offer, now)
            elif exchange.mrc and exchange.sent >= exchange.mrc:
                self._exchange_failed(exchange, now)
            else:
                self._transmit(exchange, now)

    def close(self, now: float) -> None:
        """Give the prefixes back (Release) and stop; `PrefixLost` for each comes at once."""
        if self.state in (PdState.RELEASING, PdState.CLOSED):
            return
        released = tuple(self.prefixes)
        for prefix in released:
            self._events.append(PrefixLost(prefix, "released"))
        self.prefixes.clear()
        self._set_dns(())
        self._t1_at = self._t2_at = None
        if released and self.server_id is not None:
            self._hints = released
            self._start(MessageType.RELEASE, now)
            self._transmit(self._exchange_now(), now)
        else:
            self.state = PdState.CLOSED
            self._exchange = None

    # ---- exchanges ------------------------------------------------------------------------

    def _start(self, kind: MessageType, first_send: float) -> None:
        state, irt, mrt, mrc = _PARAMETERS[kind]
        self.state = state
        self._offer = None
        transaction_id = int.from_bytes(bytes(self._random_bytes(3))[:3].ljust(3, b"\0"), "big")
        self._exchange = _Exchange(kind, transaction_id, first_send, first_send, irt, mrt, mrc)

    def _exchange_now(self) -> _Exchange:
        assert self._exchange is not None
        return self._exchange

    def _transmit(self, exchange: _Exchange, now: float) -> None:
        if exchange.sent == 0:
            exchange.started = now
            # The first Solicit RT must exceed IRT (§18.2.1), so its jitter is positive.
            positive = exchange.type is MessageType.SOLICIT
            exchange.rt = first_timeout(exchange.irt, self._random_bytes, positive=positive)
        else:
            exchange.rt = next_timeout(exchange.rt, exchange.mrt, self._random_bytes)
        exchange.sent += 1
        exchange.next_send = now + exchange.rt
        elapsed = min(round((now - exchange.started) * 100), 0xFFFF)
        kind = exchange.type
        with_server = kind in (MessageType.REQUEST, MessageType.RENEW, MessageType.RELEASE)
        hints = tuple(IaPrefix(prefix, 0, 0) for prefix in self._hints)
        message = Message(kind, exchange.transaction_id, self.client_duid,
                          self.server_id if with_server else None, ia_pd=(IaPd(self.iaid, prefixes=hints),),
                          requested_options=(OPTION_DNS_SERVERS,) if kind is not MessageType.RELEASE else (),
                          elapsed_time=elapsed,
                          rapid_commit=kind is MessageType.SOLICIT and self.rapid_commit)
        self._out.append(build_dhcpv6_packet(self.address, ALL_DHCP_RELAY_AGENTS_AND_SERVERS,
                                             DHCPV6_CLIENT_PORT, DHCPV6_SERVER_PORT, message))

    def _exchange_failed(self, exchange: _Exchange, now: float) -> None:
        if exchange.type is MessageType.RELEASE:
            self.state = PdState.CLOSED
            self._exchange = None
            return
        # A Request nobody answers: start over with discovery, backing off (§18.2.4 leaves it to us).
        self._restart_discovery(now)

    def _restart_discovery(self, now: float) -> None:
        self._failed_requests += 1
        delay = min(SOL_TIMEOUT * 2 ** min(self._failed_requests, 12), SOL_MAX_RT)
        self._hints = tuple(self.prefixes)
        self._start(MessageType.SOLICIT, now + delay)

    def _request(self, offer: Message, now: float) -> None:
        ia = offer.find_ia_pd(self.iaid)
        self.server_id = offer.server_id
        self._hints = tuple(entry.prefix for entry in ia.prefixes) if ia is not None else ()
        self._start(MessageType.REQUEST, now)
        self._transmit(self._exchange_now(), now)

    # ---- answers --------------------------------------------------------------------------

    def _usable_prefixes(self, ia: IaPd | None) -> list[IaPrefix]:
        if ia is None or (ia.status is not None and not ia.status.success):
            return []
        if 0 < ia.t2 < ia.t1:
            return []  # §21.21: an IA_PD with T1 > T2 is discarded
        return [entry for entry in ia.prefixes
                if (entry.status is None or entry.status.success)
                and entry.preferred_lifetime <= entry.valid_lifetime]

    def _unavailable(self, message: Message, ia: IaPd | None) -> None:
        status = ia.status if ia is not None else None
        if status is None:
            status = message.status or Status(StatusCode.NO_PREFIX_AVAIL, "no prefix in the answer")
        if status != self._last_unavailable:
            self._last_unavailable = status
            self._events.append(PrefixUnavailable(status))

    def _advertised(self, message: Message, exchange: _Exchange, now: float) -> None:
        if exchange.type is not MessageType.SOLICIT:
            self.dropped["advertise outside solicitation"] += 1
            return
        ia = message.find_ia_pd(self.iaid)
        if not [entry for entry in self._usable_prefixes(ia) if entry.valid_lifetime > 0]:
            self._unavailable(message, ia)  # §18.2.9: an Advertise with nothing in it is ignored
            return
        preference = message.preference or 0
        if preference == 255 or exchange.sent > 1:
            self._request(message, now)
        elif self._offer is None or preference > (self._offer.preference or 0):
            self._offer = message

    def _replied(self, message: Message, exchange: _Exchange, now: float) -> None:
        if exchange.type is MessageType.RELEASE:
            self.state = PdState.CLOSED
            self._exchange = None
            return
        # Servers that predate RFC 7550 put NoAddrsAvail or NoPrefixAvail outside the IA.
        tolerated = (StatusCode.SUCCESS, StatusCode.NO_ADDRS_AVAIL, StatusCode.NO_PREFIX_AVAIL)
        if message.status is not None and message.status.code not in tolerated:
            self.dropped[f"reply with status {message.status.code}"] += 1  # retransmission goes on
            return
        ia = message.find_ia_pd(self.iaid)
        extending = exchange.type in (MessageType.RENEW, MessageType.REBIND)
        if extending and ia is not None and ia.status is not None and ia.status.code == StatusCode.NO_BINDING:
            # §18.2.10.1: the server lost our binding; ask for it again with what we hold.
            self.server_id = message.server_id
            self._hints = tuple(self.prefixes)
            self._start(MessageType.REQUEST, now)
            self._transmit(self._exchange_now(), now)
            return
        if extending and ia is None:
            self.dropped["reply without our IA_PD"] += 1
            return
        granted = self._usable_prefixes(ia)
        offered = any(entry.valid_lifetime for entry in granted)
        if exchange.type is MessageType.SOLICIT and not offered:
            self._unavailable(message, ia)  # a rapid-commit Reply without a prefix: keep soliciting
            return
        if exchange.type is MessageType.REQUEST and not offered:
            # The server will not (re)instate anything: what we still hold is not ours any more.
            for prefix in self.prefixes:
                self._events.append(PrefixLost(prefix, "not reinstated by the server"))
            self.prefixes.clear()
        for entry in granted:
            self._lease(entry, now)
        if message.dns_servers:
            self._set_dns(message.dns_servers)
        if not self.prefixes or ia is None:
            self._unavailable(message, ia)
            self._restart_discovery(now)
            return
        self.server_id = message.server_id
        self._failed_requests = 0
        self._last_unavailable = None
        self._exchange = None
        self.state = PdState.BOUND
        self._set_timers(ia, now)

    def _lease(self, entry: IaPrefix, now: float) -> None:
        if entry.valid_lifetime == 0:
            if self.prefixes.pop(entry.prefix, None) is not None:
                self._events.append(PrefixLost(entry.prefix, "withdrawn by the server"))
            return
        until = None if entry.valid_lifetime == INFINITY else now + entry.valid_lifetime
        self.prefixes[entry.prefix] = _Lease(entry.preferred_lifetime, entry.valid_lifetime, until)
        self._events.append(PrefixDelegated(entry.prefix, entry.preferred_lifetime, entry.valid_lifetime))

    def _set_timers(self, ia: IaPd, now: float) -> None:
        t1, t2 = ia.t1, ia.t2
        if t1 == 0 or t2 == 0:
            # §14.2: the server left the times to us; 0.5 and 0.8 of the shortest preferred lifetime.
            shortest = min(lease.preferred_lifetime for lease in self.prefixes.values())
            if shortest == INFINITY:
                t1 = t2 = INFINITY
            else:
                t1, t2 = (t1 or shortest // 2), (t2 or shortest * 4 // 5)
        t1 = min(t1, t2)
        self._t1_at = None if t1 == INFINITY else now + t1
        self._t2_at = None if t2 == INFINITY else now + t2

    def _set_dns(self, servers: tuple[IPv6Address, ...]) -> None:
        if servers != self.dns_servers:
            self.dns_servers = servers
            self._events.append(DnsServers(servers, "dhcpv6"))
