"""Looking inside the network: Grad-CAM, feature maps, activation statistics, the explain command, the Inside page.

The Grad-CAM check trains a tiny network in the test on pictures whose class is decided
by a coloured patch at a random place, then asks Grad-CAM where the evidence is: the
heatmap's maximum must fall inside the patch. The pages are driven through AppTest on
the real ``dashboard.py``; the browser test is in ``test_inside_browser.py``.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import threading
from collections import OrderedDict

import numpy as np
import pytest
import torch
from conftest import APP, ROOT, TIMEOUT, fake_finished_run, image_bytes, run_cli, texts
from PIL import Image
from streamlit.testing.v1 import AppTest
from torch import nn

from cifarnet.analysis.activation_stats import activation_stats, moments, normalised, relu_stats, spreads
from cifarnet.analysis.explain import MAX_IMAGES, parse_indices
from cifarnet.analysis.feature_maps import feature_grid, feature_maps
from cifarnet.analysis.gradcam import colorize, grad_cam, overlay
from cifarnet.cli import main
from cifarnet.data.cifar10 import CLASSES, load_cifar10
from cifarnet.errors import CifarnetError
from cifarnet.nets.layers import capture, default_layer, find_layer, layer_names, layers
from cifarnet.nets.models import build_model
from cifarnet.nets.receptive_field import receptive_field
from cifarnet.runs.folders import PRETRAINED_DIR
from cifarnet.training.checkpoint import save_checkpoint
from cifarnet.ui.query import parse_query

SHIPPED_BN = PRETRAINED_DIR / "s9-bn" / "model.pt"
PATCH = 6


# -- Grad-CAM finds the evidence ---------------------------------------------------------------------


def patch_pictures(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grey noise with one 6x6 patch at a random place: red for class 0, green for class 1.

    Returns the pictures (floats in [0, 1]), the classes and each patch's top-left corner.
    """
    pictures = 0.35 + 0.2 * torch.rand(count, 3, 32, 32, generator=generator)
    classes = torch.randint(0, 2, (count,), generator=generator)
    corners = torch.randint(0, 32 - PATCH + 1, (count, 2), generator=generator)
    colours = torch.tensor([[0.95, 0.1, 0.1], [0.1, 0.95, 0.1]])
    for picture, label, (y, x) in zip(pictures, classes, corners.tolist()):
        picture[:, y : y + PATCH, x : x + PATCH] = colours[label][:, None, None]
    return pictures, classes, corners


def tiny_network() -> nn.Module:
    """Two 3x3 convs (in-place ReLUs, as in the real models), global pooling and a linear classifier."""
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 16, 3, padding=1),
            relu1=nn.ReLU(inplace=True),
            conv2=nn.Conv2d(16, 16, 3, padding=1),
            relu2=nn.ReLU(inplace=True),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            fc=nn.Linear(16, 2),
        )
    )


@pytest.mark.heavy
def test_grad_cam_peaks_inside_the_patch_that_decides_the_class():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    net = tiny_network()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(120):
        pictures, classes, _ = patch_pictures(64, generator)
        loss = nn.functional.cross_entropy(net(pictures), classes)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    pictures, classes, corners = patch_pictures(40, generator)
    cam = grad_cam(net, pictures, "conv2", classes)
    assert float((cam.probs.argmax(1) == classes).float().mean()) > 0.95  # it learned the task
    assert cam.heatmaps.shape == (40, 32, 32) and float(cam.heatmaps.min()) >= 0
    for heat, (y, x) in zip(cam.heatmaps, corners.tolist()):
        row, col = divmod(int(heat.argmax()), 32)
        assert y <= row < y + PATCH and x <= col < x + PATCH, ((row, col), (y, x))
    assert torch.allclose(cam.heatmaps.amax(dim=(1, 2)), torch.ones(40))


@pytest.mark.parametrize(("arch", "norm"), [("s9", "bn"), ("s9", "gn"), ("seed", "ln")])
@pytest.mark.heavy
def test_grad_cam_works_at_every_layer_and_a_batch_equals_single_images(arch, norm):
    model = build_model(arch, norm).eval()
    pictures = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    for name in layer_names(model):
        cam = grad_cam(model, pictures, name, 4)
        assert cam.heatmaps.shape == (3, 32, 32) and cam.targets.tolist() == [4, 4, 4]
        assert float(cam.heatmaps.min()) >= 0 and float(cam.heatmaps.max()) <= 1 + 1e-6
    together = grad_cam(model, pictures, default_layer(model))
    for i in range(3):
        alone = grad_cam(model, pictures[i : i + 1], default_layer(model))
        assert torch.equal(alone.targets[0], together.targets[i])
        assert torch.allclose(alone.heatmaps[0], together.heatmaps[i], atol=1e-4)
        assert torch.allclose(alone.probs[0], together.probs[i], atol=1e-5)


def test_grad_cam_refuses_unknown_layers_and_classes():
    model = build_model("s9", "ln").eval()
    with pytest.raises(CifarnetError, match=r"unknown layer 'body\.c1\.0\.1'; allowed: body\.c1\.0\.0, .*body\.c4$"):
        grad_cam(model, torch.zeros(1, 3, 32, 32), "body.c1.0.1")  # a norm, not a conv
    with pytest.raises(CifarnetError, match="target class .* out of range; allowed: 0 to 9"):
        grad_cam(model, torch.zeros(2, 3, 32, 32), "body.c4", 10)
    with pytest.raises(CifarnetError, match="3 target classes for 2 images"):
        grad_cam(model, torch.zeros(2, 3, 32, 32), "body.c4", [1, 2, 3])


# -- layers, feature maps, pictures ------------------------------------------------------------------


def test_layers_carry_geometry_from_the_receptive_field_module():
    s9 = build_model("s9", "bn")
    found = {layer.name: layer for layer in layers(s9)}
    assert default_layer(s9) == "body.c4" and list(found)[-1] == "body.c4"
    assert sum(layer.kind == "block" for layer in found.values()) == 4
    last = found["body.c4"]
    assert (last.channels, last.size, last.rf, last.jump) == (128, 8, receptive_field(s9).rf, 4)
    assert (found["body.c1.0.0"].channels, found["body.c1.0.0"].size, found["body.c1.0.0"].rf) == (32, 32, 3)
    assert found["body.c2"].title == "body.c2 (C2 output, 64 x 16x16)"
    assert "body.head.1" not in found  # the classifier after pooling has no map to look at
    seed = build_model("seed", "gn")
    assert find_layer(seed, "body.c4").size == 26 and find_layer(seed, "body.c4").rf == 97


def test_capture_ignores_other_threads_and_survives_in_place_relu():
    model = build_model("s9", "bn").eval()
    with capture(model, ["body.c1.0.0"]) as outputs:
        worker = threading.Thread(target=lambda: model(torch.rand(1, 3, 32, 32)))
        worker.start()
        worker.join()
        assert outputs == {}  # another session's forward pass is not recorded
        model(torch.rand(1, 3, 32, 32))
    net = tiny_network().eval()
    with capture(net, ["conv1"]) as outputs, torch.no_grad():
        net(torch.rand(1, 3, 32, 32))
    assert float(outputs["conv1"].min()) < 0  # the in-place ReLU after it did not overwrite the record


def test_feature_maps_grid_and_overlay_pictures():
    model = build_model("s9", "gn").eval()
    picture = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    maps = feature_maps(model, picture, "body.c3")
    assert maps.shape == (128, 8, 8)
    grid = feature_grid(maps)
    cell = 8 * 6  # 8x8 maps enlarged 6x
    assert grid.dtype == np.uint8 and grid.shape == (8 * cell + 7 * 2, 16 * cell + 15 * 2, 3)
    assert (grid[:cell, cell : cell + 2] == 255).all()  # a white gap between cells
    assert colorize(np.array([0.0, 1.0])).tolist() == [[0, 0, 4], [252, 255, 164]]
    cold = overlay(picture, np.zeros((32, 32)), scale=4)
    assert cold.shape == (128, 128, 3) and np.array_equal(cold[::4, ::4], picture)  # no heat: the picture itself
    hot = overlay(picture, np.ones((32, 32)))
    assert not np.array_equal(hot, picture)


# -- activation statistics ---------------------------------------------------------------------------


def test_statistics_match_a_hand_computation():
    values = torch.tensor(
        [[[[0.0, 2.0]], [[4.0, 0.0]]], [[[1.0, 1.0]], [[0.0, 0.0]]]]
    )  # 2 images, 2 channels, 1x2 pixels
    # mean 8/8 = 1; squared deviations 1+1+9+1+0+0+1+1 = 14, so std = sqrt(14/8); 4 of 8 values are zero
    assert relu_stats(values) == pytest.approx({"mean": 1.0, "std": math.sqrt(1.75), "zeros": 0.5})
    # channel means (0+2+1+1)/4 = 1 and (4+0+0+0)/4 = 1: no spread; image means 6/4 = 1.5 and 2/4 = 0.5: std 0.5
    assert spreads(*moments(values)) == pytest.approx({"channel": 0.0, "image": 0.5 / math.sqrt(1.75)})


@pytest.mark.parametrize(
    "norm", [nn.BatchNorm2d(8).train(), nn.BatchNorm2d(8).eval(), nn.GroupNorm(2, 8), nn.GroupNorm(1, 8)]
)
def test_normalised_moments_match_the_norm_itself(norm):
    torch.manual_seed(0)
    if isinstance(norm, nn.BatchNorm2d):
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
    x = torch.randn(16, 8, 5, 5) * 3 + torch.arange(8.0)[None, :, None, None] + torch.randn(16, 1, 1, 1)
    with torch.no_grad():
        direct = moments(norm(x))  # a fresh norm's learned scale is 1 and its shift 0
    derived = normalised(norm, *moments(x))
    assert torch.allclose(derived[0], direct[0], atol=1e-5) and torch.allclose(derived[1], direct[1], atol=1e-4)


def test_batchnorm_centres_channels_and_layernorm_centres_images():
    generator = torch.Generator().manual_seed(0)
    brightness = torch.rand(32, 1, 1, 1, generator=generator)  # pictures differ, as real ones do
    images = (255 * brightness * torch.rand(32, 3, 32, 32, generator=generator)).to(torch.uint8)
    bn, ln = build_model("s9", "bn").eval(), build_model("s9", "ln").eval()
    running = bn.body.c1[0][1].running_mean.clone()
    x = torch.randn(16, 8, 4, 4) * 3 + torch.arange(8.0)[None, :, None, None]  # channels with their own means
    assert normalised(nn.BatchNorm2d(8).train(), *moments(x))[0].mean(0).abs().max() < 1e-6  # per-channel means
    assert normalised(nn.GroupNorm(1, 8), *moments(x))[0].mean(1).abs().max() < 1e-6  # per-image means

    trained_bn = activation_stats(bn, images, batch_statistics=True)
    assert (trained_bn.norm["channel_after"] < 1e-3).all() and (trained_bn.norm["image_after"] > 1e-3).all()
    assert torch.equal(bn.body.c1[0][1].running_mean, running)  # measured on a copy: the model is untouched
    per_image = activation_stats(ln, images)
    assert (per_image.norm["image_after"] < 1e-3).all() and (per_image.norm["channel_after"] > 1e-3).all()
    assert list(per_image.relu["#"]) == list(range(1, 9)) and per_image.relu["block"].iloc[-1] == "C4"
    assert per_image.relu["zeros"].between(0, 1).all() and (per_image.relu["mean"] >= 0).all()
    seed = activation_stats(build_model("seed", "gn").eval(), images[:4])
    assert len(seed.relu) == len(seed.norm) == sum(isinstance(m, nn.ReLU) for m in build_model("seed", "gn").modules())


# -- the explain command -----------------------------------------------------------------------------


@pytest.mark.heavy
def test_explain_an_image_file_without_the_data_set(tmp_path):
    picture = tmp_path / "sky.png"
    picture.write_bytes(image_bytes(Image.new("RGB", (120, 80), (40, 90, 200))))
    out = tmp_path / "sky-cam.png"
    done = run_cli(
        "explain",
        "--checkpoint",
        str(SHIPPED_BN),
        "--image",
        str(picture),
        "--out",
        str(out),
        "--json",
        env={"CIFARNET_DATA": str(tmp_path / "nothing")},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["layer"] == "body.c4" and report["out"] == str(out)
    (one,) = report["images"]
    assert one["index"] is None and one["label"] is None and one["name"] == "sky.png"
    assert len(one["top_k"]) == 3 and one["top_k"][0]["class"] == one["target"] in CLASSES
    assert one["top_k"][0]["prob"] >= one["top_k"][1]["prob"] >= one["top_k"][2]["prob"]
    heat = np.array(one["heatmap"])
    assert heat.shape == (32, 32) and heat.min() >= 0 and heat.max() == 1
    with Image.open(out) as sheet:
        assert sheet.format == "PNG" and sheet.width >= 2 * 128


@pytest.mark.heavy
def test_explain_a_range_of_test_images(tmp_path, data_dir, capsys):
    out = tmp_path / "range.png"
    code = main(
        [
            "explain",
            "--checkpoint",
            str(SHIPPED_BN),
            "--index",
            "10:14",
            "--target",
            "cat",
            "--layer",
            "body.c3",
            "--out",
            str(out),
            "--data-dir",
            str(data_dir),
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    labels = load_cifar10(data_dir, allow_download=False).test_y[10:14].tolist()
    assert [e["index"] for e in report["images"]] == [10, 11, 12, 13] and report["layer"] == "body.c3"
    assert [e["label"] for e in report["images"]] == [CLASSES[c] for c in labels]
    assert {e["target"] for e in report["images"]} == {"cat"}
    with Image.open(out) as sheet:
        assert sheet.size[0] > 4 * 256  # four cells side by side


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--index", "3", "--layer", "body.c9"], "unknown layer 'body.c9'; allowed: body.c1.0.0, "),
        (["--index", "10000"], "--index 10000 is out of range; the test set has 10,000 images (0 to 9999)"),
        (["--index", "7:2"], "--index 7:2 is empty"),
        (["--index", "seven"], "--index 'seven' is not a number N or a range A:B"),
        (["--index", "3", "--target", "unicorn"], "--target 'unicorn' is not a class; allowed: airplane, "),
        (["--image", "CORRUPT"], "not an image this app can read"),
        (["--image", "MISSING"], "does not exist or is not a file"),
        (["--index", "3", "--checkpoint", "FOREIGN"], "has weights that do not fit arch='s9'"),
        (["--index", "3", "--out", "sheet.jpg"], "must name a .png file"),
    ],
)
@pytest.mark.heavy
def test_explain_refuses_bad_input_in_one_line(tmp_path, data_dir, capsys, flags, message):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG this is not really a picture")
    foreign = tmp_path / "foreign.pt"
    save_checkpoint(foreign, build_model("seed", "bn"))
    payload = torch.load(foreign, weights_only=True)
    payload["model"]["arch"] = "s9"  # seed's weights under s9's name
    torch.save(payload, foreign)
    swap = {
        "CORRUPT": str(corrupt),
        "MISSING": str(tmp_path / "nope.png"),
        "FOREIGN": str(foreign),
        "sheet.jpg": str(tmp_path / "sheet.jpg"),
    }
    args = {"--checkpoint": str(SHIPPED_BN), "--out": str(tmp_path / "x.png"), "--data-dir": str(data_dir)}
    pairs = dict(zip(flags[::2], flags[1::2]))
    args.update({flag: swap.get(value, value) for flag, value in pairs.items()})
    code = main(["explain", *[part for pair in args.items() for part in pair]])
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_explain_needs_exactly_one_picture_source(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["explain", "--checkpoint", str(SHIPPED_BN), "--out", "x.png"])
    assert stop.value.code == 2
    assert "one of the arguments --index --image is required" in capsys.readouterr().err
    assert parse_indices("0:256", 10_000) == range(256)
    with pytest.raises(CifarnetError, match=f"at most {MAX_IMAGES} at a time"):
        parse_indices("0:257", 10_000)


# -- the Inside page and the gallery's Grad-CAM -----------------------------------------------------


@pytest.fixture
def inside(runs_dir, data_dir, monkeypatch):
    """Opens the Inside page (with a query string) in a fresh session."""
    monkeypatch.setenv("CIFARNET_DATA", str(data_dir))

    def open_page(page: str = "inside", **query: str) -> AppTest:
        at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
        at.query_params.update(query)
        at.run()
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return open_page


def markdown(at: AppTest) -> str:
    return texts(at.markdown)


@pytest.mark.heavy
def test_inside_follows_a_link_to_a_run_and_test_image(inside):
    at = inside(run="s9-ln", index="12", norm="gn")
    assert at.selectbox(key="inside_run").value == "s9-ln"
    assert "**test image #12**" in markdown(at) and not at.sidebar.warning  # run/index are not settings
    assert (at.query_params["run"], at.query_params["index"], at.query_params["norm"]) == ("s9-ln", "12", "gn")
    assert len(at.get("image")) == 1 + 2 + 1 + 3  # picture, two Grad-CAMs, feature maps, one per shipped norm
    assert markdown(at).count("#### s10-") == 3 and "Grad-CAM: " in markdown(at)  # the shipped trio
    assert len(at.get("plotly_chart")) == 1 + 1 + 3 + 2  # top-k, RF square, three top-k, two statistics
    at.select_slider(key="inside_maps_s9-ln").set_value("body.c4").run()
    assert "**body.c4 (C4 output, 128 x 8x8)**: 128 channels" in markdown(at)
    at.number_input(key="inside_number").set_value(40).run()
    assert at.query_params["index"] == "40" and "**test image #40**" in markdown(at)


def test_inside_reports_bad_link_values(inside):
    at = inside(run="nope", index="99999")
    assert "The link asks for run 'nope', which is not here" in texts(at.warning)
    assert "The link's test image 99999 does not exist: the test set has 10,000 images" in texts(at.error)
    assert at.selectbox(key="inside_run").value == "s10-bn" and "**test image #0**" in markdown(at)


@pytest.mark.slow
def test_inside_without_data_takes_an_upload_and_shows_the_statistics(inside, monkeypatch, tmp_path):
    monkeypatch.setenv("CIFARNET_DATA", str(tmp_path / "empty"))
    at = inside()
    assert at.segmented_control(key="inside_source").value == "Upload"  # no test images to pick from
    assert "Upload a picture" in texts(at.info)
    assert "synthetic pattern pictures" in texts(at.caption) and len(at.get("plotly_chart")) == 2
    picture = image_bytes(Image.new("RGB", (90, 60), (40, 90, 200)))
    at.get("file_uploader")[0].set_value(("sky.png", picture, "image/png"))
    at.run()
    assert not at.exception and not at.error
    assert "**sky.png**" in markdown(at) and len(at.get("image")) == 7
    at.get("file_uploader")[0].set_value(("broken.png", b"\x89PNG not a picture", "image/png"))
    at.run()
    assert not at.exception
    assert "**broken.png:** the file is not an image this app can read" in texts(at.error)


@pytest.mark.heavy
def test_inside_shows_a_runs_mistakes_and_refuses_a_foreign_model(inside, runs_dir, data_dir):
    labels = load_cifar10(data_dir, allow_download=False).test_y.numpy()
    mine = fake_finished_run(runs_dir, labels, wrong_every=7)
    save_checkpoint(mine / "model.pt", build_model("seed", "bn"))
    at = inside(run="mine")
    at.segmented_control(key="inside_source").set_value("A mistake of this run").run()
    assert not at.exception
    mistake = at.selectbox(key="inside_mistake_mine")
    assert len(mistake.options) == len(labels[::7]) and mistake.value % 7 == 0
    assert f"**test image #{mistake.value}**" in markdown(at)
    layer_picker = next(box for box in at.selectbox if box.label == "Grad-CAM layer")
    assert layer_picker.value == "body.c4" and "body.c4 (C4 output, 64 x 26x26)" in layer_picker.options  # seed
    broken = fake_finished_run(runs_dir, labels, name="broken")
    (broken / "model.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    at = inside(run="broken")
    assert not at.exception and "broken:** checkpoint" in texts(at.error)


def test_misclassified_gradcam_switch_and_links_to_inside(inside, runs_dir, data_dir):
    labels = load_cifar10(data_dir, allow_download=False).test_y.numpy()
    mine = fake_finished_run(runs_dir, labels, wrong_every=7)
    shutil.copy(PRETRAINED_DIR / "s9-gn" / "model.pt", mine / "model.pt")
    at = inside("misclassified", norm="ln")
    at.selectbox[0].set_value("mine").run()
    plain = [image.proto.imgs[0].url for image in at.get("image")]
    links = [image.proto.link for image in at.get("image")]
    assert sorted(links) == sorted(f"inside?norm=ln&run=mine&index={7 * i}" for i in range(32))  # the first page
    at.toggle(key="mis_cam").set_value(True).run()
    assert not at.exception and not at.warning
    drawn = [image.proto.imgs[0].url for image in at.get("image")]
    assert len(drawn) == 32 and len(set(drawn) - set(plain)) >= 28  # (a class with no evidence anywhere has no heat)
    assert parse_query({"run": "mine", "index": "7"}).problems == []


@pytest.mark.slow
def test_explain_speed_bench_reports_json(tmp_path):
    """The benchmark runs end to end with tiny settings (its figures are not checked here)."""
    command = [
        sys.executable,
        str(ROOT / "bench" / "explain_speed.py"),
        "--json",
        "--models",
        "s9-gn,seed-ln",
        "--reps",
        "1",
        "--images",
        "8",
        "--threads",
        "1",
        "--data-dir",
        str(tmp_path / "none"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["images"] == 8 and result["source"] == "random pictures" and result["cli_64_s"] is None
    assert [row["model"] for row in result["models"]] == ["s9-gn", "seed-ln"]
    assert all(
        row["layer"] == "body.c4" and 0 < row["gradcam_s"] < 60 and 0 < row["stats_s"] < 60 for row in result["models"]
    )
