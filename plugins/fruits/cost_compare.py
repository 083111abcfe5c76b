"""What the cost model compares, behind docs/costs.md and `make cost`: the alternatives to a transient EMR
cluster (EMR Serverless, one large instance) and their break-evens, the optimizations chosen against the ones
not made, right-sizing, the bill of a year against issue 11's targets, and the text tables the command prints.

The run-time model (billing rules, prices, the estimate the DAG makes) is `fruits.costs`; the command is
`python -m fruits.cli.costs`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from fruits.costs import (
    AIRFLOW_HOST_TYPE,
    BUDGET_MARGIN,
    NETWORK_PATHS,
    ON_DEMAND,
    OUTPUT_OBJECT_BYTES,
    RETENTION_DAYS,
    SECONDS_PER_HOUR,
    SPOT,
    THROUGHPUT_FILE,
    BilledInstances,
    Overheads,
    PriceBook,
    Workload,
    billed_seconds,
    cost_rows,
    emr_instances,
    estimate_emr,
    featurize_output_files,
    fleet_markets,
    instance_costs,
    instance_facts,
    job_seconds,
    markdown_table,
    monthly_budget_usd,
    night_workload,
    originals_seconds,
    run_sizing,
    s3_costs,
    steady_state_month,
    storage_basis,
    summarize,
)
from fruits.emr_cluster import ClusterSizing, worker_vcpus
from fruits.gdpr import check_region

# The issue's target: a nightly batch of one million images, all-in, on spot capacity.
TARGET_USD_PER_MILLION = 0.50
# Issue 11's targets: processing (compute + requests) per million on night 365 within 5 % of night 1 and
# at most this; the steady-state month at 1 M Fruits-360-size photos a night, eu-west-3, at most this.
TARGET_PROCESSING_USD_PER_MILLION = 0.35
TARGET_NIGHT_DRIFT = 0.05
TARGET_MONTHLY_USD = 100.0
# Issue 22's targets, by photo mix: processing per million photos, the pipeline's steady-state month (the app's
# uploads apart), the night's wall time on the default sizing.
PHOTO_MIX_TARGETS = {
    "phone": {"processing_usd_per_million": 1.00, "monthly_usd_pipeline": 250.0, "wall_minutes": 120.0},
    "thumbnail": {"processing_usd_per_million": 0.30},
}


def textbook_throughput(path: Path = THROUGHPUT_FILE) -> float | None:
    """images/s per vCPU of the benchmark's textbook approach (Keras `predict` in a pandas UDF), the
    inference runtime we did not choose; None until the benchmark has run."""
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    textbook = result.get("textbook_pandas_udf_keras") or {}
    if not textbook.get("images_per_second") or not result.get("cores"):
        return None
    return float(textbook["images_per_second"]) / float(result["cores"])


# EMR Serverless bills each worker's vCPU-hours and GB-hours per second (60 s minimum), from the
# moment it starts until it is released: no cluster start-up or bootstrap (dependencies come in a
# custom image), but a higher rate and ~1 min of worker start per job. 4 vCPU / 16 GB workers (the
# default size), one driver per job; the first 20 GB of storage per worker are free.
SERVERLESS_WORKER = {"vcpu": 4, "memory_gb": 16}
SERVERLESS_JOB_START_S = 60.0


def estimate_emr_serverless(
    workload: Workload,
    *,
    vcpus: int,
    architecture: str,
    region: str,
    prices: PriceBook,
    overheads: Overheads = Overheads(),
) -> dict[str, Any]:
    check_region(region)
    steps = job_seconds(workload, vcpus, overheads)  # its workers' bandwidth is not published: no network bound
    rate = prices.region(region)["emr_serverless"][architecture]
    workers = math.ceil(vcpus / SERVERLESS_WORKER["vcpu"]) + 1  # executors + the driver
    worker_hour = SERVERLESS_WORKER["vcpu"] * rate["vcpu_hour"] + SERVERLESS_WORKER["memory_gb"] * rate["gb_hour"]
    compute = sum(
        workers * billed_seconds(SERVERLESS_JOB_START_S + seconds) / SECONDS_PER_HOUR * worker_hour
        for seconds in steps.values()
    )
    wall = {
        **{k: round(v + SERVERLESS_JOB_START_S, 1) for k, v in steps.items()},
        "wall_s": round(sum(steps.values()) + len(steps) * SERVERLESS_JOB_START_S, 1),
    }
    components = {"emr_serverless": compute, **s3_costs(workload, region, prices, originals_seconds(wall))}
    return {
        "kind": "emr_serverless",
        "region": region,
        "images": workload.images,
        "executor_vcpus": vcpus,
        "seconds": wall,
        "cost": summarize(components, workload.images, prices.eur_per_usd),
    }


# One large instance running both jobs with Spark in local mode, no EMR: launch + OS ~60 s, a
# pre-baked AMI (or ~2 min of pip install) and the jobs; 64 GiB gp3 for the lake's scratch.
SINGLE_INSTANCE_SETUP_S = 180.0
SINGLE_INSTANCE_EBS_GIB = 64 + 8


def estimate_single_instance(
    workload: Workload,
    *,
    instance_type: str,
    region: str,
    prices: PriceBook,
    market: str = ON_DEMAND,
    overheads: Overheads = Overheads(),
) -> dict[str, Any]:
    check_region(region)
    facts = instance_facts(instance_type)
    vcpus = facts.vcpus
    steps = job_seconds(workload, vcpus, overheads, facts.network_gbps and facts.network_gbps * 1e9 / 8)
    seconds = SINGLE_INSTANCE_SETUP_S + sum(steps.values()) + overheads.termination_s
    instances = [BilledInstances("SINGLE", instance_type, market, 1, seconds, SINGLE_INSTANCE_EBS_GIB, emr=False)]
    wall = {**{k: round(v, 1) for k, v in steps.items()}, "wall_s": round(seconds, 1)}
    components = {
        **instance_costs(instances, region, prices),
        **s3_costs(workload, region, prices, originals_seconds(wall)),
    }
    return {
        "kind": "single_instance",
        "region": region,
        "instance_type": instance_type,
        "market": market,
        "images": workload.images,
        "executor_vcpus": vcpus,
        "seconds": wall,
        "cost": summarize(components, workload.images, prices.eur_per_usd),
    }


def break_even(
    cost_a: Callable[[int], float], cost_b: Callable[[int], float], *, low: int = 1000, high: int = 1_000_000_000
) -> int | None:
    """The image count where two options cost the same (bisection; the costs are monotonic in the
    count and cross at most once), or None when one is cheaper over the whole range."""
    diff_low, diff_high = cost_a(low) - cost_b(low), cost_a(high) - cost_b(high)
    if diff_low == 0:
        return low
    if (diff_low > 0) == (diff_high > 0):
        return None
    while high - low > max(1, low // 1000):
        middle = (low + high) // 2
        if (cost_a(middle) - cost_b(middle) > 0) == (diff_low > 0):
            low = middle
        else:
            high = middle
    return high


# ---------------------------------------------------------------------------------------------
# Comparisons for docs/costs.md
# ---------------------------------------------------------------------------------------------


def layouts(workload: Workload) -> tuple[Workload, Workload]:
    """The workload with its photos in bundles (as given, or the upload's default size when it was priced
    one object per photo), and the same photos one object each: the two layouts compared."""
    bundled = replace(workload, images_per_object=None) if workload.one_object_per_photo else workload
    return bundled, replace(bundled, images_per_object=1, objects_in_batch=None)


def optimization_table(
    workload: Workload,
    sizing: ClusterSizing,
    *,
    region: str,
    prices: PriceBook,
    overheads: Overheads = Overheads(),
    textbook_per_vcpu: float | None = None,
) -> list[dict[str, Any]]:
    """Each optimization we chose, against the choice we did not make, in USD (per run unless said).
    textbook_per_vcpu: the measured throughput of the inference approach we did not choose."""

    def run_cost(shaped: ClusterSizing, measured: Workload = workload) -> float:
        return estimate_emr(measured, shaped, region=region, prices=prices, overheads=overheads)["cost"]["total_usd"]

    def cluster_cost(seconds: float) -> float:
        return sum(instance_costs(emr_instances(sizing, seconds), region, prices).values())

    chosen = run_cost(sizing)
    bundled, per_photo = layouts(workload)
    x86 = replace(sizing, architecture="x86_64", primary_instance_types=(), worker_instance_types=())
    cluster_s = estimate_emr(workload, sizing, region=region, prices=prices, overheads=overheads)["seconds"]["wall_s"]
    day = 24 * SECONDS_PER_HOUR
    rows = [
        # The same run, its photos written as Parquet bundles or as one S3 object each: only the S3
        # requests differ (PUT and GET are billed per request, whatever the object's size).
        (
            "bundling photos at ingestion",
            f"one S3 object per photo ({bundled.photos_per_object:,.0f} photos per bundle chosen)",
            run_cost(sizing, bundled),
            run_cost(sizing, per_photo),
        ),
        # The core nodes host the driver: On-Demand either way; only the task nodes' market is a choice.
        ("spot task nodes", "the same task nodes On-Demand", chosen, run_cost(replace(sizing, spot=False))),
        (
            "Graviton (arm64) nodes",
            f"x86_64 ({x86.worker_types[0]}) at the same images/s per vCPU",
            chosen,
            run_cost(x86),
        ),
        # A long-running cluster bills all day for one nightly run; the S3 part is the same either way.
        ("transient cluster", "the same cluster kept up 24 h a day", cluster_cost(cluster_s), cluster_cost(day)),
        # The DAG's terminate task did not run (Airflow down): EMR ends the idle cluster after the
        # timeout instead of it running until someone notices, say a day later (per incident).
        (
            f"auto-termination after {sizing.idle_timeout_seconds / 60:g} min idle",
            "an orphaned cluster noticed 24 h later (per incident)",
            cluster_cost(sizing.idle_timeout_seconds),
            cluster_cost(day),
        ),
    ]
    if textbook_per_vcpu:
        rows.append(
            (
                "inference: featurize (LiteRT, batched)",
                f"Keras predict in a pandas UDF ({textbook_per_vcpu:.1f} images/s per vCPU, measured)",
                chosen,
                run_cost(sizing, replace(workload, throughput_per_vcpu=textbook_per_vcpu)),
            )
        )
    return [
        {
            "optimization": name,
            "instead_of": other,
            "chosen_usd": round(ours, 4),
            "alternative_usd": round(theirs, 4),
            "saved_usd": round(theirs - ours, 4),
        }
        for name, other, ours, theirs in rows
    ]


def per_million(estimate: dict[str, Any]) -> dict[str, float]:
    """An estimate's cost per million images, USD: compute (every non-S3 component), S3 requests,
    S3 storage, all-in."""
    components, images = estimate["cost"]["components_usd"], estimate["images"]
    scale = 1e6 / images if images else 0.0
    parts = {
        "compute": sum(v for k, v in components.items() if not k.startswith("s3_")) * scale,
        "s3_requests": components["s3_requests"] * scale,
        "s3_storage": components["s3_storage"] * scale,
    }
    return {**parts, "processing": parts["compute"] + parts["s3_requests"], "all_in": sum(parts.values())}


def target_table(
    workload: Workload,
    sizing: ClusterSizing,
    *,
    region: str,
    prices: PriceBook,
    cheapest_workers: int | None = None,
    overheads: Overheads = Overheads(),
) -> list[dict[str, Any]]:
    """Processing (compute + requests) per million images against TARGET_PROCESSING_USD_PER_MILLION, and the
    storage of the batch's whole stay beside it: the photos in bundles on the given cluster (and on the
    cheapest worker count, when given), then one object per photo on the given cluster."""
    bundled, per_photo = layouts(workload)
    workers = sizing.core_count + sizing.task_count
    cases = [(f"photos in bundles (today), {workers} workers", bundled, sizing)]
    if cheapest_workers and cheapest_workers != workers:
        cases.append(
            (
                f"photos in bundles, {cheapest_workers} workers (cheapest)",
                bundled,
                replace(sizing, core_count=1, task_count=cheapest_workers - 1),
            )
        )
    cases.append((f"one object per photo (before bundles), {workers} workers", per_photo, sizing))
    rows = []
    for name, case, shaped in cases:
        cost = per_million(estimate_emr(case, shaped, region=region, prices=prices, overheads=overheads))
        rows.append(
            {
                "case": name,
                **{k: round(v, 4) for k, v in cost.items()},
                "target": verdict(cost["processing"] <= TARGET_PROCESSING_USD_PER_MILLION),
            }
        )
    return rows


def verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


def year_bill(
    workload: Workload,
    sizing: ClusterSizing,
    *,
    region: str,
    prices: PriceBook,
    nights: Sequence[int] = (1, 30, 365),
    volumes: Sequence[int] = (10_000, 100_000, 1_000_000),
    overheads: Overheads = Overheads(),
    network: str = NETWORK_PATHS[0],
    airflow_host: str = AIRFLOW_HOST_TYPE,
) -> dict[str, Any]:
    """The bill of a year at `workload.images` photos a night: processing per million on each of `nights`
    (and on night 365 with a refit and a re-expression of every retained batch), the steady-state month at
    each of `volumes` photos a night, and issue 11's targets with their verdicts."""

    def night(n: int, **extra: Any) -> dict[str, Any]:
        est = estimate_emr(
            night_workload(replace(workload, **extra), n, refit=bool(extra)),
            sizing,
            region=region,
            prices=prices,
            overheads=overheads,
        )
        return {
            "night": n,
            "processing_usd_per_million": est["processing_usd_per_million"],
            "wall_minutes": round(est["seconds"]["wall_s"] / 60, 1),
            "pca_rows_read": est["rows"]["pca_read"],
            "refit_batches_merged": est["rows"]["refit_batches_merged"],
            "reexpressed_rows": est["rows"]["reexpressed"],
            "new_basis_storage_usd": est["cost"]["components_usd"].get("s3_new_basis_tiers", 0.0),
        }

    rows = [night(n) for n in nights]
    retained = workload.images * (RETENTION_DAYS - 1)
    rows.append({**night(RETENTION_DAYS, reexpress_rows=retained), "night": f"{RETENTION_DAYS}, new basis"})
    months = {
        images: steady_state_month(
            replace(workload, images=images),
            sizing,
            region=region,
            prices=prices,
            overheads=overheads,
            network=network,
            airflow_host=airflow_host,
        )
        for images in volumes
    }
    first, last = rows[0]["processing_usd_per_million"], next(r for r in rows if r["night"] == max(nights))
    last = last["processing_usd_per_million"]
    million = months.get(1_000_000) or steady_state_month(
        replace(workload, images=1_000_000),
        sizing,
        region=region,
        prices=prices,
        overheads=overheads,
        network=network,
        airflow_host=airflow_host,
    )
    targets = [] if workload.photo_mix == "phone" else issue_11_targets(workload, region, nights, first, last, million)
    targets += photo_mix_targets(workload, next(r for r in rows if r["night"] == max(nights)), million)
    return {
        "images_per_night": workload.images,
        "region": region,
        "photo_mix": workload.photo_mix,
        "processing_usd_per_million": last,
        "monthly_usd_pipeline": million["monthly_usd_pipeline"],
        "app_uploads_usd": million["app_uploads_usd"],
        "nights": rows,
        "months": {str(k): v for k, v in months.items()},
        "targets": targets,
        "budget_usd": monthly_budget_usd(million["monthly_usd"]),
        **(
            {"levers": photo_levers(workload, sizing, region=region, prices=prices, overheads=overheads)}
            if workload.photo_mix
            else {}
        ),
    }


def photo_levers(
    workload: Workload,
    sizing: ClusterSizing,
    *,
    region: str,
    prices: PriceBook,
    overheads: Overheads = Overheads(),
    task_counts: Sequence[int] = range(0, 12),
) -> list[dict[str, Any]]:
    """What the changes to the jobs that the cost model sees but the pipeline does not make yet would save, each
    on top of the ones above it (night 365 of `workload.images`, the month at a million a night): a landing the
    cluster cannot read ingested by the Airflow worker as before (no object per photo staged, no cluster step);
    featurize writing its outputs in OUTPUT_OBJECT_BYTES parts; ingest and featurize one step (no bundles written
    nor read back: today's ingest pass already decodes the photos bigger than their model pixels and, without an
    original_retention_days window, writes only those pixels and derivative, so this saves those small bundles,
    their reread and a step); every worker on spot, the core nodes too; then the cheapest count of task nodes when
    it is not the one the night's bytes size (`run_sizing`, never fewer). Each row carries its processing by
    component (`usd_per_million`)."""
    night = night_workload(workload, RETENTION_DAYS)
    staged = bool(workload.ingest_per_vcpu) and not workload.landing_on_s3
    outputs = math.ceil(night.images * max(night.feature_bytes, night.derivative_bytes) / OUTPUT_OBJECT_BYTES)
    # (name, changes to the workload, every worker on spot)
    changes: list[tuple[str, dict[str, Any], bool]] = [("today's jobs", {}, False)]
    if staged and not workload.decoded_share:  # the worker's upload decodes nothing: priced for undecoded photos only
        changes.append(
            ("a local landing ingested on the Airflow worker, no ingest step", {"ingest_per_vcpu": None}, False)
        )
    if outputs < featurize_output_files(night):
        changes.append(
            (f"featurize writes {OUTPUT_OBJECT_BYTES / 1e6:.0f} MB parts", {"featurize_outputs": outputs}, False)
        )
    if workload.ingest_per_vcpu and not staged:
        changes.append(("ingest and featurize fused: no bundles written nor read back", {"ingest_fused": True}, False))
    if fleet_markets(sizing)["CORE"] != SPOT:
        changes.append(("every worker on spot, the core node too", {}, True))
    rows, applied, previous = [], {}, None

    def priced(spot_core: bool) -> dict[str, Any]:  # what every estimate below is priced on
        return {"region": region, "prices": prices, "overheads": overheads, "spot_core": spot_core}

    def row(name: str, shaped: Workload, sized: ClusterSizing, spot_core: bool) -> dict[str, Any]:
        est = estimate_emr(night_workload(shaped, RETENTION_DAYS), sized, **priced(spot_core))
        month = steady_state_month(replace(shaped, images=1_000_000), sized, **priced(spot_core))
        usd = est["processing_usd_per_million"]
        scale = 1e6 / est["images"]
        components = est["cost"]["components_usd"]
        return {
            "change": name,
            "workers": est["executor_vcpus"] // sized.worker_facts.vcpus,  # as the night sized the cluster
            "processing_usd_per_million": usd,
            "saved_usd_per_million": round(previous - usd, 4) if previous is not None else None,
            "wall_minutes": round(est["seconds"]["wall_s"] / 60, 1),
            "monthly_usd_pipeline": month["monthly_usd_pipeline"],
            "usd_per_million": {
                **{k: round(components[k] * scale, 4) for k in ("ec2", "emr", "ebs", "s3_requests")},
                "landing_gets": round(est["s3_requests_usd"]["GET landing_reads"]["usd"] * scale, 4),
                "landing_get_requests": est["s3_requests_usd"]["GET landing_reads"]["requests"],
            },
        }

    spot_core = False
    for name, change, spot in changes:
        applied |= change
        spot_core = spot_core or spot
        rows.append(row(name, replace(workload, **applied), sizing, spot_core))
        previous = rows[-1]["processing_usd_per_million"]
    shaped = replace(workload, **applied)
    tonight = night_workload(shaped, RETENTION_DAYS)
    # The counts the night may run on (the plan never runs fewer task nodes than its landing's bytes ask).
    sized = run_sizing(tonight, sizing)
    counts = sorted({run_sizing(tonight, replace(sizing, task_count=n)).task_count for n in task_counts})
    cheapest = replace(sizing, task_count=cheapest_task_count(tonight, sizing, task_counts=counts, **priced(spot_core)))
    if cheapest.task_count != sized.task_count:
        rows.append(row(f"{cheapest.task_count} task nodes (the cheapest count)", shaped, cheapest, spot_core))
    return rows


def cheapest_task_count(
    workload: Workload, sizing: ClusterSizing, *, task_counts: Sequence[int] = range(0, 12), **priced: Any
) -> int:
    """The count of task nodes (of `task_counts`) on which `workload` costs least to process, each priced as asked
    (not grown to what the night's bytes size); the fewer nodes on a tie. `priced`: estimate_emr's region, prices,
    overheads, spot_core."""

    def processing(count: int) -> float:
        shaped = replace(sizing, task_count=count)
        return estimate_emr(workload, shaped, as_asked=True, **priced)["processing_usd_per_million"]

    return min(sorted(task_counts), key=processing)


def levers_left(bill: dict[str, Any]) -> str:
    """What the last row of the levers still pays per million photos, by component, against the mix's target."""
    last = bill["levers"][-1]
    parts = last["usd_per_million"]
    target = PHOTO_MIX_TARGETS.get(bill.get("photo_mix") or "", {}).get("processing_usd_per_million")
    against = (
        "" if target is None else f" against {target:.2f} ({verdict(last['processing_usd_per_million'] <= target)})"
    )
    return (
        f"After every change: {last['processing_usd_per_million']:.4f} USD per million{against}: EC2 "
        f"{parts['ec2']:.4f}, EMR {parts['emr']:.4f} (per instance-hour, spot or not), EBS {parts['ebs']:.4f}, "
        f"S3 requests {parts['s3_requests']:.4f}, of which the landing's GETs {parts['landing_gets']:.4f} "
        f"({parts['landing_get_requests']:,} for {bill['images_per_night']:,} photos: one a photo the app uploads)."
    )


def photo_mix_targets(workload: Workload, night: dict[str, Any], million: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 22's targets for the workload's photo mix (none without one)."""
    wanted = PHOTO_MIX_TARGETS.get(workload.photo_mix or "", {})
    values = {
        "processing_usd_per_million": night["processing_usd_per_million"],
        "monthly_usd_pipeline": million["monthly_usd_pipeline"],
        "wall_minutes": night["wall_minutes"],
    }
    names = {
        "processing_usd_per_million": f"{workload.photo_mix} photos: processing on night {night['night']} <= {{}} "
        "USD per million",
        "monthly_usd_pipeline": f"{workload.photo_mix} photos: steady-state month at 1,000,000 a night <= {{}} USD "
        f"(the pipeline; the app's uploads, {million['app_uploads_usd']:,.2f} USD, apart)",
        "wall_minutes": f"{workload.photo_mix} photos: a night of {workload.images:,}, landing to committed PCA, "
        "<= {} minutes",
    }
    return [
        {"target": names[key].format(f"{limit:g}"), "value": values[key], "verdict": verdict(values[key] <= limit)}
        for key, limit in wanted.items()
    ]


def issue_11_targets(
    workload: Workload, region: str, nights: Sequence[int], first: float, last: float, million: dict[str, Any]
) -> list[dict[str, Any]]:
    return [
        {
            "target": f"processing on night {max(nights)} within {TARGET_NIGHT_DRIFT:.0%} of night 1",
            "value": round(last / first - 1, 4),
            "verdict": verdict(abs(last / first - 1) <= TARGET_NIGHT_DRIFT),
        },
        {
            "target": f"processing on night {max(nights)} <= {TARGET_PROCESSING_USD_PER_MILLION} USD per million",
            "value": last,
            "verdict": verdict(last <= TARGET_PROCESSING_USD_PER_MILLION),
        },
        {
            "target": f"steady-state month at 1,000,000 photos of {workload.mean_image_bytes:,.0f} B a night, "
            f"{region}, "
            f"{RETENTION_DAYS}-day retention <= {TARGET_MONTHLY_USD:g} USD",
            "value": million["monthly_usd"],
            "verdict": verdict(million["monthly_usd"] <= TARGET_MONTHLY_USD),
        },
    ]


def right_sizing(
    workload: Workload,
    sizing: ClusterSizing,
    *,
    region: str,
    prices: PriceBook,
    worker_counts: Sequence[int] = (1, 2, 3, 4, 6, 8, 12, 16),
    overheads: Overheads = Overheads(),
) -> list[dict[str, Any]]:
    """Cost and wall time by number of worker nodes (1 core + the rest task nodes)."""
    rows = []
    for workers in worker_counts:
        shaped = replace(sizing, core_count=1, task_count=workers - 1)
        est = estimate_emr(workload, shaped, region=region, prices=prices, overheads=overheads)
        rows.append(
            {
                "workers": workers,
                "executor_vcpus": est["executor_vcpus"],
                "wall_minutes": round(est["seconds"]["wall_s"] / 60, 1),
                "total_usd": est["cost"]["total_usd"],
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# Tables for the command
# ---------------------------------------------------------------------------------------------


def render_estimate(estimate: dict[str, Any]) -> str:
    seconds = estimate["seconds"]
    instances = "; ".join(
        f"{i['count']} x {i['instance_type']} {i['role'].lower()} {i['market'].lower()}"
        for i in estimate.get("instances", [])
    )
    head = [
        f"{estimate['kind']} in {estimate['region']}: {estimate['images']:,} images, "
        f"{estimate['executor_vcpus']} executor vCPUs" + (f" ({instances})" if instances else ""),
        f"throughput: {estimate.get('throughput_per_vcpu', '?')} images/s per vCPU, "
        f"{estimate.get('throughput_source', '')}",
        "wall time: " + ", ".join(f"{k[:-2]} {v / 60:,.1f} min" for k, v in seconds.items()),
    ]
    if estimate.get("pca_rates"):
        rates = estimate["pca_rates"]
        head.append(
            f"PCA: {rates['stats_rows_per_s_per_vcpu']:,.0f} statistics + "
            f"{rates['project_rows_per_s_per_vcpu']:,.0f} projection rows/s per vCPU, {rates['source']}; "
            f"rows: {estimate['rows']}"
        )
    if estimate.get("spot_price"):
        head.append(f"spot price: {estimate['spot_price']}")
    if estimate.get("s3"):
        s3 = estimate["s3"]
        head.append(
            f"S3: {s3['objects']:,} objects ({s3['layout']}, {s3['photos_per_object']:,g} photos each), "
            f"{'s3:// landing' if s3['landing_on_s3'] else 'local landing'}; {s3['put_tier']:,} PUT-tier + "
            f"{s3['get_tier']:,} GET-tier requests"
        )
    if estimate.get("network", {}).get("bound_steps"):
        network = estimate["network"]
        head.append(
            f"network: {', '.join(network['bound_steps'])} last their S3 bytes over the workers' baseline "
            f"{network['worker_baseline_gbps']:g} Gbps each, not their CPU work ("
            + ", ".join(f"{step} {moved / 1e12:,.2f} TB" for step, moved in network["bytes"].items())
            + ")"
        )
    table = markdown_table(["component", "USD", "EUR"], cost_rows(estimate["cost"]))
    if estimate.get("s3_requests_usd"):
        table += "\n\n" + markdown_table(
            ["S3 requests, by what makes them", "requests", "USD"],
            [
                (name, line["requests"], line["usd"])
                for name, line in estimate["s3_requests_usd"].items()
                if line["requests"]
            ],
        )
    return "\n".join(head) + "\n\n" + table


def alternatives(
    workload: Workload,
    sizing: ClusterSizing,
    *,
    region: str,
    prices: PriceBook,
    single_instance_type: str = "c7g.16xlarge",
) -> list[dict[str, Any]]:
    """The transient EMR cluster against EMR Serverless (same executor vCPUs) and one large On-Demand
    instance without EMR, at `workload.images`, with the image count where each crosses EMR."""
    vcpus = worker_vcpus(sizing)
    options: dict[str, Callable[[Workload], dict[str, Any]]] = {
        "transient EMR cluster": lambda w: estimate_emr(w, sizing, region=region, prices=prices),
        "EMR Serverless": lambda w: estimate_emr_serverless(
            w, vcpus=vcpus, architecture=sizing.architecture, region=region, prices=prices
        ),
        f"one {single_instance_type} On-Demand, no EMR": lambda w: estimate_single_instance(
            w, instance_type=single_instance_type, region=region, prices=prices
        ),
        f"one {single_instance_type} spot, no EMR": lambda w: estimate_single_instance(
            w, instance_type=single_instance_type, region=region, prices=prices, market=SPOT
        ),
    }

    def total(option: str) -> Callable[[int], float]:
        return lambda images: options[option](replace(workload, images=images))["cost"]["total_usd"]

    emr = next(iter(options))
    rows = []
    for option, estimate in options.items():
        result = estimate(workload)
        row = {
            "option": option,
            "executor_vcpus": result["executor_vcpus"],
            "total_usd": result["cost"]["total_usd"],
            "wall_minutes": round(result["seconds"]["wall_s"] / 60, 1),
            "break_even_images": None,
            "cheaper_below": None,
        }
        if option != emr:
            row["break_even_images"] = break_even(total(emr), total(option))
            small = 1000
            row["cheaper_below"] = emr if total(emr)(small) < total(option)(small) else option
        rows.append(row)
    return rows


def break_even_text(row: dict[str, Any]) -> str:
    if row["cheaper_below"] is None:
        return ""
    if row["break_even_images"] is None:
        return f"none: {row['cheaper_below']} is cheaper at every size"
    return f"{row['break_even_images']:,} images ({row['cheaper_below']} cheaper below)"


def compare_report(
    workload: Workload,
    sizing: ClusterSizing,
    *,
    region: str,
    prices: PriceBook,
    single_instance_type: str = "c7g.16xlarge",
) -> str:
    """`compare`'s text: the night's estimate, the target, the optimizations, right-sizing, the alternatives."""
    sized = right_sizing(workload, sizing, region=region, prices=prices)
    cheapest = min(sized, key=lambda r: r["total_usd"])["workers"]
    out = [
        render_estimate(estimate_emr(workload, sizing, region=region, prices=prices)),
        "",
        (
            f"### Target: processing <= {TARGET_PROCESSING_USD_PER_MILLION:.2f} USD per million images (USD per "
            f"million; storage: {storage_basis(workload)})"
        ),
        markdown_table(
            ["case", "compute (EC2+EMR+EBS)", "S3 requests", "storage", "processing", "all-in", "target"],
            [
                tuple(r.values())
                for r in target_table(workload, sizing, region=region, prices=prices, cheapest_workers=cheapest)
            ],
        ),
        "",
        "### Optimizations (USD)",
        markdown_table(
            ["optimization", "instead of", "chosen", "alternative", "saved"],
            [
                tuple(r.values())
                for r in optimization_table(
                    workload, sizing, region=region, prices=prices, textbook_per_vcpu=textbook_throughput()
                )
            ],
        ),
        "",
        "### Right-sizing (1 core node + task nodes)",
        markdown_table(
            ["worker nodes", "executor vCPUs", "wall minutes", "USD per run"],
            [(r["workers"], r["executor_vcpus"], f"{r['wall_minutes']:.1f}", r["total_usd"]) for r in sized],
        ),
        "",
        f"### Alternatives at {workload.images:,} images (break-even: the image count where the costs cross)",
        markdown_table(
            ["option", "executor vCPUs", "USD per run", "wall minutes", "break-even with EMR"],
            [
                (r["option"], r["executor_vcpus"], r["total_usd"], f"{r['wall_minutes']:.1f}", break_even_text(r))
                for r in alternatives(
                    workload, sizing, region=region, prices=prices, single_instance_type=single_instance_type
                )
            ],
        ),
    ]
    return "\n".join(out)


def render_year(bill: dict[str, Any]) -> str:
    """`make cost`'s first half: night 1 beside night 365, the monthly bills, the targets."""
    nights = markdown_table(
        [
            "night",
            "processing USD per million",
            "wall minutes",
            "PCA rows read",
            "statistics merged",
            "rows re-expressed",
            "new basis: tier reset USD",
        ],
        [tuple(r.values()) for r in bill["nights"]],
    )
    volumes = list(bill["months"])
    names = list(bill["months"][volumes[-1]]["components_usd"])
    months = markdown_table(
        ["USD a month"] + [f"{int(v):,} photos a night" for v in volumes],
        [(name, *(bill["months"][v]["components_usd"][name] for v in volumes)) for name in names]
        + [("**total**", *(bill["months"][v]["monthly_usd"] for v in volumes))],
    )
    plan = bill["months"][volumes[-1]]["storage_classes"]
    classes = markdown_table(
        ["area", "class (objects >= 128 KiB)", "after days", "billed days", "read by"],
        [(area, c["class"], c["after_days"], c["resident_days"], c["read_by"]) for area, c in plan.items()],
    )
    targets = markdown_table(["target", "value", "verdict"], [tuple(t.values()) for t in bill["targets"]])
    if bill.get("levers"):
        columns = {
            "change": "change",
            "workers": "workers",
            "processing_usd_per_million": "processing USD per million",
            "saved_usd_per_million": "saved",
            "wall_minutes": "wall minutes",
            "monthly_usd_pipeline": "month USD (pipeline)",
        }
        targets += "\n\n### Changes to the jobs not made yet (each on top of the rows above it)\n" + markdown_table(
            list(columns.values()), [tuple(r[k] for k in columns) for r in bill["levers"]]
        )
        targets += "\n\n" + levers_left(bill)
    assumptions = "\n".join(f"- {a}" for a in bill["months"][volumes[-1]]["assumptions"])
    title = f"### Processing per night ({bill['images_per_night']:,} photos a night, {bill['region']})"
    return "\n".join(
        [
            title,
            nights,
            "",
            "### The steady-state month (retention full)",
            months,
            "",
            "### Storage classes",
            classes,
            "",
            "### Targets",
            targets,
            "",
            "Assumptions:",
            assumptions,
            "",
            f"Budget alarm (infra/foundation.yaml `MonthlyBudgetUsd`): {bill['budget_usd']} USD a month, the "
            f"1,000,000-photo month + {BUDGET_MARGIN:.0%}, rounded up to 10 USD.",
        ]
    )
