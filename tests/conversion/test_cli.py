"""`python -m renderhub.conversion`, as the hub runs it: one JSON line, exit 0 once the outputs are written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conversion.gltf_files import quad_gltf


def run(root: Path, name: str, out: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "renderhub.conversion", "--input-root", str(root), "--input", name]
    command += ["--output-dir", str(out), "--output-name", "q.arrAsset", "--conversion-id", "cli-1"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_a_conversion_prints_one_line(tmp_path: Path) -> None:
    quad_gltf(tmp_path / "q.gltf")
    done = run(tmp_path, "q.gltf", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ['{"result": "succeeded", "error": null, "warnings": 0}']
    assert {p.name for p in tmp_path.iterdir()} >= {"q.arrAsset", "q.info.json", "q.result.json"}


def test_a_failed_conversion_still_exits_0(tmp_path: Path) -> None:
    done = run(tmp_path, "missing.fbx", tmp_path)
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout)
    assert line["result"] == "failed" and line["warnings"] == 0
    assert line["error"]["code"] == "ConversionProcessFailed" and "missing.fbx" in line["error"]["message"]
    assert json.loads((tmp_path / "q.result.json").read_text())[-1] == {"result": "failed"}


def test_a_crash_exits_non_zero_without_a_line(tmp_path: Path) -> None:
    quad_gltf(tmp_path / "q.gltf")
    done = run(tmp_path, "q.gltf", tmp_path / "no-such-folder")  # nowhere to write: our failure, not the input's
    assert done.returncode != 0 and done.stdout == ""
    assert "FileNotFoundError" in done.stderr
