"""The render server's own ports: two free ones in ARR's range, a clear error when none is free, reported whole."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from renderhub.render import ports
from renderhub.render.ports import PORT_RANGE, NoFreePort, bind_ports, read_ports, write_ports


def test_two_free_ports_in_arr_range() -> None:
    bound = bind_ports("127.0.0.1", [0, 0])
    try:
        numbers = [sock.getsockname()[1] for sock in bound]
        assert len(set(numbers)) == 2 and all(PORT_RANGE[0] <= n <= PORT_RANGE[1] for n in numbers)
        with socket.socket() as late:  # the ports are the server's from now on
            with pytest.raises(OSError):
                late.bind(("127.0.0.1", numbers[0]))
    finally:
        for sock in bound:
            sock.close()


def test_a_taken_port_is_a_clear_error_and_nothing_stays_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(NoFreePort, match=f"port {port} on 127.0.0.1 is in use"):
            bind_ports("127.0.0.1", [0, port])
        # Every candidate taken: a bounded number of tries, then an error naming the range.
        monkeypatch.setattr(ports.random, "randint", lambda low, high: port)
        with pytest.raises(NoFreePort, match=r"no free port in 49152-65534 on 127\.0\.0\.1 after 5 tries"):
            bind_ports("127.0.0.1", [0], attempts=5)


def test_the_ports_file_is_read_whole_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "session-1.ports.json"
    assert read_ports(path) is None
    write_ports(path, 50000, 50001)
    assert read_ports(path) == (50000, 50001)
    assert [p.name for p in tmp_path.iterdir()] == ["session-1.ports.json"]  # no partial file left
