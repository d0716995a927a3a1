"""The hub's named models for render servers on other nodes: behind a token, never outside the asset roots."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import InProcessHub

BOX = Path("/usr/share/assimp/models/glTF2/BoxTextured-glTF")


def assets(api: InProcessHub) -> Path:
    root = api.data_dir / "assets"
    shutil.copytree(BOX, root / "box")
    (api.data_dir / "secret.txt").write_text("not an asset")
    return root


async def test_a_model_name_redirects_to_its_file_and_its_buffers_are_served(api: InProcessHub) -> None:
    root = assets(api)
    auth = await api.auth()
    found = await api.http.get("/render/assets/box/BoxTextured", headers=auth)
    assert found.status_code == 307 and found.headers["location"] == "/render/assets/box/BoxTextured.gltf"
    model = await api.http.get("/render/assets/box/BoxTextured.gltf", headers=auth)
    assert model.status_code == 200 and model.content == (root / "box" / "BoxTextured.gltf").read_bytes()
    buffer = await api.http.get("/render/assets/box/BoxTextured0.bin", headers=auth)
    assert buffer.content == (root / "box" / "BoxTextured0.bin").read_bytes()


async def test_assets_need_a_token(api: InProcessHub) -> None:
    assets(api)
    refused = await api.http.get("/render/assets/box/BoxTextured.gltf")
    assert refused.status_code == 401 and refused.json()["error"]["code"]


async def test_names_cannot_leave_the_asset_roots(api: InProcessHub) -> None:
    assets(api)
    auth = await api.auth()
    for name in ("../secret.txt", "box/../../secret.txt", "%2e%2e/secret.txt", "box/missing.glb"):
        response = await api.http.get(f"/render/assets/{name}", headers=auth)
        assert response.status_code == 404, (name, response.status_code)
        assert response.json()["error"]["code"] == "NotFound"


async def test_the_list_names_each_model_as_a_client_loads_it(api: InProcessHub) -> None:
    root = assets(api)
    (root / "engine.glb").write_bytes(b"glTF" + bytes(20))
    (root / "notes.txt").write_text("not a model")
    (root / "outside.glb").symlink_to(api.data_dir / "secret.txt")  # a link out of the root is not listed
    auth = await api.auth()
    listed = await api.http.get("/render/assets", headers=auth)
    assert listed.status_code == 200 and listed.json() == {
        "models": [{"name": "box/BoxTextured.gltf", "bytes": (root / "box" / "BoxTextured.gltf").stat().st_size},
                   {"name": "engine.glb", "bytes": 24}],
        "truncated": False,
    }  # fmt: skip
    assert (await api.http.get("/render/assets")).status_code == 401
