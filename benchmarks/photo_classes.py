"""Per photo class, side by side in one run: ingest, decode + preprocess, inference and featurize end to end.

    .venv/bin/python benchmarks/photo_classes.py [--photos 30] [--copies 8]

Classes: `thumbnail` (the Fruits-360 sample, 100 x 100 JPEG), `jpeg12` (12-MP phone JPEG) and `heic` (12-MP
HEIC with its thumbnail item), both from benchmarks/phone_photos.py. For each, on one thread of this process:
- ingest: photos.examine (identify, strip the metadata, hash both ways), photos/s; and the ingest pass's whole
  per-photo work (`ingest_pass`: examine, then, for a photo bigger than its model pixels, featurize.decoded_columns,
  the night's one decode of it), photos/s;
- decode + preprocess: featurize's one decode (decode_oriented: JPEG DCT scaling, the HEIC thumbnail item,
  EXIF orientation), the model's pixels and the derivative, then preprocess, images/s;
- inference: LiteRT XNNPACK, 1 thread, batch 1 (the job's default) on those tensors, images/s;
- featurize's per-photo work on the bundle rows the ingest pass writes (featurize_batch, the model on 1 thread):
  from the pixels the pass decoded, and from the photo's bytes (decoded there), images/s;
then featurize.py end to end through spark-submit on local[<cores>], twice: over `--copies` hard links of each
photo and over `LARGER` times as many. The job's fixed start (~15 s here) is as long as a few hundred phone
photos, so a run's own rate says little; the difference of the two runs is the photos' marginal seconds,
overhead-free, which checks the model's arithmetic below.

Writes benchmarks/results/photo_classes.json. The cost model (fruits.costs.photo_mix) reads each class's ingest
pass rate, its mean bytes and its decode seconds: featurize costs a photo a thumbnail's end-to-end seconds per vCPU
(inference_throughput.json, 28,800 photos), plus its decode's extra over a thumbnail's when featurize decodes it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _env import RESULTS_DIR, write_results  # first: puts the jobs and plugins on the path

# isort: split
import numpy as np
import phone_photos
import photos
from inference_throughput import featurize_end_to_end, rate, shared_present

import featurize
from fruits.cli.demo import SAMPLE_DIR, WEIGHTS_FILE

RESULTS_FILE = RESULTS_DIR / "photo_classes.json"
CLASSES = ("thumbnail", "jpeg12", "heic")
# The second end-to-end run holds this many times the first's photos: their difference is the photos' seconds.
LARGER = 4


def class_photos(name: str, count: int) -> list[Path]:
    if name == "thumbnail":
        every = sorted(SAMPLE_DIR.glob("*/*/*.jpg"))
        return every[:: max(1, len(every) // count)][:count]
    jpeg, heic = (count, 0) if name == "jpeg12" else (0, count)
    return [p.path for p in phone_photos.workload(jpeg, heic, 0, sample_dir=SAMPLE_DIR)]


def timed_rate(work, items: list, min_seconds: float) -> float:
    """Items/s of `work` over `items`, repeated until min_seconds have passed (one warm-up item first)."""
    work(items[0])
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < min_seconds or not done:
        for item in items:
            work(item)
        done += len(items)
    return done / (time.perf_counter() - started)


def ingest_one(data: bytes) -> int:
    verdict = photos.examine(data)  # the ingest job's per-photo work: identify, strip, hash both ways
    if verdict.reason:
        raise ValueError(f"a generated photo was refused: {verdict.reason} {verdict.detail}")
    return len(verdict.content)


def ingest_pass_one(data: bytes) -> int:
    """The ingest pass's per-photo work: examine, and the one decode of a photo bigger than its model pixels."""
    verdict = photos.examine(data)
    decoded = featurize.decoded_columns(verdict.content)
    return len(verdict.content) if decoded is None else len(decoded["pixels"])


def bundle_rows(contents: list[bytes], decoded: bool):
    """Arrow rows as featurize reads a bundle: a decoded photo's pixels, derivative and size, or its bytes."""
    import pyarrow as pa

    columns = {"path": [str(i) for i in range(len(contents))], "sha256": ["-"] * len(contents)}
    rows = [featurize.decoded_columns(c) if decoded else None for c in contents]
    columns["content"] = [None if row else c for row, c in zip(rows, contents, strict=True)]
    for name in featurize.DECODED_INPUT:
        columns[name] = [row[name] if row else None for row in rows]
    types = {"width": pa.int32(), "height": pa.int32()}
    return [
        pa.RecordBatch.from_pydict({k: pa.array([v[i]], types.get(k)) for k, v in columns.items()})
        for i in range(len(contents))
    ]


def decode_one(data: bytes) -> tuple[np.ndarray, int]:
    image, _, _ = featurize.decode_oriented(data)
    return featurize.preprocess(featurize.model_pixels(image)), len(featurize.derivative(image))


def link_copies(photos: list[Path], target: Path, copies: int) -> int:
    for copy in range(copies):
        for photo in photos:
            link = target / f"copy{copy}" / photo.parent.name / photo.name
            link.parent.mkdir(parents=True, exist_ok=True)
            os.link(photo, link)
    return copies * len(photos)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=30, help="photos per class (phone ones generated once)")
    parser.add_argument("--copies", type=int, default=8, help="links to each photo in the end-to-end input")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="per single-process measurement")
    args = parser.parse_args(argv)
    if not shared_present():
        return 2
    cores = os.cpu_count() or 1
    started = time.perf_counter()
    photos = {name: class_photos(name, args.photos) for name in CLASSES}
    print(f"photos ready ({time.perf_counter() - started:.0f} s)", flush=True)
    model = featurize.LiteRTModel(featurize.to_litert_flatbuffer(featurize.build_keras_model(str(WEIGHTS_FILE))), 1)

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="fruits-classes-") as folder:
        for name in CLASSES:
            contents = [p.read_bytes() for p in photos[name]]
            stripped = [ingest_one(c) for c in contents]
            decoded = [decode_one(c) for c in contents]
            tensors = np.stack([tensor for tensor, _ in decoded])
            row = {
                "photos": len(contents),
                "mean_bytes": round(float(np.mean([len(c) for c in contents]))),
                "mean_stripped_bytes": round(float(np.mean(stripped))),
                "mean_derivative_bytes": round(float(np.mean([size for _, size in decoded]))),
                "ingest_per_s_one_thread": timed_rate(ingest_one, contents, args.min_seconds),
                "ingest_pass_per_s_one_thread": timed_rate(ingest_pass_one, contents, args.min_seconds),
                "decode_preprocess_per_s_one_thread": timed_rate(decode_one, contents, args.min_seconds),
                "inference_per_s_one_thread": rate(model, tensors, 1, args.min_seconds),
            }
            for source, decoded_rows in (("pixels", True), ("content", False)):
                rows = bundle_rows(contents, decoded_rows)
                row[f"featurize_from_{source}_per_s_one_thread"] = timed_rate(
                    lambda batch: featurize.featurize_batch(batch, model, 1, derivatives=True), rows, args.min_seconds
                )
            runs = []
            for size, copies in (("small", args.copies), ("large", LARGER * args.copies)):
                workdir = Path(folder) / name / size
                images = link_copies(photos[name], workdir / "input", copies if name != "thumbnail" else 3 * copies)
                print(f"{name}: featurize.py end to end on {images} photos, local[{cores}] ...", flush=True)
                job = featurize_end_to_end(workdir / "input", "files", cores, workdir)
                runs.append({k: job[k] for k in ("seen", "featurized", "seconds", "images_per_second")})
            small, large = runs
            row["featurize_end_to_end"] = runs
            # vCPU-seconds a photo adds to a run: what the runs' difference took, on every core.
            row["featurize_marginal_ms_per_vcpu"] = (
                1000 * cores * (large["seconds"] - small["seconds"]) / (large["featurized"] - small["featurized"])
            )
            results[name] = {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}

    thumbnail = results["thumbnail"]
    for row in results.values():
        # The model's arithmetic (fruits.costs.photo_mix) against the runs' own difference, both over a thumbnail.
        row["decode_extra_ms"] = round(
            1000 / row["decode_preprocess_per_s_one_thread"] - 1000 / thumbnail["decode_preprocess_per_s_one_thread"], 2
        )
        row["featurize_marginal_extra_ms"] = round(
            row["featurize_marginal_ms_per_vcpu"] - thumbnail["featurize_marginal_ms_per_vcpu"], 2
        )
    columns = (
        ("mean_bytes", "bytes"),
        ("ingest_per_s_one_thread", "ingest/s"),
        ("ingest_pass_per_s_one_thread", "ingest pass/s"),
        ("featurize_from_pixels_per_s_one_thread", "feat(pixels)/s"),
        ("featurize_from_content_per_s_one_thread", "feat(photo)/s"),
        ("decode_preprocess_per_s_one_thread", "decode+pre/s"),
        ("inference_per_s_one_thread", "infer/s"),
        ("decode_extra_ms", "decode +ms"),
        ("featurize_marginal_ms_per_vcpu", "e2e ms/vCPU"),
        ("featurize_marginal_extra_ms", "e2e +ms"),
    )
    print("\n" + f"{'class':10}" + "".join(f"{title:>18}" for _, title in columns))
    for name, row in results.items():
        print(f"{name:10}" + "".join(f"{row[key]:>18,}" for key, _ in columns))
    print(
        f"(one thread each; e2e: featurize on local[{cores}], the marginal vCPU-ms of a photo between runs of "
        f"{args.copies} and {LARGER * args.copies} copies; +ms: over a thumbnail); "
        f"total {time.perf_counter() - started:.0f} s"
    )
    write_results(RESULTS_FILE, argv, classes=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
