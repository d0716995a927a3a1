"""Mesh formats through assimp's command line: its time limit, its crashes, and the settings ARR defaults for FBX."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from renderhub.conversion import meshes
from renderhub.conversion.engine import convert
from renderhub.conversion.transforms import srgb_to_linear
from tests.conversion.gltf_files import read_glb

MODELS = Path("/usr/share/assimp/models")


def fake_assimp(folder: Path, body: str) -> Path:
    """An `assimp` that answers `version` and does `body` for anything else: a stand-in for a hung or crashing one."""
    folder.mkdir(exist_ok=True)
    script = folder / "assimp"
    script.write_text(f'#!/bin/sh\nif [ "$1" = version ]; then echo "Version 0.0"; exit 0; fi\n{body}\n')
    script.chmod(0o755)
    return script


@pytest.fixture
def fresh_version() -> Iterator[None]:
    meshes.assimp_version.cache_clear()
    yield
    meshes.assimp_version.cache_clear()


def model_copy(tmp_path: Path, name: str) -> Path:
    root = tmp_path / "input"
    root.mkdir(exist_ok=True)
    shutil.copy(MODELS / name, root / Path(name).name)
    return root


@pytest.mark.usefixtures("fresh_version")
def test_a_hung_assimp_is_killed_at_its_time_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file = tmp_path / "pid"
    monkeypatch.setattr(meshes, "ASSIMP", str(fake_assimp(tmp_path / "bin", f"echo $$ > {pid_file}\nexec sleep 60")))
    monkeypatch.setattr(meshes, "TIMEOUT_S", 0.5)
    root = model_copy(tmp_path, "OBJ/box.obj")
    started = time.perf_counter()
    outcome = convert(root, "box.obj", tmp_path, "box.arrAsset", "hung")
    assert time.perf_counter() - started < 10
    assert outcome.error is not None and "reading it did not finish within 0.5 s" in outcome.error.message
    assert not Path(f"/proc/{pid_file.read_text().strip()}").exists()


@pytest.mark.usefixtures("fresh_version")
def test_a_crashing_assimp_fails_the_conversion_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(meshes, "ASSIMP", str(fake_assimp(tmp_path / "bin", "kill -SEGV $$")))
    root = model_copy(tmp_path, "OBJ/box.obj")
    outcome = convert(root, "box.obj", tmp_path, "box.arrAsset", "crash")
    assert outcome.error is not None and outcome.error.code == "ConversionProcessFailed"
    assert outcome.error.message == "box.obj: assimp crashed reading it (SIGSEGV)"


@pytest.mark.usefixtures("fresh_version")
def test_without_assimp_it_is_our_fault_not_the_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(meshes, "ASSIMP", str(tmp_path / "no-such-assimp"))
    outcome = convert(model_copy(tmp_path, "OBJ/box.obj"), "box.obj", tmp_path, "box.arrAsset", "missing")
    assert outcome.error is not None and outcome.error.code == "InternalServerError"
    assert "assimp-utils" in outcome.error.message


def test_assimp_dies_with_a_killed_conversion(tmp_path: Path) -> None:
    """The hub kills a conversion past its limits with SIGKILL: the assimp it started must not live on."""
    pid_file = tmp_path / "pid"
    fake_assimp(tmp_path / "bin", f"echo $$ > {pid_file}\nexec sleep 60")
    root = model_copy(tmp_path, "OBJ/box.obj")
    environment = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    command = [sys.executable, "-m", "renderhub.conversion", "--input-root", str(root), "--input", "box.obj"]
    command += ["--output-dir", str(tmp_path), "--output-name", "box.arrAsset", "--conversion-id", "killed"]
    with subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL) as converter:
        deadline = time.monotonic() + 20
        while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        child = Path(f"/proc/{pid_file.read_text().strip()}")
        assert child.exists()
        converter.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while child.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not child.exists() or "Z" in (child / "stat").read_text().split()[2]  # gone, or a zombie of init's


def test_assimps_reason_is_in_the_message(tmp_path: Path) -> None:
    root = tmp_path / "input"
    root.mkdir()
    (root / "bad.obj").write_text("v 0 0 0\nf 1 2 3\n")
    outcome = convert(root, "bad.obj", tmp_path, "bad.arrAsset", "bad")
    assert outcome.error is not None and outcome.error.message.startswith("bad.obj: assimp could not read it: ")


def base_color(folder: Path, name: str) -> np.ndarray:
    header, _ = read_glb(folder / name)
    return np.array(header["materials"][0]["pbrMetallicRoughness"]["baseColorFactor"])


def test_fbx_material_colours_are_linearised_by_default(tmp_path: Path) -> None:
    root = model_copy(tmp_path, "FBX/phong_cube.fbx")
    convert(root, "phong_cube.fbx", tmp_path, "default.arrAsset", "gamma")
    (root / "phong_cube.ConversionSettings.json").write_text(json.dumps({"gammaToLinearMaterial": False}))
    convert(root, "phong_cube.fbx", tmp_path, "as-is.arrAsset", "gamma")
    as_is, linear = base_color(tmp_path, "as-is.arrAsset"), base_color(tmp_path, "default.arrAsset")
    assert not np.allclose(as_is[:3], linear[:3])
    np.testing.assert_allclose(linear[:3], srgb_to_linear(as_is[:3].astype(np.float32)), atol=1e-6)
    assert linear[3] == as_is[3]


def test_obj_material_colours_are_left_alone_by_default(tmp_path: Path) -> None:
    root = tmp_path / "input"
    root.mkdir()
    (root / "t.mtl").write_text("newmtl brown\nKd 0.5 0.25 0.1\n")
    (root / "t.obj").write_text("mtllib t.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nusemtl brown\nf 1 2 3\n")
    convert(root, "t.obj", tmp_path, "default.arrAsset", "gamma")
    np.testing.assert_allclose(base_color(tmp_path, "default.arrAsset"), [0.5, 0.25, 0.1, 1.0], atol=1e-6)
    (root / "t.ConversionSettings.json").write_text(json.dumps({"gammaToLinearMaterial": True}))
    convert(root, "t.obj", tmp_path, "linear.arrAsset", "gamma")
    expected = srgb_to_linear(np.float32([0.5, 0.25, 0.1]))
    np.testing.assert_allclose(base_color(tmp_path, "linear.arrAsset")[:3], expected, atol=1e-6)


def test_source_info_of_fbx_and_collada_headers() -> None:
    assert meshes.source_info(MODELS / "FBX/spider.fbx") == ("7400", "Blender (stable FBX IO) - 2.76 (sub 0) - 3.6.2")
    version, generator = meshes.source_info(MODELS / "Collada/duck.dae")
    assert version == "1.4.1" and generator
    assert meshes.source_info(MODELS / "STL/triangle.stl") == ("", "")
