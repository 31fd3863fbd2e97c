"""CIFAR-10 in memory: find it, fetch it if allowed, validate it, load it as uint8 tensors.

Why our own reader instead of ``torchvision.datasets.CIFAR10``: torchvision checks the
canonical md5 of every batch file, and re-encoded copies (such as the offline JPEG copy
used on machines without internet) fail that check although their content is sound.
We validate by content instead (shapes, counts, label range) and only use torchvision's
download utility, with the archive's canonical md5, when the data is missing.

The batch files are pickles. We read them with a restricted unpickler that can only
rebuild numpy arrays, so a crafted file cannot run code.

Unpickling and validating the six files takes about a second, which every trainer process
would pay before its first step. So the validated arrays are also kept as a decoded copy
(uint8 ``.npy`` files, memory-mapped on load) in a user cache folder, never in the data
folder (which may be read-only or shared). The copy is keyed by the batch folder's resolved
path and its files' sizes and modification times, and checked on every load (shapes,
label range, a CRC of every array); a stale or damaged copy is rebuilt from the batch files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import secrets
import shutil
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from cifarnet.errors import DataError, shorten, shown

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
IMAGES_PER_FILE = 10_000
LABELS_ALLOWED = f"allowed: a list of {IMAGES_PER_FILE} whole numbers from 0 to 9"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DEFAULT_DATA_DIR = "./data"
CACHE_VERSION = 1
# name -> (shape, dtype) of the arrays in a decoded copy
CACHE_ARRAYS = {
    "train_x": ((5 * IMAGES_PER_FILE, 3, 32, 32), np.uint8),
    "train_y": ((5 * IMAGES_PER_FILE,), np.int64),
    "test_x": ((IMAGES_PER_FILE, 3, 32, 32), np.uint8),
    "test_y": ((IMAGES_PER_FILE,), np.int64),
}

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


@dataclass(frozen=True)
class Cifar10:
    """The whole data set as tensors: images uint8 [N,3,32,32], labels int64 [N]."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    source: str


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else (no code execution)."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder: the argument, else ``$CIFARNET_DATA``, else ``./data``."""
    chosen = data_dir if data_dir not in (None, "") else os.environ.get("CIFARNET_DATA") or DEFAULT_DATA_DIR
    return Path(chosen).expanduser()


def batches_folder(data_dir: Path) -> Path:
    """Accept either the parent of ``cifar-10-batches-py`` or that folder itself."""
    return data_dir if data_dir.name == FOLDER else data_dir / FOLDER


def dataset_present(data_dir: str | os.PathLike | None = None) -> bool:
    """True when every batch file exists (content is checked only on load; a path the file system
    cannot even look up, such as a name too long, is not present, and load says why)."""
    folder = batches_folder(resolve_data_dir(data_dir))
    try:
        return all((folder / name).is_file() for name in (*TRAIN_FILES, TEST_FILE))
    except OSError:
        return False


def _read_pickle(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read CIFAR-10 file {shown(path)}: {exc.strerror or exc}") from exc
    try:
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # any unpickling failure means a damaged or foreign file
        raise DataError(
            f"CIFAR-10 file {shown(path)} is truncated or corrupt ({type(exc).__name__}: {shorten(str(exc))}); "
            f"replace it with the original from {URL}"
        ) from exc
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR-10 file {shown(path)} does not hold a batch dictionary")
    return obj


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file → (uint8 [10000,3,32,32], int64 [10000]), validated by content."""
    batch = _read_pickle(path)
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape != (IMAGES_PER_FILE, 3072):
        shape = getattr(data, "shape", None)
        raise DataError(
            f"CIFAR-10 file {shown(path)} has wrong image data (shape {shape}); "
            "expected uint8 array of shape (10000, 3072)"
        )
    return data.reshape(-1, 3, 32, 32), _read_labels(path, labels)


def _read_labels(path: Path, labels: object) -> np.ndarray:
    """The batch's labels as int64 [10000], checked one by one before any conversion.

    A crafted pickle can hold anything where the labels belong (strings, None, nested lists,
    ints too big for int64, floats, bools, numpy object arrays); numpy would raise its own
    errors on some and silently truncate or cast others.
    """
    values = labels.tolist() if isinstance(labels, np.ndarray) else labels
    if not isinstance(values, (list, tuple)):
        raise DataError(
            f"CIFAR-10 file {shown(path)} has no label list (found {type(labels).__name__}); {LABELS_ALLOWED}"
        )
    if len(values) != IMAGES_PER_FILE:
        raise DataError(f"CIFAR-10 file {shown(path)} has {len(values)} labels; {LABELS_ALLOWED}")
    for position, value in enumerate(values):
        if type(value) is not int:  # not isinstance: True is an int too, and no class
            raise DataError(
                f"CIFAR-10 file {shown(path)} has a label that is not a whole number at position "
                f"{position} ({shown(value)}, a {type(value).__name__}); {LABELS_ALLOWED}"
            )
        if not 0 <= value <= 9:
            raise DataError(
                f"CIFAR-10 file {shown(path)} has labels outside 0..9 (at position {position}: "
                f"{shown(value)}); {LABELS_ALLOWED}"
            )
    return np.array(values, dtype=np.int64)


def _missing_message(folder: Path, why: str) -> str:
    return (
        f"CIFAR-10 not found in {shown(folder)} and it could not be downloaded ({why}). "
        f"Put the extracted '{FOLDER}' folder (from {URL}) under {shown(folder.parent)} "
        f"or point --data-dir / CIFARNET_DATA at the folder that holds it."
    )


def download(data_dir: Path) -> None:
    """Fetch and unpack the official archive; its canonical md5 is checked by torchvision."""
    from torchvision.datasets.utils import download_and_extract_archive

    folder = batches_folder(data_dir)
    root = folder.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        download_and_extract_archive(URL, download_root=str(root), md5=ARCHIVE_MD5)
    except Exception as exc:  # offline, DNS failure, md5 mismatch, unwritable folder
        raise DataError(_missing_message(folder, f"{type(exc).__name__}: {exc}".split("\n")[0][:200])) from exc


def _stack(paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [_read_batch(p) for p in paths]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(x), torch.from_numpy(y)


def _check_complete(folder: Path) -> None:
    missing = [n for n in (*TRAIN_FILES, TEST_FILE) if not (folder / n).is_file()]
    if missing:
        raise DataError(
            f"CIFAR-10 folder {shown(folder)} is incomplete: missing {', '.join(missing)}; "
            f"it needs {', '.join(TRAIN_FILES)} and {TEST_FILE}"
        )


def load_cifar10(data_dir: str | os.PathLike | None = None, allow_download: bool = True) -> Cifar10:
    """Load the whole set (or a ``.npz`` JPEG pack, see :func:`load_jpeg_npz`) into memory.

    Cached per folder, so the dashboard and repeated calls pay the few seconds once.
    """
    path = resolve_data_dir(data_dir)
    if path.suffix == ".npz":
        return load_jpeg_npz(path)
    explicit = data_dir not in (None, "") or bool(os.environ.get("CIFARNET_DATA"))
    source = "--data-dir" if data_dir not in (None, "") else "CIFARNET_DATA"
    try:
        if explicit and not path.exists():  # a typo must not start a 170 MB download into a new folder
            raise DataError(
                f"data folder {shown(path)} (from {source}) does not exist; give an existing folder that "
                f"holds '{FOLDER}', or leave {source} unset to use {DEFAULT_DATA_DIR} (downloaded when "
                "missing)"
            )
        return _load_folder(str(batches_folder(path).resolve()), allow_download)
    except OSError as exc:  # a name too long for the file system, a loop of links, no permission
        raise DataError(
            f"data folder {shown(path)} cannot be used ({exc.strerror or exc}); give an existing folder "
            f"that holds '{FOLDER}'"
        ) from None


@lru_cache(maxsize=2)
def _load_folder(folder_name: str, allow_download: bool) -> Cifar10:
    folder = Path(folder_name)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"data path {shown(folder)} is not a folder; give the folder that holds '{FOLDER}'")
    if not folder.is_dir() or not any(folder.iterdir()):
        if not allow_download:
            raise DataError(_missing_message(folder, "download not allowed"))
        download(folder.parent)
    _check_complete(folder)
    arrays = read_cache(folder)
    if arrays is None:
        train_x, train_y = _stack([folder / n for n in TRAIN_FILES])
        test_x, test_y = _stack([folder / TEST_FILE])
        arrays = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
        write_cache(folder, arrays)
    return Cifar10(**arrays, classes=CLASSES, source=str(folder))


def cache_root() -> Path:
    """Where decoded copies live: ``$CIFARNET_CACHE``, else ``$XDG_CACHE_HOME/cifarnet``, else ``~/.cache/cifarnet``."""
    chosen = os.environ.get("CIFARNET_CACHE")
    if chosen:
        return Path(chosen).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cifarnet"


def _signature(folder: Path) -> list[list]:
    """Name, size and modification time of every batch file: any change to them makes a new key."""
    rows = []
    for name in (*TRAIN_FILES, TEST_FILE):
        stat = (folder / name).stat()
        rows.append([name, stat.st_size, stat.st_mtime_ns])
    return rows


def cache_folder(folder: Path) -> Path:
    """The decoded copy of the batch folder ``folder`` (which need not exist yet)."""
    key = json.dumps([CACHE_VERSION, str(folder.resolve()), _signature(folder)])
    return cache_root() / f"cifar10-{hashlib.sha256(key.encode()).hexdigest()[:20]}"


def _crc(array: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(array).data)


def read_cache(folder: Path) -> dict[str, torch.Tensor] | None:
    """The decoded copy of ``folder`` as memory-mapped tensors, or ``None`` when it is missing, stale or damaged.

    Nothing in the copy is trusted: each array must have its shape and type, labels must be 0..9, and every
    array's CRC must match the manifest written with it (about 50 ms for the whole set).
    """
    try:
        where = cache_folder(folder)
        manifest = json.loads((where / "manifest.json").read_text())
        if manifest.get("version") != CACHE_VERSION or manifest.get("files") != _signature(folder):
            return None
        arrays = {}
        for name, (shape, dtype) in CACHE_ARRAYS.items():
            # copy-on-write: the pages are shared with the file, and a tensor over them stays writable
            array = np.load(where / f"{name}.npy", mmap_mode="c", allow_pickle=False)
            if array.shape != shape or array.dtype != dtype or _crc(array) != manifest["crc"][name]:
                return None
            if name.endswith("_y") and (array.min() < 0 or array.max() > 9):
                return None
            arrays[name] = torch.from_numpy(array)
        return arrays
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_cache(folder: Path, arrays: dict[str, torch.Tensor]) -> None:
    """Keep a decoded copy of ``folder``'s validated arrays; best effort (an unwritable cache only costs time).

    Written into a private temporary folder and renamed into place, so a reader never sees half a copy and two
    processes building it at once do not mix their files.
    """
    try:
        where = cache_folder(folder)
        where.parent.mkdir(parents=True, exist_ok=True)
        tmp = where.parent / f".{where.name}.{os.getpid()}.{secrets.token_hex(4)}"
        tmp.mkdir()
    except OSError:
        return
    try:
        crc = {}
        for name, tensor in arrays.items():
            array = tensor.numpy()
            np.save(tmp / f"{name}.npy", array, allow_pickle=False)
            crc[name] = _crc(array)
        manifest = {"version": CACHE_VERSION, "source": str(folder.resolve()), "files": _signature(folder), "crc": crc}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        shutil.rmtree(where, ignore_errors=True)  # a stale or damaged copy under the same key
        os.replace(tmp, where)
    except OSError:
        pass  # disk full, a racing writer already renamed its copy into place, ...
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_jpeg_npz(path: Path) -> Cifar10:
    """Decode the compact JPEG pack (``cifar10-jpeg.npz``) used where little data can travel."""
    from PIL import Image

    try:
        pack = np.load(path, allow_pickle=False)
        split = {}
        for name in ("train", "test"):
            raw, off = pack[f"{name}_bytes"], pack[f"{name}_offsets"]
            images = [
                np.asarray(Image.open(io.BytesIO(raw[off[i] : off[i + 1]].tobytes())).convert("RGB"))
                for i in range(len(off) - 1)
            ]
            split[name] = (
                torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
                torch.from_numpy(pack[f"{name}_labels"].astype(np.int64)),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"JPEG pack {shown(path)} is unreadable: {shorten(str(exc))}") from exc
    return Cifar10(*split["train"], *split["test"], CLASSES, str(path))


def stratified_subset(labels: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``per_class`` random examples of each class (all of a class if it has fewer).

    Balanced subsets keep short runs comparable: a 1,000-image run sees 100 of each class.
    """
    if per_class < 1:
        raise DataError(f"subset size per class must be at least 1, got {per_class}")
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for cls in range(int(labels.max()) + 1):
        members = torch.nonzero(labels == cls).flatten()
        picks.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return torch.sort(torch.cat(picks)).values


def write_batch_file(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write images/labels in the official batch format (used for synthetic test data)."""
    payload = {
        b"batch_label": b"synthetic",
        b"labels": [int(v) for v in labels],
        b"data": images.reshape(len(images), -1).astype(np.uint8),
        b"filenames": [b"img%d.png" % i for i in range(len(images))],
    }
    path.write_bytes(pickle.dumps(payload, protocol=4))


def write_dataset(root: Path, data: Cifar10) -> Path:
    """Write ``data`` as a standard ``cifar-10-batches-py`` folder under ``root``; returns ``root``.

    Used to unpack the JPEG pack once on a GPU machine, and by tests for synthetic data.
    """
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(TRAIN_FILES):
        part = slice(i * IMAGES_PER_FILE, (i + 1) * IMAGES_PER_FILE)
        write_batch_file(folder / name, data.train_x[part].numpy(), data.train_y[part].numpy())
    write_batch_file(folder / TEST_FILE, data.test_x.numpy(), data.test_y.numpy())
    meta = {b"num_cases_per_batch": IMAGES_PER_FILE, b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}
    (folder / META_FILE).write_bytes(pickle.dumps(meta, protocol=4))
    return root


def synthetic_dataset(seed: int = 0) -> Cifar10:
    """A learnable fake CIFAR-10: each class is a distinct blocky colour pattern plus noise.

    Tests use it (through :func:`write_dataset`) when the real data is absent; written in
    the real file format, it exercises the real loader and trainer unchanged.
    """
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, size=(10, 3, 4, 4)).repeat(8, axis=2).repeat(8, axis=3)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = np.arange(n) % 10
        images = np.clip(prototypes[labels] + rng.normal(0, 40, size=(n, 3, 32, 32)), 0, 255).astype(np.uint8)
        return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))

    return Cifar10(*split(5 * IMAGES_PER_FILE), *split(IMAGES_PER_FILE), CLASSES, "synthetic")
