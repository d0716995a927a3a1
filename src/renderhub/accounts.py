"""Accounts as request handlers reach them: cached reads for token checks, fresh reads for key exchange."""

from __future__ import annotations

import time
from collections.abc import Callable

from renderhub.models import Account
from renderhub.store.repository import Repository

CACHE_SIZE = 10_000


class Accounts:
    """The accounts service of the hub's request handlers (the STS, the access check, health)."""

    def __init__(self, repo: Repository, ttl: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.repo = repo
        self.ttl = ttl
        self._monotonic = monotonic
        self._read: dict[str, tuple[Account | None, float]] = {}

    async def recent(self, account_id: str) -> Account | None:
        """The account as read at most `ttl` seconds ago: spares every request a database read, and bounds how
        long a rotated or deleted key's tokens keep working on any hub to `ttl`."""
        now = self._monotonic()
        cached = self._read.get(account_id)
        if cached is not None and now - cached[1] < self.ttl:
            return cached[0]
        account = await self.repo.get_account(account_id)
        if len(self._read) >= CACHE_SIZE:
            self._read.clear()
        self._read[account_id] = (account, now)
        return account

    async def current(self, account_id: str) -> Account | None:
        """The account as stored now: a key exchange must see a rotation at once."""
        return await self.repo.get_account(account_id)

    async def count(self) -> int:
        """How many accounts exist (health asks it: the answer proves the store is reachable)."""
        return await self.repo.count_accounts()
