"""Fruits! PCA summary: runs when a batch's PCA output lands, not on a clock.

Scheduled on the AssetAlias `fruits-pca-reduced` (fruits.assets), partition by partition: each producer
run's events carry its night as partition key, so one consumer run per night (its `partition_key`; a
backfill's nights each get theirs). Each event of the triggering run names one batch committed on one
basis (its `extra`: batch, basis, output, location, rows, k, report). For each,
it reads only the committed Parquet the event names and writes
`reports/batch=<ds>/pca_summary-basis=<NNNN>.json`: rows per label and split, each label's centroid on
the first two components, 1-NN Training -> Test accuracy on the batch. A model of any consumer: subscribe
to the alias, read the extra, never list the lake (docs/operations.md).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, PartitionedAssetTimetable, Variable, task

from fruits import assets
from fruits import pipeline_tasks as tasks
from fruits.settings import load_settings

with DAG(
    dag_id="fruits_pca_summary",
    # Partitioned: Airflow queues no plain asset-scheduled DAG on an event that has a partition key.
    schedule=PartitionedAssetTimetable(assets=assets.aliases()[assets.PCA_REDUCED_ALIAS]),
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Paris"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "fruits-data", "retries": 0},
    tags=["fruits", "consumer"],
    doc_md=__doc__,
) as dag:

    @task
    def summarize(triggering_asset_events=None) -> list[str]:
        settings = load_settings(Variable.get)
        client = tasks.s3_client(settings) if settings.target == "emr" else None
        store, root = tasks.open_lake(settings, client), tasks.lake_root(settings)
        # An event may be listed under the alias and under its asset: one summary per committed output.
        extras = {
            event.extra["location"]: event.extra for events in triggering_asset_events.values() for event in events
        }
        return [assets.write_summary(store, root, assets.summarize_reduced(store, extra)) for extra in extras.values()]

    summarize()
