"""Drive the real Linux SSTP client ``sstpc`` (sstp-client 1.0.18) without pppd or kernel PPP.

``sstpc --nolaunchpppd`` expects to be pppd's pty: it reads and writes async-HDLC PPP frames on
fd 0. We hand it one end of a socketpair (a pipe would not do: fd 0 is used both ways) and speak
PPP on the other end with our own PppLink in the client role. sstpc only does SSTP, so the
crypto binding it computes is its own; it learns the MPPE keys the way sstp-pppd-plugin.so would
tell it: through its unix socket /var/run/sstpc/sstpc-<ipparam>, where we play the plugin:

    u32 magic 0x73737470 ('sstp', host order) | u16 length of the attributes | u16 type (1 = AUTH)
    attributes: u16 type (1 = MPPE send key, 2 = MPPE recv key) | u16 key length | key, padded to 4

answered by an 8-byte header of type 3 (ACK). No attributes means no keys: sstpc then binds with
the all-zero HLAK, which is what PAP gives. After the ACK sstpc sends SSTP Call Connected.

Quirks handled here: ``--log-stderr`` ends each line with a NUL (stripped); about once in 25
runs sstpc stalls after the TCP connect and never forwards a PPP frame, so with no frame within
``stall_timeout`` the process is stopped and started again (once by default). Passing --user or
--password would disable the plugin socket, so they are never passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from tests.support.packets import icmp_echo
from vpnd.proto.errors import ProtocolError
from vpnd.proto.ppp.auth.factory import make_client_auth
from vpnd.proto.ppp.auth.types import AuthFailed, AuthMethod, AuthSucceeded, ClientAuth, MppeKeys
from vpnd.proto.ppp.frames import PROTO_IPV4, decode_frame, encode_frame
from vpnd.proto.ppp.hdlc import HdlcDecoder, encode_hdlc
from vpnd.proto.ppp.lcp import LcpSettings
from vpnd.proto.ppp.link import Ipv4Opened, LinkEvent, LinkSettings, LinkTerminated, PppLink

SSTPC = "/usr/sbin/sstpc"
PLUGIN_SOCKET_DIR = Path("/var/run/sstpc")
API_MAGIC = 0x73737470
API_MSG_AUTH = 1
API_MSG_ACK = 3
API_ATTR_MPPE_SEND = 1
API_ATTR_MPPE_RECV = 2
_API_HEADER = struct.Struct("=IHH")
_API_ATTR = struct.Struct("=HH")

_instance_numbers = itertools.count(1)  # ipparam (and so the plugin socket) is unique per instance


class SstpcError(Exception):
    """sstpc did not get where the test needed it to."""


def plugin_auth_message(keys: MppeKeys | None) -> bytes:
    """The AUTH message sstp-pppd-plugin.so sends; ``keys`` in the client's view (or None)."""
    attributes = b""
    if keys is not None:
        for kind, key in ((API_ATTR_MPPE_SEND, keys.send_key), (API_ATTR_MPPE_RECV, keys.recv_key)):
            attributes += _API_ATTR.pack(kind, len(key)) + key + bytes(-len(key) % 4)
    return _API_HEADER.pack(API_MAGIC, len(attributes), API_MSG_AUTH) + attributes


def sstpc_argv(program: str, ipparam: str, host: str, port: int) -> list[str]:
    """sstpc without pppd: PPP on fd 0, keys through the plugin socket named after ``ipparam``."""
    return [program, "--nolaunchpppd", "--ipparam", ipparam, "--cert-warn",
            "--log-level", "4", "--log-stderr", f"{host}:{port}"]


async def hand_keys_to_sstpc(ipparam: str, keys: MppeKeys | None) -> bool:
    """Play sstp-pppd-plugin.so: send the AUTH message (``keys`` in the client's view, or None);
    True when sstpc acknowledged it (it then sends Call Connected)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_unix_connection(str(PLUGIN_SOCKET_DIR / f"sstpc-{ipparam}")), 5.0)
    try:
        writer.write(plugin_auth_message(keys))
        await writer.drain()
        answer = await asyncio.wait_for(reader.readexactly(_API_HEADER.size), 5.0)
    finally:
        writer.close()
    magic, _length, kind = _API_HEADER.unpack(answer)
    return magic == API_MAGIC and kind == API_MSG_ACK


async def end_process(process: asyncio.subprocess.Process, timeout: float = 3.0,
                      grace: float = 0.5) -> int | None:
    """Wait ``grace`` for ``process`` to exit, then SIGTERM and SIGKILL that one PID."""
    for sig, wait in ((None, grace), (signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
        if process.returncode is not None:
            break
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), wait)
    return process.returncode


def remove_plugin_socket(ipparam: str) -> None:
    """sstpc leaves its plugin socket behind when it is killed."""
    with contextlib.suppress(FileNotFoundError):
        (PLUGIN_SOCKET_DIR / f"sstpc-{ipparam}").unlink()


@dataclass(frozen=True)
class PingResult:
    seq: int
    rtt: float


class SstpcPeer:
    """One sstpc process plus the PPP side it is missing. Use inside a running asyncio loop.

    ``methods``: authentication methods our PPP client accepts. ``key_override``: MPPE keys to
    hand sstpc instead of the real ones (None = the real ones; for PAP the real ones are none).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str,
        password: str,
        methods: tuple[AuthMethod, ...] = (AuthMethod.MSCHAP_V2,),
        key_override: MppeKeys | None = None,
        stall_timeout: float = 10.0,
        retries: int = 1,
        program: str = SSTPC,
    ) -> None:
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.methods = methods
        self.key_override = key_override
        self.stall_timeout = stall_timeout
        self.retries = retries
        self.program = program
        self._name_base = f"vpndtest-{os.getpid()}-{next(_instance_numbers)}"
        self.ipparam = self._name_base
        self.stalls = 0
        self.events: list[LinkEvent] = []
        self.keys_sent: MppeKeys | None = None
        self.plugin_acked = False
        self.local_address: IPv4Address | None = None
        self.peer_address: IPv4Address | None = None
        self.returncode: int | None = None
        self.log = ""
        self.decoder = HdlcDecoder()
        self._logs: list[str] = []
        self._process: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._link: PppLink | None = None
        self._reader: asyncio.Task[None] | None = None
        self._first_bytes = asyncio.Event()
        self._changed = asyncio.Event()
        self._ip_in: asyncio.Queue[bytes] = asyncio.Queue()
        self._log_file: tempfile._TemporaryFileWrapper[bytes] | None = None
        self._failure: str | None = None

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start sstpc and PPP; returns once sstpc forwards PPP (retrying after a stall)."""
        for attempt in range(self.retries + 1):
            self.ipparam = f"{self._name_base}-{attempt}"
            await self._spawn()
            process = self._process
            assert process is not None
            first_bytes = asyncio.ensure_future(self._first_bytes.wait())
            exited = asyncio.ensure_future(process.wait())
            await asyncio.wait({first_bytes, exited}, timeout=self.stall_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            first_bytes.cancel()
            exited.cancel()
            if self._first_bytes.is_set():
                return
            if process.returncode is not None:
                await self._reap()
                raise SstpcError(f"sstpc exited with {self.returncode} before PPP:\n{self.log}")
            self.stalls += 1
            await self._reap()
        raise SstpcError(f"sstpc forwarded no PPP frame within {self.stall_timeout:g} s, "
                         f"{self.retries + 1} times")

    async def stop(self, timeout: float = 3.0) -> int | None:
        """End PPP politely (LCP Terminate), close fd 0, then SIGTERM/SIGKILL the PID; exit code."""
        link = self._link
        if link is not None and not link.terminated and self._sock is not None and self.running:
            link.close(asyncio.get_running_loop().time(), "test finished")
            await self._send_frames()
            with contextlib.suppress(TimeoutError, SstpcError):
                await self.wait_until(lambda: link.terminated, 1.0)
        await self._reap(timeout)
        return self.returncode

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def wait_exit(self, timeout: float) -> int | None:
        """Wait for sstpc to exit on its own; returns its exit code (None if it is still running)."""
        process = self._process
        if process is None:
            return self.returncode
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), timeout)
        return process.returncode

    async def wait_until(self, condition: Callable[[], bool], timeout: float) -> None:
        """Wait for ``condition`` (re-checked whenever the PPP side changes); TimeoutError if not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            if self._failure is not None:
                raise SstpcError(self._failure)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.25))

    async def wait_ipv4(self, timeout: float = 20.0) -> IPv4Address:
        """Until IPCP is up on our side; SstpcError if the link or sstpc died first."""
        await self.wait_until(lambda: self.local_address is not None, timeout)
        assert self.local_address is not None
        return self.local_address

    # ---- IP through the tunnel ----------------------------------------------------------------

    async def send_ip(self, packet: bytes) -> None:
        """One IPv4 packet into the tunnel, whatever state PPP is in."""
        await self._write(encode_hdlc(encode_frame(PROTO_IPV4, packet)))

    async def ping(self, destination: IPv4Address, seq: int, timeout: float = 5.0,
                   payload: bytes = b"vpnd-interop-ping") -> PingResult:
        """One ICMP Echo Request through the tunnel; waits for the matching Echo Reply."""
        if self.local_address is None:
            raise SstpcError("no IPv4 address yet")
        loop = asyncio.get_running_loop()
        ident = os.getpid() & 0xFFFF
        packet = icmp_echo(self.local_address, destination, ident, seq, payload)
        sent = loop.time()
        await self.send_ip(packet)
        deadline = sent + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no Echo Reply for seq {seq}")
            reply = await asyncio.wait_for(self._ip_in.get(), remaining)
            if (len(reply) >= 28 and reply[9] == 1 and reply[20] == 0
                    and struct.unpack_from("!HH", reply, 24) == (ident, seq)
                    and IPv4Address(reply[12:16]) == destination and reply[28:] == payload):
                return PingResult(seq, loop.time() - sent)

    # ---- internals ----------------------------------------------------------------------------

    async def _spawn(self) -> None:
        loop = asyncio.get_running_loop()
        self._first_bytes.clear()
        self._failure = None
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        mine.setblocking(False)
        self._log_file = tempfile.NamedTemporaryFile(prefix="sstpc-", suffix=".log")  # noqa: SIM115
        command = sstpc_argv(self.program, self.ipparam, self.host, self.port)
        try:
            self._process = await asyncio.create_subprocess_exec(
                *command, stdin=theirs.fileno(), stdout=self._log_file, stderr=self._log_file,
                start_new_session=True,
            )
        finally:
            theirs.close()
        self._sock = mine
        self.decoder = HdlcDecoder()
        self.events.clear()
        self.keys_sent, self.plugin_acked = None, False
        self._link = PppLink("client", LinkSettings(lcp=LcpSettings(auth_methods=self.methods)),
                             self._client_auth)
        # sstpc reads fd 0 only after the Call Connect Ack; until then our frames wait in the buffer.
        self._link.open(loop.time())
        await self._send_frames()
        self._reader = asyncio.create_task(self._read_loop())

    def _client_auth(self, method: AuthMethod) -> ClientAuth:
        return make_client_auth(method, username=self.username, password=self.password)

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        sock, link = self._sock, self._link
        assert sock is not None and link is not None
        try:
            while True:
                deadline = link.get_timer()
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                    # that arrives together with data, and the task would then never end.
                    async with asyncio.timeout(timeout):
                        data = await loop.sock_recv(sock, 65536)
                except TimeoutError:
                    link.handle_timer(loop.time())
                    await self._after_link_activity()
                    continue
                if not data:
                    self._fail("sstpc closed its end of the PPP stream")
                    return
                self._first_bytes.set()
                for frame in self.decoder.feed(data):
                    self._receive_frame(frame, loop.time())
                await self._after_link_activity()
        except Exception as exc:  # the task's failure must reach whoever waits on it
            self._fail(f"PPP side failed: {type(exc).__name__}: {exc}")

    def _receive_frame(self, frame: bytes, now: float) -> None:
        link = self._link
        assert link is not None
        try:
            protocol, information = decode_frame(frame)
        except ProtocolError:
            return
        if protocol == PROTO_IPV4:
            self._ip_in.put_nowait(bytes(information))
        else:
            link.receive_frame(frame, now)

    async def _after_link_activity(self) -> None:
        link = self._link
        assert link is not None
        await self._send_frames()
        while (event := link.next_event()) is not None:
            self.events.append(event)
            if isinstance(event, AuthSucceeded):
                await self._tell_sstpc_the_keys(event.keys)
            elif isinstance(event, AuthFailed):
                self._fail(f"PPP authentication failed: {event.reason}")
            elif isinstance(event, Ipv4Opened):
                self.local_address, self.peer_address = event.local, event.peer
            elif isinstance(event, LinkTerminated):
                self._fail(f"PPP link terminated: {event.reason}")
            await self._send_frames()
        self._changed.set()

    async def _send_frames(self) -> None:
        link = self._link
        assert link is not None
        frames = link.frames_to_send()
        if frames:
            await self._write(b"".join(encode_hdlc(frame) for frame in frames))

    async def _write(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            raise SstpcError("sstpc is not running")
        await asyncio.wait_for(asyncio.get_running_loop().sock_sendall(sock, data), 5.0)

    async def _tell_sstpc_the_keys(self, real_keys: MppeKeys | None) -> None:
        keys = self.key_override if self.key_override is not None else real_keys
        self.keys_sent = keys
        self.plugin_acked = await hand_keys_to_sstpc(self.ipparam, keys)
        if not self.plugin_acked:
            self._fail("sstpc did not acknowledge the AUTH message")

    def _fail(self, reason: str) -> None:
        if self._failure is None:
            self._failure = reason
        self._changed.set()

    async def _reap(self, timeout: float = 3.0, grace: float = 0.5) -> None:
        """Close fd 0, wait ``grace``, then SIGTERM and SIGKILL that one PID; collect the log.

        sstpc 1.0.18 does not exit on EOF on fd 0 by itself; SIGTERM makes it end the call
        properly (it logs the session summary), SIGKILL is for a process that ignores that.
        """
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait({self._reader}, timeout=2.0)
            self._reader = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._process is not None:
            self.returncode = await end_process(self._process, timeout, grace)
        remove_plugin_socket(self.ipparam)
        if self._log_file is not None:
            self._log_file.seek(0)
            text = self._log_file.read().replace(b"\x00", b"").decode("utf-8", "replace")
            self._log_file.close()
            self._log_file = None
            self._logs.append(text)
            self.log = "\n--- retry ---\n".join(self._logs)
