"""The Ray actor that supervises one session's render server on the node Ray placed it on."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from renderhub.backends.base import ServerSpec
from renderhub.backends.launch import assignment_path, config_path, ports_path, render_command, wait_for_ports
from renderhub.datadir import secret_file, write_secret
from renderhub.render.assignment import ASSIGNED, Assignment, read_assignment, write_assignment
from renderhub.render.config import RenderConfig
from renderhub.render.lifetime import die_with_parent


class RenderServerSupervisor:
    """Holds the render server's TLS key (it never leaves the node), runs the server as its child, says
    whether it is alive, gives a pooled one its session, and stops it."""

    def __init__(self, server_key: str) -> None:
        import ray  # on the node, inside the actor

        self.node = ray.util.get_node_ip_address()
        self.dir = Path(tempfile.mkdtemp(prefix=f"renderhub-{server_key}-"))
        key = ec.generate_private_key(ec.SECP256R1())
        self.key_path = self.dir / "render-key.pem"
        write_secret(
            self.key_path,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
        self.public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.config: Path | None = None

    def describe(self) -> tuple[str, bytes]:
        """The node's address (the session's hostname) and the public key to certify for it."""
        return self.node, self.public_pem

    def launch(self, spec: ServerSpec, config: dict[str, Any], cert_pem: bytes) -> dict[str, int]:
        """Start the render server (once: a second call answers for the running one): its pid and the ports it
        bound on this node."""
        if self.process is None:
            self.config = config_path(self.dir, spec)
            self.process = self._spawn(spec, config, cert_pem, self.config)
        return self.launched()

    def launched(self) -> dict[str, int]:
        """The launched server's pid and the ports it bound on this node."""
        if self.process is None or self.config is None:
            raise RuntimeError("no render server was launched")
        process = self.process
        handshake_port, inspector_port = wait_for_ports(ports_path(self.config), lambda: process.poll() is None)
        return {"pid": process.pid, "handshake_port": handshake_port, "inspector_port": inspector_port}

    def _spawn(self, spec: ServerSpec, config: dict[str, Any], cert_pem: bytes, path: Path) -> subprocess.Popen[bytes]:
        cert_path = self.dir / "render.pem"
        cert_path.write_bytes(cert_pem)
        render = RenderConfig(**{**config, "tls_cert": str(cert_path), "tls_key": str(self.key_path)})
        render.dump(path)
        log = self.dir / "render.log"
        secret_file(log)  # 0600 whatever the node's umask, like the local backend's logs
        output = log.open("ab")
        process = subprocess.Popen(
            render_command(self.node, spec, str(self.dir), path),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            # Before exec: the kernel kills the server when the supervisor dies, so a crashed actor leaves no
            # server behind (Ray runs a synchronous actor's methods on its main thread).
            preexec_fn=die_with_parent,
        )
        output.close()
        return process

    def assignment(self) -> Assignment | None:
        """The session a pooled server was given, if any."""
        return read_assignment(assignment_path(self.config)) if self.config else None

    def assign(self, session: Assignment) -> None:
        """Tell a pooled server its session (the backend has checked that it has no other)."""
        if self.config is None or self.process is None or self.process.poll() is not None:
            raise RuntimeError("the render server is not running")
        write_assignment(assignment_path(self.config), session)
        self.process.send_signal(ASSIGNED)

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
