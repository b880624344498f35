"""Multimodal decontamination: precision / recall per transformation on MATH-Vision, and throughput.

**Part 1 - planted contamination** (``--seeds``, default 0). The 304 MATH-Vision testmini problems of
../shared/data/math_vision are split (seeded) into a *benchmark* of 200 (written as MATH-Vision publishes
it: JSONL + ``images/``, read with ``preset: math_vision``; the pair 773/1050 - the same figure re-laid-out,
same text - stays in it) and a *clean pool* of 104. A training set derived from them holds, per benchmark
item, one row per positive category (``P``: must be removed and name that item): exact copy; JPEG re-encode
(q 50-95); resize to 80 %; crop 2-4 px per side; grey; white letterbox (JPEG 90); combined (resize 50-80 % +
crop 2 % + grey + JPEG 75); reworded light (synonyms, a frame sentence) / heavy (+ clause order, word dropout)
over the figure re-encoded / resized; a keyword rewrite (60 % of the content words, shuffled, new frame:
no 8-gram left) over the re-encoded figure. Negatives (``N``: must be kept): the clean items as they are and
re-encoded + resized; **the same text as a benchmark item with another problem's figure** (the issue's
44-problem class); a clean question over a benchmark figure. ``T``: text-only copies (figure dropped),
reported apart (``text_only_rows``). Precision and recall are printed per category and overall, for the step
and - as the baseline of the same run - for the text rule alone (the step as it was before images were
compared: ``Decontaminate.matches(texts)``).

**Part 2 - throughput** (``--rows``, default 10,000, and ``--bench-items``, default 1,000; ``--rows 100000
--bench-items 2500`` for the issue's size). A synthetic training set of ``--rows`` rows, one image each,
against 10 benchmarks: 8 synthetic multimodal ones of ``--bench-items`` items each (2,500: 20,000 figures)
and the real AMC23 and Minerva-Math files. Every figure is *derived* from the
MATH-Vision figures (a random crop of one or two figures side by side, resized to 256-512 px wide, optionally
grey, JPEG q 70-95), so each is a distinct image with the statistics of math figures; texts are GSM8K
sentences with new numbers (training) or a MATH-Vision question + a GSM8K sentence (benchmarks). 1 % of the
training rows are planted copies of benchmark items (text + figure resized to 90 %, JPEG 80) and 1 % the same
text over another figure. Generated once (2 processes) and cached as Parquet under ``--cache`` (a temporary
folder, not the repository). Timed: loading + indexing the benchmarks (once), decoding + hashing the training
images, and the matching (search + text rules); the baseline is the text rule alone on the same rows, in
the same run. Numbers are wall seconds and CPU seconds of this process (the machine may be shared: compare
the ratios).

    nice -n 5 python bench/mm_decontamination.py [--seeds 0,1,2] [--rows 100000 --bench-items 2500]
                                                 [--skip-planted] [--skip-throughput] [--show-misses]

The default run (seed 0, 10,000 rows against 8 x 1,000 + 2 benchmarks) took 4.5 minutes with an empty cache
on the shared 2-core machine (load average 4), most of it making the figures.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import re
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.build.steps.base import Excluded  # noqa: E402
from curation.build.steps.decontaminate import STOP_WORDS, Decontaminate  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MV = DATA / "math_vision"
LEGIT_DUPLICATES = {"773": "773/1050", "1050": "773/1050"}  # the same figure and text, two ids

SYN = [("how many", "what is the number of"), ("picture", "image"), ("figure", "diagram"), ("shown", "depicted"),
       ("which", "what"), ("find", "determine"), ("largest", "greatest"), ("smallest", "least"),
       ("must", "has to"), ("each", "every"), ("write", "put"), ("below", "here"), ("number", "count"),
       ("total", "overall"), ("different", "distinct"), ("colour", "color"), ("minimum", "least possible"),
       ("maximum", "greatest possible"), ("exactly", "precisely"), ("possible", "feasible")]
PREFIX = ["Look at the figure carefully. ", "Using the image, answer the following. ", "Question: ",
          "Consider the diagram. "]
SUFFIX = [" Give your final answer.", " Explain your reasoning briefly.", " Answer with the correct option.", ""]


# --- images ----------------------------------------------------------------------------------------------


def enc(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    (im.convert("RGB") if fmt == "JPEG" and im.mode not in ("RGB", "L") else im).save(buf, fmt, **kw)
    return buf.getvalue()


def resize(im: Image.Image, f: float) -> Image.Image:
    return im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.Resampling.LANCZOS)


def letterbox(im: Image.Image) -> Image.Image:
    s = max(im.size)
    out = Image.new("RGB", (s, s), "white")
    out.paste(im, ((s - im.width) // 2, (s - im.height) // 2))
    return out


def combo(im: Image.Image, rng: random.Random) -> bytes:
    im = resize(im, rng.uniform(0.5, 0.8))
    c = [round(0.02 * v) for v in (im.width, im.height, im.width, im.height)]
    return enc(im.crop((c[0], c[1], im.width - c[2], im.height - c[3])).convert("L"), "JPEG", quality=75)


def crop_px(im: Image.Image, rng: random.Random) -> Image.Image:
    left, top, right, bottom = (rng.randint(2, 4) for _ in range(4))
    return im.crop((left, top, im.width - right, im.height - bottom))


# --- texts -----------------------------------------------------------------------------------------------


def paraphrase(text: str, rng: random.Random, heavy: bool) -> str:
    t = re.sub(r"<image\d+>", "", text).strip()
    for a, b in SYN:
        if rng.random() < (0.9 if heavy else 0.6):
            t = re.sub(rf"\b{a}\b", b, t, flags=re.I)
    if heavy:
        sents = re.split(r"(?<=[.?!])\s+", t)
        if len(sents) > 1:  # the question sentence first
            sents = [sents[-1]] + sents[:-1]
        t = " ".join(w for w in " ".join(sents).split() if rng.random() > 0.12 or len(w) > 6)
    return rng.choice(PREFIX) + t + rng.choice(SUFFIX) + " <image1>"


def rewrite_keywords(text: str, rng: random.Random) -> str:
    """~60 % of the content words in a new order and frame: no 8-gram and few bigrams survive, so only the
    image+overlap rule can catch it (a stand-in for an LLM rewrite)."""
    words = [w for w in re.findall(r"[A-Za-z]+", re.sub(r"<image\d+>", "", text)) if w.lower() not in STOP_WORDS]
    keep = [w for w in words if rng.random() < 0.6] or words[:1]
    rng.shuffle(keep)
    return rng.choice(["Regarding the figure: ", "Task about the picture - ", "Figure problem. "]) + \
        ", ".join(keep) + "? <image1>"


# --- part 1 ----------------------------------------------------------------------------------------------


def planted_set(seed: int, out: Path) -> tuple[Path, list[dict]]:
    rows = [json.loads(line) for line in (MV / "testmini.jsonl").read_text().splitlines()]
    rng = random.Random(seed)
    others = [r for r in rows if r["id"] not in LEGIT_DUPLICATES]
    rng.shuffle(others)
    bench = [r for r in rows if r["id"] in LEGIT_DUPLICATES] + others[:198]
    bench_ids = {r["id"] for r in bench}
    clean = [r for r in rows if r["id"] not in bench_ids]
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    for r in bench:
        (out / r["image"]).write_bytes((MV / r["image"]).read_bytes())
    (out / "testmini.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bench))

    train: list[dict] = []

    def add(cat: str, problem: str, images: list[bytes], src: str | None) -> None:
        train.append({"id": f"r{len(train)}", "problem": problem, "cat": cat, "src": src,
                      "images": [{"bytes": b, "path": "x"} for b in images]})

    def rgb(r: dict) -> Image.Image:
        return Image.open(MV / r["image"]).convert("RGB")

    for r in bench:
        im, q = rgb(r), r["question"]
        add("P exact copy", q, [(MV / r["image"]).read_bytes()], r["id"])
        add("P JPEG re-encode q50-95", q, [enc(im, "JPEG", quality=rng.randint(50, 95))], r["id"])
        add("P resize 80%", q, [enc(resize(im, 0.8))], r["id"])
        add("P crop 2-4 px per side", q, [enc(crop_px(im, rng))], r["id"])
        add("P grey", q, [enc(im.convert("L"))], r["id"])
        add("P white letterbox (JPEG 90)", q, [enc(letterbox(im), "JPEG", quality=90)], r["id"])
        add("P resize+crop+grey+JPEG 75", q, [combo(im, rng)], r["id"])
        add("P reworded light, JPEG 85", paraphrase(q, rng, False), [enc(im, "JPEG", quality=85)], r["id"])
        add("P reworded heavy, resize 80%", paraphrase(q, rng, True), [enc(resize(im, 0.8))], r["id"])
        add("P keyword rewrite, JPEG 85", rewrite_keywords(q, rng), [enc(im, "JPEG", quality=85)], r["id"])
        add("T text-only copy", q, [], r["id"])
    for r in clean:
        add("N clean item", r["question"], [(MV / r["image"]).read_bytes()], None)
        add("N clean, resize 80% + JPEG 75", r["question"], [enc(resize(rgb(r), 0.8), "JPEG", quality=75)], None)
    for k, r in enumerate(bench):  # the 44-problem class
        add("N same text, another problem's figure", r["question"],
            [enc(rgb(clean[k % len(clean)]), "JPEG", quality=85)], None)
    for k, r in enumerate(bench[: len(clean)]):
        add("N same figure, unrelated question", clean[k]["question"], [enc(rgb(r), "JPEG", quality=85)], None)
    return out / "testmini.jsonl", train


def _score(train: list[dict], found: dict[int, tuple[str, str]], bench_file: Path, bench_ids: list[str]
           ) -> tuple[dict, dict]:
    """Per category: rows, removed, by rule, removed naming another item; totals over the P and N rows."""
    where = re.compile(re.escape(str(bench_file)) + r" row (\d+)")
    per: dict[str, Counter] = defaultdict(Counter)
    for k, r in enumerate(train):
        c = per[r["cat"]]
        c["n"] += 1
        m = found.get(k)
        if m:
            c["flagged"] += 1
            c[m[0]] += 1
            if r["src"] is not None and r["cat"].startswith("P"):
                hit = where.search(m[1])
                got = bench_ids[int(hit.group(1))] if hit else None
                if LEGIT_DUPLICATES.get(got, got) != LEGIT_DUPLICATES.get(r["src"], r["src"]):
                    c["wrong item"] += 1
    tp = sum(c["flagged"] for cat, c in per.items() if cat.startswith("P"))
    fn = sum(c["n"] - c["flagged"] for cat, c in per.items() if cat.startswith("P"))
    fp = sum(c["flagged"] for cat, c in per.items() if cat.startswith("N"))
    return per, {"tp": tp, "fp": fp, "fn": fn, "precision": tp / (tp + fp) if tp + fp else float("nan"),
                 "recall": tp / (tp + fn) if tp + fn else float("nan")}


def part1(seed: int, work: Path, args) -> dict:
    t0 = time.perf_counter()
    bench_file, train = planted_set(seed, work / f"planted-{seed}")
    t1 = time.perf_counter()
    step = Decontaminate(benchmarks=[f"{bench_file}:math_vision"], text_only_rows=args.text_only_rows)
    out = list(step.run([{k: v for k, v in r.items() if k in ("id", "problem", "images")} for r in train]))
    t2 = time.perf_counter()
    found = {k: (o.detail.split(":", 1)[0], o.detail) for k, o in enumerate(out) if isinstance(o, Excluded)}
    base = step.matches([r["problem"] for r in train])  # the text rule alone, same benchmark, same rows
    t3 = time.perf_counter()
    found_text = {k: m for k, m in enumerate(base) if m is not None}
    bench_ids = [json.loads(line)["id"] for line in bench_file.read_text().splitlines()]
    per, tot = _score(train, found, bench_file, bench_ids)
    per_t, tot_t = _score(train, found_text, bench_file, bench_ids)
    s = step.summary()["benchmarks_checked"][0]
    print(f"\n== planted contamination, seed {seed}: benchmark of {s['items']} MATH-Vision items "
          f"({s['images']} figures), {len(train)} training rows; step defaults (strict {step.image_strict} / loose "
          f"{step.image_loose} bits, thumbnail 1-r <= {step.image_ncc}, overlap {step.min_overlap}, "
          f"text_only_rows={step.text_only_rows})")
    print(f"{'category':42s} {'rows':>5s} {'removed':>8s} {'rate':>6s}  {'text rule alone':>15s}  removed by")
    for cat in sorted(per, key=lambda c: ("PNT".index(c[0]), c)):
        c, ct = per[cat], per_t[cat]
        rules = ", ".join(f"{k}={v}" for k, v in c.items() if k not in ("n", "flagged"))
        print(f"{cat:42s} {c['n']:5d} {c['flagged']:8d} {c['flagged'] / c['n']:6.3f}  "
              f"{ct['flagged'] / ct['n']:15.3f}  {rules}")
    print(f"P+N rows: step precision {tot['precision']:.4f} recall {tot['recall']:.4f} (TP {tot['tp']}, "
          f"FP {tot['fp']}, FN {tot['fn']}) | text rule alone: precision {tot_t['precision']:.4f} recall "
          f"{tot_t['recall']:.4f} (FP {tot_t['fp']}, FN {tot_t['fn']})")
    print(f"same-text matches kept because the figures differ: {s['kept_text_match_other_image']}; "
          f"time: build set {t1 - t0:.1f}s, step {t2 - t1:.1f}s ({len(train) / (t2 - t1):.0f} rows/s), "
          f"text rule alone {t3 - t2:.1f}s")
    if args.show_misses:
        for k, r in enumerate(train):
            if (r["cat"].startswith("P") and k not in found) or (r["cat"].startswith("N") and k in found):
                print("   ", r["cat"], r["src"], "->", found.get(k, ("missed",))[-1])
    return {"seed": seed, "per_category": {c: dict(v) for c, v in per.items()}, "step": tot, "text_rule": tot_t}


# --- part 2 ----------------------------------------------------------------------------------------------

_FIGS: list[Image.Image] = []


def _figures() -> list[Image.Image]:
    if not _FIGS:
        for line in (MV / "testmini.jsonl").read_text().splitlines():
            im = Image.open(MV / json.loads(line)["image"]).convert("RGB")
            im.thumbnail((1024, 1024))
            _FIGS.append(im)
    return _FIGS


def derived_figure(seed: int) -> bytes:
    """A distinct figure made from MATH-Vision figures: a random crop of one (or two side by side), resized
    to 256-512 px wide, sometimes grey, JPEG q70-95."""
    rng = random.Random(seed)
    figs = _figures()
    parts = []
    for _ in range(1 if rng.random() < 0.6 else 2):
        im = figs[rng.randrange(len(figs))]
        w, h = rng.uniform(0.4, 0.9) * im.width, rng.uniform(0.4, 0.9) * im.height
        x, y = rng.uniform(0, im.width - w), rng.uniform(0, im.height - h)
        parts.append(im.crop((round(x), round(y), round(x + w), round(y + h))))
    if len(parts) == 2:
        a, b = parts
        out = Image.new("RGB", (a.width + b.width + 20, max(a.height, b.height)), "white")
        out.paste(a, (0, 0))
        out.paste(b, (a.width + 20, 0))
        parts = [out]
    im = parts[0]
    im = resize(im, rng.uniform(256, 512) / im.width)
    if rng.random() < 0.2:
        im = im.convert("L")
    return enc(im, "JPEG", quality=rng.randint(70, 95))


def _sentences(split: str) -> list[str]:
    out = []
    for line in (DATA / "gsm8k" / f"{split}.jsonl").read_text().splitlines():
        out += [s for s in re.split(r"(?<=[.?!])\s+", json.loads(line)["question"].strip()) if s]
    return out


def synthetic_texts(kind: str, n: int) -> list[str]:
    """Benchmark items: a MATH-Vision question + a GSM8K *test* sentence; training rows: 2-4 GSM8K *train*
    sentences; numbers redrawn. Deterministic per (kind, row)."""
    questions = [json.loads(line)["question"] for line in (MV / "testmini.jsonl").read_text().splitlines()]
    sents = _sentences("test" if kind.startswith("bench") else "train")
    out = []
    for i in range(n):
        rng = random.Random(f"{kind}-{i}")
        if kind.startswith("bench"):
            text = questions[rng.randrange(len(questions))] + " " + rng.choice(sents)
        else:
            text = " ".join(rng.sample(sents, rng.randint(2, 4)))
        out.append(re.sub(r"\d+", lambda m, rng=rng: str(rng.randint(2, 999)), text))
    return out


def _shard(args: tuple[str, int, int]) -> list[dict]:
    kind, start, stop = args
    return [{"id": f"{kind}-{i}", "image": {"bytes": derived_figure(zlib.crc32(f"{kind}-{i}".encode())),
                                            "path": f"{i}.jpg"}} for i in range(start, stop)]


SHARD = 500


def _generate(kind: str, n: int, cache: Path, procs: int = 2) -> list[Path]:
    """Parquet shards of ``SHARD`` derived figures (``id``, ``image``) covering rows ``0 .. n-1`` of ``kind``;
    missing shards are made by ``procs`` processes, each written atomically (an interrupted run resumes)."""
    from concurrent.futures import ProcessPoolExecutor

    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = [cache / f"figures-{kind}-{s:07d}.parquet" for s in range(0, n, SHARD)]
    todo = [(kind, s, s + SHARD) for s, p in zip(range(0, n, SHARD), paths) if not p.exists()]

    def write(job, rows):
        path = cache / f"figures-{kind}-{job[1]:07d}.parquet"
        tmp = path.with_suffix(".tmp")
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        tmp.replace(path)

    if todo:
        with ProcessPoolExecutor(procs) as ex:
            for job, rows in zip(todo, ex.map(_shard, todo)):
                write(job, rows)
    return paths


def _read_figures(paths: list[Path], n: int):
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa.concat_tables([pq.read_table(p) for p in paths]).slice(0, n)


def part2(n_rows: int, n_items: int, cache: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    figures = [_generate(f"bench{b}", n_items, cache) for b in range(8)]
    train_shards = _generate("train", n_rows, cache)
    gen_s = time.perf_counter() - t0
    work = Path(tempfile.mkdtemp(prefix="mm-decon-bench-"))
    benches = []
    for b, f in enumerate(figures):  # the benchmark files: figures + texts, as a user would pass them
        t = _read_figures(f, n_items)
        t = t.append_column("question", pa.array(synthetic_texts(f"bench{b}", t.num_rows)))
        pq.write_table(t, work / f"bench{b}.parquet")
        benches.append(work / f"bench{b}.parquet")
    specs = [{"path": str(p), "map": "problem=question,images=image,id=id", "name": p.stem} for p in benches]
    specs += [f"{DATA / 'benchmarks' / 'amc23.jsonl'}:amc23", f"{DATA / 'benchmarks' / 'minerva_math.jsonl'}:minerva"]
    train = _read_figures(train_shards, n_rows)
    rows = [{"id": i, "problem": t, "images": [im]} for i, t, im in
            zip(train.column("id").to_pylist(), synthetic_texts("train", n_rows), train.column("image").to_pylist())]
    del train
    # plant 1 % copies of benchmark items (figure resized to 90 %, JPEG 80) and 1 % same text + other figure
    rng = random.Random(7)
    first_bench = pq.read_table(benches[0]).to_pylist()
    n_plant = max(1, n_rows // 100)
    planted, same_text = set(), set()
    for j in range(n_plant):
        item = first_bench[j]
        k = rng.randrange(len(rows))
        while k in planted or k in same_text:
            k = rng.randrange(len(rows))
        im = Image.open(io.BytesIO(item["image"]["bytes"])).convert("RGB")
        rows[k] = {"id": f"planted-{j}", "problem": item["question"],
                   "images": [{"bytes": enc(resize(im, 0.9), "JPEG", quality=80), "path": "p.jpg"}]}
        planted.add(k)
        k2 = rng.randrange(len(rows))
        while k2 in planted or k2 in same_text:
            k2 = rng.randrange(len(rows))
        rows[k2] = {"id": f"sametext-{j}", "problem": item["question"], "images": rows[k2]["images"]}
        same_text.add(k2)

    def timed(fn):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        return out, time.perf_counter() - t, time.process_time() - c

    step = Decontaminate(benchmarks=specs)
    bench_obj, load_s, load_c = timed(step._load)
    n_bench_images = len(bench_obj.index)
    images = [im for r in rows for im in r["images"]]
    _, hash_s, hash_c = timed(lambda: bench_obj.index.signatures(images))
    result, match_s, match_c = timed(lambda: list(step.run(rows)))
    base = Decontaminate(benchmarks=specs)
    base._bench = bench_obj  # the same loaded benchmarks: time the text rule alone
    _, text_s, text_c = timed(lambda: base.matches([r["problem"] for r in rows]))
    removed = {o.row["id"] for o in result if isinstance(o, Excluded)}
    found = sum(1 for k in planted if rows[k]["id"] in removed)
    fp_same = sum(1 for k in same_text if rows[k]["id"] in removed)
    other = len(removed) - found - fp_same
    total_s, total_c = hash_s + match_s, hash_c + match_c
    print(f"\n== throughput: {n_rows:,} training rows (one image each) x {len(specs)} benchmarks "
          f"({len(bench_obj.items):,} items, {n_bench_images:,} figures)")
    print(f"generate / read cached data {gen_s:.1f}s; load + index benchmarks {load_s:.1f}s wall / {load_c:.1f}s cpu "
          f"({n_bench_images / load_c:.0f} figures per cpu-s, once per run)")
    print(f"decode + hash {len(images):,} training images: {hash_s:.1f}s wall / {hash_c:.1f}s cpu "
          f"({len(images) / hash_c:.0f} images per cpu-s)")
    print(f"match (image search + text rules): {match_s:.1f}s wall / {match_c:.1f}s cpu")
    print(f"rows/s, training rows end to end (hash + match): {n_rows / total_s:.0f} wall, {n_rows / total_c:.0f} per "
          f"cpu-s; baseline text rule alone on the same rows: {text_s:.1f}s wall / {text_c:.1f}s cpu "
          f"({n_rows / text_s:.0f} rows/s); multimodal / text-only time: {total_s / text_s:.1f}x wall, "
          f"{total_c / text_c:.1f}x cpu")
    print(f"planted copies removed {found}/{len(planted)}; same text + other figure removed {fp_same}/"
          f"{len(same_text)}; other rows removed {other}")
    for o in result:
        if isinstance(o, Excluded) and not o.row["id"].startswith(("planted-", "sametext-")):
            print("   other:", o.row["problem"][:100], "->", o.detail)
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return {"rows": n_rows, "bench_items": len(bench_obj.items), "bench_images": n_bench_images,
            "load_s": load_s, "hash_s": hash_s, "match_s": match_s, "text_s": text_s,
            "rows_per_s": n_rows / total_s, "planted_found": found, "planted": len(planted),
            "same_text_removed": fp_same, "other_removed": other}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0", help="comma-separated seeds of the planted evaluation")
    ap.add_argument("--rows", type=int, default=10_000, help="training rows of the throughput part")
    ap.add_argument("--bench-items", type=int, default=1_000,
                    help="items (figures) of each of the 8 synthetic benchmarks (2,500: ~20k figures)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "rlcurate-mm-decon-bench")
    ap.add_argument("--text-only-rows", default="text", choices=["text", "guarded", "skip"])
    ap.add_argument("--skip-planted", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--show-misses", action="store_true")
    args = ap.parse_args()
    if not args.skip_planted:
        with tempfile.TemporaryDirectory() as work:
            for seed in (int(s) for s in args.seeds.split(",")):
                part1(seed, Path(work), args)
    if not args.skip_throughput:
        part2(args.rows, args.bench_items, args.cache)


if __name__ == "__main__":
    main()
