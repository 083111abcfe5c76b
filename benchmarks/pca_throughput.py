"""PCA step throughput, measured side by side in one run on this machine (see README.md).

    .venv/bin/python benchmarks/pca_throughput.py [--rows 100000] [--features <featurize output>] [--quick]

Rows: the real sample's MobileNetV2 features (featurize.py over ../shared's 960 photos, or --features) tiled to
--rows with noise of a tenth of each feature's spread, clipped at 0 like ReLU6 activations, written as one
committed featurize output laid out as featurize writes it (SPLITS_PER_CORE files per core, zstd). Then:
(1) the ceiling: numpy's own X'X on the same rows in this one process, float64 blocks of 10,000 rows already in
    memory, only the products timed (numpy uses every core through its BLAS); (1) and (2) run --repeats times,
    interleaved, and the medians are compared;
(2) `pca.parquet_stats` on Spark local[<cores>]: the statistics the nightly step computes (the committed
    Parquet files' bytes to the Python workers, decoded by pyarrow, one centred X'X per block, partials
    merged), checked against numpy's;
(3) `pca.py nightly` end to end: night 1 fits the first basis, night 2 (the same rows as another batch) is the
    steady state: statistics + drift + projection with the saved PipelineModel + Parquet + CSV, committed.
Compares (2) with (1) (target >= 0.5) and night 2's time with featurize's at equal rows (target < 10 %), judged
on the larger of two shares: against results/inference_throughput.json's rate (what the cost model uses) and
against featurize's own rate on the sample in this run (when it ran: no --features). Writes
results/pca_throughput.json (read by the cost model) unless --quick.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from _env import RESULTS_DIR  # first: puts the jobs and plugins on the path

# isort: split
import numpy as np

import jobio
import pca

RESULTS_FILE = RESULTS_DIR / "pca_throughput.json"
FEATURIZE_RESULTS = RESULTS_DIR / "inference_throughput.json"
TARGET_VS_CEILING = 0.5
TARGET_SHARE_OF_FEATURIZE = 0.10
BLOCK_ROWS = 10_000
FEATURE_COLUMNS = ["path", "label", "split", "batch_id", "features"]


def sample_features(spark, given: str | None, scratch: Path):
    """(the real sample's features as a pandas frame, featurize's job metrics or None): --features, or
    featurize.py over ../shared now, in this run."""
    import pandas as pd

    metrics = None
    if given is None:
        import featurize
        from fruits.cli.demo import SAMPLE_DIR, WEIGHTS_FILE

        given = str(scratch / "sample_features")
        args = ["--input", str(SAMPLE_DIR), "--output", given, "--batch-id", "2024-01-01"]
        weights = ["--weights", str(WEIGHTS_FILE)] if WEIGHTS_FILE.exists() else []  # offline: ../shared's
        metrics = featurize.run(spark, featurize.parse_args(args + weights))
    return pd.read_parquet(given, columns=FEATURE_COLUMNS), metrics


def synthetic_rows(sample, rows: int, seed: int = 0) -> tuple[np.ndarray, list[str], list[str], list[str]]:
    """(X float32 rows x d, paths, labels, splits): the sample tiled, noise of 0.1 x each feature's std."""
    rng = np.random.default_rng(seed)
    base = np.stack(sample.features.to_numpy()).astype(np.float32)
    pick = np.arange(rows) % len(base)
    noise = rng.normal(size=(rows, base.shape[1])).astype(np.float32) * (0.1 * base.std(0))
    X = np.clip(base[pick] + noise, 0, None)
    labels, splits = sample.label.to_numpy()[pick], sample.split.to_numpy()[pick]
    paths = [
        f"s3://bench/raw/batch=x/{s}/{lab}/copy{i // len(base)}_{i % len(base)}.jpg"
        for i, (s, lab) in enumerate(zip(splits, labels))
    ]
    return X, paths, list(labels), list(splits)


def write_committed(spark, X, paths, labels, splits, features_root: str, batch: str) -> None:
    """featurize's committed output of `batch` as featurize lays it out: featurize.SPLITS_PER_CORE files per core,
    its Parquet options (zstd, no dictionary for the floats), in a run folder + the marker."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import featurize

    output = pca.batch_uri(features_root, batch)
    run = jobio.run_uri(output, jobio.new_run_id())
    folder = Path(run.removeprefix("file://"))
    folder.mkdir(parents=True)
    d = X.shape[1]
    parts = featurize.SPLITS_PER_CORE * spark.sparkContext.defaultParallelism
    for part, rows in enumerate(np.array_split(np.arange(len(X)), parts)):
        start, end = rows[0], rows[-1] + 1
        features = pa.FixedSizeListArray.from_arrays(pa.array(X[start:end].ravel()), d).cast(pa.list_(pa.float32()))
        table = pa.table(
            {
                "path": paths[start:end],
                "label": labels[start:end],
                "split": splits[start:end],
                "batch_id": [batch] * (end - start),
                "features": features,
            }
        )
        pq.write_table(
            table,
            folder / f"part-{part:05d}.parquet",
            compression=featurize.FEATURES_PARQUET_OPTIONS["compression"],
            use_dictionary=["path", "label", "split", "batch_id"],
        )
    jobio.commit(jobio.HadoopFiles(spark), output, run, {"job": "featurize", "batch_id": batch, "rows": len(X)})


def numpy_ceiling(X: np.ndarray) -> tuple[float, np.ndarray]:
    """Seconds of numpy's X'X over float64 blocks (only the products timed), and the Gram matrix."""
    gram, seconds = np.zeros((X.shape[1], X.shape[1])), 0.0
    for start in range(0, len(X), BLOCK_ROWS):
        block = X[start : start + BLOCK_ROWS].astype(np.float64)
        started = time.perf_counter()
        gram += block.T @ block
        seconds += time.perf_counter() - started
    return seconds, gram


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", help="an existing featurize output of the sample (skips featurize)")
    parser.add_argument("--repeats", type=int, default=3, help="(1) and (2) measured this many times, medians")
    parser.add_argument("--quick", action="store_true", help="10,000 rows, results not written")
    args = parser.parse_args(argv)
    rows = 10_000 if args.quick else args.rows
    repeats = 1 if args.quick else args.repeats
    cores = os.cpu_count() or 1
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("bench-pca")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        # As on EMR (fruits.emr_cluster): one BLAS thread per task slot, not one per core in each worker.
        .config("spark.executorEnv.OMP_NUM_THREADS", "1")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    with tempfile.TemporaryDirectory(prefix="bench-pca-") as scratch:
        scratch = Path(scratch)
        sample, featurized = sample_features(spark, args.features, scratch)
        X, paths, labels, splits = synthetic_rows(sample, rows)
        d = X.shape[1]
        root = f"file://{scratch}/lake"
        roots = {
            "features_root": f"{root}/features/",
            "stats_root": f"{root}/pca/stats/",
            "bases_root": f"{root}/pca/bases/",
            "reduced_root": f"{root}/pca/reduced/",
        }
        for batch in ("2024-01-01", "2024-01-02"):
            write_committed(spark, X, paths, labels, splits, roots["features_root"], batch)

        files = jobio.HadoopFiles(spark)
        feature_files = pca.committed_feature_files(files, roots["features_root"], "2024-01-01")
        pca.parquet_stats(spark, feature_files)  # warm-up: Python workers started
        numpy_runs, stats_runs = [], []
        for _ in range(repeats):  # interleaved, so a noisy minute weighs on both sides
            numpy_seconds, gram = numpy_ceiling(X)
            started = time.perf_counter()
            stats = pca.parquet_stats(spark, feature_files)
            numpy_runs.append(numpy_seconds)
            stats_runs.append(time.perf_counter() - started)
        del X
        numpy_seconds, stats_seconds = float(np.median(numpy_runs)), float(np.median(stats_runs))
        gram_error = float(np.abs(stats.gram - gram).max() / np.abs(gram).max())

        first = pca.run_nightly(spark, "2024-01-01", **roots)
        started = time.perf_counter()
        steady = pca.run_nightly(spark, "2024-01-02", **roots)
        step_seconds = time.perf_counter() - started
    spark.stop()

    featurize = json.loads(FEATURIZE_RESULTS.read_text())
    featurize_seconds = rows / (featurize["images_per_second_per_vcpu"] * cores)
    project_seconds = steady["project_seconds"]
    result = {
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.system().lower()} {platform.machine()}, {cores} cores",
        "cores": cores,
        "rows": rows,
        "dimension": d,
        "quick": args.quick,
        "numpy_gram_seconds": round(numpy_seconds, 3),
        "numpy_gram_rows_per_second_per_vcpu": round(rows / numpy_seconds / cores, 1),
        "stats_seconds": round(stats_seconds, 3),
        "stats_rows_per_second_per_vcpu": round(rows / stats_seconds / cores, 1),
        "stats_vs_numpy_ceiling": round(numpy_seconds / stats_seconds, 3),
        "repeats": repeats,
        "stats_vs_numpy_ceiling_each": [round(n / s, 3) for n, s in zip(numpy_runs, stats_runs)],
        "stats_gram_max_relative_difference": gram_error,
        "first_night_seconds": first["seconds"],
        "first_night_k": first["k"],
        "step_seconds": round(step_seconds, 3),
        "step_stats_seconds": steady["stats_seconds"],
        "project_seconds": project_seconds,
        "project_rows_per_second_per_vcpu": round(rows / project_seconds / cores, 1),
        "step_rows_per_second_per_vcpu": round(rows / step_seconds / cores, 1),
        "featurize_images_per_second_per_vcpu": featurize["images_per_second_per_vcpu"],
        "featurize_measured_at": featurize["measured_at"],
        "featurize_seconds_at_equal_rows": round(featurize_seconds, 1),
        "step_share_of_featurize": round(step_seconds / featurize_seconds, 4),
    }
    shares = [result["step_share_of_featurize"]]
    if featurized:  # side by side: featurize's own rate on the sample in this run (model load included)
        in_run_seconds = rows / featurized["images_per_second"]
        result["featurize_in_run_images_per_second"] = featurized["images_per_second"]
        result["featurize_in_run_seconds_at_equal_rows"] = round(in_run_seconds, 1)
        result["step_share_of_featurize_in_run"] = round(step_seconds / in_run_seconds, 4)
        shares.append(result["step_share_of_featurize_in_run"])
    met = {
        "stats >= 0.5 x numpy ceiling": result["stats_vs_numpy_ceiling"] >= TARGET_VS_CEILING,
        "PCA step < 10 % of featurize": max(shares) < TARGET_SHARE_OF_FEATURIZE,
    }
    result["targets_met"] = met
    print(f"{rows:,} rows of {d}-d features, local[{cores}]")
    print(
        f"(1) numpy X'X, one process:       {rows / numpy_seconds:10,.0f} rows/s "
        f"({result['numpy_gram_rows_per_second_per_vcpu']:,.0f} per vCPU)"
    )
    print(
        f"(2) pca.parquet_stats on Spark:    {rows / stats_seconds:10,.0f} rows/s "
        f"({result['stats_rows_per_second_per_vcpu']:,.0f} per vCPU), X'X max rel. diff {gram_error:.1e}"
    )
    print(
        f"(3) nightly, steady state:         {step_seconds:8.1f} s (statistics {steady['stats_seconds']} s, "
        f"projection + Parquet + CSV {project_seconds} s); first night (fit, k={first['k']}) {first['seconds']} s"
    )
    print(
        f"    featurize at equal rows:       {featurize_seconds:8.1f} s ({featurize['images_per_second_per_vcpu']} "
        f"images/s per vCPU, {FEATURIZE_RESULTS.name} of {featurize['measured_at']})"
    )
    if featurized:
        print(
            f"    featurize in this run:         {result['featurize_in_run_seconds_at_equal_rows']:8.1f} s at "
            f"{featurized['images_per_second']} images/s on the sample ({featurized['seen']} photos, "
            "model load included)"
        )
    each = ", ".join(f"{ratio:.2f}" for ratio in result["stats_vs_numpy_ceiling_each"])
    print(
        f"(2)/(1) = {result['stats_vs_numpy_ceiling']:.2f} (medians of {repeats}; each: {each}): "
        f"target {TARGET_VS_CEILING} "
        f"{'met' if met['stats >= 0.5 x numpy ceiling'] else 'NOT MET'}"
    )
    print(
        f"step / featurize = {max(shares):.3f} (the larger of the two): target < {TARGET_SHARE_OF_FEATURIZE} "
        f"{'met' if met['PCA step < 10 % of featurize'] else 'NOT MET'}"
    )
    if not args.quick:
        RESULTS_FILE.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
