"""Smoke: a session's whole life through the in-process API, on a real render server."""

from __future__ import annotations

import asyncio

from tests.conftest import InProcessHub
from tests.hubs import render_server_pids

V = {"api-version": "2021-01-01"}


async def test_create_ready_stop(rendering_api: InProcessHub) -> None:
    api = rendering_api
    auth = await api.auth()
    r = await api.http.put(api.url("/s1"), params=V, headers=auth, json={"size": "standard", "maxLeaseTimeMinutes": 5})
    assert r.status_code == 201, r.text
    for _ in range(100):
        r = await api.http.get(api.url("/s1"), params=V, headers=auth)
        if r.json()["status"] != "Starting":
            break
        await asyncio.sleep(0.05)
    assert r.json()["status"] == "Ready", r.text
    assert len(render_server_pids(api.data_dir)) == 1
    r = await api.http.post(api.url("/s1/:stop"), params=V, headers=auth)
    assert r.status_code == 204
    assert render_server_pids(api.data_dir) == []  # the stop returns once its server is gone
