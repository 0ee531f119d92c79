"""Tests pass in a fresh clone with nothing beside it (issue 11): the fixture-reading tests
run in a `git clone` of this repository made in an empty directory, so a file read from
outside the repository (the `../shared/conformance` the fixtures were copied from) fails
them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import require

ROOT = Path(__file__).resolve().parents[1]
# every test module that reads tests/fixtures, and the Gitea fake's contract checks
READERS = ["tests/test_gitea_payloads.py", "tests/test_gitea_edges.py",
           "tests/test_gerrit_events.py", "tests/test_gitea_fuzz.py"]


def test_the_fixture_tests_pass_in_a_clone_with_nothing_beside_it(tmp_path):
    require((ROOT / ".git").exists(), "a git checkout of this repository")
    clone = tmp_path / "alone" / "ccci-gate"
    clone.parent.mkdir()
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    assert sorted(os.listdir(clone.parent)) == ["ccci-gate"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(clone)          # the clone's code, not this checkout's
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          *READERS], cwd=clone, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and " failed" not in out.stdout and "error" not in \
        out.stdout.splitlines()[-1], out.stdout[-2000:]
