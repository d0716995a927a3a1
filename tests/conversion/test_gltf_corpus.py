"""glTF in, glTF out: every glTF 2.0 file the render server draws today converts, and the asset draws the same.

The reference is the render server's loader (trimesh) on the original file, not our reader: triangles, bounds and
textures of the two loads must agree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from renderhub.conversion.engine import convert
from renderhub.render.scene import load_scene

RENDER_CORPUS = json.loads((Path(__file__).parents[1] / "render" / "corpus.json").read_text())
ROOT = Path(RENDER_CORPUS["root"])
DRAWN = [entry for entry in RENDER_CORPUS["models"] if entry["expect"] == "renders"]

# Converts every glTF file the loader renders: about 10 s.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ROOT.is_dir(), reason=f"{ROOT} missing: install Debian's assimp-testmodels"),
]


@pytest.mark.parametrize("entry", DRAWN, ids=[entry["path"] for entry in DRAWN])
def test_the_converted_asset_draws_as_the_original(entry: dict[str, Any], tmp_path: Path) -> None:
    outcome = convert(ROOT, entry["path"], tmp_path, "model.arrAsset", "gltf")
    assert outcome.result == "succeeded", outcome
    original = load_scene(ROOT / entry["path"], max_primitives=None, max_bytes=1 << 29)
    converted = load_scene(tmp_path / "model.arrAsset", max_primitives=None, max_bytes=1 << 29)
    assert converted.triangles == original.triangles
    assert converted.textures == original.textures
    np.testing.assert_allclose(converted.bounds, original.bounds, rtol=1e-5, atol=1e-6)
    box = json.loads((tmp_path / "model.info.json").read_text())["outputStatistics"]["boundingBox"]
    np.testing.assert_allclose([box["min"], box["max"]], original.bounds, rtol=1e-5, atol=1e-6)


def test_fans_the_renderer_skips_convert_to_triangles(tmp_path: Path) -> None:
    """Mesh_PrimitiveMode_05 is a triangle fan: the loader skips fans; converted, they are plain triangles."""
    path = "glTF2/glTF-Asset-Generator/Mesh_PrimitiveMode/Mesh_PrimitiveMode_05.gltf"
    header = json.loads((ROOT / path).read_text())
    assert {p.get("mode") for m in header["meshes"] for p in m["primitives"]} == {6}
    assert convert(ROOT, path, tmp_path, "model.arrAsset", "fan").result == "succeeded"
    assert load_scene(tmp_path / "model.arrAsset", max_primitives=None, max_bytes=1 << 26).triangles == 2
