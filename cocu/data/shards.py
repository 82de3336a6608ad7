"""Webdataset shards: deterministic writing, and a validating reader that skips and counts bad samples.

A shard is a plain tar whose members are `<key>.<ext>` (webdataset's convention, as img2dataset
writes them): here `<key>.jpg` (or another image extension) and `<key>.txt` (the caption).
Reading never crashes on a bad sample and never drops one silently: every skip is counted by
reason in a `SkipCounter`, which the stages write to their metrics and MLflow runs. Every reader
(the manifest's index, embed, the teacher corpus, the training stream's `shard_images`) goes
through one small tar reader, `read_tar`, and one rule for splitting members into samples,
`iter_groups`: a tar that breaks is `corrupt_shard` for all of them alike.

Keys and repeats:
- a key must be a plain name (`is_valid_key`): no path separator, no control character (NUL
  included), UTF-8, at most 255 bytes. Anything else (`../escape`, `/abs/x`, `a\\b`) is skipped
  as `bad_key`; keys are data only, never a file path, and this keeps them so.
- within one shard, the first sample with a key is that shard's sample for the key; every later
  one (adjacent or not, valid or not) is skipped as `duplicate_key`. Two adjacent samples with
  the same key are two samples (a member extension seen twice starts the second one), not one.
- across shards, the manifest keeps the first *valid* sample of a key in shard order and skips
  later valid ones as `duplicate_key` (`cocu.data.manifest.index_shards`). Readers that stream
  the shards again (embed, training) follow the same rule through the manifest's `shard` column.
- a caption's leading UTF-8 byte-order mark is dropped (it is valid UTF-8, not counted).
"""

from __future__ import annotations

import io
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image, ImageFile

log = logging.getLogger(__name__)

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated JPEG must fail to decode, so it is counted

SKIP_REASONS = (
    "bad_key",  # a key that is not a plain name (path separator, control character, ...): never a path
    "truncated_image",  # image bytes that do not decode completely
    "non_utf8_caption",  # caption bytes that are not UTF-8
    "missing_caption",  # an image without caption member (or an empty caption)
    "missing_image",  # a caption without an image member
    "duplicate_key",  # a key seen before: earlier in the same shard, or valid in an earlier shard
    "empty_shard",  # a shard with no samples at all
    "corrupt_shard",  # a tar that cannot be read (to the end); samples read before the error are kept
)


@dataclass
class SkipCounter:
    """Counts of samples (and shards) skipped while reading, by reason."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> first offending "shard:key"

    def add(self, reason: str, where: str) -> None:
        assert reason in SKIP_REASONS, reason
        self.counts[reason] += 1
        self.examples.setdefault(reason, where)
        log.warning("skipped %s (%s)", where, reason)

    def as_dict(self) -> dict[str, int]:
        return {reason: int(self.counts.get(reason, 0)) for reason in SKIP_REASONS}

    @property
    def total_samples(self) -> int:
        return sum(v for k, v in self.counts.items() if not k.endswith("_shard"))


@dataclass(frozen=True)
class Sample:
    key: str
    image: Image.Image  # RGB, fully decoded
    caption: str
    shard: str  # id of the shard it came from: its file name, source-qualified (`ShardRef.id`)


@dataclass(frozen=True)
class RawSample:
    key: str
    image: bytes  # encoded (JPEG)
    caption: str


MAX_KEY_BYTES = 255  # a file name's limit on common filesystems


def key_problem(key: str) -> str | None:
    """Why `key` is not a plain sample key, or None when it is one.

    A key is data: it names a sample inside its shard and is never joined to a path. It must be
    non-empty UTF-8 of at most MAX_KEY_BYTES bytes, without `/` or `\\` (so neither absolute nor
    `..`), without `.` (webdataset splits a member name at its first dot, so a dotted key does not
    survive a round trip), and without control characters (NUL, newline, ...).
    """
    if not key:
        return "empty key"
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError:  # the tar reader decodes undecodable name bytes to lone surrogates
        return "key is not UTF-8"
    if len(raw) > MAX_KEY_BYTES:
        return f"key longer than {MAX_KEY_BYTES} bytes"
    if "/" in key or "\\" in key:
        return "key holds a path separator"
    if "." in key:
        return "key holds a dot"
    if any(unicodedata.category(c) == "Cc" for c in key):
        return "key holds a control character"
    return None


def is_valid_key(key: str) -> bool:
    """True for a plain sample key (see `key_problem`)."""
    return key_problem(key) is None


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """[H, W, 3] uint8 -> JPEG bytes (baseline, no optimisation passes: deterministic and fast)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def shard_name(index: int) -> str:
    return f"{index:06d}.tar"


def write_shards(samples: Iterable[RawSample], out_dir: Path, shard_size: int) -> list[Path]:
    """Write samples into `out_dir/000000.tar, ...` with `shard_size` samples each.

    Byte-deterministic: fixed mtime, owner and mode, members in sample order. A key that is not a
    plain name (`key_problem`) is a ValueError: it would not read back as the same key.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.tar"):
        old.unlink()
    paths: list[Path] = []
    writer: wds.TarWriter | None = None
    handle = None
    for i, sample in enumerate(samples):
        problem = key_problem(sample.key)
        if problem is not None:
            raise ValueError(f"sample {i}: {problem}: {sample.key!r}")
        if i % shard_size == 0:
            if writer is not None:
                writer.close()
                handle.close()
            paths.append(out_dir / shard_name(len(paths)))
            handle = paths[-1].open("wb")
            writer = wds.TarWriter(handle, user="", group="", mode=0o644, mtime=0.0, encoder=False)
        writer.write({"__key__": sample.key, "jpg": sample.image, "txt": sample.caption.encode("utf-8")})
    if writer is not None:
        writer.close()
        handle.close()
    return paths


def list_shards(folder: Path | str, pattern: str = "*.tar") -> list[Path]:
    """Sorted shard files in `folder`; a missing folder is a clear error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"shard folder not found: {folder} (check the path in params.yaml)")
    return sorted(folder.glob(pattern))


SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")  # a source name: lower case, no '/'


@dataclass(frozen=True)
class ShardRef:
    """A shard file and the source (data set) it belongs to.

    img2dataset numbers the shards and keys of every data set from `00000.tar` / `000000000`, so
    CC3M, CC12M and YFCC14M collide. A named source qualifies both: shard id `cc3m/00000.tar`, key
    `cc3m/000000000`; these ids are what the manifest, the embeddings' row order, the archives and
    training look up. An unnamed source (`""`: the synthetic corpus, a single set) keeps the tar's
    own names.
    """

    path: Path
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.source and not SOURCE_NAME.fullmatch(self.source):
            raise ValueError(f"shard source name {self.source!r}: use lower-case letters, digits, '_', '-', '.' "
                             "(no '/')")

    @property
    def id(self) -> str:
        """The shard's name in the manifest's `shard` column."""
        return self.qualify(self.path.name)

    def qualify(self, name: str) -> str:
        """A key (or shard name) of this shard as the manifest holds it: `<source>/<name>`."""
        return f"{self.source}/{name}" if self.source else name


def as_shard_ref(shard: Path | str | ShardRef) -> ShardRef:
    """A bare path is a shard of the unnamed source."""
    return shard if isinstance(shard, ShardRef) else ShardRef(Path(shard))


def split_member(name: str) -> tuple[str, str]:
    """`dir/abc.def.jpg` -> (`dir/abc`, `def.jpg`): webdataset splits at the first dot of the basename."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext.lower() if dot else ""


class ShardError(Exception):
    """A tar that cannot be read to its end; `member`: the regular file whose data broke off
    (None when a header broke)."""

    def __init__(self, message: str, member: str | None = None) -> None:
        super().__init__(message)
        self.member = member


def _octal(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # base-256 (GNU) for large values
        return int.from_bytes(field[1:], "big")
    return int(field.strip(b"\0 ") or b"0", 8)


def _checksum_ok(header: bytes) -> bool:
    """The header's checksum field equals the sum of its bytes (the checksum field read as spaces),
    unsigned or, as some old tar programs wrote it, signed (Python's `tarfile` accepts both)."""
    stored = _octal(header[148:156])
    unsigned = sum(header[:148]) + 256 + sum(header[156:])
    if stored == unsigned:
        return True
    signed = sum(b - 256 * (b > 127) for b in header[:148]) + 256 + sum(b - 256 * (b > 127) for b in header[156:])
    return stored == signed


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax_records(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    pos = 0
    while pos < len(data) and data[pos:pos + 1] != b"\0":
        length = int(data[pos:data.index(b" ", pos)])
        record = data[data.index(b" ", pos) + 1: pos + length - 1]  # without the newline
        key, _, value = record.partition(b"=")
        yield key, value
        pos += length


def read_tar(path: Path | str, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes | None]]:
    """(name, data) of every regular file of a tar, in order; data is None where `want(name)` is
    false (skipped unread). A minimal ustar / pax / GNU-longname reader: Python's `tarfile` (which
    webdataset uses) spends ~10x longer per header, the bottleneck of reading at 64 px.

    A bad header checksum, a truncated header or member, or a malformed field is a ShardError
    (or ValueError) where the tar breaks; `tarfile` would end a stream there without a word.
    """
    pax_name = pax_size = long_name = None
    with open(path, "rb", buffering=1 << 20) as f:
        while True:
            header = f.read(512)
            if len(header) == 0 or header.count(0) == 512:
                return  # end of archive (a zero block, or a file that ends after its last member)
            if len(header) < 512:
                raise ShardError(f"{path}: truncated header at byte {f.tell() - len(header)}")
            if not _checksum_ok(header):
                raise ShardError(f"{path}: bad header checksum at byte {f.tell() - 512}")
            size = pax_size if pax_size is not None else _octal(header[124:136])
            kind = header[156:157]
            regular = kind in (b"0", b"\0", b"7")
            if regular:
                name = pax_name or long_name or _text(header[:100])
                prefix = header[345:500].split(b"\0", 1)[0] if header[257:265] == b"ustar\x0000" else b""
                if prefix and not (pax_name or long_name):
                    name = _text(prefix) + "/" + name
                pax_name = pax_size = long_name = None
            if regular and not want(name):
                f.seek(size + (-size % 512), 1)
                yield name, None
                continue
            data = f.read(size)
            if len(data) < size:
                raise ShardError(f"{path}: truncated member at byte {f.tell() - len(data)}",
                                 member=name if regular else None)
            f.seek(-size % 512, 1)
            if regular:
                yield name, data
            elif kind == b"x":  # pax extended header: "<len> <key>=<value>\n" records for the next member
                pax_name, pax_size = None, None
                for key, value in _pax_records(data):
                    if key == b"path":
                        pax_name = value.decode("utf-8", "surrogateescape")
                    elif key == b"size":
                        pax_size = int(value)
            elif kind == b"L":  # GNU long name of the next member
                long_name = _text(data)


_BROKEN = (ShardError, OSError, ValueError)  # what `read_tar` raises where a tar breaks


def iter_groups(path: Path | str, want: Callable[[str], bool] | None = None
                ) -> Iterator[tuple[str, dict[str, bytes | None]]]:
    """(key, {ext: bytes}) per sample of a shard: consecutive members sharing a key, until an
    extension repeats (`a.jpg a.txt a.jpg a.txt` is two samples `a`, not one). Members whose name
    `want` refuses are None (not read).

    Raises where the tar breaks (`read_tar`). The sample in progress is yielded first unless the
    break is inside one of its own members: a broken header or a member of the next sample ends it
    (as Python's `tarfile`, which ends a stream at a broken header, keeps it too).
    """
    key, group = None, {}
    try:
        for name, data in read_tar(path, want or (lambda name: True)):
            k, ext = split_member(name)
            if k != key or ext in group:
                if key is not None:
                    yield key, group
                key, group = k, {}
            group[ext] = data
    except _BROKEN as e:
        member = getattr(e, "member", None)
        k, ext = split_member(member) if member is not None else (None, "")
        if key is not None and (member is None or k != key or ext in group):
            yield key, group
        raise
    if key is not None:
        yield key, group


def _iter_groups(path: Path, counter: SkipCounter, label: str | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """`iter_groups` of a whole shard, counting an empty shard as `empty_shard` and a tar that
    breaks as `corrupt_shard` under `label` (default: the file name); the samples read before the
    break are kept."""
    label = label or path.name
    if path.stat().st_size == 0:
        counter.add("empty_shard", label)
        return
    n = 0
    try:
        for key, group in iter_groups(path):
            n += 1
            yield key, group  # type: ignore[misc]  # every member is read
    except _BROKEN as e:
        counter.add("corrupt_shard", f"{label}: {e}")
        return
    if n == 0:
        counter.add("empty_shard", label)


def shard_images(path: Path | str, image_keys: Sequence[str],
                 skipped: dict[str, int]) -> Iterator[tuple[str, bytes | None]]:
    """(raw key, image bytes or None) per sample of a shard, the first of `image_keys` present; no
    other member is read (the training stream's reader).

    Samples split as `iter_groups` splits them, and only a key's first sample in the shard is
    yielded (later ones are counted as `duplicate_key` in `skipped`): the one the manifest can
    hold. A tar that breaks is counted as `corrupt_shard`; the samples before the break are kept
    and the one being read is dropped, as `iter_samples` does.
    """
    wanted = set(image_keys)
    seen: set[str] = set()
    try:
        for key, group in iter_groups(path, lambda name: split_member(name)[1] in wanted):
            if key in seen:
                skipped["duplicate_key"] = skipped.get("duplicate_key", 0) + 1
                continue
            seen.add(key)
            yield key, next((group[e] for e in image_keys if e in group), None)
    except _BROKEN as e:
        skipped["corrupt_shard"] = skipped.get("corrupt_shard", 0) + 1
        log.warning("stopped reading %s: %s", path, e)


def iter_samples(
    shards: Sequence[Path | ShardRef],
    counter: SkipCounter | None = None,
    image_keys: Sequence[str] = ("jpg", "jpeg", "png", "webp"),
    caption_key: str = "txt",
    decode: bool = True,
) -> Iterator[Sample]:
    """Valid samples of `shards` in order; every invalid one is skipped and counted in `counter`.

    A bad key, and a key already seen in the same shard, are skipped before anything is decoded
    (module docstring); a valid key repeated across shards is left to the manifest to count. Keys and
    shard names come out qualified by each shard's source (`ShardRef.qualify`); the bad-key rule
    applies to the raw key in the tar.
    """
    counter = counter if counter is not None else SkipCounter()
    for shard in shards:
        ref = as_shard_ref(shard)
        path = ref.path
        seen: set[str] = set()  # keys of this shard so far (a shard holds thousands, not millions)
        for raw_key, group in _iter_groups(path, counter, ref.id):
            if not is_valid_key(raw_key):
                counter.add("bad_key", f"{ref.id}:{raw_key!r}")
                continue
            key = ref.qualify(raw_key)
            where = f"{ref.id}:{raw_key}"
            if key in seen:
                counter.add("duplicate_key", where)
                continue
            seen.add(key)
            image_ext = next((e for e in image_keys if e in group), None)
            if image_ext is None:
                counter.add("missing_image", where)
                continue
            raw_caption = group.get(caption_key)
            if raw_caption is None:
                counter.add("missing_caption", where)
                continue
            try:
                caption = raw_caption.decode("utf-8").removeprefix("\ufeff").strip()  # a leading BOM is no text
            except UnicodeDecodeError:
                counter.add("non_utf8_caption", where)
                continue
            if not caption:
                counter.add("missing_caption", where)
                continue
            try:
                image = Image.open(io.BytesIO(group[image_ext]))
                image.load()
                image = image.convert("RGB") if decode else image
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
                counter.add("truncated_image", where)
                continue
            yield Sample(key=key, image=image, caption=caption, shard=ref.id)
