"""The run report: built from EMR's real answers (moto's DescribeCluster / ListSteps for a cluster created
from our own RunJobFlow request), billed with the cost model, written to S3 (moto) and to the local lake.

moto does not run clusters: steps stay RUNNING and the cluster never ends, and it implements neither
ListInstanceFleets nor fleet instances. So the test drives moto's backend objects (states and
timestamps, NormalizedInstanceHours) and answers ListInstanceFleets / ListInstances with botocore's
Stubber, whose responses botocore validates against the EMR service model.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.stub import Stubber
from conftest import commit_output
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.emr.models import emr_backends

from fruits import costs, lake, run_report, steps, storage, upload
from fruits.emr_cluster import ClusterSizing, build_job_flow
from fruits.settings import PipelineSettings
from fruits.storage import LocalStore, S3Store

REGION = "eu-west-3"
BATCH = "2026-11-21"
SETTINGS = PipelineSettings(region=REGION, bucket="fruits-lake-test")
ROOT = f"s3://{SETTINGS.bucket}"
CREATED = datetime(2026, 11, 22, 1, 0, 0, tzinfo=UTC)
# The run as it went: ready after 7 min, featurize 20 min, pca 4 min, ended 1.5 min after the last step.
READY = CREATED + timedelta(minutes=7)
FEATURIZE = (READY + timedelta(seconds=10), READY + timedelta(minutes=20, seconds=10))
PCA = (FEATURIZE[1] + timedelta(seconds=5), FEATURIZE[1] + timedelta(minutes=4, seconds=5))
ENDED = PCA[1] + timedelta(seconds=90)
WALL = (ENDED - CREATED).total_seconds()
JOB_METRICS = {
    "job": "featurize",
    "batch_id": BATCH,
    "seen": 120_000,
    "featurized": 119_990,
    "quarantined": 10,
    "seconds": 1150.0,
    "images_per_second": 104.35,
}
PCA_REPORT = {
    "job": "pca",
    "mode": "auto",
    "basis": 3,
    "rows_read": 119_990,
    "rows_in_basis": 480_000,
    "k": 87,
    "total_explained_variance": 0.95,
    "seconds": 230.0,
    "drift_explained_ratio": 0.97,
    "drift_mean_shift": 0.12,
}
WORK = {
    "retained_since": "2025-11-22",
    "catch_up": ["2026-11-19"],
    "pca_catch_up": [],
    "featurize": ["2026-11-19", BATCH],
    "nightly": ["2026-11-19", BATCH],
    "reexpress": ["2026-11-19", BATCH],
    "current_basis": 3,
    "windows": {},
}


def commit_job_outputs(store, root, metrics=JOB_METRICS, pca_report=PCA_REPORT, basis=3):
    """The jobs' committed outputs of BATCH, as featurize and pca nightly leave them."""
    commit_output(
        store,
        lake.features_uri(root, BATCH),
        {"part-0.parquet": b"p", "_job_metrics.json": b"{}"},
        {
            "job": "featurize",
            "batch_id": BATCH,
            "rows": metrics["featurized"],
            "seen": metrics["seen"],
            "quarantined": metrics["quarantined"],
            "metrics": metrics,
        },
    )
    commit_output(
        store,
        lake.pca_reduced_uri(root, basis, BATCH),
        {"reduced/part-0.parquet": b"p", "pca_matrix.csv": b"path", "report.json": json.dumps(pca_report).encode()},
    )
    store.put(lake.pca_current_basis_uri(root), json.dumps({"version": basis, "location": "x"}).encode(), "-")


@pytest.fixture(autouse=True)
def aws(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield


@pytest.fixture(scope="module")
def prices() -> costs.PriceBook:
    return costs.PriceBook.load()


def sizing() -> ClusterSizing:
    return ClusterSizing(core_count=1, task_count=2, spot=True)


def ended_cluster(normalized_instance_hours: int | None = None, *, ended: bool = True) -> tuple[str, dict]:
    """Our RunJobFlow request sent to moto in eu-west-3, two steps added, then moto's objects moved to
    where a real run leaves them (moto would keep them RUNNING forever)."""
    request = build_job_flow(SETTINGS, name=f"fruits-{BATCH}", code_uri=lake.code_uri(ROOT, "abc123"), sizing=sizing())
    emr = boto3.client("emr", region_name=REGION)
    cluster_id = emr.run_job_flow(**request)["JobFlowId"]
    code = lake.code_uri(ROOT, "abc123")
    emr.add_job_flow_steps(
        JobFlowId=cluster_id,
        Steps=[
            steps.emr_step(steps.featurize_job(ROOT, BATCH, code), batch=BATCH),
            steps.emr_step(steps.pca_nightly_job(ROOT, BATCH, code), batch=BATCH),
        ],
    )
    backend_cluster = emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters[cluster_id]
    backend_cluster.creation_datetime, backend_cluster.ready_datetime = CREATED, READY
    backend_cluster.end_datetime = ENDED if ended else None
    backend_cluster.state = "TERMINATED" if ended else "TERMINATING"
    for step, (start, end) in zip(backend_cluster.steps, (FEATURIZE, PCA)):
        step.creation_date_time, step.start_date_time, step.end_date_time, step.state = CREATED, start, end, "COMPLETED"
    if normalized_instance_hours is not None:
        backend_cluster.normalized_instance_hours = normalized_instance_hours
    return cluster_id, request


def fleets_answer(request: dict) -> list[dict]:
    """ListInstanceFleets for the cluster our request created: what EMR answers after termination
    (targets kept, provisioned capacity back to 0, each VolumesPerInstance expanded into devices)."""
    fleets = []
    for number, fleet in enumerate(request["Instances"]["InstanceFleets"]):
        fleets.append(
            {
                "Id": f"if-{number}",
                "Name": fleet["Name"],
                "Status": {"State": "TERMINATED", "Timeline": {"CreationDateTime": CREATED, "EndDateTime": ENDED}},
                "InstanceFleetType": fleet["InstanceFleetType"],
                "TargetOnDemandCapacity": fleet["TargetOnDemandCapacity"],
                "TargetSpotCapacity": fleet["TargetSpotCapacity"],
                "ProvisionedOnDemandCapacity": 0,
                "ProvisionedSpotCapacity": 0,
                "InstanceTypeSpecifications": [
                    {
                        "InstanceType": config["InstanceType"],
                        "WeightedCapacity": config["WeightedCapacity"],
                        "EbsOptimized": True,
                        "EbsBlockDevices": [
                            {"VolumeSpecification": device["VolumeSpecification"], "Device": f"/dev/sd{chr(98 + k)}"}
                            for device in config["EbsConfiguration"]["EbsBlockDeviceConfigs"]
                            for k in range(device["VolumesPerInstance"])
                        ],
                    }
                    for config in fleet["InstanceTypeConfigs"]
                ],
            }
        )
    return fleets


def instance(number: int, fleet_id: str, instance_type: str, market: str, ended_at: datetime) -> dict:
    return {
        "Id": f"ci-{number}",
        "Ec2InstanceId": f"i-{number:017x}",
        "InstanceFleetId": fleet_id,
        "Market": market,
        "InstanceType": instance_type,
        "EbsVolumes": [{"Device": "/dev/sdb", "VolumeId": f"vol-{number}"}],
        "Status": {
            "State": "TERMINATED",
            "Timeline": {"CreationDateTime": CREATED, "ReadyDateTime": READY, "EndDateTime": ended_at},
        },
    }


def record(
    cluster_id: str, request: dict, instances: list[dict] | None = None, *, instances_denied: bool = False
) -> dict:
    """collect_cluster_record on a client answering with moto's real DescribeCluster/ListSteps and the
    stubbed fleets/instances."""
    moto_emr = boto3.client("emr", region_name=REGION)
    described = moto_emr.describe_cluster(ClusterId=cluster_id)
    listed_steps = moto_emr.list_steps(ClusterId=cluster_id)
    for answer in (described, listed_steps):
        answer.pop("ResponseMetadata")
    # moto answers an empty KerberosAttributes, which EMR omits without Kerberos (and botocore's model
    # rejects: Realm is required); drop it so the Stubber's validation passes on everything else.
    if not described["Cluster"].get("KerberosAttributes"):
        described["Cluster"].pop("KerberosAttributes", None)
    client = boto3.client("emr", region_name=REGION)
    with Stubber(client) as stubber:
        stubber.add_response("describe_cluster", described, {"ClusterId": cluster_id})
        stubber.add_response(
            "list_instance_fleets", {"InstanceFleets": fleets_answer(request)}, {"ClusterId": cluster_id}
        )
        stubber.add_response("list_steps", listed_steps, {"ClusterId": cluster_id})
        if instances_denied:
            stubber.add_client_error("list_instances", "AccessDeniedException", http_status_code=400)
        else:
            stubber.add_response("list_instances", {"Instances": instances or []}, {"ClusterId": cluster_id})
        collected = run_report.collect_cluster_record(client, cluster_id)
        stubber.assert_no_pending_responses()
    json.dumps(collected)  # JSON-ready: it travels through XCom
    return collected


def build(collected: dict, prices, **extra) -> dict:
    return run_report.build_run_report(
        batch=BATCH,
        target="emr",
        job_metrics=JOB_METRICS,
        pca_report=PCA_REPORT,
        cluster=collected["cluster"],
        steps=collected["steps"],
        fleets=collected["fleets"],
        instances=collected["instances"],
        region=REGION,
        prices=prices,
        **extra,
    )


def test_actual_cost_bills_the_fleets_for_the_cluster_timeline(prices):
    cluster_id, request = ended_cluster()
    report = build(record(cluster_id, request), prices)

    primary, worker = sizing().primary_types[0], sizing().worker_types[0]
    cost = report["cost"]["components_usd"]
    # Primary and core On-Demand (the core fleet hosts the driver), the 2 task nodes on spot.
    on_demand, spot = prices.ec2_hourly(REGION, worker), prices.ec2_hourly(REGION, worker, costs.SPOT)
    assert cost["ec2"] == pytest.approx(
        WALL / 3600 * (prices.ec2_hourly(REGION, primary) + on_demand + 2 * spot), rel=1e-4
    )
    assert cost["emr"] == pytest.approx(
        WALL / 3600 * (prices.emr_hourly(REGION, primary) + 3 * prices.emr_hourly(REGION, worker)), rel=1e-4
    )
    # EBS: 32 GiB primary + 3 x 64 GiB workers from the request, + EMR's 15 GiB root volume each.
    ebs_gib = (32 + 15) + 3 * (64 + 15)
    assert cost["ebs"] == pytest.approx(
        ebs_gib * prices.unit(REGION, "ebs_gp3_gb_month") * WALL / (30 * 86400), rel=1e-4
    )
    assert report["cost"]["per_1000_images_usd"] == pytest.approx(report["cost"]["total_usd"] / 120, rel=1e-3)

    cluster = report["cluster"]
    assert cluster["id"] == cluster_id and cluster["state"] == "TERMINATED" and not cluster["provisional"]
    assert cluster["wall_s"] == WALL and cluster["startup_s"] == 7 * 60 and cluster["termination_s"] == 90
    assert cluster["instance_types_assumed"] is True
    assert [s["name"] for s in report["steps"]] == [f"fruits-featurize-{BATCH}", f"fruits-pca-{BATCH}"]
    assert [s["seconds"] for s in report["steps"]] == [1200, 240]
    throughput = report["throughput"]
    assert throughput["executor_vcpus"] == 24 and throughput["featurize_step_seconds"] == 1200
    assert throughput["images_per_second_per_vcpu"] == pytest.approx(120_000 / 1150 / 24, abs=1e-3)


def test_without_list_instances_permission_the_fleets_are_priced_and_flagged(prices):
    cluster_id, request = ended_cluster()
    collected = record(cluster_id, request, instances_denied=True)
    assert collected["instances"] == []
    report = build(collected, prices)
    assert report["cluster"]["instance_types_assumed"] is True
    assert "first type" in run_report.render_markdown(report)


def test_normalized_instance_hours_cross_check(prices):
    # 4 instances, each up < 1 h (rounded up to 1): m7g.xlarge (8 units) + 3 x c7g.2xlarge (16 units).
    cluster_id, request = ended_cluster(normalized_instance_hours=8 + 3 * 16)
    assert build(record(cluster_id, request), prices)["cluster"]["normalized_instance_hours"] == {
        "reported": 56,
        "expected_from_instances": 56,
        "consistent": True,
    }
    # EMR counted more than we priced (e.g. a fleet resized): the report says so.
    other_id, other_request = ended_cluster(normalized_instance_hours=8 + 5 * 16)
    check = build(record(other_id, other_request), prices)["cluster"]["normalized_instance_hours"]
    assert check["consistent"] is False and check["reported"] == 88


def test_list_instances_gives_each_instances_real_type_market_and_lifetime(prices):
    cluster_id, request = ended_cluster()
    early = PCA[1]  # a task node released when the steps finished, before the cluster ended
    instances = [
        instance(1, "if-0", "m7g.xlarge", "ON_DEMAND", ENDED),
        instance(2, "if-1", "r7g.2xlarge", "SPOT", ENDED),
        instance(3, "if-2", "c7g.2xlarge", "SPOT", ENDED),
        instance(4, "if-2", "m7g.2xlarge", "ON_DEMAND", early),
    ]
    exact = build(record(cluster_id, request, instances), prices)
    assumed = build(record(*ended_cluster()), prices)

    assert exact["cluster"]["instance_types_assumed"] is False
    groups = {(g["role"], g["instance_type"], g["market"]): g for g in exact["cluster"]["instances"]}
    assert set(groups) == {
        ("MASTER", "m7g.xlarge", "ON_DEMAND"),
        ("CORE", "r7g.2xlarge", "SPOT"),
        ("TASK", "c7g.2xlarge", "SPOT"),
        ("TASK", "m7g.2xlarge", "ON_DEMAND"),
    }
    assert groups[("TASK", "m7g.2xlarge", "ON_DEMAND")]["seconds"] == (early - CREATED).total_seconds()
    expected_ec2 = (
        WALL
        * (
            prices.ec2_hourly(REGION, "m7g.xlarge")
            + prices.ec2_hourly(REGION, "r7g.2xlarge", costs.SPOT)
            + prices.ec2_hourly(REGION, "c7g.2xlarge", costs.SPOT)
        )
        + (early - CREATED).total_seconds() * prices.ec2_hourly(REGION, "m7g.2xlarge")
    ) / 3600
    assert exact["cost"]["components_usd"]["ec2"] == pytest.approx(expected_ec2, rel=1e-4)
    assert exact["cost"]["total_usd"] != assumed["cost"]["total_usd"]


def test_a_cluster_still_terminating_is_billed_up_to_the_report_and_flagged(prices):
    cluster_id, request = ended_cluster(ended=False)
    at = ENDED + timedelta(minutes=1)
    report = build(record(cluster_id, request), prices, generated_at=at)
    assert report["cluster"]["provisional"] is True and report["cluster"]["ended"] is None
    assert report["cluster"]["wall_s"] == (at - CREATED).total_seconds()
    assert "not yet" in run_report.render_markdown(report)


def test_estimate_sits_next_to_the_actual(prices):
    cluster_id, request = ended_cluster()
    estimate = costs.estimate_emr(
        costs.Workload(images=120_000, throughput_per_vcpu=5.0), sizing(), region=REGION, prices=prices
    )
    json.loads(json.dumps(estimate))  # what the DAG hands over through XCom
    report = build(record(cluster_id, request), prices, estimate=estimate)
    versus = report["estimate_vs_actual"]
    assert versus["total_usd"]["estimate"] == estimate["cost"]["total_usd"]
    assert versus["total_usd"]["actual"] == report["cost"]["total_usd"]
    assert versus["wall_s"]["actual_over_estimate"] == pytest.approx(WALL / estimate["seconds"]["wall_s"], abs=1e-3)
    assert versus["featurize_s"]["actual"] == 1200
    assert versus["images_per_second_per_vcpu"]["actual_over_estimate"] == pytest.approx(
        report["throughput"]["images_per_second_per_vcpu"] / 5.0, abs=1e-3
    )
    markdown = run_report.render_markdown(report)
    assert "## Estimate vs actual" in markdown and "| total_usd |" in markdown


def test_report_is_written_to_the_batch_reports_prefix_encrypted(prices):
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=SETTINGS.bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    store = S3Store(s3, SETTINGS.bucket)
    # The jobs' own outputs, committed where the jobs commit them.
    commit_job_outputs(store, ROOT)
    metrics, pca = run_report.job_outputs(store, ROOT, BATCH)
    assert metrics == JOB_METRICS and pca == PCA_REPORT

    cluster_id, request = ended_cluster()
    collected = record(cluster_id, request)
    report = run_report.build_run_report(
        batch=BATCH,
        target="emr",
        job_metrics=metrics,
        pca_report=pca,
        region=REGION,
        prices=prices,
        work=WORK,
        **collected,
    )
    # The basis, what the night read, the drift figures and the nights caught up are in the report.
    assert report["pca"] == {
        key: PCA_REPORT[key] for key in (*run_report.PCA_KEYS, "drift_explained_ratio", "drift_mean_shift")
    }
    assert report["work"]["catch_up"] == ["2026-11-19"] and "windows" not in report["work"]
    written = run_report.write_run_report(report, lake.reports_uri(ROOT, BATCH), store)
    assert written == [f"{ROOT}/reports/batch={BATCH}/run_report.md", f"{ROOT}/reports/batch={BATCH}/run_report.json"]
    head = s3.head_object(Bucket=SETTINGS.bucket, Key=f"reports/batch={BATCH}/run_report.json")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert json.loads(store.read(written[1])) == json.loads(json.dumps(report))
    markdown = store.read(written[0]).decode()
    assert (
        f"batch {BATCH}" in markdown
        and "Total cost:" in markdown
        and f"{report['cost']['total_usd']:.4f} USD" in markdown
    )
    assert "NormalizedInstanceHours" in markdown and "fruits-featurize" in markdown
    assert "caught up: 2026-11-19" in markdown and "PCA on basis 3 (auto): read 119990 rows" in markdown
    assert '"drift_mean_shift": 0.12' in markdown


def test_only_committed_outputs_are_read(tmp_path):
    store = LocalStore(tmp_path)
    # A run that died before its commits: files in run folders, no marker names them.
    store.put(lake.features_uri(store.root, BATCH) + "run=x/_job_metrics.json", json.dumps(JOB_METRICS).encode(), "-")
    store.put(lake.pca_reduced_uri(store.root, 3, BATCH) + "run=x/report.json", json.dumps(PCA_REPORT).encode(), "-")
    store.put(lake.pca_current_basis_uri(store.root), json.dumps({"version": 3}).encode(), "-")
    assert run_report.job_outputs(store, store.root, BATCH) == (None, None)
    # Committed on basis 2, while the current basis is 3 (reexpress has not run yet): no PCA report.
    commit_job_outputs(store, store.root, basis=2)
    store.put(lake.pca_current_basis_uri(store.root), json.dumps({"version": 3}).encode(), "-")
    assert run_report.job_outputs(store, store.root, BATCH) == (JOB_METRICS, None)


def test_a_failed_run_still_reports_what_the_cluster_cost(prices, tmp_path):
    store = LocalStore(tmp_path)
    assert run_report.job_outputs(store, store.root, BATCH) == (None, None)  # featurize never finished
    cluster_id, request = ended_cluster()
    report = run_report.build_run_report(
        batch=BATCH, target="emr", job_metrics=None, region=REGION, prices=prices, **record(cluster_id, request)
    )
    assert report["complete"] is False and report["images"]["seen"] == 0
    assert report["cost"]["components_usd"]["ec2"] > 0 and report["cost"]["per_1000_images_usd"] is None
    assert report["throughput"]["images_per_second_per_vcpu"] is None
    assert "the run failed" in run_report.render_markdown(report)


def test_local_run_costs_nothing_and_reports_real_throughput(tmp_path, prices):
    report = run_report.build_run_report(
        batch=BATCH,
        target="local",
        job_metrics={**JOB_METRICS, "seen": 960, "featurized": 960, "quarantined": 0, "seconds": 48.0},
        executor_vcpus=2,
        prices=prices,
    )
    assert report["cost"]["total_usd"] == 0 and set(report["cost"]["components_usd"].values()) == {0}
    assert report["cluster"] is None and report["steps"] == []
    assert report["throughput"]["images_per_second_per_vcpu"] == pytest.approx(960 / 48 / 2)
    store = LocalStore(tmp_path)
    written = run_report.write_run_report(report, lake.reports_uri(store.root, BATCH), store)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == [f"reports/batch={BATCH}/run_report.json", f"reports/batch={BATCH}/run_report.md"]
    assert json.loads(store.read(written[1]))["throughput"]["executor_vcpus"] == 2
    assert "cost zero" in store.read(written[0]).decode()


@pytest.mark.parametrize("bad", [dict(batch="21-11-2026"), dict(target="cloud"), dict(cluster=None)])
def test_bad_input_is_refused_plainly(bad, prices):
    args = dict(batch=BATCH, target="emr", job_metrics=JOB_METRICS, cluster={"Status": {}}, fleets=[], prices=prices)
    with pytest.raises(ValueError):
        run_report.build_run_report(**{**args, **bad})


def test_cluster_outside_the_eu_is_refused(prices):
    collected = record(*ended_cluster())
    with pytest.raises(ValueError, match="allow-list"):
        run_report.build_run_report(
            batch=BATCH, target="emr", job_metrics=JOB_METRICS, region="us-east-1", prices=prices, **collected
        )


def test_normalization_factor_follows_the_size():
    assert costs.normalization_factor("m7g.xlarge") == 8 and costs.normalization_factor("c7g.16xlarge") == 128
    assert math.isclose(costs.normalization_factor("t3.nano"), 0.25)
    with pytest.raises(ValueError):
        costs.normalization_factor("m7g.metal")


def test_report_run_reads_the_jobs_outputs_and_writes_the_local_report(tmp_path, caplog):
    store = LocalStore(tmp_path)
    metrics = {**JOB_METRICS, "seen": 960, "featurized": 958, "quarantined": 2, "seconds": 64.0}
    commit_output(store, lake.features_uri(store.root, BATCH), {"part-0.parquet": b"p"}, {"metrics": metrics})
    with caplog.at_level("INFO", logger="fruits.run_report"):
        report = run_report.report_run(store, store.root, BATCH, target="local", region=REGION)
    on_disk = json.loads((tmp_path / f"reports/batch={BATCH}/run_report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["images"] == {"seen": 960, "featurized": 958, "quarantined": 2} and on_disk["pca"] is None
    assert on_disk["throughput"]["images_per_second"] == 15.0
    assert "0.0000 USD" in caplog.text and "images/s per vCPU" in caplog.text


def test_the_dags_estimate_uses_the_measured_throughput_and_the_sizing(prices):
    estimate = costs.estimate_for_run(50_000, sizing(), region=REGION, prices=prices)
    expected_throughput, source = costs.default_throughput()
    assert estimate["throughput_per_vcpu"] == expected_throughput and estimate["throughput_source"] == source
    assert estimate["images"] == 50_000 and estimate["executor_vcpus"] == 24


def uploaded_lake(tmp_path, photos: int, max_photos: int) -> storage.LocalStore:
    """A local lake whose batch holds `photos` (distinct tiny JPEGs: the upload keeps only images)
    bundled `max_photos` a bundle by the real upload."""
    from PIL import Image

    landing = tmp_path / "landing" / "Banana"
    landing.mkdir(parents=True)
    for number in range(photos):
        Image.new("RGB", (8, 8), (number * 30 % 256, 255 - number * 20 % 256, 30)).save(landing / f"{number}.jpg")
    store = storage.LocalStore(tmp_path / "lake")
    result = upload.upload_new_images(
        store, storage.LocalStore(landing.parent), storage.file_uri(landing.parent), BATCH, max_photos=max_photos
    )
    assert result["bundles_in_batch"] == math.ceil(photos / max_photos)
    return store


def test_the_report_prices_s3_on_the_batchs_own_bundles_and_its_landing(tmp_path, prices, monkeypatch):
    store = uploaded_lake(tmp_path, photos=7, max_photos=2)
    assert (
        run_report.batch_bundles(store, store.root, BATCH) == 4
    )  # what upload_new_images returned as bundles_in_batch
    cluster_id, request = ended_cluster()
    collected = record(cluster_id, request)
    monkeypatch.setattr(run_report, "collect_cluster_record", lambda client, cid: collected)
    reports = {
        on_s3: run_report.report_run(
            store, store.root, BATCH, target="emr", region=REGION, cluster_id=cluster_id, landing_on_s3=on_s3
        )
        for on_s3 in (False, True)
    }
    # featurize left no metrics here (seen 0): only the upload's side is billed, on the 4 bundles it wrote.
    put, get = prices.unit(REGION, "s3_put_per_1000") / 1000, prices.unit(REGION, "s3_get_per_1000") / 1000
    local = reports[False]["cost"]["components_usd"]["s3_requests"]
    assert local == pytest.approx(
        costs.s3_costs(costs.Workload(images=0, throughput_per_vcpu=1.0, objects_in_batch=4), REGION, prices)[
            "s3_requests"
        ],
        abs=1e-6,
    )
    assert local == pytest.approx((4 + 1 + 2 + 1) * put + (4 * 2 * 3 + 366) * get, abs=1e-6)
    assert "the batch's 4 bundles (its manifest)" in reports[False]["cost_basis"]
    assert "S3 landing" in reports[True]["cost_basis"] and "S3 landing" not in reports[False]["cost_basis"]


def test_a_measured_run_pays_featurize_reads_by_bundle_and_an_s3_landings_gets(prices):
    collected = record(*ended_cluster())

    def requests_usd(**s3_side) -> float:
        side = costs.Workload(images=0, throughput_per_vcpu=1.0, **s3_side)
        return build(collected, prices, workload=side)["cost"]["components_usd"]["s3_requests"]

    put, get = prices.unit(REGION, "s3_put_per_1000") / 1000, prices.unit(REGION, "s3_get_per_1000") / 1000
    derived, stored = requests_usd(), requests_usd(objects_in_batch=150)
    # 120,000 photos: derived, 120 bundles of 1,000 (16 row groups each); as stored, 150 bundles of 800 (13 each),
    # each opened by featurize's two scans. (The report rounds each component to 1e-6 USD.)
    assert stored - derived == pytest.approx(30 * put + (150 * (6 + 13) - 120 * (6 + 16)) * get, abs=2e-6)
    # An S3 landing: 1 GET per photo and 1 LIST per 1,000 of them, nothing else.
    assert requests_usd(landing_on_s3=True) - derived == pytest.approx(120_000 * get + 120 * put, abs=2e-6)


def test_report_run_writes_the_page_beside_the_report_encrypted_with_the_clusters_links(prices, monkeypatch, caplog):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=SETTINGS.bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    store = S3Store(s3, SETTINGS.bucket)
    reduced = pa.table(
        {
            "path": [f"{ROOT}/raw/batch={BATCH}/Kiwi/{i}.jpg" for i in range(6)],
            "label": ["Kiwi"] * 6,
            "pca": pa.array([[float(i), float(i % 2)] for i in range(6)], pa.list_(pa.float32())),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(reduced, buffer)
    commit_job_outputs(store, ROOT)
    commit_output(
        store,
        lake.pca_reduced_uri(ROOT, 3, BATCH),
        {"reduced/part-0.parquet": buffer.getvalue(), "report.json": json.dumps(PCA_REPORT).encode()},
    )
    cluster_id, request = ended_cluster()
    collected = record(cluster_id, request)
    monkeypatch.setattr(run_report, "collect_cluster_record", lambda client, cid: collected)
    run_report.report_run(store, ROOT, BATCH, target="emr", region=REGION, cluster_id=cluster_id)
    key = f"reports/batch={BATCH}/run_report.html"
    assert s3.head_object(Bucket=SETTINGS.bucket, Key=key)["ServerSideEncryption"] == "aws:kms"
    page = store.read(f"{ROOT}/{key}").decode()
    step_ids = [step["Id"] for step in collected["steps"]]
    assert f"#/clusterDetails/{cluster_id}" in page and all(f"/steps/{step}" in page for step in step_ids)
    assert "6 of its 6 rows" in page and "120,000" in page  # the scatter; featurize's photos read

    # A reduced output that is no Parquet: the page fails, loudly in the log; the report is still written.
    commit_output(
        store,
        lake.pca_reduced_uri(ROOT, 3, BATCH),
        {"reduced/part-0.parquet": b"not parquet", "report.json": json.dumps(PCA_REPORT).encode()},
    )
    store.delete(f"{ROOT}/{key}")
    # Airflow's logging set-up (the provider imported for the console links) stops propagation: listen here.
    run_report.log.addHandler(caplog.handler)
    try:
        report = run_report.report_run(store, ROOT, BATCH, target="emr", region=REGION, cluster_id=cluster_id)
    finally:
        run_report.log.removeHandler(caplog.handler)
    assert "run report page could not be built" in caplog.text
    assert store.read_or_none(f"{ROOT}/{key}") is None
    assert json.loads(store.read(f"{ROOT}/reports/batch={BATCH}/run_report.json"))["cost"] == report["cost"]


def test_the_report_and_its_markdown_name_the_run_and_the_dag_version_it_ran_with(tmp_path):
    from fruits import report_page

    stamp = {
        "dag_id": "fruits_pipeline",
        "run_id": "scheduled__2026-03-02T02:00:00+00:00__2026-03-01__x",
        "partition_key": "2026-03-01",
        "dag_version_id": "0199c0de-0000-7000-8000-000000000042",
        "bundle_version": None,
    }
    store = LocalStore(tmp_path / "lake")
    report = run_report.report_run(store, store.root, BATCH, target="local", region=REGION, airflow_run=stamp)
    assert report["airflow"] == stamp
    markdown = (tmp_path / "lake" / "reports" / f"batch={BATCH}" / run_report.REPORT_MD).read_text()
    assert f"DAG version {stamp['dag_version_id']}" in markdown and "(partition 2026-03-01)" in markdown
    page = (tmp_path / "lake" / "reports" / f"batch={BATCH}" / report_page.PAGE).read_text()
    assert f"DAG version {stamp['dag_version_id']}" in page
    # A report written without a run (the CLI, an older run) says nothing of one.
    assert run_report.report_run(store, store.root, BATCH, target="local", region=REGION)["airflow"] is None
