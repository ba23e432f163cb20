"""Run a padded text batch as a few sub-batches of similar length, so short queries stop paying for long ones.

A batch padded to its longest member computes every padding position: 32 queries of 6–32 tokens padded to
32 cost 1,024 token rows where 600 carry text. Sorting by length and cutting the batch into groups, each
trimmed to its own longest member, removes most of that waste; each extra call costs about as much as
``call_cost_tokens`` token rows (weights streamed again, kernel launches), so the cut points are chosen by
a small dynamic programme over that cost model. The result is the same function: padding is masked, so a
row's embedding does not depend on what it was batched with (tested to 1e-5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from service.engines import TextEngine

# One call's fixed cost in token rows. Measured with the ViT-B-16 text tower (RoBERTa base, fp32) on the
# 2-core AMD EPYC of docs/benchmarks.md: t = 20.5 ms + 1.63 ms per token row, i.e. ~13 rows, and 32 mixed
# queries (4–30 characters) ran fastest with any value from 16 to 48 (980–1,030 ms against 1,916 ms as
# one padded call). A GPU's launch cost is relatively larger, which a larger value would reflect.
DEFAULT_CALL_COST_TOKENS = 24


def needed_lengths(attention_mask: np.ndarray) -> np.ndarray:
    """Per row, the index after its last attended token (robust to masks that are not a prefix of ones)."""
    mask = np.asarray(attention_mask) != 0
    last = mask.shape[1] - np.argmax(mask[:, ::-1], axis=1)
    return np.where(mask.any(axis=1), last, 1)


def plan_groups(lengths: Sequence[int], call_cost_tokens: int) -> list[np.ndarray]:
    """Row indices per group, minimising Σ (group size × group max length + call cost)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    sorted_len = np.asarray(lengths)[order]
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[i]: cheapest plan for the i shortest rows
    cut = [0] * (n + 1)
    for i in range(1, n + 1):
        longest = int(sorted_len[i - 1])  # the longest of rows j..i-1 is the last one: sorted
        for j in range(i):
            cost = best[j] + (i - j) * longest + call_cost_tokens
            if cost < best[i]:
                best[i], cut[i] = cost, j
    groups: list[np.ndarray] = []
    i = n
    while i > 0:
        groups.append(order[cut[i] : i])
        i = cut[i]
    return groups[::-1]


class LengthGroupedText:
    """A text engine wrapper: trims padding and splits mixed-length batches into groups (see module doc)."""

    def __init__(self, engine: TextEngine, call_cost_tokens: int = DEFAULT_CALL_COST_TOKENS) -> None:
        self.engine = engine
        self.call_cost_tokens = call_cost_tokens

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        lengths = needed_lengths(attention_mask)
        groups = plan_groups(lengths.tolist(), self.call_cost_tokens)
        if len(groups) == 1:
            width = int(lengths.max())
            return self.engine.embed(
                np.ascontiguousarray(input_ids[:, :width]), np.ascontiguousarray(attention_mask[:, :width])
            )
        out: np.ndarray | None = None
        for rows in groups:
            width = int(lengths[rows].max())
            part = self.engine.embed(input_ids[rows, :width], attention_mask[rows, :width])
            if out is None:
                out = np.empty((len(lengths), part.shape[1]), part.dtype)
            out[rows] = part
        assert out is not None
        return out
