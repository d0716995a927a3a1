"""Finding the model a client asks for: a name in the asset roots, or an http(s) URL fetched safely."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urljoin, urlsplit

import httpx

from renderhub.addresses import forbidden
from renderhub.render.asset_lookup import CONTAINER, find_named, find_referenced
from renderhub.render.config import RenderConfig
from renderhub.render.gltf import ModelError
from renderhub.render.protocol import LoadModelMessage, public_url

SAMPLE_NAME = "sample"
MAX_REDIRECTS = 5
API_VERSION = "2021-01-01"
CONVERTED_FILE_FACTOR = 2  # a converted model's file may be this many times the session's model memory
HUB_STORAGE_ACCOUNT = "renderhub"  # the storage account name that means the hub's own storage in a loadModel
Progress = Callable[[str, float], None]


class Fetcher:
    """Downloads a model and the files it references, within a size limit and a timeout, refusing
    loopback, link-local and private addresses unless the operator allows them (no SSRF)."""

    def __init__(
        self,
        *,
        max_bytes: int,
        timeout: float,
        allow_private: bool,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.allow_private = allow_private
        self.verify = verify
        self._fetched = 0
        self._fetching = ""  # what is being fetched, as a message names it

    async def _address(self, host: str, port: int) -> str:
        """Resolve once and connect to that address, so a DNS answer cannot change after the check."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port)
        except OSError as exc:
            raise ModelError("ModelFetchFailed", f"Cannot resolve '{host}'.") from exc
        addresses = [str(info[4][0]) for info in infos]
        if not self.allow_private and any(forbidden(a) for a in addresses):
            raise ModelError(
                "ModelUrlForbidden",
                f"'{host}' is a loopback, link-local or private address; this server does not fetch from those "
                "(its hub allows them with `renderhub serve --allow-private-model-urls`).",
            )
        return str(addresses[0])

    async def _get(self, client: httpx.AsyncClient, url: str, target: Path, what: str) -> str:
        """Fetch one URL into target, following redirects by hand so each hop is checked; returns the final URL.

        `what` names it in errors: the model's URL, or the file of the model's a URL names."""
        self._fetching = what
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ModelError("InvalidModelUrl", "Model URLs must be http:// or https:// with a host.")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            address = await self._address(parts.hostname, port)
            literal = f"[{address}]" if ":" in address else address
            pinned = parts._replace(netloc=f"{literal}:{port}").geturl()
            request = client.build_request(
                "GET", pinned, headers={"Host": parts.netloc}, extensions={"sni_hostname": parts.hostname}
            )
            response = await client.send(request, stream=True)
            try:
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise ModelError("ModelFetchFailed", f"{what} answered HTTP {response.status_code}.")
                with target.open("wb") as out:
                    async for chunk in response.aiter_bytes():
                        self._fetched += len(chunk)
                        if self._fetched > self.max_bytes:
                            raise ModelError(
                                "ModelTooLarge", f"The model is larger than this session's {self.max_bytes} bytes."
                            )
                        out.write(chunk)
                return url
            finally:
                await response.aclose()
        raise ModelError("ModelFetchFailed", "Too many redirects.")

    async def fetch(self, url: str, workdir: Path, progress: Progress, headers: dict[str, str] | None = None) -> Path:
        """The model at url (and, for .gltf, the buffers and images it names) in workdir."""
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        self._fetched = 0
        try:
            async with asyncio.timeout(self.timeout):
                async with httpx.AsyncClient(
                    timeout=self.timeout, follow_redirects=False, verify=self.verify, headers=headers
                ) as client:
                    progress("download", 0.0)
                    model = workdir / "model.download"
                    final = await self._get(client, url, model, f"The model's URL {public_url(url)}")
                    # The kind comes from where the model ended up: a name may redirect to NAME.gltf.
                    suffix = ".gltf" if urlsplit(final).path.lower().endswith(".gltf") else ".glb"
                    model = model.rename(workdir / f"model{suffix}")
                    if suffix == ".gltf":
                        await self._fetch_references(client, final, model, workdir)
                    progress("download", 1.0)
                    return model
        except TimeoutError as exc:
            raise ModelError("ModelFetchTimeout", f"The model did not download within {self.timeout:g} s.") from exc
        except httpx.HTTPError as exc:
            raise ModelError("ModelFetchFailed", f"{self._fetching}: {_failure(exc)}.") from exc

    async def _fetch_references(self, client: httpx.AsyncClient, base: str, model: Path, workdir: Path) -> None:
        try:
            document = json.loads(model.read_bytes())
        except ValueError as exc:
            raise ModelError("InvalidModel", "The .gltf file is not valid JSON.") from exc
        uris = [item.get("uri") for key in ("buffers", "images") for item in document.get(key, []) or []]
        for uri in uris:
            if not isinstance(uri, str) or uri.startswith("data:"):
                continue
            target = _inside_new(workdir, uri)
            if target is None:
                raise ModelError("InvalidModel", f"The model references a file outside its folder: '{uri[:128]}'.")
            target.parent.mkdir(parents=True, exist_ok=True)
            source = urljoin(base, uri)
            await self._get(client, source, target, f"'{uri[:128]}', a file the model uses, at {public_url(source)}")


def _failure(exc: httpx.HTTPError) -> str:
    """What went wrong with a download, in words (not the exception's class)."""
    if isinstance(exc, httpx.TimeoutException):
        return "the server did not answer in time"
    if isinstance(exc, httpx.ConnectError):
        return "could not connect to its server"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "its server broke off the transfer"
    if isinstance(exc, httpx.TransportError):
        return "the connection failed during the transfer"
    return "the download failed"


def _inside_new(root: Path, name: str) -> Path | None:
    relative = PurePosixPath(name.split("?", 1)[0])
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        return None
    return root / relative


class ModelResolver:
    """Turns a client's loadModel request into a local file: the sample, a named asset, or a fetched URL."""

    def __init__(self, config: RenderConfig) -> None:
        self.roots = [Path(root) for root in config.asset_roots]
        self.fetcher = Fetcher(
            max_bytes=config.max_model_bytes,
            timeout=config.fetch_timeout_seconds,
            allow_private=config.allow_private_urls,
        )
        self.hub_assets_url = config.hub_assets_url
        # The hub is the operator's own server, wherever it runs: no SSRF guard, but its CA must vouch for it.
        self.hub_fetcher = Fetcher(
            # A converted model holds its triangles twice (as glTF, and as drawn) and its coarser levels besides; what
            # it maps into memory is checked against the session's limit once it is here.
            max_bytes=CONVERTED_FILE_FACTOR * config.max_model_bytes,
            timeout=config.fetch_timeout_seconds,
            allow_private=True,
            verify=ssl.create_default_context(cadata=config.hub_ca_pem) if config.hub_ca_pem else True,
        )
        self.client_token: str | None = None  # the connected client's: it opens the hub's assets too
        # The connected client's account, whose converted models in the hub's storage it may load by name: from
        # the folder on this host, or (on a cluster node) through the hub with the client's token.
        self.account_id: str | None = None
        self.storage_root = Path(config.storage_root) if config.storage_root else None
        self.hub_url = config.hub_url
        self._workdir = Path(tempfile.mkdtemp(prefix="renderhub-models-"))

    async def resolve(self, request: LoadModelMessage, progress: Progress) -> Path:
        if request.url is not None:
            return await self.fetcher.fetch(request.url, self._workdir / "download", progress)
        if request.blob is not None:
            return await self._from_blob(*request.blob, progress)
        name = request.name or ""
        stored = await self._from_storage(name, progress)
        if stored is not None:
            return stored
        try:
            return find_named(name, self.roots)
        except ModelError as missing:
            if name == SAMPLE_NAME:
                pass
            elif self.hub_assets_url and missing.code == "ModelNotFound":
                return await self._from_hub(name, progress)
            else:
                raise
        # The sample ships as code, not as a file: generate it once where this server can write.
        from renderhub.render.sample import write_sample

        target = self._workdir / "sample.glb"
        return target if target.exists() else await asyncio.to_thread(write_sample, target)

    async def _from_storage(self, name: str, progress: Progress) -> Path | None:
        """A model in the account's own storage on the hub, named `container/folder/file` (a converted model's
        name); None when the name is not of that form or the file is not there."""
        container = name.split("/", 1)[0]
        if self.account_id is None or "/" not in name or not CONTAINER.fullmatch(container):
            return None
        if self.storage_root is not None:
            return find_referenced(name, [self.storage_root / self.account_id])
        if self.hub_url is None:
            return None
        url = f"{self.hub_url}accounts/{self.account_id}/storage/{quote(name)}?api-version={API_VERSION}"
        headers = {"Authorization": f"Bearer {self.client_token}"} if self.client_token else None
        try:
            return await self.hub_fetcher.fetch(url, self._workdir / "download", progress, headers)
        except ModelError as exc:
            if exc.code == "ModelFetchFailed" and "HTTP 404" in exc.message:
                return None
            raise

    async def _from_blob(self, account: str, container: str, path: str, progress: Progress) -> Path:
        """ARR's three-field form: the hub's own storage (account "renderhub"), or a storage account linked to the
        hub, whose blob the hub hands over with a short-lived SAS (only the hub holds the account's key)."""
        missing = ModelError("ModelNotFound", f"No model '{path[:128]}' in {account[:64]}/{container[:64]}.")
        if account == HUB_STORAGE_ACCOUNT:
            stored = await self._from_storage(f"{container}/{path}", progress)
            if stored is None:
                raise missing
            return stored
        if self.hub_url is None or self.account_id is None:
            raise ModelError("ModelNotFound", "This render server reaches no linked storage account.")
        where = "/".join(quote(part, safe="") for part in (account, container)) + "/" + quote(path)
        url = f"{self.hub_url}accounts/{self.account_id}/linked-storage/{where}?api-version={API_VERSION}"
        headers = {"Authorization": f"Bearer {self.client_token}"} if self.client_token else None
        try:
            return await self.hub_fetcher.fetch(url, self._workdir / "download", progress, headers)
        except ModelError as exc:
            if exc.code == "ModelFetchFailed" and ("HTTP 404" in exc.message or "HTTP 403" in exc.message):
                raise missing from exc
            raise

    async def _from_hub(self, name: str, progress: Progress) -> Path:
        """A named model from the hub's asset directory (this node does not have it)."""
        assert self.hub_assets_url is not None
        headers = {"Authorization": f"Bearer {self.client_token}"} if self.client_token else None
        try:
            return await self.hub_fetcher.fetch(
                urljoin(self.hub_assets_url, quote(name)), self._workdir / "download", progress, headers
            )
        except ModelError as exc:
            if exc.code == "ModelFetchFailed" and "HTTP 404" in exc.message:
                raise ModelError("ModelNotFound", f"No model named '{name[:128]}' in the asset directory.") from exc
            raise

    def forget(self) -> None:
        """Drop downloaded models (a new client starts from a clean scene); the sample stays."""
        shutil.rmtree(self._workdir / "download", ignore_errors=True)
