"""The cost model: billing rules, estimate arithmetic, the prices file, the Price List refresh (botocore
Stubber on responses in the API's real shape) and the CLI. No AWS call is made."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import boto3
import ingest
import pytest
from botocore.stub import Stubber

import featurize
from fruits import cost_compare, costs, price_refresh, storage
from fruits.cli import costs as costs_cli
from fruits.emr_cluster import (
    DEFAULT_PRIMARY_TYPES,
    DEFAULT_WORKER_TYPES,
    INSTANCE_TYPES,
    ClusterSizing,
    night_network_bytes,
    sized_for_night,
    worker_vcpus,
)
from fruits.gdpr import EU_MEMBER_STATE_REGIONS, GdprViolation

REPO_ROOT = Path(__file__).resolve().parents[1]
PARIS = "eu-west-3"


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch):
    # Clients built here must never find real credentials: a stray call fails instead of billing.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="module")
def prices() -> costs.PriceBook:
    return costs.PriceBook.load()


def workload(images: int = 1_000_000, throughput: float = 40.0, **extra) -> costs.Workload:
    return costs.Workload(images=images, throughput_per_vcpu=throughput, **extra)


# --- the prices file ---------------------------------------------------------------------------


def test_prices_file_is_stamped_and_covers_every_eu_region_and_only_those(prices):
    doc = prices.document
    assert date.fromisoformat(doc["stamped"]) and doc["source"] and doc["values_as_of"]
    assert doc["eur_per_usd"]["rate"] > 0 and doc["eur_per_usd"]["as_of"]
    assert 0 < doc["spot"]["typical_discount"] < 1 and doc["spot"]["as_of"]
    assert set(doc["regions"]) == set(EU_MEMBER_STATE_REGIONS)
    for region, entry in doc["regions"].items():
        assert entry["as_of"] and entry["source"], region
        for name in ("ebs_gp3_gb_month", "s3_standard_gb_month", "s3_put_per_1000", "s3_get_per_1000"):
            assert entry[name] > 0, (region, name)
        # Every priced type has its vCPUs in the one instance facts table, and an EMR price.
        assert set(entry["ec2_on_demand_hourly"]) <= set(INSTANCE_TYPES), region
        assert set(entry["emr_hourly"]) == set(entry["ec2_on_demand_hourly"]), region


@pytest.mark.parametrize("architecture", ["arm64", "x86_64"])
def test_paris_prices_every_default_cluster_type(prices, architecture):
    for instance_type in DEFAULT_PRIMARY_TYPES[architecture] + DEFAULT_WORKER_TYPES[architecture]:
        assert prices.ec2_hourly(PARIS, instance_type) > prices.emr_hourly(PARIS, instance_type) > 0


@pytest.mark.parametrize("region", ["eu-west-2", "eu-central-2", "us-east-1"])
def test_a_region_outside_the_eu_is_refused_before_any_arithmetic(prices, region):
    with pytest.raises(GdprViolation):
        costs.estimate_emr(workload(), ClusterSizing(), region=region, prices=prices)
    with pytest.raises(GdprViolation):
        prices.ec2_hourly(region, "m7g.xlarge")


def test_a_type_without_a_price_says_how_to_get_one(prices):
    doc = json.loads(json.dumps(prices.document))
    del doc["regions"][PARIS]["ec2_on_demand_hourly"]["m7g.4xlarge"]
    with pytest.raises(ValueError, match="refresh --instance-type m7g.4xlarge"):
        costs.PriceBook(doc).ec2_hourly(PARIS, "m7g.4xlarge")


# --- billing rules --------------------------------------------------------------------------------


def test_ec2_and_emr_bill_per_second_with_a_one_minute_minimum(prices):
    def bill(seconds):
        return costs.instance_costs(
            [costs.BilledInstances("CORE", "m7g.xlarge", costs.ON_DEMAND, 2, seconds, 0)], PARIS, prices
        )

    hourly = prices.ec2_hourly(PARIS, "m7g.xlarge")
    assert bill(10)["ec2"] == pytest.approx(2 * 60 / 3600 * hourly)  # a 10 s instance pays a minute
    assert bill(10) == bill(60)
    assert bill(61)["ec2"] == pytest.approx(2 * 61 / 3600 * hourly)  # then per second
    assert bill(3600)["emr"] == pytest.approx(2 * prices.emr_hourly(PARIS, "m7g.xlarge"))


def test_spot_discounts_ec2_but_never_the_emr_uplift(prices):
    def bill(market):
        return costs.instance_costs([costs.BilledInstances("TASK", "c7g.2xlarge", market, 1, 3600, 0)], PARIS, prices)

    on_demand, spot = bill(costs.ON_DEMAND), bill(costs.SPOT)
    discount = prices.document["spot"]["typical_discount"]
    assert spot["ec2"] == pytest.approx(on_demand["ec2"] * (1 - discount))
    assert spot["emr"] == on_demand["emr"] > 0


def test_a_sampled_spot_price_wins_over_the_typical_discount(prices):
    doc = json.loads(json.dumps(prices.document))
    doc["regions"][PARIS]["spot_hourly"] = {"c7g.2xlarge": 0.1234}
    sampled = costs.PriceBook(doc)
    assert sampled.ec2_hourly(PARIS, "c7g.2xlarge", costs.SPOT) == 0.1234
    assert "sampled" in sampled.spot_price_source(PARIS, "c7g.2xlarge")
    assert "typical" in sampled.spot_price_source(PARIS, "m7g.2xlarge")


def test_ebs_is_prorated_per_second_over_a_30_day_month(prices):
    month = 30 * 86400
    group = costs.BilledInstances("CORE", "m7g.xlarge", costs.ON_DEMAND, 3, month / 2, 100)
    assert costs.instance_costs([group], PARIS, prices)["ebs"] == pytest.approx(
        3 * 100 * prices.unit(PARIS, "ebs_gp3_gb_month") / 2
    )


def test_the_default_bundle_size_follows_the_uploads_constants(monkeypatch):
    # 4,530-byte photos: 128 MiB holds ~29,600, so the 1,000-photo limit closes a bundle first.
    assert workload().photos_per_object == storage.BUNDLE_MAX_PHOTOS == 1000
    assert workload().objects == 1000
    monkeypatch.setattr(storage, "BUNDLE_MAX_PHOTOS", 250)
    assert workload().photos_per_object == 250 and workload().objects == 4000
    # Bigger photos: the byte limit comes first.
    monkeypatch.setattr(storage, "BUNDLE_MAX_BYTES", 100 * 4530)
    assert workload().photos_per_object == 100 and workload().objects == 10_000
    assert workload(mean_image_bytes=4530 * 200).photos_per_object == 1  # a photo over the limit: a bundle of its own


def test_featurize_opens_each_bundle_once_a_scan_plus_one_get_per_row_group(monkeypatch):
    # 1,000 photos in row groups of 64: 16 row groups; HEAD + 2 footer GETs open the bundle, in featurize's one scan.
    assert costs.featurize_gets_per_bundle(1000) == 3 + 16
    # Rows the ingest pass decoded, their content null: read whole, as the others.
    assert costs.featurize_gets_per_bundle(1000, decoded_share=1.0) == 3 + 16
    # A window's bundles hold their bytes too: two scans (the decoded rows, the others: the one that holds none of a
    # row group's rows skips it), the decoded rows' row groups read without the content (before it and after it).
    assert costs.featurize_gets_per_bundle(1000, decoded_share=1.0, keep_originals=True) == 2 * 3 + 2 * 16
    assert costs.featurize_gets_per_bundle(1000, keep_originals=True) == 2 * 3 + 16
    monkeypatch.setattr(storage, "BUNDLE_ROW_GROUP_PHOTOS", 500)
    assert costs.featurize_gets_per_bundle(1000) == 3 + 2
    # The layout before issue 22 keeps the originals the whole retention: a window, so featurize's two scans.
    assert workload().keeps_decoded_photos
    assert costs.s3_requests(workload())["get"]["featurize_reads"] == 1000 * (2 * 3 + 2)
    assert costs.s3_requests(workload(original_retention_days=0))["get"]["featurize_reads"] == 1000 * (3 + 2)


def test_s3_requests_per_photo_objects_against_bundles(prices):
    put, get = prices.unit(PARIS, "s3_put_per_1000") / 1000, prices.unit(PARIS, "s3_get_per_1000") / 1000
    per_photo = costs.s3_requests(workload(images_per_object=1))
    bundled = costs.s3_requests(workload())
    # Per run, either layout: the manifest PUT, this batch's + 365 earlier manifests read, the raw area
    # listed once; the batch folder (objects + manifest) listed by the upload and by featurize. The jobs'
    # outputs: 3.5 GB of features in 55 parts of 64 MB, each written as a multipart upload (create, 1 part,
    # complete) + the quarantine's one file; the PCA opens each part (HEAD, footer, row group) twice.
    outputs = {"featurize_outputs": 55 * 3 + 3}
    assert per_photo == {
        "put": {
            "upload_objects": 1_000_000,
            "upload_manifest": 1,
            "upload_listings": 1 + 1001,
            "featurize_listing": 1001,
            "landing_listing": 0,
            "landing_staging": 0,
            **outputs,
        },
        "get": {
            "featurize_reads": 2 * 1_000_000,
            "upload_manifests": 366,
            "landing_reads": 0,
            "catchup_reads": 0,
            "pca_reads": 2 * 55 * 4,
            "refit_stats_reads": 0,
        },
    }
    assert bundled == {
        "put": {
            "upload_objects": 1000,
            "upload_manifest": 1,
            "upload_listings": 1 + 2,
            "featurize_listing": 2,
            "landing_listing": 0,
            "landing_staging": 0,
            **outputs,
        },
        "get": {
            "featurize_reads": 1000 * (2 * 3 + 16),
            "upload_manifests": 366,
            "landing_reads": 0,
            "catchup_reads": 0,
            "pca_reads": 2 * 55 * 4,
            "refit_stats_reads": 0,
        },
    }
    per_photo_usd = costs.s3_costs(workload(images_per_object=1), PARIS, prices)
    bundled_usd = costs.s3_costs(workload(), PARIS, prices)
    assert per_photo_usd["s3_requests"] == pytest.approx((1_002_004 + 168) * put + (2_000_366 + 440) * get)
    assert bundled_usd["s3_requests"] == pytest.approx((1006 + 168) * put + (22_366 + 440) * get)
    # The PUTs, which dominate, fall by the bundle size; all requests together by over 350 x.
    assert per_photo["put"]["upload_objects"] / bundled["put"]["upload_objects"] == 1000
    assert per_photo_usd["s3_requests"] / bundled_usd["s3_requests"] > 350
    # Same bytes either way, but 4.5 KB objects are under Glacier IR's 128 KiB: the lifecycle leaves them Standard.
    assert per_photo_usd["s3_storage"] > bundled_usd["s3_storage"] > 0
    assert costs.area_volumes(workload(images_per_object=1))["raw/"]["large_objects"] == 0


def test_an_s3_landing_adds_exactly_its_gets_and_listings(prices):
    local, on_s3 = workload(images=250_000), workload(images=250_000, landing_on_s3=True)
    added = {
        tier: {
            k: costs.s3_requests(on_s3)[tier][k] - costs.s3_requests(local)[tier][k]
            for k in costs.s3_requests(local)[tier]
        }
        for tier in ("put", "get")
    }
    assert added == {
        "put": {
            "upload_objects": 0,
            "upload_manifest": 0,
            "upload_listings": 0,
            "featurize_listing": 0,
            "landing_listing": 250,
            "landing_staging": 0,
            "featurize_outputs": 0,
        },
        "get": {
            "featurize_reads": 0,
            "upload_manifests": 0,
            "landing_reads": 250_000,
            "catchup_reads": 0,
            "pca_reads": 0,
            "refit_stats_reads": 0,
        },
    }
    extra = costs.s3_costs(on_s3, PARIS, prices)["s3_requests"] - costs.s3_costs(local, PARIS, prices)["s3_requests"]
    assert extra == pytest.approx(
        250 * prices.unit(PARIS, "s3_put_per_1000") / 1000 + 250 * prices.unit(PARIS, "s3_get_per_1000")
    )


def test_a_known_bundle_count_prices_the_batch_as_stored():
    stored = workload(images=120_000, objects_in_batch=150)  # e.g. a batch uploaded in several nights
    assert stored.objects == 150 and stored.photos_per_object == 800
    assert costs.s3_requests(stored)["put"]["upload_objects"] == 150
    assert costs.s3_requests(stored)["get"]["featurize_reads"] == 150 * (2 * 3 + 13)  # 800 photos: 13 row groups
    assert workload(images=120_000).objects == 120


# --- the estimate ----------------------------------------------------------------------------------


def test_estimate_wall_time_is_work_over_vcpus_plus_documented_overheads(prices):
    sizing, overheads = ClusterSizing(), costs.Overheads()
    fast = costs.estimate_emr(workload(throughput=80), sizing, region=PARIS, prices=prices)
    slow = costs.estimate_emr(workload(throughput=40), sizing, region=PARIS, prices=prices)
    vcpus = worker_vcpus(sizing)
    assert slow["executor_vcpus"] == vcpus == 16  # 1 core + 1 task c7g.2xlarge (the default)
    assert slow["seconds"]["featurize_s"] == pytest.approx(1_000_000 / (40 * vcpus) + overheads.step_s, abs=0.1)
    assert slow["seconds"]["featurize_s"] - overheads.step_s == pytest.approx(
        2 * (fast["seconds"]["featurize_s"] - overheads.step_s), abs=0.2
    )
    fixed = overheads.startup_s + overheads.bootstrap_s + overheads.termination_s
    assert slow["seconds"]["wall_s"] == pytest.approx(
        fixed + slow["seconds"]["featurize_s"] + slow["seconds"]["pca_s"], abs=0.2
    )
    # Faster inference, shorter cluster, smaller bill; S3 does not care.
    assert fast["cost"]["total_usd"] < slow["cost"]["total_usd"]
    assert fast["cost"]["components_usd"]["s3_requests"] == slow["cost"]["components_usd"]["s3_requests"]


def test_estimate_bills_every_instance_of_the_sizing_for_the_wall_time(prices):
    sizing = ClusterSizing(core_count=2, task_count=3, spot=True)
    est = costs.estimate_emr(workload(), sizing, region=PARIS, prices=prices)
    wall = est["seconds"]["wall_s"]
    primary, worker = sizing.primary_types[0], sizing.worker_types[0]
    # The core fleet hosts the driver: On-Demand whatever sizing.spot says; only the task fleet is spot.
    expected_ec2 = (
        wall
        / 3600
        * (
            prices.ec2_hourly(PARIS, primary)
            + 2 * prices.ec2_hourly(PARIS, worker)
            + 3 * prices.ec2_hourly(PARIS, worker, costs.SPOT)
        )
    )
    expected_emr = wall / 3600 * (prices.emr_hourly(PARIS, primary) + 5 * prices.emr_hourly(PARIS, worker))
    assert est["cost"]["components_usd"]["ec2"] == pytest.approx(expected_ec2, rel=1e-4)
    assert est["cost"]["components_usd"]["emr"] == pytest.approx(expected_emr, rel=1e-4)
    assert [(i["role"], i["count"], i["market"]) for i in est["instances"]] == [
        ("MASTER", 1, "ON_DEMAND"),
        ("CORE", 2, "ON_DEMAND"),
        ("TASK", 3, "SPOT"),
    ]
    all_on_demand = ClusterSizing(core_count=2, task_count=3, spot=False)
    on_demand = costs.estimate_emr(workload(), all_on_demand, region=PARIS, prices=prices)
    assert [i["market"] for i in on_demand["instances"]] == ["ON_DEMAND"] * 3


def test_totals_per_image_and_eur_are_consistent(prices):
    est = costs.estimate_emr(workload(images=250_000), ClusterSizing(), region=PARIS, prices=prices, eur_per_usd=0.9)
    cost = est["cost"]
    assert cost["total_usd"] == pytest.approx(sum(cost["components_usd"].values()), abs=1e-5)
    assert cost["total_eur"] == pytest.approx(cost["total_usd"] * 0.9, abs=1e-5)
    assert cost["per_1000_images_usd"] == pytest.approx(cost["total_usd"] / 250, rel=1e-4)
    assert cost["per_million_images_usd"] == pytest.approx(cost["total_usd"] * 4, rel=1e-4)


def test_on_demand_and_x86_cost_more_than_the_chosen_spot_graviton_cluster(prices):
    rows = {
        r["optimization"]: r
        for r in cost_compare.optimization_table(workload(), ClusterSizing(), region=PARIS, prices=prices)
    }
    for name in ("spot task nodes", "Graviton (arm64) nodes", "transient cluster"):
        assert rows[name]["saved_usd"] > 0, name
    auto = next(r for n, r in rows.items() if n.startswith("auto-termination"))
    assert auto["alternative_usd"] > auto["chosen_usd"] > 0


def test_bundling_is_priced_as_an_optimization_in_s3_requests_and_storage_class(prices):
    def bundling_row(priced: costs.Workload) -> dict:
        rows = cost_compare.optimization_table(priced, ClusterSizing(), region=PARIS, prices=prices)
        return next(r for r in rows if r["optimization"] == "bundling photos at ingestion")

    row = bundling_row(workload())
    s3 = {
        layout: sum(costs.s3_costs(w, PARIS, prices).values())
        for layout, w in (("per photo", workload(images_per_object=1)), ("bundles", workload()))
    }
    # Requests, and storage: loose photos are too small for Glacier IR.
    assert row["saved_usd"] == pytest.approx(s3["per photo"] - s3["bundles"], abs=1e-3)
    assert row["saved_usd"] > 6  # per million photos: the PUTs of a million objects
    assert "1,000 photos per bundle" in row["instead_of"]
    # Priced from the per-photo layout, the table still sets it against bundles.
    assert bundling_row(workload(images_per_object=1)) == row


# featurize's measured rate (benchmarks/results/inference_throughput.json, 2026-11-25), given explicitly:
# these tests must not move when the benchmark is re-run.
MEASURED_PER_VCPU = 137.65


def test_the_processing_target_is_met_only_with_photos_in_bundles(prices):
    three_workers = ClusterSizing(core_count=1, task_count=2)
    rows = cost_compare.target_table(
        workload(throughput=MEASURED_PER_VCPU), three_workers, region=PARIS, prices=prices, cheapest_workers=2
    )
    bundled_default, bundled_cheapest, per_photo = rows
    assert [r["case"] for r in rows] == [
        "photos in bundles (today), 3 workers",
        "photos in bundles, 2 workers (cheapest)",
        "one object per photo (before bundles), 3 workers",
    ]
    for row in rows:
        assert row["processing"] == pytest.approx(row["compute"] + row["s3_requests"], abs=2e-4)
        assert row["all_in"] == pytest.approx(row["processing"] + row["s3_storage"], abs=2e-4)
        assert row["target"] == (
            "met" if row["processing"] <= cost_compare.TARGET_PROCESSING_USD_PER_MILLION else "NOT MET"
        )
    assert bundled_cheapest["target"] == bundled_default["target"] == "met"
    # One object per photo: its S3 requests alone are over the target, whatever the cluster does; and its
    # 4.5 KB objects cannot go to Glacier IR, so their whole stay costs more too.
    assert (
        per_photo["s3_requests"] > cost_compare.TARGET_PROCESSING_USD_PER_MILLION and per_photo["target"] == "NOT MET"
    )
    assert per_photo["compute"] == bundled_default["compute"]
    assert per_photo["s3_storage"] > bundled_default["s3_storage"]


def test_compare_prints_the_target_and_each_cases_verdict(capsys):
    assert costs_cli.main(["compare", "--images", "1000000", "--throughput-per-vcpu", str(MEASURED_PER_VCPU)]) == 0
    out = capsys.readouterr().out
    assert "### Target: processing <= 0.35 USD per million images" in out
    lines = out.splitlines()
    assert next(line for line in lines if line.startswith("| photos in bundles (today), 2 workers |")).endswith(
        "| met |"
    )
    assert next(line for line in lines if line.startswith("| one object per photo")).endswith("| NOT MET |")
    assert any(line.startswith("| bundling photos at ingestion | one S3 object per photo") for line in lines)
    assert "S3: 1,000 objects (Parquet bundles (fruits.upload), 1,000 photos each), local landing" in out


def test_right_sizing_trades_wall_time_for_overhead(prices):
    rows = cost_compare.right_sizing(workload(), ClusterSizing(), region=PARIS, prices=prices, worker_counts=(1, 4, 16))
    minutes = [r["wall_minutes"] for r in rows]
    assert minutes == sorted(minutes, reverse=True)
    # 16 workers pay 16 x the start-up overhead; the 1-worker cluster pays the primary for hours.
    assert rows[1]["total_usd"] < rows[2]["total_usd"]
    assert rows[1]["total_usd"] < rows[0]["total_usd"]


@pytest.mark.parametrize(
    "bad",
    [
        dict(images=-1),
        dict(throughput=0),
        dict(images_per_object=0),
        dict(storage_months=-1),
        dict(objects_in_batch=-1),
        dict(earlier_batches=-1),
        dict(images_per_object=1, objects_in_batch=3),
    ],
)
def test_a_meaningless_workload_is_refused(bad):
    with pytest.raises(ValueError):
        workload(**bad)


def test_break_even_finds_where_two_cost_lines_cross():
    assert cost_compare.break_even(lambda n: 10 + 0.001 * n, lambda n: 0.002 * n) == pytest.approx(10_000, rel=1e-3)
    assert cost_compare.break_even(lambda n: 1 + n, lambda n: 2 + n) is None


def test_serverless_has_no_cluster_overhead_so_it_wins_small_batches_only(prices):
    rows = {r["option"]: r for r in cost_compare.alternatives(workload(), ClusterSizing(), region=PARIS, prices=prices)}
    serverless = rows["EMR Serverless"]
    assert serverless["cheaper_below"] == "EMR Serverless"
    small = cost_compare.estimate_emr_serverless(
        workload(images=5000), vcpus=24, architecture="arm64", region=PARIS, prices=prices
    )
    emr_small = costs.estimate_emr(workload(images=5000), ClusterSizing(), region=PARIS, prices=prices)
    assert small["cost"]["total_usd"] < emr_small["cost"]["total_usd"]
    if serverless["break_even_images"] is not None:
        above = cost_compare.estimate_emr_serverless(
            workload(images=serverless["break_even_images"] * 2),
            vcpus=24,
            architecture="arm64",
            region=PARIS,
            prices=prices,
        )
        emr_above = costs.estimate_emr(
            workload(images=serverless["break_even_images"] * 2), ClusterSizing(), region=PARIS, prices=prices
        )
        assert emr_above["cost"]["total_usd"] < above["cost"]["total_usd"]


def test_single_instance_has_no_emr_uplift(prices):
    est = cost_compare.estimate_single_instance(workload(), instance_type="c7g.16xlarge", region=PARIS, prices=prices)
    assert est["executor_vcpus"] == 64 and "emr" in est["cost"]["components_usd"]
    assert est["cost"]["components_usd"]["emr"] == 0
    assert est["cost"]["components_usd"]["ec2"] == pytest.approx(
        est["seconds"]["wall_s"] / 3600 * prices.ec2_hourly(PARIS, "c7g.16xlarge"), rel=1e-4
    )


# --- the throughput default -------------------------------------------------------------------------


def test_default_throughput_reads_the_benchmark_and_names_it(tmp_path):
    result = tmp_path / "inference_throughput.json"
    result.write_text(
        json.dumps({"images_per_second_per_vcpu": 37.5, "cores": 2, "measured_at": "2026-11-22T03:00:00Z"})
    )
    value, source = costs.default_throughput(result)
    assert value == 37.5 and "measured" in source and "2026-11-22" in source


def test_the_unchosen_inference_runtime_is_priced_from_the_benchmark(tmp_path, prices):
    result = tmp_path / "inference_throughput.json"
    assert cost_compare.textbook_throughput(result) is None
    result.write_text(
        json.dumps(
            {"images_per_second_per_vcpu": 40.0, "cores": 2, "textbook_pandas_udf_keras": {"images_per_second": 16.0}}
        )
    )
    assert cost_compare.textbook_throughput(result) == 8.0
    rows = cost_compare.optimization_table(
        workload(throughput=40.0),
        ClusterSizing(),
        region=PARIS,
        prices=prices,
        textbook_per_vcpu=cost_compare.textbook_throughput(result),
    )
    runtime = next(r for r in rows if r["optimization"].startswith("inference"))
    slower = costs.estimate_emr(workload(throughput=8.0), ClusterSizing(), region=PARIS, prices=prices)
    assert runtime["alternative_usd"] == pytest.approx(slower["cost"]["total_usd"], abs=1e-4)
    assert runtime["saved_usd"] > 0


def test_without_the_benchmark_the_fallback_is_labelled(tmp_path):
    value, source = costs.default_throughput(tmp_path / "absent.json")
    assert value == costs.FALLBACK_THROUGHPUT_PER_VCPU and "FALLBACK" in source


# --- refresh: the Price List API, stubbed ------------------------------------------------------------


def price_item(attributes: dict, usd: str, unit: str = "Hrs", tiers: list[tuple[str, str]] | None = None) -> str:
    """One PriceList entry exactly as GetProducts returns it: a JSON document in a string."""
    dimensions = {
        f"SKU1.JRTCKXETXF.{i}": {
            "unit": unit,
            "beginRange": begin,
            "endRange": "Inf",
            "description": "",
            "pricePerUnit": {"USD": price},
            "appliesTo": [],
            "rateCode": f"SKU1.JRTCKXETXF.{i}",
        }
        for i, (begin, price) in enumerate(tiers or [("0", usd)])
    }
    return json.dumps(
        {
            "product": {"productFamily": "x", "attributes": attributes, "sku": "SKU1"},
            "serviceCode": "x",
            "terms": {
                "OnDemand": {
                    "SKU1.JRTCKXETXF": {
                        "priceDimensions": dimensions,
                        "sku": "SKU1",
                        "effectiveDate": "2026-11-01T00:00:00Z",
                        "offerTermCode": "JRTCKXETXF",
                        "termAttributes": {},
                    }
                }
            },
            "version": "20261101",
            "publicationDate": "2026-11-01T00:00:00Z",
        }
    )


def stub_price_list(
    stubber: Stubber, region: str, instance_type: str, answers: dict[tuple[str, ...], list[str]]
) -> None:
    """Queue one GetProducts answer per query `price_queries` makes, checking its exact filters."""
    for key, (service, filters, _multiplier) in price_refresh.price_queries(region, [instance_type]).items():
        items = answers.get(key, [])
        if len(items) > 1:  # the paginator follows NextToken: the first item on page one, the rest on page two
            stubber.add_response(
                "get_products",
                {"FormatVersion": "aws_v1", "PriceList": items[:1], "NextToken": "page2"},
                {"ServiceCode": service, "Filters": filters, "FormatVersion": "aws_v1"},
            )
            stubber.add_response(
                "get_products",
                {"FormatVersion": "aws_v1", "PriceList": items[1:]},
                {"ServiceCode": service, "Filters": filters, "FormatVersion": "aws_v1", "NextToken": "page2"},
            )
        else:
            stubber.add_response(
                "get_products",
                {"FormatVersion": "aws_v1", "PriceList": items},
                {"ServiceCode": service, "Filters": filters, "FormatVersion": "aws_v1"},
            )


def test_refresh_rewrites_prices_from_the_price_list_api(prices):
    pricing = boto3.client("pricing", region_name=price_refresh.PRICING_ENDPOINT_REGION)
    answers = {
        # A free entry first (skipped), then the real price on the next page.
        ("ec2_on_demand_hourly", "m7g.xlarge"): [
            price_item({"instanceType": "m7g.xlarge"}, "0.0000000000"),
            price_item({"instanceType": "m7g.xlarge", "vcpu": "4"}, "0.1950000000"),
        ],
        ("emr_hourly", "m7g.xlarge"): [price_item({"softwareType": "EMR"}, "0.0488000000")],
        ("ebs_gp3_gb_month",): [price_item({"volumeApiName": "gp3"}, "0.0950000000", "GB-Mo")],
        # Tiered storage: the first tier (beginRange 0) is the batch's price.
        ("s3_standard_gb_month",): [
            price_item({}, "", "GB-Mo", [("512000", "0.0230000000"), ("0", "0.0250000000"), ("51200", "0.0240000000")])
        ],
        ("s3_put_per_1000",): [price_item({"group": "S3-API-Tier1"}, "0.0000055000", "Requests")],
        # S3-API-Tier2 missing from the answer: the old value stays, and it is reported.
    }
    with Stubber(pricing) as stubber:
        stub_price_list(stubber, PARIS, "m7g.xlarge", answers)
        document, missing = price_refresh.refresh_prices(
            prices.document, pricing, regions=[PARIS], instance_types=["m7g.xlarge"], today=date(2026, 11, 22)
        )
        stubber.assert_no_pending_responses()
    paris = document["regions"][PARIS]
    assert paris["ec2_on_demand_hourly"]["m7g.xlarge"] == 0.195
    assert paris["emr_hourly"]["m7g.xlarge"] == 0.0488
    assert paris["ebs_gp3_gb_month"] == 0.095
    assert paris["s3_standard_gb_month"] == 0.025
    assert paris["s3_put_per_1000"] == pytest.approx(0.0055)
    assert paris["s3_get_per_1000"] == prices.document["regions"][PARIS]["s3_get_per_1000"]
    assert missing == [f"{PARIS} s3_get_per_1000"]
    assert paris["as_of"] == "2026-11-22" and "Price List API" in paris["source"]
    assert "derived" in paris  # something was not refreshed: the hand-derived note stays
    assert document["last_refresh"]["missing"] == missing and document["stamped"] == "2026-11-22"
    assert document["values_as_of"] == prices.document["values_as_of"]  # other regions still hold older values
    # Other types and regions are untouched; the input document is not modified.
    assert (
        paris["ec2_on_demand_hourly"]["c7g.2xlarge"]
        == prices.document["regions"][PARIS]["ec2_on_demand_hourly"]["c7g.2xlarge"]
    )
    assert document["regions"]["eu-west-1"] == prices.document["regions"]["eu-west-1"]
    assert prices.document["regions"][PARIS]["ec2_on_demand_hourly"]["m7g.xlarge"] != 0.195


def test_refresh_refuses_a_region_outside_the_eu(prices):
    pricing = boto3.client("pricing", region_name=price_refresh.PRICING_ENDPOINT_REGION)
    with Stubber(pricing), pytest.raises(GdprViolation):
        price_refresh.refresh_prices(prices.document, pricing, regions=["us-east-1"], instance_types=["m7g.xlarge"])


def test_spot_sampling_averages_each_zones_latest_price():
    ec2 = boto3.client("ec2", region_name=PARIS)
    now = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    history = [
        {
            "AvailabilityZone": "eu-west-3a",
            "InstanceType": "c7g.2xlarge",
            "ProductDescription": "Linux/UNIX",
            "SpotPrice": "0.1300",
            "Timestamp": now - timedelta(minutes=5),
        },
        {
            "AvailabilityZone": "eu-west-3a",
            "InstanceType": "c7g.2xlarge",
            "ProductDescription": "Linux/UNIX",
            "SpotPrice": "0.9000",
            "Timestamp": now - timedelta(minutes=50),
        },
        {
            "AvailabilityZone": "eu-west-3b",
            "InstanceType": "c7g.2xlarge",
            "ProductDescription": "Linux/UNIX",
            "SpotPrice": "0.1500",
            "Timestamp": now - timedelta(minutes=20),
        },
        {
            "AvailabilityZone": "eu-west-3a",
            "InstanceType": "m7g.xlarge",
            "ProductDescription": "Linux/UNIX",
            "SpotPrice": "0.0700",
            "Timestamp": now - timedelta(minutes=1),
        },
    ]
    with Stubber(ec2) as stubber:
        stubber.add_response(
            "describe_spot_price_history",
            {"SpotPriceHistory": history},
            {
                "InstanceTypes": ["c7g.2xlarge", "m7g.xlarge"],
                "ProductDescriptions": ["Linux/UNIX"],
                "StartTime": now - timedelta(hours=1),
                "EndTime": now,
            },
        )
        sampled = price_refresh.sample_spot_prices(ec2, ["c7g.2xlarge", "m7g.xlarge"], now=now)
    assert sampled == {"c7g.2xlarge": pytest.approx(0.14), "m7g.xlarge": 0.07}


def test_refresh_command_writes_the_file_whole(prices, tmp_path, monkeypatch):
    target = tmp_path / "aws_eu.json"
    target.write_text(json.dumps(prices.document))
    pricing = boto3.client("pricing", region_name=price_refresh.PRICING_ENDPOINT_REGION)
    stubber = Stubber(pricing)
    stub_price_list(
        stubber,
        "eu-north-1",
        "m6g.xlarge",
        {
            ("ec2_on_demand_hourly", "m6g.xlarge"): [price_item({}, "0.1640000000")],
            ("emr_hourly", "m6g.xlarge"): [price_item({}, "0.0410000000")],
        },
    )
    stubber.activate()
    monkeypatch.setattr(
        boto3, "client", lambda service, region_name=None: pricing if service == "pricing" else pytest.fail(service)
    )
    assert (
        costs_cli.main(
            ["refresh", "--region", "eu-north-1", "--instance-type", "m6g.xlarge", "--prices-file", str(target)]
        )
        == 0
    )
    stubber.assert_no_pending_responses()
    written = json.loads(target.read_text())
    assert written["regions"]["eu-north-1"]["ec2_on_demand_hourly"]["m6g.xlarge"] == 0.164
    assert written["last_refresh"]["regions"] == ["eu-north-1"]
    assert not list(tmp_path.glob(".*partial"))


# --- the command line --------------------------------------------------------------------------------


def test_estimate_command_prints_usd_and_eur_for_the_given_cluster(capsys, prices):
    assert (
        costs_cli.main(
            [
                "estimate",
                "--images",
                "200000",
                "--throughput-per-vcpu",
                "50",
                "--instance-type",
                "m7g.xlarge",
                "--core",
                "2",
                "--task",
                "0",
                "--on-demand",
                "--region",
                "eu-west-1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| component | USD | EUR |" in out and "per million images" in out
    assert "2 x m7g.xlarge core on_demand" in out and "8 executor vCPUs" in out and "eu-west-1" in out
    expected = costs.estimate_emr(
        costs.night_workload(workload(images=200_000, throughput=50), 1),
        ClusterSizing(core_count=2, task_count=0, spot=False, worker_instance_types=("m7g.xlarge",)),
        region="eu-west-1",
        prices=prices,
    )
    assert f"| **total** | {expected['cost']['total_usd']:,.4f} |" in out


def test_cost_module_runs_as_a_command():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "plugins"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "fruits.cli.costs", "estimate", "--images", "1000000", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    estimate = json.loads(done.stdout)
    assert estimate["images"] == 1_000_000 and estimate["cost"]["total_usd"] > 0
    assert estimate["throughput_source"].startswith(("measured", "FALLBACK"))
    refused = subprocess.run(
        [sys.executable, "-m", "fruits.cli.costs", "estimate", "--images", "10", "--region", "eu-west-2"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert refused.returncode != 0 and "eu-west-2" in refused.stderr


# --- the bill of a year (issue 11) ---------------------------------------------------------------------

TEMPLATE_PATH = REPO_ROOT / "infra" / "foundation.yaml"


def test_pca_rates_come_from_the_benchmark_file_and_name_it(tmp_path, monkeypatch, prices):
    committed = json.loads(costs.PCA_THROUGHPUT_FILE.read_text())
    for key in (
        "stats_rows_per_second_per_vcpu",
        "project_rows_per_second_per_vcpu",
        "numpy_gram_rows_per_second_per_vcpu",
        "measured_at",
        "machine",
    ):
        assert key in committed, key
    result = tmp_path / "pca_throughput.json"
    result.write_text(
        json.dumps(
            {
                "stats_rows_per_second_per_vcpu": 1234.0,
                "project_rows_per_second_per_vcpu": 5678.0,
                "measured_at": "2026-12-01T00:00:00Z",
                "machine": "m",
                "source": "provisional",
            }
        )
    )
    stats, project, source = costs.default_pca_rates(result)
    assert (stats, project) == (1234.0, 5678.0) and "provisional" in source and "2026-12-01" in source
    with pytest.raises(FileNotFoundError, match="PCA benchmark"):
        costs.default_pca_rates(tmp_path / "absent.json")
    # A workload without rates takes the committed file's; the old fixed 250 rows/s is gone.
    w = workload()
    assert w.pca_stats_rows_per_s_per_vcpu == committed["stats_rows_per_second_per_vcpu"]
    assert w.pca_project_rows_per_s_per_vcpu == committed["project_rows_per_second_per_vcpu"]
    assert not hasattr(w, "pca_rows_per_s_per_vcpu")
    # Without the file the S3 side (the run report) still prices; a wall-time estimate says what is missing.
    monkeypatch.setattr(costs, "PCA_THROUGHPUT_FILE", tmp_path / "absent.json")
    monkeypatch.setattr(costs.default_pca_rates, "__defaults__", (tmp_path / "absent.json",))
    blind = workload()
    assert blind.pca_stats_rows_per_s_per_vcpu is None and costs.s3_costs(blind, PARIS, prices)["s3_requests"] > 0
    with pytest.raises(ValueError, match="no PCA rates: .*absent.json is missing"):
        costs.estimate_emr(blind, ClusterSizing(), region=PARIS, prices=prices)


def test_the_pca_step_costs_tonights_rows_over_each_rate_and_a_refit_merges_statistics_only(prices):
    w = workload(pca_stats_rows_per_s_per_vcpu=1000.0, pca_project_rows_per_s_per_vcpu=4000.0)
    step = costs.Overheads().step_s
    seconds = costs.job_seconds(w, 16, costs.Overheads())
    assert seconds["pca_s"] == pytest.approx(1e6 / 16 / 1000 + 1e6 / 16 / 4000 + step)
    # A refit of the 365 retained batches reads their statistics (365 x 13.1 MB), never their features.
    refit = costs.job_seconds(replace(w, refit_batches=365), 16, costs.Overheads())
    assert refit["pca_s"] - seconds["pca_s"] == pytest.approx(
        365 * 8 * (1 + 1280 + 1280**2) / costs.STATS_READ_BYTES_PER_S + costs.EIGEN_SECONDS
    )
    assert refit["featurize_s"] == seconds["featurize_s"] and "reexpress_s" not in refit
    # Re-expression: only on the nights a basis is fitted, its own line, projection rate only.
    again = costs.job_seconds(replace(w, reexpress_rows=2_000_000), 16, costs.Overheads())
    assert again["reexpress_s"] == pytest.approx(2e6 / 16 / 4000 + step)
    assert costs.s3_requests(replace(w, refit_batches=365))["get"]["refit_stats_reads"] == 730


def test_night_365_costs_what_night_1_does(prices):
    w = workload(throughput=MEASURED_PER_VCPU)
    per_night = {
        n: costs.estimate_emr(costs.night_workload(w, n), ClusterSizing(), region=PARIS, prices=prices)
        for n in (1, 30, 365, 1000)
    }
    first, last = per_night[1]["processing_usd_per_million"], per_night[365]["processing_usd_per_million"]
    assert (
        abs(last / first - 1) <= cost_compare.TARGET_NIGHT_DRIFT
        and last <= cost_compare.TARGET_PROCESSING_USD_PER_MILLION
    )
    for n, est in per_night.items():
        assert est["rows"]["pca_read"] == 1_000_000, n  # tonight's batch only, whatever the history
    # Night 1 fits the first basis from its own statistics; the upload reads the retained batches' manifests only.
    assert per_night[1]["rows"]["refit_batches_merged"] == 1 and per_night[365]["rows"]["refit_batches_merged"] == 0
    assert per_night[1000]["s3"]["requests"]["get"]["upload_manifests"] == costs.RETENTION_DAYS
    assert per_night[1000]["processing_usd_per_million"] == per_night[365]["processing_usd_per_million"]
    # A refit on night 365 merges 365 batches' statistics: it still costs the same to a few %.
    refit = costs.estimate_emr(costs.night_workload(w, 365, refit=True), ClusterSizing(), region=PARIS, prices=prices)
    assert refit["rows"]["refit_batches_merged"] == 365
    assert last < refit["processing_usd_per_million"] < 1.05 * last
    with pytest.raises(ValueError, match="counts from 1"):
        costs.night_workload(w, 0)


def test_processing_grows_with_the_work_and_the_month_with_photos_and_their_size(prices):
    def processing(**extra):
        priced = workload(throughput=MEASURED_PER_VCPU, **extra)
        est = costs.estimate_emr(priced, ClusterSizing(), region=PARIS, prices=prices)
        return sum(v for k, v in est["cost"]["components_usd"].items() if k != "s3_storage")

    base = processing()
    assert base < processing(reexpress_rows=10_000_000) < processing(reexpress_rows=100_000_000)
    assert base < processing(catchup_images=500_000) < processing(images=2_000_000, catchup_images=500_000)
    assert base < processing(refit_batches=30) < processing(refit_batches=365)

    def month(**extra) -> float:
        return costs.steady_state_month(
            workload(throughput=MEASURED_PER_VCPU, **extra), ClusterSizing(), region=PARIS, prices=prices
        )["monthly_usd"]

    assert month(images=10_000) < month(images=100_000) < month(images=1_000_000) < month(images=2_000_000)
    assert month() < month(mean_image_bytes=45_000) < month(mean_image_bytes=3e6)
    assert month() < month(csv_bytes=5000) and month() < month(feature_bytes=7000)


def _price_per_gb_day_sum(prices, plan: costs.AreaPlan) -> float:
    """Sum over the days an object is billed of its class's GB-month price, written out for the test."""
    classes = prices.region(PARIS)["s3_classes_gb_month"]
    days = plan.expiration_days + costs.NONCURRENT_GRACE_DAYS
    if plan.storage_class == costs.GLACIER_IR:
        return plan.transition_days * classes["STANDARD"] + (days - plan.transition_days) * classes["GLACIER_IR"]
    if plan.storage_class == costs.INTELLIGENT_TIERING:
        t = plan.transition_days
        return (
            (t + 30) * classes["STANDARD"]
            + 60 * classes["INTELLIGENT_TIERING_INFREQUENT"]
            + (days - t - 90) * classes["INTELLIGENT_TIERING_ARCHIVE_INSTANT"]
        )
    return days * classes["STANDARD"]


def test_steady_state_month_arithmetic(prices):
    w = workload(throughput=MEASURED_PER_VCPU)
    month = costs.steady_state_month(w, ClusterSizing(), region=PARIS, prices=prices)
    parts = month["components_usd"]
    assert month["monthly_usd"] == pytest.approx(sum(parts.values()), abs=0.01)
    # Processing: every night of the month at retention full, storage excluded.
    night = costs.estimate_emr(costs.night_workload(w, 365), ClusterSizing(), region=PARIS, prices=prices)
    night_usd = sum(v for k, v in night["cost"]["components_usd"].items() if k != "s3_storage")
    assert parts["processing"] == pytest.approx(night_usd * 365 / 12, rel=1e-3)
    entry = prices.region(PARIS)
    # raw/: 4.53 GB a night, 395 nights held: 7 days Standard then Glacier IR, + the bundles' transitions.
    raw_gb = 1e6 * 4530 / 1e9
    expected_raw = (
        raw_gb * _price_per_gb_day_sum(prices, costs.STORAGE_PLAN["raw/"])
        + 1000 / 1000 * entry["s3_transition_per_1000"]["GLACIER_IR"] * 365 / 12
    )
    assert parts["storage raw/"] == pytest.approx(expected_raw, rel=1e-3)
    assert month["storage_gb"]["raw/"] == pytest.approx(raw_gb * 395, rel=1e-3)
    # features/: 3.5 GB a night in 64 MB parts, Glacier IR after 7 days like the bundles.
    features_gb = 1e6 * 3500 / 1e9
    parts_per_night = math.ceil(features_gb * 1e9 / costs.OUTPUT_OBJECT_BYTES)
    expected_features = (
        features_gb * _price_per_gb_day_sum(prices, costs.STORAGE_PLAN["features/"])
        + parts_per_night / 1000 * entry["s3_transition_per_1000"]["GLACIER_IR"] * 365 / 12
    )
    assert parts["storage features/"] == pytest.approx(expected_features, rel=1e-3)
    # pca/: reduced Parquet + CSV + the statistics, Intelligent-Tiering from day 0: tiers, monitoring, transitions.
    pca_bytes = 1e6 * (880 + 2470) + 8 * (1 + 1280 + 1280**2)
    pca_objects = sum(math.ceil(1e6 * size / costs.OUTPUT_OBJECT_BYTES) for size in (880, 2470)) + 1
    expected_pca = (
        pca_bytes / 1e9 * _price_per_gb_day_sum(prices, costs.STORAGE_PLAN["pca/"])
        + pca_objects * 395 / 1000 * entry["s3_intelligent_tiering_monitoring_per_1000_objects_month"]
        + pca_objects / 1000 * entry["s3_transition_per_1000"]["INTELLIGENT_TIERING"] * 365 / 12
    )
    assert parts["storage pca/"] == pytest.approx(expected_pca, rel=1e-3)
    # Fixed costs: the key, the Airflow host all month, the free gateway endpoint.
    assert parts["fixed kms_key"] == entry["kms_key_month"]
    assert parts["fixed airflow_host"] == pytest.approx(
        730 * entry["airflow_host_hourly"]["t4g.medium"] + 30 * entry["ebs_gp3_gb_month"], rel=1e-4
    )
    assert parts["fixed network_path"] == 0


def test_the_fixed_costs_are_listed_and_the_nat_gateway_is_priced(prices):
    gateway = costs.steady_state_month(workload(), ClusterSizing(), region=PARIS, prices=prices)
    nat = costs.steady_state_month(workload(), ClusterSizing(), region=PARIS, prices=prices, network="nat-gateway")
    assert {"fixed kms_key", "fixed airflow_host", "fixed network_path"} <= set(gateway["components_usd"])
    assert nat["components_usd"]["fixed network_path"] >= 730 * prices.region(PARIS)["nat_gateway_hourly"] > 0
    assert nat["monthly_usd"] > gateway["monthly_usd"]
    text = " ".join(gateway["assumptions"])
    for named in ("KMS", "Airflow host: one t4g.medium", "s3-gateway-endpoint", "365 nights retained", "noncurrent"):
        assert named in text, named
    with pytest.raises(ValueError, match="network path"):
        costs.fixed_monthly(PARIS, prices, network="vpn")
    with pytest.raises(ValueError, match="Airflow host"):
        costs.fixed_monthly(PARIS, prices, airflow_host="x1e.32xlarge")


def test_storage_classes_per_area_follow_what_reads_them(prices):
    plan = costs.STORAGE_PLAN
    assert (plan["raw/"].storage_class, plan["raw/"].transition_days) == (costs.GLACIER_IR, 7)
    assert (plan["features/"].storage_class, plan["features/"].transition_days) == (costs.GLACIER_IR, 7)
    assert (plan["pca/"].storage_class, plan["pca/"].transition_days) == (costs.INTELLIGENT_TIERING, 0)
    for prefix in ("quarantine/", "index/", "logs/"):
        assert plan[prefix].storage_class == costs.STANDARD and plan[prefix].transition_days is None
    raw = plan["raw/"]
    assert [costs.class_price_key(raw, age) for age in (0, 6, 7, 394)] == [
        "STANDARD",
        "STANDARD",
        "GLACIER_IR",
        "GLACIER_IR",
    ]
    tiered = plan["pca/"]
    assert [costs.class_price_key(tiered, age) for age in (0, 29, 30, 89, 90)] == [
        "INTELLIGENT_TIERING_FREQUENT",
        "INTELLIGENT_TIERING_FREQUENT",
        "INTELLIGENT_TIERING_INFREQUENT",
        "INTELLIGENT_TIERING_INFREQUENT",
        "INTELLIGENT_TIERING_ARCHIVE_INSTANT",
    ]
    # Per photo, a Fruits-360 photo in a bundle goes to Glacier IR; alone (4.5 KB) it stays Standard.
    bundled = costs.batch_storage(workload(), PARIS, prices)["raw/"]
    alone = costs.batch_storage(workload(images_per_object=1), PARIS, prices)["raw/"]
    assert bundled["storage_class"] == costs.GLACIER_IR and alone["storage_class"] == costs.STANDARD
    assert alone["usd"] > 3 * bundled["usd"]


def _lifecycle_rules() -> dict:
    from cfnlint.decode.cfn_yaml import loads as load_cfn_yaml

    template = load_cfn_yaml(TEMPLATE_PATH.read_text())
    return template, template["Resources"]["LakeBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]


def test_the_templates_lifecycle_is_the_models_storage_plan():
    _template, rules = _lifecycle_rules()
    transitions = {r["Prefix"]: r for r in rules if "Transitions" in r}
    planned = {p: a for p, a in costs.STORAGE_PLAN.items() if a.transition_days is not None}
    assert set(transitions) == set(planned)
    for prefix, area in planned.items():
        rule = transitions[prefix]
        assert rule["Status"] == "Enabled"
        assert int(rule["ObjectSizeGreaterThan"]) == costs.MIN_TRANSITION_BYTES
        assert [(t["StorageClass"], int(t["TransitionInDays"])) for t in rule["Transitions"]] == [
            (area.storage_class, area.transition_days)
        ], prefix
    # An area the model keeps Standard has no transition in the template.
    assert not {p for p, a in costs.STORAGE_PLAN.items() if a.transition_days is None} & set(transitions)


def test_retention_no_derived_row_outlives_its_photo_by_more_than_the_grace():
    template, rules = _lifecycle_rules()
    parameters = template["Parameters"]
    assert int(parameters["ImageRetentionDays"]["Default"]) == costs.RETENTION_DAYS
    assert int(parameters["LogRetentionDays"]["Default"]) == costs.LOG_RETENTION_DAYS
    assert int(parameters["NoncurrentVersionExpiryDays"]["Default"]) == costs.NONCURRENT_GRACE_DAYS
    expirations = {r["Prefix"]: r["ExpirationInDays"] for r in rules if "ExpirationInDays" in r}
    photo_days = costs.resident_days(costs.STORAGE_PLAN["raw/"])
    for prefix in ("raw/", "derived/", "features/", "quarantine/", "pca/"):
        # Each derived area expires with the photos (the same parameter) and is billed as long as they are.
        assert expirations[prefix] == {"Ref": "ImageRetentionDays"}, prefix
        assert costs.STORAGE_PLAN[prefix].expiration_days == costs.RETENTION_DAYS
        assert costs.resident_days(costs.STORAGE_PLAN[prefix]) - photo_days == 0
        assert costs.resident_days(costs.STORAGE_PLAN[prefix]) - costs.RETENTION_DAYS == costs.NONCURRENT_GRACE_DAYS
    assert expirations["logs/"] == {"Ref": "LogRetentionDays"}
    # The grace is the noncurrent-version purge, applied to every prefix.
    purge = next(r for r in rules if "NoncurrentVersionExpiration" in r)
    assert "Prefix" not in purge
    assert purge["NoncurrentVersionExpiration"]["NoncurrentDays"] == {"Ref": "NoncurrentVersionExpiryDays"}


def test_the_bill_of_a_year_meets_issue_11s_targets_at_fruits_360_size(prices):
    bill = cost_compare.year_bill(workload(throughput=MEASURED_PER_VCPU), ClusterSizing(), region=PARIS, prices=prices)
    assert [r["night"] for r in bill["nights"]] == [1, 30, 365, "365, new basis"]
    assert set(bill["months"]) == {"10000", "100000", "1000000"}
    assert [t["verdict"] for t in bill["targets"]] == ["met", "met", "met"]
    assert bill["targets"][2]["value"] == bill["months"]["1000000"]["monthly_usd"] <= cost_compare.TARGET_MONTHLY_USD
    # A new basis re-expresses the 364 retained batches: that night costs more, and says so.
    new_basis = bill["nights"][-1]
    assert new_basis["reexpressed_rows"] == 364_000_000 and new_basis["refit_batches_merged"] == 365
    assert new_basis["processing_usd_per_million"] > bill["nights"][2]["processing_usd_per_million"]
    # Phone photos (3 MB): storage dominates and the month target is honestly NOT MET.
    phone_photos = workload(throughput=MEASURED_PER_VCPU, mean_image_bytes=3e6)
    phones = cost_compare.year_bill(phone_photos, ClusterSizing(), region=PARIS, prices=prices, volumes=(1_000_000,))
    assert phones["targets"][2]["verdict"] == "NOT MET"


def test_estimate_for_run_keeps_the_dags_keywords_and_counts_what_the_run_reads(prices):
    sizing = ClusterSizing()
    plain = costs.estimate_for_run(100_000, sizing, region=PARIS, pca_rows=100_000, landing_on_s3=False, prices=prices)
    caught_up = costs.estimate_for_run(
        100_000, sizing, region=PARIS, pca_rows=150_000, catchup_images=50_000, prices=prices
    )
    assert caught_up["rows"] == {
        "featurized": 150_000,
        "pca_read": 150_000,
        "reexpressed": 0,
        "refit_batches_merged": 0,
    }
    assert caught_up["seconds"]["featurize_s"] > plain["seconds"]["featurize_s"]
    new_basis = costs.estimate_for_run(
        100_000, sizing, region=PARIS, reexpress_rows=3_000_000, refit_batches=30, prices=prices
    )
    assert new_basis["seconds"]["reexpress_s"] > 0 and new_basis["rows"]["refit_batches_merged"] == 30
    assert new_basis["cost"]["total_usd"] > plain["cost"]["total_usd"]
    assert plain["processing_usd_per_million"] > 0 and "storage class" in plain["storage_basis"]
    assert json.loads(json.dumps(new_basis)) == new_basis  # XCom and the run report carry it as JSON


def test_estimate_json_holds_the_night_and_the_steady_state_month(capsys, prices):
    assert (
        costs_cli.main(
            [
                "estimate",
                "--images",
                "1000000",
                "--night",
                "365",
                "--throughput-per-vcpu",
                str(MEASURED_PER_VCPU),
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["night"] == 365 and out["processing_usd_per_million"] <= cost_compare.TARGET_PROCESSING_USD_PER_MILLION
    assert (
        out["monthly_usd_steady_state"] == out["steady_state_month"]["monthly_usd"] <= cost_compare.TARGET_MONTHLY_USD
    )
    assert out["s3"]["requests"]["get"]["upload_manifests"] == 365
    assert (
        costs_cli.main(
            [
                "estimate",
                "--images",
                "1000000",
                "--mean-image-bytes",
                "3000000",
                "--json",
                "--throughput-per-vcpu",
                str(MEASURED_PER_VCPU),
            ]
        )
        == 0
    )
    phones = json.loads(capsys.readouterr().out)
    assert phones["monthly_usd_steady_state"] > 10 * out["monthly_usd_steady_state"]
    assert phones["s3"]["photos_per_object"] < 1000  # the 128 MiB bundle limit comes first


def test_help_describes_every_subcommand_and_option(capsys):
    for command in ("estimate", "bill", "compare"):
        with pytest.raises(SystemExit):
            costs_cli.main([command, "--help"])
        text = capsys.readouterr().out
        for option in (
            "--images",
            "--night",
            "--mean-image-bytes",
            "--reexpress-rows",
            "--refit",
            "--catchup-images",
            "--network",
            "--airflow-host",
            "--core",
            "--task",
            "--on-demand",
            "--storage-months",
            "--original-retention-days",
        ):
            assert option in text, (command, option)
    with pytest.raises(SystemExit):
        costs_cli.main(["--help"])
    top = capsys.readouterr().out
    assert all(name in top for name in ("estimate", "bill", "compare", "refresh"))
    # Every option of every subcommand says what it does.
    parser = costs_cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, command in commands.items():
        for action in command._actions:
            assert action.help, (name, action.option_strings)


def test_make_cost_prints_the_bill_of_a_year_then_the_comparisons(capsys):
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = makefile.split("\ncost:", 1)[1].split("\n\n", 1)[0]
    assert "fruits.cli.costs bill" in recipe and "fruits.cli.costs compare" in recipe
    assert costs_cli.main(["bill", "--throughput-per-vcpu", str(MEASURED_PER_VCPU)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(line.startswith("| 1 |") for line in lines) and any(line.startswith("| 365 |") for line in lines)
    assert "| USD a month | 10,000 photos a night | 100,000 photos a night | 1,000,000 photos a night |" in out
    assert sum(line.endswith("| met |") for line in lines) == 3


def test_a_new_basis_pays_the_features_retrieval_and_its_outputs_tiers_once(prices):
    rows = 364_000_000
    w = workload(throughput=MEASURED_PER_VCPU, reexpress_rows=rows)
    extra = costs.new_basis_storage(w, PARIS, prices)
    entry = prices.region(PARIS)
    assert extra["s3_retrieval"] == pytest.approx(rows * 3500 / 1e9 * entry["s3_retrieval_per_gb"]["GLACIER_IR"])
    classes = entry["s3_classes_gb_month"]
    # New outputs: 30 days Frequent + 60 days Infrequent above the Archive Instant tier the old ones had reached.
    bump_days = 30 * (classes["INTELLIGENT_TIERING_FREQUENT"] - classes["INTELLIGENT_TIERING_ARCHIVE_INSTANT"]) + 60 * (
        classes["INTELLIGENT_TIERING_INFREQUENT"] - classes["INTELLIGENT_TIERING_ARCHIVE_INSTANT"]
    )
    assert extra["s3_new_basis_tiers"] == pytest.approx(rows * 3350 / 1e9 * bump_days / (365 / 12))
    night = costs.estimate_emr(w, ClusterSizing(), region=PARIS, prices=prices)["cost"]["components_usd"]
    assert night["s3_retrieval"] == pytest.approx(extra["s3_retrieval"], abs=1e-5)
    assert (
        "s3_retrieval"
        not in costs.estimate_emr(workload(), ClusterSizing(), region=PARIS, prices=prices)["cost"]["components_usd"]
    )
    # A month with one new basis counts it once, on top of the plain month: its S3 extras, plus the
    # re-expression's cluster time (a few percent of them at the benchmark's projection rate).
    measured = workload(throughput=MEASURED_PER_VCPU)
    plain = costs.steady_state_month(measured, ClusterSizing(), region=PARIS, prices=prices)
    with_basis = costs.steady_state_month(w, ClusterSizing(), region=PARIS, prices=prices)
    storage_extras = extra["s3_retrieval"] + extra["s3_new_basis_tiers"]
    assert storage_extras < with_basis["monthly_usd"] - plain["monthly_usd"] < 1.1 * storage_extras


# ------------------------------------------------------------------------------ photo classes (issue 22)


def classes_file(tmp_path, jpeg12=20.0, heic=100.0, jpeg12_bytes=3e6) -> Path:
    """A photo_classes.json: one decode a second of thumbnails 1,000 (1 ms), of the phone classes as given; an
    end-to-end ratio that the model must not read."""

    def row(decode, ingest, size):
        stripped = size - 10_000
        return {
            "decode_preprocess_per_s_one_thread": decode,
            "featurize_vs_thumbnail": 0.5,
            "ingest_per_s_one_thread": ingest,
            # The pass: examine, and the decode of a photo bigger than its model pixels (a phone class: not measured
            # here as the sum, the benchmark measures the pass itself).
            "ingest_pass_per_s_one_thread": 1 / (1 / ingest + (1 / decode if stripped > featurize.PIXELS_BYTES else 0)),
            "mean_bytes": size,
            "mean_stripped_bytes": stripped,
            "mean_derivative_bytes": 10_000,
        }

    classes = {
        "thumbnail": row(1000, 1000, 14_530),
        "jpeg12": row(jpeg12, 50, jpeg12_bytes),
        "heic": row(heic, 100, 2e6),
    }
    path = tmp_path / "photo_classes.json"
    path.write_text(json.dumps({"measured_at": "now", "classes": classes}))
    return path


def test_a_photo_mix_weighs_each_class_s_seconds_and_bytes_and_thumbnails_stay_today_s(tmp_path):
    path = classes_file(tmp_path)
    today, _ = costs.default_throughput()
    phone = costs.photo_mix("phone", path)
    # Both phone classes are bigger than their model pixels: the ingest pass decodes them (50 ms, 10 ms) after its own
    # work (20 ms, 10 ms), mixed 70/30; featurize only infers: a thumbnail's end to end, whatever their decode.
    assert phone.ingest_per_vcpu == pytest.approx(1 / (0.7 * (1 / 50 + 1 / 20) + 0.3 * (1 / 100 + 1 / 100)))
    assert phone.featurize_per_vcpu == pytest.approx(today)
    assert costs.photo_mix("phone", classes_file(tmp_path, jpeg12=2000, heic=2000)).featurize_per_vcpu == today
    # Their rows hold the pixels, the derivative and the hash beside the photo; featurize reads those, not the photo.
    assert phone.decoded_share == 1
    row = featurize.PIXELS_BYTES + 10_000 + costs.CONTENT_SHA256_BYTES
    assert phone.decoded_bytes == pytest.approx(row) and phone.featurize_read_bytes == pytest.approx(row)
    assert phone.original_bytes == pytest.approx(0.7 * 3e6 + 0.3 * 2e6)
    assert phone.stripped_bytes == pytest.approx(phone.original_bytes - 10_000) and phone.derivative_bytes == 10_000
    # A class not bigger than its pixels is decoded by featurize as before: a thumbnail's end to end + its decode's
    # extra over a thumbnail's (49 ms), never the end-to-end ratio of the small runs; its photo is what featurize reads.
    small = costs.photo_mix("phone", classes_file(tmp_path, jpeg12_bytes=featurize.PIXELS_BYTES + 10_000))
    assert small.decoded_share == pytest.approx(0.3) and small.decoded_bytes == pytest.approx(0.3 * row)
    assert small.featurize_per_vcpu == pytest.approx(1 / (0.7 * (1 / today + 0.050 - 0.001) + 0.3 / today))
    assert small.ingest_per_vcpu == pytest.approx(1 / (0.7 / 50 + 0.3 * (1 / 100 + 1 / 100)))
    assert small.featurize_read_bytes == pytest.approx(0.7 * featurize.PIXELS_BYTES + 0.3 * row)
    thumbnail = costs.photo_mix("thumbnail", path)
    assert thumbnail.featurize_per_vcpu == pytest.approx(today) and thumbnail.ingest_per_vcpu == 1000
    assert thumbnail.decoded_share == thumbnail.decoded_bytes == 0
    assert thumbnail.featurize_read_bytes == thumbnail.stripped_bytes
    with pytest.raises(ValueError, match="photo mix must be one of"):
        costs.photo_mix("dslr", path)
    with pytest.raises(FileNotFoundError, match="photo_classes.py"):
        costs.photo_mix("phone", tmp_path / "missing.json")


def test_the_phone_month_bills_the_ingest_step_the_short_originals_the_landing_and_the_app_apart(prices):
    sizing = ClusterSizing()
    plain = workload(mean_image_bytes=2.7e6, landing_on_s3=True)
    phone = replace(
        plain,
        photo_mix="phone",
        ingest_per_vcpu=60.0,
        derivative_bytes=12_000,
        original_retention_days=2,
        landing_image_bytes=2.75e6,
        landing_days=0.5,
    )
    before = costs.steady_state_month(plain, sizing, region=PARIS, prices=prices)
    after = costs.steady_state_month(phone, sizing, region=PARIS, prices=prices)
    night = costs.estimate_emr(phone, sizing, region=PARIS, prices=prices)
    assert list(night["seconds"])[:3] == ["ingest_s", "featurize_s", "pca_s"]
    # The ingest step reads 2.75 TB from the landing once (it bundles in the same pass) while it writes 2.7 TB of
    # bundles: its workers' baseline bandwidth (3.75 Gbps each way a worker), not its CPU work, sets its time.
    grown = sized_for_night(sizing, round(2.75e12), phone.images)  # the cluster the night's bytes size, as the plan
    workers = grown.core_count + grown.task_count
    network_s = 2.75e12 / (workers * 3.75e9 / 8)
    assert 1e6 / (60.0 * worker_vcpus(grown)) < network_s
    assert night["seconds"]["ingest_s"] == pytest.approx(network_s + costs.Overheads().step_s, abs=0.1)
    assert night["network"]["bound_steps"] == ["ingest", "featurize"]
    # Originals: two days in Standard (the sweep deletes every version) instead of the batch's 395.
    raw = costs.batch_storage(phone, PARIS, prices)["raw/"]
    standard = prices.region(PARIS)["s3_classes_gb_month"]["STANDARD"]
    assert raw["resident_days"] == 2 and raw["usd"] == pytest.approx(2.7e3 * standard * 2 / costs.DAYS_PER_MONTH)
    assert after["components_usd"]["storage raw/"] < before["components_usd"]["storage raw/"] / 40
    assert after["storage_classes"]["derived/"]["class"] == costs.GLACIER_IR
    landing = 2.75e3 * 0.5 / costs.DAYS_PER_MONTH * standard * costs.DAYS_PER_MONTH
    assert after["components_usd"]["storage landing"] == pytest.approx(landing, rel=1e-3)
    assert "s3_landing_storage" not in {k for k, v in night["cost"]["components_usd"].items() if v == 0}
    # The app's PUTs: on their own line, outside the pipeline's month.
    put = prices.unit(PARIS, "s3_put_per_1000")
    assert after["app_uploads_usd"] == pytest.approx(1e6 * costs.DAYS_PER_MONTH / 1000 * put, abs=0.01)
    assert (
        after["monthly_usd_pipeline"]
        == after["monthly_usd"]
        == pytest.approx(sum(after["components_usd"].values()), abs=0.05)
    )
    assert not any("app" in name for name in after["components_usd"])


def test_originals_removed_by_their_run_are_billed_its_hours_and_a_window_its_days(prices):
    sizing = ClusterSizing()
    kept = workload(mean_image_bytes=2.7e6, landing_on_s3=True, photo_mix="phone", ingest_per_vcpu=60.0)
    kept = replace(kept, derivative_bytes=12_000, landing_image_bytes=2.75e6, original_retention_days=1)
    removed = replace(kept, original_retention_days=0)
    night = costs.estimate_emr(removed, sizing, region=PARIS, prices=prices)
    seconds = night["seconds"]
    # From the ingest step's start to the end of the run: the steps and the termination, not the boot.
    run_s = costs.originals_seconds(seconds)
    steps = sum(v for k, v in seconds.items() if k in ("ingest_s", "featurize_s", "pca_s"))
    assert run_s == pytest.approx(steps + seconds["termination_s"], abs=0.5) and run_s < seconds["wall_s"]
    assert night["storage_basis"].endswith("the originals (raw/) the run's hours from its ingest step")
    raw = costs.batch_storage(removed, PARIS, prices, run_s)["raw/"]
    standard = prices.region(PARIS)["s3_classes_gb_month"]["STANDARD"]
    assert raw["resident_days"] == pytest.approx(run_s / 86400) and raw["resident_days"] < 1 / 6
    assert raw["storage_class"] == costs.STANDARD
    assert raw["usd"] == pytest.approx(2.7e3 * standard * run_s / 86400 / costs.DAYS_PER_MONTH)
    # The run's seconds are the one source: a slower featurize keeps the originals longer.
    slow = replace(removed, throughput_per_vcpu=removed.throughput_per_vcpu / 2)
    slow_s = costs.originals_seconds(costs.estimate_emr(slow, sizing, region=PARIS, prices=prices)["seconds"])
    assert slow_s > run_s and costs.batch_storage(slow, PARIS, prices, slow_s)["raw/"]["usd"] > raw["usd"]
    with pytest.raises(ValueError, match="need the run's seconds"):
        costs.batch_storage(removed, PARIS, prices)
    # A window of N >= 1 days is billed N whole days, whatever the run's length.
    assert costs.batch_storage(kept, PARIS, prices, run_s)["raw/"]["resident_days"] == 1
    month_kept = costs.steady_state_month(kept, sizing, region=PARIS, prices=prices)
    month_removed = costs.steady_state_month(removed, sizing, region=PARIS, prices=prices)
    assert month_kept["components_usd"]["storage raw/"] == pytest.approx(
        2.7e3 * standard / costs.DAYS_PER_MONTH * costs.DAYS_PER_MONTH, rel=1e-3
    )
    hours = costs.originals_seconds(
        costs.estimate_emr(costs.night_workload(removed, costs.RETENTION_DAYS), sizing, region=PARIS, prices=prices)[
            "seconds"
        ]
    )
    # The same bytes in Standard: the run's share of a day against a whole day.
    kept_raw, removed_raw = (m["components_usd"]["storage raw/"] for m in (month_kept, month_removed))
    assert removed_raw == pytest.approx(kept_raw * hours / 86400, rel=1e-3) and removed_raw < kept_raw / 10
    saved = month_kept["monthly_usd"] - month_removed["monthly_usd"]
    # ... and featurize's second scan of a window's bundles, in the processing.
    processing = month_kept["components_usd"]["processing"] - month_removed["components_usd"]["processing"]
    assert processing > 0 and saved == pytest.approx(kept_raw - removed_raw + processing, abs=0.01)
    assert any(
        f"originals removed by the run that commits their features (~{hours / 3600:.1f} h)" in line
        for line in month_removed["assumptions"]
    )
    assert any("originals kept 1 day(s)" in line for line in month_kept["assumptions"])


def test_bill_takes_the_originals_window_the_settings_accept(capsys):
    if not costs.PHOTO_CLASSES_FILE.is_file():
        pytest.skip("benchmarks/results/photo_classes.json not measured on this checkout")
    raw = {}
    for days in (0, 1, 7):
        assert costs_cli.main(["bill", "--photo-mix", "phone", "--json", "--original-retention-days", str(days)]) == 0
        raw[days] = json.loads(capsys.readouterr().out)["months"]["1000000"]["components_usd"]["storage raw/"]
    # A window of N days bills N days of originals; the run that removes them bills a fraction of one.
    assert raw[7] == pytest.approx(7 * raw[1], rel=1e-3) and 0 < raw[0] < raw[1] / 20
    for bad in ("-1", str(costs.RETENTION_DAYS + 1), "one"):
        with pytest.raises(SystemExit) as exit_info:
            costs_cli.main(["bill", "--photo-mix", "phone", "--original-retention-days", bad])
        assert exit_info.value.code == 2 and "--original-retention-days" in capsys.readouterr().err


def test_bill_photo_mix_phone_json_prints_the_pipeline_s_month_and_issue_22_s_targets(capsys):
    if not costs.PHOTO_CLASSES_FILE.is_file():
        pytest.skip("benchmarks/results/photo_classes.json not measured on this checkout")
    assert costs_cli.main(["bill", "--photo-mix", "phone", "--json"]) == 0
    bill = json.loads(capsys.readouterr().out)
    assert bill["photo_mix"] == "phone" and bill["monthly_usd_pipeline"] > 0 and bill["app_uploads_usd"] > 100
    month = bill["months"]["1000000"]
    assert month["monthly_usd_pipeline"] == bill["monthly_usd_pipeline"]
    assert [t["target"].split(":")[0] for t in bill["targets"]] == ["phone photos"] * 3
    assert costs_cli.main(["bill", "--photo-mix", "thumbnail", "--json"]) == 0
    thumbnails = json.loads(capsys.readouterr().out)
    assert thumbnails["app_uploads_usd"] == bill["app_uploads_usd"]  # the app's photos land in S3, whatever their size
    assert thumbnails["targets"][-1]["target"].startswith("thumbnail photos: processing")
    # Both bills price the changes to the jobs not made yet, each row saving on the one above it.
    for levers in (bill["levers"], thumbnails["levers"]):
        assert levers[0]["change"] == "today's jobs"
        assert [r["processing_usd_per_million"] for r in levers] == sorted(
            (r["processing_usd_per_million"] for r in levers), reverse=True
        )
    assert [r["change"] for r in thumbnails["levers"]][:2] == [
        "today's jobs",
        "ingest and featurize fused: no bundles written nor read back",
    ]  # an S3 landing: nothing is staged; thumbnails' features fit in their splits' files
    # The text bill says what the last row still pays, against the mix's target.
    assert costs_cli.main(["bill", "--photo-mix", "thumbnail"]) == 0
    last = thumbnails["levers"][-1]["processing_usd_per_million"]
    target = cost_compare.PHOTO_MIX_TARGETS["thumbnail"]["processing_usd_per_million"]
    said = (
        f"After every change: {last:.4f} USD per million against {target:.2f} ({cost_compare.verdict(last <= target)})"
    )
    assert said in capsys.readouterr().out


# ------------------------------------------------------------------ what the cluster's jobs do in S3 (issue 22)


def phone_night(**extra) -> costs.Workload:
    """A million 3 MB photos from an s3:// landing, ingested and decoded on the cluster (their pixels, derivative and
    hash in their bundle rows, not their bytes: no fruits_original_retention_days window unless `extra` gives one),
    derivatives kept."""
    decoded = featurize.PIXELS_BYTES + 13_000 + costs.CONTENT_SHA256_BYTES
    night = {"original_retention_days": 0, **extra}
    return workload(
        mean_image_bytes=3e6,
        landing_on_s3=True,
        ingest_per_vcpu=100.0,
        derivative_bytes=13_000,
        landing_image_bytes=3e6,
        decoded_share=1.0,
        decoded_bytes=decoded,
        decoded_stripped_bytes=3e6,
        decoded_landing_bytes=3e6,
        featurize_read_bytes=decoded,
        **night,
    )


def ingest_job_files(photos: int, bundled_bytes: int) -> int:
    """The files spark_jobs/ingest.py writes, step by step as Spark runs it: round-robin read tasks
    (bundle_landing's count), coalesced into write_bundles' parts as contiguous runs of tasks, each part cut at
    BUNDLE_MAX_PHOTOS rows a file (maxRecordsPerFile)."""
    tasks = max(1, -(-photos // ingest.PHOTOS_PER_TASK), -(-bundled_bytes // ingest.BUNDLE_MAX_BYTES))
    parts = max(1, -(-photos // ingest.BUNDLE_MAX_PHOTOS), -(-bundled_bytes // ingest.BUNDLE_MAX_BYTES))
    per_task = [photos // tasks + (task < photos % tasks) for task in range(tasks)]
    if parts >= tasks:
        runs = [[size] for size in per_task]
    else:
        bounds = [part * tasks // parts for part in range(parts + 1)]
        runs = [per_task[bounds[part] : bounds[part + 1]] for part in range(parts)]
    return sum(-(-sum(run) // ingest.BUNDLE_MAX_PHOTOS) for run in runs if sum(run))


def test_the_ingest_job_s_bundles_are_counted_by_its_own_rule():
    # Its constants, not copies: the count follows them.
    for photos, bundled in (
        (5, 5 * 4_668),
        (1_000_000, 4_668 * 10**6),
        (1_000_000, 150_528 * 10**6),
        (10**6, 3 * 10**12),
    ):
        assert costs.ingest_bundles(photos, bundled) == ingest_job_files(photos, bundled), (photos, bundled)
    assert costs.ingest_bundles(0, 0) == 0
    # A million thumbnails: two read tasks coalesced into a part fill one file, no sliver beside it.
    assert 2 * ingest.PHOTOS_PER_TASK <= ingest.BUNDLE_MAX_PHOTOS
    assert costs.ingest_bundles(10**6, 4_668 * 10**6) == math.ceil(10**6 / ingest.BUNDLE_MAX_PHOTOS)
    # What a photo brings to its bundle as the job counts it from the listing (ingest.bundled_bytes): a decoded
    # photo its model pixels, and its own bytes only with a window.
    listing = [{"size": 3_000_000, "reason": ""}] * 4 + [{"size": 3_000_000, "reason": "not a photo"}]
    for days, keep in ((0, False), (1, True)):
        phone = phone_night(images=4, original_retention_days=days)
        assert phone.keeps_decoded_photos is keep
        assert phone.images * phone.ingest_bundled_bytes == ingest.bundled_bytes(listing, keep)
    thumbnails = workload(images=4, ingest_per_vcpu=100.0, landing_image_bytes=4_668.0)
    assert thumbnails.images * thumbnails.ingest_bundled_bytes == ingest.bundled_bytes(
        [{"size": 4_668, "reason": ""}] * 4, False
    )
    # The default phone night: its bundles hold the pixels and derivatives, a file per BUNDLE_MAX_BYTES of pixels;
    # a window's, the photos too.
    default, window = phone_night(), phone_night(original_retention_days=1)
    pixels = default.images * featurize.PIXELS_BYTES
    assert (
        default.objects == costs.ingest_bundles(default.images, pixels) == math.ceil(pixels / ingest.BUNDLE_MAX_BYTES)
    )
    assert default.bundle_row_bytes == default.decoded_bytes
    assert window.bundle_row_bytes == 3e6 + window.decoded_bytes
    assert window.objects == costs.ingest_bundles(window.images, window.images * (3_000_000 + featurize.PIXELS_BYTES))
    assert window.objects > 10 * default.objects


def test_the_ingest_job_reads_each_landing_photo_once_and_stages_a_local_one(prices):
    worker, cluster = workload(landing_on_s3=True), workload(landing_on_s3=True, ingest_per_vcpu=100.0)
    # The job reads what the listing names (ingest.examine_and_bundle), once, whatever the night's size: a million
    # thumbnails (4.5 GB) and a million phone photos (3 TB) alike, one GET a photo.
    for night in (worker, cluster, phone_night()):
        assert costs.s3_requests(night)["get"]["landing_reads"] == night.images == 1_000_000
    # Listed once, by the planner.
    listings = [costs.s3_requests(w)["put"]["landing_listing"] for w in (worker, cluster)]
    assert listings == [1000, 1000]
    # A landing the cluster cannot read: each photo copied to the lake first (a PUT), then read back like one.
    staged = costs.s3_requests(workload(ingest_per_vcpu=100.0))
    assert staged["put"]["landing_staging"] == 1_000_000 and staged["get"]["landing_reads"] == 1_000_000
    assert costs.s3_requests(workload())["put"]["landing_staging"] == 0  # the worker's upload reads it in place
    # What binaryFile would cost (its status and open HEADs): three.
    assert costs.s3_requests(replace(cluster, landing_gets_per_photo=3))["get"]["landing_reads"] == 3_000_000


def test_what_the_cluster_writes_pays_a_multipart_upload_per_file():
    assert costs.committed_file_puts(0, 0) == 0
    assert costs.committed_file_puts(10, 10 * 4.5e6) == 10 * (2 + 1)  # create, one part, complete
    assert costs.committed_file_puts(2, 2 * 300 * 2**20) == 2 * (2 + 3)  # 300 MiB: three 128 MiB parts
    # Bundles written by the ingest job pay it; bundles the worker's upload writes are one PutObject each.
    cluster = workload(ingest_per_vcpu=100.0)
    assert costs.s3_requests(cluster)["put"]["upload_objects"] == cluster.objects * 3
    assert costs.s3_requests(workload())["put"]["upload_objects"] == 1000


def test_featurize_writes_one_file_per_input_split_and_each_big_one_moves_to_glacier(prices):
    # The default night's bundles hold the decoded columns only: featurize's splits are theirs.
    default = phone_night()
    pixel_splits = math.ceil(default.images * default.decoded_bytes / featurize.MAX_SPLIT_BYTES)
    assert costs.featurize_output_files(default) == max(pixel_splits, math.ceil(default.images * 3500 / 64e6))
    phone = phone_night(original_retention_days=1)
    # A window's: 3 TB of photos and their decoded columns in featurize's 2 GiB splits (Spark cuts files by their
    # bytes, whichever columns it reads): a task each, writing a features file and a derivatives file.
    splits = math.ceil(phone.images * (3e6 + phone.decoded_bytes) / featurize.MAX_SPLIT_BYTES)
    assert costs.featurize_output_files(phone) == splits > math.ceil(3e12 / featurize.MAX_SPLIT_BYTES)
    assert costs.featurize_output_files(workload()) == 55  # small photos: 64 MB parts, as assumed before
    requests = costs.s3_requests(phone)
    assert requests["put"]["featurize_outputs"] == 2 * splits * 3 + 3
    assert requests["get"]["pca_reads"] == 2 * splits * 4
    # 2.5 MB of features and 9.3 MB of derivatives a file: each is a Glacier IR transition.
    volumes = costs.area_volumes(phone)
    assert volumes["features/"]["large_objects"] == volumes["derived/"]["large_objects"] == splits
    transitions = prices.region(PARIS)["s3_transition_per_1000"]["GLACIER_IR"] * splits / 1000
    coalesced = replace(phone, featurize_outputs=60)
    saved = costs.batch_storage(phone, PARIS, prices)["features/"]["usd"]
    saved -= costs.batch_storage(coalesced, PARIS, prices)["features/"]["usd"]
    assert saved == pytest.approx(transitions * (1 - 60 / splits))


def test_a_step_moving_more_than_its_workers_bandwidth_carries_lasts_its_bytes_over_the_network(prices):
    phone, overheads = phone_night(original_retention_days=1), costs.Overheads()  # a window: the photos kept too
    sizing = ClusterSizing()  # 2 workers, 3.75 Gbps each way each
    bandwidth = costs.network_bytes_per_s(sizing)
    assert bandwidth == 2 * 3.75e9 / 8
    free = costs.job_seconds(phone, 16, overheads)
    bound = costs.job_seconds(phone, 16, overheads, bandwidth)
    # ingest: 3 TB in from the landing, once; out, the bundles: the photos and their decoded columns (the busier way).
    moved = costs.step_bytes(phone)
    bundles = phone.images * (3e6 + phone.decoded_bytes)
    assert moved["ingest_s"] == pytest.approx(bundles) and bundles > phone.images * phone.landing_image_bytes
    assert bound["ingest_s"] == pytest.approx(bundles / bandwidth + overheads.step_s)
    # featurize reads the decoded columns back (Parquet column pruning), not the photos: its CPU work sets its time.
    assert moved["featurize_s"] == pytest.approx(phone.images * phone.decoded_bytes)
    assert bound["featurize_s"] == pytest.approx(free["featurize_s"])
    assert costs.network_bound_steps(phone, 16, overheads, bandwidth) == ["ingest"]
    # Without the decode in the ingest pass featurize would read the 3 TB of photos back, the network its bound.
    undecoded = replace(phone, decoded_share=0.0, decoded_bytes=0.0, featurize_read_bytes=None)
    assert costs.step_bytes(undecoded)["featurize_s"] == 3e12
    assert costs.job_seconds(undecoded, 16, overheads, bandwidth)["featurize_s"] > bound["featurize_s"]
    # The plan sizes the night on the same crossings from its listing (sized_for_night), all but the decoded photos'
    # derivatives and hashes, which it cannot know before the decode.
    beside_pixels = phone.decoded_bytes - featurize.PIXELS_BYTES
    plan = night_network_bytes(round(phone.images * phone.landing_image_bytes), phone.images, keep_originals=True)
    assert moved["ingest_s"] + moved["featurize_s"] == pytest.approx(plan + 2 * phone.images * beside_pixels)
    # Without a window the ingest pass writes back only the decoded columns: its read of the landing is the busier
    # way, and the plan counts the pixels once.
    default = phone_night()
    landing = default.images * default.landing_image_bytes
    assert costs.step_bytes(default)["ingest_s"] == landing > default.images * default.bundle_row_bytes
    plan = night_network_bytes(round(landing), default.images)
    assert sum(costs.step_bytes(default).values()) - moved["pca_s"] == pytest.approx(
        plan + default.images * beside_pixels
    )
    assert bound["pca_s"] == free["pca_s"]  # 7 GB of features: its CPU work is longer
    # Twice the workers, half the network time; a night of thumbnails is never bound.
    bigger = costs.job_seconds(phone, 32, overheads, 2 * bandwidth)
    assert bigger["ingest_s"] - overheads.step_s == pytest.approx((bound["ingest_s"] - overheads.step_s) / 2)
    assert costs.network_bound_steps(workload(ingest_per_vcpu=1000.0), 16, overheads, bandwidth) == []


def test_featurize_reads_a_decoded_photo_s_row_without_its_content(prices):
    phone = phone_night()
    undecoded = dict(decoded_share=0.0, decoded_bytes=0.0, decoded_stripped_bytes=0.0, decoded_landing_bytes=0.0)
    undecoded = replace(phone, featurize_read_bytes=None, **undecoded)
    # A row group's columns before the content and those after it: two ranged GETs instead of one.
    photos = phone.photos_per_object
    groups = math.ceil(photos / storage.BUNDLE_ROW_GROUP_PHOTOS)
    extra = groups * (costs.GETS_PER_PRUNED_ROW_GROUP - costs.GETS_PER_ROW_GROUP)
    opened = costs.GETS_TO_OPEN_A_BUNDLE  # a second scan opens each bundle again
    pruned = costs.featurize_gets_per_bundle(photos, 1.0, keep_originals=True)
    assert pruned == costs.featurize_gets_per_bundle(photos, 0.0) + extra + opened
    reads = costs.s3_requests(phone)["get"]["featurize_reads"]  # no window: one scan, the content null
    assert reads == round(phone.objects * costs.featurize_gets_per_bundle(photos, 1.0))
    window = replace(phone, original_retention_days=1)
    assert costs.s3_requests(window)["get"]["featurize_reads"] == round(
        window.objects * costs.featurize_gets_per_bundle(window.photos_per_object, 1.0, keep_originals=True)
    )
    # raw/ holds the decoded columns, not the photos (no window); with a window, beside the photos.
    assert costs.area_volumes(phone)["raw/"]["bytes"] == pytest.approx(phone.images * phone.decoded_bytes)
    window = replace(phone, original_retention_days=1)
    raw = costs.area_volumes(window)["raw/"]["bytes"]
    assert raw == pytest.approx(costs.area_volumes(undecoded)["raw/"]["bytes"] + phone.images * phone.decoded_bytes)
    with pytest.raises(ValueError, match="decoded_share needs ingest_per_vcpu"):
        workload(decoded_share=1.0)  # the Airflow worker's upload decodes nothing
    with pytest.raises(ValueError, match="share"):
        replace(phone, decoded_share=1.5)


def test_the_levers_save_what_their_requests_and_minutes_cost(prices):
    fused = "ingest and featurize fused: no bundles written nor read back"
    # A window: the photos' bundles are many files, and featurize's splits of them too.
    rows = cost_compare.photo_levers(
        phone_night(original_retention_days=1), ClusterSizing(), region=PARIS, prices=prices
    )
    assert [r["change"] for r in rows][:3] == ["today's jobs", "featurize writes 64 MB parts", fused]
    assert rows[1]["wall_minutes"] == rows[0]["wall_minutes"]  # fewer files: requests, not minutes
    assert rows[2]["wall_minutes"] < rows[1]["wall_minutes"]  # the bundles' writes: the network-bound ingest's bytes
    # The default night: the pixel bundles are few and small, featurize's outputs too; fusing saves their writes,
    # their reread and a step, far less than it saves with a window.
    default = cost_compare.photo_levers(phone_night(), ClusterSizing(), region=PARIS, prices=prices)
    assert [r["change"] for r in default][:2] == ["today's jobs", fused]
    assert 0 < default[1]["saved_usd_per_million"] < rows[2]["saved_usd_per_million"] / 2
    assert default[0]["processing_usd_per_million"] < rows[0]["processing_usd_per_million"]
    for levers in (rows, default):
        assert all(r["saved_usd_per_million"] > 0 for r in levers[1:])
        cheapest = [r for r in levers if r["change"].endswith("(the cheapest count)")]
        if cheapest:  # the cheapest task count, when it is not the one the night is sized for: always last
            assert levers[-1] is cheapest[0] and levers[-1]["workers"] != levers[-2]["workers"]


def test_a_fused_ingest_and_featurize_reads_the_landing_once_and_writes_no_bundles(prices):
    phone, overheads = phone_night(), costs.Overheads()
    fused = replace(phone, ingest_fused=True)
    requests, today = costs.s3_requests(fused), costs.s3_requests(phone)
    # One GET a landing photo, as the ingest job's one pass; no bundle read back; the other GETs are the run's few
    # manifests and the PCA's reads of the outputs.
    assert requests["get"]["landing_reads"] == fused.images == today["get"]["landing_reads"]
    assert requests["get"]["featurize_reads"] == 0
    others = sum(requests["get"].values()) - requests["get"]["landing_reads"]
    assert 0 < others < fused.images / 50
    assert requests["put"]["upload_objects"] == 0 and today["put"]["upload_objects"] > 0
    # What fusing saves in requests now: the bundles' writes and featurize's reads of their decoded columns.
    saved_gets = sum(today["get"].values()) - sum(requests["get"].values())
    assert saved_gets == today["get"]["featurize_reads"]
    assert costs.area_volumes(fused)["raw/"] == {"bytes": 0, "large_objects": 0}  # no originals in the lake
    # One step: the photo's ingest and featurize seconds on one CPU, its bytes the landing's once (the outputs go
    # the other way); the longer of the two.
    bandwidth = costs.network_bytes_per_s(ClusterSizing())
    seconds = costs.job_seconds(fused, 16, overheads, bandwidth)
    assert "ingest_s" not in seconds
    cpu = fused.images * (1 / fused.ingest_per_vcpu + 1 / fused.throughput_per_vcpu) / 16
    assert seconds["featurize_s"] == pytest.approx(max(cpu, 3e12 / bandwidth) + overheads.step_s)
    assert costs.step_bytes(fused)["featurize_s"] == 3e12
    # In bytes it saves featurize's read of the decoded columns, and with a window the bundles' writes over the
    # landing's read.
    moved = costs.step_bytes(phone)
    assert moved["ingest_s"] + moved["featurize_s"] - 3e12 == pytest.approx(phone.images * phone.decoded_bytes)
    moved = costs.step_bytes(replace(phone, original_retention_days=1))
    assert moved["ingest_s"] + moved["featurize_s"] - 3e12 == pytest.approx(2 * phone.images * phone.decoded_bytes)
    with pytest.raises(ValueError, match="ingest_per_vcpu"):
        workload(ingest_fused=True)  # nothing to fuse: the Airflow worker's upload


def test_the_fused_lever_and_spot_workers_price_what_they_change(prices):
    levers = cost_compare.photo_levers(phone_night(), ClusterSizing(), region=PARIS, prices=prices)
    rows = {r["change"]: r for r in levers}
    fused = rows["ingest and featurize fused: no bundles written nor read back"]
    before = levers[levers.index(fused) - 1]
    assert fused["processing_usd_per_million"] < before["processing_usd_per_million"]
    # A million photos, a million landing GETs (0.42 USD in Paris), today's jobs as the fused step: every row's floor.
    for row in rows.values():
        assert row["usd_per_million"]["landing_get_requests"] == 1_000_000
        assert row["usd_per_million"]["landing_gets"] == pytest.approx(prices.unit(PARIS, "s3_get_per_1000") * 1000)
    # What the fused step saves in requests is the bundles' writes (the committer's multipart upload of each) and
    # featurize's reads of their decoded columns.
    night = costs.s3_requests(costs.night_workload(phone_night(), costs.RETENTION_DAYS))
    bundle_puts = night["put"]["upload_objects"] * prices.unit(PARIS, "s3_put_per_1000") / 1000
    bundle_gets = night["get"]["featurize_reads"] * prices.unit(PARIS, "s3_get_per_1000") / 1000
    saved = before["usd_per_million"]["s3_requests"] - fused["usd_per_million"]["s3_requests"]
    assert saved == pytest.approx(bundle_puts + bundle_gets, rel=0.01)
    # Its night is never shorter than the landing's bytes over the workers it runs on.
    floor_s = phone_night().images * 3e6 / (fused["workers"] * ClusterSizing().worker_facts.network_gbps * 1e9 / 8)
    assert fused["wall_minutes"] * 60 >= floor_s
    # Every worker on spot: the core node's EC2 hours at the spot price; EMR's fee is the same on either market.
    spot = rows["every worker on spot, the core node too"]
    assert spot["workers"] == fused["workers"] and spot["wall_minutes"] == fused["wall_minutes"]
    assert spot["usd_per_million"]["emr"] == fused["usd_per_million"]["emr"]
    worker = ClusterSizing().worker_types[0]
    core_hour = prices.ec2_hourly(PARIS, worker) - prices.ec2_hourly(PARIS, worker, costs.SPOT)
    assert fused["usd_per_million"]["ec2"] - spot["usd_per_million"]["ec2"] == pytest.approx(
        core_hour * fused["wall_minutes"] / 60, rel=1e-2
    )
    assert costs.fleet_markets(ClusterSizing(), spot_core=True) == {
        "MASTER": "ON_DEMAND",
        "CORE": "SPOT",
        "TASK": "SPOT",
    }
