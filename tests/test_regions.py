"""Regions on one database: sessions keyed by region, the directory, the probe, CORS, per-region quotas and the
administration commands."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from renderhub.client import ApiError, ArrConfig, HubClient
from renderhub.regions import REFRESH_SECONDS
from tests.hubs import RENDERHUB, ServedHub, wait_for
from tests.tcp_proxy import cuttable_link

Hubs = Callable[..., ServedHub]


@pytest.fixture
def west_and_east(postgres_url: str, served_hub_factory: Hubs) -> tuple[ServedHub, ServedHub]:
    """Two regions' hubs on one PostgreSQL database (dropped after they stop); the first account is west's."""
    west = served_hub_factory("west", database_url=postgres_url, region="west")
    east = served_hub_factory("east", database_url=postgres_url, region="east")
    east.config = west.config
    return west, east


def _trust(hub: ServedHub) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(hub.ca))


def _client(hub: ServedHub) -> HubClient:
    return HubClient(hub.config, verify=str(hub.ca))


def _at(hub: ServedHub, other: ServedHub) -> HubClient:
    """The west account's client at `other`'s endpoint (its token comes from `hub`'s STS)."""
    return _client(hub).at(other.endpoint)


def test_a_session_belongs_to_its_region(west_and_east: tuple[ServedHub, ServedHub]) -> None:
    west, east = west_and_east
    with _client(west) as here, _at(west, east) as there:
        created = here.create("shared-id", "Standard", 10)
        assert created["status"] in ("Starting", "Ready")
        with pytest.raises(ApiError) as missing:
            there.get("shared-id")
        assert (missing.value.status, missing.value.code) == (404, "NotFound")
        with pytest.raises(ApiError) as not_stoppable:
            there.stop("shared-id")
        assert not_stoppable.value.status == 404
        assert [s["id"] for s in there.list()] == []
        # The same id in the other region is another session, with settings of its own.
        assert there.create("shared-id", "Premium", 20)["size"] == "Premium"
        assert here.get("shared-id")["size"] == "Standard"
        there.stop("shared-id")
        assert here.get("shared-id")["status"] in ("Starting", "Ready"), "stopping east's left west's running"
        assert [s["id"] for s in here.list()] == ["shared-id"]


def test_every_hub_serves_the_whole_directory(west_and_east: tuple[ServedHub, ServedHub]) -> None:
    west, east = west_and_east
    both = [
        {"name": "east", "endpoint": east.endpoint, "probeUrl": f"{east.endpoint}/probe"},
        {"name": "west", "endpoint": west.endpoint, "probeUrl": f"{west.endpoint}/probe"},
    ]
    for hub in (west, east):
        # West started first: it reads the directory again within REFRESH_SECONDS, and then knows east.
        wait_for(
            lambda: httpx.get(f"{hub.endpoint}/regions", verify=_trust(hub)).json()["regions"] == both,  # noqa: B023
            timeout=REFRESH_SECONDS + 5,
        )
    assert httpx.get(f"{east.endpoint}/regions", verify=_trust(east)).json()["region"] == "east"
    probe = httpx.get(f"{east.endpoint}/probe", verify=_trust(east))
    assert (probe.status_code, probe.json(), probe.headers["cache-control"]) == (200, {"region": "east"}, "no-store")


def test_other_regions_viewers_may_call_with_a_token(west_and_east: tuple[ServedHub, ServedHub]) -> None:
    """The viewer of west's hub creates a session at east's: east answers the preflight of a PUT with
    Authorization for west's origin, and its answers carry the origin; an unknown origin gets no CORS."""
    west, east = west_and_east
    session_url = f"{east.endpoint}/accounts/{west.config.account_id}/sessions/cors-1?api-version=2021-01-01"
    with httpx.Client(verify=_trust(east)) as http:
        preflight = http.options(
            session_url,
            headers={
                "Origin": west.endpoint,
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == west.endpoint
        assert "PUT" in preflight.headers["access-control-allow-methods"]
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        with _client(west) as client:
            token = client.token()
        put = http.put(
            session_url,
            json={"size": "Standard", "maxLeaseTimeMinutes": 5},
            headers={"Origin": west.endpoint, "Authorization": f"Bearer {token}"},
        )
        assert put.status_code == 201
        assert put.headers["access-control-allow-origin"] == west.endpoint
        stranger = http.options(
            session_url, headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "PUT"}
        )
        assert "access-control-allow-origin" not in stranger.headers
        assert stranger.status_code == 405 and stranger.json()["error"]["code"] == "MethodNotAllowed"
    with _at(west, east) as there:
        assert there.get("cors-1")["status"] in ("Starting", "Ready")


def test_the_probe_is_rate_limited_per_address(served_hub: ServedHub) -> None:
    with httpx.Client(verify=_trust(served_hub)) as http:
        answers = [http.get(f"{served_hub.endpoint}/probe") for _ in range(60)]
    codes = [a.status_code for a in answers]
    assert codes[:40] == [200] * 40, "a burst of 40 passes"
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["error"]["code"] == "TooManyRequests"
    assert "this address" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) >= 1


def test_quotas_hold_in_each_region(west_and_east: tuple[ServedHub, ServedHub]) -> None:
    """The default Premium quota (half of 2 servers: 1) is the account's in each region."""
    west, east = west_and_east
    with _client(west) as here, _at(west, east) as there:
        here.create("p-west", "Premium", 10)
        with pytest.raises(ApiError) as refused:
            here.create("p-west-2", "Premium", 10)
        assert refused.value.code == "QuotaExceeded"
        assert there.create("p-east", "Premium", 10)["status"] in ("Starting", "Ready")


def _renderhub(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([RENDERHUB, *(str(a) for a in args)], capture_output=True, text=True, timeout=60, env=env)


def test_region_administration(west_and_east: tuple[ServedHub, ServedHub], postgres_url: str, tmp_path: Path) -> None:
    west, east = west_and_east
    db = ("--database-url", postgres_url, "--data-dir", west.data_dir)
    listed = _renderhub("region", "list", "--json", *db)
    assert listed.returncode == 0, listed.stderr
    assert [(r["name"], r["endpoint"]) for r in json.loads(listed.stdout)] == [
        ("east", east.endpoint),
        ("west", west.endpoint),
    ]
    # An account's arrconfig.json for a region names that region's endpoint; the account works everywhere.
    config = tmp_path / "east.arrconfig.json"
    created = _renderhub("account", "create", "--name", "traveller", "--region", "east", "--arrconfig", config, *db)
    assert created.returncode == 0, created.stderr
    traveller = ArrConfig.load(config)
    assert traveller.rendering_domain == east.endpoint
    with HubClient(traveller, verify=str(east.ca)) as client:
        client.create("t-1", "Standard", 5)
        with client.at(west.endpoint) as elsewhere:
            assert elsewhere.list() == []
    unknown = _renderhub("account", "create", "--region", "north", "--arrconfig", tmp_path / "n.json", *db)
    assert unknown.returncode == 1 and "no region named 'north'" in unknown.stderr
    assert not (tmp_path / "n.json").exists()
    # A region holding live sessions stays in the directory; once they are stopped, it may go.
    busy = _renderhub("region", "remove", "east", *db)
    assert busy.returncode == 1 and "live session" in busy.stderr
    # An account is deleted only once no region holds a live session of it; the refusal says where they are.
    held = _renderhub("account", "delete", traveller.account_id, *db)
    assert held.returncode == 1 and "t-1 (region east)" in held.stderr
    with HubClient(traveller, verify=str(east.ca)) as client:
        client.stop("t-1")
    assert _renderhub("region", "remove", "east", *db).returncode == 0
    assert [r["name"] for r in json.loads(_renderhub("region", "list", "--json", *db).stdout)] == ["west"]


def test_a_region_that_loses_its_database_leaves_the_others_serving(
    postgres_url: str, served_hub_factory: Hubs
) -> None:
    """East reaches the database through a link that is cut: its session calls answer 503 in ARR's shape (never a
    500), its directory and probe still answer from memory, west goes on as before; once the link is back, east
    serves again."""
    west = served_hub_factory("west", database_url=postgres_url, region="west")
    address = urlsplit(postgres_url)
    with cuttable_link(address.hostname or "127.0.0.1", address.port or 5432) as link:
        through_link = postgres_url.replace(f":{address.port}/", f":{link.port}/")
        east = served_hub_factory("east", database_url=through_link, region="east")
        east.config = west.config
        with _client(west) as here, _at(west, east) as there:
            there.create("east-1", "Standard", 10)
            link.cut()
            with pytest.raises(ApiError) as unavailable:
                there.get("east-1")
            assert (unavailable.value.status, unavailable.value.code) == (503, "ServiceUnavailable")
            with httpx.Client(verify=_trust(east)) as http:
                assert http.get(f"{east.endpoint}/probe").json() == {"region": "east"}
                assert {r["name"] for r in http.get(f"{east.endpoint}/regions").json()["regions"]} == {"east", "west"}
            here.create("west-1", "Standard", 10)
            assert [s["id"] for s in here.list()] == ["west-1"]
            link.restore()
            assert wait_for(lambda: _answers(there, "east-1"), timeout=15)["id"] == "east-1"
        east.stop()  # while its database is there to stop with


def _answers(client: HubClient, session_id: str) -> dict[str, object] | None:
    try:
        return client.get(session_id)
    except ApiError as exc:
        if exc.status != 503:
            raise
        return None
