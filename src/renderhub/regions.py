"""The region directory as a hub serves it: read from the database now and then, kept in memory in between."""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from urllib.parse import urlsplit

from renderhub.errors import StoreUnavailable
from renderhub.periodic import every
from renderhub.store.regions import Region, RegionStore

log = logging.getLogger("renderhub.regions")

REFRESH_SECONDS = 5.0  # a region whose hub starts appears in every other hub's directory within this


def origin(url: str) -> str:
    """A URL's origin as a browser writes it in an Origin header: scheme://host[:port], default ports left out."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    port = "" if parts.port in (None, default) else f":{parts.port}"
    return f"{parts.scheme}://{host}{port}"


class RegionDirectory:
    """Every region's name, endpoint and probe URL, this hub's own first written. Served from memory, so that a
    hub whose link to the database is down still answers /regions and /probe, and its CORS checks still pass."""

    def __init__(self, store: RegionStore, own: Region) -> None:
        self.store = store
        self.own = own
        self.regions: list[Region] = [own]
        self.origins: frozenset[str] = frozenset({origin(own.endpoint)})

    async def register(self, now: datetime) -> None:
        """Put this hub's region into the directory as it starts (a replica told another endpoint is overruled,
        and says so)."""
        before = await self.store.register(self.own, now)
        if before is not None:
            log.warning(
                "region %s was listed at %s; it is now at %s (every replica of a region should be told the same "
                "--region-endpoint)", self.own.name, before.endpoint, self.own.endpoint,
            )  # fmt: skip
        await self.refresh()

    async def refresh(self) -> None:
        """Read the directory again; while the database is out of reach, the last one read stays."""
        try:
            found = await self.store.all()
        except StoreUnavailable:
            log.warning("the region directory could not be read; serving the last one read")
            return
        except Exception:  # a bad pass must not end the loop
            log.exception("reading the region directory failed; serving the last one read")
            return
        if not any(region.name == self.own.name for region in found):
            found.append(self.own)  # removed by an administrator while this hub runs: it is still here
        self.regions = sorted(found, key=lambda region: region.name)
        self.origins = frozenset(origin(region.endpoint) for region in self.regions)

    def refreshing(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Read the directory again every few seconds, for the block's duration."""
        return every(REFRESH_SECONDS, self.refresh, "regions")
