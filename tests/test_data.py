"""Issue 2/5: loading CIFAR-10 from the batch files, validation by content, download, subsets, augmentation."""

from __future__ import annotations

import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REAL_DATA, data_with_labels, real_data_present, run_cli

from cifarnet import DataError
from cifarnet.config import make_config
from cifarnet.data import cifar10 as data_mod
from cifarnet.data.augment import augment_batch, preview_grid, random_crop, random_cutout, to_float
from cifarnet.data.cifar10 import FOLDER, load_cifar10, stratified_subset, write_batch_file


@pytest.fixture
def small_copy(tmp_path, data_dir):
    """A private copy of the data folder that a test may damage."""
    target = tmp_path / "data"
    shutil.copytree(data_dir / FOLDER, target / FOLDER)
    return target


def test_loads_whole_set_as_uint8_tensors_quickly(data_dir):
    data_mod._load_folder.cache_clear()
    started = time.time()
    data = load_cifar10(data_dir)
    assert time.time() - started < 20
    assert data.train_x.shape == (50_000, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (10_000, 3, 32, 32)
    assert data.train_y.dtype == torch.int64 and int(data.train_y.max()) == 9
    assert data.classes[0] == "airplane" and len(data.classes) == 10
    assert load_cifar10(data_dir) is data  # cached: the dashboard pays once


def _listing(folder):
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.mark.heavy
def test_decoded_copy_is_built_once_outside_the_data_folder_and_memory_mapped(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFARNET_CACHE", str(tmp_path / "cache"))
    before = _listing(data_dir)
    data_mod._load_folder.cache_clear()
    first = load_cifar10(data_dir)
    where = data_mod.cache_folder(data_dir / FOLDER)
    assert where.parent == tmp_path / "cache" and (where / "manifest.json").is_file()
    data_mod._load_folder.cache_clear()

    def no_unpickling(path):
        raise AssertionError(f"{path} was unpickled although a decoded copy exists")

    monkeypatch.setattr(data_mod, "_read_batch", no_unpickling)
    second = load_cifar10(data_dir)
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert second.train_x.dtype == torch.uint8 and second.train_y.dtype == torch.int64
    assert _listing(data_dir) == before  # the data folder is never written


@pytest.mark.parametrize("damage", ["truncate", "flip a byte", "labels out of range", "manifest"])
@pytest.mark.heavy
def test_damaged_decoded_copy_is_rebuilt_not_trusted(small_copy, tmp_path, monkeypatch, damage):
    monkeypatch.setenv("CIFARNET_CACHE", str(tmp_path / "cache"))
    data_mod._load_folder.cache_clear()
    good = load_cifar10(small_copy)
    where = data_mod.cache_folder(small_copy / FOLDER)
    if damage == "truncate":
        (where / "train_x.npy").write_bytes((where / "train_x.npy").read_bytes()[:5000])
    elif damage == "flip a byte":
        raw = bytearray((where / "test_x.npy").read_bytes())
        raw[-7] ^= 0xFF
        (where / "test_x.npy").write_bytes(bytes(raw))
    elif damage == "labels out of range":
        np.save(where / "test_y.npy", np.full(10_000, 11, np.int64))
    else:
        (where / "manifest.json").write_text("{not json")
    assert data_mod.read_cache(small_copy / FOLDER) is None
    data_mod._load_folder.cache_clear()
    again = load_cifar10(small_copy)
    assert torch.equal(again.test_x, good.test_x) and torch.equal(again.test_y, good.test_y)
    assert torch.equal(again.train_x, good.train_x)
    assert data_mod.read_cache(small_copy / FOLDER) is not None  # rebuilt


def test_changed_batch_file_is_not_served_from_a_stale_copy(small_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFARNET_CACHE", str(tmp_path / "cache"))
    data_mod._load_folder.cache_clear()
    load_cifar10(small_copy)
    images = np.zeros((10_000, 3, 32, 32), np.uint8)
    write_batch_file(small_copy / FOLDER / "test_batch", images, np.arange(10_000) % 10)
    data_mod._load_folder.cache_clear()
    changed = load_cifar10(small_copy)
    assert int(changed.test_x.max()) == 0 and changed.test_y[:3].tolist() == [0, 1, 2]


def test_unwritable_cache_folder_only_costs_time(data_dir, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CIFARNET_CACHE", str(blocker))
    data_mod._load_folder.cache_clear()
    assert load_cifar10(data_dir).train_x.shape == (50_000, 3, 32, 32)


def test_cache_folder_default_is_the_users_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("CIFARNET_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data_mod.cache_root() == tmp_path / "cifarnet"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data_mod.cache_root() == Path.home() / ".cache" / "cifarnet"


@pytest.mark.skipif(not real_data_present(), reason="needs the offline copy in ../shared/data")
def test_offline_copy_with_other_md5s_loads():
    data = load_cifar10(REAL_DATA)
    assert torch.bincount(data.test_y).tolist() == [1000] * 10


def test_environment_variable_and_both_folder_spellings(data_dir, monkeypatch):
    monkeypatch.setenv("CIFARNET_DATA", str(data_dir))
    assert load_cifar10().source == str((data_dir / FOLDER).resolve())
    assert load_cifar10(data_dir / FOLDER).source == str((data_dir / FOLDER).resolve())


def test_truncated_file_names_the_file(small_copy):
    batch = small_copy / FOLDER / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"data_batch_3 is truncated or corrupt"):
        load_cifar10(small_copy)


def test_wrong_shapes_and_labels_name_the_file(small_copy):
    write_batch_file(small_copy / FOLDER / "data_batch_2", np.zeros((10_000, 3, 16, 16), np.uint8), np.zeros(10_000))
    with pytest.raises(DataError, match=r"data_batch_2 has wrong image data \(shape \(10000, 768\)\)"):
        load_cifar10(small_copy)
    write_batch_file(small_copy / FOLDER / "data_batch_2", np.zeros((10_000, 3, 32, 32), np.uint8), np.full(10_000, 12))
    with pytest.raises(DataError, match=r"data_batch_2 has labels outside 0..9"):
        load_cifar10(small_copy)


N = data_mod.IMAGES_PER_FILE
NOT_WHOLE = "a label that is not a whole number at position 0"
MALFORMED_LABELS = {  # what a crafted or broken batch file can hold where its labels belong
    "strings": (["cat"] * N, f"{NOT_WHOLE} ('cat', a str)"),
    "None": (None, "no label list (found NoneType)"),
    "nested lists": ([[1, 2]] * N, f"{NOT_WHOLE} ([1, 2], a list)"),
    "huge ints": ([3] * (N - 1) + [2**70], f"labels outside 0..9 (at position {N - 1}: {2**70})"),
    "negative": ([-1] * N, "labels outside 0..9 (at position 0: -1)"),
    "floats": ([1.5] * N, f"{NOT_WHOLE} (1.5, a float)"),
    "whole floats": (np.full(N, 2.0), f"{NOT_WHOLE} (2.0, a float)"),
    "bools": ([True] * N, f"{NOT_WHOLE} (True, a bool)"),
    "numpy object array": (np.array(["x"] * N, dtype=object), f"{NOT_WHOLE} ('x', a str)"),
    "2-d array": (np.zeros((N, 2), np.int64), f"{NOT_WHOLE} ([0, 0], a list)"),
    "text": ("0123456789" * (N // 10), "no label list (found str)"),
    "too few": ([0] * (N - 1), f"{N - 1} labels"),
}


@pytest.mark.parametrize("case", MALFORMED_LABELS)
@pytest.mark.heavy
def test_malformed_labels_are_refused_in_one_message_naming_the_file(tmp_path, data_dir, case):
    labels, problem = MALFORMED_LABELS[case]
    folder = data_with_labels(tmp_path / "data", data_dir, labels)
    with pytest.raises(DataError) as info:
        load_cifar10(folder)
    message = str(info.value)
    assert message.startswith(f"CIFAR-10 file {folder / FOLDER / 'data_batch_1'} has {problem}")
    assert message.endswith("; allowed: a list of 10000 whole numbers from 0 to 9") and "\n" not in message


@pytest.mark.heavy
def test_labels_as_an_integer_array_load(tmp_path, data_dir):
    labels = np.arange(N, dtype=np.uint8) % 10  # not the official list, but sound
    data = load_cifar10(data_with_labels(tmp_path / "data", data_dir, labels))
    assert data.train_y.dtype == torch.int64 and data.train_y[:N].tolist() == labels.tolist()


@pytest.mark.parametrize("case", ["strings", "huge ints", "numpy object array"])
@pytest.mark.heavy
def test_cli_data_and_evaluate_refuse_malformed_labels_in_one_line(tmp_path, data_dir, case):
    folder = data_with_labels(tmp_path / "data", data_dir, MALFORMED_LABELS[case][0])
    commands = [("data", "--data-dir", str(folder))]
    if case == "strings":
        shipped = "cifarnet/pretrained/s9-bn/model.pt"
        commands.append(("evaluate", "--checkpoint", shipped, "--data-dir", str(folder)))
    for command in commands:
        result = run_cli(*command)
        assert result.returncode == 2 and "Traceback" not in result.stderr and result.stderr.count("\n") == 1
        assert result.stderr.startswith(f"cifarnet: error: CIFAR-10 file {folder / FOLDER / 'data_batch_1'} has ")


def test_missing_file_is_named(small_copy):
    (small_copy / FOLDER / "test_batch").unlink()
    with pytest.raises(DataError, match="incomplete: missing test_batch"):
        load_cifar10(small_copy)


def test_pickle_that_runs_code_is_refused(small_copy, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (small_copy / FOLDER / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match="data_batch_1 is truncated or corrupt"):
        load_cifar10(small_copy)
    assert not marker.exists()


def test_missing_and_offline_says_where_to_put_files(tmp_path, monkeypatch):
    calls = []

    def offline(url, download_root, md5):
        calls.append((url, md5))
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", offline)
    with pytest.raises(DataError) as info:
        load_cifar10(tmp_path)  # an existing, empty folder: the files would be downloaded into it
    message = str(info.value)
    assert "could not be downloaded" in message and "cifar-10-batches-py" in message and "CIFARNET_DATA" in message
    assert calls == [(data_mod.URL, "c58f30108f718f92721af3b95e74349a")]  # canonical archive md5 checked


def test_download_not_allowed_gives_the_same_guidance(tmp_path):
    with pytest.raises(DataError, match="download not allowed.*--data-dir / CIFARNET_DATA"):
        load_cifar10(tmp_path, allow_download=False)


def test_data_dir_that_does_not_exist_is_refused_without_download(tmp_path, monkeypatch):
    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", pytest.fail)
    with pytest.raises(DataError, match=r"typo|does not exist; give an existing folder"):
        load_cifar10(tmp_path / "typo")
    monkeypatch.setenv("CIFARNET_DATA", str(tmp_path / "typo"))
    with pytest.raises(DataError, match=r"\(from CIFARNET_DATA\) does not exist"):
        load_cifar10()


@pytest.mark.heavy
def test_cli_data_reports_missing_data_in_one_line(tmp_path):
    result = run_cli("data", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("cifarnet: error: CIFAR-10 not found") and result.stderr.count("\n") == 1


def test_stratified_subset_is_balanced_and_seeded():
    labels = torch.arange(1000) % 10
    picks = stratified_subset(labels, 7, seed=3)
    assert torch.bincount(labels[picks]).tolist() == [7] * 10
    assert torch.equal(picks, stratified_subset(labels, 7, seed=3))
    assert not torch.equal(picks, stratified_subset(labels, 7, seed=4))


def _batch(n=16):
    return to_float(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8))


def test_augmentations_are_seeded_and_switchable():
    x = _batch()
    cfg = make_config({"crop": True, "flip": True, "affine": "ssr", "cutout": True})
    a = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape
    off = make_config({"crop": False, "flip": False, "affine": "none", "cutout": False})
    assert torch.equal(augment_batch(x, off, torch.Generator()), x)


def test_crop_translates_content():
    x = _batch(64)
    out = random_crop(x, 2, torch.Generator().manual_seed(0))
    # every output is the input shifted by (dy, dx) in [-2, 2]: its centre matches some shift exactly
    for i in range(8):
        centre = out[i, :, 4:28, 4:28]
        assert any(
            torch.equal(centre, x[i, :, 4 + dy : 28 + dy, 4 + dx : 28 + dx])
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        )


def test_flip_mirrors_about_half():
    x = _batch(400)
    out = augment_batch(x, make_config({"crop": False, "flip": True}), torch.Generator().manual_seed(0))
    flipped = sum(torch.equal(out[i], x[i].flip(2)) for i in range(400))
    assert 150 < flipped < 250


def test_cutout_zeroes_one_square():
    x = torch.ones(32, 3, 32, 32)
    out = random_cutout(x, 8, torch.Generator().manual_seed(0))
    zeros = (out[:, 0] == 0).sum(dim=(1, 2))
    assert zeros.max() == 64 and zeros.min() >= 16  # a full 8x8 hole, or clipped at the border


def test_preview_grid_shape_and_first_column_is_original():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    grid = preview_grid(images, make_config(), seed=0, rows=4, cols=5, scale=2)
    assert grid.shape == (4 * 34 * 2, 5 * 34 * 2, 3) and grid.dtype == np.uint8
    first = grid[2:66:2, 2:66:2]
    assert np.array_equal(first, images[0].permute(1, 2, 0).numpy())
