"""How `tuwen index` sizes its embedding actors and starts a local Ray (units; the pipeline itself runs
on a real local Ray in tests/service/test_index.py, with two actors on two CPUs there)."""

from __future__ import annotations

import pytest

from service.commands.errors import CommandError
from service.indexing.pipeline import ActorSizing, actor_sizing


@pytest.mark.parametrize(
    ("cpus", "actors", "wanted", "expected"),
    [
        (2, 1, None, ActorSizing(0.0, 2)),  # the default: nothing reserved, the cores shared
        (8, 3, None, ActorSizing(0.0, 2)),  # ... and split between the actors' threads
        (2, 4, 0.0, ActorSizing(0.0, 1)),  # at least one thread each
        (8, 2, 1.0, ActorSizing(1.0, 1)),  # room to spare: as asked
        (8, 7, 1.0, ActorSizing(1.0, 1)),  # exactly one CPU left for decoding
        (2, 2, 1.0, ActorSizing(0.5, 1)),  # two actors on two CPUs would starve decoding forever
        (4, 2, 2.0, ActorSizing(1.5, 2)),
    ],
)
def test_local_actors_share_the_cores_or_leave_a_cpu_to_the_decode_tasks(
    cpus: float, actors: int, wanted: float | None, expected: ActorSizing
) -> None:
    sizing = actor_sizing(cpus, actors, wanted, local=True)
    assert sizing == expected
    assert sizing.cpus == 0 or actors * sizing.cpus <= cpus - 1


def test_cluster_actors_reserve_what_is_asked() -> None:
    assert actor_sizing(64, 8, None, local=False) == ActorSizing(1.0, 1)  # a cluster's default
    assert actor_sizing(64, 8, 4.0, local=False) == ActorSizing(4.0, 4)  # the autoscaler finds room
    assert actor_sizing(64, 8, 0.0, local=False) == ActorSizing(0.0, None)  # the runtime's own threads


def test_one_cpu_is_refused_with_what_to_do() -> None:
    with pytest.raises(CommandError, match="--num-cpus"):
        actor_sizing(1, 1, 1.0, local=True)
    assert actor_sizing(1, 1, None, local=True) == ActorSizing(0.0, 1)  # sharing works on one


class _RayStarts:
    """ray.init standing in for a machine where the first ``failures`` starts time out (no real Ray)."""

    def __init__(self, failures: int, message: str = "The current node timed out during startup.") -> None:
        self.failures, self.message, self.inits, self.shutdowns = failures, message, 0, 0

    def init(self, **_: object) -> None:
        self.inits += 1
        if self.inits <= self.failures:
            raise Exception(self.message)  # what Ray raises: a bare Exception

    def shutdown(self) -> None:
        self.shutdowns += 1


def _patched(monkeypatch: pytest.MonkeyPatch, starts: _RayStarts) -> None:
    ray = pytest.importorskip("ray", reason="tuwen index needs the `index` extra (Ray Data)")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", starts.init)
    monkeypatch.setattr(ray, "shutdown", starts.shutdown)


@pytest.mark.parametrize(
    "message",
    [
        "The current node timed out during startup.",  # the raylet
        "Timed out waiting for file /tmp/ray/session_x/gcs_server_port_abc",  # the GCS server (CI)
    ],
)
def test_a_local_ray_start_that_times_out_is_shut_down_and_retried(
    monkeypatch: pytest.MonkeyPatch, message: str
) -> None:
    from service.indexing.pipeline import RayOptions, init_ray

    starts = _RayStarts(failures=2, message=message)
    _patched(monkeypatch, starts)
    init_ray(RayOptions(num_cpus=2))
    assert (starts.inits, starts.shutdowns) == (3, 2)

    starts = _RayStarts(failures=3)  # a third time out is the user's to see
    _patched(monkeypatch, starts)
    with pytest.raises(Exception, match="timed out during startup"):
        init_ray(RayOptions(num_cpus=2))
    assert starts.inits == 3


def test_other_ray_start_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.indexing.pipeline import RayOptions, init_ray

    starts = _RayStarts(failures=1, message="address already in use")
    _patched(monkeypatch, starts)
    with pytest.raises(Exception, match="address already in use"):
        init_ray(RayOptions(num_cpus=2))
    assert (starts.inits, starts.shutdowns) == (1, 0)
