"""Recall@K: a hand-made case with a known answer, and parity with the official MUGE scorer."""

from __future__ import annotations

import json
import random

import pytest
import torch

from training.evaluate import recall_at_k, top_k, write_jsonl

# the official package is a test peer that `make venv` installs apart from the extras (its pins conflict)
CN_CLIP_MISSING = "cn-clip, the official MUGE scorer, is not installed (make venv installs it)"


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
    evaluation = pytest.importorskip("cn_clip.eval.evaluation", reason=CN_CLIP_MISSING)  # plain Python + json
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


def test_evaluate_retrieval_writes_muge_predictions_the_official_scorer_accepts(tmp_path):
    evaluation = pytest.importorskip("cn_clip.eval.evaluation", reason=CN_CLIP_MISSING)
    from tiny_data import write_tiny_dataset

    from service.preprocessing.text import ChineseTokenizer
    from training.evaluate import evaluate_retrieval, open_cnclip_split
    from training.models import build_model

    data = write_tiny_dataset(tmp_path / "data")
    torch.manual_seed(0)
    model = build_model("tiny-vit")
    summary = evaluate_retrieval(
        model, ChineseTokenizer.from_vocab(), open_cnclip_split(data, "valid"), out_dir=tmp_path
    )
    assert summary["num_images"] == summary["num_texts"] == 24
    rows = [json.loads(line) for line in (tmp_path / "text_to_image_predictions.jsonl").open()]
    assert len(rows) == 24 and all(len(set(row["image_ids"])) == 10 for row in rows)
    mean_recall, r1, r5, r10 = evaluation.compute_score(
        str(data / "valid_texts.jsonl"), str(tmp_path / "text_to_image_predictions.jsonl")
    )
    assert summary["text_to_image"] == pytest.approx(
        {"r1": r1, "r5": r5, "r10": r10, "mean_recall": mean_recall}
    )
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    i2t = [json.loads(line) for line in (tmp_path / "image_to_text_predictions.jsonl").open()]
    assert {row["image_id"] for row in i2t} == set(range(10_000, 10_024))


def test_zero_shot_classifier_averages_the_prompt_templates():
    from service.preprocessing.text import ChineseTokenizer
    from training.evaluate import embed_texts, zero_shot_classifier
    from training.models import build_model

    torch.manual_seed(0)
    model = build_model("tiny-vit").eval()
    tokenizer = ChineseTokenizer.from_vocab()
    templates = ("{}的照片。", "一张{}的图片。")
    classifier = zero_shot_classifier(model, tokenizer, ["猫", "狗"], templates)
    dog = embed_texts(model, tokenizer, ["狗的照片。", "一张狗的图片。"]).mean(0)
    assert classifier.shape == (2, model.config.embed_dim)
    assert torch.allclose(classifier[1], dog / dog.norm(), atol=1e-6)


def test_the_command_line_evaluates_a_checkpoint(tmp_path, capsys):
    from tiny_data import write_tiny_dataset

    from training.checkpoints import save_checkpoint
    from training.evaluate import main
    from training.models import build_model

    data = write_tiny_dataset(tmp_path / "data")
    checkpoint = save_checkpoint(tmp_path / "model.pt", build_model("tiny-vit"))
    main(
        [
            "--checkpoint",
            str(checkpoint),
            "--arch",
            "tiny-vit",
            "--data-root",
            str(data),
            "--out",
            str(tmp_path / "eval"),
            "--device",
            "cpu",
        ]
    )
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["num_images"] == 24 and set(summary["text_to_image"]) == {"r1", "r5", "r10", "mean_recall"}
    assert json.loads(capsys.readouterr().out) == summary
