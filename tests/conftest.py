"""Shared fixtures and helpers: a CIFAR-10 folder (the real offline copy when present, else synthetic), the app
in AppTest, fixture runs and experiments, a browser and its tabs, hostile images. Tests import helpers from here,
never from each other."""

from __future__ import annotations

import fcntl
import io
import ipaddress
import json
import os
import pickle
import random
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from cifarnet.cli import as_flags  # noqa: E402
from cifarnet.config import make_config  # noqa: E402
from cifarnet.data.cifar10 import CLASSES, FOLDER, IMAGES_PER_FILE, synthetic_dataset, write_dataset  # noqa: E402
from cifarnet.runs.folders import create_run, read_run, trainer_alive  # noqa: E402
from cifarnet.runs.records import EXPERIMENTS_FOLDER, write_json  # noqa: E402
from cifarnet.runs.status import LIVE, Status  # noqa: E402
from cifarnet.training.engine import confusion_matrix, train_run  # noqa: E402
from harness import CHROMIUM_ARGS  # noqa: E402

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


PUNCTUATION = r"[!-/:-@\[-`{-~]"  # what cifarnet.ui.common.literal escapes: every ASCII punctuation mark


def texts(elements) -> str:
    """The elements' Markdown as a reader sees it: backslash escapes and (invisible) word joiners removed."""
    return "\n".join(re.sub(rf"\\({PUNCTUATION})", r"\1", str(e.value)).replace("\u2060", "") for e in elements)


def real_data_present() -> bool:
    return (REAL_DATA / FOLDER / "test_batch").is_file()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A folder holding ``cifar-10-batches-py``: the real copy if present, else synthetic files."""
    if real_data_present():
        return REAL_DATA
    return write_dataset(tmp_path_factory.mktemp("cifar"), synthetic_dataset())


# 24 steps on 400 images, evaluated on 200 after each epoch, then the whole test set with and without flips.
TINY_RUN = {"name": "tiny", "subset": 40, "epochs": 3, "batch_size": 50, "lr": 0.05, "eval_subset": 20, "tta": True}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, worker_id, data_dir) -> Path:
    """A real run trained to the end, once per test session (its final evaluation of 10,000 images is the cost):
    the first of the parallel workers trains it, the others wait for it and read the same folder. Read it, never
    change it: a test that changes a finished run takes its own copy (:func:`copy_run`)."""
    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent  # pytest-xdist: the workers' common folder
    runs = shared / "tiny-run"
    with open(shared / "tiny-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not runs.is_dir():
            path = create_run(make_config(TINY_RUN), runs)
            assert train_run(path, str(data_dir)) == "finished", read_run(path).status_record
    (path,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    assert read_run(path).status == "finished", read_run(path).status_record
    return path


def copy_run(run: Path, runs_dir: Path, name: str | None = None) -> Path:
    """A copy of a finished run folder in ``runs_dir`` (as folder ``name``), without its trainer's lock file."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copytree(run, runs_dir / (name or run.name), ignore=shutil.ignore_patterns(".trainer.lock")))


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "runs"
    monkeypatch.setenv("CIFARNET_RUNS", str(path))
    return path


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m cifarnet ARGS`` in a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "cifarnet", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=cli_env(env),
        timeout=timeout,
    )


def start_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    """``python -m cifarnet ARGS`` started in the background, its output piped: a command that waits for its runs."""
    return subprocess.Popen(
        [sys.executable, "-m", "cifarnet", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=cli_env(env),
    )


def cli_env(env: dict | None) -> dict:
    """This test's environment (with what it set) for a command of this checkout, plus ``env``."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}


def most_trainers_while(command: subprocess.Popen, runs_dir: Path) -> tuple[int, str, str]:
    """Watch ``runs_dir`` until ``command`` ends: the most trainers alive at any moment, by the records and by
    /proc, and the command's stdout and stderr. A command still running when the watch fails is killed."""
    most = 0
    try:
        while command.poll() is None:
            if runs_dir.is_dir():
                most = max(most, len(live_records(runs_dir)), len(trainer_processes(runs_dir)))
            time.sleep(0.05)
        out, err = command.communicate()
    finally:
        if command.poll() is None:
            command.kill()
    return most, out, err


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
@pytest.fixture(scope="module")
def browser():
    """One Chromium per test module (a launch costs seconds); each test gets its own context (``new_tab``)."""
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
    tab = new_tab(browser)
    yield tab
    tab.context.close()


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
    payload = {b"batch_label": b"crafted", b"labels": labels, b"data": np.zeros((IMAGES_PER_FILE, 3072), np.uint8)}
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


def image_bytes(image: Image.Image, fmt: str = "PNG", **save) -> bytes:
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


RUNNING = "() => !document.querySelector('[data-stale=\"true\"], [data-testid^=stStatusWidgetRunning]')"


def settle(tab, timeout_ms: float = 30_000) -> None:
    """Wait until Streamlit has finished the rerun: no running icon, no element left over from the last one."""
    tab.wait_for_timeout(500)
    tab.wait_for_function(RUNNING, timeout=timeout_ms)


# -- runs and pages shared by the AppTest, comparison and browser tests ----------------------------------------

APP = Path(__file__).resolve().parents[1] / "dashboard.py"
TIMEOUT = 180  # a page run; CI runs four test workers on two cores


@pytest.fixture
def app(runs_dir, data_dir, monkeypatch):
    """Opens the app on a page (with a query string) in a fresh session, temporary runs folder."""
    monkeypatch.setenv("CIFARNET_DATA", str(data_dir))

    def open_page(page: str | None = None, **query: str) -> AppTest:
        at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
        at.query_params.update(query)
        at.run()
        if page:
            at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return open_page


def fake_finished_run(runs_dir: Path, labels: np.ndarray, name: str = "mine", wrong_every: int = 7) -> Path:
    """A finished user run whose predictions are wrong on every ``wrong_every``-th test image."""
    cfg = make_config({"name": name, "norm": "gn", "epochs": 1, "subset": 20, "batch_size": 16})
    path = create_run(cfg, runs_dir)
    top1 = labels.copy()
    top1[::wrong_every] = (labels[::wrong_every] + 3) % 10
    top = np.stack([(top1 + i) % 10 for i in range(5)], 1).astype(np.uint8)
    top[:, 1] = np.where(top1 != labels, labels, top[:, 1])
    probs = np.tile(np.array([0.6, 0.25, 0.1, 0.03, 0.02], dtype=np.float16), (len(labels), 1))
    np.savez_compressed(path / "predictions.npz", labels=labels.astype(np.uint8), top_classes=top, top_probs=probs)
    confusion = confusion_matrix(labels, top1)
    per_class = confusion.diagonal() / confusion.sum(1).clip(min=1)
    acc = float((top1 == labels).mean())
    write_json(
        path / "results.json",
        {
            "test_acc": acc,
            "classes": list(CLASSES),
            "confusion": confusion.tolist(),
            "per_class_acc": dict(zip(CLASSES, per_class.tolist())),
        },
    )
    records = [
        {
            "kind": "train",
            "step": s,
            "epoch": s / 12,
            "time": s * 0.5,
            "lr": 0.01,
            "train_loss": 2.3 - s / 20,
            "train_acc": 0.1 + s / 30,
            "img_s": 100.0,
        }
        for s in range(1, 13)
    ]
    records += [
        {
            "kind": "eval",
            "step": s,
            "epoch": s / 12,
            "time": s * 0.5,
            "lr": 0.01,
            "train_loss": 2.0,
            "train_acc": 0.3,
            "test_loss": 2.1 - s / 20,
            "test_acc": acc * s / 12,
            "img_s": 100.0,
        }
        for s in (4, 8, 12)
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_json(path / "status.json", {"status": "finished", "pid": None, "progress": {"step": 12, "total_steps": 12}})
    return path


LABELS = np.arange(40) % 10  # a 40-image test set: every class four times


def predictions_for(labels: np.ndarray, right: np.ndarray, confidence: float = 0.7) -> dict[str, np.ndarray]:
    """Top-5 predictions that are right where ``right`` says, else the next class (``label + 1``)."""
    top1 = np.where(right, labels, (labels + 1) % 10)
    top = np.stack([(top1 + i) % 10 for i in range(5)], 1).astype(np.uint8)
    probs = np.tile(np.array([confidence, 0.1, 0.05, 0.03, 0.02], dtype=np.float16), (len(labels), 1))
    return {"labels": labels.astype(np.uint8), "top_classes": top, "top_probs": probs}


def fixture_run(
    runs: Path,
    name: str,
    norm: str,
    seed: int,
    test: float,
    train: float,
    tta: float,
    wall: float,
    right: np.ndarray | None = None,
    labels: np.ndarray = LABELS,
    status: str = "finished",
) -> Path:
    """A run folder with the given final figures; its predictions are right where ``right`` says."""
    path = create_run(
        make_config({"name": name, "norm": norm, "seed": seed, "epochs": 2, "subset": 20, "batch_size": 16}), runs
    )
    right = np.ones(len(labels), bool) if right is None else right
    pack = predictions_for(labels, right)
    np.savez_compressed(path / "predictions.npz", **pack)
    confusion = confusion_matrix(labels.astype(np.int64), pack["top_classes"][:, 0].astype(np.int64))
    per_class = confusion.diagonal() / confusion.sum(1).clip(min=1)
    records = [
        {
            "kind": "train",
            "step": s,
            "epoch": s / 10,
            "time": s * wall / 20,
            "lr": 0.01,
            "train_loss": 2.0 - s / 20 - seed / 10,
            "train_acc": train - 0.1,
            "img_s": 100.0,
        }
        for s in (5, 15)
    ]
    records += [
        {
            "kind": "eval",
            "step": s,
            "epoch": s / 10,
            "time": s * wall / 20,
            "lr": 0.01,
            "train_loss": 1.0,
            "train_acc": train if s == 20 else train - 0.2,
            "test_loss": 1.5 - s / 40,
            "test_acc": test if s == 20 else test - 0.1,
            "img_s": 100.0,
        }
        for s in (10, 20)
    ]
    records.append({"kind": "final", "step": 20, "epoch": 2.0, "time": wall, "test_acc": test, "tta_acc": tta})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if status == "finished":
        write_json(
            path / "results.json",
            {
                "test_acc": test,
                "tta_acc": tta,
                "test_loss": 1.0,
                "classes": list(CLASSES),
                "confusion": confusion.tolist(),
                "per_class_acc": dict(zip(CLASSES, per_class.tolist())),
                "steps": 20,
                "epochs": 2.0,
                "elapsed_s": wall,
            },
        )
    write_json(
        path / "status.json",
        {
            "status": status,
            "pid": None,
            "error": "out of memory" if status == "failed" else None,
            "progress": {"step": 20, "total_steps": 20},
        },
    )
    return path


def write_experiment(runs: Path, name: str, variants: dict[str, list[str]]) -> Path:
    """An experiment record as the write side stores it: ``.experiments/NAME.json``."""
    folder = runs / EXPERIMENTS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "name": name,
        "vary": {"norm": [label.split("=")[1] for label in variants]},
        "seeds": [0, 1, 2],
        "variants": variants,
    }
    write_json(folder / f"{name}.json", record)
    return folder / f"{name}.json"


# Tiny budgets for real trainers: a run in seconds on synthetic or real data.
TINY = {"subset": 20, "epochs": 1, "batch_size": 50, "lr": 0.05, "eval_subset": 10, "tta": False}
# The same budget as command-line flags. Its lr is left to the CLI's default: the CLI tests vary lr themselves, and
# the CLI refuses a setting both given and varied.
TINY_FLAGS = as_flags({name: value for name, value in TINY.items() if name != "lr"})
TINY_QUIET_FLAGS = [*TINY_FLAGS, "--quiet"]  # `train` without its progress bar: the tests read its output, not a bar


def processes_of(runs_dir: Path, word: bytes) -> list[int]:
    """Pids of live processes with the argument ``word`` working on ``runs_dir`` (``--resume``: its trainers,
    ``queue``: its queue worker), from /proc (not from any record)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and word in cmdline and any(str(runs_dir).encode() in arg for arg in cmdline):
            found.append(int(entry.name))
    return found


def proc_address(field: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """``0100007F:1F90`` (or its 32-digit IPv6 form) from ``/proc/net/tcp*``: host-order 32-bit words, hex."""
    host, port = field.split(":")
    raw = bytes.fromhex(host)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words), int(port, 16)


def inet_sockets() -> dict[int, tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address, int, str]]:
    """Every TCP and UDP socket of this network namespace by inode: (table, local address, port, state)."""
    sockets = {}
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            address, port = proc_address(fields[1])
            sockets[int(fields[9])] = (table, address, port, fields[3])
    return sockets


def sockets_of(pid: int) -> list[tuple]:
    """The TCP and UDP sockets process ``pid`` holds (Unix sockets and pipes do not reach a network)."""
    table, inodes = inet_sockets(), []
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            match = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
            if match:
                inodes.append(int(match.group(1)))
    except OSError:  # it ended meanwhile
        return []
    return [table[inode] for inode in inodes if inode in table]


def listening_addresses(pids: list[int]) -> set[tuple]:
    """(address, port) of every TCP socket that processes ``pids`` listen on (state 0A is LISTEN)."""
    return {
        (address, port)
        for pid in pids
        for table, address, port, state in sockets_of(pid)
        if table.startswith("tcp") and state == "0A"
    }


def is_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """127.0.0.0/8, ::1, or 127.x written as an IPv4-mapped IPv6 address (a dual-stack socket bound to it)."""
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def trainer_processes(runs_dir: Path) -> list[int]:
    """Pids of live trainer processes of ``runs_dir``."""
    return processes_of(runs_dir, b"--resume")


def live_records(runs_dir: Path) -> list[str]:
    """Runs whose record says a trainer is alive."""
    return [
        p.name
        for p in runs_dir.iterdir()
        if not p.name.startswith(".") and (info := read_run(p)).status in LIVE and trainer_alive(p, info.status_record)
    ]


def hand_made_run(runs: Path, name: str, accuracies: dict[int, float]) -> Path:
    """A finished run folder whose evaluations logged ``accuracies`` (step -> test accuracy)."""
    path = create_run(make_config({**TINY, "name": name}), runs)
    records = [
        {
            "kind": "eval",
            "step": step,
            "epoch": step / 4,
            "time": float(step),
            "lr": 0.05,
            "train_loss": 1.0,
            "train_acc": 0.5,
            "test_loss": 1.0,
            "test_acc": acc,
            "img_s": 100.0,
        }
        for step, acc in sorted(accuracies.items())
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_json(path / "status.json", {"status": "finished", "pid": None})
    return path


HAND_MADE = {
    "bn-slow": ("bn", 0.05, {10: 0.50, 20: 0.70, 30: 0.65}),
    "bn-fast": ("bn", 0.6, {10: 0.30, 20: 0.40}),
    "gn-slow": ("gn", 0.05, {10: 0.55, 20: 0.60, 30: 0.62}),
    "gn-fast": ("gn", 0.6, {10: 0.10}),
}


def hand_made_sweep(runs_dir: Path) -> None:
    """A sweep ``sw`` of lr x norm: its best test accuracy comes before its last, and one run was stopped early."""
    variants = {}
    for name, (norm, lr, accuracies) in HAND_MADE.items():
        path = hand_made_run(runs_dir, name, accuracies)
        config = json.loads((path / "config.json").read_text())
        write_json(path / "config.json", {**config, "norm": norm, "lr": lr})
        variants[f"norm={norm} lr={lr:g}"] = [name]
    write_json(
        runs_dir / "gn-fast" / "status.json", {"status": Status.STOPPED_EARLY, "pid": None, "reason": "median rule: x"}
    )
    folder = runs_dir / EXPERIMENTS_FOLDER
    folder.mkdir()
    write_json(
        folder / "sw.json",
        {"name": "sw", "vary": {"norm": ["bn", "gn"], "lr": [0.05, 0.6]}, "seeds": [0], "variants": variants},
    )
