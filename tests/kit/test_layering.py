"""The layers: the kit knows no pipeline, and no function grows past what a reader takes in at once."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from genbuild.imports import direct_imports, repo_packages

ROOT = Path(__file__).resolve().parents[2]
KIT = "genbuild"
MAX_STATEMENTS = 60
# A longer function states why at its `def` line: `# statements: <reason>`.
REASON = re.compile(r"#\s*statements:\s*\S")


def test_the_kit_imports_no_pipeline_package():
    pipelines = repo_packages(ROOT) - {KIT}
    assert "pvtt" in pipelines
    offenders = []
    for f in sorted((ROOT / KIT).rglob("*.py")):
        for dep in direct_imports(f, ROOT):
            top = dep.relative_to(ROOT).parts[0]
            if top in pipelines:
                offenders.append(f"{f.relative_to(ROOT)} imports {dep.relative_to(ROOT)}")
    assert not offenders, "the kit must not import a pipeline:\n" + "\n".join(offenders)


def test_the_layering_check_sees_lazy_and_relative_imports(tmp_path):
    """The walker the test above relies on: a function-level import of a pipeline counts."""
    (tmp_path / KIT).mkdir()
    (tmp_path / KIT / "__init__.py").write_text("")
    (tmp_path / KIT / "mod.py").write_text("def f():\n    from pvtt.x import y\n    return y\n")
    (tmp_path / KIT / "rel.py").write_text("from . import mod\n")
    (tmp_path / "pvtt").mkdir()
    (tmp_path / "pvtt" / "__init__.py").write_text("")
    (tmp_path / "pvtt" / "x.py").write_text("y = 1\n")
    deps = direct_imports(tmp_path / KIT / "mod.py", tmp_path)
    assert tmp_path / "pvtt" / "x.py" in deps
    assert direct_imports(tmp_path / KIT / "rel.py", tmp_path) == {tmp_path / KIT / "mod.py", tmp_path / KIT / "__init__.py"}


def _statements(fn: ast.AST) -> int:
    return sum(isinstance(n, ast.stmt) for n in ast.walk(fn)) - 1


def test_no_function_over_sixty_statements_without_a_reason():
    long = []
    for f in sorted(p for pkg in repo_packages(ROOT) for p in (ROOT / pkg).rglob("*.py")):
        lines = f.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _statements(node) > MAX_STATEMENTS:
                header = "\n".join(lines[node.lineno - 1: node.body[0].lineno])
                if not REASON.search(header):
                    long.append(f"{f.relative_to(ROOT)}:{node.lineno} {node.name} ({_statements(node)} statements)")
    assert not long, "split these, or say why at the def line (# statements: ...):\n" + "\n".join(long)
