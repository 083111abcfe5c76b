"""Quality on the real sample: 1-nearest-neighbour accuracy (Training -> Test) with the PCA
features at the default target is >= 0.95 and within 1 point of the raw 1280-d features.

Euclidean distance: PCA is an orthogonal projection of the centred features, so Euclidean
distances in PCA space are the raw space's minus the dropped 5 % of variance, which makes the
two accuracies directly comparable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import pca

pytestmark = [pytest.mark.shared, pytest.mark.slow]


def nearest_neighbour_accuracy(train: np.ndarray, train_labels, test: np.ndarray, test_labels) -> float:
    squared = (test**2).sum(1)[:, None] - 2 * test @ train.T + (train**2).sum(1)[None, :]
    return float((np.asarray(train_labels)[squared.argmin(1)] == np.asarray(test_labels)).mean())


def _accuracies(features: pd.DataFrame, reduced: pd.DataFrame) -> tuple[float, float]:
    joined = features.merge(reduced[["path", "pca"]], on="path", validate="one_to_one")
    train, test = joined[joined.split == "Training"], joined[joined.split == "Test"]
    assert len(train) == 720 and len(test) == 240

    def stack(frame, column):
        return np.stack(frame[column].to_numpy()).astype(float)

    raw = nearest_neighbour_accuracy(stack(train, "features"), train.label, stack(test, "features"), test.label)
    reduced_accuracy = nearest_neighbour_accuracy(stack(train, "pca"), train.label, stack(test, "pca"), test.label)
    return raw, reduced_accuracy


def test_pca_features_keep_1nn_accuracy(spark, sample_features, tmp_path):
    """What the pipeline delivers: PCA fitted on the whole batch (unsupervised, no labels)."""
    out = tmp_path / "pca"
    report = pca.run_pca(spark, [sample_features], str(out))
    raw, reduced = _accuracies(pd.read_parquet(sample_features), pd.read_parquet(out / "reduced"))
    print(f"1-NN raw 1280-d {raw:.4f}, PCA k={report['k']} {reduced:.4f}")
    assert reduced >= 0.95
    assert reduced >= raw - 0.01


def test_a_basis_fitted_on_training_only_generalises_to_test(spark, sample_features, tmp_path):
    """Stricter: the basis never sees Test photos; they are projected with the saved model,
    as a later batch would be."""
    features = spark.read.parquet(sample_features)
    features.where("split = 'Training'").write.parquet(str(tmp_path / "training"))
    features.where("split = 'Test'").write.parquet(str(tmp_path / "test"))
    fit = pca.run_pca(spark, [str(tmp_path / "training")], str(tmp_path / "pca_training"))
    pca.run_pca(spark, [str(tmp_path / "test")], str(tmp_path / "pca_test"),
                model_uri=str(tmp_path / "pca_training" / "model"))
    reduced = pd.concat([pd.read_parquet(tmp_path / "pca_training" / "reduced"),
                         pd.read_parquet(tmp_path / "pca_test" / "reduced")])
    raw, reduced_accuracy = _accuracies(pd.read_parquet(sample_features), reduced)
    print(f"1-NN raw 1280-d {raw:.4f}, Training-only PCA k={fit['k']} {reduced_accuracy:.4f}")
    assert reduced_accuracy >= 0.95
    assert reduced_accuracy >= raw - 0.01
