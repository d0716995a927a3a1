"""Azure Blob containers for conversions: which one a location names, its blobs streamed to disk and back."""

from __future__ import annotations

import mimetypes
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import ContainerClient, ContentSettings, ExponentialRetry

from renderhub.storage import transport
from renderhub.storage.errors import (
    INPUT_DENIED,
    INTERNAL_ERROR,
    INTERNAL_MESSAGE,
    OUTPUT_DENIED,
    PROCESS_FAILED,
    StorageError,
    StorageFailed,
    denied,
)
from renderhub.storage.names import folder, layout

# The client's newest x-ms-version (2026-10-06 in 12.31.1) is one Azurite 3.37.0 refuses; this one both it and Azure
# accept, and pinning it keeps the requests the same when the client library is upgraded.
API_VERSION = "2026-06-06"
# Reads and writes go in blocks of this size: memory stays bounded whatever the size of a blob.
CHUNK = 4 * 1024 * 1024
AZURE_BLOB_SUFFIX = ".blob.core.windows.net"


@dataclass(frozen=True)
class LinkedAccount:
    """An Azure Blob account the operator configured on the hub (Azure itself or an Azurite)."""

    name: str  # e.g. 'devstoreaccount1' or 'mystorage'
    key: str = field(repr=False)  # the account key (base64): a secret, never shown
    endpoint: str  # e.g. 'https://mystorage.blob.core.windows.net' or 'http://127.0.0.1:10000/devstoreaccount1'


@dataclass(frozen=True)
class Container:
    """One blob container and how to reach it: by a SAS from the request, or as a linked account's."""

    uri: str  # the container URL to talk to (mapped to the linked endpoint when linked)
    sas: str | None = field(repr=False)  # without a leading '?'; when given, it is used even on a linked account
    account: LinkedAccount | None


@dataclass(frozen=True)
class Network:
    """How the conversion reaches storage: timeouts (seconds), retries, which addresses and which CAs."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0  # between two reads of a response, not for a whole blob
    retries: int = 3  # of a request that failed without an answer or with 408/5xx, 2, 4, 6 s apart
    # Loopback, link-local and private addresses in a request's container URIs (linked accounts are the
    # operator's own and always allowed).
    allow_private: bool = False
    ca_file: str | None = None  # a PEM bundle trusted instead of the system's (an Azurite with its own certificate)


DEFAULT_NETWORK = Network()


def container_for(storage_container_uri: str, sas: str | None, linked: Sequence[LinkedAccount]) -> Container | None:
    """The container a conversion's location names: with its SAS (a leading '?' stripped; '' means none), or on a
    linked account when the URI is on one (`https://NAME.blob.core.windows.net/C` as Conversion.ps1 builds it, or
    the configured endpoint + '/C'); None when neither (the hub answers 403 DelegatedResourceAccessError)."""
    token = (sas or "").removeprefix("?") or None
    for account in linked:
        mapped = _on_account(storage_container_uri, account)
        if mapped is not None:
            return Container(uri=mapped, sas=token, account=account)
    if token is None:
        return None
    return Container(uri=storage_container_uri.rstrip("/"), sas=token, account=None)


def _on_account(uri: str, account: LinkedAccount) -> str | None:
    """The container URI on the account's configured endpoint, when uri names one of its containers."""
    parts, endpoint = urlsplit(uri), urlsplit(account.endpoint)
    try:
        port, endpoint_port = parts.port, endpoint.port
    except ValueError:  # not a port number
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        return None
    path = parts.path.strip("/")
    if parts.hostname.lower() == account.name.lower() + AZURE_BLOB_SUFFIX and port is None:
        container = path
    elif (parts.scheme, parts.hostname.lower(), _port(parts.scheme, port)) == (
        endpoint.scheme,
        (endpoint.hostname or "").lower(),
        _port(endpoint.scheme, endpoint_port),
    ):
        base = endpoint.path.strip("/")  # an Azurite endpoint names the account in its path
        if base and not path.startswith(f"{base}/"):
            return None
        container = path[len(base) + 1 :] if base else path
    else:
        return None
    if not container or "/" in container:
        return None
    return f"{account.endpoint.rstrip('/')}/{container}"


def _port(scheme: str, port: int | None) -> int:
    return port or (443 if scheme == "https" else 80)


def check_address(uri: str, allow_private: bool) -> None:
    """Refuse loopback, link-local and private addresses unless the operator allowed them (the render server's rule
    for model URLs). Raises StorageFailed. Downloads and uploads check the connected address again."""
    host, port = _host_port(uri)
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise StorageFailed(INTERNAL_ERROR, f"{INTERNAL_MESSAGE} Cannot resolve the storage host '{host}'.") from None
    if any(transport.is_forbidden(str(info[4][0])) for info in infos):
        raise _private(host)


def _host_port(uri: str) -> tuple[str, int]:
    parts = urlsplit(uri)
    try:
        port = _port(parts.scheme, parts.port)
    except ValueError:
        port = 0
    if parts.scheme not in ("http", "https") or not parts.hostname or not port:
        # Never the URI itself: a SAS pasted into it would end up in the conversion's error.
        raise StorageFailed(INTERNAL_ERROR, f"{INTERNAL_MESSAGE} The storage container URI is not an http(s) URL.")
    return parts.hostname, port


def _private(host: str) -> StorageFailed:
    return StorageFailed(
        PROCESS_FAILED,
        f"The storage host '{host}' is a loopback, link-local or private address; this hub does not use those.",
    )


def download(
    container: Container, prefix: str, dest: Path, max_bytes: int, *, network: Network = DEFAULT_NETWORK
) -> list[str]:
    """Every blob under `prefix` into dest (names relative to the prefix, folders created, no path escapes dest: a
    blob named '../x' or absolute is refused), streaming, stopping with StorageFailed past max_bytes in total.
    StorageDenied('InputContainerAccessDenied', ...) when the SAS/key cannot list or read."""
    start = folder(prefix)
    with _translated(INPUT_DENIED, container), _client(container, network) as client:
        listing = [(blob.name, blob.size) for blob in client.list_blobs(name_starts_with=start or None)]
        files = layout(listing, start)
        if sum(size for _, size in listing) > max_bytes:
            raise too_big(start, max_bytes)
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        received = 0
        for name, relative in files:
            target = root / relative
            if not target.resolve().is_relative_to(root):  # a folder of dest that is a link elsewhere
                raise StorageFailed(PROCESS_FAILED, f"The input blob '{name[:256]}' would land outside its folder.")
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                # Counted as it arrives: a blob may have grown since it was listed.
                for chunk in client.download_blob(name, max_concurrency=1).chunks():
                    received += len(chunk)
                    if received > max_bytes:
                        raise too_big(start, max_bytes)
                    out.write(chunk)
    return [str(relative) for _, relative in files]


def too_big(start: str, max_bytes: int) -> StorageFailed:
    where = f"under '{start}'" if start else "in the input container"
    return StorageFailed(PROCESS_FAILED, f"The input {where} is larger than this hub's limit of {max_bytes} bytes.")


def upload(
    container: Container, prefix: str, files: Sequence[Path], *, network: Network = DEFAULT_NETWORK
) -> list[str]:
    """Each file to prefix + its name; returns the blob URLs without any SAS.
    StorageDenied('OutputContainerAccessDenied') when the SAS cannot write (a read-only SAS for the output
    fails the conversion, as ARR did)."""
    start = folder(prefix)
    urls: list[str] = []
    with _translated(OUTPUT_DENIED, container), _client(container, network) as client:
        for path in files:
            name = start + path.name
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            with path.open("rb") as data:
                client.upload_blob(
                    name,
                    data,
                    length=path.stat().st_size,
                    overwrite=True,
                    max_concurrency=1,
                    content_settings=ContentSettings(content_type=content_type),
                )
            urls.append(f"{container.uri.rstrip('/')}/{quote(name, safe='/~')}")
    return urls


def _client(container: Container, network: Network) -> ContainerClient:
    _host_port(container.uri)
    url, credential = container.uri.rstrip("/"), None
    if container.sas is not None:
        url = f"{url}?{container.sas}"  # the client keeps the SAS's own fields and drops anything else
    elif container.account is not None:
        credential = AzureNamedKeyCredential(container.account.name, container.account.key)
    sender = RequestsTransport(
        session=transport.session(allow_private=network.allow_private or container.account is not None),
        connection_timeout=network.connect_timeout,
        read_timeout=network.read_timeout,
        connection_verify=network.ca_file or True,
    )
    try:
        return ContainerClient.from_container_url(
            url,
            credential=credential,
            api_version=API_VERSION,
            transport=sender,
            retry_policy=ExponentialRetry(
                initial_backoff=2, increment_base=2, retry_total=network.retries, random_jitter_range=1
            ),
            permit_redirects=False,  # storage does not redirect; a redirect elsewhere would carry the SAS there
            max_single_get_size=CHUNK,
            max_chunk_get_size=CHUNK,
            max_single_put_size=CHUNK,
            max_block_size=CHUNK,
        )
    except ValueError:
        sender.close()
        raise StorageFailed(INTERNAL_ERROR, f"{INTERNAL_MESSAGE} The storage container URI is not usable.") from None


@contextmanager
def _translated(denied_code: str, container: Container) -> Iterator[None]:
    """Storage client and file errors as StorageErrors. Their causes are dropped on purpose (`from None`): some
    carry the request URL, SAS included."""
    side = "input" if denied_code == INPUT_DENIED else "output"
    try:
        yield
    except StorageError:
        raise
    except transport.PrivatePeer as exc:
        raise _private(exc.host) from None
    except HttpResponseError as exc:
        raise _answered(exc, denied_code, side) from None
    except AzureError as exc:  # no answer: name resolution, refused, timed out, TLS
        where = f"linked storage account '{container.account.name}'" if container.account else "storage host"
        host = "" if container.account else f" '{urlsplit(container.uri).hostname}'"
        reason = type(exc.inner_exception or exc).__name__
        raise StorageFailed(
            INTERNAL_ERROR, f"{INTERNAL_MESSAGE} The {side} {where}{host} could not be reached ({reason})."
        ) from None
    except OSError as exc:
        raise StorageFailed(INTERNAL_ERROR, f"{INTERNAL_MESSAGE} Local {side} files: {exc.strerror}.") from None


def _answered(exc: HttpResponseError, denied_code: str, side: str) -> StorageError:
    raw = getattr(exc, "error_code", None)  # set by the storage client, from the x-ms-error-code header
    code = str(getattr(raw, "value", raw) or "")
    status = exc.status_code
    if status in (401, 403):
        return denied(denied_code)
    if status == 404 and code == "ContainerNotFound":
        return StorageFailed(PROCESS_FAILED, f"The {side} container does not exist.")
    return StorageFailed(INTERNAL_ERROR, f"{INTERNAL_MESSAGE} The {side} storage answered HTTP {status} ({code}).")
