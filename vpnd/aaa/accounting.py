"""RADIUS accounting (RFC 2866/2869): Start, Interim-Update, Stop, Accounting-On/Off.

Every record goes to the durable :class:`~vpnd.aaa.spool.Spool` first; a session event counts as
recorded once the spool fsync'd it. A sender task delivers the spool through an
:class:`AccountingTransport`, at most one record per session in flight (so a session's Interim or
Stop never overtakes its Start), with exponential back-off while no server answers. What is not
delivered survives a restart; sessions left open by a crash get a Stop with NAS-Reboot.

Where this does better than accel-ppp (radius-facts §3.2, §7): a Stop or Start is never lost when
the servers are down (it waits in the spool instead of being retried max-try times and dropped),
Acct-Delay-Time is recomputed for every new attempt.

``acct-timeout`` (VyOS `radius acct-timeout`, accel-ppp's option of the same name): a session whose
Interim-Update has waited that many seconds while no accounting server answered anything is ended
with Acct-Terminate-Cause NAS-Error; its Stop waits in the spool like any other record. An Interim
that waits only because a backlog drains ahead of it (the servers answer) ends nothing. 0 keeps the
session however long the servers are silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from typing import Protocol

from vpnd.aaa.radius import ACCOUNTING_REQUEST, RadiusClient, RadiusError
from vpnd.aaa.spool import NAS_KEY, AttributeValue, OpenSession, RecordKind, Spool, SpoolRecord, SpoolStats
from vpnd.config.definitions import Radius

log = logging.getLogger("vpnd.accounting")

INTERIM_SAFE_TIME = 10.0  # no Interim-Update this close to the Session-Timeout end (the Stop follows)
_COUNTER_MASK = 0xFFFFFFFF


class AccountingTransport(Protocol):
    """Sends one Accounting-Request; True once a verified Accounting-Response came back.

    The transport adds ``Acct-Delay-Time = delay_time`` and may retransmit the identical packet
    by itself; a retransmission with a new delay is a new ``send`` call."""

    async def send(self, attributes: Sequence[tuple[str, AttributeValue]], *, delay_time: int) -> bool: ...


class TerminateCause(StrEnum):
    """Acct-Terminate-Cause values (RFC 2866 §5.10) vpnd reports."""

    USER_REQUEST = "User-Request"
    LOST_CARRIER = "Lost-Carrier"
    IDLE_TIMEOUT = "Idle-Timeout"
    SESSION_TIMEOUT = "Session-Timeout"
    ADMIN_RESET = "Admin-Reset"
    ADMIN_REBOOT = "Admin-Reboot"
    PORT_ERROR = "Port-Error"
    NAS_ERROR = "NAS-Error"
    NAS_REQUEST = "NAS-Request"
    NAS_REBOOT = "NAS-Reboot"
    PORT_PREEMPTED = "Port-Preempted"  # single-session replace: a new login took the user's place
    USER_ERROR = "User-Error"


@dataclass(frozen=True, slots=True)
class NasSettings:
    nas_identifier: str | None = None
    nas_ip_address: IPv4Address | None = None

    @classmethod
    def from_config(cls, radius: Radius) -> NasSettings:
        """As the Access-Requests name the NAS: the configured values, else the source address,
        else the host name (RFC 2866 wants NAS-Identifier or NAS-IP-Address)."""
        identifier = radius.nas_identifier
        address = radius.nas_ip_address
        if identifier is None and address is None:
            address = radius.source_address
        if identifier is None and address is None:
            identifier = socket.gethostname()
        return cls(identifier, address)

    def attributes(self) -> list[tuple[str, AttributeValue]]:
        out: list[tuple[str, AttributeValue]] = []
        if self.nas_identifier:
            out.append(("NAS-Identifier", self.nas_identifier))
        if self.nas_ip_address is not None:
            out.append(("NAS-IP-Address", self.nas_ip_address))
        return out


@dataclass(frozen=True, slots=True)
class Counters:
    """Traffic of one session as the NAS counts it: input = from the client, output = to it."""

    input_octets: int = 0
    output_octets: int = 0
    input_packets: int = 0
    output_packets: int = 0


@dataclass(slots=True)
class AccountingSession:
    """What accounting needs to know of a session."""

    acct_session_id: str
    username: str
    ifname: str
    calling_station_id: str
    counters: Callable[[], Counters]
    framed_ip: IPv4Address | None = None
    class_values: tuple[bytes, ...] = ()  # Class attributes of the Access-Accept, echoed
    started_at: float = field(default_factory=time.time)  # wall clock, when the link came up
    called_station_id: str | None = None
    authentic: str = "RADIUS"  # Acct-Authentic: RADIUS or Local
    interim_interval: int | None = None  # Acct-Interim-Interval of the Access-Accept, overrides config
    session_timeout: int | None = None  # seconds from started_at
    framed_ipv6_prefix: IPv6Network | None = None  # the session's prefix (router advertisements)
    framed_interface_id: bytes | None = None  # the client's IPV6CP interface identifier (8 bytes)
    delegated_ipv6_prefix: IPv6Network | None = None  # DHCPv6-PD


@dataclass(frozen=True, slots=True)
class AccountingStats:
    spool: SpoolStats
    sent: int
    failed_attempts: int
    in_flight: int
    servers_down: bool
    retry_in: float | None  # seconds until the next attempt while backing off
    sessions: int


def next_interim_delay(
    interval: float,
    jitter: float,
    elapsed: float,
    session_timeout: float | None,
    *,
    uniform: Callable[[float, float], float] = random.uniform,
    floor: float = INTERIM_SAFE_TIME,
) -> float | None:
    """Seconds until the next Interim-Update, or None when none is due any more.

    ``interval`` ± ``jitter`` (spreads the load of sessions that came up together), never below
    ``floor``, and never within INTERIM_SAFE_TIME of the Session-Timeout end."""
    if interval <= 0:
        return None
    delay = interval + (uniform(-jitter, jitter) if jitter > 0 else 0.0)
    delay = max(delay, floor)
    if session_timeout is not None and elapsed + delay > session_timeout - INTERIM_SAFE_TIME:
        return None
    return delay


def usage_attributes(counters: Counters, session_time: int) -> list[tuple[str, AttributeValue]]:
    """Acct-Session-Time and the counters; octets are 64-bit, split into Gigawords (RFC 2869)."""
    return [
        ("Acct-Session-Time", max(0, session_time)),
        ("Acct-Input-Octets", counters.input_octets & _COUNTER_MASK),
        ("Acct-Input-Gigawords", (counters.input_octets >> 32) & _COUNTER_MASK),
        ("Acct-Output-Octets", counters.output_octets & _COUNTER_MASK),
        ("Acct-Output-Gigawords", (counters.output_octets >> 32) & _COUNTER_MASK),
        ("Acct-Input-Packets", counters.input_packets & _COUNTER_MASK),
        ("Acct-Output-Packets", counters.output_packets & _COUNTER_MASK),
    ]


def radius_value(value: AttributeValue) -> str | int | bytes:
    """An attribute value as pyrad takes it (addresses and prefixes as text)."""
    if isinstance(value, IPv4Address | IPv6Address | IPv6Network):
        return str(value)
    return value


UnansweredHandler = Callable[[AccountingSession, str], None]
"""Ends a session whose Interim-Updates go unanswered (acct-timeout); the text says why."""


@dataclass(slots=True)
class _Live:
    session: AccountingSession
    timer: asyncio.TimerHandle | None = None
    last_counters: Counters = field(default_factory=Counters)
    # Interim-Updates not acknowledged yet: (spool seq, loop time recorded), oldest first.
    unanswered: deque[tuple[int, float]] = field(default_factory=deque)
    watchdog: asyncio.TimerHandle | None = None  # the acct-timeout check of the oldest one

    def cancel_timers(self) -> None:
        for timer in (self.timer, self.watchdog):
            if timer is not None:
                timer.cancel()
        self.timer = self.watchdog = None


class Accounting:
    """Accounting for every session of one daemon; see the module docstring.

    ``clock`` is the wall clock (Event-Timestamp, Acct-Delay-Time, Acct-Session-Time); timers run
    on the event loop's monotonic clock."""

    def __init__(
        self,
        transport: AccountingTransport,
        spool: Spool,
        nas: NasSettings,
        *,
        interim_interval: int | None = None,
        jitter: int = 0,
        clock: Callable[[], float] = time.time,
        uniform: Callable[[float, float], float] = random.uniform,
        max_in_flight: int = 32,
        backoff_initial: float = 1.0,
        backoff_cap: float = 60.0,
        interim_floor: float = INTERIM_SAFE_TIME,
        accounting_on_off: bool = True,
        acct_timeout: float = 0.0,
        on_unanswered: UnansweredHandler | None = None,
    ) -> None:
        self.transport = transport
        self.spool = spool
        self.nas = nas
        self.interim_interval = interim_interval or 0
        self.jitter = jitter
        self._clock = clock
        self._uniform = uniform
        self._max_in_flight = max_in_flight
        self._backoff_initial = backoff_initial
        self._backoff_cap = backoff_cap
        self._interim_floor = interim_floor
        self._on_off = accounting_on_off
        self.acct_timeout = acct_timeout  # seconds; 0 = an unanswered Interim ends nothing
        self.on_unanswered = on_unanswered
        self._last_answer = float("-inf")  # loop time of the last Accounting-Response
        self._live: dict[str, _Live] = {}
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._sender: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._commit_future: asyncio.Future[None] | None = None
        self._failures = 0
        self._retry_at = 0.0  # loop time before which nothing is sent (back-off)
        self._probing = False  # after a failure, one record at a time until one gets through
        self._sent = 0
        self._failed_attempts = 0
        self._boot_id = f"{int(clock()):08x}"

    # --- life cycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Stop sessions a crash left open (NAS-Reboot), send Accounting-On, start delivering."""
        orphans = self.spool.open_sessions()
        for orphan in orphans.values():
            self.spool.stage(RecordKind.STOP, orphan.session_key, self._reboot_stop(orphan))
        if orphans:
            log.warning("accounting: %d sessions were open at the last shutdown; their Stop says NAS-Reboot",
                        len(orphans))
        if self._on_off:
            self.spool.stage(RecordKind.ACCOUNTING_ON, NAS_KEY, self._nas_status("Accounting-On"))
        await self._commit()
        if self.spool.pending_count:
            log.info("accounting: %d records waiting for delivery", self.spool.pending_count)
        self._sender = asyncio.create_task(self._send_loop(), name="accounting-sender")

    async def close(
        self, *, flush_timeout: float = 5.0, cause: TerminateCause = TerminateCause.NAS_REBOOT,
    ) -> None:
        """Clean stop: Stop for every session still open, Accounting-Off, then up to
        ``flush_timeout`` seconds to deliver; what is left stays in the spool for the next start."""
        # Together, so that they share one fsync.
        await asyncio.gather(*(self.stop(live.session, cause) for live in list(self._live.values())))
        if self._on_off:
            self.spool.stage(RecordKind.ACCOUNTING_OFF, NAS_KEY, self._nas_status("Accounting-Off"))
            await self._commit()
        if not await self.drain(flush_timeout):
            log.warning("accounting: %d records not delivered at shutdown; kept in the spool",
                        self.spool.pending_count)
        await self.abort()

    async def abort(self) -> None:
        """Stop the sender and timers at once, without new records (as a crash would, but tidy)."""
        for live in self._live.values():
            live.cancel_timers()
        self._live.clear()
        tasks = [task for task in (self._sender, *self._in_flight.values()) if task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._sender = None
        self._in_flight.clear()
        self.spool.close()

    async def drain(self, timeout: float) -> bool:
        """Wait until the spool is empty; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while self.spool.pending_count:
                    self._idle.clear()
                    await self._idle.wait()
        except TimeoutError:
            return False
        return True

    # --- session events ------------------------------------------------------------------------

    async def start(self, session: AccountingSession) -> bool:
        """Acct-Status-Type Start when the link is up; False if the spool refused it."""
        live = _Live(session)
        self._live[session.acct_session_id] = live
        now = self._clock()
        attributes = [("Acct-Status-Type", "Start"), *self._session_attributes(session), *self._event(now)]
        recorded = await self._record(RecordKind.START, session.acct_session_id, attributes, now)
        self._schedule_interim(live)
        return recorded is not None

    async def interim(self, session: AccountingSession) -> bool:
        """Acct-Status-Type Interim-Update with the counters as of now."""
        live = self._live.get(session.acct_session_id)
        if live is None:
            return False
        now = self._clock()
        counters = self._read_counters(live)
        attributes = [
            ("Acct-Status-Type", "Interim-Update"), *self._session_attributes(session),
            *usage_attributes(counters, int(now - session.started_at)), *self._event(now),
        ]
        record = await self._record(RecordKind.INTERIM, session.acct_session_id, attributes, now)
        if record is None:
            return False
        if self.acct_timeout > 0 and self._live.get(session.acct_session_id) is live:
            live.unanswered.append((record.seq, asyncio.get_running_loop().time()))
            if live.watchdog is None:
                self._arm_watchdog(live, live.unanswered[0][1])
        return True

    async def stop(self, session: AccountingSession, cause: TerminateCause) -> bool:
        """Acct-Status-Type Stop with the final counters and Acct-Terminate-Cause."""
        live = self._live.pop(session.acct_session_id, None)
        if live is None:
            return False
        live.cancel_timers()
        now = self._clock()
        counters = self._read_counters(live)
        attributes = [
            ("Acct-Status-Type", "Stop"), *self._session_attributes(session),
            *usage_attributes(counters, int(now - session.started_at)),
            ("Acct-Terminate-Cause", cause.value), *self._event(now),
        ]
        recorded = await self._record(RecordKind.STOP, session.acct_session_id, attributes, now)
        if recorded is None:
            log.error("accounting: Stop of session %s (%s) refused by the full spool",
                      session.acct_session_id, session.username)
        return recorded is not None

    def _read_counters(self, live: _Live) -> Counters:
        try:
            live.last_counters = live.session.counters()
        except Exception:  # the session may already be half torn down; last known values then
            log.exception("accounting: counters of session %s unavailable", live.session.acct_session_id)
        return live.last_counters

    def _schedule_interim(self, live: _Live) -> None:
        session = live.session
        interval = session.interim_interval or self.interim_interval
        elapsed = self._clock() - session.started_at
        delay = next_interim_delay(
            interval, self.jitter, elapsed, session.session_timeout,
            uniform=self._uniform, floor=self._interim_floor,
        )
        if delay is None:
            return
        loop = asyncio.get_running_loop()
        live.timer = loop.call_later(delay, self._interim_due, session.acct_session_id)

    def _interim_due(self, key: str) -> None:
        live = self._live.get(key)
        if live is None:
            return
        live.timer = None
        task = asyncio.get_running_loop().create_task(self.interim(live.session))
        task.add_done_callback(_log_task_error)
        self._schedule_interim(live)

    # --- acct-timeout --------------------------------------------------------------------------

    def _arm_watchdog(self, live: _Live, since: float) -> None:
        loop = asyncio.get_running_loop()
        live.watchdog = loop.call_at(since + self.acct_timeout, self._check_unanswered,
                                     live.session.acct_session_id)

    def _check_unanswered(self, key: str) -> None:
        """The oldest unacknowledged Interim of ``key`` is acct-timeout old: end the session if no
        server answered anything meanwhile, else look again acct-timeout after the last answer."""
        live = self._live.get(key)
        if live is None:
            return
        live.watchdog = None
        while live.unanswered and not self.spool.is_pending(live.unanswered[0][0]):
            live.unanswered.popleft()  # acknowledged, or evicted from a full spool
        if not live.unanswered or self.acct_timeout <= 0:
            live.unanswered.clear()
            return
        since = max(live.unanswered[0][1], self._last_answer)
        now = asyncio.get_running_loop().time()
        if now - since < self.acct_timeout:
            self._arm_watchdog(live, since)
            return
        reason = (f"accounting: no answer to an Interim-Update for {now - live.unanswered[0][1]:.0f} s "
                  f"(acct-timeout {self.acct_timeout:g} s)")
        log.warning("%s; ending session %s (%s)", reason, key, live.session.username)
        if self.on_unanswered is not None:
            self.on_unanswered(live.session, reason)

    def _answered(self, record: SpoolRecord) -> None:
        self._last_answer = asyncio.get_running_loop().time()
        if record.kind is not RecordKind.INTERIM:
            return
        live = self._live.get(record.session_key)
        if live is None:
            return
        while live.unanswered and live.unanswered[0][0] <= record.seq:
            live.unanswered.popleft()
        if not live.unanswered and live.watchdog is not None:
            live.watchdog.cancel()
            live.watchdog = None

    # --- attributes ----------------------------------------------------------------------------

    def _session_attributes(self, session: AccountingSession) -> list[tuple[str, AttributeValue]]:
        attributes: list[tuple[str, AttributeValue]] = [
            ("User-Name", session.username),
            ("Acct-Session-Id", session.acct_session_id),
            *self.nas.attributes(),
            ("NAS-Port-Id", session.ifname),
            ("NAS-Port-Type", "Virtual"),
            ("Service-Type", "Framed-User"),
            ("Framed-Protocol", "PPP"),
            ("Calling-Station-Id", session.calling_station_id),
        ]
        if session.called_station_id:
            attributes.append(("Called-Station-Id", session.called_station_id))
        if session.framed_ip is not None:
            attributes.append(("Framed-IP-Address", session.framed_ip))
        if session.framed_interface_id is not None:
            attributes.append(("Framed-Interface-Id", session.framed_interface_id))
        if session.framed_ipv6_prefix is not None:
            attributes.append(("Framed-IPv6-Prefix", session.framed_ipv6_prefix))
        if session.delegated_ipv6_prefix is not None:
            attributes.append(("Delegated-IPv6-Prefix", session.delegated_ipv6_prefix))
        attributes += [("Class", value) for value in session.class_values]
        attributes.append(("Acct-Authentic", session.authentic))
        return attributes

    @staticmethod
    def _event(now: float) -> list[tuple[str, AttributeValue]]:
        return [("Event-Timestamp", int(now))]

    def _nas_status(self, status: str) -> list[tuple[str, AttributeValue]]:
        # RFC 2866 wants an Acct-Session-Id in every request; this one names the daemon's boot.
        return [("Acct-Status-Type", status), ("Acct-Session-Id", self._boot_id), *self.nas.attributes(),
                *self._event(self._clock())]

    def _reboot_stop(self, orphan: OpenSession) -> list[tuple[str, AttributeValue]]:
        """A Stop for a session the last run did not close: its Start's attributes, the usage of its
        last Interim-Update (what is known), NAS-Reboot."""
        ignored = {"Acct-Status-Type", "Event-Timestamp", "Acct-Terminate-Cause"}
        usage_names = {name for name, _ in usage_attributes(Counters(), 0)}
        base = [(n, v) for n, v in orphan.attributes if n not in ignored and n not in usage_names]
        progress = {name: value for name, value in orphan.progress if name in usage_names}
        usage = [(name, progress.get(name, 0)) for name, _ in usage_attributes(Counters(), 0)]
        return [("Acct-Status-Type", "Stop"), *base, *usage,
                ("Acct-Terminate-Cause", TerminateCause.NAS_REBOOT.value), *self._event(self._clock())]

    # --- spool and delivery --------------------------------------------------------------------

    async def _record(
        self, kind: RecordKind, key: str, attributes: list[tuple[str, AttributeValue]], now: float,
    ) -> SpoolRecord | None:
        record = self.spool.stage(kind, key, attributes, created_at=now)
        if record is None:
            return None
        await self._commit()
        return record

    def _schedule_commit(self) -> asyncio.Future[None]:
        """One fsync for everything staged during this turn of the event loop (group commit)."""
        if self._commit_future is None:
            loop = asyncio.get_running_loop()
            self._commit_future = loop.create_future()
            loop.call_soon(self._run_commit)
        return self._commit_future

    def _run_commit(self) -> None:
        future, self._commit_future = self._commit_future, None
        assert future is not None
        try:
            self.spool.commit()
        except OSError as error:
            log.error("accounting spool: commit failed: %s", error)
            future.set_exception(error)
            return
        future.set_result(None)
        self._wake.set()
        if not self.spool.pending_count:
            self._idle.set()

    async def _commit(self) -> None:
        await self._schedule_commit()

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            wait = self._retry_at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._wake.clear()
            room = self._max_in_flight - len(self._in_flight)
            if self._probing:
                room = 0 if self._in_flight else 1
            if room > 0:
                for record in self.spool.deliverable(busy=set(self._in_flight))[:room]:
                    task = loop.create_task(self._deliver(record), name=f"acct-{record.seq}")
                    self._in_flight[record.session_key] = task
            await self._wake.wait()

    async def _deliver(self, record: SpoolRecord) -> None:
        delivered = False
        try:
            delay = max(0, int(self._clock() - record.created_at))
            delivered = await self.transport.send(record.attributes, delay_time=delay)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("accounting: sending record %d failed", record.seq)
        finally:
            self._in_flight.pop(record.session_key, None)
        if delivered:
            self._sent += 1
            self._failures = 0
            self._retry_at = 0.0
            self._probing = False
            self._answered(record)
            self.spool.ack(record.seq)
            self._schedule_commit().add_done_callback(_consume_error)
        else:
            self._failed_attempts += 1
            self._back_off(record)
        self._wake.set()

    def _back_off(self, record: SpoolRecord) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._retry_at:
            return  # one failure per back-off round counts; concurrent ones add nothing
        self._failures += 1
        self._probing = True
        delay = min(self._backoff_cap, self._backoff_initial * 2 ** min(self._failures - 1, 30))
        self._retry_at = loop.time() + delay
        log.warning("accounting: no answer for %s of session %r; %d records waiting, next try in %.0f s",
                    record.kind.value, record.session_key, self.spool.pending_count, delay)

    # --- statistics ----------------------------------------------------------------------------

    def stats(self) -> AccountingStats:
        retry_in: float | None = None
        with contextlib.suppress(RuntimeError):
            remaining = self._retry_at - asyncio.get_running_loop().time()
            retry_in = remaining if remaining > 0 else None
        return AccountingStats(
            spool=self.spool.stats(),
            sent=self._sent,
            failed_attempts=self._failed_attempts,
            in_flight=len(self._in_flight),
            servers_down=self._probing,
            retry_in=retry_in,
            sessions=len(self._live),
        )


class RadiusClientTransport:
    """:class:`AccountingTransport` over :class:`vpnd.aaa.radius.RadiusClient`, which picks the
    server, retransmits the identical packet and verifies the Accounting-Response."""

    def __init__(self, client: RadiusClient) -> None:
        self.client = client

    async def send(self, attributes: Sequence[tuple[str, AttributeValue]], *, delay_time: int) -> bool:
        request: list[tuple[str, object]] = [(name, radius_value(value)) for name, value in attributes]
        request.append(("Acct-Delay-Time", delay_time))
        try:
            await self.client.request(ACCOUNTING_REQUEST, request, kind="acct")
        except RadiusError as error:
            log.debug("accounting request not answered: %s", error)
            return False
        return True


def _log_task_error(task: asyncio.Task[bool]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("accounting: interim failed", exc_info=task.exception())


def _consume_error(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # logged by _run_commit already
