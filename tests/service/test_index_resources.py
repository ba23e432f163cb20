"""How `tuwen index` sizes its embedding actors on a local Ray (a unit; the pipeline itself runs on a real
local Ray in tests/service/test_index.py, with two actors on two CPUs there)."""

from __future__ import annotations

import pytest

from service.commands.errors import CommandError
from service.indexing.pipeline import fit_actor_cpus


@pytest.mark.parametrize(
    ("cpus", "actors", "wanted", "expected"),
    [
        (8, 2, 1.0, 1.0),  # room to spare: as asked
        (8, 7, 1.0, 1.0),  # exactly one CPU left for decoding
        (2, 1, 1.0, 1.0),
        (2, 2, 1.0, 0.5),  # two actors on two CPUs would starve decoding forever: they share one
        (4, 2, 2.0, 1.5),
    ],
)
def test_actors_always_leave_a_cpu_to_the_decode_tasks(
    cpus: float, actors: int, wanted: float, expected: float
) -> None:
    assert fit_actor_cpus(cpus, actors, wanted) == expected
    assert actors * fit_actor_cpus(cpus, actors, wanted) <= cpus - 1


def test_one_cpu_is_refused_with_what_to_do() -> None:
    with pytest.raises(CommandError, match="--num-cpus"):
        fit_actor_cpus(1, 1, 1.0)
