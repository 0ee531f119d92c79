"""More faults, by class, against the real Swarm job kinds on a real engine: the shapes
a recipe's head takes in the field (replicas, global services, restart policies,
failure actions, start-first, spec changes outside the container, overlays, mounts
turned into binds or tmpfs, rotated secrets, one-shot jobs, reservations that just fit).
Each test states the verdict the product owes and why. Under CI these fail, not skip,
when Docker is missing."""
from __future__ import annotations

from pathlib import Path

import pytest

from fault_recipes import SERVE, build_health_image, make_faulty
from test_swarm_faults import app, run_kind, sidecar

pytestmark = pytest.mark.docker

LATE = "sleep 8; exit 6"   # twice the 4 s update monitor


def late_crash(serve: bool = True, when: str = "true") -> list[str]:
    """A command that runs (serving, if asked) and, when ``when`` holds, dies 8 s later."""
    start = "httpd -p 8080 -h /www; " if serve else ""
    return ["sh", "-c", f"{start}if {when}; then {LATE}; fi; while true; do sleep 1; done"]


# --- spec changes outside the container: swarm replaces the tasks all the same ------------

def test_a_head_changing_only_resources_and_restart_policy_passes(tmp_path, port, host):
    """Swarm replaces every task when anything of the task template changes, not only the
    container spec: the old task must not count as the head's, and its planned shutdown
    is not a crash of the head."""
    def fault(compose):
        app(compose)["image"] = sidecar(compose)["image"] = "ccci-test/busybox:2"
        app(compose)["deploy"]["resources"] = {"limits": {"memory": "64M"}}
        sidecar(compose)["deploy"]["restart_policy"] = {"condition": "on-failure"}
    repo, sha = make_faulty(tmp_path / "repos", fault)
    result, log, _ = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "SUCCESS", log
    assert "the head runs on every service" in log


# --- several replicas, global services --------------------------------------------------------

def test_one_of_two_replicas_dying_after_the_monitor_fails(tmp_path, port, host):
    """replicas: 2 and only slot 2 of the head dies 8 s after start: one replica keeps
    serving, the update reads completed — still a broken head."""
    def base(compose):
        app(compose)["deploy"]["replicas"] = 2
        app(compose)["environment"] = ["SLOT={{.Task.Slot}}"]
    def fault(compose):
        app(compose)["command"] = late_crash(when='[ "$$SLOT" = 2 ]')
        app(compose)["deploy"]["labels"][2] = "ccci.settle=12"
    repo, sha = make_faulty(tmp_path / "repos", fault, base=base)
    result, log, _ = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "FAILURE", log
    assert "service app: task" in log and "(exit code 6)" in log, log


def test_one_of_two_replicas_not_serving_fails_even_when_the_other_does(tmp_path, port, host):
    """replicas: 2 with a lax healthcheck, and slot 2 of the head serves 404 on ``/``: a
    proxy would send half the requests there, so serving fails, naming the slot."""
    def base(compose):
        app(compose)["deploy"]["replicas"] = 2
        app(compose)["environment"] = ["SLOT={{.Task.Slot}}"]
    def fault(compose):
        app(compose)["command"] = ["sh", "-c", 'if [ "$$SLOT" = 2 ]; then mkdir -p /empty; '
                                   'exec httpd -f -p 8080 -h /empty; fi; exec httpd -f -p 8080 -h /www']
        app(compose)["healthcheck"]["test"] = ["CMD", "true"]
    repo, sha = make_faulty(tmp_path / "repos", fault, base=base)
    result, log, _ = run_kind(tmp_path, host, "recipe-install", repo, sha)
    assert result == "FAILURE", log
    assert "slot 2" in log and "answered 404, not one of 200-399" in log, log
    assert "slot 1 (" not in log.split("answered 404")[0].rsplit("serving:", 1)[-1], log


def test_one_replica_crash_looping_under_a_tolerant_update_fails_fast(tmp_path, port, host):
    """max_failure_ratio 0.5 lets swarm complete the update with slot 2 failing; slot 2
    then exits on every start while slot 1 serves: a FAILURE within seconds, not at the
    recipe's 60 s timeout."""
    def base(compose):
        app(compose)["deploy"]["replicas"] = 2
        app(compose)["environment"] = ["SLOT={{.Task.Slot}}"]
        app(compose)["deploy"]["update_config"]["max_failure_ratio"] = 0.5
    def fault(compose):
        app(compose)["command"] = ["sh", "-c", '[ "$$SLOT" = 2 ] && exit 9; exec '
                                   + " ".join(SERVE)]
    repo, sha = make_faulty(tmp_path / "repos", fault, base=base)
    result, log, took = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "FAILURE", log
    assert "(exit code 9)" in log or "non-zero exit (9)" in log, log
    assert took < 45, f"{took:.0f}s"


def test_a_global_sidecar_dying_after_the_monitor_fails(tmp_path, port, host):
    def base(compose):
        sidecar(compose)["deploy"]["mode"] = "global"
    def fault(compose):
        sidecar(compose)["command"] = late_crash(serve=False)
        app(compose)["deploy"]["labels"][2] = "ccci.settle=12"
    repo, sha = make_faulty(tmp_path / "repos", fault, base=base)
    result, log, _ = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "FAILURE", log
    assert "service sidecar: task" in log and "(exit code 6)" in log, log


# --- restart policies and failure actions --------------------------------------------------------

def test_a_crash_with_restart_condition_none_fails_fast(tmp_path, port, host):
    """condition: none — the task exits once and swarm never starts another: definitive
    at once, not at the recipe's 60 s timeout."""
    def fault(compose):
        app(compose)["command"] = ["sh", "-c", "exit 5"]
        app(compose)["deploy"]["restart_policy"] = {"condition": "none"}
    repo, sha = make_faulty(tmp_path / "repos", fault)
    result, log, took = run_kind(tmp_path, host, "recipe-install", repo, sha)
    assert result == "FAILURE", log
    assert "(exit code 5)" in log and "swarm will not start it again" in log, log
    assert took < 30, f"{took:.0f}s: swarm will never start another task"


def test_a_crash_with_on_failure_max_attempts_fails_fast(tmp_path, port, host):
    def fault(compose):
        app(compose)["command"] = ["sh", "-c", "exit 5"]
        app(compose)["deploy"]["restart_policy"] = {"condition": "on-failure", "delay": "1s",
                                                    "max_attempts": 1}
    repo, sha = make_faulty(tmp_path / "repos", fault)
    result, log, took = run_kind(tmp_path, host, "recipe-install", repo, sha)
    assert result == "FAILURE", log
    assert "swarm will not start it again (restart policy: on-failure, 1 attempt(s))" in log, log
    assert took < 30, f"{took:.0f}s: swarm gave up restarting"


@pytest.mark.parametrize("action", ["continue", "pause"])
def test_a_crashing_head_fails_whatever_the_failure_action(tmp_path, port, host, action):
    def fault(compose):
        sidecar(compose)["command"] = ["sh", "-c", "exit 4"]
        sidecar(compose)["deploy"]["update_config"]["failure_action"] = action
    repo, sha = make_faulty(tmp_path / "repos", fault)
    result, log, took = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "FAILURE", log
    assert "service sidecar" in log, log
    assert took < 45, f"{took:.0f}s"


def test_start_first_with_a_head_that_never_gets_healthy_fails(tmp_path, port, host):
    """order: start-first keeps the old task serving beside the new one."""
    def base(compose):
        app(compose)["deploy"]["update_config"]["order"] = "start-first"
    def fault(compose):
        app(compose)["command"] = ["httpd", "-f", "-p", "9090", "-h", "/www"]
    repo, sha = make_faulty(tmp_path / "repos", fault, base=base)
    result, log, _ = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "FAILURE", log
    assert "service app" in log and "rolled back" in log, log


def test_start_first_with_a_late_crash_fails(tmp_path, port, host):
    def base(compose):
        app(compose)["deploy"]["update_config"]["order"] = "start-first"
    def fault(compose):
        app(compose)["command"] = late_crash()
        app(compose)["deploy"]["labels"][2] = "ccci.settle=12"
    repo, sha = make_faulty(tmp_path / "repos", fault, base=base)
    result, log, _ = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "FAILURE", log
    assert "(exit code 6)" in log, log


# --- health ------------------------------------------------------------------------------------

def test_a_sidecar_turning_unhealthy_later_fails(tmp_path, port, host):
    """The process stays up; its healthcheck starts failing 8 s after start."""
    def fault(compose):
        sidecar(compose)["command"] = ["sh", "-c", "echo > /tmp/ok; sleep 8; rm /tmp/ok; "
                                                   "while true; do sleep 1; done"]
        sidecar(compose)["healthcheck"]["test"] = ["CMD", "test", "-e", "/tmp/ok"]
        app(compose)["deploy"]["labels"][2] = "ccci.settle=12"
    repo, sha = make_faulty(tmp_path / "repos", fault)
    result, log, _ = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "FAILURE", log
    assert "service sidecar" in log, log


def test_a_sidecar_without_healthcheck_dying_late_fails(tmp_path, port, host):
    def fault(compose):
        del sidecar(compose)["healthcheck"]
        sidecar(compose)["command"] = late_crash(serve=False)
        app(compose)["deploy"]["labels"][2] = "ccci.settle=12"
    repo, sha = make_faulty(tmp_path / "repos", fault)
    result, log, _ = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "FAILURE", log
    assert "service sidecar: task" in log and "(exit code 6)" in log, log


def test_a_sidecar_turning_unhealthy_by_its_images_healthcheck_fails(tmp_path, port, host):
    """The healthcheck is the image's (HEALTHCHECK, none in the compose), checked every
    3 s, unhealthy after 4 failures: it passes once, then fails. The settle window must
    cover the image's interval × retries too, not only the compose's and the floor."""
    image = build_health_image(["test", "-e", "/tmp/ok"], interval=3, retries=4)
    def fault(compose):
        sidecar(compose)["image"] = image
        del sidecar(compose)["healthcheck"]
        sidecar(compose)["command"] = ["sh", "-c", "echo > /tmp/ok; sleep 4; rm /tmp/ok; "
                                                   "while true; do sleep 1; done"]
    repo, sha = make_faulty(tmp_path / "repos", fault)
    result, log, _ = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "FAILURE", log
    assert "longest healthcheck interval × (retries + 1) 15s" in log, log
    assert "service sidecar" in log, log


def test_an_image_without_its_entrypoint_fails(tmp_path, port, host):
    """The image is there, the program is not: 'starting container failed'."""
    def fault(compose):
        sidecar(compose)["command"] = ["/bin/no-such-program"]
    repo, sha = make_faulty(tmp_path / "repos", fault)
    result, log, took = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "FAILURE", log
    assert "service sidecar" in log and "INFRASTRUCTURE" not in log, log


# --- mounts ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mount", ["tmpfs", "bind"])
def test_a_volume_turned_into_a_tmpfs_or_bind_fails(tmp_path, port, host, mount):
    bind = tmp_path / "bind"
    bind.mkdir()
    def fault(compose):
        app(compose)["volumes"] = [{"type": "tmpfs", "target": "/data"} if mount == "tmpfs" else
                                   {"type": "bind", "source": str(bind), "target": "/data"}]
        del compose["volumes"]
    repo, sha = make_faulty(tmp_path / "repos", fault)
    result, log, _ = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "FAILURE", log
    assert "volume data" in log, log


# --- secrets, configs -------------------------------------------------------------------------

def test_a_rotated_secret_passes(tmp_path, port, host):
    """A version bump of a secret: the head names a new secret, generated before the
    upgrade (as abra app secret generate would)."""
    repo, sha = make_faulty(tmp_path / "repos", None,
                            env="SECRET_DB_PASSWORD_VERSION=v2\n")
    result, log, _ = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "SUCCESS", log
    assert "_db_password_v2" in log, log


def test_a_versioned_config_change_passes(tmp_path, port, host):
    def base(compose):
        app(compose)["configs"] = [{"source": "notes", "target": "/etc/notes.conf"}]
        compose["configs"] = {"notes": {"file": "./notes.conf",
                                        "name": "${STACK_NAME}_notes_${NOTES_VERSION}"}}
    repo, sha = make_faulty(tmp_path / "repos", None, base=base,
                            base_files={"notes.conf": "a=1\n"},
                            files={"notes.conf": "a=2\n"}, env="NOTES_VERSION=v2\n",
                            base_env="NOTES_VERSION=v1\n")
    result, log, _ = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "SUCCESS", log


# --- recipes with more than long-running services ------------------------------------------------

@pytest.mark.parametrize("condition", ["none", "on-failure"])
def test_a_one_shot_service_passes_install(tmp_path, port, host, condition):
    """A one-shot in a stack (a migration, say: restart_policy none or on-failure, exit 0
    after a few seconds) is done when it exits cleanly: not a task that never converged,
    nor a crash in the settle window. (Upgrading it is another matter: swarm pauses the
    update of a task that ends inside its monitor, and that is reported as such.)"""
    def base(compose):
        compose["services"]["migrate"] = {
            "image": app(compose)["image"], "command": ["sh", "-c", "sleep 2; echo migrated"],
            "deploy": {"restart_policy": {"condition": condition}}}
    repo, sha = make_faulty(tmp_path / "repos", None, base=base)
    result, log, took = run_kind(tmp_path, host, "recipe-install", repo, sha)
    assert result == "SUCCESS", log
    assert took < 40, f"{took:.0f}s"


def test_a_one_shot_service_failing_fails(tmp_path, port, host):
    def fault(compose):
        compose["services"]["migrate"] = {
            "image": app(compose)["image"], "command": ["sh", "-c", "sleep 1; exit 7"],
            "deploy": {"restart_policy": {"condition": "none"}}}
    repo, sha = make_faulty(tmp_path / "repos", fault)
    result, log, took = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "FAILURE", log
    assert "service migrate: task" in log and "(exit code 7)" in log, log
    assert took < 40, f"{took:.0f}s"


def test_an_app_without_a_port_label_passes_with_serving_unverified(tmp_path, port, host):
    def fault(compose):
        app(compose)["deploy"]["labels"].pop()
    repo, sha = make_faulty(tmp_path / "repos", fault)
    result, log, _ = run_kind(tmp_path, host, "recipe-install", repo, sha)
    assert result == "SUCCESS", log
    assert "serving unverified" in log, log


def test_a_memory_reservation_that_just_fits_passes(tmp_path, port, host):
    """stop-first: the old task's reservation is released before the new one is placed;
    a moment of 'insufficient resources' while it goes is not the host's failure."""
    import docker
    total = docker.from_env().info()["MemTotal"]
    reserve = f"{int(total * 0.6) // 2**20}M"
    def base(compose):
        app(compose)["deploy"]["resources"] = {"reservations": {"memory": reserve}}
    repo, sha = make_faulty(tmp_path / "repos", None, base=base)
    result, log, _ = run_kind(tmp_path, host, "recipe-systest", repo, sha)
    assert result == "SUCCESS", log


def test_an_overlay_adding_labels_keeps_the_apps_labels(tmp_path):
    """COMPOSE_FILE overlays add deploy labels to the app (traefik's, say): compose merges
    labels key by key, so the version label of compose.yml still holds."""
    from ccci_gate.worker.kinds.recipe import RecipeBuild
    from recipe_helpers import checkout, context
    overlay = ("version: '3.8'\nservices:\n  app:\n    deploy:\n      labels:\n"
               "        - traefik.enable=true\n")
    repo, sha = make_faulty(tmp_path / "repos", None, files={"compose.extra.yml": overlay},
                            env='COMPOSE_FILE="compose.yml:compose.extra.yml"\n')
    ws = checkout(repo, tmp_path / "ws", "refs/pull/1/head")
    ctx, lines = context(ws, "recipe-build", recipe="faulty", ZUUL_COMMIT=sha)
    assert RecipeBuild().run(ctx) == "SUCCESS", "".join(lines)
    assert "lint ok: faulty 1.2.0+1" in "".join(lines)


def test_a_task_of_the_old_task_template_is_not_the_heads(tmp_path, port):
    """Right after the head changes only resources, the base's task (same container
    spec) is not counted as running the head: swarm is about to replace it. Counting it
    let a wait for the head end before swarm began the update."""
    import secrets
    import time
    from recipe_helpers import build_image
    stack = f"cur-{secrets.token_hex(3)}"
    compose = ("version: '3.8'\nservices:\n  app:\n    image: {image}\n"
               "    command: [sleep, '600']\n    stop_grace_period: 1s\n{extra}")
    base, head = tmp_path / "base.yml", tmp_path / "head.yml"
    base.write_text(compose.format(image=build_image("2"), extra=""))
    head.write_text(compose.format(image=build_image("2"), extra=(
        "    deploy:\n      resources: {limits: {memory: 64M}}\n")))
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin"}
    try:
        port.deploy(stack, [base], env, tmp_path)
        deadline = time.monotonic() + 30
        while not port.services(stack)[0].running:
            assert time.monotonic() < deadline, "the base never ran"
            time.sleep(0.2)
        [base_task] = [t.id for t in port.services(stack)[0].tasks if t.state == "running"]
        port.deploy(stack, [head], env, tmp_path)
        [after] = port.services(stack)
        [seen] = [t for t in after.tasks if t.id == base_task]
        assert not seen.current, after.tasks
    finally:
        port.purge(stack)
