"""Hostile EAP peers against the real daemon, run in a namespace of its own by test_eap_hostile.py.

The daemon (`negotiation-timeout 5`, protocols eap, local EAP-TLS offered first) meets peers
that flood Identity Responses, send EAP packets whose Length lies, send EAP-TLS fragments that
never end, or start the TLS handshake and stall. Each must be ended within the negotiation
timeout, while a well-behaved EAP-MSCHAPv2 client logs in and pings meanwhile. The daemon's
resident memory is read before and after (prints JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.config.test_session import Pki, b64_der
from tests.support.dialer import Dialer
from tests.support.probes import LogCollector
from vpnd.config.definitions import Config
from vpnd.proto.eap.packets import EapCode, EapPacket, EapType, decode_eap
from vpnd.proto.ppp.auth.types import AuthFailed, AuthMethod, AuthSucceeded, ClientAuth
from vpnd.proto.ppp.frames import PROTO_EAP
from vpnd.server.daemon import Daemon
from vpnd.server.tls import make_self_signed

PORT = 4447
NEGOTIATION_TIMEOUT = 5


class HostilePeer:
    """A ClientAuth that answers EAP Requests with what ``respond`` makes of them."""

    method = AuthMethod.EAP

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._out: list[bytes] = []
        self.sent = 0

    @property
    def protocol(self) -> int:
        return PROTO_EAP

    def start(self, now: float) -> None:
        pass

    def receive(self, packet: bytes, now: float) -> None:
        try:
            eap = decode_eap(packet)
        except Exception:
            return
        if eap.code is not EapCode.REQUEST:
            return
        ident = eap.identifier
        if self.kind == "identity-flood":
            for _ in range(500):
                self._out.append(EapPacket(EapCode.RESPONSE, ident, EapType.IDENTITY, b"mallory").encode())
        elif self.kind == "lying-length":
            for _ in range(50):
                self._out.append(bytes([2, ident, 0xFF, 0xFF, EapType.IDENTITY]) + b"mallory")
        elif eap.type == EapType.IDENTITY:
            self._out.append(EapPacket(EapCode.RESPONSE, ident, EapType.IDENTITY, b"mallory").encode())
        elif self.kind == "endless-fragments" and eap.type == EapType.TLS:
            # L and M on the first, M on every other: a TLS message that never ends.
            flags = b"\xc0\x00\x10\x00\x00" if self.sent == 0 else b"\x40"
            self._out.append(EapPacket(EapCode.RESPONSE, ident, EapType.TLS, flags + bytes(1000)).encode())
        elif self.kind == "stalled-tls" and eap.type == EapType.TLS and self.sent == 0:
            hello = bytes.fromhex("16030100") + bytes([40]) + b"\x01" + bytes(39)  # then nothing more
            self._out.append(EapPacket(EapCode.RESPONSE, ident, EapType.TLS, b"\x00" + hello).encode())
        self.sent += 1

    def packets_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> AuthSucceeded | AuthFailed | None:
        return None

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


def hostile(kind: str) -> Any:
    def factory(method: AuthMethod) -> ClientAuth:
        return HostilePeer(kind)
    return factory


def rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def scenario() -> dict[str, Any]:
    logs = LogCollector.on()
    work = Path(tempfile.mkdtemp(prefix="vpnd-eap-hostile-"))
    cert, key = make_self_signed(work, "vpn.test")
    users_ca = Pki()
    config = Config.model_validate({
        "pki": {"ca": {"users": {"certificate": b64_der(users_ca.ca)}}},
        "vpn": {"sstp": {
            "authentication": {"local-users": {"username": {"alice": {"password": "alice-pw"}}},
                               "protocols": ["eap"], "eap-tls": {"ca-certificate": "users"}},
            "client-ip-pool": {"P": {"range": ["10.87.0.0/24"]}}, "default-pool": "P",
            "gateway-address": "10.87.255.1", "port": PORT,
            "ssl": {"cert-file": str(cert), "key-file": str(key)},
            "limits": {"negotiation-timeout": NEGOTIATION_TIMEOUT},
        }}})
    daemon = Daemon(config, listen_host="127.0.0.1", ifname_prefix="leh")
    await daemon.start()
    rss_before = rss_kib()
    kinds = ["identity-flood", "lying-length", "endless-fragments", "stalled-tls"]
    result: dict[str, Any] = {"hostile": {}}
    started = time.monotonic()
    dialers = {kind: Dialer("127.0.0.1", PORT, "mallory", "x", method=AuthMethod.EAP,
                            client_auth=hostile(kind)) for kind in kinds}
    for dialer in dialers.values():
        await dialer.connect()
    good = Dialer("127.0.0.1", PORT, "alice", "alice-pw", method=AuthMethod.EAP)
    await good.connect()
    await asyncio.wait_for(good.up.wait(), 20)
    result["good_pings"] = await good.ping()
    for kind, dialer in dialers.items():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(dialer.ended.wait(), NEGOTIATION_TIMEOUT + 10)
        result["hostile"][kind] = {"ended": dialer.ended.is_set(), "reason": dialer.close_reason,
                                   "after": round(time.monotonic() - started, 2)}
    result["good_still_up"] = not good.ended.is_set() and await good.ping() == 3
    await good.hang_up()
    await asyncio.sleep(0.5)
    result["connections_left"] = len(daemon.connections)
    result["rss_growth_kib"] = rss_kib() - rss_before
    result["refusals"] = daemon.statistics().get("refused")
    result["logs"] = [line for line in logs.lines if "mallory" in line or "EAP" in line][:40]
    for kind, case in result["hostile"].items():
        print(f"{kind}: ended after {case['after']} s: {case['reason']}", file=sys.stderr)
    await daemon.stop()
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(scenario()), default=str))
    sys.stdout.flush()
