"""A child process that dies with its parent, even when the parent is killed with SIGKILL."""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL, parent_pid: int | None = None) -> bool:
    """Have the kernel send `sig` to this process when its parent dies (Linux's PR_SET_PDEATHSIG; elsewhere the
    caller's own clean-up must do). False when the parent `parent_pid` died before this took effect."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):
        return True  # not Linux
    return parent_pid is None or os.getppid() == parent_pid
