"""Debian's Chromium, headless, trusting the hubs' CA: for the web tests and bench/stream.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# As root, headless, loopback WebRTC (FIELD-NOTES.md); certificates are checked, against the profile's NSS database.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]


def trusting_home(home: Path, ca: Path) -> None:
    """A HOME whose NSS database, where Chromium on Linux looks, trusts `ca` to issue server certificates."""
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    certutil = ["certutil", "-d", f"sql:{db}"]
    subprocess.run([*certutil, "-N", "--empty-password"], check=True, capture_output=True)
    subprocess.run(
        [*certutil, "-A", "-n", "renderhub-test-ca", "-t", "C,,", "-i", str(ca)], check=True, capture_output=True
    )
