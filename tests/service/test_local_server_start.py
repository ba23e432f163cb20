"""How the local Milvus server starts (units: the process and its health are stood in for; real starts and
restarts run in test_store*.py and test_api_outage.py): the retry of a server that exits while starting,
and the ports a restart keeps."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from service.store import StoreUnavailable, local_server
from service.store.local_server import PORT_DEFAULTS, LocalMilvusServer, _listens_on


class _Exited:
    def poll(self) -> int:
        return 1


class _Starts(LocalMilvusServer):
    """Exits while starting ``failures`` times, then is healthy."""

    def __init__(self, data_dir: Path, failures: int) -> None:
        super().__init__(data_dir)
        self.failures, self.launches = failures, 0

    def _launch(self) -> _Exited:  # type: ignore[override]
        self.launches += 1
        return _Exited()

    def _wait_healthy(self) -> None:
        if self.launches <= self.failures:
            raise local_server._ExitedWhileStarting("exited while starting")

    @property
    def running(self) -> bool:
        return False


def test_a_start_that_exits_is_retried_after_the_dead_sessions_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(local_server.time, "sleep", sleeps.append)
    server = _Starts(tmp_path, failures=2)
    server.start()
    # a proxy that dialled a stale session of the last server panics: the next try waits out the lease
    assert server.launches == 3 and sleeps == [local_server._SESSION_TTL_S + 1] * 2

    server = _Starts(tmp_path, failures=3)
    with pytest.raises(local_server._ExitedWhileStarting):
        server.start()
    assert server.launches == 3


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_a_restart_keeps_its_ports_and_moves_only_those_another_process_took(tmp_path: Path) -> None:
    first = LocalMilvusServer(tmp_path)._choose_ports()
    assert set(first) == set(PORT_DEFAULTS) and len(set(first.values())) == len(first)
    assert json.loads((tmp_path / "configs" / "tuwen-ports.json").read_text()) == first
    # while it was down, another process took its query coordinator's port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first["query_coord_port"]))
        taken.listen()
        again = LocalMilvusServer(tmp_path)._choose_ports()
    assert again["query_coord_port"] != first["query_coord_port"]
    assert {k: v for k, v in again.items() if k != "query_coord_port"} == {
        k: v for k, v in first.items() if k != "query_coord_port"
    }
    assert LocalMilvusServer(tmp_path)._choose_ports() == again  # recorded: the next start keeps them


def test_a_fixed_port_in_use_is_refused_by_name(tmp_path: Path) -> None:
    with _listener() as taken:
        port = taken.getsockname()[1]
        with pytest.raises(StoreUnavailable, match=f"port {port} \\(proxy_port"):
            LocalMilvusServer(tmp_path, port=port)._choose_ports()
    with _listener() as a, _listener() as b:
        wanted = {"metrics_port": a.getsockname()[1], "etcd_port": b.getsockname()[1]}
    fixed = LocalMilvusServer(tmp_path, ports=wanted)._choose_ports()
    assert {k: fixed[k] for k in wanted} == wanted
    with pytest.raises(ValueError, match="grpc_port"):
        LocalMilvusServer(tmp_path, ports={"grpc_port": 1})


def test_the_listener_on_a_port_is_known_by_its_process() -> None:
    with _listener() as mine:
        port = mine.getsockname()[1]
        assert _listens_on(os.getpid(), port) is True
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            assert _listens_on(other.pid, port) is False  # a server that lost its port to another
        finally:
            other.kill()
            other.wait()
