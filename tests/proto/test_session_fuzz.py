"""Property tests: whatever bytes and timings a peer produces, a session never raises, never hangs and
never buffers without bound.

After any input, letting ten minutes of fake time pass must leave each session either closed (one
SessionClosed) or established; a session that is not closed always has a timer armed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.wire import SERVER_CERT_HASHES, Wire, make_wire
from vpnd.proto.ppp.auth.types import AuthMethod
from vpnd.proto.ppp.auth.verify import decide_with_password
from vpnd.proto.session import (
    AuthRequested,
    ClientSession,
    Ipv4AddressNeeded,
    ServerSession,
    SessionClosed,
)
from vpnd.proto.sstp.channel import ChannelState

MAX_SSTP_PACKET = 4095
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
METHODS = st.sampled_from(list(AuthMethod))
TEN_MINUTES = 600.0

Session = ServerSession | ClientSession


def established(session: Session) -> bool:
    channel = session.channel
    connected = (ChannelState.SERVER_CALL_CONNECTED, ChannelState.CLIENT_CALL_CONNECTED)
    return not session.closed and channel is not None and channel.state in connected


def check_bounded(session: Session) -> None:
    if session.channel is not None:
        assert session.channel.buffered_bytes < MAX_SSTP_PACKET
    if isinstance(session, ServerSession):
        assert session.http.buffered_bytes <= session.settings.http.max_line_bytes
    else:
        assert session.http.buffered_bytes <= 8192


def check_not_stuck(session: Session) -> None:
    if not session.closed:
        assert session.get_timer() is not None, "an open session with no timer can hang forever"
    else:
        assert session.get_timer() is None


def check_final(session: Session, events: Sequence[object]) -> None:
    closed = [e for e in events if isinstance(e, SessionClosed)]
    assert len(closed) <= 1, "SessionClosed is emitted once"
    if session.closed:
        assert len(closed) == 1 and session.close_reason == closed[0].reason
        assert session.get_timer() is None
        assert session.data_to_send() == b""  # nothing after the final flush
    else:
        assert not closed
        assert established(session), f"after ten minutes the session is neither closed nor up: {session}"


# ---- a pair of sessions with explicit queues ---------------------------------------------------


@dataclass
class Pair:
    """Server and client with the bytes between them queued, so tests choose when they arrive."""

    wire: Wire
    now: float = 0.0
    to_server: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    server_events: list[object] = field(default_factory=list)
    client_events: list[object] = field(default_factory=list)
    mutate_to_server: Callable[[int, bytes], bytes] | None = None
    segments_to_server: int = 0

    @property
    def server(self) -> ServerSession:
        return self.wire.server

    @property
    def client(self) -> ClientSession:
        return self.wire.client

    def collect(self) -> bool:
        moved = False
        data = self.client.data_to_send()
        if data:
            if self.mutate_to_server is not None:
                data = self.mutate_to_server(self.segments_to_server, data)
            self.segments_to_server += 1
            self.to_server += data
            moved = True
        data = self.server.data_to_send()
        if data:
            self.to_client += data
            moved = True
        while (event := self.server.next_event()) is not None:
            moved = True
            self.server_events.append(event)
            if isinstance(event, AuthRequested):
                password = self.wire.passwords.get(event.request.username)
                self.server.decide(decide_with_password(event.request, password), self.now)
            elif isinstance(event, Ipv4AddressNeeded):
                self.server.assign_ipv4(self.wire.ipv4, self.now)
        while (event := self.client.next_event()) is not None:
            moved = True
            self.client_events.append(event)
        return moved

    def deliver(self, to_server: bool, limit: int | None = None) -> None:
        queue = self.to_server if to_server else self.to_client
        size = len(queue) if limit is None else min(limit, len(queue))
        if not size:
            return
        chunk = bytes(queue[:size])
        del queue[:size]
        session: Session = self.server if to_server else self.client
        session.receive_data(chunk, self.now)
        check_bounded(session)
        check_not_stuck(session)

    def settle(self, rounds: int = 400) -> None:
        for _ in range(rounds):
            self.collect()
            if not self.to_server and not self.to_client and not self.collect():
                return
            self.deliver(True)
            self.deliver(False)
        raise AssertionError("the sessions kept talking without a pause")

    def fire(self, session: Session, now: float) -> None:
        session.handle_timer(now)
        check_bounded(session)

    def run_clock(self, seconds: float) -> None:
        """Jump from deadline to deadline, delivering everything in between."""
        end = self.now + seconds
        for _ in range(10_000):
            self.settle()
            for session in (self.server, self.client):
                check_not_stuck(session)
            deadlines = [t for t in (self.server.get_timer(), self.client.get_timer()) if t is not None]
            if not deadlines or min(deadlines) > end:
                self.now = end
                return
            self.now = max(self.now, min(deadlines))
            for session in (self.server, self.client):
                deadline = session.get_timer()
                if deadline is not None and deadline <= self.now:
                    self.fire(session, self.now)
        raise AssertionError("timers fired without end")

    def finish(self) -> None:
        self.settle()
        self.run_clock(TEN_MINUTES)
        check_final(self.server, self.server_events)
        check_final(self.client, self.client_events)


def new_pair(method: AuthMethod) -> Pair:
    pair = Pair(make_wire(method, start=False))
    pair.client.start(SERVER_CERT_HASHES, 0.0)
    return pair


# ---- (a) a valid conversation with the client→server stream mutated ------------------------------


@st.composite
def mutations(draw: st.DrawFn) -> list[tuple[int, str, int, int]]:
    """(segment index, kind, position, value) — applied to the client→server segments."""
    kinds = st.sampled_from(["flip", "truncate", "insert", "set", "drop"])
    op = st.tuples(st.integers(0, 14), kinds, st.integers(0, 4200), st.integers(0, 255))
    return draw(st.lists(op, min_size=1, max_size=4))


def apply_mutations(ops: list[tuple[int, str, int, int]]) -> Callable[[int, bytes], bytes]:
    def mutate(index: int, data: bytes) -> bytes:
        buf = bytearray(data)
        for segment, kind, position, value in ops:
            if segment != index or not buf:
                continue
            at = position % (len(buf) + 1)
            if kind == "flip" and at < len(buf):
                buf[at] ^= 1 << (value % 8)
            elif kind == "set" and at < len(buf):
                buf[at] = value
            elif kind == "truncate":
                del buf[at:]
            elif kind == "insert":
                buf[at:at] = bytes([value]) * (1 + value % 5)
            elif kind == "drop":
                del buf[at : at + 1 + value]
        return bytes(buf)

    return mutate


@FUZZ
@given(method=METHODS, ops=mutations(), chunk=st.integers(1, 300))
def test_mutated_client_stream_never_breaks_the_server(
    method: AuthMethod, ops: list[tuple[int, str, int, int]], chunk: int
) -> None:
    pair = new_pair(method)
    pair.mutate_to_server = apply_mutations(ops)
    # Deliver the client's bytes in `chunk`-sized pieces: every split point gets exercised.
    for _ in range(400):
        pair.collect()
        if not pair.to_server and not pair.to_client and not pair.collect():
            break
        pair.deliver(True, chunk)
        pair.deliver(False)
    pair.finish()


@FUZZ
@given(method=METHODS, splits=st.lists(st.integers(1, 200), min_size=1, max_size=30))
def test_valid_conversation_survives_any_split_points(method: AuthMethod, splits: list[int]) -> None:
    """Unmutated but cut anywhere: the session must come up exactly as in one piece."""
    pair = new_pair(method)
    for turn in range(400):
        pair.collect()
        if not pair.to_server and not pair.to_client and not pair.collect():
            break
        pair.deliver(True, splits[turn % len(splits)])
        pair.deliver(False, splits[(turn + 1) % len(splits)])
    pair.finish()
    assert established(pair.server) and established(pair.client)
    assert pair.server.channel is not None and pair.server.channel.ipv4_open


# ---- (b) random bytes at every phase -------------------------------------------------------------


def sstp_like() -> st.SearchStrategy[bytes]:
    """Packets with a plausible SSTP header: they reach the control and PPP parsers."""
    protocols = st.sampled_from([0xC021, 0xC023, 0xC223, 0x8021, 0x8057, 0x80FD, 0x0021, 0x0057, 0x1234])

    @st.composite
    def packet(draw: st.DrawFn) -> bytes:
        if draw(st.booleans()):
            message_type = draw(st.integers(0, 11))
            attributes = draw(st.lists(
                st.tuples(st.integers(0, 5), st.binary(max_size=110)), max_size=3))
            body = message_type.to_bytes(2, "big") + len(attributes).to_bytes(2, "big")
            for attribute_id, value in attributes:
                length = len(value) + 4 if draw(st.booleans()) else draw(st.integers(0, 0xFFFF))
                body += bytes([0, attribute_id]) + length.to_bytes(2, "big") + value
            control = 1
        else:
            code = draw(st.integers(0, 14))
            info = draw(st.binary(max_size=60))
            ppp = bytes([code, draw(st.integers(0, 255))]) + (len(info) + 4).to_bytes(2, "big") + info
            prefix = b"\xff\x03" if draw(st.booleans()) else b""
            body = prefix + draw(protocols).to_bytes(2, "big") + ppp
            control = 0
        length = len(body) + 4
        if draw(st.integers(0, 9)) == 0:
            length = draw(st.integers(0, 0xFFFF))
        return bytes([0x10, control]) + length.to_bytes(2, "big") + body

    return packet()


PEER_BYTES = st.lists(st.one_of(st.binary(max_size=300), sstp_like()), min_size=1, max_size=8)


def server_phases() -> dict[str, Callable[[], Pair]]:
    def fresh() -> Pair:
        pair = Pair(make_wire(AuthMethod.MSCHAP_V2, start=False))
        pair.client.start(SERVER_CERT_HASHES, 0.0)
        pair.to_server.clear()
        pair.client.data_to_send()
        return pair

    def http_done() -> Pair:
        pair = fresh()
        http = make_wire(AuthMethod.MSCHAP_V2, start=False)
        http.client.start(SERVER_CERT_HASHES, 0.0)
        pair.server.receive_data(http.client.data_to_send(), 0.0)
        pair.server.data_to_send()
        return pair

    def stopped_at(stop: Callable[[Pair], bool]) -> Callable[[], Pair]:
        def build() -> Pair:
            pair = new_pair(AuthMethod.MSCHAP_V2)
            for _ in range(100):
                pair.collect()
                if stop(pair):
                    break
                if not pair.to_server and not pair.to_client and not pair.collect():
                    break
                pair.deliver(True)
                pair.deliver(False)
            return pair
        return build

    def server_state(state: ChannelState) -> Callable[[Pair], bool]:
        return lambda pair: pair.server.channel is not None and pair.server.channel.state is state

    def up() -> Pair:
        pair = new_pair(AuthMethod.MSCHAP_V2)
        pair.settle()
        return pair

    return {
        "http": fresh,
        "connect-request-pending": http_done,
        "call-connected-pending": stopped_at(server_state(ChannelState.SERVER_CALL_CONNECTED_PENDING)),
        "established": up,
    }


SERVER_PHASES = server_phases()


def client_phase(name: str) -> Pair:
    pair = new_pair(AuthMethod.MSCHAP_V2)
    if name == "http":
        pair.to_server.clear()
        pair.client.data_to_send()
        return pair
    for _ in range(100):
        pair.collect()
        channel = pair.client.channel
        if name == "connect-request-sent" and channel is not None:
            break
        state = channel.state if channel is not None else None
        if name == "ack-received" and state is ChannelState.CLIENT_CONNECT_ACK_RECEIVED:
            break
        if not pair.to_server and not pair.to_client and not pair.collect():
            break
        pair.deliver(True)
        pair.deliver(False)
    return pair


CLIENT_PHASES = ["http", "connect-request-sent", "ack-received", "established"]


def feed_and_finish(pair: Pair, victim: Session, chunks: list[bytes]) -> None:
    """Feed the chunks to ``victim`` as if they came from its peer, then let the pair run."""
    for chunk in chunks:
        pair.collect()
        # The victim's own peer is cut off while the garbage arrives: only garbage reaches it.
        if victim is pair.server:
            pair.to_server.clear()
        else:
            pair.to_client.clear()
        victim.receive_data(chunk, pair.now)
        check_bounded(victim)
        check_not_stuck(victim)
        pair.now += 0.25
    pair.finish()


@settings(FUZZ, max_examples=40)
@given(phase=st.sampled_from(list(SERVER_PHASES)), chunks=PEER_BYTES)
def test_random_bytes_into_the_server_at_every_phase(phase: str, chunks: list[bytes]) -> None:
    pair = SERVER_PHASES[phase]()
    feed_and_finish(pair, pair.server, chunks)


@settings(FUZZ, max_examples=40)
@given(phase=st.sampled_from(CLIENT_PHASES), chunks=PEER_BYTES)
def test_random_bytes_into_the_client_at_every_phase(phase: str, chunks: list[bytes]) -> None:
    pair = client_phase(phase) if phase != "established" else SERVER_PHASES["established"]()
    feed_and_finish(pair, pair.client, chunks)


@settings(FUZZ, max_examples=40)
@given(data=st.binary(min_size=1, max_size=9000), chunk=st.integers(1, 5000))
def test_http_garbage_stays_bounded(data: bytes, chunk: int) -> None:
    pair = SERVER_PHASES["http"]()
    for start in range(0, len(data), chunk):
        pair.server.receive_data(data[start : start + chunk], 0.0)
        check_bounded(pair.server)
        check_not_stuck(pair.server)
    pair.run_clock(TEN_MINUTES)
    check_final(pair.server, [*pair.server_events, *_drain(pair.server)])


def _drain(session: Session) -> list[object]:
    events: list[object] = []
    while (event := session.next_event()) is not None:
        events.append(event)
    return events


# ---- (c) random interleavings of delivery and timers ---------------------------------------------


ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("to_server"), st.integers(1, 400)),
        st.tuples(st.just("to_client"), st.integers(1, 400)),
        st.tuples(st.just("wait"), st.integers(0, 90_000)),  # milliseconds
        st.tuples(st.just("fire_server"), st.integers(0, 90_000)),
        st.tuples(st.just("fire_client"), st.integers(0, 90_000)),
        st.tuples(st.just("close_server"), st.just(0)),
        st.tuples(st.just("close_client"), st.just(0)),
    ),
    max_size=40,
)


@settings(FUZZ, max_examples=80)
@given(method=METHODS, actions=ACTIONS)
def test_random_timer_interleavings(method: AuthMethod, actions: list[tuple[str, int]]) -> None:
    pair = new_pair(method)
    for action, value in actions:
        pair.collect()
        if action == "to_server":
            pair.deliver(True, value)
        elif action == "to_client":
            pair.deliver(False, value)
        elif action == "wait":
            pair.now += value / 1000
        elif action in ("fire_server", "fire_client"):
            # handle_timer at any moment: early calls must do nothing harmful, late ones catch up.
            pair.now += value / 1000
            pair.fire(pair.server if action == "fire_server" else pair.client, pair.now)
        elif action == "close_server":
            pair.server.close(pair.now, "fuzz")
        else:
            pair.client.close(pair.now, "fuzz")
        for session in (pair.server, pair.client):
            check_not_stuck(session)
    pair.finish()
    if any(action.startswith("close") for action, _ in actions):
        assert pair.server.closed and pair.client.closed
