"""Erasure by name (issue 23, items 1, 9 and 10): a name is compared as stored, never URL-parsed (`#`, `?`, `%41`,
tabs and newlines are characters of the name; only the `file:` spellings are one); erasing one photo touches no
other and removes every copy (bundle row, manifest entry, landing file, archived original, index entry, derived
rows), reading the index shard and the photo's own batch only."""

from __future__ import annotations

import hashlib
import io
import json

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto import mock_aws
from PIL import Image

from fruits import dedup_index, erase, lake, storage, upload
from fruits.cli import erase as erase_cli

BATCH = "2026-05-04"
REGION = "eu-west-3"
BUCKET = "fruits-lake-erase-names"
# Each hostile name beside the bystander a URL parser would take it for.
HOSTILE = ["x#1.jpg", "q?v=1.jpg", "n\nl.jpg", "t\tb.jpg", "a%41.jpg", "sp%20ace.jpg"]
BYSTANDERS = ["x", "q", "nl.jpg", "tb.jpg", "aA.jpg", "sp ace.jpg"]
NAMES = HOSTILE + BYSTANDERS


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 20 % 256, 90, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


def parquet(rows: dict) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table(rows), buffer)
    return buffer.getvalue()


def land(folder, names=NAMES):
    (folder / "Kiwi").mkdir(parents=True)
    for i, name in enumerate(names):
        (folder / "Kiwi" / name).write_bytes(jpeg(i))
    return folder


def build(store: storage.Store, landing, **options) -> dict[str, str]:
    """NAMES uploaded (3 a bundle) and their features rows, spelled as Spark spells them; {name: photo URI}."""
    upload.upload_new_images(
        store, storage.LocalStore(landing), storage.file_uri(landing), BATCH, max_photos=3, **options
    )
    raw = lake.raw_uri(store.root, BATCH)
    uris = {name: raw + f"Kiwi/{name}" for name in NAMES}
    spelled = [uri.replace("file:///", "file:/") for uri in uris.values()]  # featurize's `path`
    rows = {"path": spelled, "sha256": [hashlib.sha256(jpeg(i)).hexdigest() for i in range(len(NAMES))]}
    store.put(lake.features_uri(store.root, BATCH) + "part-00000.parquet", parquet(rows), "")
    return uris


def bundled_paths(store: storage.Store) -> list[str]:
    raw = lake.raw_uri(store.root, BATCH)
    return sorted(
        path
        for name in storage.bundle_files(store, raw)
        for path in pq.read_table(io.BytesIO(store.read(raw + name)), columns=["path"])["path"].to_pylist()
    )


def assert_only_erased(store: storage.Store, landing, uris: dict[str, str], victim: str) -> None:
    others = [name for name in NAMES if name != victim]
    assert sorted(storage.read_manifest(store, store.root, BATCH)) == sorted(f"Kiwi/{n}" for n in others)
    assert bundled_paths(store) == sorted(uris[n] for n in others)
    assert sorted(p.name for p in (landing / "Kiwi").iterdir()) == sorted(others)
    features = pq.read_table(io.BytesIO(store.read(lake.features_uri(store.root, BATCH) + "part-00000.parquet")))
    assert len(features["path"].to_pylist()) == len(others)
    assert dedup_index.erased(store, store.root) == {hashlib.sha256(jpeg(NAMES.index(victim))).hexdigest()}
    known = dedup_index.lookup(store, store.root, [hashlib.sha256(jpeg(NAMES.index(n))).hexdigest() for n in others])
    assert len(known) == len(others)  # the bystanders stay known to the index


@pytest.mark.parametrize("victim", HOSTILE + ["aA.jpg"])
def test_erasing_a_name_with_url_characters_erases_that_photo_and_only_it(tmp_path, victim):
    landing = land(tmp_path / "landing" / BATCH)
    store = storage.LocalStore(tmp_path / "lake")
    uris = build(store, landing)
    report = erase.erase(store.root, f"raw/batch={BATCH}/Kiwi/{victim}")
    assert report["photos"] == [f"raw/batch={BATCH}/Kiwi/{victim}"]
    assert_only_erased(store, landing, uris, victim)


@pytest.mark.parametrize("spelling", ["file:/", "file:///", "/"])
def test_the_file_spellings_of_a_local_photo_are_one_photo(tmp_path, spelling):
    landing = land(tmp_path / "landing" / BATCH)
    store = storage.LocalStore(tmp_path / "lake")
    uris = build(store, landing)
    erase.erase(store.root, spelling + uris["a%41.jpg"].removeprefix("file:///"))
    assert_only_erased(store, landing, uris, "a%41.jpg")


@pytest.mark.parametrize("victim", ["x#1.jpg", "a%41.jpg", "n\nl.jpg"])
def test_s3_erasing_a_name_with_url_characters_erases_that_photo_and_only_it(tmp_path, victim):
    landing = land(tmp_path / "landing" / BATCH)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_encryption(
            Bucket=BUCKET,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )
        store = storage.S3Store(s3, BUCKET)
        uris = build(store, landing)
        erase.erase(f"s3://{BUCKET}", uris[victim].replace("s3://", "s3a://"), s3_client=s3)
        assert_only_erased(store, landing, uris, victim)


def test_the_archived_original_is_erased_too(tmp_path):
    landing_root = tmp_path / "landing"
    landing = land(landing_root / BATCH, ["keep.jpg", "victim.jpg"])
    store = storage.LocalStore(tmp_path / "lake")
    upload.upload_new_images(
        store, storage.LocalStore(landing), storage.file_uri(landing), BATCH, landing_after="archive"
    )
    archived = landing_root / upload.ARCHIVE_PREFIX / BATCH / "Kiwi"
    assert sorted(p.name for p in archived.iterdir()) == ["keep.jpg", "victim.jpg"]  # with their EXIF, as landed
    report = erase.erase(store.root, f"raw/batch={BATCH}/Kiwi/victim.jpg")
    assert sorted(p.name for p in archived.iterdir()) == ["keep.jpg"]
    assert report["landing_files_deleted"] == [storage.file_uri(archived / "victim.jpg")]
    assert report["landing_files_left"] == []


class CountingStore(storage.LocalStore):
    """A local lake that remembers every object it was asked to read."""

    def __init__(self, root):
        super().__init__(root)
        self.reads: list[str] = []

    def read_or_none(self, uri):
        self.reads.append(uri)
        return super().read_or_none(uri)

    def read_with_etag(self, uri):
        self.reads.append(uri)
        return super().read_with_etag(uri)

    def read(self, uri):
        self.reads.append(uri)
        return super().read(uri)


@pytest.mark.parametrize("by", ["name", "sha256"])
def test_an_erasure_reads_the_index_shard_and_the_photos_own_batch_not_every_batch(tmp_path, monkeypatch, by):
    store = CountingStore(tmp_path / "lake")
    days = [f"2026-05-{day:02d}" for day in range(1, 8)]
    for number, day in enumerate(days):
        folder = tmp_path / "landing" / day / "Kiwi"
        folder.mkdir(parents=True)
        (folder / f"photo-{day}.jpg").write_bytes(jpeg(number))
        upload.upload_new_images(store, storage.LocalStore(folder.parent), storage.file_uri(folder.parent), day)
    monkeypatch.setattr(erase, "open_lake", lambda root, s3_client=None: store)
    store.reads.clear()
    victim = days[3]
    target = f"raw/batch={victim}/Kiwi/photo-{victim}.jpg" if by == "name" else hashlib.sha256(jpeg(3)).hexdigest()
    report = erase.erase(store.root, target)
    assert report["batches"] == [victim]
    read_batches = {uri.split("batch=")[1][:10] for uri in store.reads if "/raw/batch=" in uri}
    assert read_batches == {victim}
    assert not (tmp_path / "lake" / "raw" / f"batch={victim}" / "_uploads.json").read_text().count("photo-")
    # The other batches' photos are where they were.
    for day in days:
        if day != victim:
            assert storage.read_manifest(store, store.root, day) == {
                f"Kiwi/photo-{day}.jpg": hashlib.sha256(jpeg(days.index(day))).hexdigest()
            }


def test_a_copy_the_erasure_could_not_remove_makes_it_fail_saying_which(tmp_path, monkeypatch, capsys):
    landing = land(tmp_path / "landing" / BATCH, ["keep.jpg", "victim.jpg"])
    store = storage.LocalStore(tmp_path / "lake")
    upload.upload_new_images(store, storage.LocalStore(landing), storage.file_uri(landing), BATCH)
    real_delete = storage.LocalStore.delete

    def denied(self, uri):  # the landing belongs to a partner who denies deletes
        if uri.startswith(storage.file_uri(landing)):
            raise PermissionError("AccessDenied")
        real_delete(self, uri)

    monkeypatch.setattr(storage.LocalStore, "delete", denied)
    assert erase_cli.main(["--root", store.root, "--path", f"raw/batch={BATCH}/Kiwi/victim.jpg"]) == 3
    out, err = capsys.readouterr()
    assert "incomplete" in err and str(landing / "Kiwi" / "victim.jpg") in err and "AccessDenied" in err
    assert json.loads(out)["landing_files_left"] and (landing / "Kiwi" / "victim.jpg").exists()
    assert "Kiwi/victim.jpg" not in storage.read_manifest(store, store.root, BATCH)  # the lake's copies did go
