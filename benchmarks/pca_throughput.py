"""PCA step throughput, measured side by side in one run on this machine (see README.md).

    .venv/bin/python benchmarks/pca_throughput.py [--rows 100000] [--features <featurize output>] [--quick]

Rows: the real sample's MobileNetV2 features (featurize.py over ../shared's 960 photos, or --features) tiled to
--rows with noise of a tenth of each feature's spread, clipped at 0 like ReLU6 activations, written as one
committed featurize output (Parquet files of 10,000 rows). Then:
(1) the ceiling: numpy's own X'X on the same rows in this one process, float64 blocks of 10,000 rows already in
    memory, only the products timed (numpy uses every core through its BLAS);
(2) `pca.batch_stats` on Spark local[<cores>]: the statistics the nightly step computes (read the committed
    Parquet, Arrow batches, one centred X'X per batch, partials merged), checked against numpy's;
(3) `pca.py nightly` end to end: night 1 fits the first basis, night 2 (the same rows as another batch) is the
    steady state: statistics + drift + projection with the saved PipelineModel + Parquet + CSV, committed.
Compares (2) with (1) (target >= 0.5) and night 2's time with featurize's at equal rows (target < 10 %),
featurize's rate read from results/inference_throughput.json (`images_per_second_per_vcpu`). Writes
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
    """The real sample's features as a pandas frame: --features, or featurize.py over ../shared now."""
    import pandas as pd

    if given is None:
        import featurize
        from fruits.cli.demo import SAMPLE_DIR, WEIGHTS_FILE

        given = str(scratch / "sample_features")
        args = ["--input", str(SAMPLE_DIR), "--output", given, "--batch-id", "2024-01-01"]
        weights = ["--weights", str(WEIGHTS_FILE)] if WEIGHTS_FILE.exists() else []  # offline: ../shared's
        featurize.run(spark, featurize.parse_args(args + weights))
    return pd.read_parquet(given, columns=FEATURE_COLUMNS)


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
    """featurize's committed output of `batch`: Parquet files of BLOCK_ROWS rows in a run folder + the marker."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    output = pca.batch_uri(features_root, batch)
    run = jobio.run_uri(output, jobio.new_run_id())
    folder = Path(run.removeprefix("file://"))
    folder.mkdir(parents=True)
    d = X.shape[1]
    for part, start in enumerate(range(0, len(X), BLOCK_ROWS)):
        end = min(start + BLOCK_ROWS, len(X))
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
            table, folder / f"part-{part:05d}.parquet", use_dictionary=["path", "label", "split", "batch_id"]
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
    parser.add_argument("--quick", action="store_true", help="10,000 rows, results not written")
    args = parser.parse_args(argv)
    rows = 10_000 if args.quick else args.rows
    cores = os.cpu_count() or 1
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("bench-pca")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    with tempfile.TemporaryDirectory(prefix="bench-pca-") as scratch:
        scratch = Path(scratch)
        X, paths, labels, splits = synthetic_rows(sample_features(spark, args.features, scratch), rows)
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

        numpy_seconds, gram = numpy_ceiling(X)
        del X
        files = jobio.HadoopFiles(spark)
        pca.batch_stats(pca.read_committed_features(spark, files, roots["features_root"], "2024-01-01"))  # JIT warm-up
        started = time.perf_counter()
        stats = pca.batch_stats(pca.read_committed_features(spark, files, roots["features_root"], "2024-01-01"))
        stats_seconds = time.perf_counter() - started
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
    met = {
        "stats >= 0.5 x numpy ceiling": result["stats_vs_numpy_ceiling"] >= TARGET_VS_CEILING,
        "PCA step < 10 % of featurize": result["step_share_of_featurize"] < TARGET_SHARE_OF_FEATURIZE,
    }
    result["targets_met"] = met
    print(f"{rows:,} rows of {d}-d features, local[{cores}]")
    print(
        f"(1) numpy X'X, one process:       {rows / numpy_seconds:10,.0f} rows/s "
        f"({result['numpy_gram_rows_per_second_per_vcpu']:,.0f} per vCPU)"
    )
    print(
        f"(2) pca.batch_stats on Spark:      {rows / stats_seconds:10,.0f} rows/s "
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
    print(
        f"(2)/(1) = {result['stats_vs_numpy_ceiling']:.2f}: target {TARGET_VS_CEILING} "
        f"{'met' if met['stats >= 0.5 x numpy ceiling'] else 'NOT MET'}"
    )
    print(
        f"step / featurize = {result['step_share_of_featurize']:.3f}: target < {TARGET_SHARE_OF_FEATURIZE} "
        f"{'met' if met['PCA step < 10 % of featurize'] else 'NOT MET'}"
    )
    if not args.quick:
        RESULTS_FILE.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
