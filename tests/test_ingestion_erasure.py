"""Erasure made exact (issue 13 deliverable 7) and erasure that sticks (issue 12 deliverable 5): hostile names in
the CSV, reruns that left the photo under other keys and versions, the batch lock against a pipeline run, and the
photo landing again after its erasure."""

from __future__ import annotations

import csv
import hashlib
import io
import json

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto import mock_aws
from PIL import Image

from fruits import erase, lake, locks, storage, upload
from fruits.cli import erase as erase_cli

BATCH = "2026-05-04"
REGION = "eu-west-3"
BUCKET = "fruits-lake-erasure"
HOSTILE = ["nel\x85name.jpg", "sep\u2028name.jpg", 'comma, "quoted".jpg', "new\nline.jpg", "plain.jpg"]


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 40 % 256, 90, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


def parquet(rows: dict) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table(rows), buffer)
    return buffer.getvalue()


def matrix_csv(paths: list[str]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "pc_1"])
    writer.writerows([path, "Kiwi", f"{i}.5"] for i, path in enumerate(paths))
    return buffer.getvalue().encode()


def build(store: storage.Store, landing_store: storage.Store, landing_uri: str) -> dict[str, str]:
    """HOSTILE photos uploaded; features committed by a second run (the first run's folder left behind, as a
    rerun leaves it), the reduced output on two bases, each with its matrix CSV. Returns {name: photo URI}."""
    upload.upload_new_images(store, landing_store, landing_uri, BATCH, max_photos=2)
    root = store.root
    raw = lake.raw_uri(root, BATCH)
    uris = {name: raw + f"Kiwi/{name}" for name in HOSTILE}
    shas = {name: hashlib.sha256(jpeg(i)).hexdigest() for i, name in enumerate(HOSTILE)}
    rows = {"path": list(uris.values()), "sha256": [shas[n] for n in HOSTILE], "features": [[1.0, 2.0]] * len(HOSTILE)}
    features = lake.features_uri(root, BATCH)
    for run in ("run=a1", "run=b2"):  # a stale run folder and the committed one: both hold the rows
        store.put(f"{features}{run}/part-00000.parquet", parquet(rows), "")
    store.put(
        features + lake.COMMIT_MARKER,
        json.dumps({"location": features + "run=b2/", "files": ["part-00000.parquet"]}).encode(),
        "",
    )
    for basis in (1, 2):
        reduced = lake.pca_reduced_uri(root, basis, BATCH)
        store.put(
            f"{reduced}run=r{basis}/reduced/part-0.parquet",
            parquet({"path": list(uris.values()), "pca": [[0.1]] * len(HOSTILE)}),
            "",
        )
        store.put(f"{reduced}run=r{basis}/pca_matrix.csv", matrix_csv(list(uris.values())), "")
    return uris


def csv_paths(data: bytes) -> list[str]:
    return [row[0] for row in list(csv.reader(io.StringIO(data.decode(), newline="")))[1:]]


@pytest.fixture
def landing(tmp_path):
    folder = tmp_path / "landing" / BATCH
    (folder / "Kiwi").mkdir(parents=True)
    for i, name in enumerate(HOSTILE):
        (folder / "Kiwi" / name).write_bytes(jpeg(i))
    return folder


@pytest.mark.parametrize("victim", HOSTILE[:4])
def test_hostile_names_leave_the_csv_as_records_not_lines(tmp_path, landing, victim):
    store = storage.LocalStore(tmp_path / "lake")
    uris = build(store, storage.LocalStore(landing), storage.file_uri(landing))
    report = erase.erase(store.root, uris[victim])
    for basis in (1, 2):
        (matrix,) = [u for u in store.list_files(lake.pca_reduced_uri(store.root, basis, BATCH)) if u.endswith(".csv")]
        assert csv_paths(store.read(matrix)) == [uris[n] for n in HOSTILE if n != victim]  # the others intact
    rewritten = {item["key"]: item["rows_removed"] for item in report["files_rewritten"]}
    assert sum(1 for key in rewritten if key.endswith("pca_matrix.csv")) == 2
    # Both run folders of the features (committed and stale) lose the row; so do both bases.
    assert sum(1 for key in rewritten if key.startswith(f"features/batch={BATCH}/run=")) == 2
    assert sum(1 for key in rewritten if key.endswith("reduced/part-0.parquet")) == 2


def test_an_erased_photo_landing_again_is_refused_and_its_landing_copy_is_gone(tmp_path, landing):
    store = storage.LocalStore(tmp_path / "lake")
    uris = build(store, storage.LocalStore(landing), storage.file_uri(landing))
    report = erase.erase(store.root, uris["plain.jpg"])
    assert report["landing_files_deleted"] == [storage.file_uri(landing / "Kiwi" / "plain.jpg")]
    assert not (landing / "Kiwi" / "plain.jpg").exists()
    # The user's phone syncs it again, under another name, another day.
    again = tmp_path / "landing" / "2026-05-09" / "Kiwi"
    again.mkdir(parents=True)
    (again / "IMG_0001.jpg").write_bytes(jpeg(HOSTILE.index("plain.jpg")))
    result = upload.upload_new_images(
        store, storage.LocalStore(again.parent), storage.file_uri(again.parent), "2026-05-09"
    )
    assert (result["uploaded"], result["rejected"]) == (0, {"erased": 1})


def test_erasure_and_a_pipeline_run_of_the_batch_exclude_each_other(tmp_path, landing, capsys):
    store = storage.LocalStore(tmp_path / "lake")
    uris = build(store, storage.LocalStore(landing), storage.file_uri(landing))
    locks.acquire(store, store.root, BATCH, "fruits_pipeline/scheduled__2026-05-04")
    before = {uri: store.read(uri) for uri in store.list_files(store.root + "/")}
    assert erase_cli.main(["--root", store.root, "--path", uris["plain.jpg"]]) == 1
    message = capsys.readouterr().err
    assert "fruits_pipeline/scheduled__2026-05-04" in message and BATCH in message
    assert {uri: store.read(uri) for uri in store.list_files(store.root + "/")} == before  # nothing touched
    # And the other way round: while an erasure holds the batch, a run cannot take it.
    locks.release(store, store.root, BATCH, "fruits_pipeline/scheduled__2026-05-04")
    locks.acquire(store, store.root, BATCH, "erase-1@host")
    with pytest.raises(locks.BatchLocked, match="erase-1@host"):
        locks.acquire(store, store.root, BATCH, "fruits_pipeline/manual__x")


def test_s3_erasure_purges_every_noncurrent_version_under_the_batch_prefixes(tmp_path, landing):
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        key_arn = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
        s3.put_bucket_encryption(
            Bucket=BUCKET,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}}
                ]
            },
        )
        store = storage.S3Store(s3, BUCKET)
        uris = build(store, storage.LocalStore(landing), storage.file_uri(landing))
        # Reruns left the rows under keys erasure will never rewrite: a deleted staging file (only versions left),
        # an overwritten temporary, a quarantine written twice.
        staging = f"features/batch={BATCH}/_temporary/part-9.parquet"
        rows = parquet({"path": list(uris.values())})
        s3.put_object(Bucket=BUCKET, Key=staging, Body=rows)
        s3.delete_object(Bucket=BUCKET, Key=staging)
        quarantine = f"quarantine/batch={BATCH}/run=q1/part-0.parquet"
        s3.put_object(Bucket=BUCKET, Key=quarantine, Body=rows)
        s3.put_object(Bucket=BUCKET, Key=quarantine, Body=parquet({"path": ["s3://x/other.jpg"]}))
        other_batch = "raw/batch=2026-05-05/keep.bin"
        s3.put_object(Bucket=BUCKET, Key=other_batch, Body=b"1")
        s3.put_object(Bucket=BUCKET, Key=other_batch, Body=b"2")

        report = erase.erase(f"s3://{BUCKET}", uris["plain.jpg"], s3_client=s3)
        assert report["noncurrent_versions_purged"] == 3  # staging: its version + delete marker; quarantine: 1
        for prefix in (
            f"raw/batch={BATCH}/",
            f"features/batch={BATCH}/",
            f"quarantine/batch={BATCH}/",
            f"pca/reduced/basis=0001/batch={BATCH}/",
            f"pca/reduced/basis=0002/batch={BATCH}/",
        ):
            answer = s3.list_object_versions(Bucket=BUCKET, Prefix=prefix)
            assert all(v["IsLatest"] for v in answer.get("Versions", [])), prefix
            assert not answer.get("DeleteMarkers"), prefix
        # What remains current holds no row of the photo, anywhere under the batch.
        for key in [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]:
            body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            if key.endswith(".parquet"):
                assert uris["plain.jpg"] not in pq.read_table(io.BytesIO(body)).column("path").to_pylist(), key
            elif key.endswith(".csv"):
                assert uris["plain.jpg"] not in csv_paths(body), key
        # Another batch's history is not this erasure's business.
        assert len(s3.list_object_versions(Bucket=BUCKET, Prefix=other_batch)["Versions"]) == 2
