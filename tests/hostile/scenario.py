"""Hostile input against a running daemon, run inside the daemon's namespace by test_hostile.py.

    python -m tests.hostile.scenario --pid PID --stats FILE [--examples N]

The daemon is a separate process (tests.support.daemon) listening on port 443; PID is read from
/proc for memory and descriptors, and SIGUSR1 makes it dump its session count into FILE. A
control session (a Dialer) stays up the whole time and pings through its tunnel while the cases
of cases.py run concurrently in batches; after each batch the daemon must be alive, the pings
answered, and its descriptors and memory back at the baseline. The long cases (the daemon's 60 s
timers) run last, beside the property-based layer, which mutates real sessions at random.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import ssl
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.hostile.cases import (
    BY_NAME,
    CALL_ABORT,
    CALL_DISCONNECT,
    CASES,
    CONNECT_REQUEST,
    REQUEST,
    Case,
    Context,
    Expect,
    Reply,
)
from tests.support.dialer import Dialer
from vpnd.proto.errors import ProtocolError
from vpnd.proto.ppp.auth.types import AuthMethod
from vpnd.proto.ppp.lcp import LcpSettings
from vpnd.proto.ppp.link import LinkSettings
from vpnd.proto.session import AuthFailed, ClientSession, ClientSessionSettings, Ipv4Up
from vpnd.proto.sstp.packets import HashProtocol, decode_control

HOST, PORT = "127.0.0.1", 443
BATCH = 40
STAGE_TIMEOUT = 20.0
RSS_TOLERANCE_KB = 12 * 1024

# ---- the daemon as seen from /proc ---------------------------------------------------------------


@dataclass
class DaemonProbe:
    pid: int
    stats: Path

    def alive(self) -> bool:
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return -1

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    async def sessions(self) -> int:
        """Connections the daemon holds (starting + active), from a fresh statistics dump."""
        before = json.loads(self.stats.read_text())["seq"]
        os.kill(self.pid, signal.SIGUSR1)
        for _ in range(250):
            await asyncio.sleep(0.02)
            with contextlib.suppress(ValueError, OSError):
                data = json.loads(self.stats.read_text())
                if data["seq"] > before:
                    sessions = data["statistics"]["sessions"]
                    return int(sessions["starting"]) + int(sessions["active"])
        raise RuntimeError("the daemon did not dump its statistics")

    def snapshot(self) -> dict[str, Any]:
        return {"alive": self.alive(), "rss_kb": self.rss_kb() if self.alive() else -1,
                "fds": self.fds() if self.alive() else -1}


# ---- byte streams ------------------------------------------------------------------------------


def split_sstp(data: bytes) -> tuple[list[bytes], bytes, str | None]:
    """Whole SSTP packets, the incomplete rest, and a framing error if the stream is malformed."""
    packets: list[bytes] = []
    pos = 0
    while len(data) - pos >= 4:
        if data[pos] != 0x10:
            return packets, data[pos:], f"version byte 0x{data[pos]:02x} at offset {pos}"
        length = struct.unpack_from("!H", data, pos + 2)[0] & 0x0FFF
        if length < 4:
            return packets, data[pos:], f"length {length} at offset {pos}"
        if len(data) - pos < length:
            break
        packets.append(data[pos:pos + length])
        pos += length
    return packets, data[pos:], None


def ppp_frame(payload: bytes) -> tuple[int, bytes] | None:
    if payload[:2] == b"\xff\x03":
        payload = payload[2:]
    if not payload:
        return None
    if payload[0] & 1:
        return payload[0], payload[1:]
    if len(payload) < 2:
        return None
    return (payload[0] << 8) | payload[1], payload[2:]


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def client_hello() -> bytes:
    """A real TLS ClientHello (from a MemoryBIO handshake that is never continued)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = tls_context().wrap_bio(incoming, outgoing, server_hostname="vpn.test")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


class Conn:
    """One attacker connection: raw or TLS, with whatever the stage driver left unread in ``buf``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, started: float) -> None:
        self.reader, self.writer, self.started = reader, writer, started
        self.buf = b""
        self.closed = False
        self.closed_at: float | None = None
        self.record = bytearray()  # every byte received, for the property layer

    async def send(self, data: bytes) -> bool:
        if self.closed:
            return False
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, ssl.SSLError, OSError, RuntimeError):
            self._mark_closed()
            return False
        return True

    async def recv(self, timeout: float) -> bytes | None:
        """Bytes, or None on timeout; b"" once the daemon closed the connection."""
        if self.closed:
            return b""
        try:
            chunk = await asyncio.wait_for(self.reader.read(65536), max(0.0, timeout))
        except TimeoutError:
            return None
        except (ConnectionError, ssl.SSLError, OSError):
            chunk = b""
        if not chunk:
            self._mark_closed()
        self.record += chunk
        return chunk

    def _mark_closed(self) -> None:
        if not self.closed:
            self.closed = True
            self.closed_at = asyncio.get_running_loop().time()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2)


class StageError(Exception):
    pass


async def open_conn(tls: bool) -> Conn:
    started = asyncio.get_running_loop().time()
    if tls:
        reader, writer = await asyncio.open_connection(HOST, PORT, ssl=tls_context(),
                                                       server_hostname="vpn.test")
    else:
        reader, writer = await asyncio.open_connection(HOST, PORT)
    return Conn(reader, writer, started)


async def read_until(conn: Conn, done: Any, timeout: float) -> bytes:
    """Read into conn.buf until ``done(buf)`` returns how many bytes it consumed (else None)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        used = done(conn.buf)
        if used is not None:
            taken, conn.buf = conn.buf[:used], conn.buf[used:]
            return taken
        chunk = await conn.recv(end - loop.time())
        if chunk is None:
            raise StageError(f"timed out; have {conn.buf[:80]!r}")
        if chunk == b"":
            raise StageError(f"closed by the daemon; have {conn.buf[:80]!r}")
        conn.buf += chunk


def _http_head(buf: bytes) -> int | None:
    end = buf.find(b"\r\n\r\n")
    return None if end < 0 else end + 4


def _first_control(kinds: set[int]) -> Any:
    def done(buf: bytes) -> int | None:
        pos = 0
        packets, _, _ = split_sstp(buf)
        for packet in packets:
            pos += len(packet)
            if packet[1] & 1 and struct.unpack_from("!H", packet, 4)[0] in kinds:
                return pos
        return None
    return done


@dataclass
class Dial:
    session: ClientSession
    up: Ipv4Up | None = None
    auth_failure: str | None = None
    withheld: bool = False


def _drop_call_connected(out: bytes) -> tuple[bytes, bool]:
    if out.startswith(b"SSTP_DUPLEX_POST"):
        return out, False
    packets, rest, _ = split_sstp(out)
    kept = [p for p in packets if not (p[1] & 1 and p[4:6] == b"\x00\x04")]
    return b"".join(kept) + rest, len(kept) != len(packets)


async def drive(conn: Conn, username: str, password: str, target: str, timeout: float,
                mutate: Any = None) -> Dial:
    """Run our ClientSession over ``conn`` until ``target``: "up", "authed" (Call Connected
    withheld), or "end" (until the session or connection ends)."""
    loop = asyncio.get_running_loop()
    ssl_object = conn.writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True)
    link = LinkSettings(lcp=LcpSettings(auth_methods=(AuthMethod.MSCHAP_V2,)))
    settings = ClientSessionSettings(host="vpn.test", username=username, password=password, link=link)
    session = ClientSession(settings)
    hashes = {HashProtocol.SHA256: hashlib.sha256(der).digest(),
              HashProtocol.SHA1: hashlib.sha1(der).digest()}
    session.start(hashes, loop.time())
    dial = Dial(session)
    end = loop.time() + timeout
    while True:
        while (event := session.next_event()) is not None:
            if isinstance(event, Ipv4Up):
                dial.up = event
            elif isinstance(event, AuthFailed):
                dial.auth_failure = event.reason
        out = session.data_to_send()
        if out:
            if target == "authed":
                out, dropped = _drop_call_connected(out)
                dial.withheld |= dropped
            if mutate is not None:
                out = mutate(out)
            if out:
                await conn.send(out)
        if (target == "up" and dial.up) or (target == "authed" and dial.withheld):
            break
        if session.closed or conn.closed:
            break
        now = loop.time()
        if now >= end:
            if target == "end":
                break
            raise StageError(f"stage {target} not reached in {timeout} s ({session.close_reason})")
        deadline = session.get_timer()
        wait = end - now if deadline is None else min(end - now, max(0.0, deadline - now))
        chunk = await conn.recv(wait)
        if chunk:
            session.receive_data(chunk, loop.time())
        deadline = session.get_timer()
        if deadline is not None and deadline <= loop.time():
            session.handle_timer(loop.time())
    if target != "end" and not ((target == "up" and dial.up) or (target == "authed" and dial.withheld)):
        raise StageError(f"stage {target} not reached: {session.close_reason or 'connection closed'}")
    channel = session.channel
    conn.buf = bytes(getattr(channel, "_partial", b"")) if channel is not None else b""
    return dial


async def reach(case: Case, ctx: Context) -> tuple[Conn, Dial | None]:
    stage = case.stage
    if stage in ("tcp", "hello"):
        conn = await open_conn(tls=False)
        if stage == "hello":
            await conn.send(client_hello())
        return conn, None
    conn = await open_conn(tls=True)
    if stage == "tls":
        return conn, None
    if stage in ("http", "ack"):
        await conn.send(REQUEST)
        head = await read_until(conn, _http_head, STAGE_TIMEOUT)
        if not head.startswith(b"HTTP/1.1 200 "):
            raise StageError(f"HTTP answer {head[:40]!r}")
        if stage == "ack":
            await conn.send(CONNECT_REQUEST)
            ack = await read_until(conn, _first_control({2}), STAGE_TIMEOUT)
            ctx.nonce = ack[-32:]
        return conn, None
    if stage == "dial":
        dial = await drive(conn, case.username, case.password, "end", 10.0)
        return conn, dial
    target = "authed" if stage == "authed" else "up"
    dial = await drive(conn, case.username, case.password, target, STAGE_TIMEOUT)
    if dial.up is not None:
        ctx.own, ctx.gateway = dial.up.local, dial.up.peer
    channel = dial.session.channel
    ctx.nonce = getattr(channel, "nonce", None)
    if stage == "disc":
        await conn.send(CALL_DISCONNECT)
        await read_until(conn, _first_control({7}), 5.0)
    elif stage == "aborted":
        await conn.send(CALL_ABORT)
        await read_until(conn, _first_control({5}), 5.0)
    return conn, dial


def tun_rx_packets(own: IPv4Address) -> int:
    shown = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, check=True)
    links = json.loads(shown.stdout)
    for link in links:
        for info in link.get("addr_info", []):
            if str(own) in (info.get("address"), info.get("local")) and info.get("local") != str(own):
                return int(Path(f"/sys/class/net/{link['ifname']}/statistics/rx_packets").read_text())
    raise StageError(f"no interface with peer {own}")


# ---- one case --------------------------------------------------------------------------------


async def run_case(case: Case, other: IPv4Address | None) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    ctx = Context(other=other)
    try:
        conn, dial = await asyncio.wait_for(reach(case, ctx), STAGE_TIMEOUT + 5)
    except Exception as error:  # the stage itself failed: that is the finding
        return {"problems": [f"stage {case.stage} not reached: {error!r}"]}
    expect = case.expect
    received = bytearray()

    async def reader() -> None:
        while not conn.closed:
            chunk = await conn.recv(1.0)
            if chunk:
                received.extend(chunk)

    reading = asyncio.create_task(reader())
    tun_before = tun_rx_packets(ctx.own) if expect.tun_rx is not None and ctx.own else None
    for step in case.steps:
        if step.delay:
            await asyncio.sleep(step.delay)
        payload = step.payload(ctx) if callable(step.payload) else step.payload
        if step.chunk <= 0:
            await conn.send(payload)
            continue
        give_up = conn.started + 100
        while not conn.closed and loop.time() < give_up:
            for pos in range(0, len(payload), step.chunk):
                if not await conn.send(payload[pos:pos + step.chunk]):
                    break
                await asyncio.sleep(step.interval)
            if not step.forever:
                break
    last_sent = loop.time()
    if expect.close_between is not None:
        wait_until = conn.started + expect.close_between[1] + 2
    else:
        wait_until = last_sent + expect.within
    while not conn.closed and loop.time() < wait_until:
        await asyncio.sleep(0.05)
    if expect.end == "any" and not conn.closed:
        await asyncio.sleep(0.2)  # let the answers of a slow burst arrive
    tun_after = tun_rx_packets(ctx.own) if tun_before is not None and ctx.own else None
    closed = conn.closed
    ended = conn.closed_at if conn.closed_at is not None else loop.time()
    reading.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reading
    await conn.close()
    reply = Reply(raw=bytes(conn.buf) + bytes(received), closed=closed, since_connect=ended - conn.started,
                  since_sent=ended - last_sent)
    if dial is not None:
        reply.auth_failure = dial.auth_failure
    if tun_before is not None and tun_after is not None:
        reply.tun_rx = tun_after - tun_before
    parse_reply(case, reply)
    problems = evaluate(expect, reply, ctx)
    return {"problems": problems, "closed": closed, "since_connect": round(reply.since_connect, 2),
            "http_status": reply.http_status, "control": [p.hex() for p in reply.control][:8],
            "raw_bytes": len(reply.raw), "tun_rx": reply.tun_rx, "auth_failure": reply.auth_failure}


def parse_reply(case: Case, reply: Reply) -> None:
    stream = reply.raw
    if case.stage == "tcp" or case.stage == "hello" or case.stage == "dial":
        return
    if case.stage == "tls":
        if not stream:
            return
        end = stream.find(b"\r\n\r\n")
        head = stream if end < 0 else stream[:end]
        parts = head.split(b" ", 2)
        if len(parts) >= 2 and parts[0] == b"HTTP/1.1" and parts[1].isdigit():
            reply.http_status = int(parts[1])
        else:
            reply.framing_error = f"not an HTTP answer: {stream[:60]!r}"
            return
        stream = b"" if end < 0 else stream[end + 4:]
    packets, _, error = split_sstp(stream)
    reply.framing_error = error
    for packet in packets:
        if packet[1] & 1:
            reply.control.append(packet)
        elif (frame := ppp_frame(packet[4:])) is not None:
            reply.frames.append(frame)


def evaluate(expect: Expect, reply: Reply, ctx: Context) -> list[str]:
    problems = []
    if expect.end == "close" and not reply.closed:
        problems.append("the daemon did not close the connection in time")
    if expect.end == "open" and reply.closed:
        problems.append(f"the daemon closed the connection ({reply.since_sent:.1f} s after the last step)")
    if expect.close_between is not None and reply.closed:
        low, high = expect.close_between
        if not low <= reply.since_connect <= high:
            problems.append(f"closed {reply.since_connect:.1f} s after connect, not within {low}-{high} s")
    if expect.silent and reply.raw:
        problems.append(f"expected silence, got {reply.raw[:48].hex()}")
    if reply.framing_error:
        problems.append(f"malformed answer: {reply.framing_error}")
    if expect.http_status is not None and reply.http_status != expect.http_status:
        problems.append(f"HTTP status {reply.http_status}, expected {expect.http_status}")
    if expect.control is not None and tuple(reply.control) not in expect.control:
        problems.append(f"control packets {[p.hex() for p in reply.control]}, expected one of "
                        f"{[[p.hex() for p in alt] for alt in expect.control]}")
    if expect.tls_alert_only:
        pos, raw = 0, reply.raw
        while pos + 5 <= len(raw):
            if raw[pos] != 0x15:
                problems.append(f"TLS record type 0x{raw[pos]:02x} in answer to garbage (alerts only)")
                break
            pos += 5 + struct.unpack_from("!H", raw, pos + 3)[0]
    if expect.tun_rx is not None and reply.tun_rx != expect.tun_rx:
        problems.append(f"{reply.tun_rx} packets reached the session's TUN, expected {expect.tun_rx}")
    if expect.auth_failed and not reply.auth_failure:
        problems.append("the client saw no authentication failure")
    if expect.check is not None:
        problem = expect.check(reply, ctx)
        if problem:
            problems.append(problem)
    return problems


# ---- property layer: real sessions with one mutated packet each -----------------------------------

MUTATIONS = ("flip", "truncate", "insert", "duplicate", "drop", "length", "type", "append")
SERVER_MESSAGE_TYPES = {2, 3, 5, 6, 7, 8, 9}
ABORT_STATUSES = {4, 5, 6, 7, 8, 9}  # MS-SSTP §2.2.13


@dataclass(frozen=True)
class Mutation:
    unit: int  # which outgoing unit (0 = the HTTP request, then one per SSTP packet)
    kind: str
    position: int
    payload: bytes


@dataclass
class Mutator:
    mutation: Mutation
    seen: int = 0
    applied: bool = False

    def __call__(self, out: bytes) -> bytes:
        if out.startswith(b"SSTP_DUPLEX_POST"):
            units = [out]
        else:
            packets, rest, _ = split_sstp(out)
            units = packets + ([rest] if rest else [])
        result = []
        for unit in units:
            mutated = unit
            if self.seen == self.mutation.unit:
                mutated = self._apply(unit)
                self.applied = True
            self.seen += 1
            result.append(mutated)
        return b"".join(result)

    def _apply(self, unit: bytes) -> bytes:
        m = self.mutation
        pos = m.position % max(1, len(unit))
        match m.kind:
            case "flip":
                return unit[:pos] + bytes((unit[pos] ^ (m.payload[0] | 1),)) + unit[pos + 1:]
            case "truncate":
                return unit[:pos]
            case "insert":
                return unit[:pos] + m.payload + unit[pos:]
            case "duplicate":
                return unit * 2
            case "drop":
                return b""
            case "length" if len(unit) >= 4:
                return unit[:2] + struct.pack("!H", m.position & 0xFFFF) + unit[4:]
            case "type" if len(unit) >= 6:
                return unit[:4] + m.payload[:2].ljust(2, b"\x00") + unit[6:]
            case _:
                return unit + m.payload


def stream_problems(record: bytes) -> list[str]:
    """What is wrong with the daemon's side of a mutated session (MS-SSTP framing and messages)."""
    if not record:
        return []
    end = record.find(b"\r\n\r\n")
    head = record if end < 0 else record[:end]
    parts = head.split(b" ", 2)
    if len(parts) < 2 or parts[0] != b"HTTP/1.1" or not parts[1].isdigit():
        return [f"not an HTTP answer: {record[:60]!r}"]
    status = int(parts[1])
    if status not in (200, 400, 404, 501):
        return [f"HTTP status {status}"]
    if end < 0 or status != 200:
        return [] if status == 200 or len(record) == end + 4 else [f"bytes after a {status} answer"]
    packets, _, error = split_sstp(record[end + 4:])
    problems = [f"malformed SSTP framing from the daemon: {error}"] if error else []
    for packet in packets:
        if not packet[1] & 1:
            continue
        try:
            message = decode_control(packet)
        except ProtocolError as exc:
            problems.append(f"undecodable control packet {packet.hex()}: {exc}")
            continue
        kind = int(message.message_type)
        if kind not in SERVER_MESSAGE_TYPES:
            problems.append(f"server sent message type 0x{kind:04x}")
        if kind == 5 and message.attributes:
            value = message.attributes[0].value
            status_value = struct.unpack_from("!I", value, 4)[0] if len(value) >= 8 else -1
            if status_value not in ABORT_STATUSES:
                problems.append(f"Call Abort with status {status_value} (allowed: 4-9)")
    return problems


async def fuzz_one(mutation: Mutation, index: int) -> list[str]:
    conn = await open_conn(tls=True)
    mutator = Mutator(mutation)
    # A mutated session may well not come up; what the daemon said is checked below.
    with contextlib.suppress(StageError):
        await drive(conn, "atk", "atk-pw", "end" if index % 2 else "up", 4.0, mutate=mutator)
    # Drain what is already on its way so the check sees whole packets.
    while await conn.recv(0.3) not in (None, b""):
        pass
    await conn.close()
    return [f"{mutation}: {problem}" for problem in stream_problems(bytes(conn.record))]


def run_property_layer(loop: asyncio.AbstractEventLoop, probe: DaemonProbe, control: Dialer,
                       examples: int) -> dict[str, Any]:
    """Hypothesis in this worker thread; every example's sessions run on the main event loop."""
    mutation = st.builds(Mutation, unit=st.integers(0, 10), kind=st.sampled_from(MUTATIONS),
                         position=st.integers(0, 0xFFFF), payload=st.binary(min_size=1, max_size=48))
    report: dict[str, Any] = {"examples": 0, "sessions": 0, "failure": None, "problems": None,
                              "seconds": []}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(st.lists(mutation, min_size=6, max_size=6))
    def mutated_sessions_stay_harmless(mutations: list[Mutation]) -> None:
        async def batch() -> tuple[list[str], int]:
            began = loop.time()
            results = await asyncio.gather(*(fuzz_one(m, i) for i, m in enumerate(mutations)))
            pinged = loop.time()
            replies = await control.ping(count=1, timeout=3.0)
            report["seconds"].append(round(pinged - began, 2))  # per example, for the record
            return [p for r in results for p in r], replies

        problems, replies = asyncio.run_coroutine_threadsafe(batch(), loop).result(60)
        report["examples"] += 1
        report["sessions"] += len(mutations)
        if not probe.alive():
            problems.append("the daemon died")
        if replies < 1:  # the batch pinger runs beside this one and its replies count too
            problems.append("the control session's ping went unanswered")
        if problems and report["problems"] is None:
            report["problems"] = problems  # Hypothesis re-runs a failure; keep what the first run saw
        assert not problems, problems

    try:
        mutated_sessions_stay_harmless()
    except Exception as error:  # reported, asserted by the test
        report["failure"] = f"{type(error).__name__}: {error}"[:4000]
    return report


# ---- batches -------------------------------------------------------------------------------


@dataclass
class Pinger:
    control: Dialer
    sent: int = 0
    answered: int = 0
    task: asyncio.Task[None] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _run(self) -> None:
        while not self.stop.is_set():
            self.sent += 1
            self.answered += await self.control.ping(count=1, timeout=3.0)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.5)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def finish(self) -> tuple[int, int]:
        self.stop.set()
        if self.task is not None:
            await self.task
        return self.sent, self.answered


async def settle(probe: DaemonProbe, fds: int, sessions: int, timeout: float = 15.0) -> dict[str, Any]:
    """Wait for the daemon to let go of everything the batch made; returns what it holds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        alive = probe.alive()
        now_fds = probe.fds() if alive else -1
        now_sessions = await probe.sessions() if alive else -1
        if not alive or (now_fds == fds and now_sessions == sessions) or loop.time() > end:
            return {"alive": alive, "fds": now_fds, "sessions": now_sessions,
                    "rss_kb": probe.rss_kb() if alive else -1}
        await asyncio.sleep(0.25)


async def run_batch(cases: list[Case], probe: DaemonProbe, control: Dialer) -> dict[str, Any]:
    pinger = Pinger(control)
    pinger.start()
    results = await asyncio.gather(*(run_case(c, control.address) for c in cases))
    sent, answered = await pinger.finish()
    final_ping = await control.ping(count=3, timeout=3.0)
    return {"results": dict(zip((c.name for c in cases), results, strict=True)),
            "pings": [sent + 3, answered + final_ping], "control_up": not control.ended.is_set()}


async def main(pid: int, stats: Path, examples: int, only: list[str]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    probe = DaemonProbe(pid, stats)
    control = Dialer(HOST, PORT, "ctl", "ctl-pw")
    await control.connect()
    await asyncio.wait_for(control.up.wait(), 15)
    assert await control.ping(count=3) == 3, "control session does not pass traffic"
    chosen = [BY_NAME[n] for n in only] if only else CASES
    short = [c for c in chosen if not c.long]
    long = [c for c in chosen if c.long]
    random.Random(66).shuffle(short)  # every batch mixes families and stages
    start = await settle(probe, probe.fds(), 1, timeout=1)
    output: dict[str, Any] = {"start": start, "cases": {}, "batches": [],
                              "control_address": str(control.address)}
    baseline_rss: int | None = None
    batches = [short[i:i + BATCH] for i in range(0, len(short), BATCH)]
    for number, batch in enumerate(batches):
        began = time.monotonic()
        summary = await run_batch(batch, probe, control)
        after = await settle(probe, start["fds"], 1)
        if baseline_rss is None:
            baseline_rss = after["rss_kb"]  # the first batch warms the allocator up
        record = {"number": number, "seconds": round(time.monotonic() - began, 1), "pings": summary["pings"],
                  "control_up": summary["control_up"], "after": after, "baseline_rss_kb": baseline_rss}
        output["batches"].append(record)
        for name, result in summary["results"].items():
            output["cases"][name] = {**result, "batch": number}
    # Last: the minute-long cases, beside the property layer.
    began = time.monotonic()
    pinger = Pinger(control)
    pinger.start()
    long_task = asyncio.gather(*(run_case(c, control.address) for c in long))
    fuzz = await asyncio.to_thread(run_property_layer, loop, probe, control, examples) if examples else {}
    long_results = await long_task
    sent, answered = await pinger.finish()
    final_ping = await control.ping(count=3, timeout=3.0)
    after = await settle(probe, start["fds"], 1)
    number = len(batches)
    output["batches"].append({"number": number, "seconds": round(time.monotonic() - began, 1),
                              "pings": [sent + 3, answered + final_ping],
                              "control_up": not control.ended.is_set(),
                              "after": after, "baseline_rss_kb": baseline_rss or start["rss_kb"]})
    for case, result in zip(long, long_results, strict=True):
        output["cases"][case.name] = {**result, "batch": number}
    output["fuzz"] = fuzz
    await control.hang_up()
    await asyncio.sleep(1.0)
    output["end"] = await settle(probe, start["fds"] - 2, 0, timeout=8)  # its socket and TUN are gone
    output["rss_tolerance_kb"] = RSS_TOLERANCE_KB
    return output


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--stats", type=Path, required=True)
    parser.add_argument("--examples", type=int, default=10)
    parser.add_argument("--only", nargs="*", default=[])
    arguments = parser.parse_args()
    result = asyncio.run(main(arguments.pid, arguments.stats, arguments.examples, arguments.only))
    print(json.dumps(result, default=str))
    sys.stdout.flush()
