"""Layout loading: the shipped layout is valid; every error kind names its file and line."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ccci_gate.cli import main
from ccci_gate.config.loader import LayoutError, load_layout

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
pipelines:
  - name: check
    trigger:
      admin: []
projects:
  - name: org/a
    check: [build, test]
jobs:
  - name: build
    run: scripts/build.sh
  - name: test
    requires: build
"""


def write(tmp_path: Path, text: str, name: str = "layout.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(LayoutError) as info:
        load_layout([write(tmp_path, text)])
    return [f"{p.file.rsplit('/', 1)[-1]}:{p.line}: {p.message}" for p in info.value.problems]


def test_shipped_layout_and_jobs_are_valid():
    layout = load_layout([ROOT / "layouts", ROOT / "jobs"])
    assert {"check", "quick", "post", "periodic"} <= set(layout.pipelines)
    assert layout.pipelines["quick"].quick
    graph = layout.jobs_for("coop-cloud/hello", "check", "main")
    assert [j.name for j in graph] == ["build", "publish", "install", "systest"]
    assert layout.jobs["install"].requires == ("publish",)


def test_defaults_come_from_the_schema(tmp_path):
    layout = load_layout([write(tmp_path, GOOD)])
    check = layout.pipelines["check"]
    assert (check.manager, check.precedence, check.window.start, check.window.floor) == (
        "independent", "normal", 20, 3)
    build = layout.jobs["build"]
    assert (build.kind, build.voting, build.attempts, build.requires) == ("shell", True, 3, ())
    assert layout.jobs["test"].requires == ("build",)


def test_yaml_syntax_error_has_its_line(tmp_path):
    [msg] = problems(tmp_path, "pipelines:\n  - name: check\n    trigger: [unclosed\n")
    assert msg.startswith("layout.yaml:4: YAML syntax error") or msg.startswith("layout.yaml:3")


def test_unknown_key_points_at_the_key(tmp_path):
    text = GOOD.replace("    run: scripts/build.sh\n", "    run: scripts/build.sh\n    colour: red\n")
    assert problems(tmp_path, text) == ["layout.yaml:11: job build: colour: unknown key 'colour'"]


def test_bad_values_are_all_reported(tmp_path):
    text = GOOD.replace("  - name: check\n", "  - name: check\n    manager: bogus\n    precedence: urgent\n")
    text += "  - name: lint\n    branches: '(unclosed'\n    attempts: 0\n"
    text = text.replace("      admin: []\n", "      admin: []\n      timer:\n        - time: 'every night'\n")
    msgs = problems(tmp_path, text)
    assert any("layout.yaml:3:" in m and "manager must be one of" in m for m in msgs)
    assert any("layout.yaml:4:" in m and "precedence must be one of" in m for m in msgs)
    assert any("bad cron expression" in m for m in msgs)
    assert any("bad regular expression" in m for m in msgs)
    assert any("attempts" in m for m in msgs)


def test_duplicates_across_files(tmp_path):
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, "jobs:\n  - name: build\n", "b.yaml")
    with pytest.raises(LayoutError) as info:
        load_layout([tmp_path])
    [p] = info.value.problems
    assert p.file.endswith("b.yaml") and p.line == 2
    assert "duplicate job 'build'" in p.message and "a.yaml:9" in p.message


def test_unknown_pipeline_and_job_in_a_project(tmp_path):
    text = GOOD.replace("    check: [build, test]\n", "    check: [build, test, nope]\n    gate: [build]\n")
    msgs = problems(tmp_path, text)
    assert "layout.yaml:7: project org/a: check: unknown job 'nope'" in msgs
    assert "layout.yaml:8: project org/a: gate: unknown pipeline 'gate'" in msgs


def test_requires_unknown_job_and_cycles(tmp_path):
    text = GOOD + "  - name: a\n    requires: b\n  - name: b\n    requires: [a]\n  - name: c\n    requires: ghost\n"
    msgs = problems(tmp_path, text)
    assert any("cycle in requires: a -> b -> a" in m or "cycle in requires: b -> a -> b" in m for m in msgs)
    assert "layout.yaml:17: job c: requires unknown job 'ghost'" in msgs


def test_project_running_a_job_without_its_parent(tmp_path):
    text = GOOD.replace("check: [build, test]", "check: [test]")
    assert problems(tmp_path, text) == [
        "layout.yaml:7: project org/a: check: job test requires build, which the project does not run there"]


def test_error_message_shows_the_offending_stanza(tmp_path):
    text = GOOD.replace("    run: scripts/build.sh\n", "    run: scripts/build.sh\n    colour: red\n")
    with pytest.raises(LayoutError) as info:
        load_layout([write(tmp_path, text)])
    assert "colour: red" in str(info.value).split("\n", 1)[1]


def test_validate_command_exit_status(tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, GOOD))]) == 0
    assert "OK: 1 pipelines, 1 projects, 2 jobs" in capsys.readouterr().out
    bad = write(tmp_path, GOOD.replace("requires: build", "requires: nothing"), "bad.yaml")
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.yaml:11: job test: requires unknown job 'nothing'" in err


def test_a_trigger_of_a_driver_that_is_not_installed_names_its_line(tmp_path):
    text = GOOD.replace("      admin: []\n", "      admin: []\n      pagure:\n        - event: patchset-created\n")
    [msg] = problems(tmp_path, text)
    assert msg.startswith("layout.yaml:5: pipeline check: trigger: driver 'pagure' is not installed")
    assert "gitea" in msg and "timer" in msg


def test_each_driver_checks_its_own_filters(tmp_path):
    approval = GOOD.replace("      admin: []\n", "      gitea:\n        - event: comment\n"
                            "          approval: {Code-Review: 2}\n")
    assert problems(tmp_path, approval) == [
        "layout.yaml:6: pipeline check: trigger.gitea.0.approval: unknown key 'approval'"]
    never = GOOD.replace("      admin: []\n", "      gitea:\n        - event: push\n          action: opened\n")
    [msg] = problems(tmp_path, never)
    assert msg.startswith("layout.yaml:5: pipeline check: trigger.gitea.0: no Gitea event is push opened")


def test_gitea_filters_become_core_filters_on_typed_events(tmp_path):
    from ccci_gate.core import events as ev
    text = GOOD.replace("      admin: []\n", "      gitea:\n        - event: comment\n"
                        "        - event: pull_request\n          action: [synchronized, merged]\n")
    comment, pr = load_layout([write(tmp_path, text)]).pipelines["check"].triggers["gitea"]
    assert comment.events == (ev.CommentAdded,)          # new comments only, not edits
    assert pr.events == (ev.PatchsetCreated, ev.ChangeMerged)


def test_parameter_templates_are_checked_at_load_time(tmp_path):
    text = GOOD.replace("    run: scripts/build.sh\n", "    run: scripts/build.sh\n    parameters:\n"
                        "      OK: '{{ project_short }}-{{ params.ZUUL_REFNAME }}'\n"
                        "      UNCLOSED: '{{ unclosed'\n"
                        "      ESCAPE: \"{{ ''.__class__.__mro__ }}\"\n"
                        "      TYPO: '{{ projcet }}'\n")
    msgs = problems(tmp_path, text)
    assert len(msgs) == 3
    assert msgs[0].startswith("layout.yaml:13: job build: parameters.UNCLOSED: template syntax error")
    assert msgs[1].startswith("layout.yaml:14: job build: parameters.ESCAPE: template does what "
                              "the sandbox forbids")
    assert msgs[2].startswith("layout.yaml:15: job build: parameters.TYPO: template uses an "
                              "unknown name: 'projcet' is undefined")
