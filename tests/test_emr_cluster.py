"""fruits.emr_cluster: the RunJobFlow request is valid for botocore and moto, and says what the issue asks:
EU, emr-7, fleets with spot + on-demand fallback, Graviton by default, Spark sized to the nodes."""

from __future__ import annotations

import dataclasses
import json
import math

import boto3
import pytest
from botocore.exceptions import ParamValidationError
from botocore.validate import validate_parameters
from moto import mock_aws

import featurize
from fruits import emr_cluster, lake
from fruits.emr_cluster import (
    BOOTSTRAP_SCRIPT,
    INSTANCE_TYPES,
    PYSPARK_PYTHON,
    PYTHON_ENV_DIR,
    PYTHON_VERSION,
    SPARK_NODE_REQUIREMENTS,
    YARN_MEMORY_SHARE,
    ClusterSizing,
    InstanceFacts,
    build_job_flow,
    main,
    spark_defaults,
    worker_vcpus,
)
from fruits.gdpr import GdprViolation
from fruits.settings import PipelineSettings

REGION = "eu-west-3"
SETTINGS = PipelineSettings(bucket="fruits-lake-test", kms_key_arn=f"arn:aws:kms:{REGION}:123456789012:key/k")
CODE_URI = lake.code_uri("s3://fruits-lake-test", "0123abcd")


def _request(sizing: ClusterSizing | None = None, settings: PipelineSettings = SETTINGS) -> dict:
    return build_job_flow(settings, name="fruits-2026-11-22", code_uri=CODE_URI, sizing=sizing or ClusterSizing())


def _run_job_flow_shape():
    client = boto3.client("emr", region_name=REGION)
    return client.meta.service_model.operation_model("RunJobFlow").input_shape


def _fleets(request: dict) -> dict[str, dict]:
    return {fleet["InstanceFleetType"]: fleet for fleet in request["Instances"]["InstanceFleets"]}


def _spark_defaults(request: dict) -> dict[str, str]:
    return next(c for c in request["Configurations"] if c["Classification"] == "spark-defaults")["Properties"]


@pytest.mark.parametrize(
    "sizing",
    [
        ClusterSizing(),
        ClusterSizing(architecture="x86_64"),
        ClusterSizing(spot=False, task_count=0),
        ClusterSizing(core_count=3, task_count=5, model_threads=4),
    ],
    ids=["default-arm64-spot", "x86_64", "on-demand-no-task", "bigger"],
)
def test_request_passes_botocore_validation_and_moto(sizing):
    request = _request(sizing)
    validate_parameters(request, _run_job_flow_shape())  # raises ParamValidationError listing every problem
    with mock_aws():
        emr = boto3.client("emr", region_name=REGION)
        cluster_id = emr.run_job_flow(**request)["JobFlowId"]
        cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
        assert cluster["ReleaseLabel"] == SETTINGS.emr_release
        assert cluster["SecurityConfiguration"] == SETTINGS.security_configuration
        assert cluster["AutoTerminate"] is False  # steps come after creation
        assert cluster["Ec2InstanceAttributes"]["Ec2AvailabilityZone"].startswith(REGION)
        # (moto does not implement ListInstanceFleets; the fleets are checked on the request below.)
        (bootstrap,) = emr.list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"]
        assert bootstrap["ScriptPath"] == request["BootstrapActions"][0]["ScriptBootstrapAction"]["Path"]


def test_the_validator_is_live():
    """The validation above would catch a broken request (so passing it means something)."""
    request = _request()
    del request["Instances"]["InstanceFleets"][0]["InstanceFleetType"]
    request["AutoTerminationPolicy"]["IdleTimeout"] = "soon"
    with pytest.raises(ParamValidationError, match="InstanceFleetType") as error:
        validate_parameters(request, _run_job_flow_shape())
    assert "IdleTimeout" in str(error.value)


def test_defaults_are_eu_emr7_logged_encrypted_and_auto_terminating():
    request = _request()
    assert request["ReleaseLabel"].startswith("emr-7.")
    assert request["LogUri"] == lake.logs_uri("s3://fruits-lake-test")
    assert request["LogEncryptionKmsKeyId"] == SETTINGS.kms_key_arn
    assert request["SecurityConfiguration"] == "fruits-emr-security"  # at-rest encryption + IMDSv2 (infra/)
    assert request["ServiceRole"] == SETTINGS.service_role and request["JobFlowRole"] == SETTINGS.instance_profile
    assert 60 <= request["AutoTerminationPolicy"]["IdleTimeout"] <= 3600
    assert request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert request["Instances"]["TerminationProtected"] is False
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    assert tags["for-use-with-amazon-emr-managed-policies"] == "true"
    assert "Ec2SubnetIds" not in request["Instances"]
    with_subnets = _request(settings=PipelineSettings(bucket="b", subnet_ids="subnet-a, subnet-b"))
    assert with_subnets["Instances"]["Ec2SubnetIds"] == ["subnet-a", "subnet-b"]


def test_primary_and_core_on_demand_task_on_spot_capacity_optimized_with_on_demand_fallback():
    fleets = _fleets(_request(ClusterSizing(core_count=2, task_count=3)))
    primary, core, task = fleets["MASTER"], fleets["CORE"], fleets["TASK"]
    for fleet, count in ((primary, 1), (core, 2)):
        assert (fleet["TargetOnDemandCapacity"], fleet["TargetSpotCapacity"]) == (count, 0)
        assert "SpotSpecification" not in fleet["LaunchSpecifications"]
    for fleet, count in ((task, 3),):
        assert (fleet["TargetOnDemandCapacity"], fleet["TargetSpotCapacity"]) == (0, count)
        spot = fleet["LaunchSpecifications"]["SpotSpecification"]
        assert spot["AllocationStrategy"] == "capacity-optimized"
        assert spot["TimeoutAction"] == "SWITCH_TO_ON_DEMAND"
        types = [c["InstanceType"] for c in fleet["InstanceTypeConfigs"]]
        assert len(types) >= 3, "several spot pools"
        for config in fleet["InstanceTypeConfigs"]:
            volume = config["EbsConfiguration"]["EbsBlockDeviceConfigs"][0]["VolumeSpecification"]
            assert volume == {"VolumeType": "gp3", "SizeInGB": ClusterSizing().worker_ebs_gib}

    on_demand = _fleets(_request(ClusterSizing(spot=False, core_count=2, task_count=0)))
    assert set(on_demand) == {"MASTER", "CORE"}
    assert (on_demand["CORE"]["TargetOnDemandCapacity"], on_demand["CORE"]["TargetSpotCapacity"]) == (2, 0)
    assert "SpotSpecification" not in on_demand["CORE"]["LaunchSpecifications"]


@pytest.mark.parametrize(
    "architecture, families",
    [("arm64", ("m6g", "m7g", "c6g", "c7g", "r7g")), ("x86_64", ("m6i", "m7i", "c6i", "c7i", "m6a"))],
)
def test_every_instance_matches_the_architecture_graviton_by_default(architecture, families):
    sizing = ClusterSizing() if architecture == "arm64" else ClusterSizing(architecture="x86_64")
    assert sizing.architecture == architecture
    for fleet in _request(sizing)["Instances"]["InstanceFleets"]:
        for config in fleet["InstanceTypeConfigs"]:
            assert INSTANCE_TYPES[config["InstanceType"]].architecture == architecture
            assert config["InstanceType"].split(".")[0] in families


def test_bootstrap_installs_the_locked_wheelhouse_into_the_python_spark_runs():
    request = _request()
    (action,) = request["BootstrapActions"]
    assert action["ScriptBootstrapAction"]["Path"] == CODE_URI + BOOTSTRAP_SCRIPT
    assert action["ScriptBootstrapAction"]["Args"] == [
        CODE_URI + SPARK_NODE_REQUIREMENTS,
        "s3://fruits-lake-test/code/wheelhouse/",
        PYTHON_VERSION,
        PYTHON_ENV_DIR,
    ]
    assert SPARK_NODE_REQUIREMENTS.endswith(".lock")  # the hash-locked set, installed with --no-index
    spark_env = next(c for c in request["Configurations"] if c["Classification"] == "spark-env")
    exports = spark_env["Configurations"][0]
    assert exports["Classification"] == "export"
    assert exports["Properties"] == {"PYSPARK_PYTHON": PYSPARK_PYTHON, "PYSPARK_DRIVER_PYTHON": PYSPARK_PYTHON}
    assert PYSPARK_PYTHON.startswith(PYTHON_ENV_DIR + "/bin/") and PYSPARK_PYTHON.endswith("python" + PYTHON_VERSION)
    # A code URI without the trailing slash still gives the same paths.
    assert (
        build_job_flow(SETTINGS, name="x", code_uri=CODE_URI.rstrip("/"), sizing=ClusterSizing())["BootstrapActions"]
        == request["BootstrapActions"]
    )


def test_the_driver_stays_on_on_demand_nodes_and_spot_losses_are_retried():
    """In cluster mode the driver is the YARN application master: node labels keep AMs on the ON_DEMAND
    label, which only the (never spot) core fleet and the primary carry unless spot falls back."""
    request = _request(ClusterSizing(core_count=1, task_count=4))
    yarn = next(c for c in request["Configurations"] if c["Classification"] == "yarn-site")["Properties"]
    assert yarn == {
        "yarn.node-labels.enabled": "true",
        "yarn.node-labels.am.default-node-label-expression": "ON_DEMAND",
    }
    assert _fleets(request)["CORE"]["TargetSpotCapacity"] == 0
    conf = _spark_defaults(request)
    assert conf["spark.decommission.enabled"] == "true"
    assert conf["spark.storage.decommission.shuffleBlocks.enabled"] == "true"
    assert int(conf["spark.task.maxFailures"]) > 4 and int(conf["spark.stage.maxConsecutiveAttempts"]) > 4
    assert conf["spark.speculation"] == "false"


def _mib(value: str) -> int:
    assert value.endswith("m")
    return int(value[:-1])


@pytest.mark.parametrize("instance_type", sorted(t for t, f in INSTANCE_TYPES.items() if f.vcpus >= 4))
@pytest.mark.parametrize("threads", [1, 2, 4])
def test_spark_layout_fits_every_node_and_matches_the_model_threads(instance_type, threads):
    facts = INSTANCE_TYPES[instance_type]
    conf = spark_defaults(facts, model_threads=threads)
    cores, task_cpus = int(conf["spark.executor.cores"]), int(conf["spark.task.cpus"])
    assert task_cpus == threads and cores % task_cpus == 0
    executors = facts.vcpus // cores
    assert executors >= 1
    # The executors use the node's vCPUs (never more) and fit in YARN's share of its memory.
    assert facts.vcpus - task_cpus < executors * cores <= facts.vcpus
    container = _mib(conf["spark.executor.memory"]) + _mib(conf["spark.executor.memoryOverhead"])
    assert executors * container <= facts.memory_gib * 1024 * YARN_MEMORY_SHARE
    assert _mib(conf["spark.executor.memoryOverhead"]) >= 1024  # room for the Python workers' model
    assert conf["spark.executorEnv.OMP_NUM_THREADS"] == str(threads)
    # Rows per Arrow batch are featurize's (sized to its inference batch): the cluster does not set them.
    assert "spark.sql.execution.arrow.maxRecordsPerBatch" not in conf


def test_spark_is_sized_for_the_smallest_worker_type_of_the_fleet():
    sizing = ClusterSizing(worker_instance_types=("m7g.2xlarge", "c7g.2xlarge"), model_threads=2)
    conf = _spark_defaults(_request(sizing))
    assert conf == spark_defaults(INSTANCE_TYPES["c7g.2xlarge"], model_threads=2)
    assert conf != spark_defaults(INSTANCE_TYPES["m7g.2xlarge"], model_threads=2)
    assert worker_vcpus(ClusterSizing(core_count=1, task_count=2)) == 3 * 8
    with pytest.raises(ValueError, match="too little memory"):
        spark_defaults(InstanceFacts(8, 4, "arm64"), model_threads=2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"architecture": "sparc"}, "architecture"),
        ({"worker_instance_types": ("m7g.2xlarge", "m6i.2xlarge")}, "m6i.2xlarge is x86_64"),
        ({"worker_instance_types": ("m7g.2xlarge", "m7g.4xlarge")}, "one vCPU count"),
        ({"worker_instance_types": ("m7g.mega",)}, "unknown instance type"),
        ({"core_count": 0}, "core_count"),
        ({"model_threads": 16}, "exceeds"),
        ({"idle_timeout_seconds": 10}, "idle_timeout"),
    ],
)
def test_impossible_sizings_are_refused_with_the_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClusterSizing(**kwargs)


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-2", "eu-central-2"])
def test_no_request_is_built_for_a_region_outside_the_eu(region):
    with pytest.raises(GdprViolation, match=region):
        _request(settings=PipelineSettings(region=region))


def test_a_narrowed_allow_list_refuses_the_other_eu_regions():
    with pytest.raises(GdprViolation):
        _request(settings=PipelineSettings(region="eu-west-1", allowed_regions="eu-west-3"))
    assert _request(settings=PipelineSettings(region="eu-west-3", allowed_regions="eu-west-3"))


def test_code_and_logs_must_be_on_s3():
    with pytest.raises(ValueError, match="code_uri"):
        build_job_flow(SETTINGS, name="x", code_uri="/tmp/code/", sizing=ClusterSizing())
    with pytest.raises(ValueError, match="log_uri"):
        _request(settings=PipelineSettings(log_uri="file:///tmp/logs"))


def test_preview_command_prints_the_request_for_the_environment_settings(capsys, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_FRUITS_BUCKET", "fruits-lake-preview")
    assert main(["--architecture", "x86_64", "--on-demand", "--task", "0"]) == 0
    request = json.loads(capsys.readouterr().out)
    validate_parameters(request, _run_job_flow_shape())
    assert request["LogUri"] == lake.logs_uri("s3://fruits-lake-preview")
    assert set(_fleets(request)) == {"MASTER", "CORE"}
    assert all(
        INSTANCE_TYPES[c["InstanceType"]].architecture == "x86_64"
        for f in request["Instances"]["InstanceFleets"]
        for c in f["InstanceTypeConfigs"]
    )


@mock_aws
def test_the_instance_facts_are_ec2_s_own():
    """vCPUs, memory and baseline bandwidth as DescribeInstanceTypes answers (moto carries AWS's answer)."""
    ec2 = boto3.client("ec2", region_name=REGION)
    answer = ec2.describe_instance_types(InstanceTypes=sorted(INSTANCE_TYPES))["InstanceTypes"]
    described = {
        t["InstanceType"]: InstanceFacts(
            t["VCpuInfo"]["DefaultVCpus"],
            t["MemoryInfo"]["SizeInMiB"] / 1024,
            "arm64" if "arm64" in t["ProcessorInfo"]["SupportedArchitectures"] else "x86_64",
            min(card["BaselineBandwidthInGbps"] for card in t["NetworkInfo"]["NetworkCards"]),
        )
        for t in answer
    }
    assert described == INSTANCE_TYPES


def test_one_model_thread_per_task_by_default_and_one_baseline_bandwidth_per_fleet():
    """spark.task.cpus 1: the benchmarks' per-vCPU rates hold on the cluster. The sizing's bandwidth is the fleet's
    least: the default fleets hold one bandwidth, so whichever type spot or On-Demand delivers, a night runs alike."""
    assert _spark_defaults(_request(ClusterSizing()))["spark.task.cpus"] == "1"
    for architecture in ("arm64", "x86_64"):
        sizing = ClusterSizing(architecture=architecture)
        assert {INSTANCE_TYPES[t].network_gbps for t in sizing.worker_types} == {sizing.worker_facts.network_gbps}
    assert ClusterSizing().worker_facts.network_gbps == 3.75
    slower = ClusterSizing(worker_instance_types=("c7g.2xlarge", "c6g.2xlarge"))
    assert slower.worker_facts.network_gbps == 2.5


def test_the_cluster_grows_with_the_nights_bytes_never_below_the_sizing_asked():
    sizing = emr_cluster.ClusterSizing()
    assert emr_cluster.sized_for_night(sizing, 0, 0) == sizing
    assert emr_cluster.sized_for_night(sizing, 4_668_000_000, 1_000_000) == sizing  # a million thumbnails
    # Phone photos: their bytes once (the ingest pass reads the landing) and their model pixels once (featurize reads
    # them instead of the photo); with a window twice (the ingest pass writes them beside the stripped photo).
    phone_bytes, photos = 2_850_000_000_000, 1_000_000
    crossing = emr_cluster.night_network_bytes(phone_bytes, photos)
    assert crossing == phone_bytes + photos * emr_cluster.PIXELS_BYTES
    kept = emr_cluster.night_network_bytes(phone_bytes, photos, keep_originals=True)
    assert kept == phone_bytes + 2 * photos * emr_cluster.PIXELS_BYTES
    # The listing has no photo's size: as many photos as its bytes could hold bigger than their pixels count as decoded,
    # at most the bytes again twice (a million thumbnails: 31,010 of them, still the sizing asked).
    thumbnails = 4_668_000_000
    decoded = thumbnails // (emr_cluster.PIXELS_BYTES + 1)
    assert emr_cluster.night_network_bytes(thumbnails, photos) == thumbnails + decoded * emr_cluster.PIXELS_BYTES
    assert emr_cluster.night_network_bytes(thumbnails, photos, keep_originals=True) < 3 * thumbnails
    per_worker = sizing.worker_facts.network_gbps * 1e9 / 8 * emr_cluster.NIGHT_NETWORK_SECONDS
    for night in (1, 2, 3):  # one night's landing, or nights the pipeline missed
        grown = emr_cluster.sized_for_night(sizing, night * phone_bytes, night * photos)
        workers = grown.core_count + grown.task_count
        assert workers == max(sizing.core_count + sizing.task_count, math.ceil(night * crossing / per_worker))
        windowed = emr_cluster.sized_for_night(sizing, night * phone_bytes, night * photos, keep_originals=True)
        assert windowed.task_count - grown.task_count == math.ceil(night * kept / per_worker) - workers >= 0
    assert emr_cluster.sized_for_night(sizing, 3 * phone_bytes, 3 * photos).task_count > sizing.task_count
    asked = dataclasses.replace(sizing, task_count=9)
    assert emr_cluster.sized_for_night(asked, phone_bytes, photos).task_count == 9


def test_the_sizing_s_model_pixels_are_featurize_s():
    assert emr_cluster.PIXELS_BYTES == featurize.PIXELS_BYTES  # the DAG does not import the Spark job
