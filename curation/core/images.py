"""Image helpers: load bytes from paths, detect format, decode-check, and hashes for dedup.

Images are stored in tables as ``{"bytes": <original file bytes>, "path": <file name>}`` (🤗 datasets'
``Image`` storage). Original bytes are kept (no re-encoding), so Parquet files stay small and portable.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

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
