"""Ingestion under concurrent attempts, attempts dying anywhere, batch locks, and the requests of a second night
(issue 12 deliverables 2-3; moto is silent on interleavings, so the tests interleave the attempts themselves)."""

from __future__ import annotations

import datetime as dt
import io
import threading
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
from moto import mock_aws
from PIL import Image

from fruits import dedup_index, lake, locks, storage, upload

BATCH = "2026-04-01"
REGION = "eu-west-3"


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (seed * 7 % 256, seed * 13 % 256, seed * 29 % 256)).save(buffer, "JPEG")
    return buffer.getvalue()


def make_landing(folder: Path, photos: dict[str, bytes]) -> Path:
    for key, data in photos.items():
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        (folder / key).write_bytes(data)
    return folder


def check_consistent(store: storage.Store, expected_shas: set[str], batch: str = BATCH) -> dict[str, str]:
    """Every photo in exactly one bundle the manifest names; no bundle outside the manifest; rows = manifest."""
    root = store.root
    raw = lake.raw_uri(root, batch)
    manifest = storage.read_batch_manifest(store, root, batch)
    assert sorted(storage.bundle_files(store, raw)) == sorted(manifest.bundles)
    rows = [
        row
        for name in manifest.bundles
        for row in pq.read_table(io.BytesIO(store.read(raw + name)), columns=["path", "sha256"]).to_pylist()
    ]
    keys = [row["path"][len(raw) :] for row in rows]
    assert len(keys) == len(set(keys)) and sorted(keys) == sorted(manifest.files)
    assert sorted(k for ks in manifest.bundles.values() for k in ks) == sorted(keys)
    assert {row["path"][len(raw) :]: row["sha256"] for row in rows} == manifest.files
    shas = [row["sha256"] for row in rows]
    assert len(shas) == len(set(shas)) and set(shas) == expected_shas  # each photo once, none lost
    return manifest.files


class Gate:
    """Holds one attempt just before its manifest write until the other attempt has finished."""

    def __init__(self):
        self.arrived, self.go = threading.Event(), threading.Event()


def gated(store_class):
    class GatedStore(store_class):
        gate: Gate | None = None

        def _wait(self, uri: str) -> None:
            if self.gate and uri.endswith(storage.UPLOADS_MANIFEST):
                gate, self.gate = self.gate, None  # once
                gate.arrived.set()
                assert gate.go.wait(30)

        def put_if_absent(self, uri, data):
            self._wait(uri)
            return super().put_if_absent(uri, data)

        def put_if_match(self, uri, data, etag):
            self._wait(uri)
            return super().put_if_match(uri, data, etag)

    return GatedStore


@pytest.fixture(params=["local", "s3"])
def lake_factory(request, tmp_path):
    """(make a gated lake store) on a local folder or a versioned moto bucket."""
    if request.param == "local":
        yield lambda: gated(storage.LocalStore)(tmp_path / "lake")
        return
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket="lake", VersioningConfiguration={"Status": "Enabled"})
        yield lambda: gated(storage.S3Store)(s3, "lake")


def test_two_interleaved_attempts_lose_nothing_and_record_each_photo_once(tmp_path, lake_factory):
    photos = {i: jpeg(i) for i in range(12)}
    # A and B overlap (3..5, same keys), and B has other content under A's key Kiwi/p0.jpg.
    landing_a = make_landing(tmp_path / "a", {f"Kiwi/p{i}.jpg": photos[i] for i in range(6)})
    landing_b = make_landing(
        tmp_path / "b", {**{f"Kiwi/p{i}.jpg": photos[i] for i in range(3, 9)}, "Kiwi/p0.jpg": photos[11]}
    )
    store_a, store_b = lake_factory(), lake_factory()
    store_a.gate = gate = Gate()
    results = {}

    def attempt_a():
        results["a"] = upload.upload_new_images(
            store_a, storage.LocalStore(landing_a), storage.file_uri(landing_a), BATCH, max_photos=2
        )

    thread = threading.Thread(target=attempt_a)
    thread.start()
    assert gate.arrived.wait(30)  # A has written its bundles and read the (empty) manifest, not written it
    results["b"] = upload.upload_new_images(
        store_b, storage.LocalStore(landing_b), storage.file_uri(landing_b), BATCH, max_photos=2
    )
    gate.go.set()
    thread.join(30)
    a, b = results["a"], results["b"]
    assert b["uploaded"] == 7
    assert (a["uploaded"], a["already_in_lake"]) == (3, 3)  # 3..5 were recorded by B first
    files = check_consistent(store_b, {storage.sha256_bytes(photos[i]) for i in (*range(9), 11)})
    assert files["Kiwi/p0.jpg"] == storage.sha256_bytes(photos[11])  # B's, recorded first
    assert storage.sha256_bytes(photos[0]) in files.values()  # A's p0 kept beside it, renamed
    # The index names every photo, in this batch.
    found = dedup_index.lookup(store_b, store_b.root, files.values())
    assert found == dict.fromkeys(files.values(), BATCH)


class Faulty(storage.LocalStore):
    """Dies at the n-th write (put, conditional put or delete): an attempt killed anywhere."""

    def __init__(self, root, die_at: int):
        super().__init__(root)
        self.die_at, self.writes = die_at, 0

    def _count(self):
        self.writes += 1
        if self.writes == self.die_at:
            raise ConnectionError(f"killed at write {self.writes}")

    def put(self, uri, data, sha256):
        self._count()
        super().put(uri, data, sha256)

    def put_if_absent(self, uri, data):
        self._count()
        return super().put_if_absent(uri, data)

    def put_if_match(self, uri, data, etag):
        self._count()
        return super().put_if_match(uri, data, etag)

    def delete(self, uri):
        self._count()
        super().delete(uri)


def test_an_attempt_killed_at_any_write_loses_nothing_once_rerun(tmp_path):
    first = {f"Kiwi/p{i}.jpg": jpeg(i) for i in range(4)}
    second = {**{f"Kiwi/q{i}.jpg": jpeg(100 + i) for i in range(5)}, "Kiwi/p0.jpg": jpeg(200)}
    landing_1 = make_landing(tmp_path / "l1", first)
    landing_2 = make_landing(tmp_path / "l2", second)

    def first_night(lake_dir: Path) -> None:  # bundles hold their lake's URIs: each lake is uploaded, not copied
        upload.upload_new_images(
            storage.LocalStore(lake_dir),
            storage.LocalStore(landing_1),
            storage.file_uri(landing_1),
            BATCH,
            max_photos=2,
        )

    first_night(tmp_path / "count")
    counting = Faulty(tmp_path / "count", die_at=-1)
    upload.upload_new_images(counting, storage.LocalStore(landing_2), storage.file_uri(landing_2), BATCH, max_photos=2)
    assert counting.writes >= 8
    expected = {storage.sha256_bytes(d) for d in (*first.values(), *second.values())}
    for die_at in range(1, counting.writes + 1):
        lake_dir = tmp_path / f"lake{die_at}"
        first_night(lake_dir)
        with pytest.raises(ConnectionError):
            upload.upload_new_images(
                Faulty(lake_dir, die_at),
                storage.LocalStore(landing_2),
                storage.file_uri(landing_2),
                BATCH,
                max_photos=2,
            )
        store = storage.LocalStore(lake_dir)
        rerun = upload.upload_new_images(
            store,
            storage.LocalStore(landing_2),
            storage.file_uri(landing_2),
            BATCH,
            max_photos=2,
            leftover_grace_seconds=0,
        )
        files = check_consistent(store, expected)
        assert dedup_index.lookup(store, store.root, files.values()) == dict.fromkeys(files.values(), BATCH), die_at
        assert rerun["images_in_batch"] == len(expected)


def test_locks_exclude_name_the_holder_expire_and_only_one_of_many_racers_wins(tmp_path):
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": REGION})
        for store in (storage.LocalStore(tmp_path / "lake"), storage.S3Store(s3, "lake")):
            root, t0 = store.root, dt.datetime(2026, 4, 1, 12, tzinfo=dt.UTC)
            held = locks.acquire(store, root, BATCH, "run-1", ttl_seconds=3600, now=t0)
            assert held["owner"] == "run-1"
            with pytest.raises(locks.BatchLocked, match="run-1"):
                locks.acquire(store, root, BATCH, "erase-7@host", now=t0 + dt.timedelta(minutes=5))
            assert locks.acquire(store, root, BATCH, "run-1", now=t0)["owner"] == "run-1"  # re-entrant
            assert not locks.release(store, root, BATCH, "erase-7@host")  # not its lock
            # A dead holder: after the expiry the lock is taken over, conditionally.
            taken = locks.acquire(store, root, BATCH, "erase-7@host", now=t0 + dt.timedelta(hours=7))
            assert taken["owner"] == "erase-7@host" and not locks.release(store, root, BATCH, "run-1")
            assert locks.release(store, root, BATCH, "erase-7@host")
            assert locks.holder(store, root, BATCH) is None

            winners, losers = race_for_lock(store, "2026-04-02", 8)
            assert len(winners) == 1 and len(losers) == 7 and all(winners[0] in message for message in losers)


def race_for_lock(store: storage.Store, batch: str, racers: int) -> tuple[list[str], list[str]]:
    """`racers` threads acquire the same lock at once: (owners that won, refusal messages)."""
    winners, losers = [], []
    barrier = threading.Barrier(racers)

    def race(number: int) -> None:
        barrier.wait()
        try:
            winners.append(locks.acquire(store, store.root, batch, f"racer-{number}")["owner"])
        except locks.BatchLocked as error:
            losers.append(str(error))

    threads = [threading.Thread(target=race, args=(n,)) for n in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return winners, losers


@mock_aws
def test_a_second_night_reads_its_own_photos_and_the_index_shards_it_needs_only(tmp_path):
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in ("lake", "landing"):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    night_1, night_2 = "2026-04-01", "2026-04-02"
    for i in range(6):
        s3.put_object(Bucket="landing", Key=f"in/{night_1}/Kiwi/p{i}.jpg", Body=jpeg(i))
    for i in range(4):
        s3.put_object(Bucket="landing", Key=f"in/{night_2}/Kiwi/q{i}.jpg", Body=jpeg(50 + i))
    s3.put_object(Bucket="landing", Key=f"in/{night_2}/Kiwi/again.jpg", Body=jpeg(0))  # in night 1 already
    lake_store, landing_store = storage.S3Store(s3, "lake"), storage.S3Store(s3, "landing")
    upload.upload_new_images(lake_store, landing_store, lake.landing_uri("s3://landing/in", night_1), night_1)

    calls: list[tuple[str, str, str]] = []
    s3.meta.events.register(
        "before-parameter-build.s3.*",
        lambda model, params, **_: calls.append(
            (model.name, params.get("Bucket", ""), params.get("Key") or params.get("Prefix", ""))
        ),
    )
    result = upload.upload_new_images(lake_store, landing_store, lake.landing_uri("s3://landing/in", night_2), night_2)
    assert (result["uploaded"], result["in_other_batch"]) == (4, 1)
    gets = [(bucket, key) for name, bucket, key in calls if name == "GetObject"]
    lists = [(bucket, key) for name, bucket, key in calls if name == "ListObjectsV2"]
    assert all(key.startswith(f"raw/batch={night_2}/") for name, _, key in calls if name == "ListObjectVersions")
    assert not [key for _, key in gets + lists if night_1 in key]  # nothing of night 1: photos, manifest, report
    shards = {
        dedup_index.shard_uri("s3://lake", dedup_index.shard_of(storage.sha256_bytes(d))).removeprefix("s3://lake/")
        for d in [jpeg(50 + i) for i in range(4)] + [jpeg(0)]
    }
    landing_gets = [key for bucket, key in gets if bucket == "landing"]
    lake_gets = sorted(key for bucket, key in gets if bucket == "lake")
    assert sorted(landing_gets) == sorted(
        f"in/{night_2}/Kiwi/{n}" for n in ("q0.jpg", "q1.jpg", "q2.jpg", "q3.jpg", "again.jpg")
    )
    # The night's manifest, its report and its counts (written only when they change), the erased list; each
    # needed shard read to look up and read to update.
    # (and this night's own bundle, read back once to drop the photo the index knew: the price of one lookup per shard)
    own_bundles = [key for key in lake_gets if key.startswith(f"raw/batch={night_2}/bundle-")]
    assert len(own_bundles) == 1
    others = [key for key in lake_gets if not key.startswith("index/sha256/") and key not in own_bundles]
    assert others == sorted(
        [
            f"raw/batch={night_2}/_ingestion.json",
            f"raw/batch={night_2}/_ingestion_counts.json",
            f"raw/batch={night_2}/_uploads.json",
            "index/erased.json",
        ]
    )
    index_gets = [key for key in lake_gets if key.startswith("index/sha256/")]
    assert set(index_gets) <= shards and len(index_gets) <= 2 * len(shards)
    assert sorted(lists) == sorted([("landing", f"in/{night_2}/"), ("lake", f"raw/batch={night_2}/")])


def test_the_landing_is_read_by_a_bounded_pool_in_order(tmp_path):
    """At most `workers` GETs in flight and never more than `inflight_bytes` (sizes from the listing) held."""
    import time

    class Slow:
        def __init__(self):
            self.lock, self.now, self.most = threading.Lock(), 0, 0

        def read(self, uri: str) -> bytes:
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            time.sleep(0.01)
            with self.lock:
                self.now -= 1
            return uri.encode()

    files = [upload.LandingFile(f"s3://l/{i}", size=100) for i in range(60)]
    store = Slow()
    got = [file.uri for file, data in upload.read_in_pool(store, files, workers=4, inflight_bytes=10_000)]
    assert got == [f.uri for f in files] and store.most == 4  # in order; 4 at once (concurrent), no more
    store = Slow()
    list(upload.read_in_pool(store, files, workers=16, inflight_bytes=250))  # the byte budget binds first
    assert store.most == 2
