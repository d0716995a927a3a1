"""Who may call: api-version, bearer token, account match, key revocation, rate limit."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import Request

from renderhub.api.schemas import check_api_version
from renderhub.auth import TokenClaims, TokenService, check_account, parse_bearer
from renderhub.clock import Clock
from renderhub.errors import Forbidden
from renderhub.manager import SessionManager
from renderhub.models import Account
from renderhub.ratelimit import RateLimiter
from renderhub.store.repository import Repository

TOKEN_CACHE_SIZE = 10_000


class RecentAccounts:
    """Accounts as read at most `ttl` seconds ago: spares every request a database read, and bounds how
    long a rotated or deleted key's tokens keep working on any hub to `ttl`."""

    def __init__(self, repo: Repository, ttl: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.repo = repo
        self.ttl = ttl
        self._monotonic = monotonic
        self._read: dict[str, tuple[Account | None, float]] = {}

    async def get(self, account_id: str) -> Account | None:
        now = self._monotonic()
        cached = self._read.get(account_id)
        if cached is not None and now - cached[1] < self.ttl:
            return cached[0]
        account = await self.repo.get_account(account_id)
        if len(self._read) >= TOKEN_CACHE_SIZE:
            self._read.clear()
        self._read[account_id] = (account, now)
        return account


@dataclass
class Hub:
    """What a request handler needs, built by the app's lifespan."""

    repo: Repository
    manager: SessionManager
    tokens: TokenService
    limiter: RateLimiter
    clock: Clock
    accounts: RecentAccounts
    relay: httpx.AsyncClient  # to render servers, trusting the hub's CA
    ice_servers: list[dict[str, Any]]  # STUN/TURN, handed to clients as to render servers
    verified: dict[str, TokenClaims]
    asset_roots: list[Path] = field(default_factory=list)  # named models, served to render servers elsewhere


def hub(request: Request) -> Hub:
    return request.app.state.hub


async def authorize(request: Request, account_id: str) -> str:
    """Check a session request's api-version and token; returns the api-version."""
    version = check_api_version(request.query_params.get("api-version"))
    await authenticate(request, account_id)
    return version


async def authenticate(request: Request, account_id: str | None) -> None:
    """Check the bearer token: valid, for this account (None: any account), not revoked, within the rate limit."""
    h = hub(request)
    token = parse_bearer(request.headers.get("authorization"))
    now = h.clock.now()
    claims = h.verified.get(token)
    if claims is None or claims.expires <= now.timestamp():
        claims = h.tokens.verify(token, now)
        if len(h.verified) >= TOKEN_CACHE_SIZE:
            h.verified.clear()
        h.verified[token] = claims
    if account_id is not None and claims.account_id != account_id.lower():
        raise Forbidden("The access token is for another account.")
    check_account(claims, await h.accounts.get(claims.account_id))
    h.limiter.check(claims.account_id)
