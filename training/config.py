"""The training configuration: one pydantic model, read from YAML/JSON, with `key=value` overrides.

A stage of the two-stage recipe is a config file, not a code path: stage 1 sets `freeze_image_tower: true`
and initialises from pretrained towers; stage 2 initialises from the stage-1 checkpoint with everything
trainable and a fresh optimizer and schedule. The other families' recipes are configs too: `loss` picks
InfoNCE (Chinese-CLIP, AltCLIP's contrastive stage), ALIGN's smoothed softmax, or AltCLIP's teacher learning;
the model family comes from `arch`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    format: Literal["cnclip-tsv", "cnclip-lmdb", "jsonl", "parallel-jsonl"] = Field(
        "cnclip-tsv",
        description="cnclip-tsv: {split}_imgs.tsv + {split}_texts.jsonl under `root`; cnclip-lmdb: "
        "root/lmdb/{split}/{imgs,pairs} (or root/{split}); jsonl: root/{split}.jsonl of "
        '{"image": path, "text": ...} with image paths relative to that file; parallel-jsonl (teacher '
        'learning, no images): root/{split}_parallel.jsonl of {"teacher": text, "student": its translation}',
    )
    root: Path = Field(Path("data"), description="dataset directory")
    train_split: str = "train"
    valid_split: str | None = Field("valid", description="split evaluated after training; null to skip")
    on_error: Literal["skip", "fail"] = Field(
        "fail", description="a broken image or a missing image id: skip it (with a warning) or stop"
    )
    num_workers: int = Field(2, description="DataLoader worker processes (0 = load in the main process)")


class InitConfig(_Strict):
    checkpoint: Path | None = Field(
        None, description="a Chinese-CLIP / Tuwen / HF checkpoint to start from (fine-tuning, stage 2)"
    )
    openai_visual: Path | None = Field(
        None, description="an OpenAI-CLIP-format checkpoint for the image tower"
    )
    hf_bert: Path | None = Field(
        None, description="a Hugging Face Chinese (Ro)BERTa directory for the text tower"
    )
    teacher: Path | None = Field(
        None,
        description="AltCLIP teacher learning: a Chinese-CLIP/CLIP checkpoint whose frozen text tower is the "
        "teacher; unless init.checkpoint is set, its image tower and text projection also initialise the model",
    )


class TrainConfig(_Strict):
    name: str = Field("run", description="run name, stored in checkpoints")
    out_dir: Path = Field(Path("runs/run"), description="checkpoints, logs and TensorBoard events go here")
    seed: int = 0
    arch: str = Field("tiny-vit", description="a name from training.models.list_models()")
    init: InitConfig = InitConfig()
    data: DataConfig = DataConfig()
    loss: Literal["infonce", "align", "teacher-mse"] = Field(
        "infonce",
        description="infonce: symmetric InfoNCE, cosine × exp(logit_scale) (Chinese-CLIP, AltCLIP stage 2); "
        "align: ALIGN's cosine / temperature with label smoothing 0.1; teacher-mse: AltCLIP teacher learning "
        "on parallel text (MSE to the frozen teacher's pooled text feature)",
    )
    tokenizer: Path | None = Field(
        None,
        description="the text tower's tokenizer: AltCLIP's SentencePiece .model or ALIGN's vocab.txt (the "
        "files `tuwen export` reads), or a tokenizer.json; Chinese-CLIP: a vocab.txt, null = the shipped vocab",
    )

    text_dropout: float | None = Field(
        None,
        description="override the text tower's dropout (hidden and attention); null keeps the architecture's "
        "0.1. Tiny from-scratch runs need 0: dropout noise lets them settle on constant features",
    )
    freeze_image_tower: bool = Field(False, description="stage 1: image tower frozen and kept in eval mode")
    image_batchnorm: Literal["train", "frozen"] = Field(
        "train",
        description="BatchNorm in a trained image tower: train = running statistics updated (EfficientNet's "
        "TF-style momentum 0.99 converted to PyTorch's 0.01); frozen = statistics fixed (eval mode)",
    )
    recalibrate_batchnorm: int = Field(
        0,
        description="after the last step, re-estimate the image tower's BatchNorm statistics over this many "
        "training batches with the final weights (0 = off). Short from-scratch runs need it: momentum 0.01 "
        "averages ~100 steps of weights that training has since moved",
    )
    batch_size: int = Field(64, description="per rank; the contrastive batch is batch_size × world size")
    max_steps: int = Field(1000, description="optimizer steps in this run (the schedule spans them)")
    lr: float = 5e-4
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 500
    grad_clip: float | None = Field(None, description="clip the global gradient norm to this, if set")
    gather_with_grad: bool = Field(False, description="all-gather features with gradients (else local only)")

    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto = bf16 autocast on CUDA")
    grad_checkpointing: bool = False
    compile: bool = Field(False, description="torch.compile the model")
    cpu_threads: int | None = Field(
        None, description="torch CPU threads (null = torch's default); 1 makes CPU runs bit-reproducible"
    )
    peak_tflops: float | None = Field(None, description="device peak for the MFU figure; auto on known GPUs")

    log_every: int = 10
    save_every: int = Field(0, description="save a resumable checkpoint every N steps (0 = only at the end)")
    resume: Path | None = Field(None, description="a checkpoint of this run to continue exactly")
    export_weights: bool = Field(
        True, description="also write checkpoint.pt without the optimizer at the end"
    )
    progress: bool = Field(True, description="show a progress bar on rank 0")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) exceeds max_steps ({self.max_steps})")
        teacher_learning = self.loss == "teacher-mse"
        if teacher_learning != (self.data.format == "parallel-jsonl"):
            raise ValueError(
                f"loss {self.loss} with data.format {self.data.format}: teacher-mse trains on parallel text "
                "(data.format: parallel-jsonl) and the contrastive losses on image-text pairs"
            )
        if self.recalibrate_batchnorm and (self.freeze_image_tower or self.image_batchnorm == "frozen"):
            raise ValueError(
                "recalibrate_batchnorm re-estimates a trained image tower's BatchNorm statistics; with "
                "freeze_image_tower or image_batchnorm: frozen they must stay fixed: set it to 0"
            )
        if teacher_learning and self.init.teacher is None:
            raise ValueError(
                "loss teacher-mse needs init.teacher: the Chinese-CLIP/CLIP checkpoint that teaches"
            )
        return self


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {dotted!r}: {key!r} is not a section")
    node[keys[-1]] = value


def load_config(path: Path | str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML/JSON config and apply `key=value` overrides (dotted keys for sections, YAML values)."""
    tree: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        tree = yaml.safe_load(text) or {}  # JSON is YAML
        if not isinstance(tree, dict):
            raise ValueError(f"{path}: a training config must be a mapping of settings")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(
                f"override {item!r} is not of the form key=value (e.g. lr=1e-4, data.root=/data)"
            )
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    return TrainConfig.model_validate(tree)
