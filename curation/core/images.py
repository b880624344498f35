"""Image helpers: load bytes from paths, detect format, decode-check, and hashes for dedup and decontamination.

Images are stored in tables as ``{"bytes": <original file bytes>, "path": <file name>}`` (🤗 datasets'
``Image`` storage). Original bytes are kept (no re-encoding), so Parquet files stay small and portable.
"""

from __future__ import annotations

import hashlib
import io
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"RIFF", "webp"),
]


class ImageError(ValueError):
    """An image that cannot be read or decoded."""


def image_format(data: bytes) -> str | None:
    """Format from the file's magic number (``png``, ``jpeg``, ``gif``, ``bmp``, ``webp``) or None."""
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            if fmt == "webp" and data[8:12] != b"WEBP":
                continue
            return fmt
    return None


def load_image(path: str | Path) -> dict:
    """Read an image file into the table's image struct; raises :class:`ImageError` if absent/unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image file not found: {path}")
    data = path.read_bytes()
    if not data:
        raise ImageError(f"image file is empty: {path}")
    return {"bytes": data, "path": path.name}


def decode(image: dict) -> Image.Image:
    """Decode an image struct to a PIL image (fully loaded); :class:`ImageError` if corrupt."""
    data = image.get("bytes") if isinstance(image, dict) else None
    if not data:
        raise ImageError(f"image {image.get('path') if isinstance(image, dict) else image!r} has no bytes")
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
        return im
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"image {image.get('path')!r} cannot be decoded: {e}") from e


def content_hash(image: dict) -> str:
    """Exact identity of an image: SHA-1 of its bytes."""
    return hashlib.sha1(image["bytes"]).hexdigest()


def dhash(image: dict | Image.Image, size: int = 8) -> int:
    """Perceptual difference hash (64 bits for size=8): grey, resize to (size+1) x size, compare neighbours.

    Two images whose dHashes differ in <= ~10% of bits are perceptually near-identical (re-encoded,
    resized, slightly recompressed copies of one picture).
    """
    im = image if isinstance(image, Image.Image) else decode(image)
    g = im.convert("L").resize((size + 1, size), Image.Resampling.LANCZOS)
    px = list(g.tobytes())  # mode "L": one byte per pixel, row-major
    bits = 0
    for r in range(size):
        row = px[r * (size + 1) : (r + 1) * (size + 1)]
        for c in range(size):
            bits = (bits << 1) | (1 if row[c] > row[c + 1] else 0)
    return bits


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


# --- perceptual hash for matching figures across re-encoding, resizing, crops, borders and grey -----------
#
# pHash-256 after margin trimming + a 5 % white pad, chosen by measurement (README "Decontamination against
# multimodal benchmarks"): on the 304 MATH-Vision testmini figures and 17 transformed copies of each (JPEG
# q50-95, PNG, resize 50-150 %, crops 2 px-5 %, white/black borders and letterboxes, grey, combinations), no
# two distinct figures lie within 55 bits of 256 (1.6 M distinct pairs) while 96 % of the transformed copies
# lie within 48 bits; a 64-bit pHash puts distinct figures 8 bits apart, and without trimming the pHash
# fails on borders and crops (recall 0.03 at 48 bits). The thumbnail correlation of
# :func:`thumbnail_ncc` is the second test (the closest distinct pair has 1 - r = 0.040; at <= 0.03 it adds no
# false pair and lifts recall at 48 bits from 0.960 to 0.974, at 72 bits from 0.986 to 0.991; bench/image_match.py).

PHASH_SIDE = 16  # the hash is the PHASH_SIDE x PHASH_SIDE low-frequency DCT block: 256 bits
PHASH_BITS = PHASH_SIDE * PHASH_SIDE
_PHASH_GRID = 4 * PHASH_SIDE  # the DCT runs on a 64 x 64 area-averaged thumbnail
_HASH_DECODE_SIDE = 256  # JPEGs are decoded at reduced scale (libjpeg DCT scaling) down to >= this per side
HASH_PAD = 0.05


def grey_for_hash(image: dict | bytes | Image.Image, min_side: int = _HASH_DECODE_SIDE) -> Image.Image:
    """Decode to mode ``L``: transparency flattened onto white (so a transparent PNG and its JPEG copy on
    white agree), colour -> grey (so a colour figure and its grey copy agree). A JPEG is decoded directly at
    1/2, 1/4 or 1/8 scale (``Image.draft``) while both sides stay >= ``min_side`` pixels: 3-6x less decode
    work and no effect on a 64 x 64 thumbnail. Raises :class:`ImageError` when the bytes cannot be decoded."""
    try:
        if isinstance(image, Image.Image):
            im = image
        else:
            data = image.get("bytes") if isinstance(image, dict) else image
            if not data:
                raise ImageError("image has no bytes")
            im = Image.open(io.BytesIO(data))
        if min_side and im.format == "JPEG":
            im.draft("L", (min_side, min_side))
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im)
        if im.mode != "L":
            im = im.convert("L")
        im.load()
        return im
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"image cannot be decoded: {e}") from e


def uniform_margin_box(a: np.ndarray, tol: int = 32, frac: float = 0.004,
                       samples: int = 33) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` of what is left when every outer row / column that is *uniform* is
    trimmed: fewer than ``frac`` of its pixels differ by more than ``tol`` grey levels from the row's (column's)
    reference value, the median of ``samples`` evenly spaced pixels of it. Whatever the margin's colour, this
    removes white margins, a black or coloured letterbox, a pasted border and the JPEG ringing line at a pad
    boundary (comparing with the colour of the outer pixel ring instead stops at that line: recall on black
    letterboxes 0.63 instead of 0.96). None when nothing is left (a blank image).

    Rows and columns are tested in blocks from each edge inwards until the first non-uniform one, so the cost
    is the margins' area, not the image's (the same result as testing every row and column)."""
    h, w = a.shape
    col_samples = np.linspace(0, w - 1, min(samples, w)).astype(int)
    row_samples = np.linspace(0, h - 1, min(samples, h)).astype(int)

    def busy_rows(lo: int, hi: int) -> np.ndarray:
        block = a[lo:hi]
        ref = np.median(block[:, col_samples], axis=1).astype(np.int16)[:, None]
        return ((block > ref + tol) | (block < ref - tol)).sum(1) > frac * w

    def busy_cols(lo: int, hi: int) -> np.ndarray:
        block = a[:, lo:hi]
        ref = np.median(block[row_samples], axis=0).astype(np.int16)[None, :]
        return ((block > ref + tol) | (block < ref - tol)).sum(0) > frac * h

    def first(n: int, busy, step: int = 16) -> int | None:
        for lo in range(0, n, step):
            hit = np.flatnonzero(busy(lo, min(n, lo + step)))
            if hit.size:
                return lo + int(hit[0])
        return None

    def last(n: int, busy, start: int, step: int = 16) -> int:
        for hi in range(n, start, -step):
            lo = max(start, hi - step)
            hit = np.flatnonzero(busy(lo, hi))
            if hit.size:
                return lo + int(hit[-1])
        return start

    top = first(h, busy_rows)
    left = first(w, busy_cols)
    if top is None or left is None:
        return None
    return top, last(h, busy_rows, top) + 1, left, last(w, busy_cols, left) + 1


def trim_margins(im: Image.Image, passes: int = 2, min_keep: float = 0.1) -> Image.Image:
    """Crop a mode-``L`` image to :func:`uniform_margin_box` (twice: a border inside a margin); a crop that
    would keep less than ``min_keep`` of a side is not applied (a thin rule on a blank page)."""
    for _ in range(passes):
        a = np.asarray(im)
        box = uniform_margin_box(a)
        if box is None:
            return im
        t, b, left, r = box
        h, w = a.shape
        if (t, b, left, r) == (0, h, 0, w) or (b - t) < min_keep * h or (r - left) < min_keep * w:
            return im
        im = im.crop((left, t, r, b))
    return im


def pad_white(im: Image.Image, frac: float = HASH_PAD) -> Image.Image:
    """A white margin of ``frac`` of each side around trimmed content. Without it, content that touches the
    border after trimming (a frame line, a table edge) is kept or lost by a one-pixel difference in the crop
    box and the low DCT frequencies move with it (pHash-64 recall 0.82 -> 0.94 with the pad)."""
    w, h = im.size
    px, py = max(1, round(frac * w)), max(1, round(frac * h))
    out = Image.new("L", (w + 2 * px, h + 2 * py), 255)
    out.paste(im, (px, py))
    return out


def hash_thumbnail(image: dict | bytes | Image.Image) -> np.ndarray:
    """The 64 x 64 float32 thumbnail the perceptual hash is computed on: :func:`grey_for_hash`, then
    :func:`trim_margins`, :func:`pad_white` and one area-average (``BOX``) resize."""
    im = pad_white(trim_margins(grey_for_hash(image)))
    return np.asarray(im.resize((_PHASH_GRID, _PHASH_GRID), Image.Resampling.BOX), dtype=np.float32)


@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix ``D[k, x] = c_k cos(pi (2x + 1) k / 2n)``, ``c_0 = sqrt(1/n)``, else ``sqrt(2/n)``."""
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d.astype(np.float32)


def phash_of_thumbnails(thumbs: np.ndarray) -> np.ndarray:
    """pHash bits ``(n, 256)`` of a stack of 64 x 64 thumbnails, vectorised: the 2-D DCT-II ``C = D T D^T`` of
    each thumbnail, its 16 x 16 lowest-frequency block ``C[:16, :16]``, bit = coefficient > the median of the
    block's 255 non-DC coefficients (the DC term is only the mean brightness)."""
    if len(thumbs) == 0:
        return np.zeros((0, PHASH_BITS), dtype=bool)
    d = _dct_matrix(thumbs.shape[1])
    low = (d @ thumbs @ d.T)[:, :PHASH_SIDE, :PHASH_SIDE].reshape(len(thumbs), -1)
    return low > np.median(low[:, 1:], axis=1, keepdims=True)


def thumbnail_ncc(thumbs: np.ndarray) -> np.ndarray:
    """The second image test: each 64 x 64 thumbnail reduced to 16 x 16 block means, zero mean, unit norm,
    so that ``1 - <u, v>`` is one minus the Pearson correlation of two thumbnails (0: identical up to
    brightness and contrast). It catches what the sign-of-DCT hash misses on symmetric, low-content figures
    (a 5 x 5 grid, three circles): there many low-frequency coefficients are near zero, their signs flip under
    resampling and a resized copy ends 80-130 bits away, while its thumbnail still correlates at 0.99+."""
    if len(thumbs) == 0:
        return np.zeros((0, PHASH_BITS), dtype=np.float32)
    n = len(thumbs)
    g = thumbs.reshape(n, PHASH_SIDE, _PHASH_GRID // PHASH_SIDE, PHASH_SIDE, _PHASH_GRID // PHASH_SIDE).mean((2, 4))
    g = g.reshape(n, -1)
    g = g - g.mean(1, keepdims=True)
    return (g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-6)).astype(np.float32)


def image_signatures(images: list[dict | bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(bits, ncc, ok)`` of ``images``: the pHash bits ``(n, 256)`` bool, the thumbnail vectors of
    :func:`thumbnail_ncc` ``(n, 256)`` float32, and ``ok`` ``(n,)`` (False: the image could not be decoded;
    its rows are zeros and mean nothing). One decode per image serves both."""
    thumbs = np.zeros((len(images), _PHASH_GRID, _PHASH_GRID), dtype=np.float32)
    ok = np.zeros(len(images), dtype=bool)
    for k, im in enumerate(images):
        try:
            thumbs[k] = hash_thumbnail(im)
            ok[k] = True
        except ImageError:
            pass
    bits, ncc = phash_of_thumbnails(thumbs), thumbnail_ncc(thumbs)
    bits[~ok] = False
    ncc[~ok] = 0.0
    return bits, ncc, ok


def phash(images: list[dict | bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Perceptual hashes of ``images``: ``bits`` ``(n, 256)`` bool and ``ok`` ``(n,)`` bool (False: the image
    could not be decoded; its row of ``bits`` is all False and means nothing). Hamming distance between two
    hashes = number of differing bits; see the measurement above the definitions for what distances mean."""
    bits, _, ok = image_signatures(images)
    return bits, ok


def image_structs(value, base_dir: str | Path) -> list[dict]:
    """An input's image value -> the table's image structs. Accepts a path (relative ones resolve against
    ``base_dir``), raw bytes, an image struct ``{"bytes", "path"}`` (🤗 ``Image`` storage; a struct with only a
    ``path`` is read from that path), or a list of these; nulls are skipped. Raises :class:`ImageError` for
    a missing or empty file and ``TypeError`` for a value of another type, naming the image's position."""
    if value is None:
        return []
    out = []
    for i, item in enumerate(value if isinstance(value, (list, tuple)) else [value]):
        if item is None:
            continue
        if isinstance(item, dict) and item.get("bytes"):
            out.append({"bytes": bytes(item["bytes"]), "path": item.get("path") or f"image{i}"})
            continue
        if isinstance(item, (bytes, bytearray, memoryview)) and len(item):
            out.append({"bytes": bytes(item), "path": f"image{i}"})
            continue
        path = item.get("path") if isinstance(item, dict) else item
        if isinstance(path, str) and path.strip():
            p = Path(path)
            out.append(load_image(p if p.is_absolute() else Path(base_dir) / p))
        elif isinstance(item, dict) or (isinstance(item, str) and not item.strip()):
            continue  # an empty struct / empty string: no image
        else:
            raise TypeError(f"image {i}: unsupported value of type {type(item).__name__}")
    return out
