"""Dashboard latency in a real headless browser: start → first live point, refresh period, responsiveness.

    python bench/dashboard_latency.py [--reps 3] [--data-dir DIR] [--report docs/PERFORMANCE.md]

For each repetition, in a 1400x1000 window: open the Train page with the default short-run
settings (but 20 epochs, so the run is still live while it is watched), click "Launch run"
and time until the new run's live loss chart draws its first point; then, while the
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
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the dashboard harness

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from harness import CHROMIUM_ARGS, dashboard_server

MARK = "<!-- dashboard-latency -->"


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


def one_rep(page, frames: FrameClock, url: str, runs: Path, watch_s: float) -> dict:
    page.goto(f"{url}/train?epochs=20")  # the default short run, long enough to stay live while it is watched
    page.get_by_role("button", name="Launch run").wait_for()
    before = set(runs.iterdir()) if runs.is_dir() else set()
    clicked = time.perf_counter()
    page.get_by_role("button", name="Launch run").click()
    run_id = _new_run(runs, before)
    page.get_by_role("heading", name=f"{run_id} · running").wait_for(timeout=120_000)
    loss_chart = page.locator(".js-plotly-plot").filter(has_text="Loss").last  # the live chart of the new run
    loss_chart.wait_for(timeout=120_000)
    while loss_chart.evaluate("el => (el._fullData || []).reduce((n, t) => n + (t._length || 0), 0)") == 0:
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
    page.get_by_role("link", name="Train").first.click()
    _stop(page, run_id)
    return {
        "first_point_s": first_point,
        "refresh_s": statistics.median(intervals) if intervals else None,
        "refreshes_seen": len(intervals),
        "navigate_during_run_s": navigate,
    }


def _new_run(runs: Path, before: set[Path], timeout: float = 60) -> str:
    """The id of the run folder the click created."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        new = (set(runs.iterdir()) if runs.is_dir() else set()) - before
        if new:
            return new.pop().name
        time.sleep(0.02)
    raise RuntimeError("Launch run created no run folder")


def _stop(page, run_id: str) -> None:
    """Stop the run from the page, clicking again if a refresh swallowed the click."""
    for _ in range(6):
        page.get_by_role("heading", name=run_id).wait_for()
        stop = page.get_by_role("button", name="Stop run")
        if stop.count():
            stop.click()
        try:
            page.get_by_text("Stopped on request").wait_for(timeout=10_000)
            return
        except PlaywrightTimeout:
            continue
    raise RuntimeError(f"run {run_id} did not stop")


def measure(reps: int, data_dir: Path | None, watch_s: float) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        runs = Path(tmp) / "runs"
        with dashboard_server(runs, data_dir, Path(tmp) / "server.log") as url:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            frames = FrameClock(page)
            for _ in range(reps):
                results.append(one_rep(page, frames, url, runs, watch_s))
                print(json.dumps(results[-1]), flush=True)
        browser.close()
    return results


def summary(results: list[dict]) -> dict:
    def med(key: str) -> float | None:
        values = [r[key] for r in results if r[key] is not None]
        return round(statistics.median(values), 2) if values else None

    return {
        "reps": len(results),
        "first_point_s": med("first_point_s"),
        "refresh_s": med("refresh_s"),
        "navigate_during_run_s": med("navigate_during_run_s"),
    }


def markdown(result: dict, command: str) -> str:
    return (
        f"{MARK}\nCommand: `{command}` — {time.strftime('%Y-%m-%d')}, 2-core CPU, headless Chromium, "
        f"median of {result['reps']} runs (the Train page's short-run defaults with 20 epochs).\n\n"
        "| measure | median | goal |\n|---|---|---|\n"
        f"| click *Launch run* → first live point on the loss chart | {result['first_point_s']} s | ≤ 10 s |\n"
        f"| refresh period of the live view while a run trains | {result['refresh_s']} s | ≤ 2 s |\n"
        f"| open another page during a run (click → chart drawn) | {result['navigate_during_run_s']} s | "
        "responsive |\n"
        f"{MARK}\n"
    )


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
