"""Open report.html in headless Chromium: it must load offline with no console errors and
every image must decode.

Chromium is driven through chromedriver's W3C WebDriver HTTP protocol with urllib (no
Selenium); console messages come from chromedriver's browser log (goog:loggingPrefs).
CI installs both with .ci/install-browser; without them the test is skipped.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from helpers import write_idx_folder
from vaekit.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless Chromium not installed (apt-get install chromium chromium-driver; "
    "CI runs .ci/install-browser)",
)

IMAGES_STATE = """
return Array.from(document.images).map(img => ({
    alt: img.alt, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
    src: img.currentSrc.slice(0, 30)}));
"""


class Browser:
    """A chromedriver process and one headless Chromium session, spoken to over HTTP."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.session = ""
        try:
            self._wait_ready()
            options = {
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            }
            capabilities = {
                "browserName": "chrome",
                "goog:chromeOptions": options,
                "goog:loggingPrefs": {"browser": "ALL"},
            }
            reply = self.call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})
            self.session = f"/session/{reply['sessionId']}"
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.call("GET", "/status").get("ready"):
                    return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"chromedriver did not start within {timeout} s")

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data, {"Content-Type": "application/json"}, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"WebDriver {method} {path}: {err.read().decode()[:500]}") from None

    def open(self, url: str) -> None:
        """Navigate and wait for the load event (the W3C default page-load strategy)."""
        self.call("POST", f"{self.session}/url", {"url": url})

    def run(self, script: str) -> Any:
        return self.call("POST", f"{self.session}/execute/sync", {"script": script, "args": []})

    def console(self) -> list[dict[str, Any]]:
        """Browser log entries since the last call: console API calls, JS and network errors."""
        return self.call("POST", f"{self.session}/se/log", {"type": "browser"})

    def close(self) -> None:
        if self.session:
            with contextlib.suppress(RuntimeError, urllib.error.URLError, ConnectionError):
                self.call("DELETE", self.session)
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def browser():
    session = Browser()
    yield session
    session.close()


def page_problems(browser: Browser, path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Open a file; return its console errors and the state of every <img>."""
    browser.console()  # drop entries from earlier pages
    browser.open(path.resolve().as_uri())
    assert browser.run("return document.readyState") == "complete"
    errors = [e["message"] for e in browser.console() if e["level"] in ("SEVERE", "ERROR")]
    return errors, browser.run(IMAGES_STATE)


def test_the_checks_catch_a_broken_page(browser: Browser, tmp_path: Path) -> None:
    """Control: a missing image and a console.error must both be noticed."""
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>x</title></head><body>'
        '<img src="missing.png" alt="gone"><script>console.error("boom")</script></body></html>'
    )
    errors, images = page_problems(browser, page)
    assert any("missing.png" in e for e in errors) and any("boom" in e for e in errors)
    assert images[0]["width"] == 0


def test_report_loads_offline_without_errors(browser: Browser, tmp_path: Path, capsys) -> None:
    data = write_idx_folder(tmp_path / "bars")
    run = tmp_path / "run"
    argv = ["train", "--data-path", str(data), "--hidden", "16", "--latent-dim", "2"]
    argv += ["--epochs", "1", "--batch-size", "32", "--out", str(run), "--quiet", "--report"]
    assert main(argv) == 0
    assert f"report: {run / 'report.html'}" in capsys.readouterr().out
    errors, images = page_problems(browser, run / "report.html")
    assert errors == []
    assert len(images) == 9
    undecoded = [img["alt"] for img in images if not (img["complete"] and img["width"] > 0)]
    assert undecoded == []
    assert all(img["src"].startswith("data:image/") for img in images)
    title = browser.run("return document.title")
    assert title == "vaekit report: run"
