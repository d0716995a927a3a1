"""Point clouds written here with each format's own library, converted, and checked against what was written."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

import laspy
import numpy as np
import pye57
import pytest
import trimesh

from renderhub.conversion.engine import Outcome, convert
from renderhub.conversion.transforms import srgb_to_linear
from renderhub.render.gltf import check_header, read_header
from tests.conversion.gltf_files import accessor, read_glb

COUNT = 2000


@pytest.fixture
def cloud() -> tuple[np.ndarray, np.ndarray]:
    """Survey-like points (UTM metres, millimetre detail) and 8-bit colours."""
    rng = np.random.default_rng(7)
    positions = np.column_stack([500_000 + rng.uniform(0, 120, COUNT), 4_100_000 + rng.uniform(0, 80, COUNT),
                                 rng.uniform(-5, 30, COUNT)]).round(3)  # fmt: skip
    colors = rng.integers(0, 256, (COUNT, 3)).astype(np.uint8)
    return positions, colors


def run(root: Path, name: str, settings: dict[str, Any] | None = None) -> tuple[Outcome, dict[str, Any]]:
    if settings is not None:
        (root / (name.rsplit(".", 1)[0] + ".ConversionSettings.json")).write_text(json.dumps(settings))
    (root / "out").mkdir(exist_ok=True)
    outcome = convert(root, name, root / "out", "cloud.arrAsset", "points")
    report = json.loads((root / "out" / "cloud.info.json").read_text()) if outcome.error is None else {}
    return outcome, report


def assert_matches(report: dict[str, Any], positions: np.ndarray, atol: float = 2e-5) -> None:
    """Counts and bounds as written. The default tolerance is float32's step over these clouds' ~120 m, as the
    asset stores positions relative to the centre: a hundredth of a millimetre."""
    statistics = report["inputStatistics"]
    assert statistics["numVertices"] == statistics["numFaces"] == len(positions)
    assert (statistics["numMeshes"], statistics["numNodes"], statistics["numMaterial"]) == (1, 1, 0)
    box = report["outputStatistics"]["boundingBox"]
    np.testing.assert_allclose([box["min"], box["max"]], [positions.min(0), positions.max(0)], rtol=0, atol=atol)


def written_colors(root: Path) -> np.ndarray:
    header, binary = read_glb(root / "out" / "cloud.arrAsset")
    (primitive,) = header["meshes"][0]["primitives"]
    assert primitive["mode"] == 0 and "indices" not in primitive
    return accessor(header, binary, primitive["attributes"]["COLOR_0"])


def test_xyz(tmp_path: Path, cloud: tuple[np.ndarray, np.ndarray]) -> None:
    positions, colors = cloud
    np.savetxt(tmp_path / "scan.xyz", np.column_stack([positions, colors]), fmt="%.3f %.3f %.3f %d %d %d",
               header="x y z r g b")  # fmt: skip
    outcome, report = run(tmp_path, "scan.xyz")
    assert outcome.result == "succeeded"
    assert_matches(report, positions)
    assert report["inputInfo"]["sourceAssetFormat"] == "XYZ point cloud"
    # gammaToLinearVertex is on by default for XYZ: colours are stored linear, in bytes.
    expected = np.round(srgb_to_linear(colors / np.float32(255)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(written_colors(tmp_path)[:, :3], expected)
    run(tmp_path, "scan.xyz", {"gammaToLinearVertex": False})
    np.testing.assert_array_equal(written_colors(tmp_path), np.column_stack([colors, np.full(COUNT, 255)]))


def test_xyz_with_commas_and_no_colours(tmp_path: Path, cloud: tuple[np.ndarray, np.ndarray]) -> None:
    positions, _ = cloud
    np.savetxt(tmp_path / "scan.xyz", positions, fmt="%.3f", delimiter=",")
    outcome, report = run(tmp_path, "scan.xyz")
    assert outcome.result == "succeeded"
    assert_matches(report, positions)
    header, _ = read_glb(tmp_path / "out" / "cloud.arrAsset")
    assert set(header["meshes"][0]["primitives"][0]["attributes"]) == {"POSITION"}


def test_point_cloud_settings_axis_scaling_recentering(tmp_path: Path, cloud: tuple[np.ndarray, np.ndarray]) -> None:
    positions, colors = cloud
    np.savetxt(tmp_path / "scan.xyz", np.column_stack([positions, colors]), fmt="%.3f")
    settings = {"axis": ["+x", "+z", "-y"], "scaling": 0.5, "sceneGraphMode": "none", "unlitMaterials": True}
    outcome, report = run(tmp_path, "scan.xyz", settings)
    assert outcome.result == "succeeded"
    turned = np.column_stack([positions[:, 0], positions[:, 2], -positions[:, 1]]) * 0.5
    assert_matches(report, turned)
    # ARR ignores the mesh settings for point clouds; they are listed as without effect.
    assert report["renderhub"] == {"settingsWithoutEffect": ["sceneGraphMode", "unlitMaterials"]}
    _, report = run(tmp_path, "scan.xyz", {"recenterToOrigin": True})
    centre = (positions.min(0) + positions.max(0)) / 2
    np.testing.assert_allclose(report["outputStatistics"]["recenteringOffset"], centre, rtol=0, atol=1e-6)
    assert_matches(report, positions - centre)


def test_binary_ply_written_by_trimesh(tmp_path: Path, cloud: tuple[np.ndarray, np.ndarray]) -> None:
    positions, colors = cloud
    points = trimesh.PointCloud(positions - [500_000, 4_100_000, 0], colors=colors)  # trimesh writes float32
    (tmp_path / "scan.ply").write_bytes(points.export(file_type="ply"))
    assert (tmp_path / "scan.ply").read_bytes().startswith(b"ply\nformat binary_little_endian 1.0")
    outcome, report = run(tmp_path, "scan.ply", {"gammaToLinearVertex": False})
    assert outcome.result == "succeeded"
    assert_matches(report, points.vertices.astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(written_colors(tmp_path)[:, :3], colors)


@pytest.mark.parametrize("suffix", [".las", ".laz"])
def test_las_and_laz_with_colour(tmp_path: Path, cloud: tuple[np.ndarray, np.ndarray], suffix: str) -> None:
    positions, colors = cloud
    header = laspy.LasHeader(point_format=3, version="1.2")
    header.scales, header.offsets = np.array([0.001] * 3), np.array([500_000, 4_100_000, 0])
    las = laspy.LasData(header)
    las.x, las.y, las.z = positions.T
    las.red, las.green, las.blue = (colors.astype(np.uint16) * 257).T  # 16-bit, as LAS stores colour
    las.write(tmp_path / f"scan{suffix}")
    outcome, report = run(tmp_path, f"scan{suffix}", {"gammaToLinearVertex": False})
    assert outcome.result == "succeeded"
    assert_matches(report, positions)  # the millimetres of survey coordinates are kept
    assert report["inputInfo"]["sourceAssetFormat"] == f"{suffix[1:].upper()} point cloud"
    assert report["inputInfo"]["sourceAssetFormatVersion"] == "1.2"
    np.testing.assert_array_equal(written_colors(tmp_path)[:, :3], colors)


def test_las_intensity_is_the_colour_when_there_is_none(tmp_path: Path, cloud: tuple[np.ndarray, np.ndarray]) -> None:
    positions, _ = cloud
    las = laspy.LasData(laspy.LasHeader(point_format=1, version="1.2"))
    las.header.scales, las.header.offsets = np.array([0.001] * 3), np.array([500_000, 4_100_000, 0])
    las.x, las.y, las.z = positions.T
    las.intensity = np.linspace(0, 1000, COUNT).astype(np.uint16)
    las.write(tmp_path / "scan.laz")
    _, report = run(tmp_path, "scan.laz", {"gammaToLinearVertex": False})
    assert_matches(report, positions)
    grey = written_colors(tmp_path)
    assert (grey[:, 0] == grey[:, 1]).all() and (grey[:, 0] == grey[:, 2]).all()
    assert (grey[0, 0], grey[-1, 0]) == (0, 255)


def test_e57_scans_in_the_files_common_coordinates(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    scans = [rng.uniform(-10, 10, (COUNT, 3)), rng.uniform(0, 5, (COUNT // 2, 3))]
    moves = [(1000.0, 2000.0, 5.0), (-30.0, 0.0, 0.0)]
    e57 = pye57.E57(str(tmp_path / "site.e57"), mode="w")
    for points, move in zip(scans, moves, strict=True):
        red = np.full(len(points), 200, np.uint8)
        data = {"cartesianX": points[:, 0], "cartesianY": points[:, 1], "cartesianZ": points[:, 2],
                "colorRed": red, "colorGreen": red // 2, "colorBlue": red // 4}  # fmt: skip
        e57.write_scan_raw(data, translation=np.array(move))
    e57.close()
    outcome, report = run(tmp_path, "site.e57", {"gammaToLinearVertex": False})
    assert outcome.result == "succeeded"
    placed = np.concatenate([points + move for points, move in zip(scans, moves, strict=True)])
    assert_matches(report, placed, atol=1e-4)  # pye57 stores coordinates as float32
    np.testing.assert_array_equal(np.unique(written_colors(tmp_path), axis=0), [[200, 100, 50, 255]])


def test_the_render_servers_loader_draws_a_converted_point_cloud(
    tmp_path: Path, cloud: tuple[np.ndarray, np.ndarray]
) -> None:
    from renderhub.render.scene import load_scene

    positions, colors = cloud
    np.savetxt(tmp_path / "scan.xyz", np.column_stack([positions, colors]), fmt="%.3f")
    run(tmp_path, "scan.xyz")
    asset = tmp_path / "out" / "cloud.arrAsset"
    header, binary = read_header(asset, asset.read_bytes())
    estimate = check_header(header, binary, asset.parent)
    assert (estimate.points, estimate.triangles, estimate.skipped) == (COUNT, 0, 0)
    scene = load_scene(asset, max_primitives=COUNT, max_bytes=1 << 26)  # a point counts as one primitive
    (batch,) = scene.clouds
    assert (scene.points, scene.triangles, scene.draw_calls) == (COUNT, 0, 1)
    # The asset's node translation is applied in float64: the survey coordinates come back to the millimetre, each
    # point with its colour (in another order: the loader sorts points along a space-filling curve).
    assert batch.colors is not None
    ours = np.column_stack([(batch.positions + batch.origin).round(3), batch.colors])
    theirs = np.column_stack([positions, written_colors(tmp_path)])
    np.testing.assert_allclose(ours[np.lexsort(ours.T)], theirs[np.lexsort(theirs.T)], rtol=0, atol=2e-5)
    np.testing.assert_allclose(scene.bounds, [positions.min(0), positions.max(0)], rtol=0, atol=2e-5)


# Hostile and broken files: refused quickly, with a message, before anything large is allocated.


def test_a_ply_promising_more_points_than_it_holds(tmp_path: Path) -> None:
    head = b"ply\nformat binary_little_endian 1.0\nelement vertex 1000000000000\nproperty float x\n"
    (tmp_path / "huge.ply").write_bytes(head + b"property float y\nproperty float z\nend_header\n" + bytes(12 * 10))
    started = time.perf_counter()
    outcome, _ = run(tmp_path, "huge.ply")
    assert time.perf_counter() - started < 5
    assert outcome.error is not None and "promises 1,000,000,000,000 vertices" in outcome.error.message


def test_an_ascii_ply_promising_more_points_than_it_holds(tmp_path: Path) -> None:
    header = ["ply", "format ascii 1.0", "element vertex 5", *(f"property float {a}" for a in "xyz"), "end_header"]
    body = "\n".join([*header, ""]).encode()
    (tmp_path / "short.ply").write_bytes(body + b"0 0 0\n1 1 1\n" + b" " * 100)
    outcome, _ = run(tmp_path, "short.ply")
    assert outcome.error is not None and "expected 5 vertices of 3 values each, found 2" in outcome.error.message


def test_a_las_header_promising_more_points_than_the_file_holds(tmp_path: Path) -> None:
    las = laspy.LasData(laspy.LasHeader(point_format=0, version="1.2"))
    las.x, las.y, las.z = np.zeros((3, 10))
    las.write(tmp_path / "lie.las")
    data = bytearray((tmp_path / "lie.las").read_bytes())
    struct.pack_into("<I", data, 107, 4_000_000_000)  # legacy point count
    (tmp_path / "lie.las").write_bytes(bytes(data))
    outcome, _ = run(tmp_path, "lie.las")
    assert outcome.error is not None and "lie.las" in outcome.error.message
    assert "promises 4,000,000,000 points" in outcome.error.message


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("noise.e57", b"ASTM-E57" + bytes(range(256)) * 8, "not a readable E57 file"),
        ("noise.las", b"LASF" + bytes(400), "not a readable LAS/LAZ file"),
        ("noise.xyz", b"1 2 3 4 5 6\n7 8 nine 1 2 3\n", "unreadable point data"),
        ("wide.xyz", b"1 2\n", "lines have 2 values"),
        ("list.ply", b"ply\nformat ascii 1.0\nelement vertex 1\nproperty list uchar int idx\nend_header\n1 5\n",
         "list property"),
    ],
    ids=["e57", "las", "xyz-text", "xyz-columns", "ply-list"],
)  # fmt: skip
def test_broken_point_clouds_fail_cleanly(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    outcome, _ = run(tmp_path, name)
    assert outcome.error is not None and outcome.error.code == "ConversionProcessFailed"
    assert message in outcome.error.message
