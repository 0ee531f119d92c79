"""The warm data a worker reports: its canonicals' rows with a disk use walked only when a
canonical's folder changed (no Docker: the canonical is written on disk, as in
``test_warm_routing.py``)."""
from __future__ import annotations

from ccci_gate.core.layout import JobConfig
from ccci_gate.swarm import warm
from ccci_gate.worker.warmlabels import WarmLabels

from test_warm_routing import fake_canonical


def test_disk_use_is_walked_again_only_when_the_canonical_changed(tmp_path, monkeypatch):
    canonical = fake_canonical(tmp_path / "warm", "hello")
    walks = []
    real = warm.disk_usage
    monkeypatch.setattr(warm, "disk_usage", lambda path: walks.append(path) or real(path))
    first = warm.listing(tmp_path / "warm")[0]["bytes"]
    assert first == real(canonical.dir) and len(walks) == 1
    for _ in range(5):
        assert warm.listing(tmp_path / "warm")[0]["bytes"] == first
    assert len(walks) == 1                       # cached
    canonical.set_record(status="quick")         # a quick run's record: walked again
    warm.listing(tmp_path / "warm")
    assert len(walks) == 2
    (canonical.dir / "goods" / "g-new").mkdir()   # a promotion's new good
    (canonical.dir / "goods" / "g-new" / "bundle.tar.gz").write_bytes(b"x" * 5000)
    assert warm.listing(tmp_path / "warm")[0]["bytes"] == real(canonical.dir) > first + 4900
    assert len(walks) == 3
    monkeypatch.setattr(warm, "USAGE_TTL", 0.0)  # and, whatever happened, after the TTL
    warm.listing(tmp_path / "warm")
    assert len(walks) == 4


def test_labels_follow_the_usable_canonicals(tmp_path):
    jobs = {"systest": JobConfig("systest", kind="recipe-systest"),
            "install": JobConfig("install", kind="recipe-install")}
    labels = WarmLabels(tmp_path / "warm")
    assert labels.look() is False and labels.functions(jobs, ["build:systest"]) == []
    canonical = fake_canonical(tmp_path / "warm", "hello")
    assert labels.look() is True and labels.recipes() == ("hello",)
    assert labels.functions(jobs, ["build:systest", "build:install"]) == \
        ["build:systest:warm:hello"]
    assert labels.functions(jobs, ["build:install"]) == []   # no systest here: no label
    assert labels.look() is False
    canonical.set_record(status="broken", why="restore failed")
    assert labels.look() is True and labels.recipes() == ()
    [row] = labels.report()["warm"]
    assert (row["recipe"], row["status"], row["version"]) == ("hello", "broken", "1.1.0+1")
