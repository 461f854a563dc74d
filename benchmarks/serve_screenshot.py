"""A screenshot of `vaekit serve`'s explorer for docs/serve.md, in Debian's Chromium.

    python benchmarks/serve_screenshot.py runs/vae-mnist -o docs/serve.png

Serves the run (`python -m vaekit serve`, as benchmarks/serve.py does), opens the page with
Playwright, clicks the map, sets interpolation ends A and B and draws the strip, drops test
example `--example` as a PNG file (its reconstruction, score and neighbours appear), hovers
a point of the map, and saves the whole page. Needs the serve extra, Playwright for Python
and /usr/bin/chromium (bash .ci/install-browser).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from serve import Server, get_json

CHROMIUM = "/usr/bin/chromium"
DROP_FILE = """([b64, name]) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const data = new DataTransfer();
    data.items.add(new File([bytes], name, { type: "image/png" }));
    document.getElementById("drop").dispatchEvent(
        new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/serve.png"))
    parser.add_argument("--example", type=int, default=7, help="test example dropped (7)")
    args = parser.parse_args()
    server = Server(args.run, 1, Path(tempfile.gettempdir()) / "vaekit-serve-screenshot.log")
    try:
        dropped = get_json(f"{server.url}/v1/examples/{args.example}?format=png")["png"][0]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1500, "height": 980})
            errors: list[str] = []
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.goto(server.url + "/")
            page.wait_for_function(
                "() => document.getElementById('status').textContent === 'ready'"
            )
            box = page.locator("#map").bounding_box()

            def click(fx: float, fy: float) -> None:
                page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
                page.wait_for_timeout(300)

            click(0.3, 0.35)
            page.click("#set-a")
            click(0.7, 0.6)
            page.click("#set-b")
            page.fill("#steps", "10")
            page.click("#interpolate")
            page.wait_for_function("() => document.getElementById('strip').dataset.frames === '10'")
            page.evaluate(DROP_FILE, [dropped, f"test-{args.example}.png"])
            page.wait_for_function("() => document.querySelectorAll('#neighbors img').length === 8")
            x, y = page.evaluate("toPixel(state.map.points[0])")
            page.mouse.move(box["x"] + x * box["width"] / 480, box["y"] + y * box["height"] / 480)
            page.wait_for_selector("#tooltip:not([hidden]) img")
            args.output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.output), full_page=True)
            browser.close()
    finally:
        server.close()
    if errors:
        sys.exit(f"console errors on the page: {errors}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
