"""A converted `.arrAsset` is found by name in an asset root, loads, and renders where its info.json bounds say."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from renderhub.conversion.engine import convert
from renderhub.render.asset_lookup import find_named
from renderhub.render.camera import frame_bounds, projection_matrix, view_matrix
from renderhub.render.renderer import BACKGROUND_RGB, Renderer
from renderhub.render.scene import load_scene

MODELS = Path("/usr/share/assimp/models")
WIDTH, HEIGHT = 320, 240


def model_pixels(frame: np.ndarray, bounds: np.ndarray, pose: Any) -> tuple[int, int, int]:
    """(model pixels inside the bounds' projection, that box's area, model pixels outside it)."""
    lo, hi = bounds
    corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    clip = corners @ (projection_matrix(pose, WIDTH / HEIGHT, bounds) @ view_matrix(pose)).T
    ndc = clip[:, :2] / clip[:, 3:]
    columns = np.clip(((ndc[:, 0] + 1) / 2 * WIDTH).round().astype(int), 0, WIDTH)
    rows = np.clip(((1 - ndc[:, 1]) / 2 * HEIGHT).round().astype(int), 0, HEIGHT)
    x0, x1, y0, y1 = columns.min() - 2, columns.max() + 2, rows.min() - 2, rows.max() + 2
    model = (frame != np.array(BACKGROUND_RGB, np.uint8)).any(axis=2)
    inside = int(model[max(y0, 0) : y1, max(x0, 0) : x1].sum())
    return inside, int((x1 - x0) * (y1 - y0)), int(model.sum()) - inside


@pytest.mark.parametrize(("files", "settings"), [
    (["Collada/duck.dae", "Collada/duckCM.tga"], {}),  # a TGA texture, converted to PNG
    (["FBX/spider.fbx"], {"recenterToOrigin": True, "axis": ["+x", "+z", "-y"], "scaling": 0.02}),
])  # fmt: skip
def test_a_converted_model_renders_where_its_bounds_say(
    tmp_path: Path, files: list[str], settings: dict[str, Any]
) -> None:
    root = tmp_path / "input"
    root.mkdir()
    for name in files:  # the model and its textures, as a user uploads them
        shutil.copy(MODELS / name, root)
    source = files[0]
    stem = Path(source).stem
    (root / f"{stem}.ConversionSettings.json").write_text(json.dumps(settings))
    assets = tmp_path / "assets"
    assets.mkdir()
    outcome = convert(root, Path(source).name, assets, f"{stem}.arrAsset", "render")
    assert outcome.error is None, outcome
    path = find_named(stem, [assets])  # the render server's lookup by name, as for .glb and .gltf
    assert path == (assets / f"{stem}.arrAsset").resolve()
    box = json.loads((assets / f"{stem}.info.json").read_text())["outputStatistics"]["boundingBox"]
    bounds = np.array([box["min"], box["max"]])
    scene = load_scene(path, max_primitives=None, max_bytes=1 << 28)
    np.testing.assert_allclose(scene.bounds, bounds, rtol=1e-5, atol=1e-5)
    if source.endswith(".dae"):
        assert scene.textures == 1
    with Renderer(WIDTH, HEIGHT) as renderer:
        renderer.upload(scene)
        pose = frame_bounds(bounds)  # the camera from info.json's bounds, not the loader's
        frame = renderer.render(pose)
    inside, area, outside = model_pixels(frame, bounds, pose)
    assert inside >= max(20, 0.1 * area), (inside, area)
    assert outside == 0


def test_arrasset_names_resolve_with_or_without_the_suffix(tmp_path: Path) -> None:
    (tmp_path / "cars").mkdir()
    (tmp_path / "cars" / "truck.arrAsset").write_bytes(b"glTF")
    assert find_named("cars/truck", [tmp_path]) == (tmp_path / "cars" / "truck.arrAsset").resolve()
    assert find_named("cars/truck.arrAsset", [tmp_path]) == (tmp_path / "cars" / "truck.arrAsset").resolve()
    (tmp_path / "cars" / "notes.txt").write_text("not a model")
    with pytest.raises(Exception, match="No model named"):
        find_named("cars/notes.txt", [tmp_path])
