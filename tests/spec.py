"""Where ARR's swagger files are: shared/spec beside the repository (CI's layout), else the workspace's."""

from __future__ import annotations

from pathlib import Path

_CANDIDATES = (Path(__file__).resolve().parents[1].parent / "shared" / "spec", Path("/work/shared/spec"))
SPEC = next((path for path in _CANDIDATES if path.is_dir()), _CANDIDATES[0])
