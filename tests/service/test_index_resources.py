"""How `tuwen index` sizes its embedding actors, decides where images are decoded, and starts a local Ray
(units; the pipeline itself runs on a real local Ray in tests/service/test_index.py, both ways)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from service.commands.errors import CommandError
from service.indexing.pipeline import ActorSizing, RayOptions, actor_sizing, default_actors

MiB = 2**20
GiB = 2**30
ACTORS_DECODE = RayOptions(decode_in="actors")


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
    sizing = actor_sizing(cpus, actors, wanted, local=True, decode_tasks=True)
    assert sizing == expected
    assert sizing.cpus == 0 or actors * sizing.cpus <= cpus - 1


@pytest.mark.parametrize(
    ("cpus", "actors", "wanted", "expected"),
    [
        (2, 2, None, ActorSizing(0.0, 1)),  # the default on 2 CPUs: two actors, a thread each
        (2, 2, 1.0, ActorSizing(1.0, 1)),  # no decode task to leave a CPU to
        (2, 4, 1.0, ActorSizing(0.5, 1)),  # but they all fit, or Ray Data would wait for the rest forever
        (1, 1, 1.0, ActorSizing(1.0, 1)),
    ],
)
def test_local_actors_that_decode_may_reserve_every_cpu(
    cpus: float, actors: int, wanted: float | None, expected: ActorSizing
) -> None:
    assert actor_sizing(cpus, actors, wanted, local=True, decode_tasks=False) == expected


def test_cluster_actors_reserve_what_is_asked() -> None:
    for decode_tasks in (True, False):
        sizing = actor_sizing(64, 8, None, local=False, decode_tasks=decode_tasks)
        assert sizing == ActorSizing(1.0, 1)  # a cluster's default
        sizing = actor_sizing(64, 8, 4.0, local=False, decode_tasks=decode_tasks)
        assert sizing == ActorSizing(4.0, 4)  # the autoscaler finds room
        sizing = actor_sizing(64, 8, 0.0, local=False, decode_tasks=decode_tasks)
        assert sizing == ActorSizing(0.0, None)  # the runtime's own threads


def test_one_cpu_beside_decode_tasks_is_refused_with_what_to_do() -> None:
    with pytest.raises(CommandError, match="--num-cpus"):
        actor_sizing(1, 1, 1.0, local=True, decode_tasks=True)
    assert actor_sizing(1, 1, None, local=True, decode_tasks=True) == ActorSizing(0.0, 1)  # sharing works


def test_decoding_runs_in_tasks_unless_the_actors_are_asked_to() -> None:
    assert RayOptions().decode_tasks
    assert RayOptions(actor_gpus=1).decode_tasks
    assert not RayOptions(decode_in="actors").decode_tasks


@pytest.mark.parametrize(
    ("resources", "options", "tower_bytes", "expected"),
    [
        ({"CPU": 32, "memory": 64 * GiB}, RayOptions(), 0, 1),  # decode tasks take the other CPUs
        ({"CPU": 2, "memory": 16 * GiB}, ACTORS_DECODE, 50 * MiB, 2),  # one per CPU
        ({"CPU": 64, "memory": 64 * GiB}, ACTORS_DECODE, 2 * GiB - 128 * MiB, 8),  # 32 GiB / 4 GiB each
        ({"CPU": 64, "memory": 64 * GiB}, replace(ACTORS_DECODE, actor_cpus=4), 50 * MiB, 16),
        ({"CPU": 8, "memory": 1 * GiB}, ACTORS_DECODE, 2 * GiB, 1),  # at least one
        ({"CPU": 8}, ACTORS_DECODE, 2 * GiB, 8),  # no memory figure: the CPUs
        ({"CPU": 32, "GPU": 4, "memory": 64 * GiB}, RayOptions(actor_gpus=1), 2 * GiB, 4),  # one per GPU
        ({"CPU": 32, "GPU": 4}, RayOptions(actor_gpus=0.5), 0, 8),
        ({"CPU": 32}, RayOptions(actor_gpus=1), 0, 1),  # GPU nodes yet to come: the autoscaler adds one
    ],
)
def test_actors_by_default_fill_the_cluster(
    resources: dict[str, float], options: RayOptions, tower_bytes: int, expected: int
) -> None:
    assert default_actors(resources, options, tower_bytes, decode_bytes=256 * MiB) == expected


def test_decoding_actors_never_reserve_more_memory_than_ray_has() -> None:
    # A tiny model on many cores: the decodes' reserved memory is the limit, not the towers.
    decode_bytes = 240 * MiB  # the default TUWEN_MAX_IMAGE_PIXELS' reservation
    for memory in (2 * GiB, 8 * GiB, 30 * GiB):
        actors = default_actors({"CPU": 256, "memory": memory}, ACTORS_DECODE, 1 * MiB, decode_bytes)
        assert 1 <= actors < 256
        assert actors * decode_bytes <= memory / 2


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
