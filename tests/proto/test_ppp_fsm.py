"""PPP frame codecs and the RFC 1661 automaton (state table edge cases)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpnd.proto.errors import ProtocolError
from vpnd.proto.ppp.frames import (
    CODE_REJECT,
    CONFIGURE_ACK,
    CONFIGURE_NAK,
    CONFIGURE_REJECT,
    CONFIGURE_REQUEST,
    PROTO_IPCP,
    PROTO_LCP,
    TERMINATE_ACK,
    TERMINATE_REQUEST,
    ControlPacket,
    Option,
    decode_control,
    decode_frame,
    decode_options,
    encode_frame,
    encode_options,
    is_control_protocol,
)
from vpnd.proto.ppp.fsm import (
    FsmTimers,
    OptionFsm,
    RequestJudgement,
    Signal,
    State,
)

# ---- frames -------------------------------------------------------------------------------


def test_encode_frame_always_has_address_control_and_two_byte_protocol() -> None:
    assert encode_frame(PROTO_LCP, b"\x01\x00\x00\x04") == bytes.fromhex("ff03c02101000004")
    assert encode_frame(0x0021, b"x") == b"\xff\x03\x00\x21x"


@pytest.mark.parametrize(
    ("frame", "protocol", "info"),
    [
        ("ff03c0210102", PROTO_LCP, "0102"),
        ("c0210102", PROTO_LCP, "0102"),  # ACFC
        ("ff032145", 0x21, "45"),  # PFC
        ("2145", 0x21, "45"),  # both
        ("ff038021", PROTO_IPCP, ""),
    ],
)
def test_decode_frame_variants(frame: str, protocol: int, info: str) -> None:
    got_protocol, got_info = decode_frame(bytes.fromhex(frame))
    assert got_protocol == protocol
    assert bytes(got_info) == bytes.fromhex(info)


@pytest.mark.parametrize("frame", ["", "ff03", "c0", "ff03c020", "0000"])
def test_decode_frame_rejects_bad_protocol_fields(frame: str) -> None:
    with pytest.raises(ProtocolError):
        decode_frame(bytes.fromhex(frame))


def test_control_protocol_split() -> None:
    assert is_control_protocol(PROTO_LCP)
    assert is_control_protocol(PROTO_IPCP)
    assert not is_control_protocol(0x0021)
    assert not is_control_protocol(0x0057)


def test_control_packet_padding_ignored_and_long_length_refused() -> None:
    assert decode_control(bytes.fromhex("0901000608090000ffff")) == ControlPacket(9, 1, b"\x08\x09")
    with pytest.raises(ProtocolError):
        decode_control(bytes.fromhex("09010009aabb"))
    with pytest.raises(ProtocolError):
        decode_control(bytes.fromhex("09010003"))
    with pytest.raises(ProtocolError):
        decode_control(b"\x09\x01\x00")


def test_option_codec_round_trip_and_lying_lengths() -> None:
    options = [Option(1, b"\x05\xac"), Option(7), Option(13, b"\x06")]
    raw = encode_options(options)
    assert raw == bytes.fromhex("010405ac07020d0306")
    assert decode_options(raw) == options
    for bad in ("010405", "0100", "0101", "07"):
        with pytest.raises(ProtocolError):
            decode_options(bytes.fromhex(bad))


@given(st.binary(max_size=64))
def test_decoders_raise_only_protocol_error(data: bytes) -> None:
    for decoder in (decode_frame, decode_control, decode_options):
        with contextlib.suppress(ProtocolError):
            decoder(data)


@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=300))
def test_control_round_trip(code: int, identifier: int, data: bytes) -> None:
    assert decode_control(ControlPacket(code, identifier, data).encode()) == ControlPacket(
        code, identifier, data
    )


@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=20)), max_size=8))
def test_options_round_trip(pairs: list[tuple[int, bytes]]) -> None:
    options = [Option(kind, value) for kind, value in pairs]
    assert decode_options(encode_options(options)) == options


# ---- a toy protocol on the automaton -----------------------------------------------------


class Toy(OptionFsm):
    """Asks for option 1 = ``wanted``; accepts a peer option 1 only with value ``accept``."""

    name = "TOY"

    def __init__(self, wanted: bytes = b"A", accept: bytes = b"A", timers: FsmTimers | None = None):
        super().__init__(timers)
        self.wanted: bytes | None = wanted
        self.accept = accept
        self.acked_peer: list[Option] = []

    def build_request(self) -> list[Option]:
        return [] if self.wanted is None else [Option(1, self.wanted)]

    def judge_request(self, options: list[Option]) -> RequestJudgement:
        judgement = RequestJudgement()
        for option in options:
            if option.type != 1:
                judgement.rejected.append(option)
            elif option.value != self.accept:
                judgement.naked.append((option, Option(1, self.accept)))
        return judgement

    def peer_request_acked(self, options: list[Option]) -> None:
        self.acked_peer = options

    def apply_nak(self, options: list[Option]) -> None:
        for option in options:
            if option.type == 1:
                self.wanted = option.value

    def apply_reject(self, options: list[Option]) -> None:
        if any(option.type == 1 for option in options):
            self.wanted = None


def signals(fsm: OptionFsm) -> list[Signal]:
    out = []
    while (signal := fsm.next_signal()) is not None:
        out.append(signal.kind)
    return out


def sent(fsm: OptionFsm) -> list[ControlPacket]:
    return [decode_control(packet) for packet in fsm.packets_to_send()]


def started(fsm: OptionFsm | None = None, now: float = 0.0) -> OptionFsm:
    fsm = fsm or Toy()
    fsm.open(now)
    fsm.up(now)
    return fsm


def request(identifier: int, *options: Option) -> bytes:
    return ControlPacket(CONFIGURE_REQUEST, identifier, encode_options(list(options))).encode()


def test_open_then_up_sends_request_and_starts_timer() -> None:
    fsm = Toy()
    fsm.open(0.0)
    assert fsm.state is State.STARTING
    assert signals(fsm) == [Signal.STARTED]
    fsm.up(1.0)
    assert fsm.state is State.REQ_SENT
    [packet] = sent(fsm)
    assert packet.code == CONFIGURE_REQUEST
    assert decode_options(packet.data) == [Option(1, b"A")]
    assert fsm.get_timer() == 4.0


def test_up_then_open_goes_through_closed() -> None:
    fsm = Toy()
    fsm.up(0.0)
    assert fsm.state is State.CLOSED
    assert sent(fsm) == []
    fsm.open(0.0)
    assert fsm.state is State.REQ_SENT
    assert len(sent(fsm)) == 1


def test_retransmission_keeps_identifier_and_bytes() -> None:
    fsm = started()
    first = fsm.packets_to_send()
    fsm.handle_timer(2.9)  # not yet
    assert fsm.packets_to_send() == []
    fsm.handle_timer(3.0)
    assert fsm.packets_to_send() == first
    assert fsm.get_timer() == 6.0


def test_max_configure_then_finished_in_stopped() -> None:
    fsm = started(Toy(timers=FsmTimers(max_configure=4)))
    signals(fsm)
    count = len(fsm.packets_to_send())
    now = 0.0
    while fsm.get_timer() is not None:
        now = fsm.get_timer() or now
        fsm.handle_timer(now)
        count += len(fsm.packets_to_send())
    assert count == 4
    assert fsm.state is State.STOPPED
    finished = fsm.next_signal()
    assert finished is not None and finished.kind is Signal.FINISHED
    assert "no answer to 4 Configure-Requests" in finished.reason


def test_full_negotiation_ack_then_peer_request() -> None:
    fsm = started()
    [ours] = sent(fsm)
    fsm.receive(ControlPacket(CONFIGURE_ACK, ours.identifier, ours.data).encode(), 0.5)
    assert fsm.state is State.ACK_RCVD
    fsm.receive(request(7, Option(1, b"A")), 0.6)
    assert fsm.state is State.OPENED
    [ack] = sent(fsm)
    assert (ack.code, ack.identifier, ack.data) == (CONFIGURE_ACK, 7, bytes.fromhex("010341"))
    assert signals(fsm) == [Signal.STARTED, Signal.UP]
    assert fsm.get_timer() is None
    assert fsm.acked_peer == [Option(1, b"A")]


def test_ack_with_wrong_identifier_or_changed_options_is_ignored() -> None:
    fsm = started()
    [ours] = sent(fsm)
    fsm.receive(ControlPacket(CONFIGURE_ACK, (ours.identifier + 1) & 0xFF, ours.data).encode(), 0.1)
    fsm.receive(ControlPacket(CONFIGURE_ACK, ours.identifier, b"\x01\x03B").encode(), 0.1)
    assert fsm.state is State.REQ_SENT
    fsm.receive(ControlPacket(CONFIGURE_ACK, ours.identifier, ours.data).encode(), 0.1)
    assert fsm.state is State.ACK_RCVD
    # A duplicate of the same Ack is stale.
    fsm.receive(ControlPacket(CONFIGURE_ACK, ours.identifier, ours.data).encode(), 0.2)
    assert fsm.state is State.ACK_RCVD
    assert sent(fsm) == []


def test_nak_changes_request_and_new_identifier() -> None:
    fsm = started()
    [ours] = sent(fsm)
    fsm.receive(ControlPacket(CONFIGURE_NAK, ours.identifier, b"\x01\x03Z").encode(), 1.0)
    [again] = sent(fsm)
    assert again.identifier != ours.identifier
    assert decode_options(again.data) == [Option(1, b"Z")]
    assert fsm.state is State.REQ_SENT
    assert fsm.get_timer() == 4.0


def test_reject_must_only_hold_our_options() -> None:
    fsm = started()
    [ours] = sent(fsm)
    fsm.receive(ControlPacket(CONFIGURE_REJECT, ours.identifier, b"\x02\x02").encode(), 1.0)
    assert sent(fsm) == []
    fsm.receive(ControlPacket(CONFIGURE_REJECT, ours.identifier, ours.data).encode(), 1.0)
    [again] = sent(fsm)
    assert again.data == b""


def test_rcr_minus_and_max_failure_turns_nak_into_reject() -> None:
    fsm = started(Toy(timers=FsmTimers(max_failure=2)))
    sent(fsm)
    codes = []
    for identifier in range(4):
        fsm.receive(request(identifier, Option(1, b"B")), 0.1)
        codes.append(sent(fsm)[0].code)
    assert codes == [CONFIGURE_NAK, CONFIGURE_NAK, CONFIGURE_REJECT, CONFIGURE_REJECT]
    assert fsm.state is State.REQ_SENT


def test_reject_wins_over_nak_in_one_answer() -> None:
    fsm = started()
    sent(fsm)
    fsm.receive(request(3, Option(1, b"B"), Option(9, b"xx")), 0.1)
    [answer] = sent(fsm)
    assert (answer.code, answer.identifier, answer.data) == (CONFIGURE_REJECT, 3, b"\x09\x04xx")


def test_ack_sent_then_rca_opens() -> None:
    fsm = started()
    [ours] = sent(fsm)
    fsm.receive(request(1, Option(1, b"A")), 0.1)
    assert fsm.state is State.ACK_SENT
    # Nak while Ack-Sent stays Ack-Sent with a new request.
    fsm.receive(ControlPacket(CONFIGURE_NAK, ours.identifier, b"\x01\x03A").encode(), 0.2)
    assert fsm.state is State.ACK_SENT
    [ack, again] = sent(fsm)
    assert ack.code == CONFIGURE_ACK and again.code == CONFIGURE_REQUEST
    fsm.receive(ControlPacket(CONFIGURE_ACK, again.identifier, again.data).encode(), 0.3)
    assert fsm.state is State.OPENED


def opened() -> Toy:
    fsm = Toy()
    started(fsm)
    [ours] = sent(fsm)
    fsm.receive(request(1, Option(1, b"A")), 0.1)
    fsm.receive(ControlPacket(CONFIGURE_ACK, ours.identifier, ours.data).encode(), 0.2)
    assert fsm.state is State.OPENED
    sent(fsm)
    signals(fsm)
    return fsm


def test_close_from_opened_sends_terminate_then_gives_up_after_max_terminate() -> None:
    fsm = opened()
    fsm.close(10.0, "admin")
    assert fsm.state is State.CLOSING
    assert signals(fsm) == [Signal.DOWN]
    [term] = sent(fsm)
    assert term.code == TERMINATE_REQUEST
    fsm.handle_timer(13.0)
    [term2] = sent(fsm)
    assert term2 == term  # retransmission, same identifier
    fsm.handle_timer(16.0)
    assert sent(fsm) == []
    assert fsm.state is State.CLOSED
    finished = fsm.next_signal()
    assert finished is not None and finished.kind is Signal.FINISHED and finished.reason == "admin"


def test_terminate_ack_finishes_closing_at_once() -> None:
    fsm = opened()
    fsm.close(10.0)
    [term] = sent(fsm)
    fsm.receive(ControlPacket(TERMINATE_ACK, term.identifier).encode(), 10.1)
    assert fsm.state is State.CLOSED
    assert signals(fsm) == [Signal.DOWN, Signal.FINISHED]
    assert fsm.get_timer() is None


def test_peer_terminate_request_in_opened() -> None:
    fsm = opened()
    fsm.receive(ControlPacket(TERMINATE_REQUEST, 42, b"bye").encode(), 5.0)
    [ack] = sent(fsm)
    assert (ack.code, ack.identifier) == (TERMINATE_ACK, 42)
    assert fsm.state is State.STOPPING
    down = fsm.next_signal()
    assert down is not None and down.reason == "peer sent Terminate-Request"
    assert fsm.get_timer() == 8.0  # zrc: one restart interval, then TO-
    fsm.handle_timer(8.0)
    assert fsm.state is State.STOPPED
    assert sent(fsm) == []
    assert signals(fsm) == [Signal.FINISHED]


def test_terminate_request_while_negotiating_returns_to_req_sent() -> None:
    fsm = started()
    sent(fsm)
    fsm.receive(request(1, Option(1, b"A")), 0.1)
    assert fsm.state is State.ACK_SENT
    fsm.receive(ControlPacket(TERMINATE_REQUEST, 9).encode(), 0.2)
    assert fsm.state is State.REQ_SENT
    assert [p.code for p in sent(fsm)] == [CONFIGURE_ACK, TERMINATE_ACK]


def test_closed_answers_requests_with_terminate_ack() -> None:
    fsm = Toy()
    fsm.up(0.0)
    fsm.receive(request(5, Option(1, b"A")), 0.1)
    [answer] = sent(fsm)
    assert (answer.code, answer.identifier) == (TERMINATE_ACK, 5)
    assert fsm.state is State.CLOSED


def test_stopped_restarts_on_configure_request() -> None:
    fsm = started(Toy(timers=FsmTimers(max_configure=1)))
    sent(fsm)
    fsm.handle_timer(3.0)
    assert fsm.state is State.STOPPED
    fsm.receive(request(5, Option(1, b"A")), 4.0)
    assert [p.code for p in sent(fsm)] == [CONFIGURE_REQUEST, CONFIGURE_ACK]
    assert fsm.state is State.ACK_SENT


def test_configure_request_in_opened_renegotiates() -> None:
    fsm = opened()
    fsm.receive(request(9, Option(1, b"A")), 1.0)
    assert [p.code for p in sent(fsm)] == [CONFIGURE_REQUEST, CONFIGURE_ACK]
    assert fsm.state is State.ACK_SENT
    assert signals(fsm) == [Signal.DOWN]


def test_unknown_code_is_code_rejected_with_the_packet() -> None:
    fsm = opened()
    raw = ControlPacket(99, 3, b"hello").encode()
    fsm.receive(raw, 1.0)
    [reject] = sent(fsm)
    assert reject.code == CODE_REJECT and reject.data == raw
    assert fsm.state is State.OPENED


def test_code_reject_of_essential_code_is_fatal() -> None:
    fsm = opened()
    fsm.receive(ControlPacket(CODE_REJECT, 1, bytes([CONFIGURE_REQUEST, 1, 0, 4])).encode(), 1.0)
    assert fsm.state is State.STOPPING
    assert signals(fsm) == [Signal.DOWN]
    [term] = sent(fsm)
    assert term.code == TERMINATE_REQUEST
    # Harmless Code-Reject (of an optional code) keeps the layer.
    other = opened()
    other.receive(ControlPacket(CODE_REJECT, 1, bytes([99, 1, 0, 4])).encode(), 1.0)
    assert other.state is State.OPENED


def test_protocol_reject_while_negotiating_finishes() -> None:
    fsm = started()
    signals(fsm)
    fsm.protocol_rejected(1.0)
    assert fsm.state is State.STOPPED
    finished = fsm.next_signal()
    assert finished is not None and finished.kind is Signal.FINISHED


def test_down_from_opened_and_close_from_starting() -> None:
    fsm = opened()
    fsm.down(1.0)
    assert fsm.state is State.STARTING
    assert signals(fsm) == [Signal.DOWN]
    fsm.close(2.0)
    assert fsm.state is State.INITIAL
    assert signals(fsm) == [Signal.FINISHED]


def test_packets_before_lower_layer_up_are_ignored() -> None:
    fsm = Toy()
    fsm.open(0.0)
    fsm.receive(request(1, Option(1, b"A")), 0.1)
    assert sent(fsm) == []
    assert fsm.state is State.STARTING


def converge(a: OptionFsm, b: OptionFsm, now: float = 0.0, rounds: int = 50) -> None:
    for _ in range(rounds):
        moved = False
        for source, sink in ((a, b), (b, a)):
            for packet in source.packets_to_send():
                sink.receive(packet, now)
                moved = True
        if not moved:
            return


def test_two_automata_converge_through_naks() -> None:
    a, b = Toy(wanted=b"A", accept=b"B"), Toy(wanted=b"C", accept=b"A")
    for fsm in (a, b):
        fsm.open(0.0)
        fsm.up(0.0)
    converge(a, b)
    assert a.state is State.OPENED and b.state is State.OPENED
    assert a.acked_peer == [Option(1, b"B")]
    assert b.acked_peer == [Option(1, b"A")]


@given(st.lists(st.binary(max_size=40), max_size=30), st.booleans())
def test_automaton_never_raises_on_random_packets(packets: list[bytes], open_first: bool) -> None:
    fsm = opened() if open_first else started()
    now = 1.0
    for packet in packets:
        fsm.receive(packet, now)
        now += 0.7
        fsm.handle_timer(now)
        for raw in fsm.packets_to_send():
            decode_control(raw)
    assert isinstance(fsm.state, State)
