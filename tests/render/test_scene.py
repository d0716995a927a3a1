"""Loading glTF models: baked transforms, materials, normals, limits and clean refusals."""

from __future__ import annotations

import base64
import io
import json
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from renderhub.render.sample import write_sample
from renderhub.render.scene import STANDARD_MAX_PRIMITIVES, ModelError, Scene, load_scene

MODELS = Path("/usr/share/assimp/models")
BOX_TEXTURED = MODELS / "glTF2/BoxTextured-glTF-Binary/BoxTextured.glb"
needs_corpus = pytest.mark.skipif(not MODELS.is_dir(), reason="install Debian's assimp-testmodels")
ROOMY = 256 * 1024 * 1024


def load(path: Path, **limits: Any) -> Scene:
    return load_scene(path, max_primitives=limits.get("max_primitives"), max_bytes=limits.get("max_bytes", ROOMY))


def refused(path: Path, **limits: Any) -> ModelError:
    with pytest.raises(ModelError) as caught:
        load(path, **limits)
    assert caught.value.message and caught.value.code in str(caught.value)
    return caught.value


def triangle_gltf(path: Path, *, nodes: list[dict[str, Any]] | None = None, **extra: Any) -> Path:
    """A glTF with one triangle (no normals) in a data URI, shown by `nodes` (default: one untransformed node)."""
    positions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32).tobytes()
    header: dict[str, Any] = {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": list(range(len(nodes or [{}])))}],
        "nodes": [{"mesh": 0, **node} for node in (nodes or [{}])],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
        "accessors": [{"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3"}],
        "bufferViews": [{"buffer": 0, "byteLength": len(positions)}],
        "buffers": [
            {
                "byteLength": len(positions),
                "uri": "data:application/octet-stream;base64," + base64.b64encode(positions).decode(),
            }
        ],
    }
    header.update(extra)
    path.write_text(json.dumps(header))
    return path


def test_a_triangle_loads_with_computed_unit_normals(tmp_path: Path) -> None:
    scene = load(triangle_gltf(tmp_path / "t.gltf"))
    assert (scene.triangles, scene.draw_calls, scene.skipped_primitives) == (1, 1, 0)
    (batch,) = scene.batches
    np.testing.assert_allclose(batch.normals, [[0, 0, 1]] * 3, atol=1e-6)
    np.testing.assert_allclose(scene.bounds, [[0, 0, 0], [1, 1, 0]])


def test_node_transforms_are_baked_and_mirrors_keep_faces_outward(tmp_path: Path) -> None:
    nodes = [{"translation": [10, 0, 0]}, {"scale": [-1, 1, 1]}, {"children": [3], "translation": [0, 5, 0]}, {}]
    nodes[3] = {"rotation": [0, 0.7071068, 0, 0.7071068]}  # 90 degrees about +Y, under node 2
    path = triangle_gltf(tmp_path / "t.gltf", nodes=nodes)
    header = json.loads(path.read_text())
    header["scenes"] = [{"nodes": [0, 1, 2]}]
    header["nodes"][2].pop("mesh")
    path.write_text(json.dumps(header))
    scene = load(path)
    assert scene.triangles == 3 and scene.draw_calls == 1
    batch = scene.batches[0]
    triangles = {
        tuple(map(tuple, batch.positions[face].round(5) + 0.0)): batch.normals[face[0]] for face in batch.indices
    }
    expected = {
        "translated": ((10, 0, 0), (11, 0, 0), (10, 1, 0)),
        "mirrored": ((0, 0, 0), (-1, 0, 0), (0, 1, 0)),
        "rotated under a parent": ((0, 5, 0), (0, 5, -1), (0, 6, 0)),
    }
    corners = {frozenset(t) for t in triangles}
    for name, triangle in expected.items():
        assert frozenset(map(tuple, np.array(triangle, float))) in corners, name
    for positions, normal in triangles.items():  # counter-clockwise seen from where the normal points
        a, b, c = np.array(positions)
        assert np.dot(np.cross(b - a, c - a), normal) > 0
        np.testing.assert_allclose(np.linalg.norm(normal), 1, atol=1e-6)


def test_textured_box_carries_texture_and_texcoords() -> None:
    if not BOX_TEXTURED.exists():
        pytest.skip("install Debian's assimp-testmodels")
    scene = load(BOX_TEXTURED)
    (batch,) = scene.batches
    texture = batch.material.texture
    assert texture is not None and texture.dtype == np.uint8 and texture.shape[2] == 4
    assert scene.textures == 1 and scene.triangles == 12
    assert batch.texcoords.shape == (len(batch.positions), 2) and batch.texcoords.max() > 0.5
    np.testing.assert_allclose(np.linalg.norm(batch.normals, axis=1), 1, atol=1e-5)


def test_sample_is_deterministic_fast_and_about_100k_triangles(tmp_path: Path) -> None:
    started = time.perf_counter()
    first = write_sample(tmp_path)
    elapsed = time.perf_counter() - started
    second = write_sample(tmp_path / "again.glb")
    assert first.name == "renderhub-sample.glb" and first.read_bytes() == second.read_bytes()
    assert elapsed < 2.0
    scene = load(first, max_primitives=STANDARD_MAX_PRIMITIVES)
    assert 90_000 <= scene.triangles <= 110_000
    assert scene.textures >= 1 and scene.draw_calls <= 8
    assert not list(tmp_path.glob("*.partial"))


@needs_corpus
@pytest.mark.parametrize("name", ["BoxTextured-glTF/BoxTextured.gltf", "BoxTextured-glTF-Binary/BoxTextured.glb"])
def test_gltf_1_is_refused_with_a_clear_message(name: str) -> None:
    error = refused(MODELS / "glTF" / name)
    assert error.code == "UnsupportedVersion"
    assert error.message == "glTF 1.0 is not supported; convert to glTF 2.0"


def test_glb_version_1_header_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "old.glb"
    path.write_bytes(b"glTF" + struct.pack("<III", 1, 20, 0) + b"\0" * 8)
    assert refused(path).code == "UnsupportedVersion"


def test_too_many_primitives(tmp_path: Path) -> None:
    path = triangle_gltf(tmp_path / "t.gltf", nodes=[{}, {"translation": [2, 0, 0]}])
    error = refused(path, max_primitives=1)
    assert error.code == "TooManyPrimitives" and "2 triangles" in error.message
    assert load(path, max_primitives=2).triangles == 2


def test_model_too_large_by_file_size_and_by_memory(tmp_path: Path) -> None:
    path = triangle_gltf(tmp_path / "t.gltf")
    assert refused(path, max_bytes=path.stat().st_size - 1).code == "ModelTooLarge"
    # The file fits, what it unpacks to on the GPU does not: 10,000 instances of one triangle.
    many = triangle_gltf(tmp_path / "many.gltf", nodes=[{}] * 10_000)
    error = refused(many, max_bytes=many.stat().st_size + 1000)
    assert error.code == "ModelTooLarge" and "memory" in error.message


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", "InvalidModel"),
        (b"\x89PNG not a model", "InvalidModel"),
        (b"glTF\x02\x00\x00\x00", "InvalidModel"),  # truncated GLB
        (b"[" * 100_000 + b"]" * 100_000, "InvalidModel"),  # nesting deep enough to exhaust a recursive parser
        (b'{"asset": {"version": "3.0"}}', "UnsupportedVersion"),
        (b'{"asset": {"version": "2.0"}}', "EmptyModel"),
        (b'{"asset": {"version": "2.0"}, "extensionsRequired": ["EXT_meshopt_compression"]}', "UnsupportedExtension"),
        (b'{"asset": {"version": "2.0"}, "scenes": [{"nodes": [7]}]}', "InvalidModel"),
    ],
)
def test_broken_files_are_refused_with_stable_codes(tmp_path: Path, content: bytes, code: str) -> None:
    path = tmp_path / "m.gltf"
    path.write_bytes(content)
    assert refused(path).code == code


def test_texture_over_the_memory_limit(tmp_path: Path) -> None:
    from PIL import Image

    image = io.BytesIO()
    Image.new("RGBA", (3000, 3000)).save(image, "PNG")  # tiny as PNG, 36 MB as a texture
    path = triangle_gltf(
        tmp_path / "t.gltf",
        materials=[{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}],
        textures=[{"source": 0}],
        images=[{"uri": "data:image/png;base64," + base64.b64encode(image.getvalue()).decode()}],
    )
    header = json.loads(path.read_text())
    header["meshes"][0]["primitives"][0]["material"] = 0
    path.write_text(json.dumps(header))
    error = refused(path, max_bytes=path.stat().st_size + 100_000)
    assert error.code == "ModelTooLarge" and "3000x3000" in error.message
    assert load(path).textures == 1


def test_positions_beyond_single_precision_are_refused(tmp_path: Path) -> None:
    path = triangle_gltf(tmp_path / "t.gltf", nodes=[{"scale": [1e300, 1, 1]}])
    assert refused(path).code == "InvalidModel"


def test_missing_file(tmp_path: Path) -> None:
    assert refused(tmp_path / "absent.glb").code == "ModelNotFound"


def test_non_finite_positions_are_refused(tmp_path: Path) -> None:
    path = triangle_gltf(tmp_path / "t.gltf")
    header = json.loads(path.read_text())
    data = np.array([[0, 0, 0], [np.inf, 0, 0], [0, np.nan, 0]], np.float32).tobytes()
    header["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(data).decode()
    path.write_text(json.dumps(header))
    error = refused(path)
    assert error.code == "InvalidModel" and "non-finite" in error.message


@pytest.mark.parametrize("uri", ["../secret.bin", "/etc/passwd", "http://example.com/a.bin", "missing.bin"])
def test_buffers_outside_the_model_folder_are_never_read(tmp_path: Path, uri: str) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\0" * 36)
    folder = tmp_path / "model"
    folder.mkdir()
    path = triangle_gltf(folder / "t.gltf")
    header = json.loads(path.read_text())
    header["buffers"][0]["uri"] = uri
    path.write_text(json.dumps(header))
    assert refused(path).code == "InvalidModel"


def test_points_load_beside_triangles_and_lines_are_skipped(tmp_path: Path) -> None:
    path = triangle_gltf(tmp_path / "t.gltf")
    header = json.loads(path.read_text())
    header["meshes"][0]["primitives"] += [
        {"attributes": {"POSITION": 0}, "mode": 0},
        {"attributes": {"POSITION": 0}, "mode": 1},
    ]
    path.write_text(json.dumps(header))
    scene = load(path)
    assert (scene.triangles, scene.points, scene.skipped_primitives, scene.draw_calls) == (1, 3, 1, 2)
    header["meshes"][0]["primitives"] = [{"attributes": {"POSITION": 0}, "mode": mode} for mode in (1, 3)]
    path.write_text(json.dumps(header))
    error = refused(path)
    assert error.code == "UnsupportedPrimitive" and "line strips, lines;" in error.message
    assert "only triangles and points are rendered" in error.message


def test_materials_base_colour_double_sided_and_alpha(tmp_path: Path) -> None:
    path = triangle_gltf(
        tmp_path / "t.gltf",
        materials=[
            {
                "pbrMetallicRoughness": {"baseColorFactor": [1, 0.5, 0, 1]},
                "doubleSided": True,
                "alphaMode": "MASK",
                "alphaCutoff": 0.25,
            }
        ],
    )
    header = json.loads(path.read_text())
    header["meshes"][0]["primitives"][0]["material"] = 0
    path.write_text(json.dumps(header))
    material = load(path).batches[0].material
    np.testing.assert_allclose(material.base_color, (1, 0.5, 0, 1), atol=1 / 255)
    assert material.double_sided and material.alpha_mode == "MASK" and material.alpha_cutoff == 0.25
