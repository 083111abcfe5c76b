"""Ingestion (issue 12): every landing file accounted for, images by content in every format, odd names and
links, the size limit read from the listing, metadata stripped, erased content refused, dated landing folders
(a backfill takes its own date's photos), the command."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageCms, ImageOps

from fruits import dedup_index, lake, locks, pipeline_tasks, storage, upload
from fruits.cli import upload as upload_cli
from fruits.settings import PipelineSettings

BATCH = "2026-03-10"
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")
GPS, MAKE, ARTIST, EXIF_IFD, SERIAL = 0x8825, 0x010F, 0x013B, 0x8769, 0xA431


def image_bytes(fmt: str, colour=(200, 40, 30), size=(32, 24), **kwargs) -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def phone_exif(orientation: int = 6) -> Image.Exif:
    """What a phone writes: position, device, owner."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[MAKE] = "PhoneMaker X1"
    exif[ARTIST] = "Alice Owner"
    exif.get_ifd(EXIF_IFD)[SERIAL] = "SN-0042-SECRET"
    gps = exif.get_ifd(GPS)
    gps[1], gps[2], gps[3], gps[4] = "N", (48.0, 51.0, 24.0), "E", (2.0, 21.0, 3.0)
    return exif


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A PNG header claiming 400 MP (over Pillow's bomb limit), a few bytes of data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def upload_folder(lake_root: Path, landing: Path, batch: str = BATCH, **kwargs) -> dict:
    return upload.upload_new_images(
        storage.LocalStore(lake_root), storage.LocalStore(landing), storage.file_uri(landing), batch, **kwargs
    )


def report_of(result: dict) -> dict:
    return json.loads(Path(result["ingestion_report_uri"].removeprefix("file://")).read_text())


def rows_of(lake_root: Path, batch: str = BATCH) -> dict[str, dict]:
    raw = Path(lake.raw_uri(storage.file_uri(lake_root), batch).removeprefix("file://"))
    return {
        row["path"]: row for bundle in sorted(raw.glob("bundle-*.parquet")) for row in pq.read_table(bundle).to_pylist()
    }


class CountingStore(storage.LocalStore):
    def __init__(self, root):
        super().__init__(root)
        self.reads: list[str] = []

    def read(self, uri: str) -> bytes:
        self.reads.append(uri)
        return super().read(uri)


def test_every_landing_file_ends_in_exactly_one_outcome_and_every_format_is_uploaded(tmp_path):
    landing = tmp_path / "landing"
    label = landing / "Training" / "Apple Braeburn"  # a label with a space, as Fruits-360's
    label.mkdir(parents=True)
    for number, fmt in enumerate(FORMATS):
        (label / f"photo_{number}.{'img' if fmt == 'HEIF' else 'jpg'}").write_bytes(
            image_bytes(fmt, (number * 30, 9, 9))
        )
    (label / "empty.jpg").write_bytes(b"")  # a 0-byte file beside the photos
    (label / "notes.jpg").write_bytes(b"not an image at all")
    (label / "big.png").write_bytes(image_bytes("PNG", (1, 1, 1)) + b"\0" * 5000)
    (label / "bomb.png").write_bytes(bomb_png())
    (label / ".DS_Store").write_bytes(b"finder")
    (label / "copy.jpg").write_bytes(image_bytes("JPEG", (0, 9, 9)))  # same content as photo_0
    (landing / "at_root.jpg").write_bytes(image_bytes("JPEG", (5, 5, 5)))
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(image_bytes("JPEG", (6, 6, 6)))
    os.symlink(outside, label / "link_out.jpg")
    os.symlink(landing / "Training", label / "folder_link")  # inside, but a folder: not followed
    os.symlink(label / "photo_1.jpg", label / "link_in.jpg")  # inside: read, same content as photo_1
    odd = ["new\nline.jpg", 'comma,quote".jpg', "nel\x85.jpg", "sep\u2028.jpg", "é ü.jpg"]
    for number, name in enumerate(odd):
        (label / name).write_bytes(image_bytes("PNG", (9, number * 40, 9)))
    os.close(os.open(os.fsencode(label) + b"/latin1-\xe9.jpg", os.O_CREAT | os.O_WRONLY))  # not UTF-8
    with open(os.fsencode(label) + b"/latin1-\xe9.jpg", "wb") as file:
        file.write(image_bytes("JPEG", (7, 7, 7)))

    store = CountingStore(landing)
    result = upload.upload_new_images(
        storage.LocalStore(tmp_path / "lake"), store, storage.file_uri(landing), BATCH, max_photo_bytes=4000
    )
    files = report_of(result)["files"]
    listed = sum(
        len(names) + sum(os.path.islink(os.path.join(d, x)) for x in dirs) for d, dirs, names in os.walk(landing)
    )
    assert result["seen"] == len(files) == listed  # every file, once
    assert result["uploaded"] + result["already_in_lake"] + sum(result["rejected"].values()) == result["seen"]
    assert result["rejected"] == {
        "empty": 1,
        "folder_link": 1,
        "hidden": 1,
        "link_out_of_landing": 1,
        "misplaced": 1,
        "too_large": 1,
        "unreadable_name": 1,
        "unsupported": 1,
    }
    assert result["already_in_lake"] == 2 and result["uploaded"] == len(FORMATS) + len(odd) + 1  # + the bomb
    formats = {o["format"] for o in files.values() if o["outcome"] == "uploaded"}
    assert formats == set(FORMATS)  # the bomb too (a PNG, by its signature): featurize quarantines it
    # The size limit comes from the listing: the big file is never read.
    assert not any(uri.endswith("big.png") for uri in store.reads)
    by_name = {uri.rsplit("/", 1)[1]: outcome for uri, outcome in files.items()}
    for pair in (("copy.jpg", "photo_0.jpg"), ("link_in.jpg", "photo_1.jpg")):  # same content: one in, one known
        assert sorted(by_name[name]["outcome"] for name in pair) == ["already_in_lake", "uploaded"]
    rows = rows_of(tmp_path / "lake")
    raw = lake.raw_uri(storage.file_uri(tmp_path / "lake"), BATCH)
    for name in odd:  # hostile names travel intact into the key and the path
        assert f"{raw}Training/Apple Braeburn/{name}" in rows
    for path, row in rows.items():  # each stored photo still decodes, whatever its format (the bomb: featurize's)
        if not path.endswith("bomb.png"):
            Image.open(io.BytesIO(row["content"])).load()
    manifest = json.loads(Path(raw.removeprefix("file://") + storage.UPLOADS_MANIFEST).read_text())
    assert sorted(manifest["files"]) == sorted(p[len(raw) :] for p in rows)


def test_a_phone_photo_loses_gps_serial_and_owner_but_keeps_orientation_icc_and_pixels(tmp_path):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = phone_exif  # a fresh one per photo: Pillow's AVIF writer resets the orientation of the one it is given
    photos = {
        "a.jpg": image_bytes(
            "JPEG",
            exif=exif(),
            icc_profile=icc,
            xmp=b"<x:xmpmeta>GPS 48.85 Alice</x:xmpmeta>",
            comment=b"Alice's phone",
        ),
        "b.png": image_bytes("PNG", exif=exif(), icc_profile=icc, pnginfo=_png_text("Author", "Alice Owner")),
        "c.webp": image_bytes("WEBP", exif=exif(), icc_profile=icc, lossless=True),
        "d.heic": image_bytes("HEIF", exif=exif(), xmp=b"<x:xmpmeta>GPS 48.85 Alice</x:xmpmeta>"),
        "e.avif": image_bytes("AVIF", exif=exif(), icc_profile=icc),
        "f.tif": image_bytes("TIFF", exif=exif(), icc_profile=icc),
    }
    landing = tmp_path / "landing" / "Banana"
    landing.mkdir(parents=True)
    for name, data in photos.items():
        (landing / name).write_bytes(data)
        assert b"Alice" in data or Image.open(io.BytesIO(data)).getexif().get(ARTIST) == "Alice Owner"
    result = upload_folder(tmp_path / "lake", tmp_path / "landing")
    # HEIC and AVIF: their Exif/XMP items blanked in place; only the TIFF is decoded and stored as PNG.
    assert result["uploaded"] == 6 and result["metadata_stripped"] == 6 and result["reencoded"] == 1
    for path, row in rows_of(tmp_path / "lake").items():
        name = path.rsplit("/", 1)[1]
        original, stored = photos[name], row["content"]
        assert row["sha256"] == hashlib.sha256(original).hexdigest()  # dedup and erasure on the content as received
        for secret in (b"Alice", b"SN-0042", b"PhoneMaker", b"GPS 48.85"):
            assert secret not in stored, (name, secret)
        image = Image.open(io.BytesIO(stored))
        tags = image.getexif()
        # pillow_heif applies a HEIF's orientation as it decodes: the stored pixels are upright already.
        assert dict(tags) == ({} if name == "d.heic" else {0x0112: 6}) and not tags.get_ifd(GPS)
        if name != "d.heic":
            assert image.info.get("icc_profile") == icc
        before = Image.open(io.BytesIO(original))
        # Cut, not re-encoded (or re-encoded losslessly): the same pixels, upright the same way featurize turns them.
        assert (
            ImageOps.exif_transpose(image).convert("RGB").tobytes()
            == ImageOps.exif_transpose(before).convert("RGB").tobytes()
        )
        assert (
            image.format
            == {"a.jpg": "JPEG", "b.png": "PNG", "c.webp": "WEBP", "d.heic": "HEIF", "e.avif": "AVIF", "f.tif": "PNG"}[
                name
            ]
        )
        assert (len(stored) == len(original)) == name.endswith(("heic", "avif"))  # blanked in place
        if name == "a.jpg":
            assert len(stored) < len(original) and original.endswith(stored[stored.index(b"\xff\xda") :])


def _png_text(key: str, value: str):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(key, value)
    return info


def test_an_erased_photo_is_refused_by_later_uploads_and_leaves_the_index(tmp_path):
    landing = tmp_path / "landing" / "Kiwi"
    landing.mkdir(parents=True)
    photo = image_bytes("JPEG", (3, 4, 5))
    (landing / "k.jpg").write_bytes(photo)
    lake_store = storage.LocalStore(tmp_path / "lake")
    first = upload_folder(tmp_path / "lake", tmp_path / "landing", "2026-03-01")
    assert first["uploaded"] == 1
    sha = hashlib.sha256(photo).hexdigest()
    assert dedup_index.lookup(lake_store, lake_store.root, [sha]) == {sha: "2026-03-01"}
    assert dedup_index.record_erased(lake_store, lake_store.root, [sha]) == 1
    assert dedup_index.record_erased(lake_store, lake_store.root, [sha]) == 0  # idempotent
    assert dedup_index.lookup(lake_store, lake_store.root, [sha]) == {}
    # The photo lands again (the same file, or under another name, another day): refused, named.
    (landing / "again.jpg").write_bytes(photo)
    later = upload_folder(tmp_path / "lake", tmp_path / "landing", "2026-03-02")
    assert (later["uploaded"], later["rejected"]) == (0, {"erased": 2})
    assert {o["reason"] for o in report_of(later)["files"].values()} == {"erased"}
    with pytest.raises(ValueError, match="sha256"):
        dedup_index.record_erased(lake_store, lake_store.root, ["not-a-hash"])


def test_a_backfill_takes_its_own_dates_folder_only(tmp_path):
    root = tmp_path / "landing"
    old, today = "2026-01-05", "2026-03-10"
    for day, colour in ((old, (1, 1, 1)), (today, (2, 2, 2))):
        (root / day / "Kiwi").mkdir(parents=True)
        (root / day / "Kiwi" / f"{day}.jpg").write_bytes(image_bytes("JPEG", colour))
    settings = PipelineSettings(target="local", landing=str(root), local_lake=str(tmp_path / "lake"))
    repo = Path(__file__).parents[1]
    listed = pipeline_tasks.list_landing(settings, None, old, dry_run=False, repo_root=repo)["landing"]
    assert listed["landing"] == lake.landing_uri(storage.file_uri(root), old)
    rows = pq.read_table(storage.LocalStore(tmp_path / "lake")._path(listed["listing"])).to_pylist()
    assert [bytes(r["uri"]).decode() for r in rows] == [
        lake.landing_uri(storage.file_uri(root), old) + f"Kiwi/{old}.jpg"
    ]
    # A date with no folder is an empty night, not an error; the explicit Param folder is taken as is.
    empty = pipeline_tasks.list_landing(settings, None, "2026-02-02", dry_run=True, repo_root=repo)["landing"]
    assert empty["files"] == 0
    explicit = PipelineSettings(target="local", landing=str(root / today), local_lake=str(tmp_path / "lake"))
    named = pipeline_tasks.list_landing(explicit, None, today, dry_run=True, explicit_landing=True, repo_root=repo)
    assert named["landing"]["files"] == named["landing"]["candidates"] == 1


def test_the_command_refuses_an_impossible_date_before_anything_and_prints_the_counts(tmp_path, capsys):
    landing = tmp_path / "landing" / "Kiwi"
    landing.mkdir(parents=True)
    (landing / "k.jpg").write_bytes(image_bytes("JPEG"))
    (tmp_path / "lake").mkdir()
    args = ["--landing", str(tmp_path / "landing"), "--lake", str(tmp_path / "lake")]
    assert upload_cli.main([*args, "--batch", "2026-13-45"]) == 2
    assert "2026-13-45" in capsys.readouterr().err and not any((tmp_path / "lake").iterdir())
    assert upload_cli.main([*args, "--batch", BATCH]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert (counts["seen"], counts["uploaded"], counts["batch"]) == (1, 1, BATCH)
    store = storage.LocalStore(tmp_path / "lake")
    assert locks.holder(store, store.root, BATCH) is None  # released
    locks.acquire(store, store.root, BATCH, "a pipeline run")
    assert upload_cli.main([*args, "--batch", BATCH]) == 3
    assert "a pipeline run" in capsys.readouterr().err


def test_landing_files_in_the_lake_can_be_archived_or_deleted_rejected_ones_stay(tmp_path):
    for policy in ("archive", "delete"):
        root = tmp_path / policy
        folder = root / BATCH / "Kiwi"
        folder.mkdir(parents=True)
        (folder / "k.jpg").write_bytes(image_bytes("JPEG"))
        (folder / "bad.jpg").write_bytes(b"nope")
        result = upload_folder(tmp_path / f"lake-{policy}", root / BATCH, landing_after=policy)
        assert result[f"landing_files_{'archived' if policy == 'archive' else 'deleted'}"] == 1
        assert sorted(p.name for p in folder.iterdir()) == ["bad.jpg"]
        archived = root / upload.ARCHIVE_PREFIX / BATCH / "Kiwi" / "k.jpg"
        assert archived.exists() == (policy == "archive")


def test_the_command_on_s3_writes_with_the_buckets_own_key(tmp_path, capsys):
    import boto3
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-3")
        for bucket in ("lake", "landing"):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
        key_arn = boto3.client("kms", region_name="eu-west-3").create_key()["KeyMetadata"]["Arn"]
        s3.put_bucket_encryption(
            Bucket="lake",
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}}
                ]
            },
        )
        s3.put_object(Bucket="landing", Key=f"in/{BATCH}/Kiwi/k.jpg", Body=image_bytes("JPEG"))
        assert (
            upload_cli.main(
                [
                    "--landing",
                    f"s3://landing/in/{BATCH}/",
                    "--lake",
                    "s3://lake",
                    "--batch",
                    BATCH,
                    "--region",
                    "eu-west-3",
                ]
            )
            == 0
        )
        assert json.loads(capsys.readouterr().out)["uploaded"] == 1
        (bundle,) = [
            o["Key"]
            for o in s3.list_objects_v2(Bucket="lake", Prefix="raw/")["Contents"]
            if o["Key"].endswith(".parquet")
        ]
        assert s3.head_object(Bucket="lake", Key=bundle)["SSEKMSKeyId"] == key_arn
