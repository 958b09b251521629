"""A PPP peer we did not write: lwIP's PPP (tests/lwip/, built by tests/lwip/build.sh from Debian's
`lwip` source package) carried by the real sstpc, as Windows' or pppd's PPP would be.

    lwIP program (fd N) <-> [relay: counts frames] <-> sstpc (fd 0, async HDLC) <-> TLS/SSTP <-> server

The relay sits in this process between two socketpairs: it sees every PPP frame both ways (so a test
counts LCP Echo or Terminate packets on the wire, not only what lwIP says it did) and detects
sstpc's rare stall after the TCP connect (no frame within ``stall_timeout``: both programs are
started again, as SstpcPeer does). When lwIP reports that it authenticated, the MS-CHAP keys it
printed go to sstpc through the plugin socket (tests/support/sstpc.py), so the crypto binding is
computed from lwIP's keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path

from tests.support.peers import unavailable
from tests.support.sstpc import (
    SSTPC,
    end_process,
    hand_keys_to_sstpc,
    remove_plugin_socket,
    sstpc_argv,
)
from vpnd.proto.errors import ProtocolError
from vpnd.proto.ppp.auth.types import MppeKeys
from vpnd.proto.ppp.frames import decode_frame, is_control_protocol
from vpnd.proto.ppp.hdlc import HdlcDecoder

BUILD_SCRIPT = Path(__file__).resolve().parents[1] / "lwip" / "build.sh"
TO_SERVER, FROM_SERVER = "to-server", "from-server"
_EVENT = re.compile(r"^@ (\S+)\s*(.*)$")
_instance_numbers = itertools.count(1)


def require_lwip_peer() -> str:
    """Path of the built lwIP peer; fails under CI=true when it is missing, skips otherwise."""
    done = subprocess.run([str(BUILD_SCRIPT), "--path"], capture_output=True, text=True, check=False)
    path = done.stdout.strip()
    if done.returncode != 0 or not path or not os.access(path, os.X_OK):
        unavailable(f"the lwIP PPP peer is not built ({path or done.stderr.strip()}); "
                    "tests/run.sh builds it with tests/lwip/build.sh")
    return path


@dataclass(frozen=True)
class LwipEvent:
    name: str
    fields: dict[str, str]
    text: str


@dataclass
class FrameTally:
    """Control packets seen by the relay: (direction, protocol, code) -> count; data frames by
    (direction, protocol)."""

    control: Counter[tuple[str, int, int]] = field(default_factory=Counter)
    data: Counter[tuple[str, int]] = field(default_factory=Counter)
    bad_fcs: int = 0
    timeline: list[tuple[float, str, int, int]] = field(default_factory=list)  # control packets

    def count(self, direction: str, protocol: int, code: int | None = None) -> int:
        if code is None:
            return self.data[(direction, protocol)]
        return self.control[(direction, protocol, code)]


class LwipPeerError(Exception):
    """The lwIP peer or its sstpc did not get where the test needed it to."""


class LwipPeer:
    """lwIP's PPP client behind sstpc. Use inside a running asyncio loop.

    ``auth``: pap, chap, mschap, mschapv2 or any (what lwIP accepts when the server asks);
    ``mppe``: off or require (lwIP has no "prefer": with MPPE on, it closes the link without it).
    """

    def __init__(self, program: str, host: str, port: int, *, username: str, password: str,
                 auth: str = "any", mppe: str = "off", echo_interval: int = 0,
                 stall_timeout: float = 10.0, retries: int = 1, sstpc: str = SSTPC) -> None:
        self.program, self.sstpc = program, sstpc
        self.host, self.port = host, port
        self.lwip_args = ["--user", username, "--password", password, "--auth", auth,
                          "--mppe", mppe, "--echo-interval", str(echo_interval)]
        self.stall_timeout, self.retries = stall_timeout, retries
        self._name_base = f"vpndlwip-{os.getpid()}-{next(_instance_numbers)}"
        self.ipparam = self._name_base
        self.stalls = 0
        self.events: list[LwipEvent] = []
        self.lines: list[str] = []
        self.tally = FrameTally()
        self.plugin_acked = False
        self.keys_sent: MppeKeys | None = None
        self.sstpc_log = ""
        self.sstpc_exit: int | None = None
        self.lwip_exit: int | None = None
        self._sstpc: asyncio.subprocess.Process | None = None
        self._lwip: asyncio.subprocess.Process | None = None
        self._sstpc_sock: socket.socket | None = None
        self._lwip_sock: socket.socket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._first_bytes = asyncio.Event()
        self._started = time.monotonic()
        self._changed = asyncio.Event()
        self._sstpc_log_file: tempfile._TemporaryFileWrapper[bytes] | None = None

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start sstpc and lwIP; returns once sstpc forwards PPP (restarting both after a stall)."""
        for attempt in range(self.retries + 1):
            self.ipparam = f"{self._name_base}-{attempt}"
            await self._spawn()
            assert self._sstpc is not None
            first = asyncio.ensure_future(self._first_bytes.wait())
            exited = asyncio.ensure_future(self._sstpc.wait())
            await asyncio.wait({first, exited}, timeout=self.stall_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            first.cancel()
            exited.cancel()
            if self._first_bytes.is_set():
                return
            stalled = self._sstpc.returncode is None
            await self._reap()
            if not stalled:
                raise LwipPeerError(f"sstpc exited with {self.sstpc_exit} before PPP:\n{self.sstpc_log}")
            self.stalls += 1
        raise LwipPeerError(f"sstpc forwarded no PPP frame within {self.stall_timeout:g} s, "
                            f"{self.retries + 1} times; sstpc said:\n{self.sstpc_log[-3000:]}\n"
                            "lwIP said:\n" + "\n".join(self.lines[-30:]))

    async def stop(self) -> None:
        """Stop both programs (lwIP first, by closing its stdin and its stream) and collect logs."""
        await self._reap()

    @property
    def lwip_running(self) -> bool:
        return self._lwip is not None and self._lwip.returncode is None

    # ---- what lwIP reports --------------------------------------------------------------------

    def find(self, name: str, predicate: Callable[[LwipEvent], bool] = lambda _: True) -> LwipEvent | None:
        return next((e for e in self.events if e.name == name and predicate(e)), None)

    async def wait_event(self, name: str, timeout: float,
                         predicate: Callable[[LwipEvent], bool] = lambda _: True) -> LwipEvent:
        """The first event ``name`` (matching ``predicate``); LwipPeerError after ``timeout``."""
        await self.wait_until(lambda: self.find(name, predicate) is not None, timeout,
                              f"no '{name}' event")
        found = self.find(name, predicate)
        assert found is not None
        return found

    async def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise LwipPeerError(f"{what} within {timeout:g} s; lwIP said:\n"
                                    + "\n".join(self.lines[-40:]))
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.25))

    async def wait_exit(self, timeout: float) -> int | None:
        """Wait for lwIP to end on its own (link dead); its exit code or None."""
        if self._lwip is None:
            return self.lwip_exit
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._lwip.wait(), timeout)
        return self._lwip.returncode

    # ---- commands -----------------------------------------------------------------------------

    async def command(self, line: str) -> None:
        process = self._lwip
        if process is None or process.stdin is None:
            raise LwipPeerError("lwIP is not running")
        process.stdin.write(line.encode() + b"\n")
        await process.stdin.drain()

    async def ping(self, destination: str, seq: int, timeout: float = 10.0) -> None:
        """One Echo Request sent by lwIP itself (ICMP or ICMPv6 by the address); waits for the reply."""
        target = ip_address(destination)
        await self.command(f"ping{target.version} {target} {seq}")
        await self.wait_event(f"pong{target.version}", timeout,
                              lambda e: e.fields.get("seq") == str(seq)
                              and ip_address(e.fields["from"]) == target)

    async def close(self) -> None:
        """lwIP ends the link: LCP Terminate-Request (ppp_close)."""
        await self.command("close")

    # ---- internals ----------------------------------------------------------------------------

    async def _spawn(self) -> None:
        self._first_bytes.clear()
        self.events.clear()
        self.lines.clear()
        self.tally = FrameTally()
        self._started = time.monotonic()
        self.plugin_acked, self.keys_sent = False, None
        sstpc_mine, sstpc_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        lwip_mine, lwip_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for sock in (sstpc_mine, lwip_mine):
            sock.setblocking(False)
        self._sstpc_log_file = tempfile.NamedTemporaryFile(prefix="sstpc-lwip-", suffix=".log")  # noqa: SIM115
        try:
            self._sstpc = await asyncio.create_subprocess_exec(
                *sstpc_argv(self.sstpc, self.ipparam, self.host, self.port), stdin=sstpc_theirs.fileno(),
                stdout=self._sstpc_log_file, stderr=self._sstpc_log_file, start_new_session=True)
            self._lwip = await asyncio.create_subprocess_exec(
                self.program, "--fd", str(lwip_theirs.fileno()), *self.lwip_args,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, pass_fds=(lwip_theirs.fileno(),),
                start_new_session=True)
        finally:
            sstpc_theirs.close()
            lwip_theirs.close()
        self._sstpc_sock, self._lwip_sock = sstpc_mine, lwip_mine
        self._tasks = [
            asyncio.create_task(self._relay(lwip_mine, sstpc_mine, TO_SERVER)),
            asyncio.create_task(self._relay(sstpc_mine, lwip_mine, FROM_SERVER)),
            asyncio.create_task(self._read_lwip()),
        ]

    async def _relay(self, source: socket.socket, sink: socket.socket, direction: str) -> None:
        loop = asyncio.get_running_loop()
        decoder = HdlcDecoder()
        with contextlib.suppress(OSError):
            while data := await loop.sock_recv(source, 65536):
                if direction == FROM_SERVER:
                    self._first_bytes.set()
                self._count(decoder, data, direction)
                await loop.sock_sendall(sink, data)
        with contextlib.suppress(OSError):  # pass the end of the stream on
            sink.shutdown(socket.SHUT_WR)
        self._changed.set()

    def _count(self, decoder: HdlcDecoder, data: bytes, direction: str) -> None:
        for frame in decoder.feed(data):
            try:
                protocol, information = decode_frame(frame)
            except ProtocolError:
                continue
            if is_control_protocol(protocol) and len(information) >= 1:
                self.tally.control[(direction, protocol, information[0])] += 1
                self.tally.timeline.append((round(time.monotonic() - self._started, 3), direction,
                                            protocol, information[0]))
            else:
                self.tally.data[(direction, protocol)] += 1
        self.tally.bad_fcs = decoder.bad_fcs
        self._changed.set()

    async def _read_lwip(self) -> None:
        process = self._lwip
        assert process is not None and process.stdout is not None
        while raw := await process.stdout.readline():
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if match := _EVENT.match(line):
                fields = dict(part.split("=", 1) for part in match.group(2).split() if "=" in part)
                event = LwipEvent(match.group(1), fields, match.group(2))
                self.events.append(event)
                if event.name == "authenticated":
                    await self._tell_sstpc_the_keys(event)
            self._changed.set()
        self._changed.set()

    async def _tell_sstpc_the_keys(self, event: LwipEvent) -> None:
        if "send" in event.fields:
            self.keys_sent = MppeKeys(send_key=bytes.fromhex(event.fields["send"]),
                                      recv_key=bytes.fromhex(event.fields["recv"]))
        try:
            self.plugin_acked = await hand_keys_to_sstpc(self.ipparam, self.keys_sent)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as error:
            self.lines.append(f"(test) plugin socket failed: {error!r}")

    async def _reap(self) -> None:
        if self._lwip is not None:
            if self._lwip.stdin is not None:
                self._lwip.stdin.close()
            if self._lwip_sock is not None:
                with contextlib.suppress(OSError):
                    self._lwip_sock.shutdown(socket.SHUT_RDWR)  # lwIP sees the stream end and exits
            self.lwip_exit = await end_process(self._lwip, grace=2.0)
        if self._sstpc is not None:
            if self._sstpc_sock is not None:
                with contextlib.suppress(OSError):
                    self._sstpc_sock.shutdown(socket.SHUT_RDWR)
            self.sstpc_exit = await end_process(self._sstpc)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        self._tasks = []
        for sock in (self._lwip_sock, self._sstpc_sock):
            if sock is not None:
                sock.close()
        self._lwip_sock = self._sstpc_sock = None
        self._lwip = self._sstpc = None
        remove_plugin_socket(self.ipparam)
        if self._sstpc_log_file is not None:
            self._sstpc_log_file.seek(0)
            text = self._sstpc_log_file.read().replace(b"\x00", b"").decode("utf-8", "replace")
            self.sstpc_log = f"{self.sstpc_log}\n--- retry ---\n{text}" if self.sstpc_log else text
            self._sstpc_log_file.close()
            self._sstpc_log_file = None
