"""Entry points contributed by packages installed beside the service (training's commands and embedder).

The project's metadata declares training's entry points in every install, also in the runtime images,
which copy only service/: there the package an entry point names is absent, and the entry point is not
offered. Anything else that fails while loading one (a broken import inside an installed package) raises.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from importlib.util import find_spec


def installed_entry_points(group: str) -> list[EntryPoint]:
    """The entry points of ``group`` whose top-level package is present here (found, not imported)."""
    return [ep for ep in entry_points(group=group) if find_spec(ep.module.partition(".")[0]) is not None]
