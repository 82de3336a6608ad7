"""External inputs: one shard resolver for every reader (patterns, braces, several roots),
source-qualified keys across colliding img2dataset sets, fingerprints, and where benchmarks live."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cocu.config import ConfigError, PairsConfig, load_params
from cocu.data import manifest
from cocu.data.benchmarks import active_roots, benchmark_root, check_roots_apart
from cocu.data.pairs import index_corpus
from cocu.data.shards import RawSample, ShardRef, SkipCounter, encode_jpeg, iter_samples, write_shards
from cocu.data.sources import (
    MissingInputs,
    expand_pattern,
    fingerprint_inputs,
    pair_shards,
    resolve_shards,
    shards_fingerprint,
)

from .conftest import LOCAL_LAUNCHER, section, write_params

SOURCES = ("cc3m", "cc12m", "yfcc14m")


def _img2dataset_like(folder: Path, source: str, n: int = 5, per_shard: int = 3) -> None:
    """Shards numbered from 000000.tar and keys from 000000000, as every img2dataset run starts."""
    rng = np.random.default_rng(len(source))
    samples = [RawSample(f"{i:09d}", encode_jpeg(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), 90),
                         f"{source} caption {i}") for i in range(n)]
    write_shards(samples, folder, per_shard)


@pytest.fixture
def three_sources(tmp_path: Path) -> dict[str, str]:
    patterns = {}
    for source in SOURCES:
        _img2dataset_like(tmp_path / "datasets" / source, source)
        patterns[source] = str(tmp_path / "datasets" / source / "{000000..000001}.tar")
    patterns["cc12m"] = str(tmp_path / "datasets" / "cc12m" / "*.tar")  # a glob serves as well as braces
    return patterns


def test_three_sources_with_colliding_names_keep_every_sample(three_sources, tmp_path):
    refs = resolve_shards(section(PairsConfig, "pairs", source="webdataset", shards_glob=three_sources), tmp_path / "own")
    assert [r.id for r in refs] == [f"{s}/{n}" for s in SOURCES for n in ("000000.tar", "000001.tar")]
    stats = index_corpus(refs, section(PairsConfig, "pairs", source="webdataset"), tmp_path / "manifest.parquet", name="pairs",
                        launcher=LOCAL_LAUNCHER)
    frame = manifest.read_manifest(tmp_path / "manifest.parquet")
    assert stats.valid == 15 and stats.skipped["duplicate_key"] == 0  # no set dropped as a duplicate
    assert frame["key"].tolist()[:2] == ["cc3m/000000000", "cc3m/000000001"]
    assert frame["key"].is_unique and frame.groupby(frame["key"].str.split("/").str[0]).size().to_dict() == \
        {s: 5 for s in SOURCES}
    assert frame.loc[frame["key"] == "cc12m/000000004", "caption"].item() == "cc12m caption 4"
    assert frame.loc[frame["key"] == "cc12m/000000004", "shard"].item() == "cc12m/000001.tar"
    # the embed stage's reader yields the same keys in the same order (embeddings' row order)
    assert [s.key for s in iter_samples(refs)] == frame["key"].tolist()


def test_pretraining_reads_every_source_by_its_qualified_key(three_sources, tmp_path):
    from cocu.training.data import PretrainData
    from cocu.config import DataConfig
    from tests.test_training_data import fake_prompts, fake_tokenizer

    refs = resolve_shards(section(PairsConfig, "pairs", source="webdataset", shards_glob=three_sources), tmp_path / "own")
    frame = manifest.index_shards(refs, SkipCounter())
    cfg = section(DataConfig, "data", shuffle_buffer=0, workers=0, split="samples")
    data = PretrainData(refs, frame, fake_prompts, fake_tokenizer, cfg, image_size=16, batch_size=3)
    keys = [k for b in data.make_batches(0, data.steps_per_epoch) for k in b["key"]]
    assert sorted(keys) == sorted(frame["key"])  # every row found in its own source's shard


def test_brace_patterns_expand_and_a_missing_named_shard_is_an_error(tmp_path):
    _img2dataset_like(tmp_path / "cc3m", "cc3m", n=7, per_shard=3)
    files, missing = expand_pattern(str(tmp_path / "cc3m" / "{000000..000003}.tar"))
    assert [f.name for f in files] == ["000000.tar", "000001.tar", "000002.tar"]
    assert [Path(m).name for m in missing] == ["000003.tar"]
    cfg = section(PairsConfig, "pairs", source="webdataset", shards_glob={"cc3m": str(tmp_path / "cc3m" / "{000000..000003}.tar")})
    with pytest.raises(FileNotFoundError, match=r"pairs.shards_glob.cc3m: 1 shard\(s\) named .* do not exist, e.g. .*/000003.tar"):
        resolve_shards(cfg, tmp_path / "own")
    one = resolve_shards(section(PairsConfig, "pairs", source="webdataset", shards_glob=str(tmp_path / "cc3m" / "*.tar")), tmp_path / "own")
    assert [r.id for r in one] == ["000000.tar", "000001.tar", "000002.tar"]  # one source: names as written


def test_one_pattern_over_folders_with_the_same_shard_names_is_refused(three_sources, tmp_path):
    cfg = section(PairsConfig, "pairs", source="webdataset", shards_glob=str(tmp_path / "datasets" / "*" / "*.tar"))
    with pytest.raises(ConfigError, match="two shards are named 000000.tar.*give each folder its own source"):
        resolve_shards(cfg, tmp_path / "own")


def test_bad_source_names_and_misplaced_shards_are_refused(three_sources, tmp_path):
    with pytest.raises(ConfigError, match="pairs.shards_glob.CC3M"):
        resolve_shards(section(PairsConfig, "pairs", source="webdataset", shards_glob={"CC3M": three_sources["cc3m"]}), tmp_path)
    inside = tmp_path / "datasets"  # paths.pairs_shards is emptied by the pairs stage on a real profile
    with pytest.raises(ConfigError, match="lies in paths.pairs_shards"):
        resolve_shards(section(PairsConfig, "pairs", source="webdataset", shards_glob=three_sources), inside)
    with pytest.raises(ConfigError, match="pairs.shards_glob is for `pairs.source: webdataset`"):
        resolve_shards(section(PairsConfig, "pairs", source="synthetic", shards_glob=three_sources), tmp_path)
    with pytest.raises(ConfigError, match="pairs.shards_glob is null"):
        resolve_shards(section(PairsConfig, "pairs", source="webdataset"), tmp_path)


def test_every_reader_of_the_pairs_honours_shards_glob(three_sources, tmp_path, monkeypatch):
    """embed (cocu/clip/jobs.py) and pre-training (cocu/training/pretrain.py) read the shards of
    `pairs.shards_glob`, all three sources, never `paths.pairs_shards`."""
    from cocu.clip.jobs import embed_corpus, embed_inputs
    from cocu.clip.model import build_tiny_clip, save_weights
    from cocu.launch.distributed import DistInfo
    from cocu.training.pretrain import build_data

    params_file = write_params(tmp_path, pairs={"source": "webdataset", "shards_glob": three_sources},
                               embed={"batch_size": 8, "device": "cpu", "prompt": "a photo of a {}",
                                      "autocast": False}, train={"batch_size": 4})
    params = load_params(params_file)
    refs = pair_shards(params)
    manifest.write_manifest(manifest.index_shards(refs, SkipCounter()), params.paths.pairs_manifest)
    torch.manual_seed(0)
    save_weights(build_tiny_clip(params.clip), Path(params.paths.clip_weights))
    stats = embed_corpus(embed_inputs(params), LOCAL_LAUNCHER)
    assert stats["rows"] == 15 and np.load(params.paths.image_embeddings).shape[0] == 15
    data = build_data(params, "baseline", 0, DistInfo())
    assert [Path(p).parent.name for p in data.shard_paths] == [s for s in sorted(SOURCES) for _ in (0, 1)]
    assert not Path(params.paths.pairs_shards).exists()  # the synthetic folder was never read nor made


def test_fingerprint_sees_size_and_mtime_without_reading_content(three_sources, tmp_path):
    refs = resolve_shards(section(PairsConfig, "pairs", source="webdataset", shards_glob=three_sources), tmp_path / "own")
    first = shards_fingerprint(refs)
    assert first["count"] == 6 and [e["id"] for e in first["shards"]][0] == "cc3m/000000.tar"
    assert shards_fingerprint(refs) == first
    path = refs[0].path
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert shards_fingerprint(refs) != first


def test_inputs_stage_names_every_missing_input_at_once(tmp_path):
    params_file = write_params(
        tmp_path, pairs={"source": "webdataset", "shards_glob": {"cc3m": str(tmp_path / "nope" / "*.tar")}},
        clip={"source": "pretrained", "arch": "ViT-B-16-quickgelu", "weights_file": str(tmp_path / "ViT-B-16.pt")},
        paths={"vocabulary": str(tmp_path / "cocu_official.txt"), "benchmarks_external": str(tmp_path / "d2")},
        eval={"active": ["voc"]})
    with pytest.raises(MissingInputs) as err:
        fingerprint_inputs(load_params(params_file))
    text = str(err.value)
    assert text.startswith("4 input problem(s)")
    for needle in ("pairs.shards_glob.cc3m", "clip.weights_file", "VOCdevkit/VOC2012",
                   "python -m cocu.concepts.official gallery.json"):
        assert needle in text


def test_benchmarks_live_in_the_repo_or_outside_it(tmp_path):
    params = load_params(write_params(tmp_path))
    assert benchmark_root(params, "synth_all") == Path(params.paths.benchmarks_root)
    with pytest.raises(ConfigError, match="paths.benchmarks_external is null"):
        benchmark_root(params, "voc")
    real = dataclasses.replace(params, paths=dataclasses.replace(params.paths, benchmarks_external="/datasets/d2"),
                               eval=dataclasses.replace(params.eval, active=("synth_all", "voc")))
    assert active_roots(real) == {"synth_all": Path(params.paths.benchmarks_root), "voc": Path("/datasets/d2")}
    overlapping = dataclasses.replace(params, paths=dataclasses.replace(
        params.paths, benchmarks_external=str(Path(params.paths.benchmarks_root).parent)))
    with pytest.raises(ConfigError, match="overlap"):
        check_roots_apart(overlapping)


def test_unnamed_shard_refs_keep_names(tmp_path):
    ref = ShardRef(tmp_path / "00000.tar")
    assert ref.id == "00000.tar" and ref.qualify("000000001") == "000000001"
    named = ShardRef(tmp_path / "00000.tar", "cc3m")
    assert named.id == "cc3m/00000.tar" and named.qualify("000000001") == "cc3m/000000001"
