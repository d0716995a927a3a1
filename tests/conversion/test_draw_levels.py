"""Levels of detail as conversions build them and render servers load them: each level about a quarter of the one
above, the same shape, every vertex's attributes those of an original vertex, large batches decimated in slabs
that still meet, and the file's levels mapped without trusting them (a file in storage may come from anyone)."""

from __future__ import annotations

import itertools
import json
import struct
from pathlib import Path

import fast_simplification
import numpy as np
import pytest

from renderhub.conversion import draw_levels
from renderhub.conversion.draw_levels import DrawBatch
from renderhub.conversion.engine import convert
from renderhub.render.draw_levels import EXTENSION
from renderhub.render.gltf import ModelError
from renderhub.render.scene import PackedBatch, load_scene
from renderhub.render.vertices import VERTEX


def terrain(size: int) -> DrawBatch:
    """A rippled grid of about 2 * size**2 triangles whose colour and texture coordinate follow the position."""
    xs = np.linspace(0, 10, size + 1, dtype=np.float32)
    gx, gz = np.meshgrid(xs, xs)
    vertices = np.empty(gx.size, VERTEX)
    vertices["p"] = np.column_stack([gx.ravel(), (np.sin(gx) * np.cos(gz)).ravel(), gz.ravel()])
    vertices["n"] = (0, 1, 0)
    vertices["t"] = np.column_stack([gx.ravel() / 10, gz.ravel() / 10])
    vertices["c"] = np.column_stack([gx.ravel() * 25, gz.ravel() * 25, np.full(gx.size, 128), np.full(gx.size, 255)])
    i = np.arange(size, dtype=np.uint32)
    a = (i[:, None] * (size + 1) + i[None, :]).ravel()
    indices = np.stack([a, a + size + 1, a + 1, a + 1, a + size + 1, a + size + 2], 1).reshape(-1, 3)
    return DrawBatch(0, vertices, indices.astype(np.uint32))


def attributes(batch: DrawBatch) -> set[bytes]:
    """Each vertex's normal, texture coordinate and colour."""
    v = batch.vertices
    rows = np.column_stack([v["n"], v["t"], v["c"].astype(np.float32)]).astype(np.float32)
    return {row.tobytes() for row in rows}


def test_each_level_is_a_quarter_of_the_last_with_the_originals_attributes() -> None:
    full = terrain(300)  # 180 000 triangles
    chain = draw_levels.levels([full])
    counts = [level[0].triangles for level in chain]
    assert counts[0] == 180_000 and len(counts) >= 3
    for above, below in itertools.pairwise(counts):
        assert 0.2 * above <= below <= 0.3 * above
    assert counts[-1] <= draw_levels.COARSEST_TRIANGLES
    originals = attributes(full)
    for level in chain[1:]:
        batch = level[0]
        assert int(batch.indices.max()) < len(batch.vertices)
        assert attributes(batch) <= originals  # carried over, never invented
        # The same shape: the bounds hold, and every vertex still lies near the rippled surface.
        p = batch.vertices["p"]
        np.testing.assert_allclose([p.min(0), p.max(0)], [full.vertices["p"].min(0), full.vertices["p"].max(0)],
                                   atol=0.1)  # fmt: skip
        assert np.abs(p[:, 1] - np.sin(p[:, 0]) * np.cos(p[:, 2])).max() < 0.2


def test_the_vertex_map_matches_fast_simplifications_own_replay() -> None:
    batch = terrain(40)
    _, triangles, collapses = fast_simplification.simplify(
        batch.vertices["p"].astype(np.float64), batch.indices.astype(np.int32), target_count=800,
        return_collapses=True,
    )  # fmt: skip
    kept = draw_levels._survivors(len(batch.vertices), batch.indices, collapses, triangles)
    _, replayed, mapping = fast_simplification.replay_simplification(
        batch.vertices["p"].astype(np.float64), batch.indices.astype(np.int32), collapses
    )
    assert kept is not None and np.array_equal(replayed, triangles)
    np.testing.assert_array_equal(mapping[kept], np.arange(len(kept)))  # each survivor is its own output vertex


def test_a_large_batch_decimated_in_slabs_has_no_cracks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(draw_levels, "SLAB_TRIANGLES", 20_000)
    full = terrain(200)  # 80 000 triangles: four slabs
    coarse = draw_levels.simplified(full, 20_000)
    assert 15_000 <= coarse.triangles <= 26_000
    # Every edge inside the surface is shared by exactly two triangles, across the slabs' borders too: welded by
    # position, no edge is left open but the grid's own outline.
    _, weld = np.unique(coarse.vertices["p"], axis=0, return_inverse=True)
    faces = weld.ravel()[coarse.indices]
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, uses = np.unique(edges, axis=0, return_counts=True)
    outline = 4 * 200  # the grid's own border edges, which decimation with kept borders leaves as they are
    assert (uses == 1).sum() == outline and (uses > 2).sum() == 0


def write_grid_glb(path: Path, size: int) -> Path:
    """terrain(size) as a plain binary glTF (positions and indices), as a user would upload it."""
    batch = terrain(size)
    header = {
        "asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": len(batch.vertices), "type": "VEC3",
             "min": batch.vertices["p"].min(0).tolist(), "max": batch.vertices["p"].max(0).tolist()},
            {"bufferView": 1, "componentType": 5125, "count": batch.indices.size, "type": "SCALAR"},
        ],
    }  # fmt: skip
    positions = np.ascontiguousarray(batch.vertices["p"]).tobytes()
    indices = batch.indices.tobytes()
    header["bufferViews"] = [{"buffer": 0, "byteLength": len(positions)},
                             {"buffer": 0, "byteOffset": len(positions), "byteLength": len(indices)}]  # fmt: skip
    header["buffers"] = [{"byteLength": len(positions) + len(indices)}]
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 4)
    binary = positions + indices
    glb = struct.pack("<4sIIII", b"glTF", 2, 28 + len(text) + len(binary), len(text), 0x4E4F534A) + text
    path.write_bytes(glb + struct.pack("<II", len(binary), 0x004E4942) + binary)
    return path


def glb_with_levels(tmp_path: Path) -> Path:
    """A converted 24 200-triangle grid, as `convert` writes it."""
    source = tmp_path / "in"
    source.mkdir()
    write_grid_glb(source / "grid.glb", 110)
    assert convert(source, "grid.glb", tmp_path, "grid.arrAsset", "levels").result == "succeeded"
    return tmp_path / "grid.arrAsset"


def read(path: Path) -> tuple[dict[str, object], int, bytearray]:
    data = bytearray(path.read_bytes())
    length = struct.unpack_from("<I", data, 12)[0]
    return json.loads(data[20 : 20 + length]), 20 + length + (-length % 4) + 8, data


def test_a_converted_model_loads_its_levels_mapped_from_the_file(tmp_path: Path) -> None:
    path = glb_with_levels(tmp_path)
    scene = load_scene(path, max_primitives=None, max_bytes=1 << 28)
    assert isinstance(scene.batches[0], PackedBatch) and not scene.batches[0].vertices.flags.owndata
    assert scene.triangles == 24_200 and len(scene.level_primitives) == 2
    assert 5_000 <= scene.level_primitives[1] <= 7_000
    info = json.loads((tmp_path / "grid.info.json").read_text())
    assert info["renderhub"]["levelsOfDetail"] == scene.level_primitives
    with pytest.raises(ModelError) as refused:  # the primitive limit counts full detail
        load_scene(path, max_primitives=24_199, max_bytes=1 << 28)
    assert refused.value.code == "TooManyPrimitives"


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        ("index", "indices run past"),
        ("position", "non-finite positions"),
        ("view", "runs past the end of the binary chunk"),
        ("layout", "vertex layout"),
    ],
)
def test_a_damaged_level_is_refused_before_it_reaches_gl(tmp_path: Path, damage: str, words: str) -> None:
    path = glb_with_levels(tmp_path)
    header, binary_start, data = read(path)
    extension = header["extensions"][EXTENSION]  # type: ignore[index]
    batch = extension["levels"][-1]["batches"][0]
    views = header["bufferViews"]  # type: ignore[index]
    vertices, indices = views[batch["vertices"]], views[batch["indices"]]
    if damage == "index":
        struct.pack_into("<I", data, binary_start + indices.get("byteOffset", 0), 10**9)
    elif damage == "position":
        struct.pack_into("<f", data, binary_start + vertices.get("byteOffset", 0), float("nan"))
    else:
        if damage == "view":
            vertices["byteLength"] += 1 << 30
        else:
            extension["layout"] = "position:3f"
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 4)
        old = struct.unpack_from("<I", data, 12)[0]
        data = data[:12] + struct.pack("<II", len(text), 0x4E4F534A) + text + data[20 + old + (-old % 4) :]
        struct.pack_into("<I", data, 8, len(data))
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=words):
        load_scene(path, max_primitives=None, max_bytes=1 << 28)
