"""The one ci-preset build the end-to-end tests share (a build costs minutes on 2 cores).

`dvc repro` in a temp copy builds every milestone of every pipeline (PVTT and AVGen) once per
session, bad inputs in PVTT's manifest from the start; tests/e2e/test_e2e.py (PVTT) and
tests/e2e/test_e2e_avgen.py check it, then change params to check what rebuilds.
"""
from __future__ import annotations

import pytest
from e2e_helpers import bad_inputs, make_repo, run


@pytest.fixture(scope="session")
def repo(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    repo = base / "repo"
    repo.mkdir()
    manifest = bad_inputs(repo)
    make_repo(repo, overlay={"pvtt": {"data": {"manifest": str(manifest.relative_to(repo))}}})
    res = run(["dvc", "repro"], repo, timeout=1800)
    repo_log = res.stdout + res.stderr
    (base / "first_repro.log").write_text(repo_log)
    return repo, repo_log
