"""The PROXY protocol header a load balancer puts before the client's bytes, v1 and v2, sans-I/O.

A balancer that relays TCP (HAProxy ``send-proxy``/``send-proxy-v2``, AWS NLB, ...) opens its own
connection to us, so the socket's peer is the balancer; the header it sends first names the real
client. Layouts (from HAProxy's proxy-protocol.txt):

* v1, text: ``PROXY TCP4 <src> <dst> <sport> <dport>\\r\\n`` (or TCP6, or ``PROXY UNKNOWN ...\\r\\n``),
  single spaces, at most 107 bytes with the CRLF.
* v2, binary: the 12-byte signature ``0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A``, then one byte
  version (high nibble, must be 2) and command (low nibble: 0 LOCAL, 1 PROXY), one byte address
  family (high: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) and transport (low: 0 UNSPEC, 1 STREAM,
  2 DGRAM), a 16-bit length of what follows; then the addresses (IPv4: 4+4+2+2 bytes, IPv6:
  16+16+2+2) and optional TLVs, which we skip.

``LOCAL`` (health checks), ``UNKNOWN`` and ``UNSPEC`` say "use the connection's own addresses":
the header then carries no endpoints. Anything else that is not TCP over IPv4/IPv6 is refused.

Decisions: the header must be exactly where the stream starts (no guessing whether one is there);
v1 ports are 1-5 decimal digits up to 65535; IPv6 scope ids are refused; a v2 block longer than
``max_v2_length`` is refused before it is buffered.
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import NamedTuple

from vpnd.proto.errors import ProtocolError

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107  # the longest v1 line, CRLF included (UNKNOWN with full-length IPv6 addresses)
V2_FIXED_LENGTH = 16  # signature, version/command, family/transport, length
MAX_V2_LENGTH = 2048  # addresses plus TLVs; HAProxy's TLVs (ALPN, SNI, TLS facts) fit well within
_V2_FAMILY_LENGTH = {0x11: 12, 0x21: 36}
_PORT = re.compile(r"[0-9]{1,5}")


class ProxyCommand(enum.Enum):
    PROXY = "proxy"  # relayed connection: the header names the client
    LOCAL = "local"  # the balancer's own connection (health check): no client


class ProxyFamily(enum.Enum):
    TCP4 = "TCP4"
    TCP6 = "TCP6"
    UNSPEC = "UNSPEC"  # v1 UNKNOWN, v2 UNSPEC or LOCAL: use the connection's own addresses


class Endpoint(NamedTuple):
    host: str  # canonical text form of the address
    port: int


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    version: int
    command: ProxyCommand
    family: ProxyFamily
    source: Endpoint | None  # the client, as the balancer saw it
    destination: Endpoint | None  # the address the client connected to
    length: int  # bytes the header took on the wire


@dataclass(frozen=True, slots=True)
class ProxyResult:
    header: ProxyHeader
    remainder: bytes  # bytes of the last feed that came after the header (the client's stream)


class ProxyHeaderReader:
    """Accumulates the start of a stream until a whole header is there.

    ``feed(data)`` returns None while more bytes are needed, a `ProxyResult` once the header is
    complete, and raises `ProtocolError` as soon as the bytes cannot start a valid header.
    Nothing beyond one header's size is ever buffered.
    """

    def __init__(self, *, max_v2_length: int = MAX_V2_LENGTH) -> None:
        if max_v2_length < 36:
            raise ValueError("max_v2_length must leave room for IPv6 addresses (36 bytes)")
        self._max_v2_length = max_v2_length
        self._buffer = bytearray()
        self.result: ProxyResult | None = None

    def feed(self, data: bytes) -> ProxyResult | None:
        if self.result is not None:
            raise RuntimeError("the PROXY header is already complete")
        before = len(self._buffer)
        self._buffer += data
        buffer = bytes(self._buffer)
        parsed = _parse(buffer, self._max_v2_length)
        if parsed is None:
            return None
        header = parsed
        used_from_data = header.length - before
        self.result = ProxyResult(header, bytes(data[used_from_data:]))
        self._buffer.clear()
        return self.result


def parse_proxy_header(data: bytes, *, max_v2_length: int = MAX_V2_LENGTH) -> ProxyResult | None:
    """One-shot form of `ProxyHeaderReader`: None when ``data`` holds only part of a header."""
    return ProxyHeaderReader(max_v2_length=max_v2_length).feed(data)


def _parse(data: bytes, max_v2_length: int) -> ProxyHeader | None:
    if not data:
        return None
    if data[0] == V2_SIGNATURE[0]:
        return _parse_v2(data, max_v2_length)
    if data[0] == V1_PREFIX[0]:
        return _parse_v1(data)
    raise ProtocolError("not a PROXY protocol header")


# --- v1 -----------------------------------------------------------------------------------------


def _parse_v1(data: bytes) -> ProxyHeader | None:
    head = data[: len(V1_PREFIX)]
    if not V1_PREFIX.startswith(head):
        raise ProtocolError("not a PROXY protocol header")
    end = data.find(b"\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH:
            raise ProtocolError(f"PROXY v1 line longer than {V1_MAX_LENGTH} bytes")
        return None
    if end == 0 or data[end - 1] != ord("\r"):
        raise ProtocolError("PROXY v1 line does not end in CRLF")
    if not data.startswith(V1_PREFIX):
        raise ProtocolError("not a PROXY protocol header")
    try:
        line = data[len(V1_PREFIX) : end - 1].decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("PROXY v1 line is not ASCII") from None
    length = end + 1
    fields = line.split(" ")
    if fields[0] == "UNKNOWN":  # whatever follows is to be ignored
        return ProxyHeader(1, ProxyCommand.PROXY, ProxyFamily.UNSPEC, None, None, length)
    if fields[0] not in ("TCP4", "TCP6"):
        raise ProtocolError(f"PROXY v1: unknown protocol {fields[0][:8]!r}")
    if len(fields) != 5:
        raise ProtocolError("PROXY v1: expected protocol, two addresses and two ports, single-spaced")
    family = ProxyFamily(fields[0])
    source = Endpoint(_v1_address(fields[1], family), _v1_port(fields[3]))
    destination = Endpoint(_v1_address(fields[2], family), _v1_port(fields[4]))
    return ProxyHeader(1, ProxyCommand.PROXY, family, source, destination, length)


def _v1_address(text: str, family: ProxyFamily) -> str:
    try:
        if family is ProxyFamily.TCP4:
            return str(IPv4Address(text))
        if "%" in text:  # a scope id means nothing to us
            raise ValueError(text)
        return str(IPv6Address(text))
    except ValueError:
        raise ProtocolError(f"PROXY v1: {text[:45]!r} is not an {family.value} address") from None


def _v1_port(text: str) -> int:
    if _PORT.fullmatch(text) is None or int(text) > 0xFFFF:
        raise ProtocolError(f"PROXY v1: {text[:8]!r} is not a port")
    return int(text)


# --- v2 -----------------------------------------------------------------------------------------


def _parse_v2(data: bytes, max_v2_length: int) -> ProxyHeader | None:
    head = data[: len(V2_SIGNATURE)]
    if not V2_SIGNATURE.startswith(head):
        raise ProtocolError("not a PROXY protocol header")
    if len(data) < V2_FIXED_LENGTH:
        return None
    version_command, family_transport, block_length = struct.unpack_from("!BBH", data, len(V2_SIGNATURE))
    if version_command >> 4 != 2:
        raise ProtocolError(f"PROXY v2: version {version_command >> 4} is not 2")
    command_code = version_command & 0x0F
    if command_code not in (0, 1):
        raise ProtocolError(f"PROXY v2: unknown command {command_code}")
    if block_length > max_v2_length:
        raise ProtocolError(f"PROXY v2: address block of {block_length} bytes exceeds {max_v2_length}")
    length = V2_FIXED_LENGTH + block_length
    if len(data) < length:
        return None
    if command_code == 0:  # LOCAL: the family and any addresses are to be ignored
        return ProxyHeader(2, ProxyCommand.LOCAL, ProxyFamily.UNSPEC, None, None, length)
    if family_transport == 0x00:
        return ProxyHeader(2, ProxyCommand.PROXY, ProxyFamily.UNSPEC, None, None, length)
    needed = _V2_FAMILY_LENGTH.get(family_transport)
    if needed is None:
        raise ProtocolError(f"PROXY v2: address family/transport 0x{family_transport:02x} is not "
                            "TCP over IPv4 or IPv6")
    if block_length < needed:
        raise ProtocolError(f"PROXY v2: {block_length} bytes cannot hold the addresses ({needed} needed)")
    block = data[V2_FIXED_LENGTH:length]
    if family_transport == 0x11:
        source_ip: str = str(IPv4Address(block[0:4]))
        destination_ip = str(IPv4Address(block[4:8]))
        ports = block[8:12]
        family = ProxyFamily.TCP4
    else:
        source_ip = str(IPv6Address(block[0:16]))
        destination_ip = str(IPv6Address(block[16:32]))
        ports = block[32:36]
        family = ProxyFamily.TCP6
    source_port, destination_port = struct.unpack("!HH", ports)
    return ProxyHeader(2, ProxyCommand.PROXY, family, Endpoint(source_ip, source_port),
                       Endpoint(destination_ip, destination_port), length)


# --- building (for balancers in tests and tools) -----------------------------------------------


def encode_v1(source: Endpoint | None, destination: Endpoint | None) -> bytes:
    """A v1 line; without endpoints, ``PROXY UNKNOWN``."""
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    family = "TCP6" if ":" in source.host else "TCP4"
    return (f"PROXY {family} {source.host} {destination.host} {source.port} {destination.port}\r\n"
            .encode("ascii"))


def encode_v2(source: Endpoint | None, destination: Endpoint | None, *, local: bool = False,
              tlvs: bytes = b"") -> bytes:
    """A v2 header: PROXY with TCP4/TCP6 endpoints, UNSPEC without, or LOCAL; ``tlvs`` appended."""
    if local or source is None or destination is None:
        return V2_SIGNATURE + struct.pack("!BBH", 0x20 if local else 0x21, 0x00, len(tlvs)) + tlvs
    if ":" in source.host:
        addresses = IPv6Address(source.host).packed + IPv6Address(destination.host).packed
        family_transport = 0x21
    else:
        addresses = IPv4Address(source.host).packed + IPv4Address(destination.host).packed
        family_transport = 0x11
    block = addresses + struct.pack("!HH", source.port, destination.port) + tlvs
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, family_transport, len(block)) + block
