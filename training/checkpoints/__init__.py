"""Checkpoint formats: official Chinese-CLIP, Tuwen training, Hugging Face ChineseCLIPModel / AltCLIPModel / AlignModel, plain state dicts."""

from training.checkpoints.detect import detect_arch
from training.checkpoints.hf_align import (
    from_hf_align_state_dict,
    hf_align_config_dict,
    save_align_hf_directory,
    to_hf_align_state_dict,
)
from training.checkpoints.hf_altclip import (
    from_hf_altclip_state_dict,
    hf_altclip_config_dict,
    save_altclip_hf_directory,
    to_hf_altclip_state_dict,
)
from training.checkpoints.hf_directory import read_hf_directory, save_hf_directory
from training.checkpoints.hf_mapping import from_hf_state_dict, hf_config_dict, to_hf_state_dict
from training.checkpoints.loading import LoadedModel, load_checkpoint, save_checkpoint
from training.checkpoints.pretrained import load_hf_bert, load_openai_visual
from training.checkpoints.state_dicts import CheckpointError

__all__ = [
    "CheckpointError",
    "LoadedModel",
    "detect_arch",
    "from_hf_align_state_dict",
    "from_hf_altclip_state_dict",
    "from_hf_state_dict",
    "hf_align_config_dict",
    "hf_altclip_config_dict",
    "hf_config_dict",
    "load_checkpoint",
    "load_hf_bert",
    "load_openai_visual",
    "read_hf_directory",
    "save_align_hf_directory",
    "save_altclip_hf_directory",
    "save_checkpoint",
    "save_hf_directory",
    "to_hf_align_state_dict",
    "to_hf_altclip_state_dict",
    "to_hf_state_dict",
]
