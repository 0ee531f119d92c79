"""Honest verdicts under injected faults: one recipe change per fault, run through the
real Swarm job kinds on a real engine. A broken head must never pass; a good one must
not be failed; a fault of the host is an ERROR named as such, never the change's
FAILURE. Under CI these fail, not skip, when Docker is missing."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from ccci_gate.worker.kinds import get_kind

from fault_recipes import SERVE, make_faulty
from recipe_helpers import checkout, context, run_graph

pytestmark = pytest.mark.docker


def run_kind(tmp_path: Path, host, kind: str, repo: Path, sha: str) -> tuple[str, str, float]:
    ws = checkout(repo, tmp_path / f"ws-{kind}", "refs/pull/1/head")
    ctx, lines = context(ws, kind, recipe="faulty", ZUUL_COMMIT=sha)
    runner = get_kind(kind)
    runner._host = host
    started = time.monotonic()
    result = runner.run(ctx)
    return result, "".join(lines), time.monotonic() - started


def app(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]["app"]


def sidecar(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]["sidecar"]


# --- a good head passes, with everything a deploy reads ------------------------------------

def test_a_good_head_passes_and_data_survival_is_asked_of_the_app(tmp_path, port, host):
    repo, sha = make_faulty(tmp_path / "repos")
    result, log, _ = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "SUCCESS", log
    assert "the head runs on every service" in log
    assert "stayed healthy for the settle window of 6s" in log
    assert "answered 200 to a probe on the stack's network" in log
    assert "seeded a note" in log and "the note survived" in log
    assert "app-level data survival: verified by the recipe's tests/ccci-verify" in log


# --- false PASS: a broken upgrade must fail with the true reason ----------------------------

def test_a_sidecar_rolled_back_fails(tmp_path, port, host):
    def fault(compose):
        sidecar(compose)["command"] = ["sh", "-c", "exit 4"]
    repo, sha = make_faulty(tmp_path / "repos", fault)
    result, log, _ = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "FAILURE", log
    assert "service sidecar: head applied, then swarm rolled back" in log, log
    assert "non-zero exit (4)" in log
    assert "evidence: sidecar: image ccci-test/busybox:2; update rollback_completed" in log
    assert "service sidecar runs image ccci-test/busybox:2, not the head's ccci-test/busybox:3 " \
           "(left at the base's image)" in log


CRASH_LATE = ["sh", "-c", "httpd -p 8080 -h /www; sleep 8; exit 3"]   # 2 × the 4 s monitor


@pytest.mark.parametrize("kind", ["recipe-install", "recipe-systest"])
def test_a_crash_after_the_update_monitor_fails(tmp_path, port, host, kind):
    def fault(compose):
        app(compose)["command"] = CRASH_LATE
        app(compose)["deploy"]["labels"][2] = "ccci.settle=12"
    repo, sha = make_faulty(tmp_path / "repos", fault)
    result, log, _ = run_kind(tmp_path, host, kind, repo, sha)
    assert result == "FAILURE", log
    assert "service app: task" in log and "(exit code 3)" in log, log
    assert "into the settle window" in log
    assert "watching every service for 12s" in log


def test_a_volume_moved_fails(tmp_path, port, host):
    def fault(compose):
        app(compose)["volumes"] = ["data:/srv/data"]
    repo, sha = make_faulty(tmp_path / "repos", fault)
    result, log, _ = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "FAILURE", log
    assert "volume data moved from /data to /srv/data (service app)" in log, log


def test_a_volume_renamed_fails(tmp_path, port, host):
    def fault(compose):
        app(compose)["volumes"] = ["notesdata:/data"]
        compose["volumes"] = {"notesdata": None}
    repo, sha = make_faulty(tmp_path / "repos", fault)
    result, log, _ = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "FAILURE", log
    assert "volume data orphaned (service app mounted it at /data), new empty volume notesdata" in log, log


def test_data_lost_behind_the_same_mount_is_caught_by_the_apps_own_verify(tmp_path, port, host):
    def fault(compose):
        app(compose)["command"] = ["sh", "-c", "rm -f /data/note; exec " + " ".join(SERVE)]
    repo, sha = make_faulty(tmp_path / "repos", fault)
    result, log, _ = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "FAILURE", log
    assert "the note is gone" in log and "tests/ccci-verify failed" in log, log


# --- false ERROR: a good recipe must be able to pass -------------------------------------------

def test_a_head_adding_a_secret_gets_it_generated(tmp_path, port, host):
    def fault(compose):
        app(compose)["secrets"].append("api_key")
        compose["secrets"]["api_key"] = {
            "external": True, "name": "${STACK_NAME}_api_key_${SECRET_API_KEY_VERSION}"}
    repo, sha = make_faulty(tmp_path / "repos", fault, env="SECRET_API_KEY_VERSION=v1\n")
    result, log, _ = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "SUCCESS", log
    assert "generated 1 secret(s) the head adds: " in log and "_api_key_v1" in log


# --- fail fast, and name the host's faults as the host's ----------------------------------------

def test_a_missing_image_fails_in_seconds(tmp_path, port, host):
    def fault(compose):
        app(compose)["image"] = "ccci-test/busybox:no-such-tag"
    repo, sha = make_faulty(tmp_path / "repos", fault)
    result, log, took = run_kind(tmp_path, host, "recipe-install", repo, sha)
    assert result == "FAILURE", log
    assert "No such image: ccci-test/busybox:no-such-tag" in log
    assert took < 30, f"{took:.0f}s: should fail well within the recipe's 60 s timeout"


def test_a_task_wanting_more_memory_than_the_host_has_is_an_infra_error(tmp_path, port, host):
    def fault(compose):
        app(compose)["deploy"]["resources"] = {"reservations": {"memory": "100000G"}}
    repo, sha = make_faulty(tmp_path / "repos", fault)
    result, log, took = run_kind(tmp_path, host, "recipe-install", repo, sha)
    assert result == "ERROR", log
    assert "INFRASTRUCTURE ERROR" in log and "no suitable node" in log, log
    assert took < 30, log


def test_a_task_killed_at_its_own_memory_limit_is_the_changes_failure(tmp_path, port, host):
    def fault(compose):
        app(compose)["command"] = ["sh", "-c", "httpd -p 8080 -h /www; sleep 2; "
                                               "exec busybox tail /dev/zero"]
        app(compose)["deploy"]["resources"] = {"limits": {"memory": "16M"}}
    repo, sha = make_faulty(tmp_path / "repos", fault)
    result, log, _ = run_kind(tmp_path, host, "recipe-install", repo, sha)
    assert result == "FAILURE", log
    assert "killed at the memory limit its recipe declares (16 MiB" in log, log


def test_a_recipe_reading_files_deploys_from_its_bundle(tmp_path, port, monkeypatch):
    """configs and secrets with ``file:``, an ``env_file`` and a second overlay named by
    ``COMPOSE_FILE`` all travel in the published bundle; the head also adds a secret."""
    monkeypatch.setenv("CCCI_SWARM_STATE", str(tmp_path / "swarm-state"))
    files = {"notes.conf": "greeting=hello\n", "app.env": "NOTES=/etc/notes.conf\n",
             "compose.extra.yml": "version: '3.8'\nservices:\n  app:\n    environment:\n"
                                  "      - EXTRA=1\n"}

    def base(compose):
        app(compose)["configs"] = [{"source": "notes", "target": "/etc/notes.conf"}]
        app(compose)["env_file"] = ["./app.env"]
        compose["configs"] = {"notes": {"file": "./notes.conf"}}

    def fault(compose):
        app(compose)["secrets"].append("api_key")
        compose["secrets"]["api_key"] = {
            "external": True, "name": "${STACK_NAME}_api_key_${SECRET_API_KEY_VERSION}"}
    repos = tmp_path / "repos"
    make_faulty(repos, fault, base=base, base_files=files,
                env='SECRET_API_KEY_VERSION=v1\nCOMPOSE_FILE="compose.yml:compose.extra.yml"\n')
    item = run_graph(tmp_path, repos, 1, project="coop-cloud/faulty")
    results = {j["name"]: j["result"] for j in item["jobs"]}
    assert results == {"build": "SUCCESS", "publish": "SUCCESS", "install": "SUCCESS",
                       "systest": "SUCCESS"}, item["logs"]
    assert "deploying the published bundle" in item["logs"]["install"]
    assert "generated 1 secret(s) the head adds" in item["logs"]["systest"]


def test_a_compose_docker_refuses_is_the_changes_failure(tmp_path, port, host):
    def fault(compose):
        app(compose)["deploy"]["resources"] = {"limits": {"memory": "lots"}}
    repo, sha = make_faulty(tmp_path / "repos", fault)
    result, log, _ = run_kind(tmp_path, host, "recipe-install", repo, sha)
    assert result == "FAILURE", log
    assert "docker stack deploy" in log and "INFRASTRUCTURE" not in log, log
