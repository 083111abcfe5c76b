"""The transient EMR cluster, as data: the RunJobFlow request the DAG's create task sends.

`build_job_flow(settings, name=..., code_uri=..., sizing=ClusterSizing())` returns the whole request
(what `EmrCreateJobFlowOperator(job_flow_overrides=...)` receives). Everything in it is derived from
`PipelineSettings` (where: region, bucket, roles, security configuration) and `ClusterSizing` (how big):

- instance fleets: primary and core On-Demand; task on spot (`ClusterSizing.spot`) across several
  instance types of the same vCPU count with the capacity-optimized allocation strategy, switching to
  on-demand when spot capacity does not come within `spot_timeout_minutes`;
- the Spark driver off spot: with `--deploy-mode cluster` it runs in the YARN application master, which
  YARN node labels (EMR 7's market-type label ON_DEMAND) keep on On-Demand capacity; tasks lost with a
  spot node are retried (graceful decommissioning, `spark.task.maxFailures`);
- Graviton (arm64) by default: every pinned Spark-node dependency has aarch64 wheels for Python 3.11
  (proved by tests/test_bootstrap.py), and Graviton is cheaper per vCPU; x86_64 is one field away;
- Spark sized from the instance facts below, with `spark.task.cpus` = the model runtime's threads so
  YARN never runs more inference threads than the node has vCPUs;
- the bootstrap action installs the hash-locked requirements/spark-node.lock from the lake's wheelhouse
  (no internet: the nodes reach S3 and KMS through VPC endpoints) into a Python 3.11 environment that
  spark-env's PYSPARK_PYTHON points at (one constant for both);
- IMDSv2, at-rest encryption (EMRFS via KMS, local disks) come from the security configuration,
  referenced by name (infra/foundation.yaml creates it); the auto-termination idle timeout is a second
  safety net behind the DAG's terminate task.

`python -m fruits.emr_cluster [--architecture x86_64] ...` prints the request for the current settings.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any

from fruits.gdpr import check_region, s3_bucket_of
from fruits.settings import PipelineSettings, load_settings

# The Python the cluster's PySpark runs: the bootstrap builds this environment, spark-env points at it,
# and tests/test_bootstrap.py resolves the pinned wheels for this version.
PYTHON_VERSION = "3.11"
PYTHON_ENV_DIR = "/opt/fruits/python" + PYTHON_VERSION
PYSPARK_PYTHON = f"{PYTHON_ENV_DIR}/bin/python{PYTHON_VERSION}"

# Paths inside the published code folder (`fruits.lake.code_uri(...)`), which mirrors the repository.
BOOTSTRAP_SCRIPT = "bootstrap/install_python_deps.sh"
# The hash-locked node environment (fruits.release writes it and publishes its wheelhouse).
SPARK_NODE_REQUIREMENTS = "requirements/spark-node.lock"

ARCHITECTURES = ("arm64", "x86_64")
# The tag the Airflow role's EMR permissions are conditioned on (aws:RequestTag / aws:ResourceTag).
PIPELINE_TAG_KEY = "fruits-pipeline"
# AmazonEMRServicePolicy_v2 (the service role's policy) acts only on resources carrying this tag: the
# cluster (below) and the subnets it launches in (fruits.preflight checks them).
EMR_MANAGED_TAG = ("for-use-with-amazon-emr-managed-policies", "true")

# Share of an instance's memory EMR hands to YARN (yarn.nodemanager.resource.memory-mb): the rest is
# the OS and the Hadoop daemons. EMR's own defaults are ~75% on 16-32 GiB nodes; we size against that.
YARN_MEMORY_SHARE = 0.75
# Share of each executor container kept off the JVM heap: the Python workers holding the model
# (TensorFlow / LiteRT and the decoded image batches) live there, not in the JVM.
PYTHON_MEMORY_SHARE = 0.5
# EMR 7 labels every YARN node by market type (ON_DEMAND / SPOT) once node labels are on; application
# masters (in cluster mode: the Spark driver) go only to nodes of this label. Core nodes are On-Demand.
AM_NODE_LABEL = "ON_DEMAND"
# A spot interruption loses the node's running tasks and shuffle files: more attempts than Spark's 4
# before a task or a stage fails the step (a decommissioned executor's tasks do not count at all).
TASK_MAX_FAILURES = 8
STAGE_MAX_CONSECUTIVE_ATTEMPTS = 8

# Executors of about 4 cores: enough tasks to share one broadcast copy of the weights, small enough
# that a lost spot node loses little work.
TARGET_EXECUTOR_CORES = 4


@dataclass(frozen=True)
class InstanceFacts:
    vcpus: int
    memory_gib: float
    architecture: str  # "arm64" (Graviton) or "x86_64"
    # Sustained network bandwidth each way (BaselineBandwidthInGbps): an "up to N Gbps" type bursts above it only
    # while its network credits last (minutes), so an hour of S3 traffic runs at this.
    network_gbps: float | None = None


# THE instance facts table (EC2 DescribeInstanceTypes: vCPUs, memory, baseline network bandwidth; a test checks
# it against moto's copy of that answer): the cluster builder sizes Spark from it and the cost model
# (fruits.costs) reads vCPUs and bandwidth from it. Prices live with the cost model, not here.
INSTANCE_TYPES: dict[str, InstanceFacts] = {
    # Graviton2 / Graviton3
    "m6g.xlarge": InstanceFacts(4, 16, "arm64", 1.25),
    "m6g.2xlarge": InstanceFacts(8, 32, "arm64", 2.5),
    "m6g.4xlarge": InstanceFacts(16, 64, "arm64", 5),
    "m7g.xlarge": InstanceFacts(4, 16, "arm64", 1.876),
    "m7g.2xlarge": InstanceFacts(8, 32, "arm64", 3.75),
    "m7g.4xlarge": InstanceFacts(16, 64, "arm64", 7.5),
    "c6g.2xlarge": InstanceFacts(8, 16, "arm64", 2.5),
    "c6g.4xlarge": InstanceFacts(16, 32, "arm64", 5),
    "c7g.xlarge": InstanceFacts(4, 8, "arm64", 1.876),
    "c7g.2xlarge": InstanceFacts(8, 16, "arm64", 3.75),
    "c7g.4xlarge": InstanceFacts(16, 32, "arm64", 7.5),
    "c7g.16xlarge": InstanceFacts(64, 128, "arm64", 30),
    "r6g.2xlarge": InstanceFacts(8, 64, "arm64", 2.5),
    "r7g.2xlarge": InstanceFacts(8, 64, "arm64", 3.75),
    # Intel / AMD
    "m5.xlarge": InstanceFacts(4, 16, "x86_64", 1.25),
    "m5.2xlarge": InstanceFacts(8, 32, "x86_64", 2.5),
    "m6i.xlarge": InstanceFacts(4, 16, "x86_64", 1.562),
    "m6i.2xlarge": InstanceFacts(8, 32, "x86_64", 3.125),
    "m6a.2xlarge": InstanceFacts(8, 32, "x86_64", 3.125),
    "m7i.xlarge": InstanceFacts(4, 16, "x86_64", 1.562),
    "m7i.2xlarge": InstanceFacts(8, 32, "x86_64", 3.125),
    "c6i.2xlarge": InstanceFacts(8, 16, "x86_64", 3.125),
    "c7i.2xlarge": InstanceFacts(8, 16, "x86_64", 3.125),
    "c7i.16xlarge": InstanceFacts(64, 128, "x86_64", 25),
    "r6i.2xlarge": InstanceFacts(8, 64, "x86_64", 3.125),
}

# Several types per fleet so spot finds capacity in some pool; workers share a vCPU count (8) so one
# executor layout fits all of them, and a baseline bandwidth: a phone night moves terabytes from and to S3, so
# the fleet's slowest network sets its pace (the On-Demand core takes the cheapest type: Graviton2's 2.5 Gbps
# made a night of 1 M phone photos 45 % longer, docs/costs.md). Compute-optimized first: featurize is CPU-bound.
DEFAULT_PRIMARY_TYPES = {
    "arm64": ("m7g.xlarge", "m6g.xlarge"),
    "x86_64": ("m7i.xlarge", "m6i.xlarge"),
}
DEFAULT_WORKER_TYPES = {
    "arm64": ("c7g.2xlarge", "m7g.2xlarge", "r7g.2xlarge"),
    "x86_64": ("c7i.2xlarge", "m7i.2xlarge", "c6i.2xlarge", "m6i.2xlarge", "m6a.2xlarge"),
}


@dataclass(frozen=True)
class ClusterSizing:
    """How big and what kind of cluster; every field has a default that suits a nightly batch."""

    architecture: str = "arm64"
    # Instances (each instance type weighs 1 unit of capacity).
    # 1 core + 1 task node: the cheapest per run for a nightly million thumbnails in the cost model's
    # right-sizing (`python -m fruits.cli.costs compare`; fixed start-up minutes weigh more on a bigger
    # cluster). task_count is the fewest: a night whose photos need more gets more (sized_for_night).
    core_count: int = 1
    task_count: int = 1
    # Task nodes on spot (with on-demand fallback); primary and core are always On-Demand: the core
    # nodes host HDFS and the YARN application master, i.e. the Spark driver (AM_NODE_LABEL).
    spot: bool = True
    # Empty: the defaults for the architecture (DEFAULT_PRIMARY_TYPES / DEFAULT_WORKER_TYPES).
    primary_instance_types: tuple[str, ...] = ()
    worker_instance_types: tuple[str, ...] = ()
    primary_ebs_gib: int = 32
    worker_ebs_gib: int = 64
    # Minutes to wait for spot capacity before switching to on-demand.
    spot_timeout_minutes: int = 10
    # Seconds without any step or YARN work before EMR ends the cluster on its own: catches a cluster
    # whose DAG died before its terminate task ran.
    idle_timeout_seconds: int = 1200
    # Threads one inference task uses (the model runtime's intra-op threads) = spark.task.cpus. One: a task's
    # decode, hashing and Arrow work run on one thread, so a 2-CPU task idles a vCPU through a phone photo's decode
    # (four times its inference); the benchmarks' per-vCPU rates are measured at one (benchmarks/README.md).
    model_threads: int = 1
    step_concurrency: int = 1
    extra_tags: dict[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, not {self.architecture!r}")
        if self.core_count < 1:
            raise ValueError("core_count must be at least 1 (EMR needs a core node)")
        if self.task_count < 0:
            raise ValueError("task_count cannot be negative")
        if self.model_threads < 1:
            raise ValueError("model_threads must be positive")
        if not 60 <= self.idle_timeout_seconds <= 604800:
            raise ValueError("idle_timeout_seconds must be within EMR's 60..604800")
        for role, types in (("primary", self.primary_types), ("worker", self.worker_types)):
            _check_instance_types(role, types, self.architecture)
        if len({INSTANCE_TYPES[t].vcpus for t in self.worker_types}) != 1:
            raise ValueError(
                f"worker instance types must share one vCPU count (one executor layout): {self.worker_types}"
            )
        if self.model_threads > self.worker_facts.vcpus:
            raise ValueError(f"model_threads={self.model_threads} exceeds the workers' {self.worker_facts.vcpus} vCPUs")

    @property
    def primary_types(self) -> tuple[str, ...]:
        return tuple(self.primary_instance_types) or DEFAULT_PRIMARY_TYPES[self.architecture]

    @property
    def worker_types(self) -> tuple[str, ...]:
        return tuple(self.worker_instance_types) or DEFAULT_WORKER_TYPES[self.architecture]

    @property
    def worker_facts(self) -> InstanceFacts:
        """The smallest worker: executors are sized so they fit on whichever type spot delivers."""
        facts = [INSTANCE_TYPES[t] for t in self.worker_types]
        bandwidths = [f.network_gbps for f in facts]
        return InstanceFacts(
            vcpus=min(f.vcpus for f in facts),
            memory_gib=min(f.memory_gib for f in facts),
            architecture=self.architecture,
            network_gbps=None if None in bandwidths else min(bandwidths),
        )


def _check_instance_types(role: str, types: tuple[str, ...], architecture: str) -> None:
    if not 1 <= len(types) <= 5:
        raise ValueError(f"{role} fleet needs 1 to 5 instance types, got {list(types)}")
    for instance_type in types:
        facts = INSTANCE_TYPES.get(instance_type)
        if facts is None:
            raise ValueError(
                f"unknown instance type {instance_type!r}: add its vCPUs/memory to fruits.emr_cluster.INSTANCE_TYPES"
            )
        if facts.architecture != architecture:
            raise ValueError(f"{instance_type} is {facts.architecture}, the cluster is {architecture}")


def spark_defaults(worker: InstanceFacts, *, model_threads: int) -> dict[str, str]:
    """spark-defaults sized to one worker node: whole executors per node, each a multiple of the task's
    CPUs, container memory split between the JVM heap and the Python workers that run the model."""
    task_cpus = model_threads
    executor_cores = max(task_cpus, (min(TARGET_EXECUTOR_CORES, worker.vcpus) // task_cpus) * task_cpus)
    executors_per_node = max(1, worker.vcpus // executor_cores)
    yarn_mib = int(worker.memory_gib * 1024 * YARN_MEMORY_SHARE)
    container_mib = yarn_mib // executors_per_node
    overhead_mib = max(1024, int(container_mib * PYTHON_MEMORY_SHARE))
    heap_mib = container_mib - overhead_mib
    if heap_mib < 1024:
        raise ValueError(
            f"a {worker.memory_gib:g} GiB worker leaves the executors too little memory ({heap_mib} MiB heap)"
        )
    threads = str(model_threads)
    return {
        "spark.executor.cores": str(executor_cores),
        "spark.task.cpus": str(task_cpus),
        "spark.executor.memory": f"{heap_mib}m",
        "spark.executor.memoryOverhead": f"{overhead_mib}m",
        # The driver loads and broadcasts the weights and fits the PCA: an executor-sized container.
        "spark.driver.memory": f"{heap_mib}m",
        "spark.driver.memoryOverhead": f"{overhead_mib}m",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Rows per Arrow batch: featurize sets it from its inference batch (featurize.ARROW_BATCH_ROWS).
        # One Python worker per task slot, kept alive so the model is built once per worker.
        "spark.python.worker.reuse": "true",
        # featurize gives LiteRT spark.task.cpus threads; TensorFlow/OpenMP would take one per vCPU: cap them too.
        "spark.executorEnv.OMP_NUM_THREADS": threads,
        "spark.executorEnv.TF_NUM_INTRAOP_THREADS": threads,
        "spark.executorEnv.TF_NUM_INTEROP_THREADS": "1",
        # Speculative copies would run the model twice for nothing; spot losses are retried anyway.
        "spark.speculation": "false",
        # Spot: EMR turns the 2-minute interruption notice into a YARN graceful decommission; Spark then
        # stops scheduling there and migrates shuffle/cached blocks off the node (Spark 3.1+).
        "spark.decommission.enabled": "true",
        "spark.storage.decommission.enabled": "true",
        "spark.storage.decommission.shuffleBlocks.enabled": "true",
        "spark.storage.decommission.rddBlocks.enabled": "true",
        "spark.task.maxFailures": str(TASK_MAX_FAILURES),
        "spark.stage.maxConsecutiveAttempts": str(STAGE_MAX_CONSECUTIVE_ATTEMPTS),
    }


def _fleet(
    name: str,
    fleet_type: str,
    types: tuple[str, ...],
    count: int,
    *,
    spot: bool,
    ebs_gib: int,
    spot_timeout_minutes: int,
) -> dict[str, Any]:
    fleet: dict[str, Any] = {
        "Name": name,
        "InstanceFleetType": fleet_type,
        "TargetOnDemandCapacity": 0 if spot else count,
        "TargetSpotCapacity": count if spot else 0,
        "InstanceTypeConfigs": [
            {
                "InstanceType": instance_type,
                "WeightedCapacity": 1,
                "EbsConfiguration": {
                    "EbsBlockDeviceConfigs": [
                        {"VolumeSpecification": {"VolumeType": "gp3", "SizeInGB": ebs_gib}, "VolumesPerInstance": 1}
                    ],
                    "EbsOptimized": True,
                },
            }
            for instance_type in types
        ],
    }
    if spot:
        fleet["LaunchSpecifications"] = {
            "SpotSpecification": {
                "TimeoutDurationMinutes": spot_timeout_minutes,
                "TimeoutAction": "SWITCH_TO_ON_DEMAND",
                "AllocationStrategy": "capacity-optimized",
            },
            # Used after the switch: the cheapest type that has capacity.
            "OnDemandSpecification": {"AllocationStrategy": "lowest-price"},
        }
    else:
        fleet["LaunchSpecifications"] = {"OnDemandSpecification": {"AllocationStrategy": "lowest-price"}}
    return fleet


def build_job_flow(settings: PipelineSettings, *, name: str, code_uri: str, sizing: ClusterSizing) -> dict[str, Any]:
    """The full RunJobFlow request. Refuses (GdprViolation) a region outside the allow-list, so no
    request for a non-EU cluster is ever built. Steps are added afterwards (KeepJobFlowAliveWhenNoSteps)."""
    check_region(settings.region, settings.allowed_region_list)
    # EMR reads bootstrap scripts and writes logs only on S3.
    s3_bucket_of(code_uri, what="code_uri")
    s3_bucket_of(settings.log_uri_or_default, what="log_uri")
    code_uri = code_uri if code_uri.endswith("/") else code_uri + "/"

    fleet_args = {"spot_timeout_minutes": sizing.spot_timeout_minutes}
    fleets = [
        _fleet("primary", "MASTER", sizing.primary_types, 1, spot=False, ebs_gib=sizing.primary_ebs_gib, **fleet_args),
        # Never spot: the driver (the YARN application master) runs here.
        _fleet(
            "core",
            "CORE",
            sizing.worker_types,
            sizing.core_count,
            spot=False,
            ebs_gib=sizing.worker_ebs_gib,
            **fleet_args,
        ),
    ]
    if sizing.task_count:
        fleets.append(
            _fleet(
                "task",
                "TASK",
                sizing.worker_types,
                sizing.task_count,
                spot=sizing.spot,
                ebs_gib=sizing.worker_ebs_gib,
                **fleet_args,
            )
        )
    instances: dict[str, Any] = {
        "InstanceFleets": fleets,
        "KeepJobFlowAliveWhenNoSteps": True,
        "TerminationProtected": False,
    }
    subnets = settings.subnet_id_list
    if subnets:
        # Several subnets: EMR picks the one (AZ) with spot capacity for the fleets.
        instances["Ec2SubnetIds"] = list(subnets)

    tags = {
        "Project": "fruits",
        "ManagedBy": "airflow",
        "DataClassification": "may-contain-personal-data",
        EMR_MANAGED_TAG[0]: EMR_MANAGED_TAG[1],
        **sizing.extra_tags,
        # The Airflow role may act only on clusters carrying this tag (infra/foundation.yaml): last, so
        # extra_tags cannot change it.
        PIPELINE_TAG_KEY: settings.pipeline_tag,
    }
    request: dict[str, Any] = {
        "Name": name,
        "ReleaseLabel": settings.emr_release,
        "LogUri": settings.log_uri_or_default,
        "Applications": [{"Name": "Spark"}],
        "Instances": instances,
        "BootstrapActions": [
            {
                "Name": "install-python-deps",
                "ScriptBootstrapAction": {
                    "Path": code_uri + BOOTSTRAP_SCRIPT,
                    # The wheelhouse sits beside the code versions: code/wheelhouse/<lock digest>/<machine>/.
                    "Args": [
                        code_uri + SPARK_NODE_REQUIREMENTS,
                        code_uri.rstrip("/").rsplit("/", 1)[0] + "/wheelhouse/",
                        PYTHON_VERSION,
                        PYTHON_ENV_DIR,
                    ],
                },
            }
        ],
        "Configurations": [
            {
                "Classification": "spark-env",
                "Configurations": [
                    {
                        "Classification": "export",
                        "Properties": {"PYSPARK_PYTHON": PYSPARK_PYTHON, "PYSPARK_DRIVER_PYTHON": PYSPARK_PYTHON},
                    }
                ],
                "Properties": {},
            },
            {
                # The YARN application master, i.e. the Spark driver in cluster mode, on On-Demand nodes.
                "Classification": "yarn-site",
                "Properties": {
                    "yarn.node-labels.enabled": "true",
                    "yarn.node-labels.am.default-node-label-expression": AM_NODE_LABEL,
                },
            },
            {
                "Classification": "spark-defaults",
                "Properties": spark_defaults(sizing.worker_facts, model_threads=sizing.model_threads),
            },
        ],
        "ServiceRole": settings.service_role,
        "JobFlowRole": settings.instance_profile,
        "SecurityConfiguration": settings.security_configuration,
        "AutoTerminationPolicy": {"IdleTimeout": sizing.idle_timeout_seconds},
        "ScaleDownBehavior": "TERMINATE_AT_TASK_COMPLETION",
        "StepConcurrencyLevel": sizing.step_concurrency,
        "VisibleToAllUsers": True,
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
    }
    if settings.kms_key_arn:
        # EMR pushes the logs to S3 encrypted with the lake's key (they name the photos).
        request["LogEncryptionKmsKeyId"] = settings.kms_key_arn
    return request


# featurize.PIXELS_BYTES, a photo's model input (uint8 RGB, 224 x 224): the DAG does not import the Spark job (Pillow,
# pyarrow); tests/test_emr_cluster.py keeps the two equal.
PIXELS_BYTES = 224 * 224 * 3
# Seconds of the workers' baseline bandwidth a night's bytes may take per worker: the On-Demand primary and core
# bill every minute of the night, a spot task node little more than its own, so more task nodes are cheaper until
# their fixed start-up minutes weigh more (the cost model's cheapest count for a million phone photos, docs/costs.md).
NIGHT_NETWORK_SECONDS = 1500


def night_network_bytes(photo_bytes: int, photos: int, keep_originals: bool = False) -> int:
    """The bytes a night of `photos` landing photos (`photo_bytes` together) moves across the workers' network, each
    step in its busier direction (fruits.costs.step_bytes), as the listing tells them: the photos once (the ingest
    pass reads them; it writes back only the model pixels of those bigger than them, and the rest), and the model
    pixels of each photo bigger than them once more (featurize reads them instead of the photo), or twice with
    `keep_originals` (a fruits_original_retention_days window: the ingest pass writes them beside the photo's bytes,
    its writes then the busier direction). The listing has no photo's size: as many photos as its bytes could hold
    bigger than their pixels count as decoded, which for small photos is more than featurize's read of them. Not
    known before the decode: the decoded photos' derivatives (a tenth of their pixels, docs/costs.md)."""
    decoded = min(photos, photo_bytes // (PIXELS_BYTES + 1))
    return photo_bytes + (2 if keep_originals else 1) * decoded * PIXELS_BYTES


def sized_for_night(
    sizing: ClusterSizing, photo_bytes: int, photos: int, keep_originals: bool = False
) -> ClusterSizing:
    """`sizing` with the task nodes a night of `photos` landing photos (`photo_bytes` together) needs so that what
    it moves (`night_network_bytes`) crosses the workers' network within NIGHT_NETWORK_SECONDS a worker; never fewer
    than `sizing` asks for."""
    gbps = sizing.worker_facts.network_gbps
    if not gbps:  # an instance type without its bandwidth in INSTANCE_TYPES: the sizing as asked
        return sizing
    per_worker = gbps * 1e9 / 8 * NIGHT_NETWORK_SECONDS
    workers = math.ceil(night_network_bytes(photo_bytes, photos, keep_originals) / per_worker)
    return replace(sizing, task_count=max(sizing.task_count, workers - sizing.core_count))


def worker_vcpus(sizing: ClusterSizing) -> int:
    """vCPUs running Spark tasks (core + task nodes), e.g. for the cost estimate."""
    return sizing.worker_facts.vcpus * (sizing.core_count + sizing.task_count)


def vcpus_needed(sizing: ClusterSizing) -> dict[str, int]:
    """EC2 vCPUs the cluster may hold at once, per quota: On-Demand counts the task nodes too, since the
    task fleet switches to On-Demand when spot capacity does not come (SWITCH_TO_ON_DEMAND)."""
    primary = max(INSTANCE_TYPES[t].vcpus for t in sizing.primary_types)
    worker = max(INSTANCE_TYPES[t].vcpus for t in sizing.worker_types)
    return {
        "on_demand": primary + worker * (sizing.core_count + sizing.task_count),
        "spot": worker * sizing.task_count if sizing.spot else 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="fruits-preview")
    parser.add_argument("--code-uri", default=None, help="default: s3://<bucket>/code/preview/")
    parser.add_argument("--architecture", choices=ARCHITECTURES, default=ClusterSizing.architecture)
    parser.add_argument("--core", type=int, default=ClusterSizing.core_count)
    parser.add_argument("--task", type=int, default=ClusterSizing.task_count)
    parser.add_argument("--on-demand", action="store_true", help="no spot for core/task nodes")
    args = parser.parse_args(argv)
    # Variables from the environment (AIRFLOW_VAR_FRUITS_*), as Airflow itself would read them.
    settings = load_settings(lambda key, default=None: os.environ.get(f"AIRFLOW_VAR_{key.upper()}", default))
    from fruits.lake import code_uri as lake_code_uri

    sizing = ClusterSizing(
        architecture=args.architecture, core_count=args.core, task_count=args.task, spot=not args.on_demand
    )
    request = build_job_flow(
        settings,
        name=args.name,
        code_uri=args.code_uri or lake_code_uri(f"s3://{settings.bucket}", "preview"),
        sizing=sizing,
    )
    print(json.dumps(request, indent=2))
    needed = vcpus_needed(sizing)
    print(
        f"# {worker_vcpus(sizing)} worker vCPUs; EC2 quotas needed: {needed['on_demand']} On-Demand, "
        f"{needed['spot']} Spot vCPUs (fruits.preflight)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
