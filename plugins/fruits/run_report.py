"""The run report: what one batch cost and how fast it went, written beside the batch's data.

After the cluster has ended, the DAG's `report_cost` task reads EMR's account of the run
(`collect_cluster_record`: DescribeCluster for the timeline and NormalizedInstanceHours,
ListInstanceFleets for the fleets' types, markets and EBS, ListInstances for which type each instance
really was and how long it lived, ListSteps for the step durations), adds the jobs' own counts read
from their COMMITTED outputs only (the features marker's `metrics`, the quarantine marker's `rows`,
the `report.json` of the batch on the current PCA basis), what the plan caught up, and the estimate
made before the run, and
`build_run_report` bills it all with `fruits.costs` (the estimate's own billing functions, so the two
are comparable). `write_run_report` puts `run_report.json` and `run_report.md` under
`fruits.lake.reports_uri(root, ds)` through the lake's store (S3 with KMS, or the local folder).

The local target gets the same report: cost zero, throughput real.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from fruits import costs, lake, report_page, storage
from fruits.gdpr import check_region
from fruits.settings import TARGETS, PipelineSettings

log = logging.getLogger(__name__)

REPORT_JSON = "run_report.json"
REPORT_MD = "run_report.md"
WORKER_ROLES = ("CORE", "TASK")


# ---------------------------------------------------------------------------------------------
# Reading EMR's account of the run
# ---------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """boto3 answers hold datetimes: ISO strings instead, so the record travels through XCom and JSON."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _all_pages(emr_client: Any, operation: str, key: str, cluster_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in emr_client.get_paginator(operation).paginate(ClusterId=cluster_id):
        items.extend(page.get(key, []))
    return items


def collect_cluster_record(emr_client: Any, cluster_id: str) -> dict[str, Any]:
    """Everything the report needs from EMR about one (ended) cluster, JSON-ready.
    `emr_client`: e.g. the provider's `EmrHook(aws_conn_id=...).conn`."""
    from botocore.exceptions import ClientError

    record = {
        "cluster": emr_client.describe_cluster(ClusterId=cluster_id)["Cluster"],
        "fleets": _all_pages(emr_client, "list_instance_fleets", "InstanceFleets", cluster_id),
        "instances": [],
        "steps": _all_pages(emr_client, "list_steps", "Steps", cluster_id),
    }
    try:
        record["instances"] = _all_pages(emr_client, "list_instances", "Instances", cluster_id)
    except ClientError as error:
        # Only the precision of the bill depends on it: without ListInstances each fleet is priced at
        # its first type (an upper bound), and the report says so.
        if error.response.get("Error", {}).get("Code") not in ("AccessDeniedException", "AccessDenied"):
            raise
        log.warning("ListInstances denied for %s: pricing each fleet at its first instance type", cluster_id)
    return _jsonable(record)


def _when(value: Any) -> datetime | None:
    """A timestamp from boto3 (datetime), JSON (ISO string) or epoch seconds; UTC-aware."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _seconds(start: Any, end: Any) -> float | None:
    start_at, end_at = _when(start), _when(end)
    return None if start_at is None or end_at is None else max(0.0, (end_at - start_at).total_seconds())


def _fleet_ebs_gib(spec: Mapping[str, Any]) -> float:
    """EBS attached to an instance of this fleet type (the data volumes) + the EMR root volume."""
    data = sum(device.get("VolumeSpecification", {}).get("SizeInGB", 0) for device in spec.get("EbsBlockDevices", []))
    return data + costs.EMR_ROOT_VOLUME_GIB


def billed_instances(
    cluster: Mapping[str, Any],
    fleets: Sequence[Mapping[str, Any]],
    instances: Sequence[Mapping[str, Any]] | None,
    *,
    now: datetime,
) -> tuple[list[costs.BilledInstances], bool]:
    """What EMR ran, as billable groups, and whether the instance types had to be assumed.

    With ListInstances: each instance's own type, market and lifetime (exact). Without it: each fleet's
    target capacity, priced at the fleet's first (preferred) type for the cluster's whole lifetime, an
    upper bound, since EMR may have picked another of the fleet's types."""
    timeline = cluster["Status"]["Timeline"]
    cluster_end = timeline.get("EndDateTime") or now
    fleet_by_id = {fleet["Id"]: fleet for fleet in fleets}
    if instances:
        groups: Counter[tuple[str, str, str, float, float]] = Counter()
        for instance in instances:
            fleet = fleet_by_id.get(instance.get("InstanceFleetId", ""), {})
            specs = {s["InstanceType"]: s for s in fleet.get("InstanceTypeSpecifications", [])}
            life = instance.get("Status", {}).get("Timeline", {})
            seconds = _seconds(
                life.get("CreationDateTime") or timeline["CreationDateTime"], life.get("EndDateTime") or cluster_end
            )
            key = (
                fleet.get("InstanceFleetType", "UNKNOWN"),
                instance["InstanceType"],
                instance.get("Market", costs.ON_DEMAND),
                round(seconds or 0.0, 3),
                _fleet_ebs_gib(specs.get(instance["InstanceType"], {})),
            )
            groups[key] += 1
        return [
            costs.BilledInstances(role, itype, market, count, seconds, ebs)
            for (role, itype, market, seconds, ebs), count in sorted(groups.items())
        ], False
    seconds = _seconds(timeline["CreationDateTime"], cluster_end) or 0.0
    groups_from_fleets = []
    for fleet in fleets:
        spec = fleet["InstanceTypeSpecifications"][0]
        weight = spec.get("WeightedCapacity", 1) or 1
        for market, capacity in (
            (costs.ON_DEMAND, fleet.get("TargetOnDemandCapacity", 0)),
            (costs.SPOT, fleet.get("TargetSpotCapacity", 0)),
        ):
            if capacity:
                groups_from_fleets.append(
                    costs.BilledInstances(
                        fleet["InstanceFleetType"],
                        spec["InstanceType"],
                        market,
                        math.ceil(capacity / weight),
                        seconds,
                        _fleet_ebs_gib(spec),
                    )
                )
    return groups_from_fleets, True


def normalized_hours_check(reported: float | None, groups: Sequence[costs.BilledInstances]) -> dict[str, Any]:
    """EMR's NormalizedInstanceHours (each instance's hours rounded UP x the size factor) next to what
    the billed instances imply: a mismatch means EMR ran something else than we priced."""
    expected = sum(
        g.count * math.ceil(max(g.seconds, 1) / costs.SECONDS_PER_HOUR) * costs.normalization_factor(g.instance_type)
        for g in groups
    )
    return {
        "reported": reported,
        "expected_from_instances": expected,
        "consistent": None if reported is None else math.isclose(reported, expected),
    }


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def _step_rows(steps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for step in sorted(steps, key=lambda s: str(s.get("Status", {}).get("Timeline", {}).get("CreationDateTime", ""))):
        timeline = step.get("Status", {}).get("Timeline", {})
        rows.append(
            {
                "id": step.get("Id"),
                "name": step.get("Name", ""),
                "state": step.get("Status", {}).get("State"),
                "seconds": _seconds(timeline.get("StartDateTime"), timeline.get("EndDateTime")),
            }
        )
    return rows


def _step_seconds(rows: Sequence[Mapping[str, Any]], job: str) -> float | None:
    found = [r["seconds"] for r in rows if job in r["name"] and r["seconds"] is not None]
    return sum(found) if found else None


def _ratio(actual: float | None, estimate: float | None) -> float | None:
    return None if not actual or not estimate else round(actual / estimate, 3)


def build_run_report(
    *,
    batch: str,
    target: str,
    job_metrics: Mapping[str, Any] | None,
    cluster: Mapping[str, Any] | None = None,
    steps: Sequence[Mapping[str, Any]] | None = None,
    fleets: Sequence[Mapping[str, Any]] | None = None,
    instances: Sequence[Mapping[str, Any]] | None = None,
    estimate: Mapping[str, Any] | None = None,
    pca_report: Mapping[str, Any] | None = None,
    work: Mapping[str, Any] | None = None,
    region: str = PipelineSettings.region,
    prices: costs.PriceBook | None = None,
    executor_vcpus: int | None = None,
    workload: costs.Workload | None = None,
    generated_at: datetime | None = None,
    airflow_run: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The run report (JSON-ready dict).

    job_metrics: featurize's `_job_metrics.json`, or None when the run failed before featurize finished
    (the cluster still cost money: the report says what, without a throughput);
    cluster/steps/fleets/instances: DescribeCluster's `Cluster`, ListSteps' `Steps`, ListInstanceFleets'
    `InstanceFleets`, ListInstances' `Instances` (`collect_cluster_record` gathers them; target "emr"
    needs cluster and fleets); pca_report: the batch's report.json on its basis; work: the plan's
    reconciliation (fruits.pipeline_tasks.reconcile: batches caught up, PCA nights); estimate: what
    `fruits.costs.estimate_emr` said before the run; executor_vcpus: for the local target (default: this
    machine's CPUs); workload: the S3 side of the run (the batch's bundle count, an S3 landing, bytes,
    months of storage; default: `costs.Workload`'s), its image count replaced by featurize's; airflow_run:
    the DAG run that wrote it (`pipeline_tasks.airflow_run_stamp`: run id, partition key, DAG version)."""
    lake.check_batch(batch)
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
    prices = prices or costs.PriceBook.load()
    now = generated_at or datetime.now(UTC)
    metrics = job_metrics or {}
    seen = int(metrics.get("seen", 0))
    job_seconds = float(metrics["seconds"]) if metrics.get("seconds") else None
    step_rows = _step_rows(steps or [])
    report: dict[str, Any] = {
        "batch": batch,
        "target": target,
        "region": region,
        "generated_at": now.isoformat(timespec="seconds"),
        # False: featurize left no metrics (the run failed); the cost is still the cluster's.
        "complete": job_metrics is not None,
        "images": {k: int(metrics.get(k, 0)) for k in ("seen", "featurized", "quarantined")},
        "steps": step_rows,
        "pca": pca_summary(pca_report),
        "work": None if work is None else {key: work.get(key) for key in WORK_KEYS},
        "cluster": None,
        "prices": prices.stamp,
        "airflow": dict(airflow_run) if airflow_run else None,
    }

    if target == "local":
        vcpus = int(executor_vcpus or metrics.get("executor_vcpus") or os.cpu_count() or 1)
        components = {"ec2": 0.0, "emr": 0.0, "ebs": 0.0, "s3_requests": 0.0, "s3_storage": 0.0}
        report["cost_basis"] = "local target: nothing is billed by AWS (cost zero); throughput measured on this machine"
    else:
        if cluster is None or not fleets:
            raise ValueError(
                "an EMR run report needs the cluster (DescribeCluster) and its fleets (ListInstanceFleets)"
            )
        check_region(region)
        groups, assumed = billed_instances(cluster, fleets, instances, now=now)
        vcpus = int(
            executor_vcpus
            or sum(g.count * costs.instance_facts(g.instance_type).vcpus for g in groups if g.role in WORKER_ROLES)
        )
        # Only the S3 side of the workload matters here (objects, landing, bytes, months kept).
        run_workload = replace(workload or costs.Workload(images=seen, throughput_per_vcpu=1.0), images=seen)
        objects_basis = (
            f"the batch's {run_workload.objects:,} bundles (its manifest)"
            if run_workload.objects_in_batch is not None
            else f"{run_workload.objects:,} objects derived from the image count"
        )
        components = {**costs.instance_costs(groups, region, prices), **costs.s3_costs(run_workload, region, prices)}
        timeline = cluster["Status"]["Timeline"]
        ended = timeline.get("EndDateTime")
        last_step_end = max(
            (
                _when(s["Status"]["Timeline"].get("EndDateTime"))
                for s in (steps or [])
                if s.get("Status", {}).get("Timeline", {}).get("EndDateTime")
            ),
            default=None,
        )
        report["cluster"] = {
            "id": cluster.get("Id"),
            "state": cluster["Status"].get("State"),
            "created": _when(timeline.get("CreationDateTime")).isoformat(),
            "ready": None if not timeline.get("ReadyDateTime") else _when(timeline["ReadyDateTime"]).isoformat(),
            "ended": None if not ended else _when(ended).isoformat(),
            # Not ended yet (terminate was requested moments ago): billed until the report, flagged.
            "provisional": ended is None,
            "wall_s": _seconds(timeline["CreationDateTime"], ended or now),
            "startup_s": _seconds(timeline["CreationDateTime"], timeline.get("ReadyDateTime")),
            "termination_s": None if last_step_end is None else _seconds(last_step_end, ended or now),
            "instances": [
                {
                    "role": g.role,
                    "instance_type": g.instance_type,
                    "market": g.market,
                    "count": g.count,
                    "seconds": round(g.seconds, 1),
                    "ebs_gib": g.ebs_gib,
                }
                for g in groups
            ],
            "instance_types_assumed": assumed,
            "normalized_instance_hours": normalized_hours_check(cluster.get("NormalizedInstanceHours"), groups),
        }
        report["cost_basis"] = (
            "EC2 + EMR per second (60 s minimum) over each instance's lifetime"
            + (
                " (cluster timeline x fleet target capacity, first type of each fleet)"
                if assumed
                else " (ListInstances)"
            )
            + "".join(
                sorted(
                    {
                        f"; {g.instance_type} spot at {prices.spot_price_source(region, g.instance_type)}"
                        for g in groups
                        if g.market == costs.SPOT
                    }
                )
            )
            + f"; EBS prorated per second; S3 requests modelled on {objects_basis}"
            + (" and an S3 landing" if run_workload.landing_on_s3 else "")
            + f"; storage from the image count: {costs.storage_basis(run_workload)}"
        )

    featurize_step_s = _step_seconds(step_rows, "featurize")
    report["throughput"] = {
        "featurize_job_seconds": job_seconds,
        "featurize_step_seconds": featurize_step_s,
        "images_per_second": round(seen / job_seconds, 3) if job_seconds else None,
        "executor_vcpus": vcpus,
        "images_per_second_per_vcpu": round(seen / job_seconds / vcpus, 3) if job_seconds and vcpus else None,
    }
    report["cost"] = costs.summarize(components, seen, prices.eur_per_usd)
    report["estimate"] = None if estimate is None else dict(estimate)
    report["estimate_vs_actual"] = (
        None if estimate is None else _compare_with_estimate(report, estimate, featurize_step_s)
    )
    return report


# What the report keeps of the plan's reconciliation, and of the PCA report (drift figures: every key
# of the job's report that names drift, whatever the job calls them).
WORK_KEYS = ("retained_since", "catch_up", "pca_catch_up", "featurize", "nightly", "reexpress", "current_basis")
PCA_KEYS = ("basis", "mode", "rows_read", "rows_in_basis", "k", "total_explained_variance", "seconds")


def pca_summary(pca_report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if pca_report is None:
        return None
    return {
        **{key: pca_report.get(key) for key in PCA_KEYS},
        **{key: value for key, value in pca_report.items() if "drift" in key},
    }


def _compare_with_estimate(
    report: Mapping[str, Any], estimate: Mapping[str, Any], featurize_step_s: float | None
) -> dict[str, Any]:
    rows = {
        "total_usd": (estimate["cost"]["total_usd"], report["cost"]["total_usd"]),
        "wall_s": (estimate["seconds"].get("wall_s"), (report["cluster"] or {}).get("wall_s")),
        "featurize_s": (estimate["seconds"].get("featurize_s"), featurize_step_s),
        "images_per_second_per_vcpu": (
            estimate.get("throughput_per_vcpu"),
            report["throughput"]["images_per_second_per_vcpu"],
        ),
        "images": (estimate.get("images"), report["images"]["seen"]),
    }
    return {
        name: {"estimate": est, "actual": act, "actual_over_estimate": _ratio(act, est)}
        for name, (est, act) in rows.items()
    }


# ---------------------------------------------------------------------------------------------
# Markdown and writing
# ---------------------------------------------------------------------------------------------


def _minutes(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds / 60:,.1f} min"


def airflow_run_line(airflow_run: Mapping[str, Any]) -> str:
    """`run <id> of <dag> (partition <night>), DAG version <id> [bundle <version>]`: what ran, with which code."""
    bundle = f", bundle version {airflow_run['bundle_version']}" if airflow_run.get("bundle_version") else ""
    return (
        f"run {airflow_run.get('run_id')} of {airflow_run.get('dag_id')} "
        f"(partition {airflow_run.get('partition_key')}), DAG version {airflow_run.get('dag_version_id')}{bundle}"
    )


def render_markdown(report: Mapping[str, Any]) -> str:
    cost, throughput, images = report["cost"], report["throughput"], report["images"]
    per_thousand = cost["per_1000_images_usd"]
    lines = [
        f"# Run report: batch {report['batch']} ({report['target']}, {report['region']})",
        "",
        f"- **Total cost: {cost['total_usd']:.4f} USD** ({cost['total_eur']:.4f} EUR at {cost['eur_per_usd']} EUR/USD)",
        f"- Cost per 1,000 images: {'n/a' if per_thousand is None else f'{per_thousand:.6f} USD'}",
        f"- Images: {images['seen']:,} seen, {images['featurized']:,} featurized, "
        f"{images['quarantined']:,} quarantined",
        f"- Throughput: {throughput['images_per_second']} images/s on {throughput['executor_vcpus']} executor vCPUs = "
        f"**{throughput['images_per_second_per_vcpu']} images/s per vCPU** "
        f"(featurize job, {throughput['featurize_job_seconds']} s)"
        if report["complete"]
        else "- Throughput: none: **the run failed before featurize wrote its metrics**; the cost below is "
        "what the cluster billed anyway",
        f"- Basis: {report['cost_basis']}",
        *([f"- Airflow: {airflow_run_line(report['airflow'])}"] if report.get("airflow") else []),
        "",
        "## Cost",
        "",
        costs.markdown_table(["component", "USD", "EUR"], costs.cost_rows(cost)),
    ]
    cluster = report.get("cluster")
    if cluster:
        lines += [
            "",
            "## Cluster",
            "",
            f"{cluster['id']} {cluster['state']}: created {cluster['created']}, ready {cluster['ready']}, "
            f"ended {cluster['ended'] or '(not yet: billed up to this report)'}; wall {_minutes(cluster['wall_s'])}, "
            f"start-up {_minutes(cluster['startup_s'])}, after the last step {_minutes(cluster['termination_s'])}.",
            "",
            costs.markdown_table(
                ["role", "type", "market", "count", "seconds", "EBS GiB"],
                [tuple(i.values()) for i in cluster["instances"]],
            ),
        ]
        nih = cluster["normalized_instance_hours"]
        lines += [
            "",
            f"NormalizedInstanceHours: EMR reports {nih['reported']}, the instances above imply "
            f"{nih['expected_from_instances']:g} "
            f"({'consistent' if nih['consistent'] else 'MISMATCH: check the fleets'}).",
        ]
        if cluster["instance_types_assumed"]:
            lines.append("Instance types assumed from each fleet's first type (ListInstances was not available).")
    if report["steps"]:
        lines += [
            "",
            "## Steps",
            "",
            costs.markdown_table(
                ["step", "state", "minutes"], [(s["name"], s["state"], _minutes(s["seconds"])) for s in report["steps"]]
            ),
        ]
    work = report.get("work")
    if work:
        listed = {key: ", ".join(work[key]) or "none" for key in ("featurize", "catch_up", "nightly", "pca_catch_up")}
        lines += [
            "",
            (
                f"Batches featurized: {listed['featurize']} (caught up: {listed['catch_up']}); nightly PCA: "
                f"{listed['nightly']} (statistics caught up: {listed['pca_catch_up']}); reexpress over "
                f"{len(work['reexpress'])} retained batches (since {work['retained_since']})."
            ),
        ]
    if report.get("pca"):
        pca = report["pca"]
        drift = {key: value for key, value in pca.items() if "drift" in key}
        lines += [
            "",
            (
                f"PCA on basis {pca['basis']} ({pca['mode']}): read {pca['rows_read']} rows, basis fitted on "
                f"{pca['rows_in_basis']} rows, k={pca['k']}, explained variance "
                f"{pca['total_explained_variance']}, {pca['seconds']} s; drift "
                f"{json.dumps(drift, sort_keys=True) if drift else 'n/a'}."
            ),
        ]
    comparison = report.get("estimate_vs_actual")
    if comparison:
        lines += [
            "",
            "## Estimate vs actual",
            "",
            costs.markdown_table(
                ["", "estimate", "actual", "actual / estimate"],
                [(name, r["estimate"], r["actual"], r["actual_over_estimate"]) for name, r in comparison.items()],
            ),
        ]
    stamp = report["prices"]
    lines += [
        "",
        f"Prices stamped {stamp['stamped']} (values as of {stamp['values_as_of']}). "
        f"Generated {report['generated_at']}.",
        "",
    ]
    return "\n".join(lines)


def write_run_report(report: Mapping[str, Any], reports_dir_uri: str, store: Any) -> list[str]:
    """Write run_report.md then run_report.json (the JSON last: its presence means the report is whole)
    under `reports_dir_uri` (`fruits.lake.reports_uri(root, ds)`), through a `fruits.upload` store
    (S3Store: KMS-encrypted puts; LocalStore: write-then-rename). Returns the URIs written."""
    base = reports_dir_uri.rstrip("/") + "/"
    written = []
    for name, data in (
        (REPORT_MD, render_markdown(report).encode()),
        (REPORT_JSON, json.dumps(report, indent=2, sort_keys=True).encode()),
    ):
        store.put(base + name, data, storage.sha256_bytes(data))
        written.append(base + name)
    return written


def read_json(store: Any, uri: str) -> dict[str, Any] | None:
    """A JSON file through the lake's store; None if absent."""
    data = store.read_or_none(uri)
    return None if data is None else json.loads(data)


# The name of the PCA job's report among the files of a committed reduced output.
PCA_REPORT = "report.json"


def current_basis(store: Any, root: str) -> int | None:
    """The version new batches are projected on (`pca/bases/_current.json`); None before the first fit."""
    current = read_json(store, lake.pca_current_basis_uri(root))
    return None if current is None else int(current["version"])


def job_outputs(store: Any, root: str, batch: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(featurize's metrics, pca's report.json) of one batch, from committed outputs only: the metrics
    the features marker carries, the report the batch's reduced output on the current basis lists.
    None for each that is not committed (a failed run: its report still says what the cluster cost)."""
    features = lake.read_commit(store, lake.features_uri(root, batch))
    metrics = None if features is None else dict(features.get("metrics") or {})
    if metrics is None:
        log.warning("no committed features for batch %s: the run failed before featurize committed", batch)
    version = current_basis(store, root)
    if version is None:
        return metrics, None
    reports = [
        uri
        for uri in lake.committed_files(store, lake.pca_reduced_uri(root, version, batch))
        if uri.rsplit("/", 1)[-1] == PCA_REPORT
    ]
    return metrics, (read_json(store, reports[0]) if reports else None)


def batch_bundles(store: Any, root: str, batch: str) -> int | None:
    """Bundles the batch is stored in, from the manifest the upload wrote (the `bundles_in_batch` that
    upload_new_images returns, read where it lies instead of threaded through XCom); None for a batch
    uploaded before bundles, whose S3 requests are then derived from its image count."""
    return sum(1 for _ in storage.manifest_bundles(store, root, batch)) or None


def report_run(
    store: Any,
    root: str,
    batch: str,
    *,
    target: str,
    region: str,
    emr_client: Any = None,
    cluster_id: str | None = None,
    estimate: Mapping[str, Any] | None = None,
    landing_on_s3: bool = False,
    work: Mapping[str, Any] | None = None,
    airflow_run: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `report_cost` task in one call: read the jobs' outputs and (EMR) the cluster's record, build
    the report, write it to `reports/batch=<ds>/` with its page (fruits.report_page). Returns the report
    (its summary goes to the log). landing_on_s3: the run's landing was an s3:// prefix (its reads are
    billed). The page leaves with its batch (fruits.retention)."""
    metrics, pca = job_outputs(store, root, batch)
    record = collect_cluster_record(emr_client, cluster_id) if target == "emr" else {}
    s3_side = costs.Workload(
        images=0,
        throughput_per_vcpu=1.0,
        objects_in_batch=batch_bundles(store, root, batch),
        landing_on_s3=landing_on_s3,
    )
    report = build_run_report(
        batch=batch,
        target=target,
        job_metrics=metrics,
        pca_report=pca,
        estimate=estimate,
        region=region,
        workload=s3_side,
        work=work,
        airflow_run=airflow_run,
        **record,
    )
    written = write_run_report(report, lake.reports_uri(root, batch), store)
    try:
        written.append(report_page.write_page(store, root, batch, report, pca))
    except Exception:  # the page only shows what is committed and reported: without it, nothing is lost
        log.exception("batch %s: the run report page could not be built (run_report.json|md are written)", batch)
    cost, throughput = report["cost"], report["throughput"]
    log.info(
        "batch %s: %.4f USD (%.4f EUR), %s USD per 1,000 images, %s images/s per vCPU; report at %s",
        batch,
        cost["total_usd"],
        cost["total_eur"],
        cost["per_1000_images_usd"],
        throughput["images_per_second_per_vcpu"],
        written[1],
    )
    return report
