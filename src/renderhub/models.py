"""Domain types: accounts, sessions, sizes, usage records and conversions (no I/O)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

# Session and conversion ids, as ARR took them: checked by the API, and by the CLI before it sends one.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,256}")
ID_RULE = "1 to 256 characters of letters, digits, hyphens and underscores"
# The region a hub started without --region serves (sessions from before regions are its); region names as ids.
DEFAULT_REGION = "local"
REGION_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
REGION_RULE = "1 to 64 lowercase letters, digits and hyphens, starting with a letter or digit"


class ServerSize(enum.StrEnum):
    """The size of a render server; ARR's two sizes."""

    STANDARD = "Standard"
    PREMIUM = "Premium"

    @classmethod
    def parse(cls, text: str) -> ServerSize:
        """Case-insensitive, as ARR accepted ("standard" from RenderingSession.ps1)."""
        for size in cls:
            if size.value.lower() == text.lower():
                return size
        raise ValueError(text)


class SessionStatus(enum.StrEnum):
    """A session's lifecycle state; the last three are terminal."""

    STARTING = "Starting"
    READY = "Ready"
    STOPPED = "Stopped"
    EXPIRED = "Expired"
    ERROR = "Error"

    @property
    def live(self) -> bool:
        return self in LIVE_STATUSES


LIVE_STATUSES = (SessionStatus.STARTING, SessionStatus.READY)


@dataclass(frozen=True)
class SizeProfile:
    """What one server size offers and costs, from the sizes config file."""

    size: ServerSize
    teraflops: float
    price_per_minute: Decimal
    capacity: int
    profile: dict[str, Any] = field(default_factory=dict)

    @property
    def default_quota(self) -> int:
        """How many live sessions of this size one account may hold unless told otherwise: half the capacity,
        at least one (so no account can take every server and leave the others CapacityExceeded)."""
        return max(1, self.capacity // 2)


@dataclass(frozen=True)
class Account:
    """An ARR account: two key hashes and a serial per key, bumped to revoke that key's tokens."""

    id: str
    name: str
    primary_key_hash: str
    secondary_key_hash: str
    primary_serial: int
    secondary_serial: int
    created_at: datetime
    idle_timeout_seconds: int | None = None  # its sessions' idle stop unless a create says otherwise (None: off)

    def serial(self, key_slot: int) -> int:
        return self.primary_serial if key_slot == 1 else self.secondary_serial


@dataclass(frozen=True)
class ArrError:
    """Why a session or a conversion failed, as ARR's error object."""

    code: str
    message: str


@dataclass(frozen=True)
class Session:
    """A rendering session, as the manager sees it."""

    account_id: str
    id: str
    size: ServerSize
    max_lease_minutes: int
    status: SessionStatus
    created_at: datetime
    seq: int = 0
    ready_at: datetime | None = None
    ended_at: datetime | None = None
    hostname: str | None = None
    handshake_port: int | None = None
    inspector_port: int | None = None
    teraflops: float | None = None
    error: ArrError | None = None
    backend: str = ""
    backend_state: dict[str, Any] | None = None
    watcher: str | None = None  # the hub replica bringing it up while it starts
    region: str = DEFAULT_REGION  # where it was created: only that region's hubs know it
    queue_position: int | None = None  # while it waits for a free render server of its size: 1 is next
    idle_timeout_seconds: int | None = None  # stopped after this long without a client (None: never)


@dataclass(frozen=True)
class UsageRecord:
    """What one session cost: written once, when the session ends."""

    account_id: str
    session_id: str
    size: ServerSize
    ready_at: datetime | None
    ended_at: datetime
    billable_minutes: int
    cost: Decimal
    region: str = DEFAULT_REGION


class ConversionStatus(enum.StrEnum):
    """A conversion's lifecycle state: ARR's, less Cancelled (there is no cancel operation, and the SDK's poller
    would poll a cancelled conversion forever); the last two are terminal."""

    NOT_STARTED = "NotStarted"
    RUNNING = "Running"
    FAILED = "Failed"
    SUCCEEDED = "Succeeded"

    @property
    def terminal(self) -> bool:
        return self in (ConversionStatus.FAILED, ConversionStatus.SUCCEEDED)


@dataclass(frozen=True)
class BlobLocation:
    """A container, a folder in it ("" or ending in "/") and the SAS to reach it, if the request gave one."""

    container_uri: str
    blob_prefix: str = ""
    # A secret: never echoed, never logged. Not part of what a location is: a retried create may renew it.
    sas: str | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ConversionSettings:
    """What to convert and where to put the result, as the create request said (normalised as ARR did)."""

    input: BlobLocation
    relative_input_path: str
    output: BlobLocation
    output_filename: str

    def same_as(self, other: ConversionSettings) -> bool:
        """The same conversion, whatever SAS each carries (a retry may come with a renewed one)."""
        return self == other  # BlobLocation leaves its SAS out of comparisons

    @property
    def output_uri(self) -> str:
        return f"{self.output.container_uri}/{self.output.blob_prefix}{self.output_filename}"


@dataclass(frozen=True)
class Conversion:
    """An asset conversion, as the hub keeps it."""

    account_id: str
    id: str
    settings: ConversionSettings
    status: ConversionStatus
    created_at: datetime
    seq: int = 0
    error: ArrError | None = None
    output_uri: str | None = None  # once Succeeded
    runner: str | None = None  # the hub replica running it while Running
    attempts: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None
