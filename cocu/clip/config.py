"""Typed configs of the CLIP part: the model (`clip:`), the teacher stage (`teacher:`) and the
embed stage (`embed:`).

The weights file itself is a path, so it lives in `paths.clip_weights` (synthetic profile: written
by the `teacher` stage; paper profile: a DVC-tracked local file, never a hub download).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional


@dataclass(frozen=True)
class ClipConfig:
    """Which CLIP: a tiny open_clip CLIP built from the fields below (synthetic), or an open_clip
    architecture with weights from a local file (pretrained). Tower fields are ignored for
    `pretrained`, where the architecture fixes them."""

    source: Literal["synthetic", "pretrained"]
    arch: str = "ViT-B-16"  # open_clip architecture name (pretrained only); never a hub tag
    weights_file: Optional[str] = None  # pretrained: the local weights file (never downloaded); the
    # teacher stage checks it and imports it into paths.clip_weights (DVC-tracked from then on)
    expected_sha256: Optional[str] = None  # checksum of the weights file; mismatch is an error
    image_size: int = 64  # input pixels, square (synthetic)
    embed_dim: int = 64  # shared embedding width (synthetic); defaults = the measured teacher choice
    vision_width: int = 96
    vision_layers: int = 3
    vision_head_width: int = 32  # heads = width // head_width (open_clip convention)
    patch_size: int = 8
    vision_pool: Literal["tok", "avg"] = "tok"  # image feature: class token or mean of patch tokens
    text_width: int = 64
    text_layers: int = 2
    text_head_width: int = 32
    context_length: int = 32  # BPE tokens per caption, incl. start/end (synthetic)


@dataclass(frozen=True)
class TeacherConfig:
    """Contrastive training of the tiny CLIP on the teacher corpus (synthetic profile only)."""

    epochs: int
    batch_size: int
    lr: float  # peak AdamW learning rate
    weight_decay: float = 0.1  # applied to matrices only (not gains, biases, logit scale)
    warmup_steps: int = 50  # linear warm-up, then cosine to 0
    beta2: float = 0.98
    crop_scale_min: float = 0.7  # random resized crop: area fraction range [min, 1]
    crop_ratio_max: float = 1.25  # aspect ratio range [1/max, max]
    hflip: float = 0.5  # probability of a horizontal flip
    color_jitter: float = 0.0  # brightness/contrast/saturation strength; colour is class identity
    holdout_fraction: float = 0.05  # last fraction of the corpus, for retrieval accuracy
    eval_batch_size: int = 256  # held-out retrieval is measured within chunks of this size
    seed: int = 0
    threads: int = 2  # torch.set_num_threads during training (0: leave as is)
    log_every: int = 100  # steps between loss log lines


@dataclass(frozen=True)
class EmbedConfig:
    """Image, caption and concept embeddings of the pairs."""

    batch_size: int = 256
    device: Literal["auto", "cpu", "cuda"] = "auto"  # resolved by cocu/launch
    prompt: str = "a photo of a {}"  # concept prompt template; no trailing period (method §1)
    autocast: bool = True  # fp16 autocast on CUDA (no-op on CPU)
    workers: int = 0  # data workers decoding shards in each embed task (0: in the task's process)
