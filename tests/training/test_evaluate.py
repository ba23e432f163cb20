"""Recall@K: a hand-made case with a known answer, and parity with the official MUGE scorer."""

from __future__ import annotations

import json
import random

import pytest
import torch

from training.evaluate import recall_at_k, top_k, write_jsonl


def test_hand_made_case():
    truth = {1: [10], 2: [20, 21], 3: [30], 4: [40]}
    predictions = {
        1: [10, 11, 12, 13, 14, 15, 16, 17, 18, 19],  # rank 1
        2: [1, 2, 3, 21, 4, 5, 6, 7, 8, 9],  # rank 4 (second of two true images)
        3: [1, 2, 3, 4, 5, 6, 7, 8, 30, 9],  # rank 9
        4: [1, 2, 3, 4, 5, 6, 7, 8, 9, 11],  # missed
    }
    scores = recall_at_k(predictions, truth)
    assert scores == {"r1": 25.0, "r5": 50.0, "r10": 75.0, "mean_recall": 50.0}


def test_top_k_orders_by_similarity():
    gallery = torch.eye(4)
    queries = torch.tensor([[0.1, 0.9, 0.5, 0.0]])
    assert top_k(queries, gallery, [7, 8, 9, 10], k=3) == [[8, 9, 7]]


def test_equals_the_official_muge_scorer(tmp_path):
    evaluation = pytest.importorskip("cn_clip.eval.evaluation")  # plain Python + json; no torchvision needed
    rng = random.Random(0)
    image_ids = list(range(1000, 1040))
    truth = {tid: rng.sample(image_ids, rng.choice([1, 1, 2, 3])) for tid in range(200)}
    predictions = {}
    for tid, true in truth.items():  # put a true image at a random rank (or nowhere) among 10 unique ids
        others = [i for i in image_ids if i not in true]
        ranked = rng.sample(others, 10)
        rank = rng.randrange(14)
        if rank < 10:
            ranked[rank] = rng.choice(true)
        predictions[tid] = ranked
    gt_file, pred_file = tmp_path / "gt.jsonl", tmp_path / "pred.jsonl"
    write_jsonl(gt_file, ({"text_id": t, "text": "", "image_ids": ids} for t, ids in truth.items()))
    write_jsonl(pred_file, ({"text_id": t, "image_ids": ids} for t, ids in predictions.items()))

    mean_recall, r1, r5, r10 = evaluation.compute_score(str(gt_file), str(pred_file))
    ours = recall_at_k(
        {json.loads(line)["text_id"]: json.loads(line)["image_ids"] for line in pred_file.open()}, truth
    )
    assert 0 < r1 < r5 < r10 < 100
    assert ours == pytest.approx({"r1": r1, "r5": r5, "r10": r10, "mean_recall": mean_recall}, abs=1e-9)
