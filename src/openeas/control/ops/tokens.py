"""Token rotation of services and groups: a second token while callers move over.

`rotate` makes a fresh token current and keeps the previous one beside it; the gateways accept
both (gateway/auth.py `is_authorized_either`) until `revoke_old` forgets the previous one. Both
are store writes that bump the change feed, so the gateways pick them up on their next snapshot:
no instance or gateway restarts. At most two tokens exist: rotating again before revoking is a
conflict (the caller revokes first), so a token callers still use is never dropped silently.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from openeas.control.context import ControlContext
from openeas.control.errors import ConflictError, InvalidRequestError, NotFoundError
from openeas.spec import new_token
from openeas.store import AlreadyExists, NotFound

TOKEN_KINDS = ("service", "group")
# How long `rotate` waits before handing out the new token: gateways poll the change feed every
# 100 ms and rebuild their snapshot, so after ten polls a caller's first request with it passes.
ROTATE_SETTLE_S = 1.0


@dataclass(frozen=True)
class TokenPair:
    kind: str  # service | group
    name: str
    token: str  # the current one
    old_token: str  # "" when none


class TokenOps:
    def __init__(self, ctx: ControlContext) -> None:
        self.registry = ctx.registry

    async def rotate(self, kind: str, name: str) -> TokenPair:
        _check_kind(kind)
        try:
            await asyncio.to_thread(self.registry.rotate_token, kind, name, new_token())
        except NotFound:
            raise NotFoundError(f"{kind.title()}NotFound", f"{kind} '{name}' does not exist") from None
        except AlreadyExists:
            raise ConflictError(
                "OldTokenStillValid",
                f"{kind} '{name}' already holds two tokens; once callers use the new one, revoke the "
                f"old one (`openeas token revoke {name} --old`), then rotate again",
            ) from None
        await asyncio.sleep(ROTATE_SETTLE_S)
        return await self.show(kind, name)

    async def revoke_old(self, kind: str, name: str) -> TokenPair:
        _check_kind(kind)
        try:
            revoked = await asyncio.to_thread(self.registry.revoke_old_token, kind, name)
        except NotFound:
            raise NotFoundError(f"{kind.title()}NotFound", f"{kind} '{name}' does not exist") from None
        if not revoked:
            raise ConflictError(
                "NoOldToken", f"{kind} '{name}' holds no old token (nothing to revoke; rotate first)"
            )
        return await self.show(kind, name)

    async def show(self, kind: str, name: str) -> TokenPair:
        _check_kind(kind)
        try:
            if kind == "service":
                svc = await asyncio.to_thread(self.registry.get_service, name)
                return TokenPair(kind, name, svc.token, svc.old_token)
            group = await asyncio.to_thread(self.registry.get_group, name)
            return TokenPair(kind, name, group.token, group.old_token)
        except NotFound:
            raise NotFoundError(f"{kind.title()}NotFound", f"{kind} '{name}' does not exist") from None


def _check_kind(kind: str) -> None:
    if kind not in TOKEN_KINDS:
        raise InvalidRequestError("InvalidTokenKind", f"tokens belong to a service or a group, not '{kind}'")
