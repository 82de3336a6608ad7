"""GroupViT zero-shot segmentation (docs/protocol.md §3-4), written from the paper's protocol.

Model contract (cocu.models): `model.encode_image_groups(image [B, 3, H, W])` returns a dict with
`group_features [B, G, C]` and `image_features [B, C]` (unit norm) and `assignment [B, G, h, w]`
(soft assignment of the h x w patch grid to the G final groups, summing to 1 over G);
`model.encode_text(tokens [K, T]) -> [K, C]` (unit norm). The logit scale `s` is passed explicitly
(GroupViT uses min(exp(logit_scale), 100)).

Per crop: each pixel takes the argmax group of the bilinearly upsampled assignment; the group's
class probabilities P (top-k masked, see `group_class_probs`) are its logits; with a background,
a 0/1 background logit is added (`background_logits`). Crops are averaged over the sliding
window, resized back to the image and arg-maxed. Channel 0 is the background when the card has
one, so the prediction indexes the benchmark's label ids directly.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cocu.config import IMAGENET_MEAN, IMAGENET_STD, ProtocolCard

TOP_K = 5  # classes kept per image by the image-level masking (GroupViT)


def class_embeddings(encode_text: Callable[[Tensor], Tensor], tokenize: Callable[[list[str]], Tensor],
                     class_names: Sequence[str], templates: Sequence[str],
                     device: Optional[torch.device] = None, batch_size: int = 1024) -> Tensor:
    """[K, C] unit-norm class embeddings: the normalised mean over templates of the normalised
    embeddings of `template.format(name)`."""
    prompts = [t.format(name) for name in class_names for t in templates]  # K * T, class-major
    chunks = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            tokens = tokenize(prompts[i:i + batch_size])  # [b, L]
            if device is not None:
                tokens = tokens.to(device)
            chunks.append(F.normalize(encode_text(tokens).float(), dim=-1))  # [b, C]
    emb = torch.cat(chunks).reshape(len(class_names), len(templates), -1)  # [K, T, C]
    return F.normalize(emb.mean(dim=1), dim=-1)


# --------------------------------------------------------------------------------------------
# geometry


def capped_size(h: int, w: int, cap: Optional[int]) -> tuple[int, int]:
    """mmseg's ImageNet-S rule: an image with more than cap^2 pixels gets a long side of `cap`."""
    if cap is None or h * w <= cap * cap:
        return h, w
    return (cap, int(cap * w / h)) if h > w else (int(cap * h / w), cap)


def rescale_size(h: int, w: int, resize: Optional[int], max_long_side: Optional[int]) -> tuple[int, int]:
    """Short side to `resize` keeping the aspect ratio, the long side at most `max_long_side`
    (mmcv.imrescale with img_scale=(max_long_side, resize)); None: unchanged."""
    if resize is None:
        return h, w
    factor = resize / min(h, w)
    if max_long_side is not None:
        factor = min(factor, max_long_side / max(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def preprocess(image: np.ndarray, size: tuple[int, int], mean: Sequence[float], std: Sequence[float],
               device: torch.device) -> Tensor:
    """uint8 [H, W, 3] -> normalised float [1, 3, h, w], bilinearly resized (no antialias, as cv2)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float() / 255.0
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def slide_inference(infer_crop: Callable[[Tensor], Tensor], image: Tensor, crop: int, stride: int,
                    num_classes: int) -> Tensor:
    """Average `infer_crop` logits over a sliding window (mmseg's slide mode): [1, K, H, W].

    `infer_crop` maps [1, 3, h, w] to [1, K, h, w]. Windows are `crop` x `crop`, moved by `stride`;
    the last window of a row/column is shifted back to end at the border. A side shorter than
    `crop` gets a single window of its own length (no padding), so the model sees the image as is.
    """
    _, _, H, W = image.shape
    h_crop, w_crop = min(crop, H), min(crop, W)
    h_grids = max(H - h_crop + stride - 1, 0) // stride + 1
    w_grids = max(W - w_crop + stride - 1, 0) // stride + 1
    logits = image.new_zeros((1, num_classes, H, W), dtype=torch.float32)
    count = image.new_zeros((1, 1, H, W), dtype=torch.float32)
    for i in range(h_grids):
        for j in range(w_grids):
            y2, x2 = min(i * stride + h_crop, H), min(j * stride + w_crop, W)
            y1, x1 = y2 - h_crop, x2 - w_crop
            out = infer_crop(image[:, :, y1:y2, x1:x2])
            if tuple(out.shape) != (1, num_classes, y2 - y1, x2 - x1):
                raise ValueError(f"infer_crop returned {tuple(out.shape)} for a crop of {(y2 - y1, x2 - x1)} "
                                 f"(expected [1, {num_classes}, h, w])")
            logits[:, :, y1:y2, x1:x2] += out.float()
            count[:, :, y1:y2, x1:x2] += 1
    return logits / count


def resize_argmax(logits: Tensor, size: tuple[int, int], chunk: int = 64) -> Tensor:
    """argmax over K of the bilinearly resized logits [1, K, h, w] -> [H, W] long, resizing `chunk`
    channels at a time so that K x H x W is never held at once (ties: lowest class id)."""
    best_val: Optional[Tensor] = None
    best_idx: Optional[Tensor] = None
    for c0 in range(0, logits.shape[1], chunk):
        part = logits[:, c0:c0 + chunk]
        if tuple(part.shape[-2:]) != tuple(size):
            part = F.interpolate(part, size=size, mode="bilinear", align_corners=False)
        val, idx = part[0].max(dim=0)  # [H, W] each
        if best_val is None:
            best_val, best_idx = val, idx + c0
        else:
            better = val > best_val
            best_val = torch.where(better, val, best_val)
            best_idx = torch.where(better, idx + c0, best_idx)
    assert best_idx is not None, "logits have no channels"
    return best_idx


# --------------------------------------------------------------------------------------------
# GroupViT's per-crop rule


def group_class_probs(group_features: Tensor, image_features: Tensor, text_emb: Tensor, scale: float,
                      top_k: int = TOP_K) -> Tensor:
    """P [G, K]: per-group class probabilities with image-level top-k class masking.

    G = s e_g.t_k; P_pre = softmax_k(G); keep the top-min(k, K) classes of softmax_k(s e.t_k)
    (image level), -inf for the others; P = softmax_k(G_masked) * P_pre. A masked class has P = 0.
    Args:
        group_features: [G, C] unit norm; image_features: [C] unit norm; text_emb: [K, C] unit norm.
    """
    group_logits = scale * group_features @ text_emb.T  # [G, K]
    pre = group_logits.softmax(dim=-1)  # [G, K]
    image_probs = (scale * image_features @ text_emb.T).softmax(dim=-1)  # [K]
    keep = torch.zeros_like(image_probs, dtype=torch.bool)
    keep[image_probs.topk(min(top_k, text_emb.shape[0])).indices] = True
    masked = group_logits.masked_fill(~keep, float("-inf")).softmax(dim=-1)  # [G, K]
    return masked * pre


def background_logits(probs: Tensor, bg_thresh: float) -> Tensor:
    """[G] 0/1 background logit per group: 1 where max_k P[g, k] < min(bg_thresh, max P), else 0.

    Every pixel of a group shares the group's logits, so this is GroupViT's per-pixel rule
    `max_k logit(pixel) < min(bg_thresh, max P)` evaluated once per group. The group holding the
    largest probability is therefore never background, and since P <= 1, a background logit of 1
    wins the argmax wherever it is set.
    """
    row_max = probs.max(dim=-1).values  # [G]
    threshold = min(float(bg_thresh), float(probs.max()))
    return (row_max < threshold).to(probs.dtype)


def pixel_groups(assignment: Tensor, size: tuple[int, int]) -> Tensor:
    """[H, W] long: each pixel's group, the argmax of the soft assignment [G, h, w] resized
    bilinearly to `size`."""
    up = F.interpolate(assignment[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    return up.argmax(dim=0)  # [H, W], from the upsampled [G, H, W]


def group_logits(probs: Tensor, bg_thresh: Optional[float]) -> Tensor:
    """[G, K(+1)] logits of each group from its probs P [G, K]; with `bg_thresh`, column 0 is the
    background logit (`background_logits`). Every pixel of a group takes its group's row."""
    if bg_thresh is None:
        return probs
    return torch.cat([background_logits(probs, bg_thresh)[:, None], probs], dim=1)


def pixel_logits(assignment: Tensor, probs: Tensor, size: tuple[int, int],
                 bg_thresh: Optional[float]) -> Tensor:
    """[K(+1), H, W] logits of one crop from the soft assignment [G, h, w] and probs P [G, K].

    The assignment is resized bilinearly to `size`; each pixel takes its argmax group (hard) and
    the logits of that group. With `bg_thresh`, channel 0 is the background logit.
    """
    return group_logits(probs, bg_thresh)[pixel_groups(assignment, size)].permute(2, 0, 1)  # [K(+1), H, W]


def groupvit_crop_logits(model: object, crop: Tensor, text_emb: Tensor, scale: float,
                         card: ProtocolCard) -> Tensor:
    """[1, K(+1), h, w] logits of one crop [1, 3, h, w] (channel 0 = background if the card has one)."""
    out: Mapping[str, Tensor] = model.encode_image_groups(crop)  # type: ignore[attr-defined]
    missing = {"group_features", "image_features", "assignment"} - set(out)
    if missing:
        raise KeyError(f"model.encode_image_groups did not return {sorted(missing)}")
    probs = group_class_probs(out["group_features"][0].float(), out["image_features"][0].float(),
                              text_emb.float(), scale)  # [G, K]
    bg = card.bg_thresh if card.has_background else None
    return pixel_logits(out["assignment"][0], probs, tuple(crop.shape[-2:]), bg)[None]


def segment(model: object, image: np.ndarray, text_emb: Tensor, card: ProtocolCard, *, scale: float,
            mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """Predicted label ids [H, W] (int64) for one uint8 image [H, W, 3], under the card's protocol.

    Runs on `text_emb.device`; the caller puts the model in eval mode. `text_emb` [K, C] holds the
    foreground classes only; with a background the prediction has K + 1 ids (0 = background).
    """
    H, W = image.shape[:2]
    device = text_emb.device
    h0, w0 = capped_size(H, W, card.long_side_cap)  # ImageNet-S: large images shrunk first
    h1, w1 = rescale_size(h0, w0, card.resize, card.max_long_side)
    num_classes = text_emb.shape[0] + int(card.has_background)
    with torch.inference_mode():
        x = preprocess(image, (h0, w0), mean, std, device)
        if (h1, w1) != (h0, w0):
            x = F.interpolate(x, size=(h1, w1), mode="bilinear", align_corners=False)
        logits = slide_inference(lambda c: groupvit_crop_logits(model, c, text_emb, scale, card),
                                 x, card.crop, card.stride, num_classes)  # [1, K', h1, w1]
        pred = resize_argmax(logits, (h0, w0))  # [h0, w0]
        if (h0, w0) != (H, W):  # back to the label's size, nearest (mmseg's ImageNet-S pre_eval)
            pred = F.interpolate(pred[None, None].float(), size=(H, W), mode="nearest")[0, 0].long()
    return pred.cpu().numpy()
