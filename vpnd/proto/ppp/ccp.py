"""CCP (RFC 1962) with a pluggable option policy, and MPPE (option 18) when asked for.

SSTP runs inside TLS, so compression and MPPE are normally not used (accel-ppp forces MPPE off
for SSTP). Without MPPE we ask for nothing; with the default policy the peer ends up with no
compression either, and CCP opens empty. When CCP is disabled altogether, the link
Protocol-Rejects 80FD instead. With an ``MppeNegotiation`` CCP asks for option 18 and judges the
peer's option 18 by it; every other option still goes through the policy.
"""

from __future__ import annotations

from collections.abc import Callable

from vpnd.proto.ppp.frames import ControlPacket, Option
from vpnd.proto.ppp.fsm import FsmTimers, OptionFsm, RequestJudgement
from vpnd.proto.ppp.mppe import OPT_MPPE, MppeNegotiation

__all__ = ["OPT_MPPE", "RESET_ACK", "RESET_REQUEST", "Ccp", "CcpPolicy", "reject_every_option"]

RESET_REQUEST = 14
RESET_ACK = 15

CcpPolicy = Callable[[Option], bool]
"""Decides on one peer CCP option: True to acknowledge it, False to reject it."""


def reject_every_option(option: Option) -> bool:
    return False


class Ccp(OptionFsm):
    name = "CCP"

    def __init__(
        self,
        policy: CcpPolicy = reject_every_option,
        timers: FsmTimers | None = None,
        mppe: MppeNegotiation | None = None,
    ) -> None:
        super().__init__(timers)
        self.policy = policy
        self.mppe = mppe
        self.peer_options: list[Option] = []

    def build_request(self) -> list[Option]:
        return self.mppe.request_options() if self.mppe is not None else []

    def judge_request(self, options: list[Option]) -> RequestJudgement:
        judgement = RequestJudgement()
        mppe = self.mppe
        saw_mppe = False
        for option in options:
            if mppe is not None and option.type == OPT_MPPE:
                saw_mppe = True
                verdict = mppe.judge_peer_option(option)
                if verdict is False:
                    judgement.rejected.append(option)
                elif isinstance(verdict, Option):
                    judgement.naked.append((option, verdict))
            elif not self.policy(option):
                judgement.rejected.append(option)
        if mppe is not None and not saw_mppe:
            suggestion = mppe.missing_peer_option()
            if suggestion is not None:
                judgement.naked.append((None, suggestion))
        return judgement

    def peer_request_acked(self, options: list[Option]) -> None:
        self.peer_options = list(options)
        if self.mppe is not None:
            self.mppe.peer_request_acked(options)

    def request_acked(self, options: list[Option]) -> None:
        if self.mppe is not None:
            self.mppe.request_acked(options)

    def apply_nak(self, options: list[Option]) -> None:
        if self.mppe is None:
            return
        for option in options:
            if option.type == OPT_MPPE and self.mppe.asking:
                self.mppe.apply_nak(option)

    def apply_reject(self, options: list[Option]) -> None:
        if self.mppe is not None and any(option.type == OPT_MPPE for option in options):
            self.mppe.apply_reject()

    def handle_other_code(self, packet: ControlPacket, now: float) -> bool:
        # Reset-Request/Ack only matter to a stateful decompressor; stateless MPPE flushes every
        # packet and we run no compressor, so both are accepted and ignored.
        return packet.code in (RESET_REQUEST, RESET_ACK)
