"""Per-key data as flat arrays, without one Python object per key.

At 27M pairs, a dict of keys or a list of captions costs 100-200 bytes per entry in every
process that holds it (each rank and each of its DataLoader workers), and a forked worker that
merely reads such an object writes its reference count, so copy-on-write gives every worker its
own copy of every page it touches. Numpy buffers are never written after construction: forked
workers share them.

- `StringTable`: N strings as one UTF-8 byte buffer + offsets int64 [N + 1]; `table[i] -> str`.
- `KeyIndex`: exact-match lookup key -> position in the input, over the keys' UTF-8 bytes in one
  sorted fixed-width array (numpy `S<w>`, w = the longest key's byte length) and the sorting
  permutation int64 [N]; one lookup is a binary search, many lookups one vectorised call.

Inputs are any sequence of str: a list, a pandas column or a pyarrow (chunked) array, which are
converted through arrow (from arrow no per-string Python object is created at all).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Union

import numpy as np
import pyarrow as pa

Strings = Union[Sequence[str], pa.Array, pa.ChunkedArray, Any]  # list, pandas Series, arrow array
_CHUNK = 1 << 20  # rows per block when padding to fixed width (bounds the temporary mask)


def utf8_buffers(strings: Strings) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64 [N + 1] from 0, UTF-8 bytes uint8 [offsets[-1]]) of N strings."""
    arr = strings
    if not isinstance(arr, (pa.Array, pa.ChunkedArray)):
        arr = pa.array(strings, type=pa.large_string())
    arr = arr.cast(pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        raise ValueError(f"{arr.null_count} of {len(arr)} strings are missing (null)")
    _, offset_buffer, data_buffer = arr.buffers()
    offsets = np.frombuffer(offset_buffer, dtype=np.int64)[arr.offset: arr.offset + len(arr) + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    lo, hi = int(offsets[0]), int(offsets[-1])
    return read_only(offsets - lo), read_only(data[lo:hi].copy())


def read_only(a: np.ndarray) -> np.ndarray:
    """`a`, made read-only (built once, then shared: a write would be a bug)."""
    a.flags.writeable = False
    return a


def fixed_width(offsets: np.ndarray, data: np.ndarray, width: int) -> np.ndarray:
    """Strings [N] (as `utf8_buffers`) no longer than `width` bytes -> numpy `S<width>` [N]
    (NUL-padded; so strings must not contain NUL bytes)."""
    n = len(offsets) - 1
    out = np.zeros((n, width), np.uint8)
    lengths = np.diff(offsets)
    columns = np.arange(width)
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        out[lo:hi][columns < lengths[lo:hi, None]] = data[offsets[lo]: offsets[hi]]
    return out.view(f"S{width}").reshape(n)


class StringTable:
    """N strings in one UTF-8 buffer + offsets [N + 1] (`table[i] -> str`, `len(table)`)."""

    def __init__(self, strings: Strings) -> None:
        self.offsets, self.data = utf8_buffers(strings)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"string {i} of {n}")
        i %= n
        return self.data[self.offsets[i]: self.offsets[i + 1]].tobytes().decode("utf-8")

    @property
    def nbytes(self) -> int:
        return self.offsets.nbytes + self.data.nbytes


class KeyIndex:
    """Position of each of N distinct string keys, by binary search over their sorted bytes.

    `find(key) -> position or -1`, `find_many(keys) -> int64 [n]` (-1 where absent),
    `len(index)`, iteration (the keys in input order). Duplicate keys are a ValueError naming one.
    """

    def __init__(self, keys: Strings, what: str = "keys") -> None:
        offsets, data = utf8_buffers(keys)
        if (data == 0).any():
            raise ValueError(f"{what}: a key contains a NUL character")
        self.width = max(1, int(np.diff(offsets).max(initial=0)))
        fixed = fixed_width(offsets, data, self.width)
        self.order = read_only(np.argsort(fixed, kind="stable"))  # [N] input positions in key order
        self.sorted = read_only(fixed[self.order])  # [N] S<width>
        same = np.flatnonzero(self.sorted[1:] == self.sorted[:-1])
        if len(same):
            example = self.sorted[same[0]].decode("utf-8")
            raise ValueError(f"{what}: {len(same)} duplicate keys, e.g. {example!r}")

    def __len__(self) -> int:
        return len(self.sorted)

    def find(self, key: str) -> int:
        """The position of `key` in the input, or -1."""
        try:
            b = key.encode("utf-8")
        except UnicodeEncodeError:  # e.g. a tar name that is no UTF-8 (decoded with surrogateescape)
            return -1
        if len(b) > self.width or b"\0" in b or not len(self.sorted):
            return -1
        i = int(np.searchsorted(self.sorted, b))
        if i < len(self.sorted) and self.sorted[i] == b:
            return int(self.order[i])
        return -1

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.find(key) >= 0

    def find_many(self, keys: Strings) -> np.ndarray:
        """int64 [n]: the position of each of `keys`, -1 where absent (vectorised, in blocks)."""
        offsets, data = utf8_buffers(keys)
        lengths = np.diff(offsets)
        out = np.full(len(lengths), -1, np.int64)
        valid = lengths <= self.width  # a longer key (or one with a NUL byte) is in no index
        valid[np.searchsorted(offsets, np.flatnonzero(data == 0), side="right") - 1] = False
        if not len(self.sorted):
            return out
        for lo in range(0, len(lengths), _CHUNK):
            hi = min(len(lengths), lo + _CHUNK)
            width = max(self.width, int(lengths[lo:hi].max(initial=0)))
            query = fixed_width(offsets[lo: hi + 1] - offsets[lo], data[offsets[lo]: offsets[hi]], width)
            query = query.astype(f"S{self.width}")  # cuts only keys marked invalid above
            at = np.minimum(np.searchsorted(self.sorted, query), len(self.sorted) - 1)
            hit = (self.sorted[at] == query) & valid[lo:hi]
            out[lo:hi][hit] = self.order[at[hit]]
        return out

    def __iter__(self) -> Iterator[str]:
        """The keys in input order (decoded one by one; for inspection, not for hot paths)."""
        for i in np.argsort(self.order, kind="stable"):
            yield self.sorted[i].decode("utf-8")

    @property
    def nbytes(self) -> int:
        return self.order.nbytes + self.sorted.nbytes
