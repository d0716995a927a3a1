"""The hub serves sessions and assets without importing the render server's libraries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# What a render server loads (rendering, encoding, WebRTC, model parsing): a hub pays for none of it.
RENDER_LIBRARIES = {"numpy", "PIL", "trimesh", "moderngl", "av", "aiortc", "aioice"}
RENDER_SERVER_MODULES = {
    f"renderhub.render.{name}"
    for name in ("assets", "compat", "encoder", "peer", "renderer", "rtc", "scene", "server", "track", "worker")
}

# Run in a fresh interpreter: this test process has the render libraries loaded already.
HUB = """
import asyncio, json, sys
from pathlib import Path

import httpx

from renderhub.api import create_app
from renderhub.config import Settings

async def serve(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir)
    (settings.asset_roots[0] / "cars").mkdir(parents=True)
    (settings.asset_roots[0] / "cars" / "truck.glb").write_bytes(b"glTF")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        from renderhub.auth import new_account

        account, key, _ = new_account("imports", app.state.hub.clock.now())
        await app.state.hub.manager.repo.insert_account(account)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://hub.test") as http:
            account_key = {"Authorization": f"Bearer {account.id}:{key}"}
            issued = await http.get(f"/Accounts/{account.id}/token", headers=account_key)
            auth = {"Authorization": "Bearer " + issued.json()["AccessToken"]}
            named = await http.get("/render/assets/cars/truck", headers=auth)
            served = await http.get("/render/assets/cars/truck.glb", headers=auth)
            assert (named.status_code, served.status_code, served.content) == (307, 200, b"glTF"), named.text

asyncio.run(serve(Path(sys.argv[1])))
print(json.dumps(sorted(sys.modules)))
"""


def test_the_hub_imports_no_render_server_library(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", HUB, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert not {name.split(".")[0] for name in loaded} & RENDER_LIBRARIES, sorted(
        name for name in loaded if name.split(".")[0] in RENDER_LIBRARIES
    )[:20]
    assert not loaded & RENDER_SERVER_MODULES, sorted(loaded & RENDER_SERVER_MODULES)
