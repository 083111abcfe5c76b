"""Ingestion on the cluster (spark_jobs/ingest.py) and the de-duplication rules it shares with fruits.upload:
the listing written by the Airflow side, the job on a local SparkSession, its command line on both targets,
and the retention (issue 23 item 8) and re-sent-with-new-EXIF (item 9) rules."""

from __future__ import annotations

import dataclasses
import io
import json
import struct
from pathlib import Path

import ingest
import lakeindex
import numpy as np
import photos
import pyarrow.parquet as pq
import pytest
from botocore.validate import validate_parameters
from PIL import Image
from test_ingestion_landing import GPS, image_bytes, phone_exif

import featurize
import jobio
from fruits import dedup_index, erase, lake, report_page, steps, storage, upload

BATCH = "2026-03-10"
XMP_GPS = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="48,51.4N"/></rdf:RDF></x:xmpmeta>'
)


# What each file of the phone night ends as (test_a_night_of_phone_photos_...): a HEIC with no image item is
# refused at ingest; the truncated JPEG and the bomb are stored stripped, and featurize quarantines them at decode.
OUTCOMES_OF_PHONE_NIGHT = {
    "rotated.jpg": ("uploaded", None),
    "twin.jpg": ("already_in_lake", None),
    "phone.heic": ("uploaded", None),
    "big.jpg": ("uploaded", None),
    "cut.jpg": ("uploaded", None),
    "bomb.png": ("uploaded", None),
    "xmp.jpg": ("uploaded", None),
    "empty.heic": ("rejected", "unsupported"),
}


def jpeg(colour, **kwargs) -> bytes:
    return image_bytes("JPEG", colour, **kwargs)


def days_before(batch: str, days: int) -> str:
    return lakeindex.batch_of(lakeindex.day_of(batch) - days)


def assert_no_location(content: bytes) -> None:
    """Read back: no GPS IFD, no XMP position, in the stored bytes."""
    with Image.open(io.BytesIO(content)) as image:
        assert not image.getexif().get_ifd(GPS)
    assert b"GPSLatitude" not in content and b"51.4N" not in content


class Recording(storage.LocalStore):
    """The lake, counting the calls the job makes (not those the store's methods make of each other)."""

    def __init__(self, root):
        super().__init__(root)
        self.calls: list[tuple[str, str]] = []
        self.depth = 0

    def _call(self, kind, uri, method, *args):
        if not self.depth:
            self.calls.append((kind, uri))
        self.depth += 1
        try:
            return method(uri, *args)
        finally:
            self.depth -= 1

    def read_with_etag(self, uri):
        return self._call("read", uri, super().read_with_etag)

    def read_or_none(self, uri):
        return self._call("read", uri, super().read_or_none)

    def put(self, uri, data, sha256):
        return self._call("put", uri, super().put, data, sha256)

    def put_if_absent(self, uri, data):
        return self._call("conditional", uri, super().put_if_absent, data)

    def put_if_match(self, uri, data, etag):
        return self._call("conditional", uri, super().put_if_match, data, etag)


def test_the_ingest_job_runs_the_same_arguments_on_emr_and_through_local_spark_submit():
    root, code = "s3://lake", "s3://lake/code/abc/"
    job = steps.ingest_job(
        root, BATCH, code, listing="s3://lake/l.parquet", landing="s3://landing/in/", retention_days=30
    )
    step, local = steps.emr_step(job, batch=BATCH), steps.local_command(job, spark_submit="/venv/bin/spark-submit")
    args = list(job.args)
    assert job.name == steps.INGEST and job.script == code + "spark_jobs/ingest.py"
    assert job.py_files == tuple(
        code + "spark_jobs/" + m for m in ("jobio.py", "lakefiles.py", "lakeindex.py", "photos.py", "featurize.py")
    )  # featurize's functions decode the big photos in the pass
    assert args[args.index("--raw") + 1] == lake.raw_uri(root, BATCH)
    assert args[args.index("--index") + 1] == lake.area_uri(root, "index")
    assert (
        args[args.index("--listing") + 1] == "s3://lake/l.parquet" and args[args.index("--retention-days") + 1] == "30"
    )
    assert local[:3] == ["/venv/bin/spark-submit", "--master", "local[2]"]
    emr_args = step["HadoopJarStep"]["Args"]
    assert emr_args[emr_args.index("--py-files") :] == local[local.index("--py-files") :] == job.submit_args()
    assert ingest.parse_args(list(job.args)).batch_id == BATCH
    import botocore.session

    shape = botocore.session.get_session().get_service_model("emr").operation_model("AddJobFlowSteps").input_shape
    validate_parameters({"JobFlowId": "j-1", "Steps": [step]}, shape)
    # The job's names for the batch's files are fruits.storage's.
    assert (ingest.UPLOADS_MANIFEST, ingest.INGESTION_REPORT) == (storage.UPLOADS_MANIFEST, storage.INGESTION_REPORT)
    assert (ingest.ERASED, ingest.BUNDLE_MAX_PHOTOS) == (dedup_index.ERASED_NAME, storage.BUNDLE_MAX_PHOTOS)
    assert ingest.BUNDLE_MAX_BYTES == storage.BUNDLE_MAX_BYTES


def test_a_copy_that_expires_soon_or_tonight_does_not_count_as_stored():
    assert lakeindex.counts_as_stored(BATCH, BATCH, 365) and lakeindex.counts_as_stored("2026-03-11", BATCH, 10)
    assert lakeindex.counts_as_stored(days_before(BATCH, 1), BATCH, 365)  # yesterday's: kept ~a year more
    assert not lakeindex.counts_as_stored(days_before(BATCH, 365), BATCH, 365)  # swept tonight
    assert not lakeindex.counts_as_stored(days_before(BATCH, 340), BATCH, 365)  # gone within a month
    assert lakeindex.counts_as_stored(days_before(BATCH, 340), BATCH, None)


def test_the_worker_path_stores_again_a_photo_whose_first_copy_expires_tonight(tmp_path):
    """Issue 23 item 8: the night its first copy expires, a re-sent photo is stored in the new batch (not
    `already_in_lake`, then swept); a recent copy still counts; the index then knows both copies."""
    landing = tmp_path / "landing" / "Kiwi"
    landing.mkdir(parents=True)
    (landing / "old.jpg").write_bytes(jpeg((10, 20, 30)))
    (landing / "recent.jpg").write_bytes(jpeg((40, 50, 60)))
    lake_store = storage.LocalStore(tmp_path / "lake")
    first, second = days_before(BATCH, 365), days_before(BATCH, 2)

    def run(batch, files):
        folder = tmp_path / batch / "Kiwi"
        folder.mkdir(parents=True)
        for name in files:
            (folder / name).write_bytes((landing / name).read_bytes())
        return upload.upload_new_images(
            lake_store, storage.LocalStore(folder.parent), storage.file_uri(folder.parent), batch, retention_days=365
        )

    run(first, ["old.jpg"])
    run(second, ["recent.jpg"])
    tonight = run(BATCH, ["old.jpg", "recent.jpg"])
    assert (tonight["uploaded"], tonight["in_other_batch"]) == (1, 1)
    report = json.loads(lake_store.read(storage.ingestion_report_uri(lake_store.root, BATCH)))["files"]
    by_name = {uri.rsplit("/", 1)[1]: o for uri, o in report.items()}
    assert by_name["old.jpg"]["outcome"] == "uploaded" and by_name["recent.jpg"]["batch"] == second
    old_sha = by_name["old.jpg"]["sha256"]
    assert dedup_index.batches_holding(lake_store, lake_store.root, [old_sha]) == {old_sha: [first, BATCH]}
    assert dedup_index.forget(lake_store, lake_store.root, first, [old_sha]) == 1  # the sweep of `first`
    assert dedup_index.lookup(lake_store, lake_store.root, [old_sha]) == {old_sha: BATCH}


def test_an_erased_photo_re_sent_with_a_new_exif_block_stays_out(tmp_path):
    """Issue 23 item 9: the erasure records the hash of the stored (stripped) bytes too."""
    landing = tmp_path / "landing" / "Kiwi"
    landing.mkdir(parents=True)
    first_exif, second_exif = phone_exif(1), phone_exif(1)
    second_exif[0x013B] = "Someone Else"
    original = jpeg((90, 20, 30), exif=first_exif)
    (landing / "me.jpg").write_bytes(original)
    lake_root = tmp_path / "lake"
    lake_store = storage.LocalStore(lake_root)
    landing_uri = storage.file_uri(landing.parent)
    upload.upload_new_images(lake_store, storage.LocalStore(landing.parent), landing_uri, BATCH)
    erase.erase(lake_store.root, f"raw/batch={BATCH}/Kiwi/me.jpg", owner="test")
    resent = jpeg((90, 20, 30), exif=second_exif)
    assert not (landing / "me.jpg").exists()  # the erasure took the landing file too
    assert photos.sha256_hex(resent) != photos.sha256_hex(original)
    (landing / "me.jpg").write_bytes(resent)
    again = upload.upload_new_images(
        lake_store, storage.LocalStore(landing.parent), landing_uri, days_before(BATCH, -1)
    )
    assert again["rejected"] == {"erased": 1} and again["uploaded"] == 0


def test_the_ingest_job_gives_every_landing_file_one_outcome_on_a_local_spark(tmp_path, spark):
    landing = tmp_path / "landing" / BATCH
    label = landing / "Training" / "Kiwi"
    label.mkdir(parents=True)
    odd = ["a#1.jpg", "b?.jpg", "c%41.jpg", "d e.jpg", "é.jpg"]
    for number, name in enumerate(odd):
        (label / name).write_bytes(jpeg((number * 40, 10, 10)))
    (label / "cA.jpg").write_bytes(jpeg((1, 200, 1)))  # the name `c%41.jpg` would be if URL-decoded
    (label / "twin.jpg").write_bytes((label / "a#1.jpg").read_bytes())  # a duplicate in the night
    (label / "notes.jpg").write_bytes(b"not an image")
    (label / ".hidden.jpg").write_bytes(jpeg((5, 5, 5)))
    (landing / "misplaced.jpg").write_bytes(jpeg((6, 6, 6)))
    (label / "gps_exif.jpg").write_bytes(jpeg((7, 70, 7), exif=phone_exif(6)))
    xmp = Image.new("RGB", (32, 24), (8, 80, 8))
    buffer = io.BytesIO()
    xmp.save(buffer, "JPEG", xmp=XMP_GPS)
    (label / "gps_xmp.jpg").write_bytes(buffer.getvalue())
    erased_photo, known_photo, expiring = jpeg((9, 9, 90)), jpeg((11, 11, 110)), jpeg((12, 12, 120))
    (label / "erased.jpg").write_bytes(erased_photo)
    (label / "known.jpg").write_bytes(known_photo)
    (label / "expiring.jpg").write_bytes(expiring)

    lake_store = Recording(tmp_path / "lake")
    root = lake_store.root
    dedup_index.record_erased(lake_store, root, [photos.sha256_hex(erased_photo)])
    recent, old = days_before(BATCH, 3), days_before(BATCH, 365)
    dedup_index.record(lake_store, root, recent, [photos.sha256_hex(known_photo)])
    dedup_index.record(lake_store, root, old, [photos.sha256_hex(expiring)])

    planned = upload.write_listing(lake_store, storage.LocalStore(landing), storage.file_uri(landing), BATCH)
    assert planned["files"] == len(list(p for p in landing.rglob("*") if p.is_file()))
    job = steps.ingest_job(
        root, BATCH, "file:///code/", listing=planned["listing"], landing=planned["landing"], retention_days=365
    )
    args = ingest.parse_args(list(job.args))
    lake_store.calls.clear()
    counts = ingest.run(spark, args, store=lake_store)

    report = json.loads(lake_store.read(storage.ingestion_report_uri(root, BATCH)))
    listed = {storage.file_uri(p) for p in landing.rglob("*") if p.is_file()}
    assert set(report["files"]) == listed  # one outcome per landing file, keys as stored
    by_name = {uri.rsplit("/", 1)[1]: o for uri, o in report["files"].items()}
    assert {n: by_name[n]["reason"] for n, o in by_name.items() if o["outcome"] == "rejected"} == {
        "notes.jpg": "unsupported",
        ".hidden.jpg": "hidden",
        "misplaced.jpg": "misplaced",
        "erased.jpg": "erased",
    }
    assert by_name["known.jpg"] == {
        "outcome": "already_in_lake",
        "sha256": photos.sha256_hex(known_photo),
        "batch": recent,
    }
    pair = sorted([by_name["a#1.jpg"]["outcome"], by_name["twin.jpg"]["outcome"]])
    assert pair == ["already_in_lake", "uploaded"]
    uploaded = {n: o["key"] for n, o in by_name.items() if o["outcome"] == "uploaded"}
    assert uploaded["c%41.jpg"] == "Training/Kiwi/c%41.jpg" and uploaded["cA.jpg"] == "Training/Kiwi/cA.jpg"
    assert {"expiring.jpg", "gps_exif.jpg", "gps_xmp.jpg", "b?.jpg", "d e.jpg", "é.jpg"} <= uploaded.keys()
    assert counts["seen"] == len(listed) and counts["uploaded"] == len(uploaded)
    # One read of each photo the listing did not refuse: the bundles were written in that same pass.
    assert counts["landing_reads"] == planned["candidates"] == len(listed) - 2
    # Beside the report, its counts over every landing file: what the run report shows without parsing it.
    landing_counts = json.loads(lake_store.read(storage.ingestion_counts_uri(root, BATCH)))["landing"]
    rejected = {"erased": 1, "hidden": 1, "misplaced": 1, "unsupported": 1}
    assert landing_counts == {
        "seen": len(listed),
        "uploaded": len(uploaded),
        "already_in_lake": len(listed) - len(uploaded) - 4,
        "rejected": rejected,
    }

    # The manifest names the bundles, which hold exactly the uploaded photos, with no location left.
    manifest = json.loads(lake_store.read(storage.batch_manifest_uri(root, BATCH)))
    assert sorted(manifest["files"]) == sorted(uploaded.values())
    raw = lake.raw_uri(root, BATCH)
    rows = [r for name in manifest["bundles"] for r in pq.read_table(raw.removeprefix("file://") + name).to_pylist()]
    assert sorted(r["path"] for r in rows) == sorted(raw + key for key in uploaded.values())
    assert sorted(k for keys in manifest["bundles"].values() for k in keys) == sorted(uploaded.values())
    for row in rows:
        assert_no_location(row["content"])
        assert row["length"] == len(row["content"]) and row["sha256"] == manifest["files"][row["path"][len(raw) :]]

    # The index: conditional writes only, each shard touched read once to look up and once per write.
    index = lake.area_uri(root, "index") + "sha256/"
    index_calls = [(kind, uri) for kind, uri in lake_store.calls if uri.startswith(index)]
    assert index_calls and not [c for c in index_calls if c[0] == "put"]
    reads = [uri for kind, uri in index_calls if kind == "read"]
    assert max(reads.count(uri) for uri in set(reads)) <= 2
    expiring_sha = photos.sha256_hex(expiring)
    assert dedup_index.batches_holding(lake_store, root, [expiring_sha]) == {expiring_sha: [old, BATCH]}
    exif_sha = by_name["gps_exif.jpg"]["sha256"]
    assert dedup_index.lookup(lake_store, root, [exif_sha, by_name["gps_exif.jpg"]["content_sha256"]]) == dict.fromkeys(
        [exif_sha, by_name["gps_exif.jpg"]["content_sha256"]], BATCH
    )

    # The planner's listing went with the run; a rerun (a new listing) finds everything in the batch: the
    # same outcomes, no new bundle.
    assert not Path(planned["listing"].removeprefix("file://")).exists()
    planned = upload.write_listing(lake_store, storage.LocalStore(landing), storage.file_uri(landing), BATCH)
    args.listing = planned["listing"]
    again = ingest.run(spark, args, store=lake_store)
    assert again["uploaded"] == 0 and again["bundles_written"] == 0
    assert json.loads(lake_store.read(storage.ingestion_report_uri(root, BATCH)))["files"] == report["files"]
    assert json.loads(lake_store.read(storage.batch_manifest_uri(root, BATCH))) == manifest


def test_a_landing_outside_s3_is_staged_by_bytes_only(tmp_path):
    landing = tmp_path / "landing" / "Kiwi"
    landing.mkdir(parents=True)
    (landing / "x y.jpg").write_bytes(jpeg((1, 2, 3), exif=phone_exif(1)))
    (landing / ".tmp").write_bytes(b"partial")
    lake_store = storage.LocalStore(tmp_path / "lake")
    planned = upload.write_listing(
        lake_store, storage.LocalStore(landing.parent), storage.file_uri(landing.parent), BATCH, stage=True
    )
    staged = Path(planned["landing"].removeprefix("file://"))
    assert staged.is_relative_to(Path(lake.raw_uri(lake_store.root, BATCH).removeprefix("file://")))
    assert (staged / "Kiwi" / "x y.jpg").read_bytes() == (landing / "x y.jpg").read_bytes()  # bytes, not decoded
    assert not (staged / "Kiwi" / ".tmp").exists()
    table = pq.read_table(planned["listing"].removeprefix("file://")).to_pylist()
    assert {r["reason"] for r in table} == {"", "hidden"} and planned["candidates"] == 1


def test_two_nights_ingesting_one_photo_at_once_are_both_indexed_and_erase_by_path_removes_both(tmp_path, monkeypatch):
    """Issue 23 item 8: night B looked the index up before night A recorded the photo (simulated): both keep
    a copy, the index's conditional writes record both, and erasing one copy by its path erases both."""
    lake_store = storage.LocalStore(tmp_path / "lake")
    nights = {}
    for night in (days_before(BATCH, 1), BATCH):
        folder = tmp_path / night / "Kiwi"
        folder.mkdir(parents=True)
        (folder / f"shared-{night}.jpg").write_bytes(jpeg((3, 33, 133)))
        (folder / "own.jpg").write_bytes(jpeg((len(nights) * 90, 1, 1)))
        nights[night] = folder.parent
    real_lookup = dedup_index.lookup
    monkeypatch.setattr(dedup_index, "lookup", lambda *args, **kwargs: {})  # neither has recorded yet
    for night, folder in nights.items():
        upload.upload_new_images(lake_store, storage.LocalStore(folder), storage.file_uri(folder), night)
    monkeypatch.setattr(dedup_index, "lookup", real_lookup)
    sha = photos.sha256_hex(jpeg((3, 33, 133)))
    assert dedup_index.batches_holding(lake_store, lake_store.root, [sha]) == {sha: sorted(nights)}

    first = sorted(nights)[0]
    report = erase.erase(lake_store.root, f"raw/batch={first}/Kiwi/shared-{first}.jpg", owner="test")
    assert report["photos"] == sorted(f"raw/batch={n}/Kiwi/shared-{n}.jpg" for n in nights)
    for night in nights:
        assert sorted(storage.read_manifest(lake_store, lake_store.root, night)) == ["Kiwi/own.jpg"]
    assert dedup_index.batches_holding(lake_store, lake_store.root, [sha]) == {}


def test_the_job_tidies_the_landing_after_its_commit_and_an_empty_night_commits_an_empty_batch(tmp_path, spark):
    lake_store = storage.LocalStore(tmp_path / "lake")
    root, landings = lake_store.root, tmp_path / "landing"

    def night(batch, files, landing_after="keep"):
        folder = landings / batch
        for name, data in files.items():
            (folder / "Kiwi").mkdir(parents=True, exist_ok=True)
            (folder / "Kiwi" / name).write_bytes(data)
        planned = upload.write_listing(lake_store, storage.LocalStore(folder), storage.file_uri(folder), batch)
        job = steps.ingest_job(
            root,
            batch,
            "file:///code/",
            listing=planned["listing"],
            landing=planned["landing"],
            landing_after=landing_after,
        )
        return folder, ingest.run(spark, ingest.parse_args(list(job.args)), store=lake_store)

    # No landing folder at all (a catch-up night): nothing read, and featurize finds an empty batch, not none.
    _, counts = night("2026-03-08", {})
    assert (counts["seen"], counts["uploaded"]) == (0, 0)
    assert storage.read_batch_manifest(lake_store, root, "2026-03-08").files == {}
    assert lake_store.read_or_none(storage.batch_manifest_uri(root, "2026-03-08")) is not None

    # archive: the photos now in the lake (new or already there) move under _ingested/<date>/; refused ones stay.
    kiwi, apple = jpeg((1, 2, 3)), jpeg((4, 5, 6))
    folder, counts = night(
        "2026-03-09", {"k.jpg": kiwi, "again.jpg": kiwi, "notes.jpg": b"not a photo"}, landing_after="archive"
    )
    assert (counts["uploaded"], counts["already_in_lake"], counts["landing_tidied"]) == (1, 1, 2)
    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == ["notes.jpg"]
    archived = landings / upload.ARCHIVE_PREFIX / "2026-03-09" / "Kiwi"
    assert sorted(p.name for p in archived.iterdir()) == ["again.jpg", "k.jpg"]
    assert (archived / "k.jpg").read_bytes() == kiwi  # the original as received, kept where the setting says
    # delete: gone, not archived; the outcomes were committed before.
    folder, counts = night("2026-03-10", {"a.jpg": apple}, landing_after="delete")
    assert counts["landing_tidied"] == 1 and not list(folder.rglob("*.jpg"))
    assert not (landings / upload.ARCHIVE_PREFIX / "2026-03-10").exists()
    report = json.loads(lake_store.read(storage.ingestion_report_uri(root, "2026-03-10")))["files"]
    assert [o["outcome"] for o in report.values()] == ["uploaded"]


def kiwi_night(tmp_path, photos: dict[str, bytes]):
    """Tonight's landing `<BATCH>/Kiwi/` holding `photos`, listed as the DAG lists it: (landing folder, lake, the
    ingest job's parsed arguments as the DAG gives them)."""
    landing = tmp_path / "landing" / BATCH / "Kiwi"
    landing.mkdir(parents=True)
    for name, data in photos.items():
        (landing / name).write_bytes(data)
    lake_store = storage.LocalStore(tmp_path / "lake")
    planned = upload.write_listing(
        lake_store, storage.LocalStore(landing.parent), storage.file_uri(landing.parent), BATCH
    )
    job = steps.ingest_job(
        lake_store.root, BATCH, "file:///code/", listing=planned["listing"], landing=planned["landing"]
    )
    return landing, lake_store, ingest.parse_args(list(job.args))


def test_names_two_landing_files_share_and_a_rerun_with_an_edited_photo_get_their_own_keys(tmp_path, spark):
    """Keys are decided before the one read (the bundles are written in it): a key two landing files share, or
    the batch's manifest already holds for other bytes, takes the photo's hash; the same bytes under two such
    names are stored once, and the bundles hold each stored photo once and nothing else."""
    lake_store = storage.LocalStore(tmp_path / "lake")
    landing = tmp_path / "landing" / BATCH
    same, other = jpeg((1, 2, 3)), jpeg((4, 5, 6))
    for folder, data in {"a": same, "b": same, "c": other}.items():  # one key, Kiwi/x.jpg, three files
        (landing / folder / "Kiwi").mkdir(parents=True)
        (landing / folder / "Kiwi" / "x.jpg").write_bytes(data)
    (landing / "d" / "Kiwi").mkdir(parents=True)
    (landing / "d" / "Kiwi" / "edited.jpg").write_bytes(jpeg((7, 8, 9)))

    def night():
        planned = upload.write_listing(lake_store, storage.LocalStore(landing), storage.file_uri(landing), BATCH)
        job = steps.ingest_job(
            lake_store.root, BATCH, "file:///code/", listing=planned["listing"], landing=planned["landing"]
        )
        counts = ingest.run(spark, ingest.parse_args(list(job.args)), store=lake_store)
        report = json.loads(lake_store.read(storage.ingestion_report_uri(lake_store.root, BATCH)))["files"]
        return counts, {uri.removeprefix(storage.file_uri(landing).rstrip("/") + "/"): o for uri, o in report.items()}

    def bundled_keys():
        manifest = json.loads(lake_store.read(storage.batch_manifest_uri(lake_store.root, BATCH)))
        raw = lake.raw_uri(lake_store.root, BATCH)
        rows = [
            r for name in manifest["bundles"] for r in pq.read_table(raw.removeprefix("file://") + name).to_pylist()
        ]
        assert all(r["sha256"] == manifest["files"][r["path"][len(raw) :]] for r in rows)
        return sorted(r["path"][len(raw) :] for r in rows), manifest

    counts, outcomes = night()
    keyed = {"Kiwi/x-" + photos.sha256_hex(data)[:8] + ".jpg" for data in (same, other)}
    assert {outcomes[f"{f}/Kiwi/x.jpg"]["outcome"] for f in "ab"} == {"uploaded", "already_in_lake"}
    assert {outcomes[f"{f}/Kiwi/x.jpg"].get("key") for f in "abc"} == keyed
    assert counts["uploaded"] == 3 and counts["landing_reads"] == 4
    keys, manifest = bundled_keys()
    assert keys == sorted(manifest["files"]) == sorted(keyed | {"Kiwi/edited.jpg"})  # the twin's row went

    (landing / "d" / "Kiwi" / "edited.jpg").write_bytes(jpeg((9, 8, 7)))  # re-sent under its name, other bytes
    counts, outcomes = night()
    edited = outcomes["d/Kiwi/edited.jpg"]
    assert (edited["outcome"], edited["key"]) == ("uploaded", f"Kiwi/edited-{edited['sha256'][:8]}.jpg")
    assert counts["uploaded"] == 1 and counts["bundles_written"] == 1
    keys, manifest = bundled_keys()
    assert keys == sorted(manifest["files"]) and len(keys) == 4  # the photos already in the batch: not rewritten


def test_erasure_reaches_a_photo_inside_the_ingest_jobs_run_folder_bundles(tmp_path, spark):
    """The DAG's nights are ingested by the Spark job, whose bundles are `run=<id>/part-*.parquet`: an erased
    photo leaves them (featurize reads whole bundles, so a re-featurized night would bring it back)."""
    from fruits.erase import erase

    _, lake_store, args = kiwi_night(tmp_path, {"gone.jpg": jpeg((1, 2, 3)), "kept.jpg": jpeg((4, 5, 6))})
    ingest.run(spark, args, store=lake_store)
    raw = tmp_path / "lake" / "raw" / f"batch={BATCH}"
    (part,) = [p for p in raw.rglob("*.parquet") if not p.name.startswith(".")]
    assert part.parent.name.startswith("run=") and len(pq.read_table(part)) == 2

    erase(lake_store.root, f"raw/batch={BATCH}/Kiwi/gone.jpg")
    assert [r["path"].rsplit("/", 1)[1] for r in pq.read_table(part).to_pylist()] == ["kept.jpg"]
    assert list(storage.read_batch_manifest(lake_store, lake_store.root, BATCH).files) == ["Kiwi/kept.jpg"]
    rows = featurize.read_bundles(
        spark, featurize.committed_bundles(jobio.HadoopFiles(spark), lake.raw_uri(lake_store.root, BATCH))
    )
    assert [r.path.rsplit("/", 1)[1] for r in rows.select("path").collect()] == ["kept.jpg"]


@pytest.mark.shared
def test_a_night_of_phone_photos_and_their_bad_twins_is_read_once_and_stored_without_a_location(
    tmp_path, spark, sample_dir
):
    """Issue 22's bad input through the one-pass job, at a phone's size (benchmarks/phone_photos.py, cached): a
    rotated 12-MP JPEG with GPS and its byte-identical twin, a 12-MP HEIC with GPS, a 48-MP JPEG, a truncated
    12-MP JPEG, a PNG bomb, GPS in XMP only, a HEIC with no image item. One GET a file, one outcome a file, the
    bundles exactly the stored photos (the twin's row rewritten out), no position in any stored byte."""
    from test_ingestion_landing import bomb_png

    from benchmarks import phone_photos

    phones = {f"{p.kind}-{p.index}": p.path.read_bytes() for p in phone_photos.workload(2, 1, 1, sample_dir=sample_dir)}
    with Image.open(io.BytesIO(phones["jpeg-0"])) as image:
        xmp_only = io.BytesIO()
        image.save(xmp_only, "JPEG", quality=90, xmp=XMP_GPS)  # the position in XMP, no EXIF at all
    no_image_heic = struct.pack(">I4s4sI8s", 24, b"ftyp", b"heic", 0, b"mif1heic")  # brands, no item
    night = {
        "rotated.jpg": phones["jpeg-1"],
        "twin.jpg": phones["jpeg-1"],
        "phone.heic": phones["heic-0"],
        "big.jpg": phones["jpeg48-0"],
        "cut.jpg": phones["jpeg-0"][:1_000_000],
        "bomb.png": bomb_png(),
        "xmp.jpg": xmp_only.getvalue(),
        "empty.heic": no_image_heic,
    }
    _, lake_store, args = kiwi_night(tmp_path, night)
    args.keep_originals = True  # a fruits_original_retention_days window: the decoded photos' bytes are kept too
    counts = ingest.run(spark, args, store=lake_store)

    report = json.loads(lake_store.read(storage.ingestion_report_uri(lake_store.root, BATCH)))["files"]
    by_name = {uri.rsplit("/", 1)[1]: o for uri, o in report.items()}
    assert sorted(by_name) == sorted(night) and counts["landing_reads"] == len(night)
    outcomes = {name: (o["outcome"], o.get("reason")) for name, o in by_name.items()}
    assert outcomes == OUTCOMES_OF_PHONE_NIGHT, outcomes
    manifest = json.loads(lake_store.read(storage.batch_manifest_uri(lake_store.root, BATCH)))
    raw = lake.raw_uri(lake_store.root, BATCH)
    rows = [r for name in manifest["bundles"] for r in pq.read_table(raw.removeprefix("file://") + name).to_pylist()]
    stored = {r["path"].rsplit("/", 1)[1]: r["content"] for r in rows}
    assert sorted(stored) == sorted(n for n, (outcome, _) in outcomes.items() if outcome == "uploaded")
    assert len(rows) == len(stored) and {r["path"][len(raw) :] for r in rows} == set(manifest["files"])
    for name, content in stored.items():
        assert b"GPSLatitude" not in content and b"51.4N" not in content and b"SN0" not in content, name
        if name != "bomb.png":  # over Pillow's limit: refused at open (featurize quarantines it), no metadata
            assert_no_location(content)
    with Image.open(io.BytesIO(stored["rotated.jpg"])) as kept:
        assert kept.getexif().get(0x0112) == 6 and kept.size == (4032, 3024)  # the orientation stays for featurize

    # The night's one decode: a photo bigger than its model pixels carries them, upright, and its derivative; a
    # photo that does not decode (truncated) or is not bigger (the bomb's few KB) is left for featurize.
    decoded = {r["path"].rsplit("/", 1)[1]: r for r in rows if r["pixels"] is not None}
    assert sorted(decoded) == sorted(n for n in stored if len(stored[n]) > featurize.PIXELS_BYTES and n != "cut.jpg")
    assert {"rotated.jpg", "phone.heic", "big.jpg", "xmp.jpg"} <= decoded.keys()
    for name, row in decoded.items():
        pixels, width, height = featurize.decode_image(row["content"])
        assert row["pixels"] == pixels.tobytes() and (row["width"], row["height"]) == (width, height), name
        assert row["content_sha256"] == photos.sha256_hex(row["content"]) and row["length"] == len(row["content"])
        assert_no_location(row["derivative"])
        assert b"GPS" not in row["derivative"] and b"SN0" not in row["derivative"], name
    assert (decoded["rotated.jpg"]["width"], decoded["rotated.jpg"]["height"]) == (3024, 4032)  # as displayed
    assert all(r["derivative"] is None and r["width"] is None for r in rows if r["pixels"] is None)


@pytest.mark.shared
@pytest.mark.slow
def test_featurize_takes_the_pixels_the_ingest_pass_decoded_and_gives_the_features_of_decoding_the_photos(
    tmp_path, spark, sample_dir, litert_payload
):
    """Issue 22's decode once, across the two steps: featurize reads a decoded photo's pixels, derivative and size
    from its bundle row, not its content (the scan of those rows does not read that column), and its features,
    hashes, sizes and derivatives are those of featurize decoding the stored photos itself; a thumbnail and a
    truncated photo, not decoded by the pass, are decoded (or quarantined) by featurize as before."""
    from conftest import payload_args

    from benchmarks import phone_photos

    phones = {f"{p.kind}-{p.index}": p.path.read_bytes() for p in phone_photos.workload(2, 1, 1, sample_dir=sample_dir)}
    night = {
        "rotated.jpg": phones["jpeg-1"],
        "phone.heic": phones["heic-0"],
        "big.jpg": phones["jpeg48-0"],
        "cut.jpg": phones["jpeg-0"][:1_000_000],
        "thumbnail.jpg": next(sample_dir.glob("Training/*/*.jpg")).read_bytes(),
    }
    _, lake_store, args = kiwi_night(tmp_path, night)
    ingest.run(spark, args, store=lake_store)  # the default: no fruits_original_retention_days window
    raw = lake.raw_uri(lake_store.root, BATCH)
    manifest = json.loads(lake_store.read(storage.batch_manifest_uri(lake_store.root, BATCH)))
    bundles = [raw + name for name in manifest["bundles"]]
    rows = [r for uri in bundles for r in pq.read_table(uri.removeprefix("file://")).to_pylist()]
    stored = {name: photos.examine(content).content for name, content in night.items()}
    decoded = sorted(r["path"].rsplit("/", 1)[1] for r in rows if r["pixels"] is not None)
    assert decoded == ["big.jpg", "phone.heic", "rotated.jpg"]
    for row in rows:  # a decoded photo's bytes stay out of raw/: its pixels and derivative are what the lake needs
        name = row["path"].rsplit("/", 1)[1]
        assert row["content"] == (None if name in decoded else stored[name]), name
        assert (row["length"], row["content_sha256"]) == (len(stored[name]), photos.sha256_hex(stored[name])), name

    def columns_read(keep_originals: bool) -> list[frozenset[str]]:  # by each scan of featurize's read
        plan = featurize.read_bundles(spark, bundles, keep_originals)._jdf.queryExecution().executedPlan()
        leaves = plan.collectLeaves()
        return sorted((frozenset(leaves.apply(i).requiredSchema().fieldNames()) for i in range(leaves.size())), key=len)

    # One scan: a decoded row's content is null. With a window's bundles, where it is not, a scan of their own
    # reads those rows without it.
    decoded_rows = frozenset({"path", "modificationTime", "length", *featurize.DECODED_NAMES})
    assert columns_read(False) == [decoded_rows | {"content"}]
    assert columns_read(True) == [decoded_rows, decoded_rows | {"content"}]

    plain = tmp_path / "stored" / "Kiwi"  # the same stored bytes as plain files: featurize decodes every one
    plain.mkdir(parents=True)
    for name, content in stored.items():
        (plain / name).write_bytes(content)
    outputs = {}
    for name, source in {"bundles": raw, "files": str(plain.parent)}.items():
        features, derived = tmp_path / name / "features", tmp_path / name / "derived"
        common = ["--input", source, "--input-format", name, "--output", str(features), "--derived", str(derived)]
        metrics = featurize.run(
            spark, featurize.parse_args([*common, "--batch-id", BATCH, *payload_args(litert_payload)])
        )
        assert (metrics["featurized"], metrics["quarantined"]) == (4, 1), name
        committed = spark.read.parquet(*jobio.committed_files(jobio.HadoopFiles(spark), str(features), ".parquet"))
        kept = spark.read.parquet(*jobio.committed_files(jobio.HadoopFiles(spark), str(derived), ".parquet"))
        table = committed.join(kept.select("path", "derivative"), "path").toPandas()
        outputs[name] = table.set_index(table["path"].str.rsplit("/", n=1).str[-1]).sort_index()
    ours, reference = outputs["bundles"], outputs["files"]
    assert list(ours.index) == list(reference.index) == sorted(set(night) - {"cut.jpg"})
    for column in ("width", "height", "sha256", "derivative"):
        assert ours[column].tolist() == reference[column].tolist(), column
    assert ours["sha256"].tolist() == [photos.sha256_hex(stored[name]) for name in ours.index]
    np.testing.assert_array_equal(np.stack(ours["features"].to_numpy()), np.stack(reference["features"].to_numpy()))

    # The run's page draws a decoded photo from its bundle row's derivative (no original there to draw).
    assert lake.DERIVATIVE_COLUMN == featurize.DERIVATIVE_COLUMN
    shown = [raw + "Kiwi/" + name for name in ("rotated.jpg", "thumbnail.jpg")]
    thumbs, not_drawn = report_page.photo_thumbnails(lake_store, lake_store.root, BATCH, shown)
    assert not not_drawn and thumbs[shown[0]] == report_page.thumbnail(ours.loc["rotated.jpg", "derivative"])
    assert thumbs[shown[1]] == report_page.thumbnail(stored["thumbnail.jpg"])


# The ingest job's own `main`, with its pass failing once mid-task: the first attempt of task 0 reads, examines
# and yields two frames of photos, then dies as an executor on a reclaimed spot node does.
NODE_RECLAIMED_MID_PASS = """
import sys

import ingest
from pyspark import TaskContext

examine_and_bundle = ingest.examine_and_bundle


def reclaimed_after_two_frames(**job):
    run = examine_and_bundle(**job)

    def flaky(frames):
        context = TaskContext.get()
        for number, frame in enumerate(run(frames)):
            yield frame
            if number == 1 and context.partitionId() == 0 and context.attemptNumber() == 0:
                raise RuntimeError("the executor's node was reclaimed")

    return flaky


ingest.examine_and_bundle = reclaimed_after_two_frames
sys.exit(ingest.main())
"""


@pytest.mark.slow
def test_a_task_lost_mid_pass_is_read_again_and_counted_once(tmp_path):
    """A spot node reclaimed during the one pass, through a local spark-submit that retries a task (local[2,2]):
    the failed attempt's reads, small rows and half-written bundle are not the night's; the retry's are. One
    outcome and one bundle row a photo, and landing_reads counts each photo once."""
    from fruits import local_target

    photos_tonight = {f"p{i:02d}.jpg": jpeg((i * 6, 30, 3)) for i in range(40)}
    _, lake_store, parsed = kiwi_night(tmp_path, photos_tonight)
    code = storage.file_uri(Path(__file__).resolve().parents[1]) + "/"
    job = steps.ingest_job(lake_store.root, BATCH, code, listing=parsed.listing, landing=parsed.landing)
    script = tmp_path / "reclaimed_ingest.py"
    script.write_text(NODE_RECLAIMED_MID_PASS)
    command = steps.local_command(
        dataclasses.replace(job, script=str(script)),
        spark_submit=local_target.spark_submit(),
        master="local[2,2]",
        spark_conf=local_target.SPARK_CONF,
    )
    local_target.run(command, name="ingest, a task lost once")

    report = json.loads(lake_store.read(storage.ingestion_report_uri(lake_store.root, BATCH)))
    assert {o["outcome"] for o in report["files"].values()} == {"uploaded"} and len(report["files"]) == 40
    assert report["last_attempt"]["landing_reads"] == 40  # the failed attempt's 32 reads are not counted
    manifest = json.loads(lake_store.read(storage.batch_manifest_uri(lake_store.root, BATCH)))
    raw = lake.raw_uri(lake_store.root, BATCH)
    paths = [
        r["path"] for name in manifest["bundles"] for r in pq.read_table(raw.removeprefix("file://") + name).to_pylist()
    ]
    assert sorted(paths) == sorted(raw + key for key in manifest["files"]) and len(paths) == 40
    run_folder = Path(raw.removeprefix("file://")) / next(iter(manifest["bundles"])).split("/")[0]
    assert sorted(p.name for p in run_folder.glob("*.parquet")) == [
        n.split("/")[1] for n in sorted(manifest["bundles"])
    ]
