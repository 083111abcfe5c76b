"""featurize's read of a batch of bundles, side by side in one SparkSession: one scan (the default) against the
two scans of `--keep-originals` (the decoded rows without their bytes, then the others).

    .venv/bin/python benchmarks/bundle_scans.py [--runs 3] [--master local[2]]

The sample's 960 thumbnails, bundled by fruits.upload into a fresh local lake, featurized with --derived and the
release command's LiteRT payload, the two ways alternating `--runs` times after a pair not counted (it warms the
JVM, the workers and the page cache). Thumbnails are never decoded by the ingest pass, so the second scan finds
nothing: what it costs is its own tasks. Writes benchmarks/results/bundle_scans.json.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
from pathlib import Path

from _env import RESULTS_DIR, write_results  # first: puts the jobs and plugins on the path

# isort: split
from inference_throughput import shared_present

import featurize
from fruits import lake, release, storage, upload
from fruits.cli.demo import SAMPLE_DIR, WEIGHTS_FILE

RESULTS_FILE = RESULTS_DIR / "bundle_scans.json"
BATCH = "2024-01-01"
WAYS = {"one scan (default)": [], "two scans (--keep-originals)": ["--keep-originals"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each way, alternating")
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args(argv)
    if not shared_present():
        return 2
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.master(args.master).config("spark.ui.enabled", "false").getOrCreate()
    folder = Path(tempfile.mkdtemp(prefix="fruits-scans-"))
    store = storage.LocalStore(folder / "lake")
    upload.upload_new_images(store, storage.LocalStore(SAMPLE_DIR), storage.file_uri(SAMPLE_DIR), BATCH)
    raw = lake.raw_uri(store.root, BATCH)
    payload = release.convert_to_litert(WEIGHTS_FILE.read_bytes(), WEIGHTS_FILE.name)
    (folder / "model.tflite").write_bytes(payload)
    model = [
        "--model-payload",
        str(folder / "model.tflite"),
        "--model-payload-sha256",
        hashlib.sha256(payload).hexdigest(),
    ]
    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    for run in range(-1, args.runs):  # run -1 warms the JVM, the workers and the page cache: not counted
        for number, (way, flags) in enumerate(WAYS.items()):
            out = folder / f"run{run}-{number}"
            job = ["--input", raw, "--input-format", "bundles", "--output", str(out / "features")]
            metrics = featurize.run(
                spark, featurize.parse_args([*job, "--derived", str(out / "derived"), *model, *flags])
            )
            if run >= 0:
                seconds[way].append(metrics["seconds"])
            print(f"{way}: run {run}, {metrics['featurized']} photos in {metrics['seconds']:.2f} s", flush=True)
    spark.stop()
    medians = {way: statistics.median(values) for way, values in seconds.items()}
    one, two = medians.values()
    print(f"medians: {medians}; two scans take {two / one:.2f} x one scan's seconds")
    write_results(
        RESULTS_FILE,
        argv,
        photos=metrics["featurized"],
        seconds=seconds,
        median_seconds=medians,
        two_scans_vs_one=round(two / one, 3),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
