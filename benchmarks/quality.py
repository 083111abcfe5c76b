"""The quality figure the docs and the deck quote: 1-nearest-neighbour accuracy, Training -> Test, on the real sample.

    .venv/bin/python benchmarks/quality.py [--features <featurize output of the sample>]

featurize.py over ../shared's 960 photos (the shared ImageNet weights, its default runtime), then `pca.py nightly`
as tests/test_quality.py's stricter case runs it: night 1 holds the Training photos only and fits the basis
(default variance target), night 2 holds the Test photos and is projected on it; the Test photos never shape
the basis. 1-NN (Euclidean) on the raw 1,280 floats and on the reduced vectors. Writes results/quality.json,
which tests/test_docs_figures.py holds the README, the docs and the deck to, and copies night 1's committed
explained_variance.png (that basis' curve) to docs/presentation/img/ for the deck.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "spark_jobs"))
sys.path.insert(0, str(REPO_ROOT / "plugins"))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "spark_jobs"), os.environ.get("PYTHONPATH")]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "quality.json"
VARIANCE_PLOT = REPO_ROOT / "docs" / "presentation" / "img" / "explained_variance.png"
WEIGHTS = (
    REPO_ROOT.parent
    / "shared"
    / "models"
    / "keras"
    / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
)
COLUMNS = ["path", "label", "split", "batch_id", "features"]


def nearest_neighbour_accuracy(train: np.ndarray, train_labels, test: np.ndarray, test_labels) -> float:
    squared = (test**2).sum(1)[:, None] - 2 * test @ train.T + (train**2).sum(1)[None, :]
    return float((np.asarray(train_labels)[squared.argmin(1)] == np.asarray(test_labels)).mean())


def committed_reduced(spark, output: str):
    import pandas as pd

    import jobio

    uris = jobio.committed_files(jobio.HadoopFiles(spark), output, ".parquet")
    return pd.concat(pd.read_parquet(uri.removeprefix("file://")) for uri in uris)


def commit(spark, frame, output: str, batch: str) -> None:
    import jobio

    run = jobio.run_uri(output, jobio.new_run_id())
    frame.write.parquet(run)
    jobio.commit(jobio.HadoopFiles(spark), output, run, {"job": "featurize", "batch_id": batch})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", help="an existing committed featurize output of the sample (skips featurize)")
    args = parser.parse_args(argv)
    from pyspark.sql import SparkSession

    import featurize
    import jobio
    import pca
    from fruits import lake
    from fruits.cli.demo import SAMPLE_DIR

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("bench-quality")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as scratch:
        features_out = args.features or f"file://{scratch}/sample_features"
        if not args.features:
            featurize.run(
                spark,
                featurize.parse_args(
                    [
                        "--input",
                        str(SAMPLE_DIR),
                        "--output",
                        features_out,
                        "--batch-id",
                        "2024-01-01",
                        "--weights",
                        f"file://{WEIGHTS}",
                    ]
                ),
            )
        files = jobio.committed_files(jobio.HadoopFiles(spark), features_out, ".parquet")
        features = spark.read.parquet(*files).select(*COLUMNS)
        root = f"file://{scratch}/lake"
        roots = {
            "features_root": lake.area_uri(root, "features"),
            "stats_root": lake.area_uri(root, "pca") + "stats/",
            "bases_root": lake.pca_bases_uri(root),
            "reduced_root": lake.area_uri(root, "pca") + "reduced/",
        }
        for batch, split in (("2024-01-01", "Training"), ("2024-01-02", "Test")):
            commit(spark, features.where(f"split = '{split}'"), pca.batch_uri(roots["features_root"], batch), batch)
        fit = pca.run_nightly(spark, "2024-01-01", **roots)
        pca.run_nightly(spark, "2024-01-02", mode="project", **roots)
        reduced = [
            committed_reduced(spark, pca.reduced_uri(roots["reduced_root"], fit["basis"], b))
            for b in ("2024-01-01", "2024-01-02")
        ]
        raw = features.toPandas()
        files = jobio.HadoopFiles(spark)
        (plot,) = jobio.committed_files(
            files, pca.reduced_uri(roots["reduced_root"], fit["basis"], "2024-01-01"), "explained_variance.png"
        )
        VARIANCE_PLOT.write_bytes(files.read(plot))
    spark.stop()

    import pandas as pd

    joined = raw.merge(pd.concat(reduced)[["path", "pca"]], on="path", validate="one_to_one")
    train, test = joined[joined.split == "Training"], joined[joined.split == "Test"]

    def stack(frame, column):
        return np.stack(frame[column].to_numpy()).astype(float)

    result = {
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.system().lower()} {platform.machine()}, {os.cpu_count()} cores",
        "photos": len(joined),
        "training": len(train),
        "test": len(test),
        "labels": int(joined.label.nunique()),
        "basis_fitted_on": "Training only (night 1); Test projected on it (night 2)",
        "variance_target": pca.DEFAULT_VARIANCE,
        "k": int(fit["k"]),
        "one_nn_raw": round(
            nearest_neighbour_accuracy(stack(train, "features"), train.label, stack(test, "features"), test.label), 4
        ),
        "one_nn_pca": round(
            nearest_neighbour_accuracy(stack(train, "pca"), train.label, stack(test, "pca"), test.label), 4
        ),
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
