"""Fixtures shared by the whole suite.

`../shared` (real Fruits-360 photos, real ImageNet weights) sits beside the checkout in every
development session and in CI, but not in a user's fresh clone: tests that need it skip with
the reason there, and fail when CI=true, where its absence is a broken set-up, not a choice.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from fruits.cli.demo import REPO_ROOT, SAMPLE_DIR, WEIGHTS_FILE
from fruits.local_target import SHORT_LIVED_JVM_OPTIONS

# Keras reads KERAS_HOME once, when it is first imported: point it at the session's own folder
# before any test can import Keras (the `keras_home` fixture puts the weights there).
KERAS_HOME = Path(tempfile.mkdtemp(prefix="fruits-keras-home-"))
os.environ["KERAS_HOME"] = str(KERAS_HOME)

# Spark's Python workers are separate processes: they find the job modules through PYTHONPATH
# (pytest's `pythonpath` setting only changes this process's sys.path).
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO_ROOT / "spark_jobs"), str(REPO_ROOT / "plugins")]
    + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
)
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Every driver JVM the suite starts (its SparkSessions, the spark-submits it runs) is short-lived, as the
# local target's: spark-submit adds SPARK_SUBMIT_OPTS to the driver's command line.
os.environ.setdefault("SPARK_SUBMIT_OPTS", SHORT_LIVED_JVM_OPTIONS)


# What puts a test in the full tier only (`make test`), out of the fast loop (`make check`, `-m "not slow"`):
# fixtures that start a JVM, import TensorFlow or run the DAG end to end. Asking for one is what marks the
# test, so a new test cannot slip a JVM into the fast loop by forgetting a marker.
FULL_TIER_FIXTURES = frozenset({"spark", "sample_features", "keras_home", "litert_payload", "publish_models"})


# `make test`'s workers take whole files in collection order (Makefile: --no-loadscope-reorder); these come
# first, longest first (`--durations` of a full run), so no long file is left to run alone at the end.
LONGEST_FIRST = (
    "test_dag_local.py",
    "test_services_e2e.py",
    "test_pca.py",
    "test_dag_emr_moto.py",
    "test_featurize.py",
    "test_featurize_cluster.py",
    "test_lineage.py",
    "test_notebook.py",
    "test_report_page.py",
    "test_quality.py",
    "test_ingest.py",
    "test_bootstrap.py",
    "test_deck.py",
)


@pytest.fixture(scope="session", autouse=True)
def atomic_conditional_writes_in_moto():
    """S3's conditional PutObject (If-None-Match / If-Match) is atomic; moto's checks the key, then writes, so two
    threads can both pass the check (measured: 4 of 80 eight-thread lock races had two winners). The double is
    made to keep S3's semantics by serializing its PutObject handler; the code under test is unchanged."""
    import threading
    from unittest import mock

    from moto.s3.responses import S3Response

    put_object, lock = S3Response.put_object, threading.Lock()

    def atomic_put_object(self):
        with lock:
            return put_object(self)

    with mock.patch.object(S3Response, "put_object", atomic_put_object):
        yield


def pytest_collection_modifyitems(config, items):
    for item in items:
        if FULL_TIER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept


def pytest_sessionfinish(session, exitstatus):
    """End cleanly: handlers that tests bound to pytest's capture streams (a command's basicConfig, Airflow's
    logging set-up) would write py4j's shutdown lines into closed files ("--- Logging error ---") after
    the last test. Point them at the real stderr, and drop py4j's shutdown chatter."""
    import logging

    logging.getLogger("py4j").setLevel(logging.ERROR)
    loggers = [
        logging.getLogger(),
        *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]
    for logger in loggers:
        for handler in logger.handlers:
            stream = getattr(handler, "stream", None)
            if type(stream).__module__.startswith("_pytest"):  # a capture stream, closed once pytest ends
                handler.setStream(sys.__stderr__)


def require_shared(path: Path) -> Path:
    """Return `path` if it exists; otherwise skip (fresh clone) or fail (CI)."""
    if path.exists():
        return path
    reason = f"{path} is missing: ../shared (Fruits-360 sample and MobileNetV2 weights) is not beside the checkout"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real Fruits-360 sample: <split>/<Label>/<file>.jpg, 24 labels x (30 Training + 10 Test)."""
    return require_shared(SAMPLE_DIR)


@pytest.fixture(scope="session")
def keras_home() -> Path:
    """The session's temporary KERAS_HOME, holding the real ImageNet weights under the name Keras
    looks for, so `weights="imagenet"` loads offline. Copied to a temp dir, never into the project."""
    weights = require_shared(WEIGHTS_FILE)
    (KERAS_HOME / "models").mkdir(exist_ok=True)
    shutil.copy(weights, KERAS_HOME / "models" / weights.name)
    os.environ["KERAS_HOME"] = str(KERAS_HOME)  # for this process and every Spark worker it starts
    yield KERAS_HOME
    shutil.rmtree(KERAS_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def litert_payload(keras_home, tmp_path_factory) -> dict[str, str]:
    """The real weights converted ONCE for the session by the release command's converter (what
    `python -m fruits.release publish-weights` publishes): featurize's `--model-payload` and its sha256."""
    from fruits import release, storage

    payload = release.convert_to_litert(WEIGHTS_FILE.read_bytes(), WEIGHTS_FILE.name)
    path = tmp_path_factory.mktemp("litert") / "mobilenet_v2.tflite"
    path.write_bytes(payload)
    return {"model_payload": str(path), "model_payload_sha256": storage.sha256_bytes(payload)}


def payload_args(litert_payload: dict[str, str]) -> list[str]:
    """featurize's options that broadcast the session's converted payload instead of converting again."""
    return [
        "--model-payload",
        litert_payload["model_payload"],
        "--model-payload-sha256",
        litert_payload["model_payload_sha256"],
    ]


@pytest.fixture(scope="session")
def publish_models(litert_payload):
    """publish_models(lake_dir): the real weights and the session's payload into a local lake's models/,
    as the release command does before the first night; the DAG's plan then passes both to featurize."""
    from fruits import release, storage

    def publish(lake_dir: Path) -> dict:
        store = storage.LocalStore(lake_dir)
        payload = Path(litert_payload["model_payload"]).read_bytes()
        return release.publish_weights(store, store.root, WEIGHTS_FILE.read_bytes(), WEIGHTS_FILE.name, payload=payload)

    return publish


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory):
    """One SQLite Airflow metadata DB for the session's DAG tests."""
    from fruits.cli import demo

    demo.prepare_airflow(tmp_path_factory.getbasetemp() / "airflow_home")


@pytest.fixture(scope="session")
def spark():
    """A local[2] SparkSession shared by the suite's transformation tests."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("fruits-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    yield session
    session.stop()
    # Close py4j's gateway while the suite still runs: left to interpreter exit, its finalizers call a JVM that
    # is gone and log "Exception while sending command" after the last test.
    from pyspark import SparkContext

    if SparkContext._gateway is not None:
        SparkContext._gateway.shutdown()
        SparkContext._gateway = SparkContext._jvm = None


@pytest.fixture(scope="session")
def sample_features(sample_dir, litert_payload, spark, tmp_path_factory) -> str:
    """featurize.py's output over the WHOLE real sample (960 images, real ImageNet weights, the
    job's default runtime and the session's published payload), computed once per session on the
    shared `spark` session: the path of a Parquet folder with path, label, split, features (1280
    floats), width, height, sha256, batch_id, plus its _job_metrics.json. Sample's MANIFEST.txt
    lands in its _quarantine."""
    import featurize

    output = tmp_path_factory.mktemp("sample_features") / "features"
    args = featurize.parse_args(
        ["--input", str(sample_dir), "--output", str(output), "--batch-id", "2024-01-01", *payload_args(litert_payload)]
    )
    featurize.run(spark, args)
    return str(output)


class StoreFiles:
    """spark_jobs/jobio's file operations over a fruits.upload store (LocalStore, or S3Store on moto):
    tests lay out a lake with the jobs' own commit writer, `jobio.commit(StoreFiles(store), ...)`."""

    def __init__(self, store):
        self.store = store

    def write(self, uri: str, data: bytes) -> None:
        from fruits import storage

        self.store.put(uri, data, storage.sha256_bytes(data))

    def read(self, uri: str) -> bytes | None:
        return self.store.read_or_none(uri)

    def list_files(self, folder: str) -> list[tuple[str, int]]:
        folder = folder.rstrip("/") + "/"
        return sorted((uri[len(folder) :], len(self.store.read(uri))) for uri in self.store.list_files(folder))


def commit_output(store, output: str, files: dict[str, bytes], facts: dict | None = None) -> dict:
    """Write `files` into a new run folder of `output` and commit it, as a job run does."""
    import jobio

    run = jobio.run_uri(output, jobio.new_run_id())
    for name, data in files.items():
        store.put(run + name, data, "-")
    return jobio.commit(StoreFiles(store), output, run, facts)


@contextlib.contextmanager
def headless_chromium(window: str = "1200,900", *, logs: bool = False, extra_flags: tuple[str, ...] = ()):
    """Debian's headless Chromium through Debian's ChromeDriver (no browser download), with a throwaway
    profile; logs=True keeps the console and performance (network) logs. Skips without them (fails under
    CI=true)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        reason = "Chromium/ChromeDriver missing (Debian packages chromium, chromium-driver)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    profile = tempfile.mkdtemp(prefix="fruits-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--window-size={window}",
        f"--user-data-dir={profile}",
        *extra_flags,
    ):
        options.add_argument(flag)
    if logs:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def emr_network(region: str, *, tag_subnets: bool = True, endpoints: bool = True) -> dict[str, str]:
    """Inside mock_aws: a VPC with two private subnets (two AZs), tagged for AmazonEMRServicePolicy_v2 as
    docs/first-night-on-aws.md tags them, with (`endpoints`) the S3 and KMS endpoints the foundation stack
    adds; returns the Variables the foundation's outputs give."""
    import boto3

    from fruits.emr_cluster import EMR_MANAGED_TAG

    ec2 = boto3.client("ec2", region_name=region)
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=f"{region}{az}")["Subnet"][
            "SubnetId"
        ]
        for i, az in enumerate("ab")
    ]
    if tag_subnets:
        ec2.create_tags(Resources=subnets, Tags=[{"Key": EMR_MANAGED_TAG[0], "Value": EMR_MANAGED_TAG[1]}])
    if endpoints:
        table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        ec2.create_vpc_endpoint(
            VpcId=vpc, ServiceName=f"com.amazonaws.{region}.s3", VpcEndpointType="Gateway", RouteTableIds=[table]
        )
        ec2.create_vpc_endpoint(
            VpcId=vpc, ServiceName=f"com.amazonaws.{region}.kms", VpcEndpointType="Interface", SubnetIds=subnets[:1]
        )
    return {"fruits_vpc_id": vpc, "fruits_subnet_ids": ",".join(subnets)}


def quota_client(region: str, vcpus: dict[str, int]):
    """A real botocore service-quotas client answering GetServiceQuota for the EC2 vCPU quotas from
    `vcpus` ({"on_demand": n, "spot": n}) through botocore's Stubber, which validates each request against
    the API model: moto implements Service Quotas for the "vpc" service only (5.2: ec2 codes -> NoSuchResource)."""
    import boto3
    from botocore.stub import Stubber

    from fruits.preflight import QUOTA_CODES

    client = boto3.client("service-quotas", region_name=region)
    stubber = Stubber(client)
    for market, code in QUOTA_CODES.items():
        stubber.add_response(
            "get_service_quota",
            {"Quota": {"ServiceCode": "ec2", "QuotaCode": code, "Value": float(vcpus[market])}},
            {"ServiceCode": "ec2", "QuotaCode": code},
        )
    stubber.activate()
    return client


def account_clients(region: str, vcpus: dict[str, int] | None = None):
    """`client(service)` for fruits.preflight: moto's EC2, the Stubber's Service Quotas (default: AWS's
    standard 1,152 vCPUs)."""
    import boto3

    vcpus = vcpus or {"on_demand": 1152, "spot": 1152}
    return lambda name: (
        quota_client(region, vcpus) if name == "service-quotas" else boto3.client(name, region_name=region)
    )
