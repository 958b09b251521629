"""RFC 1662 async-HDLC framing: FCS-16, escaping, and a decoder that survives any byte stream."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from vpnd.proto.ppp.hdlc import FCS_GOOD, HdlcDecoder, encode_hdlc, fcs16

LCP_REQUEST = bytes.fromhex("ff03c021010100040000")  # FF 03, LCP, Configure-Request with no options


def test_fcs16_check_value() -> None:
    # CRC-16/X-25 (the PPP FCS with its final complement) of "123456789" is 0x906E.
    assert fcs16(b"123456789") ^ 0xFFFF == 0x906E


def test_fcs_over_data_and_its_own_fcs_is_the_good_value() -> None:
    data = b"\xff\x03\xc0\x21\x01\x01\x00\x04"
    fcs = fcs16(data) ^ 0xFFFF
    assert fcs16(data + fcs.to_bytes(2, "little")) == FCS_GOOD == 0xF0B8
    # encode_hdlc appends exactly that FCS, least significant byte first (0xB5D1 needs no escape).
    assert fcs == 0xB5D1
    assert encode_hdlc(data, accm=0) == b"\x7e" + data + b"\xd1\xb5\x7e"


def test_encoding_escapes_flag_escape_and_control_characters() -> None:
    wire = encode_hdlc(b"\x7e\x7d\x01\x41")
    assert wire[0] == 0x7E and wire[-1] == 0x7E
    assert wire[1:7] == b"\x7d\x5e\x7d\x5d\x7d\x21"
    assert wire[7] == 0x41
    # Inside the flags no raw flag may appear, whatever the FCS happens to be.
    assert 0x7E not in wire[1:-1]


def test_accm_selects_which_control_characters_are_escaped() -> None:
    frame = bytes(range(0x20))
    zero_accm = encode_hdlc(frame, accm=0)
    assert zero_accm[1:33] == frame  # nothing below 0x20 escaped
    only_0x11_0x13 = encode_hdlc(frame, accm=(1 << 0x11) | (1 << 0x13))
    assert b"\x7d\x31" in only_0x11_0x13 and b"\x7d\x33" in only_0x11_0x13
    assert b"\x7d\x20" not in only_0x11_0x13[:-3]  # 0x00 left alone (FCS bytes excluded)
    full = encode_hdlc(frame)
    assert all(byte >= 0x20 for byte in full[1:-1])
    for wire in (zero_accm, only_0x11_0x13, full):
        assert HdlcDecoder().feed(wire) == [frame]


def test_frames_split_across_reads_and_shared_flags() -> None:
    first, second = LCP_REQUEST, b"\xff\x03\x80\x21\x01\x02\x00\x04"
    # Consecutive frames may share the flag between them.
    stream = encode_hdlc(first) + encode_hdlc(second)[1:]
    decoder = HdlcDecoder()
    got: list[bytes] = []
    for byte in stream:
        got += decoder.feed(bytes([byte]))
    assert got == [first, second]
    assert decoder.frames == 2 and decoder.bad_fcs == 0


def test_bad_fcs_is_counted_and_dropped() -> None:
    wire = bytearray(encode_hdlc(LCP_REQUEST))
    wire[5] ^= 0x01
    decoder = HdlcDecoder()
    assert decoder.feed(bytes(wire) + encode_hdlc(b"\xff\x03\xc0\x21\x09\x01\x00\x08abcd")) == [
        b"\xff\x03\xc0\x21\x09\x01\x00\x08abcd"
    ]
    assert decoder.bad_fcs == 1 and decoder.frames == 1


def test_abort_sequence_and_runts_are_dropped() -> None:
    decoder = HdlcDecoder()
    assert decoder.feed(b"\x7e\xff\x03\xc0\x7d\x7e") == []
    assert decoder.aborted == 1
    assert decoder.feed(b"\x7e\x01\x02\x7e\x7e\x7e") == []
    assert decoder.runts == 1
    assert decoder.feed(encode_hdlc(LCP_REQUEST)) == [LCP_REQUEST]


def test_oversized_frame_is_dropped_and_the_buffer_stays_bounded() -> None:
    decoder = HdlcDecoder(max_frame=64)
    too_long = encode_hdlc(bytes(range(0x40, 0x40 + 65)))
    assert decoder.feed(too_long) == []
    assert decoder.oversized == 1
    # A flagless flood never grows the buffer past one escaped frame's worth.
    for _ in range(100):
        decoder.feed(b"\x41" * 1000)
        assert len(decoder._buffer) <= 2 * (64 + 2)
    # The next flag ends the discarded junk and the following frame decodes.
    assert decoder.feed(b"\x7e" + encode_hdlc(LCP_REQUEST)) == [LCP_REQUEST]
    assert decoder.feed(encode_hdlc(bytes(64))) == [bytes(64)]


def test_receive_accm_deletes_raw_control_characters_inserted_by_the_line() -> None:
    wire = encode_hdlc(LCP_REQUEST)
    noisy = wire[:3] + b"\x11\x13" + wire[3:]
    assert HdlcDecoder(receive_accm=0xFFFFFFFF).feed(noisy) == [LCP_REQUEST]
    assert HdlcDecoder(receive_accm=0).feed(noisy) == []


@given(st.lists(st.binary(min_size=2, max_size=300), max_size=8), st.integers(0, 0xFFFFFFFF),
       st.integers(1, 64))
def test_round_trip_any_frames_any_accm_any_chunking(frames: list[bytes], accm: int, chunk: int) -> None:
    stream = b"".join(encode_hdlc(frame, accm) for frame in frames)
    decoder = HdlcDecoder(max_frame=300)
    got: list[bytes] = []
    for start in range(0, len(stream), chunk):
        got += decoder.feed(stream[start:start + chunk])
    assert got == frames
    assert decoder.bad_fcs == decoder.runts == decoder.aborted == decoder.oversized == 0


@given(st.binary(max_size=2000), st.binary(min_size=2, max_size=100))
def test_garbage_never_raises_and_the_next_frame_still_decodes(garbage: bytes, frame: bytes) -> None:
    decoder = HdlcDecoder(max_frame=512)
    for frame_out in decoder.feed(garbage):
        assert len(frame_out) <= 512
    # A flag closes whatever the garbage left open (possibly an escape: that frame is aborted).
    assert decoder.feed(b"\x7e" + encode_hdlc(frame)) == [frame]


@given(st.binary(min_size=2, max_size=200), st.integers(0, 10_000), st.integers(1, 255))
def test_a_single_corrupted_byte_is_always_caught(frame: bytes, position: int, flip: int) -> None:
    wire = bytearray(encode_hdlc(frame))
    index = 1 + position % (len(wire) - 2)
    # Bytes that change the framing itself (new flag, new or lost escape) are another matter.
    assume(wire[index] != 0x7D and wire[index] ^ flip not in (0x7D, 0x7E))
    wire[index] ^= flip
    decoder = HdlcDecoder()
    # One wrong byte after unescaping is an error burst of at most 8 bits: FCS-16 detects it.
    assert decoder.feed(bytes(wire)) == []
    assert decoder.bad_fcs == 1
