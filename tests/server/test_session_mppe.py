"""RADIUS MS-MPPE-Encryption-Policy/-Types → one session's MPPE settings (RFC 2548 §2.4.4-5)."""

from __future__ import annotations

import pytest

from vpnd.proto.ppp.mppe import MppePolicy, MppeSettings
from vpnd.server.settings import session_mppe

SERVICE = MppeSettings(MppePolicy.PREFER, frozenset({40, 56, 128}))


@pytest.mark.parametrize(("attributes", "expected"), [
    ({}, None),
    ({"mppe_policy": 2}, MppeSettings(MppePolicy.REQUIRE, SERVICE.key_lengths)),
    ({"mppe_policy": 1}, MppeSettings(MppePolicy.PREFER, SERVICE.key_lengths)),
    ({"mppe_policy": 2, "mppe_types": 4}, MppeSettings(MppePolicy.REQUIRE, frozenset({128}))),
    ({"mppe_types": 6}, MppeSettings(MppePolicy.PREFER, frozenset({40, 128}))),
    ({"mppe_types": 8}, MppeSettings(MppePolicy.PREFER, frozenset({56}))),
    ({"mppe_types": 2}, MppeSettings(MppePolicy.PREFER, frozenset({40}))),
    # Values that say nothing we know keep the service's settings rather than invent a policy.
    ({"mppe_policy": 0}, MppeSettings(MppePolicy.DENY, SERVICE.key_lengths)),  # forbidden
    ({"mppe_policy": 7, "mppe_types": 0x10}, None),
    ({"mppe_policy": "Encryption-Required"}, None),  # names are turned into numbers by the RADIUS code
])
def test_radius_values_map_to_session_settings(attributes: dict[str, object],
                                               expected: MppeSettings | None) -> None:
    assert session_mppe(attributes, SERVICE) == expected
