"""Rate limits read from RADIUS attributes (simple/Filter-Id, Mikrotik, Cisco) and local users."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpnd.aaa.ratelimit import (
    MAX_KBIT,
    RateLimit,
    attribute_format,
    from_attributes,
    from_local_user,
    parse_cisco,
    parse_mikrotik,
    parse_simple,
)

# -- simple format (Filter-Id) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "download", "upload"),
    [
        ("5000/1000", 5000, 1000),
        ("5000\\1000", 5000, 1000),
        ("5000:1000", 5000, 1000),
        ("2048", 2048, 2048),  # one value limits both directions
        (" 5000 / 1000 ", 5000, 1000),
        ("10M/2M", 10_000, 2_000),
        ("10m/512k", 10_000, 512),
        ("1G/100M", 1_000_000, 100_000),  # G is x1,000,000 kbit/s (1 Gbit/s)
        ("2048000B/512000B", 2048, 512),  # B: bit/s written as x0.001 kbit/s
        ("1.5M/0.5M", 1500, 500),
        ("3,4000/800", 4000, 800),  # time-range id is accepted and ignored
        ("0/1000", 0, 1000),  # 0: that direction is not limited
        ("1B", 1, 1),  # a positive rate never rounds down to "unlimited"
    ],
)
def test_simple_format(text: str, download: int, upload: int) -> None:
    assert parse_simple(text) == RateLimit(download, upload)


def test_simple_format_multiplier_turns_bps_into_kbit() -> None:
    assert parse_simple("5000000/1000000", multiplier=0.001) == RateLimit(5000, 1000)
    assert parse_simple(b"2/1", multiplier=1000) == RateLimit(2000, 1000)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("premium", "download value 'premium' is not a number"),
        ("", "download value '' is not a number"),
        ("5000/", "upload value '' is not a number"),
        ("1/2/3", "more than two values"),
        ("5000/abc", "upload value 'abc'"),
        ("-5/10", "download value '-5'"),
        ("5T", "download value '5T'"),
        ("99999999999999M", "above the"),
        ("1,", "download value ''"),
    ],
)
def test_simple_format_errors_say_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_simple(text, what="Filter-Id")


def test_non_ascii_bytes_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not ASCII"):
        parse_simple(b"\xff\xfe/1")


# -- Mikrotik-Rate-Limit --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "download", "upload"),
    [
        ("1M/5M", 5000, 1000),  # rx (router receives) = client upload, tx = client download
        ("512k/2M", 2000, 512),
        ("512K/2m", 2000, 512),
        ("2M", 2000, 2000),
        ("1000000/5000000", 5000, 1000),  # bare numbers are bit/s
        ("1M/5M 2M/10M 768k/4M 10/10 8 0/0", 5000, 1000),  # burst fields are ignored
        ("1G/10G", 10_000_000, 1_000_000),
        ("0/0", 0, 0),
        ("500/500", 1, 1),
    ],
)
def test_mikrotik_format(text: str, download: int, upload: int) -> None:
    assert parse_mikrotik(text) == RateLimit(download, upload)


@pytest.mark.parametrize(
    ("text", "words"),
    [("", "empty value"), ("fast", "'fast' is not a rate"), ("1M/2M/3M", "more than two"), ("1M/x", "tx")],
)
def test_mikrotik_errors(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_mikrotik(text)


# -- Cisco-AVPair ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ip:rate-limit output 5000000 937500 1875000", ("download", 5000)),
        ("ip:rate-limit input 1000000 187500 375000", ("upload", 1000)),
        (
            "ip:rate-limit output 8000000 1500000 3000000 conform-action transmit exceed-action drop",
            ("download", 8000),
        ),
        ("ip:rate-limit=output 256000 48000 96000", ("download", 256)),
        ("ip:rate-limit output access-group 101 2000000 375000 750000", ("download", 2000)),
        ("ip:rate-limit input access-group rate-limit 1 64000 8000 8000", ("upload", 64)),
        ("IP:Rate-Limit Output 1000", ("download", 1)),
        ("shell:priv-lvl=15", None),  # other AV pairs are not rate limits
        ("ip:addr-pool=main", None),
    ],
)
def test_cisco_pairs(text: str, expected: tuple[str, int] | None) -> None:
    assert parse_cisco(text) == expected


@pytest.mark.parametrize(
    "text", ["ip:rate-limit sideways 1000 2 3", "ip:rate-limit output fast", "ip:rate-limit output"]
)
def test_cisco_broken_rate_limit_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="is not 'ip:rate-limit output\\|input"):
        parse_cisco(text)


# -- choosing the attribute per configuration ----------------------------------------------------


def test_filter_id_is_the_default_attribute() -> None:
    assert from_attributes({"Filter-Id": "5000/1000"}) == RateLimit(5000, 1000)
    assert from_attributes({"Filter-Id": ["5000/1000"]}) == RateLimit(5000, 1000)
    assert from_attributes({"filter-id": "64"}) == RateLimit(64, 64)  # names match without case


def test_absent_attribute_means_no_rate_limit() -> None:
    assert from_attributes({}) is None
    assert from_attributes({"Session-Timeout": 3600, "Class": b"x"}) is None
    assert from_attributes({"Filter-Id": []}) is None


def test_configured_attribute_and_multiplier() -> None:
    reply = {"Filter-Id": "ignored", "Rate-Kbps": "8000/2000", "Rate-Bps": "8000000/2000000"}
    assert from_attributes(reply, "Rate-Kbps") == RateLimit(8000, 2000)
    assert from_attributes(reply, "Rate-Bps", multiplier=0.001) == RateLimit(8000, 2000)


def test_integer_attribute_is_one_rate_for_both_directions() -> None:
    assert from_attributes({"Acct-Rate": 4096}, "Acct-Rate") == RateLimit(4096, 4096)
    assert from_attributes({"Acct-Rate": 4096000}, "Acct-Rate", multiplier=0.001) == RateLimit(4096, 4096)


def test_mikrotik_vendor() -> None:
    reply = {"Filter-Id": "1/1", "Mikrotik-Rate-Limit": "2M/8M 4M/16M"}
    assert from_attributes(reply, "Mikrotik-Rate-Limit", "Mikrotik") == RateLimit(8000, 2000)
    # The vendor prefix may be left out of the configured name.
    assert from_attributes(reply, "Rate-Limit", "Mikrotik") == RateLimit(8000, 2000)
    # Mikrotik values carry their own unit: the multiplier is not applied to them.
    assert from_attributes(reply, "Mikrotik-Rate-Limit", "Mikrotik", 0.001) == RateLimit(8000, 2000)


def test_cisco_vendor_combines_output_and_input_pairs() -> None:
    reply = {
        "Cisco-AVPair": [
            "shell:priv-lvl=15",
            "ip:rate-limit output 6000000 1125000 2250000 conform-action transmit exceed-action drop",
            "ip:rate-limit input 1500000 281250 562500 conform-action transmit exceed-action drop",
            "ip:rate-limit output 1000 1000 1000",  # a second output pair: the first wins
        ]
    }
    assert from_attributes(reply, "Cisco-AVPair", "Cisco") == RateLimit(6000, 1500)
    only_down = {"Cisco-AVPair": ["ip:rate-limit output 6000000 1125000 2250000"]}
    assert from_attributes(only_down, "Cisco-AVPair", "Cisco") == RateLimit(6000, 0)
    assert from_attributes({"Cisco-AVPair": "shell:priv-lvl=15"}, "Cisco-AVPair", "Cisco") is None


def test_format_follows_name_then_vendor() -> None:
    assert attribute_format("Filter-Id", None) == "simple"
    assert attribute_format("Mikrotik-Rate-Limit", None) == "mikrotik"
    assert attribute_format("cisco-avpair", None) == "cisco"
    assert attribute_format("Rate-Limit", "Mikrotik") == "mikrotik"
    assert attribute_format("AVPair", "cisco") == "cisco"


def test_first_readable_value_wins_and_plain_beats_time_ranged() -> None:
    assert from_attributes({"Filter-Id": ["acl-web", "3000/600"]}) == RateLimit(3000, 600)
    assert from_attributes({"Filter-Id": ["1,100/100", "2000/400"]}) == RateLimit(2000, 400)
    assert from_attributes({"Filter-Id": ["1,100/50", "2,200/80"]}) == RateLimit(100, 50)


def test_unreadable_attribute_raises_with_every_reason() -> None:
    with pytest.raises(ValueError, match=r"'gold'.*; .*'silver'"):
        from_attributes({"Filter-Id": ["gold", "silver"]})
    with pytest.raises(ValueError, match="unsupported value type"):
        from_attributes({"Filter-Id": 1.5})
    with pytest.raises(ValueError, match="multiplier"):
        from_attributes({"Filter-Id": "1/1"}, multiplier=0.0)
    with pytest.raises(ValueError, match="expected text"):
        from_attributes({"Cisco-AVPair": 5}, "Cisco-AVPair", "Cisco")


# -- local users and the value type --------------------------------------------------------------


def test_local_user_needs_both_directions() -> None:
    assert from_local_user(upload=1000, download=5000) == RateLimit(download_kbit=5000, upload_kbit=1000)
    assert from_local_user(upload=None, download=5000) is None
    assert from_local_user(upload=1000, download=None) is None


def test_rate_limit_checks_its_values() -> None:
    assert str(RateLimit(5000, 1000)) == "5000/1000"
    assert RateLimit(0, 0).unlimited and not RateLimit(0, 1).unlimited
    with pytest.raises(ValueError, match="download_kbit -1 is outside"):
        RateLimit(-1, 0)
    with pytest.raises(ValueError, match="upload_kbit"):
        RateLimit(0, MAX_KBIT + 1)
    with pytest.raises(ValueError, match="integer"):
        RateLimit(True, 1)


# -- garbage never escapes as anything but ValueError --------------------------------------------

attribute_values = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789kKmMgGbB/\\:,. -=", max_size=30),
    st.binary(max_size=40),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.none(),
    st.booleans(),
)


@given(
    value=st.one_of(attribute_values, st.lists(attribute_values, max_size=4)),
    name=st.sampled_from(["Filter-Id", "Mikrotik-Rate-Limit", "Cisco-AVPair"]),
    vendor=st.sampled_from([None, "Mikrotik", "Cisco"]),
    multiplier=st.sampled_from([1.0, 0.001, 1000.0]),
)
def test_garbage_gives_a_rate_limit_none_or_value_error(
    value: object, name: str, vendor: str | None, multiplier: float
) -> None:
    try:
        result = from_attributes({name: value}, name, vendor, multiplier)
    except ValueError as error:
        assert str(error)
    else:
        assert result is None or 0 <= result.download_kbit <= MAX_KBIT


@given(st.text(alphabet="0123456789kKmMgGbBtT/\\:,. rateliminpuoscg-=", max_size=60))
def test_each_parser_raises_only_value_error(text: str) -> None:
    for parse in (parse_simple, parse_mikrotik, parse_cisco):
        try:
            parse(text)
        except ValueError as error:
            assert str(error)
