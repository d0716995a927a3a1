"""Conversions against Azure Blob storage (a real Azurite): the official SDK with container SAS, ARR's
`Conversion.ps1` request flow replayed in both its modes (linked storage and -UseContainerSas), and the storage
failures ARR reported: a SAS without the rights, a container neither linked nor given a SAS."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.exceptions import HttpResponseError
from azure.mixedreality.remoterendering import (
    AssetConversionInputSettings,
    AssetConversionOutputSettings,
    AssetConversionStatus,
)

from renderhub.connect import RenderClient
from renderhub.render import protocol
from tests.hubs import RunningHub
from tests.storage.azurite import Azurite

MODELS = Path("/usr/share/assimp/models")
PS_POLL_SECONDS = 10  # Conversion.ps1's interval


@pytest.fixture
def linked_hub(hub_factory: Callable[..., RunningHub], azurite: Azurite, tmp_path: Path) -> RunningHub:
    """A hub with the Azurite linked as an operator would link a storage account (and loopback storage allowed,
    for SAS URIs on this machine)."""
    linked = tmp_path / "linked-storage.json"
    account = azurite.linked()
    linked.write_text(json.dumps([{"name": account.name, "endpoint": account.endpoint, "key": account.key}]))
    linked.chmod(0o600)
    return hub_factory("--rate-limit", "0", "--linked-storage", str(linked), "--allow-private-storage")


def upload_box(azurite: Azurite, container: str, prefix: str) -> None:
    for file in (MODELS / "glTF2" / "BoxTextured-glTF").iterdir():
        azurite.put(container, f"{prefix}{file.name}", file.read_bytes())


@pytest.mark.slow
def test_the_sdk_converts_between_sas_containers(linked_hub: RunningHub, azurite: Azurite) -> None:
    source, target = azurite.container(), azurite.container()
    upload_box(azurite, source, "Input/")
    sdk = linked_hub.sdk()
    try:
        poller = sdk.begin_asset_conversion(
            conversion_id="sas-1",
            input_settings=AssetConversionInputSettings(
                storage_container_uri=source, storage_container_read_list_sas="?" + azurite.sas(source, "rl"),
                blob_prefix="Input", relative_input_asset_path="BoxTextured.gltf",
            ),
            output_settings=AssetConversionOutputSettings(
                storage_container_uri=target, storage_container_write_sas=azurite.sas(target, "cw"), blob_prefix="out",
            ),
        )  # fmt: skip
        conversion = poller.result(timeout=180)
    finally:
        sdk.close()
    assert conversion.status == AssetConversionStatus.SUCCEEDED, conversion.error
    assert conversion.output.asset_uri == f"{target}/out/BoxTextured.arrAsset"
    assert set(azurite.names(target)) == {
        "out/BoxTextured.arrAsset", "out/BoxTextured.result.json", "out/BoxTextured.info.json"
    }  # fmt: skip
    assert azurite.read(target, "out/BoxTextured.arrAsset")[:4] == b"glTF"


@pytest.mark.slow
def test_a_read_only_sas_for_the_output_fails_the_conversion(linked_hub: RunningHub, azurite: Azurite) -> None:
    source, target = azurite.container(), azurite.container()
    upload_box(azurite, source, "")
    sdk = linked_hub.sdk()
    try:
        with pytest.raises(HttpResponseError) as failed:
            sdk.begin_asset_conversion(
                conversion_id="read-only",
                input_settings=AssetConversionInputSettings(
                    storage_container_uri=source, storage_container_read_list_sas=azurite.sas(source, "rl"),
                    relative_input_asset_path="BoxTextured.gltf",
                ),
                output_settings=AssetConversionOutputSettings(
                    storage_container_uri=target, storage_container_write_sas=azurite.sas(target, "rl"),
                ),
            ).result(timeout=180)  # fmt: skip
        assert failed.value.error is not None and failed.value.error.code == "OutputContainerAccessDenied"
        with pytest.raises(HttpResponseError) as denied:  # no SAS, and not a linked account's: refused at create
            sdk.begin_asset_conversion(
                conversion_id="unlinked",
                input_settings=AssetConversionInputSettings(
                    storage_container_uri="https://elsewhere.blob.core.windows.net/c", relative_input_asset_path="m.fbx"
                ),
                output_settings=AssetConversionOutputSettings(storage_container_uri=target,
                                                              storage_container_write_sas=azurite.sas(target, "cw")),
            )  # fmt: skip
        assert denied.value.status_code == 403 and denied.value.error.code == "DelegatedResourceAccessError"
    finally:
        sdk.close()
    assert azurite.names(target) == []


class ConversionScript:
    """ARR's Conversion.ps1, its HTTP requests replayed as the script sends them (api-version preview, unset fields
    as empty strings, container URIs built from the storage account's name, 10 s polling)."""

    def __init__(self, hub: RunningHub, storage_account: str, input_container: str, output_container: str) -> None:
        self.hub = hub
        self.config = hub.config
        self.storage_account = storage_account
        self.containers = input_container, output_container  # arrconfig.json's blobInput/OutputContainerName
        self.http = httpx.Client(verify=ssl.create_default_context(cafile=str(hub.ca)), timeout=30)

    def close(self) -> None:
        self.http.close()

    def token(self) -> str:
        answer = self.http.get(
            f"{self.hub.endpoint}/accounts/{self.config.account_id}/token",
            headers={"Authorization": f"Bearer {self.config.account_id}:{self.config.account_key}"},
        )
        answer.raise_for_status()
        return str(answer.json()["AccessToken"])

    def start(self, conversion_id: str, *, input_sas: str = "", output_sas: str = "") -> dict[str, Any]:
        container = f"https://{self.storage_account}.blob.core.windows.net"
        settings: dict[str, Any] = {
            "inputLocation": {"storageContainerUri": f"{container}/{self.containers[0]}", "blobPrefix": "Input/",
                              "relativeInputAssetPath": "box.fbx"},
            "outputLocation": {"storageContainerUri": f"{container}/{self.containers[1]}", "blobPrefix": "Converted/",
                               "outputAssetFilename": ""},
        }  # fmt: skip
        if input_sas or output_sas:  # -UseContainerSas
            settings["inputLocation"]["storageContainerReadListSas"] = input_sas
            settings["outputLocation"]["storageContainerWriteSas"] = output_sas
        answer = self.http.put(
            f"{self.hub.endpoint}/accounts/{self.config.account_id}/conversions/{conversion_id}",
            params={"api-version": "2021-01-01-preview"},
            headers={"Authorization": f"Bearer {self.token()}", "Content-Type": "application/json"},
            content=json.dumps({"settings": settings}),
        )
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    def poll(self, conversion_id: str, interval: float = PS_POLL_SECONDS) -> dict[str, Any]:
        while True:
            answer = self.http.get(
                f"{self.hub.endpoint}/accounts/{self.config.account_id}/conversions/{conversion_id}",
                params={"api-version": "2021-01-01-preview"},
                headers={"Authorization": f"Bearer {self.token()}"},
            )
            status = answer.json()["status"].lower()
            if status in ("succeeded", "failed", "cancelled"):
                return dict(answer.json())
            time.sleep(interval)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["linked", "container-sas"])
def test_conversion_ps1s_flow_converts_and_its_output_path_resolves(
    linked_hub: RunningHub, azurite: Azurite, mode: str
) -> None:
    source, target = azurite.container(), azurite.container()
    azurite.put(source, "Input/box.fbx", (MODELS / "FBX" / "box.fbx").read_bytes())
    script = ConversionScript(linked_hub, azurite.account, source.rsplit("/", 1)[1], target.rsplit("/", 1)[1])
    conversion_id = f"Sample-Conversion-{uuid.uuid4()}"
    sas = {"input_sas": azurite.sas(source, "rwdl"), "output_sas": azurite.sas(target, "rwdl")}
    try:
        started = script.start(conversion_id, **(sas if mode == "container-sas" else {}))
        assert started["status"] == "NotStarted"
        done = script.poll(conversion_id)
    finally:
        script.close()
    assert done["status"] == "Succeeded", done["error"]
    # The script prints output.outputAssetUri, and in SAS mode builds the blob path from the echo.
    output = done["settings"]["outputLocation"]
    assert output["blobPrefix"] + output["outputAssetFilename"] == "Converted/box.arrAsset"
    on_account = f"https://devstoreaccount1.blob.core.windows.net/{script.containers[1]}"
    assert done["output"]["outputAssetUri"] == f"{on_account}/Converted/box.arrAsset"
    assert azurite.read(target, "Converted/box.arrAsset")[:4] == b"glTF"


@pytest.mark.slow
async def test_a_session_loads_by_arrs_three_fields_from_linked_and_hub_storage(
    linked_hub: RunningHub, azurite: Azurite
) -> None:
    """LoadModelOptions.CreateForBlobStorage's fields: a linked account's blob (the hub hands the render server a
    short-lived SAS, only it holds the key), the hub's own storage (account "renderhub"), and neither."""
    glb = (MODELS / "glTF2" / "BoxTextured-glTF-Binary" / "BoxTextured.glb").read_bytes()
    container = azurite.container()
    azurite.put(container, "cars/box.arrAsset", glb)
    with linked_hub.client() as client:
        upload = MODELS / "glTF2" / "BoxTextured-glTF-Binary" / "BoxTextured.glb"
        client.upload("converted", "box/box.arrAsset", upload)
        client.create("three-fields", "Standard", 10)
        deadline = time.monotonic() + 30
        while client.get("three-fields")["status"] != "Ready":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        offer = f"{client.base}/render/{client.config.account_id}/three-fields/offer"
        token, trust = client.token(), client.trust
    render = RenderClient()
    try:
        await render.connect(offer, token, ssl_context=trust, width=320, height=240)
        name = container.rsplit("/", 1)[1]
        for account, where, path in (
            ("devstoreaccount1.blob.core.windows.net", name, "cars/box.arrAsset"),
            ("renderhub", "converted", "box/box.arrAsset"),
        ):
            render.send(protocol.load_model(blob=(account, where, path), ref=account))
            loaded = await render.expect("modelLoaded", "error", timeout=60)
            assert loaded["type"] == "modelLoaded" and loaded["triangles"] == 12, loaded
        render.send(protocol.load_model(blob=("unlinked.blob.core.windows.net", name, "cars/box.arrAsset")))
        refused = await render.expect("modelLoaded", "error", timeout=60)
        assert refused["type"] == "error" and refused["code"] == "ModelNotFound", refused
    finally:
        await render.close()
