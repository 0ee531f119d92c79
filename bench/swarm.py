"""Snapshot and restore throughput beside plain tar, and the cold install of the test recipe.

Needs a Docker Engine in swarm mode (and Debian's busybox-static for the test image).
A docker volume of ``--megabytes`` of incompressible files is snapshotted and restored
with ``ccci_gate.swarm.snapshot``; in the same run, ``tar -cf`` (with and without an
fsync of the archive — a snapshot is made durable before it replaces the known-good
one) and ``tar -xf`` of the same directory are timed as baselines (median of
``--rounds``, alternating, each starting with no dirty pages and, as root, a dropped
page cache).
Then the test recipe (tests/recipe_helpers.py) is cold-installed: deploy, converge and
healthy, settle (its 5 s window), serving probed from the stack's network, teardown
proven empty.

    python3 bench/swarm.py [--megabytes 300] [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ccci_gate.swarm.deploy import App  # noqa: E402
from ccci_gate.swarm.port import SwarmPort  # noqa: E402
from ccci_gate.swarm.recipe import Recipe, run_domain  # noqa: E402
from ccci_gate.swarm.snapshot import restore, snapshot  # noqa: E402
from recipe_helpers import make_recipe  # noqa: E402


def timed(fn) -> float:
    """Seconds ``fn`` takes, each op starting alike: no dirty pages (each pays its own
    writeback) and, where allowed (root), a dropped page cache (each reads from disk)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def durable_tar(source: Path, dest: Path) -> None:
    """The baseline a snapshot must beat: tar, then the archive on disk (fsync)."""
    subprocess.run(["tar", "-C", str(source), "-cf", str(dest), "."], check=True)
    fd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    port = SwarmPort()
    stack = "bench-" + os.urandom(3).hex()
    work = Path(tempfile.mkdtemp(prefix="ccci-bench-"))
    try:
        mount = port.create_volume(f"{stack}_data", stack)
        for n in range(args.megabytes):
            folder = mount / f"d{n % 10}"
            folder.mkdir(exist_ok=True)
            (folder / f"f{n}").write_bytes(os.urandom(1024 * 1024))
        size = sum(p.stat().st_size for p in mount.rglob("*") if p.is_file()) / 1e6
        plain = work / "plain.tar"
        rows: dict[str, list[float]] = {k: [] for k in ("tar -cf", "tar+fsync", "snapshot",
                                                        "tar -xf", "restore")}
        for _ in range(args.rounds):
            plain.unlink(missing_ok=True)
            rows["tar -cf"].append(timed(lambda: subprocess.run(
                ["tar", "-C", str(mount), "-cf", str(plain), "."], check=True)))
            plain.unlink()
            rows["tar+fsync"].append(timed(lambda: durable_tar(mount, plain)))
            snap = None

            def take():
                nonlocal snap
                snap = snapshot(port, stack, work / "snaps", {"recipe": "bench"})
            rows["snapshot"].append(timed(take))
            target = work / "untar"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            rows["tar -xf"].append(timed(lambda: subprocess.run(
                ["tar", "-C", str(target), "-xf", str(plain)], check=True)))
            rows["restore"].append(timed(lambda: restore(port, stack, snap)))
        med = {k: statistics.median(v) for k, v in rows.items()}
        print(f"volume of {size:.0f} MB, median of {args.rounds} rounds")
        print(f"{'operation':<10} {'seconds':>8} {'MB/s':>8}")
        for name, seconds in med.items():
            print(f"{name:<10} {seconds:>8.2f} {size / seconds:>8.0f}")
        print(f"snapshot throughput: {med['tar+fsync'] / med['snapshot']:.2f}x tar+fsync (both "
              f"durable), {med['tar -cf'] / med['snapshot']:.2f}x plain tar (page cache only); "
              f"restore: {med['tar -xf'] / med['restore']:.2f}x tar -xf (target >= 0.8x)")
    finally:
        port.purge(stack)
        shutil.rmtree(work, ignore_errors=True)

    root = Path(tempfile.mkdtemp(prefix="ccci-bench-recipe-"))
    try:
        repo = make_recipe(root)
        app = App(port, Recipe(repo, "hello", domain=run_domain("hello")), log=lambda _: None)
        start = time.perf_counter()
        app.create_secrets()
        app.deploy()
        converged = app.wait_converged(120)
        up = time.perf_counter() - start
        app.settle()                       # the recipe's ccci.settle label: 5 s
        settled = time.perf_counter() - start
        app.probe()
        probed = time.perf_counter() - start
        app.teardown()
        total = time.perf_counter() - start
        print(f"cold install of the test recipe: converged and healthy in {up:.1f}s "
              f"({len(converged)} service), settled (5 s window) at {settled:.1f}s, serving "
              f"probed from the stack's network at {probed:.1f}s, torn down and proven empty "
              f"at {total:.1f}s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
