"""The local target end to end: `dag.test()` runs the real featurize and PCA jobs through a local
spark-submit on real Fruits-360 photos with the real ImageNet weights, into a lake folder.

A backfill of three dates (three days of arrivals) gives three batch partitions; the third date's PCA
refits on all three; rerunning the second date changes no data and duplicates no row."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fruits import demo, lake, upload

pytestmark = [pytest.mark.slow, pytest.mark.shared]

DATES = ["2026-04-01", "2026-04-02", "2026-04-03"]
LABELS_PER_DAY, PHOTOS_PER_LABEL = 2, 4


@pytest.fixture
def arrivals(tmp_path, sample_dir) -> list[Path]:
    """landing/day<n>/<Label>/<photo>: 2 labels x 4 real photos arriving each day."""
    labels = sorted(p.name for p in (sample_dir / "Training").iterdir())
    days = []
    for day in range(len(DATES)):
        folder = tmp_path / "landing" / f"day{day}"
        for label in labels[day * LABELS_PER_DAY:(day + 1) * LABELS_PER_DAY]:
            (folder / label).mkdir(parents=True)
            for photo in sorted((sample_dir / "Training" / label).glob("*.jpg"))[:PHOTOS_PER_LABEL]:
                shutil.copy(photo, folder / label / photo.name)
        days.append(folder)
    return days


def _files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _rows(folder: Path) -> list[tuple[str, str]]:
    table = pq.read_table(folder, columns=["path", "sha256"]).to_pylist()
    return sorted((row["path"], row["sha256"]) for row in table)


def test_an_empty_landing_ends_the_run_successfully_without_running_a_job(tmp_path, airflow_home, monkeypatch):
    monkeypatch.setenv("FRUITS_TARGET", "local")
    (tmp_path / "nothing_arrived").mkdir()
    lake_dir = tmp_path / "lake"
    dag_run = demo.run_dag("local", DATES[0], {"fruits_local_lake": str(lake_dir),
                                                "fruits_landing": str(tmp_path / "nothing_arrived")})
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert str(dag_run.state) == "success", states
    assert states["stop_if_nothing_to_do"] == "success"
    assert {states[t] for t in ("featurize", "pca", "report_cost", "fail_if_anything_failed")} == {"skipped"}
    assert not (lake_dir / "raw").exists() and not (lake_dir / "features").exists()


def test_backfill_three_dates_then_rerun_one(tmp_path, airflow_home, keras_home, arrivals, monkeypatch):
    monkeypatch.setenv("FRUITS_TARGET", "local")
    lake_dir = tmp_path / "lake"
    root = upload.file_uri(lake_dir)
    variables = {"fruits_local_lake": str(lake_dir), "fruits_landing": str(arrivals[0])}

    def run(batch: str, landing: Path):
        dag_run = demo.run_dag("local", batch, variables, {"landing": str(landing)})
        states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
        assert str(dag_run.state) == "success", states
        return states

    for batch, landing in zip(DATES, arrivals):
        run(batch, landing)

    per_day = LABELS_PER_DAY * PHOTOS_PER_LABEL
    path_of = lambda uri: Path(uri.removeprefix("file://"))  # noqa: E731
    assert sorted(p.name for p in (lake_dir / "features").iterdir()) == [f"batch={d}" for d in DATES]
    for batch, landing in zip(DATES, arrivals):
        features = path_of(lake.features_uri(root, batch))
        table = pq.read_table(features)
        assert table.num_rows == per_day
        assert {len(f) for f in table.column("features").to_pylist()} == {1280}
        expected_labels = {p.name for p in landing.iterdir()}
        assert set(table.column("label").to_pylist()) == expected_labels
        assert set(table.column("batch_id").to_pylist()) == {batch}
        metrics = json.loads((features / "_job_metrics.json").read_text())
        assert (metrics["featurized"], metrics["quarantined"]) == (per_day, 0)

    # The last date's PCA refits on every batch so far: all rows, each photo once.
    pca = path_of(lake.pca_uri(root, DATES[-1]))
    reduced = pq.read_table(pca / "reduced").to_pylist()
    assert len(reduced) == len({row["path"] for row in reduced}) == per_day * len(DATES)
    report = json.loads((pca / "report.json").read_text())
    assert report["rows"] == per_day * len(DATES) and 0 < report["k"] <= per_day * len(DATES)
    with (pca / "pca_matrix.csv").open() as handle:
        matrix = list(csv.reader(handle))
    assert matrix[0] == ["path", "label", *[f"pc_{i}" for i in range(1, report["k"] + 1)]]
    assert len(matrix) - 1 == per_day * len(DATES)
    assert (pca / "explained_variance.png").stat().st_size > 0 and (pca / "model").is_dir()
    # The middle date's PCA saw only the batches up to its own.
    assert json.loads((path_of(lake.pca_uri(root, DATES[1])) / "report.json").read_text())["rows"] == 2 * per_day
    # Each run wrote its report (local target: zero cost, real throughput).
    assert (path_of(lake.reports_uri(root, DATES[0])) / "run_report.json").exists()

    raw_before = _files(lake_dir / "raw")
    features_before = _rows(path_of(lake.features_uri(root, DATES[1])))
    pca_before = sorted(r["path"] for r in pq.read_table(path_of(lake.pca_uri(root, DATES[1])) / "reduced").to_pylist())

    run(DATES[1], arrivals[1])  # rerun of the middle date
    assert _files(lake_dir / "raw") == raw_before
    assert _rows(path_of(lake.features_uri(root, DATES[1]))) == features_before
    pca_after = sorted(r["path"] for r in pq.read_table(path_of(lake.pca_uri(root, DATES[1])) / "reduced").to_pylist())
    assert pca_after == pca_before and len(pca_after) == len(set(pca_after)) == 2 * per_day
