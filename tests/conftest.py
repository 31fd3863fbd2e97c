"""Shared fixtures: a CIFAR-10 folder (the real offline copy when present, else synthetic)."""

from __future__ import annotations

import io
import os
import pickle
import random
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from cifarnet.data import FOLDER, IMAGES_PER_FILE, synthetic_dataset, write_dataset  # noqa: E402
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


def data_with_labels(root: Path, data_dir: Path, labels: object, name: str = "data_batch_1") -> Path:
    """A data folder under ``root`` like ``data_dir`` but with batch file ``name`` holding ``labels`` as they are
    (sound images): how a crafted or broken file looks to the loader. The other files are links to
    ``data_dir``'s, so this costs no copy. Returns the folder to give as the data folder."""
    folder = root / FOLDER
    folder.mkdir(parents=True)
    for source in (data_dir / FOLDER).iterdir():
        (folder / source.name).symlink_to(source.resolve())
    (folder / name).unlink()
    payload = {b"batch_label": b"crafted", b"labels": labels,
               b"data": np.zeros((IMAGES_PER_FILE, 3072), np.uint8)}
    (folder / name).write_bytes(pickle.dumps(payload, protocol=4))
    return root


def _bmp(header_size: int = 40, bits: int = 24, compression: int = 0, colours: int = 0) -> bytes:
    """A 4x4 BMP whose info header says what it is told to."""
    info = struct.pack("<IiiHHIIiiII", header_size, 4, 4, 1, bits, compression, 0, 2835, 2835, colours, 0)
    offset = 14 + len(info)
    return b"BM" + struct.pack("<IHHI", offset + 64, 0, 0, offset) + info + b"\x80" * 64


def _psd(channels: int, mode: int) -> bytes:
    """A Photoshop header (4x4, 8 bits) with empty sections after it."""
    return b"8BPS" + struct.pack(">H6sHIIHH", 1, b"\0" * 6, channels, 4, 4, 8, mode) + b"\0" * 12 + b"\x80" * 48


def image_bytes(image: Image.Image, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


# Files whose header is crafted to break a decoder (each raised out of Pillow before issue 15).
CRAFTED_IMAGES = {
    "bmp-header-size.bmp": _bmp(header_size=5),
    "bmp-compression.bmp": _bmp(compression=9),
    "bmp-bit-depth.bmp": _bmp(bits=7),
    "bmp-palette.bmp": _bmp(bits=8, colours=2**31),
    "ppm-maxval.ppm": b"P6\n4 4\n70000\n" + b"\0" * 96,
    "photoshop.png": _psd(channels=1, mode=3),  # RGB with one channel
    "webp-decoder.webp": b"RIFF\x20\x00\x00\x00WEBPVP8 \x10\x00\x00\x00" + b"\xff" * 20,
}


def crafted_images(mutations: int = 30) -> dict[str, bytes]:
    """Many hostile byte strings: :data:`CRAFTED_IMAGES`, then sound files of every upload format cut short at
    several lengths and with random bytes of their first 200 overwritten (seeded, so a failure repeats)."""
    cases = dict(CRAFTED_IMAGES)
    picture = Image.effect_noise((48, 40), 60).convert("RGB")
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "ICO", "TGA"):
        whole = image_bytes(picture, fmt)
        for cut in (1, 8, 16, 30, 60, len(whole) // 2, len(whole) - 1):
            cases[f"{fmt}-cut-{cut}"] = whole[:cut]
        rng = random.Random(fmt)
        for i in range(mutations):
            mutated = bytearray(whole)
            for _ in range(rng.randint(1, 8)):
                mutated[rng.randrange(min(len(mutated), 200))] = rng.randrange(256)
            cases[f"{fmt}-mutated-{i}"] = bytes(mutated)
    return cases
