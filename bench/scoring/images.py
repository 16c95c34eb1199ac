"""Image decoding for scoring: exact [0, 1] tensors from the bytes that were hashed, never a raise.

Decoding rules (one function, ``decode``, used for every metric and every reference):

* The file's bytes are read once; their content hash (``content_hash``: sha256, first 32 hex
  digits, the same function as ``bench.manifests.schema.file_hash``) must equal the expected
  image id, else the image is an error row ("changed after manifest build"), never a score
  stored under the old image's id.
* 8-bit modes (RGB, L, P, CMYK, YCbCr, 1) -> ``PIL.Image.convert("RGB")``, kept as uint8 and
  divided by 255 at batch time: bit-identical to pyiqa's own ``imread2tensor`` (PIL +
  ``to_tensor``).
* 16-bit greyscale (I;16, I;16B, I;16L, and "I" from a PNG, which is how PIL opens 16-bit PNGs)
  -> value / 65535 (``convert("RGB")`` would clip every value above 255 to white). "I" from any
  other format (32-bit integers) is an "unsupported mode" error row.
* 16-bit colour PNGs (48-bit RGB, 64-bit RGBA, 32-bit grey+alpha), which PIL opens as 8-bit
  keeping only the high byte, are decoded by OpenCV (``cv2.imdecode``, 16 bits per channel):
  value / 65535, alpha composited as below; one with a tRNS colour key is an "unsupported" row.
* Float ("F") -> used as is when every value lies in [0, 1], else an error row (never clipped).
* Alpha (RGBA, LA, PA, P or L/RGB with a ``transparency`` entry) -> composited over WHITE in
  float: out = c * a + 1 * (1 - a) with c, a in [0, 1]. (pyiqa's ``convert("RGB")`` drops the
  alpha channel and exposes whatever colour the transparent pixels carry.)
* Greyscale results are replicated to 3 channels (as ``convert("RGB")`` does).
* Pixel cap: an image whose (policy) size exceeds ``pixel_cap`` pixels is an error row read
  from the header alone (NIQE reached 17.8 GB RSS at 64 MP); PIL's decompression-bomb guard
  also becomes one error row.
* Training, validation and evaluation read images through ``read_rgb`` (HxWx3 float32 in [0, 1] by
  these same rules, one-line StudyError): one decoder for every number the suite computes.
* Read-time checks (``read_bytes``; the file may have changed since the manifest was built): the
  path must be a regular file (a FIFO, a device such as a symlink to /dev/zero, or a folder is an
  error row, never a hang or a MemoryError), at most ``MAX_FILE_BYTES`` long, and, for a manifest
  image, resolve (symlinks followed) inside the manifest root.
* Read failures (``OSError`` on open/read) are *transient* (retried in the run and on the next
  run by default); everything else is permanent (skipped later unless ``--retry-failed``).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

MAX_FILE_BYTES = 1 << 30  # an image file larger than 1 GiB is refused when read (error row)
TRANSIENT = "transient: "  # prefix of error texts that a later run retries by default
BACKGROUND = 1.0  # alpha is composited over white


@dataclass(frozen=True)
class ImageRef:
    """One image to score; ``ref_id``/``ref_path`` name its reference for full-reference metrics;
    ``root``: the folder both must resolve inside when read (a manifest's root), or None."""

    image_id: str
    path: str
    width: int
    height: int
    ref_id: str | None = None
    ref_path: str | None = None
    root: str | None = None


def content_hash(data: bytes) -> str:
    """Image id of a file's bytes: sha256, first 32 hex digits (as bench.manifests.schema.file_hash)."""
    return hashlib.sha256(data).hexdigest()[:32]


def policy_size(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """(w, h) after the input policy: downscale (keeping aspect) so w*h <= max_pixels."""
    if not max_pixels or width * height <= max_pixels or width <= 0:
        return width, height
    f = math.sqrt(max_pixels / (width * height))
    return max(1, int(width * f)), max(1, int(height * f))


class DecodeError(Exception):
    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info)


def _to_array(im: Image.Image) -> np.ndarray:
    """HxWx3 uint8 (8-bit sources) or float32 in [0, 1] (16-bit, float, alpha) per the module rules."""
    mode = im.mode
    if _has_alpha(im):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        a = rgba[..., 3:4]
        return np.ascontiguousarray(rgba[..., :3] * a + BACKGROUND * (1.0 - a), dtype=np.float32)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N") or (mode == "I" and im.format == "PNG"):
        grey = np.asarray(im).astype(np.float32)
        if grey.min() < 0 or grey.max() > 65535:
            raise DecodeError(f"unsupported: mode {mode} values outside 0..65535")
        grey = grey / 65535.0
    elif mode == "F":
        grey = np.asarray(im, dtype=np.float32)
        lo, hi = float(np.nanmin(grey)), float(np.nanmax(grey))
        if not (np.isfinite(grey).all() and lo >= 0.0 and hi <= 1.0):
            raise DecodeError(f"unsupported: float image values in [{lo:.4g}, {hi:.4g}], expected [0, 1]")
    elif mode in ("I", "I;32", "I;32B", "I;32L"):
        raise DecodeError(f"unsupported mode {mode} (32-bit integer {im.format} image)")
    else:
        return np.array(im.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png16_colour(data: bytes) -> np.ndarray | None:
    """HxWx3 float32 in [0, 1] for a 16-bit-per-channel colour or grey+alpha PNG (PIL would keep the high
    byte of each sample); None for every other file."""
    if not (len(data) > 26 and data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and data[24] == 16
            and data[25] in (2, 4, 6)):
        return None
    if b"tRNS" in data[:data.find(b"IDAT")]:
        raise DecodeError("unsupported: 16-bit PNG with a tRNS colour key (transparency without an alpha channel)")
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise DecodeError("decode: 16-bit PNG that OpenCV cannot decode to 16 bits per channel")
    arr = arr.astype(np.float32) / 65535.0
    rgb = arr[..., 2::-1]  # OpenCV's BGR(A); grey+alpha comes back as BGRA with grey replicated
    if arr.shape[2] == 4:
        a = arr[..., 3:4]
        rgb = rgb * a + BACKGROUND * (1.0 - a)
    return np.ascontiguousarray(rgb, dtype=np.float32)


def _resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic downscale (the --max-pixels policy); per channel as PIL 'F' for float arrays."""
    if arr.dtype == np.uint8:
        return np.array(Image.fromarray(arr).resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0))
    chans = [np.asarray(Image.fromarray(arr[..., c], mode="F").resize(size, Image.Resampling.BICUBIC))
             for c in range(arr.shape[2])]
    return np.clip(np.stack(chans, axis=2), 0.0, 1.0).astype(np.float32)


def read_bytes(path: str | Path, root: str | Path | None = None, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the image file ``path``, checked when read (module doc): a regular file (opened
    non-blocking, so a FIFO never hangs), at most ``limit`` bytes, inside ``root`` when given.
    Raises DecodeError (``transient`` for OS read failures) with a one-line reason."""
    if "\x00" in str(path):  # a path no file system accepts: one failed row, not a crash
        raise DecodeError(f"path: embedded null byte in {str(path)!r}")
    if root is not None:
        real, base = os.path.realpath(path), os.path.realpath(root)
        if os.path.commonpath([real, base]) != base:
            raise DecodeError(f"outside the root: {path} resolves to {real}, outside {base} "
                              f"(replaced by a symlink after manifest build?)")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DecodeError(f"{TRANSIENT}io: {type(exc).__name__}: {exc.strerror or exc}", transient=True) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
        os.close(fd)
        if st.st_size > limit and stat.S_ISREG(st.st_mode):
            raise DecodeError(f"too large: {path} is {st.st_size} bytes, more than the {limit} an image file may be")
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or
                stat.S_ISBLK(st.st_mode) else "a folder" if stat.S_ISDIR(st.st_mode) else "a socket or other")
        raise DecodeError(f"not a regular file: {path} is {kind}, not an image file")
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise DecodeError(f"{TRANSIENT}io: {type(exc).__name__}: {exc.strerror or exc}", transient=True) from None
    if len(data) > limit:
        raise DecodeError(f"too large: {path} grew past {limit} bytes while read")
    return data


def decode(path: str, expect_id: str | None = None, max_pixels: int | None = None,
           pixel_cap: int | None = None, root: str | None = None) -> torch.Tensor:
    """(3, H, W) tensor: uint8 for 8-bit sources, float32 in [0, 1] otherwise (see module doc).

    Raises DecodeError (``transient`` for read failures) with a one-line reason.
    """
    data = read_bytes(path, root)
    if expect_id is not None and content_hash(data) != expect_id:
        raise DecodeError(f"changed: file content hash {content_hash(data)} != image id {expect_id} "
                          f"(file changed after manifest build; rebuild the manifest)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            size = policy_size(im.width, im.height, max_pixels)
            if pixel_cap and size[0] * size[1] > pixel_cap:
                raise DecodeError(f"too large: {im.width}x{im.height} exceeds the pixel cap of {pixel_cap} "
                                  f"(--max-pixels N downscales; --pixel-cap 0 lifts the cap; then --retry-failed)")
            arr = _png16_colour(data)
            if arr is None:
                im.load()
                arr = _to_array(im)
    except DecodeError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DecodeError(f"decode: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if (arr.shape[1], arr.shape[0]) != size:
        arr = _resize(arr, size)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def to_float(t: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 / 255 (as torchvision's to_tensor); float tensors pass through."""
    return t.float().div_(255.0) if t.dtype == torch.uint8 else t


def read_rgb(path: str | Path, what: str = "image") -> np.ndarray:
    """HxWx3 float32 in [0, 1] by the module's rules (8-bit / 255 exactly as scoring; 16-bit / 65535;
    alpha over white; float as is): the one decoder of training, validation, evaluation and the reports.
    A file that cannot be read is a one-line StudyError naming it and ``what`` it is."""
    from bench.errors import StudyError

    try:
        t = decode(str(path))
    except DecodeError as exc:
        raise StudyError(f"{path}: cannot read {what} ({exc})") from None
    return np.ascontiguousarray(to_float(t).permute(1, 2, 0).numpy())


def read_rgb_u8(path: str | Path, what: str = "image") -> np.ndarray:
    """HxWx3 uint8 for display (report crops): ``read_rgb`` x 255, rounded (8-bit files exactly)."""
    return (read_rgb(path, what) * 255.0).round().astype(np.uint8)


class ImageDataset(Dataset):
    """Yields dicts {image_id, tensor ((3,H,W) uint8 or float32, or None), error, transient}."""

    def __init__(self, items: list[tuple], max_pixels: int | None = None, pixel_cap: int | None = None):
        self.items = items  # (image_id, path, verify hash[, root the path must resolve inside])
        self.max_pixels, self.pixel_cap = max_pixels, pixel_cap

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        image_id, path, verify, *root = self.items[i]
        try:
            t = decode(path, image_id if verify else None, self.max_pixels, self.pixel_cap, root[0] if root else None)
        except DecodeError as exc:
            return {"image_id": image_id, "tensor": None, "error": str(exc), "transient": exc.transient}
        return {"image_id": image_id, "tensor": t, "error": None, "transient": False}


def collate(items: list[dict]) -> list[dict]:
    return items  # stacking happens in the engine, after failed decodes are set aside


class SizeBatchSampler(Sampler[list[int]]):
    """Batches of indices whose images share one (policy) size, so they can be stacked."""

    def __init__(self, refs: list[ImageRef], batch_size: int, max_pixels: int | None = None):
        groups: dict[tuple[int, int], list[int]] = {}
        for i, r in enumerate(refs):
            groups.setdefault(policy_size(r.width, r.height, max_pixels), []).append(i)
        self.batches = [idx[j:j + batch_size] for _, idx in sorted(groups.items()) for j in range(0, len(idx), batch_size)]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def refs_from_manifest(manifest) -> list[ImageRef]:
    """Unique images of a manifest (one entry per content hash), with absolute paths."""
    root = Path(manifest.attrs["iqa_study"]["root"])
    seen: dict[str, ImageRef] = {}
    for side in ("a", "b"):
        for iid, rel, w, h in zip(manifest[f"image_{side}_id"], manifest[f"image_{side}"],
                                  manifest[f"width_{side}"], manifest[f"height_{side}"]):
            if iid not in seen:
                seen[iid] = ImageRef(str(iid), str(root / rel), int(w), int(h), root=str(root))
    return [seen[k] for k in sorted(seen)]


def check_paths(refs: list[ImageRef], root: str | None = None) -> None:
    """Refuse (one line, before anything is stored) when the root is missing or holds none of the images.

    A wrong ``--root`` would otherwise store every image as failed. Individual missing files
    are left to the engine (transient error rows, retried next run).
    """
    from bench.errors import StudyError

    if root is not None and not Path(root).is_dir():
        raise StudyError(f"image root {root}: not a directory (wrong --root?); nothing was scored")
    paths = {r.path for r in refs} | {r.ref_path for r in refs if r.ref_path}
    if paths and not any(os.path.exists(p) for p in paths):
        example = min(paths)
        where = f" under root {root}" if root else ""
        raise StudyError(f"none of the {len(paths)} image files exists{where} (e.g. {example}); "
                         f"wrong --root? nothing was scored")
