"""How the local Milvus server's start retries a server that exits while starting (a unit: the process
and its health are stood in for; real starts and restarts run in test_store*.py and test_api_outage.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.store import local_server
from service.store.local_server import LocalMilvusServer


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
