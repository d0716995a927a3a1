"""The hub's own storage as a conversion on a cluster node reaches it: over HTTPS, with a token for the account
(the node does not have the hub's folder). Blobs are listed, read and written through the storage API."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from renderhub.storage.blob import too_big
from renderhub.storage.errors import INPUT_DENIED, INTERNAL_ERROR, OUTPUT_DENIED, StorageFailed, denied
from renderhub.storage.names import folder, layout

API = {"api-version": "2021-01-01"}
TIMEOUT = 60.0
CHUNK = 1 << 20
# The account's rate limit covers the conversion's requests too: a 429 is waited out, a few times.
RETRIES = 6
MAX_RETRY_WAIT = 5.0


@dataclass(frozen=True)
class HubContainer:
    """A container of the hub's storage: its URL, the account token that opens it, the CA that vouches for the
    hub (None: the system's trust store)."""

    url: str
    token: str
    ca_pem: str | None

    @classmethod
    def of(cls, location: dict[str, Any]) -> HubContainer:
        return cls(str(location["hubContainer"]), str(location["token"]), location.get("caPem"))


@contextmanager
def _client(container: HubContainer) -> Iterator[httpx.Client]:
    verify: ssl.SSLContext | bool = ssl.create_default_context(cadata=container.ca_pem) if container.ca_pem else True
    headers = {"Authorization": f"Bearer {container.token}"}
    with httpx.Client(verify=verify, timeout=TIMEOUT, headers=headers) as client:
        yield client


def _checked(response: httpx.Response, denied_code: str) -> None:
    """An answer that is not a success, as the conversion's error: a refused token is the side's denial."""
    if response.status_code in (401, 403):
        raise denied(denied_code)
    if response.status_code >= 300:
        raise StorageFailed(INTERNAL_ERROR, f"The hub's storage answered HTTP {response.status_code}.")


def _wait(response: httpx.Response, attempt: int) -> bool:
    """Whether to try again after this answer (waiting first): the rate limit, or a replica between lives."""
    if response.status_code not in (429, 503) or attempt == RETRIES - 1:
        return False
    try:
        seconds = float(response.headers.get("retry-after", "1"))
    except ValueError:
        seconds = 1.0
    time.sleep(min(max(seconds, 0.1), MAX_RETRY_WAIT))
    return True


@contextmanager
def _reaching() -> Iterator[None]:
    try:
        yield
    except httpx.HTTPError as exc:
        raise StorageFailed(INTERNAL_ERROR, f"The hub's storage could not be reached: {type(exc).__name__}.") from exc


def download(container: HubContainer, prefix: str, dest: Path, max_bytes: int) -> list[str]:
    """Every blob under `prefix` into dest, as storage.blob.download does for Azure (the same layout and limits)."""
    start = folder(prefix)
    with _reaching(), _client(container) as client:
        for attempt in range(RETRIES):
            listed = client.get(container.url, params={**API, "prefix": start})
            if not _wait(listed, attempt):
                break
        _checked(listed, INPUT_DENIED)
        listing = [(str(blob["name"]), int(blob["size"])) for blob in listed.json()["blobs"]]
        files = layout(listing, start)
        if sum(size for _, size in listing) > max_bytes:
            raise too_big(start, max_bytes)
        received = 0
        for name, relative in files:
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            for attempt in range(RETRIES):
                with client.stream("GET", f"{container.url}/{quote(name)}", params=API) as response:
                    if _wait(response, attempt):
                        continue
                    _checked(response, INPUT_DENIED)
                    with target.open("wb") as out:
                        for chunk in response.iter_bytes(CHUNK):
                            received += len(chunk)  # counted as it arrives: a blob may have grown since listed
                            if received > max_bytes:
                                raise too_big(start, max_bytes)
                            out.write(chunk)
                    break
    return [str(relative) for _, relative in files]


def upload(container: HubContainer, prefix: str, files: Sequence[Path]) -> None:
    """Each file to prefix + its name; the hub stores each whole under its name once all of it has arrived."""
    start = folder(prefix)
    with _reaching(), _client(container) as client:
        for path in files:
            url = f"{container.url}/{quote(start + path.name)}"
            for attempt in range(RETRIES):
                with path.open("rb") as data:
                    sent = client.put(url, params=API, content=iter(lambda: data.read(CHUNK), b""),
                                      headers={"Content-Length": str(path.stat().st_size)})  # fmt: skip
                if not _wait(sent, attempt):
                    break
            _checked(sent, OUTPUT_DENIED)
