"""The local target end to end: `dag.test()` runs the real featurize and PCA jobs through a local
spark-submit on real Fruits-360 photos with the real ImageNet weights, into a lake folder.

A backfill of two nights (the same labels each night, Training and Test photos, landing/<date>/): two
committed feature batches and statistics, both nights on one basis (the first fits it, the second is
projected on it and reads only its own batch), and 1-NN Training -> Test on the reduced rows of both nights
together is >= 0.95; rerunning the second night changes no photo and duplicates no row. Two nights prove
all of it: a third added four minutes and no behaviour.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fruits import lake, retention, storage
from fruits.cli import demo

pytestmark = [pytest.mark.slow, pytest.mark.shared]

DATES = ["2026-04-01", "2026-04-02"]
LABELS, TRAINING_PER_NIGHT, TEST_PER_NIGHT = 6, 8, 3


@pytest.fixture
def landing(tmp_path, sample_dir) -> Path:
    """landing/<date>/<Split>/<Label>/<photo>: the same 6 labels each night, different photos."""
    labels = sorted(p.name for p in (sample_dir / "Training").iterdir())[:LABELS]
    for split, per_night in (("Training", TRAINING_PER_NIGHT), ("Test", TEST_PER_NIGHT)):
        for label in labels:
            photos = sorted((sample_dir / split / label).glob("*.jpg"))
            for night, date in enumerate(DATES):
                folder = tmp_path / "landing" / date / split / label
                folder.mkdir(parents=True)
                for photo in photos[night * per_night : (night + 1) * per_night]:
                    shutil.copy(photo, folder / photo.name)
    return tmp_path / "landing"


def _files(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _table(store, output: str):
    """The rows of a committed output (only the files its marker names)."""
    files = [uri.removeprefix("file://") for uri in lake.committed_files(store, output) if uri.endswith(".parquet")]
    return pq.read_table(files, partitioning=None)  # the files' own columns, not the path's basis=/batch=


def test_an_empty_landing_ends_the_run_successfully_without_running_a_job(tmp_path, airflow_home, monkeypatch):
    monkeypatch.setenv("FRUITS_TARGET", "local")
    (tmp_path / "nothing_arrived").mkdir()
    lake_dir = tmp_path / "lake"
    dag_run = demo.run_dag(
        "local", DATES[0], {"fruits_local_lake": str(lake_dir)}, {"landing": str(tmp_path / "nothing_arrived")}
    )
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert str(dag_run.state) == "success", states
    assert states["stop_if_nothing_to_do"] == "success" and states["unlock_batch"] == "success"
    assert {states[t] for t in ("featurize", "pca", "reexpress", "report_cost")} == {"skipped"}
    assert not (lake_dir / "raw").exists() and not (lake_dir / "features").exists()


def test_backfill_nights_share_one_basis_then_rerun_one(tmp_path, airflow_home, publish_models, landing, monkeypatch):
    monkeypatch.setenv("FRUITS_TARGET", "local")
    lake_dir = tmp_path / "lake"
    models = publish_models(lake_dir)  # as the release command does before the first night
    store = storage.LocalStore(lake_dir)
    root = store.root
    variables = {"fruits_local_lake": str(lake_dir), "fruits_landing": str(landing)}

    def run(batch: str):
        dag_run = demo.run_dag("local", batch, variables)
        states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
        assert str(dag_run.state) == "success", states
        return states

    for batch in DATES:
        run(batch)

    per_night = LABELS * (TRAINING_PER_NIGHT + TEST_PER_NIGHT)
    for batch in DATES:
        marker = lake.read_commit(store, lake.features_uri(root, batch))
        assert marker["rows"] == per_night and marker["metrics"]["quarantined"] == 0
        table = _table(store, lake.features_uri(root, batch))
        assert table.num_rows == per_night and set(table.column("batch_id").to_pylist()) == {batch}
        assert {len(f) for f in table.column("features").to_pylist()} == {1280}
        assert lake.read_commit(store, lake.pca_stats_uri(root, batch)) is not None

    # All nights share ONE basis: the first night fits it, the next ones (same labels, 66 photos: too few
    # rows to judge drift, pca --min-drift-rows) are projected on it.
    version = json.loads((lake_dir / "pca/bases/_current.json").read_text())["version"]
    reduced, reports = [], []
    for batch in DATES:
        output = lake.pca_reduced_uri(root, version, batch)
        report_uri = next(uri for uri in lake.committed_files(store, output) if uri.endswith("/report.json"))
        reports.append(json.loads(store.read(report_uri)))
        reduced += _table(store, output).to_pylist()
    assert [r["basis"] for r in reports] == [version] * len(DATES)
    assert version == 1 and [r["new_basis"] for r in reports] == ["first basis"] + [None] * (len(DATES) - 1)
    assert reports[-1]["rows_read"] == per_night  # the last night read only its own batch
    assert len(reduced) == len({row["path"] for row in reduced}) == per_night * len(DATES)
    assert {row["basis"] for row in reduced} == {version}

    # 1-NN Training -> Test on the reduced rows of all nights together.
    train = [r for r in reduced if r["split"] == "Training"]
    test = [r for r in reduced if r["split"] == "Test"]
    train_x, test_x = np.array([r["pca"] for r in train]), np.array([r["pca"] for r in test])
    nearest = ((test_x[:, None, :] - train_x[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
    accuracy = np.mean([train[i]["label"] == r["label"] for i, r in zip(nearest, test)])
    assert accuracy >= 0.95, accuracy

    # Every night broadcast the published payload: no run converted the weights again.
    for batch in DATES:
        metrics = lake.read_commit(store, lake.features_uri(root, batch))["metrics"]
        assert (metrics["weights_sha256"], metrics["model_payload"]) == (
            models["weights_sha256"],
            models["model_payload"],
        )

    # Each run wrote its report (local target: zero cost, real throughput), with the basis it used.
    run_report = json.loads((lake_dir / f"reports/batch={DATES[-1]}/run_report.json").read_text())
    assert run_report["pca"]["basis"] == version and run_report["work"]["catch_up"] == []

    # The stripped originals went with their run (fruits_original_retention_days 0, the default): raw/ keeps the
    # manifest and the reports, derived/ one derivative a photo; the run's page was drawn before they went.
    for batch in DATES:
        assert not retention.original_bundles(store, root, batch)
        assert storage.manifest_photo_count(store, root, batch) == per_night
        assert _table(store, lake.derived_uri(root, batch)).num_rows == per_night
    assert "data:image/jpeg" in (lake_dir / f"reports/batch={DATES[-1]}/run_report.html").read_text()

    raw_before = _files(lake_dir / "raw")
    rows_before = sorted(r["path"] for r in _table(store, lake.features_uri(root, DATES[1])).to_pylist())
    run(DATES[1])  # rerun of the last night
    assert _files(lake_dir / "raw") == raw_before
    assert sorted(r["path"] for r in _table(store, lake.features_uri(root, DATES[1])).to_pylist()) == rows_before
    version = json.loads((lake_dir / "pca/bases/_current.json").read_text())["version"]
    after = sorted(r["path"] for r in _table(store, lake.pca_reduced_uri(root, version, DATES[1])).to_pylist())
    assert after == sorted(set(after)) and len(after) == per_night
