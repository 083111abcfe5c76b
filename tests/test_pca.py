"""spark_jobs/pca.py: pure helpers, the fit against numpy, error cases, atomic output, and the
whole step end-to-end on the real sample's features (from featurize, `sample_features`)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import jobio
import pca
from conftest import REPO_ROOT

FEATURE_SCHEMA = "path string, label string, split string, batch_id string, features array<float>"


# ---------------------------------------------------------------- pure helpers


def test_choose_k_is_the_smallest_k_reaching_the_target():
    cumulative = np.cumsum([0.5, 0.3, 0.15, 0.05])
    assert pca.choose_k(cumulative, 0.5) == 1
    assert pca.choose_k(cumulative, 0.81) == 3
    assert pca.choose_k(cumulative, 0.95) == 3  # 0.95 in float is a hair off: still reached
    assert pca.choose_k(cumulative, 1.0) == 4
    assert pca.choose_k([0.6, 0.9999999999999], 1.0) == 2  # never beyond d


@pytest.mark.parametrize("target", [0.0, -0.1, 1.01])
def test_choose_k_rejects_targets_outside_0_1(target):
    with pytest.raises(ValueError, match="target"):
        pca.choose_k([0.5, 1.0], target)


def test_parse_inputs_splits_strips_and_dedupes():
    assert pca.parse_inputs(" s3://b/features/, s3://b/f/batch=2024-01-01/,s3://b/features/,") == [
        "s3://b/features/", "s3://b/f/batch=2024-01-01/"]
    with pytest.raises(ValueError):
        pca.parse_inputs(" , ")


def test_staging_is_a_hidden_sibling_and_roots_are_refused():
    # `.`-prefixed: hidden from Spark's listing even with a `=` in the name (a `_` one is not).
    assert jobio.staging_uri("s3://b/pca/batch=2024-01-01/", "t") == "s3://b/pca/.batch=2024-01-01.incomplete-t"
    assert jobio.staging_uri("file:///tmp/x", "t") == "file:///tmp/.x.incomplete-t"
    with pytest.raises(ValueError):
        jobio.staging_uri("s3://bucket", "t")


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


def test_plot_is_a_png():
    png = pca.plot_explained_variance([0.5, 0.3, 0.15, 0.05], 3, 0.95)
    assert Image.open(io.BytesIO(png)).format == "PNG"


# ---------------------------------------------------------------- Spark, synthetic features


def _features(spark, rows):
    return spark.createDataFrame(rows, FEATURE_SCHEMA)


def _synthetic(n=60, d=8, batch="2024-01-01", seed=0, prefix="img"):
    """Rows along 3 strong directions + tiny noise: 3 components hold > 99 % of the variance."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)) * [5.0, 3.0, 2.0] @ rng.normal(size=(3, d)) + rng.normal(0, 0.01, (n, d)) + 2.0
    rows = [(f"s3://b/raw/{prefix}_{i}, \"q\".jpg", f"L{i % 3}", "Training", batch, [float(v) for v in x])
            for i, x in enumerate(X.astype(np.float32))]
    return rows, X.astype(np.float32).astype(float)


def _write(spark, rows, uri):
    _features(spark, rows).write.mode("overwrite").parquet(uri)
    return uri


def test_fit_matches_numpy_pca(spark):
    rows, X = _synthetic()
    model, spectrum = pca.fit_pca(_features(spark, rows), 8, variance=0.99)
    centred = X - X.mean(0)
    eigenvalues, vectors = np.linalg.eigh(np.cov(centred.T))
    np.testing.assert_allclose(spectrum, eigenvalues[::-1] / eigenvalues.sum(), atol=1e-6)
    assert model.stages[1].getK() == 3
    projected = np.array(pca.project(model, _features(spark, rows)).orderBy("path").toPandas().pca.tolist())
    expected = centred[np.argsort([r[0] for r in rows])] @ vectors[:, ::-1][:, :3]
    np.testing.assert_allclose(np.abs(projected), np.abs(expected), rtol=1e-4, atol=1e-3)


def test_drop_duplicate_paths_keeps_the_latest_batch(spark):
    rows = [("p1", "A", "Training", "2024-01-01", [1.0]), ("p1", "A", "Training", "2024-01-02", [2.0]),
            ("p2", "B", "Test", "2024-01-01", [3.0])]
    kept = {r.path: r.features for r in pca.drop_duplicate_paths(_features(spark, rows)).collect()}
    assert kept == {"p1": [2.0], "p2": [3.0]}


def test_clear_errors_for_bad_input(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        pca.read_features(spark, [str(tmp_path / "nowhere")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no Parquet"):
        pca.read_features(spark, [str(tmp_path / "empty")])
    spark.createDataFrame([("p", 1.0)], "path string, x double").write.parquet(str(tmp_path / "wrong"))
    with pytest.raises(ValueError, match="missing column 'label'"):
        pca.read_features(spark, [str(tmp_path / "wrong")])
    mixed = _features(spark, [("a", "A", "T", "b", [1.0, 2.0]), ("b", "A", "T", "b", [1.0])])
    with pytest.raises(ValueError, match="different lengths"):
        pca.feature_dimension(mixed)
    with pytest.raises(ValueError, match="no rows"):
        pca.feature_dimension(_features(spark, []))
    with pytest.raises(ValueError, match="k must be between 1 and the feature dimension 8"):
        pca.fit_pca(_features(spark, _synthetic()[0]), 8, k=9)


def test_run_writes_every_output_once_and_csv_is_rfc4180(spark, tmp_path):
    rows, _ = _synthetic()
    root = tmp_path / "lake"
    batch1 = _write(spark, rows, f"{root}/features/batch=2024-01-01")
    out = tmp_path / "pca" / "batch=2024-01-01"
    # the parent folder AND one of its batches: every path must come out once
    report = pca.run_pca(spark, [f"{root}/features", batch1], str(out), k=3)
    assert (report["rows"], report["input_rows"], report["duplicates_dropped"], report["k"]) == (60, 120, 60, 3)
    assert report["mode"] == "fit" and report["cumulative_explained_variance"][-1] > 0.99
    assert json.loads((out / "report.json").read_text()) == report
    with open(out / "pca_matrix.csv", newline="") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["path", "label", "pc_1", "pc_2", "pc_3"]
    assert sorted(r[0] for r in table[1:]) == sorted(r[0] for r in rows)  # commas and quotes survive
    reduced = pd.read_parquet(out / "reduced").set_index("path")
    for line in table[1:]:
        np.testing.assert_allclose([float(v) for v in line[2:]], reduced.loc[line[0], "pca"], rtol=1e-6)
    assert Image.open(out / "explained_variance.png").format == "PNG"
    assert sorted(p.name for p in out.parent.iterdir()) == ["batch=2024-01-01"]  # no staging left

    # A later batch projected on the saved basis: the same photo gets the same coordinates.
    batch2 = _write(spark, rows[:5] + _synthetic(seed=1, batch="2024-01-02", prefix="new")[0],
                    str(tmp_path / "batch2"))
    out2 = tmp_path / "pca" / "batch=2024-01-02"
    again = pca.run_pca(spark, [batch2], str(out2), model_uri=str(out / "model"))
    assert again["mode"] == "project" and again["k"] == 3 and again["model_source"] == str(out / "model")
    reduced2 = pd.read_parquet(out2 / "reduced").set_index("path")
    for path in [r[0] for r in rows[:5]]:
        np.testing.assert_allclose(reduced2.loc[path, "pca"], reduced.loc[path, "pca"], rtol=1e-5, atol=1e-5)

    wrong_d = _write(spark, [(p, l, s, b, f[:4]) for p, l, s, b, f in rows], str(tmp_path / "d4"))
    with pytest.raises(ValueError, match="fitted on 8-d features, the input has 4-d"):
        pca.run_pca(spark, [wrong_d], str(tmp_path / "pca" / "x"), model_uri=str(out / "model"))


def test_a_failed_rerun_leaves_the_previous_output_and_no_staging(spark, tmp_path, monkeypatch):
    rows, _ = _synthetic()
    features = _write(spark, rows, str(tmp_path / "features"))
    out = tmp_path / "pca" / "batch=2024-01-01"
    first = pca.run_pca(spark, [features], str(out), k=2)

    def broken_plot(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pca, "plot_explained_variance", broken_plot)
    with pytest.raises(RuntimeError, match="disk full"):
        pca.run_pca(spark, [features], str(out), k=3)
    assert json.loads((out / "report.json").read_text()) == first  # the old output, whole
    assert sorted(p.name for p in out.parent.iterdir()) == ["batch=2024-01-01"]
    monkeypatch.undo()
    assert pca.run_pca(spark, [features], str(out), k=3)["k"] == 3  # a good rerun replaces it
    assert json.loads((out / "report.json").read_text())["k"] == 3


@pytest.mark.slow
def test_cli_through_spark_submit(spark, tmp_path):
    features = _write(spark, _synthetic()[0], str(tmp_path / "features"))
    out = tmp_path / "pca"
    spark_submit = Path(sys.executable).parent / "spark-submit"
    result = subprocess.run(
        [str(spark_submit), "--master", "local[1]", "--conf", "spark.ui.enabled=false",
         "--py-files", str(REPO_ROOT / "spark_jobs" / "jobio.py"), str(REPO_ROOT / "spark_jobs" / "pca.py"),
         "--input", features, "--output", str(out), "--variance", "0.99"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "report.json").read_text())["k"] == 3
    # spark-submit's PythonRunner merges the driver's stderr (our log) into its stdout
    assert "k=3 components explain" in result.stdout
    bad = subprocess.run([str(spark_submit), str(REPO_ROOT / "spark_jobs" / "pca.py"), "--input", features,
                          "--output", str(out), "--k", "2", "--variance", "0.9"], capture_output=True, text=True)
    assert bad.returncode != 0 and "not allowed with argument" in bad.stdout + bad.stderr


# ---------------------------------------------------------------- real sample, end-to-end


@pytest.mark.shared
@pytest.mark.slow
def test_pca_end_to_end_on_the_real_sample(spark, sample_features, tmp_path):
    out = tmp_path / "pca" / "batch=2024-01-01"
    report = pca.run_pca(spark, [sample_features], str(out))
    features = pd.read_parquet(sample_features)
    X = np.stack(features.features.to_numpy()).astype(float)
    eigenvalues = np.linalg.eigvalsh(np.cov(X.T))[::-1]
    ratio = eigenvalues / eigenvalues.sum()
    expected_k = int(np.searchsorted(np.cumsum(ratio), 0.95) + 1)
    assert report["rows"] == len(features) == 960
    assert report["k"] == expected_k and report["k"] < 1280 // 4
    np.testing.assert_allclose(report["explained_variance"], ratio[:expected_k], atol=1e-6)
    assert report["cumulative_explained_variance"][-1] >= 0.95 > report["cumulative_explained_variance"][-2]
    matrix = pd.read_csv(out / "pca_matrix.csv")
    assert list(matrix.columns) == ["path", "label", *(f"pc_{i}" for i in range(1, expected_k + 1))]
    assert len(matrix) == 960 and matrix.path.is_unique
    # the projection is an orthogonal one: its variance per component is the spectrum
    reduced = np.stack(pd.read_parquet(out / "reduced").pca.to_numpy()).astype(float)
    np.testing.assert_allclose(reduced.var(0, ddof=1), eigenvalues[:expected_k], rtol=1e-3, atol=1e-6)
