"""The official CoCu concept list, converted into this repo's vocabulary format.

The paper's vocabulary is the concept list of the official code (github.com/xing0047/rewrite,
file `rewrite/gallery.json`, a JSON object whose "concept" entry lists 1,921 lower-case concepts,
343 of them multi-word). It is not shipped here (the official code's licence is non-commercial):
fetch it and convert it into `configs/vocabulary/cocu_official.txt`, one concept per line:

    curl -LO https://raw.githubusercontent.com/xing0047/rewrite/2075cf507b92836a2a5f9d96ec5f0012b92c9f24/rewrite/gallery.json
    python -m cocu.concepts.official gallery.json configs/vocabulary/cocu_official.txt

Each concept is stripped, lower-cased and inner spaces collapsed; empty and repeated entries are
dropped (the official file has none). The checksums of the official file and of the converted list
are below: a different file is converted too, with a warning (the rehearsal converts a small list
in the same format).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

OFFICIAL_URL = ("https://raw.githubusercontent.com/xing0047/rewrite/2075cf507b92836a2a5f9d96ec5f0012b92c9f24/"
                "rewrite/gallery.json")
OFFICIAL_SHA256 = "2003b5d3dc8f29dac068d1f4f5b9193c7e81f461b6cdbdf72e3b069e8fe5798b"  # gallery.json
CONVERTED_SHA256 = "2b2c8872d8660e6c90743a1f7bdfc6a0408e18db2ff9a8882661872f3ce43449"  # cocu_official.txt
OFFICIAL_COUNT = 1921


def read_official(path: Path | str) -> list[str]:
    """The concepts of a gallery.json (`{"concept": [str, ...]}`), normalised, in file order."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON concept list ({e})") from e
    concepts = data.get("concept") if isinstance(data, dict) else None
    if not isinstance(concepts, list) or not all(isinstance(c, str) for c in concepts):
        raise ValueError(f'{path}: expected a JSON object {{"concept": [string, ...]}} (the official gallery.json)')
    out: list[str] = []
    for c in concepts:
        c = " ".join(c.lower().split())
        if c and c not in out:
            out.append(c)
    return out


def write_vocabulary(concepts: list[str], path: Path | str) -> str:
    """One concept per line (the format of `paths.vocabulary`); returns the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(f"{c}\n" for c in concepts).encode("utf-8")
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def convert(source: Path | str, out: Path | str) -> dict[str, object]:
    """gallery.json -> vocabulary file; says whether the input is the official file."""
    digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    concepts = read_official(source)
    written = write_vocabulary(concepts, out)
    official = digest == OFFICIAL_SHA256
    if official and written != CONVERTED_SHA256:
        raise RuntimeError(f"{out}: conversion of the official list gave sha256 {written}, expected "
                           f"{CONVERTED_SHA256}")
    if not official:
        log.warning("%s is not the official gallery.json (sha256 %s, expected %s; %d concepts, the official list "
                    "has %d): converted anyway", source, digest, OFFICIAL_SHA256, len(concepts), OFFICIAL_COUNT)
    return {"concepts": len(concepts), "multi_word": sum(" " in c for c in concepts), "official": official,
            "sha256": written}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m cocu.concepts.official", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gallery", type=Path, help="the official code's rewrite/gallery.json")
    parser.add_argument("out", type=Path, help="e.g. configs/vocabulary/cocu_official.txt")
    args = parser.parse_args(argv)
    try:
        stats = convert(args.gallery, args.out)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: {stats['concepts']} concepts ({stats['multi_word']} multi-word), sha256 {stats['sha256']}"
          + ("" if stats["official"] else " (not the official list)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
