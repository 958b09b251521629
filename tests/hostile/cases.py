"""The hostile-input catalogue: what each case sends to a running daemon and what must come back.

A case names the stage its connection reaches honestly first (raw TCP, TLS, HTTP accepted, Connect
Ack received, authenticated with Call Connected withheld, fully up, or already tearing down), the
bytes it then sends, and what the daemon must answer. Expected bytes are written out here from
the layouts in MS-SSTP §2.2 (the project's protocol fact sheet §2.3), not taken from vpnd's
encoders, so the daemon's answers are checked against the spec rather than against itself.
`scenario.py` runs the cases; `test_hostile.py` asserts one test per case.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from tests.support.packets import icmp_echo

# ---- byte builders (MS-SSTP §2.2, RFC 1661) -------------------------------------------------------

SSTP_URI = "/sra_{BA195980-CD49-458b-9E23-C84EE0ADCD75}/"


def http_request(host: str = "vpn.test", extra: str = "", method: str = "SSTP_DUPLEX_POST",
                 uri: str = SSTP_URI, version: str = "HTTP/1.1") -> bytes:
    return (f"{method} {uri} {version}\r\nHost: {host}\r\nContent-Length: 18446744073709551615\r\n"
            f"SSTPCORRELATIONID: {{2F5A2C8E-0000-4000-8000-0123456789AB}}\r\n{extra}\r\n").encode("latin-1")


REQUEST = http_request()


def attribute(attr_id: int, value: bytes, length: int | None = None) -> bytes:
    return bytes((0, attr_id)) + struct.pack("!H", 4 + len(value) if length is None else length) + value


def status_info(attrib_id: int, status: int, value: bytes = b"") -> bytes:
    return attribute(2, b"\x00\x00\x00" + bytes((attrib_id,)) + struct.pack("!I", status) + value)


def control(message_type: int, attributes: list[bytes] | tuple[bytes, ...] = (), *, count: int | None = None,
            length: int | None = None, version: int = 0x10) -> bytes:
    announced = len(attributes) if count is None else count
    body = struct.pack("!HH", message_type, announced) + b"".join(attributes)
    return struct.pack("!BBH", version, 1, 4 + len(body) if length is None else length) + body


def data(ppp: bytes, length: int | None = None) -> bytes:
    return struct.pack("!BBH", 0x10, 0, 4 + len(ppp) if length is None else length) + ppp


def ppp(protocol: int, payload: bytes) -> bytes:
    return b"\xff\x03" + struct.pack("!H", protocol) + payload


def cp(code: int, ident: int, body: bytes = b"", length: int | None = None) -> bytes:
    """An LCP-style control packet (LCP, IPCP, CHAP...)."""
    return struct.pack("!BBH", code, ident, 4 + len(body) if length is None else length) + body


def option(kind: int, value: bytes, length: int | None = None) -> bytes:
    return bytes((kind, 2 + len(value) if length is None else length)) + value


LCP, IPCP, CHAP, PAP, IPV4 = 0xC021, 0x8021, 0xC223, 0xC023, 0x0021


def lcp(code: int, ident: int, body: bytes = b"", length: int | None = None) -> bytes:
    return data(ppp(LCP, cp(code, ident, body, length)))


CONNECT_REQUEST = bytes.fromhex("1001000e00010001 0001000600 01".replace(" ", ""))
CONNECT_ACK = control(2, [attribute(4, b"\x00\x00\x00\x03" + bytes(32))])
CONNECT_NAK = bytes.fromhex("100100160003000100 02000e000000010000000400 01".replace(" ", ""))
CALL_CONNECTED = control(4, [attribute(3, b"\x00\x00\x00\x02" + bytes(96))])
CALL_ABORT = control(5, [status_info(2, 7)])
CALL_DISCONNECT = bytes.fromhex("1001001400060001000200 0c0000000000000000".replace(" ", ""))
DISCONNECT_ACK = bytes.fromhex("1001000800070000")
ECHO_REQUEST = bytes.fromhex("1001000800080000")
ECHO_RESPONSE = bytes.fromhex("1001000800090000")
BARE_ABORT = bytes.fromhex("1001000800050000")


def abort(attrib_id: int, status: int) -> bytes:
    """The server's Call Abort: `10 01 00 14 | 00 05 00 01 | 00 02 00 0C | 00 00 00 | AttribID | Status`."""
    return bytes.fromhex("10010014000500010002000c000000") + bytes((attrib_id,)) + struct.pack("!I", status)


def nak(*infos: tuple[int, int, bytes]) -> bytes:
    """Call Connect NAK with one Status Info per problem (AttribValue = first 64 value bytes)."""
    return control(3, [status_info(a, s, v[:64]) for a, s, v in infos])


# Status values (MS-SSTP §2.2.9)
DUPLICATE, UNRECOGNIZED, BAD_LENGTH, VALUE_NOT_SUPPORTED = 1, 2, 3, 4
UNACCEPTED_FRAME, RETRY_COUNT_EXCEEDED, INVALID_FRAME, NOT_SUPPORTED_IN_MSG = 5, 6, 7, 9
REQUIRED_MISSING, STATUS_INFO_NOT_SUPPORTED = 0x0A, 0x0B
ABORT_UNEXPECTED = abort(2, UNACCEPTED_FRAME)
ABORT_INVALID = abort(2, INVALID_FRAME)

MESSAGES = {
    "connect-request": CONNECT_REQUEST, "connect-ack": CONNECT_ACK, "connect-nak": CONNECT_NAK,
    "call-connected": CALL_CONNECTED, "call-abort": CALL_ABORT, "call-disconnect": CALL_DISCONNECT,
    "disconnect-ack": DISCONNECT_ACK, "echo-request": ECHO_REQUEST, "echo-response": ECHO_RESPONSE,
}

# ---- what a case knows when it builds bytes, and what it saw ----------------------------------------


@dataclass
class Context:
    own: IPv4Address | None = None  # the attacker's tunnel address (stage "up")
    gateway: IPv4Address | None = None
    other: IPv4Address | None = None  # the control session's address
    nonce: bytes | None = None


@dataclass
class Reply:
    """What came back after the case's bytes went out."""

    raw: bytes = b""  # everything after the stage point
    closed: bool = False
    since_connect: float = 0.0  # when the connection ended (or the wait did), from TCP connect
    since_sent: float = 0.0  # ... from the last byte the case sent
    http_status: int | None = None
    control: list[bytes] = field(default_factory=list)  # SSTP control packets, in order
    frames: list[tuple[int, bytes]] = field(default_factory=list)  # PPP (protocol, information)
    framing_error: str | None = None
    tun_rx: int | None = None  # packets the daemon wrote into the attacker's TUN meanwhile
    auth_failure: str | None = None


Payload = bytes | Callable[[Context], bytes]
Check = Callable[[Reply, Context], str | None]


@dataclass(frozen=True)
class Step:
    payload: Payload
    delay: float = 0.0  # seconds to wait before sending
    chunk: int = 0  # > 0: trickle the payload this many bytes at a time...
    interval: float = 0.0  # ...this far apart
    forever: bool = False  # repeat the trickle until the daemon closes the connection


@dataclass(frozen=True)
class Expect:
    end: str = "close"  # "close": the daemon ends it in time; "open": still up at the end; "any"
    within: float = 5.0  # seconds after the last step (or, with close_between, after TCP connect)
    close_between: tuple[float, float] | None = None  # the close must come this long after connect
    silent: bool = False  # not one byte comes back
    http_status: int | None = None
    control: tuple[tuple[bytes, ...], ...] | None = None  # allowed exact control-packet sequences
    tls_alert_only: bool = False  # raw-TCP garbage: nothing, or TLS alert records only
    tun_rx: int | None = None  # exact number of packets that must reach the attacker's TUN
    auth_failed: bool = False
    check: Check | None = None


@dataclass(frozen=True)
class Case:
    name: str
    family: str
    stage: str  # tcp | tls | http | ack | authed | up | disc | aborted | dial
    steps: tuple[Step, ...]
    expect: Expect
    long: bool = False  # runs for about a minute (the daemon's 60 s timers)
    finding: str | None = None  # a known daemon bug: the test is xfail(strict=True) with this reason
    password: str = "atk-pw"
    username: str = "atk"


def exactly(*packets: bytes) -> tuple[tuple[bytes, ...], ...]:
    return (tuple(packets),)


def steps(*payloads: Payload) -> tuple[Step, ...]:
    return tuple(Step(p) for p in payloads)


# ---- checks over PPP frames ----------------------------------------------------------------------


def _packets(reply: Reply, protocol: int) -> list[tuple[int, int, bytes]]:
    found = []
    for proto, info in reply.frames:
        if proto == protocol and len(info) >= 4:
            code, ident, length = struct.unpack_from("!BBH", info)
            found.append((code, ident, info[4:length]))
    return found


def lcp_answer(ident: int, code: int) -> Check:
    def check(reply: Reply, ctx: Context) -> str | None:
        codes = [c for c, i, _ in _packets(reply, LCP) if i == ident]
        return None if code in codes else f"no LCP code {code} for id {ident} (saw {codes})"
    return check


def all_of(*checks: Check) -> Check:
    def check(reply: Reply, ctx: Context) -> str | None:
        for one in checks:
            problem = one(reply, ctx)
            if problem:
                return problem
        return None
    return check


def no_reply_to(protocol: int, ident: int) -> Check:
    def check(reply: Reply, ctx: Context) -> str | None:
        answered = [c for c, i, _ in _packets(reply, protocol) if i == ident and c in (2, 3, 4)]
        return f"malformed request id {ident} was answered with code {answered}" if answered else None
    return check


def at_most_replies(protocol: int, limit: int) -> Check:
    def check(reply: Reply, ctx: Context) -> str | None:
        count = len([c for c, _, _ in _packets(reply, protocol) if c in (2, 3, 4)])
        return None if count <= limit else f"{count} configure replies to at most {limit} requests"
    return check


def rejected_options(ident: int, kinds: set[int]) -> Check:
    def check(reply: Reply, ctx: Context) -> str | None:
        for code, i, body in _packets(reply, LCP):
            if i == ident and code == 4:
                seen, pos = set(), 0
                while pos + 2 <= len(body) and body[pos + 1] >= 2:
                    seen.add(body[pos])
                    pos += body[pos + 1]
                if seen != kinds:
                    return f"Configure-Reject lists {sorted(seen)}, not {sorted(kinds)}"
                return None
        return f"no Configure-Reject for id {ident}"
    return check


def nak_then_reject(ident_base: int, count: int) -> Check:
    def check(reply: Reply, ctx: Context) -> str | None:
        codes = [c for c, i, _ in _packets(reply, LCP)
                 if ident_base <= i < ident_base + count and c in (2, 3, 4)]
        if not codes or codes[0] != 3:
            return f"a too-small MRU must be Nak'd first (answers {codes})"
        if 4 not in codes:
            return f"after Max-Failure Naks the option must be rejected (answers {codes})"
        return None
    return check


def protocol_rejected(protocol: int) -> Check:
    def check(reply: Reply, ctx: Context) -> str | None:
        for code, _, body in _packets(reply, LCP):
            if code == 8 and body[:2] == struct.pack("!H", protocol):
                return None
        return f"no LCP Protocol-Reject for 0x{protocol:04x}"
    return check


def code_rejected(code_value: int) -> Check:
    def check(reply: Reply, ctx: Context) -> str | None:
        for code, _, body in _packets(reply, LCP):
            if code == 7 and body[:1] == bytes((code_value,)):
                return None
        return f"no LCP Code-Reject for code {code_value}"
    return check


def ipcp_naks_own_address(ident: int, ack: bool = False) -> Check:
    def check(reply: Reply, ctx: Context) -> str | None:
        assert ctx.own is not None
        for code, i, body in _packets(reply, IPCP):
            if i != ident or code not in (2, 3, 4):
                continue
            if ack:
                return None if code == 2 else f"own address answered with code {code}, not Ack"
            if code != 3:
                return f"IPCP answered code {code} instead of Nak"
            if option(3, ctx.own.packed) not in body:
                return f"the Nak does not offer the session's own address {ctx.own}: {body.hex()}"
            return None
        return f"no IPCP answer to id {ident}"
    return check


def echo_reply_to_own(reply: Reply, ctx: Context) -> str | None:
    for proto, info in reply.frames:
        if proto == IPV4 and len(info) >= 28 and info[9] == 1 and info[20] == 0 and ctx.own and \
                info[16:20] == ctx.own.packed:
            return None
    return "the legitimate echo request got no reply"


def connect_ack_shape(reply: Reply, ctx: Context) -> str | None:
    acks = [p for p in reply.control if p[4:6] == b"\x00\x02"]
    if not acks:
        return f"no Connect Ack (control: {[p.hex() for p in reply.control]})"
    ack = acks[0]
    head = bytes.fromhex("1001003000020001000400280000")
    if len(ack) != 48 or ack[:14] != head or ack[14] != 0 or ack[15] not in (1, 2, 3):
        return f"malformed Connect Ack {ack.hex()}"
    return None


# ---- the catalogue --------------------------------------------------------------------------------

CASES: list[Case] = []


def add(case: Case) -> None:
    assert all(c.name != case.name for c in CASES), case.name
    CASES.append(case)


CLOSE = Expect(end="close")
ANY_CLOSE = Expect(end="close", control=((),), within=4.0)


def _http_cases() -> None:
    uri = SSTP_URI
    lines = {
        "get-root": ("GET / HTTP/1.1", 404), "head-root": ("HEAD / HTTP/1.1", 404),
        "post-sstp-uri": (f"POST {uri} HTTP/1.1", 404), "get-sstp-uri": (f"GET {uri} HTTP/1.1", 404),
        "sstp-root-uri": ("SSTP_DUPLEX_POST / HTTP/1.1", 404),
        "sstp-wrong-guid": ("SSTP_DUPLEX_POST /sra_{BA195980-CD49-458b-9E23-C84EE0ADCD76}/ HTTP/1.1", 404),
        "put": ("PUT / HTTP/1.1", 501), "delete": (f"DELETE {uri} HTTP/1.1", 501),
        "connect": ("CONNECT vpn.test:443 HTTP/1.1", 501), "options-star": ("OPTIONS * HTTP/1.1", 501),
        "lowercase-method": (f"sstp_duplex_post {uri} HTTP/1.1", 501),
        "http2-version": (f"SSTP_DUPLEX_POST {uri} HTTP/2.0", 400),
        "http09-style": (f"SSTP_DUPLEX_POST {uri}", 400), "method-only": ("SSTP_DUPLEX_POST", 400),
        "four-tokens": (f"SSTP_DUPLEX_POST {uri} HTTP/1.1 extra", 400),
        "ftp-version": (f"SSTP_DUPLEX_POST {uri} FTP/1.0", 400),
        "lowercase-version": (f"SSTP_DUPLEX_POST {uri} http/1.1", 400),
        "nul-method": ("\x00\x00\x00 / HTTP/1.1", 400),
        "uri-as-method": (f"{uri} SSTP_DUPLEX_POST HTTP/1.1", 400),
        "non-ascii-uri": (f"SSTP_DUPLEX_POST {uri}\xe9 HTTP/1.1", 400),
        "control-chars": ("SSTP_DUPLEX_POST \x01\x02\x03 HTTP/1.1", 400),
    }
    for name, (line, status) in lines.items():
        payload = f"{line}\r\nHost: vpn.test\r\n\r\n".encode("latin-1")
        add(Case(f"request-line-{name}", "bad request line", "tls", steps(payload),
                 Expect(http_status=status, end="close")))
    headers = {
        "folded": ("X-A: 1\r\n folded\r\n", 400), "no-colon": ("NoColonHere\r\n", 400),
        "space-in-name": ("Bad Name: x\r\n", 400), "two-hosts": ("Host: other\r\n", 400),
        "conflicting-length": ("Content-Length: 12\r\n", 400),
        "empty-name": (": value\r\n", 400),
    }
    for name, (extra, status) in headers.items():
        add(Case(f"header-{name}", "bad request line", "tls", steps(http_request(extra=extra)),
                 Expect(http_status=status, end="close")))
    for name, value in (("negative", "-1"), ("hex", "0x10"), ("words", "lots")):
        payload = (f"SSTP_DUPLEX_POST {uri} HTTP/1.1\r\nHost: vpn.test\r\n"
                   f"Content-Length: {value}\r\n\r\n").encode()
        add(Case(f"content-length-{name}", "bad request line", "tls", steps(payload),
                 Expect(http_status=400, end="close")))
    # Huge header blocks: the daemon answers 400 without buffering past its limits.
    huge = {
        "line-5000": http_request(extra="X-Big: " + "a" * 5000 + "\r\n"),
        "uri-5000": f"SSTP_DUPLEX_POST /{'u' * 5000} HTTP/1.1\r\n\r\n".encode(),
        "head-10k-of-small-headers": http_request(extra="".join(f"X-H{i}: {'v' * 40}\r\n"
                                                                for i in range(220))),
        "one-mib-header": http_request(extra="X-Huge: " + "h" * (1 << 20) + "\r\n"),
        "no-newline-100k": b"SSTP_DUPLEX_POST " + b"A" * 100_000,
        "four-mib-garbage-line": b"G" * (4 << 20),
        "many-empty-header-values": http_request(extra="X-E:\r\n" * 2000),
    }
    for name, payload in huge.items():
        add(Case(f"huge-{name}", "huge header block", "tls", steps(payload),
                 Expect(http_status=400, end="close")))
    # Slow but complete: trickled requests still get their 200 and a working Connect Ack.
    paces = (("1-byte-20ms", 1, 0.02), ("3-bytes-50ms", 3, 0.05), ("7-bytes-100ms", 7, 0.1))
    for name, chunk, interval in paces:
        add(Case(f"slow-complete-{name}", "slowloris", "tls",
                 (Step(REQUEST, chunk=chunk, interval=interval), Step(CONNECT_REQUEST)),
                 Expect(http_status=200, end="open", within=1.5, check=connect_ack_shape)))
    add(Case("pipelined-request-and-connect-request", "slowloris", "tls", steps(REQUEST + CONNECT_REQUEST),
             Expect(http_status=200, end="open", within=1.5, check=connect_ack_shape)))
    # Slowloris proper: the head never completes; the daemon's 60 s HTTP deadline must end it.
    never = {
        "trickled-header-lines": (REQUEST[:-2] + b"".join(b"X-Slow-%d: a\r\n" % i for i in range(200)),
                                  13, 1.0),
        "one-byte-per-second": (REQUEST[:-2] + b"X-Drip: " + b"d" * 300, 1, 1.0),
        "request-line-crawl": (b"SSTP_DUPLEX_POST " + b"/" * 400, 2, 0.5),
    }
    for name, (payload, chunk, interval) in never.items():
        add(Case(f"slowloris-{name}", "slowloris", "tls",
                 (Step(payload, chunk=chunk, interval=interval, forever=True),),
                 Expect(end="close", close_between=(55.0, 72.0)), long=True))


def _transport_cases() -> None:
    rng = random.Random(6)
    garbage = {
        "plain-http": REQUEST, "sstp-without-tls": REQUEST + CONNECT_REQUEST,
        "random-1k": bytes(rng.getrandbits(8) for _ in range(1024)),
        "zeros-64k": bytes(65536), "record-length-65535": b"\x16\x03\x01\xff\xff" + bytes(64),
        "tiny-handshake-record": b"\x16\x03\x01\x00\x05hello",
        "sslv2-hello": b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10" + bytes.fromhex(
            "0100800300800700c0060040020080040080000039") + bytes(range(16)),
        "alert-first": bytes.fromhex("15030300020228"),
        "appdata-first": b"\x17\x03\x03\x00\x10" + bytes(16),
        "random-1m": bytes(rng.getrandbits(8) for _ in range(1 << 20)),
        "ccs-first": bytes.fromhex("140303000101"),
    }
    for name, payload in garbage.items():
        add(Case(f"not-tls-{name}", "garbage instead of TLS", "tcp", steps(payload),
                 Expect(end="close", tls_alert_only=True, within=5.0)))
    add(Case("idle-tcp", "TLS without HTTP", "tcp", (), Expect(end="close", close_between=(55.0, 72.0)),
             long=True))
    add(Case("idle-after-tls", "TLS without HTTP", "tls", (), Expect(end="close", silent=True,
                                                                     close_between=(55.0, 72.0)), long=True))
    add(Case("idle-half-handshake", "TLS without HTTP", "hello", (),
             Expect(end="close", close_between=(55.0, 72.0)), long=True))
    add(Case("idle-after-partial-request", "TLS without HTTP", "tls", steps(REQUEST[:40]),
             Expect(end="close", silent=True, close_between=(55.0, 72.0)), long=True))
    add(Case("idle-after-partial-sstp-packet", "SSTP length", "http", steps(b"\x10\x01\x0f\xff" + bytes(10)),
             Expect(end="close", close_between=(55.0, 72.0),
                    control=((), exactly(abort(2, 8))[0])), long=True))


def _framing_cases() -> None:
    framing = {
        "length-0": b"\x10\x01\x00\x00", "length-3": b"\x10\x01\x00\x03",
        "data-length-2": b"\x10\x00\x00\x02",
        "length-4096-masks-to-0": b"\x10\x01\x10\x00", "r-bits-only": b"\x10\x01\xf0\x00",
        "version-0x11": b"\x11" + CONNECT_REQUEST[1:], "version-0x00": b"\x00" + CONNECT_REQUEST[1:],
        "version-0x20": b"\x20" + CONNECT_REQUEST[1:], "version-0xff": b"\xff" * 14,
        "tls-record-inside": b"\x16\x03\x01\x00\x10" + bytes(16),
    }
    for name, payload in framing.items():
        add(Case(f"sstp-{name}", "SSTP length", "http", steps(payload), Expect(end="close", silent=True)))
    add(Case("sstp-length-short-by-6", "SSTP length", "http",
             steps(control(1, [], count=1) + CONNECT_REQUEST[8:]),
             Expect(end="close", control=((ABORT_INVALID,), ()))))
    add(Case("sstp-length-long-by-6", "SSTP length", "http", steps(CONNECT_REQUEST[:2] + b"\x00\x14" +
                                                                   CONNECT_REQUEST[4:] + bytes(6)),
             Expect(end="open", within=1.5, check=connect_ack_shape)))
    add(Case("sstp-r-bits-set", "SSTP length", "http", steps(b"\x10\x01\xf0\x0e" + CONNECT_REQUEST[4:]),
             Expect(end="open", within=1.5, check=connect_ack_shape)))
    add(Case("sstp-data-4095-before-connect", "SSTP length", "http",
             steps(data(ppp(IPV4, bytes(4087))), CONNECT_REQUEST),
             Expect(end="open", within=1.5, check=connect_ack_shape)))
    add(Case("sstp-1000-empty-data-packets", "SSTP length", "http", steps(data(b"") * 1000, CONNECT_REQUEST),
             Expect(end="open", within=1.5, check=connect_ack_shape)))
    add(Case("sstp-declared-4095-sent-14", "SSTP length", "http",
             steps(b"\x10\x01\x0f\xff" + CONNECT_REQUEST[4:]),
             Expect(end="open", within=1.5, silent=True)))
    add(Case("sstp-two-connect-requests", "SSTP length", "http", steps(CONNECT_REQUEST * 2),
             Expect(end="close", check=lambda r, c: connect_ack_shape(r, c) or (
                 None if r.control[1:] == [ABORT_UNEXPECTED] else f"second request: {r.control[1:]}"))))


# Per state: what each control message must get (None = the right message there, handled apart).
WRONG_STATE = {
    "http": {"connect-ack": ABORT_UNEXPECTED, "connect-nak": ABORT_UNEXPECTED,
             "call-connected": ABORT_UNEXPECTED,
             "disconnect-ack": ABORT_UNEXPECTED, "echo-request": ABORT_UNEXPECTED,
             "echo-response": ABORT_UNEXPECTED},
    "ack": {"connect-request": ABORT_UNEXPECTED, "connect-ack": ABORT_UNEXPECTED,
            "connect-nak": ABORT_UNEXPECTED, "disconnect-ack": ABORT_UNEXPECTED,
            "echo-request": ABORT_UNEXPECTED, "echo-response": ABORT_UNEXPECTED},
    "authed": {"connect-request": ABORT_UNEXPECTED, "connect-ack": ABORT_UNEXPECTED,
               "connect-nak": ABORT_UNEXPECTED, "call-connected": abort(3, VALUE_NOT_SUPPORTED),
               "disconnect-ack": ABORT_UNEXPECTED, "echo-request": ABORT_UNEXPECTED,
               "echo-response": ABORT_UNEXPECTED},
    "up": {"connect-request": ABORT_UNEXPECTED, "connect-ack": ABORT_UNEXPECTED,
           "connect-nak": ABORT_UNEXPECTED, "call-connected": ABORT_UNEXPECTED,
           "disconnect-ack": ABORT_UNEXPECTED},
}


def _state_cases() -> None:
    for stage, table in WRONG_STATE.items():
        for name, answer in table.items():
            add(Case(f"state-{stage}-{name}", "control message in wrong state", stage, steps(MESSAGES[name]),
                     Expect(end="close", control=exactly(answer), within=5.0)))
        # A peer's Abort is answered with Abort (T2), a Disconnect with Disconnect Ack, in any state.
        add(Case(f"state-{stage}-call-abort", "control message in wrong state", stage, steps(CALL_ABORT),
                 Expect(end="close", control=exactly(BARE_ABORT), within=3.0)))
        add(Case(f"state-{stage}-call-disconnect", "control message in wrong state", stage,
                 steps(CALL_DISCONNECT), Expect(end="close", control=exactly(DISCONNECT_ACK), within=3.0)))
    add(Case("state-http-connect-request", "control message in wrong state", "http", steps(CONNECT_REQUEST),
             Expect(end="open", within=1.5, check=connect_ack_shape)))
    # Call Connected before authentication is held for the HLAK; meanwhile echoes are answered.
    add(Case("state-ack-call-connected", "control message in wrong state", "ack",
             steps(CALL_CONNECTED, ECHO_REQUEST),
             Expect(end="open", within=1.5, control=exactly(ECHO_RESPONSE))))
    add(Case("state-up-echo-request", "control message in wrong state", "up", steps(ECHO_REQUEST),
             Expect(end="open", within=1.5, control=exactly(ECHO_RESPONSE))))
    add(Case("state-up-echo-response", "control message in wrong state", "up",
             steps(ECHO_RESPONSE, ECHO_REQUEST),
             Expect(end="open", within=1.5, control=exactly(ECHO_RESPONSE))))
    # In the teardown states (T4) everything is ignored until the daemon cleans up after T2.
    # (A Disconnect is answered with Disconnect Ack in any state, §3.2.4.2; ignoring it is allowed too.)
    for stage in ("disc", "aborted"):
        for name, message in MESSAGES.items():
            allowed = ((), (DISCONNECT_ACK,)) if name == "call-disconnect" else ((),)
            add(Case(f"state-{stage}-{name}", "control message in wrong state", stage, steps(message),
                     Expect(end="close", control=allowed, within=3.0)))


def _unknown_cases() -> None:
    for kind in (0x0000, 0x000A, 0x0010, 0x7FFF, 0xFFFF):
        for stage in ("http", "ack", "up"):
            add(Case(f"unknown-type-{kind:04x}-{stage}", "unknown message type", stage, steps(control(kind)),
                     Expect(end="close", control=exactly(ABORT_INVALID))))
        add(Case(f"unknown-type-{kind:04x}-disc", "unknown message type", "disc", steps(control(kind)),
                 Expect(end="close", control=((),), within=3.0)))
    proto = attribute(1, b"\x00\x01")
    naks = {
        "protocol-2": ([attribute(1, b"\x00\x02")], CONNECT_NAK[:-1] + b"\x02"),
        "protocol-value-1-byte": ([attribute(1, b"\x01")], nak((1, BAD_LENGTH, b"\x01"))),
        "protocol-value-4-bytes": ([attribute(1, b"\x00\x01\x00\x00")],
                                   nak((1, BAD_LENGTH, b"\x00\x01\x00\x00"))),
        "duplicate-protocol": ([proto, proto], nak((1, DUPLICATE, b"\x00\x01"))),
        "no-attributes": ([], nak((2, REQUIRED_MISSING, b""))),
        "unknown-attribute-7": ([proto, attribute(7, b"xyz")], nak((7, UNRECOGNIZED, b"xyz"))),
        "unknown-attribute-ff": ([attribute(0xFF, bytes(100)), proto], nak((0xFF, UNRECOGNIZED, bytes(64)))),
        "status-info-nonzero": ([proto, status_info(1, 4)],
                                nak((2, STATUS_INFO_NOT_SUPPORTED, bytes.fromhex("0000000100000004")))),
        "binding-request-attribute": ([proto, attribute(4, bytes(36))],
                                      nak((4, NOT_SUPPORTED_IN_MSG, bytes(36)))),
    }
    for name, (attributes, answer) in naks.items():
        add(Case(f"connect-request-{name}", "unknown attributes", "http", steps(control(1, attributes)),
                 Expect(end="open", within=1.5, control=exactly(answer))))
    bad = control(1, [attribute(1, b"\x00\x02")])
    add(Case("connect-request-nak-retry-limit", "unknown attributes", "http", steps(bad, bad, bad, bad),
             Expect(end="close", control=exactly(*[CONNECT_NAK[:-1] + b"\x02"] * 3,
                                                  abort(2, RETRY_COUNT_EXCEEDED)))))
    add(Case("connect-request-nak-then-good", "unknown attributes", "http", steps(bad, CONNECT_REQUEST),
             Expect(end="open", within=1.5, check=lambda r, c: connect_ack_shape(r, c) or (
                 None if r.control[0] == CONNECT_NAK[:-1] + b"\x02" else "first answer is not the NAK"))))
    lies = {
        "count-2-has-1": (control(1, [proto], count=2), "http", ABORT_INVALID),
        "count-ffff-has-1": (control(1, [proto], count=0xFFFF), "http", ABORT_INVALID),
        "attr-length-3": (control(1, [attribute(1, b"\x00\x01", length=3)]), "http", ABORT_INVALID),
        "attr-length-0": (control(1, [attribute(1, b"\x00\x01", length=0)]), "http", ABORT_INVALID),
        "attr-length-past-end": (control(1, [attribute(1, b"\x00\x01", length=0xFFF)]), "http",
                                 ABORT_INVALID),
        "message-header-cut": (b"\x10\x01\x00\x06\x00\x01", "http", ABORT_INVALID),
        "echo-count-1-no-attr": (control(8, [], count=1), "up", ABORT_INVALID),
        "abort-count-3-no-attr": (control(5, [], count=3), "up", ABORT_INVALID),
        "disconnect-attr-past-end": (control(6, [attribute(2, bytes(8), length=200)]), "up", ABORT_INVALID),
        "call-connected-short-binding": (control(4, [attribute(3, bytes(20))]), "ack",
                                         abort(2, NOT_SUPPORTED_IN_MSG)),
    }
    for name, (payload, stage, answer) in lies.items():
        add(Case(f"count-lie-{name}", "attribute counts that lie", stage, steps(payload),
                 Expect(end="close", control=exactly(answer))))
    add(Case("count-lie-count-0-has-1", "attribute counts that lie", "http",
             steps(control(1, [proto], count=0)),
             Expect(end="open", within=1.5, control=exactly(nak((2, REQUIRED_MISSING, b""))))))
    add(Case("count-lie-attr-length-r-bits", "attribute counts that lie", "http",
             steps(control(1, [attribute(1, b"\x00\x01", length=0xF006)])),
             Expect(end="open", within=1.5, check=connect_ack_shape)))
    add(Case("count-lie-echo-with-attribute", "attribute counts that lie", "up",
             steps(control(8, [attribute(9, b"junk")])),
             Expect(end="open", within=1.5, control=exactly(ECHO_RESPONSE))))


def _ppp_cases() -> None:
    probe = lcp(9, 0x5A, bytes(4))  # LCP Echo-Request: the link must still answer afterwards
    alive = lcp_answer(0x5A, 10)
    lying = {
        "lcp-length-ffff": lcp(1, 1, option(1, b"\x05\xdc"), length=0xFFFF),
        "lcp-length-2": lcp(1, 2, b"", length=2), "lcp-3-bytes": data(ppp(LCP, b"\x01\x03\x00")),
        "lcp-echo-no-magic": lcp(9, 3, b"", length=4),
        "ipcp-length-ffff": data(ppp(IPCP, cp(1, 4, b"", 0xFFFF))),
        "chap-length-ffff": data(ppp(CHAP, cp(2, 5, b"\x10" + bytes(16), 0xFFFF))),
        "pap-length-1": data(ppp(PAP, cp(1, 6, b"", 1))), "address-control-only": data(b"\xff\x03"),
        "one-byte-frame": data(b"\x21"), "even-protocol": data(ppp(0x0022, b"xx")),
        "ipv4-total-length-lies": data(ppp(IPV4, bytes.fromhex("4500ea6000000000400100000a4d00010a4dff01")
                                           + bytes(8))),
        "ipv4-one-byte": data(ppp(IPV4, b"\x45")),
        "ipv6-not-negotiated": data(ppp(0x0057, b"\x60" + bytes(47))),
        "empty-data-packet": data(b""), "ipv4-4087-garbage": data(ppp(IPV4, bytes(4087))),
        "option-length-past-end-in-opened": lcp(1, 7, option(5, bytes(4), length=40)),
    }
    for name, payload in lying.items():
        add(Case(f"ppp-{name}", "PPP frames with lying lengths", "up", steps(payload, probe),
                 Expect(end="open", within=1.5, control=((),), check=alive)))
    add(Case("ppp-unknown-data-protocol", "PPP frames with lying lengths", "up",
             steps(data(ppp(0x0231, b"abc"))),
             Expect(end="open", within=1.5, check=protocol_rejected(0x0231))))
    add(Case("ppp-unknown-control-protocol", "PPP frames with lying lengths", "up",
             steps(data(ppp(0x8231, cp(1, 1)))),
             Expect(end="open", within=1.5, check=protocol_rejected(0x8231))))
    # LCP while negotiating (stage ack): bombs, malformed options, floods.
    good = lcp(1, 0x77, option(1, b"\x05\x78") + option(5, b"\x11\x22\x33\x44"))
    acked = lcp_answer(0x77, 2)
    unknown = list(range(0x40, 0x40 + 60))
    bombs: dict[str, tuple[bytes, object]] = {
        "sixty-unknown-options": (lcp(1, 0x30, b"".join(option(k, b"\x01\x02") for k in unknown)),
                                  rejected_options(0x30, set(unknown))),
        "option-length-0": (lcp(1, 0x31, option(1, b"\x05\xdc", length=0)), no_reply_to(LCP, 0x31)),
        "option-length-1": (lcp(1, 0x32, option(1, b"", length=1)), no_reply_to(LCP, 0x32)),
        "option-past-end": (lcp(1, 0x33, option(1, b"\x05\xdc", length=90)), no_reply_to(LCP, 0x33)),
        "fifteen-255-byte-options": (lcp(1, 0x34, b"".join(option(0x50 + k, bytes(253)) for k in range(15))),
                                     rejected_options(0x34, {0x50 + k for k in range(15)})),
        "code-0x55": (lcp(0x55, 0x35, b"boom"), code_rejected(0x55)),
    }
    for name, (payload, check) in bombs.items():
        assert callable(check)
        add(Case(f"lcp-bomb-{name}", "LCP option bombs", "ack", steps(payload, good),
                 Expect(end="open", within=1.5, control=((),), check=all_of(check, acked))))
    add(Case("lcp-bomb-120-mru-options", "LCP option bombs", "ack",
             steps(lcp(1, 0x36, option(1, b"\x05\xdc") * 120), good),
             Expect(end="any", within=1.5, check=at_most_replies(LCP, 2))))
    flood = b"".join(lcp(1, i % 256, option(1, b"\x05\x78")) for i in range(300))
    add(Case("lcp-configure-request-flood-300", "Configure-Request floods", "ack", steps(flood),
             Expect(end="any", within=2.0, check=at_most_replies(LCP, 300))))
    small_mru = b"".join(lcp(1, 0x80 + i, option(1, b"\x00\x0a")) for i in range(20))
    add(Case("lcp-configure-request-mru-10-x20", "Configure-Request floods", "ack", steps(small_mru),
             Expect(end="any", within=2.0,
                    check=all_of(at_most_replies(LCP, 20), nak_then_reject(0x80, 20)))))
    add(Case("lcp-terminate-request-flood", "Configure-Request floods", "ack",
             steps(b"".join(lcp(5, i, b"bye") for i in range(50))), Expect(end="any", within=3.0)))
    add(Case("lcp-code-reject-configure", "Configure-Request floods", "ack", steps(lcp(7, 9, cp(1, 1))),
             Expect(end="any", within=3.0)))
    add(Case("lcp-configure-request-flood-while-up", "Configure-Request floods", "up",
             steps(b"".join(lcp(1, i, option(1, b"\x05\x78")) for i in range(100))),
             Expect(end="any", within=3.0, check=at_most_replies(LCP, 100))))
    ipcp_flood = lambda ctx: b"".join(data(ppp(IPCP, cp(1, i, option(3, ctx.own.packed))))  # noqa: E731
                                      for i in range(200))
    add(Case("ipcp-configure-request-flood-200", "Configure-Request floods", "up", (Step(ipcp_flood),),
             Expect(end="any", within=3.0, check=at_most_replies(IPCP, 200))))


def _address_cases() -> None:
    def ipcp_request(ident: int, pick: Callable[[Context], IPv4Address | None]) -> Payload:
        def build(ctx: Context) -> bytes:
            address = pick(ctx)
            assert address is not None
            return data(ppp(IPCP, cp(1, ident, option(3, address.packed))))
        return build

    targets: dict[str, Callable[[Context], IPv4Address | None]] = {
        "gateway": lambda c: c.gateway, "other-client": lambda c: c.other,
        "zero": lambda c: IPv4Address(0), "broadcast": lambda c: IPv4Address("255.255.255.255"),
        "unassigned-pool-address": lambda c: IPv4Address("10.77.0.250"),
    }
    for index, (name, pick) in enumerate(targets.items()):
        add(Case(f"ipcp-request-{name}", "IPCP address theft", "up",
                 (Step(ipcp_request(0x60 + index, pick)),),
                 Expect(end="any", within=1.5, check=ipcp_naks_own_address(0x60 + index))))
    add(Case("ipcp-request-own-address", "IPCP address theft", "up",
             (Step(ipcp_request(0x6F, lambda c: c.own)),),
             Expect(end="any", within=1.5, check=ipcp_naks_own_address(0x6F, ack=True))))

    def echo(source: Callable[[Context], IPv4Address | None], seq: int) -> Payload:
        def build(ctx: Context) -> bytes:
            src = source(ctx)
            assert src is not None and ctx.gateway is not None
            return data(ppp(IPV4, icmp_echo(src, ctx.gateway, 0x5151, seq, b"spoof" * 8)))
        return build

    sources: dict[str, Callable[[Context], IPv4Address | None]] = {
        "gateway": lambda c: c.gateway, "other-client": lambda c: c.other,
        "unassigned-pool-address": lambda c: IPv4Address("10.77.0.250"),
        "public": lambda c: IPv4Address("198.51.100.7"), "loopback": lambda c: IPv4Address("127.0.0.1"),
        "zero": lambda c: IPv4Address(0), "multicast": lambda c: IPv4Address("224.0.0.1"),
    }
    legit = echo(lambda c: c.own, 1)
    for name, source in sources.items():
        add(Case(f"spoof-source-{name}", "spoofed source address", "up",
                 (Step(legit), Step(echo(source, 2)), Step(echo(source, 3)), Step(echo(source, 4))),
                 Expect(end="open", within=1.5, tun_rx=1, check=echo_reply_to_own)))
    add(Case("spoof-source-own-address-passes", "spoofed source address", "up",
             (Step(legit), Step(echo(lambda c: c.own, 2))),
             Expect(end="open", within=1.5, tun_rx=2, check=echo_reply_to_own)))


def _auth_cases() -> None:
    for i in range(20):
        add(Case(f"auth-wrong-password-{i:02d}", "auth flood", "dial", (),
                 Expect(end="close", auth_failed=True, within=8.0), password=f"wrong-{i}"))
    for name, user in (("unknown-user", "mallory"), ("empty-user", ""), ("long-user", "u" * 250),
                       ("non-ascii-user", "\u00e4tk")):
        add(Case(f"auth-{name}", "auth flood", "dial", (), Expect(end="close", auth_failed=True, within=8.0),
                 username=user))


_http_cases()
_transport_cases()
_framing_cases()
_state_cases()
_unknown_cases()
_ppp_cases()
_address_cases()
_auth_cases()

BY_NAME = {case.name: case for case in CASES}
