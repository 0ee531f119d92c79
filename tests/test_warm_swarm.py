"""Warm canonicals and the quick lane on a real Docker Engine in swarm mode, with the
fault recipe (seed and verify hooks that write and read a note through the app). After
every test the swarm holds nothing: each drops its canonical. Under CI these fail, not
skip, when Docker is missing."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from ccci_gate.swarm import warm
from ccci_gate.worker.kinds import get_kind, promote, quick

from fault_recipes import SERVE, make_faulty
from recipe_helpers import checkout, context

pytestmark = pytest.mark.docker


def snapshot_bytes(canonical: warm.Canonical) -> dict[str, bytes]:
    """Every file of the known-good snapshot, byte for byte."""
    snap = Path(canonical.known_good()["snapshot"])
    return {p.name: p.read_bytes() for p in sorted(snap.iterdir())}


def systest(tmp_path, host, repo, ref, name, **params) -> tuple[str, str]:
    ws = checkout(repo, tmp_path / f"ws-{name}", ref)
    ctx, lines = context(ws, "systest", recipe="faulty", CCCI_WARM="1", **params)
    kind = get_kind("recipe-systest")
    kind._host = host
    return kind.run(ctx), "".join(lines)


def seed(tmp_path, host, repo) -> warm.Canonical:
    """Promote main (the latest release, 1.1.0+1) straight to the canonical (the promotion
    step alone, without the cold systest that would come before it)."""
    ws = checkout(repo, tmp_path / "ws-seed", "main")
    ctx, lines = context(ws, "systest", recipe="faulty", CCCI_WARM="1")
    kind = get_kind("recipe-systest")
    kind._host = host
    assert promote.why_not(ctx) == ""
    assert promote.Promotion(kind).run(ctx) == "SUCCESS", "".join(lines)
    return quick.canonical_for(ctx)


def test_green_cold_tagged_run_promotes_and_quick_pass_keeps_the_known_good(
        tmp_path, port, host, warm_root):
    repo, sha = make_faulty(tmp_path / "repos")
    result, log = systest(tmp_path, host, repo, "main", "promote")
    assert result == "SUCCESS", log
    assert "lane: cold" in log and "upgrade base: 1.0.0+1" in log
    assert "promoted: the canonical warm-faulty_ci_local is now known-good at 1.1.0+1" in log
    canonical = warm.Canonical(warm_root, "faulty")
    [row] = warm.listing(warm_root)
    assert (row["status"], row["version"], row["stack"]) == ("ready", "1.1.0+1",
                                                             "warm-faulty_ci_local")
    assert canonical.last_good()["version"] == "1.1.0+1"
    assert port.services("warm-faulty_ci_local") == []       # data-warm: undeployed
    known = snapshot_bytes(canonical)

    result, log = systest(tmp_path, host, repo, "refs/pull/1/head", "quick", CCCI_QUICK="1",
                          ZUUL_CHANGE="1", ZUUL_COMMIT=sha)
    assert result == "SUCCESS", log
    assert "lane: quick, on the canonical warm-faulty_ci_local from its known-good 1.1.0+1" in log
    assert "the head runs on every service" in log and "the note survived" in log
    assert "app-level data survival: verified by the recipe's tests/ccci-verify" in log
    assert "answered 200 to a probe" in log and "quick PASS" in log
    assert "promot" not in log.replace("promoted 20", "")     # quick never promotes
    assert snapshot_bytes(canonical) == known                # byte-identical known-good
    assert canonical.last_good()["version"] == "1.1.0+1"
    assert port.services("warm-faulty_ci_local") == [] and port.volumes("warm-faulty_ci_local")
    assert host.janitor(port, log=lambda _: None) == []      # no lease: never reaped
    assert port.volumes("warm-faulty_ci_local")


def corrupt(compose):
    compose["services"]["app"]["command"] = ["sh", "-c", "rm -f /data/note; " + " ".join(SERVE)]


def roll_back(compose):
    compose["services"]["sidecar"]["command"] = ["sh", "-c", "exit 4"]


@pytest.mark.parametrize("fault,why", [(roll_back, "head applied, then swarm rolled back"),
                                       (corrupt, "the note is gone")],
                         ids=["rolled-back", "corrupts-data"])
def test_quick_fail_restores_the_known_good_exactly(tmp_path, port, host, warm_root, fault, why):
    repo, sha = make_faulty(tmp_path / "repos", fault)
    canonical = seed(tmp_path, host, repo)
    stack = canonical.stack()
    known = snapshot_bytes(canonical)
    data = warm.volumes_digest(port, stack)
    result, log = systest(tmp_path, host, repo, "refs/pull/1/head", "quick", CCCI_QUICK="1",
                          ZUUL_CHANGE="1", ZUUL_COMMIT=sha)
    assert result == "FAILURE", log
    assert why in log
    assert "restored the known-good 1.1.0+1 of warm-faulty_ci_local exactly" in log
    assert warm.volumes_digest(port, stack) == data
    assert snapshot_bytes(canonical) == known
    assert port.services(stack) == [] and canonical.record()["status"] == "ready"


def test_a_failed_restore_is_an_infra_error_with_an_alert(tmp_path, port, host, warm_root,
                                                          monkeypatch):
    repo, sha = make_faulty(tmp_path / "repos", roll_back)
    canonical = seed(tmp_path, host, repo)
    calls = []
    real = quick.restore

    def restore_once(*args):
        calls.append(args)
        if len(calls) > 1:
            raise quick.SnapshotError("tar -xpf: No space left on device")
        return real(*args)

    monkeypatch.setattr(quick, "restore", restore_once)
    result, log = systest(tmp_path, host, repo, "refs/pull/1/head", "quick", CCCI_QUICK="1",
                          ZUUL_CHANGE="1", ZUUL_COMMIT=sha)
    assert result == "ERROR", log
    assert "ALERT: the known-good of warm-faulty_ci_local could not be restored" in log
    assert canonical.record()["status"] == "broken"
    assert "is broken" in canonical.unusable()


def test_no_canonical_falls_back_to_cold(tmp_path, port, host, warm_root):
    repo, sha = make_faulty(tmp_path / "repos")
    result, log = systest(tmp_path, host, repo, "refs/pull/1/head", "quick", CCCI_QUICK="1",
                          ZUUL_CHANGE="1", ZUUL_COMMIT=sha)
    assert result == "SUCCESS", log
    assert "lane: cold (quick asked for, but no canonical of faulty on this host" in log
    assert "upgrade base: 1.1.0+1" in log and "round trip" in log
    assert warm.canonicals(warm_root) == []     # quick never promotes, not even a first seed


PRUNE_LAYOUT = """\
pipelines:
  - {name: quick, quick: true, trigger: {admin: []}}
projects:
  - {name: coop-cloud/hello, warm: true, quick: [systest]}
  - {name: coop-cloud/gone, quick: [systest]}
jobs:
  - {name: systest, kind: recipe-systest}
"""


def test_prune_removes_exactly_the_de_enrolled_warm_data(tmp_path, port, warm_root):
    for recipe in ("hello", "gone"):
        canonical = warm.Canonical(warm_root, recipe)
        canonical.set_record(status="ready", stack=canonical.stack())
        (port.create_volume(f"{canonical.stack()}_data", canonical.stack()) / "f").write_text(recipe)
        port.create_secret(f"{canonical.stack()}_pw_v1", b"x", canonical.stack())
    (tmp_path / "layout.yaml").write_text(PRUNE_LAYOUT)
    argv = [sys.executable, "-m", "ccci_gate.cli", "warm", "prune", "--layout",
            str(tmp_path / "layout.yaml")]
    reply = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert "prune: gone is no longer enrolled: freed volumes: warm-gone_ci_local_data" in reply
    assert "secrets: warm-gone_ci_local_pw_v1" in reply
    assert "1 canonical(s) dropped, kept those of hello" in reply
    assert port.leftovers("warm-gone_ci_local") == {}
    assert not (warm_root / "gone").exists()
    assert port.volumes("warm-hello_ci_local") and (warm_root / "hello" / "record.json").exists()
    listing = subprocess.run([sys.executable, "-m", "ccci_gate.cli", "warm", "list"],
                             capture_output=True, text=True, check=True).stdout
    assert listing.startswith("hello") and "gone" not in listing


QUICK_CHILD = """
import sys
import time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from ccci_gate.swarm.host import Host
from ccci_gate.worker.kinds import get_kind
from recipe_helpers import context
ctx, lines = context(Path(sys.argv[2]), "systest", recipe="faulty", CCCI_WARM="1",
                     CCCI_QUICK="1", ZUUL_CHANGE="1", ZUUL_COMMIT=sys.argv[3])
kind = get_kind("recipe-systest")
kind._host = Host(Path(sys.argv[4]), max_tests=2)
print(kind.run(ctx))
"""


def test_a_worker_killed_mid_quick_leaves_the_canonical_restorable(tmp_path, port, host,
                                                                   warm_root):
    repo, sha = make_faulty(tmp_path / "repos")
    canonical = seed(tmp_path, host, repo)
    stack, known = canonical.stack(), snapshot_bytes(canonical)
    ws = checkout(repo, tmp_path / "ws-killed", "refs/pull/1/head")
    proc = subprocess.Popen([sys.executable, "-c", QUICK_CHILD, str(Path(__file__).parent),
                             str(ws), sha, str(host.state)], stdout=subprocess.DEVNULL)
    try:
        def upgraded() -> bool:
            return any(s.labels.get(f"coop-cloud.{stack}.chaos-version") == sha[:8]
                       for s in port.services(stack))
        deadline = time.monotonic() + 120
        while not upgraded() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert upgraded(), "the quick run never deployed the head"
    finally:
        proc.kill()
        proc.wait()
    assert port.services(stack) and canonical.record()["status"] == "quick"
    assert host.janitor(port, log=lambda _: None) == [] and port.services(stack)
    result, log = systest(tmp_path, host, repo, "refs/pull/1/head", "again", CCCI_QUICK="1",
                          ZUUL_CHANGE="1", ZUUL_COMMIT=sha)
    assert result == "SUCCESS", log
    assert "reattached warm-faulty_ci_local at 1.1.0+1" in log and "the note survived" in log
    assert snapshot_bytes(canonical) == known and port.services(stack) == []
