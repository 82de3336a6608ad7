"""The repository stands alone: every document it cites is in it.

Rules, over every file git tracks or would add (not ignored), except `dvc.lock`, binary files and
this file:

1. no reference to a document or folder outside the repo (the machine's paths, the design notes
   the repo was written from);
2. a page of `docs/` is cited by its path from the root (`docs/method.md`), never by a bare
   name, outside `docs/`;
3. every cited `docs/<name>.md` exists;
4. every `§N` (or `§N-M`) follows the document it points into (`docs/method.md §3`, or, inside a
   page of `docs/`, a sibling page or the page itself) and that document has a heading numbered N
   (and M);
5. every relative Markdown link of README.md and of `docs/` resolves to a file of the repo.

And the commands the README documents for the paper-profile dry run and the segmentation demo run
as written (in process, with the demo's checkpoint and image replaced by small stand-ins).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import pytest

from .conftest import REPO

SKIP = {"dvc.lock", "tests/test_docs.py"}

# rule 1: (pattern, why it is wrong)
FOREIGN = [
    (re.compile(r"/work/"), "an absolute path of the machine the repo was written on"),
    (re.compile(r"\.\./shared|\bshared/reference\b|\breference/method\b"), "a folder outside the repo"),
    (re.compile(r"\bDESIGN(\.md|\s*§)"), "the design notes are not in the repo: cite docs/"),
    (re.compile(r"\b(ecosystem|style|peers)\.md\b"), "research notes that are not in the repo"),
]
DOC_PATH = re.compile(r"\bdocs/([\w-]+\.md)\b")
SECTION = r"§\s?\d+(?:-\d+)?"
# a document followed by one or more sections: "docs/method.md §2-4", "method.md) §8", "x.md §1, §3"
SECTION_REF = re.compile(rf"(?P<path>(?:docs/)?[\w-]+\.md)\)?\s+(?P<secs>{SECTION}(?:(?:,\s*|\s+and\s+|\s+or\s+){SECTION})*)")
SECTION_NUMBERS = re.compile(r"§\s?(\d+)(?:-(\d+))?")
HEADING = re.compile(r"^#{1,6}\s+(\d+)\.\s", re.MULTILINE)
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)\s]*)?\)")


@lru_cache(maxsize=1)
def text_files() -> dict[str, str]:
    """path (relative, posix) -> text of every tracked or addable file, binary files left out."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:  # not a git checkout: nothing to list
        pytest.skip(f"git ls-files failed in {REPO}: {e}", allow_module_level=True)
    files = {}
    for rel in sorted({p for p in out.decode().split("\0") if p}):
        path = REPO / rel
        if rel in SKIP or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            files[rel] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return files


def lines() -> list[tuple[str, int, str]]:
    return [(rel, i, line) for rel, text in text_files().items() for i, line in enumerate(text.splitlines(), 1)]


@lru_cache(maxsize=None)
def headings(path: Path) -> frozenset[int]:
    return frozenset(int(n) for n in HEADING.findall(path.read_text(encoding="utf-8")))


def in_docs(rel: str) -> bool:
    return rel.startswith("docs/")


def resolve(rel: str, cited: str) -> Path | None:
    """The file a citation `cited` in file `rel` points to, or None when it must not be bare."""
    if cited.startswith("docs/"):
        return REPO / cited
    return REPO / "docs" / cited if in_docs(rel) else None


def test_the_docs_exist_and_the_readme_links_each_page() -> None:
    pages = sorted(p.name for p in (REPO / "docs").glob("*.md"))
    assert {"method.md", "protocol.md", "world.md"} <= set(pages)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert not [p for p in pages if f"docs/{p}" not in readme], "README.md must link every page of docs/"


def test_no_reference_outside_the_repo() -> None:
    bad = [f"{rel}:{i}: {why}: {line.strip()}"
           for rel, i, line in lines() for pattern, why in FOREIGN if pattern.search(line)]
    assert not bad, "\n".join(bad)


def test_docs_pages_are_cited_by_their_path() -> None:
    names = {p.name for p in (REPO / "docs").glob("*.md")} | {"method.md"}
    bare = re.compile(rf"(?<![\w/.-])({'|'.join(re.escape(n) for n in sorted(names))})")
    bad = [f"{rel}:{i}: write docs/{m.group(1)}: {line.strip()}"
           for rel, i, line in lines() if not in_docs(rel) for m in bare.finditer(line)]
    assert not bad, "\n".join(bad)


def cited_docs() -> dict[str, list[str]]:
    """docs/<name>.md -> where it is cited (file:line), over every text file."""
    where: dict[str, list[str]] = defaultdict(list)
    for rel, i, line in lines():
        for m in DOC_PATH.finditer(line):
            where[f"docs/{m.group(1)}"].append(f"{rel}:{i}")
    return dict(where)


@pytest.mark.parametrize("doc", sorted(cited_docs()))
def test_every_cited_docs_page_exists(doc: str) -> None:
    assert (REPO / doc).is_file(), f"{doc} is cited but missing: {', '.join(cited_docs()[doc][:5])}"


def test_every_section_reference_names_an_existing_section() -> None:
    bad = []
    for rel, i, line in lines():
        if "§" not in line:
            continue
        owned = [False] * len(line)
        refs = [(m.group("path"), m.group("secs"), m.span()) for m in SECTION_REF.finditer(line)]
        if in_docs(rel):  # a bare section inside a page of docs/ points into that page
            refs += [(Path(rel).name, m.group(0), m.span()) for m in SECTION_NUMBERS.finditer(line)]
        for cited, secs, (lo, hi) in refs:
            if all(owned[lo:hi]):
                continue
            owned[lo:hi] = [True] * (hi - lo)
            target = resolve(rel, cited)
            if target is None:
                bad.append(f"{rel}:{i}: {cited} {secs}: cite docs/{cited}")
            elif not target.is_file():
                bad.append(f"{rel}:{i}: {cited} {secs}: {target.relative_to(REPO)} does not exist")
            else:
                numbers = {int(n) for pair in SECTION_NUMBERS.findall(secs) for n in pair if n}
                missing = sorted(numbers - headings(target))
                if missing:
                    bad.append(f"{rel}:{i}: {target.relative_to(REPO)} has no section {missing}: {line.strip()}")
        stray = [j for j, ch in enumerate(line) if ch == "§" and not owned[j]]
        if stray:
            bad.append(f"{rel}:{i}: a § that names no document of the repo: {line.strip()}")
    assert not bad, "\n".join(bad)


def test_relative_links_of_the_readme_and_docs_resolve() -> None:
    bad = []
    for rel, text in text_files().items():
        if rel != "README.md" and not (in_docs(rel) and rel.endswith(".md")):
            continue
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            if not ((REPO / rel).parent / target).exists():
                bad.append(f"{rel}: link to {target} does not resolve")
    assert not bad, "\n".join(bad)


# --------------------------------------------------------------------------------------------
# the README's commands


def readme_commands(heading: str) -> list[list[str]]:
    """The commands of the first ```bash block after `heading` in README.md: comments dropped,
    continuation lines joined, `a && b` split into two commands."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert heading in text.splitlines(), f"README.md has no heading {heading!r}"
    block = re.search(r"```bash\n(.*?)```", text[text.index(heading):], re.DOTALL)
    assert block, f"README.md: no bash block under {heading!r}"
    commands: list[list[str]] = []
    for line in block.group(1).replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        while tokens:
            cut = tokens.index("&&") if "&&" in tokens else len(tokens)
            commands.append(tokens[:cut])
            tokens = tokens[cut + 1:]
    return commands


def run_readme_command(cmd: list[str]) -> int:
    """Run one documented command in this process (cwd: the repo root)."""
    from cocu.__main__ import main as cocu_main
    from cocu.launch import executor

    if cmd[:3] == ["python", "-m", "cocu.launch.executor"]:
        return executor.main(cmd[3:])
    if cmd[:3] == ["python", "-m", "cocu"]:
        return cocu_main(cmd[3:])
    if cmd[0] == "cp" and len(cmd) == 3:
        shutil.copyfile(cmd[1], cmd[2])
        return 0
    raise AssertionError(f"README.md documents a command this test does not know how to run: {cmd}")


def test_readme_paper_profile_dry_run_runs_as_written(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(REPO)
    commands = readme_commands("### The paper profile, dry run")
    assert any(c[:3] == ["python", "-m", "cocu.launch.executor"] and "--dry-run" in c for c in commands)
    before = (REPO / "params.yaml").read_bytes()
    for cmd in commands:
        cmd = [tok.replace("/tmp/", f"{tmp_path}/") for tok in cmd]  # the copy goes to this test's folder
        assert run_readme_command(cmd) == 0, cmd
    out = capsys.readouterr().out
    assert "dvc exp run -n paper-cc3m" in out and "# ---- pretrain-cocu-s0" in out
    assert out.count("#SBATCH --nodes=4") >= 2 and "#SBATCH --job-name=pretrain\n" in out
    assert '"gpus_per_node": 4' in out  # the executor's parameters, as JSON
    assert (REPO / "params.yaml").read_bytes() == before  # --write changed only the copy


def test_readme_segment_demo_runs_as_written(tmp_path, monkeypatch, capsys) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from cocu.config import load_params, to_dict
    from cocu.models.factory import build_model
    from cocu.training.checkpoint import save_checkpoint

    monkeypatch.chdir(REPO)
    [cmd] = [c for c in readme_commands("## Segmentation demo") if c[:4] == ["python", "-m", "cocu", "segment"]]
    params = load_params(REPO / "params.yaml")
    torch.manual_seed(0)
    stand_in = {  # what `make repro` would have made: a checkpoint of the default model, an image
        ".pt": tmp_path / "model.pt", ".png": tmp_path / "image.png"}
    save_checkpoint({"model": build_model(params.model).state_dict(), "model_config": to_dict(params.model),
                     "variant": "stand-in", "seed": 0, "step": 0}, stand_in[".pt"])
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(stand_in[".png"])
    out = tmp_path / "overlay.png"
    args = [str(stand_in[Path(tok).suffix]) if tok.startswith("data/") else tok for tok in cmd]
    args[args.index("--out") + 1] = str(out)
    assert run_readme_command(args) == 0
    assert out.is_file() and capsys.readouterr().out.startswith(f"{out}: ")


CODE_PATH = re.compile(r"(?<![\w/.-])((?:cocu|pipelines|scripts|benchmarks|tests|profiles|configs)/[\w/.*-]*\w)")
PLACEHOLDER = re.compile(r"/[A-Z]+\.\w+$")  # pipelines/X.py, profiles/NAME.yaml
WRITTEN_BY_THE_USER = {  # files the docs tell the user to create
    "configs/vocabulary/cocu_official.txt",  # the official vocabulary, converted (docs/paper_profile.md)
}


def test_every_repo_path_the_readme_and_docs_name_exists() -> None:
    """`cocu/...`, `pipelines/...` and the like in README.md and docs/ name files or folders that
    exist (globs such as `profiles/paper-*.yaml` must match one)."""
    missing = []
    for rel, text in text_files().items():
        if not (rel == "README.md" or rel.startswith("docs/")):
            continue
        for i, line in enumerate(text.splitlines(), 1):
            for m in CODE_PATH.finditer(line):
                path = m.group(1).rstrip(".")
                if PLACEHOLDER.search(path) or path in WRITTEN_BY_THE_USER or line[m.end():m.end() + 1] in "<{":
                    continue
                if "*" in path:
                    if not list(REPO.glob(path)):
                        missing.append(f"{rel}:{i}: {path}")
                    continue
                if not (REPO / path).exists():
                    missing.append(f"{rel}:{i}: {path}")
    assert missing == [], "named but missing:\n" + "\n".join(missing)
