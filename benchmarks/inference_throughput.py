"""Inference throughput, measured side by side in one run on this machine (see README.md).

    .venv/bin/python benchmarks/inference_throughput.py [--quick]

(a) single-process TensorFlow inference on already-decoded tensors: Keras `predict`,
    `tf.function` (graph) and LiteRT with XNNPACK at several batch sizes and thread counts;
(b) featurize.py end to end through spark-submit on local[<cores>], JPEG photos to Parquet, the
    job's own defaults (LiteRT runtime), its `_job_metrics.json` rate: on the photos as the lake
    stores them (Parquet bundles written by fruits.storage, `--input-format bundles`: what the
    pipeline runs) and on the same photos as loose JPEG files (`--input-format files`);
(c) the textbook approach: Keras `model.predict` inside a scalar-iterator pandas UDF on the same
    local[<cores>], the weights broadcast, each task building its model from them.

Prints a table and the ratios against the targets ((b) >= 0.8 x best (a), (b) >= 5 x (c)), and
writes benchmarks/results/inference_throughput.json; the cost model reads its
`images_per_second_per_vcpu` (featurize end to end on bundles), `cores` and `measured_at`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _env import REPO_ROOT, RESULTS_DIR  # first: puts the jobs and plugins on the path

# isort: split
import numpy as np
import pandas as pd

import featurize
from fruits.cli.demo import SAMPLE_DIR, WEIGHTS_FILE
from fruits.steps import HELPER_MODULES

RESULTS_FILE = RESULTS_DIR / "inference_throughput.json"
TARGET_VS_BEST_SINGLE_PROCESS = 0.8
TARGET_VS_TEXTBOOK = 5.0


def shared_present() -> bool:
    """Whether ../shared holds the sample and the weights (else says what is missing)."""
    for needed in (SAMPLE_DIR, WEIGHTS_FILE):
        if not needed.exists():
            print(f"missing {needed}: ../shared is not beside the checkout", file=sys.stderr)
            return False
    return True


def rate(infer, tensors: np.ndarray, batch: int, min_seconds: float) -> float:
    """Images/s of `infer` over batches of `tensors`, after one warm-up call, for >= min_seconds."""
    infer(tensors[:batch])
    done, started = 0, time.perf_counter()
    while True:
        for start in range(0, len(tensors) - batch + 1, batch):
            infer(tensors[start : start + batch])
            done += batch
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return done / elapsed


def single_process(model, tensors: np.ndarray, cores: int, min_seconds: float) -> dict[str, float]:
    """(a): the same decoded, preprocessed tensors through each runtime."""
    import tensorflow as tf

    results = {}
    results["keras predict, batch 32"] = rate(lambda x: model.predict(x, verbose=0), tensors, 32, min_seconds)
    graph = tf.function(lambda x: model(x, training=False))
    results["tf.function, batch 32"] = rate(lambda x: graph(x).numpy(), tensors, 32, min_seconds)
    flatbuffer = featurize.to_litert_flatbuffer(model)
    for threads in sorted({1, cores}):
        for batch in (1, 8, 32):
            interpreter = featurize.LiteRTModel(flatbuffer, num_threads=threads)
            results[f"LiteRT XNNPACK, {threads} thread(s), batch {batch}"] = rate(
                interpreter, tensors, batch, min_seconds
            )
    return results


def featurize_end_to_end(input_dir: Path, input_format: str, cores: int, workdir: Path) -> dict:
    """(b): the real job through spark-submit, as the local target runs it."""
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    output = workdir / f"features-{input_format}"
    env = dict(
        os.environ, SPARK_HOME=str(spark_home), PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable
    )
    started = time.perf_counter()
    done = subprocess.run(
        [
            str(spark_home / "bin" / "spark-submit"),
            "--master",
            f"local[{cores}]",
            "--conf",
            "spark.ui.enabled=false",
            "--py-files",
            ",".join(str(REPO_ROOT / "spark_jobs" / module) for module in HELPER_MODULES),  # as the DAG's steps
            str(REPO_ROOT / "spark_jobs" / "featurize.py"),
            "--input",
            str(input_dir),
            "--input-format",
            input_format,
            "--output",
            str(output),
            "--weights",
            f"file://{WEIGHTS_FILE}",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"featurize failed:\n{done.stderr[-4000:]}")
    metrics = json.loads((output / "_committed.json").read_text())["metrics"]  # the committed run's
    metrics["wall_seconds"] = round(time.perf_counter() - started, 2)
    return metrics


def textbook(input_dir: Path, model, cores: int, workdir: Path) -> dict:
    """(c): Keras `model.predict` in a scalar-iterator pandas UDF, weights broadcast as arrays.

    Decoding is featurize's own (the comparison is about the inference runtime, not Pillow)."""
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("textbook")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    try:
        weights = spark.sparkContext.broadcast(model.get_weights())

        @F.pandas_udf(T.ArrayType(T.FloatType()))
        def keras_features(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
            from keras.applications.mobilenet_v2 import preprocess_input

            worker_model = featurize.build_keras_model(weights=None)
            worker_model.set_weights(weights.value)
            for contents in batches:
                pixels = np.stack([featurize.decode_image(c)[0] for c in contents])
                yield pd.Series(list(worker_model.predict(preprocess_input(pixels.astype("float32")), verbose=0)))

        started = time.perf_counter()
        images = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(str(input_dir))
        images.select("path", keras_features("content").alias("features")).write.parquet(str(workdir / "textbook"))
        seconds = time.perf_counter() - started
        count = spark.read.parquet(str(workdir / "textbook")).count()
    finally:
        spark.stop()
    return {"images": count, "seconds": round(seconds, 2), "images_per_second": round(count / seconds, 2)}


def copy_keys(source: Path, copies: int, split: str | None = None) -> Iterator[tuple[str, Path]]:
    """(`copy<n>/<split>/<label>/<file>`, sample photo) for `copies` copies of every sample photo."""
    for photo in sorted(source.glob(f"{split or '*'}/*/*.jpg")):
        for copy in range(copies):
            yield f"copy{copy}/{photo.parent.parent.name}/{photo.parent.name}/{photo.name}", photo


def link_copies(source: Path, target: Path, copies: int, split: str | None = None) -> int:
    """`copies` links to every sample photo (a bigger input without copying files)."""
    count = 0
    for key, photo in copy_keys(source, copies, split):
        link = target / key
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(photo)
        count += 1
    return count


BUNDLES_BATCH = "2026-01-01"  # the bundles' batch in their manifest (featurize's --batch-id is not checked against it)


def bundle_copies(source: Path, target: Path, copies: int) -> int:
    """`copies` copies of every sample photo in bundles, written by the lake's own bundle writer (fruits.storage),
    and the manifest naming them (featurize reads only the bundles a committed manifest names)."""
    from fruits import storage

    store = storage.LocalStore(target)
    writer = storage.BundleWriter(store, store.root + "/", attempt="benchmark", dry_run=False)
    stored = {}
    for key, photo in copy_keys(source, copies):
        data = photo.read_bytes()
        stored[key] = storage.sha256_bytes(data)
        writer.add(storage.Photo(key, stored[key], data))
    writer.flush()
    manifest = storage.BatchManifest(stored, writer.bundles).to_json(BUNDLES_BATCH)
    store.put(store.root + "/" + storage.UPLOADS_MANIFEST, manifest, storage.sha256_bytes(manifest))
    return len(stored)


def job_summary(metrics: dict) -> dict:
    return {
        k: metrics[k]
        for k in (
            "input_format",
            "seen",
            "featurized",
            "seconds",
            "images_per_second",
            "model_prepare_seconds",
            "wall_seconds",
            "runtime",
            "batch_size",
            "worker_processes",
        )
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter timings, to check the script works")
    parser.add_argument(
        "--copies",
        type=int,
        default=30,
        help="(b) reads this many copies of each sample photo (30: 28,800 photos, ~2 min each)",
    )
    args = parser.parse_args(argv)
    if not shared_present():
        return 2
    cores = os.cpu_count() or 1
    min_seconds = 2.0 if args.quick else 8.0
    started = time.perf_counter()

    model = featurize.build_keras_model(str(WEIGHTS_FILE))
    count = 64 if args.quick else 128
    every_label = sorted(SAMPLE_DIR.glob("*/*/*.jpg"))
    photos = every_label[:: len(every_label) // count][:count]
    tensors = featurize.preprocess(np.stack([featurize.decode_image(p.read_bytes())[0] for p in photos]))
    print(f"(a) single process, {len(tensors)} decoded images, {cores} cores ...", flush=True)
    a = single_process(model, tensors, cores, min_seconds)

    with tempfile.TemporaryDirectory(prefix="fruits-bench-") as folder:
        workdir = Path(folder)
        copies = 1 if args.quick else args.copies
        b_images = bundle_copies(SAMPLE_DIR, workdir / "b_bundles", copies)
        print(f"(b) featurize.py end to end, {b_images} JPEG photos in bundles, local[{cores}] ...", flush=True)
        b = featurize_end_to_end(workdir / "b_bundles", "bundles", cores, workdir)
        link_copies(SAMPLE_DIR, workdir / "b_files", copies)
        print(f"(b) featurize.py end to end, {b_images} JPEG files, local[{cores}] ...", flush=True)
        b_files = featurize_end_to_end(workdir / "b_files", "files", cores, workdir)
        c_split = "Test"
        c_images = link_copies(SAMPLE_DIR, workdir / "c_input", 1, split=c_split)
        print(f"(c) textbook Keras predict in a pandas UDF, {c_images} JPEG files, local[{cores}] ...", flush=True)
        c = textbook(workdir / "c_input", model, cores, workdir)

    best_name, best = max(a.items(), key=lambda item: item[1])
    b_rate, b_files_rate, c_rate = b["images_per_second"], b_files["images_per_second"], c["images_per_second"]
    rows = [(f"(a) {name}", value) for name, value in a.items()]
    rows += [
        ("(b) featurize.py end to end, photos in bundles (the lake's layout)", b_rate),
        ("(b) featurize.py end to end, loose JPEG files", b_files_rate),
        ("(c) textbook: Keras predict in a pandas UDF", c_rate),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"\n{'':{width}}  images/s")
    for name, value in rows:
        print(f"{name:{width}}  {value:8.1f}")
    ratios = {
        "featurize_vs_best_single_process": b_rate / best,
        "featurize_vs_textbook": b_rate / c_rate,
        "featurize_files_vs_best_single_process": b_files_rate / best,
        "featurize_files_vs_textbook": b_files_rate / c_rate,
    }
    print(f"\nbest (a): {best_name}")
    for layout, suffix in (("bundles", ""), ("files", "_files")):
        for name, label, target in (
            ("best_single_process", "best (a)", TARGET_VS_BEST_SINGLE_PROCESS),
            ("textbook", "(c)", TARGET_VS_TEXTBOOK),
        ):
            ratio = ratios[f"featurize{suffix}_vs_{name}"]
            print(
                f"(b, {layout:7}) / {label:8} = {ratio:6.2f}   target >= {target}: "
                f"{'met' if ratio >= target else 'NOT MET'}"
            )
    per_vcpu = b_rate / cores
    print(
        f"featurize: {per_vcpu:.1f} images/s per vCPU (model preparation {b['model_prepare_seconds']} s once per job, "
        f"not included); total benchmark time {time.perf_counter() - started:.0f} s"
    )

    result = {
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}",
        "cores": cores,
        "quick": args.quick,
        "images_per_second_per_vcpu": round(per_vcpu, 2),
        "featurize_end_to_end": job_summary(b),
        "featurize_end_to_end_files": job_summary(b_files),
        "single_process_images_per_second": {name: round(value, 2) for name, value in a.items()},
        "best_single_process": {"name": best_name, "images_per_second": round(best, 2)},
        "textbook_pandas_udf_keras": c,
        "ratios": {name: round(value, 3) for name, value in ratios.items()},
        "targets": {
            "featurize_vs_best_single_process": TARGET_VS_BEST_SINGLE_PROCESS,
            "featurize_vs_textbook": TARGET_VS_TEXTBOOK,
        },
    }
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS_FILE.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
