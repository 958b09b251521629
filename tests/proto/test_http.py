"""The SSTP HTTP handshake: exact bytes, real client header layouts, every refusal path, limits."""

from __future__ import annotations

import calendar
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpnd.proto.http import (
    SSTP_CONTENT_LENGTH,
    SSTP_URI,
    HandshakeState,
    HttpClientHandshake,
    HttpPolicy,
    HttpProxyConnectResponse,
    HttpServerHandshake,
    correlation_id_from,
    http_date,
    http_proxy_connect_request,
)

# The date of the MS-SSTP §4.1 example answer.
SPEC_DATE = "Thu, 09 Nov 2006 00:51:09 GMT"
SPEC_EPOCH = calendar.timegm((2006, 11, 9, 0, 51, 9))

REQUEST_LINE = b"SSTP_DUPLEX_POST /sra_{BA195980-CD49-458b-9E23-C84EE0ADCD75}/ HTTP/1.1\r\n"

# Windows 10 (VyOS capture): correlation id first, braces, upper case; Host last.
WINDOWS_REQUEST = (
    REQUEST_LINE + b"SSTPCORRELATIONID: {48B82435-1E2C-4B43-A5A4-5C3A9B0E2F11}\r\n"
    b"Content-Length: 18446744073709551615\r\n"
    b"Host: vpn.example.com\r\n"
    b"\r\n"
)
# sstp-client: Host first, bare lower-case GUID last.
SSTP_CLIENT_REQUEST = (
    REQUEST_LINE + b"Host: vpn.example.com\r\n"
    b"Content-Length: 18446744073709551615\r\n"
    b"SSTPCORRELATIONID: 48b82435-1e2c-4b43-a5a4-5c3a9b0e2f11\r\n"
    b"\r\n"
)
SUCCESS_ANSWER = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Length: 18446744073709551615\r\n"
    b"Server: Microsoft-HTTPAPI/2.0\r\n"
    b"Date: Thu, 09 Nov 2006 00:51:09 GMT\r\n"
    b"\r\n"
)
# A Call Connect Request (MS-SSTP), as a client may pipeline it right behind the head.
CALL_CONNECT_REQUEST = bytes.fromhex("1001000e0001000100010006 0001".replace(" ", ""))

POLICIES = {
    "allow": HttpPolicy(),
    "deny": HttpPolicy(http_error="deny"),
    "redirect": HttpPolicy(http_error="https://www.example.com/"),
}


def serve(
    data: bytes, policy: HttpPolicy | None = None, now: float | None = SPEC_EPOCH
) -> HttpServerHandshake:
    server = HttpServerHandshake(policy, now_wallclock=now)
    server.receive_data(data)
    return server


def outcome(server: HttpServerHandshake) -> tuple[object, ...]:
    return (server.state, server.data_to_send(), server.error, server.should_close, server.remainder,
            server.request)


def counter_bytes(n: int) -> bytes:
    return bytes(range(n))


# ------------------------------------------------------------------------------------------------
# Dates


def test_http_date_matches_spec_example() -> None:
    assert http_date(SPEC_EPOCH) == SPEC_DATE
    assert http_date(SPEC_EPOCH + 0.999) == SPEC_DATE
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert http_date(951782400) == "Tue, 29 Feb 2000 00:00:00 GMT"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e20])
def test_unusable_wall_clock_is_a_caller_error(bad: float) -> None:
    with pytest.raises(ValueError, match="now_wallclock"):
        HttpServerHandshake(now_wallclock=bad)
    server = HttpServerHandshake()
    with pytest.raises(ValueError, match="now_wallclock"):
        server.receive_data(b"", now_wallclock=bad)


# ------------------------------------------------------------------------------------------------
# Client request


def test_client_request_exact_bytes() -> None:
    client = HttpClientHandshake("vpn.example.com", correlation_id="{48B82435-1E2C-4B43-A5A4-5C3A9B0E2F11}")
    assert client.request_bytes() == (
        b"SSTP_DUPLEX_POST /sra_{BA195980-CD49-458b-9E23-C84EE0ADCD75}/ HTTP/1.1\r\n"
        b"Host: vpn.example.com\r\n"
        b"Content-Length: 18446744073709551615\r\n"
        b"SSTPCORRELATIONID: {48B82435-1E2C-4B43-A5A4-5C3A9B0E2F11}\r\n"
        b"\r\n"
    )
    assert client.state is HandshakeState.WAITING


def test_client_generates_windows_style_guid_from_injected_randomness() -> None:
    client = HttpClientHandshake("vpn.example.com", random_bytes=counter_bytes)
    # Version nibble forced to 4 and variant bits to 10xx, the rest straight from the random bytes.
    assert client.correlation_id == "{00010203-0405-4607-8809-0A0B0C0D0E0F}"
    assert b"SSTPCORRELATIONID: {00010203-0405-4607-8809-0A0B0C0D0E0F}\r\n" in client.request_bytes()
    assert client.request_bytes() == client.request_bytes()  # one id per attempt, stable
    assert correlation_id_from(lambda n: b"\xff" * n) == "{FFFFFFFF-FFFF-4FFF-BFFF-FFFFFFFFFFFF}"
    with pytest.raises(ValueError):
        correlation_id_from(lambda n: b"\x00")


@pytest.mark.parametrize("host", ["", "vpn.example.com\r\nX: y", "a b", "h\n"])
def test_client_refuses_bad_host(host: str) -> None:
    with pytest.raises(ValueError):
        HttpClientHandshake(host, correlation_id="x")


@pytest.mark.parametrize("correlation_id", ["", "{1}\r\nX: y", "\n"])
def test_client_refuses_header_injection_in_correlation_id(correlation_id: str) -> None:
    with pytest.raises(ValueError):
        HttpClientHandshake("h", correlation_id=correlation_id)


# ------------------------------------------------------------------------------------------------
# Server: accepted requests


def test_server_accepts_windows_request_with_exact_answer() -> None:
    server = serve(WINDOWS_REQUEST)
    assert server.state is HandshakeState.ACCEPTED
    assert server.data_to_send() == SUCCESS_ANSWER
    assert server.data_to_send() == b""  # drained
    assert not server.should_close
    assert server.error is None
    assert server.status_code == 200
    assert server.remainder == b""
    request = server.request
    assert request is not None
    assert request.method == "SSTP_DUPLEX_POST"
    assert request.uri == SSTP_URI
    assert request.query is None
    assert request.version == "HTTP/1.1"
    assert request.host == "vpn.example.com"
    assert request.correlation_id == "{48B82435-1E2C-4B43-A5A4-5C3A9B0E2F11}"
    assert request.content_length == SSTP_CONTENT_LENGTH
    assert list(request.headers) == ["sstpcorrelationid", "content-length", "host"]


def test_server_accepts_sstp_client_order_and_bare_guid() -> None:
    server = serve(SSTP_CLIENT_REQUEST)
    assert server.state is HandshakeState.ACCEPTED
    assert server.data_to_send() == SUCCESS_ANSWER
    assert server.request is not None
    assert server.request.correlation_id == "48b82435-1e2c-4b43-a5a4-5c3a9b0e2f11"


def test_server_accepts_our_own_client() -> None:
    client = HttpClientHandshake("vpn.example.com", random_bytes=counter_bytes)
    server = serve(client.request_bytes() + CALL_CONNECT_REQUEST)
    assert server.state is HandshakeState.ACCEPTED
    assert server.remainder == CALL_CONNECT_REQUEST
    client.receive_data(server.data_to_send())
    assert client.state is HandshakeState.ACCEPTED
    assert client.status_code == 200
    assert client.remainder == b""


@pytest.mark.parametrize(
    "request_bytes",
    [
        # no correlation id at all, lower-case header names
        REQUEST_LINE + b"host: h\r\ncontent-length: 18446744073709551615\r\n\r\n",
        # correlation id in a form nobody sends: informational, never a reason to refuse
        REQUEST_LINE + b"Host: h\r\nSSTPCORRELATIONID: not a guid {{{\r\n\r\n",
        REQUEST_LINE + b"Host: h\r\nSSTPCORRELATIONID:\r\n\r\n",
        # Content-Length missing, or another number (documented: accepted)
        REQUEST_LINE + b"Host: h\r\n\r\n",
        REQUEST_LINE + b"Host: h\r\nContent-Length: 0\r\n\r\n",
        REQUEST_LINE + b"Host: h\r\nContent-Length: 18446744073709551615, 18446744073709551615\r\n\r\n",
        # URI case differs, HTTP/1.0, bare LF line ends, a blank line before the request line
        b"SSTP_DUPLEX_POST /SRA_{ba195980-cd49-458B-9e23-c84ee0adcd75}/ HTTP/1.1\r\nHost: h\r\n\r\n",
        REQUEST_LINE.replace(b"HTTP/1.1", b"HTTP/1.0") + b"\r\n",
        REQUEST_LINE.replace(b"\r\n", b"\n") + b"Host: h\n\n",
        b"\r\n" + REQUEST_LINE + b"Host: h\r\n\r\n",
        # percent-encoded braces and the absolute form
        b"SSTP_DUPLEX_POST /sra_%7BBA195980-CD49-458b-9E23-C84EE0ADCD75%7D/ HTTP/1.1\r\n\r\n",
        b"SSTP_DUPLEX_POST https://h/sra_{BA195980-CD49-458b-9E23-C84EE0ADCD75}/ HTTP/1.1\r\n\r\n",
        # odd spacing in a header
        REQUEST_LINE + b"Host:h\r\nX-Thing: \t a b \t\r\n\r\n",
    ],
)
def test_server_tolerates_variants(request_bytes: bytes) -> None:
    server = serve(request_bytes)
    assert server.state is HandshakeState.ACCEPTED, server.error
    assert server.data_to_send() == SUCCESS_ANSWER


def test_server_keeps_other_content_length_for_the_log() -> None:
    server = serve(REQUEST_LINE + b"Content-Length: 0\r\n\r\n")
    assert server.request is not None
    assert server.request.content_length == 0
    server = serve(REQUEST_LINE + b"\r\n")
    assert server.request is not None
    assert server.request.content_length is None
    assert server.request.host is None


def test_server_ignores_query_string_but_keeps_it() -> None:
    raw = b"SSTP_DUPLEX_POST /sra_{BA195980-CD49-458b-9E23-C84EE0ADCD75}/?tenantid=abc&x=1 HTTP/1.1\r\n"
    server = serve(raw + b"Host: h\r\n\r\n")
    assert server.state is HandshakeState.ACCEPTED
    assert server.request is not None
    assert server.request.query == "tenantid=abc&x=1"
    assert server.request.path == SSTP_URI
    assert server.request.uri == SSTP_URI + "?tenantid=abc&x=1"
    empty_query = serve(REQUEST_LINE.replace(b"/ HTTP", b"/? HTTP") + b"\r\n").request
    assert empty_query is not None
    assert empty_query.query == ""


def test_server_repeated_headers_are_joined() -> None:
    server = serve(REQUEST_LINE + b"X-A: 1\r\nx-a: 2\r\n\r\n")
    assert server.request is not None
    assert server.request.headers["x-a"] == "1, 2"


def test_server_byte_by_byte_gives_the_same_result() -> None:
    stream = WINDOWS_REQUEST + CALL_CONNECT_REQUEST
    server = HttpServerHandshake(now_wallclock=SPEC_EPOCH)
    for index in range(len(stream)):
        if index < len(WINDOWS_REQUEST) - 1:
            assert server.state is HandshakeState.WAITING
            assert server.data_to_send() == b""
        server.receive_data(stream[index : index + 1])
    assert server.state is HandshakeState.ACCEPTED
    assert server.data_to_send() == SUCCESS_ANSWER
    assert server.remainder == CALL_CONNECT_REQUEST


def test_server_answers_as_soon_as_the_head_ends_and_keeps_pipelined_packets() -> None:
    server = HttpServerHandshake(now_wallclock=SPEC_EPOCH)
    server.receive_data(WINDOWS_REQUEST[:-1])
    assert server.data_to_send() == b""
    server.receive_data(b"\n" + CALL_CONNECT_REQUEST[:5])
    assert server.state is HandshakeState.ACCEPTED
    assert server.data_to_send() == SUCCESS_ANSWER
    assert server.remainder == CALL_CONNECT_REQUEST[:5]
    server.receive_data(CALL_CONNECT_REQUEST[5:])  # later bytes join the remainder
    assert server.remainder == CALL_CONNECT_REQUEST
    assert server.data_to_send() == b""


def test_server_date_source() -> None:
    no_clock = serve(WINDOWS_REQUEST, now=None)
    assert no_clock.data_to_send() == SUCCESS_ANSWER.replace(b"Date: " + SPEC_DATE.encode() + b"\r\n", b"")
    later = HttpServerHandshake(now_wallclock=0)
    later.receive_data(WINDOWS_REQUEST, now_wallclock=SPEC_EPOCH)
    assert later.data_to_send() == SUCCESS_ANSWER


def test_server_header_is_configurable() -> None:
    server = serve(WINDOWS_REQUEST, HttpPolicy(server_header="nginx"))
    assert b"\r\nServer: nginx\r\n" in server.data_to_send()
    server = serve(WINDOWS_REQUEST, HttpPolicy(server_header=""))
    assert b"Server:" not in server.data_to_send()


def test_host_name_check() -> None:
    policy = HttpPolicy(host_name="VPN.example.com")
    for host in [b"vpn.example.com", b"VPN.EXAMPLE.COM:443", b"vpn.example.com.", b"vpn.example.com:8443"]:
        server = serve(REQUEST_LINE + b"Host: " + host + b"\r\n\r\n", policy)
        assert server.state is HandshakeState.ACCEPTED, host
    v6 = HttpPolicy(host_name="2001:db8::1")
    assert serve(REQUEST_LINE + b"Host: [2001:DB8::1]:443\r\n\r\n", v6).state is HandshakeState.ACCEPTED
    assert serve(REQUEST_LINE + b"Host: [2001:db8::1]\r\n\r\n", v6).state is HandshakeState.ACCEPTED
    assert serve(REQUEST_LINE + b"Host: [2001:db8::2]\r\n\r\n", v6).state is HandshakeState.REJECTED


# ------------------------------------------------------------------------------------------------
# Server: refusals under each policy

# (name, request, status under allow, status under redirect)
REFUSALS = [
    ("garbage line", b"HELLO\r\n\r\n", 400, 400),
    ("TLS record instead of HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\r\n", 400, 400),
    ("two-word request line", b"SSTP_DUPLEX_POST /\r\n\r\n", 400, 400),
    ("four-word request line", REQUEST_LINE.replace(b" HTTP", b" x HTTP") + b"\r\n", 400, 400),
    ("HTTP/2", REQUEST_LINE.replace(b"HTTP/1.1", b"HTTP/2.0") + b"\r\n", 400, 400),
    ("not HTTP", REQUEST_LINE.replace(b"HTTP/1.1", b"FTP/1.1") + b"\r\n", 400, 400),
    ("non-ASCII target", b"GET /\xe9 HTTP/1.1\r\n\r\n", 400, 400),
    ("PUT", b"PUT " + SSTP_URI.encode() + b" HTTP/1.1\r\n\r\n", 501, 501),
    ("CONNECT", b"CONNECT h:443 HTTP/1.1\r\n\r\n", 501, 501),
    ("lower-case method", REQUEST_LINE.replace(b"SSTP_DUPLEX_POST", b"sstp_duplex_post") + b"\r\n", 501, 501),
    ("GET", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 404, 301),
    ("GET on the SSTP URI", b"GET " + SSTP_URI.encode() + b" HTTP/1.1\r\n\r\n", 404, 301),
    ("HEAD", b"HEAD / HTTP/1.1\r\n\r\n", 404, 301),
    ("POST", b"POST " + SSTP_URI.encode() + b" HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 404, 301),
    ("wrong URI", b"SSTP_DUPLEX_POST /sra_/ HTTP/1.1\r\n\r\n", 404, 301),
    ("URI without trailing slash", REQUEST_LINE.replace(b"}/ ", b"} ") + b"\r\n", 404, 301),
    ("header without colon", REQUEST_LINE + b"Host h\r\n\r\n", 400, 400),
    ("space before colon", REQUEST_LINE + b"Host : h\r\n\r\n", 400, 400),
    ("empty header name", REQUEST_LINE + b": h\r\n\r\n", 400, 400),
    ("folded header", REQUEST_LINE + b"Host: h\r\n continued\r\n\r\n", 400, 400),
    ("NUL in a header", REQUEST_LINE + b"Host: h\x00\r\n\r\n", 400, 400),
    ("bare CR in a header", REQUEST_LINE + b"Host: h\rX: y\r\n\r\n", 400, 400),
    ("two Host headers", REQUEST_LINE + b"Host: a\r\nHost: b\r\n\r\n", 400, 400),
    ("Content-Length not a number", REQUEST_LINE + b"Content-Length: -1\r\n\r\n", 400, 400),
    ("Content-Length conflicting", REQUEST_LINE + b"Content-Length: 1\r\nContent-length: 2\r\n\r\n",
     400, 400),
    ("line too long", REQUEST_LINE + b"X: " + b"a" * 5000 + b"\r\n\r\n", 400, 400),
    ("head too large", REQUEST_LINE + b"X: aaaaaaaaaaaaaaaaaaaaaa\r\n" * 400 + b"\r\n", 400, 400),
]


@pytest.mark.parametrize(("name", "request_bytes", "allow_status", "redirect_status"), REFUSALS)
@pytest.mark.parametrize("policy_name", ["allow", "deny", "redirect"])
def test_server_refusals(
    name: str, request_bytes: bytes, allow_status: int, redirect_status: int, policy_name: str
) -> None:
    server = serve(request_bytes + CALL_CONNECT_REQUEST, POLICIES[policy_name])
    assert server.state is HandshakeState.REJECTED, name
    assert server.should_close
    assert server.error  # a reason in words for the log
    assert server.remainder == b""  # nothing of a refused connection reaches the SSTP layer
    answer = server.data_to_send()
    if policy_name == "deny":
        assert answer == b""
        assert server.status_code is None
        return
    status = allow_status if policy_name == "allow" else redirect_status
    assert server.status_code == status
    assert answer.startswith(f"HTTP/1.1 {status} ".encode())
    assert answer.endswith(b"\r\n\r\n")
    assert b"\r\nConnection: close\r\n" in answer
    assert b"\r\nContent-Length: 0\r\n" in answer
    assert (b"\r\nLocation: https://www.example.com/\r\n" in answer) == (status == 301)
    assert b"vpnd" not in answer.lower() and b"Server:" not in answer


def test_error_answers_exact_bytes() -> None:
    assert serve(b"GET / HTTP/1.1\r\n\r\n").data_to_send() == (
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n"
        b"Date: Thu, 09 Nov 2006 00:51:09 GMT\r\n\r\n"
    )
    assert serve(b"junk\r\n", now=None).data_to_send() == (
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    assert serve(b"DELETE / HTTP/1.1\r\n", now=None).data_to_send() == (
        b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    assert serve(b"GET / HTTP/1.1\r\n\r\n", POLICIES["redirect"], now=None).data_to_send() == (
        b"HTTP/1.1 301 Moved Permanently\r\nContent-Length: 0\r\nConnection: close\r\n"
        b"Location: https://www.example.com/\r\n\r\n"
    )


def test_bad_request_line_and_method_are_refused_without_waiting_for_headers() -> None:
    server = serve(b"OPTIONS * HTTP/1.1\r\n")
    assert server.state is HandshakeState.REJECTED
    assert server.status_code == 501
    assert "OPTIONS" in (server.error or "")
    server = serve(b"what\n")
    assert server.status_code == 400
    # A GET is only answered once its head is complete (the 301 is for browsers).
    server = serve(b"GET / HTTP/1.1\r\nHost: h\r\n")
    assert server.state is HandshakeState.WAITING


@pytest.mark.parametrize("policy_name", ["allow", "deny", "redirect"])
@pytest.mark.parametrize(
    "host_header", [b"Host: other.example.com\r\n", b"", b"Host: vpn.example.com.evil\r\n"]
)
def test_host_name_mismatch(policy_name: str, host_header: bytes) -> None:
    policy = HttpPolicy(
        http_error=POLICIES[policy_name].http_error, host_name="vpn.example.com"
    )
    server = serve(REQUEST_LINE + host_header + b"\r\n", policy)
    assert server.state is HandshakeState.REJECTED
    assert server.should_close
    assert "ost" in (server.error or "")
    answer = server.data_to_send()
    if policy_name == "deny":
        assert answer == b""
    else:
        # accel-ppp answers a wrong host with 404 even when it redirects other requests.
        assert answer.startswith(b"HTTP/1.1 404 Not Found\r\n")


def test_rejected_server_ignores_further_bytes() -> None:
    server = serve(b"GET / HTTP/1.1\r\n\r\n")
    first = server.data_to_send()
    server.receive_data(WINDOWS_REQUEST)
    assert server.state is HandshakeState.REJECTED
    assert server.data_to_send() == b""
    assert server.remainder == b""
    assert first.startswith(b"HTTP/1.1 404")


def test_error_messages_name_the_cause() -> None:
    assert "not an HTTP/1.x" in (serve(REQUEST_LINE.replace(b"1.1", b"2.0") + b"\r\n").error or "")
    assert "exceeds 4096" in (serve(b"A" * 5000).error or "")
    assert "exceeds 8192" in (serve(REQUEST_LINE + b"X: y\r\n" * 2000).error or "")
    assert "not the SSTP endpoint" in (serve(b"GET / HTTP/1.1\r\n\r\n").error or "")


# ------------------------------------------------------------------------------------------------
# Limits


@pytest.mark.parametrize("policy_name", ["allow", "deny"])
@pytest.mark.parametrize("one_line", [True, False])
def test_megabyte_head_is_refused_with_a_bounded_buffer(policy_name: str, one_line: bool) -> None:
    policy = POLICIES[policy_name]
    if one_line:
        stream = REQUEST_LINE + b"X: " + b"a" * 1_000_000
    else:
        stream = REQUEST_LINE + b"X-Filler: 0123456789abcdef\r\n" * 40_000
    server = HttpServerHandshake(policy, now_wallclock=SPEC_EPOCH)
    fed = 0
    for start in range(0, len(stream), 1000):
        server.receive_data(stream[start : start + 1000])
        fed += 1000
        assert server.buffered_bytes < policy.max_line_bytes
        if server.state is HandshakeState.REJECTED:
            break
    assert server.state is HandshakeState.REJECTED
    assert fed <= policy.max_header_bytes + 1000  # refused as soon as the limit was passed
    assert server.should_close
    assert (server.data_to_send() == b"") == (policy_name == "deny")
    # Everything at once: the same verdict, nothing kept.
    at_once = serve(stream, policy)
    assert at_once.state is HandshakeState.REJECTED
    assert at_once.buffered_bytes == 0


def test_limits_are_inclusive() -> None:
    head = REQUEST_LINE + b"\r\n"
    exact = HttpPolicy(max_header_bytes=len(head), max_line_bytes=len(REQUEST_LINE))
    assert serve(head, exact).state is HandshakeState.ACCEPTED
    short_head = HttpPolicy(max_header_bytes=len(head) - 1)
    assert serve(head, short_head).state is HandshakeState.REJECTED
    short_line = HttpPolicy(max_line_bytes=len(REQUEST_LINE) - 1)
    server = serve(head, short_line)
    assert server.state is HandshakeState.REJECTED
    assert "line" in (server.error or "")


def test_partial_line_is_held_only_below_the_line_limit() -> None:
    policy = HttpPolicy(max_line_bytes=100)
    server = HttpServerHandshake(policy)
    server.receive_data(b"G" * 99)
    assert server.state is HandshakeState.WAITING
    assert server.buffered_bytes == 99
    server.receive_data(b"G")
    assert server.state is HandshakeState.REJECTED
    assert server.buffered_bytes == 0  # nothing of a refused head is kept


@pytest.mark.parametrize(
    "kwargs",
    [
        {"http_error": "https://x/\r\nSet-Cookie: a=b"},
        {"http_error": ""},
        {"http_error": "https://x/ y"},
        {"server_header": "Microsoft-HTTPAPI/2.0\r\nX: y"},
        {"host_name": ""},
        {"max_header_bytes": 0},
        {"max_line_bytes": -1},
    ],
)
def test_policy_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        HttpPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_kinds() -> None:
    assert POLICIES["allow"].redirect_url is None and not POLICIES["allow"].silent
    assert POLICIES["deny"].redirect_url is None and POLICIES["deny"].silent
    assert POLICIES["redirect"].redirect_url == "https://www.example.com/"


# ------------------------------------------------------------------------------------------------
# Client: the server's answer


def answered(data: bytes) -> HttpClientHandshake:
    client = HttpClientHandshake("vpn.example.com", random_bytes=counter_bytes)
    client.receive_data(data)
    return client


def test_client_accepts_spec_answer_and_keeps_remainder() -> None:
    echo_request = bytes.fromhex("10010004")
    client = answered(SUCCESS_ANSWER + echo_request)
    assert client.state is HandshakeState.ACCEPTED
    assert client.status_code == 200
    assert client.reason == "OK"
    assert client.error is None
    assert not client.should_close
    assert client.headers["server"] == "Microsoft-HTTPAPI/2.0"
    assert client.remainder == echo_request
    client.receive_data(b"more")
    assert client.remainder == echo_request + b"more"


def test_client_byte_by_byte() -> None:
    client = HttpClientHandshake("h", random_bytes=counter_bytes)
    stream = SUCCESS_ANSWER + b"\x10\x01"
    for index in range(len(stream)):
        client.receive_data(stream[index : index + 1])
        if index < len(SUCCESS_ANSWER) - 1:
            assert client.state is HandshakeState.WAITING
    assert client.state is HandshakeState.ACCEPTED
    assert client.remainder == b"\x10\x01"


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\n\r\n",  # no Content-Length: allowed (sstp-client does the same)
        b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\nConnection: keep-alive\r\n\r\n",
        b"HTTP/1.0 200\r\n\r\n",  # no reason phrase
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",  # interim answer skipped
        b"HTTP/1.1 200 OK\nserver: x\n\n",
    ],
)
def test_client_accepts_variants(answer: bytes) -> None:
    client = answered(answer)
    assert client.state is HandshakeState.ACCEPTED, client.error
    assert client.status_code == 200


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "server answered HTTP 404 Not Found"),
        (b"HTTP/1.1 503 Service Unavailable\r\n\r\n", "server answered HTTP 503 Service Unavailable"),
        (
            b"HTTP/1.1 301 Moved Permanently\r\nLocation: https://elsewhere/\r\n\r\n",
            "server answered HTTP 301 Moved Permanently (Location: 'https://elsewhere/')",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            "server answered 200 with Content-Length 0, expected 18446744073709551615",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n",
            "server answered 200 with malformed Content-Length",
        ),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "server answered HTTP 101 Switching Protocols"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "not an HTTP/1.x answer"),
        (b"HTTP/2.0 200 OK\r\n\r\n", "not an HTTP/1.x answer"),
        (b"HTTP/1.1 200 OK\r\nbroken\r\n\r\n", "malformed header line in the answer"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 5000, "exceeds 4096"),
    ],
)
def test_client_rejections(answer: bytes, message: str) -> None:
    client = answered(answer)
    assert client.state is HandshakeState.REJECTED
    assert client.should_close
    assert client.error is not None
    assert message in client.error
    assert client.remainder == b""
    client.receive_data(SUCCESS_ANSWER)  # too late: stays rejected
    assert client.state is HandshakeState.REJECTED


def test_client_status_code_reported_on_refusal() -> None:
    client = answered(b"HTTP/1.1 404 Not Found\r\n\r\n")
    assert client.status_code == 404
    assert client.reason == "Not Found"


def test_client_against_our_refusing_server() -> None:
    client = answered(serve(b"GET / HTTP/1.1\r\n\r\n").data_to_send())
    assert client.error == "server answered HTTP 404 Not Found"


# ------------------------------------------------------------------------------------------------
# HTTP proxy


def test_proxy_connect_request_exact_bytes() -> None:
    assert http_proxy_connect_request("vpn.example.com", 443) == (
        b"CONNECT vpn.example.com:443 HTTP/1.1\r\n"
        b"Host: vpn.example.com:443\r\n"
        b"SSTPVERSION: 1.0\r\n"
        b"\r\n"
    )
    v6 = http_proxy_connect_request("2001:db8::1", 8443)
    assert v6.startswith(b"CONNECT [2001:db8::1]:8443 HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\n")
    with_auth = http_proxy_connect_request("h", 443, proxy_credentials=("Aladdin", "open sesame"))
    assert b"\r\nProxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n" in with_auth


@pytest.mark.parametrize(("host", "port"), [("h", 0), ("h", 65536), ("h\r\n", 443), ("", 443)])
def test_proxy_connect_request_refuses_bad_targets(host: str, port: int) -> None:
    with pytest.raises(ValueError):
        http_proxy_connect_request(host, port)


def test_proxy_tunnel_established() -> None:
    response = HttpProxyConnectResponse()
    stream = b"HTTP/1.1 200 Connection established\r\nProxy-Agent: squid\r\n\r\n\x16\x03\x03"
    for index in range(len(stream)):
        response.receive_data(stream[index : index + 1])
    assert response.ok and not response.failed
    assert response.status_code == 200
    assert response.reason == "Connection established"
    assert response.remainder == b"\x16\x03\x03"
    assert response.headers["proxy-agent"] == "squid"


def test_proxy_needs_authentication() -> None:
    response = HttpProxyConnectResponse()
    response.receive_data(
        b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="corp"\r\n'
        b"Content-Length: 10\r\n\r\n0123456789"
    )
    assert response.failed and not response.ok
    assert response.status_code == 407
    assert response.error == (
        "proxy requires authentication: HTTP 407 Proxy Authentication Required ('Basic realm=\"corp\"')"
    )
    assert response.remainder == b""


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 403 Forbidden\r\n\r\n", "proxy refused CONNECT: HTTP 403 Forbidden"),
        (b"HTTP/1.0 502\r\n\r\n", "proxy refused CONNECT: HTTP 502"),
        (b"\x15\x03\x01\x00\x02\x02\x28\n", "proxy: control character"),
        (b"hello\r\n", "proxy: not an HTTP/1.x answer: 'hello'"),
    ],
)
def test_proxy_refusals(answer: bytes, message: str) -> None:
    response = HttpProxyConnectResponse()
    response.receive_data(answer)
    assert response.failed
    assert response.error is not None and response.error.startswith(message)


# ------------------------------------------------------------------------------------------------
# Properties: hostile bytes never raise, buffers stay bounded, splitting never changes the outcome


def split_points(data: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({min(point, len(data)) for point in points})
    pieces, start = [], 0
    for cut in [*cuts, len(data)]:
        pieces.append(data[start:cut])
        start = cut
    return pieces


def check_server_invariants(server: HttpServerHandshake, policy: HttpPolicy) -> None:
    assert server.buffered_bytes < policy.max_line_bytes
    if server.state is HandshakeState.REJECTED:
        assert server.should_close and server.error
        answer = server.data_to_send()
        assert answer == b"" if policy.silent else answer.startswith(b"HTTP/1.1 ")
    elif server.state is HandshakeState.ACCEPTED:
        assert server.data_to_send() == SUCCESS_ANSWER
        assert server.request is not None and server.request.is_sstp


small_policies = st.sampled_from(
    [*POLICIES.values(), HttpPolicy(max_header_bytes=200, max_line_bytes=90), HttpPolicy(host_name="h")]
)


@settings(max_examples=300)
@given(
    data=st.binary(max_size=3000), points=st.lists(st.integers(0, 3000), max_size=8), policy=small_policies
)
def test_random_bytes_never_raise(data: bytes, points: list[int], policy: HttpPolicy) -> None:
    server = HttpServerHandshake(policy, now_wallclock=SPEC_EPOCH)
    for piece in split_points(data, points):
        server.receive_data(piece)
        assert server.buffered_bytes < policy.max_line_bytes
    check_server_invariants(server, policy)


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from([WINDOWS_REQUEST, SSTP_CLIENT_REQUEST])) + CALL_CONNECT_REQUEST)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "duplicate"]))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and at < len(data):
            data[at] = draw(st.sampled_from([0, 9, 10, 13, 32, 58, 63, 0x7F, 0xFF, data[at] ^ 0x20]))
        elif kind == "insert":
            insertions = [b"\r\n", b"\n", b":", b" ", b"?q", b"\r", b"\x00", b"x" * 300]
            data[at:at] = draw(st.sampled_from(insertions))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 20))]
        else:
            end = min(len(data), at + draw(st.integers(1, 40)))
            data[at:at] = data[at:end]
    return bytes(data)


@settings(max_examples=400)
@given(data=mutated_requests(), points=st.lists(st.integers(0, 400), max_size=10), policy=small_policies)
def test_mutated_requests_same_outcome_however_split(
    data: bytes, points: list[int], policy: HttpPolicy
) -> None:
    whole = serve(data, policy)
    pieces = HttpServerHandshake(policy, now_wallclock=SPEC_EPOCH)
    for piece in split_points(data, points):
        pieces.receive_data(piece)
        assert pieces.buffered_bytes < policy.max_line_bytes
    assert outcome(pieces) == outcome(whole)
    check_server_invariants(serve(data, policy), policy)


@settings(max_examples=200)
@given(
    head=st.sampled_from([WINDOWS_REQUEST, SSTP_CLIENT_REQUEST]),
    tail=st.binary(max_size=200),
    points=st.lists(st.integers(0, 400), max_size=10),
)
def test_valid_request_split_anywhere_keeps_the_tail(head: bytes, tail: bytes, points: list[int]) -> None:
    server = HttpServerHandshake(now_wallclock=SPEC_EPOCH)
    for piece in split_points(head + tail, points):
        server.receive_data(piece)
    assert server.state is HandshakeState.ACCEPTED
    assert server.data_to_send() == SUCCESS_ANSWER
    assert server.remainder == tail


@settings(max_examples=300)
@given(
    data=st.one_of(
        st.binary(max_size=2000),
        st.builds(lambda prefix, junk: prefix + junk, st.sampled_from([SUCCESS_ANSWER[:40], b"HTTP/1.1 "]),
                  st.binary(max_size=300)),
    ),
    points=st.lists(st.integers(0, 2000), max_size=8),
)
def test_client_and_proxy_parsers_never_raise(data: bytes, points: list[int]) -> None:
    client = HttpClientHandshake("h", random_bytes=counter_bytes)
    proxy = HttpProxyConnectResponse(max_header_bytes=500, max_line_bytes=100)
    for piece in split_points(data, points):
        client.receive_data(piece)
        proxy.receive_data(piece)
        assert client.buffered_bytes < 4096
        assert proxy.buffered_bytes < 100
    assert (client.error is not None) == (client.state is HandshakeState.REJECTED)
    assert (proxy.error is not None) == proxy.failed
    whole = HttpClientHandshake("h", random_bytes=counter_bytes)
    whole.receive_data(data)
    assert (whole.state, whole.error, whole.remainder) == (client.state, client.error, client.remainder)


@settings(max_examples=100)
@given(tail=st.binary(max_size=100), points=st.lists(st.integers(0, 200), max_size=6))
def test_client_split_anywhere_keeps_the_tail(tail: bytes, points: list[int]) -> None:
    client = HttpClientHandshake("h", random_bytes=counter_bytes)
    for piece in split_points(SUCCESS_ANSWER + tail, points):
        client.receive_data(piece)
    assert client.state is HandshakeState.ACCEPTED
    assert client.remainder == tail
