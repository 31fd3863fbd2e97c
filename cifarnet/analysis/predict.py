"""An uploaded picture in, the model's view of it and its top-k classes out.

Uploads are outside input of any size and shape, so every way an image can be odd is
turned into either a clean 32x32 RGB array or a :class:`CifarnetError` that says what
was wrong: empty files, files that are not images, decompression bombs (a few KB that
unpack to gigapixels), animations, palettes, transparency, greyscale, 16-bit, CMYK and
phone photos stored sideways (EXIF orientation).

Pillow's decoders meet crafted files with a dozen exception types (ValueError, SyntaxError,
OSError, struct.error, IndexError, TypeError, ZeroDivisionError, ...), from opening the
header to the last conversion, so every step that touches the file's content runs inside
:func:`_decoding`, which turns any of them into one message and lets ours through.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from cifarnet.analysis.curves import run_label
from cifarnet.data.cifar10 import CLASSES
from cifarnet.errors import CifarnetError
from cifarnet.runs.folders import RunInfo
from cifarnet.runs.records import MODEL_FILE

MAX_PIXELS = 40_000_000  # 40 megapixels: any camera photo, not a bomb
MAX_BYTES = 50 * 1024 * 1024
SIZE = 32
PREVIEW_SIZE = 512
FORMATS = ("png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff", "ico", "ppm", "pgm", "tga")
ALLOWED = f"allowed: {', '.join(f.upper() for f in FORMATS)}"
DAMAGED, RESAVE = "the image data is damaged or truncated", "try re-saving it as PNG or JPEG"


@contextmanager
def _decoding(problem: str, advice: str, size: tuple[int, int] | None = None) -> Iterator[None]:
    """Run a step of decoding; whatever Pillow raises becomes ``problem`` (with the error's kind) and ``advice``.

    Deliberately every ``Exception``: the file is hostile input and Pillow documents no
    closed list of what its decoders raise. Our own messages pass through unchanged.
    """
    try:
        yield
    except CifarnetError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _bomb(size) from None
    except Exception as exc:
        raise CifarnetError(f"{problem} ({type(exc).__name__}); {advice}") from None


def open_image(data: bytes) -> Image.Image:
    """Decode ``data`` (first frame of an animation), refusing what cannot or should not be decoded."""
    if not data:
        raise CifarnetError("the file is empty (0 bytes); upload an image such as a PNG or JPEG")
    if len(data) > MAX_BYTES:
        raise CifarnetError(f"the file is {len(data) / 2**20:.0f} MB; the limit is {MAX_BYTES // 2**20} MB")
    with _decoding("the file is not an image this app can read", ALLOWED):
        image = Image.open(io.BytesIO(data))  # reads only the header: the size is known before decoding
        width, height = image.size
    if width * height > MAX_PIXELS:
        raise _bomb((width, height))
    with _decoding(DAMAGED, RESAVE, (width, height)):
        image.seek(0)
        image.load()
    return image


def _bomb(size: tuple[int, int] | None) -> CifarnetError:
    what = f"{size[0]:,} x {size[1]:,} pixels" if size else "too many pixels"
    return CifarnetError(
        f"the image is {what}, more than the {MAX_PIXELS // 1_000_000} megapixel limit "
        "(a decompression bomb or a huge scan); shrink it first"
    )


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright RGB: EXIF rotation applied, transparency composited onto white, any mode converted."""
    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        span = max(pixels.max() - pixels.min(), 1e-9)
        image = Image.fromarray(((pixels - pixels.min()) / span * 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


@dataclass(frozen=True)
class Upload:
    """An uploaded picture ready to show and classify (both HxWx3 uint8 RGB arrays)."""

    preview: np.ndarray  # upright, at most PREVIEW_SIZE on its longer side
    view: np.ndarray  # 32x32: what the network sees


def prepare(data: bytes) -> Upload:
    """Decode and convert once; the 32x32 view is centre-cropped to a square, then area-averaged.

    CIFAR-10 photos are square and show the object filling the frame, so a centre crop
    matches them better than squashing the whole picture.
    """
    image = open_image(data)
    with _decoding(DAMAGED, RESAVE, image.size):  # a crafted EXIF block or palette can fail only here
        image = to_rgb(image)
        image.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE), Image.Resampling.LANCZOS)
        view = ImageOps.fit(image, (SIZE, SIZE), Image.Resampling.LANCZOS)
    return Upload(np.asarray(image, dtype=np.uint8), np.asarray(view, dtype=np.uint8))


@torch.inference_mode()
def top_k(
    model: torch.nn.Module, image: np.ndarray, k: int = 5, classes: Sequence[str] = CLASSES
) -> list[tuple[str, float]]:
    """The ``k`` most probable classes of a 32x32x3 uint8 image, most probable first."""
    x = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1).unsqueeze(0) / 255.0
    probs = model(x).softmax(1)[0]
    values, indices = probs.topk(max(1, min(k, len(classes))))
    return [(classes[i], float(p)) for p, i in zip(values.tolist(), indices.tolist())]


def available_models(runs: Sequence[RunInfo]) -> dict[str, Path]:
    """Label -> ``model.pt`` of every run that has final weights (shipped runs included)."""
    return {run_label(info): info.path / MODEL_FILE for info in runs if (info.path / MODEL_FILE).is_file()}
