"""One conversion end to end on small glTF files written here: the settings' effects, textures, reports, refusals."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from renderhub.conversion.engine import ConversionFailed, Outcome, convert
from renderhub.render.scene import PackedBatch, load_scene
from tests.conversion.gltf_files import QUAD, Builder, accessor, quad_gltf, read_glb

ARR_INFO_KEYS = ["files", "conversionSettings", "inputInfo", "inputStatistics", "outputInfo", "outputStatistics"]


def run(root: Path, name: str, settings: dict[str, Any] | None = None, output: str = "model.arrAsset") -> Outcome:
    if settings is not None:
        (root / (name.rsplit(".", 1)[0] + ".ConversionSettings.json")).write_text(json.dumps(settings))
    out = root / "out"
    out.mkdir(exist_ok=True)
    return convert(root, name, out, output, "conversion-1")


def info(root: Path, name: str = "model") -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((root / "out" / f"{name}.info.json").read_text())
    return loaded


def bounds(root: Path) -> np.ndarray:
    box = info(root)["outputStatistics"]["boundingBox"]
    return np.array([box["min"], box["max"]])


def output(root: Path) -> tuple[dict[str, Any], bytes]:
    return read_glb(root / "out" / "model.arrAsset")


def test_a_quad_converts_with_arrs_reports(tmp_path: Path) -> None:
    quad_gltf(tmp_path / "quad.gltf")
    outcome = run(tmp_path, "quad.gltf")
    assert outcome == Outcome("succeeded", None, [])
    assert json.loads((tmp_path / "out" / "model.result.json").read_text()) == [
        {"conversionId": "conversion-1"},
        {"result": "succeeded"},
    ]
    report = info(tmp_path)
    assert list(report)[:6] == ARR_INFO_KEYS
    assert report["renderhub"] == {"levelsOfDetail": [2]}  # two triangles: nothing coarser is made
    assert report["files"] == {"input": "quad.gltf", "output": "model.arrAsset"}  # not the default name
    assert report["inputInfo"] == {
        "sourceAssetExtension": ".gltf",
        "sourceAssetFormat": "glTF2 Importer",
        "sourceAssetFormatVersion": "2.0",
        "sourceAssetGenerator": "renderhub tests",
    }
    assert report["inputStatistics"] == {
        "numMeshes": 1, "numFaces": 2, "numVertices": 4, "numMaterial": 1, "numFacesSmallestMesh": 2,
        "numFacesBiggestMesh": 2, "numNodes": 1, "numMeshUsagesInScene": 1, "maxNodeDepth": 1,
    }  # fmt: skip
    assert re.fullmatch(r"[0-9A-F]{16}", report["outputInfo"]["conversionHash"])
    assert report["outputInfo"]["conversionToolVersion"].startswith("renderhub ")
    assert report["outputStatistics"] == {
        "numMeshPartsCreated": 1,
        "numMeshPartsInstanced": 0,
        "recenteringOffset": [0.0, 0.0, 0.0],
        "boundingBox": {"min": [0.0, 0.0, 0.0], "max": [1.0, 1.0, 0.0]},
    }
    scene = load_scene(tmp_path / "out" / "model.arrAsset", max_primitives=None, max_bytes=1 << 26)
    assert scene.triangles == 2


def test_the_default_output_name_is_not_recorded_and_outputs_are_deterministic(tmp_path: Path) -> None:
    quad_gltf(tmp_path / "quad.gltf")
    run(tmp_path, "quad.gltf", output="quad.arrAsset")
    first = (tmp_path / "out" / "quad.arrAsset").read_bytes()
    assert info(tmp_path, "quad")["files"] == {"input": "quad.gltf"}
    run(tmp_path, "quad.gltf", output="quad.arrAsset")
    assert (tmp_path / "out" / "quad.arrAsset").read_bytes() == first


def test_quantized_normalized_positions_are_decoded_as_the_spec_says(tmp_path: Path) -> None:
    """gltf-transform's quantize: normalized SHORT positions and a node scale (trimesh reads them 32,767 times
    too large)."""
    builder = Builder()
    quantized = np.array([[-32767, -32767, 0], [32767, -32767, 0], [32767, 32767, 0], [-32767, 32767, 0]], np.int16)
    padded = np.column_stack([quantized, np.zeros(4, np.int16)])  # 8 bytes a vertex: 4-byte aligned
    position = builder.accessor(padded, "VEC4", normalized=True)
    builder.accessors[position]["type"] = "VEC3"  # three of the four shorts, read with a stride of 8
    builder.views[-1]["byteStride"] = 8
    indices = builder.accessor(np.array([0, 1, 2, 0, 2, 3], np.uint16), "SCALAR")
    header = builder.document(
        extensionsUsed=["KHR_mesh_quantization"],
        extensionsRequired=["KHR_mesh_quantization"],
        scene=0,
        scenes=[{"nodes": [0]}],
        nodes=[{"mesh": 0, "scale": [1.6, 1.6, 1.6], "translation": [10, 0, 0]}],
        meshes=[{"primitives": [{"attributes": {"POSITION": position}, "indices": indices}]}],
    )
    (tmp_path / "q.gltf").write_text(json.dumps(header))
    assert run(tmp_path, "q.gltf").result == "succeeded"
    np.testing.assert_allclose(bounds(tmp_path), [[8.4, -1.6, 0], [11.6, 1.6, 0]], atol=1e-6)


@pytest.mark.parametrize(
    ("extension", "named"),
    [
        ("EXT_meshopt_compression", "compressed with meshopt (EXT_meshopt_compression)"),
        ("KHR_draco_mesh_compression", "compressed with Draco (KHR_draco_mesh_compression)"),
        ("KHR_technique_webgl", "requires the glTF extension KHR_technique_webgl"),
    ],
)
def test_what_cannot_be_decoded_is_refused_with_the_reason(tmp_path: Path, extension: str, named: str) -> None:
    quad_gltf(tmp_path / "c.gltf", extensionsUsed=[extension], extensionsRequired=[extension])
    outcome = run(tmp_path, "c.gltf")
    assert outcome.result == "failed" and outcome.error is not None
    assert outcome.error.code == "ConversionProcessFailed" and named in outcome.error.message
    entries = json.loads((tmp_path / "out" / "model.result.json").read_text())
    assert entries[-2] == {"error": "ConversionProcessFailed", "title": outcome.error.message}
    assert entries[-1] == {"result": "failed"}
    assert not (tmp_path / "out" / "model.arrAsset").exists()


def test_meshopt_fallback_buffers_without_data_are_refused(tmp_path: Path) -> None:
    path = quad_gltf(tmp_path / "m.gltf", extensionsUsed=["EXT_meshopt_compression"])
    header = json.loads(path.read_text())
    header["buffers"][0]["extensions"] = {"EXT_meshopt_compression": {"fallback": True}}
    path.write_text(json.dumps(header))
    error = run(tmp_path, "m.gltf").error
    assert error is not None and "meshopt" in error.message


def with_texture(path: Path, uri: str) -> Path:
    header = json.loads(quad_gltf(path).read_text())
    header["images"] = [{"uri": uri}]
    header["textures"] = [{"source": 0}]
    header["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"] = {"index": 0}
    path.write_text(json.dumps(header))
    return path


def test_a_missing_texture_is_warning_4004_and_the_rest_converts(tmp_path: Path) -> None:
    with_texture(tmp_path / "t.gltf", "textures/wood.png")
    outcome = run(tmp_path, "t.gltf")
    warning = {"warning": "4004", "title": "Missing texture",
               "details": {"texture": "textures/wood.png", "material": "paint"}}  # fmt: skip
    assert outcome.result == "succeeded with warnings" and outcome.warnings == [warning]
    entries = json.loads((tmp_path / "out" / "model.result.json").read_text())
    assert entries == [{"conversionId": "conversion-1"}, warning, {"result": "succeeded with warnings"}]
    header, _ = output(tmp_path)
    assert "textures" not in header and "baseColorTexture" not in header["materials"][0]["pbrMetallicRoughness"]
    load_scene(tmp_path / "out" / "model.arrAsset", max_primitives=None, max_bytes=1 << 26)


def test_textures_are_found_by_suffix_converted_and_embedded(tmp_path: Path) -> None:
    (tmp_path / "maps").mkdir()
    Image.new("RGBA", (4, 4), (255, 0, 0, 255)).save(tmp_path / "maps" / "Wood.tga")
    with_texture(tmp_path / "t.gltf", "C:\\Users\\artist\\maps\\wood.tga")  # another machine's path, other case
    assert run(tmp_path, "t.gltf").result == "succeeded"
    header, binary = output(tmp_path)
    (image,) = header["images"]
    assert image["mimeType"] == "image/png" and "uri" not in image
    view = header["bufferViews"][image["bufferView"]]
    embedded = Image.open(io.BytesIO(binary[view["byteOffset"] : view["byteOffset"] + view["byteLength"]]))
    assert embedded.format == "PNG" and embedded.getpixel((0, 0)) == (255, 0, 0, 255)
    scene = load_scene(tmp_path / "out" / "model.arrAsset", max_primitives=None, max_bytes=1 << 26)
    assert scene.textures == 1


def test_a_broken_texture_is_a_warning_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with_texture(tmp_path / "t.gltf", "bad.png")
    (warning,) = run(tmp_path, "t.gltf").warnings
    assert warning["warning"] == "4004" and "could not be decoded" in warning["details"]["reason"]  # type: ignore[index, operator]


def test_scaling_axis_and_recentering(tmp_path: Path) -> None:
    quad_gltf(tmp_path / "q.gltf", nodes=[{"mesh": 0, "translation": [10, 20, 30]}])
    run(tmp_path, "q.gltf", {"scaling": 0.5})
    np.testing.assert_allclose(bounds(tmp_path), [[5, 10, 15], [5.5, 10.5, 15]])
    # Z-up to Y-up: output (x, y, z) = (x, z, -y).
    run(tmp_path, "q.gltf", {"axis": ["+x", "+z", "-y"]})
    np.testing.assert_allclose(bounds(tmp_path), [[10, 30, -21], [11, 30, -20]])
    run(tmp_path, "q.gltf", {"recenterToOrigin": True, "scaling": 2})
    np.testing.assert_allclose(bounds(tmp_path), [[-1, -1, 0], [1, 1, 0]])
    np.testing.assert_allclose(info(tmp_path)["outputStatistics"]["recenteringOffset"], [21, 41, 60])
    header, _ = output(tmp_path)
    np.testing.assert_allclose(header["nodes"][0]["matrix"][12:15], [-1, -1, 0])  # the node moved, not the root


def test_scaling_keeps_the_scene_graph_and_scales_translations_not_node_matrices(tmp_path: Path) -> None:
    nodes = [{"name": "parent", "translation": [4, 0, 0], "children": [1]}, {"name": "child", "mesh": 0,
             "translation": [0, 2, 0], "child": True}]  # fmt: skip
    quad_gltf(tmp_path / "q.gltf", nodes=nodes)
    run(tmp_path, "q.gltf", {"scaling": 0.1})
    header, _ = output(tmp_path)
    assert [n["name"] for n in header["nodes"]] == ["parent", "child"] and header["nodes"][0]["children"] == [1]
    np.testing.assert_allclose(header["nodes"][1]["matrix"], [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0.2, 0, 1])
    np.testing.assert_allclose(bounds(tmp_path), [[0.4, 0.2, 0], [0.5, 0.3, 0]])


def test_a_mirroring_axis_keeps_faces_outward(tmp_path: Path) -> None:
    quad_gltf(tmp_path / "q.gltf")
    run(tmp_path, "q.gltf", {"axis": ["-x", "+y", "+z"]})
    scene = load_scene(tmp_path / "out" / "model.arrAsset", max_primitives=None, max_bytes=1 << 26)
    (batch,) = scene.batches  # the level of detail the render server draws
    assert isinstance(batch, PackedBatch)
    positions, normals = batch.vertices["p"], batch.vertices["n"]
    for a, b, c in batch.indices:  # counter-clockwise seen from where each vertex normal points
        normal = np.cross(positions[b] - positions[a], positions[c] - positions[a])
        assert np.dot(normal, normals[a]) > 0
    np.testing.assert_allclose(scene.bounds, [[-1, 0, 0], [0, 1, 0]])


def test_scene_graph_mode_none_collapses_to_one_node(tmp_path: Path) -> None:
    nodes = [{"name": "a", "mesh": 0}, {"name": "b", "mesh": 0, "translation": [5, 0, 0]}]
    quad_gltf(tmp_path / "q.gltf", nodes=nodes)
    run(tmp_path, "q.gltf", {"sceneGraphMode": "static"})
    header, _ = output(tmp_path)
    assert len(header["nodes"]) == 2 and info(tmp_path)["outputStatistics"]["numMeshPartsInstanced"] == 1
    run(tmp_path, "q.gltf", {"sceneGraphMode": "none"})
    header, binary = output(tmp_path)
    assert len(header["nodes"]) == 1 and len(header["meshes"]) == 1
    (primitive,) = header["meshes"][0]["primitives"]  # both instances, one material: merged
    assert accessor(header, binary, primitive["attributes"]["POSITION"]).shape == (8, 3)
    np.testing.assert_allclose(bounds(tmp_path), [[0, 0, 0], [6, 1, 0]])
    assert info(tmp_path)["inputStatistics"]["numNodes"] == 2  # the input as it was


def test_metadata_keys_keep_matching_node_extras(tmp_path: Path) -> None:
    extras = {"PartNo": "A-1", "PartMass": 2.5, "Price": 3, "Owner": "x", "PartTags": ["a"], "Partial": True}
    quad_gltf(tmp_path / "q.gltf", nodes=[{"mesh": 0, "extras": extras}])
    run(tmp_path, "q.gltf")
    assert "extras" not in output(tmp_path)[0]["nodes"][0]  # none kept unless asked for
    run(tmp_path, "q.gltf", {"metadataKeys": ["Part*", "Price"]})
    # Lists are not a metadata type ARR keeps (bool, int, float, string).
    assert output(tmp_path)[0]["nodes"][0]["extras"] == {"PartNo": "A-1", "PartMass": 2.5, "Price": 3, "Partial": True}


def materials_gltf(path: Path) -> Path:
    header = json.loads(quad_gltf(path, nodes=[{"mesh": 0}, {"mesh": 1, "translation": [2, 0, 0]}]).read_text())
    header["meshes"].append({"primitives": [dict(header["meshes"][0]["primitives"][0], material=1)]})
    header["materials"] = [
        {"name": "red", "pbrMetallicRoughness": {"baseColorFactor": [0.5, 0.0, 0.0, 1.0]}},
        {"name": "also red", "pbrMetallicRoughness": {"baseColorFactor": [0.5, 0.0, 0.0, 1.0]}},
        {"name": "unused", "alphaMode": "BLEND"},
    ]
    path.write_text(json.dumps(header))
    return path


def test_materials_deduplicated_double_sided_and_unused_dropped(tmp_path: Path) -> None:
    materials_gltf(tmp_path / "m.gltf")
    run(tmp_path, "m.gltf")
    header, _ = output(tmp_path)
    assert header["materials"] == [
        {"name": "red", "pbrMetallicRoughness": {"baseColorFactor": [0.5, 0.0, 0.0, 1.0]}, "doubleSided": True}
    ]
    assert {p["material"] for m in header["meshes"] for p in m["primitives"]} == {0}
    assert info(tmp_path)["inputStatistics"]["numMaterial"] == 3
    run(tmp_path, "m.gltf", {"deduplicateMaterials": False, "opaqueMaterialDefaultSidedness": "SingleSided"})
    header, _ = output(tmp_path)
    assert [m["name"] for m in header["materials"]] == ["red", "also red"]
    assert not any(m.get("doubleSided") for m in header["materials"])


def test_unlit_materials_and_gamma_to_linear(tmp_path: Path) -> None:
    materials_gltf(tmp_path / "m.gltf")
    run(tmp_path, "m.gltf", {"unlitMaterials": True, "gammaToLinearMaterial": True})
    header, _ = output(tmp_path)
    (material,) = header["materials"]
    assert material["extensions"] == {"KHR_materials_unlit": {}} and "KHR_materials_unlit" in header["extensionsUsed"]
    np.testing.assert_allclose(material["pbrMetallicRoughness"]["baseColorFactor"], [0.2140411, 0, 0, 1], atol=1e-6)
    load_scene(tmp_path / "out" / "model.arrAsset", max_primitives=None, max_bytes=1 << 26)


def test_vertex_colours_to_linear_and_streams_left_out(tmp_path: Path) -> None:
    builder = Builder()
    colors = np.tile(np.float32([0.5, 1.0, 0.0, 0.25]), (4, 1))
    primitive = builder.quad_primitive(COLOR_0=colors, NORMAL=np.tile(np.float32([0, 0, 1]), (4, 1)))
    header = builder.document(scene=0, scenes=[{"nodes": [0]}], nodes=[{"mesh": 0}],
                              meshes=[{"primitives": [primitive]}])  # fmt: skip
    (tmp_path / "c.gltf").write_text(json.dumps(header))
    run(tmp_path, "c.gltf", {"gammaToLinearVertex": True, "vertex": {"normal": "NONE", "texcoord1": "16_16_FLOAT"}})
    header, binary = output(tmp_path)
    (written,) = header["meshes"][0]["primitives"]
    assert set(written["attributes"]) == {"POSITION", "COLOR_0"}
    np.testing.assert_allclose(accessor(header, binary, written["attributes"]["COLOR_0"])[0], [0.2140411, 1, 0, 0.25],
                               atol=1e-6)  # fmt: skip
    assert info(tmp_path)["renderhub"]["settingsWithoutEffect"] == ["vertex.texcoord1"]


def test_a_settings_file_that_breaks_the_schema_fails_naming_the_property(tmp_path: Path) -> None:
    quad_gltf(tmp_path / "q.gltf")
    outcome = run(tmp_path, "q.gltf", {"scaling": 1, "recenter": True})
    assert outcome.result == "failed" and outcome.error is not None
    assert "'recenter' is not a conversion setting" in outcome.error.message
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.result.json"]


def test_a_failure_removes_what_an_earlier_run_left(tmp_path: Path) -> None:
    quad_gltf(tmp_path / "q.gltf")
    run(tmp_path, "q.gltf")
    (tmp_path / "q.ConversionSettings.json").write_text("[]")
    assert run(tmp_path, "q.gltf").result == "failed"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.result.json"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing.gltf", "Invalid input provided: 'missing.gltf' does not exist in the input container"),
        ("../outside.gltf", "must be a relative path inside the input container"),
        ("/etc/passwd", "must be a relative path inside the input container"),
        ("notes.txt", "'.txt' files are not converted; accepted formats: FBX, glTF/GLB"),
        ("empty.fbx", "empty.fbx is empty"),
    ],
)
def test_bad_inputs_fail_with_a_message(tmp_path: Path, name: str, message: str) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty.fbx").write_bytes(b"")
    (tmp_path.parent / "outside.gltf").write_text("{}")
    error = run(tmp_path, name).error
    assert isinstance(error, ConversionFailed) and error.code == "ConversionProcessFailed"
    assert message in error.message


def test_a_bad_output_name_is_refused(tmp_path: Path) -> None:
    quad_gltf(tmp_path / "q.gltf")
    error = run(tmp_path, "q.gltf", output="../escape.arrAsset").error
    assert error is not None and "not a plain file name" in error.message


def test_a_scene_without_geometry_fails(tmp_path: Path) -> None:
    quad_gltf(tmp_path / "q.gltf", nodes=[{"name": "empty"}])
    error = run(tmp_path, "q.gltf").error
    assert error is not None and "holds no geometry" in error.message


def test_positions_far_from_the_origin_keep_their_precision(tmp_path: Path) -> None:
    """A node far away (survey coordinates) and centimetre detail: float64 bounds, as ARR reports them."""
    quad_gltf(tmp_path / "q.gltf", nodes=[{"mesh": 0, "translation": [500_000.25, 4_000_000.5, 0]}])
    run(tmp_path, "q.gltf", {"recenterToOrigin": True})
    np.testing.assert_allclose(info(tmp_path)["outputStatistics"]["recenteringOffset"], [500_000.75, 4_000_001, 0])
    np.testing.assert_allclose(bounds(tmp_path), [[-0.5, -0.5, 0], [0.5, 0.5, 0]], atol=1e-9)


def test_the_quad_is_where_the_positions_say(tmp_path: Path) -> None:
    quad_gltf(tmp_path / "q.gltf")
    run(tmp_path, "q.gltf")
    header, binary = output(tmp_path)
    positions = accessor(header, binary, header["meshes"][0]["primitives"][0]["attributes"]["POSITION"])
    np.testing.assert_array_equal(positions, QUAD)


def test_an_accessor_asking_for_gigabytes_of_nothing_is_refused(tmp_path: Path) -> None:
    path = quad_gltf(tmp_path / "q.gltf")
    header = json.loads(path.read_text())
    header["accessors"].append({"componentType": 5126, "count": 2_000_000_000, "type": "VEC3"})  # no bufferView
    header["meshes"].append({"primitives": [{"attributes": {"POSITION": len(header["accessors"]) - 1}, "mode": 0}]})
    header["nodes"].append({"mesh": 1})
    header["scenes"][0]["nodes"].append(1)
    path.write_text(json.dumps(header))
    error = run(tmp_path, "q.gltf").error
    assert error is not None and "asks for 2,000,000,000 elements with no data behind them" in error.message


def test_positions_scaled_past_single_precision_are_refused(tmp_path: Path) -> None:
    quad_gltf(tmp_path / "q.gltf", nodes=[{"mesh": 0, "scale": [1e30, 1e30, 1e30]}])
    with pytest.warns(RuntimeWarning, match="overflow"):
        error = run(tmp_path, "q.gltf", {"scaling": 1e20, "sceneGraphMode": "none"}).error
    assert error is not None and "too large for single precision" in error.message
