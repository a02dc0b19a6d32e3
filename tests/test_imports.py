"""The import graph of src/: no module imports a root script (train.py, validate.py, ...), and there are no cycles.

Every import statement counts, those inside functions too. Run as a script to print the levels:

    .venv/bin/python tests/test_imports.py

level 0 imports no module of src/; a module of level n imports one of level n - 1 and none above.
"""
from __future__ import annotations

import ast
from pathlib import Path

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


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> the src modules it imports, module -> the root scripts it imports) for every module of src/."""
    files = {_module_name(p): p for p in sorted((ROOT / "src").rglob("*.py"))}
    graph, scripts = {}, {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported = _imported_names(ast.parse(path.read_text(), str(path)), package)
        if path.name == "__init__.py" and not imported:
            continue  # a bare package marker
        graph[name] = {m for m in imported if m in files and m != name and files[m].name != "__init__.py"}
        scripts[name] = {m for m in imported if m.split(".")[0] in ROOT_SCRIPTS}
    return graph, scripts


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
