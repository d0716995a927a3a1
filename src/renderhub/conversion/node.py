"""A conversion on a cluster node: the body of the Ray task the hub submits. It runs the same conversion process as
the hub runs locally, in a work folder of this node's own, and hands back how the process ended."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any


def run_conversion(spec: dict[str, Any], limit_seconds: float) -> tuple[int | None, bytes, bytes]:
    """The conversion process's exit code (None: killed at its wall-clock limit), stdout and stderr."""
    work = tempfile.mkdtemp(prefix="renderhub-conversion-")
    try:
        # The process dies with this worker (it bounds itself and asks for that first thing): a task whose owner,
        # the hub, died is ended by Ray, and the conversion is claimed again.
        ended = subprocess.run(
            [sys.executable, "-m", "renderhub.conversion.job"],
            input=json.dumps({**spec, "work": work}).encode(),  # on stdin: it holds SAS tokens
            capture_output=True, cwd=work, env={**os.environ, "TMPDIR": work}, timeout=limit_seconds,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None, b"", b""
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ended.returncode, ended.stdout, ended.stderr
