"""The Ray backend: one named, detached actor per session supervises its render server on a cluster node."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from typing import Any

import ray
from ray.exceptions import RayError

from renderhub.backends import check_ray_address
from renderhub.backends.base import Backend, ServerSpec, ServerState, State
from renderhub.backends.health import PROBE_TIMEOUT, answers, until_assigned
from renderhub.backends.launch import ASSIGN_TIMEOUT, check_assignable, hub_url, render_config
from renderhub.backends.ray_supervisor import RenderServerSupervisor
from renderhub.clock import Clock
from renderhub.config import Settings
from renderhub.errors import BackendError, ConfigurationError
from renderhub.render.assignment import Assignment
from renderhub.tls import ensure_ca, issue_certificate

log = logging.getLogger("renderhub.backends.ray")

ACTOR_PREFIX = "renderhub-"  # then the server's key: session-SEQ, or pool-ID for a pooled server
# Without a queue timeout, how long a session whose resources looked free may wait for Ray to place it
# (another replica may have taken the last slot between our look and Ray's decision).
PLACEMENT_TIMEOUT = 10.0
KILL_TIMEOUT = 5.0  # seconds a killed actor's name may stay registered
Supervisor = ray.remote(RenderServerSupervisor)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def actor_name(spec: ServerSpec) -> str:
    return f"{ACTOR_PREFIX}{spec.key}"


class RayBackend(Backend):
    """Placement and capacity come from Ray: each size needs its custom resources (sizes.yaml), which the
    nodes advertise with `ray start --resources`. The hub is a Ray driver; the actors outlive it."""

    name = "ray"
    places_servers = True

    def __init__(self, settings: Settings) -> None:
        address = check_ray_address(settings.ray_address)
        self.settings = settings
        self.namespace = settings.ray_namespace
        self.queue_timeout = settings.queue_timeout_seconds
        self.stop_grace = settings.stop_grace_seconds
        try:
            ray.init(
                address=address,
                namespace=self.namespace,
                log_to_driver=False,
                logging_level=logging.WARNING,
                ignore_reinit_error=True,
            )
        except (ConnectionError, RayError, RuntimeError) as exc:
            raise ConfigurationError(f"Cannot join the Ray cluster at {address}: {exc}") from exc
        ca = ensure_ca(settings.tls_dir, Clock().now())
        self._trust = ssl.create_default_context(cafile=str(ca))
        # Nodes reach this replica for named models; with its own certificate (--tls-cert) the system's
        # trust store must vouch for it, else the local CA does.
        self.ca_pem = None if settings.tls_cert else ca.read_text()
        self.hub_url = hub_url(settings, f"{settings.scheme}://{_url_host(settings.advertised_host)}:{settings.port}")
        self.assets_url = self.hub_url + "render/assets/"
        self._handles: dict[str, Any] = {}

    # Starting

    async def start(self, spec: ServerSpec) -> tuple[str, State]:
        resources = dict(spec.profile.get("resources") or {f"renderhub_{spec.size.lower()}": 1})
        if self.queue_timeout <= 0:
            await asyncio.to_thread(self._check_room, spec.size, resources)
        if spec.session is not None and (pooled := await self._serving(spec.session.session_seq)) is not None:
            return pooled["node"], pooled
        name = actor_name(spec)
        # get_if_exists: a replica finishing a dead replica's start finds the actor that one created.
        actor: Any = Supervisor.options(
            name=name,
            namespace=self.namespace,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            resources=resources,
            max_restarts=0,
        ).remote(spec.key)
        self._handles[name] = actor
        wait = self.queue_timeout if self.queue_timeout > 0 else PLACEMENT_TIMEOUT
        try:
            node, public_pem = await asyncio.wait_for(actor.describe.remote(), wait)
        except TimeoutError:
            await self._kill(name)
            raise BackendError(
                "CapacityExceeded",
                f"No node of the cluster had room for a {spec.size} render server within {wait:g} seconds. "
                "Stop a session or retry later.",
            ) from None
        except RayError as exc:
            await self._kill(name)
            raise BackendError("RenderServerLaunchFailed", f"The render server's supervisor failed: {exc}") from exc
        cert = issue_certificate(self.settings.tls_dir, public_pem, [node], Clock().now())
        # The node writes its own TLS paths into the config; the hub's paths mean nothing there, so named
        # models come from the hub over HTTPS rather than from its asset directory.
        config = dataclasses.asdict(render_config(self.settings, spec, "", ""))
        config.update(
            asset_roots=[],
            storage_root=None,
            hub_assets_url=self.assets_url,
            hub_ca_pem=self.ca_pem,
            hub_url=self.hub_url,
        )
        try:
            launched = await actor.launch.remote(spec, config, cert)  # the pid and the ports it bound on its node
        except RayError as exc:
            await self._kill(name)
            raise BackendError("RenderServerLaunchFailed", f"Could not launch the render server: {exc}") from exc
        seq = spec.session.session_seq if spec.session else None
        return node, {"actor": name, "session_seq": seq, "pool_id": spec.pool_id, "node": node, **launched}

    async def _serving(self, seq: int) -> State | None:
        """The pooled server assigned to this session, with its full state, if any."""
        for found in await self.servers():
            if found["pool_id"] and found["session_seq"] == seq:
                actor = await self._handle(found["actor"])
                node, _ = await actor.describe.remote()
                launched = await actor.launched.remote()
                return {**found, "node": node, **launched}
        return None

    def _check_room(self, size: str, resources: dict[str, float]) -> None:
        """Fail at once when no node has the resources free (Ray would leave the actor pending)."""
        total, free = ray.cluster_resources(), ray.available_resources()
        for resource, amount in resources.items():
            if total.get(resource, 0) < amount:
                raise BackendError(
                    "CapacityExceeded",
                    f"No node of the cluster offers {resource}, which a {size} render server needs.",
                )
            if free.get(resource, 0) < amount:
                raise BackendError(
                    "CapacityExceeded",
                    f"No {size} render server is free: the cluster's {int(total[resource])} are all in use. "
                    "Stop a session or retry later.",
                )

    async def assign(self, state: State, session: Assignment) -> State:
        actor = await self._handle(state["actor"])
        if actor is None:
            raise BackendError("RenderServerExited", "The pooled render server is gone.")
        try:
            check_assignable(await actor.assignment.remote(), session)
            await actor.assign.remote(session)
        except RayError as exc:
            raise BackendError("RenderServerExited", f"The pooled render server is gone: {exc}") from exc
        port = int(state["handshake_port"])
        await until_assigned(state["node"], port, self._trust, session.session_id, ASSIGN_TIMEOUT, lambda: True)
        return {**state, "session_seq": session.session_seq}

    # Watching and stopping

    async def poll(self, state: State) -> ServerState:
        # Ask the render server itself first: Ray notices a dead node only after about 40 seconds.
        if await answers(state["node"], int(state["handshake_port"]), self._trust):
            return ServerState.RUNNING
        actor = await self._handle(state["actor"])
        if actor is None:
            return ServerState.GONE
        try:
            alive = await asyncio.wait_for(actor.alive.remote(), 2 * PROBE_TIMEOUT)
        except (TimeoutError, RayError):
            self._handles.pop(state["actor"], None)
            return ServerState.GONE  # the actor died, or its node stopped answering
        return ServerState.STARTING if alive else ServerState.GONE

    async def stop(self, state: State) -> None:
        name = state["actor"]
        actor = await self._handle(name)
        if actor is None:
            return
        try:
            await asyncio.wait_for(actor.shutdown.remote(self.stop_grace), self.stop_grace + 5.0)
        except (TimeoutError, RayError):
            log.warning("render server supervisor %s did not stop its server; killing the actor", name)
        await self._kill(name)

    async def servers(self) -> list[State]:
        actors = await asyncio.to_thread(ray.util.list_named_actors, all_namespaces=True)
        names = [actor["name"] for actor in actors if actor["namespace"] == self.namespace]
        found: list[State] = []
        for name in names:
            key = name.removeprefix(ACTOR_PREFIX)
            if key.startswith("session-") and key.removeprefix("session-").isdigit():
                found.append({"actor": name, "session_seq": int(key.removeprefix("session-")), "pool_id": ""})
            elif key.startswith("pool-"):
                found.append({"actor": name, "session_seq": None, "pool_id": key.removeprefix("pool-")})
        # A pooled server's session is its supervisor's to tell.
        pooled = [state for state in found if state["pool_id"]]
        for state, seq in zip(pooled, await asyncio.gather(*(self._assigned_seq(s) for s in pooled)), strict=True):
            state["session_seq"] = seq
        return found

    async def _assigned_seq(self, state: State) -> int | None:
        actor = await self._handle(state["actor"])
        try:
            assignment = await asyncio.wait_for(actor.assignment.remote(), 2 * PROBE_TIMEOUT) if actor else None
        except (TimeoutError, RayError):
            return None
        return assignment.session_seq if assignment else None

    def identity(self, state: State) -> str:
        return str(state["actor"])

    async def _handle(self, name: str) -> Any:
        """The actor by name (a restarted hub finds its actors again this way); None when there is none."""
        if name not in self._handles:
            try:
                self._handles[name] = await asyncio.to_thread(ray.get_actor, name, self.namespace)
            except ValueError:
                return None
        return self._handles[name]

    async def _kill(self, name: str) -> None:
        actor = await self._handle(name)
        self._handles.pop(name, None)
        if actor is None:
            return
        try:
            await asyncio.to_thread(ray.kill, actor, no_restart=True)
        except (ValueError, RayError):
            return  # gone already
        # ray.kill only asks: the name stays registered until the cluster has ended the actor, and `stop` returns
        # once the server is gone (a hub listing servers right after must not find it).
        deadline = asyncio.get_running_loop().time() + KILL_TIMEOUT
        while asyncio.get_running_loop().time() < deadline:
            try:
                await asyncio.to_thread(ray.get_actor, name, self.namespace)
            except ValueError:
                return
            await asyncio.sleep(0.05)
        log.warning("render server supervisor %s was killed but is still registered", name)

    async def close(self) -> None:
        # The detached actors and their servers stay; the driver connection ends with the process.
        self._handles.clear()
