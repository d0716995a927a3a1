"""Smoke: a session's whole life through the in-process API."""

from __future__ import annotations

import asyncio

from tests.conftest import InProcessHub

V = {"api-version": "2021-01-01"}


async def test_create_ready_stop(api: InProcessHub) -> None:
    auth = await api.auth()
    r = await api.http.put(api.url("/s1"), params=V, headers=auth, json={"size": "standard", "maxLeaseTimeMinutes": 5})
    assert r.status_code == 201, r.text
    for _ in range(100):
        r = await api.http.get(api.url("/s1"), params=V, headers=auth)
        if r.json()["status"] != "Starting":
            break
        await asyncio.sleep(0.05)
    assert r.json()["status"] == "Ready", r.text
    r = await api.http.post(api.url("/s1/:stop"), params=V, headers=auth)
    assert r.status_code == 204
