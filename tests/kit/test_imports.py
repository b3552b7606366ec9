"""A rule's code is the import closure of its script: lazy imports and import_module count."""
from __future__ import annotations

from genbuild.imports import closure_files


def _tree(root, files: dict[str, str]):
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_closure_follows_lazy_relative_and_registered_imports(tmp_path):
    _tree(tmp_path, {
        "scripts/stage.py": "from pkg.stage import main\n",
        "pkg/__init__.py": "",
        "pkg/stage.py": "import importlib\nfrom .util import f\n\ndef main():\n    from pkg.sub import lazy\n"
                        "importlib.import_module('.backend', __package__)\n",
        "pkg/util.py": "import json\n",
        "pkg/backend.py": "",
        "pkg/sub/__init__.py": "",
        "pkg/sub/lazy.py": "",
        "pkg/unused.py": "",
        "other/__init__.py": "",
    })
    assert closure_files("scripts/stage.py", tmp_path) == [
        "pkg/__init__.py", "pkg/backend.py", "pkg/stage.py", "pkg/sub/__init__.py", "pkg/sub/lazy.py", "pkg/util.py",
        "scripts/stage.py"]
