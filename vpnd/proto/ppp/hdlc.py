"""Async-HDLC-like framing for PPP on byte streams (RFC 1662 §3, §4 and appendix C).

SSTP itself carries PPP frames unframed; this is for byte-stream peers that speak PPP the way
pppd does on a pty (sstpc with ``--nolaunchpppd``). A frame on the wire is

    7E | escaped(frame ‖ FCS-16, least significant byte first) | 7E

where 0x7E, 0x7D and every control character flagged in the ACCM are sent as 0x7D followed by
the byte XOR 0x20. One flag may end a frame and start the next.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = [
    "DEFAULT_ACCM",
    "FCS_GOOD",
    "FCS_INIT",
    "FLAG",
    "HdlcDecoder",
    "encode_hdlc",
    "fcs16",
]

FLAG = 0x7E
ESCAPE = 0x7D
ESCAPE_XOR = 0x20
DEFAULT_ACCM = 0xFFFFFFFF  # every control character escaped until LCP says otherwise
FCS_INIT = 0xFFFF
FCS_GOOD = 0xF0B8  # the FCS computed over data plus its own (complemented) FCS
FCS_LENGTH = 2
MIN_FRAME = 4  # RFC 1662 §4.3: shorter frames (FCS included) are silently discarded
DEFAULT_MAX_FRAME = 4096  # unescaped frame bytes, FCS excluded


def _fcs_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        value = byte
        for _ in range(8):
            value = (value >> 1) ^ 0x8408 if value & 1 else value >> 1
        table.append(value)
    return tuple(table)


_FCS_TABLE = _fcs_table()


def fcs16(data: bytes | bytearray | memoryview, fcs: int = FCS_INIT) -> int:
    """RFC 1662 FCS-16 (CRC-CCITT, reflected, x^16 + x^12 + x^5 + 1), not complemented."""
    table = _FCS_TABLE
    for byte in bytes(data):
        fcs = (fcs >> 8) ^ table[(fcs ^ byte) & 0xFF]
    return fcs


@lru_cache(maxsize=8)
def _escape_table(accm: int) -> tuple[bytes, ...]:
    def needs_escape(byte: int) -> bool:
        return byte in (FLAG, ESCAPE) or (byte < 0x20 and bool(accm >> byte & 1))

    return tuple(
        bytes((ESCAPE, byte ^ ESCAPE_XOR)) if needs_escape(byte) else bytes((byte,)) for byte in range(256)
    )


def encode_hdlc(frame: bytes | bytearray | memoryview, accm: int = DEFAULT_ACCM) -> bytes:
    """One frame with opening and closing flags; ``accm`` is the peer's receive ACCM."""
    if not 0 <= accm <= 0xFFFFFFFF:
        raise ValueError(f"ACCM {accm!r} is not a 32-bit map")
    data = bytes(frame)
    fcs = fcs16(data) ^ 0xFFFF
    table = _escape_table(accm)
    body = b"".join([table[byte] for byte in data + fcs.to_bytes(2, "little")])
    return b"\x7e" + body + b"\x7e"


class HdlcDecoder:
    """Splits a byte stream into PPP frames (FCS checked and removed).

    Bad input never raises: frames with a bad FCS, runts, aborted frames (7D 7E) and frames
    longer than ``max_frame`` are dropped and counted. The buffer holds at most one frame's worth
    of escaped bytes; past that the decoder discards until the next flag.
    ``receive_accm``: control characters we asked the peer to escape, so a raw one was inserted
    by the line and is deleted (RFC 1662 §7.1). 0 keeps them all.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, receive_accm: int = 0) -> None:
        if max_frame < MIN_FRAME:
            raise ValueError(f"max_frame must be at least {MIN_FRAME}")
        self.max_frame = max_frame
        self._max_raw = 2 * (max_frame + FCS_LENGTH)  # everything escaped, worst case
        self._delete = bytes(c for c in range(0x20) if receive_accm >> c & 1)
        self._buffer = bytearray()
        self._discarding = False
        self.frames = 0
        self.bad_fcs = 0
        self.oversized = 0
        self.aborted = 0
        self.runts = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Bytes from the stream → the frames they complete (without FCS)."""
        frames: list[bytes] = []
        chunk = bytes(data)
        start = 0
        while start <= len(chunk):
            flag = chunk.find(FLAG, start)
            end = len(chunk) if flag < 0 else flag
            if not self._discarding:
                self._buffer += chunk[start:end]
                if len(self._buffer) > self._max_raw:
                    self.oversized += 1
                    self._buffer.clear()
                    self._discarding = True
            if flag < 0:
                break
            if self._discarding:
                self._discarding = False
            else:
                frame = self._finish(bytes(self._buffer))
                if frame is not None:
                    frames.append(frame)
            self._buffer.clear()
            start = flag + 1
        return frames

    def _finish(self, raw: bytes) -> bytes | None:
        if not raw:
            return None  # back-to-back flags: inter-frame fill
        if self._delete:
            raw = raw.translate(None, self._delete)
        unescaped = _unescape(raw)
        if unescaped is None:
            self.aborted += 1
            return None
        if len(unescaped) < MIN_FRAME:
            self.runts += 1
            return None
        if len(unescaped) > self.max_frame + FCS_LENGTH:
            self.oversized += 1
            return None
        if fcs16(unescaped) != FCS_GOOD:
            self.bad_fcs += 1
            return None
        self.frames += 1
        return unescaped[:-FCS_LENGTH]


def _unescape(raw: bytes) -> bytes | None:
    """Undo the 7D escapes; None when the frame ends in 7D (the abort sequence 7D 7E)."""
    if ESCAPE not in raw:
        return raw
    out = bytearray()
    start = 0
    while True:
        index = raw.find(ESCAPE, start)
        if index < 0:
            out += raw[start:]
            return bytes(out)
        if index + 1 >= len(raw):
            return None
        out += raw[start:index]
        out.append(raw[index + 1] ^ ESCAPE_XOR)
        start = index + 2
