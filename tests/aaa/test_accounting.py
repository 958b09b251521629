"""RADIUS accounting (vpnd.aaa.accounting) over the durable spool.

Two halves: a scripted transport (deterministic: delays, failures, order, timers, recovery), and
the real FreeRADIUS 3.2 (tests/support/freeradius.py) reached by a minimal pyrad-over-UDP
transport defined here, so that these tests depend on no RADIUS client internals. The FreeRADIUS
tests read what arrived from its detail file.

Duplicates in the detail file: a record resent with a new Acct-Delay-Time is a new RADIUS packet,
so the server cannot drop it as a retransmission. One event is identified by
(Acct-Unique-Session-Id, Acct-Status-Type, Event-Timestamp, Acct-Session-Time, Acct-Input-Octets);
two entries with the same identity are the same event delivered twice. The tests count events
and require each exactly once, and allow a repeat only when its Acct-Delay-Time differs (a resend
after an answer was lost); in these runs none is expected and none is seen.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Sequence
from ipaddress import IPv4Address, IPv6Network
from pathlib import Path

import pytest
from pyrad import packet as radius_packet

from tests.support.freeradius import FreeRadius
from tests.support.peers import require_program
from vpnd.aaa import spool as spool_module
from vpnd.aaa.accounting import (
    Accounting,
    AccountingSession,
    Counters,
    NasSettings,
    RadiusClientTransport,
    TerminateCause,
    next_interim_delay,
    radius_value,
    usage_attributes,
)
from vpnd.aaa.dictionary import load_dictionary
from vpnd.aaa.radius import RadiusClient, RadiusServerSpec
from vpnd.aaa.spool import AttributeValue, Spool

GIB = 1 << 30
GIGAWORD = 1 << 32
NAS = NasSettings("vpnd-test", IPv4Address("127.0.0.1"))
SECRET = b"testing123"


# --- helpers ----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ScriptedTransport:
    """Answers (or not) as ``answer(attributes, attempt number)`` says; remembers everything."""

    def __init__(self, answer: Callable[[dict[str, list[AttributeValue]], int], bool] = lambda a, n: True,
                 latency: float = 0.0, on_attempt: Callable[[], None] | None = None) -> None:
        self.answer = answer
        self.latency = latency
        self.on_attempt = on_attempt
        self.attempts: list[tuple[dict[str, list[AttributeValue]], int]] = []
        self.delivered: list[dict[str, list[AttributeValue]]] = []

    async def send(self, attributes: Sequence[tuple[str, AttributeValue]], *, delay_time: int) -> bool:
        attrs: dict[str, list[AttributeValue]] = {}
        for name, value in attributes:
            attrs.setdefault(name, []).append(value)
        self.attempts.append((attrs, delay_time))
        if self.on_attempt is not None:
            self.on_attempt()
        await asyncio.sleep(self.latency)
        if not self.answer(attrs, len(self.attempts)):
            return False
        self.delivered.append(attrs)
        return True


def one(attrs: dict[str, list[AttributeValue]], name: str) -> AttributeValue:
    values = attrs[name]
    assert len(values) == 1, (name, values)
    return values[0]


def session(
    sid: str, counters: Counters | Callable[[], Counters] | None = None, **extra: object,
) -> AccountingSession:
    fixed = counters if isinstance(counters, Counters) else Counters()
    reader = counters if callable(counters) else (lambda: fixed)
    return AccountingSession(  # type: ignore[arg-type]
        acct_session_id=sid, username="alice", ifname=f"sstp-{sid}", calling_station_id="192.0.2.7",
        counters=reader, framed_ip=IPv4Address("10.99.0.10"), class_values=(b"cls-1", b"\x00\x01"),
        **extra,
    )


def fast_accounting(transport: object, spool: Spool, **options: object) -> Accounting:
    settings: dict[str, object] = {"backoff_initial": 0.01, "backoff_cap": 0.05}
    settings.update(options)
    return Accounting(transport, spool, NAS, **settings)  # type: ignore[arg-type]


# --- scripted transport -----------------------------------------------------------------------


def test_start_interim_stop_attributes(tmp_path: Path) -> None:
    clock = FakeClock()
    usage = Counters(input_octets=5 * (1 << 32) + 123, output_octets=(1 << 32) - 1,
                     input_packets=(1 << 32) + 9, output_packets=77)

    async def run() -> ScriptedTransport:
        transport = ScriptedTransport()
        accounting = fast_accounting(transport, Spool(tmp_path, clock=clock), clock=clock)
        await accounting.open()
        s = session("s1", usage, started_at=clock.now, authentic="Local")
        assert await accounting.start(s)
        assert await accounting.drain(2)  # delivered before the clock moves: Acct-Delay-Time 0
        clock.now += 61
        assert await accounting.interim(s)
        assert await accounting.drain(2)
        clock.now += 30
        assert await accounting.stop(s, TerminateCause.IDLE_TIMEOUT)
        assert await accounting.drain(2)
        await accounting.close()
        return transport

    transport = asyncio.run(run())
    statuses = [one(a, "Acct-Status-Type") for a in transport.delivered]
    assert statuses == ["Accounting-On", "Start", "Interim-Update", "Stop", "Accounting-Off"]
    on, start, interim, stop, off = transport.delivered
    for nas_wide in (on, off):
        assert one(nas_wide, "NAS-Identifier") == "vpnd-test"
        assert one(nas_wide, "NAS-IP-Address") == IPv4Address("127.0.0.1")
        assert "User-Name" not in nas_wide
    for record in (start, interim, stop):
        assert one(record, "User-Name") == "alice"
        assert one(record, "Acct-Session-Id") == "s1"
        assert one(record, "NAS-Port-Id") == "sstp-s1"
        assert one(record, "Calling-Station-Id") == "192.0.2.7"
        assert one(record, "Framed-IP-Address") == IPv4Address("10.99.0.10")
        assert record["Class"] == [b"cls-1", b"\x00\x01"]
        assert one(record, "Acct-Authentic") == "Local"
        assert one(record, "NAS-Identifier") == "vpnd-test"
        for ipv6_name in ("Framed-IPv6-Prefix", "Framed-Interface-Id", "Delegated-IPv6-Prefix"):
            assert ipv6_name not in record  # an IPv4-only session
    assert "Acct-Input-Octets" not in start
    assert one(interim, "Acct-Session-Time") == 61
    assert one(stop, "Acct-Session-Time") == 91
    assert one(stop, "Acct-Terminate-Cause") == "Idle-Timeout"
    assert one(stop, "Event-Timestamp") == int(clock.now)
    assert (one(stop, "Acct-Input-Gigawords"), one(stop, "Acct-Input-Octets")) == (5, 123)
    assert (one(stop, "Acct-Output-Gigawords"), one(stop, "Acct-Output-Octets")) == (0, (1 << 32) - 1)
    assert one(stop, "Acct-Input-Packets") == 9  # packets have no Gigawords: they wrap
    assert "Acct-Terminate-Cause" not in interim
    assert all(delay == 0 for _, delay in transport.attempts)


def test_delay_time_is_recomputed_for_every_attempt(tmp_path: Path) -> None:
    clock = FakeClock()

    def lose_time() -> None:
        clock.now += 3  # each unanswered attempt costs the transport's timeout

    async def run() -> ScriptedTransport:
        transport = ScriptedTransport(answer=lambda a, n: n > 3, on_attempt=lose_time)
        accounting = fast_accounting(transport, Spool(tmp_path, clock=clock), clock=clock,
                                     accounting_on_off=False)
        await accounting.open()
        await accounting.start(session("s1", started_at=clock.now))
        assert await accounting.drain(2)
        await accounting.abort()
        return transport

    transport = asyncio.run(run())
    assert [delay for _, delay in transport.attempts] == [0, 3, 6, 9]
    assert len(transport.delivered) == 1


def test_back_off_is_exponential_to_a_cap_and_probes_one_record_at_a_time(tmp_path: Path) -> None:
    async def run() -> tuple[list[float], ScriptedTransport, bool]:
        loop = asyncio.get_running_loop()
        times: list[float] = []
        transport = ScriptedTransport(answer=lambda a, n: n > 8, on_attempt=lambda: times.append(loop.time()))
        accounting = fast_accounting(transport, Spool(tmp_path), accounting_on_off=False,
                                     backoff_initial=0.05, backoff_cap=0.2)
        await accounting.open()
        await asyncio.gather(*(accounting.start(session(f"s{i}")) for i in range(5)))
        await asyncio.sleep(0.02)
        down = accounting.stats().servers_down and accounting.stats().spool.records == 5
        assert await accounting.drain(3)
        await accounting.abort()
        return times, transport, down

    times, transport, down_seen = asyncio.run(run())
    assert down_seen
    # First round: five at once, all fail (one back-off step). Then one probe at a time, 0.05,
    # 0.1, 0.2 and (cap) 0.2 s apart; the fourth probe gets through and the rest follows at once.
    assert len(transport.attempts) == 8 + 5
    # Loop timers never fire early, so each gap is at least its back-off step; a loaded machine
    # may make any gap longer, so the upper bounds only tell the steps apart: the cap keeps the
    # fourth gap well under the 0.4 s that doubling would give, and the records after the
    # successful probe do not wait for a step at all.
    gaps = [b - a for a, b in itertools.pairwise(times[4:9])]
    steps = [0.05, 0.1, 0.2, 0.2]
    assert all(gap >= step - 0.005 for gap, step in zip(gaps, steps, strict=True)), gaps
    assert gaps[3] < 0.35, gaps
    assert times[9] - times[8] < 0.15
    assert sorted(one(a, "Acct-Session-Id") for a in transport.delivered) == [f"s{i}" for i in range(5)]


def test_order_per_session_and_exactly_once_under_random_failures(tmp_path: Path) -> None:
    rng = random.Random(7)

    async def run() -> ScriptedTransport:
        transport = ScriptedTransport(answer=lambda a, n: rng.random() < 0.6, latency=0.001)
        accounting = fast_accounting(transport, Spool(tmp_path), backoff_initial=0.001, backoff_cap=0.004)
        await accounting.open()
        sessions = [session(f"s{i}", Counters(input_octets=i)) for i in range(20)]
        for step in range(3):
            for s in sessions:
                if step == 0:
                    await accounting.start(s)
                elif step == 1:
                    await accounting.interim(s)
                else:
                    await accounting.stop(s, TerminateCause.USER_REQUEST)
            await asyncio.sleep(0.005)
        assert await accounting.drain(10)
        await accounting.abort()
        return transport

    transport = asyncio.run(run())
    by_session: dict[str, list[AttributeValue]] = {}
    for attrs in transport.delivered:
        if one(attrs, "Acct-Status-Type") not in ("Accounting-On", "Accounting-Off"):
            sid = str(one(attrs, "Acct-Session-Id"))
            by_session.setdefault(sid, []).append(one(attrs, "Acct-Status-Type"))
    assert len(by_session) == 20
    assert all(statuses == ["Start", "Interim-Update", "Stop"] for statuses in by_session.values())
    assert len(transport.attempts) > len(transport.delivered)  # failures did happen


def test_concurrent_events_share_one_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    async def run() -> list[bool]:
        accounting = fast_accounting(ScriptedTransport(answer=lambda a, n: False), Spool(tmp_path),
                                     backoff_initial=10)
        await accounting.open()
        await accounting.start(session("warm-up"))  # creates the segment and journal files
        monkeypatch.setattr(spool_module.os, "fsync", counting_fsync)
        results = await asyncio.gather(*(accounting.start(session(f"s{i}")) for i in range(30)))
        monkeypatch.setattr(spool_module.os, "fsync", real_fsync)
        await accounting.abort()
        return results

    assert asyncio.run(run()) == [True] * 30
    assert len(synced) == 2  # the segment and the session journal, once for all thirty Starts


def test_next_interim_delay() -> None:
    high: Callable[[float, float], float] = lambda low, top: top  # noqa: E731
    low: Callable[[float, float], float] = lambda bottom, top: bottom  # noqa: E731
    assert next_interim_delay(60, 0, 0, None) == 60
    assert next_interim_delay(60, 5, 0, None, uniform=high) == 65
    assert next_interim_delay(60, 5, 0, None, uniform=low) == 55
    assert next_interim_delay(3, 0, 0, None) == 10  # floor
    assert next_interim_delay(0, 5, 0, None) is None  # disabled
    # Session-Timeout 3600: an interim at 3580 is fine, one at 3595 would be within 10 s of the end.
    assert next_interim_delay(60, 0, 3520, 3600) == 60
    assert next_interim_delay(60, 0, 3535, 3600) is None


def test_interims_follow_the_per_session_interval_and_stop_cancels_them(tmp_path: Path) -> None:
    async def run() -> tuple[int, int]:
        transport = ScriptedTransport()
        accounting = fast_accounting(transport, Spool(tmp_path), interim_interval=3600, interim_floor=0.01)
        await accounting.open()
        s = session("s1", interim_interval=0.05)  # type: ignore[arg-type]  # from RADIUS, overrides config
        await accounting.start(s)
        await asyncio.sleep(0.28)
        await accounting.stop(s, TerminateCause.USER_REQUEST)
        await accounting.drain(2)
        count_at_stop = sum(one(a, "Acct-Status-Type") == "Interim-Update" for a in transport.delivered)
        await asyncio.sleep(0.15)
        count_later = sum(one(a, "Acct-Status-Type") == "Interim-Update" for a in transport.delivered)
        await accounting.abort()
        return count_at_stop, count_later

    at_stop, later = asyncio.run(run())
    assert 3 <= at_stop <= 6
    assert later == at_stop


def test_acct_timeout_ends_a_session_whose_interim_goes_unanswered(tmp_path: Path) -> None:
    """Start answered, then the server goes silent: the session's first Interim is unanswered
    for acct-timeout seconds, the session is ended once, and its Stop (NAS-Error, as the
    connection reports it) waits in the spool until the server answers again."""

    async def run() -> tuple[list[tuple[str, str, float]], ScriptedTransport, Accounting, float]:
        loop = asyncio.get_running_loop()
        answering = True
        transport = ScriptedTransport(answer=lambda a, n: answering)
        accounting = fast_accounting(transport, Spool(tmp_path), interim_floor=0.01, acct_timeout=0.2)
        ended: list[tuple[str, str, float]] = []
        stops: list[asyncio.Task[bool]] = []

        def end(ended_session: AccountingSession, reason: str) -> None:
            ended.append((ended_session.acct_session_id, reason, loop.time()))
            stops.append(loop.create_task(accounting.stop(ended_session, TerminateCause.NAS_ERROR)))

        accounting.on_unanswered = end
        await accounting.open()
        s = session("s1", interim_interval=0.1)  # type: ignore[arg-type]
        await accounting.start(s)
        assert await accounting.drain(2)
        answering = False
        silent_at = loop.time()
        await asyncio.sleep(0.6)
        assert accounting.spool.pending_count >= 2  # the Interim and the Stop behind it
        answering = True
        assert await accounting.drain(3)
        await accounting.abort()
        return ended, transport, accounting, silent_at

    ended, transport, _, silent_at = asyncio.run(run())
    assert len(ended) == 1, ended
    assert ended[0][0] == "s1" and "acct-timeout 0.2 s" in ended[0][1]
    # First Interim at about silent_at + 0.1 (it was due then), ended 0.2 s later at the earliest.
    assert ended[0][2] - silent_at >= 0.25
    kinds = [one(a, "Acct-Status-Type") for a in transport.delivered if one(a, "Acct-Session-Id") == "s1"]
    assert kinds[0] == "Start" and kinds[-1] == "Stop" and kinds.count("Stop") == 1, kinds
    assert kinds.count("Interim-Update") >= 1
    assert one(transport.delivered[-1], "Acct-Terminate-Cause") == "NAS-Error"


def test_acct_timeout_spares_sessions_while_the_servers_answer_a_backlog(tmp_path: Path) -> None:
    """Every answer takes 0.05 s and a backlog of Starts is ahead: Interims wait longer than
    acct-timeout, but the servers answer all along, so nothing is ended. With acct-timeout 0
    a silent server ends nothing either."""

    async def run(acct_timeout: float, answering: bool) -> list[str]:
        transport = ScriptedTransport(answer=lambda a, n: answering, latency=0.05)
        accounting = fast_accounting(transport, Spool(tmp_path / f"{acct_timeout}-{answering}"),
                                     interim_floor=0.01, acct_timeout=acct_timeout, max_in_flight=1,
                                     accounting_on_off=False)
        ended: list[str] = []
        accounting.on_unanswered = lambda ended_session, reason: ended.append(ended_session.acct_session_id)
        await accounting.open()
        sessions = [session(f"s{i}", interim_interval=0.05) for i in range(12)]  # type: ignore[arg-type]
        await asyncio.gather(*(accounting.start(s) for s in sessions))
        await asyncio.sleep(0.5)
        await accounting.abort()
        return ended

    assert asyncio.run(run(0.15, answering=True)) == []
    assert asyncio.run(run(0.0, answering=False)) == []
    assert asyncio.run(run(0.15, answering=False)) != []  # the same set-up does end them when silent


def test_restart_sends_nas_reboot_stops_with_last_known_usage(tmp_path: Path) -> None:
    clock = FakeClock()

    async def crash() -> None:
        accounting = fast_accounting(ScriptedTransport(), Spool(tmp_path, clock=clock), clock=clock)
        await accounting.open()
        a = session("a", Counters(input_octets=6 * GIGAWORD, output_octets=1000), started_at=clock.now)
        await accounting.start(a)
        await accounting.start(session("b", started_at=clock.now))
        await accounting.start(session("c", started_at=clock.now))
        clock.now += 120
        await accounting.interim(a)
        await accounting.stop(session("c"), TerminateCause.USER_REQUEST)
        assert await accounting.drain(2)
        await accounting.abort()  # no Stops, no Accounting-Off: the daemon died

    async def restart() -> ScriptedTransport:
        transport = ScriptedTransport()
        accounting = fast_accounting(transport, Spool(tmp_path, clock=clock), clock=clock)
        await accounting.open()
        assert await accounting.drain(2)
        await accounting.abort()
        return transport

    asyncio.run(crash())
    clock.now += 600
    transport = asyncio.run(restart())
    statuses = [(one(a, "Acct-Status-Type"), one(a, "Acct-Session-Id")) for a in transport.delivered]
    assert sorted(statuses[:2]) == [("Stop", "a"), ("Stop", "b")]
    assert statuses[2][0] == "Accounting-On"  # after the Stops of the previous run
    assert len(statuses) == 3
    stop_a = next(a for a in transport.delivered if one(a, "Acct-Session-Id") == "a")
    assert one(stop_a, "Acct-Terminate-Cause") == "NAS-Reboot"
    assert one(stop_a, "Acct-Session-Time") == 120  # as of its last Interim-Update
    assert (one(stop_a, "Acct-Input-Gigawords"), one(stop_a, "Acct-Input-Octets")) == (6, 0)
    assert one(stop_a, "User-Name") == "alice" and stop_a["Class"] == [b"cls-1", b"\x00\x01"]
    stop_b = next(a for a in transport.delivered if one(a, "Acct-Session-Id") == "b")
    assert one(stop_b, "Acct-Session-Time") == 0 and one(stop_b, "Acct-Terminate-Cause") == "NAS-Reboot"


# --- the real FreeRADIUS ----------------------------------------------------------------------


class PyradUdpTransport:
    """Minimal accounting transport for the tests: one pyrad Accounting-Request per ``send``,
    one try, the reply's Response Authenticator verified."""

    def __init__(self, address: tuple[str, int], secret: bytes, timeout: float = 0.5) -> None:
        self.address = address
        self.secret = secret
        self.timeout = timeout
        self.dictionary = load_dictionary()
        self._ids = itertools.cycle(range(256))
        self._endpoint: asyncio.DatagramTransport | None = None
        self._waiting: dict[int, tuple[radius_packet.AcctPacket, asyncio.Future[bool]]] = {}

    async def send(self, attributes: Sequence[tuple[str, AttributeValue]], *, delay_time: int) -> bool:
        if self._endpoint is None:
            loop = asyncio.get_running_loop()
            self._endpoint, _ = await loop.create_datagram_endpoint(
                lambda: _ReplyProtocol(self), remote_addr=self.address,
            )
        ident = next(id_ for id_ in self._ids if id_ not in self._waiting)
        request = radius_packet.AcctPacket(id=ident, secret=self.secret, dict=self.dictionary)
        for name, value in attributes:
            request.AddAttribute(name, radius_value(value))
        request.AddAttribute("Acct-Delay-Time", delay_time)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = (request, future)
        try:
            self._endpoint.sendto(request.RequestPacket())
            return await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            return False
        finally:
            self._waiting.pop(ident, None)

    def received(self, data: bytes) -> None:
        if len(data) < 20 or data[1] not in self._waiting:
            return
        request, future = self._waiting[data[1]]
        try:
            reply = radius_packet.Packet(packet=data, secret=self.secret, dict=self.dictionary)
        except Exception:
            return
        verified = reply.code == radius_packet.AccountingResponse and request.VerifyReply(reply, data)
        if verified and not future.done():
            future.set_result(True)

    def unreachable(self) -> None:
        for _, future in self._waiting.values():
            if not future.done():
                future.set_result(False)

    def close(self) -> None:
        if self._endpoint is not None:
            self._endpoint.close()


class _ReplyProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: PyradUdpTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.owner.received(data)

    def error_received(self, exc: Exception) -> None:
        self.owner.unreachable()  # ICMP port unreachable: the server is down


@pytest.fixture(scope="module")
def radius() -> Iterator[FreeRadius]:
    require_program("freeradius")
    server = FreeRadius(users='alice Cleartext-Password := "alicepass"\n')
    server.start()
    yield server
    server.cleanup()


async def start_interim_stop(radius: FreeRadius, tmp_path: Path, one: AccountingSession,
                             cause: TerminateCause) -> None:
    """Start, Interim-Update and Stop of ``one`` to the real FreeRADIUS, each acknowledged."""
    transport = PyradUdpTransport(radius.acct_address, SECRET)
    accounting = fast_accounting(transport, Spool(tmp_path))
    await accounting.open()
    assert await accounting.start(one)
    assert await accounting.interim(one)
    assert await accounting.stop(one, cause)
    assert await accounting.drain(5)
    await accounting.close()
    transport.close()


def events_of(server: FreeRadius, session_ids: set[str]) -> list[dict[str, list[str]]]:
    return [r for r in server.detail_records() if r.get("Acct-Session-Id", [""])[0] in session_ids]


def event_identity(record: dict[str, list[str]]) -> tuple[str, ...]:
    fields = ("Acct-Unique-Session-Id", "Acct-Status-Type", "Event-Timestamp", "Acct-Session-Time",
              "Acct-Input-Octets")
    return tuple(record.get(name, [""])[0] for name in fields)


def assert_each_event_once(records: list[dict[str, list[str]]]) -> None:
    tally = Tally(event_identity(r) for r in records)
    repeats = {identity for identity, count in tally.items() if count > 1}
    for identity in repeats:  # only a resend after a lost answer may repeat: it has a new delay
        delays = [r["Acct-Delay-Time"][0] for r in records if event_identity(r) == identity]
        assert len(set(delays)) == len(delays), f"{identity} repeated with the same Acct-Delay-Time"
    assert not repeats, f"duplicates: {repeats}"


def test_freeradius_records_start_interim_stop_with_gigawords(radius: FreeRadius, tmp_path: Path) -> None:
    big = Counters(input_octets=5 * GIB + 12345, output_octets=4 * (1 << 32) + 7,
                   input_packets=4_000_000, output_packets=5_000_000)
    sid = f"gw-{time.time_ns()}"

    asyncio.run(start_interim_stop(radius, tmp_path, session(sid, big, started_at=time.time() - 100),
                                   TerminateCause.LOST_CARRIER))
    records = events_of(radius, {sid})
    assert [r["Acct-Status-Type"][0] for r in records] == ["Start", "Interim-Update", "Stop"]
    start, _, stop = records
    for record in records:
        assert record["User-Name"] == ["alice"]
        assert record["NAS-Identifier"] == ["vpnd-test"]
        assert record["NAS-IP-Address"] == ["127.0.0.1"]
        assert record["NAS-Port-Id"] == [f"sstp-{sid}"]
        assert record["Calling-Station-Id"] == ["192.0.2.7"]
        assert record["Framed-IP-Address"] == ["10.99.0.10"]
        assert record["Class"] == ["0x636c732d31", "0x0001"]
        assert record["Acct-Authentic"] == ["RADIUS"]
        assert record["Acct-Delay-Time"] == ["0"]
    assert "Acct-Input-Octets" not in start
    total_in = int(stop["Acct-Input-Gigawords"][0]) << 32 | int(stop["Acct-Input-Octets"][0])
    total_out = int(stop["Acct-Output-Gigawords"][0]) << 32 | int(stop["Acct-Output-Octets"][0])
    assert (total_in, total_out) == (big.input_octets, big.output_octets)
    assert stop["Acct-Input-Packets"] == ["4000000"] and stop["Acct-Output-Packets"] == ["5000000"]
    assert stop["Acct-Terminate-Cause"] == ["Lost-Carrier"]
    assert 100 <= int(stop["Acct-Session-Time"][0]) <= 102
    assert_each_event_once(records)


def test_freeradius_outage_spools_then_delivers_everything_once_in_order(
    radius: FreeRadius, tmp_path: Path,
) -> None:
    tag = time.time_ns()
    ids = [f"out-{tag}-{i}" for i in range(6)]
    octets = {sid: 0 for sid in ids}

    def counters_of(sid: str) -> Callable[[], Counters]:
        def read() -> Counters:
            octets[sid] += 1000
            return Counters(input_octets=octets[sid], output_octets=2 * octets[sid])
        return read

    async def run() -> tuple[int, bool]:
        transport = PyradUdpTransport(radius.acct_address, SECRET, timeout=0.3)
        accounting = fast_accounting(transport, Spool(tmp_path), backoff_initial=0.1, backoff_cap=0.4)
        await accounting.open()
        sessions = [session(sid, counters_of(sid)) for sid in ids]
        for s in sessions[:3]:
            await accounting.start(s)
        assert await accounting.drain(5)
        radius.stop()  # SIGTERM by PID
        for s in sessions[3:]:
            await accounting.start(s)
        for s in sessions:
            await accounting.interim(s)
        for s in sessions[::2]:
            await accounting.stop(s, TerminateCause.USER_REQUEST)
        await asyncio.sleep(1.5)
        depth = accounting.stats().spool.records
        down = accounting.stats().servers_down
        await asyncio.to_thread(radius.start)
        assert await accounting.drain(15)
        for s in sessions[1::2]:
            await accounting.stop(s, TerminateCause.SESSION_TIMEOUT)
        assert await accounting.drain(5)
        await accounting.close()
        transport.close()
        return depth, down

    depth, down = asyncio.run(run())
    assert depth == 3 + 6 + 3  # three Starts, six Interims, three Stops waited for the server
    assert down
    records = events_of(radius, set(ids))
    assert_each_event_once(records)
    assert len(records) == 6 * 3
    for sid in ids:
        mine = [r for r in records if r["Acct-Session-Id"] == [sid]]
        assert [r["Acct-Status-Type"][0] for r in mine] == ["Start", "Interim-Update", "Stop"]
        interim, stop = mine[1], mine[2]
        assert int(stop["Acct-Input-Octets"][0]) > int(interim["Acct-Input-Octets"][0])
        if sid in ids[::2]:
            # Stopped during the outage: the delay says so (1.5 s plus FreeRADIUS start-up).
            assert int(stop["Acct-Delay-Time"][0]) >= 1
        else:
            assert stop["Acct-Delay-Time"] == ["0"]
        assert stop["Acct-Terminate-Cause"] == (["User-Request"] if sid in ids[::2] else ["Session-Timeout"])


def test_freeradius_daemon_restart_delivers_pending_and_stops_open_sessions(
    radius: FreeRadius, tmp_path: Path,
) -> None:
    tag = time.time_ns()
    delivered_id, pending_id, stopped_id = (f"rs-{tag}-{n}" for n in ("delivered", "pending", "stopped"))

    async def first_run() -> int:
        transport = PyradUdpTransport(radius.acct_address, SECRET, timeout=0.3)
        accounting = fast_accounting(transport, Spool(tmp_path), backoff_initial=0.1, backoff_cap=0.3)
        await accounting.open()
        s1 = session(delivered_id, Counters(input_octets=3 * GIGAWORD + 5, output_octets=10))
        await accounting.start(s1)
        await accounting.interim(s1)
        assert await accounting.drain(5)
        radius.stop()
        s2 = session(pending_id, Counters(input_octets=50))
        s3 = session(stopped_id, Counters(input_octets=70))
        await accounting.start(s2)
        await accounting.start(s3)
        await accounting.stop(s3, TerminateCause.ADMIN_RESET)
        await asyncio.sleep(0.3)
        pending = accounting.stats().spool.records
        await accounting.abort()  # the daemon dies: no Stops, no Accounting-Off
        transport.close()
        return pending

    async def second_run() -> None:
        transport = PyradUdpTransport(radius.acct_address, SECRET)
        accounting = fast_accounting(transport, Spool(tmp_path), backoff_initial=0.1, backoff_cap=0.3)
        await accounting.open()
        assert await accounting.drain(10)
        await accounting.abort()
        transport.close()

    assert asyncio.run(first_run()) == 3  # Start, Start, Stop
    radius.start()
    asyncio.run(second_run())
    records = events_of(radius, {delivered_id, pending_id, stopped_id})
    assert_each_event_once(records)

    def statuses(sid: str) -> list[tuple[str, str]]:
        return [(r["Acct-Status-Type"][0], r.get("Acct-Terminate-Cause", [""])[0])
                for r in records if r["Acct-Session-Id"] == [sid]]

    assert statuses(delivered_id) == [("Start", ""), ("Interim-Update", ""), ("Stop", "NAS-Reboot")]
    assert statuses(pending_id) == [("Start", ""), ("Stop", "NAS-Reboot")]
    assert statuses(stopped_id) == [("Start", ""), ("Stop", "Admin-Reset")]
    reboot_stop = [r for r in records if r["Acct-Session-Id"] == [delivered_id]][-1]
    # The usage of its last Interim-Update.
    assert (reboot_stop["Acct-Input-Gigawords"], reboot_stop["Acct-Input-Octets"]) == (["3"], ["5"])
    assert list(tmp_path.glob("*.seg")) == []  # everything acknowledged, segments gone


def test_usage_attributes_split_64_bit_octets() -> None:
    attrs = dict(usage_attributes(Counters(input_octets=(1 << 40) + 5, output_octets=1 << 32), 9))
    assert (attrs["Acct-Input-Gigawords"], attrs["Acct-Input-Octets"]) == (256, 5)
    assert (attrs["Acct-Output-Gigawords"], attrs["Acct-Output-Octets"]) == (1, 0)
    assert attrs["Acct-Session-Time"] == 9


IPV6_SESSION = {
    "framed_ipv6_prefix": IPv6Network("2001:db8:1:2::/64"),
    "framed_interface_id": bytes.fromhex("021122fffe334455"),
    "delegated_ipv6_prefix": IPv6Network("2001:db8:100:4200::/56"),
}


def test_freeradius_records_the_ipv6_attributes_of_a_dual_stack_session(
    radius: FreeRadius, tmp_path: Path,
) -> None:
    sid = f"v6-{time.time_ns()}"

    asyncio.run(start_interim_stop(radius, tmp_path, session(sid, Counters(input_octets=10), **IPV6_SESSION),
                                   TerminateCause.USER_REQUEST))
    records = events_of(radius, {sid})
    assert [r["Acct-Status-Type"][0] for r in records] == ["Start", "Interim-Update", "Stop"]
    for record in records:
        assert record["Framed-IP-Address"] == ["10.99.0.10"]
        assert record["Framed-IPv6-Prefix"] == ["2001:db8:1:2::/64"]
        assert record["Framed-Interface-Id"] == ["211:22ff:fe33:4455"]
        assert record["Delegated-IPv6-Prefix"] == ["2001:db8:100:4200::/56"]


def test_ipv6_attributes_survive_the_spool_into_a_reboot_stop(tmp_path: Path) -> None:
    clock = FakeClock()

    async def crash() -> None:
        accounting = fast_accounting(ScriptedTransport(lambda a, n: False), Spool(tmp_path, clock=clock),
                                     clock=clock)
        await accounting.open()
        assert await accounting.start(session("lost", **IPV6_SESSION))
        await accounting.abort()

    async def restart() -> ScriptedTransport:
        transport = ScriptedTransport()
        accounting = fast_accounting(transport, Spool(tmp_path, clock=clock), clock=clock)
        await accounting.open()
        assert await accounting.drain(2)
        await accounting.close()
        return transport

    asyncio.run(crash())
    delivered = asyncio.run(restart()).delivered
    stops = [a for a in delivered if a["Acct-Status-Type"] == ["Stop"]]
    assert [one(stop, "Acct-Terminate-Cause") for stop in stops] == ["NAS-Reboot"]
    for record in (*(a for a in delivered if a["Acct-Status-Type"] == ["Start"]), *stops):
        assert one(record, "Framed-IPv6-Prefix") == IPV6_SESSION["framed_ipv6_prefix"]
        assert one(record, "Framed-Interface-Id") == IPV6_SESSION["framed_interface_id"]
        assert one(record, "Delegated-IPv6-Prefix") == IPV6_SESSION["delegated_ipv6_prefix"]


def test_freeradius_through_the_radius_client(radius: FreeRadius, tmp_path: Path) -> None:
    sid = f"rc-{time.time_ns()}"

    async def run() -> None:
        client = RadiusClient(
            [RadiusServerSpec(IPv4Address("127.0.0.1"), SECRET, auth_port=radius.auth_port,
                              acct_port=radius.acct_port)],
            timeout=0.5, max_try=2,
        )
        accounting = fast_accounting(RadiusClientTransport(client), Spool(tmp_path))
        await accounting.open()
        s = session(sid, Counters(input_octets=GIGAWORD + 1, output_octets=2))
        await accounting.start(s)
        await accounting.stop(s, TerminateCause.NAS_REQUEST)
        assert await accounting.drain(5)
        await accounting.close()
        await client.close()

    asyncio.run(run())
    records = events_of(radius, {sid})
    assert [r["Acct-Status-Type"][0] for r in records] == ["Start", "Stop"]
    assert records[1]["Acct-Input-Gigawords"] == ["1"] and records[1]["Acct-Input-Octets"] == ["1"]
    assert records[1]["Acct-Terminate-Cause"] == ["NAS-Request"]
    assert records[1]["Framed-IP-Address"] == ["10.99.0.10"]


def test_clean_close_stops_open_sessions_then_sends_accounting_off(tmp_path: Path) -> None:
    async def run() -> ScriptedTransport:
        transport = ScriptedTransport()
        accounting = fast_accounting(transport, Spool(tmp_path))
        await accounting.open()
        await accounting.start(session("a"))
        await accounting.start(session("b"))
        await accounting.close(cause=TerminateCause.ADMIN_REBOOT)
        return transport

    transport = asyncio.run(run())
    statuses = [(one(a, "Acct-Status-Type"), a.get("Acct-Terminate-Cause", [""])[0])
                for a in transport.delivered]
    assert statuses[0] == ("Accounting-On", "")
    stop = ("Stop", "Admin-Reboot")
    assert sorted(statuses[1:5]) == [("Start", ""), ("Start", ""), stop, stop]
    assert statuses[5:] == [("Accounting-Off", "")]
    assert Spool(tmp_path).open_sessions() == {}
    assert list(tmp_path.glob("*.seg")) == []
