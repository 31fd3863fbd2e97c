"""The ``explain`` command's work: pick pictures, explain them with Grad-CAM, draw a sheet, write JSON.

A sheet has one cell per picture: the 32x32 image and its Grad-CAM overlay, both enlarged
4x without smoothing, over three lines of text (which picture and its true class, the
model's top-3 classes, the class the heatmap explains). Pictures come from the test set
(one index or a range ``A:B``) or from an image file, read exactly like an upload on the
Predict page.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from cifarnet.analysis.gradcam import grad_cam, overlay
from cifarnet.analysis.predict import prepare
from cifarnet.data.images import enlarge
from cifarnet.errors import CifarnetError, shown

TOP_K = 3
MAX_IMAGES = 256  # a sheet of 64 rows; the JSON of as many 32x32 heatmaps is about 2 MB
SCALE = 4
COLUMNS = 4
FONT_PX = 13
LINE_PX = 17
PAD_PX = 10
DIGITS = re.compile(r"[0-9]+")  # a class or image number as typed: ASCII digits only
WRONG, RIGHT, INK = (200, 30, 30), (20, 130, 50), (30, 30, 30)


@dataclass(frozen=True)
class Explained:
    """One picture with what the model makes of it."""

    name: str  # "test image #3" or the file name
    index: int | None  # place in the test set; None for a file
    label: int | None  # true class when known
    image: np.ndarray  # 32x32x3 uint8
    top: list[tuple[int, float]]  # (class, probability), most probable first
    target: int  # the class the heatmap explains
    heatmap: np.ndarray  # 32x32 in [0, 1]


def parse_indices(text: str, count: int) -> range:
    """``N`` or ``A:B`` (B excluded, like a Python slice) as test-set indices, or a refusal saying why."""
    parts = text.split(":")
    if not all(map(DIGITS.fullmatch, parts)):  # plain digits: int() would also take "²"-like, "1_0" and " 3"
        raise CifarnetError(f"--index {shown(text)} is not a number N or a range A:B")
    numbers = [int(part) for part in parts]
    if len(numbers) == 1:
        numbers.append(numbers[0] + 1)
    if len(numbers) != 2:
        raise CifarnetError(f"--index {text!r} is not a number N or a range A:B")
    start, stop = numbers
    if not 0 <= start < count or not 0 < stop <= count:
        raise CifarnetError(f"--index {text} is out of range; the test set has {count:,} images (0 to {count - 1})")
    if stop <= start:
        raise CifarnetError(f"--index {text} is empty; a range A:B needs A < B")
    if stop - start > MAX_IMAGES:
        raise CifarnetError(f"--index {text} holds {stop - start:,} images; at most {MAX_IMAGES} at a time")
    return range(start, stop)


def parse_target(text: str | None, classes: Sequence[str]) -> int | None:
    """A class given by name or number (``None``: each picture's predicted class)."""
    if text is None:
        return None
    if text in classes:
        return classes.index(text)
    if DIGITS.fullmatch(text) and int(text) < len(classes):  # str.isdigit() also passes "²", which int() refuses
        return int(text)
    raise CifarnetError(
        f"--target {shown(text)} is not a class; allowed: {', '.join(classes)} or 0 to {len(classes) - 1}"
    )


def read_picture(path: str | Path) -> torch.Tensor:
    """An image file as the network sees it (a 1x3x32x32 uint8 batch), with the Predict page's checks and messages."""
    path = Path(path)
    if not path.is_file():
        raise CifarnetError(f"image file {path} does not exist or is not a file")
    try:
        view = prepare(path.read_bytes()).view
    except CifarnetError as exc:
        raise CifarnetError(f"{path}: {exc}") from None
    return torch.from_numpy(view).permute(2, 0, 1).unsqueeze(0).contiguous()


def explain(
    model: nn.Module,
    images: torch.Tensor,
    layer: str,
    target: int | None = None,
    names: Sequence[str] | None = None,
    indices: Sequence[int | None] | None = None,
    labels: Sequence[int | None] | None = None,
) -> list[Explained]:
    """Grad-CAM and top-k of a batch of uint8 pictures (Nx3x32x32) in one pass."""
    cam = grad_cam(model, images, layer, target)
    values, classes = cam.probs.topk(min(TOP_K, cam.probs.shape[1]), dim=1)
    count = len(images)
    names = names or [f"image {i}" for i in range(count)]
    indices, labels = indices or [None] * count, labels or [None] * count
    pictures = images.permute(0, 2, 3, 1).numpy()
    return [
        Explained(
            names[i],
            indices[i],
            labels[i],
            pictures[i],
            list(zip(classes[i].tolist(), values[i].tolist())),
            int(cam.targets[i]),
            cam.heatmaps[i].numpy(),
        )
        for i in range(count)
    ]


def to_json(explained: Sequence[Explained], classes: Sequence[str]) -> list[dict]:
    """Per picture: index, label, top-k classes with probabilities, explained class, heatmap (32 rows of 32)."""
    return [
        {
            "name": e.name,
            "index": e.index,
            "label": None if e.label is None else classes[e.label],
            "top_k": [{"class": classes[c], "prob": round(p, 5)} for c, p in e.top],
            "target": classes[e.target],
            "heatmap": np.round(e.heatmap.astype(np.float64), 4).tolist(),
        }
        for e in explained
    ]


def sheet(explained: Sequence[Explained], classes: Sequence[str], title: str) -> Image.Image:
    """The pictures, their overlays and their top-k as one image, ``COLUMNS`` cells a row."""
    font = ImageFont.load_default(size=FONT_PX)
    side = 32 * SCALE
    cell_w, cell_h = 2 * side + PAD_PX + 2 * PAD_PX, side + 3 * LINE_PX + 2 * PAD_PX
    columns = min(COLUMNS, len(explained))
    rows = -(-len(explained) // columns)
    canvas = Image.new("RGB", (max(columns * cell_w, 480), LINE_PX + PAD_PX + rows * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((PAD_PX, PAD_PX // 2), title, fill=INK, font=font)
    for i, e in enumerate(explained):
        left, top = (i % columns) * cell_w + PAD_PX, LINE_PX + PAD_PX + (i // columns) * cell_h
        canvas.paste(Image.fromarray(enlarge(e.image, SCALE)), (left, top))
        canvas.paste(Image.fromarray(overlay(e.image, e.heatmap, SCALE)), (left + side + PAD_PX, top))
        for line, (text, colour) in enumerate(_lines(e, classes)):
            draw.text((left, top + side + 4 + line * LINE_PX), text, fill=colour, font=font)
    return canvas


def _lines(e: Explained, classes: Sequence[str]) -> list[tuple[str, tuple[int, int, int]]]:
    """Who it is, what the model says (green when right, red when wrong), what the heatmap shows."""
    truth = "" if e.label is None else f", a {classes[e.label]}"
    verdict = INK if e.label is None else RIGHT if e.top[0][0] == e.label else WRONG
    ranked = " · ".join(f"{classes[c]} {100 * p:.0f}%" for c, p in e.top)
    return [(f"{e.name}{truth}", INK), (ranked, verdict), (f"Grad-CAM for {classes[e.target]}", INK)]


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write the sheet, refusing names that are not ``.png`` and folders that do not exist."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise CifarnetError(f"--out {path} must name a .png file")
    if not path.parent.is_dir():
        raise CifarnetError(f"--out {path}: folder {path.parent} does not exist")
    try:
        image.save(path, "PNG")
    except OSError as exc:
        raise CifarnetError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
