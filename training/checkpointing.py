"""Atomic training checkpoints in the official Chinese-CLIP layout, plus what exact resumption needs.

Layout: {"epoch", "step", "name", "state_dict" (keys prefixed `module.` as in the released files),
"optimizer", "config" (the resolved training config), "scheduler", "rng", "data": {"epoch", "batch"}}.
`training.checkpoints.load_checkpoint` reads the model part; `load_training_state` reads the rest back.
A weights-only export drops the optimizer, scheduler and RNG state (the released files do the same).
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

PREFIX = "module."


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model under DDP and torch.compile wrappers."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def prefixed_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {PREFIX + key: value for key, value in unwrap(model).state_dict().items()}


def load_prefixed_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    plain = {key.removeprefix(PREFIX): value for key, value in state_dict.items()}
    unwrap(model).load_state_dict(plain, strict=True)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same directory, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def training_state(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    epoch: int,
    batch_in_epoch: int,
    name: str,
    config: dict[str, Any],
) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "step": step,
        "name": name,
        "state_dict": prefixed_state_dict(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "data": {"epoch": epoch, "batch": batch_in_epoch},
        "config": config,
    }


def weights_only(state: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint a user ships: model weights, step and config, no optimizer."""
    return {key: state[key] for key in ("epoch", "step", "name", "state_dict", "config")}


def load_training_state(path: Path) -> dict[str, Any]:
    """A resumable checkpoint written by `training_state` (it must carry the optimizer)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    missing = [key for key in ("state_dict", "optimizer", "scheduler", "rng", "data") if key not in state]
    if missing:
        raise ValueError(
            f"{path} cannot resume a run: it lacks {', '.join(missing)} (a weights-only export?). "
            "Start a new run from it with init.checkpoint instead."
        )
    return state
