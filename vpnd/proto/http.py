"""The HTTP exchange that opens an SSTP connection (MS-SSTP §3.2.4.1, §4.1), both roles, sans-I/O.

The client sends one ``SSTP_DUPLEX_POST`` request with no body; the server answers ``200 OK`` with
``Content-Length: 2**64-1``; from then on the TCP/TLS stream carries raw SSTP packets. Bytes that
follow the blank line ending the head may already be SSTP packets, so both sides keep them in
``remainder`` instead of dropping them.

Decisions worth knowing (the spec leaves them open):

* ``Content-Length`` on the request may be absent or any decimal number: the stream is raw SSTP
  afterwards whatever it says, and refusing odd values would only break odd clients. Windows always
  sends ``18446744073709551615``; the value is kept in ``SstpHttpRequest.content_length`` for the log.
  A value that is not a number, or two different values, is malformed HTTP and answered with 400.
* The SSTP correlation id is informational: any form or none is accepted.
* ``Host`` is only checked when ``HttpPolicy.host_name`` is set; then a missing or different host is
  answered with 404 (under a redirect policy too, as accel-ppp does) or a silent close under ``deny``.
* Methods are compared case-sensitively (RFC 9110 §9.1), the SSTP URI case-insensitively and without
  its ``?query`` (MS-SSTP lets a client add ``?tenantid=...``).
* A bad request line and an unknown method are refused as soon as the request line is complete;
  everything else is decided once the whole head has arrived.
* Lines may end in CRLF or a bare LF (RFC 9112 §2.2); control characters other than HTAB, folded
  header lines and whitespace before the colon are refused (RFC 9112 §5).
* No clock is read here: the ``Date`` header comes from ``now_wallclock`` (epoch seconds) handed to the
  constructor or to ``receive_data``; with no wall clock given no ``Date`` is sent (RFC 9110 §6.6.1).
"""

from __future__ import annotations

import base64
import enum
import math
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import unquote

SSTP_METHOD = "SSTP_DUPLEX_POST"
SSTP_URI = "/sra_{BA195980-CD49-458b-9E23-C84EE0ADCD75}/"
SSTP_CONTENT_LENGTH = 2**64 - 1
SSTP_PROXY_VERSION = "1.0"

# Methods that get a "not here" answer (404/301/close); anything else is 501 (SoftEther, accel-ppp).
_KNOWN_METHODS = frozenset({SSTP_METHOD, "GET", "HEAD", "POST"})

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST_LINE = re.compile(rf"({_TOKEN})[ \t]+([^ \t]+)[ \t]+([^ \t]+)")
_HTTP1_VERSION = re.compile(r"HTTP/1\.[0-9]")
_STATUS_LINE = re.compile(r"(HTTP/[0-9]\.[0-9])[ \t]+([0-9]{3})(?:[ \t]+(.*))?")
_FIELD_NAME = re.compile(_TOKEN)
_DIGITS = re.compile(r"[0-9]+")
# Control characters other than HTAB (CR and LF are already stripped from the line ends).
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# What may go into a header value we write ourselves: visible ASCII and inner spaces.
_SAFE_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")

_REASONS = {
    200: "OK",
    301: "Moved Permanently",
    400: "Bad Request",
    404: "Not Found",
    501: "Not Implemented",
}
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class HandshakeState(enum.Enum):
    WAITING = "waiting"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


def http_date(epoch_seconds: float) -> str:
    """RFC 9110 IMF-fixdate, e.g. ``Thu, 09 Nov 2006 00:51:09 GMT`` (locale independent)."""
    moment = datetime.fromtimestamp(math.floor(epoch_seconds), tz=UTC)
    return (
        f"{_DAYS[moment.weekday()]}, {moment.day:02d} {_MONTHS[moment.month - 1]} {moment.year:04d} "
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} GMT"
    )


def _checked_wallclock(now_wallclock: float | None) -> float | None:
    """Refuse a wall clock that cannot be turned into a date: that is a caller bug, not peer input."""
    if now_wallclock is None:
        return None
    if not math.isfinite(now_wallclock):
        raise ValueError(f"now_wallclock must be finite, got {now_wallclock!r}")
    try:
        datetime.fromtimestamp(math.floor(now_wallclock), tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"now_wallclock out of range: {now_wallclock!r}") from exc
    return now_wallclock


def _quote(text: str, limit: int = 80) -> str:
    """A short, log-safe rendering of peer text."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def _require_header_value(what: str, value: str) -> None:
    if not _SAFE_VALUE.fullmatch(value):
        raise ValueError(f"{what} must be printable ASCII without line breaks, got {value!r}")


def _normalize_host_name(name: str) -> str:
    """Lower-case, without IPv6 brackets or a trailing root dot."""
    name = name.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name.rstrip(".").lower()


def _host_without_port(value: str) -> str:
    value = value.strip()
    if value.startswith("["):
        closing = value.find("]")
        return _normalize_host_name(value[: closing + 1] if closing > 0 else value)
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return _normalize_host_name(value)


class _HeadReader:
    """Splits an HTTP head (start line + header lines) off a byte stream, within size limits.

    Never holds more than one incomplete line (< ``max_line_bytes``); completed lines are handed
    out at once. Stops at the blank line that ends the head; what follows is ``remainder``.
    """

    def __init__(self, max_header_bytes: int, max_line_bytes: int) -> None:
        if max_header_bytes < 1 or max_line_bytes < 1:
            raise ValueError("header limits must be positive")
        self._max_head = max_header_bytes
        self._max_line = max_line_bytes
        self._partial = bytearray()
        self._head_bytes = 0  # bytes of completed lines, terminators included
        self._started = False
        self.done = False
        self.failure: str | None = None
        self.remainder = b""

    @property
    def buffered_bytes(self) -> int:
        return len(self._partial)

    def feed(self, data: bytes) -> list[str]:
        """Complete lines found in ``data`` (terminator stripped, latin-1 decoded)."""
        lines: list[str] = []
        position, size = 0, len(data)
        while position < size and not self.done and self.failure is None:
            line_room = self._max_line - len(self._partial)
            head_room = self._max_head - self._head_bytes - len(self._partial)
            room = min(line_room, head_room)
            search_end = min(size, position + room)
            newline = data.find(b"\n", position, search_end)
            if newline < 0:
                if size - position >= room:
                    # The line cannot end within the limits: refuse without buffering it.
                    if head_room <= line_room:
                        self.failure = f"request head exceeds {self._max_head} bytes"
                    else:
                        self.failure = f"header line exceeds {self._max_line} bytes"
                    break
                self._partial += data[position:]
                break
            raw = bytes(self._partial) + data[position:newline]
            self._partial.clear()
            self._head_bytes += len(raw) + 1
            position = newline + 1
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if _CONTROL.search(raw):
                self.failure = "control character in the request head"
                break
            if not raw:
                if self._started:
                    self.done = True
                    self.remainder = data[position:]
                # Blank lines before the start line are tolerated (RFC 9112 §2.2).
                continue
            self._started = True
            lines.append(raw.decode("latin-1"))
        if self.failure is not None:
            self._partial.clear()  # a refused head is not kept
        return lines


class _HeaderFields:
    """Header fields as received: names lower-cased, repeated fields kept apart."""

    def __init__(self) -> None:
        self.values: dict[str, list[str]] = {}

    def add_line(self, line: str) -> str | None:
        """Record one field line; return why it is malformed, or None."""
        if line[0] in " \t":
            return f"folded header line {_quote(line)}"
        name, colon, value = line.partition(":")
        if not colon or not _FIELD_NAME.fullmatch(name):
            return f"malformed header line {_quote(line)}"
        self.values.setdefault(name.lower(), []).append(value.strip(" \t"))
        return None

    def joined(self) -> dict[str, str]:
        return {name: ", ".join(values) for name, values in self.values.items()}

    def single(self, name: str) -> str | None:
        values = self.values.get(name)
        return values[0] if values else None

    def content_length(self) -> tuple[int | None, str | None]:
        """(value, problem): several identical values are one value (RFC 9112 §6.3)."""
        values = self.values.get("content-length")
        if not values:
            return None, None
        items = {item.strip(" \t") for value in values for item in value.split(",")}
        if len(items) != 1:
            return None, f"conflicting Content-Length values {_quote(', '.join(values))}"
        (item,) = items
        if not _DIGITS.fullmatch(item):
            return None, f"malformed Content-Length {_quote(item)}"
        return int(item), None


# ----------------------------------------------------------------------------------------------
# Server


@dataclass(frozen=True)
class HttpPolicy:
    """How the server answers requests that are not SSTP.

    ``http_error``: ``"allow"`` answers 400/404/501; ``"deny"`` closes without a word; any other
    value is a URL: non-SSTP requests get ``301`` to it (malformed ones still get 400/501).
    """

    http_error: Literal["allow", "deny"] | str = "allow"
    host_name: str | None = None
    max_header_bytes: int = 8192
    max_line_bytes: int = 4096
    server_header: str = "Microsoft-HTTPAPI/2.0"

    def __post_init__(self) -> None:
        if self.http_error not in ("allow", "deny"):
            _require_header_value("redirect URL", self.http_error)
            if " " in self.http_error:
                raise ValueError(f"redirect URL must not contain spaces: {self.http_error!r}")
        if self.server_header:
            _require_header_value("server_header", self.server_header)
        if self.host_name is not None and not _normalize_host_name(self.host_name):
            raise ValueError("host_name must not be empty")
        if self.max_header_bytes < 1 or self.max_line_bytes < 1:
            raise ValueError("header limits must be positive")

    @property
    def redirect_url(self) -> str | None:
        return None if self.http_error in ("allow", "deny") else self.http_error

    @property
    def silent(self) -> bool:
        return self.http_error == "deny"


@dataclass(frozen=True)
class SstpHttpRequest:
    """What the client asked, for routing and the log."""

    method: str
    uri: str  # request-target as sent
    path: str  # without the query, percent-decoded
    query: str | None
    version: str
    host: str | None  # Host header as sent (port included)
    correlation_id: str | None
    content_length: int | None
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names, repeats joined ", "

    @property
    def is_sstp(self) -> bool:
        return self.method == SSTP_METHOD and self.path.lower() == SSTP_URI.lower()


def _split_target(target: str) -> tuple[str, str | None]:
    """(decoded path, query) of an origin-form or absolute-form request-target."""
    lowered = target.lower()
    if lowered.startswith(("http://", "https://")):
        after_scheme = target.split("//", 1)[1]
        slash = after_scheme.find("/")
        target = after_scheme[slash:] if slash >= 0 else "/"
    path, question, query = target.partition("?")
    return unquote(path, errors="replace"), (query if question else None)


class HttpServerHandshake:
    """Reads the client's SSTP_DUPLEX_POST and answers it. Never raises on peer bytes."""

    def __init__(self, policy: HttpPolicy | None = None, now_wallclock: float | None = None) -> None:
        self.policy = policy if policy is not None else HttpPolicy()
        self.state = HandshakeState.WAITING
        self.request: SstpHttpRequest | None = None
        self.error: str | None = None
        self.status_code: int | None = None  # what we answered (None: nothing, or not yet)
        self.should_close = False
        self.wrong_host = False  # refused because Host is not ``policy.host_name``
        self._wallclock = _checked_wallclock(now_wallclock)
        self._reader = _HeadReader(self.policy.max_header_bytes, self.policy.max_line_bytes)
        self._request_line: tuple[str, str, str] | None = None
        self._fields = _HeaderFields()
        self._outgoing = bytearray()
        self._remainder = b""

    @property
    def remainder(self) -> bytes:
        """Bytes after the head once ACCEPTED: the first SSTP packets, if the client pipelined them."""
        return self._remainder

    @property
    def buffered_bytes(self) -> int:
        """Size of the incomplete line held back; never reaches ``max_line_bytes``."""
        return self._reader.buffered_bytes

    def data_to_send(self) -> bytes:
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def receive_data(self, data: bytes, now_wallclock: float | None = None) -> None:
        if now_wallclock is not None:
            self._wallclock = _checked_wallclock(now_wallclock)
        if self.state is HandshakeState.ACCEPTED:
            self._remainder += data
            return
        if self.state is HandshakeState.REJECTED:
            return  # the runtime is closing; nothing more to say
        for line in self._reader.feed(data):
            if self._request_line is None:
                self._take_request_line(line)
            else:
                problem = self._fields.add_line(line)
                if problem is not None:
                    self._refuse(400, problem)
            if self.state is not HandshakeState.WAITING:
                return
        if self._reader.failure is not None:
            self._refuse(400, self._reader.failure)
        elif self._reader.done:
            self._finish(self._reader.remainder)

    def _take_request_line(self, line: str) -> None:
        if not line.isascii():
            self._refuse(400, f"non-ASCII request line {_quote(line)}")
            return
        match = _REQUEST_LINE.fullmatch(line)
        if match is None:
            self._refuse(400, f"malformed request line {_quote(line)}")
            return
        method, target, version = match.groups()
        if not _HTTP1_VERSION.fullmatch(version):
            self._refuse(400, f"not an HTTP/1.x request: {_quote(line)}")
            return
        if method not in _KNOWN_METHODS:
            self._refuse(501, f"method {_quote(method)} not implemented")
            return
        self._request_line = (method, target, version)

    def _finish(self, remainder: bytes) -> None:
        assert self._request_line is not None  # the reader ends a head only after a start line
        method, target, version = self._request_line
        fields = self._fields
        hosts = fields.values.get("host", [])
        if len(hosts) > 1:
            self._refuse(400, "more than one Host header")
            return
        content_length, problem = fields.content_length()
        if problem is not None:
            self._refuse(400, problem)
            return
        path, query = _split_target(target)
        host = hosts[0] if hosts else None
        self.request = SstpHttpRequest(
            method=method,
            uri=target,
            path=path,
            query=query,
            version=version,
            host=host,
            correlation_id=fields.single("sstpcorrelationid"),
            content_length=content_length,
            headers=fields.joined(),
        )
        wanted_host = self.policy.host_name
        if wanted_host is not None:
            if host is None:
                self.wrong_host = True
                self._refuse(404, "no Host header but a host name is required")
                return
            if _host_without_port(host) != _normalize_host_name(wanted_host):
                self.wrong_host = True
                self._refuse(404, f"Host {_quote(host)} is not {wanted_host!r}")
                return
        if not self.request.is_sstp:
            reason = f"{method} {_quote(target)} is not the SSTP endpoint"
            if self.policy.redirect_url is not None:
                self._refuse(301, reason)
            else:
                self._refuse(404, reason)
            return
        self.state = HandshakeState.ACCEPTED
        self.status_code = 200
        self._remainder = remainder
        headers = [f"Content-Length: {SSTP_CONTENT_LENGTH}"]
        if self.policy.server_header:
            headers.append(f"Server: {self.policy.server_header}")
        self._respond(200, headers)

    def _refuse(self, status: int, reason: str) -> None:
        self.state = HandshakeState.REJECTED
        self.should_close = True
        self.error = reason
        if self.policy.silent:
            return
        self.status_code = status
        headers = ["Content-Length: 0", "Connection: close"]
        if status == 301:
            headers.append(f"Location: {self.policy.redirect_url}")
        self._respond(status, headers)

    def _respond(self, status: int, headers: list[str]) -> None:
        if self._wallclock is not None:
            headers.append(f"Date: {http_date(self._wallclock)}")
        head = f"HTTP/1.1 {status} {_REASONS[status]}\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
        self._outgoing += head.encode("ascii")


# ----------------------------------------------------------------------------------------------
# Client


def correlation_id_from(random_bytes: Callable[[int], bytes]) -> str:
    """A fresh ``{GUID}`` in the form Windows sends (upper case, braces), random version 4."""
    raw = random_bytes(16)
    if len(raw) != 16:
        raise ValueError("random_bytes(16) must return 16 bytes")
    return "{" + str(uuid.UUID(bytes=raw, version=4)).upper() + "}"


class _ResponseReader:
    """Status line and header fields of one HTTP/1.x response, with 1xx interim answers skipped."""

    def __init__(self, max_header_bytes: int, max_line_bytes: int) -> None:
        self._limits = (max_header_bytes, max_line_bytes)
        self._reader = _HeadReader(*self._limits)
        self.fields = _HeaderFields()
        self.status: tuple[str, int, str] | None = None
        self.failure: str | None = None
        self.complete = False
        self.remainder = b""

    @property
    def buffered_bytes(self) -> int:
        return self._reader.buffered_bytes

    def feed(self, data: bytes) -> None:
        while not self.complete and self.failure is None:
            for line in self._reader.feed(data):
                self._take_line(line)
                if self.failure is not None:
                    return
            if self._reader.failure is not None:
                self.failure = self._reader.failure
                return
            if not self._reader.done:
                return
            data = self._reader.remainder
            assert self.status is not None
            code = self.status[1]
            if 100 <= code < 200 and code != 101:
                # An interim answer: the real one follows (RFC 9110 §15.2).
                self._reader = _HeadReader(*self._limits)
                self.fields = _HeaderFields()
                self.status = None
                continue
            self.complete = True
            self.remainder = data

    def _take_line(self, line: str) -> None:
        if self.status is None:
            match = _STATUS_LINE.fullmatch(line)
            if match is None or not _HTTP1_VERSION.fullmatch(match.group(1)):
                self.failure = f"not an HTTP/1.x answer: {_quote(line)}"
                return
            self.status = (match.group(1), int(match.group(2)), (match.group(3) or "").strip())
            return
        problem = self.fields.add_line(line)
        if problem is not None:
            self.failure = problem.replace("header line", "header line in the answer")


class HttpClientHandshake:
    """Sends the SSTP_DUPLEX_POST request and checks the server's answer. Never raises on peer bytes."""

    def __init__(
        self,
        host: str,
        correlation_id: str | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        *,
        max_header_bytes: int = 8192,
        max_line_bytes: int = 4096,
    ) -> None:
        _require_header_value("host", host)
        if " " in host:
            raise ValueError(f"host must not contain spaces: {host!r}")
        if correlation_id is None:
            correlation_id = correlation_id_from(random_bytes)
        _require_header_value("correlation_id", correlation_id)
        self.host = host
        self.correlation_id = correlation_id
        self.state = HandshakeState.WAITING
        self.status_code: int | None = None
        self.reason: str | None = None
        self.headers: dict[str, str] = {}
        self.error: str | None = None
        self._response = _ResponseReader(max_header_bytes, max_line_bytes)
        self._remainder = b""

    def request_bytes(self) -> bytes:
        # Same field order as the spec's example; servers accept any order.
        return (
            f"{SSTP_METHOD} {SSTP_URI} HTTP/1.1\r\n"
            f"Host: {self.host}\r\n"
            f"Content-Length: {SSTP_CONTENT_LENGTH}\r\n"
            f"SSTPCORRELATIONID: {self.correlation_id}\r\n"
            "\r\n"
        ).encode("ascii")

    @property
    def remainder(self) -> bytes:
        """Bytes after the server's head once ACCEPTED: SSTP packets that came with it."""
        return self._remainder

    @property
    def should_close(self) -> bool:
        return self.state is HandshakeState.REJECTED

    @property
    def buffered_bytes(self) -> int:
        return self._response.buffered_bytes

    def receive_data(self, data: bytes) -> None:
        if self.state is HandshakeState.ACCEPTED:
            self._remainder += data
            return
        if self.state is HandshakeState.REJECTED:
            return
        response = self._response
        response.feed(data)
        if response.failure is not None:
            self._reject(response.failure)
            return
        if not response.complete:
            return
        assert response.status is not None
        _, self.status_code, self.reason = response.status
        self.headers = response.fields.joined()
        if self.status_code != 200:
            answer = f"{self.status_code} {self.reason}".strip()
            location = response.fields.single("location")
            where = f" (Location: {_quote(location)})" if location is not None else ""
            self._reject(f"server answered HTTP {answer}{where}")
            return
        content_length, problem = response.fields.content_length()
        if problem is not None:
            self._reject(f"server answered 200 with {problem}")
            return
        if content_length is not None and content_length != SSTP_CONTENT_LENGTH:
            self._reject(
                f"server answered 200 with Content-Length {content_length}, "
                f"expected {SSTP_CONTENT_LENGTH}"
            )
            return
        self.state = HandshakeState.ACCEPTED
        self._remainder = response.remainder

    def _reject(self, reason: str) -> None:
        self.state = HandshakeState.REJECTED
        self.error = reason


# ----------------------------------------------------------------------------------------------
# HTTP proxy (client side, MS-SSTP §4.5)


def _authority(host: str, port: int) -> str:
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {port}")
    _require_header_value("host", host)
    if " " in host:
        raise ValueError(f"host must not contain spaces: {host!r}")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal
    return f"{host}:{port}"


def http_proxy_connect_request(
    host: str, port: int, *, proxy_credentials: tuple[str, str] | None = None
) -> bytes:
    """``CONNECT host:port`` as Windows sends it (with ``SSTPVERSION: 1.0``).

    ``proxy_credentials`` (user, password) adds ``Proxy-Authorization: Basic`` for proxies that answer
    407; Windows cannot do that, sstp-client can.
    """
    authority = _authority(host, port)
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}", f"SSTPVERSION: {SSTP_PROXY_VERSION}"]
    if proxy_credentials is not None:
        user, password = proxy_credentials
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        lines.append(f"Proxy-Authorization: Basic {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


class HttpProxyConnectResponse:
    """The proxy's answer to CONNECT: any 2xx opens the tunnel (RFC 9110 §9.3.6). Never raises."""

    def __init__(self, *, max_header_bytes: int = 8192, max_line_bytes: int = 4096) -> None:
        self.state = HandshakeState.WAITING
        self.status_code: int | None = None
        self.reason: str | None = None
        self.headers: dict[str, str] = {}
        self.error: str | None = None
        self._response = _ResponseReader(max_header_bytes, max_line_bytes)
        self._remainder = b""

    @property
    def ok(self) -> bool:
        return self.state is HandshakeState.ACCEPTED

    @property
    def failed(self) -> bool:
        return self.state is HandshakeState.REJECTED

    @property
    def remainder(self) -> bytes:
        """Bytes from the far end that arrived with the proxy's answer (start of the TLS stream)."""
        return self._remainder

    @property
    def buffered_bytes(self) -> int:
        return self._response.buffered_bytes

    def receive_data(self, data: bytes) -> None:
        if self.state is HandshakeState.ACCEPTED:
            self._remainder += data
            return
        if self.state is HandshakeState.REJECTED:
            return
        response = self._response
        response.feed(data)
        if response.failure is not None:
            self.state = HandshakeState.REJECTED
            self.error = f"proxy: {response.failure}"
            return
        if not response.complete:
            return
        assert response.status is not None
        _, self.status_code, self.reason = response.status
        self.headers = response.fields.joined()
        if 200 <= self.status_code < 300:
            self.state = HandshakeState.ACCEPTED
            self._remainder = response.remainder
            return
        self.state = HandshakeState.REJECTED
        answer = f"{self.status_code} {self.reason}".strip()
        if self.status_code == 407:
            challenge = response.fields.single("proxy-authenticate")
            detail = f" ({_quote(challenge)})" if challenge is not None else ""
            self.error = f"proxy requires authentication: HTTP {answer}{detail}"
        else:
            self.error = f"proxy refused CONNECT: HTTP {answer}"
