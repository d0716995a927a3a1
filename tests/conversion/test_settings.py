"""The ConversionSettings file: ARR's schema, property by property, and where the file is found."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from renderhub.conversion.errors import ConversionFailed
from renderhub.conversion.settings import VERTEX_DEFAULTS, Settings, load, settings_file, validate


def refused(document: object, extension: str = ".gltf") -> str:
    with pytest.raises(ConversionFailed) as caught:
        validate(document, extension)
    assert caught.value.code == "ConversionProcessFailed"
    return caught.value.message


def test_defaults_are_arrs() -> None:
    settings = validate({}, ".gltf")
    assert settings == Settings(given={})
    assert (settings.scaling, settings.recenter_to_origin, settings.scene_graph_mode) == (1.0, False, "dynamic")
    assert settings.opaque_material_default_sidedness == "DoubleSided"
    assert settings.axis == ("+x", "+y", "+z") and settings.vertex == VERTEX_DEFAULTS
    assert settings.deduplicate_materials and settings.generate_collision_mesh and settings.fbx_assume_metallic
    assert not settings.unlit_materials and settings.metadata_keys == ()


@pytest.mark.parametrize("extension", [".fbx", ".FBX", ".e57", ".ply", ".las", ".laz", ".xyz"])
def test_gamma_defaults_to_true_for_the_formats_arr_names(extension: str) -> None:
    settings = validate({}, extension)
    assert settings.gamma_to_linear_material and settings.gamma_to_linear_vertex


@pytest.mark.parametrize("extension", [".gltf", ".glb", ".obj", ".dae", ".3ds", ".stl"])
def test_gamma_defaults_to_false_elsewhere(extension: str) -> None:
    settings = validate({}, extension)
    assert not settings.gamma_to_linear_material and not settings.gamma_to_linear_vertex


def test_every_property_is_read() -> None:
    document: dict[str, Any] = {
        "scaling": 0.01,
        "recenterToOrigin": True,
        "opaqueMaterialDefaultSidedness": "SingleSided",
        "material-override": "box_materials_override.json",
        "gammaToLinearMaterial": False,
        "gammaToLinearVertex": True,
        "sceneGraphMode": "none",
        "generateCollisionMesh": False,
        "unlitMaterials": True,
        "deduplicateMaterials": False,
        "fbxAssumeMetallic": False,
        "axis": ["+x", "+z", "-y"],
        "vertex": {"normal": "NONE", "texcoord0": "16_16_FLOAT", "tangent": "AUTO"},
        "metadataKeys": ["Part*", "Price"],
    }
    settings = validate(document, ".fbx")
    assert settings.scaling == 0.01 and settings.recenter_to_origin
    assert settings.opaque_material_default_sidedness == "SingleSided"
    assert settings.material_override == "box_materials_override.json"
    assert not settings.gamma_to_linear_material and settings.gamma_to_linear_vertex  # the file beats the default
    assert settings.scene_graph_mode == "none" and not settings.generate_collision_mesh
    assert settings.unlit_materials and not settings.deduplicate_materials and not settings.fbx_assume_metallic
    assert settings.axis == ("+x", "+z", "-y")
    assert settings.vertex == {**VERTEX_DEFAULTS, "normal": "NONE", "texcoord0": "16_16_FLOAT", "tangent": "AUTO"}
    assert settings.metadata_keys == ("Part*", "Price")
    assert settings.given == document


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ({"scale": 2}, "'scale' is not a conversion setting"),
        ({"scaling": 0}, "'scaling' must be greater than 0"),
        ({"scaling": -1.5}, "'scaling' must be greater than 0"),
        ({"scaling": "2"}, "'scaling' must be a number"),
        ({"scaling": True}, "'scaling' must be a number"),
        ({"scaling": float("nan")}, "'scaling' must be a number"),
        ({"recenterToOrigin": "yes"}, "'recenterToOrigin' must be true or false"),
        ({"unlitMaterials": 1}, "'unlitMaterials' must be true or false"),
        ({"sceneGraphMode": "flat"}, "'sceneGraphMode' must be one of none, static, dynamic"),
        ({"opaqueMaterialDefaultSidedness": "doublesided"}, "'opaqueMaterialDefaultSidedness' must be one of"),
        ({"material-override": 3}, "'material-override' must be a string"),
        ({"axis": ["+x", "+y"]}, "'axis' must be an array of 3"),
        ({"axis": "+x+y+z"}, "'axis' must be an array of 3"),
        ({"axis": ["+x", "+y", "up"]}, "'axis[2]' must be one of default, +x"),
        ({"axis": ["+x", "+x", "+z"]}, "'axis' must name each of x, y and z once"),
        ({"axis": ["default", "+x", "+z"]}, "'axis' must name each of x, y and z once"),
        ({"vertex": []}, "'vertex' must be an object"),
        ({"vertex": {"uv0": "NONE"}}, "'vertex.uv0' is not a vertex stream"),
        ({"vertex": {"position": "NONE"}}, "'vertex.position' must be one of 32_32_32_FLOAT, 16_16_16_16_FLOAT"),
        ({"vertex": {"color0": "32_32_32_32_FLOAT"}}, "'vertex.color0' must be one of"),
        ({"metadataKeys": "Part*"}, "'metadataKeys' must be an array of strings"),
        ({"metadataKeys": ["ok", 5]}, "'metadataKeys[1]' must be a string"),
    ],
)
def test_schema_violations_name_the_property(document: dict[str, Any], named: str) -> None:
    assert named in refused(document)


def test_the_file_must_be_an_object() -> None:
    assert "must hold a JSON object" in refused([1, 2])


def test_axis_default_keeps_the_files_axis_in_its_place() -> None:
    assert validate({"axis": ["default", "+z", "-y"]}, ".e57").axis == ("default", "+z", "-y")


def test_the_models_own_file_beats_the_deprecated_one(tmp_path: Path) -> None:
    model = tmp_path / "box.gltf"
    model.write_text("{}")
    assert settings_file(model) is None
    (tmp_path / "conversionSettings.json").write_text(json.dumps({"scaling": 2}))
    assert load(model).scaling == 2
    (tmp_path / "box.ConversionSettings.json").write_text(json.dumps({"scaling": 3}))
    assert load(model).scaling == 3
    assert load(tmp_path / "other.gltf").scaling == 2  # another model in the folder gets the generic one


def test_names_are_matched_ignoring_case_as_on_windows(tmp_path: Path) -> None:
    (tmp_path / "Box.conversionsettings.JSON").write_text(json.dumps({"recenterToOrigin": True}))
    assert load(tmp_path / "Box.fbx").recenter_to_origin


def test_a_file_that_is_not_json_is_named(tmp_path: Path) -> None:
    (tmp_path / "box.ConversionSettings.json").write_text("{scaling: 2}")
    with pytest.raises(ConversionFailed) as caught:
        load(tmp_path / "box.gltf")
    assert "box.ConversionSettings.json is not valid JSON" in caught.value.message


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "box.ConversionSettings.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"scaling": 4}).encode())
    assert load(tmp_path / "box.gltf").scaling == 4
