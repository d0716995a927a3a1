"""The STS's failed key checks: counted per account and per client address, throttled per caller, bounded in memory.

Who is throttled, and why not the account as a whole: a key is 32 random bytes, so no rate of guessing finds one
and the throttle is there to slow and expose guessers (and buggy scripts), not to stand between an account and
a determined attacker. An account-wide lock would add nothing against guessing but hand anyone who knows an
account id (it is in every session URL, log and arrconfig.json) a way to lock its owner out from elsewhere with
a handful of requests; and it must refuse right keys too, else 200-versus-429 tells a guesser which key is right.
So a caller is throttled by its own failures only: per (account, address), the mistakes of one user, and per
address across accounts, one address probing many accounts. While either is spent, that address answers 429 for
the account even to the right key (no oracle), and the account's owner elsewhere is untouched. Failures per
account are still counted, for the log: a guess spread over many addresses shows there.

Fixed windows per key, held in each replica's memory like the rate limiter's buckets (an attacker spreading
guesses over replicas gets each replica's allowance: a few per minute more). Each table is ordered by window
start and capped: expired windows go first, then the oldest, so cycling addresses or account ids costs the
attacker requests, not the hub memory. Evicting can forgive a throttled caller early, but filling a table takes
`capacity` fresh keys within one window, and one address adds at most `per_address` of them a window.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_SECONDS = 60.0
# A person mistyping a key, or a script with a stale one, fails a few times and stops: five a minute is free.
PER_ADDRESS_AND_ACCOUNT = 5
# One address holding several accounts' keys (a NAT'd office, a CI runner) may fail a few each; 20 a minute
# across accounts still lets one address test only ~29,000 keys a day, against 2^256.
PER_ADDRESS = 20
CAPACITY = 10_000  # windows per table: all three full hold about 8 MiB (measured: ~270 bytes a window)


@dataclass
class Window:
    """Failures since `start`; `told` once the caller has been refused in this window (logged once)."""

    start: float
    failures: int = 0
    told: bool = False


class Windows:
    """Fixed windows by key, oldest start first, at most `capacity` of them."""

    def __init__(self, seconds: float, capacity: int) -> None:
        self.seconds = seconds
        self.capacity = capacity
        self._windows: OrderedDict[str, Window] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def current(self, key: str, now: float) -> Window | None:
        window = self._windows.get(key)
        if window is not None and not window.start <= now < window.start + self.seconds:  # a clock stepping back too
            del self._windows[key]
            return None
        return window

    def count(self, key: str, now: float) -> Window:
        window = self.current(key, now)
        if window is None:
            while self._windows and (
                len(self._windows) >= self.capacity or next(iter(self._windows.values())).start + self.seconds <= now
            ):
                self._windows.popitem(last=False)
            window = self._windows[key] = Window(now)
        window.failures += 1
        return window

    def forget(self, key: str) -> None:
        self._windows.pop(key, None)


@dataclass(frozen=True)
class Refusal:
    """A throttled caller: seconds until it may try again, and whether this is the window's first refusal."""

    retry_after: int
    first: bool


@dataclass(frozen=True)
class Failure:
    """One failed key check, with the counts that go in its log line."""

    by_caller: int  # this address, this account, this window
    by_address: int  # this address, any account
    by_account: int  # this account, any address


class KeyGuesses:
    """Failed STS key checks in this replica: `per_address_and_account` and `per_address` failures a window are
    free, then the caller is refused until its window passes; a limit of 0 turns that one off."""

    def __init__(
        self,
        window_seconds: float = WINDOW_SECONDS,
        per_address_and_account: int = PER_ADDRESS_AND_ACCOUNT,
        per_address: int = PER_ADDRESS,
        *,
        now: Callable[[], float] = time.time,
        capacity: int = CAPACITY,
    ) -> None:
        self._now = now
        self.per_address_and_account = per_address_and_account
        self.per_address = per_address
        self.callers = Windows(window_seconds, capacity)
        self.addresses = Windows(window_seconds, capacity)
        self.accounts = Windows(window_seconds, capacity)

    def refusal(self, account_id: str, address: str) -> Refusal | None:
        """Whether this caller must wait before its key is even looked at (so a right key is refused too)."""
        now, where = self._now(), address_key(address)
        spent = [
            window
            for windows, key, limit in (
                (self.callers, f"{account_key(account_id)} {where}", self.per_address_and_account),
                (self.addresses, where, self.per_address),
            )
            if limit and (window := windows.current(key, now)) is not None and window.failures >= limit
        ]
        if not spent:
            return None
        until = max(window.start for window in spent) + self.callers.seconds
        first = not any(window.told for window in spent)
        for window in spent:
            window.told = True
        return Refusal(max(1, math.ceil(until - now)), first)

    def failed(self, account_id: str, address: str) -> Failure:
        now, where = self._now(), address_key(address)
        return Failure(
            self.callers.count(f"{account_key(account_id)} {where}", now).failures,
            self.addresses.count(where, now).failures,
            self.accounts.count(account_key(account_id), now).failures,
        )

    def succeeded(self, account_id: str, address: str) -> None:
        """A right key clears the caller's own mistakes for this account (never its address's: an attacker holding
        one account's key must not wipe its guesses at others)."""
        self.callers.forget(caller_key(account_id, address))


def account_key(account_id: str) -> str:
    return account_id[:64].lower()


def address_key(address: str) -> str:
    """The address as throttled: IPv6 by its /64, the block one subscriber is handed (rotating within it is free)."""
    if ":" not in address:  # IPv4 as the socket gives it: already one spelling (and parsing costs microseconds)
        return address[:64]
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address[:64]
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


def caller_key(account_id: str, address: str) -> str:
    return f"{account_key(account_id)} {address_key(address)}"
