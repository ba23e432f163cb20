"""Length grouping of text batches: the plan, and that grouped calls give each row what it gets alone."""

from __future__ import annotations

import numpy as np

from service.engines.length_groups import LengthGroupedText, needed_lengths, plan_groups


class _RecordingEngine:
    """A text engine whose row i is a function of its own tokens only, recording each call's shape."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, int]] = []

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        assert input_ids.flags.c_contiguous and attention_mask.flags.c_contiguous
        self.shapes.append(input_ids.shape)
        masked = np.where(attention_mask != 0, input_ids, 0)
        return np.stack([masked.sum(axis=1), attention_mask.sum(axis=1)], axis=1).astype(np.float32)


def _padded(lengths: list[int], width: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.zeros((len(lengths), width), np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = np.arange(1, n + 1) * (row + 1)
        mask[row, :n] = 1
    return ids, mask


def test_needed_lengths_reads_the_last_attended_position() -> None:
    mask = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    assert needed_lengths(mask).tolist() == [2, 3, 1, 4]


def test_similar_lengths_stay_one_call_and_two_clusters_split() -> None:
    assert [g.tolist() for g in plan_groups([10, 11, 12, 10], call_cost_tokens=24)] == [[0, 3, 1, 2]]
    groups = plan_groups([50, 3] * 16, call_cost_tokens=24)
    assert [sorted(g.tolist()) for g in groups] == [list(range(1, 32, 2)), list(range(0, 32, 2))]
    # a call that costs more than the padding it saves is not worth making
    assert len(plan_groups([50, 3], call_cost_tokens=100)) == 1


def test_groups_partition_the_batch() -> None:
    lengths = np.random.default_rng(0).integers(1, 53, 64).tolist()
    groups = plan_groups(lengths, call_cost_tokens=24)
    assert sorted(np.concatenate(groups).tolist()) == list(range(64))
    assert 1 < len(groups) < 64


def test_grouped_rows_equal_rows_embedded_alone_and_calls_are_trimmed() -> None:
    lengths = [3, 40, 4, 38, 5, 3]
    ids, mask = _padded(lengths, 52)
    engine = _RecordingEngine()
    out = LengthGroupedText(engine, call_cost_tokens=8).embed(ids, mask)
    alone = np.concatenate([_RecordingEngine().embed(ids[i : i + 1], mask[i : i + 1]) for i in range(6)])
    np.testing.assert_array_equal(out, alone)
    assert sorted(engine.shapes) == [(2, 40), (4, 5)]  # short and long apart, each trimmed to its longest


def test_a_lone_query_is_trimmed_to_its_length() -> None:
    engine = _RecordingEngine()
    ids, mask = _padded([7], 52)
    LengthGroupedText(engine).embed(ids, mask)
    assert engine.shapes == [(1, 7)]
