"""spark_jobs/pca.py: the statistics and their merge against numpy, the basis and the drift figures, the
lake layout, and the `nightly` / `reexpress` subcommands on committed outputs, synthetic and on the real
sample's features (from featurize, `sample_features`, written in the committed layout here)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO_ROOT
from PIL import Image

import jobio
import pca
from fruits import lake

FEATURE_SCHEMA = "path string, label string, split string, batch_id string, features array<float>"


# ---------------------------------------------------------------- helpers shared with test_quality.py


def commit_features(spark, frame, features_root: str, batch: str) -> str:
    """Write `frame` as featurize's committed output of `batch`: a run folder, then the marker."""
    output = pca.batch_uri(features_root, batch)
    run = jobio.run_uri(output, jobio.new_run_id())
    frame.write.parquet(run)
    jobio.commit(jobio.HadoopFiles(spark), output, run, {"job": "featurize", "batch_id": batch})
    return output


def lake_roots(tmp_path) -> dict[str, str]:
    root = f"file://{tmp_path}/lake"
    return {
        "features_root": lake.area_uri(root, "features"),
        "stats_root": lake.area_uri(root, "pca") + "stats/",
        "bases_root": lake.pca_bases_uri(root),
        "reduced_root": lake.area_uri(root, "pca") + "reduced/",
    }


def committed_reduced(spark, roots, version: int, batch: str) -> pd.DataFrame:
    uris = jobio.committed_files(
        jobio.HadoopFiles(spark), pca.reduced_uri(roots["reduced_root"], version, batch), ".parquet"
    )
    assert uris, f"nothing committed for {batch} on basis {version}"
    return pd.concat(pd.read_parquet(uri.removeprefix("file://")) for uri in uris if "/reduced/" in uri)


def committed_report(spark, roots, version: int, batch: str) -> dict:
    files = jobio.HadoopFiles(spark)
    (uri,) = jobio.committed_files(files, pca.reduced_uri(roots["reduced_root"], version, batch), "report.json")
    return json.loads(files.read(uri))


def nearest_neighbour_accuracy(train: np.ndarray, train_labels, test: np.ndarray, test_labels) -> float:
    squared = (test**2).sum(1)[:, None] - 2 * test @ train.T + (train**2).sum(1)[None, :]
    return float((np.asarray(train_labels)[squared.argmin(1)] == np.asarray(test_labels)).mean())


def night_of(frame: pd.DataFrame, nights: int) -> pd.Series:
    """Deals each (label, split)'s photos round-robin over `nights`: every night holds every label."""
    ranked = frame.sort_values("path")
    return (ranked.groupby(["label", "split"]).cumcount() % nights).reindex(frame.index)


# ---------------------------------------------------------------- pure helpers


def test_choose_k_is_the_smallest_k_reaching_the_target():
    cumulative = np.cumsum([0.5, 0.3, 0.15, 0.05])
    assert pca.choose_k(cumulative, 0.5) == 1
    assert pca.choose_k(cumulative, 0.81) == 3
    assert pca.choose_k(cumulative, 0.95) == 3  # 0.95 in float is a hair off: still reached
    assert pca.choose_k(cumulative, 1.0) == 4
    assert pca.choose_k([0.6, 0.9999999999999], 1.0) == 2  # never beyond d
    for target in (0.0, -0.1, 1.01):
        with pytest.raises(ValueError, match="target"):
            pca.choose_k([0.5, 1.0], target)


def test_principal_axes_match_a_known_decomposition():
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    variances = np.array([8.0, 4.0, 2.0, 1.0, 0.0])  # singular, like a fit with fewer rows than d
    ratio, components = pca.principal_axes(basis @ np.diag(variances) @ basis.T)
    np.testing.assert_allclose(ratio, variances / variances.sum(), atol=1e-12)
    np.testing.assert_allclose(components.T @ components, np.eye(5), atol=1e-12)
    for i in range(4):  # same axes up to sign, sign fixed: largest coefficient positive
        assert abs(abs(components[:, i] @ basis[:, i]) - 1) < 1e-9
        assert components[np.argmax(np.abs(components[:, i])), i] > 0
    with pytest.raises(ValueError, match="no variance"):
        pca.principal_axes(np.zeros((3, 3)))


def test_merged_statistics_equal_the_statistics_of_the_union_without_cancellation():
    # Non-negative features with means 1e4 times their spread: X'X - n mean mean' would keep ~8 digits.
    rng = np.random.default_rng(1)
    X = 1e4 + rng.normal(size=(3000, 6)) @ rng.normal(size=(6, 6))
    merged = None
    for block in np.array_split(X, [7, 1000, 1001, 2500]):  # uneven blocks, one of a single row
        merged = pca.merge_stats(merged, pca.block_stats(block))
    assert merged.n == 3000
    np.testing.assert_allclose(merged.mean, X.mean(0), rtol=1e-14)
    np.testing.assert_allclose(merged.covariance(), np.cov(X.T), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(merged.column_sums, X.sum(0), rtol=1e-13)
    np.testing.assert_allclose(merged.gram, X.T @ X, rtol=1e-12)
    naive = (X.T @ X - np.outer(X.sum(0), X.sum(0)) / len(X)) / (len(X) - 1)
    assert np.abs(naive - np.cov(X.T)).max() > 1e3 * np.abs(merged.covariance() - np.cov(X.T)).max()
    again = pca.stats_from_npz(pca.stats_to_npz(merged))
    assert again.n == 3000 and np.array_equal(again.m2, merged.m2) and np.array_equal(again.mean, merged.mean)
    with pytest.raises(ValueError, match="different lengths"):
        pca.merge_stats(merged, pca.block_stats(np.ones((2, 3))))


def _subspace_rows(rng, n, directions, offset=2.0):
    return rng.normal(size=(n, len(directions))) * np.arange(len(directions), 0, -1) @ directions + offset


def test_drift_is_small_on_the_same_subspace_and_crosses_on_another():
    rng = np.random.default_rng(2)
    axes, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    same = pca.block_stats(_subspace_rows(rng, 500, axes[:, :3].T) + rng.normal(0, 0.01, (500, 10)))
    basis = pca.fit_basis(same, 1, ["2024-01-01"], variance=0.99)
    assert basis.k == 3 and basis.captured_share >= 0.99 and basis.rows_in_basis == 500
    night = pca.measure_drift(basis, pca.block_stats(_subspace_rows(rng, 400, axes[:, :3].T)), 0.2)
    assert night["captured_share"] > 0.999 and not night["crossed"] and night["mean_shift"] < 0.3
    other = pca.measure_drift(basis, pca.block_stats(_subspace_rows(rng, 400, axes[:, 5:8].T, 9.0)), 0.2)
    assert other["captured_share"] < 0.01 and other["crossed"] and other["mean_shift"] > 1
    assert other["captured_share_drop"] == pytest.approx(basis.captured_share - other["captured_share"])
    with pytest.raises(ValueError, match="fitted on 10-d features, the batch has 4-d"):
        pca.measure_drift(basis, pca.block_stats(np.ones((3, 4))), 0.2)
    with pytest.raises(ValueError, match="k must be between 1 and the feature dimension 10"):
        pca.fit_basis(same, 1, [], k=11)


def test_a_basis_number_is_never_reused_while_rows_on_it_remain():
    class Files:
        def list_folders(self, uri):
            return {"b/": [("v=0002", 0), ("_tmp", 0)], "r/": [("basis=0003", 0), ("basis=x", 0)]}.get(uri, [])

    assert pca.next_version(Files(), "b/") == 3
    assert pca.next_version(Files(), "b/", "r/") == 4  # basis 3's folder expired, its rows did not


def test_drift_is_not_judged_on_too_few_rows_and_says_why():
    """Below min_rows the figures are reported, never acted on: a small basis' share at fit is in-sample optimism,
    a small batch's share is sampling noise."""
    rng = np.random.default_rng(3)
    axes, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    big = pca.fit_basis(pca.block_stats(_subspace_rows(rng, 500, axes[:, :3].T)), 1, [], variance=0.99)
    small_other = pca.block_stats(_subspace_rows(rng, 40, axes[:, 5:8].T, 9.0))
    drift = pca.measure_drift(big, small_other, 0.2, min_rows=100)
    assert drift["captured_share_drop"] > 0.9 and not drift["judged"] and not drift["crossed"]
    assert drift["not_judged"] == "the batch has 40 rows (< 100): its captured share is mostly sampling noise"
    assert pca.measure_drift(big, small_other, 0.2, min_rows=40)["crossed"]  # the same night, judged
    tiny = pca.fit_basis(pca.block_stats(_subspace_rows(rng, 12, axes[:, :3].T)), 2, [], variance=0.99)
    drift = pca.measure_drift(tiny, pca.block_stats(_subspace_rows(rng, 500, axes[:, 5:8].T, 9.0)), 0.2, 100)
    assert not drift["crossed"] and drift["not_judged"].startswith("basis 2 was fitted on 12 rows (< 100)")
    assert (
        pca.parse_args(
            [
                "nightly",
                "--batch",
                "2024-01-01",
                "--stats-root",
                "s/",
                "--features-root",
                "f/",
                "--bases",
                "b/",
                "--reduced-root",
                "r/",
            ]
        ).min_drift_rows
        == pca.DEFAULT_MIN_DRIFT_ROWS
    )


def test_the_layout_is_fruits_lake_s():
    root = "s3://bucket"
    assert pca.batch_uri(lake.area_uri(root, "pca") + "stats/", "2024-01-02") == lake.pca_stats_uri(root, "2024-01-02")
    assert pca.batch_uri(lake.features_uri(root), "2024-01-02") == lake.features_uri(root, "2024-01-02")
    assert pca.basis_uri(lake.pca_bases_uri(root), 3) == lake.pca_basis_uri(root, 3)
    assert lake.pca_bases_uri(root) + pca.CURRENT_BASIS == lake.pca_current_basis_uri(root)
    reduced_root = lake.area_uri(root, "pca") + "reduced/"
    assert pca.reduced_uri(reduced_root, 12, "2024-01-02") == lake.pca_reduced_uri(root, 12, "2024-01-02")
    for bad in ("2024-02-30", "2024-1-02", "../x", ""):
        with pytest.raises(ValueError, match="real calendar date"):
            pca.check_batch(bad)
    assert pca.parse_batches(" 2024-01-02,2024-01-01,2024-01-02 ") == ["2024-01-01", "2024-01-02"]


def test_command_line():
    args = pca.parse_args(
        [
            "nightly",
            "--batch",
            "2024-01-02",
            "--features-root",
            "f/",
            "--stats-root",
            "s/",
            "--bases",
            "b/",
            "--reduced-root",
            "r/",
            "--window",
            "2024-01-01,2024-01-02",
        ]
    )
    assert (args.command, args.mode, args.window, args.variance, args.drift_threshold) == (
        "nightly",
        "auto",
        ["2024-01-01", "2024-01-02"],
        None,
        pca.DEFAULT_DRIFT_THRESHOLD,
    )
    args = pca.parse_args(
        ["reexpress", "--batches", "2024-01-01", "--features-root", "f/", "--bases", "b/", "--reduced-root", "r/"]
    )
    assert args.batches == ["2024-01-01"]
    with pytest.raises(SystemExit):
        pca.parse_args(
            [
                "nightly",
                "--batch",
                "2024-01-02",
                "--features-root",
                "f/",
                "--stats-root",
                "s/",
                "--bases",
                "b/",
                "--reduced-root",
                "r/",
                "--k",
                "3",
                "--variance",
                "0.9",
            ]
        )


def test_plot_is_a_png():
    png = pca.plot_explained_variance([0.5, 0.3, 0.15, 0.05], 3, 0.95)
    assert Image.open(io.BytesIO(png)).format == "PNG"


# ---------------------------------------------------------------- Spark, synthetic features


def _synthetic(n=60, d=8, batch="2024-01-01", seed=0, prefix="img", offset=2.0):
    """Rows along 3 strong directions + tiny noise: 3 components hold > 99 % of the variance."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)) * [5.0, 3.0, 2.0] @ rng.normal(size=(3, d)) + rng.normal(0, 0.01, (n, d)) + offset
    X = X.astype(np.float32)
    rows = [
        (f's3://b/raw/{prefix}_{i}, "q".jpg', f"L{i % 3}", "Training", batch, [float(v) for v in x])
        for i, x in enumerate(X)
    ]
    return rows, X.astype(float)


def test_spark_statistics_equal_numpy_s_and_bad_vectors_are_refused(spark):
    rows, X = _synthetic(n=500)
    frame = spark.createDataFrame(rows, FEATURE_SCHEMA).repartition(5)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "37")  # several Arrow batches per partition
    try:
        stats = pca.batch_stats(frame)
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    assert stats.n == 500
    np.testing.assert_allclose(stats.mean, X.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.covariance(), np.cov(X.T), rtol=1e-10, atol=1e-12)
    ragged = spark.createDataFrame([("a", "A", "T", "b", [1.0, 2.0]), ("b", "A", "T", "b", [1.0])], FEATURE_SCHEMA)
    with pytest.raises(ValueError, match="different lengths"):
        pca.batch_stats(ragged.coalesce(1))
    with pytest.raises(ValueError, match="different lengths"):  # one length per partition, two partitions
        pca.batch_stats(ragged.repartition(2, "path"))
    with pytest.raises(ValueError, match="have no features"):
        pca.batch_stats(spark.createDataFrame([("a", "A", "T", "b", None)], FEATURE_SCHEMA))
    with pytest.raises(ValueError, match="no feature rows"):
        pca.batch_stats(spark.createDataFrame([], FEATURE_SCHEMA))


def test_the_accumulator_s_blocks_add_up_to_numpy_s_statistics_without_cancellation():
    rng = np.random.default_rng(3)
    X = (rng.normal(size=(250, 6)) + 1e4).astype(np.float32)  # large means: a naive X'X - n mean mean' loses digits
    accumulator = pca.StatsAccumulator()
    for start in range(0, len(X), 37):  # uneven blocks, the last one short
        accumulator.add(X[start : start + 37])
    accumulator.add(X[:0])
    total = accumulator.total
    assert total.n == 250
    np.testing.assert_allclose(total.mean, X.astype(float).mean(0), rtol=1e-12)
    np.testing.assert_allclose(total.covariance(), np.cov(X.astype(float).T), rtol=1e-9)
    with pytest.raises(ValueError, match="different lengths"):
        accumulator.add(X[:5, :4])
    assert pca.StatsAccumulator().total is None


def test_parquet_statistics_equal_numpy_s_and_bad_files_are_named(spark, tmp_path):
    """The nightly path: each file's bytes through Spark's binaryFiles, decoded by pyarrow on the workers."""
    rows, X = _synthetic(n=500)
    spark.createDataFrame(rows, FEATURE_SCHEMA).repartition(5).write.parquet(str(tmp_path / "good"))
    good = sorted(f"file://{path}" for path in (tmp_path / "good").glob("*.parquet"))
    assert len(good) == 5
    stats = pca.parquet_stats(spark, good)
    assert stats.n == 500
    np.testing.assert_allclose(stats.mean, X.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.covariance(), np.cov(X.T), rtol=1e-10, atol=1e-12)

    def written(name, frame_rows):
        spark.createDataFrame(frame_rows, FEATURE_SCHEMA).coalesce(1).write.parquet(str(tmp_path / name))
        return [f"file://{path}" for path in (tmp_path / name).glob("*.parquet")]

    short = written("short", [("a", "A", "T", "b", [1.0, 2.0])])
    with pytest.raises(ValueError, match="different lengths"):
        pca.parquet_stats(spark, good + short)
    with pytest.raises(ValueError, match="different lengths"):
        pca.parquet_stats(spark, written("ragged", [("a", "A", "T", "b", [1.0, 2.0]), ("b", "A", "T", "b", [1.0])]))
    null = written("null", [("a", "A", "T", "b", None)])
    with pytest.raises(ValueError, match=f"{Path(null[0]).name}: 1 rows have no features"):
        pca.parquet_stats(spark, null)
    (tmp_path / "not.parquet").write_bytes(b"JPEG, not Parquet")
    with pytest.raises(ValueError, match="not.parquet: "):
        pca.parquet_stats(spark, [f"file://{tmp_path}/not.parquet"])
    with pytest.raises(pca.NoRows):
        pca.parquet_stats(spark, [])


def test_the_saved_model_projects_like_numpy_and_like_pyspark_ml_s_transform(spark, tmp_path):
    rows, X = _synthetic()
    basis = pca.fit_basis(pca.block_stats(X), 1, ["2024-01-01"], k=3)
    pca.basis_model(spark, basis).write().save(str(tmp_path / "model"))
    from pyspark.ml import PipelineModel

    model = PipelineModel.load(str(tmp_path / "model"))  # plain pyspark.ml
    order = np.argsort([r[0] for r in rows])
    expected = ((X - basis.mean) @ basis.components)[order]
    features = spark.createDataFrame(rows, FEATURE_SCHEMA)
    for project in (pca.project, pca.project_with_model):
        projected = project(model, features, 1).toPandas()
        assert list(projected.columns) == list(pca.REDUCED_COLUMNS) and set(projected.basis) == {1}
        np.testing.assert_allclose(
            np.stack(projected.sort_values("path").pca.to_numpy()), expected, rtol=1e-5, atol=1e-5
        )


def test_nightly_reads_only_committed_features(spark, tmp_path):
    roots = lake_roots(tmp_path)
    with pytest.raises(FileNotFoundError, match="no committed features for batch 2024-01-01"):
        pca.run_nightly(spark, "2024-01-01", **roots)
    # Parquet in a run folder that no marker names (a crashed featurize): still nothing.
    spark.createDataFrame(_synthetic()[0], FEATURE_SCHEMA).write.parquet(
        jobio.run_uri(pca.batch_uri(roots["features_root"], "2024-01-01"), "crashed")
    )
    with pytest.raises(FileNotFoundError, match="no committed features"):
        pca.run_nightly(spark, "2024-01-01", **roots)
    with pytest.raises(FileNotFoundError, match="mode project but no basis yet"):
        commit_features(
            spark, spark.createDataFrame(_synthetic()[0], FEATURE_SCHEMA), roots["features_root"], "2024-01-01"
        )
        pca.run_nightly(spark, "2024-01-01", mode="project", **roots)


def test_a_crash_mid_write_commits_nothing(spark, tmp_path, monkeypatch):
    roots = lake_roots(tmp_path)
    rows, _ = _synthetic()
    commit_features(spark, spark.createDataFrame(rows, FEATURE_SCHEMA), roots["features_root"], "2024-01-01")
    first = pca.run_nightly(spark, "2024-01-01", k=3, **roots)
    assert (first["basis"], first["new_basis"], first["rows_read"], first["k"]) == (1, "first basis", 60, 3)
    files = jobio.HadoopFiles(spark)
    output = pca.reduced_uri(roots["reduced_root"], 1, "2024-01-01")
    marker = jobio.read_commit(files, output)
    csv_parts = jobio.committed_files(files, output, ".csv")
    assert csv_parts and all(
        pd.read_csv(uri.removeprefix("file://")).columns.tolist()[:3] == ["path", "label", "pc_1"] for uri in csv_parts
    )
    assert sum(len(pd.read_csv(uri.removeprefix("file://"))) for uri in csv_parts) == 60  # commas and quotes survive

    def broken_plot(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pca, "plot_explained_variance", broken_plot)
    with pytest.raises(RuntimeError, match="disk full"):  # after reduced/ and the CSV are written
        pca.run_nightly(spark, "2024-01-01", mode="refit", k=2, **roots)
    monkeypatch.undo()
    assert jobio.read_commit(files, output) == marker  # the previous output, whole
    assert committed_report(spark, roots, 1, "2024-01-01") == first
    assert len(committed_reduced(spark, roots, 1, "2024-01-01")) == 60
    # The refit committed basis 2 before it crashed; its output for the batch is not committed, reexpress
    # completes it, and the old basis' output stays.
    assert pca.current_basis(files, roots["bases_root"]).version == 2
    assert jobio.read_commit(files, pca.reduced_uri(roots["reduced_root"], 2, "2024-01-01")) is None
    summary = pca.run_reexpress(
        spark,
        ["2024-01-01"],
        features_root=roots["features_root"],
        bases_root=roots["bases_root"],
        reduced_root=roots["reduced_root"],
    )
    assert summary == {"basis": 2, "projected": ["2024-01-01"], "already": [], "no_features": []}
    assert committed_report(spark, roots, 2, "2024-01-01")["k"] == 2
    assert jobio.read_commit(files, output) == marker


@pytest.mark.slow
def test_cli_through_spark_submit(spark, tmp_path):
    roots = lake_roots(tmp_path)
    commit_features(spark, spark.createDataFrame(_synthetic()[0], FEATURE_SCHEMA), roots["features_root"], "2024-01-01")
    spark_submit = Path(sys.executable).parent / "spark-submit"
    common = [
        str(spark_submit),
        "--master",
        "local[1]",
        "--conf",
        "spark.ui.enabled=false",
        "--py-files",
        str(REPO_ROOT / "spark_jobs" / "jobio.py"),
        str(REPO_ROOT / "spark_jobs" / "pca.py"),
    ]
    result = subprocess.run(
        [
            *common,
            "nightly",
            "--batch",
            "2024-01-01",
            "--features-root",
            roots["features_root"],
            "--stats-root",
            roots["stats_root"],
            "--bases",
            roots["bases_root"],
            "--reduced-root",
            roots["reduced_root"],
            "--variance",
            "0.99",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert committed_report(spark, roots, 1, "2024-01-01")["k"] == 3
    # spark-submit's PythonRunner merges the driver's stderr (our log) into its stdout
    assert "basis 1 fitted (first basis)" in result.stdout
    missing = subprocess.run(
        [
            *common,
            "nightly",
            "--batch",
            "2024-01-02",
            "--features-root",
            roots["features_root"],
            "--stats-root",
            roots["stats_root"],
            "--bases",
            roots["bases_root"],
            "--reduced-root",
            roots["reduced_root"],
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2 and "no committed features for batch 2024-01-02" in missing.stdout


# ---------------------------------------------------------------- real sample


@pytest.fixture(scope="module")
def sample(sample_features) -> pd.DataFrame:
    frame = pd.read_parquet(sample_features).sort_values("path").reset_index(drop=True)
    assert len(frame) == 960
    return frame


def _spark_frame(spark, part: pd.DataFrame):
    part = part.assign(features=part.features.map(lambda vector: vector.astype(float).tolist()))
    return spark.createDataFrame(part[["path", "label", "split", "batch_id", "features"]], FEATURE_SCHEMA)


def _commit_nights(spark, sample, roots, assignment: pd.Series, batches: list[str]) -> None:
    for night, batch in enumerate(batches):
        commit_features(
            spark,
            _spark_frame(spark, sample[assignment == night].assign(batch_id=batch)),
            roots["features_root"],
            batch,
        )


@pytest.mark.shared
@pytest.mark.slow
def test_a_basis_from_merged_statistics_equals_a_direct_fit(spark, sample):
    """(a): three batches' statistics, each aggregated by Spark, merged; against a fit on all rows at once."""
    parts = np.array_split(sample.index.to_numpy(), [300, 650])
    merged = None
    for part in parts:
        merged = pca.merge_stats(merged, pca.batch_stats(_spark_frame(spark, sample.loc[part])))
    from_stats = pca.fit_basis(merged, 1, ["2024-01-01", "2024-01-02", "2024-01-03"], variance=0.95)

    X = np.stack(sample.features.to_numpy()).astype(np.float64)
    spectrum, components = pca.principal_axes(np.cov(X.T))  # direct: two-pass covariance of all rows
    k = pca.choose_k(np.cumsum(spectrum), 0.95)
    assert from_stats.k == k and from_stats.rows_in_basis == 960
    signs = np.sign(np.sum(from_stats.components * components[:, :k], axis=0))
    difference = np.abs(from_stats.components * signs - components[:, :k]).max()
    assert difference <= 1e-6 * np.abs(components[:, :k]).max(), difference
    np.testing.assert_allclose(from_stats.mean, X.mean(0), rtol=1e-12)
    assert np.abs(from_stats.spectrum - spectrum).max() <= 1e-6 * spectrum.max()


@pytest.mark.shared
@pytest.mark.slow
def test_three_nights_share_one_basis_and_keep_1nn(spark, sample, tmp_path):
    """(b): the sample dealt over three nights, every label each night; each night reads its own batch."""
    roots = lake_roots(tmp_path)
    batches = ["2024-01-01", "2024-01-02", "2024-01-03"]
    assignment = night_of(sample, 3)
    _commit_nights(spark, sample, roots, assignment, batches)
    reports = [pca.run_nightly(spark, batch, window=batches[: i + 1], **roots) for i, batch in enumerate(batches)]
    for night, report in enumerate(reports):
        assert report["rows_read"] == int((assignment == night).sum())
        assert report["basis"] == 1 and report["rows_in_basis"] == reports[0]["rows_read"]
    assert [r["new_basis"] for r in reports] == ["first basis", None, None]
    assert reports[2]["drift"]["crossed"] is False and reports[2]["drift"]["captured_share"] > 0.5
    assert reports[2]["drift"]["judged"]  # 312 rows against a basis of 336: judged, and no refit
    reduced = pd.concat(committed_reduced(spark, roots, 1, batch) for batch in batches)
    assert len(reduced) == 960 and reduced.path.is_unique and set(reduced.basis) == {1}
    train, test = reduced[reduced.split == "Training"], reduced[reduced.split == "Test"]
    accuracy = nearest_neighbour_accuracy(
        np.stack(train.pca.to_numpy()), train.label, np.stack(test.pca.to_numpy()), test.label
    )
    print(f"1-NN Training -> Test over three nights on basis 1 (k={reports[0]['k']}): {accuracy:.4f}")
    assert accuracy >= 0.95
    noop = pca.run_reexpress(
        spark,
        batches,
        features_root=roots["features_root"],
        bases_root=roots["bases_root"],
        reduced_root=roots["reduced_root"],
    )
    assert noop["projected"] == [] and noop["already"] == batches


@pytest.mark.shared
@pytest.mark.slow
def test_a_night_of_other_labels_gets_a_new_basis_and_earlier_batches_follow(spark, sample, tmp_path):
    """(c): two nights of 12 labels (324 photos, then 156: too few to judge), then a night of the 12 others."""
    roots = lake_roots(tmp_path)
    batches = ["2024-01-01", "2024-01-02", "2024-01-03"]
    first_labels = sorted(sample.label.unique())[:12]
    assignment = (night_of(sample, 3) == 2).astype(int).where(sample.label.isin(first_labels), 2)
    _commit_nights(spark, sample, roots, assignment, batches)
    reports = [pca.run_nightly(spark, batch, window=batches[: i + 1], **roots) for i, batch in enumerate(batches)]
    assert [r["basis"] for r in reports] == [1, 1, 2]
    assert [r["new_basis"] for r in reports] == ["first basis", None, "drift"]
    drift = reports[2]["drift"]
    print(f"drift of the night of other labels: {drift}; same labels: {reports[1]['drift']}")
    assert drift["crossed"] and drift["captured_share_drop"] > pca.DEFAULT_DRIFT_THRESHOLD
    small = int((assignment == 1).sum())  # 13 photos of each of 12 labels
    assert not reports[1]["drift"]["crossed"] and reports[1]["rows_read"] == small < pca.DEFAULT_MIN_DRIFT_ROWS
    assert reports[1]["drift"]["not_judged"].startswith(f"the batch has {small} rows (<") and drift["judged"]
    assert reports[2]["rows_in_basis"] == sum(r["rows_read"] for r in reports)  # fitted from the window's stats
    assert reports[2]["basis_batches"] == batches
    assert reports[2]["drift_on_basis"]["captured_share_drop"] < drift["captured_share_drop"]

    summary = pca.run_reexpress(
        spark,
        batches,
        features_root=roots["features_root"],
        bases_root=roots["bases_root"],
        reduced_root=roots["reduced_root"],
        stats_root=roots["stats_root"],
    )
    assert summary == {"basis": 2, "projected": batches[:2], "already": batches[2:], "no_features": []}
    for batch in batches:
        on_new = committed_reduced(spark, roots, 2, batch)
        assert set(on_new.basis) == {2} and len(on_new.pca.iloc[0]) == reports[2]["k"]
    for batch in batches[:2]:  # the old basis' outputs stay readable
        on_old = committed_reduced(spark, roots, 1, batch)
        assert set(on_old.basis) == {1} and len(on_old.pca.iloc[0]) == reports[0]["k"]
        assert committed_report(spark, roots, 2, batch)["drift_on_basis"]["basis"] == 2

    # The analysts' matrix of the three nights: basis 2 (current) has them all, basis 1 only two.
    from fruits import matrix
    from fruits.storage import LocalStore

    store = LocalStore(tmp_path / "lake")
    summary = matrix.write_matrix(store, store.root, batches[0], batches[-1], tmp_path / "matrix.csv")
    assert (summary["basis"], summary["k"], summary["rows"]) == (2, reports[2]["k"], 960)
    table = pd.read_csv(tmp_path / "matrix.csv").set_index("path")
    on_new = committed_reduced(spark, roots, 2, batches[0]).set_index("path")
    np.testing.assert_allclose(table.loc[on_new.index, "pc_1"], [v[0] for v in on_new.pca], rtol=1e-6)
    with pytest.raises(matrix.MatrixError, match="2024-01-03 \\(on basis 2\\)"):
        matrix.write_matrix(store, store.root, batches[0], batches[-1], tmp_path / "m1.csv", basis=1)


def test_the_notebook_s_one_call_fit_matches_the_committed_path(spark):
    rows, X = _synthetic()
    features = spark.createDataFrame(rows, FEATURE_SCHEMA)
    assert pca.feature_dimension(features) == (60, 8)
    model, spectrum = pca.fit_pca(features, 8, variance=0.99)
    expected = pca.fit_basis(pca.block_stats(X), 1, [], variance=0.99)
    assert pca.pca_stage(model, "notebook").getK() == expected.k == 3
    np.testing.assert_allclose(spectrum, expected.spectrum, atol=1e-9)
    with pytest.raises(ValueError, match="the features are 8-d, not 4-d"):
        pca.fit_pca(features, 4, k=2)


def test_a_refit_merges_the_window_s_committed_statistics(spark, tmp_path):
    roots = lake_roots(tmp_path)
    parts = [_synthetic(n=40, seed=i, batch=f"2024-01-0{i + 1}", prefix=f"n{i}") for i in range(3)]
    for rows, _ in parts:
        commit_features(spark, spark.createDataFrame(rows, FEATURE_SCHEMA), roots["features_root"], rows[0][3])
    pca.run_nightly(spark, "2024-01-01", k=3, **roots)
    pca.run_nightly(spark, "2024-01-02", mode="project", **roots)
    # 2024-01-05 has no statistics (never run): skipped; 2024-01-03 is this night's
    report = pca.run_nightly(
        spark, "2024-01-03", mode="refit", k=3, window=["2024-01-01", "2024-01-02", "2024-01-05"], **roots
    )
    assert (report["basis"], report["new_basis"], report["rows_in_basis"]) == (2, "refit forced", 120)
    assert report["basis_batches"] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    X = np.concatenate([x for _, x in parts])
    expected = pca.fit_basis(pca.block_stats(X), 2, [], k=3)
    basis = pca.current_basis(jobio.HadoopFiles(spark), roots["bases_root"])
    np.testing.assert_allclose(basis.mean, X.mean(0), rtol=1e-9)
    np.testing.assert_allclose(np.abs(basis.components), np.abs(expected.components), atol=1e-6)
    # an empty committed batch: a clear error, nothing committed
    commit_features(spark, spark.createDataFrame([], FEATURE_SCHEMA), roots["features_root"], "2024-01-04")
    with pytest.raises(pca.NoRows):
        pca.run_nightly(spark, "2024-01-04", **roots)
    assert jobio.read_commit(jobio.HadoopFiles(spark), pca.batch_uri(roots["stats_root"], "2024-01-04")) is None


def test_the_csv_parts_write_formula_cells_as_text_by_the_matrix_command_s_rule(spark, tmp_path):
    import csv

    import pyarrow as pa

    from fruits import matrix

    cells = ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "Apple=Braeburn", " =1 "]
    rows = [
        (f"s3://b/raw/batch=2024-01-01/{i}.jpg" if i else "=cmd|' /C calc'!A0", cell, [0.5, -0.5])
        for i, cell in enumerate(cells)
    ]
    frame = spark.createDataFrame(rows, "path string, label string, pca array<float>")
    pca.write_csv(pca.csv_frame(frame, 2).coalesce(1), str(tmp_path / "csv"))
    (part,) = (tmp_path / "csv").glob("part-*.csv")
    with open(part, newline="") as source:
        written = list(csv.DictReader(source))
    expected = matrix.spreadsheet_text(pa.array(cells)).to_pylist()  # the matrix command's side of the one rule
    assert [row["label"] for row in written] == expected
    assert expected[:6] == ["'" + cell for cell in cells[:6]] and expected[6:] == cells[6:]
    assert written[0]["path"] == "'=cmd|' /C calc'!A0" and written[1]["path"] == rows[1][0]
