"""Shared test fixtures: the real-component guards used by every area's tests."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from waiting import free_port  # noqa: F401 - tests import it from here


def require(condition: bool, what: str) -> None:
    """Skip when ``what`` is missing on a laptop; fail under CI, where it must exist."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required under CI but is not available")
    pytest.skip(f"{what} not available")


def docker_ready() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        out = subprocess.run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == "active"


@pytest.fixture
def gearmand_bin() -> str:
    path = shutil.which("gearmand") or ("/usr/sbin/gearmand" if os.path.exists("/usr/sbin/gearmand") else None)
    require(path is not None, "gearmand (Debian gearman-job-server)")
    return path  # type: ignore[return-value]


@pytest.fixture
def docker_swarm():
    """A Docker Engine with an active swarm, held alone: tests on one engine from several
    pytest processes (a developer's runs beside each other) take turns, so a test never
    sees another's stacks as its own leftovers."""
    require(docker_ready(), "a Docker Engine with an active swarm")
    import fcntl
    import tempfile
    with open(os.path.join(tempfile.gettempdir(), "ccci-gate-docker-tests.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield




def wait_listening(port: int, timeout: float = 20.0) -> None:
    import socket
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listening on port {port}")


@pytest.fixture(params=["embedded", "gearmand"])
def gearman_server(request):
    """``(host, port)`` of a real Gearman server: the embedded gear.Server, then gearmand."""
    if request.param == "embedded":
        from ccci_gate.gearman.server import EmbeddedServer
        server = EmbeddedServer("127.0.0.1", 0)
        yield ("127.0.0.1", server.port)
        server.shutdown()
        return
    binary = request.getfixturevalue("gearmand_bin")
    port = free_port()
    proc = subprocess.Popen([binary, "-L", "127.0.0.1", "-p", str(port), "--log-file", "none"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port)
    yield ("127.0.0.1", port)
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def port(docker_swarm):
    """The Swarm port on the real engine; fails a test that leaves a stack behind."""
    from ccci_gate.swarm.port import SwarmPort
    port = SwarmPort()
    before = port.stacks()
    yield port
    left = port.stacks() - before
    for stack in left:
        port.purge(stack)
    assert not left, f"the test left stacks behind: {left}"


@pytest.fixture
def host(tmp_path):
    """A worker host's Swarm bookkeeping (slots, leases) in a temporary folder."""
    from ccci_gate.swarm.host import Host
    return Host(tmp_path / "swarm-state", max_tests=2)


CHROMIUM = os.environ.get("CCCI_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CCCI_CHROMEDRIVER", "/usr/bin/chromedriver")


def chromium_ready() -> bool:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)


@pytest.fixture
def browser():
    """Debian's headless chromium driven by selenium through Debian's chromedriver (no
    browser or driver is downloaded)."""
    require(chromium_ready(), f"chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER})")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def artifacts_dir(tmp_path):
    """Where a test leaves files for a person to look at: ``$CCCI_ARTIFACTS_DIR`` (CI
    keeps it), else the test's temporary folder."""
    from pathlib import Path
    root = Path(os.environ.get("CCCI_ARTIFACTS_DIR") or tmp_path / "artifacts")
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture
def warm_root(tmp_path, monkeypatch, port):
    """A warm root of the test's own (``CCCI_WARM_ROOT``); its canonicals are dropped
    (app, volumes, warm data) afterwards."""
    from ccci_gate.swarm import warm
    root = tmp_path / "warm"
    monkeypatch.setenv("CCCI_WARM_ROOT", str(root))
    yield root
    for canonical in warm.canonicals(root):
        warm.drop(port, canonical)
