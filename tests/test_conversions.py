"""Conversions end to end with the official SDK: a model uploaded to the hub's own storage, converted by a real
conversion process, its outputs written beside ARR's (arrAsset, result.json, info.json); failures as ARR reported
them; and `renderhub convert` from a person's side."""

from __future__ import annotations

import json
import shutil
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mixedreality.remoterendering import (
    AssetConversionInputSettings,
    AssetConversionOutputSettings,
    AssetConversionStatus,
    RemoteRenderingClient,
)

from renderhub.client import HubClient
from tests.hubs import ServedHub

MODELS = Path("/usr/share/assimp/models")
TEXTURED = MODELS / "glTF2" / "BoxTextured-glTF"  # a .gltf with its .bin and a PNG beside it
FBX = MODELS / "FBX" / "box.fbx"


@pytest.fixture
def sdk(served_hub: ServedHub) -> Iterator[RemoteRenderingClient]:
    client = served_hub.sdk()
    yield client
    client.close()


@pytest.fixture
def hub_client(served_hub: ServedHub) -> Iterator[HubClient]:
    with HubClient(served_hub.config, verify=str(served_hub.ca)) as client:
        yield client


def convert(sdk: RemoteRenderingClient, client: HubClient, prefix: str, model: str, conversion_id: str = "") -> object:
    poller = sdk.begin_asset_conversion(
        conversion_id=conversion_id or f"c-{uuid.uuid4().hex[:12]}",
        input_settings=AssetConversionInputSettings(
            storage_container_uri=client.storage_uri("models"), blob_prefix=prefix, relative_input_asset_path=model
        ),
        output_settings=AssetConversionOutputSettings(
            storage_container_uri=client.storage_uri("converted"), blob_prefix=prefix
        ),
    )
    return poller.result(timeout=180)


def download(client: HubClient, name: str) -> bytes:
    answer = client.http.get(
        f"{client.storage_uri('converted')}/{name}",
        params={"api-version": "2021-01-01"},
        headers={"Authorization": f"Bearer {client.token()}"},
    )
    assert answer.status_code == 200, answer.text
    return answer.content


@pytest.mark.slow
def test_the_sdk_converts_a_textured_gltf_from_the_hubs_storage(
    sdk: RemoteRenderingClient, hub_client: HubClient, tmp_path: Path
) -> None:
    archive = tmp_path / "box.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for file in TEXTURED.iterdir():
            zipped.write(file, file.name)
    assert sorted(hub_client.upload("models", "box", archive, extract_zip=True)) == sorted(
        f"box/{file.name}" for file in TEXTURED.iterdir()
    )
    conversion = convert(sdk, hub_client, "box", "BoxTextured.gltf")
    assert conversion.status == AssetConversionStatus.SUCCEEDED, conversion.error
    assert conversion.output.asset_uri == f"{hub_client.storage_uri('converted')}/box/BoxTextured.arrAsset"
    names = {blob["name"] for blob in hub_client.blobs("converted", "box/")}
    assert {"box/BoxTextured.arrAsset", "box/BoxTextured.result.json", "box/BoxTextured.info.json"} <= names
    asset = download(hub_client, "box/BoxTextured.arrAsset")
    assert asset[:4] == b"glTF"  # binary glTF inside, as docs/conversions.md says
    header = json.loads(asset[20 : 20 + int.from_bytes(asset[12:16], "little")])
    assert header["images"] and all("bufferView" in image for image in header["images"])  # the PNG embedded
    result = json.loads(download(hub_client, "box/BoxTextured.result.json"))
    assert result[-1] == {"result": "succeeded"}
    info = json.loads(download(hub_client, "box/BoxTextured.info.json"))
    assert info["inputStatistics"]["numFaces"] == 12 and info["inputStatistics"]["numVertices"] == 24
    box = info["outputStatistics"]["boundingBox"]
    assert box["min"] == pytest.approx([-0.5, -0.5, -0.5]) and box["max"] == pytest.approx([0.5, 0.5, 0.5])
    # Listed too, and readable by id, as ARR's SDK reads them.
    assert conversion.id in [c.id for c in sdk.list_asset_conversions()]
    assert sdk.get_asset_conversion(conversion.id).status == AssetConversionStatus.SUCCEEDED


@pytest.mark.slow
def test_a_missing_input_fails_as_arr_reported_it(sdk: RemoteRenderingClient, hub_client: HubClient) -> None:
    with pytest.raises(HttpResponseError) as failed:
        convert(sdk, hub_client, "nothing-here", "missing.fbx")
    error = failed.value.error
    assert error is not None and error.code == "ConversionProcessFailed"
    assert "invalid input" in error.message.lower() and "logs" in error.message.lower()  # as the SDK's tests read it
    assert "missing.fbx" in error.message


@pytest.mark.slow
def test_an_fbx_converts_and_a_second_conversion_replaces_its_outputs(
    sdk: RemoteRenderingClient, hub_client: HubClient, tmp_path: Path
) -> None:
    hub_client.upload("models", "fbx/box.fbx", FBX)
    first = convert(sdk, hub_client, "fbx", "box.fbx")
    assert first.status == AssetConversionStatus.SUCCEEDED, first.error
    before = download(hub_client, "fbx/box.info.json")
    settings = tmp_path / "box.ConversionSettings.json"
    settings.write_text(json.dumps({"scaling": 2.0}))
    hub_client.upload("models", "fbx/box.ConversionSettings.json", settings)
    second = convert(sdk, hub_client, "fbx", "box.fbx")
    assert second.status == AssetConversionStatus.SUCCEEDED, second.error
    scaled = json.loads(download(hub_client, "fbx/box.info.json"))["outputStatistics"]["boundingBox"]
    unscaled = json.loads(before)["outputStatistics"]["boundingBox"]
    assert [2 * v for v in unscaled["max"]] == pytest.approx(scaled["max"], rel=1e-4)


def test_models_are_per_account(served_hub: ServedHub, hub_client: HubClient, tmp_path: Path) -> None:
    """Another account's token opens nothing in this account's storage."""
    model = tmp_path / "m.glb"
    shutil.copy(MODELS / "glTF2" / "BoxTextured-glTF-Binary" / "BoxTextured.glb", model)
    hub_client.upload("models", "mine/m.glb", model)
    other = served_hub.new_account("other")
    with HubClient(other, verify=str(served_hub.ca)) as theirs:
        answer = theirs.http.get(
            f"{hub_client.storage_uri('models')}/mine/m.glb",
            params={"api-version": "2021-01-01"},
            headers={"Authorization": f"Bearer {theirs.token()}"},
        )
        assert answer.status_code == 403
        assert theirs.blobs("models") == []
