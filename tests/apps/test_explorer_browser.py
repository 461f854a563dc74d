"""The explorer page of `vaekit serve` in headless Chromium, driven by Playwright: it loads
with no console errors and no request leaving 127.0.0.1; clicking the map, moving a slider,
dropping a PNG and asking for an interpolation each do what they say.

The server runs in a thread (uvicorn on a free port); the browser is Debian's Chromium
(/usr/bin/chromium, installed in CI by .ci/install-browser), not Playwright's download.
Skipped without the serve extra, Playwright for Python or Chromium."""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from helpers import train_bars_run

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'vaekit[serve]'")
uvicorn = pytest.importorskip(
    "uvicorn", reason="needs the serve extra: pip install 'vaekit[serve]'"
)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python not installed")
httpx = pytest.importorskip("httpx")

from vaekit.apps.server import make_app  # noqa: E402  (after the extra is known to be there)

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no /usr/bin/chromium (bash .ci/install-browser installs it)"
)
# predicates as functions: a string would be eval()ed, which the page's CSP forbids
READY = "() => document.getElementById('status').textContent === 'ready'"


class LiveServer:
    """uvicorn serving `app` on 127.0.0.1 and a free port, in a thread, until close()."""

    def __init__(self, app) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_bars_run(tmp_path_factory.mktemp("explorer"))


@pytest.fixture(scope="module")
def server(run_dir):
    live = LiveServer(make_app(run_dir))
    yield live
    live.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield chromium
        chromium.close()


class Page:
    """A loaded explorer page, with its console errors and every URL it requested."""

    def __init__(self, browser, url: str, fragment: str = "") -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda err: self.errors.append(str(err)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(url + "/" + fragment)
        self.page.wait_for_function(READY)
        self.wait_decoded(0)

    def decoded(self) -> tuple[int, str]:
        """(how many decodes were shown, the decoded image's src)."""
        version = int(self.page.get_attribute("#decoded", "data-version"))
        return version, self.page.get_attribute("#decoded img", "src")

    def wait_decoded(self, after: int) -> None:
        """Until a decode newer than number `after` is shown and none is pending."""
        self.page.wait_for_function(
            f"() => Number(document.getElementById('decoded').dataset.version) > {after}"
            " && !state.decodeBusy"
        )

    def click_map(self, fx: float, fy: float) -> None:
        """Click the map at fractions (fx, fy) of its width and height."""
        box = self.page.locator("#map").bounding_box()
        self.page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])


@pytest.fixture
def page(browser, server):
    opened = Page(browser, server.url)
    yield opened
    opened.page.close()


def bar_png() -> bytes:
    pixels = np.zeros((8, 8), dtype=np.uint8)
    pixels[:, 5] = 220  # the vertical bar
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def test_loads_offline_with_no_console_errors(page: Page, server: LiveServer) -> None:
    origin = urlsplit(server.url).netloc
    remote = [u for u in page.requests if urlsplit(u).scheme not in ("data", "blob")]
    assert remote and all(urlsplit(u).netloc == origin for u in remote), remote
    assert {"/static/explorer.js", "/static/explorer.css", "/v1/map", "/v1/info"} <= {
        urlsplit(u).path for u in remote
    }
    assert page.errors == []
    points = page.page.evaluate("state.map.points.length")
    assert points == 128 and page.page.locator("#sliders input").count() == 2
    # hovering a point shows its example
    x, y = page.page.evaluate("toPixel(state.map.points[0])")
    box = page.page.locator("#map").bounding_box()
    page.page.mouse.move(box["x"] + x * box["width"] / 480, box["y"] + y * box["height"] / 480)
    page.page.wait_for_selector("#tooltip:not([hidden]) img")
    assert "test #" in page.page.text_content("#tooltip-text")
    assert page.errors == []


def test_clicking_the_map_decodes_that_point(page: Page) -> None:
    version, before = page.decoded()
    page.click_map(0.1, 0.1)
    page.wait_decoded(version)
    version, top_left = page.decoded()
    page.click_map(0.9, 0.9)
    page.wait_decoded(version)
    _, bottom_right = page.decoded()
    assert len({before, top_left, bottom_right}) == 3
    code = page.page.evaluate("state.code")
    assert code[0] > 0 and code[1] < 0  # bottom right: high z[0], low z[1]
    assert page.errors == []


def test_a_slider_changes_the_decoded_image(page: Page) -> None:
    dim = page.page.evaluate("state.info.sliders[0]")
    pictures = []
    for value in ("-3", "3"):
        version, _ = page.decoded()
        page.page.locator(f"#slider-{dim}").fill(value)
        page.wait_decoded(version)
        pictures.append(page.decoded()[1])
        assert page.page.evaluate(f"state.code[{dim}]") == float(value)
    assert pictures[0] != pictures[1]
    assert page.errors == []


def test_dropping_a_png_shows_its_reconstruction(page: Page, server: LiveServer) -> None:
    encoded = base64.b64encode(bar_png()).decode()
    page.page.evaluate(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], "bar.png", { type: "image/png" }));
            document.getElementById("drop").dispatchEvent(
                new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
        }""",
        encoded,
    )
    page.page.wait_for_selector("#recon-item img")
    page.page.wait_for_function("() => document.querySelectorAll('#neighbors img').length === 8")
    shown = page.page.get_attribute("#recon-item img", "src")
    expected = httpx.post(server.url + "/v1/reconstruct", json={"png": [encoded], "format": "png"})
    assert shown == "data:image/png;base64," + expected.json()["png"][0]
    assert "nats per example" in page.page.text_content("#score-text")
    assert "bar.png: 8x8" in page.page.text_content("#drop-note")
    assert page.errors == []


def test_the_interpolation_strip_has_the_asked_frames(page: Page) -> None:
    for end, (fx, fy) in (("a", (0.15, 0.2)), ("b", (0.85, 0.8))):
        version, _ = page.decoded()
        page.click_map(fx, fy)
        page.wait_decoded(version)
        page.page.click(f"#set-{end}")
        page.page.wait_for_selector(f"#{end}-item img")
    for frames in (5, 12):
        page.page.fill("#steps", str(frames))
        page.page.click("#interpolate")
        page.page.wait_for_function(
            f"() => document.getElementById('strip').dataset.frames === '{frames}'"
        )
        sources = page.page.eval_on_selector_all("#strip img", "imgs => imgs.map(i => i.src)")
        assert len(sources) == frames and sources[0] != sources[-1]
    assert page.errors == []


def test_the_page_sends_the_token_from_its_address(browser, run_dir) -> None:
    guarded = LiveServer(make_app(run_dir, token="s3cret"))
    try:
        assert httpx.get(guarded.url + "/v1/info").status_code == 401
        opened = Page(browser, guarded.url, "#token=s3cret")  # waits until the page is ready
        assert opened.errors == [] and opened.page.evaluate("window.location.hash") == ""
        opened.page.close()
    finally:
        guarded.close()
