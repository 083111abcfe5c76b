"""fruits.storage's public API as its callers see it: one reading of "is this S3" (s3:// and s3a://, as Spark and
gdpr spell it), stores opened from either spelling, and the erasure operations on a local folder."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from fruits import gdpr, lake, pipeline_tasks, storage

BATCH = "2026-01-01"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [("s3://b/k", True), ("s3a://b/k", True), ("file:///x", False), ("/x/s3://y", False), ("", False), (None, False)],
)
def test_one_answer_to_is_this_s3(uri, expected):
    assert lake.is_s3(uri) is expected
    assert pipeline_tasks.is_s3(uri) is expected  # the DAG's question, same answer
    if expected:
        assert gdpr.s3_bucket_of(uri) == "b"  # the region guard checks the same buckets


@mock_aws
def test_an_s3a_uri_opens_the_same_store_as_s3():
    client = boto3.client("s3", region_name="eu-west-3")
    client.create_bucket(Bucket="lake-b", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
    client.put_object(Bucket="lake-b", Key="landing/Kiwi/k.jpg", Body=b"k")
    for uri in ("s3://lake-b/landing", "s3a://lake-b/landing/"):
        store, folder = storage.open_store(uri, client)
        assert (store.root, folder) == ("s3://lake-b", "s3://lake-b/landing/")
        assert list(store.list_files(folder)) == ["s3://lake-b/landing/Kiwi/k.jpg"]


@mock_aws
def test_a_parquet_object_is_read_in_ranges_and_a_file_is_uploaded_as_it_is(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    client = boto3.client("s3", region_name="eu-west-3")
    client.create_bucket(Bucket="lake-b", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
    store = storage.S3Store(client, "lake-b")
    local = tmp_path / "big.parquet"
    rows = 40_000
    pq.write_table(
        pa.table({"n": range(rows), "blob": [os.urandom(100) for _ in range(rows)]}), local, row_group_size=5000
    )
    uri = "s3://lake-b/x/big.parquet"
    size = local.stat().st_size
    store.put_file(uri, local, "digest")
    head = client.head_object(Bucket="lake-b", Key="x/big.parquet")
    assert (head["ContentLength"], head["Metadata"], head["ServerSideEncryption"]) == (
        size,
        {"sha256": "digest"},
        "aws:kms",
    )
    assert store.read(uri) == local.read_bytes()

    ranges = []
    real_get = client.get_object

    def get(**kwargs):
        ranges.append(kwargs["Range"])
        return real_get(**kwargs)

    client.get_object = get
    with storage.parquet_file(store, uri) as parquet:
        assert parquet.metadata.num_row_groups == 8
        numbers = parquet.read_row_group(7, columns=["n"]).column("n").to_pylist()
    assert numbers == list(range(35_000, 40_000))
    fetched = sum(int(b) - int(a) + 1 for a, b in (r.removeprefix("bytes=").split("-") for r in ranges))
    assert 0 < fetched < size / 2  # the footer and one row group's small column, not the 4 MB of blobs


def test_a_local_store_has_no_versions_but_drops_hadoops_stale_checksum(tmp_path):
    store = storage.LocalStore(tmp_path)
    uri = store.root + "/features/part-0.parquet"
    store.put(uri, b"old", "-")
    (tmp_path / "features" / ".part-0.parquet.crc").write_bytes(b"checksum of old")
    assert store.exists(uri) and not store.exists(uri + ".missing")
    store.put(uri, b"new", "-")
    store.drop_old_versions(uri)
    assert sorted(p.name for p in (tmp_path / "features").iterdir()) == ["part-0.parquet"]
    assert store.purge_noncurrent(store.root + "/") == 0 and store.read(uri) == b"new"


def test_the_inference_benchmark_bundles_photos_as_the_lake_does(tmp_path, sample_dir, monkeypatch):
    """`make bench`'s bundles mode writes its input with the lake's own BundleWriter (it once passed a
    manifest where the writer takes an attempt name, and failed before measuring anything)."""
    import importlib.util

    import pyarrow.parquet as pq

    monkeypatch.setenv("PYTHONPATH", "")  # the benchmark rewrites it for its Spark workers
    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))  # as when run as a script: its folder first (benchmarks/_env.py)
    path = benchmarks / "inference_throughput.py"
    spec = importlib.util.spec_from_file_location("inference_throughput_under_test", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    assert benchmark.bundle_copies(sample_dir, tmp_path, 1) == 960
    (bundle,) = [p for p in tmp_path.iterdir() if storage.is_bundle_name(p.name)]
    metadata = pq.ParquetFile(bundle).metadata
    assert metadata.num_rows == 960 and metadata.row_group(0).num_rows == storage.BUNDLE_ROW_GROUP_PHOTOS
    assert pq.read_schema(bundle).names == storage.bundle_schema().names


# ------------------------------------------------ the local conditional write is a real lock (issue 23 item 5)


class FrozenStore(storage.LocalStore):
    """A LocalStore whose next replace inside a conditional write freezes first (a paused process, a GC stall)."""

    def __init__(self, root, freeze_seconds: float, inside=None):
        super().__init__(root)
        self.freeze_seconds, self.inside = freeze_seconds, inside

    def put(self, uri, data, sha256):
        if self.freeze_seconds:
            if self.inside is not None:
                self.inside.set()
            time.sleep(self.freeze_seconds)
            self.freeze_seconds = 0
        super().put(uri, data, sha256)


def test_a_writer_frozen_inside_the_conditional_write_keeps_its_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(storage.LocalStore, "CAS_STALE_SECONDS", 0.2, raising=False)  # today's "stale" guess, shortened
    (tmp_path / "lake").mkdir()
    uri = storage.LocalStore(tmp_path / "lake").root + "/raw/batch=2026-03-01/_uploads.json"
    storage.LocalStore(tmp_path / "lake").put(uri, b"v0", "-")
    etag = storage.sha256_bytes(b"v0")
    inside = threading.Event()
    frozen = FrozenStore(tmp_path / "lake", freeze_seconds=1.5, inside=inside)
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("frozen", frozen.put_if_match(uri, b"frozen", etag)))
    first.start()
    assert inside.wait(5)  # the frozen writer has compared and is about to replace
    results["other"] = storage.LocalStore(tmp_path / "lake").put_if_match(uri, b"other", etag)
    first.join()
    # Exactly one of the two writes based on v0 wins, and nothing overwrites it.
    assert sorted(results.values()) == [False, True]
    winner = next(name for name, won in results.items() if won)
    assert storage.LocalStore(tmp_path / "lake").read(uri) == winner.encode()
    assert [p.name for p in (tmp_path / "lake" / "raw" / "batch=2026-03-01").iterdir()] == [
        "_uploads.json"
    ]  # no lock file


def _freeze_holding_the_lock(root: str, uri: str, etag: str, inside) -> None:
    FrozenStore(root, freeze_seconds=600, inside=inside).put_if_match(uri, b"dead", etag)


def test_a_dead_writer_releases_the_lock_at_once(tmp_path):
    (tmp_path / "lake").mkdir()
    store = storage.LocalStore(tmp_path / "lake")
    uri = store.root + "/raw/batch=2026-03-01/_uploads.json"
    store.put(uri, b"v0", "-")
    etag = storage.sha256_bytes(b"v0")
    context = multiprocessing.get_context("fork")
    inside = context.Event()
    holder = context.Process(target=_freeze_holding_the_lock, args=(str(tmp_path / "lake"), uri, etag, inside))
    holder.start()
    try:
        assert inside.wait(10)
        os.kill(holder.pid, signal.SIGKILL)  # dies inside the write, lock held
    finally:
        holder.join(10)
    started = time.monotonic()
    assert store.put_if_match(uri, b"next", etag)
    assert time.monotonic() - started < 5 and store.read(uri) == b"next"


@pytest.mark.parametrize("indent", [1, None])
def test_the_manifests_bundles_are_decoded_one_at_a_time_whatever_the_layout(tmp_path, monkeypatch, indent):
    import json

    import lakefiles

    monkeypatch.setattr(storage, "JSON_CHUNK_CHARS", 5)  # every token cut somewhere
    store = storage.LocalStore(tmp_path)
    files = {f'Training/Kïwi "{i}"/p{i}.jpg': f"{i:064x}" for i in range(7)}
    bundles = {"bundle-b.parquet": sorted(files)[:3], "bundle-a.parquet": sorted(files)[3:], "bundle-c.parquet": []}
    body = lakefiles.manifest_json(BATCH, files, bundles)
    if indent is None:  # written by another JSON writer: no whitespace, keys in another order, a number
        body = json.dumps({"bundles": bundles, "n": 12345678901, "files": files, "batch": BATCH}).encode()
    store.put(storage.batch_manifest_uri(store.root, BATCH), body, "-")
    decoded = []  # every value decoded whole: the `files` section (skipped here) must never be one of them
    value = storage.JsonObjectStream.value
    monkeypatch.setattr(storage.JsonObjectStream, "value", lambda self: decoded.append(value(self)) or decoded[-1])
    assert dict(storage.manifest_bundles(store, store.root, BATCH)) == bundles
    assert files not in decoded and not [v for v in decoded if isinstance(v, dict)]
    assert storage.manifest_photo_count(store, store.root, BATCH) == len(files)
    assert list(storage.manifest_bundles(store, store.root, "2026-01-02")) == []
    store.put(storage.batch_manifest_uri(store.root, BATCH), body[:-9], "-")
    with pytest.raises(ValueError):
        list(storage.manifest_bundles(store, store.root, BATCH))
