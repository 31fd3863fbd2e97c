"""Dashboard latency in a real headless browser: start → first live point, refresh period, responsiveness.

    python bench/dashboard_latency.py [--reps 3] [--data-dir ../shared/data] [--report docs/PERFORMANCE.md]

For each repetition: open the Train page with the default short-run settings (but 20
epochs, so the run is still live while it is watched), click
"Launch run" and time until the live loss chart draws its first point; then, while the
run trains, time the intervals between visible updates of the progress line (the
refresh period) and how long a click on another page and a sidebar change take to
show (responsiveness). The run is stopped before the next repetition. Medians are
reported. Needs Debian's Chromium at /usr/bin/chromium and Playwright's Python package.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cifarnet.ui.server import CHROMIUM_ARGS, dashboard_server  # noqa: E402

MARK = "<!-- dashboard-latency -->"


def chart_points(page, index: int) -> int:
    """Points drawn in the ``index``-th Plotly chart (all traces)."""
    return page.locator(".js-plotly-plot").nth(index).evaluate(
        "el => (el._fullData || []).reduce((n, t) => n + (t._length || 0), 0)")


class FrameClock:
    """Times of the server's websocket messages: every rerun of the live fragment sends a burst."""

    def __init__(self, page) -> None:
        self.times: list[float] = []
        page.on("websocket", lambda ws: ws.on("framereceived", lambda _frame: self.times.append(time.perf_counter())))

    def refresh_intervals(self, since: float, gap: float = 0.25) -> list[float]:
        """Intervals between bursts (messages closer than ``gap`` belong to one refresh)."""
        times = [t for t in self.times if t >= since]
        starts = [t for previous, t in zip([float("-inf"), *times], times) if t - previous > gap]
        return [b - a for a, b in zip(starts, starts[1:])]


def one_rep(page, frames: FrameClock, url: str, watch_s: float) -> dict:
    page.goto(f"{url}/train?epochs=20")  # the default short run, long enough to stay live while it is watched
    page.get_by_role("button", name="Launch run").wait_for()
    clicked = time.perf_counter()
    page.get_by_role("button", name="Launch run").click()
    page.get_by_text(" · running").wait_for(timeout=120_000)
    page.locator(".js-plotly-plot").nth(1).wait_for(timeout=120_000)  # LR schedule, then loss
    while chart_points(page, 1) == 0:
        page.wait_for_timeout(50)
    first_point = time.perf_counter() - clicked

    started = time.perf_counter()
    page.wait_for_timeout(watch_s * 1000)
    intervals = frames.refresh_intervals(since=started)

    nav_started = time.perf_counter()
    page.get_by_role("link", name="Receptive field").click()
    page.get_by_text("receptive field", exact=False).first.wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    navigate = time.perf_counter() - nav_started
    page.get_by_role("link", name="Train").click()
    stop = page.get_by_role("button", name="Stop run")
    if stop.count():
        stop.click()
    stop.wait_for(state="detached", timeout=60_000)
    return {"first_point_s": first_point, "refresh_s": statistics.median(intervals) if intervals else None,
            "refreshes_seen": len(intervals), "navigate_during_run_s": navigate}


def measure(reps: int, data_dir: Path | None, watch_s: float) -> list[dict]:
    from playwright.sync_api import sync_playwright

    results = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        with dashboard_server(Path(tmp) / "runs", data_dir, Path(tmp) / "server.log") as url:
            page = browser.new_page(viewport={"width": 1440, "height": 1400})
            page.set_default_timeout(60_000)
            frames = FrameClock(page)
            for _ in range(reps):
                results.append(one_rep(page, frames, url, watch_s))
                print(json.dumps(results[-1]), flush=True)
        browser.close()
    return results


def summary(results: list[dict]) -> dict:
    def med(key: str) -> float | None:
        values = [r[key] for r in results if r[key] is not None]
        return round(statistics.median(values), 2) if values else None

    return {"reps": len(results), "first_point_s": med("first_point_s"), "refresh_s": med("refresh_s"),
            "navigate_during_run_s": med("navigate_during_run_s")}


def markdown(result: dict, command: str) -> str:
    return (f"{MARK}\nCommand: `{command}` — {time.strftime('%Y-%m-%d')}, this 2-core CPU, headless Chromium, "
            f"median of {result['reps']} runs (the Train page's short-run defaults with 20 epochs).\n\n"
            "| measure | median | goal |\n|---|---|---|\n"
            f"| click *Launch run* → first live point on the loss chart | {result['first_point_s']} s | ≤ 10 s |\n"
            f"| refresh period of the live view while a run trains | {result['refresh_s']} s | ≤ 2 s |\n"
            f"| open another page during a run (click → chart drawn) | {result['navigate_during_run_s']} s | "
            "responsive |\n"
            f"{MARK}\n")


def write_report(path: Path, block: str) -> None:
    """Replace the marked section of ``path`` (or append it under its own heading)."""
    text = path.read_text() if path.exists() else ""
    if text.count(MARK) >= 2:
        head, _, rest = text.partition(MARK)
        _, _, tail = rest.partition(MARK)
        text = head + block.strip("\n") + tail
    else:
        text += "\n## Dashboard latency\n\n" + block
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--watch", type=float, default=12.0, help="seconds to watch the live view per run")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--report", type=Path, help="write the table into this Markdown file")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = summary(measure(args.reps, args.data_dir, args.watch))
    print(json.dumps(result) if args.json else markdown(result, "python " + " ".join(sys.argv)))
    if args.report:
        write_report(args.report, markdown(result, "python " + " ".join(sys.argv)))


if __name__ == "__main__":
    main()
