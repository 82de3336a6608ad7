"""CLIP models through open_clip: a tiny CLIP for the synthetic world, or a pretrained architecture
with weights from a local file. Never a hub download: no pretrained tag is ever passed to open_clip.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # defensive: nothing here may reach the network

import open_clip  # noqa: E402
import torch  # noqa: E402
from open_clip.model import CLIPTextCfg, CLIPVisionCfg  # noqa: E402

from cocu.config import ClipConfig  # noqa: E402
from cocu.tracking.run_info import sha256_file  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

WEIGHTS_KEY = "paths.clip_weights"  # the params key that names the weights file
Transform = Callable[[Any], torch.Tensor]  # PIL image -> [3, S, S] float tensor


class ChecksumError(ValueError):
    """The weights file's sha256 differs from `clip.expected_sha256`."""


def tiny_model_cfg(cfg: ClipConfig) -> dict[str, Any]:
    """The open_clip model config dict (same shape as open_clip's model_configs/*.json)."""
    return {
        "embed_dim": cfg.embed_dim,
        "vision_cfg": {
            "image_size": cfg.image_size,
            "layers": cfg.vision_layers,
            "width": cfg.vision_width,
            "head_width": cfg.vision_head_width,
            "patch_size": cfg.patch_size,
            "pool_type": cfg.vision_pool,
        },
        "text_cfg": {
            "context_length": cfg.context_length,
            "width": cfg.text_width,
            "heads": max(1, cfg.text_width // cfg.text_head_width),
            "layers": cfg.text_layers,
        },
    }


def build_tiny_clip(cfg: ClipConfig) -> open_clip.CLIP:
    """A randomly initialised tiny open_clip CLIP (seed torch before calling for determinism)."""
    mc = tiny_model_cfg(cfg)
    model = open_clip.CLIP(
        embed_dim=mc["embed_dim"], vision_cfg=CLIPVisionCfg(**mc["vision_cfg"]), text_cfg=CLIPTextCfg(**mc["text_cfg"])
    )
    pp = {
        "size": cfg.image_size,
        "mode": "RGB",
        "mean": open_clip.OPENAI_DATASET_MEAN,
        "std": open_clip.OPENAI_DATASET_STD,
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "fill_color": 0,
    }
    open_clip.set_model_preprocess_cfg(model, pp)
    return model


def check_weights_file(weights_path: Optional[Path], expected_sha256: Optional[str], key: str = WEIGHTS_KEY) -> str:
    """sha256 of the weights file; FileNotFoundError naming the path and params key if absent."""
    if weights_path is None:
        raise FileNotFoundError(f"no CLIP weights file given: set {key} in params.yaml")
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"CLIP weights file not found: {path} (params key {key}); "
            "put the file there (it is never downloaded)"
        )
    digest = sha256_file(path)
    if expected_sha256 and digest != expected_sha256.lower():
        raise ChecksumError(f"{path}: sha256 {digest} != expected {expected_sha256} (clip.expected_sha256)")
    return digest


def load_clip(
    cfg: ClipConfig, weights_path: Optional[Path]
) -> tuple[torch.nn.Module, Transform, Transform, Callable[..., torch.Tensor], Optional[str]]:
    """(model in eval mode, preprocess_train, preprocess_val, tokenizer, sha256 of the weights).

    synthetic: a tiny CLIP; `weights_path` None gives a random init (sha256 None), otherwise the
    file's state_dict is loaded strictly. pretrained: `cfg.arch` with weights from the local file
    (a torch.save state_dict or .safetensors); a missing file is a FileNotFoundError.
    """
    if cfg.source == "synthetic":
        digest = None
        model = build_tiny_clip(cfg)
        if weights_path is not None:
            digest = check_weights_file(weights_path, cfg.expected_sha256)
            open_clip.load_checkpoint(model, str(weights_path), strict=True)
            log.info("loaded tiny CLIP weights %s (sha256 %s)", weights_path, digest)
        tokenizer = open_clip.SimpleTokenizer(context_length=cfg.context_length)
    else:
        if ":" in cfg.arch:  # 'hf-hub:' / 'local-dir:' schemas fetch configs; not allowed here
            raise ValueError(f"clip.arch must be a built-in open_clip architecture name, got {cfg.arch!r}")
        digest = check_weights_file(weights_path, cfg.expected_sha256)
        # an absolute path is never mistaken for a pretrained tag (tags have no '/')
        model = open_clip.create_model(cfg.arch, pretrained=str(Path(weights_path).resolve()), require_pretrained=True)
        tokenizer = open_clip.get_tokenizer(cfg.arch)
        log.info("loaded %s weights %s (sha256 %s)", cfg.arch, weights_path, digest)
    pp = open_clip.get_model_preprocess_cfg(model)
    preprocess_train = open_clip.image_transform(pp["size"], is_train=True, mean=pp["mean"], std=pp["std"])
    preprocess_val = open_clip.image_transform(
        pp["size"], is_train=False, mean=pp["mean"], std=pp["std"],
        resize_mode=pp.get("resize_mode"), interpolation=pp.get("interpolation"),
    )
    model.eval()
    return model, preprocess_train, preprocess_val, tokenizer, digest


def image_norm(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the model's image normalisation."""
    pp = open_clip.get_model_preprocess_cfg(model)
    return tuple(pp["mean"]), tuple(pp["std"])


def save_weights(model: torch.nn.Module, path: Path) -> str:
    """torch.save(state_dict) atomically (temp file + rename); returns the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)
    return sha256_file(path)
