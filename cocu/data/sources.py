"""The pipeline's external inputs: which shard files hold the pairs, and cheap fingerprints of
everything the pipeline reads but does not own.

On the synthetic profile the `pairs` stage writes the shards into `paths.pairs_shards`, inside the
repo (a DVC output). On a real profile (`pairs.source: webdataset`) the shards are img2dataset
folders outside the repo, named by `pairs.shards_glob`, which DVC never tracks as data: they are
only read. `pair_shards` is the one place that turns params into the list of shard files; every
reader of the pairs (the `pairs` stage, embed, pre-training, the gallery) calls it.

`pairs.shards_glob` is either one pattern (one data set: keys stay as img2dataset wrote them) or a
mapping `{source: pattern}` (several data sets: shard ids and keys become `<source>/<name>`, so
CC3M's, CC12M's and YFCC14M's `00000.tar` / `000000000` do not collide). A pattern is brace-expanded
(`{00000..00331}.tar`, as webdataset does) and then globbed; relative patterns are relative to the
repo root (where DVC runs the stages).

A fingerprint is what DVC tracks in place of data it must not hash or own: names, sizes and
modification times (never the content of terabytes). The `inputs` stage writes them into
`paths.inputs` on every `dvc repro` (`always_changed`); stages that read external data depend on
the fingerprint file, so they re-run exactly when the data changed.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from braceexpand import braceexpand

from cocu.config import ConfigError, PairsConfig, Params
from cocu.data.benchmarks import benchmark_files, benchmark_root, check_roots_apart, real_active
from cocu.data.shards import ShardRef, as_shard_ref, list_shards
from cocu.tracking.run_info import write_json

GLOB_CHARS = set("*?[")
INPUT_FILES = ("pairs.json", "benchmarks.json", "clip.json")  # the files of `paths.inputs`


# --------------------------------------------------------------------------------------------
# shards


def expand_pattern(pattern: str) -> tuple[list[Path], list[str]]:
    """(existing files, names the braces spelled out that do not exist), both sorted.

    Each brace expansion is globbed if it holds a wildcard (a glob matching nothing is not an
    error here: the caller checks that the whole pattern matched something).
    """
    found: set[Path] = set()
    missing: list[str] = []
    for part in braceexpand(pattern):
        part = os.path.expanduser(part)
        if GLOB_CHARS & set(part):
            found.update(Path(p) for p in glob.glob(part, recursive=True) if os.path.isfile(p))
        elif os.path.isfile(part):
            found.add(Path(part))
        else:
            missing.append(part)
    return sorted(found), sorted(missing)


def shard_patterns(cfg: PairsConfig) -> dict[str, str]:
    """`pairs.shards_glob` as {source: pattern}; one pattern is the unnamed source ``""``."""
    if cfg.shards_glob is None:
        return {}
    if isinstance(cfg.shards_glob, str):
        return {"": cfg.shards_glob}
    return dict(cfg.shards_glob)


def resolve_shards(cfg: PairsConfig, shards_dir: Path | str) -> list[ShardRef]:
    """The shard files of the pairs, in manifest order: sources in the order given, files sorted.

    synthetic: every `*.tar` in `shards_dir` (`paths.pairs_shards`, written by the `pairs` stage).
    webdataset: `pairs.shards_glob`. Errors name the params key and the pattern.
    """
    if cfg.source == "synthetic":
        _no_glob_on_synthetic(cfg)
        return [ShardRef(p) for p in list_shards(shards_dir)]
    patterns = shard_patterns(cfg)
    if not patterns:
        raise ConfigError("pairs.source is webdataset but pairs.shards_glob is null: name the img2dataset "
                          "shards, e.g. {cc3m: /datasets/cc3m/{00000..00331}.tar, cc12m: ...} "
                          "(docs/paper_profile.md)")
    refs: list[ShardRef] = []
    owner: dict[Path, str] = {}
    own_dir = Path(shards_dir).resolve()  # the synthetic shards' folder, emptied on a real profile
    for source, pattern in patterns.items():
        key = f"pairs.shards_glob.{source}" if source else "pairs.shards_glob"
        try:
            ShardRef(Path("x"), source)
        except ValueError as e:
            raise ConfigError(f"{key}: {e}") from None
        files, missing = expand_pattern(pattern)
        if missing:
            raise FileNotFoundError(f"{key}: {len(missing)} shard(s) named by {pattern!r} do not exist, "
                                    f"e.g. {missing[0]}")
        if not files:
            raise FileNotFoundError(f"{key}: {pattern!r} matches no shard file")
        seen: dict[str, Path] = {}
        for path in files:
            ref = ShardRef(path, source)
            if path.resolve().is_relative_to(own_dir):
                raise ConfigError(f"{key}: {path} lies in paths.pairs_shards ({shards_dir}), the folder of the "
                                  "synthetic shards that the `pairs` stage empties: keep external shards elsewhere")
            other = owner.get(path.resolve())
            if other is not None:
                raise ConfigError(f"{key}: {path} is also a shard of "
                                  f"{'pairs.shards_glob.' + other if other else 'another pattern'}")
            if ref.id in seen:
                raise ConfigError(f"{key}: two shards are named {path.name} ({seen[ref.id]} and {path}): their "
                                  "keys would collide; give each folder its own source, "
                                  "pairs.shards_glob: {name: pattern, ...}")
            seen[ref.id] = path
            owner[path.resolve()] = source
            refs.append(ref)
    return refs


def _no_glob_on_synthetic(cfg: PairsConfig) -> None:
    if cfg.shards_glob is not None:
        raise ConfigError("pairs.shards_glob is for `pairs.source: webdataset` (existing shards); the "
                          "synthetic corpus is written to paths.pairs_shards: set it to null")


def pair_shards(params: Params) -> list[ShardRef]:
    """The shard files of the pre-training pairs, from the params (every reader calls this)."""
    return resolve_shards(params.pairs, params.paths.pairs_shards)


def shard_lookup(shards: Iterable[Path | str | ShardRef]) -> dict[str, ShardRef]:
    """{shard id (the manifest's `shard` column): shard}."""
    refs = [as_shard_ref(s) for s in shards]
    return {r.id: r for r in refs}


# --------------------------------------------------------------------------------------------
# fingerprints


def stat_entry(path: Path | str) -> dict[str, int]:
    st = os.stat(path)
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def shards_fingerprint(shards: Sequence[ShardRef]) -> dict[str, Any]:
    """Names, sizes and mtimes of the shard files (no content is read)."""
    entries = [{"id": r.id, "path": str(r.path), **stat_entry(r.path)} for r in shards]
    return {"count": len(entries), "bytes": sum(e["size"] for e in entries), "shards": entries}


def files_fingerprint(root: Path, files: Iterable[Path]) -> dict[str, Any]:
    """Count, bytes and one digest over the sorted (relative path, size, mtime) of `files`."""
    lines = []
    total = 0
    for f in files:
        e = stat_entry(f)
        total += e["size"]
        lines.append(f"{Path(f).relative_to(root).as_posix()}\t{e['size']}\t{e['mtime_ns']}")
    lines.sort()
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return {"files": len(lines), "bytes": total, "digest": digest}


def write_fingerprint(path: Path | str, payload: Mapping[str, Any]) -> None:
    """Deterministic JSON (sorted keys, indent 1), written atomically."""
    write_json(path, payload, indent=1)


def read_fingerprint(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input fingerprint not found: {path} (run the `inputs` stage: dvc repro inputs)")
    return json.loads(path.read_text())


def check_unchanged(path: Path | str, current: Mapping[str, Any], what: str) -> None:
    """Raise if the data changed since the `inputs` stage fingerprinted it (a stage must not pair
    outputs with a fingerprint of other data)."""
    recorded = read_fingerprint(path)
    if json.loads(json.dumps(current, sort_keys=True)) != recorded:
        raise RuntimeError(f"{what} changed since the `inputs` stage fingerprinted them into {path}: "
                           "re-run `dvc repro` (it fingerprints them again first)")


# --------------------------------------------------------------------------------------------
# the `inputs` stage


class MissingInputs(FileNotFoundError):
    """One or more inputs of the pipeline are missing or misnamed; the message lists every one."""


VOCABULARY_HELP = ("the official CoCu concept list is not shipped: fetch the official code's rewrite/gallery.json "
                   "and run `python -m cocu.concepts.official gallery.json {path}` "
                   "(docs/paper_profile.md, 'Vocabulary')")


def pairs_inputs(params: Params) -> dict[str, Any]:
    """pairs.json: the external shards' fingerprint (real profile), or a note (synthetic)."""
    if params.pairs.source == "synthetic":
        _no_glob_on_synthetic(params.pairs)
        return {"source": "synthetic", "shards": "generated by the `pairs` stage into paths.pairs_shards"}
    refs = pair_shards(params)
    return {"source": "webdataset", "shards_glob": shard_patterns(params.pairs), **shards_fingerprint(refs)}


def clip_inputs(params: Params) -> dict[str, Any]:
    """clip.json: the local CLIP weights file's name, size and mtime (pretrained), or a note."""
    cfg = params.clip
    if cfg.source == "synthetic":
        return {"source": "synthetic", "weights": "trained by the `teacher` stage into paths.clip_weights"}
    if cfg.weights_file is None:
        raise ConfigError("clip.source is pretrained but clip.weights_file is null: give the local weights file "
                          "(docs/paper_profile.md, 'CLIP weights')")
    path = Path(cfg.weights_file)
    if not path.is_file():
        raise FileNotFoundError(f"clip.weights_file: {path} not found (put the weights file there; it is never "
                                "downloaded)")
    return {"source": "pretrained", "arch": cfg.arch, "path": str(path), **stat_entry(path)}


def benchmarks_fingerprint(params: Params) -> dict[str, Any]:
    """The active real benchmarks' files (names, sizes, mtimes): what evaluation reads, never hashed."""
    check_roots_apart(params)
    out: dict[str, Any] = {}
    for name, card in real_active(params).items():
        folder, files, images = benchmark_files(card, benchmark_root(params, name))
        out[name] = {"reader": card.reader, "folder": str(folder), "images": images,
                     **files_fingerprint(folder, files)}
    return {"external_root": params.paths.benchmarks_external, "benchmarks": out}


def fingerprint_inputs(params: Params) -> dict[str, dict[str, Any]]:
    """{file name in paths.inputs: fingerprint} of every external input, after checking that every
    input the profile names exists. All problems are reported at once (MissingInputs), before any
    stage that costs something runs."""
    problems: list[str] = []
    out: dict[str, dict[str, Any]] = {}
    for name, build in (("pairs.json", pairs_inputs), ("clip.json", clip_inputs),
                        ("benchmarks.json", benchmarks_fingerprint)):
        try:
            out[name] = build(params)
        except (ConfigError, FileNotFoundError) as e:
            problems.append(str(e))
    vocabulary = Path(params.paths.vocabulary)
    if not vocabulary.is_file():
        problems.append(f"paths.vocabulary: {vocabulary} not found; "
                        + (VOCABULARY_HELP.format(path=vocabulary) if "official" in vocabulary.name
                           else "one lower-case concept per line"))
    if params.paths.synonyms is not None and not Path(params.paths.synonyms).is_file():
        problems.append(f"paths.synonyms: {params.paths.synonyms} not found (null for none)")
    if problems:
        raise MissingInputs(f"{len(problems)} input problem(s):\n  - " + "\n  - ".join(problems))
    assert tuple(sorted(out)) == tuple(sorted(INPUT_FILES))
    return out
