"""The hub's own storage, kept bounded: files not written for the retention period are deleted (a reaper step)."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import datetime, timedelta
from pathlib import Path

log = logging.getLogger("renderhub.storage")

SWEEP_EVERY = timedelta(hours=1)


def sweep(root: Path, before: float) -> int:
    """Delete files under root last written before `before` (a timestamp), then the folders left empty; returns
    how many files went. Never follows a link out of root."""
    removed = 0
    for folder, dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = Path(folder) / name
            try:
                if path.lstat().st_mtime < before:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        for name in dirs:
            sub = Path(folder) / name
            if not sub.is_symlink():
                try:
                    sub.rmdir()  # only when empty
                except OSError:
                    pass
    return removed


class StorageRetention:
    """Once an hour, the leader deletes what the hub's storage has not had written for `days` (0: keep all)."""

    name = "storage retention"

    def __init__(self, root: Path, days: float, now: datetime) -> None:
        self.root = root
        self.keep = timedelta(days=days)
        self._last = now - SWEEP_EVERY

    async def run(self, now: datetime) -> None:
        if not self.keep or now - self._last < SWEEP_EVERY or not self.root.is_dir():
            return
        self._last = now
        removed = await asyncio.to_thread(sweep, self.root, (now - self.keep).timestamp())
        if removed:
            log.info("storage retention: deleted %d file(s) not written for %s", removed, self.keep)
