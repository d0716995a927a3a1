"""A small client for RenderHub's (and ARR's) session and conversion API and the hub's own storage, used by the
CLI, tests and examples."""

from __future__ import annotations

import builtins
import json
import ssl
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

API_VERSION = "2021-01-01"
TOKEN_REFRESH_MARGIN = 300  # seconds; the Azure SDK refreshes about this early too


class ApiError(Exception):
    """The service answered with an error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ArrConfig:
    """The account and defaults from an `arrconfig.json` as ARR's RenderingSession.ps1 reads it."""

    account_id: str
    account_key: str
    account_domain: str
    rendering_domain: str
    vm_size: str
    max_lease_minutes: int

    @classmethod
    def load(cls, path: Path) -> ArrConfig:
        raw = json.loads(path.read_text())
        account, rendering = raw["accountSettings"], raw["renderingSessionSettings"]
        return cls(
            account_id=account["arrAccountId"],
            account_key=account["arrAccountKey"],
            account_domain=account["arrAccountDomain"],
            rendering_domain=rendering["remoteRenderingDomain"],
            vm_size=rendering.get("vmSize", "standard"),
            max_lease_minutes=lease_minutes(rendering.get("maxLeaseTime", "0:30:00")),
        )

    def to_json(self) -> dict[str, Any]:
        hours, minutes = divmod(self.max_lease_minutes, 60)
        return {
            "accountSettings": {
                "arrAccountId": self.account_id,
                "arrAccountKey": self.account_key,
                "arrAccountDomain": self.account_domain,
            },
            "renderingSessionSettings": {
                "remoteRenderingDomain": self.rendering_domain,
                "vmSize": self.vm_size,
                "maxLeaseTime": f"{hours}:{minutes:02d}:00",
            },
        }


def lease_minutes(text: str) -> int:
    """RenderingSession.ps1's lease format, "h:mm:ss", in whole minutes."""
    hours, minutes, seconds = (int(part) for part in text.split(":"))
    return hours * 60 + minutes + (1 if seconds else 0)


def _absolute(domain: str) -> str:
    return domain.rstrip("/") if "://" in domain else f"https://{domain.rstrip('/')}"


class HubClient:
    """Session operations against one account; a token is fetched from the STS and renewed as needed."""

    def __init__(self, config: ArrConfig, *, verify: str | bool | ssl.SSLContext = True, timeout: float = 30.0) -> None:
        self.config = config
        self.base = _absolute(config.rendering_domain)
        self.sts = _absolute(config.account_domain)
        # httpx 0.28 deprecates verify=<path>: a CA file becomes an SSL context here.
        self.trust = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        self.http = httpx.Client(verify=self.trust, timeout=timeout)
        self._token: tuple[str, float] | None = None

    def close(self) -> None:
        self.http.close()

    def at(self, endpoint: str) -> HubClient:
        """The same account at another region's endpoint: its token (from this client's STS) is valid there too."""
        other = HubClient(replace(self.config, rendering_domain=endpoint), verify=self.trust)
        other._token = self._token
        return other

    def regions(self) -> builtins.list[dict[str, str]]:
        """The deployment's region directory, as this client's hub serves it (name, endpoint, probeUrl)."""
        response = self.http.get(f"{self.base}/regions")
        if response.status_code != 200:
            raise ApiError(response.status_code, "Error", "The hub has no region directory.")
        return list(response.json()["regions"])

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def token(self) -> str:
        if self._token is None or self._token[1] - time.time() < TOKEN_REFRESH_MARGIN:
            response = self.http.get(
                f"{self.sts}/Accounts/{self.config.account_id}/token",
                params={"api-version": "2019-02-28-preview"},
                headers={"Authorization": f"Bearer {self.config.account_id}:{self.config.account_key}"},
            )
            if response.status_code == 429:  # too many wrong keys from this address (the STS's throttle)
                wait = response.headers.get("retry-after", "a minute")
                raise ApiError(429, "TooManyRequests", f"Too many failed key checks; retry after {wait} seconds.")
            if response.status_code != 200:
                raise ApiError(response.status_code, "Unauthorized", "The account id or key was not accepted.")
            token = response.json()["AccessToken"]
            self._token = (token, time.time() + 3600)
        return self._token[0]

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        url: str | None = None,
        *,
        content: Any = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        response = self.http.request(
            method,
            url or f"{self.base}/accounts/{self.config.account_id}{path}",
            params=None if url else {"api-version": API_VERSION, **(params or {})},
            json=body,
            content=content,
            headers={"Authorization": f"Bearer {self.token()}"},
        )
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                code, message = error["code"], error["message"]
            except (ValueError, KeyError, TypeError):
                code, message = "Error", response.text or response.reason_phrase
            raise ApiError(response.status_code, code, message)
        return response.json() if response.content else None

    def create(
        self, session_id: str, size: str, lease_minutes: int, idle_timeout_minutes: float | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"size": size, "maxLeaseTimeMinutes": lease_minutes}
        if idle_timeout_minutes is not None:
            body["idleTimeoutMinutes"] = idle_timeout_minutes  # RenderHub's own (0: no idle stop)
        session: dict[str, Any] = self._call("PUT", f"/sessions/{session_id}", body)
        return session

    def get(self, session_id: str) -> dict[str, Any]:
        session: dict[str, Any] = self._call("GET", f"/sessions/{session_id}")
        return session

    def update(self, session_id: str, lease_minutes: int) -> dict[str, Any]:
        session: dict[str, Any] = self._call("PATCH", f"/sessions/{session_id}", {"maxLeaseTimeMinutes": lease_minutes})
        return session

    def stop(self, session_id: str) -> None:
        self._call("POST", f"/sessions/{session_id}/:stop")

    def list(self) -> list[dict[str, Any]]:
        """Every live session, following @nextLink across pages."""
        sessions: list[dict[str, Any]] = []
        page = self._call("GET", "/sessions")
        while True:
            sessions.extend(page["sessions"])
            if "@nextLink" not in page:
                return sessions
            page = self._call("GET", "", url=page["@nextLink"])

    # Conversions

    def create_conversion(self, conversion_id: str, settings: dict[str, Any]) -> dict[str, Any]:
        conversion: dict[str, Any] = self._call("PUT", f"/conversions/{conversion_id}", {"settings": settings})
        return conversion

    def get_conversion(self, conversion_id: str) -> dict[str, Any]:
        conversion: dict[str, Any] = self._call("GET", f"/conversions/{conversion_id}")
        return conversion

    def list_conversions(self) -> builtins.list[dict[str, Any]]:
        """Every conversion of the account, oldest first, following @nextLink until it is null."""
        conversions: builtins.list[dict[str, Any]] = []
        page = self._call("GET", "/conversions")
        while True:
            conversions.extend(page["conversions"])
            if not page.get("@nextLink"):
                return conversions
            page = self._call("GET", "", url=page["@nextLink"])

    # The hub's own storage

    def storage_uri(self, container: str) -> str:
        """A container of the hub's storage as conversions name it (no SAS needed)."""
        return f"{self.base}/accounts/{self.config.account_id}/storage/{container}"

    def upload(self, container: str, name: str, path: Path, *, extract_zip: bool = False) -> builtins.list[str]:
        """One file to `container/name`, streamed; with `extract_zip`, a .zip unpacked under `name`."""
        with path.open("rb") as data:
            answer = self._call(
                "PUT", f"/storage/{container}/{name}", content=data, params={"extract": "zip"} if extract_zip else None
            )
        return list(answer["blobs"])

    def blobs(self, container: str, prefix: str = "") -> builtins.list[dict[str, Any]]:
        answer = self._call("GET", f"/storage/{container}", params={"prefix": prefix})
        return list(answer["blobs"])

    def delete_blob(self, container: str, name: str) -> None:
        self._call("DELETE", f"/storage/{container}/{name}")
