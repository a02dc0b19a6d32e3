"""The docs check: README.md and docs/*.md link only to files that exist, and their runnable commands run.

A fenced block preceded by the line ``<!-- docs-check: run -->`` is run as written, with bash, in a scratch
copy of the repository (symlinks to the tracked files, so generated data and runs stay out of the checkout)
and the project's virtual environment first on PATH, as the README's activation line asks. Blocks are run
in the order a reader meets them (the README first, then the docs pages by name, each in file order) and share
that scratch folder, so a later block may use what an earlier one made.

A command that reads what a slower command makes (``make demo``'s runs/demo and toy COCO; too slow for this
check) cannot be run here; the prose right before its block must then name the command that makes it.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from src.experiments.demo import PIPELINE
from src.experiments.experiments import toy_coco_dir
from src.experiments.preregistered_plan import TOY

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_MARK = "<!-- docs-check: run -->"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~)")


def _strip_fenced(text: str) -> str:
    """The text outside fenced code blocks (links inside code are examples, not links)."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return "\n".join(out)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(m.group(2)) for m in re.finditer(r"^(#+)\s+(.*)$", _strip_fenced(path.read_text()), re.M)}


# Outputs of commands the docs check does not run, and the command that makes each.
PRODUCERS = ((re.compile(r"\bruns/demo\b|\bdata/toy_coco-\d"), "make demo"),)
COMMAND_BLOCK = re.compile(r"^(```|~~~)\s*(bash|sh|shell|console|python|)\s*$")


def fenced_blocks(path: Path) -> list[tuple[int, str, str, str]]:
    """(line of the opening fence, info string, body, the prose between the previous block and this one)."""
    lines = path.read_text().splitlines()
    blocks, prose, i = [], [], 0
    while i < len(lines):
        if not FENCE.match(lines[i].strip()):
            prose.append(lines[i])
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if FENCE.match(lines[j].strip())), len(lines))
        blocks.append((i + 1, lines[i].strip(), "\n".join(lines[i + 1:end]), "\n".join(prose)))
        prose, i = [], end + 1
    return blocks


def unexplained_inputs(path: Path) -> list[str]:
    """Command blocks that read an output of a command in PRODUCERS without the prose before them (since the
    previous block) naming that command, as ``file:line: needs `command```."""
    bad = []
    for line, info, body, prose in fenced_blocks(path):
        if not COMMAND_BLOCK.match(info):
            continue
        for pattern, command in PRODUCERS:
            if pattern.search(body) and command not in body and f"`{command}`" not in prose:
                bad.append(f"{path.name}:{line}: needs `{command}`")
    return bad


def runnable_blocks(path: Path) -> list[tuple[int, str]]:
    """(line number, body) of every fenced block marked with RUN_MARK."""
    lines = path.read_text().splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != RUN_MARK:
            continue
        start = i + 1
        if start >= len(lines) or not FENCE.match(lines[start].strip()):
            raise AssertionError(f"{path.name}:{i + 1}: {RUN_MARK} must stand right before a fenced block")
        end = next(j for j in range(start + 1, len(lines)) if FENCE.match(lines[j].strip()))
        blocks.append((start + 1, "\n".join(lines[start + 1:end])))
    return blocks


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_images_resolve(doc):
    bad = []
    for target in LINK.findall(_strip_fenced(doc.read_text())):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            bad.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target} (no heading with that anchor)")
    assert not bad, f"{doc.relative_to(ROOT)}: broken links: {bad}"


def test_every_doc_is_reachable_from_the_readme():
    readme = _strip_fenced((ROOT / "README.md").read_text())
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in LINK.findall(readme) if t.startswith("docs/")}
    unlinked = [p.name for p in DOCS[1:] if p.resolve() not in linked]
    assert not unlinked, f"docs/ pages the README does not link: {unlinked}"


def test_runnable_marker_finds_blocks(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text(f"text\n{RUN_MARK}\n```bash\necho hi\n```\n```bash\nnot run\n```\n")
    assert runnable_blocks(doc) == [(3, "echo hi")]  # the line of the opening fence
    doc.write_text(f"{RUN_MARK}\nno fence\n")
    with pytest.raises(AssertionError, match="must stand right before"):
        runnable_blocks(doc)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_that_need_a_slow_commands_outputs_say_which_command_makes_them(doc):
    assert not unexplained_inputs(doc), unexplained_inputs(doc)


def test_the_producer_note_is_checked(tmp_path):
    doc = tmp_path / "x.md"
    infer = "```bash\npython infer.py --model-path runs/demo/0.4left-Hill-s0/best.ckpt data/toy_coco-2000-1000-48px\n```"
    doc.write_text(f"# Run the demo first\n\nLabel images:\n\n{infer}\n")
    assert unexplained_inputs(doc) == ["x.md:5: needs `make demo`"]
    doc.write_text(f"`make demo` makes the run this reads.\n\n{infer}\n\nThen again:\n\n{infer}\n")
    assert unexplained_inputs(doc) == ["x.md:9: needs `make demo`"]  # a note covers the next block only
    doc.write_text(f"Output:\n\n```text\nruns/demo/x: ...\n```\n\n```bash\nmake demo && ls runs/demo\n```\n")
    assert unexplained_inputs(doc) == []  # an output sample, and a block that runs the producer itself


def _scratch_repo(tmp: Path) -> Path:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    tops = {line.split("/")[0] for line in tracked.splitlines() if line}
    if not tops:  # not a git checkout: take the top level as it is
        tops = {p.name for p in ROOT.iterdir() if p.name not in {".git", ".venv", "data", "runs"}}
    repo = tmp / "repo"
    repo.mkdir()
    for name in sorted(tops):
        if (ROOT / name).exists():
            (repo / name).symlink_to(ROOT / name)
    return repo


def test_runnable_commands_run_as_written(tmp_path):
    blocks = [(doc, line, body) for doc in DOCS for line, body in runnable_blocks(doc)]
    assert blocks, "no block is marked runnable: the README's quick check should be"
    repo = _scratch_repo(tmp_path)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
    for doc, line, body in blocks:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (f"{doc.relative_to(ROOT)}:{line}: block failed ({proc.returncode}):\n"
                                      f"{body}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")


def test_the_demo_outputs_the_docs_name_are_those_make_demo_writes():
    """A command the docs check cannot run reads make demo's files: their names must be the ones the demo, with
    its defaults, writes, so that run after `make demo` it finds them."""
    data = toy_coco_dir(Path("data"), TOY["train"], TOY["val"], TOY["image_size"]).as_posix()
    runs = {f"runs/demo/{PIPELINE.name}"}
    named = set()
    for doc in DOCS:
        text = doc.read_text()
        # a run folder (runs/demo/NAME/...), not a file the docs' own commands write into runs/demo
        named |= {(doc.name, f"runs/demo/{m}") for m in re.findall(r"\bruns/demo/([\w.-]+)/", text)}
        named |= {(doc.name, m) for m in re.findall(r"\bdata/toy_coco(?:-[\w-]+|(?![\w]))", text)}
    assert named, "no doc names make demo's outputs: this check checks nothing"
    assert sorted(n for n in named if n[1] not in runs | {data}) == []


def _modules_and_their_test_files() -> dict[str, bool]:
    """Each module of src/, benchmarks/ and the root scripts (package markers left out) -> whether tests/ holds
    its own test file: test_NAME.py, or test_PACKAGE_NAME.py (src/toy's test_toy_NAME.py)."""
    paths = [p for top in ("src", "benchmarks") for p in (ROOT / top).rglob("*.py")] + list(ROOT.glob("*.py"))
    return {str(p.relative_to(ROOT)): (ROOT / "tests" / f"test_{p.stem}.py").is_file()
            or (ROOT / "tests" / f"test_{p.parent.name}_{p.stem}.py").is_file()
            for p in paths if p.name != "__init__.py"}


def test_the_readme_counts_the_modules_with_their_own_test_file():
    stated = re.search(r"test_NAME\.py for (\d+) of the (\d+) modules above", (ROOT / "README.md").read_text())
    assert stated, "README.md's project layout no longer says how many modules have their own test file"
    found = _modules_and_their_test_files()
    lacking = sorted(m for m, has in found.items() if not has)
    assert (int(stated[1]), int(stated[2])) == (len(found) - len(lacking), len(found)), f"without one: {lacking}"
