"""What a run produced, announced to Airflow: Assets for downstream DAGs, datasets for lineage.

The lake's root (`s3://<bucket>` or a local folder) is a Variable read at run time, and a PCA basis
version exists only once the job fitted it, so no concrete Asset can be written in a DAG file. A run
announces its outputs through three AssetAliases (static names, subscribe to these):

    fruits-features     Asset <root>/features/                 one event per batch featurized by the run
    fruits-pca-reduced  Asset <root>/pca/reduced/basis=<NNNN>/ one event per batch the run committed on the
                                                               current basis (every retained batch on the
                                                               night a new basis is fitted)
    fruits-run-report   Asset <root>/reports/                  one event per run report

Each event's `extra` is what a consumer needs without listing the lake: `batch`, `output` (the folder
that holds the commit marker), `location` (the committed run folder), `files`, the counts the job
committed with (`rows`, ...), and for the PCA `basis`, `k`, `report` (the batch's report.json URI).
The publish task after the run reads them from the commit markers (`fruits.lake.read_commit`): an
output counts as this run's when it was committed after the run took the batch's lock.

Lineage: each lake task's `pre_execute` (`lineage(...)`) declares the lake areas it reads as its
inlets and the areas it writes as runtime outlet assets, on the run's root; the OpenLineage provider
reports both as the task's input and output datasets (docs/operations.md, "Lineage").
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from fruits import lake, storage

log = logging.getLogger(__name__)

FEATURES_ALIAS = "fruits-features"
PCA_REDUCED_ALIAS = "fruits-pca-reduced"
RUN_REPORT_ALIAS = "fruits-run-report"
ALIASES = (FEATURES_ALIAS, PCA_REDUCED_ALIAS, RUN_REPORT_ALIAS)

# The lineage datasets: one per lake area a task reads or writes (a PCA basis is a run-time detail of
# pca/reduced/, carried by the asset events, not a separate dataset).
DATASETS: dict[str, Callable[[str], str]] = {
    "raw": lambda root: lake.area_uri(root, "raw"),
    "derived": lambda root: lake.area_uri(root, lake.DERIVED_AREA),
    "index": lambda root: lake.area_uri(root, "index"),
    "locks": lambda root: lake.area_uri(root, "locks"),
    "code": lambda root: lake.area_uri(root, "code"),
    "models": lake.models_uri,
    "features": lake.features_uri,
    "quarantine": lambda root: lake.area_uri(root, "quarantine"),
    "pca/stats": lake.pca_stats_root,
    "pca/bases": lake.pca_bases_uri,
    "pca/reduced": lake.pca_reduced_root,
    "reports": lambda root: lake.area_uri(root, "reports"),
}

# What each lake task reads and writes (task id, or job kind for the jobs' tasks): (inputs, outputs).
LINEAGE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "lock_batch": ((), ("locks",)),
    "list_landing": (("landing",), ("raw", "code")),  # the listing (raw/batch=<ds>/_ingest/), the code
    "ingest": (("landing", "raw", "index", "code"), ("raw", "index")),
    "sweep_expired_batches": (
        ("locks", "index"),
        ("raw", "derived", "index", "features", "quarantine", "pca/stats", "pca/bases", "pca/reduced", "reports"),
    ),
    "plan_jobs": (("raw", "features", "pca/stats", "pca/bases"), ()),
    "featurize": (("raw", "models", "code"), ("features", "quarantine")),
    "pca": (("features", "pca/stats", "pca/bases", "code"), ("pca/stats", "pca/bases", "pca/reduced")),
    "reexpress": (("features", "pca/stats", "pca/bases", "code"), ("pca/reduced",)),
    "remove_originals": (("raw", "features", "locks"), ("raw",)),
    "report_cost": (("raw", "features", "quarantine", "pca/bases", "pca/reduced"), ("reports",)),
    "publish_assets": (("features", "quarantine", "pca/bases", "pca/reduced", "reports"), ()),
    "unlock_batch": (("locks",), ("locks",)),
}

SUMMARY_PREFIX = "pca_summary"


def dataset_uri(root: str, area: str, landing: str = "") -> str:
    """A lineage dataset's URI on `root` (`landing`: the landing root, outside the lake)."""
    if area == "landing":  # a local folder as open_landing resolves it, or an s3:// prefix
        from fruits.pipeline_tasks import REPO_ROOT

        local = Path(landing)
        return (
            landing if "://" in landing else storage.file_uri(local if local.is_absolute() else REPO_ROOT / local)
        ).rstrip("/") + "/"
    if area not in DATASETS:
        raise ValueError(f"unknown lineage dataset {area!r}: one of {['landing', *DATASETS]}")
    return DATASETS[area](root)


def _asset(uri: str):
    from airflow.sdk import Asset

    return Asset(uri=uri)


def aliases() -> dict[str, Any]:
    """The AssetAlias objects, by name: the outlets of publish_assets, the schedule of a consumer."""
    from airflow.sdk import AssetAlias

    return {name: AssetAlias(name) for name in ALIASES}


# ---------------------------------------------------------------------------------------------
# Lineage: inlets and runtime outlets on the run's root
# ---------------------------------------------------------------------------------------------


def run_of(ti: Any) -> Any:
    """The run check_gdpr established (`pipeline_tasks.Run`: settings + parsed Params), None before it."""
    from fruits import pipeline_tasks

    checked = ti.xcom_pull(task_ids="check_gdpr")
    return pipeline_tasks.Run.from_xcom(checked) if checked else None


def lineage_datasets(kind: str, root: str, landing: str = "") -> tuple[list[str], list[str]]:
    """(input URIs, output URIs) of a lake task; an empty landing is left out."""
    inputs, outputs = LINEAGE[kind]
    return (
        [dataset_uri(root, a, landing) for a in inputs if a != "landing" or landing],
        [dataset_uri(root, a, landing) for a in outputs],
    )


def lineage(kind: str) -> Callable[[Mapping[str, Any]], None]:
    """A task's pre_execute: its inlets become the lake areas it reads, and the areas it writes are
    runtime outlet assets (extra: the batch), both on the run's root. The OpenLineage provider reports
    them as the task's datasets; none is an active Asset, so no DAG is scheduled on them."""
    if kind not in LINEAGE:
        raise ValueError(f"no lineage declared for {kind!r}: one of {list(LINEAGE)}")

    def declare(context: Mapping[str, Any]) -> None:
        run = run_of(context["ti"])
        if run is None:
            return  # the run stopped before check_gdpr: this task is being skipped anyway
        from fruits import pipeline_tasks

        inputs, outputs = lineage_datasets(kind, pipeline_tasks.lake_root(run.settings), run.settings.landing)
        context["task"].inlets = [_asset(uri) for uri in inputs]
        for uri in outputs:
            context["outlet_events"][_asset(uri)].extra = {"batch": run.batch}

    return declare


# ---------------------------------------------------------------------------------------------
# Asset events: what the run committed, from the markers
# ---------------------------------------------------------------------------------------------


def _since(moment: str) -> str:
    """An ISO timestamp at the markers' precision (seconds, UTC), comparable as a string."""
    return dt.datetime.fromisoformat(moment).astimezone(dt.UTC).isoformat(timespec="seconds")


def _committed_since(marker: Mapping[str, Any] | None, since: str) -> bool:
    return bool(marker) and _since(marker["committed_at"]) >= _since(since)


def _marker_extra(batch: str, output: str, marker: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {
        "batch": batch,
        "output": output,
        "location": marker["location"],
        "files": len(marker["files"]),
        "run_id": marker["run_id"],
        "committed_at": marker["committed_at"],
        **{key: marker.get(key) for key in keys},
    }


def run_events(store: Any, root: str, batch: str, work: Mapping[str, Any], since: str) -> list[tuple[str, str, dict]]:
    """(alias, asset URI, extra) for every output this run committed after `since` (when it took the
    batch's lock). Reads the features markers of the batches it featurized, `_current.json`, the
    reduced markers of its nightly batches on the current basis (every re-expressed batch's when the run
    fitted a new basis) and run_report.json: one GET each, a handful on an ordinary night."""
    from fruits import run_report

    events: list[tuple[str, str, dict]] = []
    for other in work.get("featurize", []):
        output = lake.features_uri(root, other)
        marker = lake.read_commit(store, output)
        if _committed_since(marker, since):
            quarantine = lake.read_commit(store, lake.quarantine_uri(root, other)) or {}
            extra = _marker_extra(other, output, marker, ("rows", "seen", "quarantined"))
            events.append(
                (
                    FEATURES_ALIAS,
                    lake.features_uri(root),
                    {**extra, "quarantine": quarantine.get("location"), "metrics": marker.get("metrics")},
                )
            )
    version = run_report.current_basis(store, root)
    if version is not None:
        new_basis = version != work.get("current_basis")
        batches = sorted({*work.get("nightly", []), *(work.get("reexpress", []) if new_basis else [])})
        for other in batches:
            output = lake.pca_reduced_uri(root, version, other)
            marker = lake.read_commit(store, output)
            if _committed_since(marker, since):
                extra = _marker_extra(other, output, marker, ("rows", "k"))
                report = marker["location"] + run_report.PCA_REPORT
                events.append(
                    (
                        PCA_REDUCED_ALIAS,
                        lake.pca_reduced_uri(root, version),
                        {**extra, "basis": version, "new_basis": new_basis, "report": report},
                    )
                )
    reports = lake.reports_uri(root, batch)
    report = run_report.read_json(store, reports + run_report.REPORT_JSON)
    if report and report.get("generated_at") and _since(report["generated_at"]) >= _since(since):
        cost = report.get("cost") or {}
        events.append(
            (
                RUN_REPORT_ALIAS,
                dataset_uri(root, "reports"),
                {
                    "batch": batch,
                    "output": reports,
                    "json": reports + run_report.REPORT_JSON,
                    "markdown": reports + run_report.REPORT_MD,
                    "total_usd": cost.get("total_usd"),
                    "total_eur": cost.get("total_eur"),
                },
            )
        )
    return events


def publish(outlet_events: Any, events: Iterable[tuple[str, str, dict]]) -> None:
    """Add each event to its alias (the task's outlets must hold the aliases, see aliases())."""
    from airflow.sdk import AssetAlias

    for alias, uri, extra in events:
        outlet_events[AssetAlias(alias)].add(_asset(uri), extra=extra)


def publish_run(ti: Any, outlet_events: Any) -> list[dict[str, Any]]:
    """publish_assets' body: the run's committed outputs as asset events; skips when nothing ran."""
    from airflow.sdk.exceptions import AirflowSkipException

    from fruits import pipeline_tasks

    run, lock = run_of(ti), ti.xcom_pull(task_ids="lock_batch")
    work = ti.xcom_pull(task_ids="plan_jobs", key="work")
    if not run or not lock or not work or not ti.xcom_pull(task_ids="plan_jobs", key="run_jobs"):
        raise AirflowSkipException("nothing ran: nothing to announce")
    settings = run.settings
    root = pipeline_tasks.lake_root(settings)
    store = pipeline_tasks.open_lake(settings, pipeline_tasks.lake_client(settings))
    events = run_events(store, root, run.batch, work, lock["acquired_at"])
    publish(outlet_events, events)
    for alias, uri, extra in events:
        log.info("asset event %s -> %s: batch %s, rows %s", alias, uri, extra["batch"], extra.get("rows"))
    return [{"alias": alias, "uri": uri, "extra": extra} for alias, uri, extra in events]


# ---------------------------------------------------------------------------------------------
# The consumer: a summary of a batch's PCA output, refreshed when the output lands
# ---------------------------------------------------------------------------------------------


def summary_uri(root: str, batch: str, version: int) -> str:
    """reports/batch=<ds>/pca_summary-basis=<NNNN>.json: the consumer's summary of one batch on one basis."""
    return lake.reports_uri(root, batch) + f"{SUMMARY_PREFIX}-basis={lake.basis_version_name(version)}.json"


# The 1-NN check on a seeded sample at most this big (test rows x training rows): its distance matrix stays
# at 160 MB however large the night, where all against all grows with its square.
NN_SAMPLE_TEST, NN_SAMPLE_TRAINING = 1_000, 20_000
# Reduced rows read at once: 8,192 x 229 floats is ~15 MB however many rows the night has.
REDUCED_BATCH_ROWS = 8192


def summarize_reduced(store: Any, extra: Mapping[str, Any]) -> dict[str, Any]:
    """A batch on a basis, from the committed Parquet the event names (no listing): rows per label and
    split, each label's centroid on the first two components (Arrow aggregates, no row becomes a Python
    object), and 1-NN Training -> Test accuracy on a seeded sample of at most NN_SAMPLE_TEST x NN_SAMPLE_TRAINING.
    The files are read in record batches, twice: labels and splits (which rows to sample), then the `pca`
    column, of which only the first two components and the sampled rows are kept."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    marker = lake.read_commit(store, extra["output"])
    if marker is None or marker["location"] != extra["location"]:
        raise ValueError(f"{extra['output']} no longer holds the commit {extra['location']} the event named")
    files = [marker["location"] + name for name in marker["files"] if name.endswith(".parquet")]
    batches = [b for b in storage.parquet_batches(store, files, ["label", "split"], REDUCED_BATCH_ROWS) if b.num_rows]
    table = pa.Table.from_batches(batches) if batches else None
    if table is None:
        raise ValueError(f"the committed output {extra['location']} holds no row")
    rng = np.random.default_rng(0)

    def sample(split: str, size: int) -> np.ndarray:
        where = np.flatnonzero(pc.equal(table.column("split"), split).to_numpy(zero_copy_only=False))
        return np.sort(rng.choice(where, size, replace=False)) if len(where) > size else where

    sampled = {"Training": sample("Training", NN_SAMPLE_TRAINING), "Test": sample("Test", NN_SAMPLE_TEST)}
    wanted = np.union1d(sampled["Training"], sampled["Test"])
    first, second, picked, start, k = [], [], [], 0, None
    for record_batch in storage.parquet_batches(store, files, ["pca"], REDUCED_BATCH_ROWS):
        pca = record_batch.column("pca")
        if not len(pca):
            continue
        k = len(pca[0]) if k is None else k
        first.append(pc.list_element(pca, 0))
        second.append(pc.list_element(pca, 1))
        rows = wanted[(wanted >= start) & (wanted < start + len(pca))] - start
        picked.append(pca.take(pa.array(rows, pa.int64())))
        start += len(pca)
    table = table.append_column("c0", pa.chunked_array(first))
    table = table.append_column("c1", pa.chunked_array(second))
    every = pc.CountOptions(mode="all")
    centroids = table.group_by("label").aggregate([("c0", "mean"), ("c1", "mean"), ("label", "count", every)])
    splits = table.group_by(["label", "split"]).aggregate([("label", "count", every)]).to_pylist()
    per_label = {}
    for row in sorted(centroids.to_pylist(), key=lambda r: r["label"] or ""):
        per_label[row["label"]] = {
            "rows": int(row["label_count"]),
            "centroid_2d": [round(float(row["c0_mean"]), 4), round(float(row["c1_mean"]), 4)],
            "splits": {
                r["split"]: int(r["label_count"])
                for r in sorted(splits, key=lambda r: r["split"] or "")
                if r["label"] == row["label"] and r["split"] is not None
            },
        }
    vectors = pc.list_flatten(pa.chunked_array(picked)).to_numpy().reshape(len(wanted), k or 0).astype(np.float64)
    labels = np.array(table.column("label").take(pa.array(wanted, pa.int64())).to_pylist())

    def points(split: str) -> tuple[np.ndarray, np.ndarray]:
        at = np.searchsorted(wanted, sampled[split])
        return vectors[at], labels[at]

    (train, train_labels), (test, test_labels) = points("Training"), points("Test")
    accuracy = None
    if len(train) and len(test):
        # In place, in the same order as a + b - 2ab: two matrices of test x training floats, not five.
        distances = (test**2).sum(axis=1)[:, None] + (train**2).sum(axis=1)[None, :]
        products = test @ train.T
        products *= 2
        distances -= products
        del products
        accuracy = round(float((train_labels[distances.argmin(axis=1)] == test_labels).mean()), 4)
    return {
        "batch": extra["batch"],
        "basis": extra["basis"],
        "source": extra["location"],
        "rows": table.num_rows,
        "k": k,
        "labels": len(per_label),
        "nn_accuracy_training_to_test": accuracy,
        "nn_sample": {"test": len(test), "training": len(train)},
        "per_label": per_label,
    }


def write_summary(store: Any, root: str, summary: Mapping[str, Any]) -> str:
    uri = summary_uri(root, summary["batch"], summary["basis"])
    data = json.dumps(summary, indent=1, sort_keys=True).encode()
    store.put(uri, data, storage.sha256_bytes(data))
    return uri
