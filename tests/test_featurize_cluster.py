"""featurize.py through spark-submit on `local-cluster[2,1,1024]`: two executor JVMs, each with its
own Python workers, as on EMR. Proves the weights reach separate executor processes by the
driver's broadcast alone (their KERAS_HOME is an empty folder, there is no network, no --weights),
that each worker process builds its model once and reuses it across tasks, and that the features
equal a single-process Keras model's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyspark
import pytest
from conftest import payload_args

import featurize
import jobio
from fruits.local_target import SHORT_LIVED_JVM_OPTIONS
from fruits.steps import HELPER_MODULES

REPO_ROOT = Path(__file__).resolve().parents[1]
PER_LABEL = 2  # 48 photos


@pytest.fixture(scope="module")
def photos(sample_dir, tmp_path_factory) -> Path:
    """2 Training photos per label, linked (not copied) into a temporary input folder."""
    root = tmp_path_factory.mktemp("cluster_input")
    for label_dir in sorted((sample_dir / "Training").iterdir()):
        for photo in sorted(label_dir.iterdir())[:PER_LABEL]:
            link = root / "Training" / label_dir.name / photo.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(photo)
    return root


def spark_submit(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    spark_home = Path(pyspark.__file__).parent  # pip's pyspark is a complete SPARK_HOME
    return subprocess.run(
        [str(spark_home / "bin" / "spark-submit"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO_ROOT,
    )


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("runtime, tolerance", [("keras", 1e-5), ("litert", 1e-3)])
def test_broadcast_weights_reach_separate_executors_and_match_single_process_keras(
    photos, keras_home, litert_payload, tmp_path, runtime, tolerance
):
    executor_keras_home = tmp_path / "executor_keras_home"  # empty: nothing to load from
    executor_keras_home.mkdir()
    env = {
        key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "SPARK_HOME")
    }  # executors import the job modules only from what spark-submit ships, as on EMR
    env |= {
        "SPARK_HOME": str(Path(pyspark.__file__).parent),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "KERAS_HOME": str(keras_home),  # the driver's: the real ImageNet weights
    }
    output = tmp_path / "features"
    done = spark_submit(
        "--master",
        "local-cluster[2,1,1024]",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        f"spark.executorEnv.KERAS_HOME={executor_keras_home}",
        "--conf",  # the executors' JVMs are as short-lived as the driver's (tests/conftest.py)
        f"spark.executor.extraJavaOptions={SHORT_LIVED_JVM_OPTIONS}",
        # ~6 photos per task: 8 tasks over 2 executors, so each worker process runs several
        "--conf",
        "spark.sql.files.openCostInBytes=1048576",
        "--conf",
        "spark.sql.files.maxPartitionBytes=6291456",
        "--py-files",
        ",".join(f"spark_jobs/{module}" for module in HELPER_MODULES),  # what the DAG's steps ship
        "spark_jobs/featurize.py",
        "--input",
        str(photos),
        "--output",
        str(output),
        "--runtime",
        runtime,
        "--batch-size",
        "4",
        # litert broadcasts the published flatbuffer (release's conversion); keras the driver's weights
        *(payload_args(litert_payload) if runtime == "litert" else []),
        env=env,
    )
    assert done.returncode == 0, done.stderr[-6000:]

    committed = json.loads((output / jobio.COMMIT_MARKER).read_text())  # what every reader resolves
    metrics = json.loads((Path(committed["location"]) / "_job_metrics.json").read_text())
    assert committed["metrics"] == metrics and committed["rows"] == metrics["featurized"]
    assert metrics["featurized"] == 24 * PER_LABEL and metrics["quarantined"] == 0
    # One model per executor Python worker: two separate processes, neither the driver, each
    # building its model once for its several tasks.
    pids = {int(entry.rsplit(":", 1)[1]) for entry in metrics["model_builds"]}
    assert len(pids) == 2 and os.getpid() not in pids, metrics["model_builds"]
    # Had an executor looked for weights, Keras would have downloaded (and failed) into models/.
    assert not (executor_keras_home / "models").exists()
    assert not list(executor_keras_home.rglob("*.h5"))

    parquet = [Path(committed["location"]) / name for name in committed["files"] if name.endswith(".parquet")]
    rows = pd.concat([pd.read_parquet(part) for part in parquet]).sort_values("path")
    assert set(rows["label"]) == {p.name for p in (photos / "Training").iterdir()}
    pixels = np.stack([featurize.decode_image(Path(p.removeprefix("file:")).read_bytes())[0] for p in rows["path"]])
    expected = featurize.build_keras_model("imagenet").predict(featurize.preprocess(pixels), verbose=0)
    got = np.stack(rows["features"].to_numpy())
    assert got.shape == (24 * PER_LABEL, featurize.FEATURE_DIM)
    assert np.abs(got - expected).max() <= tolerance
    assert np.abs(expected).max() > 0.5
