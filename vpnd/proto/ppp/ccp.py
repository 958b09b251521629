"""CCP (RFC 1962) with a pluggable option policy; by default every option is rejected.

SSTP runs inside TLS, so compression and MPPE are not used (accel-ppp forces MPPE off for SSTP).
We ask for nothing; with the default policy the peer ends up with no compression either, and
CCP opens empty. When CCP is disabled altogether, the link Protocol-Rejects 80FD instead.
"""

from __future__ import annotations

from collections.abc import Callable

from vpnd.proto.ppp.frames import ControlPacket, Option
from vpnd.proto.ppp.fsm import FsmTimers, OptionFsm, RequestJudgement

RESET_REQUEST = 14
RESET_ACK = 15
OPT_MPPE = 18

CcpPolicy = Callable[[Option], bool]
"""Decides on one peer CCP option: True to acknowledge it, False to reject it."""


def reject_every_option(option: Option) -> bool:
    return False


class Ccp(OptionFsm):
    name = "CCP"

    def __init__(self, policy: CcpPolicy = reject_every_option, timers: FsmTimers | None = None) -> None:
        super().__init__(timers)
        self.policy = policy
        self.peer_options: list[Option] = []

    def build_request(self) -> list[Option]:
        return []

    def judge_request(self, options: list[Option]) -> RequestJudgement:
        return RequestJudgement(rejected=[option for option in options if not self.policy(option)])

    def peer_request_acked(self, options: list[Option]) -> None:
        self.peer_options = list(options)

    def handle_other_code(self, packet: ControlPacket, now: float) -> bool:
        # Reset-Request/Ack only matter to a running decompressor; we run none.
        return packet.code in (RESET_REQUEST, RESET_ACK)
