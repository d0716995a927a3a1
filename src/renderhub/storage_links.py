"""Which containers an account reaches without a SAS: its own folders in the hub's storage, and linked accounts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

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
    """The hub's own storage URIs, under any name the hub answers to, and the Azure Blob accounts linked to it."""

    def __init__(self, scheme: str, hosts: Sequence[str], linked: Sequence[dict[str, Any]] = ()) -> None:
        # A browser or a LAN client names the hub as it reaches it: any of the names its certificate covers. Any
        # port: replicas listen on ports of their own behind one load balancer, and a conversion created through
        # one may run on another.
        self.scheme = scheme
        self.hosts = {host.lower().strip("[]") for host in hosts}
        self.entries = list(linked)

    def hub_container(self, uri: str) -> HubContainer | None:
        """The hub container a URI names, or None when it is not the hub's storage."""
        try:
            parts = urlsplit(uri)
            parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
        except ValueError:
            return None
        if parts.scheme != self.scheme or (parts.hostname or "") not in self.hosts:
            return None
        segments = unquote(parts.path).strip("/").split("/")
        if len(segments) != 4 or segments[0] != "accounts" or segments[2] != "storage":
            return None
        if parts.query or parts.fragment or not CONTAINER.fullmatch(segments[3]):
            return None
        return HubContainer(segments[1].lower(), segments[3])

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
