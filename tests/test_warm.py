"""Warm canonicals without Docker: enrolment from the layout to the build parameters,
canonical names, the registry record, the lock, and when a green run promotes."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from ccci_gate.config.loader import load_layout
from ccci_gate.core.layout import ProjectConfig
from ccci_gate.swarm.recipe import run_domain, stack_name
from ccci_gate.swarm.warm import COLD, Canonical, WarmError, canonical_domain, canonicals, slug
from ccci_gate.worker.kinds import promote

from git_helpers import git
from test_config_loader import problems, write
from test_core_engine import Harness, layout

ENROLLED = """\
pipelines:
  - name: check
    trigger:
      admin: []
projects:
  - name: org/a
    warm: true
    check: [build]
  - name: org/b
    check: [build]
jobs:
  - name: build
"""


def test_the_shipped_layout_enrols_the_example_recipe():
    root = Path(__file__).resolve().parents[1]
    assert load_layout([root / "layouts", root / "jobs"]).projects["coop-cloud/hello"].warm


def test_enrolment_is_a_validated_project_flag(tmp_path):
    lay = load_layout([write(tmp_path, ENROLLED)])
    assert lay.projects["org/a"].warm and not lay.projects["org/b"].warm
    assert lay.projects["org/a"].pipelines == {"check": ("build",)}   # not a pipeline name
    assert any("warm" in p for p in problems(tmp_path, ENROLLED.replace("warm: true",
                                                                          "warm: sometimes")))


@pytest.mark.parametrize("warm,expected", [(True, "1"), (False, "0")])
def test_enrolment_reaches_builds_as_ccci_warm(warm, expected):
    lay = layout()
    lay = type(lay)(pipelines=lay.pipelines, jobs=lay.jobs, projects={
        "org/recipe": ProjectConfig("org/recipe", pipelines=lay.projects["org/recipe"].pipelines,
                                    warm=warm)})
    h = Harness(lay)
    h.ready()
    assert h.started()["build"].parameters["CCCI_WARM"] == expected


def test_canonical_names_are_short_stable_and_never_a_cold_runs():
    assert canonical_domain("hello") == "warm-hello.ci.local"
    assert stack_name(canonical_domain("hello")) == "warm-hello_ci_local"
    long = "a-very-long-recipe-name-indeed-for-nextcloud"
    assert canonical_domain(long) == canonical_domain(long)          # stable
    assert len(stack_name(canonical_domain(long))) <= 30              # room for secret names
    assert slug(long) != slug(long + "x")
    assert not COLD.match(canonical_domain("a1b2c3").split(".")[0])   # "warm-a1b2c3" is cold-shaped
    for _ in range(50):
        assert COLD.match(run_domain("warm").split(".")[0])
        assert run_domain("warm") != canonical_domain("warm")


def test_registry_record_and_last_good(tmp_path):
    canonical = Canonical(tmp_path, "hello")
    assert canonical.unusable().startswith("no canonical of hello")
    canonical.set_record(status="seeding", stack="warm-hello_ci_local")
    assert canonical.unusable() == "the canonical of hello has no complete known-good snapshot"
    canonical.promoted({"version": "1.1.0+1", "commit": "abc", "domain": "warm-hello.ci.local",
                        "stack": "warm-hello_ci_local", "good": "g1"})
    record = canonical.record()
    assert (record["status"], record["version"], record["recipe"]) == ("ready", "1.1.0+1", "hello")
    assert canonical.last_good()["version"] == "1.1.0+1"
    canonical.set_record(status="seeding")         # a promotion under way, or a failed one
    assert canonical.last_good()["version"] == "1.1.0+1"
    assert [c.recipe for c in canonicals(tmp_path)] == ["hello"]


def test_a_second_run_waits_for_the_canonical_then_gives_up(tmp_path):
    canonical = Canonical(tmp_path, "hello")
    order, lines = [], []

    def holder():
        with canonical.lock():
            order.append("first+")
            time.sleep(0.6)
            order.append("first-")

    thread = threading.Thread(target=holder)
    thread.start()
    time.sleep(0.2)
    with canonical.lock(log=lines.append):
        order.append("second")
    thread.join()
    assert order == ["first+", "first-", "second"]
    assert "another run holds it" in lines[0]
    with canonical.lock():
        with pytest.raises(WarmError, match="stayed locked"):
            with Canonical(tmp_path, "hello").lock(timeout=0.3, log=lambda _: None):
                pass


def tagged_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for version in ("1.0.0+1", "1.1.0+1"):
        (repo / "f").write_text(version)
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", version)
        git(repo, "tag", version)
    return repo


@pytest.mark.parametrize("params,why", [
    ({"CCCI_WARM": "0"}, "the project is not enrolled for a warm canonical"),
    ({"CCCI_QUICK": "1"}, "quick runs never promote"),
    ({"ZUUL_CHANGE": "4"}, "a change under test (only branch runs promote)"),
])
def test_a_run_that_is_not_an_enrolled_cold_branch_run_never_promotes(tmp_path, params, why):
    from recipe_helpers import context
    ctx, _ = context(tagged_repo(tmp_path), "systest", **{"CCCI_WARM": "1", **params})
    assert promote.why_not(ctx) == why


def test_only_the_latest_release_promotes(tmp_path):
    from recipe_helpers import context
    repo = tagged_repo(tmp_path)
    ctx, _ = context(repo, "systest", CCCI_WARM="1")
    assert promote.why_not(ctx) == ""
    git(repo, "checkout", "-q", "1.0.0+1")
    assert promote.why_not(ctx) == "the head is not the latest release 1.1.0+1"
    git(repo, "checkout", "-q", "main")
    (repo / "f").write_text("unreleased")
    git(repo, "commit", "-qam", "after the release")
    assert promote.why_not(ctx) == "the head is not the latest release 1.1.0+1"


# --- the upgrade base: the layout's, the canonical's, the newest older tag, the tip --------------

COMPOSE = """\
services:
  app:
    image: busybox:1
    deploy:
      labels: ["coop-cloud.${STACK_NAME}.version=VERSION"]
"""


def release(repo: Path, version: str, tag: bool = True) -> None:
    (repo / "compose.yml").write_text(COMPOSE.replace("VERSION", version))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", version)
    if tag:
        git(repo, "tag", version)


def base_of(repo: Path, tmp_path: Path, **params) -> tuple[str, str]:
    from ccci_gate.swarm.recipe import Recipe
    from ccci_gate.worker.kinds.systest import RecipeSystest
    from recipe_helpers import context
    ctx, _ = context(repo, "systest", **params)
    ref, dest, why = RecipeSystest().upgrade_base(ctx, Recipe(repo, "hello", domain="h.ci.local"))
    git(repo, "worktree", "remove", "--force", str(dest))
    return ref, why


def fake_known_good(root: Path, version: str, commit: str = "") -> None:
    canonical = Canonical(root, "hello")
    snap = canonical.snapshots / "snap-1"
    snap.mkdir(parents=True)
    (snap / "meta.json").write_text(json.dumps({"version": version, "commit": commit,
                                                "good": "g1", "volumes": []}))
    (canonical.snapshots / "current").symlink_to("snap-1")
    (canonical.dir / "goods" / "g1").mkdir(parents=True)
    (canonical.dir / "goods" / "g1" / "bundle.tar.gz").write_bytes(b"")


def test_upgrade_base_order(tmp_path, monkeypatch):
    monkeypatch.setenv("CCCI_WARM_ROOT", str(tmp_path / "warm"))
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    release(repo, "1.0.0+1")
    release(repo, "1.1.0+1")
    release(repo, "1.2.0+1", tag=False)     # the head under test
    assert base_of(repo, tmp_path) == ("1.1.0+1", "the newest older release tag")
    assert base_of(repo, tmp_path, CCCI_UPGRADE_BASE="1.0.0+1") == (
        "1.0.0+1", "the layout's explicit upgrade base")
    with pytest.raises(Exception, match="not a ref of the recipe"):
        base_of(repo, tmp_path, CCCI_UPGRADE_BASE="9.9.9+9")
    fake_known_good(tmp_path / "warm", "1.0.0+1")
    assert base_of(repo, tmp_path) == ("1.1.0+1", "the newest older release tag")  # not enrolled
    assert base_of(repo, tmp_path, CCCI_WARM="1") == (
        "1.0.0+1", "the canonical's known-good version 1.0.0+1")


def test_upgrade_base_never_the_heads_own_version(tmp_path, monkeypatch):
    monkeypatch.setenv("CCCI_WARM_ROOT", str(tmp_path / "warm"))
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    release(repo, "1.0.0+1")
    release(repo, "1.1.0+1")
    # the head is the release itself (a promotion run), with its canonical at that version
    fake_known_good(tmp_path / "warm", "1.1.0+1")
    assert base_of(repo, tmp_path, CCCI_WARM="1") == ("1.0.0+1", "the newest older release tag")
    (repo / "notes").write_text("a fix that keeps the version")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "same version, new commit")
    assert base_of(repo, tmp_path) == ("1.0.0+1", "the newest older release tag")


def test_upgrade_base_without_tags_is_the_branch_tip(tmp_path):
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    release(repo, "1.0.0+1", tag=False)
    release(repo, "1.1.0+1", tag=False)
    assert base_of(repo, tmp_path) == ("HEAD~1", "the target branch tip")


def test_quick_falls_back_to_cold_when_the_canonical_stays_locked(tmp_path, monkeypatch):
    from ccci_gate.swarm.host import Host
    from ccci_gate.worker.kinds.quick import QuickLane
    from ccci_gate.worker.kinds.systest import RecipeSystest
    from recipe_helpers import context
    monkeypatch.setenv("CCCI_WARM_ROOT", str(tmp_path / "warm"))
    fake_known_good(tmp_path / "warm", "1.1.0+1")
    kind = RecipeSystest(host=Host(tmp_path / "state"))
    ctx, lines = context(tmp_path, "systest", CCCI_WARM="1", CCCI_QUICK="1",
                         CCCI_WARM_WAIT="0.5")
    assert Canonical(tmp_path / "warm", "hello").unusable() == ""
    with Canonical(tmp_path / "warm", "hello").lock():
        assert QuickLane(kind).run(ctx) is None
    text = "".join(lines)
    assert "waiting for the canonical of hello: another run holds it" in text
    assert "lane: cold (quick asked for, but the canonical of hello stayed locked" in text
    ctx, lines = context(tmp_path, "systest", CCCI_QUICK="1")
    assert QuickLane(kind).run(ctx) is None
    assert "lane: cold (quick asked for, but the project is not enrolled" in "".join(lines)
