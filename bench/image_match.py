"""The operating point of decontamination's image test, measured on the 304 MATH-Vision testmini figures.

Each figure of ../shared/data/math_vision gets 17 transformed copies (seeded): JPEG q50 / q75 / q95, PNG
re-encode, resize 80 % / 50 % / 150 %, crop 2-4 px per side, crop 3-5 % per side, crop 5 % off one side,
white border 3-8 % per side, white and black letterbox to a square (JPEG 90), grey, and three combinations
(resize 80 % + crop 2 % + grey + JPEG 75; resize 50 % + 5 % white border + JPEG 60; upscale 150 % + crop 3-5 %
+ JPEG 85). **True pairs**: a figure and each of its copies (17 x 304). **False pairs**: every pair of distinct
originals, and every copy against every *other* original (1,611,925 pairs; the one legitimately duplicated
figure, 773 / 1050 - the same five strings re-laid-out with other margins - is left out of both).

Printed, for the signatures of :func:`curation.core.images.image_signatures` (pHash-256 after margin
trimming + 5 % white pad, and the 16 x 16 thumbnail correlation ``1 - r``), and for ``near_dup``'s dHash-256
on the raw image (:func:`curation.core.images.dhash`) as the reference: the closest false pair, then per
threshold the number of false pairs accepted and the recall per transform (mean and worst). The copies are
generated once and cached under ``--cache`` (a temporary folder).

    nice -n 5 python bench/image_match.py
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.core.images import (  # noqa: E402
    _dct_matrix,
    dhash,
    grey_for_hash,
    hash_thumbnail,
    image_signatures,
    phash_of_thumbnails,
)

MV = ROOT.parent / "shared" / "data" / "math_vision"
DUPLICATE = ("773", "1050")


def _enc(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    (im.convert("RGB") if fmt == "JPEG" and im.mode not in ("RGB", "L") else im).save(buf, fmt, **kw)
    return buf.getvalue()


def _resize(im, f):
    return im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.Resampling.LANCZOS)


def _crop(im, left, top, right, bottom):
    return im.crop((left, top, im.width - right, im.height - bottom))


def _pad(im, left, top, right, bottom, colour=(255, 255, 255)):
    out = Image.new("RGB", (im.width + left + right, im.height + top + bottom), colour)
    out.paste(im, (left, top))
    return out


def _frac_crop(im, rng, lo, hi):
    fx, fy = rng.uniform(lo, hi, size=2), rng.uniform(lo, hi, size=2)
    return _crop(im, round(fx[0] * im.width), round(fy[0] * im.height), round(fx[1] * im.width),
                 round(fy[1] * im.height))


def _letterbox(im, colour):
    s = max(im.size)
    left, top = (s - im.width) // 2, (s - im.height) // 2
    return _pad(im, left, top, s - im.width - left, s - im.height - top, colour)


def _side_crop(im, rng):
    side, d = int(rng.integers(4)), [0, 0, 0, 0]
    d[side] = round(0.05 * (im.width if side in (0, 2) else im.height))
    return _enc(_crop(im, *d))


def _combo1(im, rng):
    im = _resize(im, 0.8)
    c = (np.array([im.width, im.height, im.width, im.height]) * 0.02).round().astype(int)
    return _enc(_crop(im, *c).convert("L"), "JPEG", quality=75)


def _combo2(im, rng):
    im = _resize(im, 0.5)
    p = (np.array([im.width, im.height, im.width, im.height]) * 0.05).round().astype(int)
    return _enc(_pad(im, *p), "JPEG", quality=60)


TRANSFORMS = {
    "jpeg50": lambda im, rng: _enc(im, "JPEG", quality=50),
    "jpeg75": lambda im, rng: _enc(im, "JPEG", quality=75),
    "jpeg95": lambda im, rng: _enc(im, "JPEG", quality=95),
    "png": lambda im, rng: _enc(im),
    "resize80": lambda im, rng: _enc(_resize(im, 0.8)),
    "resize50": lambda im, rng: _enc(_resize(im, 0.5)),
    "resize150": lambda im, rng: _enc(_resize(im, 1.5)),
    "crop_px": lambda im, rng: _enc(_crop(im, *rng.integers(2, 5, size=4))),
    "crop_pct": lambda im, rng: _enc(_frac_crop(im, rng, 0.03, 0.05)),
    "crop_side5": _side_crop,
    "border": lambda im, rng: _enc(_pad(im, *(rng.uniform(0.03, 0.08, size=4) * [im.width, im.height, im.width,
                                                                                   im.height]).round().astype(int))),
    "letterbox_w": lambda im, rng: _enc(_letterbox(im, (255, 255, 255)), "JPEG", quality=90),
    "letterbox_b": lambda im, rng: _enc(_letterbox(im, (0, 0, 0)), "JPEG", quality=90),
    "grey": lambda im, rng: _enc(im.convert("L")),
    "combo1": _combo1,
    "combo2": _combo2,
    "combo3": lambda im, rng: _enc(_frac_crop(_resize(im, 1.5), rng, 0.03, 0.05), "JPEG", quality=85),
}


def variants(cache: Path) -> tuple[list[str], dict[str, list[bytes]]]:
    rows = [json.loads(line) for line in (MV / "testmini.jsonl").read_text().splitlines()]
    ids = [r["id"] for r in rows]
    path = cache / "image_match_variants.pkl"
    if path.exists():
        return ids, pickle.loads(path.read_bytes())
    cache.mkdir(parents=True, exist_ok=True)
    out = {"orig": [(MV / r["image"]).read_bytes() for r in rows]}
    rgb = [Image.open(io.BytesIO(b)).convert("RGB") for b in out["orig"]]
    for k, (name, fn) in enumerate(TRANSFORMS.items()):
        out[name] = [fn(im, np.random.default_rng(1000 * k + i)) for i, im in enumerate(rgb)]
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(out))
    tmp.replace(path)
    return ids, out


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sa, sb = a.astype(np.float32) * 2 - 1, b.astype(np.float32) * 2 - 1
    return np.rint((a.shape[1] - sa @ sb.T) / 2).astype(np.int32)


def _dhash_bits(blobs: list[bytes]) -> np.ndarray:
    return np.array([[(h >> (255 - j)) & 1 for j in range(256)] for h in
                     (dhash({"bytes": b}, 16) for b in blobs)], dtype=bool)


def _untrimmed_phash(blobs: list[bytes]) -> np.ndarray:
    """pHash-256 of the grey image without margin trimming or pad (what trimming buys)."""
    thumbs = np.stack([np.asarray(grey_for_hash({"bytes": b}).resize((64, 64), Image.Resampling.BOX),
                                  dtype=np.float32) for b in blobs])
    return phash_of_thumbnails(thumbs)


def _phash64(blobs: list[bytes]) -> np.ndarray:
    """pHash-64 after trimming: the 8 x 8 lowest DCT coefficients of a 32 x 32 thumbnail vs their median."""
    th = np.stack([hash_thumbnail({"bytes": b}) for b in blobs]).reshape(len(blobs), 32, 2, 32, 2).mean((2, 4))
    d = _dct_matrix(32)
    low = (d @ th @ d.T)[:, :8, :8].reshape(len(blobs), -1)
    return low > np.median(low[:, 1:], axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "rlcurate-mm-decon-bench")
    args = ap.parse_args()
    t0 = time.perf_counter()
    ids, var = variants(args.cache)
    t1, c1 = time.perf_counter(), time.process_time()
    sig = {name: image_signatures([{"bytes": b} for b in blobs]) for name, blobs in var.items()}
    t2, c2 = time.perf_counter(), time.process_time()
    n_img = sum(len(v) for v in var.values())
    print(f"{len(ids)} figures x {len(var)} versions = {n_img} images; copies made in {t1 - t0:.0f}s; signatures "
          f"{t2 - t1:.0f}s wall / {c2 - c1:.0f}s cpu ({n_img / (c2 - c1):.0f} images per cpu-s)")
    assert all(ok.all() for _, _, ok in sig.values())
    n = len(ids)
    dup = [ids.index(x) for x in DUPLICATE]
    valid = ~np.eye(n, dtype=bool)
    valid[np.ix_(dup, dup)] = False
    upper = np.triu(valid, 1)
    names = list(TRANSFORMS)

    def pairs(dist):
        """(false-pair distances, {transform: true-pair distances}) for dist(a_versions, b_versions)."""
        orig = dist("orig", "orig")
        false = [orig[upper]]
        true = {}
        for t in names:
            d = dist(t, "orig")
            true[t] = np.diag(d)
            false.append(d[valid])
        return np.concatenate(false), true

    ph = pairs(lambda a, b: _hamming(sig[a][0], sig[b][0]))
    nc = pairs(lambda a, b: 1.0 - sig[a][1] @ sig[b][1].T)
    dh_bits = {name: _dhash_bits(blobs) for name, blobs in var.items()}
    dh = pairs(lambda a, b: _hamming(dh_bits[a], dh_bits[b]))
    print(f"false pairs: {len(ph[0]):,}; closest: pHash {ph[0].min()} bits, thumbnail 1-r {nc[0].min():.3f}, "
          f"near_dup's dHash {dh[0].min()} bits")

    def report(label, accept_false, accept_true):
        rec = {t: float(accept_true(t).mean()) for t in names}
        worst = min(rec, key=rec.get)
        fp = int(accept_false.sum())
        print(f"  {label:34s} false pairs {fp:6d} ({fp / len(ph[0]):.1e})  recall mean {np.mean(list(rec.values())):.3f}"
              f"  worst {rec[worst]:.3f} ({worst})  jpeg50 {rec['jpeg50']:.3f} resize80 {rec['resize80']:.3f} "
              f"crop_px {rec['crop_px']:.3f} grey {rec['grey']:.3f} border {rec['border']:.3f}")

    print("pHash-256 (trim + pad) alone:")
    for t in (32, 40, 48, 55, 60, 64, 72, 80, 88):
        report(f"d <= {t}", ph[0] <= t, lambda tr, t=t: ph[1][tr] <= t)
    print("thumbnail correlation alone:")
    for c in (0.01, 0.02, 0.03, 0.05, 0.1):
        report(f"1-r <= {c}", nc[0] <= c, lambda tr, c=c: nc[1][tr] <= c)
    print("the step's test (near-identical: d <= strict or 1-r <= 0.03; similar: d <= loose or 1-r <= 0.03):")
    for t in (48, 55, 72):
        report(f"d <= {t} or 1-r <= 0.03", (ph[0] <= t) | (nc[0] <= 0.03),
               lambda tr, t=t: (ph[1][tr] <= t) | (nc[1][tr] <= 0.03))
    print("near_dup's dHash-256 on the raw image (reference):")
    for t in (10, 24, 40):
        report(f"d <= {t}", dh[0] <= t, lambda tr, t=t: dh[1][tr] <= t)
    raw = {name: _untrimmed_phash(blobs) for name, blobs in var.items()}
    rw = pairs(lambda a, b: _hamming(raw[a], raw[b]))
    print(f"pHash-256 without margin trimming (closest false pair {rw[0].min()} bits):")
    for t in (48, 72):
        report(f"d <= {t}", rw[0] <= t, lambda tr, t=t: rw[1][tr] <= t)
    p64 = {name: _phash64(blobs) for name, blobs in var.items()}
    sm = pairs(lambda a, b: _hamming(p64[a], p64[b]))
    print(f"pHash-64 after trimming (closest false pair {sm[0].min()} bits):")
    for t in (int(sm[0].min()) - 1, 11):
        report(f"d <= {t}", sm[0] <= t, lambda tr, t=t: sm[1][tr] <= t)
    true_all = np.concatenate(list(ph[1].values()))
    print(f"pHash true-pair distance quantiles 50/90/99 %: {np.percentile(true_all, [50, 90, 99]).tolist()}; "
          f"false-pair 1e-5 / 1e-4 / 1e-3 / median: "
          f"{np.quantile(ph[0], [1e-5, 1e-4, 1e-3, 0.5]).round().astype(int).tolist()}")


if __name__ == "__main__":
    main()
