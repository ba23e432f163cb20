"""Training of every model family: `python -m training.train --config FILE [key=value ...]`.

Runs as one process or under `torchrun --nproc-per-node N` (DDP; NCCL on CUDA, gloo on CPU). A stage is a
config (training/configs/): Chinese-CLIP's stage 1 freezes the image tower, stage 2 starts from the stage-1
checkpoint with everything trainable and a fresh optimizer and schedule; AltCLIP's teacher learning trains
the XLM-R student on parallel text against a frozen CLIP text tower, then a contrastive stage; ALIGN trains
both towers from the start with its own loss. The family comes from `arch`, the recipe from `loss`.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from service.preprocessing.text import TextTokenizer
from training.checkpointing import (
    atomic_save,
    load_prefixed_state_dict,
    load_training_state,
    set_rng_state,
    training_state,
    weights_only,
)
from training.config import TrainConfig, load_config
from training.data.dataset import Collator, ImageTextDataset, open_pairs
from training.data.parallel import ParallelCollator, ParallelText, parallel_path
from training.data.sampler import ShardedBatchSampler
from training.distributed import DistEnv, all_reduce_mean, cleanup_distributed, init_distributed
from training.evaluate import evaluate_retrieval, open_cnclip_split
from training.families import clamp_temperature, image_spec, text_tokenizer
from training.flops import peak_tflops, training_flops_per_sample
from training.loss import align_loss, clip_loss, teacher_mse_loss
from training.models import ALIGN, CLIP, AltCLIP, load_model_config, model_from_config
from training.optim import build_optimizer, build_scheduler
from training.run_log import RunLog
from training.stages import (
    check_recipe,
    configure_batchnorm,
    freeze_all_but_student,
    init_from_teacher,
    load_teacher,
    recalibrate_batchnorm,
    set_train_mode,
    student_features,
    teacher_features,
)

Model = CLIP | AltCLIP | ALIGN


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # per step of this run, averaged over ranks
    checkpoint: Path | None = None  # the weights-only export (or the last resumable checkpoint)
    evaluation: dict | None = None  # retrieval on the validation split (rank 0)


def validate(model: Model, tokenizer: TextTokenizer, cfg: TrainConfig) -> dict | None:
    """Retrieval recall on the validation split's Chinese-CLIP TSV/JSONL files, written to out_dir/eval."""
    split = cfg.data.valid_split
    if split is None:
        return None
    if not (cfg.data.root / f"{split}_imgs.tsv").is_file():
        print(
            f"no {cfg.data.root / f'{split}_imgs.tsv'}: validation skipped (set data.valid_split=null to silence)"
        )
        return None
    data = open_cnclip_split(cfg.data.root, split)
    return evaluate_retrieval(
        model, tokenizer, data, out_dir=cfg.out_dir / "eval", on_error=cfg.data.on_error
    )


def build_initial_model(cfg: TrainConfig, teacher: CLIP | None = None) -> Model:
    """The model a run starts from: a checkpoint (fine-tuning / a later stage), or pretrained towers (for
    AltCLIP teacher learning: the teacher's image tower and text projection), or random."""
    torch.manual_seed(cfg.seed)  # identical random init on every rank (DDP also broadcasts rank 0's)
    config = load_model_config(cfg.arch)
    if cfg.text_dropout is not None:
        text = config.text.model_copy(
            update={"hidden_dropout": cfg.text_dropout, "attention_dropout": cfg.text_dropout}
        )
        config = config.model_copy(update={"text": text})
    model = model_from_config(config)
    if teacher is not None and cfg.init.checkpoint is None and isinstance(model, AltCLIP):
        init_from_teacher(model, teacher)
    if cfg.init.checkpoint is not None:
        from training.checkpoints import load_checkpoint

        loaded = load_checkpoint(cfg.init.checkpoint, arch=cfg.arch).model
        model.load_state_dict(loaded.state_dict())
    if cfg.init.openai_visual is not None:
        from training.checkpoints import load_openai_visual

        load_openai_visual(model, cfg.init.openai_visual)
    if cfg.init.hf_bert is not None:
        from training.checkpoints import load_hf_bert

        load_hf_bert(model, cfg.init.hf_bert)
    return model


def freeze_image_tower(model: Model) -> None:
    """Stage 1: no gradients and no optimizer state for the image tower."""
    for param in model.visual.parameters():
        param.requires_grad_(False)


def contrastive_loss(
    cfg: TrainConfig, model: Model, image_features: torch.Tensor, text_features: torch.Tensor,
    scale: torch.Tensor, env: DistEnv,
) -> torch.Tensor:  # fmt: skip
    gathering = {"rank": env.rank, "world_size": env.world_size, "gather_with_grad": cfg.gather_with_grad}
    if cfg.loss == "align":  # cosine / the raw temperature, label smoothing 0.1
        assert isinstance(model, ALIGN)  # check_recipe made sure
        return align_loss(image_features.float(), text_features.float(), model.temperature, **gathering)
    return clip_loss(image_features.float(), text_features.float(), scale.float(), **gathering)


def make_loader(
    dataset, collator, cfg: TrainConfig, env: DistEnv, epoch: int, start_batch: int
) -> DataLoader:
    sampler = ShardedBatchSampler(
        len(dataset),
        cfg.batch_size,
        rank=env.rank,
        world_size=env.world_size,
        seed=cfg.seed,
        epoch=epoch,
        start_batch=start_batch,
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collator,
        num_workers=cfg.data.num_workers,
        pin_memory=env.device.type == "cuda",
        # the workers' base seed comes from this generator, not the global RNG, so that starting a loader
        # on resume does not shift the random stream (dropout) against the uninterrupted run
        generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch),
    )


def train(cfg: TrainConfig) -> TrainResult:
    env = init_distributed()
    try:
        return _train(cfg, env)
    finally:
        cleanup_distributed()


def _train(cfg: TrainConfig, env: DistEnv) -> TrainResult:
    if cfg.cpu_threads is not None:
        torch.set_num_threads(cfg.cpu_threads)
    # --- model, stage, optimizer -------------------------------------------------------------------------
    teacher = load_teacher(cfg.init.teacher, env.device) if cfg.loss == "teacher-mse" else None
    model = build_initial_model(cfg, teacher).to(env.device)
    check_recipe(model, cfg.loss)
    configure_batchnorm(model)  # EfficientNet: PyTorch's momentum convention
    if cfg.freeze_image_tower:
        freeze_image_tower(model)
    # the module whose forward the loss runs through (and DDP wraps): teacher learning trains the student alone
    # (of an AltCLIP, as check_recipe made sure)
    trained = freeze_all_but_student(model) if teacher is not None else model  # type: ignore[arg-type]
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    optimizer = build_optimizer(
        model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas, eps=cfg.eps, device=env.device
    )
    scheduler = build_scheduler(optimizer, cfg.warmup_steps, cfg.max_steps)
    step, epoch, batch_in_epoch = 0, 0, 0
    if cfg.resume is not None:  # continue this very run: weights, optimizer, schedule, RNG, data position
        state = load_training_state(cfg.resume)
        load_prefixed_state_dict(model, state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        step, epoch, batch_in_epoch = state["step"], state["data"]["epoch"], state["data"]["batch"]
    set_train_mode(model, image_tower_frozen=cfg.freeze_image_tower, batchnorm=cfg.image_batchnorm)
    # before DDP hooks exist; the image-text forward it measures is not what teacher learning runs
    flops_per_sample = training_flops_per_sample(model) if env.is_main and teacher is None else None
    wrapped: nn.Module = DistributedDataParallel(trained) if env.enabled else trained
    if cfg.compile:
        wrapped = torch.compile(wrapped)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if cfg.precision == "bf16" or (cfg.precision == "auto" and env.device.type == "cuda")
        else contextlib.nullcontext()
    )

    # --- data ----------------------------------------------------------------------------------------------
    tokenizer = text_tokenizer(model, cfg.tokenizer)
    dataset: ParallelText | ImageTextDataset
    collator: ParallelCollator | Collator
    if teacher is not None:  # parallel text: the teacher reads its side with its own tokenizer
        dataset = ParallelText(parallel_path(cfg.data.root, cfg.data.train_split), cfg.data.on_error)
        collator = ParallelCollator(text_tokenizer(teacher), tokenizer)
    else:
        pairs = open_pairs(cfg.data.format, cfg.data.root, cfg.data.train_split, cfg.data.on_error)
        dataset, collator = ImageTextDataset(pairs, image_spec(model), cfg.data.on_error), Collator(tokenizer)

    log = RunLog(
        cfg.out_dir, enabled=env.is_main, total_steps=cfg.max_steps, initial_step=step, progress=cfg.progress
    )
    resolved = cfg.model_dump(mode="json")
    result = TrainResult()
    peak = peak_tflops(env.device, cfg.peak_tflops)
    window_start, window_samples = time.perf_counter(), 0

    # --- the loop ------------------------------------------------------------------------------------------
    while step < cfg.max_steps:
        for batch in make_loader(dataset, collator, cfg, env, epoch, batch_in_epoch):
            first, input_ids = (tensor.to(env.device, non_blocking=True) for tensor in batch)
            if teacher is not None:  # teacher learning: teacher text -> teacher, its translation -> student
                with autocast:
                    target = teacher_features(teacher, first)  # no_grad, eval mode
                    student = student_features(wrapped, input_ids, tokenizer.pad_id)
                loss = teacher_mse_loss(student.float(), target.float())
            else:  # contrastive: first = images
                with autocast:
                    image_features, text_features, scale = wrapped(first, input_ids)
                loss = contrastive_loss(cfg, model, image_features, text_features, scale, env)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            clamp_temperature(model)  # the similarity multiplier stays at most 100, as in CLIP

            step, batch_in_epoch = step + 1, batch_in_epoch + 1
            window_samples += input_ids.shape[0] * env.world_size
            result.losses.append(all_reduce_mean(loss.item(), env))
            log.step(step, result.losses[-1])
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                elapsed = time.perf_counter() - window_start
                samples_per_s = window_samples / elapsed
                stats = {
                    "loss": result.losses[-1],
                    "lr": scheduler.get_last_lr()[0],
                    "logit_scale": model.scale().item(),  # the multiplier (ALIGN: 1 / temperature)
                    "samples_per_s": samples_per_s,
                    "epoch": epoch,
                }
                if flops_per_sample is not None and peak is not None:
                    stats["mfu"] = samples_per_s * flops_per_sample / (peak * 1e12 * env.world_size)
                log.scalars(step, stats)
                window_start, window_samples = time.perf_counter(), 0
            if cfg.save_every and step % cfg.save_every == 0 and env.is_main:
                state = training_state(
                    model=model, optimizer=optimizer, scheduler=scheduler, step=step, epoch=epoch,
                    batch_in_epoch=batch_in_epoch, name=cfg.name, config=resolved,
                )  # fmt: skip
                atomic_save(state, cfg.out_dir / f"step-{step:06d}.pt")
            if step >= cfg.max_steps:
                break
        else:  # the epoch ran out before the step budget
            epoch, batch_in_epoch = epoch + 1, 0

    # --- the end: a resumable checkpoint and the weights-only export ------------------------------------------
    if cfg.recalibrate_batchnorm and teacher is None:  # precise BN on the next epoch's first batches
        loader = make_loader(dataset, collator, cfg, env, epoch + 1, 0)
        images = (batch[0].to(env.device) for batch in itertools.islice(loader, cfg.recalibrate_batchnorm))
        recalibrate_batchnorm(model.visual, images)
    if env.is_main:
        state = training_state(
            model=model, optimizer=optimizer, scheduler=scheduler, step=step, epoch=epoch,
            batch_in_epoch=batch_in_epoch, name=cfg.name, config=resolved,
        )  # fmt: skip
        atomic_save(state, cfg.out_dir / "last.pt")
        result.checkpoint = cfg.out_dir / "last.pt"
        if cfg.export_weights:
            atomic_save(weights_only(state), cfg.out_dir / "checkpoint.pt")
            result.checkpoint = cfg.out_dir / "checkpoint.pt"
        last_loss = f"loss {result.losses[-1]:.4f}; " if result.losses else ""
        log.message(f"step {step}: {last_loss}checkpoint {result.checkpoint}")
        result.evaluation = validate(model, tokenizer, cfg)
        if result.evaluation is not None:
            t2i = result.evaluation["text_to_image"]
            log.scalars(step, {f"valid/text_to_image_{k}": v for k, v in t2i.items()})
            log.message(
                f"{cfg.data.valid_split}: text→image R@1 {t2i['r1']:.1f}, mean recall {t2i['mean_recall']:.1f}"
            )
    log.close()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="a YAML/JSON training config (training/configs/*.yaml)")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, dotted for sections: data.root=DIR"
    )
    args = parser.parse_args(argv)
    train(load_config(args.config, args.overrides))


if __name__ == "__main__":
    main()
