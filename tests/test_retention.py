"""fruits.retention: the sweep by batch date over several nights, a skipped night, a crash mid-sweep, a held
lock, every version on a versioned bucket (moto), the dedup index entries, and the retention arithmetic (no
derived row outlives its photo by more than the nights the sweep did not run)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import boto3
import lakefiles
import pytest
from conftest import commit_output
from moto import mock_aws

from fruits import dedup_index, lake, locks, retention, storage
from fruits import pipeline_tasks as tasks
from fruits.settings import PipelineSettings

START = dt.date(2026, 3, 1)


def day(n: int) -> str:
    """Night n (1-based) as a batch date."""
    return (START + dt.timedelta(days=n - 1)).isoformat()


def sha(batch: str, i: int) -> str:
    return hashlib.sha256(f"{batch}/{i}".encode()).hexdigest()


def land_night(store, root: str, batch: str, basis: int, photos: int = 3) -> None:
    """What a night leaves in the lake: bundle + manifest + ingestion report + index entries, features,
    quarantine, statistics, rows on `basis`, the run report, a released lock."""
    keys = {f"Training/Banana/{i}.jpg": sha(batch, i) for i in range(photos)}
    store.put(lake.raw_uri(root, batch) + "bundle-a.parquet", b"photos", "-")
    storage.write_batch_manifest(store, root, batch, storage.BatchManifest(keys, {"bundle-a.parquet": list(keys)}))
    # The ingestion records both hashes of each photo: the bytes as received and the stored (stripped) bytes.
    stripped = {key: sha(f"stripped/{batch}", i) for i, key in enumerate(keys)}
    outcomes = {
        f"file:///landing/{batch}/{key}": {"outcome": "uploaded", "sha256": keys[key], "content_sha256": stripped[key]}
        for key in keys
    }
    store.put(storage.ingestion_report_uri(root, batch), json.dumps({"files": outcomes}).encode(), "-")
    store.put(lake.derived_uri(root, batch) + "part-0.parquet", b"derivatives", "-")
    dedup_index.record(store, root, batch, [*keys.values(), *stripped.values()], workers=1)
    commit_output(store, lake.features_uri(root, batch), {"part-0.parquet": b"f"})
    commit_output(store, lake.quarantine_uri(root, batch), {"part-0.parquet": b"q"})
    commit_output(store, lake.pca_stats_uri(root, batch), {"stats.npz": b"s"})
    reexpress(store, root, batch, basis)
    store.put(lake.reports_uri(root, batch) + "run_report.json", b"{}", "-")
    locks.acquire(store, root, batch, "run")
    locks.release(store, root, batch, "run")


def reexpress(store, root: str, batch: str, basis: int) -> None:
    commit_output(
        store, lake.pca_reduced_uri(root, basis, batch), {"reduced/part-0.parquet": b"r", "report.json": b"{}"}
    )


def new_basis(store, root: str, version: int) -> None:
    commit_output(store, lake.pca_basis_uri(root, version), {"basis.json": b"{}"})
    store.put(lake.pca_current_basis_uri(root), json.dumps({"version": version}).encode(), "-")


def batches_in_lake(store, root: str) -> dict[str, set[str]]:
    """{date: areas holding something of it}, from a full listing (the test's view, not the sweep's)."""
    found: dict[str, set[str]] = {}
    for uri in store.list_files(root.rstrip("/") + "/"):
        relative = uri[len(root.rstrip("/")) + 1 :]
        for part in relative.split("/"):
            name = part.removesuffix(".json")
            if name.startswith("batch="):
                found.setdefault(name.removeprefix("batch="), set()).add(relative.split("/")[0])
    return found


@pytest.fixture
def local(tmp_path):
    (tmp_path / "lake").mkdir()
    store = storage.LocalStore(tmp_path / "lake")
    return store, store.root


def test_the_retention_arithmetic():
    assert retention.oldest_retained("2026-03-10", 1) == "2026-03-10"  # tonight only
    assert retention.oldest_retained("2026-03-10", 7) == "2026-03-04"
    assert retention.oldest_retained("2026-03-01", 365) == "2025-03-02"
    for bad in (0, -1, 1.5, None):
        with pytest.raises(ValueError, match="retention_days must be a positive integer"):
            retention.oldest_retained("2026-03-10", bad)
    with pytest.raises(ValueError, match="real calendar date"):
        retention.oldest_retained("2026-02-30", 7)


def test_nightly_sweeps_keep_exactly_the_window_through_a_new_basis(local):
    """12 nights, 4-day retention; a new basis on night 7 re-expresses the retained batches (objects written
    that night, which an age-based lifecycle would keep 4 more days). After each night's sweep the lake holds
    exactly the window's dates, in every area, and every derived row's photo is still there."""
    store, root = local
    days = 4
    new_basis(store, root, 1)
    for night in range(1, 13):
        tonight = day(night)
        basis = 2 if night >= 7 else 1
        if night == 7:
            new_basis(store, root, 2)
            for earlier in range(max(1, night - days + 1), night):
                reexpress(store, root, day(earlier), 2)
        land_night(store, root, tonight, basis)
        report = retention.sweep_expired(store, root, tonight, days)
        window = {day(n) for n in range(max(1, night - days + 1), night + 1)}
        present = batches_in_lake(store, root)
        assert set(present) == window, night
        for batch, areas in present.items():  # nothing derived without its photo
            assert "raw" in areas, (batch, areas)
        expired_tonight = [day(night - days)] if night > days else []
        assert [s["batch"] for s in report["swept"]] == expired_tonight
        assert report["watermark_after"] == retention.read_watermark(store, root)
        if night > days:
            assert report["swept"][0]["index_entries_dropped"] == 6  # 3 photos, both hashes of each
            assert report["swept"][0]["prefixes"][lake.raw_uri(root, day(night - days))] == 3
    # The old basis went with its last batch (night 10 swept night 6, the last one on basis 1).
    assert not store.list_children(lake.pca_basis_uri(root, 1))
    assert store.list_children(lake.pca_bases_uri(root)) == ["v=0002"]
    # The index knows only the window's photos: one expired and landed again is a new photo.
    assert dedup_index.lookup(store, root, [sha(day(8), 0)], workers=1) == {}
    assert dedup_index.lookup(store, root, [sha(day(9), 0)], workers=1) == {sha(day(9), 0): day(9)}


def test_a_skipped_night_is_caught_up_and_only_new_dates_are_touched(local, monkeypatch):
    store, root = local
    new_basis(store, root, 1)
    for night in range(1, 11):
        land_night(store, root, day(night), 1)
    assert retention.sweep_expired(store, root, day(6), 3)["expired"] == [day(1), day(2), day(3)]  # first: listed
    touched = []
    real = retention.delete_prefix
    monkeypatch.setattr(retention, "delete_prefix", lambda s, uri, **kw: touched.append(uri) or real(s, uri, **kw))
    monkeypatch.setattr(retention, "_first_sweep_batches", lambda *a: pytest.fail("listed with a watermark"))
    # nights 7 and 8 never swept: night 9 sweeps the three dates expired since (4, 5, 6), nothing else
    report = retention.sweep_expired(store, root, day(9), 3)
    assert report["expired"] == [day(4), day(5), day(6)] and report["watermark_after"] == day(6)
    assert {uri.split("batch=")[1][:10] for uri in touched} == {day(4), day(5), day(6)}
    assert set(batches_in_lake(store, root)) == {day(n) for n in range(7, 11)}
    assert retention.sweep_expired(store, root, day(9), 3)["expired"] == []  # same night again: nothing to do


def test_a_crash_mid_sweep_is_finished_by_the_next_run(local, monkeypatch):
    store, root = local
    new_basis(store, root, 1)
    for night in range(1, 8):
        land_night(store, root, day(night), 1)
    retention.sweep_expired(store, root, day(3), 2)  # watermark: night 1
    calls = {"n": 0}
    real = retention.delete_prefix

    def crashing(s, uri, **kw):
        calls["n"] += 1
        if calls["n"] == 12:  # inside night 3's batch: nights 2's prefixes went, night 3 half way
            raise ConnectionError("the worker died")
        return real(s, uri, **kw)

    monkeypatch.setattr(retention, "delete_prefix", crashing)
    with pytest.raises(ConnectionError):
        retention.sweep_expired(store, root, day(6), 2)
    assert retention.read_watermark(store, root) == day(2)  # night 2 wholly gone, night 3 not
    assert day(2) not in batches_in_lake(store, root) and day(3) in batches_in_lake(store, root)
    # A lock the crashed sweep held is its own: the rerun takes it again.
    monkeypatch.setattr(retention, "delete_prefix", real)
    report = retention.sweep_expired(store, root, day(6), 2)
    assert report["expired"] == [day(3), day(4)] and report["watermark_after"] == day(4)
    assert set(batches_in_lake(store, root)) == {day(5), day(6), day(7)}
    assert dedup_index.lookup(store, root, [sha(day(3), 1)], workers=1) == {}


def test_a_held_lock_leaves_the_batch_and_the_watermark_for_the_next_night(local):
    store, root = local
    new_basis(store, root, 1)
    for night in range(1, 6):
        land_night(store, root, day(night), 1)
    retention.sweep_expired(store, root, day(2), 1)  # watermark night 1
    locks.acquire(store, root, day(2), "erase-123@host")
    report = retention.sweep_expired(store, root, day(4), 1)
    assert report["locked"] == [day(2)] and report["watermark_after"] == day(1)
    assert day(2) in batches_in_lake(store, root) and day(3) not in batches_in_lake(store, root)
    locks.release(store, root, day(2), "erase-123@host")
    report = retention.sweep_expired(store, root, day(5), 1)
    assert report["expired"] == [day(2), day(3), day(4)] and report["watermark_after"] == day(4)
    assert set(batches_in_lake(store, root)) == {day(5)}


def test_a_dry_run_says_what_would_go_and_changes_nothing(local):
    store, root = local
    new_basis(store, root, 1)
    for night in range(1, 4):
        land_night(store, root, day(night), 1)
    before = sorted(store.list_files(root + "/"))
    report = retention.sweep_expired(store, root, day(3), 1, dry_run=True)
    assert [s["batch"] for s in report["swept"]] == [day(1), day(2)] and report["objects_deleted"] > 10
    assert sorted(store.list_files(root + "/")) == before and retention.read_watermark(store, root) is None


def test_no_derived_row_outlives_its_photo_by_more_than_the_nights_the_sweep_missed(local):
    """The arithmetic of issue 11 item 5 with the sweep: a batch's rows (raw or derived, whenever written)
    are gone on the first swept night after its retention ends; nights without a sweep are the only grace."""
    store, root = local
    days, swept_nights = 3, {1, 2, 3, 4, 5, 8, 9, 10, 14}
    new_basis(store, root, 1)
    outlived = {}
    for night in range(1, 15):
        land_night(store, root, day(night), 1)
        if night in swept_nights:
            retention.sweep_expired(store, root, day(night), days)
        for batch in batches_in_lake(store, root):
            age = (dt.date.fromisoformat(day(night)) - dt.date.fromisoformat(batch)).days
            overdue = age - (days - 1)  # nights past the last one it is retained on
            outlived[batch] = max(outlived.get(batch, 0), overdue)
    missed_in_a_row = 3  # nights 11, 12, 13
    assert max(outlived.values()) == missed_in_a_row
    assert all(v <= 0 for b, v in outlived.items() if b <= day(2))  # swept on time every night


BUCKET = "fruits-lake-retention-test"


def test_s3_every_version_of_an_expired_batch_goes_and_the_window_keeps_its_versions():
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        store, root = storage.S3Store(s3, BUCKET), f"s3://{BUCKET}"
        new_basis(store, root, 1)
        for night in range(1, 4):
            land_night(store, root, day(night), 1)
            # a rerun rewrites the features and its first run's folder is swept: noncurrent versions, markers
            commit_output(store, lake.features_uri(root, day(night)), {"part-0.parquet": b"f2"})
        stale = lake.features_uri(root, day(1)) + "run=old/part-0.parquet"
        store.put(stale, b"old", "-")
        s3.delete_object(Bucket=BUCKET, Key=stale.removeprefix(root + "/"))  # leaves a delete marker

        def versions(prefix: str) -> int:
            answer = s3.list_object_versions(Bucket=BUCKET, Prefix=prefix.removeprefix(root + "/"))
            return len(answer.get("Versions", [])) + len(answer.get("DeleteMarkers", []))

        kept = {d: versions(lake.features_uri(root, d)) for d in (day(2), day(3))}
        assert versions(lake.features_uri(root, day(1))) > 4
        report = retention.sweep_expired(store, root, day(3), 2)
        assert [s["batch"] for s in report["swept"]] == [day(1)]
        for prefix in retention.batch_prefixes(root, day(1), ["basis=0001"]) + [lake.lock_uri(root, day(1))]:
            assert versions(prefix) == 0, prefix
        assert {d: versions(lake.features_uri(root, d)) for d in (day(2), day(3))} == kept
        assert retention.read_watermark(store, root) == day(1)
        assert dedup_index.lookup(store, root, [sha(day(1), 0), sha(day(2), 0)], workers=1) == {sha(day(2), 0): day(2)}
        # ... both of an expired photo's hashes: the index does not grow with the history.
        assert dedup_index.lookup(store, root, [sha(f"stripped/{day(1)}", 0)], workers=1) == {}


def test_index_entries_of_a_later_home_survive_an_earlier_batch_s_expiry(local):
    """The same content in two batches: the index records both copies; a batch's expiry drops its own only."""
    store, root = local
    dedup_index.record(store, root, day(1), [sha("x", 0)], workers=1)
    dedup_index.record(store, root, day(2), [sha("x", 0), sha("x", 1)], workers=1)
    assert dedup_index.forget(store, root, day(2), [sha("x", 0), sha("x", 1)], workers=1) == 2
    assert dedup_index.lookup(store, root, [sha("x", 0), sha("x", 1)], workers=1) == {sha("x", 0): day(1)}


# --------------------------------------------------------------------------- bounded by the clock (issue 23)


def noon_utc(batch: str) -> dt.datetime:
    return dt.datetime.fromisoformat(batch).replace(hour=12, tzinfo=dt.UTC)


def ten_retained_nights(store, root: str) -> None:
    """Nights 1-10 landed and swept with 10 days of retention: all ten retained, watermark before night 1."""
    new_basis(store, root, 1)
    for night in range(1, 11):
        land_night(store, root, day(night), 1)
    assert retention.sweep_expired(store, root, day(10), 10)["swept"] == []


def test_a_batch_in_the_future_sweeps_nothing_and_keeps_the_watermark(local):
    store, root = local
    ten_retained_nights(store, root)
    before, watermark = batches_in_lake(store, root), retention.read_watermark(store, root)
    with pytest.raises(ValueError, match="2062-03-11 is in the future"):
        retention.sweep_expired(store, root, "2062-03-11", 10)
    assert batches_in_lake(store, root) == before and len(before) == 10
    assert retention.read_watermark(store, root) == watermark


def test_the_night_is_bounded_by_the_clock_and_the_newest_ingested_batch(local):
    store, root = local
    ten_retained_nights(store, root)
    before = batches_in_lake(store, root)
    # Tomorrow is a valid batch, but the sweep expires from today (night 10), not from tomorrow.
    report = retention.sweep_expired(store, root, day(11), 10, now=noon_utc(day(10)))
    assert report["night"] == day(10) and report["expired"] == [] and batches_in_lake(store, root) == before
    # A run named for a later night with no photo ingested since night 10 expires from night 10 too.
    report = retention.sweep_expired(store, root, day(20), 10, now=noon_utc(day(20)))
    assert report["night"] == day(10) and report["expired"] == [] and batches_in_lake(store, root) == before


def test_more_batches_than_the_setting_allows_are_refused_until_it_is_raised(local):
    store, root = local
    ten_retained_nights(store, root)
    land_night(store, root, day(14), 1)  # three nights without a run: night 14 expires nights 1-4
    before, watermark = batches_in_lake(store, root), retention.read_watermark(store, root)
    with pytest.raises(retention.TooManyExpired, match="fruits_retention_max_batches to 4") as refused:
        retention.sweep_expired(store, root, day(14), 10, max_batches=3)
    assert "would delete 4 batches (2026-03-01 .. 2026-03-04)" in str(refused.value)
    assert batches_in_lake(store, root) == before and retention.read_watermark(store, root) == watermark
    report = retention.sweep_expired(store, root, day(14), 10, max_batches=4)
    assert [s["batch"] for s in report["swept"]] == [day(1), day(2), day(3), day(4)]
    assert report["watermark_after"] == day(4)


def test_the_max_batches_setting_reaches_the_sweep():
    from fruits import settings

    assert settings.load_settings({}.get).retention_max_batches == retention.DEFAULT_MAX_BATCHES
    assert settings.load_settings({retention.MAX_BATCHES_SETTING: "30"}.get).retention_max_batches == 30
    with pytest.raises(ValueError, match="fruits_retention_max_batches must be at least 1"):
        settings.load_settings({retention.MAX_BATCHES_SETTING: "0"}.get)


def test_stray_basis_folders_are_ignored_and_never_taken_for_a_basis(local, caplog):
    store, root = local
    new_basis(store, root, 1)
    land_night(store, root, day(1), 1)
    land_night(store, root, day(2), 1)
    new_basis(store, root, 2)
    reexpress(store, root, day(2), 2)
    reduced = lake.pca_reduced_root(root)
    store.put(f"{reduced}basis=tmp/scratch.txt", b"x", "-")  # an operator's scratch folder
    store.put(f"{reduced}basis=01/notes.txt", b"x", "-")  # not the jobs' spelling of basis 1
    report = retention.sweep_expired(store, root, day(2), 2)
    assert report["bases_deleted"] == []  # basis 1 still holds night 1 and 2's rows
    assert lake.read_commit(store, lake.pca_basis_uri(root, 1)) is not None
    assert store.exists(f"{reduced}basis=tmp/scratch.txt") and store.exists(f"{reduced}basis=01/notes.txt")
    assert "basis=tmp/: not a basis folder" in caplog.text and "basis=01/: not a basis folder" in caplog.text
    names = ("basis=0001", "basis=12345", "basis=12", "basis=0000", "basis=1e03", "basis=00012", "basis=٠٠٠١")
    assert [lake.basis_version_of(n) for n in names] == [1, 12345, None, None, None, None, None]


def test_the_spark_ingest_job_s_bundles_are_originals_too(local):
    """The ingest job writes a batch's bundles as run=<id>/ parts its manifest names: the originals' sweep takes
    them (not only the upload's bundle-*.parquet), and keeps the manifest."""
    store, root = local
    batch = day(1)
    raw = lake.raw_uri(root, batch)
    store.put(raw + "run=abc/part-00000.parquet", b"photos", "-")
    manifest = storage.BatchManifest({"Banana/1.jpg": sha(batch, 1)}, {"run=abc/part-00000.parquet": ["Banana/1.jpg"]})
    store.put(storage.batch_manifest_uri(root, batch), manifest.to_json(batch), "-")
    commit_output(store, lake.features_uri(root, batch), {"part-0.parquet": b"f"})
    assert retention.original_bundles(store, root, batch) == [raw + "run=abc/part-00000.parquet"]
    store.put(storage.batch_manifest_uri(root, day(4)), storage.BatchManifest({}, {}).to_json(day(4)), "-")
    report = retention.sweep_originals(store, root, day(4), 1)  # night 4 was ingested: night 1's originals go
    assert report["swept"] == {batch: 1} and not store.exists(raw + "run=abc/part-00000.parquet")
    assert storage.read_manifest(store, root, batch) == {"Banana/1.jpg": sha(batch, 1)}


def test_originals_go_after_their_short_window_and_everything_else_stays_the_retention(local):
    """10 nights, originals kept 3 days, the rest 30: on night 10 the bundles of nights 1-7 are gone (every
    other object of theirs stays: manifest, ingestion report, derivatives, features), a rerun deletes nothing,
    a locked batch waits for the next night and holds the watermark back."""
    store, root = local
    new_basis(store, root, 1)
    for night in range(1, 11):
        land_night(store, root, day(night), 1)
    locks.acquire(store, root, day(5), "an erasure")
    store.delete(lake.commit_marker_uri(lake.features_uri(root, day(2))))  # night 2 failed: not featurized
    report = retention.sweep_originals(store, root, day(10), 3)
    assert report["oldest_original_retained"] == day(8)
    assert report["expired"] == [day(n) for n in range(1, 8)]  # first sweep: the batches raw/ lists
    assert report["locked"] == [day(5)] and report["waiting"] == [day(2)]  # its catch-up needs them
    assert set(report["swept"]) == {day(n) for n in (1, 3, 4, 6, 7)}
    assert retention.read_watermark(store, root, retention.ORIGINALS_WATERMARK_NAME) == day(1)
    for night in range(1, 11):
        batch = day(night)
        assert bool(retention.original_bundles(store, root, batch)) == (night in (2, 5, 8, 9, 10)), night
        assert storage.read_manifest(store, root, batch)  # the manifest stays: it names the index entries
        assert store.exists(storage.ingestion_report_uri(root, batch))
        assert store.exists(lake.derived_uri(root, batch) + "part-0.parquet")
    locks.release(store, root, day(5), "an erasure")
    commit_output(store, lake.features_uri(root, day(2)), {"part-0.parquet": b"f"})  # caught up
    again = retention.sweep_originals(store, root, day(10), 3)
    assert again["expired"] == [day(n) for n in range(2, 8)] and set(again["swept"]) == {day(2), day(5)}
    assert retention.read_watermark(store, root, retention.ORIGINALS_WATERMARK_NAME) == day(7)
    assert retention.sweep_originals(store, root, day(10), 3)["objects_deleted"] == 0
    # The long window then takes the rest of the batch, derivatives included.
    retention.sweep_expired(store, root, day(10), 5)
    assert not list(store.list_files(lake.derived_uri(root, day(5)))) and not storage.read_manifest(store, root, day(5))


def test_with_no_window_the_run_removes_the_originals_its_features_cover_and_keeps_its_own_lock(local):
    """fruits_original_retention_days 0 (the default): after the jobs, the originals of the batches the run
    featurized go once their committed features cover every bundle the manifest names (those featurize records
    beside its rows; an erasure may have dropped some since); a batch not featurized, one whose manifest grew
    since, or one another holder locks keeps them. The run's own lock is neither shortened nor released. The
    next nights' sweep takes what is left before tonight."""
    store, root = local
    for night in (1, 2, 3, 4):
        land_night(store, root, day(night), 1)

    def featurized(night: int, *bundles: str) -> None:
        sidecar, facts = lakefiles.covering(bundles)
        commit_output(store, lake.features_uri(root, day(night)), {"part-0.parquet": b"f", **sidecar}, facts)

    featurized(2, "bundle-a.parquet", "bundle-erased.parquet")  # an erasure since emptied and dropped one
    featurized(3, "bundle-a.parquet")
    featurized(4, "bundle-0.parquet")  # before a rerun stored its photos in bundle-a
    store.delete(lake.commit_marker_uri(lake.features_uri(root, day(1))))  # its featurize failed
    held = locks.acquire(store, root, day(2), "run-2", ttl_seconds=9 * 3600)
    locks.acquire(store, root, day(3), "an erasure")
    report = retention.remove_featurized_originals(store, root, [day(n) for n in (1, 2, 3, 4)], owner="run-2")
    assert report["removed"] == {day(2): 1} and report["objects_deleted"] == 1
    assert report["waiting"] == [day(1), day(4)] and report["locked"] == [day(3)]
    assert [bool(retention.original_bundles(store, root, day(n))) for n in (1, 2, 3, 4)] == [True, False, True, True]
    assert storage.manifest_photo_count(store, root, day(2)) == 3  # the manifest names the index entries
    assert locks.holder(store, root, day(2)) == held  # still the run's, with the run's expiry
    assert locks.holder(store, root, day(3))["owner"] == "an erasure"

    settings = PipelineSettings(original_retention_days=2)  # a window: the sweep removes them later
    assert tasks.remove_originals(settings, None, {"featurize": [day(3)]}, dry_run=False, owner="x")["removed"] == {}
    assert tasks.remove_originals(PipelineSettings(), None, None, dry_run=False, owner="x")["objects_deleted"] == 0

    locks.release(store, root, day(3), "an erasure")
    featurized(1, "bundle-a.parquet")  # caught up
    swept = retention.sweep_originals(store, root, day(4), 0)  # with no window, it sweeps the nights before
    assert swept["oldest_original_retained"] == day(4) and swept["swept"] == {day(1): 1, day(3): 1}
    assert retention.original_bundles(store, root, day(4))


class NoWholeNightReports(storage.LocalStore):
    """A LocalStore that, once `strict`, refuses to read a night's manifest or ingestion report whole: at a
    million photos they are hundreds of MB of JSON, which the sweep streams."""

    strict = False

    def read_or_none(self, uri: str) -> bytes | None:
        assert not (self.strict and uri.endswith(("_uploads.json", "_ingestion.json"))), f"{uri} read whole"
        return super().read_or_none(uri)


def test_the_sweep_forgets_both_hashes_of_an_expired_night_streaming_its_manifest_and_report(tmp_path):
    (tmp_path / "lake").mkdir()
    store = NoWholeNightReports(tmp_path / "lake")
    root = store.root
    new_basis(store, root, 1)
    for night in (1, 2):
        land_night(store, root, day(night), 1, photos=4)
    expired = [sha(day(1), i) for i in range(4)] + [sha(f"stripped/{day(1)}", i) for i in range(4)]
    kept = [sha(day(2), i) for i in range(4)] + [sha(f"stripped/{day(2)}", i) for i in range(4)]
    store.strict = True
    swept = retention.sweep_expired(store, root, day(2), 1)["swept"]
    assert [(s["batch"], s["index_entries_dropped"]) for s in swept] == [(day(1), 8)]
    assert dedup_index.lookup(store, root, expired + kept, workers=1) == dict.fromkeys(kept, day(2))
