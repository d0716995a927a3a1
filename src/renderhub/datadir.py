"""The hub's data dir and the secrets in it: readable by the hub's user alone, whatever the umask."""

from __future__ import annotations

import logging
import os
import pwd
import stat
from pathlib import Path

from renderhub.errors import ConfigurationError

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
SECRET_FILE = 0o600
OTHERS = 0o077  # the group and other bits: none may be set on anything in the data dir


def make_private(data_dir: Path) -> None:
    """Create the data dir 0700, or tighten an existing one of ours that others could enter (and everything in it);
    refuse one that another user owns: they could read or swap every secret the hub keeps there."""
    _make_dir(data_dir)
    st = data_dir.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigurationError(f"The data dir {data_dir} is not a directory.")
    if st.st_uid != os.geteuid():
        raise ConfigurationError(
            f"The data dir {data_dir} belongs to {_user(st.st_uid)}, not to {_user(os.geteuid())} running RenderHub: "
            "run it as the data dir's owner, or give it a data dir of its own."
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode == PRIVATE_DIR:
        return
    os.chmod(data_dir, PRIVATE_DIR)
    if mode & OTHERS:
        log.warning(
            "the data dir %s was open to other users (mode %04o): made it %04o, and took the group and other "
            "permissions off everything in it (keys, database, logs, render configs, arrconfig.json)",
            data_dir, mode, PRIVATE_DIR,
        )  # fmt: skip
        _tighten_inside(data_dir)


def private_dir(path: Path) -> None:
    """A folder for secrets (tls/, logs/, render/): created 0700, an existing one of ours tightened to 0700."""
    _make_dir(path)
    st = path.stat()
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != PRIVATE_DIR:
        os.chmod(path, PRIVATE_DIR)


def secret_file(path: Path) -> None:
    """Create `path` 0600 if it is missing, or tighten it to 0600, leaving what it holds as it is."""
    os.close(_open_secret(path, os.O_WRONLY | os.O_CREAT))


def write_secret(path: Path, data: bytes | str) -> None:
    """Write `data` to `path`, which is 0600 from its creation on (an existing file is tightened first)."""
    raw = data.encode() if isinstance(data, str) else data
    with os.fdopen(_open_secret(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as file:
        file.write(raw)


def tighten(path: Path) -> None:
    """Take the group and other bits off an existing file or folder of ours (a no-op for anything else)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid() or not st.st_mode & OTHERS:
        return  # a link's target is not ours to change; another user's file is refused where it matters
    os.chmod(path, stat.S_IMODE(st.st_mode) & ~OTHERS)


def _open_secret(path: Path, flags: int) -> int:
    # The mode of O_CREAT is filtered by the umask, and an existing file keeps its own: fchmod settles both.
    fd = os.open(path, flags | os.O_CLOEXEC, SECRET_FILE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != SECRET_FILE:
            os.fchmod(fd, SECRET_FILE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _make_dir(path: Path) -> None:
    """Create `path` 0700 and its missing parents 0755 at most (so nobody else can swap it)."""
    missing = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o755, exist_ok=True)
    try:
        path.mkdir(mode=PRIVATE_DIR)
    except FileExistsError:
        return
    os.chmod(path, PRIVATE_DIR)  # the umask may have taken the owner's own bits


def _tighten_inside(data_dir: Path) -> None:
    """What an earlier, looser hub left: keys, the database, logs, render configs, arrconfig.json, subfolders."""
    for root, folders, files in os.walk(data_dir):  # links are not followed
        for name in folders + files:
            tighten(Path(root) / name)


def _user(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
