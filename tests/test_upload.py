"""fruits.upload: new photos bundled into raw/batch=<ds>/bundle-<hex>.parquet once (key + sha256), code published
by content hash."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from fruits import lake, release, storage, upload

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


def _jpeg(colour=(200, 30, 40), size=(24, 16)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


def _lake_files(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _upload(lake_root: Path, landing: Path, batch: str = BATCH, **kwargs):
    store = storage.LocalStore(lake_root)
    return upload.upload_new_images(store, storage.LocalStore(landing), storage.file_uri(landing), batch, **kwargs)


def _raw(lake_root: Path, batch: str = BATCH) -> Path:
    return Path(lake.raw_uri(storage.file_uri(lake_root), batch).removeprefix("file://"))


def _bundles(lake_root: Path, batch: str = BATCH) -> dict[str, pq.ParquetFile]:
    return {p.name: pq.ParquetFile(p) for p in sorted(_raw(lake_root, batch).glob("bundle-*.parquet"))}


def _rows(lake_root: Path, batch: str = BATCH) -> dict[str, dict]:
    """{path: row} over every bundle of the batch."""
    return {row["path"]: row for bundle in _bundles(lake_root, batch).values() for row in bundle.read().to_pylist()}


def _manifest(lake_root: Path, batch: str = BATCH) -> dict:
    return json.loads((_raw(lake_root, batch) / storage.UPLOADS_MANIFEST).read_text())


def test_photos_land_in_one_bundle_keyed_split_label_file_and_a_rerun_writes_nothing(tmp_path, landing):
    lake_root = tmp_path / "lake"
    first = _upload(lake_root, landing)
    assert (first["seen"], first["uploaded"], first["images_in_batch"]) == (6, 6, 6)
    assert (first["bundles_written"], first["bundles_in_batch"]) == (1, 1)
    ((name, bundle),) = _bundles(lake_root).items()
    assert re.fullmatch(r"bundle-[0-9a-f]{16}\.parquet", name)
    # binaryFile's columns, + sha256; one row per photo, its path the URI it would have had alone.
    assert bundle.schema_arrow.names == ["path", "modificationTime", "length", "content", "sha256"]
    assert str(bundle.schema_arrow.field("modificationTime").type) == "timestamp[us, tz=UTC]"
    raw_uri = lake.raw_uri(storage.file_uri(lake_root), BATCH)
    rows = _rows(lake_root)
    photos = sorted(landing.rglob("*.jpg"))
    assert sorted(rows) == sorted(f"{raw_uri}Training/{p.parent.name}/{p.name}" for p in photos)
    for photo in photos:
        row = rows[f"{raw_uri}Training/{photo.parent.name}/{photo.name}"]
        assert row["content"] == photo.read_bytes() and row["length"] == photo.stat().st_size
        assert row["sha256"] == hashlib.sha256(photo.read_bytes()).hexdigest()
    manifest = _manifest(lake_root)
    assert manifest["bundles"] == {name: sorted(manifest["files"])}
    banana = sorted((landing / "Training/Banana").iterdir())[0]
    assert manifest["files"][f"Training/Banana/{banana.name}"] == hashlib.sha256(banana.read_bytes()).hexdigest()

    before = _lake_files(lake_root)
    mtimes = {p: p.stat().st_mtime_ns for p in lake_root.rglob("*")}
    again = _upload(lake_root, landing)
    assert (again["uploaded"], again["already_in_batch"], again["bundles_written"], again["images_in_batch"]) == (
        0,
        6,
        0,
        6,
    )
    assert _lake_files(lake_root) == before
    assert {p: p.stat().st_mtime_ns for p in lake_root.rglob("*")} == mtimes  # not even rewritten


def test_bundles_close_at_the_photo_or_byte_limit_in_row_groups_with_deterministic_names(tmp_path, landing):
    counted = _upload(tmp_path / "by_count", landing, max_photos=4, row_group_photos=3)
    sizes = {
        name: (b.metadata.num_rows, [b.metadata.row_group(i).num_rows for i in range(b.num_row_groups)])
        for name, b in _bundles(tmp_path / "by_count").items()
    }
    assert counted["bundles_written"] == 2 and sorted(sizes.values()) == [(2, [2]), (4, [3, 1])]
    assert _manifest(tmp_path / "by_count")["bundles"] == {
        name: sorted(_manifest(tmp_path / "by_count")["files"])[i : i + 4]
        for name, i in zip(sorted(sizes, key=lambda n: -sizes[n][0]), (0, 4), strict=False)
    }

    photo_sizes = sorted(p.stat().st_size for p in landing.rglob("*.jpg"))
    limit = photo_sizes[-1] + photo_sizes[-2]  # room for two photos at least, never for more than the limit
    sized = _upload(tmp_path / "by_bytes", landing, max_bytes=limit)
    contents = [
        sum(b.read(columns=["length"]).column("length").to_pylist()) for b in _bundles(tmp_path / "by_bytes").values()
    ]
    assert (
        sized["bundles_written"] == len(contents) >= 3 and max(contents) <= limit and sum(contents) == sum(photo_sizes)
    )
    alone = _upload(tmp_path / "one_byte", landing, max_bytes=1)  # a photo above the limit: a bundle of its own
    assert alone["bundles_written"] == 6 and {
        b.metadata.num_rows for b in _bundles(tmp_path / "one_byte").values()
    } == {1}

    # A bundle's name hashes its members and its attempt's nonce: order-free, never shared by two attempts.
    members = {"Training/Banana/a.jpg": "1" * 64, "Test/Kiwi/b.jpg": "2" * 64}
    assert storage.bundle_name(members, "a1") == storage.bundle_name(dict(reversed(members.items())), "a1")
    assert storage.bundle_name(members, "a1") != storage.bundle_name({**members, "Test/Kiwi/b.jpg": "3" * 64}, "a1")
    assert storage.bundle_name(members, "a1") != storage.bundle_name(members, "a2")


def test_the_split_folder_is_kept_in_the_key_and_splits_are_featurizes(tmp_path, sample_dir):
    import featurize

    assert lake.SPLITS == featurize.SPLITS  # one list of splits on both sides of the lake
    landing = tmp_path / "landing"
    photos = sorted((sample_dir / "Training" / "Banana").glob("*.jpg"))
    for folder, photo in zip(
        ["day1/Training/Banana", "Test/Banana", "Banana", "Test/extra/Banana"], photos, strict=False
    ):
        (landing / folder).mkdir(parents=True)
        shutil.copy(photo, landing / folder / photo.name)
    _upload(tmp_path / "lake", landing)
    assert sorted(_manifest(tmp_path / "lake")["files"]) == sorted(
        [
            f"Training/Banana/{photos[0].name}",
            f"Test/Banana/{photos[1].name}",
            f"Banana/{photos[2].name}",
            f"Test/Banana/{photos[3].name}",
        ]
    )


def test_a_photo_already_in_another_batch_is_not_uploaded_again(tmp_path, landing):
    lake_root = tmp_path / "lake"
    _upload(lake_root, landing, "2026-02-01")
    extra = landing / "Training" / "Banana" / "new_one.jpg"
    extra.write_bytes(_jpeg())
    second = _upload(lake_root, landing, "2026-02-02")
    assert (second["seen"], second["in_other_batch"], second["uploaded"], second["bundles_written"]) == (7, 6, 1, 1)
    assert second["already_in_lake"] == 6 and second["rejected"] == {}
    assert [Path(p).name for p in _rows(lake_root, "2026-02-02")] == ["new_one.jpg"]


def test_a_different_photo_under_an_existing_name_is_kept_beside_it_not_over_it(tmp_path, landing):
    lake_root = tmp_path / "lake"
    _upload(lake_root, landing)
    victim = sorted((landing / "Training" / "Banana").glob("*.jpg"))[0]
    original = victim.read_bytes()
    second_landing = tmp_path / "landing2" / "Training" / "Banana"
    second_landing.mkdir(parents=True)
    changed = _jpeg((1, 2, 3))
    (second_landing / victim.name).write_bytes(changed)
    result = _upload(lake_root, tmp_path / "landing2")
    assert (result["uploaded"], result["renamed"], result["bundles_written"], result["images_in_batch"]) == (1, 1, 1, 7)
    raw_uri = lake.raw_uri(storage.file_uri(lake_root), BATCH)
    rows = _rows(lake_root)
    assert rows[f"{raw_uri}Training/Banana/{victim.name}"]["content"] == original
    (renamed,) = [p for p in rows if Path(p).name.startswith(victim.stem + "-")]
    sha = hashlib.sha256(changed).hexdigest()
    assert renamed == f"{raw_uri}Training/Banana/{victim.stem}-{sha[:8]}{victim.suffix}"
    assert rows[renamed]["content"] == changed
    assert len(_manifest(lake_root)["bundles"]) == 2
    # and that, too, is idempotent
    assert _upload(lake_root, tmp_path / "landing2")["uploaded"] == 0


class CrashBeforeManifest(storage.LocalStore):
    """An upload that stops after its bundles, before the manifest (the task killed half way)."""

    def put(self, uri: str, data: bytes, sha256: str) -> None:
        if uri.endswith(storage.UPLOADS_MANIFEST):
            raise ConnectionError("worker lost")
        super().put(uri, data, sha256)


def test_bundles_left_by_an_interrupted_upload_are_deleted_only_after_the_grace_period(tmp_path, landing, caplog):
    lake_root = tmp_path / "lake"
    _upload(lake_root, landing)
    new = tmp_path / "landing2" / "Kiwi"
    new.mkdir(parents=True)
    (new / "k.jpg").write_bytes(_jpeg())
    with pytest.raises(ConnectionError):
        upload.upload_new_images(
            CrashBeforeManifest(lake_root),
            storage.LocalStore(tmp_path / "landing2"),
            storage.file_uri(tmp_path / "landing2"),
            BATCH,
        )
    assert len(_bundles(lake_root)) == 2 and len(_manifest(lake_root)["bundles"]) == 1  # a leftover
    (leftover,) = set(_bundles(lake_root)) - set(_manifest(lake_root)["bundles"])

    # A young unnamed bundle may be a live attempt's: kept; the photo is bundled again and recorded.
    rerun = _upload(lake_root, tmp_path / "landing2")
    assert (rerun["leftover_bundles_deleted"], rerun["uploaded"], rerun["bundles_written"]) == (0, 1, 1)
    assert leftover in _bundles(lake_root) and leftover not in _manifest(lake_root)["bundles"]
    # Past the grace period it is a leftover: deleted, and nothing the manifest names is touched.
    later = _upload(lake_root, tmp_path / "landing2", leftover_grace_seconds=0)
    assert (later["leftover_bundles_deleted"], later["uploaded"]) == (1, 0) and "interrupted upload" in caplog.text
    assert set(_bundles(lake_root)) == set(_manifest(lake_root)["bundles"])
    assert len(_rows(lake_root)) == len(_manifest(lake_root)["files"]) == 7


def test_dry_run_counts_but_writes_nothing(tmp_path, landing):
    lake_root = tmp_path / "lake"
    result = _upload(lake_root, landing, dry_run=True, max_photos=4)
    assert (result["seen"], result["uploaded"], result["bundles_written"], result["dry_run"]) == (6, 6, 2, True)
    assert not lake_root.exists() or not any(lake_root.rglob("*.*"))


def test_an_empty_landing_writes_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    result = _upload(tmp_path / "lake", tmp_path / "empty")
    assert (result["seen"], result["images_in_batch"], result["bundles_written"]) == (0, 0, 0)
    assert not (tmp_path / "lake").exists() or not any((tmp_path / "lake").rglob("*.*"))


def test_an_image_with_no_label_folder_is_rejected_as_misplaced_not_fatal(tmp_path):
    landing = tmp_path / "flat"
    (landing / "Kiwi").mkdir(parents=True)
    (landing / "orphan.jpg").write_bytes(_jpeg())
    (landing / "Kiwi" / "fine.jpg").write_bytes(_jpeg((9, 9, 9)))
    result = _upload(tmp_path / "lake", landing)
    assert (result["uploaded"], result["rejected"]) == (1, {"misplaced": 1})
    report = json.loads(Path(result["ingestion_report_uri"].removeprefix("file://")).read_text())
    assert report["files"][storage.file_uri(landing / "orphan.jpg")]["reason"] == "misplaced"


@mock_aws
def test_s3_upload_bundles_encrypts_and_a_rerun_makes_no_write_and_no_head(tmp_path, landing):
    s3 = boto3.client("s3", region_name="eu-west-3")
    s3.create_bucket(Bucket="lake-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
    s3.put_bucket_versioning(Bucket="lake-eu", VersioningConfiguration={"Status": "Enabled"})
    requests: list[tuple[str, str]] = []
    s3.meta.events.register(
        "before-parameter-build.s3.*", lambda model, params, **_: requests.append((model.name, params.get("Key", "")))
    )
    store = storage.S3Store(s3, "lake-eu", kms_key_arn="arn:aws:kms:eu-west-3:123456789012:key/abc")
    first = upload.upload_new_images(store, storage.LocalStore(landing), storage.file_uri(landing), BATCH, max_photos=4)
    assert (first["uploaded"], first["bundles_written"]) == (6, 2)
    # One PutObject per bundle; per run the manifest, the ingestion report, its counts and the index shards the
    # photos hash to: no request per photo beyond the shards (6 photos: at most 6 shards).
    puts = [key for name, key in requests if name == "PutObject"]
    assert sum(key.endswith(".parquet") for key in puts) == 2 and "HeadObject" not in {n for n, _ in requests}
    assert sorted(k for k in puts if k.startswith("raw/") and not k.endswith(".parquet")) == [
        f"raw/batch={BATCH}/_ingestion.json",
        f"raw/batch={BATCH}/_ingestion_counts.json",
        f"raw/batch={BATCH}/_uploads.json",
    ]
    shards = {key for key in puts if key.startswith("index/")}
    assert 1 <= len(shards) <= 6 and len(puts) == 5 + len(shards)
    names = storage.bundle_files(store, lake.raw_uri("s3://lake-eu", BATCH))
    assert len(names) == 2
    head = s3.head_object(Bucket="lake-eu", Key=f"raw/batch={BATCH}/{names[0]}")
    assert head["ServerSideEncryption"] == "aws:kms"
    body = s3.get_object(Bucket="lake-eu", Key=f"raw/batch={BATCH}/{names[0]}")["Body"].read()
    assert all(
        p.startswith(f"s3://lake-eu/raw/batch={BATCH}/Training/")
        for p in pq.read_table(io.BytesIO(body))["path"].to_pylist()
    )

    requests.clear()
    second = upload.upload_new_images(
        store, storage.LocalStore(landing), storage.file_uri(landing), BATCH, max_photos=4
    )
    assert (second["uploaded"], second["already_in_batch"]) == (0, 6)
    assert not {"PutObject", "HeadObject", "DeleteObjects"} & {name for name, _ in requests}
    versions = s3.list_object_versions(Bucket="lake-eu", Prefix=f"raw/batch={BATCH}/")["Versions"]
    assert len(versions) == 5  # 2 bundles, the manifest, the report and its counts, each written exactly once

    # An S3 landing prefix works the same way (same bucket here, another prefix).
    for path in landing.rglob("*.jpg"):
        s3.put_object(Bucket="lake-eu", Key=f"landing/Training/{path.parent.name}/{path.name}", Body=path.read_bytes())
    from_s3 = upload.upload_new_images(store, store, "s3://lake-eu/landing/", BATCH, read_workers=4)
    assert (from_s3["seen"], from_s3["uploaded"], from_s3["already_in_batch"]) == (6, 0, 6)
    assert storage.raw_batches(store, "s3://lake-eu") == [BATCH]

    # A leftover bundle on a versioned bucket goes with every version: its photos stay nowhere.
    leftover = f"raw/batch={BATCH}/bundle-0123456789abcdef.parquet"
    s3.put_object(Bucket="lake-eu", Key=leftover, Body=body)
    s3.put_object(Bucket="lake-eu", Key=leftover, Body=body)
    assert (
        upload.upload_new_images(
            store, storage.LocalStore(landing), storage.file_uri(landing), BATCH, leftover_grace_seconds=0
        )["leftover_bundles_deleted"]
        == 1
    )
    assert "Versions" not in s3.list_object_versions(Bucket="lake-eu", Prefix=leftover)


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
    store = storage.LocalStore(tmp_path / "lake")

    first = release.publish_code(store, repo)
    assert first["published"] and first["helper_modules"] == ["jobio.py"]
    code = Path(first["code_uri"].removeprefix("file://"))
    assert code == tmp_path / "lake" / "code" / first["version"]
    assert (code / "spark_jobs" / "featurize.py").read_text() == "print('f')\n"
    assert (code / "requirements" / "spark-node.txt").exists() and (
        code / "bootstrap" / "install_python_deps.sh"
    ).exists()
    assert not (code / "spark_jobs" / "__pycache__").exists()

    again = release.publish_code(store, repo)
    assert again["version"] == first["version"] and not again["published"]

    (repo / "requirements" / "spark-node.txt").write_text("numpy==2.4.7\n")
    changed = release.publish_code(store, repo)
    assert changed["version"] != first["version"] and changed["published"]
    # the old version is still there: a run planned with it still runs it
    assert (code / "requirements" / "spark-node.txt").read_text() == "numpy==2.4.6\n"


class ListingRecorder(storage.LocalStore):
    """A LocalStore that records which folders are listed and which files read."""

    def __init__(self, root):
        super().__init__(root)
        self.listed, self.reads = [], []

    def list_entries(self, prefix_uri):
        self.listed.append(prefix_uri)
        return super().list_entries(prefix_uri)

    def read_or_none(self, uri):
        self.reads.append(uri)
        return super().read_or_none(uri)


def test_the_audit_reports_landing_files_no_ingestion_report_accounts_for(tmp_path, capsys):
    """Issue 23: a photo landing in the night's folder after the run read it gets no outcome anywhere."""
    from fruits.cli import upload as upload_cli

    root = tmp_path / "landing"
    night = root / BATCH
    for i, name in enumerate(("a.jpg", "b.jpg")):
        (night / "Kiwi").mkdir(parents=True, exist_ok=True)
        (night / "Kiwi" / name).write_bytes(_jpeg((10 * i, 20, 30)))
    (night / "Kiwi" / ".tmp").write_bytes(b"x")  # rejected as hidden: an outcome too
    _upload(tmp_path / "lake", night)
    (night / "Kiwi" / "late.jpg").write_bytes(_jpeg((90, 90, 90)))  # landed after the run read the folder
    (root / "2026-02-02" / "Kiwi").mkdir(parents=True)
    (root / "2026-02-02" / "Kiwi" / "next.jpg").write_bytes(_jpeg((1, 2, 3)))  # another night: not this audit's

    lake_store, landing_store = ListingRecorder(tmp_path / "lake"), ListingRecorder(root)
    found = upload.unaccounted_landing_files(
        lake_store, landing_store, lake.landing_uri(storage.file_uri(root), BATCH), BATCH
    )
    assert [uri.rsplit("/", 1)[1] for uri in found["unaccounted"]] == ["late.jpg"] and found["landing_files"] == 4
    # Its cost is that night's landing: one listing of its folder, one read of its report.
    assert landing_store.listed == [lake.landing_uri(storage.file_uri(root), BATCH)]
    assert lake_store.reads == [storage.ingestion_report_uri(lake_store.root, BATCH)]

    argv = ["audit", "--landing", str(root), "--lake", str(tmp_path / "lake"), "--batch", BATCH]
    assert upload_cli.main(argv) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["unaccounted_count"] == 1 and "late.jpg" in out and "no outcome" in err
    _upload(tmp_path / "lake", night)  # the late photo ingested by a rerun: accounted for
    assert upload_cli.main(argv) == 0
    # A night never ingested: every landing file is unaccounted.
    assert upload_cli.main([*argv[:-1], "2026-02-02"]) == 1
    assert "next.jpg" in capsys.readouterr().out


def test_the_listing_is_written_a_page_at_a_time_as_the_landing_is_listed(tmp_path, monkeypatch):
    # A landing of 10 files, listed 3 at a time: the listing never holds more than one page of the listing's
    # entries, its row groups are its pages, its rows what the ingest job reads, and the object is put once.
    landing = tmp_path / "landing"
    names = [f"Kiwi/k{i}.jpg" for i in range(8)] + ["Kiwi/.hidden.jpg", "loose.jpg"]
    for name in names:
        (landing / name).parent.mkdir(parents=True, exist_ok=True)
        (landing / name).write_bytes(b"x" * (len(name) + 1))
    landing_uri = storage.file_uri(landing) + "/"
    lake_store = storage.LocalStore(tmp_path / "lake")
    (tmp_path / "lake").mkdir()
    listed, written = [], []
    real_entries, real_page = storage.LocalStore.list_entries, upload._listing_page

    def lazily(self, prefix_uri):
        for entry in real_entries(self, prefix_uri):
            assert len(listed) - sum(written) < 3, "a fourth entry listed before the first page was written"
            listed.append(entry)
            yield entry

    def page(files, *args):
        written.append(len(files))
        return real_page(files, *args)

    monkeypatch.setattr(upload, "LISTING_PAGE_FILES", 3)
    monkeypatch.setattr(storage.LocalStore, "list_entries", lazily)
    monkeypatch.setattr(upload, "_listing_page", page)
    monkeypatch.setattr(lake_store, "put", lambda *a: pytest.fail("the listing was put from memory"))
    planned = upload.write_listing(lake_store, storage.LocalStore(landing), landing_uri, BATCH)

    assert written == [3, 3, 3, 1] and len(listed) == 10
    assert planned["listing"].startswith(lake.raw_uri(lake_store.root, BATCH))
    assert (planned["files"], planned["candidates"]) == (10, 8)
    parquet = pq.ParquetFile(lake_store.open_read(planned["listing"]))
    assert [parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)] == [3, 3, 3, 1]
    assert parquet.schema_arrow == upload.listing_schema()
    rows = {bytes(r["uri"]).decode(): r for r in parquet.read().to_pylist()}
    expected = {
        landing_uri + name: upload.classify(e, landing_uri, upload.MAX_PHOTO_BYTES)
        for name in names
        for e in [storage.Entry(landing_uri + name, len(name) + 1, 0.0)]
    }
    assert {u: (r["source"], r["key"], r["size"], r["reason"]) for u, r in rows.items()} == {
        u: (u if not f.reason else "", f.key, f.size, f.reason) for u, f in expected.items()
    }
    assert {r["reason"] for r in rows.values()} == {"", "hidden", "misplaced"}
