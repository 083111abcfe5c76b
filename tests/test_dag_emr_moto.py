"""The EMR target end to end with `dag.test()` against moto (`mock_aws`, in-process): GDPR guard,
batch lock, the landing's listing, plan (catch-up of failed nights, the lake's weights and wheelhouse), RunJobFlow,
the ingest / featurize / PCA nightly / reexpress steps, the sensors, and the teardowns (terminate, report, unlock)
with the run's state decided by the work alone.

moto never runs or finishes an EMR step (the first stays RUNNING, later ones PENDING, forever), so
`EmrStepDriver` plays the cluster's part: when the sensor asks about the last step of a job kind, every
step of that kind has ended with the state the test scripted, and a COMPLETED ingest, featurize or PCA
nightly step has left what the real job commits (manifest, features, statistics), so the next night's plan
sees what a real night leaves. The Spark jobs themselves are tested for real elsewhere
(tests/test_dag_local.py runs these same arguments through spark-submit).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import shutil
import threading
from pathlib import Path
from unittest import mock

import boto3
import botocore.client
import botocore.exceptions
import botocore.session
import lakefiles
import pyarrow.parquet as pq
import pytest
from botocore.validate import validate_parameters
from conftest import account_clients, commit_output, emr_network
from moto import mock_aws
from moto.emr.models import ElasticMapReduceBackend

from fruits import lake, pipeline_tasks, release, storage
from fruits.cli import demo
from fruits.storage import S3Store

pytestmark = pytest.mark.slow

REGION = "eu-west-3"
BUCKET = "fruits-lake-test-eu-west-3"


def _job(step) -> str:
    return step.name.split("-")[1]  # steps.emr_step names it fruits-<job>-<batch>


def _arg(step, flag: str) -> str:
    return step.args[step.args.index(flag) + 1]


class EmrStepDriver:
    """Scripted outcome per job kind ("featurize"/"pca"/"reexpress"), applied to every step of that
    kind when the sensor first describes one; a COMPLETED step commits what the job would."""

    def __init__(self, outcomes: dict[str, str]):
        self.outcomes = outcomes
        self.described: list[str] = []
        self._original = ElasticMapReduceBackend.describe_step

    def __call__(self, backend, cluster_id, step_id):
        step = self._original(backend, cluster_id, step_id)
        job = _job(step)
        if job not in self.described:
            self.described.append(job)
            for other in backend.clusters[cluster_id].steps:
                if _job(other) == job:
                    other.state = self.outcomes[job]
                    if other.state == "COMPLETED":
                        self._commit(job, other)
        return step

    @staticmethod
    def _commit(job: str, step) -> None:
        store = S3Store(boto3.client("s3", region_name=REGION), BUCKET)
        if job == "ingest":
            EmrStepDriver._ingest(store, step)
        elif job == "featurize":  # covering the bundles the manifest names (what the originals' removal checks)
            sidecar, covered = lakefiles.covering(
                storage.read_batch_manifest(store, store.root, _arg(step, "--batch-id")).bundles
            )
            commit_output(
                store,
                _arg(step, "--output"),
                {"part-0.parquet": b"p", **sidecar},
                {"job": "featurize", "batch_id": _arg(step, "--batch-id"), "rows": 4, **covered},
            )
        elif job == "pca":
            commit_output(
                store,
                _arg(step, "--stats-root") + f"batch={_arg(step, '--batch')}/",
                {"stats.npz": b"s"},
                {"job": "pca", "rows": 4},
            )

    @staticmethod
    def _ingest(store: S3Store, step) -> None:
        """What the ingest job commits (its rules are tested on a real Spark in tests/test_ingest.py): the
        listing's new candidates in one bundle named by the manifest, nothing when all are in the batch
        already; then the attempt's listing and staged landing go."""
        raw, batch = _arg(step, "--raw"), _arg(step, "--batch-id")
        listing = pq.read_table(io.BytesIO(store.read(_arg(step, "--listing")))).to_pylist()
        recorded = storage.read_batch_manifest(store, store.root, batch)
        new = {
            row["key"]: hashlib.sha256(row["uri"]).hexdigest()
            for row in listing
            if not row["reason"] and row["key"] not in recorded.files
        }
        if new or store.read_or_none(raw + storage.UPLOADS_MANIFEST) is None:
            bundle = f"run=moto{len(recorded.bundles)}/part-0.parquet"
            store.put(raw + bundle, b"photos", "-")
            manifest = lakefiles.manifest_json(
                batch, {**recorded.files, **new}, {**recorded.bundles, bundle: sorted(new)}
            )
            store.put(raw + storage.UPLOADS_MANIFEST, manifest, "-")
        # As the job's Hadoop delete does: a delete marker each (the bucket's lifecycle expires the versions).
        planned = [_arg(step, "--listing")]
        if _arg(step, "--landing").startswith(raw):  # staged: the lake's copy of a landing outside S3
            planned += store.list_files(_arg(step, "--landing"))
        for uri in planned:
            lakefiles.S3Files.delete(store, uri)


class ApiCalls:
    """Every AWS API call the run makes (service, operation, params), in order; calls go on to moto.

    moto does not implement ListInstanceFleets (the cost report reads it): it is answered here from
    the fleets of the RunJobFlow request that created the cluster, as EMR reports them once ended."""

    def __init__(self):
        self.calls: list[tuple[str, str, dict]] = []
        self.refused: set[str] = set()  # operations answered with EMR's ValidationException
        self.requests_by_cluster: dict[str, dict] = {}
        self._original = botocore.client.BaseClient._make_api_call

    def __call__(self, client, operation, params):
        self.calls.append((client.meta.service_model.service_name, operation, params))
        if operation in self.refused:
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "ValidationException", "Message": "The requested instance types are unavailable"}},
                operation,
            )
        if operation == "ListInstanceFleets":
            return {"InstanceFleets": _ended_fleets(self.requests_by_cluster[params["ClusterId"]])}
        response = self._original(client, operation, params)
        if operation == "RunJobFlow":
            self.requests_by_cluster[response["JobFlowId"]] = params
        return response

    def of(self, service: str, operation: str | None = None) -> list[dict]:
        return [p for s, o, p in self.calls if s == service and operation in (None, o)]


def _ended_fleets(request: dict) -> list[dict]:
    return [
        {
            "Id": f"if-{number}",
            "Name": fleet["Name"],
            "InstanceFleetType": fleet["InstanceFleetType"],
            "Status": {"State": "TERMINATED"},
            "TargetOnDemandCapacity": fleet["TargetOnDemandCapacity"],
            "TargetSpotCapacity": fleet["TargetSpotCapacity"],
            "ProvisionedOnDemandCapacity": 0,
            "ProvisionedSpotCapacity": 0,
            "InstanceTypeSpecifications": [
                {
                    "InstanceType": config["InstanceType"],
                    "WeightedCapacity": config["WeightedCapacity"],
                    "EbsBlockDevices": [
                        {"VolumeSpecification": device["VolumeSpecification"], "Device": "/dev/sdb"}
                        for device in config["EbsConfiguration"]["EbsBlockDeviceConfigs"]
                    ],
                }
                for config in fleet["InstanceTypeConfigs"]
            ],
        }
        for number, fleet in enumerate(request["Instances"]["InstanceFleets"])
    ]


DATES = ["2026-03-01", "2026-03-02", "2026-03-03"]


@pytest.fixture
def landing(tmp_path, sample_dir) -> Path:
    """Three days of arrivals: 2 labels x 2 real photos per day, in landing/<date>/<Label>/."""
    labels = sorted(p.name for p in (sample_dir / "Training").iterdir())[:6]
    for day, date in enumerate(DATES):
        for label in labels[2 * day : 2 * day + 2]:
            target = tmp_path / "landing" / date / label
            target.mkdir(parents=True)
            for photo in sorted((sample_dir / "Training" / label).glob("*.jpg"))[:2]:
                shutil.copy(photo, target / photo.name)
    return tmp_path / "landing"


@pytest.fixture
def aws(airflow_home, monkeypatch, landing):
    monkeypatch.setenv("FRUITS_TARGET", "emr")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for name, value in {"fruits_bucket": BUCKET, "fruits_region": REGION, "fruits_landing": str(landing)}.items():
        monkeypatch.setenv(f"AIRFLOW_VAR_{name.upper()}", value)
    with mock_aws():
        # The foundation's network (tagged subnets of its VPC) and quotas, as fruits.preflight reads them.
        for name, value in emr_network(REGION).items():
            monkeypatch.setenv(f"AIRFLOW_VAR_{name.upper()}", value)
        clients = account_clients(REGION)
        monkeypatch.setattr(pipeline_tasks, "aws_client", lambda settings, service: clients(service))
        s3 = boto3.client("s3", region_name=REGION)
        _private_encrypted_bucket(s3, BUCKET, REGION)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        _publish_what_the_cluster_needs(S3Store(s3, BUCKET))
        recorder = ApiCalls()
        with mock.patch.object(botocore.client.BaseClient, "_make_api_call", autospec=True, side_effect=recorder):
            yield s3, recorder


WEIGHTS = b"stand-in weights: the jobs do not run under moto"


def _publish_what_the_cluster_needs(store: S3Store) -> None:
    """The foundation's one-time publications: the weights (with their sha256) and the node wheelhouse."""
    release.publish_weights(store, store.root, WEIGHTS)
    lock = (demo.REPO_ROOT / release.NODE_LOCK).read_bytes()
    store.put(release.wheelhouse_uri(store.root, lock) + release.WHEELHOUSE_MANIFEST, b"{}", "-")


def _private_encrypted_bucket(s3, bucket: str, region: str) -> None:
    config = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=bucket, **config)
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]
        },
    )
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )


ALL_COMPLETED = {"ingest": "COMPLETED", "featurize": "COMPLETED", "pca": "COMPLETED", "reexpress": "COMPLETED"}


def _run(batch: str, outcomes: dict[str, str], run_conf: dict | None = None, *, no_retries: bool = False):
    driver = EmrStepDriver(outcomes)
    with mock.patch.object(ElasticMapReduceBackend, "describe_step", autospec=True, side_effect=driver):
        if no_retries:  # a refused RunJobFlow would be retried after minutes of backoff
            dag = demo.load_dag("emr")
            for task in dag.tasks:
                task.retries = 0
            with mock.patch.object(demo, "load_dag", return_value=dag):
                run = demo.run_dag("emr", batch, {}, run_conf)
        else:
            run = demo.run_dag("emr", batch, {}, run_conf)
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    return run, states, driver


def _input_shape(operation: str):
    return botocore.session.get_session().get_service_model("emr").operation_model(operation).input_shape


def _cluster_states(emr) -> list[str]:
    return [c["Status"]["State"] for c in emr.list_clusters()["Clusters"]]


def test_success_runs_both_steps_with_the_planned_arguments_and_terminates(aws):
    s3, calls = aws
    run, states, driver = _run("2026-03-01", ALL_COMPLETED)
    assert str(run.state) == "success", states
    assert states["terminate_cluster"] == states["unlock_batch"] == "success"
    assert driver.described == ["ingest", "featurize", "pca", "reexpress"]

    # The GDPR check came before everything else; nothing touched EMR before the bucket was proven EU.
    first_emr = next(i for i, (service, _, _) in enumerate(calls.calls) if service == "emr")
    assert calls.calls[0][:2] == ("s3", "GetBucketLocation") and first_emr > 0
    # The request EMR received passes botocore's own validation (what a real endpoint would get).
    (request,) = calls.of("emr", "RunJobFlow")
    validate_parameters(request, _input_shape("RunJobFlow"))
    assert request["ReleaseLabel"] and request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True

    emr = boto3.client("emr", region_name=REGION)
    (cluster,) = emr.list_clusters()["Clusters"]
    assert _cluster_states(emr) == ["TERMINATED"]
    added = emr.list_steps(ClusterId=cluster["Id"])["Steps"][::-1]  # newest first
    jobs = ("ingest", "featurize", "pca", "reexpress")
    assert [s["Name"] for s in added] == [f"fruits-{job}-2026-03-01" for job in jobs]
    ingest_args, featurize_args, pca_args, reexpress_args = (s["Config"]["Args"] for s in added)
    root = f"s3://{BUCKET}"
    # Ingestion is the cluster's: the worker listed the landing and, a folder outside S3, staged its bytes.
    raw = lake.raw_uri(root, "2026-03-01")
    assert ingest_args[ingest_args.index("--raw") + 1] == raw
    assert ingest_args[ingest_args.index("--listing") + 1].startswith(raw + "_ingest/listing-")
    staged = ingest_args[ingest_args.index("--landing") + 1]
    assert staged.startswith(raw + "_ingest/landing-")
    staged_versions = s3.list_object_versions(Bucket=BUCKET, Prefix=staged.removeprefix(f"s3://{BUCKET}/"))
    # The ingest deleted its staged copies (markers); the originals' removal then took every version of them.
    assert "Versions" not in staged_versions and "DeleteMarkers" not in staged_versions
    assert featurize_args[:3] == ["spark-submit", "--deploy-mode", "cluster"]
    assert featurize_args[featurize_args.index("--input") + 1] == lake.raw_uri(root, "2026-03-01")
    assert featurize_args[featurize_args.index("--output") + 1] == lake.features_uri(root, "2026-03-01")
    # The weights are the lake's copy, checked by the job against the sha256 recorded beside them.
    assert featurize_args[featurize_args.index("--weights") + 1] == lake.models_uri(root) + release.DEFAULT_WEIGHTS_FILE
    assert featurize_args[featurize_args.index("--weights-sha256") + 1] == release.sha256_bytes(WEIGHTS)
    nightly = pca_args[pca_args.index("--py-files") + 3 :]
    assert nightly[:3] == ["nightly", "--batch", "2026-03-01"] and nightly[nightly.index("--mode") + 1] == "auto"
    assert nightly[nightly.index("--features-root") + 1] == lake.features_uri(root)
    assert nightly[nightly.index("--window") + 1] == "2026-03-01"  # the first night: its own statistics
    assert reexpress_args[reexpress_args.index("--batches") + 1] == "2026-03-01"
    for add_call in calls.of("emr", "AddJobFlowSteps"):
        validate_parameters(add_call, _input_shape("AddJobFlowSteps"))

    # The scripts the steps run were published under code/<version>/ before the cluster started.
    script = featurize_args[featurize_args.index("--py-files") + 2]
    bucket_key = script.removeprefix(f"s3://{BUCKET}/")
    assert bucket_key.startswith("code/") and s3.head_object(Bucket=BUCKET, Key=bucket_key)
    # What the job committed, its manifest naming its bundles, is what featurize reads: no loose photo is left.
    assert featurize_args[featurize_args.index("--input-format") + 1] == "bundles"
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key="raw/batch=2026-03-01/_uploads.json")["Body"].read())
    assert list(manifest["bundles"]) == ["run=moto0/part-0.parquet"]
    # The committed features cover that bundle: the originals went after the jobs, every version of them.
    assert states["remove_originals"] == "success"
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix="raw/batch=2026-03-01/")
    assert [v["Key"] for v in versions.get("Versions", [])] == ["raw/batch=2026-03-01/_uploads.json"]
    assert "DeleteMarkers" not in versions
    # Every run knows its cost: estimated before the cluster, reported after it ended.
    assert states["report_cost"] == "success"
    report = json.loads(s3.get_object(Bucket=BUCKET, Key="reports/batch=2026-03-01/run_report.json")["Body"].read())
    assert report["cost"]["total_usd"] > 0 and report["target"] == "emr"


def test_failed_featurize_step_still_terminates_the_cluster_and_fails_the_run(aws):
    s3, calls = aws
    run, states, driver = _run("2026-03-01", {**ALL_COMPLETED, "featurize": "FAILED"})
    assert str(run.state) == "failed"
    assert states["wait_featurize"] == "failed"
    assert {states[t] for t in ("add_pca_step", "wait_pca", "add_reexpress_step", "wait_reexpress")} == {
        "upstream_failed"
    }  # PCA never started
    assert states["terminate_cluster"] == "success"  # the teardown ran, and did not turn the run green
    assert states["report_cost"] == "success"  # the failed run's cluster is billed and reported too
    assert states["unlock_batch"] == "success"  # the batch is free for the next attempt
    assert driver.described == ["ingest", "featurize"]
    assert _cluster_states(boto3.client("emr", region_name=REGION)) == ["TERMINATED"]
    assert len(calls.of("emr", "TerminateJobFlows")) == 1
    from fruits import locks

    assert locks.holder(S3Store(s3, BUCKET), f"s3://{BUCKET}", "2026-03-01") is None


def test_the_next_night_catches_a_failed_night_up_before_its_own(aws):
    s3, calls = aws
    run, states, _ = _run(DATES[0], {**ALL_COMPLETED, "featurize": "FAILED"})
    assert str(run.state) == "failed"
    run, states, _ = _run(DATES[1], ALL_COMPLETED)
    assert str(run.state) == "success", states
    plan = run.get_task_instance("plan_jobs").xcom_pull(task_ids="plan_jobs", key="work")
    assert plan["catch_up"] == [DATES[0]] and plan["featurize"] == plan["nightly"] == DATES[:2]
    emr = boto3.client("emr", region_name=REGION)
    second = next(c for c in emr.list_clusters()["Clusters"] if DATES[1] in c["Name"])
    added = [s["Name"] for s in emr.list_steps(ClusterId=second["Id"])["Steps"][::-1]]
    assert added == [
        f"fruits-ingest-{DATES[1]}",  # tonight's landing only: the failed night's photos were ingested then
        f"fruits-featurize-{DATES[0]}",
        f"fruits-featurize-{DATES[1]}",
        f"fruits-pca-{DATES[0]}",
        f"fruits-pca-{DATES[1]}",
        f"fruits-reexpress-{DATES[1]}",
    ]
    report = json.loads(s3.get_object(Bucket=BUCKET, Key=f"reports/batch={DATES[1]}/run_report.json")["Body"].read())
    assert report["work"]["catch_up"] == [DATES[0]]
    # The estimate counted both nights' photos (2 labels x 2 photos each).
    estimate = run.get_task_instance("plan_jobs").xcom_pull(task_ids="plan_jobs", key="estimate")
    assert (estimate["reads"]["images"], estimate["reads"]["catchup_images"]) == (4, 4)
    assert estimate["reads"]["featurize_batches"] == DATES[:2]
    # The third night has nothing to catch up any more.
    run, states, _ = _run(DATES[2], ALL_COMPLETED)
    work = run.get_task_instance("plan_jobs").xcom_pull(task_ids="plan_jobs", key="work")
    assert work["catch_up"] == [] and work["featurize"] == [DATES[2]] and work["reexpress"] == DATES


def test_a_second_run_of_a_locked_batch_fails_fast_and_leaves_the_lock(aws):
    s3, calls = aws
    from fruits import locks

    store = S3Store(s3, BUCKET)
    locks.acquire(store, store.root, DATES[0], owner="erasure-42")
    run, states, _ = _run(DATES[0], ALL_COMPLETED)
    assert str(run.state) == "failed" and states["lock_batch"] == "failed"
    assert states["list_landing"] == states["create_cluster"] == "upstream_failed"
    assert states["unlock_batch"] == "upstream_failed"  # its setup failed: nothing of this run's to release
    assert not calls.of("emr") and "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="raw/")
    assert locks.release(store, store.root, DATES[0], "erasure-42") is True


def test_backfill_of_three_dates_gives_three_batches_and_a_rerun_changes_nothing(aws, landing):
    s3, calls = aws
    dates = DATES
    for batch in dates:  # each date takes its own landing folder, <fruits_landing>/<date>/
        run, states, _ = _run(batch, ALL_COMPLETED)
        assert str(run.state) == "success", states

    def lake_objects():
        # Photos, manifests and code; not reports/ (each run writes its own cost report), locks/ (each
        # run takes and releases its batch's), an attempt's listing and staged landing (each run lists its
        # landing again) or what the scripted jobs commit (each step run commits).
        derived = ("reports/", "locks/", "features/", "pca/")
        return sorted(
            (v["Key"], v["VersionId"])
            for v in s3.list_object_versions(Bucket=BUCKET)["Versions"]
            if not v["Key"].startswith(derived) and "/_ingest/" not in v["Key"]
        )

    partitions = s3.list_objects_v2(Bucket=BUCKET, Prefix="raw/", Delimiter="/")["CommonPrefixes"]
    assert [p["Prefix"] for p in partitions] == [f"raw/batch={d}/" for d in dates]
    emr = boto3.client("emr", region_name=REGION)
    assert _cluster_states(emr) == ["TERMINATED"] * 3

    before = lake_objects()
    run, states, _ = _run("2026-03-02", ALL_COMPLETED)
    assert str(run.state) == "success", states
    assert lake_objects() == before  # not one object (photo, manifest, code) written again
    # An explicit landing Param is a folder of that batch's photos, taken as is.
    run, states, _ = _run("2026-03-04", ALL_COMPLETED, {"landing": str(landing / "2026-03-01")})
    assert str(run.state) == "success", states


def test_dry_run_plans_but_writes_nothing_and_starts_no_cluster(aws):
    s3, calls = aws
    before = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    run, states, _ = _run("2026-03-01", {}, {"dry_run": True})
    assert str(run.state) == "success"
    assert states["plan_jobs"] == "success"
    assert {states[t] for t in ("create_cluster", "terminate_cluster", "report_cost")} == {"skipped"}
    assert states["unlock_batch"] == "success"  # the dry run's lock is released too
    written = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])} - before
    assert not calls.of("emr") and written == {"locks/batch=2026-03-01.json"}  # the released lock record


def test_an_empty_landing_ends_the_run_successfully_without_a_cluster(aws, tmp_path):
    s3, calls = aws
    (tmp_path / "nothing_arrived").mkdir()
    run, states, _ = _run("2026-03-01", {}, {"landing": str(tmp_path / "nothing_arrived")})
    assert str(run.state) == "success", states
    assert states["list_landing"] == states["plan_jobs"] == states["stop_if_nothing_to_do"] == "success"
    assert {states[t] for t in ("create_cluster", "terminate_cluster", "report_cost")} == {"skipped"}
    assert states["unlock_batch"] == "success"
    assert not calls.of("emr") and _cluster_states(boto3.client("emr", region_name=REGION)) == []
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="raw/")  # no photo, no manifest, no listing


def test_gdpr_guard_refuses_a_non_eu_region_before_any_aws_call(aws, monkeypatch):
    s3, calls = aws
    monkeypatch.setenv("AIRFLOW_VAR_FRUITS_REGION", "us-east-1")
    calls.calls.clear()
    run, states, _ = _run("2026-03-01", {})
    assert str(run.state) == "failed" and states["check_gdpr"] == "failed"
    assert calls.calls == []  # not even the bucket's location was asked
    assert _cluster_states(boto3.client("emr", region_name=REGION)) == []


def test_gdpr_guard_refuses_a_bucket_outside_the_eu_before_any_cluster_call(aws, monkeypatch):
    s3, calls = aws
    _private_encrypted_bucket(boto3.client("s3", region_name="us-east-1"), "fruits-in-virginia", "us-east-1")
    monkeypatch.setenv("AIRFLOW_VAR_FRUITS_BUCKET", "fruits-in-virginia")
    calls.calls.clear()
    run, states, _ = _run("2026-03-01", {})
    assert str(run.state) == "failed" and states["check_gdpr"] == "failed"
    assert states["list_landing"] == states["create_cluster"] == "upstream_failed"
    assert states["terminate_cluster"] == "upstream_failed"  # no cluster to end: it never ran
    assert [op for _, op, _ in calls.calls] == ["GetBucketLocation"]  # asked where, then stopped
    assert not calls.of("emr") and _cluster_states(boto3.client("emr", region_name=REGION)) == []
    assert "Contents" not in boto3.client("s3", region_name="us-east-1").list_objects_v2(Bucket="fruits-in-virginia")


def test_a_forced_refit_and_a_bad_param_before_any_cluster(aws):
    s3, calls = aws
    run, states, _ = _run(DATES[0], ALL_COMPLETED, {"pca_mode": "refit", "pca_k": 3})
    assert str(run.state) == "success", states
    emr = boto3.client("emr", region_name=REGION)
    (cluster,) = emr.list_clusters()["Clusters"]
    pca_args = next(s for s in emr.list_steps(ClusterId=cluster["Id"])["Steps"] if "pca" in s["Name"])["Config"]["Args"]
    assert pca_args[pca_args.index("--mode") + 1] == "refit" and pca_args[pca_args.index("--k") + 1] == "3"
    # k above the rows the first fit may use (4 photos tonight): refused at plan time, no cluster.
    calls.calls.clear()
    run, states, _ = _run(DATES[1], ALL_COMPLETED, {"pca_mode": "refit", "pca_k": 500})
    assert str(run.state) == "failed" and states["plan_jobs"] == "failed"
    assert states["create_cluster"] == "upstream_failed"
    assert not calls.of("emr", "RunJobFlow")
    # A weights file outside the lake's buckets: refused before anything is uploaded.
    run, states, _ = _run(DATES[2], ALL_COMPLETED, {"weights": "s3://somewhere-else/w.h5"})
    assert states["check_gdpr"] == "failed" and states["list_landing"] == "upstream_failed"


def test_a_cluster_that_failed_to_start_is_not_terminated_and_the_lock_is_released(aws):
    s3, calls = aws
    calls.refused.add("RunJobFlow")  # EMR refuses the request: no cluster exists
    run, states, driver = _run(DATES[0], ALL_COMPLETED, no_retries=True)
    assert str(run.state) == "failed" and states["create_cluster"] == "failed"
    assert states["add_featurize_step"] == states["wait_reexpress"] == "upstream_failed"
    assert states["terminate_cluster"] == "upstream_failed"  # its setup failed: nothing to terminate
    assert states["report_cost"] == "skipped"  # nothing ran, nothing billed
    assert states["unlock_batch"] == "success"
    assert len(calls.of("emr", "RunJobFlow")) == 1 and not calls.of("emr", "TerminateJobFlows")
    assert driver.described == [] and _cluster_states(boto3.client("emr", region_name=REGION)) == []
    from fruits import locks

    assert locks.holder(S3Store(s3, BUCKET), f"s3://{BUCKET}", DATES[0]) is None


def _run_events(run) -> list:
    from airflow.models.asset import AssetEvent
    from airflow.settings import Session
    from sqlalchemy import select

    with Session() as session:
        return list(session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == run.run_id)))


def _deadlines(run) -> list:
    from airflow.models.deadline import Deadline
    from airflow.settings import Session
    from sqlalchemy import select

    with Session() as session:  # (when, callback, missed) of each
        rows = session.scalars(select(Deadline).where(Deadline.dagrun_id == run.id))
        return [(d.deadline_time, d.callback.data["path"], d.missed) for d in rows]


def test_a_missed_deadline_publishes_to_the_operators_topic_or_logs(aws, monkeypatch, caplog):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sns.models import sns_backends

    from fruits import deadline

    context = {
        "dag_run": {
            "dag_id": "fruits_pipeline",
            "dag_run_id": "scheduled__x",
            "partition_key": DATES[0],
            "state": "running",
        },
        "deadline": {"deadline_time": "2026-03-02T06:00:00+00:00"},
    }
    with caplog.at_level("ERROR", logger="fruits.deadline"):
        message = deadline.night_overdue(context=context)
    assert f"(night {DATES[0]}) is not done by its deadline 2026-03-02T06:00:00+00:00: state running" in message
    assert message in caplog.text  # no topic set: the log says it
    topic = boto3.client("sns", region_name=REGION).create_topic(Name="fruits-on-call")["TopicArn"]
    monkeypatch.setenv("AIRFLOW_VAR_FRUITS_DEADLINE_SNS_TOPIC", topic)
    deadline.night_overdue(context=context)
    sent = sns_backends[DEFAULT_ACCOUNT_ID][REGION].topics[topic].sent_notifications
    assert [(json.loads(n[1])["default"], n[2]) for n in sent] == [(message, "Fruits! night past its deadline")]


def test_the_0300_run_ingests_the_previous_paris_day_with_its_late_photo(aws, landing, sample_dir):
    import datetime as dt
    import zoneinfo

    s3, calls = aws
    # A photo that lands late on 2026-03-01 (Paris), in that day's folder, after the 4 of the day.
    late = sorted((sample_dir / "Training" / "Banana").glob("*.jpg"))[0]
    (landing / DATES[0] / "Banana").mkdir()  # a label none of the three days has
    shutil.copy(late, landing / DATES[0] / "Banana" / late.name)
    scheduled = dt.datetime(2026, 3, 2, 3, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    driver = EmrStepDriver(ALL_COMPLETED)
    with mock.patch.object(ElasticMapReduceBackend, "describe_step", autospec=True, side_effect=driver):
        run = demo.run_dag("emr", None, {}, scheduled_at=scheduled)
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success", states
    # The timetable, not arithmetic on a date: the run of 03-02 03:00 is the partition of night 03-01.
    assert run.partition_key == DATES[0] and run.logical_date is None
    checked = run.get_task_instance("check_gdpr").xcom_pull(task_ids="check_gdpr")
    assert checked["params"]["batch"] == DATES[0]
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=f"raw/batch={DATES[0]}/_uploads.json")["Body"].read())
    assert len(manifest["files"]) == 5 and any(key.endswith(f"Banana/{late.name}") for key in manifest["files"])
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"raw/batch={DATES[1]}/")  # D's own: tomorrow
    (cluster,) = boto3.client("emr", region_name=REGION).list_clusters()["Clusters"]
    assert DATES[0] in cluster["Name"]
    # Every asset event the run published carries the night as its partition key.
    events = _run_events(run)
    assert events and {e.partition_key for e in events} == {DATES[0]}
    assert {e.extra["batch"] for e in events} == {DATES[0]}
    # The report and its page say which run and which DAG version (the one Airflow recorded for it) ran.
    ran_with = str(run.get_task_instance("report_cost").dag_version_id)
    report = json.loads(s3.get_object(Bucket=BUCKET, Key=f"reports/batch={DATES[0]}/run_report.json")["Body"].read())
    assert report["airflow"]["dag_version_id"] == ran_with and report["airflow"]["run_id"] == run.run_id
    assert report["airflow"]["partition_key"] == DATES[0]
    page = s3.get_object(Bucket=BUCKET, Key=f"reports/batch={DATES[0]}/run_report.html")["Body"].read().decode()
    assert f"DAG version {ran_with}" in page
    # Airflow gave the run its deadline alert when it created it: the first 07:00 Paris after that.
    ((due, callback, missed),) = _deadlines(run)
    assert (due.astimezone(zoneinfo.ZoneInfo("Europe/Paris")).hour, due.minute) == (7, 0)
    assert dt.timedelta(0) < due - dt.datetime.now(dt.UTC) <= dt.timedelta(days=1)
    assert callback == "fruits.deadline.night_overdue" and not missed


def test_a_backfill_reprocessing_failed_nights_creates_runs_only_for_them(aws, monkeypatch):
    import datetime as dt

    from airflow.models.backfill import ReprocessBehavior, _create_backfill
    from airflow.models.dagrun import DagRun
    from airflow.settings import Session
    from sqlalchemy import select

    s3, calls = aws
    with monkeypatch.context() as failing:  # night 1 fails (a non-EU region, before any AWS call)
        failing.setenv("AIRFLOW_VAR_FRUITS_REGION", "us-east-1")
        assert str(_run(DATES[0], {})[0].state) == "failed"
    assert str(_run(DATES[1], {}, {"dry_run": True})[0].state) == "success"
    day = dt.timedelta(days=1, seconds=-1)
    backfill = _create_backfill(
        dag_id=demo.DAG_ID,
        from_date=dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
        to_date=dt.datetime(2026, 3, 2, tzinfo=dt.UTC) + day,
        max_active_runs=1,
        reverse=False,
        dag_run_conf=None,
        triggering_user_name="on-call",
        reprocess_behavior=ReprocessBehavior.FAILED,
    )
    with Session() as session:
        created = session.scalars(select(DagRun).where(DagRun.backfill_id == backfill.id)).all()
        assert [r.partition_key for r in created] == [DATES[0]]  # the failed night only, addressed by its key
        assert backfill.max_active_runs == 1


def _answer_approvals(choice: str, asked: list, stop: threading.Event) -> None:
    """What the UI's Required Actions (the HITL REST route) does, from a second thread: answer each request."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import handle_event_submit
    from airflow.settings import Session
    from airflow.triggers.base import TriggerEvent
    from sqlalchemy import select

    while not stop.wait(0.5):
        with Session() as session:
            for detail in session.scalars(select(HITLDetail).where(HITLDetail.responded_at.is_(None))):
                ti = session.get(TaskInstance, detail.ti_id)
                if ti is None or str(ti.state) != "awaiting_input":
                    continue
                asked.append((ti.task_id, detail.subject, detail.body))
                detail.chosen_options, detail.responded_at = [choice], dt.datetime.now(dt.UTC)
                handle_event_submit(TriggerEvent(detail.as_resume_event_payload()), task_instance=ti, session=session)
                session.commit()


@pytest.mark.parametrize("choice", ["Approve", "Reject"])
def test_with_approval_required_a_refit_waits_for_the_operator_and_shows_its_figures(aws, monkeypatch, choice):
    s3, calls = aws
    store = S3Store(s3, BUCKET)
    store.put(lake.pca_current_basis_uri(store.root), json.dumps({"version": 1}).encode(), "-")  # a basis exists
    monkeypatch.setenv("AIRFLOW_VAR_FRUITS_BASIS_APPROVAL", "required")
    asked, stop = [], threading.Event()
    answerer = threading.Thread(target=_answer_approvals, args=(choice, asked, stop), daemon=True)
    answerer.start()
    try:
        run, states, _ = _run(DATES[0], ALL_COMPLETED, {"pca_mode": "refit", "pca_k": 3})
    finally:
        stop.set()
        answerer.join()
    ((task_id, subject, body),) = asked
    assert task_id == "approve_new_basis" and "new PCA basis" in subject
    assert "replace basis 1" in body and "**fit rows**: 4" in body and "**k**: 3" in body
    assert str(run.state) == "success", states
    if choice == "Approve":
        assert states["create_cluster"] == states["wait_reexpress"] == "success"
        assert len(calls.of("emr", "RunJobFlow")) == 1
    else:  # nothing ran, no cluster, the lock released
        assert states["create_cluster"] == states["terminate_cluster"] == "skipped"
        assert not calls.of("emr") and states["unlock_batch"] == "success"
