"""TLS over a non-blocking TCP socket, driven by event-loop readiness callbacks.

One ``recv`` of up to 256 KiB feeds many TLS records; every record it completes is decrypted into
one plaintext buffer and handed over in as few calls as possible (the buffer may be shared by many
streams: the loop runs one callback at a time and each view is consumed before the call returns).
Encrypted output goes straight to the socket; what the socket refuses waits in a queue that a
writer callback drains. While more than ``HIGH_WATER`` bytes wait, the owner is told to stop
producing (``on_backpressure(True)``) until the queue falls below ``LOW_WATER``.

Without a context the stream passes plaintext through (a TLS-terminating balancer in front did
the TLS): same callbacks and buffers, no handshake, bytes go to and from the socket unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable
from typing import cast

RECV_SIZE = 256 * 1024
PLAINTEXT_BUFFER = 512 * 1024
HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1 * 1024 * 1024
_RECORD_ROOM = 16 * 1024 + 64  # one more TLS record's plaintext must fit before we read again


class TlsStream:
    """One TLS connection over ``sock`` (already connected and non-blocking).

    Callbacks (all run on the event loop):
    - ``on_plaintext(view)``: decrypted bytes; the view is only valid during the call.
    - ``on_read_done()``: after each socket read's records were all handed over (also when there
      were none), so the owner can act on what it was fed and write() its answer.
    - ``on_lost(reason)``: the connection failed or the peer closed it; the owner should close.
    - ``on_backpressure(paused)``: stop (True) or resume (False) producing data; only once
      ``enable_backpressure()`` was called.
    - ``on_established()`` / ``on_handshake_failed(reason)``: outcome of a handshake driven by
      ``handshake()`` and incoming data (the failure defaults to ``on_lost``).
    """

    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext | None,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        plaintext: bytearray,
        peer: str,
        on_plaintext: Callable[[memoryview], None],
        on_read_done: Callable[[], None],
        on_lost: Callable[[str], None],
        on_backpressure: Callable[[bool], None],
        on_established: Callable[[], None] | None = None,
        on_handshake_failed: Callable[[str], None] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        # No context: plaintext pass-through, and `tls` is never set (nothing may use it).
        self.passthrough = context is None
        if context is not None:
            self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                        server_hostname=server_hostname)
        # False once the handshake is complete: set by handshake(), or by an owner that ran its own
        # on `tls`, `incoming` and `outgoing` before start().
        self.handshaking = context is not None
        self.paused = False
        self.closed = False
        self.pending_bytes = 0
        self._plaintext = plaintext
        self._peer = peer
        self._on_plaintext = on_plaintext
        self._on_read_done = on_read_done
        self._on_lost = on_lost
        self._on_backpressure = on_backpressure
        self._on_established = on_established
        self._on_handshake_failed = on_handshake_failed or on_lost
        self._pending: list[bytes] = []
        self._reading = False
        self._writing = False
        self._backpressure = False

    @property
    def reading(self) -> bool:
        """True between start() and close()."""
        return self._reading

    def start(self) -> None:
        """Begin reading the socket."""
        self._reading = True
        self.loop.add_reader(self.sock.fileno(), self.on_readable)

    def enable_backpressure(self) -> None:
        """From now on, report the send queue crossing the water marks (the owner has a producer)."""
        self._backpressure = True

    # ---- reading ---------------------------------------------------------------------------

    def on_readable(self) -> None:
        if self.passthrough:
            self._read_plain()
            return
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._on_lost(f"connection error: {error.strerror or error}")
            return
        if not data:
            self._on_lost(f"{self._peer} closed the TCP connection")
            return
        self.incoming.write(data)
        if self.handshaking and not self.handshake():
            return
        self.read_records()

    def handshake(self) -> bool:
        """One step of a non-blocking handshake: True once complete. Our side of an unfinished
        exchange is sent, and the alert of a failure (reported to ``on_handshake_failed``); the
        last flight of a complete one goes with the owner's next write() or flush(), usually
        from ``on_read_done``."""
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self.flush()
            return False
        except (ssl.SSLError, OSError) as error:
            self.flush()
            self._on_handshake_failed(getattr(error, "reason", None) or str(error))
            return False
        self.handshaking = False
        if self._on_established is not None:
            self._on_established()
        return True

    def read_records(self) -> None:
        """Decrypt every complete record waiting in ``incoming`` and hand the plaintext over."""
        view = memoryview(self._plaintext)
        size = len(view)
        filled = 0
        peer_closed = False
        while True:
            try:
                # With a buffer, read() returns the byte count (typeshed says bytes).
                count = cast(int, self.tls.read(size - filled, view[filled:]))
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                peer_closed = True
                break
            except ssl.SSLError as error:
                self._on_lost(f"TLS error: {error.reason or error}")
                return
            if count == 0:
                peer_closed = True
                break
            filled += count
            if size - filled < _RECORD_ROOM:
                self._on_plaintext(view[:filled])
                filled = 0
        if filled:
            self._on_plaintext(view[:filled])
        self._on_read_done()
        if peer_closed and not self.closed:
            self._on_lost(f"{self._peer} closed TLS")

    def _read_plain(self) -> None:
        view = memoryview(self._plaintext)[:RECV_SIZE]
        try:
            count = self.sock.recv_into(view)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._on_lost(f"connection error: {error.strerror or error}")
            return
        if not count:
            self._on_lost(f"{self._peer} closed the TCP connection")
            return
        self._on_plaintext(view[:count])
        self._on_read_done()

    # ---- writing ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Encrypt ``data`` (dropped while the handshake is not done) and send all TLS output."""
        if self.passthrough:
            if data:
                self._pending.append(bytes(data))
                self.pending_bytes += len(data)
            self._send_pending()
            return
        if data and not self.handshaking:
            try:
                self.tls.write(data)
            except ssl.SSLError as error:
                self._on_lost(f"TLS write failed: {error.reason or error}")
                return
        self.flush()

    def flush(self) -> None:
        """Encrypted bytes from the TLS object to the socket, keeping what the socket refuses."""
        data = self.outgoing.read()
        if data:
            self._pending.append(data)
            self.pending_bytes += len(data)
        self._send_pending()

    def _send_pending(self) -> None:
        sock = self.sock
        if sock.fileno() < 0:
            return
        pending = self._pending
        while pending:
            chunk = pending[0]
            try:
                sent = sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                pending.clear()
                self.pending_bytes = 0
                if not self.closed:
                    self._on_lost(f"send failed: {error.strerror or error}")
                return
            self.pending_bytes -= sent
            if sent < len(chunk):
                pending[0] = chunk[sent:]
                break
            pending.pop(0)
        if pending and not self._writing and not self.closed:
            self._writing = True
            self.loop.add_writer(sock.fileno(), self._send_pending)
        elif not pending and self._writing:
            self._writing = False
            self.loop.remove_writer(sock.fileno())
        self._apply_backpressure()

    def _apply_backpressure(self) -> None:
        if not self._backpressure or self.closed:
            return
        if not self.paused and self.pending_bytes > HIGH_WATER:
            self.paused = True
            self._on_backpressure(True)
        elif self.paused and self.pending_bytes < LOW_WATER:
            self.paused = False
            self._on_backpressure(False)

    # ---- ending ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop watching the socket, send what the socket takes right now, close it. Idempotent;
        no callback runs after this."""
        if self.closed:
            return
        self.closed = True
        fd = self.sock.fileno()
        if fd >= 0:
            if self._reading:
                self._reading = False
                self.loop.remove_reader(fd)
            if self._writing:
                self._writing = False
                self.loop.remove_writer(fd)
            with contextlib.suppress(OSError):
                self._send_pending()
        self.sock.close()
