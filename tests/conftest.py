"""Shared fixtures: a CIFAR-10 folder (the real offline copy when present, else synthetic)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from cifarnet.data import FOLDER, synthetic_dataset, write_dataset  # noqa: E402
from cifarnet.ui.server import CHROMIUM_ARGS  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")  # Debian's Chromium, driven by Playwright (its own browser download fails here)
ARTIFACTS = ROOT / "test-artifacts"  # screenshots from the browser tests, for a person to look at


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Decoded data copies go to a folder of this test session (inherited by servers and trainers it starts),
    never to the user's own cache."""
    previous = os.environ.get("CIFARNET_CACHE")
    os.environ["CIFARNET_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield Path(os.environ["CIFARNET_CACHE"])
    if previous is None:
        os.environ.pop("CIFARNET_CACHE", None)
    else:
        os.environ["CIFARNET_CACHE"] = previous


def real_data_present() -> bool:
    return (REAL_DATA / FOLDER / "test_batch").is_file()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A folder holding ``cifar-10-batches-py``: the real copy if present, else synthetic files."""
    if real_data_present():
        return REAL_DATA
    return write_dataset(tmp_path_factory.mktemp("cifar"), synthetic_dataset())


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "runs"
    monkeypatch.setenv("CIFARNET_RUNS", str(path))
    return path


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m cifarnet ARGS`` in a real subprocess."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "cifarnet", *args], capture_output=True, text=True,
                          cwd=ROOT, env=full_env, timeout=timeout)


def wait_for(predicate, timeout: float = 120, every: float = 0.2):
    """Poll until ``predicate()`` is truthy; returns its value or fails the test."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout}s waiting for {predicate}")


# The real-browser tests share these: a browser, a tab in its own context, screenshots, a select box read.
@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def new_tab(browser, width: int = 1440, height: int = 1400):
    """A page in its own browser context: its own cookies and Streamlit session, like a second window."""
    tab = browser.new_context(viewport={"width": width, "height": height}).new_page()
    tab.set_default_timeout(30_000)
    return tab


@pytest.fixture
def page(browser):
    return new_tab(browser)


def shot(page, name: str, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(800)  # let plotly finish its transition
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def selected(page, label: str) -> str:
    """The value shown by the selectbox labelled ``label``."""
    box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text(label, exact=True))
    return box.get_by_role("combobox").input_value() or box.inner_text().split("\n")[-1]
