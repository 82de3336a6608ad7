"""The `embed` stage library: unit-norm CLIP embeddings of every pair and of the vocabulary.

Image and caption embeddings are float16 `.npy` files, row i = manifest row i, written through a
memory map (bounded memory) to a temp file renamed at the end. The samples must arrive in
manifest order; a manifest key that the shards do not yield (a corrupt or missing sample) is an
error naming the key, never a silent shift of rows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from cocu.config import ClipConfig, EmbedConfig
from cocu.clip.model import load_clip
from cocu.clip.teacher import SampleLike

log = logging.getLogger(__name__)


class ManifestMismatch(RuntimeError):
    """The shards do not yield exactly the manifest's keys in the manifest's order."""


@dataclass(frozen=True)
class EmbedStats:
    rows: int
    dim: int
    image_path: Path
    text_path: Path
    duplicates: int = 0  # repeated keys in the shards, skipped like the manifest skipped them


def read_manifest_keys(manifest: Path) -> list[str]:
    """The `key` column of the manifest parquet, in row order."""
    import pyarrow.parquet as pq

    return [str(k) for k in pq.read_table(manifest, columns=["key"]).column("key").to_pylist()]


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _unit_f16(x: torch.Tensor) -> np.ndarray:
    """[B, D] -> unit-norm float16 numpy (normalised in float32)."""
    x = x.float()
    return (x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy().astype(np.float16)


def _aligned_batches(
    samples: Iterable[SampleLike], keys: Sequence[str], batch_size: int, dropped: list[str]
) -> Iterator[tuple[int, list[SampleLike]]]:
    """(first row, batch) in manifest order; raises ManifestMismatch on any key out of place.

    A repeated key that the manifest already consumed (the manifest keeps the first copy, as
    `cocu.data.manifest.index_shards` does) is skipped and appended to `dropped`.
    """
    batch: list[SampleLike] = []
    row = 0
    position: dict[str, int] | None = None  # key -> manifest row, built only on a mismatch
    for s in samples:
        if row < len(keys) and s.key == keys[row]:
            batch.append(s)
            row += 1
            if len(batch) == batch_size:
                yield row - len(batch), batch
                batch = []
            continue
        if position is None:
            position = {k: i for i, k in enumerate(keys)}
        at = position.get(s.key)
        if at is not None and at < row:
            dropped.append(s.key)
            continue
        if row >= len(keys):
            raise ManifestMismatch(f"shards yield key {s.key!r} beyond the manifest's {len(keys)} rows")
        where = "missing from the shards (corrupt or absent)" if at is not None else "out of order"
        raise ManifestMismatch(
            f"manifest row {row} key {keys[row]!r} is {where}: the shards yield {s.key!r} in its place"
        )
    if batch:
        yield row - len(batch), batch
    if row < len(keys):
        raise ManifestMismatch(f"manifest row {row} key {keys[row]!r} is missing from the shards (they ended)")


def embed_pairs(
    model: torch.nn.Module,
    preprocess: Callable[[Any], torch.Tensor],  # open_clip's val transform: PIL -> [3, S, S]
    tokenizer: Callable[[list[str]], torch.Tensor],
    samples: Iterable[SampleLike],  # e.g. cocu.data.shards.iter_samples(shards), in manifest order
    keys: Sequence[str],  # manifest keys in row order
    image_out: Path,
    text_out: Path,
    batch_size: int,
    device: torch.device,
    autocast: bool = True,
) -> EmbedStats:
    """Write [N, D] unit-norm float16 image and caption embeddings, row i = manifest row i."""
    image_out, text_out = Path(image_out), Path(text_out)
    model = model.to(device).eval()
    dim = _embed_dim(model, preprocess, tokenizer, device)
    dropped: list[str] = []
    tmp_img, tmp_txt = (p.with_name(p.name + ".tmp.npy") for p in (image_out, text_out))
    for p in (tmp_img, tmp_txt):
        p.parent.mkdir(parents=True, exist_ok=True)
    img_mm = np.lib.format.open_memmap(tmp_img, mode="w+", dtype=np.float16, shape=(len(keys), dim))
    txt_mm = np.lib.format.open_memmap(tmp_txt, mode="w+", dtype=np.float16, shape=(len(keys), dim))
    try:
        with torch.inference_mode(), _autocast(device, autocast), \
                tqdm(total=len(keys), desc="embed", unit="pair", mininterval=2.0) as bar:
            for lo, batch in _aligned_batches(samples, keys, batch_size, dropped):
                images = torch.stack([preprocess(s.image) for s in batch]).to(device)  # [B, 3, S, S]
                tokens = tokenizer([s.caption for s in batch]).to(device)  # [B, C]
                img_mm[lo : lo + len(batch)] = _unit_f16(model.encode_image(images))
                txt_mm[lo : lo + len(batch)] = _unit_f16(model.encode_text(tokens))
                bar.update(len(batch))
    except BaseException:
        del img_mm, txt_mm
        tmp_img.unlink(missing_ok=True)
        tmp_txt.unlink(missing_ok=True)
        raise
    img_mm.flush()
    txt_mm.flush()
    del img_mm, txt_mm
    os.replace(tmp_img, image_out)
    os.replace(tmp_txt, text_out)
    if dropped:
        log.warning("skipped %d repeated keys already embedded (first: %r)", len(dropped), dropped[0])
    log.info("embedded %d pairs (D=%d) -> %s, %s", len(keys), dim, image_out, text_out)
    return EmbedStats(rows=len(keys), dim=dim, image_path=image_out, text_path=text_out, duplicates=len(dropped))


def _embed_dim(model: torch.nn.Module, preprocess: Callable, tokenizer: Callable, device: torch.device) -> int:
    with torch.inference_mode():
        return int(model.encode_text(tokenizer(["a"]).to(device)).shape[-1])


@torch.inference_mode()
def embed_texts(
    model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    texts: Sequence[str],
    batch_size: int,
    device: torch.device,
    autocast: bool = True,
) -> np.ndarray:
    """[K, D] unit-norm float16 text embeddings."""
    model = model.to(device).eval()
    out = []
    with _autocast(device, autocast):
        for lo in range(0, len(texts), batch_size):
            out.append(_unit_f16(model.encode_text(tokenizer(list(texts[lo : lo + batch_size])).to(device))))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float16)


def embed_concepts(
    model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    concepts: Sequence[str],
    prompt: str,
    batch_size: int,
    device: torch.device,
    autocast: bool = True,
) -> np.ndarray:
    """[K, D] unit-norm float16 embeddings of `prompt.format(c)` ("a photo of a {}", no period)."""
    return embed_texts(model, tokenizer, [prompt.format(c) for c in concepts], batch_size, device, autocast)


def write_concept_embeddings(names: Sequence[str], emb: np.ndarray, emb_out: Path, names_out: Path) -> None:
    """[K, D] embeddings as .npy and the names one per line, same row order (both atomic)."""
    if len(names) != len(emb):
        raise ValueError(f"{len(names)} names but {len(emb)} embeddings")
    if any("\n" in n for n in names):
        raise ValueError("a concept name contains a newline")
    for path in (Path(emb_out), Path(names_out)):
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(emb_out).with_name(Path(emb_out).name + ".tmp.npy")
    np.save(tmp, emb)
    os.replace(tmp, emb_out)
    tmp_names = Path(names_out).with_name(Path(names_out).name + ".tmp")
    tmp_names.write_text("".join(f"{n}\n" for n in names))
    os.replace(tmp_names, names_out)


def read_concept_names(path: Path) -> list[str]:
    return [line for line in Path(path).read_text().splitlines() if line]


def run_embed(
    samples: Iterable[SampleLike],  # cocu.data.shards.iter_samples(shards, counter), manifest order
    keys: Sequence[str],  # read_manifest_keys(paths.pairs_manifest)
    concepts: Sequence[str],  # vocabulary strings to embed (row order of the concept files)
    clip_cfg: ClipConfig,
    weights: Path,  # paths.clip_weights
    cfg: EmbedConfig,
    device: torch.device,  # resolved by cocu.launch from cfg.device
    image_out: Path,
    text_out: Path,
    concept_out: Path,
    names_out: Path,
) -> dict[str, Any]:
    """The whole `embed` stage: load CLIP from the local weights file, embed pairs and concepts."""
    t0 = time.perf_counter()
    model, _, preprocess, tokenizer, digest = load_clip(clip_cfg, weights)
    stats = embed_pairs(model, preprocess, tokenizer, samples, keys, image_out, text_out, cfg.batch_size, device,
                        cfg.autocast)
    pairs_s = time.perf_counter() - t0
    emb = embed_concepts(model, tokenizer, concepts, cfg.prompt, cfg.batch_size, device, cfg.autocast)
    write_concept_embeddings(concepts, emb, concept_out, names_out)
    return {"rows": stats.rows, "dim": stats.dim, "concepts": len(concepts), "duplicates_skipped": stats.duplicates,
            "pairs_per_second": stats.rows / max(pairs_s, 1e-9), "seconds": time.perf_counter() - t0,
            "weights_sha256": digest}
