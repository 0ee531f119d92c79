"""Jobs' ``files:`` filters work for Gitea pull requests: the driver asks Gitea which
files a pull request changes, once per head sha."""
from __future__ import annotations

from ccci_gate.core import events as ev
from ccci_gate.core.layout import JobConfig, Layout, ProjectConfig
from ccci_gate.drivers.gitea.api import GiteaUnavailable
from ccci_gate.drivers.gitea.connection import GiteaConnection
from ccci_gate.drivers.gitea.payloads import Hook


class FilesAPI:
    """Just enough of ``GiteaAPI`` for pull request events."""

    def __init__(self, files: dict[int, tuple[str, ...]]):
        self.files = files
        self.calls: list[int] = []

    def changed_files(self, repo: str, number: int) -> tuple[str, ...]:
        self.calls.append(number)
        if number not in self.files:
            raise GiteaUnavailable("down")
        return self.files[number]

    def redact(self, text: str) -> str:
        return text


def connection(tmp_path, api: FilesAPI, events: list) -> GiteaConnection:
    return GiteaConnection("gitea", {"driver": "gitea", "url": "http://gitea.invalid",
                                     "webhook-secret": "s"}, events.append, tmp_path, api=api)


def hook(number: int, sha: str) -> Hook:
    return Hook("pull_request", action="synchronized", repo="org/a", number=number,
                head_sha=sha, branch="main")


def test_a_pull_request_change_carries_its_files_asked_once_per_head(tmp_path):
    api, events = FilesAPI({2: ("docs/README.md", "compose.yml")}), []
    conn = connection(tmp_path, api, events)
    try:
        conn.handle_hook(hook(2, "a" * 40))
        conn.handle_hook(hook(2, "a" * 40))
        conn.handle_hook(hook(3, "b" * 40))         # Gitea cannot say: unknown
    finally:
        conn.store.close()
    assert [type(e) for e in events] == [ev.PatchsetCreated] * 3
    assert events[0].change.files == ("docs/README.md", "compose.yml")
    assert api.calls == [2, 3]
    assert events[2].change.files is None


def test_files_filters_pick_the_jobs_a_change_runs():
    layout = Layout(projects={"org/a": ProjectConfig("org/a", pipelines={"check": ("lint", "deploy")})},
                    jobs={"lint": JobConfig("lint"),
                          "deploy": JobConfig("deploy", files=(r"^compose.*\.yml$",))})
    names = lambda files: [j.name for j in layout.jobs_for("org/a", "check", "main", files)]
    assert names(("docs/README.md",)) == ["lint"]
    assert names(("compose.yml",)) == ["lint", "deploy"]
    assert names(None) == ["lint", "deploy"]          # unknown files: the filter matches
