"""Two gloo processes under DDP equal one process on the concatenated batch for ALIGN's loss and for
AltCLIP's teacher learning (loss and gradients), as tests/training/test_distributed.py shows for InfoNCE."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from tests.training.gloo import join_group, run_ranks
from training.loss import align_loss, teacher_mse_loss
from training.models import build_model
from training.stages import student_features, teacher_features

GLOBAL_BATCH = 6


def _images_and_ids() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=g)
    bert_ids = torch.randint(672, 8000, (GLOBAL_BATCH, 12), generator=g)
    bert_ids[:, 0], bert_ids[:, -1] = 101, 102
    xlmr_ids = torch.randint(4, 900, (GLOBAL_BATCH, 10), generator=g)
    xlmr_ids[:, 0], xlmr_ids[:, -1] = 0, 2
    xlmr_ids[::2, 7:] = 1  # some padding
    return images, bert_ids, xlmr_ids


def _align():
    torch.manual_seed(0)
    # eval: BatchNorm on running statistics, the same on every split. float64: a random EfficientNet's
    # gradients reach ~100, where float32 rounding alone (batch 6 vs 2 x 3) exceeds 1e-5
    return build_model("tiny-align").eval().double()


def _altclip_and_teacher():
    torch.manual_seed(0)
    student = build_model("demo-altclip").text.eval()
    teacher = build_model("tiny-vit").eval()  # text width 64 = demo-altclip's project_dim
    return student, teacher


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    inner = module.module if hasattr(module, "module") else module
    return {name: p.grad.clone() for name, p in inner.named_parameters() if p.grad is not None}


def _align_step(model, images, ids, **gathering) -> tuple[float, dict[str, torch.Tensor]]:
    image_features, text_features, _ = model(images.double(), ids)
    inner = model.module if hasattr(model, "module") else model
    loss = align_loss(image_features, text_features, inner.temperature, **gathering)
    loss.backward()
    return loss.item(), _grads(model)


def _teacher_step(student, teacher, bert_ids, xlmr_ids) -> tuple[float, dict[str, torch.Tensor]]:
    loss = teacher_mse_loss(student_features(student, xlmr_ids, 1), teacher_features(teacher, bert_ids))
    loss.backward()
    return loss.item(), _grads(student)


def _worker(rank: int, world_size: int, init_file: str, out_file: str) -> None:
    join_group(rank, world_size, init_file)
    torch.set_num_threads(1)
    images, bert_ids, xlmr_ids = _images_and_ids()
    shard = slice(rank * GLOBAL_BATCH // world_size, (rank + 1) * GLOBAL_BATCH // world_size)
    results = {}
    for with_grad in (False, True):
        model = DistributedDataParallel(_align())
        results[("align", with_grad)] = _align_step(
            model,
            images[shard],
            bert_ids[shard],
            rank=rank,
            world_size=world_size,
            gather_with_grad=with_grad,
        )
    student, teacher = _altclip_and_teacher()
    loss, grads = _teacher_step(DistributedDataParallel(student), teacher, bert_ids[shard], xlmr_ids[shard])
    total = torch.tensor([loss], dtype=torch.float64)
    dist.all_reduce(total)  # the trainer logs the mean over ranks
    results["teacher"] = (total.item() / world_size, grads)
    if rank == 0:
        torch.save(results, out_file)
    dist.destroy_process_group()


def _assert_equal(distributed, single) -> None:
    (ddp_loss, ddp_grads), (loss, grads) = distributed, single
    assert ddp_loss == pytest.approx(loss, abs=1e-5)
    assert grads.keys() == ddp_grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(ddp_grads[name], grad, atol=1e-5, rtol=0), name
    assert any(g.abs().max() > 1e-4 for g in grads.values())


@pytest.mark.slow
def test_two_processes_equal_one_process_for_align_and_teacher_learning(tmp_path):
    out_file = tmp_path / "ddp.pt"
    run_ranks(_worker, str(tmp_path / "init"), str(out_file))
    distributed = torch.load(out_file)

    images, bert_ids, xlmr_ids = _images_and_ids()
    align_single = _align_step(_align(), images, bert_ids)
    assert "temperature" in align_single[1]
    for with_grad in (False, True):
        _assert_equal(distributed[("align", with_grad)], align_single)
    student, teacher = _altclip_and_teacher()
    _assert_equal(distributed["teacher"], _teacher_step(student, teacher, bert_ids, xlmr_ids))
    assert all(p.grad is None for p in teacher.parameters())
