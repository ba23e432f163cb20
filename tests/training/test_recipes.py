"""AltCLIP's two stages and ALIGN through the one trainer: teacher learning leaves the teacher untouched and
lowers the student's loss; every stage's checkpoint loads into the next, resumes exactly and is an ordinary
Tuwen checkpoint; short runs of each recipe lift held-out recall well above chance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.checkpoints import load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.data.synthetic import write_synthetic_dataset
from training.models import AltCLIP, build_model

pytest.importorskip("sentencepiece")  # the student's tokenizer is trained here


def _data(root: Path, n_train: int = 96, n_valid: int = 16) -> Path:
    write_synthetic_dataset(
        root, n_train=n_train, n_valid=n_valid, n_test=0, captions_per_image=1, parallel=True
    )
    return root


def _student_tokenizer(data: Path, out: Path) -> Path:
    from training.demo_compare import train_student_tokenizer

    return train_student_tokenizer(data / "train_parallel.jsonl", out)


def _random_teacher(path: Path) -> Path:
    torch.manual_seed(5)
    return save_checkpoint(path, build_model("tiny-vit"), name="teacher", config={"arch": "tiny-vit"})


def _config(root: Path, out: Path, **overrides) -> TrainConfig:
    settings = {
        "name": out.name, "out_dir": out, "arch": "demo-altclip", "text_dropout": 0.0, "cpu_threads": 1,
        "data": {"root": root, "num_workers": 0, "valid_split": None}, "batch_size": 16, "max_steps": 4,
        "warmup_steps": 1, "lr": 1e-3, "progress": False, "log_every": 1,
    }  # fmt: skip
    return TrainConfig.model_validate({**settings, **overrides})


def _teacher_stage(data, out, teacher, tokenizer, **overrides) -> TrainConfig:
    return _config(
        data, out, loss="teacher-mse", tokenizer=tokenizer, freeze_image_tower=True,
        init={"teacher": teacher}, data={"root": data, "num_workers": 0, "valid_split": None,
                                         "format": "parallel-jsonl"}, **overrides,
    )  # fmt: skip


def test_a_teacher_stage_needs_parallel_text_and_a_teacher(tmp_path):
    with pytest.raises(ValueError, match="parallel-jsonl"):
        _config(tmp_path, tmp_path / "x", loss="teacher-mse", init={"teacher": tmp_path / "t.pt"})
    with pytest.raises(ValueError, match=r"needs init\.teacher"):
        _config(
            tmp_path, tmp_path / "x", loss="teacher-mse", data={"root": tmp_path, "format": "parallel-jsonl"}
        )


@pytest.mark.slow
def test_teacher_learning_trains_the_student_alone_and_feeds_the_contrastive_stage(tmp_path, monkeypatch):
    import training.train as trainer

    data = _data(tmp_path / "data")
    tokenizer = _student_tokenizer(data, tmp_path / "tok")
    teacher_file = _random_teacher(tmp_path / "teacher.pt")
    seen = []
    load_teacher = trainer.load_teacher

    def keep_the_teacher(*args):
        seen.append(load_teacher(*args))
        return seen[-1]

    monkeypatch.setattr(trainer, "load_teacher", keep_the_teacher)

    result = trainer.train(_teacher_stage(data, tmp_path / "teacher", teacher_file, tokenizer, max_steps=40))

    # the teacher: bit-identical after training, never in the optimizer
    original = load_checkpoint(teacher_file).model
    assert len(seen) == 1
    for key, value in original.state_dict().items():
        assert torch.equal(seen[0].state_dict()[key], value), key
    assert not any(p.requires_grad for p in seen[0].parameters())
    # the student learns: the MSE falls
    assert sum(result.losses[-5:]) / 5 < 0.5 * sum(result.losses[:5]) / 5, result.losses
    # a complete AltCLIP: the teacher's image tower and text projection, untouched; only the student trained
    student = load_checkpoint(result.checkpoint).model
    assert isinstance(student, AltCLIP)
    for key, value in original.visual.state_dict().items():
        assert torch.equal(student.visual.state_dict()[key], value), key
    assert torch.equal(student.text_projection.weight, original.text_projection.t())
    state = torch.load(tmp_path / "teacher" / "last.pt", weights_only=False)
    assert len(state["optimizer"]["state"]) == len(list(student.text.parameters()))

    # the next stage starts from it: InfoNCE, image tower frozen, text side trained
    contrastive = trainer.train(
        _config(data, tmp_path / "contrastive", tokenizer=tokenizer, freeze_image_tower=True,
                init={"checkpoint": result.checkpoint}, max_steps=2)
    )  # fmt: skip
    final = load_checkpoint(contrastive.checkpoint).model
    assert torch.equal(final.visual.transformer.resblocks[0].attn.in_proj_weight,
                       student.visual.transformer.resblocks[0].attn.in_proj_weight)  # fmt: skip
    assert not torch.equal(final.text.transformation.weight, student.text.transformation.weight)


@pytest.mark.slow
def test_teacher_learning_resumes_exactly(tmp_path):
    from training.train import train

    data = _data(tmp_path / "data", n_train=48)
    tokenizer = _student_tokenizer(data, tmp_path / "tok")
    teacher = _random_teacher(tmp_path / "teacher.pt")
    # 48 images x 2 lines / batch 16 = 6 steps an epoch: the resume crosses into epoch 2
    whole = train(_teacher_stage(data, tmp_path / "whole", teacher, tokenizer, max_steps=8, save_every=4))
    resumed = train(
        _teacher_stage(data, tmp_path / "resumed", teacher, tokenizer, max_steps=8,
                       resume=tmp_path / "whole" / "step-000004.pt")
    )  # fmt: skip
    assert resumed.losses == pytest.approx(whole.losses[4:], abs=1e-6)
    a, b = (load_checkpoint(r.checkpoint).model.state_dict() for r in (whole, resumed))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def _chance(evaluation: dict) -> float:
    return 100 / evaluation["num_images"]


@pytest.mark.slow
def test_short_altclip_and_align_runs_lift_held_out_recall_well_above_chance(tmp_path):
    from training.train import train

    data = tmp_path / "data"
    write_synthetic_dataset(data, n_train=640, n_valid=64, n_test=0, captions_per_image=1, parallel=True)
    tokenizer = _student_tokenizer(data, tmp_path / "tok")
    common = {"batch_size": 32, "warmup_steps": 10, "log_every": 50}
    valid = {"num_workers": 0, "valid_split": "valid"}
    english = train(
        _config(data / "en", tmp_path / "english", arch="tiny-vit", max_steps=150, **common,
                data={"root": data / "en", "num_workers": 0, "valid_split": None})
    )  # fmt: skip
    teacher = train(
        _config(data, tmp_path / "altclip-teacher", loss="teacher-mse", tokenizer=tokenizer,
                freeze_image_tower=True, init={"teacher": english.checkpoint}, max_steps=150, lr=3e-3, **common,
                data={"root": data, "format": "parallel-jsonl", **valid})
    )  # fmt: skip
    contrastive = train(
        _config(data, tmp_path / "altclip-contrastive", tokenizer=tokenizer, freeze_image_tower=True,
                init={"checkpoint": teacher.checkpoint}, max_steps=60, lr=5e-4, **common,
                data={"root": data, **valid})
    )  # fmt: skip
    align = train(
        _config(data, tmp_path / "align", arch="demo-align", loss="align", max_steps=150, **common,
                recalibrate_batchnorm=10,
                tokenizer=Path(__file__).parents[2] / "service" / "preprocessing" / "vocab.txt",
                data={"root": data, **valid})
    )  # fmt: skip
    # most captions match one image in 64: chance R@1 is about 1.6 %, chance mean recall about 8.3 %
    for name, run in (("altclip two-stage", contrastive), ("align", align)):
        t2i = run.evaluation["text_to_image"]
        assert t2i["r1"] > 3 * _chance(run.evaluation), (name, t2i)
    # teacher learning alone already maps Chinese text into the English CLIP's space
    assert teacher.evaluation["text_to_image"]["mean_recall"] > 2 * 8.3, teacher.evaluation


@pytest.mark.slow
def test_align_resumes_exactly_and_loads_as_a_tuwen_checkpoint(tmp_path):
    from tiny_data import tiny_config, write_tiny_dataset

    from training.models import ALIGN
    from training.train import train

    data = write_tiny_dataset(tmp_path / "data")  # 24 pairs / batch 8 = 3 steps an epoch
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "一", "张", "的", "图", "片",
                                "红", "绿", "蓝", "黄", "色"]) + "\n", encoding="utf-8")  # fmt: skip
    settings = {"arch": "tiny-align", "loss": "align", "tokenizer": vocab, "max_steps": 6, "cpu_threads": 1}
    whole = train(tiny_config(data, tmp_path / "whole", save_every=2, **settings))
    resumed = train(
        tiny_config(data, tmp_path / "resumed", resume=tmp_path / "whole" / "step-000002.pt", **settings)
    )
    assert resumed.losses == pytest.approx(whole.losses[2:], abs=1e-6)
    a, b = (load_checkpoint(r.checkpoint).model for r in (whole, resumed))
    assert isinstance(a, ALIGN)
    assert all(torch.allclose(a.state_dict()[k], b.state_dict()[k], atol=1e-6) for k in a.state_dict())
