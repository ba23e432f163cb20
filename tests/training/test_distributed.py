"""Two gloo processes under DDP give the loss and gradients of one process on the concatenated batch."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from tests.training.gloo import join_group, run_ranks
from training.loss import clip_loss
from training.models import build_model

GLOBAL_BATCH = 6


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(GLOBAL_BATCH, 3, 64, 64, generator=g)
    ids = torch.randint(672, 8000, (GLOBAL_BATCH, 12), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    return images, ids


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("tiny-vit")
    model.eval()  # dropout off: the comparison is about the loss and its gradients, not the RNG
    return model


def _loss_and_grads(model, images, ids, **loss_args) -> tuple[float, dict[str, torch.Tensor]]:
    image_features, text_features, scale = model(images, ids)
    loss = clip_loss(image_features, text_features, scale, **loss_args)
    loss.backward()
    inner = model.module if hasattr(model, "module") else model
    return loss.item(), {name: p.grad.clone() for name, p in inner.named_parameters()}


def _worker(rank: int, world_size: int, init_file: str, out_file: str) -> None:
    join_group(rank, world_size, init_file)
    torch.set_num_threads(1)
    images, ids = _batch()
    shard = slice(rank * GLOBAL_BATCH // world_size, (rank + 1) * GLOBAL_BATCH // world_size)
    results = {}
    for with_grad in (False, True):
        model = DistributedDataParallel(_model())
        results[with_grad] = _loss_and_grads(
            model, images[shard], ids[shard], rank=rank, world_size=world_size, gather_with_grad=with_grad
        )
    if rank == 0:
        torch.save(results, out_file)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_concatenated_batch(tmp_path):
    out_file = tmp_path / "ddp.pt"
    run_ranks(_worker, str(tmp_path / "init"), str(out_file))
    distributed = torch.load(out_file)

    images, ids = _batch()
    loss, grads = _loss_and_grads(_model(), images, ids)
    for with_grad in (False, True):
        ddp_loss, ddp_grads = distributed[with_grad]
        assert ddp_loss == pytest.approx(loss, abs=1e-5)
        assert grads.keys() == ddp_grads.keys()
        for name, grad in grads.items():
            assert torch.allclose(ddp_grads[name], grad, atol=1e-5, rtol=0), (with_grad, name)
        assert any(g.abs().max() > 1e-4 for g in grads.values())
