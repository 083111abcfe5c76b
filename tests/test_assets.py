"""fruits.assets without Spark: the asset events a run announces (read from the commit markers the jobs'
own writer lays out), the consumer's summary, the lineage table, and both DAG files as the scheduler sees
them. The real run (local target, real jobs, real OpenLineage events) is tests/test_lineage.py."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import time
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import commit_output

from fruits import assets, lake, run_report, steps, storage
from fruits.cli import demo

BATCH, EARLIER = "2026-04-02", "2026-04-01"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _reduced_parquet(rows: list[tuple[str, str, list[float]]]) -> bytes:
    table = pa.table(
        {
            "path": [f"p{i}" for i in range(len(rows))],
            "label": [r[0] for r in rows],
            "split": [r[1] for r in rows],
            "pca": [r[2] for r in rows],
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


ROWS = [
    ("Apple", "Training", [0.0, 0.0, 1.0]),
    ("Apple", "Training", [0.2, 0.0, 1.0]),
    ("Pear", "Training", [5.0, 5.0, 0.0]),
    ("Pear", "Training", [5.2, 5.0, 0.0]),
    ("Apple", "Test", [0.1, 0.1, 1.0]),
    ("Pear", "Test", [4.9, 5.1, 0.0]),
    ("Pear", "Test", [0.1, 0.0, 1.0]),
]


@pytest.fixture
def store(tmp_path):
    return storage.LocalStore(tmp_path / "lake")


def _set_basis(store, version: int) -> None:
    data = json.dumps({"version": version}).encode()
    store.put(lake.pca_current_basis_uri(store.root), data, storage.sha256_bytes(data))


def _commit_reduced(store, version: int, batch: str, rows=ROWS) -> dict:
    return commit_output(
        store,
        lake.pca_reduced_uri(store.root, version, batch),
        {"reduced/part-0.parquet": _reduced_parquet(rows), "report.json": b"{}"},
        {"job": "pca", "batch_id": batch, "basis": version, "rows": len(rows), "k": 3},
    )


def _commit_features(store, batch: str, rows: int) -> dict:
    commit_output(store, lake.quarantine_uri(store.root, batch), {"part-0.parquet": b"q"}, {"rows": 1})
    return commit_output(
        store,
        lake.features_uri(store.root, batch),
        {"part-0.parquet": b"f"},
        {
            "job": "featurize",
            "batch_id": batch,
            "rows": rows,
            "seen": rows + 1,
            "quarantined": 1,
            "metrics": {"featurized": rows},
        },
    )


def _work(**overrides) -> dict:
    return {
        "batch": BATCH,
        "featurize": [BATCH],
        "nightly": [BATCH],
        "reexpress": [EARLIER, BATCH],
        "current_basis": 1,
        **overrides,
    }


def test_an_ordinary_night_announces_its_features_its_batch_on_the_current_basis_and_its_report(store):
    _set_basis(store, 1)
    _commit_reduced(store, 1, EARLIER)  # an earlier night's output on the same basis: not this run's
    since = _now()
    features = _commit_features(store, BATCH, rows=7)
    reduced = _commit_reduced(store, 1, BATCH)
    report = json.dumps({"batch": BATCH, "generated_at": _now(), "cost": {"total_usd": 0.5, "total_eur": 0.4}})
    store.put(lake.reports_uri(store.root, BATCH) + run_report.REPORT_JSON, report.encode(), "-")

    events = assets.run_events(store, store.root, BATCH, _work(), since)

    by_alias = {alias: (uri, extra) for alias, uri, extra in events}
    assert [alias for alias, _, _ in events] == list(assets.ALIASES)  # one each: the earlier night is not re-sent
    uri, extra = by_alias[assets.FEATURES_ALIAS]
    assert uri == lake.features_uri(store.root)
    assert extra["batch"] == BATCH and extra["location"] == features["location"] and extra["files"] == 1
    assert (extra["rows"], extra["seen"], extra["quarantined"]) == (7, 8, 1)
    assert extra["quarantine"] == lake.read_commit(store, lake.quarantine_uri(store.root, BATCH))["location"]
    uri, extra = by_alias[assets.PCA_REDUCED_ALIAS]
    assert uri == lake.pca_reduced_uri(store.root, 1)  # the asset is the basis; the batch is in the extra
    assert (extra["batch"], extra["basis"], extra["rows"], extra["k"], extra["new_basis"]) == (BATCH, 1, 7, 3, False)
    assert extra["output"] == lake.pca_reduced_uri(store.root, 1, BATCH)
    assert extra["report"] == reduced["location"] + "report.json" and store.read(extra["report"]) == b"{}"
    uri, extra = by_alias[assets.RUN_REPORT_ALIAS]
    assert uri == lake.area_uri(store.root, "reports")
    assert json.loads(store.read(extra["json"]))["batch"] == BATCH and extra["total_usd"] == 0.5
    assert extra["markdown"] == lake.reports_uri(store.root, BATCH) + run_report.REPORT_MD
    assert json.loads(json.dumps(events))  # extras travel as JSON


def test_outputs_committed_before_the_run_took_its_lock_are_not_announced(store):
    """A failed run announces only what it committed itself, not what an earlier run left."""
    _set_basis(store, 1)
    _commit_features(store, BATCH, rows=7)
    _commit_reduced(store, 1, BATCH)
    time.sleep(1.1)  # markers are stamped to the second
    assert assets.run_events(store, store.root, BATCH, _work(), _now()) == []


def test_a_new_basis_announces_every_batch_the_run_put_on_it(store):
    _set_basis(store, 2)  # the run started on basis 1 and fitted 2: the reexpress re-projected the others
    since = _now()
    for batch in (EARLIER, BATCH):
        _commit_reduced(store, 2, batch)
    events = assets.run_events(store, store.root, BATCH, _work(featurize=[]), since)
    assert [(uri, e["batch"], e["basis"], e["new_basis"]) for _, uri, e in events] == [
        (lake.pca_reduced_uri(store.root, 2), EARLIER, 2, True),
        (lake.pca_reduced_uri(store.root, 2), BATCH, 2, True),
    ]


def test_the_consumer_summary_reads_only_the_committed_output_the_event_names(store):
    marker = _commit_reduced(store, 1, BATCH)
    # A run folder that was never committed (a failed attempt) is beside it: never read.
    store.put(
        lake.pca_reduced_uri(store.root, 1, BATCH) + "run=dead/reduced/part-0.parquet",
        _reduced_parquet([("Plum", "Test", [9.0, 9.0, 9.0])]),
        "-",
    )
    extra = {
        "batch": BATCH,
        "basis": 1,
        "output": lake.pca_reduced_uri(store.root, 1, BATCH),
        "location": marker["location"],
    }
    summary = assets.summarize_reduced(store, extra)
    assert (summary["rows"], summary["k"], summary["labels"]) == (7, 3, 2)
    assert summary["per_label"]["Pear"]["splits"] == {"Test": 2, "Training": 2}
    assert summary["per_label"]["Apple"]["centroid_2d"] == pytest.approx([0.1, 1 / 30], abs=1e-4)
    assert summary["nn_accuracy_training_to_test"] == pytest.approx(2 / 3, abs=1e-4)  # one Pear sits among Apples
    uri = assets.write_summary(store, store.root, summary)
    assert uri == lake.reports_uri(store.root, BATCH) + "pca_summary-basis=0001.json"
    assert json.loads(store.read(uri)) == summary

    assert summary["nn_sample"] == {"test": 3, "training": 4}  # all of them: under the sample's bounds
    # A big night's 1-NN runs on a seeded sample (its distance matrix bounded), said in the summary.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(assets, "NN_SAMPLE_TEST", 2)
        patch.setattr(assets, "NN_SAMPLE_TRAINING", 3)
        sampled = assets.summarize_reduced(store, extra)
    assert sampled["nn_sample"] == {"test": 2, "training": 3} and sampled["rows"] == 7
    assert sampled["nn_accuracy_training_to_test"] in (0.0, 0.5, 1.0) and sampled == assets.summarize_reduced(
        store, extra
    ) | {
        "nn_sample": {"test": 2, "training": 3},
        "nn_accuracy_training_to_test": sampled["nn_accuracy_training_to_test"],
    }

    # An event whose commit has since been replaced is refused, not summarized from the new one.
    _commit_reduced(store, 1, BATCH)
    with pytest.raises(ValueError, match="no longer holds the commit"):
        assets.summarize_reduced(store, extra)


def test_lineage_goes_raw_features_pca_reports_on_the_lake_areas():
    root = "s3://fruits-lake-eu-west-3"
    edges = {}
    for kind in assets.LINEAGE:
        inputs, outputs = assets.lineage_datasets(kind, root, "s3://landing-eu/in")
        edges[kind] = (set(inputs), set(outputs))
    assert lake.raw_uri(root, BATCH).startswith(assets.dataset_uri(root, "raw"))
    path = [assets.dataset_uri(root, a) for a in ("raw", "features", "pca/reduced", "reports")]
    for (source, target), kind in zip(itertools.pairwise(path), ("featurize", "pca", "report_cost")):
        assert source in edges[kind][0] and target in edges[kind][1], kind
    assert edges["list_landing"][0] >= {"s3://landing-eu/in/"} and edges["ingest"][0] >= {"s3://landing-eu/in/"}
    assert (
        assets.dataset_uri(root, "raw") in edges["ingest"][1]
        and assets.dataset_uri(root, "raw") in edges["featurize"][0]
    )
    assert "s3://landing-eu/in/" not in assets.lineage_datasets("list_landing", root)[0]  # no landing set
    assert assets.dataset_uri(root, "landing", "landing/in") == storage.file_uri(demo.REPO_ROOT / "landing/in") + "/"
    assert set(steps.JOB_KINDS) <= set(assets.LINEAGE)
    with pytest.raises(ValueError, match="unknown lineage dataset"):
        assets.dataset_uri(root, "pca")


@pytest.mark.parametrize("target", ["emr", "local"])
def test_the_pipeline_declares_lineage_on_every_lake_task_and_publishes_the_aliases(airflow_home, monkeypatch, target):
    monkeypatch.setenv("FRUITS_TARGET", target)
    dag = demo.load_dag(target)
    lake_tasks = {
        "lock_batch",
        "list_landing",
        "sweep_expired_batches",
        "plan_jobs",
        "remove_originals",
        "report_cost",
        "unlock_batch",
        "publish_assets",
        *((f"add_{k}_step" for k in steps.JOB_KINDS) if target == "emr" else steps.JOB_KINDS),
    }
    for task_id in lake_tasks:
        assert dag.task_dict[task_id]._pre_execute_hook is not None, task_id
    publish = dag.task_dict["publish_assets"]
    assert {o.name for o in publish.outlets} == set(assets.ALIASES)
    assert "report_cost" in publish.upstream_task_ids
    assert publish.is_teardown and publish.trigger_rule == "all_done_setup_success"  # runs whatever happened
    if target == "emr":  # off unless [openlineage] spark_inject_parent_job_info is on (docs/operations.md)
        assert not any(dag.task_dict[f"add_{k}_step"].openlineage_inject_parent_job_info for k in steps.JOB_KINDS)


def test_the_provider_injects_the_parent_job_into_the_pipelines_spark_submit_steps():
    """EmrAddStepsOperator injects `--conf spark.openlineage.parent...` into command-runner spark-submit
    steps only: the pipeline's steps are of that shape, so the injection reaches them."""
    from airflow.providers.amazon.aws.operators.emr import EmrAddStepsOperator

    job = steps.featurize_job("s3://fruits-lake-eu-west-3", BATCH, "s3://fruits-lake-eu-west-3/code/abc/")
    step = steps.emr_step(job, batch=BATCH)
    operator = EmrAddStepsOperator(
        task_id="add_featurize_step", job_flow_id="j-1", steps=[step], openlineage_inject_parent_job_info=True
    )
    parent = {
        "spark.openlineage.parentJobName": "fruits_pipeline.add_featurize_step",
        "spark.openlineage.parentRunId": "019b-run",
    }
    with mock.patch(
        "airflow.providers.amazon.aws.operators.emr.inject_parent_job_information_into_spark_properties",
        return_value=parent,
    ):
        [injected] = operator._inject_openlineage_parent_job_information([step], context={})
    args = injected["HadoopJarStep"]["Args"]
    assert args[:5] == [
        "spark-submit",
        "--conf",
        "spark.openlineage.parentJobName=fruits_pipeline.add_featurize_step",
        "--conf",
        "spark.openlineage.parentRunId=019b-run",
    ]
    assert args[5:] == step["HadoopJarStep"]["Args"][1:]  # the job's own arguments unchanged


def test_the_consumer_dag_is_scheduled_on_the_pca_alias_and_parses_without_variables(airflow_home):
    from airflow.dag_processing.dagbag import DagBag

    with mock.patch("airflow.sdk.Variable.get", side_effect=AssertionError("Variable read at parse time")):
        bag = DagBag(dag_folder=str(demo.REPO_ROOT / "dags" / "fruits_pca_summary.py"))
    assert not bag.import_errors
    dag = bag.get_dag("fruits_pca_summary")
    condition = dag.timetable.asset_condition
    assert (type(condition).__name__, condition.name) == ("AssetAlias", assets.PCA_REDUCED_ALIAS)
    # Partition-aware: the producer's events carry its night, and Airflow queues only partitioned DAGs on them.
    from airflow.serialization.serialized_objects import DagSerialization

    scheduler_view = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag)).timetable
    assert scheduler_view.partitioned
    assert scheduler_view.get_partition_mapper(name="n", uri="s3://b/pca/reduced/").to_downstream("2026-03-01") == (
        "2026-03-01"
    )


def test_the_consumer_summary_streams_the_reduced_files_and_matches_numpy_over_the_whole_table(store):
    # Three files of several row groups, read a few rows at a time, sampled: the summary is what numpy gives
    # over the whole table, and no file is ever read whole.
    rng = np.random.default_rng(7)
    labels = np.array(["Apple", "Pear", "Plum", "Kiwi"])[rng.integers(0, 4, 300)]
    splits = np.where(rng.random(300) < 0.7, "Training", "Test")
    points = rng.normal(size=(300, 5)) + 3.0 * (labels == "Pear")[:, None]
    files = {}
    for part, rows in enumerate(np.array_split(np.arange(300), 3)):
        table = pa.table({"label": labels[rows], "split": splits[rows], "pca": points[rows].tolist()})
        sink = io.BytesIO()
        pq.write_table(table, sink, row_group_size=40)
        files[f"reduced/part-{part}.parquet"] = sink.getvalue()
    marker = commit_output(
        store, lake.pca_reduced_uri(store.root, 1, BATCH), files, {"job": "pca", "batch_id": BATCH, "k": 5}
    )
    extra = {"batch": BATCH, "basis": 1, "output": lake.pca_reduced_uri(store.root, 1, BATCH)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(assets, "REDUCED_BATCH_ROWS", 7)
        patch.setattr(assets, "NN_SAMPLE_TEST", 20)
        patch.setattr(assets, "NN_SAMPLE_TRAINING", 50)
        patch.setattr(store, "read", mock.Mock(side_effect=AssertionError("a reduced file read whole")))
        summary = assets.summarize_reduced(store, extra | {"location": marker["location"]})

    sample = np.random.default_rng(0)  # the summary's seed: Training's sample drawn first, then Test's
    train = np.sort(sample.choice(np.flatnonzero(splits == "Training"), 50, replace=False))
    test = np.sort(sample.choice(np.flatnonzero(splits == "Test"), 20, replace=False))
    distances = ((points[test][:, None, :] - points[train][None, :, :]) ** 2).sum(axis=2)
    accuracy = round(float((labels[train][distances.argmin(axis=1)] == labels[test]).mean()), 4)
    assert (summary["rows"], summary["k"], summary["labels"]) == (300, 5, 4)
    assert summary["nn_sample"] == {"test": 20, "training": 50}
    assert summary["nn_accuracy_training_to_test"] == accuracy
    for label in ("Apple", "Kiwi", "Pear", "Plum"):
        mine = labels == label
        assert summary["per_label"][label] == {
            "rows": int(mine.sum()),
            "centroid_2d": [round(float(points[mine, 0].mean()), 4), round(float(points[mine, 1].mean()), 4)],
            "splits": {s: int(n) for s in ("Test", "Training") if (n := (mine & (splits == s)).sum())},
        }
