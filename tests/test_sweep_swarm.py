"""The nightly sweep on a real Docker Engine in swarm mode (images from ``docker import``):
what it runs and promotes, what it leaves alone, what it prunes, and that it never has
more apps up than the host's ``max_tests``. Under CI these fail, not skip, without Docker.
"""
from __future__ import annotations

import secrets
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import docker
import pytest

from ccci_gate.swarm import probe, warm
from ccci_gate.swarm.port import NAMESPACE, OWNED
from ccci_gate.worker.kinds.sweep import RecipeSweep

from e2e_helpers import admin, admin_pipeline, finished, start_gatekeeper
from git_helpers import git
from recipe_helpers import CRASH, build_image, checkout, context, make_recipe, write_release

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[1]


def snapshot_bytes(canonical: warm.Canonical) -> dict[str, bytes]:
    snap = Path(canonical.known_good()["snapshot"])
    return {p.name: p.read_bytes() for p in sorted(snap.iterdir())}


def sweep(tmp_path, host, repo, name, recipe="sweepy") -> tuple[str, str, str]:
    """The sweep job of a timer item (the branch checked out), as a worker runs it."""
    ws = checkout(repo, tmp_path / f"ws-{name}", "refs/heads/main")
    ctx, lines = context(ws, "sweep", recipe=recipe, CCCI_WARM="1",
                         CCCI_ENROLLED=f"coop-cloud/{recipe}")
    kind = RecipeSweep(host=host)     # not the worker's shared instance: its host stays
    return kind.run(ctx), ctx.message, "".join(lines)


def test_the_sweep_promotes_a_newer_release_skips_an_up_to_date_one_and_keeps_it_when_red(
        tmp_path, port, host, warm_root):
    repo = make_recipe(tmp_path / "repos", "sweepy")
    gone = warm.Canonical(warm_root, "gone")          # a recipe the layout no longer enrols
    gone.set_record(status="ready", stack=gone.stack())
    (port.create_volume(f"{gone.stack()}_data", gone.stack()) / "f").write_text("old")

    result, message, log = sweep(tmp_path, host, repo, "first")
    assert result == "SUCCESS", log
    assert "sweep: no canonical of sweepy on this host yet; running 1.1.0+1" in log
    assert "prune: gone is no longer enrolled: freed volumes: warm-gone_ci_local_data" in log
    assert "lane: cold" in log and "upgrade base: 1.0.0+1" in log
    commit = git(repo, "rev-parse", "1.1.0+1^{commit}")
    assert message == (f"promoted 1.1.0+1 (commit {commit[:8]}): the canonical's known-good "
                       f"was none; pruned the canonicals of gone")
    assert port.leftovers(gone.stack()) == {} and not gone.dir.exists()
    canonical = warm.Canonical(warm_root, "sweepy")
    assert canonical.known_good()["version"] == "1.1.0+1"
    known = snapshot_bytes(canonical)

    result, message, log = sweep(tmp_path, host, repo, "again")
    assert (result, message) == ("SUCCESS", "up to date: the latest release 1.1.0+1 is not "
                                            "newer than the canonical's known-good 1.1.0+1")
    assert "lane:" not in log and snapshot_bytes(canonical) == known

    write_release(repo, "1.2.0+1", build_image("3"), command=CRASH)   # a red release
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "release 1.2.0+1")
    git(repo, "tag", "1.2.0+1")
    result, message, log = sweep(tmp_path, host, repo, "red")
    assert result == "FAILURE", log
    assert "the latest release 1.2.0+1 is newer than the known-good 1.1.0+1" in log
    assert "upgrade base: 1.1.0+1 (1.1.0+1; the canonical's known-good version" in log
    assert message == "1.2.0+1 is red (FAILURE): the canonical keeps its known-good 1.1.0+1"
    assert snapshot_bytes(canonical) == known and canonical.last_good()["version"] == "1.1.0+1"
    assert port.services(canonical.stack()) == [] and port.volumes(canonical.stack())


def rootfs() -> bytes:
    """busybox with sh and sleep, for a container that keeps running."""
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add("/bin/busybox", arcname="bin/busybox")
        for applet in ("sh", "sleep"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return buf.getvalue()


def test_image_prune_removes_only_our_unused_images_never_a_volume_or_an_image_in_use(
        tmp_path, port):
    tag = secrets.token_hex(4)
    ours, used, kept = (f"ccci-test/sweep-{what}:{tag}" for what in ("ours", "used", "kept"))
    foreign = f"ccci-test/sweep-foreign:{tag}"
    client = docker.from_env()
    for name in (ours, used, kept):
        port.import_image(name, rootfs())                   # labelled ccci-gate.owned
    subprocess.run(["docker", "import", "-", foreign], input=rootfs(), check=True,
                   capture_output=True)                     # someone else's: no label
    stack = f"ccci-test-sweep-{tag}"
    volume = port.create_volume(f"{stack}_data", stack)
    (volume / "f").write_text("data")
    container = client.containers.run(used, ["sh", "-c", "while true; do sleep 1; done"],
                                      detach=True, labels={NAMESPACE: stack},
                                      volumes={f"{stack}_data": {"bind": "/data"}})
    try:
        assert client.images.get(ours).labels.get(OWNED) == "1"
        removed, freed = port.prune_owned_images(keep=frozenset({kept, probe.IMAGE}))
        assert ours in removed and freed > 0
        assert not {used, kept, foreign} & set(removed)
        for name in (used, kept, foreign):
            client.images.get(name)                         # still there
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get(ours)
        assert (volume / "f").read_text() == "data" and port.volumes(stack)
    finally:
        container.remove(force=True)
        port.purge(stack)
        for name in (used, kept, foreign):
            subprocess.run(["docker", "rmi", name], capture_output=True)


LAYOUT = admin_pipeline("periodic", manager="serial") + textwrap.dedent("""
    projects:
      - name: coop-cloud/alpha
        warm: true
        periodic: [sweep]
      - name: coop-cloud/bravo
        warm: true
        periodic: [sweep]
    """)
RECIPES = ("alpha", "bravo")


def apps_up(client: docker.DockerClient) -> set[str]:
    """The stacks of this test's recipes that have services (apps up), cold or canonical."""
    stacks = {s.attrs["Spec"]["Labels"].get(NAMESPACE, "")
              for s in client.services.list(filters={"label": NAMESPACE})}
    return {s for s in stacks if s.startswith(("alph-", "brav-", "warm-alpha", "warm-bravo"))}


def test_the_sweep_never_has_more_apps_up_than_max_tests(tmp_path, port, monkeypatch):
    """Two enrolled recipes swept at once by a worker that runs two builds at a time, on
    a host with ``max_tests`` 1: both wait their turn for the slot, and at no moment are
    two apps up. Then a second sweep finds both up to date and the items say so."""
    monkeypatch.setenv("CCCI_SWARM_STATE", str(tmp_path / "swarm-state"))
    monkeypatch.setenv("CCCI_WARM_ROOT", str(tmp_path / "warm"))
    monkeypatch.setenv("CCCI_MAX_TESTS", "1")
    repos = tmp_path / "repos"
    for recipe in RECIPES:
        make_recipe(repos, recipe)
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "sweep.yaml").write_text(LAYOUT)
    client = docker.from_env()
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(len(apps_up(client)))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    gk = start_gatekeeper(tmp_path, extra, ROOT / "jobs", repos, worker={"max-builds": 2},
                          layout=[str(ROOT / "jobs"), str(extra)])
    try:
        watcher.start()
        for recipe in RECIPES:
            reply = admin(gk, "/admin/enqueue", {"pipeline": "periodic", "project":
                                                 f"coop-cloud/{recipe}", "ref": "refs/heads/main"})
            assert reply.status_code == 202, reply.text
        items = finished(gk, 2, timeout=600)
        logs = [(gk.logs.read(i["jobs"][0]["id"]) or b"").decode() for i in items]
        assert [i["result"] for i in items] == ["SUCCESS", "SUCCESS"], logs
        assert all(i["jobs"][0]["message"].startswith("promoted 1.1.0+1") for i in items)
        assert any("waiting for a free test slot on this host (1 in use)" in log
                   for log in logs), "the two sweeps never ran at the same time"
        assert max(seen) == 1, f"apps up at once: {max(seen)}"
        for recipe in RECIPES:
            admin(gk, "/admin/enqueue", {"pipeline": "periodic", "project":
                                         f"coop-cloud/{recipe}", "ref": "refs/heads/main"})
        again = finished(gk, 4, timeout=120)[2:]
        assert sorted(i["jobs"][0]["message"] for i in again) == [
            "up to date: the latest release 1.1.0+1 is not newer than the canonical's "
            "known-good 1.1.0+1"] * 2
    finally:
        stop.set()
        gk.stop()
        for canonical in warm.canonicals(tmp_path / "warm"):
            warm.drop(port, canonical)
    assert len(seen) > 100     # the watcher really watched (~0.1 s a look)
