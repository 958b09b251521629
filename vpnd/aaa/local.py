"""The local user table (`vpn sstp authentication local-users`) as an authentication backend."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address

from vpnd.aaa.ratelimit import from_local_user
from vpnd.config.definitions import LocalUser
from vpnd.proto.ppp.auth.types import AuthDecision, AuthRequest
from vpnd.proto.ppp.auth.verify import decide_with_password

ERROR_ACCOUNT_DISABLED = 647  # MS-CHAP error code for a disabled account


class LocalAuthenticator:
    """Decides from the configured users; answers at once (RADIUS answers later)."""

    def __init__(self, users: Mapping[str, LocalUser]) -> None:
        self._users = dict(users)

    def authenticate(self, request: AuthRequest) -> AuthDecision:
        username = _strip_domain(request.username)
        user = self._users.get(username)
        if user is not None and user.disable:
            return AuthDecision(False, message="Account disabled", error_code=ERROR_ACCOUNT_DISABLED)
        password = user.password.get_secret_value() if user is not None and user.password else None
        decision = decide_with_password(request, password)
        if not decision.accepted or user is None:
            return decision
        attributes: dict[str, object] = {}
        if user.static_ip is not None:
            attributes["static_ip"] = IPv4Address(user.static_ip)
        limit = user.rate_limit
        rate = from_local_user(limit.upload, limit.download) if limit is not None else None
        if rate is not None:
            attributes["rate_limit"] = rate
        return AuthDecision(
            True,
            message=decision.message,
            authenticator_response=decision.authenticator_response,
            keys=decision.keys,
            attributes=attributes,
        )

    def has_user(self, username: str) -> bool:
        user = self._users.get(_strip_domain(username))
        return user is not None and not user.disable


def _strip_domain(username: str) -> str:
    """Windows sends DOMAIN\\user; the table holds the bare user name."""
    return username.rsplit("\\", 1)[-1]
