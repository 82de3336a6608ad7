"""Frozen configs of the GroupViT image-text model (the `model` section of params.yaml).

The defaults are the paper configuration (docs/method.md §9); `tiny_model_config()` is the
synthetic world's model. Per-stage values are tuples with one entry per stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ImageEncoderConfig:
    """GroupViT image encoder."""

    img_size: int = 224  # training resolution; other sizes interpolate the position embedding
    patch_size: int = 16
    in_chans: int = 3
    width: int = 384  # token width, the same in every stage
    depths: tuple[int, ...] = (6, 3, 3)  # transformer blocks per stage
    num_heads: tuple[int, ...] = (6, 6, 6)  # attention heads per stage
    num_group_tokens: tuple[int, ...] = (64, 8, 0)  # learnable group tokens per stage (0: none)
    num_output_groups: tuple[int, ...] = (64, 8)  # segments out of each grouping block
    mlp_ratio: float = 4.0  # transformer / channel MLP hidden = mlp_ratio * width
    token_mlp_ratio: float = 0.5  # group-token mixing MLP hidden = token_mlp_ratio * width
    drop_path: float = 0.1  # stochastic depth, linear over all transformer blocks
    gumbel_tau: float = 1.0  # temperature of the straight-through Gumbel-softmax assignment


@dataclass(frozen=True)
class TextEncoderConfig:
    """CLIP-style causal text transformer (features at the end-of-text token)."""

    context_length: int = 77  # tokens per text (the tokenizer pads/truncates to this)
    vocab_size: int = 49408  # CLIP BPE vocabulary (open_clip's SimpleTokenizer)
    width: int = 256
    layers: int = 12
    heads: int = 4
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class ProjectorConfig:
    """Linear -> BatchNorm1d -> ReLU -> Linear, one per tower, into the joint space."""

    hidden_dim: int = 4096
    out_dim: int = 256  # joint embedding width C


@dataclass(frozen=True)
class ModelConfig:
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    temperature: float = 0.07  # both logit scales start at log(1 / temperature)
    max_logit_scale: float = 100.0  # exp(logit_scale) is clamped to this


def paper_model_config() -> ModelConfig:
    """GroupViT as trained by CoCu: 55,726,610 parameters."""
    return ModelConfig()


def tiny_model_config() -> ModelConfig:
    """The synthetic world's model: 64 px images, 8 -> 4 groups, 2-layer width-64 text tower."""
    return ModelConfig(
        image=ImageEncoderConfig(img_size=64, patch_size=8, width=64, depths=(2, 1, 1),
                                 num_heads=(2, 2, 2), num_group_tokens=(8, 4, 0),
                                 num_output_groups=(8, 4), drop_path=0.0),
        text=TextEncoderConfig(context_length=32, width=64, layers=2, heads=2),
        projector=ProjectorConfig(hidden_dim=256, out_dim=64),
    )
