"""README's picture, docs/dashboard.png: the Train page after a run, in a real browser.

    python bench/screenshot.py --runs-dir DIR --run RUN_ID [--data-dir DIR] [--out docs/dashboard.png]

Starts the real dashboard on the runs folder ``DIR`` (:mod:`harness`), opens the Train page on the run
in headless Chromium (Playwright, Debian's ``/usr/bin/chromium``) and, once its curves are drawn, saves the top of
the page at 1400x1100, the schedule folded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the dashboard harness

from harness import CHROMIUM_ARGS, dashboard_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", required=True, type=Path)
    parser.add_argument("--run", required=True)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with (
        tempfile.TemporaryDirectory() as scratch,
        dashboard_server(args.runs_dir, args.data_dir, Path(scratch) / "server.log", timeout=300) as url,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()
        page.set_default_timeout(300_000)
        page.goto(f"{url}/train?run={args.run}")
        page.get_by_text(f"Run {args.run}").first.wait_for()
        page.locator(".js-plotly-plot").nth(2).wait_for()  # the schedule, loss and accuracy charts
        page.get_by_text("Learning-rate schedule of these settings").click()  # folded: the run's curves show
        page.wait_for_function("() => !document.querySelector('[data-testid^=stStatusWidgetRunning]')")
        page.wait_for_timeout(2000)  # Plotly's transitions
        page.screenshot(path=str(args.out))
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
