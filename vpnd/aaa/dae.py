"""RFC 5176 Dynamic Authorization server: Disconnect-Request and CoA-Request over UDP.

The server knows nothing about the daemon. It finds sessions and acts on them through a
`SessionRegistry` the daemon supplies, so it can be exercised with a fake registry.

Processing order of a datagram (every silent drop is counted):

1. Source address not in ``allowed_clients`` → drop. ``allowed_clients=None`` (the default) lets
   any address in; the shared secret is then the only gate, as in RFC 5176.
2. Shorter than a RADIUS header, Length field out of range, or a code other than
   Disconnect-Request (40) / CoA-Request (43) → drop.
3. Request Authenticator ≠ MD5(code|id|length|16 zero octets|attributes|secret) → drop (§3.3).
4. A retransmission (same source address and port, Identifier and Request Authenticator
   within ``duplicate_window`` seconds) → the cached reply is sent again; nothing is done twice.
5. A Message-Authenticator that does not verify → drop. A request without one is accepted
   unless ``require_message_authenticator`` is set.
6. Event-Timestamp further than ``timestamp_window`` seconds from our clock → drop: RFC 5176 §6.3
   says a request whose Event-Timestamp is not current MUST be silently discarded, and a NAK
   would only confirm to a replaying sender that it got the secret right. A request without
   Event-Timestamp is answered with NAK 404 when ``require_event_timestamp`` is set (§6.3: a
   server SHOULD be configurable to refuse them).
7. Everything after this point is answered, with Error-Cause in a NAK (§3.5), first match wins:
   * 404 Invalid-Request: attributes that do not parse, a value of the wrong size, or an
     attribute sent more than once where at most one makes sense.
   * 403 NAS-Identification-Mismatch: NAS-Identifier or NAS-IP-Address present and different
     from the configured value, or NAS-IPv6-Address present (we never identify ourselves with
     one). When we have no configured value, that attribute is not checked.
   * 401 Unsupported-Attribute: an attribute outside the sets below. RFC 5176 §2.3 makes every
     attribute of a request mandatory, so an attribute we would silently ignore is refused.
   * 405 Unsupported-Service: Service-Type other than Framed-User (we cannot do Authorize-Only).
   * 402 Missing-Attribute: not one session-identifying attribute.
   * 407 Invalid-Attribute-Value: a text attribute that is not UTF-8.
   * 503 Session-Context-Not-Found: no session matches.
   * 506 Resources-Unavailable: `SessionRegistry.change` returned an error for a session. With
     several matching sessions the others keep their change: each change is atomic, the set is not.

Attributes accepted in both requests: the identifying ones (`IDENTIFYING_ATTRIBUTES`, each
must match when present: ALL sessions matching all of them are acted upon), NAS-Identifier,
NAS-IP-Address, Event-Timestamp, Message-Authenticator, Proxy-State (copied into the reply),
Service-Type=Framed-User. A Disconnect-Request may also carry Acct-Terminate-Cause, which is
ignored: the session always ends with Admin-Reset. A CoA-Request may carry the rate-limit
attributes (`DEFAULT_RATE_ATTRIBUTES`, handed raw to the registry), Session-Timeout,
Idle-Timeout and Class. Class and Session-Timeout in one request are both applied.
Everything else gets NAK 401, notably Framed-Route, Framed-IPv6-Prefix, Called-Station-Id,
Acct-Multi-Session-Id, Chargeable-User-Identity (identifying attributes we cannot match, so acting
would hit more sessions than meant), Reply-Message, State, Termination-Action and any vendor
attribute other than the rate-limit ones.

Replies carry a Response Authenticator computed from the request's, and a Message-Authenticator
when the request had one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any, Protocol, TypeVar, cast

from pyrad import packet as radius_packet

from vpnd.aaa.dictionary import load_dictionary
from vpnd.config.definitions import Radius

log = logging.getLogger(__name__)

DISCONNECT_REQUEST = 40
DISCONNECT_ACK = 41
DISCONNECT_NAK = 42
COA_REQUEST = 43
COA_ACK = 44
COA_NAK = 45

ERROR_UNSUPPORTED_ATTRIBUTE = 401
ERROR_MISSING_ATTRIBUTE = 402
ERROR_NAS_IDENTIFICATION_MISMATCH = 403
ERROR_INVALID_REQUEST = 404
ERROR_UNSUPPORTED_SERVICE = 405
ERROR_INVALID_ATTRIBUTE_VALUE = 407
ERROR_SESSION_CONTEXT_NOT_FOUND = 503
ERROR_RESOURCES_UNAVAILABLE = 506

# The Acct-Terminate-Cause the daemon reports for a session ended by a Disconnect-Request.
DISCONNECT_CAUSE = "Admin-Reset"

DEFAULT_PORT = 1700  # VyOS/accel-ppp default; RFC 5176 registers 3799
DEFAULT_TIMESTAMP_WINDOW = 300.0
DEFAULT_DUPLICATE_WINDOW = 10.0
DUPLICATE_CACHE_LIMIT = 4096
MAX_PACKET_LENGTH = 4096  # RFC 2865 §3
HEADER_LENGTH = 20
MESSAGE_AUTHENTICATOR_TYPE = 80

IDENTIFYING_ATTRIBUTES = (
    "Acct-Session-Id", "User-Name", "Framed-IP-Address", "Calling-Station-Id", "NAS-Port-Id", "NAS-Port",
)
DEFAULT_RATE_ATTRIBUTES = ("Filter-Id", "Mikrotik-Rate-Limit", "Cisco-AVPair")
_NAS_ATTRIBUTES = ("NAS-Identifier", "NAS-IP-Address", "NAS-IPv6-Address")
_COMMON_ATTRIBUTES = frozenset(
    {*IDENTIFYING_ATTRIBUTES, *_NAS_ATTRIBUTES, "Event-Timestamp", "Message-Authenticator", "Proxy-State",
     "Service-Type"}
)
_DISCONNECT_ONLY_ATTRIBUTES = frozenset({"Acct-Terminate-Cause"})
_COA_ACTION_ATTRIBUTES = frozenset({"Session-Timeout", "Idle-Timeout", "Class"})
# Attributes that may appear several times; any other repeated attribute is an invalid request.
_REPEATABLE_ATTRIBUTES = frozenset({"Proxy-State", "Class", "Cisco-AVPair"})
_SUPPORTED_SERVICE_TYPES = frozenset({"Framed-User"})


class SessionView(Protocol):
    """What the server needs to know about one session to match it."""

    @property
    def acct_session_id(self) -> str: ...

    @property
    def username(self) -> str: ...

    @property
    def framed_ip(self) -> IPv4Address | None: ...

    @property
    def calling_station_id(self) -> str | None: ...

    @property
    def nas_port_id(self) -> str | None:
        """The interface name, as sent in NAS-Port-Id."""
        ...

    @property
    def nas_port(self) -> int | None: ...


SessionT = TypeVar("SessionT", bound=SessionView)


class SessionRegistry(Protocol[SessionT]):
    """The daemon's side: the live sessions and the two things the server can do to them.

    Generic in the session type, so a registry may take its own session class in `disconnect`
    and `change` (it only ever gets back objects its `sessions` returned).
    """

    def sessions(self) -> Iterable[SessionT]: ...

    def disconnect(self, session: SessionT, cause: str) -> None:
        """End the session; ``cause`` is the Acct-Terminate-Cause to report (`DISCONNECT_CAUSE`)."""
        ...

    def change(
        self,
        session: SessionT,
        *,
        rate_attributes: Mapping[str, Sequence[str]],
        session_timeout: int | None,
        idle_timeout: int | None,
        classes: Sequence[bytes] | None = None,
    ) -> str | None:
        """Apply a CoA to one session; returns an error text when it could not be applied.

        ``rate_attributes``: attribute name → values as received (only those present; empty when
        the rate is not to change). ``session_timeout``/``idle_timeout``: seconds counted from
        now, 0 = no limit, None = unchanged. ``classes``: new Class values to report in accounting,
        None = unchanged. A failed change should leave that session as it was (RFC 5176 §2.3).
        """
        ...


@dataclass
class DaeCounters:
    """Numbers for `show statistics`."""

    received: int = 0
    disconnect_requests: int = 0
    coa_requests: int = 0
    disconnect_acks: int = 0
    disconnect_naks: int = 0
    coa_acks: int = 0
    coa_naks: int = 0
    sessions_disconnected: int = 0
    sessions_changed: int = 0
    duplicates: int = 0
    dropped_source_not_allowed: int = 0
    dropped_malformed: int = 0
    dropped_bad_authenticator: int = 0
    dropped_bad_message_authenticator: int = 0
    dropped_stale_timestamp: int = 0
    naks_by_error_cause: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        """Flat name → number, NAK causes as ``nak_error_cause_<code>``."""
        result = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "naks_by_error_cause"}
        for cause, count in sorted(self.naks_by_error_cause.items()):
            result[f"nak_error_cause_{cause}"] = count
        return result

    @property
    def dropped(self) -> int:
        return (self.dropped_source_not_allowed + self.dropped_malformed + self.dropped_bad_authenticator
                + self.dropped_bad_message_authenticator + self.dropped_stale_timestamp)


class _RefusedError(Exception):
    """Ends processing of an authenticated request with a NAK carrying ``error_cause``."""

    def __init__(self, error_cause: int, reason: str) -> None:
        super().__init__(reason)
        self.error_cause = error_cause
        self.reason = reason


AddressNetwork = IPv4Network | IPv6Network


class DynamicAuthorizationServer:
    """The request handler (no I/O in `handle_datagram`) plus its asyncio UDP endpoint."""

    def __init__(
        self,
        registry: SessionRegistry[Any],
        secret: bytes,
        *,
        nas_identifier: str | None = None,
        nas_ip_address: IPv4Address | None = None,
        allowed_clients: Iterable[str | IPv4Address | IPv6Address | AddressNetwork] | None = None,
        timestamp_window: float = DEFAULT_TIMESTAMP_WINDOW,
        require_event_timestamp: bool = False,
        require_message_authenticator: bool = False,
        duplicate_window: float = DEFAULT_DUPLICATE_WINDOW,
        rate_attributes: Iterable[str] = DEFAULT_RATE_ATTRIBUTES,
        dictionary: Any = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not secret:
            raise ValueError("the Dynamic Authorization secret must not be empty")
        self._registry = registry
        self._secret = secret
        self._nas_identifier = nas_identifier
        self._nas_ip_address = nas_ip_address
        self._allowed: tuple[AddressNetwork, ...] | None = (
            None if allowed_clients is None else tuple(ip_network(str(c)) for c in allowed_clients)
        )
        self._timestamp_window = timestamp_window
        self._require_event_timestamp = require_event_timestamp
        self._require_message_authenticator = require_message_authenticator
        self._duplicate_window = duplicate_window
        self._rate_attributes = frozenset(rate_attributes)
        self._dictionary = dictionary if dictionary is not None else load_dictionary()
        needed = (*_COMMON_ATTRIBUTES, *_COA_ACTION_ATTRIBUTES, *_DISCONNECT_ONLY_ATTRIBUTES,
                  *self._rate_attributes, "Error-Cause")
        missing = [name for name in needed if name not in self._dictionary.attributes]
        if missing:
            raise ValueError(f"RADIUS dictionary lacks {', '.join(sorted(missing))}")
        self._coa_attributes = _COMMON_ATTRIBUTES | _COA_ACTION_ATTRIBUTES | self._rate_attributes
        self._disconnect_attributes = _COMMON_ATTRIBUTES | _DISCONNECT_ONLY_ATTRIBUTES
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        # (source address, port, identifier, request authenticator) → (expiry, reply)
        self._replies: OrderedDict[tuple[str, int, int, bytes], tuple[float, bytes]] = OrderedDict()
        self.counters = DaeCounters()
        self._transport: asyncio.DatagramTransport | None = None

    @classmethod
    def from_config(
        cls,
        radius: Radius,
        registry: SessionRegistry[Any],
        **options: Any,
    ) -> DynamicAuthorizationServer | None:
        """A server for `radius dynamic-author`, or None when it is not configured (no key).

        Start it with ``await server.start(*listen_address(radius))``.
        """
        dae = radius.dynamic_author
        if dae is None or dae.key is None:
            return None
        options.setdefault("nas_identifier", radius.nas_identifier)
        options.setdefault("nas_ip_address", radius.nas_ip_address)
        return cls(registry, dae.key.get_secret_value().encode("ascii"), **options)

    # --- asyncio endpoint ----------------------------------------------------------------------

    async def start(self, host: str = "0.0.0.0", port: int = DEFAULT_PORT) -> tuple[str, int]:
        """Listen on ``host:port`` (port 0 picks a free one); returns the bound address."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _DaeProtocol(self), local_addr=(host, port),
        )
        self._transport = transport
        bound = transport.get_extra_info("sockname")
        log.info("dynamic authorization listening on %s:%d", bound[0], bound[1])
        return bound[0], bound[1]

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # --- request handling ----------------------------------------------------------------------

    def handle_datagram(self, data: bytes, source: tuple[str, int]) -> bytes | None:
        """The reply to send back to ``source``, or None to stay silent. Never raises on input."""
        self.counters.received += 1
        if not self._source_allowed(source[0]):
            self.counters.dropped_source_not_allowed += 1
            log.debug("DAE request from %s dropped: source not allowed", source[0])
            return None
        if len(data) < HEADER_LENGTH:
            self.counters.dropped_malformed += 1
            return None
        code, identifier, length = struct.unpack_from("!BBH", data)
        if length < HEADER_LENGTH or length > len(data) or length > MAX_PACKET_LENGTH \
                or code not in (DISCONNECT_REQUEST, COA_REQUEST):
            self.counters.dropped_malformed += 1
            log.debug("DAE datagram from %s dropped: code %d, length %d of %d",
                      source[0], code, length, len(data))
            return None
        raw = data[:length]  # octets beyond Length are padding (RFC 2865 §3)
        request_authenticator = raw[4:HEADER_LENGTH]
        expected = hashlib.md5(raw[:4] + bytes(16) + raw[HEADER_LENGTH:] + self._secret).digest()
        if not hmac.compare_digest(expected, request_authenticator):
            self.counters.dropped_bad_authenticator += 1
            log.warning("DAE request from %s dropped: bad Request Authenticator (wrong secret?)", source[0])
            return None

        cache_key = (source[0], source[1], identifier, request_authenticator)
        cached = self._cached_reply(cache_key)
        if cached is not None:
            # Same sender, Identifier and authenticator (which covers the whole packet): a retransmission.
            self.counters.duplicates += 1
            log.debug("DAE request %d from %s is a retransmission: reply resent", identifier, source[0])
            return cached

        has_message_authenticator = _has_attribute(raw, MESSAGE_AUTHENTICATOR_TYPE)
        if has_message_authenticator:
            if not self._message_authenticator_valid(raw):
                self.counters.dropped_bad_message_authenticator += 1
                log.warning("DAE request from %s dropped: bad Message-Authenticator", source[0])
                return None
        elif self._require_message_authenticator:
            self.counters.dropped_bad_message_authenticator += 1
            log.warning("DAE request from %s dropped: no Message-Authenticator", source[0])
            return None

        if code == DISCONNECT_REQUEST:
            self.counters.disconnect_requests += 1
        else:
            self.counters.coa_requests += 1

        request: Any = None
        try:
            if has_message_authenticator is None:
                raise _RefusedError(ERROR_INVALID_REQUEST, "the attribute list does not parse")
            try:
                request = radius_packet.CoAPacket(code, secret=self._secret, dict=self._dictionary,
                                                  packet=raw)
            except Exception as error:  # pyrad raises PacketError and, on odd input, others
                raise _RefusedError(ERROR_INVALID_REQUEST, f"undecodable: {error}") from None
            attributes, unsupported = self._decode_attributes(request)
            timestamp = attributes.get("Event-Timestamp")
            if timestamp is not None:
                skew = float(timestamp[0]) - self._wall_clock()
                if abs(skew) > self._timestamp_window:
                    self.counters.dropped_stale_timestamp += 1
                    log.warning("DAE request from %s dropped: Event-Timestamp %+.0f s off (replay?)",
                                source[0], skew)
                    return None
            elif self._require_event_timestamp:
                raise _RefusedError(ERROR_INVALID_REQUEST, "no Event-Timestamp")
            self._validate(attributes, unsupported)
            self._act(code, attributes, source)
        except _RefusedError as refusal:
            log.info("DAE %s from %s refused (Error-Cause %d): %s", _request_name(code), source[0],
                     refusal.error_cause, refusal.reason)
            if request is None:
                reply = self._bare_nak(code, identifier, request_authenticator, refusal.error_cause,
                                       bool(has_message_authenticator))
            else:
                reply = self._nak(request, refusal.error_cause)
        else:
            reply = self._ack(request)
        self._remember(cache_key, reply)
        return reply

    def _source_allowed(self, address: str) -> bool:
        if self._allowed is None:
            return True
        try:
            parsed = ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(parsed, IPv6Address) and parsed.ipv4_mapped is not None:
            parsed = parsed.ipv4_mapped
        return any(parsed in network for network in self._allowed)

    def _message_authenticator_valid(self, raw: bytes) -> bool:
        # RFC 5176 §3.3: HMAC-MD5 over the packet with a zero Request Authenticator and a zero
        # Message-Authenticator value.
        offset = HEADER_LENGTH
        zeroed = bytearray(raw)
        zeroed[4:HEADER_LENGTH] = bytes(16)
        received: bytes | None = None
        while offset < len(raw):
            attribute_type, attribute_length = raw[offset], raw[offset + 1]
            if attribute_type == MESSAGE_AUTHENTICATOR_TYPE:
                if attribute_length != 18 or received is not None:
                    return False
                received = raw[offset + 2:offset + 18]
                zeroed[offset + 2:offset + 18] = bytes(16)
            offset += attribute_length
        if received is None:
            return False
        computed = hmac.new(self._secret, bytes(zeroed), hashlib.md5).digest()
        return hmac.compare_digest(computed, received)

    def _decode_attributes(self, request: Any) -> tuple[dict[str, list[Any]], list[str]]:
        """Attribute name → decoded values of the attributes we support, and the names of the others."""
        allowed = self._disconnect_attributes if request.code == DISCONNECT_REQUEST else self._coa_attributes
        attributes: dict[str, list[Any]] = {}
        unsupported: list[str] = []
        # pyrad's keys() names the attributes it knows; iterating the packet gives raw codes.
        names = request.keys()
        for key in names:
            if not isinstance(key, str):
                unsupported.append(_describe_key(key))
                continue
            if key not in allowed:
                unsupported.append(key)
                continue
            if key == "Message-Authenticator":
                continue  # already verified
            try:
                values = list(request[key])
            except Exception as error:  # a value of the wrong size for its type
                raise _RefusedError(ERROR_INVALID_REQUEST, f"{key} does not decode: {error}") from None
            if len(values) > 1 and key not in _REPEATABLE_ATTRIBUTES:
                raise _RefusedError(ERROR_INVALID_REQUEST, f"{key} appears {len(values)} times")
            attributes[key] = values
        return attributes, unsupported

    def _validate(self, attributes: Mapping[str, list[Any]], unsupported: Sequence[str]) -> None:
        # A request that is not meant for us is told so before anything else.
        self._check_nas_identification(attributes)
        if unsupported:
            raise _RefusedError(ERROR_UNSUPPORTED_ATTRIBUTE,
                                f"unsupported attributes: {', '.join(unsupported)}")
        service = attributes.get("Service-Type")
        if service is not None and service[0] not in _SUPPORTED_SERVICE_TYPES:
            raise _RefusedError(ERROR_UNSUPPORTED_SERVICE, f"Service-Type {service[0]} is not supported")
        if not any(name in attributes for name in IDENTIFYING_ATTRIBUTES):
            raise _RefusedError(ERROR_MISSING_ATTRIBUTE, "no session-identifying attribute")

    def _check_nas_identification(self, attributes: Mapping[str, list[Any]]) -> None:
        identifier = attributes.get("NAS-Identifier")
        if identifier is not None and self._nas_identifier is not None \
                and identifier[0] != self._nas_identifier:
            raise _RefusedError(ERROR_NAS_IDENTIFICATION_MISMATCH,
                                f"NAS-Identifier {identifier[0]!r} is not ours")
        address = attributes.get("NAS-IP-Address")
        if address is not None and self._nas_ip_address is not None \
                and IPv4Address(address[0]) != self._nas_ip_address:
            raise _RefusedError(ERROR_NAS_IDENTIFICATION_MISMATCH, f"NAS-IP-Address {address[0]} is not ours")
        if "NAS-IPv6-Address" in attributes:
            raise _RefusedError(ERROR_NAS_IDENTIFICATION_MISMATCH, "NAS-IPv6-Address is never ours")

    def _act(self, code: int, attributes: Mapping[str, list[Any]], source: tuple[str, int]) -> None:
        if code == COA_REQUEST:
            change = self._coa_change(attributes)  # validated before any session is touched
        matching = [session for session in self._registry.sessions() if _matches(session, attributes)]
        if not matching:
            raise _RefusedError(ERROR_SESSION_CONTEXT_NOT_FOUND, "no session matches")
        if code == DISCONNECT_REQUEST:
            for session in matching:
                log.info("session %s (%s) disconnected by Disconnect-Request from %s",
                         session.acct_session_id, session.username, source[0])
                self._registry.disconnect(session, DISCONNECT_CAUSE)
                self.counters.sessions_disconnected += 1
            return
        if change is None:
            return  # nothing to change: the request only asked whether the session exists
        failures: list[str] = []
        for session in matching:
            error = self._registry.change(session, **change)
            if error is None:
                self.counters.sessions_changed += 1
                log.info("session %s (%s) changed by CoA-Request from %s",
                         session.acct_session_id, session.username, source[0])
            else:
                failures.append(f"{session.acct_session_id}: {error}")
        if failures:
            raise _RefusedError(ERROR_RESOURCES_UNAVAILABLE, "; ".join(failures))

    def _coa_change(self, attributes: Mapping[str, list[Any]]) -> dict[str, Any] | None:
        rates: dict[str, list[str]] = {}
        for name in sorted(self._rate_attributes):
            values = attributes.get(name)
            if values is None:
                continue
            if not all(isinstance(value, str) for value in values):
                raise _RefusedError(ERROR_INVALID_ATTRIBUTE_VALUE, f"{name} is not text")
            rates[name] = list(values)
        session_timeout = attributes.get("Session-Timeout")
        idle_timeout = attributes.get("Idle-Timeout")
        classes = attributes.get("Class")
        if not rates and session_timeout is None and idle_timeout is None and classes is None:
            return None
        return {
            "rate_attributes": rates,
            "session_timeout": None if session_timeout is None else int(session_timeout[0]),
            "idle_timeout": None if idle_timeout is None else int(idle_timeout[0]),
            "classes": None if classes is None else [bytes(value) for value in classes],
        }

    # --- replies -------------------------------------------------------------------------------

    def _ack(self, request: Any) -> bytes:
        reply = request.CreateReply()
        if request.code == DISCONNECT_REQUEST:
            self.counters.disconnect_acks += 1
        else:
            self.counters.coa_acks += 1
        return self._encode(reply, bool(request.message_authenticator))

    def _nak(self, request: Any, error_cause: int) -> bytes:
        reply = request.CreateReply()
        reply.code = DISCONNECT_NAK if request.code == DISCONNECT_REQUEST else COA_NAK
        reply["Error-Cause"] = error_cause
        self._count_nak(request.code, error_cause)
        return self._encode(reply, bool(request.message_authenticator))

    def _bare_nak(self, code: int, identifier: int, request_authenticator: bytes, error_cause: int,
                  message_authenticator: bool) -> bytes:
        """A NAK for a request whose attributes could not be decoded (no Proxy-State to copy)."""
        nak_code = DISCONNECT_NAK if code == DISCONNECT_REQUEST else COA_NAK
        reply = radius_packet.CoAPacket(nak_code, identifier, self._secret, request_authenticator,
                                        dict=self._dictionary)
        reply._request_code = code
        reply["Error-Cause"] = error_cause
        self._count_nak(code, error_cause)
        return self._encode(reply, message_authenticator)

    def _count_nak(self, request_code: int, error_cause: int) -> None:
        if request_code == DISCONNECT_REQUEST:
            self.counters.disconnect_naks += 1
        else:
            self.counters.coa_naks += 1
        causes = self.counters.naks_by_error_cause
        causes[error_cause] = causes.get(error_cause, 0) + 1

    @staticmethod
    def _encode(reply: Any, message_authenticator: bool) -> bytes:
        if message_authenticator:
            reply.add_message_authenticator()
        # ReplyPacket: Response Authenticator = MD5(code|id|len|Request Authenticator|attrs|secret),
        # Message-Authenticator (if any) keyed over the Request Authenticator (RFC 5176 §3.3).
        return bytes(reply.ReplyPacket())

    def _cached_reply(self, key: tuple[str, int, int, bytes]) -> bytes | None:
        now = self._monotonic()
        while self._replies:
            oldest_key, (expiry, _) = next(iter(self._replies.items()))
            if expiry > now:
                break
            del self._replies[oldest_key]
        entry = self._replies.get(key)
        return None if entry is None else entry[1]

    def _remember(self, key: tuple[str, int, int, bytes], reply: bytes) -> None:
        self._replies[key] = (self._monotonic() + self._duplicate_window, reply)
        self._replies.move_to_end(key)
        while len(self._replies) > DUPLICATE_CACHE_LIMIT:
            self._replies.popitem(last=False)


class _DaeProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DynamicAuthorizationServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        source = (str(addr[0]), int(addr[1]))
        try:
            reply = self._server.handle_datagram(data, source)
        except Exception:  # a registry bug must not take the listener down
            log.exception("DAE request from %s failed", source[0])
            return
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("DAE socket error: %s", exc)


def listen_address(radius: Radius) -> tuple[str, int]:
    """Where `radius dynamic-author` listens: its `server` address (all addresses if unset) and port."""
    dae = radius.dynamic_author
    if dae is None:
        raise ValueError("dynamic-author is not configured")
    return (str(dae.server) if dae.server is not None else "0.0.0.0"), int(dae.port)


def _has_attribute(raw: bytes, attribute_type: int) -> bool | None:
    """Whether the attribute list holds ``attribute_type``; None when the list does not parse."""
    offset = HEADER_LENGTH
    found = False
    while offset < len(raw):
        if offset + 2 > len(raw):
            return None
        length = raw[offset + 1]
        if length < 2 or offset + length > len(raw):
            return None
        found = found or raw[offset] == attribute_type
        offset += length
    return found


def _matches(session: SessionView, attributes: Mapping[str, list[Any]]) -> bool:
    for name in IDENTIFYING_ATTRIBUTES:
        values = attributes.get(name)
        if values is None:
            continue
        wanted = values[0]
        if name == "Framed-IP-Address":
            ours: object = session.framed_ip
            wanted = _ipv4_or_none(wanted)
        else:
            ours = {
                "Acct-Session-Id": session.acct_session_id,
                "User-Name": session.username,
                "Calling-Station-Id": session.calling_station_id,
                "NAS-Port-Id": session.nas_port_id,
                "NAS-Port": session.nas_port,
            }[name]
        if ours is None or wanted is None or ours != wanted:
            return False
    return True


def _ipv4_or_none(value: object) -> IPv4Address | None:
    try:
        return IPv4Address(str(value))
    except ValueError:
        return None


def _describe_key(key: object) -> str:
    if isinstance(key, tuple) and len(key) == 2:
        return f"vendor {key[0]} attribute {key[1]}"
    return f"attribute {key}"


def _request_name(code: int) -> str:
    return "Disconnect-Request" if code == DISCONNECT_REQUEST else "CoA-Request"
