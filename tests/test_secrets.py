"""The hub's secrets on disk: its data dir is 0700 and every secret in it 0600, whatever the umask, and another local
user can read none of them (real `renderhub serve` processes, a real render server, a real second user)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import ssl
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from renderhub.client import ArrConfig, HubClient
from tests.hubs import RENDERHUB, free_port, kill_render_servers, stop_process, wait_for


@dataclass(frozen=True)
class Probe:
    """A local user of this machine who is not the hub's: what it can read, any local attacker can."""

    name: str
    uid: int

    def read(self, path: Path) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["runuser", "-u", self.name, "--", "cat", str(path)], capture_output=True, timeout=30)

    def cannot_read(self, path: Path) -> None:
        done = self.read(path)
        assert done.returncode != 0 and b"Permission denied" in done.stderr, (path, done.returncode, done.stderr)


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A scratch folder any local user may enter (pytest's tmp_path is under a 0700 folder, which would hide what
    the hub does)."""
    folder = Path(tempfile.mkdtemp(prefix="renderhub-secrets-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def probe() -> Iterator[Probe]:
    if os.geteuid() != 0:
        pytest.skip("creating a second local user needs root (the tests run as root in CI)")
    name = f"rh-probe-{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield Probe(name, int(subprocess.run(["id", "-u", name], capture_output=True, text=True).stdout))
    finally:
        subprocess.run(["userdel", name], check=False)


def _serve(data_dir: Path, port: int, log: Path, umask: int) -> subprocess.Popen[bytes]:
    command = [RENDERHUB, "serve", "--data-dir", str(data_dir), "--port", str(port), "--rate-limit", "0"]
    with log.open("ab") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, umask=umask)


@contextmanager
def serving(data_dir: Path, log: Path, umask: int = 0o022) -> Iterator[int]:
    """A `renderhub serve` process under this umask, up and answering /health; its port."""
    port = free_port()
    process = _serve(data_dir, port, log, umask)

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            trust = ssl.create_default_context(cafile=str(data_dir / "tls" / "ca.pem"))
            return httpx.get(f"https://127.0.0.1:{port}/health", verify=trust, timeout=1).status_code == 200
        except (httpx.HTTPError, OSError):
            return False

    try:
        wait_for(up, timeout=60, interval=0.1)
        yield port
    finally:
        stop_process(process)
        kill_render_servers(data_dir)


def _secrets(data_dir: Path) -> list[Path]:
    """What must stay the hub's: the database, private keys, the account key, render servers' logs and configs."""
    found = [data_dir / "renderhub.db", data_dir / "arrconfig.json"]
    found += sorted((data_dir / "tls").glob("*key*.pem"))
    found += sorted((data_dir / "logs").glob("*.log"))
    # Render configs (TURN passwords) and pooled servers' assignments; not the ports a server bound.
    found += sorted(p for p in (data_dir / "render").glob("*.json") if not p.name.endswith(".ports.json"))
    return found


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _assert_private(data_dir: Path, probe: Probe) -> None:
    """The data dir and every folder in it 0700, every secret 0600, and the probe user reads none of them."""
    folders = [data_dir, *(p for p in data_dir.rglob("*") if p.is_dir())]
    assert {str(f): oct(_mode(f)) for f in folders} == {str(f): "0o700" for f in folders}
    files = [f for f in _secrets(data_dir) if f.exists()]
    assert {str(f): oct(_mode(f)) for f in files} == {str(f): "0o600" for f in files}
    for path in files:
        probe.cannot_read(path)


@pytest.mark.slow
def test_a_hub_under_umask_000_keeps_every_secret_to_itself(open_tmp: Path, probe: Probe) -> None:
    data, log = open_tmp / "new" / "data", open_tmp / "hub.log"
    with serving(data, log, umask=0):
        config = ArrConfig.load(data / "arrconfig.json")
        with HubClient(config, verify=str(data / "tls" / "ca.pem")) as client:
            client.create("secrets", "standard", 5)
            wait_for(lambda: client.get("secrets")["status"] != "Starting", timeout=60, interval=0.2)
            assert client.get("secrets")["status"] == "Ready", log.read_text()
        # The render server has written its log and its config, the hub's database is open in WAL mode: every file
        # that holds a secret exists now.
        expected = {"renderhub.db", "renderhub.db-wal", "renderhub.db-shm", "arrconfig.json", "tls/ca-key.pem",
                    "tls/hub-key.pem", "tls/render-key.pem", "logs/session-1.log", "render/session-1.json"}  # fmt: skip
        present = {str(p.relative_to(data)) for p in data.rglob("*")}
        assert expected <= present, sorted(present)
        _assert_private(data, probe)
        for companion in ("renderhub.db-wal", "renderhub.db-shm"):  # SQLite gives them the database's mode
            assert _mode(data / companion) == 0o600, companion
            probe.cannot_read(data / companion)
    assert _mode(data.parent) & 0o022 == 0  # a parent the hub made: nobody else can swap the data dir inside it


@pytest.mark.slow
def test_a_loose_data_dir_of_ours_is_tightened_and_the_hub_says_so(open_tmp: Path, probe: Probe) -> None:
    data, log = open_tmp / "data", open_tmp / "hub.log"
    with serving(data, log):
        pass
    # As an earlier hub (or a copy with cp -r under umask 022) left it: everyone may enter and read.
    loose = {data: 0o755, data / "tls": 0o755, data / "renderhub.db": 0o644, data / "arrconfig.json": 0o644,
             data / "tls" / "ca-key.pem": 0o644, data / "tls" / "hub-key.pem": 0o644}  # fmt: skip
    for path, mode in loose.items():
        os.chmod(path, mode)
    stolen = probe.read(data / "renderhub.db")  # the attack of the issue, on this dir: the keys are in the database
    assert stolen.returncode == 0 and b"PRIVATE KEY" in stolen.stdout

    with serving(data, log):
        said = log.read_text()
        assert re.search(rf"data dir {re.escape(str(data))} was open to other users \(mode 0755\)", said), said
        _assert_private(data, probe)
        assert all(_mode(path) & 0o077 == 0 for path in loose), {str(p): oct(_mode(p)) for p in loose}


def test_a_data_dir_of_another_user_is_refused(tmp_path: Path, probe: Probe) -> None:
    data, log = tmp_path / "theirs", tmp_path / "hub.log"
    data.mkdir(mode=0o700)
    os.chown(data, probe.uid, -1)
    process = _serve(data, free_port(), log, 0o022)
    try:
        code: int | None = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        code = None  # it serves from a folder whose owner can read and swap its keys
    finally:
        stop_process(process)
        kill_render_servers(data)
    said = log.read_text()
    assert code not in (0, None), said
    assert f"The data dir {data} belongs to user {probe.name}" in said.replace("\n", ""), said
    assert "Traceback" not in said, said
    assert list(data.iterdir()) == []  # nothing of the hub's went into it

    # The administration commands refuse it the same way.
    done = subprocess.run([RENDERHUB, "account", "list", "--data-dir", str(data)], capture_output=True, text=True)
    assert done.returncode != 0 and f"{data} belongs to user {probe.name}" in done.stderr.replace("\n", "")
    assert "Traceback" not in done.stderr, done.stderr


def test_account_commands_under_umask_000_make_a_private_data_dir(open_tmp: Path, probe: Probe) -> None:
    data, arrconfig = open_tmp / "cli" / "data", open_tmp / "elsewhere" / "arrconfig.json"
    command = [RENDERHUB, "account", "create", "--name", "ops", "--data-dir", str(data), "--arrconfig", str(arrconfig)]
    command += ["--endpoint", "https://127.0.0.1:8443"]
    done = subprocess.run(command, capture_output=True, text=True, umask=0)
    assert done.returncode == 0, done.stderr
    assert (_mode(data), _mode(data / "renderhub.db"), _mode(arrconfig)) == (0o700, 0o600, 0o600)
    probe.cannot_read(data / "renderhub.db")
    probe.cannot_read(arrconfig)  # --arrconfig's folder is the user's to choose; the file is 0600 all the same

    # An arrconfig.json that exists already, readable by all (a template, an old copy): the new key goes into it
    # only once it is 0600.
    shared = open_tmp / "elsewhere" / "team.json"
    shared.write_text("{}")
    shared.chmod(0o644)
    command[command.index(str(arrconfig))] = str(shared)
    done = subprocess.run(command, capture_output=True, text=True, umask=0)
    assert done.returncode == 0, done.stderr
    assert _mode(shared) == 0o600 and "arrAccountKey" in shared.read_text()
    probe.cannot_read(shared)
