"""GroupViT's losses (docs/method.md §8), shaped like open_clip's ClipLoss.

Each rank scores its own rows against the columns of the global batch (features gathered from all
ranks, differentiably, only when world_size > 1). The returned loss is the mean over this rank's
rows; its mean over ranks is the global-batch loss, and with DDP's gradient averaging the
gradients equal those of one process on the concatenated batch (see `gather_with_grad`).

Shapes: B local images, W world size, K prompts per image, C joint width.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cocu.launch.distributed import gather_with_grad


class ContrastiveLoss(nn.Module):
    """L_itc = 0.5 [CE(s z_I Z_T^T, own) + CE(s z_T Z_I^T, own)] over the global batch."""

    def __init__(self, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.rank, self.world_size = rank, world_size

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor) -> Tensor:
        """image_features [B, C], text_features [B, C] (unit-norm), logit_scale [] -> loss []."""
        b = image_features.shape[0]
        all_images = gather_with_grad(image_features, self.world_size)  # [W*B, C]
        all_texts = gather_with_grad(text_features, self.world_size)
        labels = torch.arange(b, device=image_features.device) + self.rank * b
        logits_image = logit_scale * image_features @ all_texts.T  # [B, W*B]
        logits_text = logit_scale * text_features @ all_images.T  # [B, W*B]
        return 0.5 * (F.cross_entropy(logits_image, labels) + F.cross_entropy(logits_text, labels))


class MultiLabelContrastiveLoss(nn.Module):
    """L_mlc = 0.5 [SoftCE(s' z_I {z_T^k}^T, 1/K on own K prompts) + CE(s' z_T^k Z_I^T, own image)].

    The image side scores each image against all W*B*K prompts of the global batch; the prompt
    side scores each of the B*K local prompts against all W*B images.
    """

    def __init__(self, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.rank, self.world_size = rank, world_size

    def forward(self, image_features: Tensor, prompt_features: Tensor, logit_scale: Tensor) -> Tensor:
        """image_features [B, C] or segment features [B, G, C], prompt_features [B, K, C] (unit-norm),
        logit_scale [] -> loss []. With segments, an image scores a prompt by its best segment."""
        b, k, c = prompt_features.shape
        all_images = gather_with_grad(image_features, self.world_size)  # [W*B, C] or [W*B, G, C]
        all_prompts = gather_with_grad(prompt_features, self.world_size).reshape(-1, c)  # [W*B*K, C]
        own = torch.arange(b, device=image_features.device) + self.rank * b  # global image index
        # image -> prompts: target 1/K on the K columns (own*K + j)
        logits_image = logit_scale * _scores(image_features, all_prompts)  # [B, W*B*K]
        target = torch.zeros_like(logits_image)
        cols = own[:, None] * k + torch.arange(k, device=own.device)  # [B, K]
        target.scatter_(1, cols, 1.0 / k)
        loss_image = -(target * logits_image.log_softmax(dim=-1)).sum(dim=-1).mean()
        # prompt -> images: target the prompt's own image
        logits_prompt = logit_scale * _scores(all_images, prompt_features.reshape(-1, c)).T  # [B*K, W*B]
        loss_prompt = F.cross_entropy(logits_prompt, own.repeat_interleave(k))
        return 0.5 * (loss_image + loss_prompt)


def _scores(images: Tensor, texts: Tensor) -> Tensor:
    """images [N, C] or [N, G, C], texts [M, C] -> [N, M]: cosine, or the best segment's cosine."""
    if images.dim() == 2:
        return images @ texts.T
    return (images @ texts.T).amax(dim=1)  # [N, G, M] -> [N, M]


class GroupViTLoss(nn.Module):
    """L = L_itc + mlc_weight * L_mlc on a `ContrastiveModel` output dict (fp32 features); with
    `group_features` in the outputs (prompt_pool: max) L_mlc scores images by their best segment.

    Returns dict(loss, itc, mlc); without `prompt_features` in the outputs, mlc is 0.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, mlc_weight: float = 1.0) -> None:
        super().__init__()
        self.itc = ContrastiveLoss(rank, world_size)
        self.mlc = MultiLabelContrastiveLoss(rank, world_size)
        self.mlc_weight = mlc_weight

    def forward(self, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        image = outputs["image_features"].float()
        itc = self.itc(image, outputs["text_features"].float(), outputs["logit_scale"].float())
        prompts: Optional[Tensor] = outputs.get("prompt_features")
        if prompts is None or self.mlc_weight == 0:
            mlc = itc.new_zeros(())
        else:
            groups: Optional[Tensor] = outputs.get("group_features")  # prompt_pool: max
            scored = image if groups is None else groups.float()
            mlc = self.mlc(scored, prompts.float(), outputs["multi_label_logit_scale"].float())
        return {"loss": itc + self.mlc_weight * mlc, "itc": itc, "mlc": mlc}
