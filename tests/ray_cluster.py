"""A real Ray cluster for tests: nodes on loopback addresses of this machine (127.0.0.2, 127.0.0.3, ...)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from renderhub.backends.local import command_lines
from tests.hubs import free_port

RAY = str(Path(sys.executable).parent / "ray")


@dataclass
class RayCluster:
    """`ray start` processes; each node is known by its address (Ray must be told one other than 127.0.0.1)."""

    temp_dir: Path
    port: int = field(default_factory=free_port)
    nodes: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.nodes[0]}:{self.port}"

    def _ray(self, *args: str) -> None:
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        result = subprocess.run([RAY, *args], capture_output=True, text=True, env=env, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"ray {args[0]} failed:\n{result.stdout}\n{result.stderr}")

    def start_head(self, ip: str, resources: dict[str, float]) -> None:
        self._ray(
            "start", "--head", "--node-ip-address", ip, "--port", str(self.port),
            "--num-cpus", "1",
            "--resources", json.dumps(resources), "--include-dashboard=false", "--disable-usage-stats",
            "--temp-dir", str(self.temp_dir),
        )  # fmt: skip
        self.nodes.append(ip)

    def add_node(self, ip: str, resources: dict[str, float]) -> None:
        self._ray(
            "start", "--address", self.address, "--node-ip-address", ip, "--num-cpus", "1",
            "--resources", json.dumps(resources), "--disable-usage-stats",
        )  # fmt: skip
        self.nodes.append(ip)

    def kill_node(self, ip: str) -> None:
        """SIGKILL a node's raylet, as when its machine dies (its workers and their children follow)."""
        for pid, args in command_lines():
            if "raylet" in args[0] and f"--node_ip_address={ip}" in args:
                os.kill(pid, signal.SIGKILL)
        self.nodes.remove(ip)

    def actors(self, namespace: str, kill: bool = False) -> list[str]:
        """The named actors in a namespace (killed too, with `kill`: a test's hubs may leave some behind). The test
        process joins the cluster as a driver the first time (as the backend contract tests do): a driver of its
        own per call cost about two seconds of start-up."""
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=False, logging_level="error")
        listed = ray.util.list_named_actors(all_namespaces=True)
        names = [actor["name"] for actor in listed if actor["namespace"] == namespace]
        for name in names if kill else ():
            try:
                ray.kill(ray.get_actor(name, namespace=namespace))
            except ValueError:
                pass  # it ended meanwhile
        return names

    def kill_actors(self, namespace: str) -> None:
        self.actors(namespace, kill=True)

    def stop(self) -> None:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)
