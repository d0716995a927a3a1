"""The `renderhub` command as a user runs it in a terminal: real subprocesses against hubs over TLS (`serve` and
`create --wait` on real hub processes; the other session commands against the app served in a thread)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import ssl
import stat
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509

from renderhub.client import ApiError, ArrConfig, HubClient
from tests.hubs import (
    RENDERHUB,
    RunningHub,
    ServedHub,
    free_port,
    kill_render_servers,
    stop_process,
    wait_for,
)

# The CLI as a user runs it: a `renderhub` process per command.
pytestmark = pytest.mark.integration

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _env(columns: int | None) -> dict[str, str]:
    """The user's environment, minus anything that would trust our CA behind the CLI's back; warnings shown."""
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")}
    env.pop("COLUMNS", None)
    if columns is not None:
        env["COLUMNS"] = str(columns)  # rich's width when not on a terminal (else 80)
    env["PYTHONWARNINGS"] = "default"
    return env


@dataclass(frozen=True)
class Narrow:
    """A command run as in an 80-column terminal."""

    args: Sequence[str | Path]


@dataclass
class Cli:
    """Runs `renderhub ...` in a directory of its own (so the default --data-dir .renderhub is absent)."""

    cwd: Path

    def __call__(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return self.all(args)[0]

    def all(self, *commands: Sequence[str | Path] | Narrow) -> list[subprocess.CompletedProcess[str]]:
        """Several commands at once (a start of the CLI costs up to a second); results in order."""
        processes = []
        for command in commands:
            args, columns = (command.args, 80) if isinstance(command, Narrow) else (command, 200)
            processes.append(
                subprocess.Popen(
                    [RENDERHUB, *(str(a) for a in args)],
                    cwd=self.cwd,
                    env=_env(columns),
                    text=True,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
        results = []
        for p in processes:
            out, err = p.communicate(timeout=60)
            results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
        return results


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    (tmp_path / "cwd").mkdir()
    return Cli(tmp_path / "cwd")


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 0 and nothing on stderr (no warning either); returns stdout."""
    assert result.returncode == 0 and result.stderr == "", (result.args, result.stdout, result.stderr)
    return result.stdout


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result))  # the whole of stdout is one JSON document


def failed(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """A non-zero exit with a one-line-ish message on stderr, no traceback; returns stderr."""
    assert result.returncode != 0, (result.args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    return result.stderr


def first_column(table: str) -> str:
    """The first column's cells of a rich table, concatenated (a folded id comes back whole)."""
    return "".join(line.split("│")[1].strip() for line in table.splitlines() if line.startswith("│"))


def copy_config(source: Path, target: Path, **settings: str) -> Path:
    raw = json.loads(source.read_text())
    for key, value in settings.items():
        section = "accountSettings" if key.startswith("arrAccount") else "renderingSessionSettings"
        raw[section][key] = value
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(raw))
    return target


# Sessions


def test_create_wait_until_ready(cli: Cli, hub: RunningHub) -> None:
    data = hub.data_dir
    human, as_json = cli.all(
        ["session", "create", "--wait", "--data-dir", data],
        ["session", "create", "--wait", "--json", "--data-dir", data,
         "--id", "cli-premium", "--size", "premium", "--lease-minutes", "7"],
    )  # fmt: skip
    out = ok(human)
    match = re.search(r"session (session-\S+): Ready after [\d.]+ s", out)
    assert match, out
    assert re.search(r"status\s+Ready", out), out
    created = match.group(1)

    body = ok_json(as_json)
    assert body["id"] == "cli-premium"
    assert body["status"] == "Ready"
    assert body["size"] == "Premium"
    assert body["maxLeaseTimeMinutes"] == 7
    assert isinstance(body["handshakePort"], int) and 1024 < body["handshakePort"] < 65536
    assert {"hostname", "arrInspectorPort", "teraflops", "creationTime", "elapsedTimeMinutes"} <= body.keys()

    # The defaults came from arrconfig.json (vmSize standard, maxLeaseTime 0:30:00); the hub agrees.
    with hub.client() as client:
        session = client.get(created)
    assert (session["status"], session["size"], session["maxLeaseTimeMinutes"]) == ("Ready", "Standard", 30)


def test_get_list_extend_stop(cli: Cli, served_hub: ServedHub) -> None:
    data = served_hub.data_dir
    default_id, named = cli.all(
        ["session", "create", "--json", "--data-dir", data],
        ["session", "create", "--json", "--data-dir", data, "--id", "cli-b", "--lease-minutes", "20"],
    )
    sid = ok_json(default_id)["id"]
    assert re.fullmatch(rf"session-{UUID.pattern}", sid), sid
    assert ok_json(named)["maxLeaseTimeMinutes"] == 20

    got, got_json, listed, narrow, listed_json, extended = cli.all(
        ["session", "get", sid, "--data-dir", data],
        ["session", "get", "cli-b", "--json", "--data-dir", data],
        ["session", "list", "--data-dir", data],
        Narrow(["session", "list", "--data-dir", data]),
        ["session", "list", "--json", "--data-dir", data],
        ["session", "extend", "cli-b", "--lease-minutes", "45", "--json", "--data-dir", data],
    )
    out = ok(got)
    assert sid in out and re.search(r"status\s+(Starting|Ready)", out), out
    assert ok_json(got_json)["id"] == "cli-b"

    out = ok(listed)
    assert sid in out and "cli-b" in out, out
    # In an 80-column terminal the default 44-character id must still be all there (folded, never "…").
    out = ok(narrow)
    assert "…" not in out and sid in first_column(out), out
    body = ok_json(listed_json)
    assert list(body) == ["sessions"]
    assert {s["id"] for s in body["sessions"]} == {sid, "cli-b"}

    # extend sets the new total: 20 -> 45, not 65
    assert ok_json(extended)["maxLeaseTimeMinutes"] == 45

    stopped = ok_json(cli("session", "stop", "cli-b", "--json", "--data-dir", data))
    assert (stopped["id"], stopped["status"], stopped["maxLeaseTimeMinutes"]) == ("cli-b", "Stopped", 45)
    got_json, listed_json, stopped_again = cli.all(
        ["session", "get", "cli-b", "--json", "--data-dir", data],
        ["session", "list", "--json", "--data-dir", data],
        ["session", "stop", "cli-b", "--data-dir", data],  # stop is idempotent
    )
    assert ok_json(got_json)["status"] == "Stopped"
    assert [s["id"] for s in ok_json(listed_json)["sessions"]] == [sid]
    assert re.search(r"status\s+Stopped", ok(stopped_again))


def test_failures_are_messages_not_tracebacks(cli: Cli, served_hub: ServedHub, tmp_path: Path) -> None:
    data = served_hub.data_dir
    ok(cli("session", "create", "--id", "f1", "--lease-minutes", "30", "--data-dir", data))
    unreachable = copy_config(data / "arrconfig.json", tmp_path / "down" / "arrconfig.json",
                              arrAccountDomain=f"https://127.0.0.1:{free_port()}",
                              remoteRenderingDomain=f"https://127.0.0.1:{free_port()}")  # fmt: skip
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "arrconfig.json").write_text('{"accountSettings": {}, "renderingSessionSettings": {}}')
    unknown, shorter, extend_unknown, no_data, no_config, broken, down, bad_id, slash, empty, conversion = cli.all(
        ["session", "get", "no-such-session", "--data-dir", data],
        ["session", "extend", "f1", "--lease-minutes", "10", "--data-dir", data],
        ["session", "extend", "no-such-session", "--lease-minutes", "40", "--data-dir", data],
        ["session", "list", "--data-dir", tmp_path / "empty"],
        ["session", "list", "--config", tmp_path / "nowhere.json", "--data-dir", data],
        ["session", "list", "--config", tmp_path / "broken" / "arrconfig.json"],
        ["session", "list", "--config", unreachable, "--data-dir", data],
        ["session", "get", "bad id!", "--data-dir", data],
        ["session", "stop", "a/b", "--data-dir", data],
        ["session", "create", "--id", "", "--data-dir", data],
        ["conversion", "get", "x/../y", "--data-dir", data],
    )
    failed(unknown, "NotFound", "HTTP 404", "no-such-session")
    assert unknown.stdout == ""
    failed(shorter, "UnprocessableEntity", "HTTP 422")
    failed(extend_unknown, "HTTP 404")
    failed(no_data, "no account config", str(tmp_path / "empty" / "arrconfig.json"))
    failed(no_config, "no account config", str(tmp_path / "nowhere.json"))
    failed(broken, "not a usable arrconfig.json", "arrAccountId")
    failed(down, "cannot reach https://127.0.0.1:")
    # Ids are checked before anything is sent, saying what an id may be.
    rule = "an id is 1 to 256 characters of letters, digits, hyphens and underscores"
    failed(bad_id, "'bad id!' is not a session id", rule)
    failed(slash, "'a/b' is not a session id", rule)
    failed(empty, "'' is not a session id", rule)
    failed(conversion, "'x/../y' is not a conversion id", rule)
    with served_hub.client() as client:
        assert [s["id"] for s in client.list()] == ["f1"]  # the empty --id created nothing
    # A message is one line, however long, so that it can be grepped from a log.
    assert shorter.stderr.count("\n") == 1, shorter.stderr
    # The failed extend changed nothing.
    with served_hub.client() as client:
        assert client.get("f1")["maxLeaseTimeMinutes"] == 30


def test_other_config(cli: Cli, served_hub: ServedHub, tmp_path: Path) -> None:
    """--config reads another arrconfig.json: its account, its default size and lease."""
    data = served_hub.data_dir
    elsewhere = copy_config(data / "arrconfig.json", tmp_path / "elsewhere" / "arrconfig.json",
                            vmSize="premium", maxLeaseTime="1:05:00")  # fmt: skip
    with_ca = copy_config(elsewhere, tmp_path / "with-ca" / "team-a.json")
    (with_ca.parent / "ca.pem").write_bytes(served_hub.ca.read_bytes())
    created, beside, untrusted = cli.all(
        # the CA is found in --data-dir ...
        ["session", "create", "--json", "--id", "other", "--config", elsewhere, "--data-dir", data],
        # ... or beside the config (as the data dir's own arrconfig.json has it in tls/)
        ["session", "list", "--json", "--config", with_ca],
        # ... and without either, a clear TLS message
        ["session", "list", "--config", elsewhere],
    )
    body = ok_json(created)
    assert (body["size"], body["maxLeaseTimeMinutes"]) == ("Premium", 65)
    assert "sessions" in ok_json(beside)
    failed(untrusted, "CERTIFICATE_VERIFY_FAILED", "ca.pem")


def test_an_address_the_certificate_does_not_name_gets_a_hint(
    cli: Cli, hub_factory: Callable[..., RunningHub], tmp_path: Path
) -> None:
    """A hub on every interface, reached at an address it does not know is its own (127.0.0.2 is not an
    interface address: 127.0.0.1/8 on lo answers it, the certificate does not name it)."""
    hub = hub_factory("--rate-limit", "0", "--host", "0.0.0.0")
    other = f"https://127.0.0.2:{hub.port}"
    config = copy_config(hub.data_dir / "arrconfig.json", tmp_path / "lan" / "arrconfig.json",
                         arrAccountDomain=other, remoteRenderingDomain=other)  # fmt: skip
    (config.parent / "ca.pem").write_bytes(hub.ca.read_bytes())
    failed(cli("session", "list", "--config", config), "does not name this address", "--public-host")


# Accounts, straight on the database while the hub runs


@pytest.mark.slow
def test_accounts(cli: Cli, served_hub: ServedHub, tmp_path: Path) -> None:
    data = served_hub.data_dir
    second_config = tmp_path / "second" / "arrconfig.json"
    first_session, created = cli.all(
        ["session", "create", "--id", "first-only", "--data-dir", data],
        ["account", "create", "--name", "second", "--data-dir", data, "--arrconfig", second_config],
    )
    ok(first_session)
    out = ok(created)
    match = re.search(rf"account\s+({UUID.pattern})\s+\(second\)\s+primary key\s+(\S+)\s+secondary key\s+(\S+)", out)
    assert match, out
    second, primary, secondary = match.groups()
    config = ArrConfig.load(second_config)
    assert (config.account_id, config.account_key) == (second, primary)
    assert config.account_domain == config.rendering_domain == served_hub.endpoint  # the running hub's, from DATA
    assert stat.S_IMODE(second_config.stat().st_mode) == 0o600

    listed, foreign, accounts = cli.all(
        ["session", "list", "--json", "--config", second_config, "--data-dir", data],
        ["session", "get", "first-only", "--config", second_config, "--data-dir", data],
        ["account", "list", "--data-dir", data],
    )
    assert ok_json(listed) == {"sessions": []}
    failed(foreign, "HTTP 404")
    out = ok(accounts)
    assert served_hub.config.account_id in out and "default" in out, out
    assert second in out and "second" in out, out
    own, first = cli.all(
        ["session", "create", "--json", "--id", "second-only", "--config", second_config, "--data-dir", data],
        ["session", "list", "--json", "--data-dir", data],
    )
    assert ok_json(own)["id"] == "second-only"
    assert [s["id"] for s in ok_json(first)["sessions"]] == ["first-only"]

    # rotate-key: the old key's config fails at the STS, tokens from it too; the new key works
    old_client = HubClient(config, verify=str(served_hub.ca))
    old_client.list()  # holds a token from the old key
    out = ok(cli("account", "rotate-key", second, "--data-dir", data))
    match = re.fullmatch(r"new primary key\s+(\S+)\n", out)
    assert match, out
    new_key = match.group(1)
    assert new_key not in (primary, secondary)
    rotated = copy_config(second_config, tmp_path / "rotated" / "arrconfig.json", arrAccountKey=new_key)
    old, new = cli.all(
        ["session", "list", "--config", second_config, "--data-dir", data],
        ["session", "list", "--json", "--config", rotated, "--data-dir", data],
    )
    failed(old, "Unauthorized", "HTTP 401")
    assert [s["id"] for s in ok_json(new)["sessions"]] == ["second-only"]
    with pytest.raises(ApiError) as rejected, old_client:
        old_client.list()
    assert rejected.value.status == 401

    # delete: refused while a session is live (nobody could stop it after), then done once it stopped
    failed(cli("account", "delete", second, "--data-dir", data), "1 live session", "second-only")
    ok(cli("session", "stop", "second-only", "--config", rotated, "--data-dir", data))
    # its config then fails within a second; it is gone from the list; its keys can no longer be rotated
    out = ok(cli("account", "delete", second, "--data-dir", data))
    assert f"deleted account {second}" in out
    gone, accounts, again = cli.all(
        ["session", "list", "--config", rotated, "--data-dir", data],
        ["account", "list", "--data-dir", data],
        ["account", "rotate-key", second, "--data-dir", data],
    )
    failed(gone, "HTTP 401")
    assert second not in ok(accounts) and served_hub.config.account_id in accounts.stdout
    failed(again, f"no account {second}")


# Usage


def test_usage(cli: Cli, served_hub: ServedHub) -> None:
    data, account = served_hub.data_dir, served_hub.config.account_id
    assert ok_json(cli("session", "create", "--wait", "--json", "--id", "u1", "--data-dir", data))["status"] == "Ready"
    assert ok_json(cli("session", "stop", "u1", "--json", "--data-dir", data))["status"] == "Stopped"

    def usage() -> dict[str, Any]:
        body = ok_json(cli("usage", "--json", "--account", account, "--data-dir", data))
        return body if body["records"] else {}

    body = wait_for(usage, timeout=10, interval=0.2)
    [record] = body["records"]
    assert (record["accountId"], record["sessionId"], record["size"]) == (account, "u1", "Standard")
    assert record["region"] == "local", "a hub without --region serves the region local"
    assert isinstance(record["billableMinutes"], int) and record["billableMinutes"] >= 1
    assert Decimal(record["cost"]) > 0
    assert record["readyAt"] and record["endedAt"]
    assert (body["billableMinutes"], body["cost"]) == (record["billableMinutes"], record["cost"])

    human, theirs, before, bad = cli.all(
        Narrow(["usage", "--data-dir", data]),
        ["usage", "--json", "--account", str(uuid.uuid4()), "--data-dir", data],
        ["usage", "--from", "2000-01-01", "--to", "2000-01-02T00:00:00", "--data-dir", data],
        ["usage", "--from", "yesterday", "--data-dir", data],
    )
    out = ok(human)
    minutes_cost = rf"│ {record['billableMinutes']}\s+│ {record['cost']}\s+│"
    assert re.search(rf"│ u1\s+│ Standard\s+│.*{minutes_cost}", out), out
    assert re.search(rf"│ total\s+│ 1 sessions\s+│.*{minutes_cost}", out), out
    assert "…" not in out, out  # in 80 columns, timestamps fold rather than lose their end
    assert ok_json(theirs) == {"records": [], "billableMinutes": 0, "cost": "0"}
    out = ok(before)
    assert "u1" not in out and re.search(r"│ total\s+│ 0 sessions", out), out
    failed(bad, "bad date")


# serve


@contextmanager
def serving(
    data_dir: Path, *args: str, port: int | None = None
) -> Iterator[tuple[int, Callable[[], str], Callable[[], str]]]:
    """`renderhub serve` as a user starts it (no COLUMNS, output to files); (port, stdout, stderr)."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    out, err = data_dir.parent / f"{data_dir.name}.out", data_dir.parent / f"{data_dir.name}.err"
    command = [RENDERHUB, "serve", "--data-dir", str(data_dir), "--port", str(port), *args]
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(command, env=_env(None), stdout=stdout, stderr=stderr)
    insecure = "--insecure-http" in args

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}:\n{out.read_text()}{err.read_text()}")
        ca = data_dir / "tls" / "ca.pem"
        try:
            verify: ssl.SSLContext | bool = False if insecure else ssl.create_default_context(cafile=ca)
            scheme = "http" if insecure else "https"
            return httpx.get(f"{scheme}://127.0.0.1:{port}/health", verify=verify, timeout=1).status_code == 200
        except (httpx.HTTPError, OSError):
            return False

    try:
        wait_for(up, timeout=30, interval=0.1)
        yield port, out.read_text, err.read_text
    finally:
        stop_process(process)
        kill_render_servers(data_dir)


@pytest.mark.slow
def test_serve_first_start(cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    with serving(data) as (port, stdout, stderr):
        out = stdout()
        endpoint = f"https://127.0.0.1:{port}"
        ca, arrconfig = (data / "tls" / "ca.pem").resolve(), (data / "arrconfig.json").resolve()
        assert endpoint in out, out
        assert f"CA certificate: {ca}" in out, out  # whole paths, on one line, even in a log file
        assert f"account config: {arrconfig}" in out, out
        account = re.search(rf"created account ({UUID.pattern})", out)
        assert account, out
        assert "warning" not in stderr().lower()

        raw = json.loads(arrconfig.read_text())
        assert raw == {
            "accountSettings": {
                "arrAccountId": account.group(1),
                "arrAccountKey": raw["accountSettings"]["arrAccountKey"],
                "arrAccountDomain": endpoint,
            },
            "renderingSessionSettings": {
                "remoteRenderingDomain": endpoint,
                "vmSize": "standard",
                "maxLeaseTime": "0:30:00",
            },
        }
        assert len(raw["accountSettings"]["arrAccountKey"]) >= 32
        assert stat.S_IMODE(arrconfig.stat().st_mode) == 0o600  # it holds the key

        ca_cert = x509.load_pem_x509_certificate(ca.read_bytes())
        hub_cert = x509.load_pem_x509_certificate((data / "tls" / "hub.pem").read_bytes())
        hub_cert.verify_directly_issued_by(ca_cert)  # raises if not signed by ca.pem
        names = hub_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in names.get_values_for_type(x509.DNSName)
        assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)

        # The CLI, with nothing but the data dir, trusts this hub's own new CA.
        assert ok_json(cli("session", "list", "--json", "--data-dir", data)) == {"sessions": []}
        before = {name: (data / name).read_bytes() for name in ("arrconfig.json", "tls/ca.pem", "tls/hub.pem")}

    with serving(data, port=port) as (_, stdout, _stderr):
        out = stdout()
        assert "created account" not in out, out
        assert f"account config: {arrconfig}" in out, out
        after = {name: (data / name).read_bytes() for name in before}
        assert after == before
        listed, accounts = cli.all(
            ["session", "list", "--json", "--data-dir", data], ["account", "list", "--data-dir", data]
        )
        assert ok_json(listed) == {"sessions": []}
        assert UUID.findall(ok(accounts)) == [account.group(1)]

    with serving(data) as (moved, _stdout, _stderr):  # on another port, the hub's own config follows it
        assert ArrConfig.load(arrconfig).account_domain == f"https://127.0.0.1:{moved}"
        assert ok_json(cli("session", "list", "--json", "--data-dir", data)) == {"sessions": []}


def test_serve_insecure_http_warns(tmp_path: Path) -> None:
    data = tmp_path / "plain"
    with serving(data, "--insecure-http") as (port, stdout, stderr):
        assert "warning" in stderr().lower() and "plain HTTP" in stderr(), stderr()
        assert f"http://127.0.0.1:{port}" in stdout()
        assert "CA certificate" not in stdout()
        assert ArrConfig.load(data / "arrconfig.json").account_domain == f"http://127.0.0.1:{port}"
        assert not (data / "tls" / "hub.pem").exists()  # the CA still signs the render servers' certificates


def test_serve_with_an_unreachable_ray_cluster_fails_at_once(cli: Cli, tmp_path: Path) -> None:
    """Not after ray.init's minutes of retries: nothing listens on 127.0.0.9:9."""
    started = time.monotonic()
    data = tmp_path / "data"
    failed(cli("serve", "--data-dir", data, "--backend", "ray", "--ray-address", "127.0.0.9:9"),
           "Cannot reach the Ray head at 127.0.0.9:9")  # fmt: skip
    failed(cli("serve", "--data-dir", data, "--backend", "ray"), "needs --ray-address")
    assert time.monotonic() - started < 30


def test_serve_with_a_misspelt_sizes_key_fails_naming_it(cli: Cli, tmp_path: Path) -> None:
    """A misspelt limit in a sizes file would otherwise be no limit at all."""
    sizes = yaml.safe_load(resources.files("renderhub").joinpath("sizes.yaml").read_text())
    sizes["Standard"]["profile"]["max_primitves"] = sizes["Standard"]["profile"].pop("max_primitives")
    path = tmp_path / "sizes.yaml"
    path.write_text(yaml.safe_dump(sizes))
    failed(cli("serve", "--data-dir", tmp_path / "data", "--sizes", path), "unknown key Standard.profile.max_primitves")
    assert not (tmp_path / "data" / "hub.db").exists()  # it failed before touching anything
