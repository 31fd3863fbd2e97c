"""Shared fixtures: a CIFAR-10 folder (the real offline copy when present, else synthetic)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from cifarnet.data import FOLDER, IMAGES_PER_FILE, synthetic_dataset, write_dataset  # noqa: E402


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

