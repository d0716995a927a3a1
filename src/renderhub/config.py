"""One typed Settings object, built at the edge (CLI or test) and passed down."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterable
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from renderhub.models import DEFAULT_REGION, ServerSize, SizeProfile

DEFAULT_SIZES = "sizes.yaml"


def load_linked_storage(path: Path) -> list[dict[str, Any]]:
    """The --linked-storage file: a list of {name, endpoint, key[, accounts]}; ValueError names what is wrong."""
    entries = json.loads(path.read_text())
    if not isinstance(entries, list):
        raise ValueError("it must hold a JSON list of storage accounts")
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("name", "endpoint", "key")):
            raise ValueError(f"entry {n} needs the strings name, endpoint and key")
        if set(entry) - {"name", "endpoint", "key", "accounts"}:
            raise ValueError(
                f"entry {n} has unknown fields: {sorted(set(entry) - {'name', 'endpoint', 'key', 'accounts'})}"
            )
        accounts = entry.get("accounts")
        if accounts is not None and not (isinstance(accounts, list) and all(isinstance(a, str) for a in accounts)):
            raise ValueError(f"entry {n}: accounts must be a list of account ids")
    return entries


class Settings(BaseModel):
    """Everything a hub needs to run; nothing else reads the environment."""

    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    port: int = 8443
    public_host: str | None = None
    data_dir: Path = Path(".renderhub")
    # The region this hub serves (its sessions, conversions, render servers, leader) and the URL clients reach the
    # region at (a load balancer in front of its replicas; default: this hub at its public host).
    region: str = DEFAULT_REGION
    region_endpoint: str | None = None
    database_url: str | None = None
    backend: str = "local"
    # The Ray backend: the cluster's address (HOST:PORT of the head) and the namespace its actors are named in.
    ray_address: str | None = None
    ray_namespace: str = "renderhub"
    # How long a new session may wait for a free render server (a node with room on Ray; on one host, in arrival
    # order, its place shown as queuePosition); 0: a full host or cluster fails it at once (CapacityExceeded).
    queue_timeout_seconds: float = 0.0
    # The warm pool: render servers of each size kept started and unassigned in this region, so that a create
    # finds one Ready (pools.py); none by default.
    warm_pool: dict[str, int] = Field(default_factory=dict)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure_http: bool = False
    sizes_file: Path | None = None
    # Per-account request rate: a token bucket refilled at `rate_limit_per_second`, holding `rate_limit_burst`.
    rate_limit_per_second: float = 20.0
    rate_limit_burst: int = 100
    # Failed STS key checks free per window, per (account, client address) and per address; then 429 until the
    # window passes (api/sts_throttle.py says why these figures and why never the whole account).
    sts_failure_window_seconds: float = Field(default=60.0, gt=0)
    sts_failures_per_address_and_account: int = Field(default=5, ge=0)
    sts_failures_per_address: int = Field(default=20, ge=0)
    # Open connections one client address may hold (more are closed at once); event streams need many.
    max_connections_per_address: int = Field(default=64, ge=1)
    page_size: int = Field(default=100, ge=1)
    retention_days: float = 30.0
    # Sessions that failed before they were ever Ready (they bill nothing) are forgotten sooner: after this
    # long (the SDK's poller and a person have read the error by then), and beyond each account's newest few.
    failed_start_retention_minutes: float = Field(default=10.0, ge=0)
    failed_starts_kept: int = Field(default=100, ge=1)
    token_lifetime_hours: float = 24.0
    # How long a hub trusts an account it read: the most a rotated or deleted key's tokens outlive it.
    account_cache_seconds: float = 1.0
    reaper_interval_seconds: float = 0.25
    start_timeout_seconds: float = 30.0
    stop_grace_seconds: float = 5.0
    shutdown_grace_seconds: float = 5.0
    log_level: str = "info"
    # Render servers: where named models live, which STUN/TURN servers clients and servers use,
    # and whether model URLs may point at loopback, link-local or private addresses (SSRF guard).
    assets_dir: Path | None = None
    ice_servers: list[dict[str, Any]] = Field(default_factory=list)
    allow_private_model_urls: bool = False
    # How long a render server keeps a departed client's scene (model and camera) for the next client; 0: ARR's
    # reset at once.
    scene_grace_seconds: float = Field(default=60.0, ge=0)
    # Conversions: how many run at once on this hub, and the limits each conversion process runs under; the
    # hub's own storage takes uploads up to `storage_upload_limit_mb`, and whether storage URIs may point at
    # loopback, link-local or private addresses (Azurite on this machine, say).
    conversion_concurrency: int = Field(default=1, ge=0)
    conversion_timeout_minutes: float = Field(default=60.0, gt=0)
    conversion_memory_mb: int = Field(default=8192, ge=256)
    conversion_max_input_mb: int = Field(default=2048, ge=1)
    storage_upload_limit_mb: int = Field(default=2048, ge=1)
    # The hub's own storage (default: DATA/storage). Replicas must share it (one path on a shared file system),
    # since a conversion created through one may run on another.
    storage_dir: Path | None = None
    # Files in the hub's own storage not written for this many days are deleted (0: kept until deleted).
    storage_retention_days: float = Field(default=0.0, ge=0)
    allow_private_storage: bool = False
    # Azure Blob accounts conversions reach without a SAS (ARR's linked storage): name, endpoint, key, and the
    # accounts that may use them (absent: every account of this hub).
    linked_storage: list[dict[str, Any]] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def advertised_host(self) -> str:
        """The hostname sessions report: the public host, else the bind host (this machine's name for 0.0.0.0)."""
        if self.public_host:
            return self.public_host
        if self.host in ("0.0.0.0", "::"):
            return socket.getfqdn()
        return self.host

    @property
    def certificate_hosts(self) -> list[str]:
        """The names and addresses the hub's and render servers' certificates must cover: every address
        clients may use, so on 0.0.0.0 this machine's interface addresses too (a LAN client uses those)."""
        hosts = ["localhost", "127.0.0.1", self.advertised_host]
        if self.host not in ("0.0.0.0", "::"):
            return [*hosts, self.host]
        import ifaddr  # read at call time: interfaces come and go

        for adapter in ifaddr.get_adapters():
            for ip in adapter.ips:
                address = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
                if not address.startswith("fe80"):  # link-local: needs a scope no certificate names
                    hosts.append(address)
        return sorted(set(hosts))

    @property
    def scheme(self) -> str:
        return "http" if self.insecure_http else "https"

    @property
    def endpoint(self) -> str:
        """The hub's own URL as clients on this machine reach it."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def region_url(self) -> str:
        """This hub's region as the directory lists it: --region-endpoint, else this hub at its public host."""
        return (self.region_endpoint or f"{self.scheme}://{self.advertised_host}:{self.port}").rstrip("/")

    @property
    def storage_root(self) -> Path:
        """The hub's own storage: a folder per account, a folder per container in it."""
        return self.storage_dir or self.data_dir / "storage"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def asset_roots(self) -> list[Path]:
        return [self.assets_dir or self.data_dir / "assets"]

    @property
    def arrconfig_path(self) -> Path:
        return self.data_dir / "arrconfig.json"

    @property
    def async_database_url(self) -> str:
        """The SQLAlchemy URL with an async driver; SQLite in the data dir unless told otherwise."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'renderhub.db').resolve()}"
        for plain, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain) :]
        return url

    def load_sizes(self) -> dict[ServerSize, SizeProfile]:
        if self.sizes_file is not None:
            text = self.sizes_file.read_text()
        else:
            text = resources.files("renderhub").joinpath(DEFAULT_SIZES).read_text()
        return parse_sizes(yaml.safe_load(text))


SIZE_KEYS = {"teraflops", "price_per_minute", "capacity", "profile"}
# The profile's keys and the check each value must pass (see sizes.yaml for what each means).
PROFILE_KEYS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "max_primitives": ("a whole number or null", lambda v: v is None or (type(v) is int and v > 0)),
    "max_width": ("a whole number of pixels", lambda v: type(v) is int and v > 0),
    "max_height": ("a whole number of pixels", lambda v: type(v) is int and v > 0),
    "max_fps": ("a whole number", lambda v: type(v) is int and v > 0),
    "max_model_mb": ("a number or null", lambda v: v is None or (type(v) in (int, float) and v > 0)),
    "resources": (
        "a mapping of Ray resource names to amounts",
        lambda v: isinstance(v, dict) and all(isinstance(k, str) and type(n) in (int, float) for k, n in v.items()),
    ),
}


def parse_sizes(raw: Any) -> dict[ServerSize, SizeProfile]:
    """Validate the sizes file: both sizes, each with its settings; a key it does not know is an error that names
    it (a misspelt limit would otherwise be silently no limit)."""
    if not isinstance(raw, dict):
        raise ValueError("sizes file: expected the sizes Standard and Premium at its top level")
    sizes = {}
    for size in ServerSize:
        entry = raw.get(size.value)
        if not isinstance(entry, dict):
            raise ValueError(f"sizes file: missing the {size.value} size")
        _check_keys(f"{size.value}", entry, SIZE_KEYS, required=SIZE_KEYS - {"profile"})
        profile = entry.get("profile") or {}
        if not isinstance(profile, dict):
            raise ValueError(f"sizes file: {size.value}.profile must be a mapping")
        _check_keys(f"{size.value}.profile", profile, set(PROFILE_KEYS))
        for key, value in profile.items():
            what, valid = PROFILE_KEYS[key]
            if not valid(value):
                raise ValueError(f"sizes file: {size.value}.profile.{key} must be {what}, not {value!r}")
        try:
            sizes[size] = SizeProfile(
                size=size,
                teraflops=float(entry["teraflops"]),
                price_per_minute=Decimal(str(entry["price_per_minute"])),
                capacity=int(entry["capacity"]),
                profile=dict(profile),
            )
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise ValueError(f"sizes file: {size.value} has a value that is not a number ({exc})") from None
    return sizes


def _check_keys(where: str, entry: dict[str, Any], known: set[str], required: Iterable[str] = ()) -> None:
    for key in entry:
        if key not in known:
            raise ValueError(f"sizes file: unknown key {where}.{key} (known: {', '.join(sorted(known))})")
    for key in sorted(set(required) - set(entry)):
        raise ValueError(f"sizes file: {where}.{key} is missing")


def parse_ice_server(url: str) -> dict[str, Any]:
    """stun:HOST:PORT or turn:USER:PASS@HOST:PORT (also turns:) as a WebRTC RTCIceServer dictionary."""
    scheme, _, rest = url.partition(":")
    if scheme not in ("stun", "turn", "turns") or not rest:
        raise ValueError(f"not a STUN or TURN server: {url!r} (stun:HOST:PORT or turn:USER:PASS@HOST:PORT)")
    credentials, at, address = rest.rpartition("@")
    if not at:
        return {"urls": url}
    username, colon, password = credentials.partition(":")
    if scheme == "stun" or not colon:
        raise ValueError(f"credentials go with TURN servers as turn:USER:PASS@HOST:PORT: {url!r}")
    return {"urls": f"{scheme}:{address}", "username": username, "credential": password}


def parse_warm_pool(entries: Iterable[str]) -> dict[str, int]:
    """`--warm-pool SIZE=N` options as {size: N}; ValueError naming the one that is not."""
    pools: dict[str, int] = {}
    sizes = {size.value.lower(): size.value for size in ServerSize}
    for entry in entries:
        name, _, count = entry.partition("=")
        if name.strip().lower() not in sizes or not (count.strip().isascii() and count.strip().isdigit()):
            raise ValueError(f"--warm-pool {entry!r}: give SIZE=N, SIZE one of {', '.join(sizes.values())}")
        pools[sizes[name.strip().lower()]] = int(count)
    return pools
