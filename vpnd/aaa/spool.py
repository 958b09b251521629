"""Durable spool of accounting records that the RADIUS servers have not acknowledged yet.

Layout of the spool directory (``Paths.state_dir / "acct-spool"``):

* ``NNNNNNNNNNNN.seg`` — append-only segment files of records. Each record is framed as
  ``<u32 length><u32 crc32(payload)><payload>``; the payload is compact JSON. A torn or corrupt
  record (short read, bad length, bad checksum) ends the readable part of its segment; at the tail
  of the newest segment it is cut off so that later appends follow good data.
* ``NNNNNNNNNNNN.ack`` — the acknowledged sequence numbers of that segment, 12 bytes each
  (``<u64 seq><u32 crc32>``). When every record of a segment is acknowledged, both files go.
* ``sessions.log`` — a journal of the sessions that are open (Start recorded, no Stop yet), with
  the attributes a Stop needs and the last known progress. After a crash it tells which sessions
  need a Stop (NAS-Reboot) even when their Start left the spool long ago. It is rewritten
  (atomically) when dead entries dominate.

Writes are staged and made durable together by :meth:`Spool.commit`, one fsync per touched file,
so several events that arrive together share the cost (group commit). A record counts as recorded
only once ``commit`` returned.

Sequence numbers order everything: records of one session are delivered in sequence order, and a
NAS-wide record (Accounting-On/Off, empty session key) is a barrier: it goes alone, after every
older record, and nothing younger goes before it.

Bounds: above ``interim_reserve`` of either bound new Interim-Updates are refused (an Interim is
superseded by the next one and by the Stop). A Start or Stop that meets a full spool evicts the
oldest pending Interim-Updates to make room; only when none is left is it refused. Every refusal
is counted by kind and logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from pathlib import Path

log = logging.getLogger("vpnd.accounting")

AttributeValue = str | int | bytes | IPv4Address | IPv6Address | IPv6Network
Attributes = tuple[tuple[str, AttributeValue], ...]

_FRAME = struct.Struct("<II")
_ACK = struct.Struct("<QI")
_MAX_PAYLOAD = 1 << 20  # a record is a few hundred bytes; a larger length is corruption
_SEGMENT_SUFFIX = ".seg"
_ACK_SUFFIX = ".ack"
_JOURNAL = "sessions.log"
NAS_KEY = ""  # session key of NAS-wide records (Accounting-On/Off)


class RecordKind(StrEnum):
    START = "start"
    INTERIM = "interim"
    STOP = "stop"
    ACCOUNTING_ON = "on"
    ACCOUNTING_OFF = "off"


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    seq: int
    session_key: str  # Acct-Session-Id; NAS_KEY for NAS-wide records
    kind: RecordKind
    created_at: float  # wall clock (time.time()) when the event happened: base of Acct-Delay-Time
    attributes: Attributes
    size: int = 0  # bytes on disk, frame included

    @property
    def is_nas_wide(self) -> bool:
        return self.session_key == NAS_KEY


@dataclass(frozen=True, slots=True)
class OpenSession:
    """What the journal knows of a session that has a Start and no Stop yet."""

    session_key: str
    started_at: float
    attributes: Attributes  # the Start's attributes
    progress: Attributes = ()  # counters and session time of the last Interim-Update
    progress_at: float | None = None


@dataclass(frozen=True, slots=True)
class SpoolStats:
    records: int
    bytes: int
    oldest_age: float | None  # seconds since the oldest pending record was created
    segments: int
    disk_bytes: int
    refused: dict[str, int]  # by record kind
    evicted_interims: int
    torn_records: int  # torn/corrupt records skipped while loading


@dataclass(slots=True)
class _Segment:
    number: int
    path: Path
    ack_path: Path
    size: int = 0
    unacked: set[int] = field(default_factory=set)
    fd: int | None = None
    ack_fd: int | None = None


def _frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _unframe(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield (end offset, payload) for each intact record; stop at the first damaged one."""
    offset = 0
    while offset + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, offset)
        start = offset + _FRAME.size
        if length > _MAX_PAYLOAD or start + length > len(data):
            return
        payload = data[start:start + length]
        if zlib.crc32(payload) != crc:
            return
        offset = start + length
        yield offset, payload


def _encode_value(value: AttributeValue) -> list[object]:
    # bool is an int subclass; attributes never carry one, so no special case is needed.
    if isinstance(value, int):
        return ["i", value]
    if isinstance(value, str):
        return ["s", value]
    if isinstance(value, bytes):
        return ["b", value.hex()]
    if isinstance(value, IPv4Address):
        return ["4", str(value)]
    if isinstance(value, IPv6Address):
        return ["6", str(value)]
    return ["p", str(value)]


def _decode_value(tag: str, raw: object) -> AttributeValue:
    if tag == "i" and isinstance(raw, int):
        return raw
    if not isinstance(raw, str):
        raise ValueError(f"bad attribute value {raw!r}")
    decoders: dict[str, Callable[[str], AttributeValue]] = {
        "s": str, "b": bytes.fromhex, "4": IPv4Address, "6": IPv6Address, "p": IPv6Network,
    }
    return decoders[tag](raw)


def encode_attributes(attributes: Iterable[tuple[str, AttributeValue]]) -> list[list[object]]:
    return [[name, *_encode_value(value)] for name, value in attributes]


def decode_attributes(raw: object) -> Attributes:
    if not isinstance(raw, list):
        raise ValueError("attributes are not a list")
    out: list[tuple[str, AttributeValue]] = []
    for item in raw:
        if not isinstance(item, list) or len(item) != 3 or not isinstance(item[0], str):
            raise ValueError(f"bad attribute {item!r}")
        out.append((item[0], _decode_value(str(item[1]), item[2])))
    return tuple(out)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Pending accounting records on disk; see the module docstring for the format and rules."""

    def __init__(
        self,
        directory: Path,
        *,
        max_records: int = 100_000,
        max_bytes: int = 64 << 20,
        segment_bytes: int = 4 << 20,
        interim_reserve: float = 0.9,
        journal_compact_bytes: int = 256 << 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.interim_reserve = interim_reserve
        self.journal_compact_bytes = journal_compact_bytes
        self._clock = clock
        self._segments: dict[int, _Segment] = {}
        self._active: _Segment | None = None
        self._pending: dict[int, SpoolRecord] = {}  # seq -> record, insertion (= seq) order
        self._queues: dict[str, deque[SpoolRecord]] = {}
        self._segment_of: dict[int, int] = {}  # seq -> segment number
        self._pending_bytes = 0
        self._next_seq = 1
        self._staged: list[tuple[SpoolRecord, bytes]] = []
        self._staged_bytes = 0
        self._staged_acks: list[int] = []
        self._staged_journal: list[bytes] = []
        self._open: dict[str, OpenSession] = {}
        self._journal_fd: int | None = None
        self._journal_bytes = 0
        self._journal_limit = journal_compact_bytes
        self._refused: dict[str, int] = {kind.value: 0 for kind in RecordKind}
        self._evicted = 0
        self._torn = 0
        self._load()

    # --- loading -------------------------------------------------------------------------------

    def _load(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        numbers = sorted(
            int(path.stem) for path in self.directory.glob(f"*{_SEGMENT_SUFFIX}") if path.stem.isdigit()
        )
        stops_seen: set[str] = set()
        starts_seen: dict[str, SpoolRecord] = {}
        for index, number in enumerate(numbers):
            segment = self._segment_paths(number)
            records, good_length, damaged = self._read_segment(segment.path)
            if damaged:
                self._torn += 1
                if index == len(numbers) - 1:
                    log.warning("accounting spool: torn record at %s:%d cut off",
                                segment.path.name, good_length)
                    with open(segment.path, "r+b") as handle:
                        handle.truncate(good_length)
                        os.fsync(handle.fileno())
                else:
                    log.error("accounting spool: corrupt record in %s after byte %d; rest of segment lost",
                              segment.path.name, good_length)
            segment.size = good_length
            acked = self._read_acks(segment.ack_path)
            for record in records:
                self._next_seq = max(self._next_seq, record.seq + 1)
                if record.kind is RecordKind.STOP:
                    stops_seen.add(record.session_key)
                    starts_seen.pop(record.session_key, None)
                elif record.kind is RecordKind.START:
                    starts_seen[record.session_key] = record
                if record.seq in acked:
                    continue
                segment.unacked.add(record.seq)
                self._add_pending(record, number)
            self._segments[number] = segment
        for path in self.directory.glob(f"*{_ACK_SUFFIX}"):
            if not path.stem.isdigit() or int(path.stem) not in self._segments:
                path.unlink()
        self._load_journal()
        # A Start written without its journal entry (crash between the two) still opens a session;
        # a Stop in a segment closes one whose journal close was lost.
        for key, record in starts_seen.items():
            self._open.setdefault(key, OpenSession(key, record.created_at, record.attributes))
        for key in stops_seen:
            self._open.pop(key, None)
        for number in list(self._segments):
            if not self._segments[number].unacked:
                self._delete_segment(self._segments[number])
        if self._segments:
            last = self._segments[max(self._segments)]
            if last.size < self.segment_bytes:
                self._active = last
        if self._pending:
            log.info("accounting spool: %d records pending from before", len(self._pending))

    def _segment_paths(self, number: int) -> _Segment:
        stem = f"{number:012d}"
        return _Segment(
            number, self.directory / f"{stem}{_SEGMENT_SUFFIX}", self.directory / f"{stem}{_ACK_SUFFIX}",
        )

    def _read_segment(self, path: Path) -> tuple[list[SpoolRecord], int, bool]:
        data = path.read_bytes()
        records: list[SpoolRecord] = []
        good = 0
        for end, payload in _unframe(data):
            try:
                records.append(self._decode_record(payload, end - good))
            except (ValueError, KeyError, TypeError) as error:
                log.error("accounting spool: undecodable record in %s: %s", path.name, error)
                return records, good, True
            good = end
        return records, good, good != len(data)

    @staticmethod
    def _decode_record(payload: bytes, size: int) -> SpoolRecord:
        raw = json.loads(payload)
        return SpoolRecord(
            seq=int(raw["seq"]), session_key=str(raw["key"]), kind=RecordKind(raw["kind"]),
            created_at=float(raw["t"]), attributes=decode_attributes(raw["a"]), size=size,
        )

    @staticmethod
    def _read_acks(path: Path) -> set[int]:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return set()
        acked: set[int] = set()
        for offset in range(0, len(data) - _ACK.size + 1, _ACK.size):
            seq, crc = _ACK.unpack_from(data, offset)
            if zlib.crc32(data[offset:offset + 8]) == crc:
                acked.add(seq)
        return acked

    def _load_journal(self) -> None:
        path = self.directory / _JOURNAL
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        good = 0
        for end, payload in _unframe(data):
            try:
                self._apply_journal(json.loads(payload))
            except (ValueError, KeyError, TypeError) as error:
                log.error("accounting spool: undecodable journal entry: %s", error)
                break
            good = end
        if good != len(data):
            self._torn += 1
            log.warning("accounting spool: torn journal entry at byte %d cut off", good)
        # Rewrite at once: drops dead entries and any torn tail in one atomic step.
        self._rewrite_journal()

    def _apply_journal(self, entry: dict[str, object]) -> None:
        key = str(entry["key"])
        op = entry["op"]
        when = entry["t"]
        if not isinstance(when, int | float):
            raise ValueError(f"bad journal time {when!r}")
        if op == "open":
            self._open[key] = OpenSession(key, float(when), decode_attributes(entry["a"]))
        elif op == "progress" and key in self._open:
            opened = self._open[key]
            self._open[key] = OpenSession(
                key, opened.started_at, opened.attributes, decode_attributes(entry["a"]), float(when),
            )
        elif op == "close":
            self._open.pop(key, None)

    # --- appending -----------------------------------------------------------------------------

    def stage(
        self,
        kind: RecordKind,
        session_key: str,
        attributes: Iterable[tuple[str, AttributeValue]],
        *,
        created_at: float | None = None,
    ) -> SpoolRecord | None:
        """Queue a record for the next :meth:`commit`; None when the spool refused it (bounds)."""
        when = self._clock() if created_at is None else created_at
        attrs = tuple(attributes)
        seq = self._next_seq
        payload = json.dumps(
            {"seq": seq, "key": session_key, "kind": kind.value, "t": when, "a": encode_attributes(attrs)},
            separators=(",", ":"),
        ).encode()
        frame = _frame(payload)
        if not self._make_room(kind, len(frame)):
            self._refused[kind.value] += 1
            log.warning("accounting spool full (%d records, %d bytes): %s of session %r refused",
                        self.pending_count, self.pending_bytes, kind.value, session_key)
            return None
        self._next_seq += 1
        record = SpoolRecord(seq, session_key, kind, when, attrs, len(frame))
        self._staged.append((record, frame))
        self._staged_bytes += record.size
        if kind is RecordKind.START:
            self._journal(session_key, "open", when, attrs)
        elif kind is RecordKind.INTERIM:
            self._journal(session_key, "progress", when, attrs)
        elif kind is RecordKind.STOP:
            self._journal(session_key, "close", when, ())
        return record

    def _make_room(self, kind: RecordKind, size: int) -> bool:
        def over(limit_fraction: float) -> bool:
            records = self.pending_count + 1
            total = self.pending_bytes + size
            return records > self.max_records * limit_fraction or total > self.max_bytes * limit_fraction

        if kind is RecordKind.INTERIM:
            return not over(self.interim_reserve)
        while over(1.0):
            victim = next((r for r in self._pending.values() if r.kind is RecordKind.INTERIM), None)
            if victim is None:
                return False
            self._evicted += 1
            log.warning("accounting spool full: pending Interim-Update %d of session %r dropped for a %s",
                        victim.seq, victim.session_key, kind.value)
            self.ack(victim.seq)
        return True

    def _journal(self, key: str, op: str, when: float, attributes: Attributes) -> None:
        entry = {"op": op, "key": key, "t": when, "a": encode_attributes(attributes)}
        self._staged_journal.append(_frame(json.dumps(entry, separators=(",", ":")).encode()))
        self._apply_journal(entry)

    def append(
        self, kind: RecordKind, session_key: str, attributes: Iterable[tuple[str, AttributeValue]],
        *, created_at: float | None = None,
    ) -> SpoolRecord | None:
        """Stage and commit one record."""
        record = self.stage(kind, session_key, attributes, created_at=created_at)
        self.commit()
        return record

    def ack(self, seq: int) -> None:
        """Mark a record delivered: it leaves the pending set now, durably at the next
        :meth:`commit` (a crash before that sends it again: a duplicate, never a loss)."""
        record = self._pending.get(seq)
        if record is not None:
            self._staged_acks.append(seq)
            self._forget(record)

    def commit(self) -> None:
        """Write what was staged and fsync each touched file once."""
        to_sync: list[int] = []
        if self._staged:
            self._write_records(to_sync)
        if self._staged_journal:
            fd = self._journal_handle()
            data = b"".join(self._staged_journal)
            _write_all(fd, data)
            self._journal_bytes += len(data)
            self._staged_journal.clear()
            to_sync.append(fd)
        emptied: list[_Segment] = []
        if self._staged_acks:
            by_segment: dict[int, list[int]] = {}
            for seq in dict.fromkeys(self._staged_acks):
                number = self._segment_of.pop(seq, None)
                if number is not None:
                    by_segment.setdefault(number, []).append(seq)
            self._staged_acks.clear()
            for number, seqs in by_segment.items():
                segment = self._segments[number]
                if segment.ack_fd is None:
                    segment.ack_fd = os.open(segment.ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                _write_all(segment.ack_fd, b"".join(
                    _ACK.pack(seq, zlib.crc32(struct.pack("<Q", seq))) for seq in seqs
                ))
                to_sync.append(segment.ack_fd)
                segment.unacked.difference_update(seqs)
                if not segment.unacked:
                    emptied.append(segment)
        for fd in dict.fromkeys(to_sync):
            os.fsync(fd)
        for segment in emptied:
            self._delete_segment(segment)
        if self._journal_needs_rewrite():
            self._rewrite_journal()  # fsyncs the directory too
        elif emptied:
            _fsync_dir(self.directory)

    def _write_records(self, to_sync: list[int]) -> None:
        new_files = False
        batch: list[tuple[SpoolRecord, bytes]] = []
        for record, frame in self._staged:
            active = self._active
            if active is None or (active.size and active.size + record.size > self.segment_bytes):
                if batch:
                    self._flush_batch(batch, to_sync)
                    batch = []
                self._roll()
                new_files = True
            batch.append((record, frame))
            assert self._active is not None
            self._active.size += record.size
        self._flush_batch(batch, to_sync)
        for record, _ in self._staged:
            self._add_pending(record, self._segment_of[record.seq])
        self._staged.clear()
        self._staged_bytes = 0
        if new_files:
            _fsync_dir(self.directory)

    def _flush_batch(self, batch: list[tuple[SpoolRecord, bytes]], to_sync: list[int]) -> None:
        segment = self._active
        assert segment is not None
        if segment.fd is None:
            segment.fd = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _write_all(segment.fd, b"".join(frame for _, frame in batch))
        for record, _ in batch:
            segment.unacked.add(record.seq)
            self._segment_of[record.seq] = segment.number
        to_sync.append(segment.fd)

    def _roll(self) -> None:
        previous = self._active
        number = max(self._segments, default=0) + 1
        segment = self._segment_paths(number)
        self._segments[number] = segment
        self._active = segment
        if previous is not None:
            self._close_segment(previous)
            if not previous.unacked:
                self._delete_segment(previous)

    def _add_pending(self, record: SpoolRecord, segment_number: int) -> None:
        self._pending[record.seq] = record
        self._segment_of[record.seq] = segment_number  # kept until the ack is written
        self._queues.setdefault(record.session_key, deque()).append(record)
        self._pending_bytes += record.size

    def _forget(self, record: SpoolRecord) -> None:
        if self._pending.pop(record.seq, None) is None:
            return
        self._pending_bytes -= record.size
        queue = self._queues[record.session_key]
        if queue[0].seq == record.seq:
            queue.popleft()
        else:
            queue.remove(record)
        if not queue:
            del self._queues[record.session_key]

    def _close_segment(self, segment: _Segment) -> None:
        for attr in ("fd", "ack_fd"):
            fd = getattr(segment, attr)
            if fd is not None:
                os.close(fd)
                setattr(segment, attr, None)

    def _delete_segment(self, segment: _Segment) -> None:
        self._close_segment(segment)
        # Records first: a crash in between leaves an orphan ack file, removed at the next load.
        for path in (segment.path, segment.ack_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._segments.pop(segment.number, None)
        if self._active is segment:
            self._active = None

    # --- journal -------------------------------------------------------------------------------

    def _journal_handle(self) -> int:
        if self._journal_fd is None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
            self._journal_fd = os.open(self.directory / _JOURNAL, flags, 0o600)
        return self._journal_fd

    def _journal_needs_rewrite(self) -> bool:
        # Rewriting costs the live size; waiting until the file is 4x what the last rewrite left
        # keeps that cost proportional to what was appended.
        return self._journal_bytes > self._journal_limit

    def _journal_snapshot(self) -> list[bytes]:
        entries: list[bytes] = []
        for session in self._open.values():
            opened = {"op": "open", "key": session.session_key, "t": session.started_at,
                      "a": encode_attributes(session.attributes)}
            entries.append(_frame(json.dumps(opened, separators=(",", ":")).encode()))
            if session.progress_at is not None:
                progress = {"op": "progress", "key": session.session_key, "t": session.progress_at,
                            "a": encode_attributes(session.progress)}
                entries.append(_frame(json.dumps(progress, separators=(",", ":")).encode()))
        return entries

    def _rewrite_journal(self) -> None:
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None
        data = b"".join(self._journal_snapshot())
        path = self.directory / _JOURNAL
        temp = self.directory / f".{_JOURNAL}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
        _fsync_dir(self.directory)
        self._journal_bytes = len(data)
        self._journal_limit = max(self.journal_compact_bytes, 4 * len(data))

    # --- reading -------------------------------------------------------------------------------

    @property
    def pending_count(self) -> int:
        return len(self._pending) + len(self._staged)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes + self._staged_bytes

    def pending(self) -> list[SpoolRecord]:
        """Committed, unacknowledged records in sequence order."""
        return list(self._pending.values())

    def is_pending(self, seq: int) -> bool:
        """True while record ``seq`` is staged or committed and not acknowledged."""
        return seq in self._pending or any(record.seq == seq for record, _ in self._staged)

    def open_sessions(self) -> dict[str, OpenSession]:
        return dict(self._open)

    def deliverable(self, busy: Sequence[str] | set[str] = ()) -> list[SpoolRecord]:
        """Records that may be sent now, oldest first: the head of each session's queue whose
        session has nothing in flight (``busy``), up to the oldest pending NAS-wide record, which
        goes only alone, once everything older was acknowledged."""
        heads = sorted((queue[0] for queue in self._queues.values()), key=lambda record: record.seq)
        barrier = self._queues.get(NAS_KEY)
        out: list[SpoolRecord] = []
        for record in heads:
            if barrier is not None and record.seq > barrier[0].seq:
                break
            if record.is_nas_wide:
                if not out and not busy:
                    out.append(record)
                break
            if record.session_key not in busy:
                out.append(record)
        return out

    def stats(self) -> SpoolStats:
        oldest = next(iter(self._pending.values()), None)
        return SpoolStats(
            records=self.pending_count,
            bytes=self.pending_bytes,
            oldest_age=None if oldest is None else max(0.0, self._clock() - oldest.created_at),
            segments=len(self._segments),
            disk_bytes=sum(segment.size for segment in self._segments.values()),
            refused=dict(self._refused),
            evicted_interims=self._evicted,
            torn_records=self._torn,
        )

    def close(self) -> None:
        """Commit what is staged and release the file descriptors."""
        self.commit()
        for segment in self._segments.values():
            self._close_segment(segment)
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None
