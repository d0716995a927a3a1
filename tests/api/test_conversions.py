"""ARR's conversion operations on the wire, as the real service answered them (ARR-CONVERSIONS.md 1): the create
request normalised (no SAS echoed, prefixes ending in "/", the output name filled in, "error": null), idempotent
retries, 409 and 403, paging with complete links. This hub runs no conversions (concurrency 0): the statuses stay
NotStarted, so every answer here is the API's alone."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from renderhub.clock import Clock
from tests.conftest import InProcessHub, hub_settings, in_process_hub

V = {"api-version": "2021-01-01"}
SAS = "sv=2026-06-06&sr=c&sp=rl&se=2030-01-01T00%3A00%3A00Z&sig=c2VjcmV0LXNpZ25hdHVyZQ%3D%3D"
INPUT = "https://acct.blob.core.windows.net/arrinput"
OUTPUT = "https://acct.blob.core.windows.net/arroutput"


def body(**changes: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "inputLocation": {
            "storageContainerUri": INPUT,
            "storageContainerReadListSas": "?" + SAS,  # as the SDK's own tests send it
            "blobPrefix": "Input",
            "relativeInputAssetPath": "testBox.fbx",
        },
        "outputLocation": {"storageContainerUri": OUTPUT, "storageContainerWriteSas": SAS, "blobPrefix": "out"},
    }
    for path, value in changes.items():
        where, field = path.split("__")
        if value is None:
            settings[where].pop(field, None)
        else:
            settings[where][field] = value
    return {"settings": settings}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[InProcessHub]:
    async for running in in_process_hub(hub_settings(tmp_path, conversion_concurrency=0), Clock()):
        yield running


def url(api: InProcessHub, conversion_id: str = "") -> str:
    return f"/accounts/{api.account.id}/conversions" + (f"/{conversion_id}" if conversion_id else "")


async def test_a_create_answers_as_the_real_service_did(api: InProcessHub) -> None:
    created = await api.http.put(url(api, "c1"), params=V, json=body(), headers=await api.auth())
    assert created.status_code == 201, created.text
    conversion = created.json()
    assert list(conversion) == ["id", "creationTime", "settings", "error", "status"]  # no output before Succeeded
    assert conversion["id"] == "c1" and conversion["status"] == "NotStarted" and conversion["error"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", conversion["creationTime"])
    assert conversion["settings"] == {
        "inputLocation": {
            "storageContainerUri": INPUT,
            "blobPrefix": "Input/",
            "relativeInputAssetPath": "testBox.fbx",
        },
        "outputLocation": {
            "storageContainerUri": OUTPUT,
            "blobPrefix": "out/",
            "outputAssetFilename": "testBox.arrAsset",
        },
    }
    assert "sig=" not in created.text
    got = await api.http.get(url(api, "c1"), params=V, headers=await api.auth())
    assert got.json() == conversion
    assert "no-store" in got.headers["cache-control"] and got.headers["pragma"] == "no-cache"


async def test_retries_are_idempotent_and_other_settings_conflict(api: InProcessHub) -> None:
    auth = await api.auth()
    first = await api.http.put(url(api, "c1"), params=V, json=body(), headers=auth)
    # The SDK re-sends a PUT after a 429 or 5xx; a renewed SAS is still the same conversion.
    again = await api.http.put(url(api, "c1"), params=V, json=body(outputLocation__storageContainerWriteSas="x=1"),
                               headers=auth)  # fmt: skip
    assert again.status_code == 200 and again.json() == first.json()
    other = await api.http.put(url(api, "c1"), params=V, json=body(outputLocation__blobPrefix="elsewhere"),
                               headers=auth)  # fmt: skip
    assert other.status_code == 409 and other.json()["error"]["code"] == "Conflict"
    assert (await api.http.get(url(api, "c1"), params=V, headers=auth)).json() == first.json()


async def test_a_container_neither_linked_nor_given_a_sas_answers_403_and_creates_nothing(api: InProcessHub) -> None:
    auth = await api.auth()
    for unset in ("inputLocation__storageContainerReadListSas", "outputLocation__storageContainerWriteSas"):
        for absent in (None, ""):  # Conversion.ps1 sends unset fields as empty strings
            answer = await api.http.put(url(api, "c1"), params=V, json=body(**{unset: absent}), headers=auth)
            assert answer.status_code == 403, answer.text
            assert answer.json()["error"]["code"] == "DelegatedResourceAccessError"
    assert (await api.http.get(url(api, "c1"), params=V, headers=auth)).status_code == 404


async def test_the_hubs_own_storage_of_the_account_needs_no_sas(api: InProcessHub) -> None:
    own = f"https://127.0.0.1:{api.hub.manager.settings.port}/accounts/{api.account.id}/storage/models"
    other = f"https://127.0.0.1:{api.hub.manager.settings.port}/accounts/someone-else/storage/models"
    no_sas = {"inputLocation__storageContainerReadListSas": None, "outputLocation__storageContainerWriteSas": None}
    answer = await api.http.put(url(api, "mine"), params=V, headers=await api.auth(),
                                json=body(**no_sas, inputLocation__storageContainerUri=own,
                                          outputLocation__storageContainerUri=own))  # fmt: skip
    assert answer.status_code == 201, answer.text
    answer = await api.http.put(url(api, "theirs"), params=V, headers=await api.auth(),
                                json=body(**no_sas, inputLocation__storageContainerUri=other,
                                          outputLocation__storageContainerUri=own))  # fmt: skip
    assert answer.status_code == 403
    # The hub by another of its names (a browser on this machine), or through another replica's port, is still the
    # hub; an address that is not one of its names is not.
    port = api.hub.manager.settings.port
    for uri, status in (
        (own.replace("127.0.0.1", "localhost"), 201),
        (own.replace(f":{port}", ":1"), 201),
        (own.replace("127.0.0.1", "127.0.0.9"), 403),
    ):
        answer = await api.http.put(url(api, f"other-name-{uri.split('/')[2].replace(':', '-').replace('.', '-')}"),
                                    params=V, headers=await api.auth(),
                                    json=body(**no_sas, inputLocation__storageContainerUri=uri,
                                              outputLocation__storageContainerUri=own))  # fmt: skip
        assert answer.status_code == status, (uri, answer.text)


@pytest.mark.parametrize(
    ("change", "target"),
    [
        ({"inputLocation__storageContainerUri": None}, "settings.inputLocation.storageContainerUri"),
        ({"inputLocation__storageContainerUri": "('acct', 'c')"}, "settings.inputLocation.storageContainerUri"),
        ({"inputLocation__storageContainerUri": INPUT + "?" + SAS}, "settings.inputLocation.storageContainerUri"),
        ({"outputLocation__storageContainerUri": 7}, "settings.outputLocation.storageContainerUri"),
        ({"inputLocation__relativeInputAssetPath": None}, "settings.inputLocation.relativeInputAssetPath"),
        ({"inputLocation__relativeInputAssetPath": "../x.fbx"}, "settings.inputLocation.relativeInputAssetPath"),
        ({"outputLocation__outputAssetFilename": "out.glb"}, "settings.outputLocation.outputAssetFilename"),
        ({"outputLocation__outputAssetFilename": "a/b.arrAsset"}, "settings.outputLocation.outputAssetFilename"),
        ({"inputLocation__blobPrefix": ["x"]}, "settings.inputLocation.blobPrefix"),
    ],
)
async def test_bad_settings_answer_400_naming_the_field(api: InProcessHub, change: dict[str, Any], target: str) -> None:
    answer = await api.http.put(url(api, "c1"), params=V, json=body(**change), headers=await api.auth())
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "BadRequest" and answer.json()["error"]["target"] == target
    assert (await api.http.get(url(api, "c1"), params=V, headers=await api.auth())).status_code == 404


@pytest.mark.parametrize("raw", [b"", b"[]", b'{"settings": 1}', b'{"settings": {"inputLocation": {}}}', b"{" * 5000])
async def test_malformed_bodies_answer_400(api: InProcessHub, raw: bytes) -> None:
    answer = await api.http.put(url(api, "c1"), params=V, content=raw, headers=await api.auth())
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "BadRequest"


async def test_bad_ids_and_unknown_conversions(api: InProcessHub) -> None:
    auth = await api.auth()
    assert (await api.http.put(url(api, "a" * 257), params=V, json=body(), headers=auth)).status_code == 400
    assert (await api.http.put(url(api, "a.b"), params=V, json=body(), headers=auth)).status_code == 400
    missing = await api.http.get(url(api, "nope"), params=V, headers=auth)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NotFound"


async def test_the_list_holds_every_conversion_oldest_first_with_complete_links(api: InProcessHub) -> None:
    auth = await api.auth()
    ids = [f"c{n}" for n in range(7)]  # the test hub's page size is 3
    for conversion_id in ids:
        assert (await api.http.put(url(api, conversion_id), params=V, json=body(), headers=auth)).status_code == 201
    seen: list[str] = []
    link: str | None = url(api)
    params: dict[str, str] | None = V
    while link is not None:
        page = (await api.http.get(link, params=params, headers=auth)).json()
        assert "@nextLink" in page  # null on the last page, as the real service sent it
        seen += [c["id"] for c in page["conversions"]]
        assert all("sig=" not in str(c) for c in page["conversions"])
        link, params = page["@nextLink"], None  # followed verbatim, as the SDK does
    assert seen == ids


async def test_another_accounts_conversions_are_out_of_reach(api: InProcessHub) -> None:
    from renderhub.auth import new_account

    auth = await api.auth()
    assert (await api.http.put(url(api, "c1"), params=V, json=body(), headers=auth)).status_code == 201
    other, key, _ = new_account("other", api.clock.now())
    await api.repo.insert_account(other)
    sts = await api.http.get(f"/Accounts/{other.id}/token", headers={"Authorization": f"Bearer {other.id}:{key}"})
    token = sts.json()["AccessToken"]
    theirs = {"Authorization": f"Bearer {token}"}
    assert (await api.http.get(f"/accounts/{other.id}/conversions/c1", params=V, headers=theirs)).status_code == 404
    assert (await api.http.get(url(api, "c1"), params=V, headers=theirs)).status_code == 403
    listed = (await api.http.get(f"/accounts/{other.id}/conversions", params=V, headers=theirs)).json()
    assert listed == {"conversions": [], "@nextLink": None}
