"""`make test`'s two workers: every test of the one Ray cluster runs on one of them, as tests/conftest.py means.
Once, pytest's node ids stopped carrying xdist's groups and two clusters ran at once on a two-core machine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CONFTEST = """
import pytest

from tests.conftest import pytest_collection_modifyitems  # the hook under test, and only it

@pytest.fixture
def ray_cluster():
    return "a stand-in: the grouping goes by the fixture's name"

@pytest.fixture
def network():
    return "a stand-in"
"""

TESTS = "".join(f"def test_ray_{i}(ray_cluster): pass\n" for i in range(6)) + "".join(
    f"def test_lan_{i}(network): pass\ndef test_other_{i}(): pass\n" for i in range(4)
)


@pytest.mark.slow
def test_tests_on_the_ray_cluster_all_run_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_grouped.py").write_text(TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the project's options: this directory is the root
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    ran = re.findall(r"\[(gw\d)\] \[ *\d+%\] PASSED test_grouped\.py::(test_\w+?)(@\w+)?\s*$", run.stdout, re.M)
    assert len(ran) == 14, run.stdout
    workers = {kind: {worker for worker, name, _ in ran if name.startswith(kind)} for kind in ("test_ray", "test_lan")}
    assert len(workers["test_ray"]) == 1 and len(workers["test_lan"]) == 1, run.stdout
    groups = {name: group for _, name, group in ran}
    assert all(groups[f"test_ray_{i}"] == "@ray" and groups[f"test_lan_{i}"] == "@netns" for i in range(4)), groups
    assert not any(groups[f"test_other_{i}"] for i in range(4))
