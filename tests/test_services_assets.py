"""The consumer DAG runs because the producer ran, with the real services (tests/airflow_services.py).

Not a test module of its own: starting a second PostgreSQL + Airflow stack would double the ~13 min of
tests/test_services_e2e.py. That module wires these in (see the coordinator's note in the assets branch):

    # in its `stack` fixture, beside api.unpause(DAG_ID) (a paused DAG is never queued by an event):
    prepare_consumer(api)

    def test_the_consumer_dag_runs_because_the_producer_ran(stack):
        # after test_rest_api_trigger_with_params_runs_the_local_target (same module, runs in order)
        run_id = next(r["dag_run_id"] for r in stack["api"].dag_runs(DAG_ID) if r["run_type"] == "manual")
        check_consumer_ran(stack["api"], stack["services"], stack["lake"], run_id, "2026-03-01")

The scheduler creates asset-triggered runs in the same loop as cron runs: with
AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=False (the stack's setting, so unpausing starts no nightly run)
it creates neither, and the event stays queued. `check_consumer_ran` then asserts the queue entry the
producer's event made and says so; with the job schedule on it waits for the consumer's run and reads
the summary it wrote.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fruits import assets, lake
from fruits.storage import LocalStore

PRODUCER = "fruits_pipeline"
CONSUMER = "fruits_pca_summary"


def prepare_consumer(api: Any) -> None:
    """Wait for the consumer DAG to be parsed, then unpause it (before any producer run)."""
    api.wait_for_dag(CONSUMER)
    api.unpause(CONSUMER)


def producer_events(api: Any, run_id: str) -> list[dict[str, Any]]:
    """The asset events a producer run emitted, through the REST API."""
    events = api.request(
        "GET", "/assets/events", params={"source_dag_id": PRODUCER, "source_run_id": run_id, "limit": 100}
    )["asset_events"]
    return events


def partitioned_queue(api: Any, dag_id: str) -> list[dict[str, Any]]:
    """The nights a partitioned DAG is queued for (Airflow's UI API: partitioned consumers are not in
    /assets/queuedEvents), each {dag_id, partition_key, state}."""
    response = api.session.get(f"{api.base_url}/ui/partitioned_dag_runs", params={"dag_id": dag_id}, timeout=30)
    response.raise_for_status()
    return [
        {"dag_id": r.get("dag_id", dag_id), "partition_key": r["partition_key"], "state": r.get("state")}
        for r in response.json()["partitioned_dag_runs"]
    ]


def check_consumer_ran(
    api: Any, services: Any, lake_dir: Path, run_id: str, batch: str, timeout: float = 420
) -> dict[str, Any]:
    """The producer run announced its batch on the PCA alias with the extras the consumer needs; the
    consumer was queued by that event and (when the scheduler creates runs) ran and wrote its summary."""
    store = LocalStore(lake_dir)
    root = store.root
    events = producer_events(api, run_id)
    pca = [e for e in events if e["extra"].get("basis") is not None and e["extra"]["batch"] == batch]
    assert pca, f"no PCA asset event for batch {batch} from run {run_id}: {json.dumps(events)[:2000]}"
    extra = pca[0]["extra"]
    assert pca[0]["source_task_id"] == "publish_assets"
    assert pca[0]["uri"].rstrip("/") == lake.pca_reduced_uri(root, extra["basis"]).rstrip("/")
    assert extra["location"] == lake.read_commit(store, extra["output"])["location"]
    features = [e for e in events if e["uri"].rstrip("/") == lake.features_uri(root).rstrip("/")]
    assert features and features[0]["extra"]["batch"] == batch and features[0]["extra"]["rows"] > 0

    summary = Path(assets.summary_uri(root, batch, extra["basis"]).removeprefix("file://"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        services.check_alive()
        runs = [r for r in api.dag_runs(CONSUMER) if r["run_type"] == "asset_triggered"]
        if any(r["state"] == "success" for r in runs) and summary.exists():
            written = json.loads(summary.read_text())
            assert written["rows"] == extra["rows"] and written["source"] == extra["location"]
            return {"consumer_runs": runs, "summary": written}
        assert not any(r["state"] == "failed" for r in runs), api.task_states(CONSUMER, runs[0]["dag_run_id"])
        queued = partitioned_queue(api, CONSUMER)
        if not runs and queued and services.env().get("AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE") == "False":
            # The event queued the consumer for its night; this scheduler creates no run (module docstring).
            assert {(q["dag_id"], q["partition_key"]) for q in queued} >= {(CONSUMER, batch)}
            return {"queued_events": queued}
        time.sleep(3)
    raise TimeoutError(f"{CONSUMER} did not run after the producer's event: runs {api.dag_runs(CONSUMER)}")
