"""The Airflow worker's share of a night (issue 22): CPU seconds and peak memory of every task the worker runs
for one night of N photos, measured at several N, extrapolated to a million.

    .venv/bin/python benchmarks/worker_share.py [--sizes 2500,5000,10000] [--history-nights 365] [--pca-k 229]

S3 is moto's server (ThreadedMotoServer, EU region, KMS keys, a versioned lake, private encrypted buckets as
tests/test_dag_emr_moto.py makes them), run by this process; each measured task runs in a child process that
reaches it over HTTP, so a child's CPU is the worker's only. This process lays each lake out through mock_aws
(the same backends, without HTTP). For each N, the lake is what night 365 of N-photo nights finds, the night
the retention sweeps run at full size:
- the landing: N objects under `landing/<night>/<label>/...` (spaces, accents, CJK in the names; 1 in 200 a file
  the listing refuses), 64-byte bodies: the worker lists the landing, never reads a photo;
- the retention window (default 365 nights): features and statistics committed each night, a manifest stub,
  30 run reports; the duplicate index with 2 records a photo a night (the received and the stored bytes' hashes,
  as the ingest job records them) in its 4,096 shards;
- the night leaving retention tonight: its manifest (N photos), ingestion report, derived, features, statistics,
  quarantine, reduced rows, report, index records; last night: its manifest and its N/1,000 original bundles
  (tonight's originals sweep deletes them).
The DAG's tasks that run on the worker then run one by one, each in a fresh interpreter as Airflow runs a task
instance: check_gdpr (pipeline_tasks.guard's EMR branch, moto's endpoint named as a test double), lock_batch,
list_landing (`pipeline_tasks.list_landing`: `fruits.upload.write_listing` of the S3 landing, and the code
release, already published), sweep_expired_batches, plan_jobs (`pipeline_tasks.plan_run` on that listing, the EMR
preflight on moto's EC2 and the Service Quotas stub of tests/conftest.py); then what the cluster leaves is written,
unmeasured (the ingest job's outcomes through `ingest.decide`, its manifest, ingestion report and bundles,
featurize's and PCA's commits: N reduced rows of --pca-k floats in --reduced-parts files); then report_cost
(`run_report.report_run` with target "local": the EMR record, 4 calls of a fixed size, left out), publish_assets
(`assets.run_events`), remove_originals (tonight's N/1,000 bundles, their features covering them),
unlock_batch, and the consumer DAG's pca_summary (`assets.summarize_reduced`). Task by task, the sizes in turn.
A child's CPU is user + sys from os.wait4, its peak memory its VmHWM (ru_maxrss would
carry this process's pages over the exec), its wall seconds from here.

Method: per task, a least-squares line over the measured N (CPU seconds and peak memory separately), evaluated at
1,000,000; the night's CPU is the sum of the tasks' lines, its peak memory the largest task's. Airflow's own
imports in each task process (a child importing airflow.sdk and the amazon provider's EMR operators and S3 hook
beside fruits.pipeline_tasks, less a child importing fruits.pipeline_tasks alone) are added per task to the CPU
and to the peak. The sweep is also extrapolated saturated (sweep_model): at these N a night's hashes touch part of
the 4,096 index shards, at a million all of them (one shard's rewrite measured at full size, x 4,096). moto's
server is not S3: the API shapes are the same (listing pages of 1,000 keys, conditional writes, versions),
latency and throughput are not, and waiting is not CPU.
Writes benchmarks/results/worker_share.json.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _env import REPO_ROOT, RESULTS_DIR  # first: puts the jobs and plugins on the path

RESULTS_FILE = RESULTS_DIR / "worker_share.json"
REGION = "eu-west-3"
ACCOUNT = "123456789012"  # moto's account: the lake's ExpectedBucketOwner
MILLION = 1_000_000
TARGETS = {"cpu_s": 600.0, "peak_rss_mib": 1024.0}
TASKS = (
    "check_gdpr",
    "lock_batch",
    "list_landing",
    "sweep_expired_batches",
    "plan_jobs",
    "report_cost",
    "publish_assets",
    "remove_originals",
    "unlock_batch",
    "pca_summary",
)
LABELS = ("Kiwi", "Pêche de vigne", "Äpfel", "苹果", "Dragon fruit", "Banana", "Citron vert", "Fraise des bois")
AIRFLOW_IMPORTS = "airflow.sdk, airflow.providers.amazon.aws.operators.emr, airflow.providers.amazon.aws.hooks.s3"


# ------------------------------------------------------------------------------------------ the fit


def least_squares(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through (x, y) points (two distinct x at least)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if not spread:
        raise ValueError("a line needs at least two distinct sizes")
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    return mean_y - slope * mean_x, slope


def extrapolate(points: list[tuple[float, float]], at: float) -> dict[str, float]:
    intercept, slope = least_squares(points)
    return {"intercept": intercept, "per_photo": slope, "at": at, "value": intercept + slope * at}


# ------------------------------------------------------------------------------------------ the child


def _settings(state: dict):
    from fruits.settings import PipelineSettings

    return PipelineSettings(**state["settings"])


def _clients(settings):
    import boto3

    from fruits import gdpr

    s3 = boto3.client("s3", region_name=settings.region)
    return gdpr.expect_bucket_owner(s3, settings.bucket, settings.bucket_owner)


REWRITE = ("parse_shard", "with_day", "without", "encode_shard")  # what lakeindex.update does to a shard's bytes


@contextlib.contextmanager
def timing_index_rewrites() -> Iterator[dict]:
    """Count the CPU (each thread's own) the index's shard rewrites spend in lakeindex's REWRITE functions (the
    shard's bytes viewed and checked, records added or dropped, the new bytes), and the shards and records
    they parse: lakeindex.update calls each once per shard."""
    import threading

    import lakeindex

    spent = {"cpu_s": 0.0, "shards": 0, "records": 0}
    lock = threading.Lock()
    originals = {name: getattr(lakeindex, name) for name in REWRITE}

    def timed(name):
        def wrapper(*args, **kwargs):
            started = time.thread_time()
            result = originals[name](*args, **kwargs)
            used = time.thread_time() - started
            with lock:
                spent["cpu_s"] += used
                if name == "parse_shard":
                    spent["shards"] += 1
                    spent["records"] += len(result)
            return result

        return wrapper

    for name in REWRITE:
        setattr(lakeindex, name, timed(name))
    try:
        yield spent
    finally:
        for name, function in originals.items():
            setattr(lakeindex, name, function)


def full_size_rewrite(history_nights: int, repeat: int = 5) -> dict:
    """The sweep's rewrite of one shard at a million photos a night (index_shard.full_shard: 2 x history_nights x
    1,000,000 / 4,096 records, the expired night's dropped by lakeindex.forget on a store in memory), timed as
    in the sweep (timing_index_rewrites), best of `repeat`: {"cpu_s": a shard, "records": the shard's}."""
    import lakeindex
    import numpy as np
    from index_shard import MemoryStore, full_shard

    tonight = lakeindex.day_of("2026-03-12")
    data, expired, _ = full_shard(np.random.default_rng(22), MILLION, history_nights, tonight)
    best = None
    for _ in range(repeat):
        store = MemoryStore()
        store.put_if_absent(lakeindex.shard_uri("mem://index", "abc"), data)
        with timing_index_rewrites() as spent:
            lakeindex.forget(store, "mem://index", expired, batch=lakeindex.batch_of(tonight - history_nights))
        assert spent["shards"] == 1 and spent["records"] == len(data) // lakeindex.RECORD_SIZE
        best = spent if best is None or spent["cpu_s"] < best["cpu_s"] else best
    return {"cpu_s": best["cpu_s"], "records": best["records"]}


def run_task(task: str, state: dict) -> object:
    """One DAG task's body, as the DAG calls it (the S3 client built as pipeline_tasks.s3_client builds it)."""
    if task == "baseline":
        import boto3  # noqa: F401

        from fruits import pipeline_tasks  # noqa: F401

        return None
    if task == "airflow_baseline":
        import importlib

        from fruits import pipeline_tasks  # noqa: F401

        for module in AIRFLOW_IMPORTS.split(", "):
            importlib.import_module(module)
        return None
    if task in (
        "write_night_json",
        "report_json_reads",
        "sweep_json_reads",
        "write_reduced_rows",
        "summary_reads",
        "page_reads",
    ):
        return night_json(task, state)

    from fruits import pipeline_tasks as tasks

    settings = _settings(state)
    batch, owner = state["batch"], state["owner"]
    s3 = _clients(settings)
    if task == "check_gdpr":  # pipeline_tasks.guard's EMR branch, with moto's server as the known test endpoint
        from fruits import gdpr

        gdpr.check_region(settings.region, settings.allowed_region_list)
        return gdpr.check_settings(settings, s3, test_endpoints=(os.environ["AWS_ENDPOINT_URL"],))
    if task == "lock_batch":
        return tasks.lock_batch(settings, s3, batch, owner)
    if task == "unlock_batch":
        return tasks.unlock_batch(settings, s3, batch, owner)
    if task == "list_landing":
        return tasks.list_landing(settings, s3, batch, dry_run=False, repo_root=REPO_ROOT)
    if task == "sweep_expired_batches":
        with timing_index_rewrites() as spent:
            swept = tasks.sweep_retention(settings, s3, batch, dry_run=False, owner=owner)
        return {**swept, "index_rewrite": spent}
    if task == "plan_jobs":
        import shutil

        import conftest  # moto's EC2, Service Quotas through botocore's Stubber

        from fruits import run_params

        shutil.rmtree(conftest.KERAS_HOME, ignore_errors=True)  # made on import, unused here
        run = tasks.Run(settings, run_params.parse({}, night=batch, settings=settings))
        client = conftest.account_clients(REGION)
        listed = state["results"]["list_landing"]
        return tasks.plan_run(run, s3, listed, run_name=f"fruits-{batch}-{owner}", client=client)
    store, root = tasks.open_lake(settings, s3), tasks.lake_root(settings)
    plan = state["results"]["plan_jobs"]
    if task == "report_cost":
        from fruits import run_report

        report = run_report.report_run(
            store, root, batch, target="local", region=settings.region, estimate=plan["estimate"], work=plan["work"]
        )
        return {"images": report["images"], "cost": report["cost"]["total_usd"]}
    if task == "remove_originals":
        return tasks.remove_originals(settings, s3, plan["work"], dry_run=False, owner=owner)
    from fruits import assets

    events = assets.run_events(store, root, batch, plan["work"], state["results"]["lock_batch"]["acquired_at"])
    if task == "publish_assets":
        return [{"alias": alias, "uri": uri, "extra": extra} for alias, uri, extra in events]
    if task == "pca_summary":
        (extra,) = [extra for alias, _, extra in events if alias == assets.PCA_REDUCED_ALIAS]
        return assets.write_summary(store, root, assets.summarize_reduced(store, extra))
    raise ValueError(f"unknown task {task!r}")


def peak_rss_mib() -> float:
    """This process's peak resident set since its exec (VmHWM). Not ru_maxrss: across exec it keeps the
    peak of the forked parent's pages, here the parent holding moto's buckets."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def night_json(task: str, state: dict) -> dict:
    """report_cost's reads that grow with the night, at full size in a local lake: `write_night_json` writes a
    night's `_ingestion.json` and `_uploads.json` with the ingest job's own writers (unmeasured);
    `report_json_reads` reads them as report_run does (report_page.landing_counts: the counts beside the report;
    run_report.batch_bundles and report_page.photo_thumbnails: the manifest's bundles, streamed)."""
    from fruits import lake, storage

    store, batch, photos = storage.LocalStore(state["folder"]), state["batch"], state["photos"]
    if task == "report_json_reads":
        from fruits import report_page, run_report

        landing = report_page.landing_counts(store, store.root, batch)
        bundles = run_report.batch_bundles(store, store.root, batch)
        return {
            "seen": landing["seen"],
            "bundles": bundles,
            "files": sum(len(keys) for _, keys in storage.manifest_bundles(store, store.root, batch)),
        }
    if task == "write_reduced_rows":  # the consumer's input at full size, with splits: its 1-NN runs too
        import numpy as np
        import pyarrow as pa

        rng, k = np.random.default_rng(photos), state["pca_k"]
        labels = rng.integers(0, 200, photos)
        reduced = pa.table(
            {
                "path": [f"p{i}" for i in range(photos)],
                "label": [f"Label {label}" for label in labels],
                "split": np.where(rng.random(photos) < 0.7, "Training", "Test"),
                "pca": pa.FixedSizeListArray.from_arrays(
                    (rng.standard_normal((photos, k), dtype=np.float32) + labels[:, None] / 50).ravel(), k
                ).cast(pa.list_(pa.float32())),
            }
        )
        output = lake.pca_reduced_uri(store.root, 1, batch)
        marker = commit(store, output, reduced_parts(reduced, state["reduced_parts"]), {"rows": photos, "k": k})
        return {"batch": batch, "basis": 1, "output": output, "location": marker["location"]}
    if task == "page_reads":  # report_cost's page over as many reduced rows: its sample, then the neighbours' pass
        from fruits import report_page

        files = report_page.reduced_files(store, store.root, 1, batch)
        sample = report_page.reduced_sample(store, files, seed=int(batch.replace("-", "")))
        chosen = report_page.pick_examples(sample["label"])
        paths = [sample["path"][i] for i in chosen]
        found = report_page.nearest_neighbours(sample["pca"][chosen], paths, sample, store, files)
        return {"rows": sample["rows"], "examples": len(found)}
    if task == "summary_reads":
        from fruits import assets

        summary = assets.summarize_reduced(store, state["extra"])
        return {"rows": summary["rows"]}
    if task == "sweep_json_reads":  # the sweep's part that grows with the expired night: both hashes, as keys
        import lakeindex

        from fruits import retention

        shards = lakeindex.keys_by_shard(retention.photo_hashes(store, store.root, batch))
        return {"keys": sum(len(keys) for keys in shards.values()), "shards": len(shards)}
    import ingest
    import numpy as np

    rng = np.random.default_rng(photos)
    keys = [name for name, _ in landing_names(photos)]
    shas = random_hashes(rng, 2 * photos)
    landing = f"s3://fruits-landing-{photos}/landing/{batch}/"
    outcomes = {
        landing + key: {
            "outcome": "uploaded",
            "sha256": shas[2 * i],
            "content_sha256": shas[2 * i + 1],
            "key": key,
            "format": "JPEG",
            "metadata": "stripped",
        }
        for i, key in enumerate(keys)
    }
    bundles = {f"run=x/part-{b:05d}-c000.parquet": keys[at : at + 1000] for b, at in enumerate(range(0, photos, 1000))}
    raw = lake.raw_uri(store.root, batch)
    ingest.commit_manifest(store, raw, batch, {o["key"]: o["sha256"] for o in outcomes.values()}, bundles)
    ingest.write_report(store, raw, batch, landing, outcomes, ingest.counts_of(outcomes, batch, bundles))
    return {"bytes": sum(p.stat().st_size for p in Path(store.path).rglob("*.json"))}


def child_main(task: str, state_file: str) -> None:
    state = json.loads(Path(state_file).read_text())
    result = run_task(task, state)
    output = {"result": result, "peak_rss_mib": peak_rss_mib()}
    Path(state_file).with_suffix(f".{task}.json").write_text(json.dumps(output, default=str))


def measure(task: str, state: dict, folder: Path, endpoint: str) -> dict:
    """Run one task in a fresh interpreter: its CPU seconds (user + sys, getrusage of that child by os.wait4),
    its peak RSS (its VmHWM) and its wall seconds."""
    state_file = folder / "state.json"
    state_file.write_text(json.dumps(state))
    paths = os.pathsep.join([str(REPO_ROOT / "tests"), str(REPO_ROOT / "plugins")])
    env = {**os.environ, "PYTHONPATH": paths, "AWS_ENDPOINT_URL": endpoint}  # every client: moto's server
    log = folder / f"{task}.log"  # the task's own log lines, as Airflow keeps them
    started = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(
            [sys.executable, __file__, "--child", task, str(state_file)], env=env, stdout=out, stderr=out
        )
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"task {task} failed (exit {os.waitstatus_to_exitcode(status)}):\n{log.read_text()[-3000:]}")
    output = json.loads(state_file.with_suffix(f".{task}.json").read_text())
    return {
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "peak_rss_mib": round(output["peak_rss_mib"], 1),
        "wall_s": round(wall, 3),
        "result": output["result"],
    }


# ------------------------------------------------------------------------------------------ the lake


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nights(batch: str, back: int) -> str:
    return (dt.date.fromisoformat(batch) - dt.timedelta(days=back)).isoformat()


def landing_names(count: int) -> list[tuple[str, bool]]:
    """(path under the night's folder, empty?) of `count` landing files; 1 in 200 one the listing refuses
    (hidden, outside a label folder, empty)."""
    names = []
    for i in range(count):
        label = LABELS[i % len(LABELS)]
        if i % 200 == 199:
            odd = (f"{label}/.DS_Store", f"stray photo {i}.jpg", f"{label}/empty {i}.jpg")[i // 200 % 3]
            names.append((odd, "empty" in odd))
        elif i % 7 == 3:
            names.append((f"{label}/Photo {i} (copie) é.HEIC", False))
        else:
            names.append((f"{label}/IMG_{i:07d}.jpg", False))
    return names


def random_hashes(rng, count: int) -> list[str]:
    return [row.tobytes().hex() for row in rng.integers(0, 256, size=(count, 32), dtype="uint8")]


def index_shards(rng, days: list[int], per_night: int, known: dict[int, list[str]]) -> dict[str, bytes]:
    """The index's 4,096 shards holding `per_night` records for each day (lakeindex's format, built with numpy):
    the hashes of `known[day]` where given, random ones for the rest."""
    import lakeindex
    import numpy as np

    keys, stamps = [], []
    for day in days:
        chosen = [bytes.fromhex(h)[:16] for h in known.get(day, [])]
        fresh = rng.integers(0, 256, size=(per_night - len(chosen), 16), dtype="uint8")
        block = np.frombuffer(b"".join(chosen), dtype="uint8").reshape(-1, 16)
        keys.append(np.concatenate([block, fresh]))
        stamps.append(np.full(per_night, day, dtype=">u2"))
    key = np.concatenate(keys)
    stamp = np.concatenate(stamps)
    order = np.lexsort((stamp, *key.T[::-1]))
    records = np.empty(len(order), dtype=lakeindex.dtypes()[0])
    records["key"], records["day"] = key[order].view(f"V{lakeindex.KEY_BYTES}")[:, 0], stamp[order]
    shard = (key[order, 0].astype(np.int32) << 4) | (key[order, 1] >> 4)
    bounds = np.searchsorted(shard, np.arange(4097))
    return {f"{s:03x}": records[bounds[s] : bounds[s + 1]].tobytes() for s in range(4096)}


class BackendStore:
    """The setup's bulk writes straight into moto's S3 backend, KMS-encrypted as S3Store writes (no boto3, no
    HTTP: ~10x faster); put / read / list_files of what it wrote, as conftest.commit_output needs them."""

    def __init__(self, bucket: str, kms_key_arn: str):
        from moto.s3.models import s3_backends

        self.backend, self.bucket, self.kms_key_arn = s3_backends[ACCOUNT]["aws"], bucket, kms_key_arn
        self.root = f"s3://{bucket}"
        self.written: set[str] = set()

    def key(self, uri: str) -> str:
        return uri.removeprefix(self.root + "/")

    def put(self, uri: str, data: bytes, sha256: str = "-") -> None:
        self.backend.put_object(self.bucket, self.key(uri), data, encryption="aws:kms", kms_key_id=self.kms_key_arn)
        self.written.add(uri)

    def read(self, uri: str) -> bytes:
        return self.backend.get_object(self.bucket, self.key(uri)).value

    def list_files(self, prefix: str) -> list[str]:
        return sorted(uri for uri in self.written if uri.startswith(prefix))


class ShallowVersions:
    """moto's ListObjectVersions deep-copies every version of the bucket, bytes included, on each call (seconds and
    hundreds of MB per call in the server, with the index in the bucket): its only deepcopy, made clones that share
    the bytes (it only sets the clones' is_latest) and leave them open when collected."""

    copy = staticmethod(copy.copy)
    kinds: dict[type, type] = {}

    @classmethod
    def deepcopy(cls, versions: list) -> list:
        clones = []
        for version in versions:
            kind = cls.kinds.setdefault(type(version), type("Listed", (type(version),), {"__del__": lambda self: None}))
            clone = object.__new__(kind)
            clone.__dict__.update(version.__dict__)
            clones.append(clone)
        return clones


def commit(store, output: str, files: dict[str, bytes], facts: dict | None = None) -> dict:
    from conftest import commit_output  # the jobs' own commit writer

    return commit_output(store, output, files, facts)


class Lake:
    """One lake of N-photo nights at night 365, in moto's server; `after_plan` writes what the cluster leaves."""

    def __init__(self, photos: int, batch: str, history: int, pca_k: int, reduced_parts: int):
        import boto3
        import numpy as np

        from fruits import storage

        self.photos, self.batch, self.history, self.pca_k = photos, batch, history, pca_k
        self.reduced_parts = reduced_parts
        self.rng = np.random.default_rng(photos)
        self.s3 = boto3.client("s3", region_name=REGION)  # in this process: mock_aws, the server's own backends
        self.bucket, self.landing_bucket = f"fruits-lake-{photos}", f"fruits-landing-{photos}"
        self.key_arn = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
        self.store = storage.S3Store(self.s3, self.bucket, self.key_arn)
        self.root = self.store.root
        self.expired, self.last_night = nights(batch, history), nights(batch, 1)
        self.bulk = BackendStore(self.bucket, self.key_arn)

    def put_all(self, bucket: str, objects: dict[str, bytes]) -> None:
        store = BackendStore(bucket, self.key_arn)
        for key, data in objects.items():
            store.put(f"s3://{bucket}/{key}", data)

    def build(self, network: dict[str, str]) -> dict:
        """Buckets, landing, history; returns the pipeline settings (fruits.settings fields) of this lake."""
        from test_dag_emr_moto import _private_encrypted_bucket, _publish_what_the_cluster_needs

        from fruits import release, retention

        for bucket in (self.bucket, self.landing_bucket):
            _private_encrypted_bucket(self.s3, bucket, REGION)
        self.s3.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})
        _publish_what_the_cluster_needs(self.store)
        release.publish_code(self.store, REPO_ROOT)  # night 365 finds tonight's code published
        landing = {
            f"landing/{self.batch}/{name}": b"" if empty else b"\xff\xd8" + bytes(62)
            for name, empty in landing_names(self.photos)
        }
        self.put_all(self.landing_bucket, landing)
        self.history_nights()
        self.put_all(self.bucket, {f"index/sha256/{shard}.bin": data for shard, data in self.index().items()})
        retention._write_watermark(self.store, self.root, nights(self.expired, 1), self.history)
        originals = retention.ORIGINALS_WATERMARK_NAME
        retention._write_watermark(self.store, self.root, nights(self.last_night, 1), self.history, originals)
        return {
            "target": "emr",
            "region": REGION,
            "bucket": self.bucket,
            "kms_key_arn": self.key_arn,
            "bucket_owner": ACCOUNT,
            "landing": f"s3://{self.landing_bucket}/landing",
            "allowed_buckets": self.landing_bucket,
            "subnet_ids": network["fruits_subnet_ids"],
            "vpc_id": network["fruits_vpc_id"],
            "retention_days": self.history,
        }

    def manifest(self, night: str, *, bundle_objects: bool) -> list[str]:
        """A whole night's manifest (N photos in bundles of 1,000) and ingestion report as the ingest job writes
        them; `bundle_objects`: the bundles too (stand-ins: the originals' sweep deletes them unread)."""
        import ingest

        from fruits import lake

        raw = lake.raw_uri(self.root, night)
        keys = [name for name, _ in landing_names(self.photos)]
        shas = random_hashes(self.rng, 2 * len(keys))  # per photo: the bytes as received, the stored bytes
        received, stored = shas[0::2], shas[1::2]
        run = f"run={night.replace('-', '')}T020000Z-0badcafe"
        bundles = {
            f"{run}/part-{b:05d}-c000.parquet": keys[at : at + 1000] for b, at in enumerate(range(0, len(keys), 1000))
        }
        ingest.commit_manifest(self.store, raw, night, dict(zip(keys, received, strict=True)), bundles)
        landing = f"s3://{self.landing_bucket}/landing/{night}/"
        outcomes = {
            landing + key: {"outcome": "uploaded", "sha256": sha, "content_sha256": content, "key": key}
            for key, sha, content in zip(keys, received, stored, strict=True)
        }
        ingest.write_report(self.store, raw, night, landing, outcomes, ingest.counts_of(outcomes, night, bundles))
        if bundle_objects:
            self.put_all(self.bucket, {f"raw/batch={night}/{name}": b"PAR1" for name in bundles})
        return shas

    def history_nights(self) -> None:
        """The retention window: per night features and statistics committed and a manifest stub (nothing reads
        a featurized night's manifest), run reports for the last 30; last night whole; the night leaving."""
        from test_report_page import night_report

        from fruits import lake, run_report

        def one(night: str) -> None:
            if night != self.last_night:
                stub = json.dumps({"batch": night, "files": {}, "bundles": {}}).encode()
                self.bulk.put(lake.raw_uri(self.root, night) + "_uploads.json", stub)
            commit(self.bulk, lake.features_uri(self.root, night), {"part-0.parquet": b"PAR1"}, {"rows": self.photos})
            commit(self.bulk, lake.pca_stats_uri(self.root, night), {"stats.npz": b"s"}, {"rows": self.photos})
            if night >= nights(self.batch, 29) or night == self.expired:
                report = night_report(night, 1, 0.01, 0.1)
                run_report.write_run_report(report, lake.reports_uri(self.root, night), self.bulk)

        for back in range(self.history, 0, -1):
            one(nights(self.batch, back))
        self.store.put(lake.pca_current_basis_uri(self.root), json.dumps({"version": 1}).encode(), "-")
        self.last_night_shas = self.manifest(self.last_night, bundle_objects=True)
        self.expired_shas = self.manifest(self.expired, bundle_objects=False)  # its originals went long ago
        for output in (lake.quarantine_uri(self.root, self.expired), lake.pca_reduced_uri(self.root, 1, self.expired)):
            commit(self.bulk, output, {"part-0.parquet": b"PAR1"}, {"rows": self.photos})
        self.put_all(self.bucket, {f"derived/batch={self.expired}/part-{i}.parquet": b"PAR1" for i in range(4)})

    def index(self) -> dict[str, bytes]:
        """2 records per photo for each night of the window (the received and the stored bytes' hashes)."""
        import lakeindex

        days = [lakeindex.day_of(nights(self.batch, back)) for back in range(self.history, 0, -1)]
        known = {
            lakeindex.day_of(self.expired): self.expired_shas,
            lakeindex.day_of(self.last_night): self.last_night_shas,
        }
        return index_shards(self.rng, days, 2 * self.photos, known)

    def after_plan(self, listing_uri: str) -> None:
        """What tonight's cluster leaves: the ingest job's outcomes (`ingest.decide` over the listing), manifest,
        ingestion report and bundles (real Parquet, a 64x48 JPEG a photo), featurize's features and
        quarantine, PCA's statistics and reduced rows (pca_k float32 a row, no split: phone photos)."""
        import io

        import ingest
        import lakefiles
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq
        from PIL import Image

        from fruits import lake
        from fruits.storage import bundle_parquet

        listed = [
            {**row, "uri": row["uri"].decode("utf-8", "surrogateescape")}
            for row in pq.read_table(io.BytesIO(self.store.read(listing_uri))).to_pylist()
        ]
        shas = random_hashes(self.rng, 2 * len(listed))
        examined = {
            row["uri"]: {
                "key": row["key"],
                "sha256": shas[2 * i],
                "content_sha256": shas[2 * i + 1],
                "reason": "",
                "detail": "",
                "format": "JPEG",
                "metadata": "stripped",
            }
            for i, row in enumerate(listed)
            if not row["reason"]
        }
        outcomes, new = ingest.decide(listed, examined, {}, self.batch, lambda hashes: {}, self.history)
        stored = {o["key"]: o["sha256"] for o in outcomes.values() if o["outcome"] == "uploaded"}
        raw = lake.raw_uri(self.root, self.batch)
        image = io.BytesIO()
        Image.new("RGB", (64, 48), (200, 120, 40)).save(image, "JPEG")
        keys, now = sorted(new.values()), dt.datetime.now(dt.UTC)
        run = f"run={self.batch.replace('-', '')}T020000Z-0c1a5732"
        bundles = {
            f"{run}/part-{b:05d}-c000.parquet": keys[at : at + 1000] for b, at in enumerate(range(0, len(keys), 1000))
        }
        for name, chunk in bundles.items():
            table = pa.table(
                {
                    "path": [raw + key for key in chunk],
                    "modificationTime": pa.array([now] * len(chunk), pa.timestamp("us", "UTC")),
                    "length": pa.array([len(image.getvalue())] * len(chunk), pa.int64()),
                    "content": pa.array([image.getvalue()] * len(chunk), pa.binary()),
                    "sha256": [stored[key] for key in chunk],
                }
            )
            self.store.put(raw + name, bundle_parquet(table), "-")
        ingest.commit_manifest(self.store, raw, self.batch, stored, bundles)
        counts = ingest.counts_of(outcomes, self.batch, bundles)
        ingest.write_report(
            self.store, raw, self.batch, f"s3://{self.landing_bucket}/landing/{self.batch}/", outcomes, counts
        )

        rows, bad = len(keys), keys[::200][:50]
        reason = ["truncated image: broken data stream"] * len(bad)
        quarantine = pa.table(
            {"path": [raw + key for key in bad], "reason": reason, "batch_id": [self.batch] * len(bad)}
        )
        commit(
            self.store,
            lake.quarantine_uri(self.root, self.batch),
            {"part-0.parquet": bundle_parquet(quarantine)},
            {"rows": len(bad)},
        )
        metrics = {
            "job": "featurize",
            "batch_id": self.batch,
            "seen": rows,
            "featurized": rows - len(bad),
            "quarantined": len(bad),
            "seconds": rows / 1000,
            "executor_vcpus": 16,
        }
        sidecar, covered = lakefiles.covering(bundles)  # as featurize commits
        facts = {"rows": rows - len(bad), "metrics": metrics, **covered}
        commit(self.store, lake.features_uri(self.root, self.batch), {"part-0.parquet": b"PAR1", **sidecar}, facts)
        commit(self.store, lake.pca_stats_uri(self.root, self.batch), {"stats.npz": b"s"}, {"rows": rows})
        vectors = self.rng.standard_normal((rows, self.pca_k), dtype=np.float32)
        reduced = pa.table(
            {
                "path": [raw + key for key in keys],
                "label": [key.split("/", 1)[0] for key in keys],
                "split": pa.nulls(rows, pa.string()),
                "batch_id": [self.batch] * rows,
                "basis": pa.array([1] * rows, pa.int32()),
                "pca": pa.FixedSizeListArray.from_arrays(vectors.ravel(), self.pca_k).cast(pa.list_(pa.float32())),
            }
        )
        spectrum = np.linspace(0.05, 0.0005, self.pca_k)
        drift = {"basis": 1, "captured_share": 0.9, "captured_share_at_fit": 0.91, "captured_share_drop": 0.01}
        report = {
            "job": "pca",
            "batch_id": self.batch,
            "mode": "auto",
            "basis": 1,
            "k": self.pca_k,
            "rows_read": rows,
            "rows_in_basis": rows,
            "explained_variance": spectrum.tolist(),
            "cumulative_explained_variance": np.cumsum(spectrum).tolist(),
            "total_explained_variance": float(spectrum.sum()),
            "seconds": 60.0,
            "drift_on_basis": {**drift, "mean_shift": 0.1, "threshold": 0.2, "crossed": False},
        }
        files = {"report.json": json.dumps(report).encode(), **reduced_parts(reduced, self.reduced_parts)}
        commit(self.store, lake.pca_reduced_uri(self.root, 1, self.batch), files, {"rows": rows, "k": self.pca_k})


def reduced_parts(reduced: Any, parts: int) -> dict[str, bytes]:
    """The reduced rows as pca.py commits them: coalesced to the cluster's defaultParallelism, `parts` files."""
    import pyarrow.parquet as pq

    files, share = {}, -(-reduced.num_rows // parts)
    for part in range(parts):
        sink = io.BytesIO()
        pq.write_table(reduced.slice(part * share, share), sink)
        files[f"reduced/part-{part:05d}.parquet"] = sink.getvalue()
    return files


# ------------------------------------------------------------------------------------------ the run


def sweep_model(measured: dict[int, dict[str, dict]], shard_rewrite: dict) -> dict:
    """The sweep at a million with its index rewrite saturated: every one of the 4,096 shards rewritten, each as
    `shard_rewrite` measured one at full size (full_size_rewrite); the rest of the sweep (its requests, the
    expired night's manifest), a line over the shards the measured sweeps read, at 4,096. The straight line over
    photos extrapolates the requests of the shards touched at these sizes (46-91 %)."""
    import lakeindex

    sizes = sorted(measured)
    sweeps = [measured[n]["sweep_expired_batches"] for n in sizes]
    per_shard = shard_rewrite["cpu_s"]
    rewrite = {
        "per_shard": per_shard,
        "records_per_shard": shard_rewrite["records"],
        "per_record": per_shard / shard_rewrite["records"],
        "at": lakeindex.SHARDS,
        "value": per_shard * lakeindex.SHARDS,
    }
    points = [(s["index_rewrite"]["shards"], s["cpu_s"] - s["index_rewrite"]["cpu_s"]) for s in sweeps]
    rest = extrapolate(points, lakeindex.SHARDS)
    rest["per_shard"] = rest.pop("per_photo")
    return {"index_rewrite": rewrite, "rest": rest, "cpu_s": rewrite["value"] + rest["value"]}


def fits(
    measured: dict[int, dict[str, dict]],
    baseline: dict,
    airflow: dict,
    full_size: dict[str, dict] | None = None,
    shard_rewrite: dict | None = None,
) -> dict:
    """Per task and per figure, the least-squares line over the sizes at a million photos; the night's CPU (sum)
    and peak (largest task), with Airflow's own imports added per task process. `full_size`: {task: figures of
    every read of the task that grows with the night, measured at a million in a process of its own}: its peak
    at a million is then its peak at the largest night measured plus what those reads held above a bare
    interpreter (`baseline`), as if they peaked on top of everything else the task holds; the line is kept
    beside (`line_value`): a streamed task's peak is a maximum over bounded phases, which 7 MiB of noise over
    the sizes measured would tilt to a gigabyte. With `shard_rewrite` (one index shard's rewrite measured at
    full size), the night's CPU again with the sweep's index rewrite saturated (sweep_model)."""
    sizes = sorted(measured)
    per_task = {
        task: {
            figure: extrapolate([(n, measured[n][task][figure]) for n in sizes], MILLION)
            for figure in ("cpu_s", "peak_rss_mib")
        }
        for task in TASKS
    }
    for task, figures in (full_size or {}).items():
        line = per_task[task]["peak_rss_mib"]
        line["full_size"] = figures["peak_rss_mib"]
        line["line_value"] = line["value"]
        line["value"] = measured[sizes[-1]][task]["peak_rss_mib"] + figures["peak_rss_mib"] - baseline["peak_rss_mib"]
    airflow_cpu = airflow["cpu_s"] - baseline["cpu_s"]
    airflow_rss = airflow["peak_rss_mib"] - baseline["peak_rss_mib"]
    cpu = sum(f["cpu_s"]["value"] for f in per_task.values()) + len(TASKS) * airflow_cpu
    heaviest = max(TASKS, key=lambda task: per_task[task]["peak_rss_mib"]["value"])
    peak = per_task[heaviest]["peak_rss_mib"]["value"] + airflow_rss
    night = {
        "cpu_s": round(cpu, 1),
        "peak_rss_mib": round(peak, 1),
        "peak_task": heaviest,
        "cpu_per_photo_ms": round(sum(f["cpu_s"]["per_photo"] for f in per_task.values()) * 1000, 4),
    }
    fitted = {
        "per_task": per_task,
        "airflow_import_per_task": {"cpu_s": round(airflow_cpu, 3), "peak_rss_mib": round(airflow_rss, 1)},
        "night_at_a_million": night,
    }
    if shard_rewrite:
        model = sweep_model(measured, shard_rewrite)
        fitted["sweep_saturated"] = model
        night["cpu_s_sweep_saturated"] = round(
            cpu - per_task["sweep_expired_batches"]["cpu_s"]["value"] + model["cpu_s"], 1
        )
    return fitted


def print_phase(photos: int, what: str, figures: dict) -> None:
    print(f"{photos:>8,} photos  {what}: {figures['cpu_s']:.2f} CPU s, {figures['peak_rss_mib']:.0f} MiB", flush=True)


def phases_together(baseline: dict, *phases: dict) -> dict:
    """Phases of one task measured apart, as if held at once: CPU summed, memory above a bare interpreter summed."""
    return {
        "cpu_s": round(sum(p["cpu_s"] for p in phases), 3),
        "peak_rss_mib": baseline["peak_rss_mib"] + sum(p["peak_rss_mib"] - baseline["peak_rss_mib"] for p in phases),
        "phases": [{k: v for k, v in p.items() if k != "result"} for p in phases],
    }


def print_table(measured: dict[int, dict[str, dict]], fitted: dict) -> None:
    sizes = sorted(measured)
    head = "".join(f"{n:>16,}" for n in sizes)
    print(f"\n{'task (CPU s / peak RSS MiB)':26s}{head}{'per 1k photos':>22s}{'at 1 M':>20s}")
    for task in TASKS:
        cells = "".join(f"{measured[n][task]['cpu_s']:>8.2f} /{measured[n][task]['peak_rss_mib']:>6.0f}" for n in sizes)
        line = fitted["per_task"][task]
        per_k = f"{line['cpu_s']['per_photo'] * 1000:>9.3f} s /{line['peak_rss_mib']['per_photo'] * 1000:>7.1f} MiB"
        mark = "*" if "full_size" in line["peak_rss_mib"] else " "
        at = f"{line['cpu_s']['value']:>9.1f} s /{line['peak_rss_mib']['value']:>7.0f} MiB{mark}"
        print(f"{task:26s}{cells}  {per_k}  {at}")
    print(
        "* its peak at the largest night measured plus its reads that grow with the night, measured at 1,000,000 "
        "photos, above a bare interpreter (the line's value is kept beside in the results)"
    )
    night = fitted["night_at_a_million"]
    extra = fitted["airflow_import_per_task"]
    print(
        f"\nAirflow's own imports, per task process: {extra['cpu_s']:.2f} CPU s, {extra['peak_rss_mib']:.0f} MiB "
        f"(added: {len(TASKS)} tasks)"
    )
    for figure, unit in (("cpu_s", "CPU s"), ("peak_rss_mib", "MiB peak")):
        verdict = "met" if night[figure] <= TARGETS[figure] else "NOT MET"
        print(f"night of 1,000,000 photos: {night[figure]:,.1f} {unit} (target <= {TARGETS[figure]:,.0f}): {verdict}")
    print(f"  heaviest task: {night['peak_task']}; CPU per photo {night['cpu_per_photo_ms']:.3f} ms")
    if "sweep_saturated" in fitted:
        model = fitted["sweep_saturated"]
        rewrite, rest = model["index_rewrite"], model["rest"]
        verdict = "met" if night["cpu_s_sweep_saturated"] <= TARGETS["cpu_s"] else "NOT MET"
        print(
            f"the sweep with its index rewrite saturated: {rewrite['per_shard'] * 1e3:.2f} ms a shard of "
            f"{rewrite['records_per_shard']:,} records ({rewrite['per_record'] * 1e9:.1f} ns a record) x "
            f"{rewrite['at']:,} shards = {rewrite['value']:,.1f} CPU s, + the rest at 4,096 shards "
            f"({rest['per_shard'] * 1000:.1f} ms a shard) {rest['value']:,.0f} s = {model['cpu_s']:,.0f} s\n"
            f"night of 1,000,000 photos, that sweep instead of its line: {night['cpu_s_sweep_saturated']:,.1f} CPU s "
            f"(target <= {TARGETS['cpu_s']:,.0f}): {verdict}"
        )


def main(argv: list[str] | None = None) -> int:
    from fruits.settings import PipelineSettings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2500,5000,10000", help="photos per night, comma-separated (>= 2 sizes)")
    parser.add_argument("--history-nights", type=int, default=PipelineSettings.retention_days)
    parser.add_argument("--pca-k", type=int, default=229, help="components a reduced row holds (pca_throughput's k)")
    parser.add_argument(
        "--reduced-parts",
        type=int,
        default=16,
        help="files of reduced rows: pca.py's defaultParallelism, the default cluster's 2 workers x 8 vCPUs",
    )
    parser.add_argument(
        "--night-json-photos",
        type=int,
        default=MILLION,
        help="the reads of report_cost, the sweep and pca_summary that grow with the night, at this size (0: not)",
    )
    parser.add_argument("--child", nargs=2, metavar=("TASK", "STATE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    if args.child:
        child_main(*args.child)
        return 0
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION=REGION)
    import logging
    import shutil

    import moto.s3.models
    from moto import mock_aws
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    moto.s3.models.copy = ShallowVersions
    mocked = mock_aws()  # this process's clients reach the same backends as the server, without HTTP
    mocked.start()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    measured: dict[int, dict[str, dict]] = {}
    setup_s: dict[int, float] = {}
    work = Path(tempfile.mkdtemp(prefix="fruits-worker-share-"))  # the children's state, results and logs
    import conftest

    from fruits import lake

    try:
        network = conftest.emr_network(REGION)
        batch = nights(lake.latest_batch(), 2)  # last night in Paris: a scheduled run's partition
        baseline = measure("baseline", {}, work, endpoint)
        airflow = measure("airflow_baseline", {}, work, endpoint)
        print(
            f"imports only: fruits {baseline['cpu_s']:.2f} CPU s / {baseline['peak_rss_mib']:.0f} MiB; "
            f"with Airflow's {airflow['cpu_s']:.2f} CPU s / {airflow['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
        lakes, states = {}, {}
        for photos in sizes:
            clock = time.perf_counter()
            lakes[photos] = Lake(photos, batch, args.history_nights, args.pca_k, args.reduced_parts)
            settings = lakes[photos].build(network)
            states[photos] = {"settings": settings, "batch": batch, "owner": f"scheduled__{batch}", "results": {}}
            setup_s[photos] = round(time.perf_counter() - clock, 1)
            measured[photos] = {}
        print(f"lakes of {', '.join(f'{n:,}' for n in sizes)} photos a night: {setup_s} s", flush=True)
        # Task by task, the sizes in turn, every other task in reverse: a neighbour's load drifting over the run
        # spreads over the sizes instead of tilting the lines.
        for number, task in enumerate(TASKS):
            for photos in sizes if number % 2 == 0 else sizes[::-1]:
                state = states[photos]
                if task == "report_cost":
                    lakes[photos].after_plan(state["results"]["list_landing"]["landing"]["listing"])
                figures = measure(task, state, work, endpoint)
                state["results"][task] = figures.pop("result")
                if task == "sweep_expired_batches":
                    figures["index_rewrite"] = state["results"][task].pop("index_rewrite")
                measured[photos][task] = figures
                print(
                    f"{photos:>8,} photos  {task:24s} {figures['cpu_s']:7.2f} CPU s {figures['peak_rss_mib']:7.0f} MiB "
                    f"{figures['wall_s']:7.2f} s",
                    flush=True,
                )
        for photos in sizes:
            sweep = states[photos]["results"]["sweep_expired_batches"]
            rewrite = measured[photos]["sweep_expired_batches"]["index_rewrite"]
            print(
                f"{photos:>8,} photos  sweep: {sweep['objects_deleted']} objects of the expired night, "
                f"{sweep['swept'][0]['index_entries_dropped'] if sweep['swept'] else 0} of its "
                f"{2 * photos} index records dropped, {sweep['originals']['objects_deleted']} original bundles; "
                f"{rewrite['shards']} shards ({rewrite['records']:,} records) rewritten: {rewrite['cpu_s']:.2f} CPU s; "
                f"remove_originals: {states[photos]['results']['remove_originals']['objects_deleted']} objects",
                flush=True,
            )
        full_size = {}  # each task's reads that grow with the night, measured at a million
        if args.night_json_photos:
            folder = work / "night-json"
            state = {"folder": str(folder), "photos": args.night_json_photos, "batch": batch}
            written = measure("write_night_json", state, work, endpoint)
            reads = measure("report_json_reads", state, work, endpoint)
            megabytes = written["result"]["bytes"] / 1e6
            photos = args.night_json_photos
            print_phase(
                photos, f"report_cost's reads of _ingestion.json and _uploads.json ({megabytes:,.0f} MB)", reads
            )
            hashes = measure("sweep_json_reads", state, work, endpoint)
            keys = hashes["result"]["keys"]
            print_phase(photos, f"the sweep's reads of the expired night's hashes ({keys:,} keys by shard)", hashes)
            rows_state = {**state, "pca_k": args.pca_k, "reduced_parts": args.reduced_parts}
            extra = measure("write_reduced_rows", rows_state, work, endpoint)["result"]
            summary = measure("summary_reads", {**rows_state, "extra": extra}, work, endpoint)
            rows = f"as many reduced rows ({args.pca_k} floats, Training/Test splits: the 1-NN runs)"
            print_phase(photos, f"pca_summary over {rows}", summary)
            page = measure("page_reads", rows_state, work, endpoint)
            print_phase(photos, "report_cost's page over as many reduced rows (its sample, the neighbours' pass)", page)
            shutil.rmtree(folder, ignore_errors=True)
            if photos == MILLION:
                full_size["report_cost"] = phases_together(baseline, reads, page)
                full_size["sweep_expired_batches"] = hashes
                full_size["pca_summary"] = summary
    finally:
        server.stop()
        mocked.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(conftest.KERAS_HOME, ignore_errors=True)
    shard_rewrite = full_size_rewrite(args.history_nights)
    print(
        f"the index rewrite of one shard at 1,000,000 photos ({shard_rewrite['records']:,} records): "
        f"{shard_rewrite['cpu_s'] * 1e3:.2f} ms CPU",
        flush=True,
    )
    fitted = fits(measured, baseline, airflow, full_size, shard_rewrite)
    print_table(measured, fitted)
    result = {
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}",
        "cores": os.cpu_count(),
        "command": "benchmarks/worker_share.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seconds": round(time.perf_counter() - started, 1),
        "sizes": sizes,
        "history_nights": args.history_nights,
        "pca_k": args.pca_k,
        "reduced_parts": args.reduced_parts,
        "full_size": {task: {k: v for k, v in f.items() if k != "result"} for task, f in full_size.items()},
        "index_shard_rewrite_at_full_size": shard_rewrite,
        "setup_seconds": setup_s,
        "baseline": baseline,
        "airflow_baseline": airflow,
        "measured": {str(n): figures for n, figures in measured.items()},
        "fit": fitted,
        "targets": TARGETS,
        "verdicts": {
            **{f: fitted["night_at_a_million"][f] <= TARGETS[f] for f in TARGETS},
            "cpu_s_sweep_saturated": fitted["night_at_a_million"]["cpu_s_sweep_saturated"] <= TARGETS["cpu_s"],
        },
    }
    RESULTS_FILE.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
