"""Browser tests: the real app (`relay serve`, in-process worker, real model) on loopback, driven by Playwright
in Debian's headless Chromium. Never a downloaded browser: without /usr/bin/chromium these tests are skipped
(`make test` installs it). A failing test leaves a screenshot and the page's HTML in test-results/."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = shutil.which("chromium")
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "test-results"
STAFF_EMAIL, STAFF_PASSWORD = "staff@relay.example", "staff-browser-test-password"
DEMO_PASSWORD = "relay-demo-password"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if CHROMIUM:
        return
    skip = pytest.mark.skip(reason="Debian's chromium is not installed (apt-get install -y chromium)")
    for item in items:
        if "browser" in str(item.fspath):
            item.add_marker(skip)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`relay serve` with demo data and a staff account, on a fresh SQLite database; its base URL."""
    var = tmp_path_factory.mktemp("relay-var")
    port = _free_port()
    env = {**os.environ, "RELAY_VAR_DIR": str(var), "RELAY_DATABASE_URL": f"sqlite:///{var / 'relay.db'}",
           "RELAY_SECRET_KEY": "browser-tests", "RELAY_BROKER": "stub", "RELAY_ROUTER_TUNING": "0",
           "RELAY_MODEL_CACHE": str(ROOT / "var" / "model-cache"), "RELAY_WORKER_THREADS": "4",
           "RELAY_STAFF_PASSWORD": STAFF_PASSWORD, "HF_HUB_OFFLINE": "1", "RELAY_DEMO": "1",
           "RELAY_DRAFT_ENGINE": "composer"}  # the generative engine has its own tests
    for args in (["migrate"], ["seed", "--demo"],
                 ["create-staff", "--email", STAFF_EMAIL, "--name", "Sam Staff", "--if-missing"]):
        subprocess.run([BIN / "relay", *args], env=env, check=True, capture_output=True, cwd=ROOT)
    with open(var / "server.log", "w") as log:  # the server writes to its own copy of the descriptor
        proc = subprocess.Popen([BIN / "relay", "serve", "--port", str(port)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {(var / 'server.log').read_text()[-3000:]}")
        time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError("the server did not start in 120 s")
    _wait_until_demo_tasks_are_routed(base)
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wait_until_demo_tasks_are_routed(base: str, timeout: float = 180) -> None:
    """The model is loaded and a router fitted once the demo's own tasks are routed: journeys then measure
    the portal, not the first model load (minutes on a busy machine with an empty model cache)."""
    from marketplace.demo.loader import _json

    email = _json("people.json")["customers"][0]["email"]
    token = httpx.post(f"{base}/api/v1/sessions", json={"email": email, "password": DEMO_PASSWORD}).json()["token"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = httpx.get(f"{base}/api/v1/tasks", headers={"Authorization": f"Bearer {token}"}).json()["items"]
        if items and all(t["status"] not in ("submitted", "routing") for t in items):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the demo tasks were not routed within {timeout} s")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)  # a busy two-core CI machine, not a slow page: failures still fail

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-quic", "--no-first-run"],
        )
        yield browser
        browser.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context (no cookies) per test; on failure its screenshot and HTML are saved."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        RESULTS.mkdir(exist_ok=True)
        stem = RESULTS / request.node.name
        page.screenshot(path=f"{stem}.png", full_page=True)
        Path(f"{stem}.html").write_text(page.content())
        print(f"\nscreenshot: {stem}.png")
    context.close()


class ApiClient:
    """Sets the scene through the public API (what the test is about happens in the browser)."""

    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=30)

    def signup(self, role: str, **extra: Any) -> tuple[str, dict[str, str]]:
        email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
        r = self.http.post("/api/v1/accounts", json={"email": email, "password": "browser-test-password",
                                                      "role": role, "display_name": f"Test {role}", **extra})
        assert r.status_code == 201, r.text
        return email, self.login(email, "browser-test-password")

    def login(self, email: str, password: str) -> dict[str, str]:
        r = self.http.post("/api/v1/sessions", json={"email": email, "password": password})
        assert r.status_code == 201, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    def post_task(self, headers: dict[str, str], title: str, description: str) -> str:
        r = self.http.post("/api/v1/tasks", json={"title": title, "description": description}, headers=headers)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def wait_status(self, headers: dict[str, str], task_id: str, wanted: set[str], timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        status = ""
        while time.monotonic() < deadline:
            status = self.http.get(f"/api/v1/tasks/{task_id}", headers=headers).json()["status"]
            if status in wanted:
                return status
            time.sleep(0.3)
        raise AssertionError(f"task {task_id} is {status}, not {wanted}, after {timeout} s")


@pytest.fixture(scope="session")
def api(server: str) -> ApiClient:
    return ApiClient(server)
