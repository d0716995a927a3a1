"""Conversions: the three ARR operations (create, get, list) over the store; conversion_runs.py runs them."""

from __future__ import annotations

from renderhub.clock import Clock
from renderhub.config import Settings
from renderhub.errors import Conflict, DelegatedResourceAccessError, NotFound
from renderhub.models import BlobLocation, Conversion, ConversionSettings, ConversionStatus
from renderhub.paging import split_page
from renderhub.storage_links import StorageLinks
from renderhub.store.conversions import ConversionStore, DuplicateConversion


class ConversionManager:
    """Creates conversions (idempotently, as the SDK retries a PUT), reads and lists them."""

    def __init__(self, settings: Settings, store: ConversionStore, links: StorageLinks, clock: Clock) -> None:
        self.settings = settings
        self.store = store
        self.links = links
        self.clock = clock

    async def create(
        self, account_id: str, conversion_id: str, settings: ConversionSettings
    ) -> tuple[Conversion, bool]:
        """A new NotStarted conversion, or the existing one for a retried create with the same settings; 409 for
        the id with other settings, 403 for a container the hub can reach neither by SAS nor as linked storage."""
        for location, what in ((settings.input, "input"), (settings.output, "output")):
            self._check_reachable(account_id, location, what)
        fresh = Conversion(account_id, conversion_id, settings, ConversionStatus.NOT_STARTED, self.clock.now())
        try:
            return await self.store.insert(fresh), True
        except DuplicateConversion:
            existing = await self.store.get(account_id, conversion_id)
        if existing is None:  # cannot happen (conversions are never deleted), but answer as if new
            return await self.create(account_id, conversion_id, settings)
        if not existing.settings.same_as(settings):
            raise Conflict(f"A conversion with the id '{conversion_id}' already exists with other settings.")
        return existing, False

    def _check_reachable(self, account_id: str, location: BlobLocation, what: str) -> None:
        if location.sas is None and not self.links.linked(account_id, location.container_uri):
            raise DelegatedResourceAccessError(
                f"Error accessing connected storage account due to insufficient permissions. The {what} container "
                f"'{location.container_uri}' is neither linked to this account nor given a SAS: give a SAS, use the "
                "hub's own storage, or ask the hub's administrator to link the storage account."
            )

    async def get(self, account_id: str, conversion_id: str) -> Conversion:
        conversion = await self.store.get(account_id, conversion_id)
        if conversion is None:
            raise NotFound(f"No conversion with the id '{conversion_id}' exists.", target="conversion_id")
        return conversion

    async def list_page(self, account_id: str, after_seq: int) -> tuple[list[Conversion], int | None]:
        """One page of the account's conversions, oldest first, and the cursor of the next page if any."""
        limit = self.settings.page_size
        return split_page(await self.store.page(account_id, after_seq, limit + 1), limit)
