"""The repository code a script runs: the closure of its imports, read from the source.

A rule lists this closure as inputs (so editing any module a stage runs reruns it) and DVC
stages list it as deps; a checkpoint's fingerprint hashes it. Deriving it here, instead of
keeping per-rule lists by hand, means a new import can never be forgotten.

Every ``import``/``from`` statement counts, those inside functions too (a lazily imported
backend runs when its stage chooses it), and so does ``importlib.import_module("literal")``
(how stage modules register their backends). Only the repository's own top-level packages
are followed; a package's ``__init__.py`` counts for every module imported from it.
No torch or pipeline import here: the Snakefile calls it at parse time.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path


def repo_packages(root: Path) -> frozenset[str]:
    """Top-level packages of the repository (directories holding an ``__init__.py``)."""
    return frozenset(p.parent.name for p in root.glob("*/__init__.py"))


@functools.cache
def _imported_names(path: Path, package: tuple[str, ...]) -> frozenset[tuple[str, ...]]:
    """Dotted names (as tuples) that ``path`` imports, with relative imports resolved."""
    names: set[tuple[str, ...]] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            mod = base + (node.module.split(".") if node.module else [])
            names.add(tuple(mod))
            names.update(tuple(mod + [a.name]) for a in node.names)  # `from pkg import module`
        elif isinstance(node, ast.Import):
            names.update(tuple(a.name.split(".")) for a in node.names)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            rel = node.args[0].value
            dots = len(rel) - len(rel.lstrip("."))
            names.add(tuple(list(package[: len(package) - dots + 1]) + rel.lstrip(".").split(".")) if dots
                      else tuple(rel.split(".")))
    return frozenset(names)


def _module_files(root: Path, mod: tuple[str, ...]) -> list[Path]:
    """The files importing ``mod`` executes: its own and every enclosing package's __init__."""
    out = []
    for cand in (root.joinpath(*mod).with_suffix(".py"), root.joinpath(*mod, "__init__.py")):
        if cand.is_file():
            out.append(cand)
            out.extend(root.joinpath(*mod[:i], "__init__.py") for i in range(1, len(mod))
                       if root.joinpath(*mod[:i], "__init__.py").is_file())
    return out


def direct_imports(path: Path, root: Path) -> set[Path]:
    """Repository files that ``path`` imports directly."""
    rel = path.relative_to(root).with_suffix("").parts
    package = rel[:-1]  # a module's package, or for an __init__ its own package
    own = repo_packages(root)
    out: set[Path] = set()
    for mod in _imported_names(path, tuple(package)):
        if mod and mod[0] in own:
            out.update(_module_files(root, mod))
    return out


def closure(entry: Path, root: Path) -> set[Path]:
    """Every repository file that running ``entry`` may execute (``entry`` included)."""
    seen: set[Path] = set()
    todo = [entry.resolve()]
    root = root.resolve()
    while todo:
        f = todo.pop()
        if f not in seen:
            seen.add(f)
            todo.extend(direct_imports(f, root) - seen)
    return seen


def closure_files(entry: str, root: Path) -> list[str]:
    """:func:`closure` as sorted repo-relative POSIX paths (what rules and dvc.yaml list)."""
    root = root.resolve()
    return sorted(p.relative_to(root).as_posix() for p in closure(root / entry, root))
