"""The `embed` stage library: unit-norm CLIP embeddings of every pair and of the vocabulary.

Image and caption embeddings are float16 `.npy` files, row i = manifest row i. The samples must
arrive in manifest order; a manifest key that the shards do not yield (a corrupt or missing
sample) is an error naming the key, never a silent shift of rows.

Scale-out and resume. The work is cut into units: a unit is a run of consecutive shard files and
the manifest rows they hold (`plan_units`, from the manifest's `shard` column), normally one
shard file. The units are dealt to array tasks (`launcher.stages.embed.tasks`); each finished
unit's arrays are written atomically to the partial folder (`EmbedWork`, `<images>.partial/`)
and marked done. A pre-empted or failed task is requeued or re-run and redoes only unfinished
units. A final job joins the units into the `[N, D]` arrays in manifest order (`EmbedWork.assemble`).
Partial work is never deleted on an error: only when its input fingerprint (manifest, shard files,
weights, settings, code) differs from this run's, or once the final arrays are written. Batches
never cross a unit, and a row's embedding does not depend on the task that computed it, so the
arrays are the same bytes for any number of tasks.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from tqdm import tqdm

from cocu.config import ClipConfig, EmbedConfig
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


def encoder_on(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model in eval mode on `device`, ready to embed. On a CPU, a copy with float64 weights:
    float32 CPU kernels choose their vector path by the batch's shape (and the thread count), which
    moves a row's last float32 bits with the rows it shares a batch with, and now and then its
    float16 rounding. In float64 a row's float16 embedding does not depend on its batch,
    its task or the thread count, so any split of the work writes the same bytes. On a GPU the
    model keeps its dtype (fp16 autocast when `embed.autocast`)."""
    model = model.to(device).eval()
    if device.type == "cpu" and _model_dtype(model) != torch.float64:
        return copy.deepcopy(model).to(torch.float64)
    return model


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _unit_f16(x: torch.Tensor) -> np.ndarray:
    """[B, D] -> unit-norm float16 numpy (normalised in float32, or float64 if it is)."""
    x = x if x.dtype == torch.float64 else x.float()
    return (x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy().astype(np.float16)


def _aligned_batches(
    samples: Iterable[SampleLike],
    keys: Sequence[str],
    batch_size: int,
    dropped: list[str],
    first_row: int = 0,
    row_of: Optional[Callable[[str], Optional[int]]] = None,
) -> Iterator[tuple[int, list[SampleLike]]]:
    """(first row within `keys`, batch) in manifest order; ManifestMismatch on any key out of place.

    `keys` are manifest rows `first_row ...` (a unit's rows, or all of them). A repeated key that
    the manifest already consumed (the manifest keeps the first copy, as
    `cocu.data.manifest.index_shards` does) is skipped and appended to `dropped`; `row_of(key)`
    gives the manifest row of a key outside `keys` (an earlier unit's), None if none.
    """
    batch: list[SampleLike] = []
    row = 0
    position: dict[str, int] | None = None  # key -> row within `keys`, built only on a mismatch
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
        at = first_row + at if at is not None else (row_of(s.key) if row_of is not None else None)
        if at is not None and at < first_row + row:
            dropped.append(s.key)
            continue
        if row >= len(keys):
            span = f"the manifest's {len(keys)} rows" if first_row == 0 else \
                f"this unit's manifest rows {first_row}-{first_row + len(keys) - 1}"
            raise ManifestMismatch(f"shards yield key {s.key!r} beyond {span}")
        where = "missing from the shards (corrupt or absent)" if at is not None else "out of order"
        raise ManifestMismatch(
            f"manifest row {first_row + row} key {keys[row]!r} is {where}: the shards yield {s.key!r} in its place"
        )
    if batch:
        yield row - len(batch), batch
    if row < len(keys):
        raise ManifestMismatch(f"manifest row {first_row + row} key {keys[row]!r} is missing from the shards "
                               "(they ended)")


def _prepared_batches(
    samples: Iterable[SampleLike],
    keys: Sequence[str],
    batch_size: int,
    preprocess: Callable[[Any], torch.Tensor],
    tokenizer: Callable[[list[str]], torch.Tensor],
    dropped: list[str],
    first_row: int = 0,
    row_of: Optional[Callable[[str], Optional[int]]] = None,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(first row within `keys`, pixels [B, 3, S, S], tokens [B, C]) of each aligned batch: the
    decoding and preprocessing half of embedding (CPU; may run in a data worker)."""
    for lo, batch in _aligned_batches(samples, keys, batch_size, dropped, first_row, row_of):
        yield lo, torch.stack([preprocess(s.image) for s in batch]), tokenizer([s.caption for s in batch])


def _encode(model: torch.nn.Module, pixels: torch.Tensor, tokens: torch.Tensor, device: torch.device
            ) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm float16 image and caption embeddings [B, D] of one prepared batch (the model half;
    call under inference mode and the autocast context)."""
    pixels = pixels.to(device, _model_dtype(model))
    return _unit_f16(model.encode_image(pixels)), _unit_f16(model.encode_text(tokens.to(device)))


def embed_rows(
    model: torch.nn.Module,
    preprocess: Callable[[Any], torch.Tensor],  # open_clip's val transform: PIL -> [3, S, S]
    tokenizer: Callable[[list[str]], torch.Tensor],
    samples: Iterable[SampleLike],  # e.g. cocu.data.shards.iter_samples(shards), in manifest order
    keys: Sequence[str],  # manifest keys of these rows, in row order
    batch_size: int,
    device: torch.device,
    autocast: bool = True,
    first_row: int = 0,  # manifest row of keys[0]
    row_of: Optional[Callable[[str], Optional[int]]] = None,  # manifest row of a key outside `keys`
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """[n, D] unit-norm float16 image and caption embeddings of `keys`, and the repeated keys skipped."""
    model = encoder_on(model, device)
    dim = _embed_dim(model, preprocess, tokenizer, device)
    images = np.empty((len(keys), dim), dtype=np.float16)
    texts = np.empty((len(keys), dim), dtype=np.float16)
    dropped: list[str] = []
    with torch.inference_mode(), _autocast(device, autocast):
        for lo, pixels, tokens in _prepared_batches(samples, keys, batch_size, preprocess, tokenizer, dropped,
                                                    first_row, row_of):
            images[lo : lo + len(pixels)], texts[lo : lo + len(pixels)] = _encode(model, pixels, tokens, device)
    return images, texts, dropped


def embed_pairs(
    model: torch.nn.Module,
    preprocess: Callable[[Any], torch.Tensor],
    tokenizer: Callable[[list[str]], torch.Tensor],
    samples: Iterable[SampleLike],
    keys: Sequence[str],  # manifest keys in row order
    image_out: Path,
    text_out: Path,
    batch_size: int,
    device: torch.device,
    autocast: bool = True,
) -> EmbedStats:
    """All rows in one pass, held in memory (small corpora and tests; the stage embeds per unit):
    [N, D] unit-norm float16 image and caption embeddings, row i = manifest row i, saved atomically."""
    images, texts, dropped = embed_rows(model, preprocess, tokenizer, samples, keys, batch_size, device, autocast)
    _save_npy(Path(image_out), images)
    _save_npy(Path(text_out), texts)
    if dropped:
        log.warning("skipped %d repeated keys already embedded (first: %r)", len(dropped), dropped[0])
    return EmbedStats(rows=len(keys), dim=images.shape[1], image_path=Path(image_out), text_path=Path(text_out),
                      duplicates=len(dropped))


def _save_npy(path: Path, array: np.ndarray, fsync: bool = False) -> None:
    """np.save through a temp file and a rename: the file is whole or absent (`fsync`: and on disk
    before the rename, for files that mark work as done)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    with open(tmp, "wb") as f:
        np.save(f, array)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


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
    model = encoder_on(model, device)
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


# ----------------------------------------------------------------------------------------------
# units of work, the partial folder, the final arrays


@dataclass(frozen=True)
class EmbedUnit:
    """One unit of embed work: consecutive shard files and the manifest rows [lo, hi) they hold."""

    index: int
    shards: tuple[Any, ...]  # shard files streamed in this order: paths, or refs with `.path` and `.id`
    lo: int
    hi: int


def shard_id(shard: Any) -> str:
    """A shard's name as the manifest's `shard` column holds it: `.id` of a source-qualified
    shard reference, else the file name."""
    return shard.id if hasattr(shard, "id") else Path(shard).name


def shard_path(shard: Any) -> Path:
    return Path(shard.path) if hasattr(shard, "path") else Path(shard)


def plan_units(shard_column: Sequence[str], shards: Sequence[Any]) -> list[EmbedUnit]:
    """Cut the work into units from the manifest's `shard` column (row i: the name (`shard_id`)
    of the shard that row came from; rows of one shard are consecutive) and the shards in order.

    A unit is one shard file (or several consecutive files of the same name, whose rows the
    column cannot tell apart) and its rows. A file with no manifest row (empty, corrupt, only bad
    samples) joins the next unit (the last one at the end), so that every file is read exactly
    once and the skip counts add up to one serial pass. Raises ManifestMismatch when the column
    names a file that is not among `shards` in that order.
    """
    codes, labels = _run_codes(shard_column)
    groups: list[tuple[str, list[Any]]] = []  # (shard name, consecutive shards of that name)
    for shard in shards:
        name = shard_id(shard)
        if groups and groups[-1][0] == name:
            groups[-1][1].append(shard)
        else:
            groups.append((name, [shard]))
    starts = np.concatenate([[0], np.flatnonzero(codes[1:] != codes[:-1]) + 1]) if len(codes) else codes[:0]
    ends = np.concatenate([starts[1:], [len(codes)]]) if len(codes) else starts
    units: list[EmbedUnit] = []
    pending: list[Any] = []  # files with no rows, waiting for the next unit
    g = 0
    for lo, hi in zip(starts.tolist(), ends.tolist()):
        name = labels[codes[lo]]
        while g < len(groups) and groups[g][0] != name:
            pending += groups[g][1]
            g += 1
        if g == len(groups):
            raise ManifestMismatch(f"manifest rows {lo}-{hi - 1} come from shard {name!r}, which is not among the "
                                   "shard files in order (shards changed since the `pairs` stage?)")
        units.append(EmbedUnit(len(units), tuple(pending + groups[g][1]), lo, hi))
        pending = []
        g += 1
    rest = pending + [p for _, paths in groups[g:] for p in paths]
    if rest:
        if units:
            last = units[-1]
            units[-1] = EmbedUnit(last.index, last.shards + tuple(rest), last.lo, last.hi)
        else:
            units.append(EmbedUnit(0, tuple(rest), 0, 0))
    return units


def _run_codes(column: Any) -> tuple[np.ndarray, list[str]]:
    """([N] int codes, their labels) of a string column: equal codes = equal strings. A pyarrow
    column is dictionary-encoded (no Python string per row)."""
    if hasattr(column, "combine_chunks") or hasattr(column, "dictionary_encode"):
        encoded = (column.combine_chunks() if hasattr(column, "combine_chunks") else column).dictionary_encode()
        return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), [str(v) for v in encoded.dictionary.to_pylist()]
    labels, codes = np.unique(np.asarray(list(column), dtype=object), return_inverse=True)
    return codes.astype(np.int64).reshape(-1), [str(v) for v in labels]


def embed_fingerprint(manifest: Path, shards: Sequence[Any], weights_sha256: Optional[str],
                      clip_cfg: ClipConfig, cfg: EmbedConfig, extra: str = "") -> str:
    """sha256 of what a unit's arrays depend on: the manifest's bytes, the shard files (path, size,
    mtime: no read of the images), the weights' sha256, the settings (not `workers`), the code of `cocu/clip` and
    `cocu/data`, and `extra` (e.g. the device the jobs get)."""
    from cocu.provenance import source_digest

    settings = {k: v for k, v in asdict(cfg).items() if k != "workers"}  # workers change no byte
    h = hashlib.sha256(json.dumps({"clip": asdict(clip_cfg), "embed": settings, "extra": extra},
                                  sort_keys=True).encode())
    h.update(source_digest("clip", "data").encode())
    with open(manifest, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    for shard in shards:
        st = shard_path(shard).stat()
        h.update(f"{shard_id(shard)}\0{shard_path(shard)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    h.update(str(weights_sha256).encode())
    return h.hexdigest()


class EmbedWork:
    """The partial folder of one embed run: `_fingerprint.json`, and per finished unit
    `unit-<i>.images.npy`, `unit-<i>.captions.npy` (each written atomically) and `unit-<i>.json`
    (its rows, file sizes, skip counts and time), the marker written last."""

    FINGERPRINT = "_fingerprint.json"

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)

    @staticmethod
    def beside(image_out: Path | str) -> "EmbedWork":
        """The partial folder of an image-embeddings output: `<dir>/<stem>.partial/`."""
        image_out = Path(image_out)
        return EmbedWork(image_out.with_name(f"{image_out.stem}.partial"))

    def prepare(self, fingerprint: str) -> int:
        """Keep the finished units of the same fingerprint, remove any other; returns how many
        unit files were removed. Leftover temp files of a killed write go too."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for tmp in self.folder.glob("*.tmp*"):
            tmp.unlink()
        try:
            same = json.loads((self.folder / self.FINGERPRINT).read_text())["fingerprint"] == fingerprint
        except (OSError, ValueError, KeyError, TypeError):
            same = False
        if same:
            return 0
        stale = sorted(self.folder.glob("unit-*"))
        if stale:
            log.warning("%s: inputs, settings or code changed; removing %d files of an earlier run", self.folder,
                        len(stale))
        for path in stale:
            path.unlink()
        _atomic_text(self.folder / self.FINGERPRINT, json.dumps({"fingerprint": fingerprint}))
        return len(stale)

    def _paths(self, unit: EmbedUnit) -> tuple[Path, Path, Path]:
        stem = f"unit-{unit.index:05d}"
        return (self.folder / f"{stem}.images.npy", self.folder / f"{stem}.captions.npy",
                self.folder / f"{stem}.json")

    def marker(self, unit: EmbedUnit) -> Optional[dict[str, Any]]:
        """The done marker of `unit` if the unit is finished (marker matches its rows, files whole)."""
        images, captions, marker = self._paths(unit)
        try:
            done = json.loads(marker.read_text())
            ok = (done["lo"], done["hi"]) == (unit.lo, unit.hi) and \
                [images.stat().st_size, captions.stat().st_size] == done["bytes"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return done if ok else None

    def commit(self, unit: EmbedUnit, images: np.ndarray, captions: np.ndarray, info: dict[str, Any]) -> None:
        """Write one finished unit: both arrays atomically, then its marker."""
        if images.shape != captions.shape or len(images) != unit.hi - unit.lo:
            raise ValueError(f"unit {unit.index}: arrays {images.shape}, {captions.shape} for rows "
                             f"{unit.lo}-{unit.hi}")
        paths = self._paths(unit)
        for path, array in zip(paths, (images, captions)):
            _save_npy(path, array, fsync=True)
        done = {"unit": unit.index, "lo": unit.lo, "hi": unit.hi, "shards": [shard_id(p) for p in unit.shards],
                "dim": int(images.shape[1]), "bytes": [paths[0].stat().st_size, paths[1].stat().st_size], **info}
        _atomic_text(paths[2], json.dumps(done, sort_keys=True))

    def assemble(self, units: Sequence[EmbedUnit], dim: int, image_out: Path, text_out: Path) -> list[dict[str, Any]]:
        """The `[N, D]` image and caption arrays from the finished units, in manifest order (through
        memory maps and temp files renamed at the end); returns the units' markers. A unit that is
        not finished is an error naming it."""
        markers = [self.marker(u) for u in units]
        missing = [u.index for u, m in zip(units, markers) if m is None]
        if missing:
            raise RuntimeError(f"{self.folder}: {len(missing)} unit(s) not finished (first: {missing[0]}); "
                               "re-run the stage: it redoes only those")
        n = units[-1].hi if units else 0
        for out, kind in ((Path(image_out), "images"), (Path(text_out), "captions")):
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".tmp.npy")
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, dim))
            for unit in units:
                part = np.load(self._paths(unit)[0 if kind == "images" else 1], mmap_mode="r")
                if part.shape != (unit.hi - unit.lo, dim):
                    raise ValueError(f"{self.folder}: unit {unit.index} has shape {part.shape}, "
                                     f"expected {(unit.hi - unit.lo, dim)}")
                mm[unit.lo : unit.hi] = part
            mm.flush()
            del mm
            os.replace(tmp, out)
        return [m for m in markers if m is not None]

    def remove(self) -> None:
        """Delete the folder: once the final arrays are written, its units are superseded."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class _UnitBatches(torch.utils.data.IterableDataset):
    """The prepared batches of some units, then one ("done", ...) item per unit with its counts.

    Items: ("batch", unit index, first row within the unit, pixels, tokens) and ("done", unit
    index, {"skipped": ..., "duplicates": ...}). In a DataLoader with W workers, worker w prepares
    units w, w + W, ...: each unit is read by one process, its batches in order."""

    def __init__(self, units: Sequence[EmbedUnit], keys: Any, batch_size: int, preprocess: Callable,
                 tokenizer: Callable, image_keys: Sequence[str], caption_key: str) -> None:
        self.units, self.keys, self.batch_size = list(units), keys, batch_size
        self.preprocess, self.tokenizer = preprocess, tokenizer
        self.image_keys, self.caption_key = tuple(image_keys), caption_key

    def __iter__(self) -> Iterator[tuple]:
        from cocu.data.shards import SkipCounter, iter_samples

        info = torch.utils.data.get_worker_info()
        mine = self.units if info is None else self.units[info.id :: info.num_workers]
        row_of = _lazy_row_lookup(self.keys)
        for unit in mine:
            counter, dropped = SkipCounter(), []
            samples = iter_samples(list(unit.shards), counter, self.image_keys, self.caption_key)
            for lo, pixels, tokens in _prepared_batches(samples, _key_slice(self.keys, unit.lo, unit.hi),
                                                        self.batch_size, self.preprocess, self.tokenizer, dropped,
                                                        unit.lo, row_of):
                yield "batch", unit.index, lo, pixels, tokens
            yield "done", unit.index, {"skipped": counter.as_dict(), "duplicates": len(dropped)}


def embed_units(
    units: Sequence[EmbedUnit],
    work: EmbedWork,
    keys: Any,  # all manifest keys: a pyarrow string array (or a sequence), row order
    load_model: Callable[[], tuple[torch.nn.Module, Callable, Callable]],  # -> (model, preprocess, tokenizer)
    cfg: EmbedConfig,
    device: torch.device,
    image_keys: Sequence[str],
    caption_key: str,
) -> list[int]:
    """Embed every unfinished unit of `units` (one array task's share) and commit each as it ends;
    returns the indices of the units embedded here (finished ones are skipped: a requeued or
    re-run task resumes). With `cfg.workers` > 0, that many data workers decode and preprocess
    whole units while this process runs the model; the batches, hence the bytes, are the same."""
    todo = [u for u in units if work.marker(u) is None]
    if not todo:
        return []
    model, preprocess, tokenizer = load_model()
    model = encoder_on(model, device)
    dim = _embed_dim(model, preprocess, tokenizer, device)
    by_index = {u.index: u for u in todo}
    arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    batches = _UnitBatches(todo, keys, cfg.batch_size, preprocess, tokenizer, image_keys, caption_key)
    items = iter(batches) if cfg.workers == 0 else iter(torch.utils.data.DataLoader(
        batches, batch_size=None, num_workers=cfg.workers, prefetch_factor=4))
    done = []
    last = time.perf_counter()
    with torch.inference_mode(), _autocast(device, cfg.autocast), \
            tqdm(total=sum(u.hi - u.lo for u in todo), desc="embed", unit="pair", mininterval=5.0) as bar:
        for item in items:
            unit = by_index[int(item[1])]
            if unit.index not in arrays:
                arrays[unit.index] = (np.empty((unit.hi - unit.lo, dim), np.float16),
                                      np.empty((unit.hi - unit.lo, dim), np.float16))
            if item[0] == "batch":
                lo, pixels, tokens = int(item[2]), item[3], item[4]
                img, txt = _encode(model, pixels, tokens, device)
                arrays[unit.index][0][lo : lo + len(img)], arrays[unit.index][1][lo : lo + len(img)] = img, txt
                bar.update(len(img))
                continue
            images, captions = arrays.pop(unit.index)
            now = time.perf_counter()  # the task's time since its previous commit: they add up to its wall time
            work.commit(unit, images, captions, {**item[2], "seconds": now - last, "device": device.type})
            last = now
            done.append(unit.index)
    return done


def _key_slice(keys: Any, lo: int, hi: int) -> list[str]:
    if hasattr(keys, "slice"):  # pyarrow
        return [str(k) for k in keys.slice(lo, hi - lo).to_pylist()]
    return [str(k) for k in keys[lo:hi]]


def _lazy_row_lookup(keys: Any) -> Callable[[str], Optional[int]]:
    """key -> manifest row (first copy), the table built on first use (only a repeated key or a
    mismatch needs it)."""
    table: dict[str, int] = {}

    def row_of(key: str) -> Optional[int]:
        if not table:
            for i, k in enumerate(keys.to_pylist() if hasattr(keys, "to_pylist") else keys):
                table.setdefault(str(k), i)
        return table.get(key)

    return row_of
