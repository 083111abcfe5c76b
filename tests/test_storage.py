"""fruits.storage's public API as its callers see it: one reading of "is this S3" (s3:// and s3a://, as Spark and
gdpr spell it), stores opened from either spelling, and the erasure operations on a local folder."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from fruits import gdpr, lake, pipeline_tasks, storage


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
