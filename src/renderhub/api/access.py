"""Who may call: api-version, bearer token, account match, key revocation, rate limit."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import Request

from renderhub.accounts import Accounts
from renderhub.api.schemas import check_api_version
from renderhub.api.sts_throttle import KeyGuesses
from renderhub.auth import TokenClaims, TokenService, check_account, parse_bearer
from renderhub.clock import Clock
from renderhub.conversions import ConversionManager
from renderhub.errors import Forbidden
from renderhub.manager import SessionManager
from renderhub.ratelimit import RateLimiter
from renderhub.reaper import Replicas
from renderhub.regions import RegionDirectory
from renderhub.storage_links import StorageLinks

TOKEN_CACHE_SIZE = 10_000


@dataclass
class Hub:
    """What a request handler needs, built by the app's lifespan."""

    manager: SessionManager
    conversions: ConversionManager
    replicas: Replicas  # this hub and the live replicas sharing its database
    tokens: TokenService
    limiter: RateLimiter
    clock: Clock
    accounts: Accounts
    relay: httpx.AsyncClient  # to render servers, trusting the hub's CA
    ice_servers: list[dict[str, Any]]  # STUN/TURN, handed to clients as to render servers
    verified: dict[str, TokenClaims]
    regions: RegionDirectory  # the deployment's regions, this hub's own among them
    probe_limiter: RateLimiter  # latency probes, per client address
    asset_roots: list[Path] = field(default_factory=list)  # named models, served to render servers elsewhere
    key_guesses: KeyGuesses = field(default_factory=KeyGuesses)  # the STS's failed key checks, throttled
    storage_root: Path = Path("storage")  # the hub's own storage (settings.storage_root)
    upload_limit: int = 2 * 1024**3  # bytes a .zip upload may unpack to
    links: StorageLinks = field(default_factory=lambda: StorageLinks("https", []))  # the hub's storage, linked accounts


def hub(request: Request) -> Hub:
    state: Hub = request.app.state.hub
    return state


async def authorize(request: Request, account_id: str) -> str:
    """Check a session request's api-version and token; returns the api-version."""
    version = check_api_version(request.query_params.get("api-version"))
    await authenticate(request, account_id)
    return version


async def authenticate(request: Request, account_id: str | None) -> None:
    """Check the bearer token: valid, for this account (None: any account), not revoked, within the rate limit."""
    claims = await verified_claims(request, account_id)
    hub(request).limiter.check(claims.account_id)


async def verified_claims(request: Request, account_id: str | None) -> TokenClaims:
    """The bearer token's claims once it is valid, for this account (None: any account) and not revoked."""
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
    check_account(claims, await h.accounts.recent(claims.account_id))
    return claims
