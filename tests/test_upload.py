"""fruits.upload: new photos into raw/batch=<ds>/ once (key + sha256), code published by content hash."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from fruits import lake, upload

BATCH = "2026-02-01"


@pytest.fixture
def landing(tmp_path, sample_dir) -> Path:
    """A landing folder with 3 real photos of each of 2 labels, laid out like the sample."""
    folder = tmp_path / "landing"
    for label in ("Apple Braeburn", "Banana"):
        target = folder / "Training" / label
        target.mkdir(parents=True)
        for photo in sorted((sample_dir / "Training" / label).glob("*.jpg"))[:3]:
            shutil.copy(photo, target / photo.name)
    return folder


def _lake_files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _upload(lake_root: Path, landing: Path, batch: str = BATCH, **kwargs):
    store = upload.LocalStore(lake_root)
    return upload.upload_new_images(store, upload.LocalStore(landing), upload.file_uri(landing), batch, **kwargs)


def test_images_land_under_raw_batch_label_file_and_a_rerun_changes_nothing(tmp_path, landing):
    lake_root = tmp_path / "lake"
    first = _upload(lake_root, landing)
    assert (first["seen"], first["uploaded"], first["images_in_batch"]) == (6, 6, 6)
    raw = Path(lake.raw_uri(upload.file_uri(lake_root), BATCH).removeprefix("file://"))
    for photo in landing.rglob("*.jpg"):
        stored = raw / photo.parent.name / photo.name  # raw/batch=<ds>/<label>/<file>
        assert stored.read_bytes() == photo.read_bytes()
    manifest = json.loads((raw / upload.UPLOADS_MANIFEST).read_text())
    assert manifest["files"]["Banana/" + sorted(p.name for p in (landing / "Training/Banana").iterdir())[0]]

    before = _lake_files(lake_root)
    mtimes = {p: p.stat().st_mtime_ns for p in lake_root.rglob("*")}
    again = _upload(lake_root, landing)
    assert (again["uploaded"], again["already_in_batch"], again["images_in_batch"]) == (0, 6, 6)
    assert _lake_files(lake_root) == before
    assert {p: p.stat().st_mtime_ns for p in lake_root.rglob("*")} == mtimes  # not even rewritten


def test_a_photo_already_in_another_batch_is_not_uploaded_again(tmp_path, landing):
    lake_root = tmp_path / "lake"
    _upload(lake_root, landing, "2026-02-01")
    extra = landing / "Training" / "Banana" / "new_one.jpg"
    extra.write_bytes(b"\xff\xd8 not really a jpeg, but new content")
    second = _upload(lake_root, landing, "2026-02-02")
    assert (second["seen"], second["in_other_batch"], second["uploaded"]) == (7, 6, 1)
    raw2 = Path(lake.raw_uri(upload.file_uri(lake_root), "2026-02-02").removeprefix("file://"))
    assert sorted(p.name for p in raw2.rglob("*.jpg")) == ["new_one.jpg"]


def test_a_different_photo_under_an_existing_name_is_kept_beside_it_not_over_it(tmp_path, landing):
    lake_root = tmp_path / "lake"
    _upload(lake_root, landing)
    victim = sorted((landing / "Training" / "Banana").glob("*.jpg"))[0]
    original = victim.read_bytes()
    second_landing = tmp_path / "landing2" / "Banana"
    second_landing.mkdir(parents=True)
    (second_landing / victim.name).write_bytes(original + b"changed")
    result = _upload(lake_root, second_landing.parent)
    assert (result["uploaded"], result["renamed"]) == (1, 1)
    raw = Path(lake.raw_uri(upload.file_uri(lake_root), BATCH).removeprefix("file://")) / "Banana"
    assert (raw / victim.name).read_bytes() == original
    renamed = [p for p in raw.iterdir() if p.name.startswith(victim.stem + "-")]
    assert len(renamed) == 1 and renamed[0].read_bytes() == original + b"changed"
    # and that, too, is idempotent
    assert _upload(lake_root, second_landing.parent)["uploaded"] == 0


def test_dry_run_counts_but_writes_nothing(tmp_path, landing):
    lake_root = tmp_path / "lake"
    result = _upload(lake_root, landing, dry_run=True)
    assert (result["seen"], result["uploaded"], result["dry_run"]) == (6, 6, True)
    assert not lake_root.exists() or not any(lake_root.rglob("*.*"))


def test_an_image_with_no_label_folder_is_refused(tmp_path):
    landing = tmp_path / "flat"
    landing.mkdir()
    (landing / "orphan.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="Label"):
        _upload(tmp_path / "lake", landing)


@mock_aws
def test_s3_upload_records_sha256_encrypts_and_is_idempotent(tmp_path, landing):
    s3 = boto3.client("s3", region_name="eu-west-3")
    s3.create_bucket(Bucket="lake-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
    s3.put_bucket_versioning(Bucket="lake-eu", VersioningConfiguration={"Status": "Enabled"})
    store = upload.S3Store(s3, "lake-eu", kms_key_arn="arn:aws:kms:eu-west-3:123456789012:key/abc")
    first = upload.upload_new_images(store, upload.LocalStore(landing), upload.file_uri(landing), BATCH)
    assert first["uploaded"] == 6
    photo = sorted((landing / "Training" / "Banana").glob("*.jpg"))[0]
    key = f"raw/batch={BATCH}/Banana/{photo.name}"
    head = s3.head_object(Bucket="lake-eu", Key=key)
    assert head["Metadata"]["sha256"] == hashlib.sha256(photo.read_bytes()).hexdigest()
    assert head["ServerSideEncryption"] == "aws:kms"

    second = upload.upload_new_images(store, upload.LocalStore(landing), upload.file_uri(landing), BATCH)
    assert (second["uploaded"], second["already_in_batch"]) == (0, 6)
    versions = s3.list_object_versions(Bucket="lake-eu", Prefix=f"raw/batch={BATCH}/")["Versions"]
    assert len(versions) == 7  # 6 photos + the manifest, each written exactly once

    # An S3 landing prefix works the same way (same bucket here, another prefix).
    for path in landing.rglob("*.jpg"):
        s3.put_object(Bucket="lake-eu", Key=f"landing/{path.parent.name}/{path.name}", Body=path.read_bytes())
    from_s3 = upload.upload_new_images(store, store, "s3://lake-eu/landing/", BATCH)
    assert (from_s3["seen"], from_s3["uploaded"], from_s3["already_in_batch"]) == (6, 0, 6)
    assert upload.raw_batches(store, "s3://lake-eu") == [BATCH]


def test_code_is_published_once_per_content_version(tmp_path):
    repo = tmp_path / "repo"
    (repo / "spark_jobs").mkdir(parents=True)
    (repo / "bootstrap").mkdir()
    (repo / "requirements").mkdir()
    (repo / "spark_jobs" / "featurize.py").write_text("print('f')\n")
    (repo / "spark_jobs" / "pca.py").write_text("print('p')\n")
    (repo / "spark_jobs" / "jobio.py").write_text("X = 1\n")
    (repo / "spark_jobs" / "__pycache__").mkdir()
    (repo / "spark_jobs" / "__pycache__" / "jobio.cpython-311.pyc").write_bytes(b"\0")
    (repo / "bootstrap" / "install_python_deps.sh").write_text("#!/bin/sh\n")
    (repo / "requirements" / "spark-node.txt").write_text("numpy==2.4.6\n")
    store = upload.LocalStore(tmp_path / "lake")

    first = upload.publish_code(store, repo)
    assert first["published"] and first["helper_modules"] == ["jobio.py"]
    code = Path(first["code_uri"].removeprefix("file://"))
    assert code == tmp_path / "lake" / "code" / first["version"]
    assert (code / "spark_jobs" / "featurize.py").read_text() == "print('f')\n"
    assert (code / "requirements" / "spark-node.txt").exists() and (code / "bootstrap" / "install_python_deps.sh").exists()
    assert not (code / "spark_jobs" / "__pycache__").exists()

    again = upload.publish_code(store, repo)
    assert again["version"] == first["version"] and not again["published"]

    (repo / "requirements" / "spark-node.txt").write_text("numpy==2.4.7\n")
    changed = upload.publish_code(store, repo)
    assert changed["version"] != first["version"] and changed["published"]
    # the old version is still there: a run planned with it still runs it
    assert (code / "requirements" / "spark-node.txt").read_text() == "numpy==2.4.6\n"
