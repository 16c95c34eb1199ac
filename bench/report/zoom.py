"""Where two images of a pair differ most: the box a reader should zoom into.

``diff_box``: the absolute difference |A - B| of the two images (grey, 0..255), box-filtered with a
``size`` x ``size`` mean filter (``scipy.ndimage.uniform_filter``); the box is centred on the
argmax of the filtered map and moved inside the image. The box-filtered map makes the choice a
region with a large *mean* difference, not one noisy pixel. When the two images differ in size,
B is resized (bicubic) to A's size for the difference only, and the box is mapped to B's pixels
proportionally (``box_in``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import uniform_filter

from bench.errors import StudyError
from bench.scoring.images import read_rgb_u8


@dataclass(frozen=True)
class Box:
    top: int
    left: int
    height: int
    width: int

    def crop(self, img: np.ndarray) -> np.ndarray:
        return img[self.top:self.top + self.height, self.left:self.left + self.width]

    def box_in(self, shape_from: tuple[int, int], shape_to: tuple[int, int]) -> Box:
        """The same region in an image of ``shape_to`` (h, w) when the box was found on ``shape_from``."""
        sy, sx = shape_to[0] / shape_from[0], shape_to[1] / shape_from[1]
        return Box(round(self.top * sy), round(self.left * sx), max(1, round(self.height * sy)),
                   max(1, round(self.width * sx)))


def load_rgb(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: image not found (the manifest's root may have moved)")
    return read_rgb_u8(path)  # the suite's one decoder (bench.scoring.images)


def load_checked(path: str | Path, image_id: str | None) -> tuple[np.ndarray | None, str | None]:
    """(uint8 RGB pixels, None) when the file at ``path`` still holds the image ``image_id`` names,
    decoded by the scoring decoder (``bench.scoring.images.decode``: the same content-hash check and
    pixel rules as scoring); (None, one-line reason) when it changed on disk, is missing or does not
    decode: a report then marks the panel instead of showing another image beside stored scores.
    ``image_id`` None (a caller without ids) skips the hash check."""
    from bench.scoring.images import DecodeError, decode

    try:
        t = decode(str(path), expect_id=image_id)
    except DecodeError as exc:
        return None, f"{Path(path).name}: {exc}"
    arr = t.permute(1, 2, 0).numpy()
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr.astype(np.float64) * 255), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr), None


def crop_size(shape: tuple[int, int], fraction: float = 0.25, minimum: int = 48) -> int:
    """Side of the zoom box: ``fraction`` of the shorter side, at least ``minimum`` px (never more than the image)."""
    short = min(shape[:2])
    return int(min(short, max(minimum, round(short * fraction))))


def diff_box(a: np.ndarray, b: np.ndarray, size: int | None = None) -> Box:
    """The ``size`` x ``size`` box (in A's pixels) with the largest mean |A - B| (see module docstring)."""
    if a.shape[:2] != b.shape[:2]:
        b = np.asarray(Image.fromarray(b).resize((a.shape[1], a.shape[0]), Image.BICUBIC))
    size = size or crop_size(a.shape)
    size = min(size, a.shape[0], a.shape[1])
    grey = lambda x: x.astype(np.float32).mean(axis=2) if x.ndim == 3 else x.astype(np.float32)
    mean_diff = uniform_filter(np.abs(grey(a) - grey(b)), size=size, mode="nearest")
    cy, cx = np.unravel_index(int(np.argmax(mean_diff)), mean_diff.shape)
    top = int(np.clip(cy - size // 2, 0, a.shape[0] - size))
    left = int(np.clip(cx - size // 2, 0, a.shape[1] - size))
    return Box(top, left, size, size)


def pair_crops(a: np.ndarray, b: np.ndarray, size: int | None = None,
               center: tuple[int, int] | None = None) -> tuple[Box, Box, np.ndarray, np.ndarray]:
    """(box in A, box in B, crop of A, crop of B): the same region of both images. ``center`` = (y, x)
    in A's pixels overrides the automatic choice."""
    if center is None:
        box = diff_box(a, b, size)
    else:
        s = min(size or crop_size(a.shape), a.shape[0], a.shape[1])
        box = Box(int(np.clip(center[0] - s // 2, 0, a.shape[0] - s)), int(np.clip(center[1] - s // 2, 0,
                                                                                     a.shape[1] - s)), s, s)
    box_b = box if a.shape[:2] == b.shape[:2] else box.box_in(a.shape[:2], b.shape[:2])
    return box, box_b, box.crop(a), box_b.crop(b)
