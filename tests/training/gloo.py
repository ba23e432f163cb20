"""Two-process gloo groups for the DDP parity tests, bounded: a stuck rank prints every thread's stack and
exits, so the test fails in minutes with evidence instead of hanging until the suite's timeout (seen once
in CI: 900 s and only the parent's stack)."""

from __future__ import annotations

import faulthandler
import os
from collections.abc import Callable
from datetime import timedelta

import torch.distributed as dist
import torch.multiprocessing as mp

_HANG_S = 240  # a rank's whole run takes ~10 s on a loaded 2-core machine


def run_ranks(
    worker: Callable[..., None], *args: object, world_size: int = 2, hang_s: float = _HANG_S
) -> None:
    """Run ``worker(rank, world_size, *args)`` in ``world_size`` fresh processes; raise if any fails or
    runs past ``hang_s``."""
    mp.spawn(_bounded, args=(worker, world_size, args, hang_s), nprocs=world_size, join=True)


def _bounded(
    rank: int, worker: Callable[..., None], world_size: int, args: tuple[object, ...], hang_s: float
) -> None:
    faulthandler.dump_traceback_later(hang_s, exit=True)
    worker(rank, world_size, *args)
    faulthandler.cancel_dump_traceback_later()


def join_group(rank: int, world_size: int, init_file: str) -> None:
    # Loopback: the ranks share this machine, and the host name may resolve to an address they cannot use.
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=_HANG_S // 2),  # a collective that waits longer raises, naming itself
    )
