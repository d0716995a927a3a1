"""The Ray actor that supervises one session's render server on the node Ray placed it on."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from renderhub.backends.base import ServerSpec
from renderhub.backends.launch import config_path, render_command
from renderhub.render.config import RenderConfig

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the render server's process, before exec: the kernel kills it when the supervisor dies, so a
    crashed actor leaves no server behind (Ray runs a synchronous actor's methods on its main thread)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class RenderServerSupervisor:
    """Holds the render server's TLS key (it never leaves the node), runs the server as its child, says
    whether it is alive, and stops it."""

    def __init__(self, session_seq: int) -> None:
        import ray  # on the node, inside the actor

        self.node = ray.util.get_node_ip_address()
        self.dir = Path(tempfile.mkdtemp(prefix=f"renderhub-session-{session_seq}-"))
        key = ec.generate_private_key(ec.SECP256R1())
        self.key_path = self.dir / "render-key.pem"
        self.key_path.touch(mode=0o600)
        self.key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self.public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.process: subprocess.Popen[bytes] | None = None

    def describe(self) -> tuple[str, bytes]:
        """The node's address (the session's hostname) and the public key to certify for it."""
        return self.node, self.public_pem

    def launch(self, spec: ServerSpec, config: dict[str, Any], cert_pem: bytes) -> int:
        """Start the render server (once: a second call returns the running one's pid)."""
        if self.process is not None:
            return self.process.pid
        cert_path = self.dir / "render.pem"
        cert_path.write_bytes(cert_pem)
        render = RenderConfig(**{**config, "tls_cert": str(cert_path), "tls_key": str(self.key_path)})
        path = config_path(self.dir, spec)
        render.dump(path)
        log = (self.dir / "render.log").open("ab")
        self.process = subprocess.Popen(
            render_command(self.node, spec, str(self.dir), path),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_die_with_parent,
        )
        log.close()
        return self.process.pid

    def alive(self) -> bool:
        return self.process is None or self.process.poll() is None

    def shutdown(self, grace: float) -> None:
        """Stop the server (SIGTERM, then SIGKILL after `grace` seconds) and remove its files."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
