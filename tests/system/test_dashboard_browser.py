"""The dashboard in a real headless Chromium, against gunicorn and a real RQ worker.

Agora's callbacks for a recording whose upload failed go through the callback URL, the
worker raises the alert, and an operator logs in, finds the session and acknowledges the
alert. A screenshot of the session page is kept (var/screenshots/, or $SCREENSHOT_DIR).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from redis import Redis

from bench.processes import wait_for
from tests.conftest import load_example
from tests.system.test_service import ROOT, http_post, running_service
from webhook.alerts import alert_id
from webhook.store.alerts import AlertStore

pytestmark = pytest.mark.system

TOKEN = "ops-dashboard-token"
SID = "5c1b0e2d9a4f4b7e8c3d2a1f0e9d8c7b"
# The flags a root sandbox on a closed network needs: no setuid sandbox, no GPU, and none of
# Chromium's own background connections.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def find_chromium() -> str:
    """The system Chromium; on a Debian machine without one, installed here (as CI does)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True)  # noqa: S607  # Debian's tool
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"],  # noqa: S607  # Debian's tool
            check=True, env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"},
        )  # fmt: skip
        found = shutil.which("chromium")
        if found:
            return found
    pytest.fail("no Chromium: install Debian's chromium package (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, Redis]]:
    with running_service(tmp_path, {"API_TOKENS": TOKEN}) as running:
        yield running


def send_failed_upload(base: str) -> None:
    """What Agora sends for a recording whose upload to the customer's storage failed."""
    now = int(time.time() * 1000)
    for sequence, (prefix, details) in enumerate([
        ("40_", {}), ("30_", {}), ("33_", {"progress": 3000}), ("33_", {"progress": 7000}),
        ("31_", {"status": 1}),
    ]):  # fmt: skip
        body = load_example(prefix)
        body["noticeId"] = f"browser-{sequence}"
        body["notifyMs"] = now
        body["sid"] = SID
        body["payload"].update(sid=SID, sequence=sequence, sendts=now - (5 - sequence) * 60_000)
        body["payload"]["details"].update(details)
        status, answer = http_post(f"{base}/agora/callback", json.dumps(body).encode())
        assert (status, answer) == (200, {"result": "stored"})


def screenshot(page: Page, name: str) -> Path:
    folder = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "var" / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    return path


def test_an_operator_logs_in_opens_the_failed_upload_and_acknowledges_its_alert(
    browser: Browser, service: tuple[str, Redis]
):
    base, redis = service
    send_failed_upload(base)
    identifier = alert_id(SID, "upload_failed")
    alerts = AlertStore(redis)
    wait_for(lambda: alerts.get(identifier) is not None, 30, "the worker to raise the alert")

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{base}/dashboard/sessions?refresh=0")
    expect(page).to_have_url(f"{base}/dashboard/login?next=/dashboard/sessions?refresh%3D0")
    page.fill("input[name=token]", "wrong")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_have_text("That token is not valid.")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")

    row = page.locator(f"tr[data-sid='{SID}']")
    expect(row).to_contain_text("upload_failed")
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "70")
    row.get_by_role("link", name=SID).click()

    expect(page.locator("h1")).to_contain_text(SID)
    expect(page.locator("#summary")).to_contain_text("Agora reports a failure")
    expect(page.locator("#timeline circle.mark")).to_have_count(5)
    expect(page.locator("#timeline circle.problem")).to_have_count(1)
    alert_row = page.locator(f"#session-alerts tr[data-alert='{identifier}']")
    expect(alert_row.locator(".alert-state")).to_have_text("open")
    shot = screenshot(page, "dashboard-session-failed-upload.png")
    assert shot.stat().st_size > 10_000

    alert_row.get_by_role("button", name="Acknowledge").click()

    expect(alert_row.locator(".alert-state")).to_have_text("acknowledged")
    acknowledged = alerts.get(identifier)
    assert acknowledged is not None
    assert acknowledged.state == "acknowledged"
    page.goto(f"{base}/dashboard/?refresh=0")
    expect(page.locator("#alerts-by-kind")).to_contain_text("upload_failed")
    expect(page.locator("#traffic rect.bar-stored")).not_to_have_count(0)
    screenshot(page, "dashboard-overview.png")
    page.close()
