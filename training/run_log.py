"""Where a run's numbers go: a progress bar on the console, TensorBoard events and a JSONL log.

Only rank 0 writes; on the other ranks every method is a no-op.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class RunLog:
    def __init__(self, out_dir: Path, *, enabled: bool, total_steps: int, initial_step: int, progress: bool):
        self.enabled = enabled
        self._bar = self._writer = self._jsonl = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(out_dir / "log.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - closed in close(); appends across resumes
        from torch.utils.tensorboard import SummaryWriter  # slow import: only on the writing rank

        self._writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"))
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True)

    def step(self, step: int, loss: float) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def scalars(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)):
                self._writer.add_scalar(key, value, step)
        self._jsonl.write(json.dumps({"step": step, **values}, ensure_ascii=False) + "\n")
        self._jsonl.flush()

    def message(self, text: str) -> None:
        if self.enabled:
            (self._bar.write if self._bar is not None else print)(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
        if self._jsonl is not None:
            self._jsonl.close()
