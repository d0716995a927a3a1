"""Whether a client's key still holds: rotating a key or deleting its account revokes its tokens at the hub."""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections.abc import Callable

import httpx

from renderhub.render.access import AccessDenied

FRESH_SECONDS = 0.5  # the hub's answer stands this long: a revocation reaches every render server within ~1.5 s
OFFLINE_GRACE_SECONDS = 300.0  # while the hub is unreachable, the serials of the last contact hold this long
HUB_TIMEOUT = 1.0


class Revoked(AccessDenied):
    """The token's key was rotated or its account deleted: it never holds again."""

    def __init__(self) -> None:
        super().__init__("The token has been revoked: its account key was rotated or the account deleted.")


class KeySerials:
    """The key serials of the account this server serves, as the hub last told them (a token names its key slot and
    that key's serial; a rotation bumps the serial). Asked for with the token being checked, at most once per
    FRESH_SECONDS whatever the number of requests; without a hub to ask (a server started by hand), every
    signed token holds."""

    def __init__(
        self,
        hub: httpx.AsyncClient | None,
        *,
        fresh: float = FRESH_SECONDS,
        grace: float = OFFLINE_GRACE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hub = hub
        self.fresh = fresh
        self.grace = grace
        self._monotonic = monotonic
        # Unknown until the hub answers: the hub that launched this server vouched for its account a moment ago,
        # so until then (within the grace) every key of the account holds, as when the hub is unreachable.
        self._serials: dict[int, int] | None = None
        self._contact = monotonic()  # when the hub last told us the serials (or launched us)
        self._asked = -math.inf  # when we last asked (answered or not)
        self._revoked: set[tuple[int, int]] = set()  # (slot, serial): serials only grow, so these never come back
        self._asking = asyncio.Lock()

    @classmethod
    def asking(cls, hub_url: str | None, hub_ca_pem: str | None) -> KeySerials:
        """Serials asked of the hub at `hub_url` (trusted through its CA's PEM, else the system's store)."""
        if not hub_url:
            return cls(None)
        trust = ssl.create_default_context(cadata=hub_ca_pem) if hub_ca_pem else True
        return cls(httpx.AsyncClient(base_url=hub_url, verify=trust, timeout=HUB_TIMEOUT))

    async def check(self, token: str, slot: int, serial: int) -> None:
        """Raise AccessDenied unless the token's key is current (or was, at a contact within the grace)."""
        if self._hub is None:
            return
        if (slot, serial) not in self._revoked and (self._stale() or self._newer(slot, serial)):
            async with self._asking:  # one request to the hub at a time; the others use its answer
                if self._stale() or self._newer(slot, serial):
                    await self._ask(token, slot, serial)
        if (slot, serial) in self._revoked:
            raise Revoked()
        if self._monotonic() - self._contact > self.grace:
            raise AccessDenied("The hub cannot confirm the token now; retry shortly.")
        # Serials only grow: an older one was rotated away; a newer one (issued after our last contact, so
        # the hub did not answer just now) holds like any key the hub vouched for.
        if self._serials is not None and serial < self._serials.get(slot, serial):
            self._revoked.add((slot, serial))
            raise Revoked()

    def _stale(self) -> bool:
        return self._monotonic() - self._asked >= self.fresh

    def _newer(self, slot: int, serial: int) -> bool:
        """Whether the token names a key newer than the hub's last answer: it was rotated since; ask at once."""
        return self._serials is not None and serial > self._serials.get(slot, serial)

    async def _ask(self, token: str, slot: int, serial: int) -> None:
        assert self._hub is not None
        self._asked = self._monotonic()
        try:
            answer = await self._hub.get("render/keys", headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError:
            return  # unreachable: what the last contact said holds for the grace
        if answer.status_code == 401:
            self._revoked.add((slot, serial))  # the hub refuses this very token: its key is gone
        elif answer.status_code == 200:
            try:
                serials = answer.json()["keySerials"]
                self._serials = {int(slot_name): int(value) for slot_name, value in serials.items()}
            except (ValueError, KeyError, TypeError, AttributeError):
                return
            self._contact = self._asked

    def vouched(self) -> None:
        """The hub has just vouched for the account (it assigned this server a session): its keys are unknown, and
        hold until the hub says otherwise, within the grace."""
        self._serials, self._contact, self._asked = None, self._monotonic(), -math.inf
        self._revoked.clear()

    async def close(self) -> None:
        if self._hub is not None:
            await self._hub.aclose()
