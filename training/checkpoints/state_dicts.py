"""Reading weight files and fitting state dicts to models, with errors that name the keys at fault."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

_SHOWN = 5  # keys listed per kind of mismatch; the rest are counted
# plain numpy arrays, as in the numpy RNG state a resumable training checkpoint carries; still no code
_NUMPY_CORE = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed the module
_NUMPY_DATA = [_NUMPY_CORE.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says what to do."""


@dataclass(frozen=True)
class KeyMismatch:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shapes: list[str] = field(default_factory=list)  # "key: file [..] vs model [..]"

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    @property
    def size(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.shapes)

    def describe(self) -> str:
        parts = []
        for label, items in (
            ("missing keys", self.missing),
            ("unexpected keys", self.unexpected),
            ("shape mismatches", self.shapes),
        ):
            if items:
                more = f", … and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
                parts.append(f"{len(items)} {label} ({', '.join(items[:_SHOWN])}{more})")
        return "; ".join(parts)


def compare(state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size]) -> KeyMismatch:
    """How ``state_dict`` differs from the keys and shapes a model expects."""
    return KeyMismatch(
        missing=sorted(set(expected) - set(state_dict)),
        unexpected=sorted(set(state_dict) - set(expected)),
        shapes=[
            f"{key}: file {list(value.shape)} vs model {list(expected[key])}"
            for key, value in state_dict.items()
            if key in expected and tuple(value.shape) != tuple(expected[key])
        ],
    )


def expected_shapes(module: nn.Module) -> dict[str, torch.Size]:
    return {key: value.shape for key, value in module.state_dict().items()}


def load_strict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str, hint: str | Callable[[], str]
) -> None:
    """Load every key, exactly; float tensors are cast to the module's fp32 (released files may be fp16).

    ``module`` may live on the meta device: its tensors are then replaced by the loaded ones.
    """
    mismatch = compare(state_dict, expected_shapes(module))
    if mismatch:
        advice = hint() if callable(hint) else hint  # computed only on failure
        raise CheckpointError(f"{what} does not fit: {mismatch.describe()}. {advice}")
    as_fp32 = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    module.load_state_dict(as_fp32, strict=True, assign=True)


def strip_prefix(state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Drop ``prefix`` when every key carries it (DDP's ``module.``)."""
    if state_dict and all(key.startswith(prefix) for key in state_dict):
        return {key[len(prefix) :]: value for key, value in state_dict.items()}
    return dict(state_dict)


def read_weights(path: Path) -> Any:
    """A ``torch.save`` file (tensors and plain data only, never arbitrary pickles) or a ``.safetensors`` file."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        with torch.serialization.safe_globals(_NUMPY_DATA):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path}: {first_line.rstrip('.')}. "
            "Is the file complete (re-download it) and a PyTorch .pt/.bin or .safetensors file?"
        ) from error
