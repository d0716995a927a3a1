"""Which containers an account reaches without a SAS: its own folders in the hub's storage, and linked accounts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from renderhub.render.asset_lookup import CONTAINER
from renderhub.storage.blob import LinkedAccount, container_for


@dataclass(frozen=True)
class HubContainer:
    """A container in the hub's own storage: `{endpoint}/accounts/{account}/storage/{container}`."""

    account_id: str
    container: str

    def folder(self, storage_root: Path) -> Path:
        return storage_root / self.account_id / self.container


class StorageLinks:
    """The hub's own storage URIs, by its public endpoint, and the Azure Blob accounts linked to the hub."""

    def __init__(self, endpoint: str, linked: Sequence[dict[str, Any]] = ()) -> None:
        self.prefix = endpoint.rstrip("/") + "/accounts/"
        self.entries = list(linked)

    def hub_container(self, uri: str) -> HubContainer | None:
        """The hub container a URI names, or None when it is not the hub's storage."""
        if not uri.lower().startswith(self.prefix.lower()):
            return None
        parts = unquote(uri[len(self.prefix) :]).rstrip("/").split("/")
        if len(parts) != 3 or parts[1] != "storage" or not CONTAINER.fullmatch(parts[2]):
            return None
        return HubContainer(parts[0].lower(), parts[2])

    def uri(self, account_id: str, container: str) -> str:
        return f"{self.prefix}{account_id}/storage/{container}"

    def accounts_for(self, account_id: str) -> list[LinkedAccount]:
        """The linked blob accounts this account may use."""
        account_id = account_id.lower()
        return [
            LinkedAccount(entry["name"], entry["key"], entry["endpoint"])
            for entry in self.entries
            if entry.get("accounts") is None or account_id in [a.lower() for a in entry["accounts"]]
        ]

    def linked(self, account_id: str, uri: str) -> bool:
        """Whether the account reaches this container without a SAS: its own folders of the hub's storage, or a
        container on a blob account linked to the hub for it."""
        hub = self.hub_container(uri)
        if hub is not None:
            return hub.account_id == account_id.lower()
        return container_for(uri, None, self.accounts_for(account_id)) is not None
