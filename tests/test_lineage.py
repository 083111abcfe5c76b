"""One real local run (real featurize and PCA jobs on real Fruits-360 photos) with the OpenLineage
provider's file transport on: the events show the graph raw -> features -> pca -> reports on the lake's
URIs, the run's asset events carry what the consumer needs, the event queues the consumer DAG
(fruits_pca_summary, scheduled on the alias), and the consumer's summary reads it.

The run is a separate interpreter: the provider registers its listener when Airflow loads the plugins,
once per process, from the configuration it sees then (earlier tests in the session ran without it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from fruits import assets, lake, storage
from fruits.cli import demo

pytestmark = [pytest.mark.slow, pytest.mark.shared]

BATCH = "2026-05-01"
LABELS, TRAINING, TEST = 3, 4, 2

RUN = """
import json, sys
from pathlib import Path
from fruits.cli import demo
home, batch, lake_dir, landing, out = sys.argv[1:]
demo.prepare_airflow(Path(home))
run = demo.run_dag("local", batch, {"fruits_local_lake": lake_dir, "fruits_landing": landing})
from airflow.models.asset import AssetEvent, AssetPartitionDagRun
from airflow.utils.session import create_session
from sqlalchemy import select
with create_session() as session:
    events = [{"uri": e.asset.uri, "aliases": sorted(a.name for a in e.source_aliases), "extra": e.extra,
               "task": e.source_task_id, "partition_key": e.partition_key} for e in session.scalars(select(AssetEvent))]
    # A partitioned consumer is queued per partition (the scheduler creates its run from this row).
    queued = [{"dag_id": q.target_dag_id, "partition_key": q.partition_key}
              for q in session.scalars(select(AssetPartitionDagRun))]
states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
Path(out).write_text(json.dumps({"state": str(run.state), "states": states, "events": events, "queued": queued}))
"""


@pytest.fixture(scope="module")
def lineage_run(tmp_path_factory, sample_dir, publish_models):
    tmp = tmp_path_factory.mktemp("lineage")
    publish_models(tmp / "lake")
    labels = sorted(p.name for p in (sample_dir / "Training").iterdir())[:LABELS]
    for split, count in (("Training", TRAINING), ("Test", TEST)):
        for label in labels:
            folder = tmp / "landing" / BATCH / split / label
            folder.mkdir(parents=True)
            for photo in sorted((sample_dir / split / label).glob("*.jpg"))[:count]:
                shutil.copy(photo, folder / photo.name)
    ol_file = tmp / "openlineage.jsonl"
    env = {
        **os.environ,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(ol_file), "append": True}),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "fruits-test",
        "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "true",  # no fork per event inside dag.test()
        # dag.test() writes every DAG of dags/ to the database: the consumer too, unpaused, so the
        # producer's event queues it as the scheduler would see it.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "FRUITS_TARGET": "local",
    }
    out = tmp / "run.json"
    command = [
        sys.executable,
        "-c",
        RUN,
        str(tmp / "airflow_home"),
        BATCH,
        str(tmp / "lake"),
        str(tmp / "landing"),
        str(out),
    ]
    done = subprocess.run(
        command, check=False, env=env, cwd=demo.REPO_ROOT, capture_output=True, text=True, timeout=1500
    )
    assert done.returncode == 0 and out.exists(), done.stdout[-4000:] + done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["state"] == "success", result["states"]
    result["lineage"] = [json.loads(line) for line in ol_file.read_text().splitlines()]
    result["store"] = storage.LocalStore(tmp / "lake")
    result["landing"] = str((tmp / "landing").resolve())
    return result


def _datasets(entries) -> set[str]:
    return {
        f"{d['namespace']}://{d['name']}" if d["namespace"] == "file" else d["namespace"] + d["name"] for d in entries
    }


def test_openlineage_events_draw_raw_features_pca_reports(lineage_run):
    root = lineage_run["store"].root
    complete = {
        e["job"]["name"].removeprefix("fruits_pipeline."): e
        for e in lineage_run["lineage"]
        if e["eventType"] == "COMPLETE" and e["job"]["name"].startswith("fruits_pipeline.")
    }
    assert {"featurize", "pca", "reexpress", "report_cost", "publish_assets"} <= set(complete)
    edges = {task: (_datasets(e["inputs"]), _datasets(e["outputs"])) for task, e in complete.items()}

    def area(name: str) -> str:
        return assets.dataset_uri(root, name).removeprefix("file://").rstrip("/")

    def uri(path: str) -> str:
        return path.removeprefix("file://").rstrip("/")

    edges = {task: ({uri(d) for d in i}, {uri(d) for d in o}) for task, (i, o) in edges.items()}
    assert area("raw") in edges["featurize"][0] and area("features") in edges["featurize"][1]
    assert area("features") in edges["pca"][0] and area("pca/reduced") in edges["pca"][1]
    assert area("pca/reduced") in edges["report_cost"][0] and area("reports") in edges["report_cost"][1]
    assert lineage_run["landing"] in edges["list_landing"][0] and area("raw") in edges["list_landing"][1]
    assert lineage_run["landing"] in edges["ingest"][0] and area("raw") in edges["ingest"][1]

    # Walking the graph from raw reaches the reports through the tasks' datasets alone.
    reached, frontier = {area("raw")}, [area("raw")]
    while frontier:
        dataset = frontier.pop()
        for inputs, outputs in edges.values():
            if dataset in inputs:
                for new in outputs - reached:
                    reached.add(new)
                    frontier.append(new)
    assert {area("features"), area("pca/reduced"), area("reports")} <= reached
    # The per-basis output the publish task announced is a dataset of the graph too.
    assert uri(lake.pca_reduced_uri(root, 1)) in edges["publish_assets"][1]


def test_the_run_announces_features_pca_and_report_with_their_extras(lineage_run):
    store, root = lineage_run["store"], lineage_run["store"].root
    photos = LABELS * (TRAINING + TEST)
    events = {tuple(e["aliases"]): e for e in lineage_run["events"] if e["aliases"]}
    assert set(events) == {(alias,) for alias in assets.ALIASES}
    features = events[(assets.FEATURES_ALIAS,)]
    marker = lake.read_commit(store, lake.features_uri(root, BATCH))
    assert features["task"] == "publish_assets" and features["uri"].rstrip("/") == lake.features_uri(root).rstrip("/")
    assert features["extra"]["batch"] == BATCH and features["extra"]["rows"] == photos
    assert features["extra"]["location"] == marker["location"]
    pca = events[(assets.PCA_REDUCED_ALIAS,)]
    assert pca["uri"].rstrip("/") == lake.pca_reduced_uri(root, 1).rstrip("/")
    assert (pca["extra"]["batch"], pca["extra"]["basis"], pca["extra"]["rows"]) == (BATCH, 1, photos)
    assert json.loads(store.read(pca["extra"]["report"]))["basis"] == 1
    report = events[(assets.RUN_REPORT_ALIAS,)]["extra"]
    assert json.loads(store.read(report["json"]))["batch"] == BATCH

    # The events carry the night as their partition key, and the partitioned consumer DAG is queued for that
    # night (the scheduler creates its run from this queue) ...
    assert {e["partition_key"] for e in lineage_run["events"] if e["aliases"]} == {BATCH}
    assert {(q["dag_id"], q["partition_key"]) for q in lineage_run["queued"]} == {("fruits_pca_summary", BATCH)}
    # ... and what it does with the event: a summary from the committed rows it names.
    summary = assets.summarize_reduced(store, pca["extra"])
    assert summary["rows"] == photos and summary["labels"] == LABELS
    assert summary["nn_accuracy_training_to_test"] is not None
