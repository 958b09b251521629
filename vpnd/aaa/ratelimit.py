"""Per-session rate limits from RADIUS attributes or the local user table (no I/O).

A `RateLimit` is in kbit/s from the client's point of view: download is what the server sends to
the client, upload what the client sends. 0 in a direction means "not limited".

Three attribute formats are understood, chosen by the configured attribute and vendor
(`radius rate-limit attribute/vendor/multiplier`):

- the simple format (Filter-Id by default): `[range_id,]DOWN[/UP]` in kbit/s, separator `/`, `\\`
  or `:`; one value limits both directions; each value may end in K (x1), M (x1000),
  G (x1,000,000) or B (x0.001), and is multiplied by the configured multiplier (0.001 turns a
  bit/s source into kbit/s). An integer attribute is a single value for both directions.
- Mikrotik-Rate-Limit: `rx[/tx] [burst fields...]` in bit/s with k/M/G suffixes, seen from the
  router: rx is the client's upload, tx its download. Only the first pair is used.
- Cisco-AVPair: `ip:rate-limit output|input [access-group N] <bps> [<normal-burst> <max-burst>]`;
  output is the download. Other AV pairs are ignored.

Mikrotik and Cisco values carry their own unit (bit/s), so the multiplier does not apply to them.
Anything that cannot be read raises ValueError with a message that says why; nothing else
escapes, whatever the input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

# 1 Tbit/s: far above any link, low enough that tc's 64-bit rates and burst sizes never overflow.
MAX_KBIT = 1_000_000_000

_SIMPLE_SUFFIXES = {"": 1.0, "K": 1.0, "M": 1000.0, "G": 1_000_000.0, "B": 0.001}
_BPS_SUFFIXES = {"": 1.0, "K": 1000.0, "M": 1_000_000.0, "G": 1_000_000_000.0}
_NUMBER = r"(\d{1,30}(?:\.\d{1,30})?)"
_SIMPLE_VALUE = re.compile(_NUMBER + r"\s*([KMGB]?)", re.IGNORECASE)
_BPS_VALUE = re.compile(_NUMBER + r"([KMG]?)", re.IGNORECASE)
_RANGE_PREFIX = re.compile(r"(\d{1,10})\s*,(.*)", re.DOTALL)
_CISCO_RATE = re.compile(
    r"(?:ip:)?\s*rate-limit\s*[=\s]\s*(input|output)\s+"
    r"(?:access-group\s+(?:rate-limit\s+)?\d+\s+)?"
    r"(\d{1,30})(?:\s+(\d{1,30})\s+(\d{1,30}))?(?:\s+.*)?",
    re.IGNORECASE | re.DOTALL,
)

AttributeValue = str | bytes | int
Format = Literal["simple", "mikrotik", "cisco"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """kbit/s in each direction as the client sees it; 0 = that direction is not limited."""

    download_kbit: int
    upload_kbit: int

    def __post_init__(self) -> None:
        for name in ("download_kbit", "upload_kbit"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer number of kbit/s, not {value!r}")
            if not 0 <= value <= MAX_KBIT:
                raise ValueError(f"{name} {value} is outside 0..{MAX_KBIT} kbit/s")

    @property
    def unlimited(self) -> bool:
        return self.download_kbit == 0 and self.upload_kbit == 0

    def __str__(self) -> str:
        return f"{self.download_kbit}/{self.upload_kbit}"


def _to_kbit(value: float, what: str) -> int:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what}: {value!r} is not a usable rate")
    if value == 0:
        return 0
    if value > MAX_KBIT:
        raise ValueError(f"{what}: {value:.0f} kbit/s is above the {MAX_KBIT} kbit/s maximum")
    # A positive rate never rounds down to 0, which would mean "unlimited".
    return max(1, round(value))


def _as_text(value: AttributeValue, what: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"{what}: value is not ASCII text") from None
    if isinstance(value, str):
        return value
    raise ValueError(f"{what}: expected text, got {type(value).__name__}")


def parse_simple(value: str | bytes, multiplier: float = 1.0, what: str = "rate limit") -> RateLimit:
    """`[range_id,]DOWN[/UP]` in kbit/s (suffixes K, M, G, B), times `multiplier`.

    The time-range id is accepted and ignored: time ranges are not implemented, so the rate
    applies all day.
    """
    text = _as_text(value, what).strip()
    range_prefix = _RANGE_PREFIX.fullmatch(text)
    if range_prefix is not None:
        text = range_prefix.group(2).strip()
    parts = re.split(r"[/\\:]", text)
    if len(parts) > 2:
        raise ValueError(f"{what}: {text!r} has more than two values (expected DOWN[/UP])")
    rates: list[int] = []
    for part, direction in zip(parts, ("download", "upload"), strict=False):
        match = _SIMPLE_VALUE.fullmatch(part.strip())
        if match is None:
            raise ValueError(
                f"{what}: {direction} value {part.strip()!r} is not a number with an optional "
                "K, M, G or B suffix"
            )
        number = float(match.group(1)) * _SIMPLE_SUFFIXES[match.group(2).upper()]
        rates.append(_to_kbit(number * multiplier, f"{what} ({direction})"))
    if len(rates) == 1:
        rates.append(rates[0])
    return RateLimit(rates[0], rates[1])


def parse_integer(value: int, multiplier: float = 1.0, what: str = "rate limit") -> RateLimit:
    """An integer attribute: one rate in kbit/s (times `multiplier`) for both directions."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what}: expected an integer, got {type(value).__name__}")
    rate = _to_kbit(value * multiplier, what)
    return RateLimit(rate, rate)


def _bps_to_kbit(text: str, what: str) -> int:
    match = _BPS_VALUE.fullmatch(text)
    if match is None:
        raise ValueError(f"{what}: {text!r} is not a rate in bit/s with an optional k, M or G suffix")
    bits = float(match.group(1)) * _BPS_SUFFIXES[match.group(2).upper()]
    return _to_kbit(bits / 1000, what)


def parse_mikrotik(value: str | bytes, what: str = "Mikrotik-Rate-Limit") -> RateLimit:
    """`rx[/tx] ...` in bit/s from the router's side: rx = upload, tx = download."""
    tokens = _as_text(value, what).split()
    if not tokens:
        raise ValueError(f"{what}: empty value")
    parts = tokens[0].split("/")
    if len(parts) > 2:
        raise ValueError(f"{what}: {tokens[0]!r} has more than two rates (expected rx[/tx])")
    upload = _bps_to_kbit(parts[0], f"{what} (rx)")
    download = _bps_to_kbit(parts[1], f"{what} (tx)") if len(parts) == 2 else upload
    return RateLimit(download, upload)


def parse_cisco(value: str | bytes, what: str = "Cisco-AVPair") -> tuple[str, int] | None:
    """One `ip:rate-limit` AV pair -> ("download" | "upload", kbit/s); None for other AV pairs."""
    text = _as_text(value, what).strip()
    if "rate-limit" not in text.lower():
        return None
    match = _CISCO_RATE.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{what}: {text!r} is not 'ip:rate-limit output|input [access-group N] <bps> "
            "<normal-burst> <max-burst>'"
        )
    direction = "download" if match.group(1).lower() == "output" else "upload"
    return direction, _to_kbit(int(match.group(2)) / 1000, f"{what} ({direction})")


def parse_cisco_pairs(values: list[AttributeValue], what: str = "Cisco-AVPair") -> RateLimit | None:
    """All Cisco-AVPair values of a reply: the first output and first input rate-limit win."""
    found: dict[str, int] = {}
    for value in values:
        parsed = parse_cisco(_as_text(value, what), what)
        if parsed is not None:
            found.setdefault(parsed[0], parsed[1])
    if not found:
        return None
    return RateLimit(found.get("download", 0), found.get("upload", 0))


def attribute_format(attribute_name: str, vendor: str | None) -> Format:
    """Which format an attribute is read in: by its name, else by the configured vendor."""
    name = attribute_name.lower()
    vendor_name = (vendor or "").lower()
    if name == "mikrotik-rate-limit" or vendor_name == "mikrotik":
        return "mikrotik"
    if name == "cisco-avpair" or vendor_name == "cisco":
        return "cisco"
    return "simple"


def _lookup(
    attributes: Mapping[str, object], attribute_name: str, vendor: str | None
) -> list[AttributeValue] | None:
    candidates = [attribute_name]
    if vendor and not attribute_name.lower().startswith(vendor.lower() + "-"):
        candidates.append(f"{vendor}-{attribute_name}")
    folded = {key.lower(): key for key in attributes if isinstance(key, str)}
    for candidate in candidates:
        key = candidate if candidate in attributes else folded.get(candidate.lower())
        if key is None:
            continue
        raw = attributes[key]
        values = list(raw) if isinstance(raw, list | tuple) else [raw]
        checked: list[AttributeValue] = []
        for value in values:
            if isinstance(value, bool) or not isinstance(value, str | bytes | int):
                raise ValueError(f"{key}: unsupported value type {type(value).__name__}")
            checked.append(value)
        return checked or None
    return None


def from_attributes(
    attributes: Mapping[str, object],
    attribute_name: str = "Filter-Id",
    vendor: str | None = None,
    multiplier: float = 1.0,
) -> RateLimit | None:
    """The rate limit carried by a RADIUS reply (Access-Accept or CoA-Request).

    `attributes` maps attribute names (as in the dictionary; matched without regard to case) to
    one value or a list of values (str, bytes or int). Returns None when the reply carries no
    rate limit; raises ValueError when it carries one that cannot be read. With several values,
    the first readable one is used (Cisco: the first output and the first input pair).
    """
    if not math.isfinite(multiplier) or multiplier <= 0:
        raise ValueError(f"rate-limit multiplier {multiplier!r} must be a positive number")
    values = _lookup(attributes, attribute_name, vendor)
    if values is None:
        return None
    kind = attribute_format(attribute_name, vendor)
    if kind == "cisco":
        return parse_cisco_pairs(values, attribute_name)
    errors: list[str] = []
    ranged: RateLimit | None = None
    for value in values:
        try:
            if isinstance(value, int):
                return parse_integer(value, multiplier, attribute_name)
            if kind == "mikrotik":
                return parse_mikrotik(value, attribute_name)
            limit = parse_simple(value, multiplier, attribute_name)
        except ValueError as error:
            errors.append(str(error))
            continue
        # A value without a time-range id is the plain rate; prefer it over ranged ones.
        if _RANGE_PREFIX.fullmatch(_as_text(value, attribute_name).strip()) is None:
            return limit
        ranged = ranged or limit
    if ranged is not None:
        return ranged
    raise ValueError("; ".join(errors))


def from_local_user(upload: int | None, download: int | None) -> RateLimit | None:
    """The `local-users username X rate-limit upload/download` pair (kbit/s); None unless both
    are set (the configuration requires both)."""
    if upload is None or download is None:
        return None
    return RateLimit(download_kbit=download, upload_kbit=upload)
