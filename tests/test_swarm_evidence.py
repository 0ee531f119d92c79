"""The pure rules behind Swarm verdicts, stepped with hand-made states (no Docker)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from ccci_gate.swarm import evidence, probe
from ccci_gate.swarm.evidence import ServiceState, TaskState
from ccci_gate.swarm.recipe import Recipe, RecipeError
from ccci_gate.worker.kinds.bundle import bundle_files, make_bundle, unpack_bundle

S = "hell-1a2b3c_ci_local"


def service(name: str = "app", **kw) -> ServiceState:
    base = dict(name=f"{S}_{name}", image="img:2", labels={}, desired=1, running=1, healthy=1,
                update_state="", update_message="", task_errors=(),
                tasks=(TaskState("t1", 1, "running", "running"),))
    base.update(kw)
    return ServiceState(**base)


def test_definitive_names_the_hosts_faults_as_infra():
    pending = TaskState("t2", 1, "pending", "running", age=6,
                        error="no suitable node (insufficient resources on 1 node)")
    problem = evidence.definitive([service(tasks=(pending,), running=0)], S)
    assert problem.infra and "no suitable node" in problem.message


def test_definitive_oom_is_the_changes_at_its_own_limit_and_the_hosts_without_one():
    oom = TaskState("t3", 1, "failed", "shutdown", exit_code=137, oom_killed=True)
    own = evidence.definitive([service(tasks=(oom,), memory_limit=16 * 2**20)], S)
    assert not own.infra and "memory limit its recipe declares (16 MiB" in own.message
    host = evidence.definitive([service(tasks=(oom,))], S)
    assert host.infra and "host's OOM killer" in host.message


def test_definitive_waits_for_a_crash_loop_before_calling_it():
    crash = [TaskState(f"c{n}", 1, "failed", "shutdown", error="task: non-zero exit (1)",
                       exit_code=1) for n in range(3)]
    assert evidence.definitive([service(tasks=tuple(crash[:2]), running=0)], S) is None
    problem = evidence.definitive([service(tasks=tuple(crash), running=0)], S)
    assert "3 starts failed" in problem.message and not problem.infra
    stale = tuple(replace(t, current=False) for t in crash)
    assert evidence.definitive([service(tasks=stale, running=0)], S) is None


def test_definitive_on_missing_image_and_paused_update():
    rejected = TaskState("r", 1, "rejected", "shutdown", error="No such image: x:9")
    assert "No such image" in evidence.definitive([service(tasks=(rejected,))], S).message
    paused = evidence.definitive([service(update_state="paused", update_message="update paused")], S)
    assert "update paused" in paused.message


def test_mount_changes_catch_moved_and_orphaned_volumes():
    before = [service(mounts=((f"{S}_data", "/data"),))]
    moved = [service(mounts=((f"{S}_data", "/srv/data"),))]
    renamed = [service(mounts=((f"{S}_notesdata", "/data"),))]
    assert evidence.mount_changes(before, before, S) == []
    assert evidence.mount_changes(before, moved, S) == [
        "volume data moved from /data to /srv/data (service app)"]
    assert evidence.mount_changes(before, renamed, S) == [
        "volume data orphaned (service app mounted it at /data), new empty volume notesdata"]


def test_every_service_counts_for_rollbacks_and_images():
    after = [service(), service("sidecar", update_state="rollback_completed",
                                update_message="rollback completed", image="img:2")]
    assert evidence.rollbacks(after, S) == [
        "service sidecar: head applied, then swarm rolled back: rollback completed"]
    assert evidence.reverted(after, {"app": "img:2", "sidecar": "img:3"}, {"sidecar": "img:2"}, S) == [
        "service sidecar runs image img:2, not the head's img:3 (left at the base's image)"]


def test_settle_window_and_what_breaks_it():
    window, why = evidence.settle_window([service(monitor=4, health_window=2)], 30)
    assert window == 30 and "floor 30s" in why
    assert evidence.settle_window([service(monitor=40)], 5)[0] == 40
    start = [service()]
    assert evidence.settle_problem(start, start, S, 1.0) is None
    died = [service(tasks=(TaskState("t1", 1, "failed", "shutdown", exit_code=3,
                                     error="task: non-zero exit (3)"),), running=0)]
    problem = evidence.settle_problem(start, died, S, 7.9)
    assert "(exit code 3)" in problem.message and "7.9s into the settle window" in problem.message
    sick = [service(tasks=(TaskState("t1", 1, "running", "running", health="unhealthy"),))]
    assert "turned unhealthy" in evidence.settle_problem(start, sick, S, 2).message


def test_image_change_without_a_version_bump_is_a_warning():
    label = f"coop-cloud.{S}.version"
    before = [service(labels={label: "1.1.0+1"})]
    after = [service(labels={label: "1.1.0+1"}, image="img:3")]
    [warning] = evidence.image_warnings(before, after, S, label)
    assert "version label stayed 1.1.0+1" in warning


def test_the_probe_asks_every_task_and_reads_each_answer():
    argv = probe.command(8080, "/health", ["10.0.1.5", "fd00::7"])
    assert argv[:2] == ["sh", "-c"] and argv[3:] == ["probe", ":8080/health", "10.0.1.5", "[fd00::7]"]
    assert "/health" not in argv[2]          # values are arguments, not script text
    output = ("== 10.0.1.5\n  HTTP/1.1 200 OK\n== exit 0\n== [fd00::7]\n  HTTP/1.1 404 Not Found\n"
              "wget: server returned error: HTTP/1.1 404 Not Found\n== exit 1\n== 10.0.1.9\n"
              "wget: can't connect to remote host (10.0.1.9): Connection refused\n== exit 1\n"
              "== 10.0.1.10\n")
    assert probe.answers(output) == {"10.0.1.5": 200, "fd00::7": 404, "10.0.1.9": None,
                                     "10.0.1.10": None}


def test_probe_status_codes():
    assert probe.status_code("  HTTP/1.1 301 Moved\n  HTTP/1.1 200 OK\n") == 200
    assert probe.status_code("wget: can't connect") is None
    assert probe.accepts("200-399", 302) and not probe.accepts("200,204", 404)
    assert probe.valid_codes("200,204") and not probe.valid_codes("ok")


def test_bundle_carries_every_file_the_compose_reads(tmp_path: Path):
    (tmp_path / "compose.yml").write_text(
        "version: '3.8'\nservices:\n  app:\n    image: x:1\n    env_file: ./app.env\n"
        "configs:\n  notes:\n    file: ./conf/notes.conf\nsecrets:\n  key:\n    file: key.txt\n")
    (tmp_path / "compose.extra.yml").write_text("version: '3.8'\n")
    (tmp_path / ".env.sample").write_text('COMPOSE_FILE="compose.yml:compose.extra.yml"\n')
    for name in ("app.env", "conf/notes.conf", "key.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(name)
    recipe = Recipe(tmp_path, "x")
    names = {str(p.relative_to(tmp_path)) for p in bundle_files(recipe)}
    assert names == {"compose.yml", "compose.extra.yml", ".env.sample", "app.env",
                     "conf/notes.conf", "key.txt"}
    unpack_bundle(make_bundle(recipe), tmp_path / "out")
    assert (tmp_path / "out" / "conf" / "notes.conf").read_text() == "conf/notes.conf"


def test_a_compose_reading_outside_the_recipe_is_refused(tmp_path: Path):
    (tmp_path / "compose.yml").write_text(
        "version: '3.8'\nservices: {app: {image: x:1}}\nconfigs:\n  c: {file: ../../etc/passwd}\n")
    recipe = Recipe(tmp_path, "x", domain="x.ci.local")
    assert any("outside the recipe" in p for p in recipe.lint())
    with pytest.raises(RecipeError, match="outside the recipe"):
        bundle_files(recipe)


def test_a_service_the_head_dropped_is_a_stray():
    assert evidence.strays([service(), service("old")], {"app": "img:2"}, S) == [
        "service old is not in the head but still runs (docker stack deploy does not remove "
        "services)"]


def test_a_task_pending_for_resources_is_the_hosts_only_once_nothing_frees_them():
    pending = TaskState("new", 1, "pending", "running", age=10,
                        error="no suitable node (insufficient resources on 1 node)")
    leaving = TaskState("old", 1, "running", "shutdown", current=False)
    waiting = [service(tasks=(pending, leaving), running=0)]
    assert evidence.definitive(waiting, S) is None          # stop-first: the old one goes
    young = [service(tasks=(replace(pending, age=1),), running=0)]
    assert evidence.definitive(young, S) is None            # the scheduler may yet place it
    gone = replace(leaving, state="shutdown", age=2)
    assert evidence.definitive([service(tasks=(pending, gone), running=0)], S) is None
    long_gone = replace(gone, age=60)
    assert evidence.definitive([service(tasks=(pending, long_gone), running=0)], S).infra
    refused = evidence.definitive([service(tasks=(pending,), running=0)], S)
    assert refused.infra and "insufficient resources" in refused.message
    # at the timeout, whatever is going on, waiting for the host is the host's fault
    assert evidence.waiting_for_host(waiting, S, grace=0).infra


def test_restart_policy_says_when_swarm_gives_up_and_when_a_one_shot_is_done():
    failed = TaskState("f1", 1, "failed", "shutdown", error="task: non-zero exit (5)",
                       exit_code=5)
    never = evidence.definitive([service(tasks=(failed,), running=0, restart="none")], S)
    assert "(exit code 5)" in never.message and "will not start it again" in never.message
    assert evidence.definitive([service(tasks=(failed,), running=0)], S) is None   # any: again
    twice = (failed, replace(failed, id="f2"))
    spent = service(tasks=twice, running=0, restart="on-failure", max_attempts=1)
    assert "1 attempt(s)" in evidence.definitive([spent], S).message
    assert evidence.definitive([replace(spent, max_attempts=2)], S) is None
    done = TaskState("t1", 1, "complete", "shutdown")
    for policy in ("none", "on-failure"):
        one_shot = service(tasks=(done,), running=0, healthy=0, restart=policy)
        assert one_shot.converged and evidence.definitive([one_shot], S) is None
        ran = [service(restart=policy)]
        assert evidence.settle_problem(ran, [one_shot], S, 3) is None
    assert not service(tasks=(done,), running=0, healthy=0).converged    # any: restarted
    assert evidence.settle_problem([service()], [service(tasks=(done,), running=0)], S, 3)


def test_overlays_merge_labels_and_environment_key_by_key(tmp_path: Path):
    (tmp_path / "compose.yml").write_text(
        "version: '3.8'\nservices:\n  app:\n    image: x:1\n    environment: [A=1, B=2]\n"
        "    deploy:\n      labels: ['coop-cloud.${STACK_NAME}.version=1.0.0+1']\n")
    (tmp_path / "compose.extra.yml").write_text(
        "version: '3.8'\nservices:\n  app:\n    environment: {B: 3}\n"
        "    deploy:\n      labels: [traefik.enable=true]\n")
    (tmp_path / ".env.sample").write_text('COMPOSE_FILE="compose.yml:compose.extra.yml"\n')
    recipe = Recipe(tmp_path, "x", domain="x.ci.local")
    config, _ = recipe.render()
    assert recipe.version(config) == "1.0.0+1"
    assert recipe.app_labels(config)["traefik.enable"] == "true"
    assert config["services"]["app"]["environment"] == {"A": "1", "B": "3"}


def test_one_replica_in_a_crash_loop_is_definitive_while_the_other_runs():
    crash = tuple(TaskState(f"c{n}", 2, "failed", "shutdown", error="task: non-zero exit (1)",
                            exit_code=1) for n in range(3))
    fine = TaskState("ok", 1, "running", "running")
    problem = evidence.definitive([service(tasks=(fine,) + crash, desired=2)], S)
    assert "3 starts failed, none ran (slot 2 of 2)" in problem.message
    assert evidence.definitive([service(tasks=(fine,) + crash[:2], desired=2)], S) is None


@pytest.mark.parametrize("said, infra", [
    ("Error response from daemon: This node is not a swarm manager. Use \"docker swarm "
     "init\" or \"docker swarm join\" to connect this node to swarm and try again.", True),
    ("rpc error: code = Unavailable desc = the swarm does not have a leader", True),
    ("failed to update service x_app: Error response from daemon: rpc error: code = Unknown "
     "desc = update out of sequence", True),
    ("failed to update config x_notes: Error response from daemon: rpc error: code = "
     "InvalidArgument desc = only updates to Labels are allowed", False),
    ("service migrate: Unknown mode: replicated-job", False),
])
def test_what_docker_says_names_the_host_or_the_change(said, infra):
    assert bool(evidence.INFRA.search(said)) is infra
