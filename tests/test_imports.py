"""The import graph of src/ and benchmarks/: no cycles, and every arrow points down.

- no module of src/ imports a root script (train.py, validate.py, ...);
- only the root scripts and the tests import the user tools (src.tools): a command is no library, and what the
  commands share lives in src/ outside src/tools (the figures in src/figures.py);
- nothing in src/ but src/experiments imports the experiments, and nothing in src/ imports benchmarks;
- validate.py and infer.py do not import src.trainer (the engine has what they need);
- no tracked file names the folder beside the checkout that development once used (the product is the repository).

Every import statement counts, those inside functions too. Run as a script to print the levels:

    .venv/bin/python tests/test_imports.py

level 0 imports no module of src/; a module of level n imports one of level n - 1 and none above.
"""
from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOT_SCRIPTS = {p.stem for p in ROOT.glob("*.py")}  # train, train_nus, validate, infer


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_names(tree: ast.AST, package: str) -> set[str]:
    """Dotted names of what ``tree`` imports, ``from a import b`` giving both ``a`` and ``a.b``."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def imports_of(paths) -> dict[str, set[str]]:
    """Module name -> every dotted name its file imports, for the python files ``paths``."""
    out = {}
    for path in paths:
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out[name] = _imported_names(ast.parse(path.read_text(), str(path)), package)
    return out


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> the modules it imports, module -> the root scripts it imports) for every module of src/ and
    benchmarks/."""
    files = {_module_name(p): p for top in ("src", "benchmarks") for p in sorted((ROOT / top).rglob("*.py"))}
    graph, scripts = {}, {}
    for name, imported in imports_of(files.values()).items():
        if files[name].name == "__init__.py" and not imported:
            continue  # a bare package marker
        graph[name] = {m for m in imported if m in files and m != name and files[m].name != "__init__.py"}
        scripts[name] = {m for m in imported if m.split(".")[0] in ROOT_SCRIPTS}
    return graph, scripts


def importers_of(package: str, allowed: tuple[str, ...]) -> dict[str, set[str]]:
    """Modules of src/, benchmarks/ and the root scripts, outside the ``allowed`` prefixes, that import
    ``package`` or a module in it: module -> those imports."""
    paths = [p for top in ("src", "benchmarks") for p in (ROOT / top).rglob("*.py")] + sorted(ROOT.glob("*.py"))
    found = {}
    for name, imported in imports_of(paths).items():
        if name == package or name.startswith(allowed):
            continue
        hits = {m for m in imported if m == package or m.startswith(package + ".")}
        if hits:
            found[name] = hits
    return found


def levels(graph: dict[str, set[str]]) -> dict[str, int]:
    """Each module's level (longest import chain below it); raises ValueError naming a cycle."""
    out: dict[str, int] = {}

    def visit(name: str, chain: list[str]) -> int:
        if name in chain:
            raise ValueError("import cycle: " + " -> ".join(chain[chain.index(name):] + [name]))
        if name not in out:
            out[name] = 1 + max((visit(m, chain + [name]) for m in graph[name]), default=-1)
        return out[name]

    for name in graph:
        visit(name, [])
    return out


def test_no_module_of_src_imports_a_root_script():
    assert {"train", "train_nus", "validate", "infer"} <= ROOT_SCRIPTS
    _, scripts = import_graph()
    assert {m: s for m, s in scripts.items() if s} == {}


def test_the_import_graph_has_no_cycle():
    graph, _ = import_graph()
    assert len(graph) > 20 and any(graph.values())  # the scan finds the modules and their imports
    levels(graph)


def test_only_the_scripts_and_the_tests_import_the_user_tools():
    assert importers_of("src.tools", tuple(sorted(ROOT_SCRIPTS))) == {}
    tests = imports_of(sorted((ROOT / "tests").glob("test_*.py")))
    assert any(m.startswith("src.tools.") for m in tests["tests.test_plot_metrics"]), "the scan sees the tests' imports"


def test_nothing_in_src_but_the_experiments_imports_them_and_nothing_imports_the_benchmarks():
    assert importers_of("src.experiments", ("src.experiments", "benchmarks") + tuple(ROOT_SCRIPTS)) == {}
    assert {m: s for m, s in importers_of("benchmarks", ("benchmarks",)).items() if m.startswith("src")} == {}


def test_validate_and_infer_do_not_import_the_trainer():
    scripts = imports_of([ROOT / "validate.py", ROOT / "infer.py", ROOT / "train.py"])
    assert not any(m == "src.trainer" or m.startswith("src.trainer.") for m in scripts["validate"] | scripts["infer"])
    assert "src.trainer" in scripts["train"]  # the scan sees a script's imports


def _tracked_text_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    out = []
    for rel in filter(None, listed.decode().split("\0")):
        path = ROOT / rel
        if path.is_file() and b"\0" not in path.read_bytes()[:8192]:  # a NUL byte: a binary file
            out.append(path)
    return out


def test_no_tracked_file_reaches_outside_the_repository():
    outside = "../" + "shared"  # spelt in two parts so that this file does not name it
    files = _tracked_text_files()
    assert any(p.name == "Makefile" for p in files) and not any(p.suffix == ".png" for p in files)
    assert [str(p.relative_to(ROOT)) for p in files if outside in p.read_text(errors="replace")] == []


def test_the_checks_catch_a_cycle_and_a_root_script(tmp_path):
    with_cycle = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    try:
        levels(with_cycle)
    except ValueError as e:
        assert "a -> b -> c -> a" in str(e)
    else:
        raise AssertionError("the cycle a -> b -> c -> a was not found")
    tree = ast.parse("def f():\n    import train\n    from validate import main\n")
    assert {"train", "validate"} <= _imported_names(tree, "src.tools")


if __name__ == "__main__":
    graph, _ = import_graph()
    found = levels(graph)
    for level in range(max(found.values()) + 1):
        print(f"level {level}")
        for name in sorted(m for m, n in found.items() if n == level):
            print(f"  {name}: {', '.join(sorted(graph[name])) or '-'}")
