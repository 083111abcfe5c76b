"""featurize.py: pure functions, then the job end-to-end on local Spark with the real sample and
the real ImageNet weights, then bad input on files the tests generate."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import urllib.parse
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import payload_args, require_shared
from PIL import Image, ImageFile, ImageOps

import featurize
import jobio

# --------------------------------------------------------------------------------------------
# Generated images (tests make their own bad and odd files; ../shared only holds real photos)
# --------------------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def fruit_like(size=(100, 100)) -> Image.Image:
    """A red disc on white, like a Fruits-360 photo."""
    yy, xx = np.mgrid[: size[1], : size[0]]
    disc = (xx - size[0] / 2) ** 2 + (yy - size[1] / 2) ** 2 < (min(size) / 3) ** 2
    pixels = np.full((size[1], size[0], 3), 255, np.uint8)
    pixels[disc] = (200, 30, 40)
    return Image.fromarray(pixels, "RGB")


def transparent_cutout() -> Image.Image:
    """The disc with a transparent (black, alpha 0) background instead of white."""
    rgb = np.asarray(fruit_like())
    alpha = np.where((rgb == 255).all(axis=2), 0, 255).astype(np.uint8)
    rgba = np.dstack([np.where(alpha[..., None] == 0, 0, rgb), alpha]).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA")


def corrupt_png() -> bytes:
    """A PNG whose header is fine but whose compressed pixel data is zeroed out."""
    noise = np.random.default_rng(0).integers(0, 256, (60, 60, 3), dtype=np.uint8)
    content = bytearray(encode(Image.fromarray(noise), "PNG"))
    start = content.index(b"IDAT") + 20
    content[start : start + 40] = bytes(40)
    return bytes(content)


def gray16(value: int) -> bytes:
    return encode(Image.fromarray(np.full((40, 60), value, np.uint16)), "PNG")


def marker(output) -> dict:
    """The commit marker of a job output on the local disk."""
    return json.loads((Path(output) / jobio.COMMIT_MARKER).read_text())


def read_committed(spark, output):
    """The committed Parquet of an output, as every reader must read it: the files its marker lists."""
    return spark.read.parquet(*jobio.committed_files(jobio.HadoopFiles(spark), str(output), ".parquet"))


def run_metrics(output) -> dict:
    """The committed run's _job_metrics.json, checked equal to the copy in the marker."""
    committed = marker(output)
    metrics = json.loads(Path(committed["location"].removeprefix("file:"), "_job_metrics.json").read_text())
    assert committed["metrics"] == metrics
    return metrics


# --------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------


def test_label_and_split_come_from_the_folders_under_the_input_root(spark):
    root = "s3://bucket/raw/batch=2024-01-01"
    rows = [
        (f"{root}/Training/Apple Braeburn/r_1.jpg", "Apple Braeburn", "Training"),
        (f"{root}/Kiwi/2.PNG", "Kiwi", None),
        (f"{root}/fruits/Test/Kiwi/sub/3.jpg", "sub", "Test"),  # nearest split folder
        (f"{root}/Test/4.jpg", None, "Test"),  # a split is not a label
        (f"{root}/5.jpg", None, None),  # directly in the root: nothing to say
    ]
    files = spark.createDataFrame([(path,) for path, _, _ in rows], "path string")
    got = {r.path: (r.label, r.split) for r in featurize.with_label_and_split(files, root + "/").collect()}
    assert got == {path: (label, split) for path, label, split in rows}


def test_preprocess_matches_keras_mobilenet_v2_preprocessing(keras_home):
    # keras_home although no weights are loaded: Keras reads KERAS_HOME once, when first
    # imported, so no test may import it before that fixture has set the variable.
    from keras.applications.mobilenet_v2 import preprocess_input

    pixels = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    ours = featurize.preprocess(pixels)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, preprocess_input(pixels.astype(np.float32)), atol=1e-6)
    assert ours.min() == -1.0 and ours.max() == 1.0


@pytest.mark.parametrize(
    "make, fmt",
    [
        (lambda: fruit_like(), "JPEG"),
        (lambda: fruit_like(), "PNG"),
        (lambda: fruit_like(), "WEBP"),
        (lambda: fruit_like(), "BMP"),
        (lambda: fruit_like(), "TIFF"),
        (lambda: fruit_like().convert("CMYK"), "JPEG"),
        (lambda: fruit_like().convert("P", palette=Image.Palette.ADAPTIVE), "GIF"),
        (lambda: fruit_like().convert("L"), "PNG"),
        (lambda: fruit_like().convert("1"), "PNG"),
    ],
    ids=["jpeg", "png", "webp", "bmp", "tiff", "cmyk-jpeg", "palette-gif", "grayscale", "1-bit"],
)
def test_decode_image_gives_model_sized_rgb_for_every_mode_and_format(make, fmt):
    pixels, width, height = featurize.decode_image(encode(make(), fmt))
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    assert (width, height) == (100, 100)
    # A white background stays (nearly) white and the disc stays darker: colours survive.
    assert pixels[2, 2].min() >= 240
    assert pixels[112, 112].mean() < 200


def test_transparency_is_composited_on_white_like_fruits360_backgrounds():
    cutout, _, _ = featurize.decode_image(encode(transparent_cutout(), "PNG"))
    photo, _, _ = featurize.decode_image(encode(fruit_like(), "PNG"))
    assert cutout[2, 2].tolist() == [255, 255, 255]  # not the transparent pixels' black
    np.testing.assert_array_equal(cutout, photo)
    palette = transparent_cutout().convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.info["transparency"] = palette.getpixel((0, 0))
    from_gif, _, _ = featurize.decode_image(encode(palette, "GIF", transparency=palette.getpixel((0, 0))))
    assert from_gif[2, 2].tolist() == [255, 255, 255]


def test_16_bit_grayscale_is_scaled_to_8_bits_not_clipped():
    for value, expected in [(65535, 255), (32896, 128), (0, 0)]:
        pixels, width, height = featurize.decode_image(gray16(value))
        assert (width, height) == (60, 40)
        assert np.unique(pixels).tolist() == [expected]


def test_exif_orientation_is_applied_and_reported_as_displayed_size():
    wide = fruit_like((120, 80))
    exif = Image.Exif()
    exif[featurize.ORIENTATION_TAG] = 6  # stored landscape, displayed rotated 90 degrees
    _, width, height = featurize.decode_image(encode(wide, "JPEG", exif=exif.tobytes()))
    assert (width, height) == (80, 120)


def test_big_photos_are_decoded_at_reduced_scale_but_report_their_real_size():
    pixels, width, height = featurize.decode_image(encode(fruit_like((2000, 1500)), "JPEG"))
    assert pixels.shape == (224, 224, 3) and (width, height) == (2000, 1500)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"plain text, not a picture\n", "not an image Pillow can decode"),
        (encode(fruit_like((300, 300)), "JPEG")[:1500], "truncated image"),
        (encode(fruit_like(), "PNG")[:60], "truncated image"),
        (b"\xff\xd8\xff\xe0" + bytes(200), "not an image Pillow can decode"),
        (corrupt_png(), "corrupt image"),
    ],
    ids=["empty", "text", "truncated-jpeg", "truncated-png", "jpeg-magic-then-zeros", "corrupt-png-data"],
)
def test_unreadable_files_raise_with_a_reason_a_person_can_act_on(content, reason):
    with pytest.raises(Exception) as caught:
        featurize.decode_image(content)
    assert featurize.describe_error(caught.value).startswith(reason)


def test_featurize_batch_keeps_rows_aligned_around_bad_files_and_across_batches():
    """7 files, 2 bad, batch size 2: every good row gets ITS image's vector, every bad one its reason."""
    shades = [10, 40, None, 90, 130, None, 250]
    contents = [b"not an image" if s is None else encode(Image.new("RGB", (30, 20), (s, s, s)), "PNG") for s in shades]
    paths = [f"file:/in/{i}.png" for i in range(len(shades))]
    batch = pa.RecordBatch.from_arrays(
        [pa.array(paths), pa.array([f"sha{i}" for i in range(len(shades))]), pa.array(contents, pa.binary())],
        names=["path", "sha256", "content"],
    )
    calls = []

    def mean_pixel_model(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return np.repeat(batch.mean(axis=(1, 2, 3))[:, None], featurize.FEATURE_DIM, axis=1)

    readable, unreadable = featurize.featurize_batch(batch, mean_pixel_model, batch_size=2)
    assert calls == [2, 2, 1]
    assert unreadable == [(paths[2], "not an image Pillow can decode"), (paths[5], "not an image Pillow can decode")]
    assert readable.schema.names == featurize.features_schema().fieldNames()
    assert readable.column("features").type == pa.list_(pa.float32())
    good = [i for i, shade in enumerate(shades) if shade is not None]
    assert readable.column("path").to_pylist() == [paths[i] for i in good]
    assert readable.column("sha256").to_pylist() == [f"sha{i}" for i in good]
    for i, row in zip(good, readable.to_pylist()):
        assert len(row["features"]) == featurize.FEATURE_DIM
        assert row["features"][0] == pytest.approx(shades[i] / 127.5 - 1, abs=1e-5)
        assert (row["width"], row["height"]) == (30, 20)


def test_unscanned_files_finds_what_the_scan_skipped_whatever_the_file_uri_spelling():
    listed = ["file:///data/a.jpg", "file:///data/empty.jpg", "s3://b/raw/c.jpg", "s3://b/raw/0.jpg"]
    scanned = {"file:/data/a.jpg", "s3://b/raw/c.jpg"}
    assert featurize.unscanned_files(listed, scanned) == ["file:/data/empty.jpg", "s3://b/raw/0.jpg"]  # as scanned


def test_listed_and_scanned_spellings_of_odd_names_are_one_file():
    """inputFiles() percent-encodes (Java's URI), the scan's path column does not: an odd name must not
    look unscanned, or its photo is both featurized and quarantined as empty (issue 12)."""
    names = ["Apple Braeburn/r 1.jpg", "100% juice/a.jpg", "#1 Kiwi/b#c.png", "Crème brûlée/ü.jpg", "x+y/[1].jpg"]
    listed = ["file:///d/" + urllib.parse.quote(name) for name in names] + ["s3://b/raw/Apple%20Braeburn/0.jpg"]
    scanned = {"file:/d/" + name for name in names}
    assert featurize.unscanned_files(listed, scanned) == ["s3://b/raw/Apple Braeburn/0.jpg"]
    assert featurize.unscanned_files(["file:/d/Crème brûlée/ü.jpg"], scanned) == []  # unencoded non-ASCII


def big_png(width: int, height: int) -> bytes:
    """A valid grayscale PNG of width x height black pixels, written row by row (never held decoded):
    a few hundred KB that Pillow would decode into width * height * 3 bytes of RGB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), bytes(width + 1)  # filter byte 0 + the row
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_before_decoding_with_a_clear_reason(monkeypatch):
    bomb = big_png(9000, 8000)  # 72 Mpx: above the limit, below Pillow's own warning (89 Mpx)
    assert len(bomb) < 200_000
    assert Image.open(io.BytesIO(bomb)).size == (9000, 8000)  # a valid image, not a broken one

    def no_decoding(image):
        raise AssertionError(f"{image.size} decoded: the header alone should have refused it")

    with monkeypatch.context() as patched:  # refused from the header: no pixel is ever decoded
        patched.setattr(ImageFile.ImageFile, "load", no_decoding)
        with pytest.raises(Image.DecompressionBombError) as caught:
            featurize.decode_image(bomb)
    assert featurize.describe_error(caught.value) == (
        "image too large: 9000x8000 decodes to 72.0 Mpx, above the limit of 64.0 Mpx (featurize.MAX_IMAGE_PIXELS)"
    )
    with pytest.raises(Image.DecompressionBombError) as caught:  # above twice Pillow's: its own error, same reason
        featurize.decode_image(big_png(14000, 13000))
    assert featurize.describe_error(caught.value).startswith("image too large: ")


def test_the_pixel_limit_counts_what_is_decoded_so_a_big_jpeg_is_read_at_reduced_scale(monkeypatch):
    monkeypatch.setattr(featurize, "MAX_IMAGE_PIXELS", 1_000_000)
    pixels, width, height = featurize.decode_image(encode(fruit_like((2000, 1500)), "JPEG"))  # 3 Mpx, drafted
    assert pixels.shape == (224, 224, 3) and (width, height) == (2000, 1500)
    with pytest.raises(Image.DecompressionBombError, match="2000x1500 decodes to 3.0 Mpx"):
        featurize.decode_image(encode(fruit_like((2000, 1500)), "PNG"))  # no reduced-scale decoding for PNG


def phone_photo(fmt: str) -> bytes:
    """The fruit as a phone would store it (HEIC via pillow-heif's encoder, AVIF via Pillow's)."""
    return encode(fruit_like(), fmt, quality=90)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_phone_formats_decode_and_featurize(fmt):
    content = phone_photo(fmt)
    assert Image.open(io.BytesIO(content)).format == fmt
    pixels, width, height = featurize.decode_image(content)
    assert pixels.shape == (224, 224, 3) and (width, height) == (100, 100)
    assert pixels[2, 2].min() >= 235 and pixels[112, 112].mean() < 200  # white stays white, the disc dark
    reference, _, _ = featurize.decode_image(encode(fruit_like(), "PNG"))
    assert np.abs(pixels.astype(int) - reference).mean() < 4  # lossy, but the same photo

    contents = [content, big_png(9000, 8000), encode(fruit_like(), "JPEG")]
    batch = pa.RecordBatch.from_arrays(
        [pa.array(["a", "bomb", "c"]), pa.array(["s1", "s2", "s3"]), pa.array(contents, pa.binary())],
        names=["path", "sha256", "content"],
    )
    readable, unreadable = featurize.featurize_batch(batch, lambda b: np.ones((len(b), featurize.FEATURE_DIM)), 4)
    assert readable.column("path").to_pylist() == ["a", "c"]
    assert [(path, reason.split(":")[0]) for path, reason in unreadable] == [("bomb", "image too large")]


def test_parse_args_batch_id_from_the_lake_path_or_option_and_validation():
    args = featurize.parse_args(["--input", "s3://b/raw/batch=2024-03-05/", "--output", "s3://b/features/x/"])
    assert args.batch_id == "2024-03-05" and args.runtime == "litert"
    assert (args.output, args.quarantine) == ("s3://b/features/x/", "s3://b/features/x/_quarantine/")
    args = featurize.parse_args(["--input", "/in", "--output", "/out", "--batch-id", "2024-01-31"])
    assert args.batch_id == "2024-01-31"
    assert featurize.parse_args(["--input", "/in", "--output", "/out"]).batch_id is None
    # One image per call for LiteRT (fastest on one thread), batches for Keras; an explicit size wins.
    assert args.batch_size == 1
    assert featurize.parse_args(["--input", "/in", "--output", "/out", "--runtime", "keras"]).batch_size == 32
    assert featurize.parse_args(["--input", "/in", "--output", "/out", "--batch-size", "8"]).batch_size == 8
    assert args.input_format == "files"  # today's layout unless told: a folder of image files
    assert (
        featurize.parse_args(["--input", "/in", "--output", "/out", "--input-format", "bundles"]).input_format
        == "bundles"
    )
    sha = hashlib.sha256(b"w").hexdigest()
    assert (
        featurize.parse_args(
            ["--input", "/in", "--output", "/out", "--weights", "/w.h5", "--weights-sha256", sha.upper()]
        ).weights_sha256
        == sha
    )
    bad_options = (
        ["--batch-id", "2024-13-01"],
        ["--batch-size", "0"],
        ["--runtime", "onnx"],
        ["--input-format", "x"],
        ["--weights-sha256", sha],
        ["--weights", "/w.h5", "--weights-sha256", "abc"],
        ["--quarantine", "/out/"],
    )
    for bad in bad_options:
        with pytest.raises(SystemExit):
            featurize.parse_args(["--input", "/in", "--output", "/out", *bad])


# --------------------------------------------------------------------------------------------
# End to end on the real sample (960 photos, real weights): the shared `sample_features` run
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_rows(spark, sample_features):
    return read_committed(spark, sample_features).toPandas()


@pytest.mark.shared
@pytest.mark.slow
def test_sample_run_writes_every_photo_with_its_label_split_and_1280_features(
    spark, sample_features, sample_rows, sample_dir
):
    rows = sample_rows
    assert len(rows) == 960 and rows["path"].is_unique
    schema = {f.name: f.dataType.simpleString() for f in read_committed(spark, sample_features).schema}
    assert schema == {
        "path": "string",
        "label": "string",
        "split": "string",
        "features": "array<float>",
        "width": "int",
        "height": "int",
        "sha256": "string",
        "batch_id": "string",
    }
    assert rows["label"].nunique() == 24
    assert rows["split"].value_counts().to_dict() == {"Training": 720, "Test": 240}
    assert rows.groupby(["label", "split"]).size().unique().tolist() in ([30, 10], [10, 30])
    assert set(rows["batch_id"]) == {"2024-01-01"}
    assert set(zip(rows["width"], rows["height"])) == {(100, 100)}
    features = np.stack(rows["features"].to_numpy())
    assert features.shape == (960, 1280) and np.isfinite(features).all()
    assert features.min() >= 0  # ReLU6 then average pooling
    one = rows.iloc[0]
    local = Path(one["path"].removeprefix("file:"))
    assert local.parent.name == one["label"] and local.parent.parent.name == one["split"]
    assert one["sha256"] == hashlib.sha256(local.read_bytes()).hexdigest()


@pytest.mark.shared
@pytest.mark.slow
def test_sample_run_quarantines_the_manifest_and_reports_its_counts(spark, sample_features):
    metrics = run_metrics(sample_features)
    assert {k: metrics[k] for k in ("job", "batch_id", "seen", "featurized", "quarantined")} == {
        "job": "featurize",
        "batch_id": "2024-01-01",
        "seen": 961,
        "featurized": 960,
        "quarantined": 1,
    }
    committed = marker(sample_features)
    assert {k: committed[k] for k in ("job", "batch_id", "rows", "seen", "quarantined")} == {
        "job": "featurize",
        "batch_id": "2024-01-01",
        "rows": 960,
        "seen": 961,
        "quarantined": 1,
    }
    assert committed["location"] == jobio.run_uri(sample_features, metrics["run_id"])
    assert committed["quarantine_location"] == jobio.run_uri(sample_features + "/_quarantine", metrics["run_id"])
    assert marker(Path(sample_features) / "_quarantine")["rows"] == 1
    assert metrics["images_per_second"] > 0 and metrics["seconds"] > 0
    # Built once per Python worker (local[2]: at most a few), not once per batch or task.
    assert 1 <= metrics["worker_processes"] <= 4
    quarantine = read_committed(spark, f"{sample_features}/_quarantine").collect()
    assert [(Path(r.path).name, r.reason) for r in quarantine] == [("MANIFEST.txt", "not an image Pillow can decode")]
    assert [p.name for p in Path(sample_features).parent.iterdir()] == ["features"]  # nothing beside it
    assert sorted(p.name for p in Path(sample_features).iterdir() if not p.name.endswith(".crc")) == [
        "_committed.json",
        "_quarantine",
        f"run={metrics['run_id']}",
    ]


@pytest.mark.shared
@pytest.mark.slow
def test_features_separate_the_fruits(sample_rows):
    """Real ImageNet features: nearest Training centroid classifies Test photos (PROVENANCE.md
    measured 97.9 % with these weights, 77.9 % with random ones); wrong preprocessing, colour
    order or weights drop below the bar."""
    train = sample_rows[sample_rows["split"] == "Training"]
    test = sample_rows[sample_rows["split"] == "Test"]
    labels = sorted(train["label"].unique())
    centroids = np.stack([np.stack(train.loc[train["label"] == label, "features"]).mean(axis=0) for label in labels])
    x = np.stack(test["features"].to_numpy())
    predicted = np.array(labels)[np.argmin(((x[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)]
    assert (predicted == test["label"].to_numpy()).mean() >= 0.93


@pytest.mark.shared
@pytest.mark.slow
def test_litert_features_match_a_keras_model_on_real_photos(sample_rows, keras_home):
    """The job's default runtime (LiteRT flatbuffer converted from the broadcast model) against
    Keras' own MobileNetV2 with the same weights, on 2 photos per label."""
    picked = sample_rows.groupby("label").head(2)
    pixels = np.stack([featurize.decode_image(Path(p.removeprefix("file:")).read_bytes())[0] for p in picked["path"]])
    model = featurize.build_keras_model("imagenet")
    expected = model.predict(featurize.preprocess(pixels), verbose=0)
    got = np.stack(picked["features"].to_numpy())
    assert np.abs(got - expected).max() <= 1e-3
    assert np.abs(expected).max() > 0.5  # not comparing two vectors of zeros


@pytest.mark.shared
@pytest.mark.slow
def test_bundles_written_by_the_uploader_give_the_plain_files_features(
    spark, litert_payload, sample_dir, sample_rows, tmp_path
):
    """The whole sample bundled by fruits.upload into a lake, featurized with --input-format bundles:
    the same features, sizes and hashes as featurize on the plain files, the split kept. An empty
    photo never reaches a bundle: the upload rejects it with its reason."""
    from fruits import lake, storage, upload

    store = storage.LocalStore(tmp_path / "lake")
    upload.upload_new_images(store, storage.LocalStore(sample_dir), storage.file_uri(sample_dir), "2024-01-01")
    landing = tmp_path / "landing"
    (landing / "Training" / "Apple").mkdir(parents=True)
    (landing / "Training" / "Apple" / "empty.jpg").write_bytes(b"")
    second = upload.upload_new_images(store, storage.LocalStore(landing), storage.file_uri(landing), "2024-01-01")
    assert second["uploaded"] == 0 and {r: n for r, n in second["rejected"].items() if n} == {"empty": 1}
    raw = lake.raw_uri(store.root, "2024-01-01")
    assert len(storage.bundle_files(store, raw)) == 1

    metrics = run_job(
        spark,
        "--input",
        raw,
        "--input-format",
        "bundles",
        "--output",
        str(tmp_path / "features"),
        *payload_args(litert_payload),
    )
    assert (metrics["batch_id"], metrics["seen"], metrics["featurized"], metrics["quarantined"]) == (
        "2024-01-01",
        960,
        960,
        0,
    )
    spark_raw = raw.replace("file:///", "file:/")  # how Spark spells the photos' paths, bundled or not

    bundled = read_committed(spark, tmp_path / "features").toPandas()
    assert bundled["path"].str.startswith(spark_raw).all() and bundled["split"].notna().all()
    assert bundled["split"].value_counts().to_dict() == {"Training": 720, "Test": 240}

    def by_photo(rows: pd.DataFrame) -> pd.DataFrame:  # split/label/file, the same under both roots
        return rows.set_index(rows["path"].str.split("/").str[-3:].str.join("/")).sort_index()

    plain, ours = by_photo(sample_rows), by_photo(bundled)
    assert list(ours.index) == list(plain.index)
    for column in ("label", "split", "width", "height", "sha256"):
        assert ours[column].tolist() == plain[column].tolist(), column
    np.testing.assert_array_equal(np.stack(ours["features"].to_numpy()), np.stack(plain["features"].to_numpy()))

    # Row groups of 64 photos let Spark spread one 960-photo bundle over several tasks (the job's settings).
    sample_bundle = max(storage.bundle_files(store, raw), key=lambda name: len(store.read(raw + name)))
    sizes = featurize.read_bundles(spark, [raw + sample_bundle]).rdd.glom().map(len).collect()
    assert sum(sizes) == 960 and len([n for n in sizes if n]) >= 3, sizes


# --------------------------------------------------------------------------------------------
# Bad input, failures, reruns: files the tests generate, the real weights
# --------------------------------------------------------------------------------------------


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


GOOD = {
    "Training/Apple/photo.jpg": encode(fruit_like(), "JPEG"),
    "Training/Apple/CUTOUT.PNG": encode(transparent_cutout(), "PNG"),
    "Test/Kiwi/scan16.png": gray16(40000),
    "Test/Kiwi/print.JPEG": encode(fruit_like().convert("CMYK"), "JPEG"),
    "Test/Kiwi/anim.gif": encode(fruit_like().convert("P"), "GIF"),
}
BAD = {
    "Training/Apple/notes.txt": (b"not a photo\n", "not an image Pillow can decode"),
    "Training/Apple/empty.jpg": (b"", "empty file"),
    "Test/Kiwi/cut.jpg": (encode(fruit_like((300, 300)), "JPEG")[:1500], "truncated image"),
    "Test/Kiwi/damaged.png": (corrupt_png(), "corrupt image"),
}


def run_job(spark, *argv: str) -> dict:
    return featurize.run(spark, featurize.parse_args(list(argv)))


@pytest.mark.shared
@pytest.mark.slow
def test_bad_files_are_quarantined_with_reasons_and_nothing_vanishes(spark, litert_payload, tmp_path):
    write_files(tmp_path / "in", GOOD | {name: content for name, (content, _) in BAD.items()})
    metrics = run_job(
        spark,
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "features"),
        "--quarantine",
        str(tmp_path / "quarantine"),
        "--batch-id",
        "2024-02-29",
        "--batch-size",
        "2",
        *payload_args(litert_payload),
    )
    assert (metrics["seen"], metrics["featurized"], metrics["quarantined"]) == (9, 5, 4)
    assert metrics["model_payload"] == litert_payload["model_payload"]  # broadcast as published, not converted
    good = read_committed(spark, tmp_path / "features").toPandas()
    bad = read_committed(spark, tmp_path / "quarantine").toPandas()

    def relative(path):
        return path.split("/in/", 1)[1]

    assert sorted(map(relative, good["path"])) == sorted(GOOD)
    assert {relative(p): r.split(":")[0].split(" (")[0] for p, r in zip(bad["path"], bad["reason"])} == {
        name: reason for name, (_, reason) in BAD.items()
    }
    assert set(bad["batch_id"]) == {"2024-02-29"}
    assert all(len(v) == 1280 and np.isfinite(v).all() for v in good["features"])
    assert run_metrics(tmp_path / "features")["quarantined"] == 4
    assert marker(tmp_path / "quarantine")["rows"] == 4  # committed (first), with its own marker
    assert marker(tmp_path / "features")["quarantine_location"] == marker(tmp_path / "quarantine")["location"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features", "in", "quarantine"]


@pytest.mark.shared
@pytest.mark.slow
def test_a_failed_run_keeps_the_previous_output_and_a_rerun_replaces_it(spark, litert_payload, tmp_path):
    write_files(tmp_path / "in", {"Kiwi/a.jpg": GOOD["Training/Apple/photo.jpg"], "Kiwi/b.png": gray16(9000)})
    output = tmp_path / "features"
    common = ["--input", str(tmp_path / "in"), "--output", str(output), *payload_args(litert_payload)]
    run_job(spark, *common)
    first = (output / jobio.COMMIT_MARKER).read_text()
    first_run = marker(output)["location"]

    write_files(tmp_path / "in", {"Kiwi/c.jpg": GOOD["Training/Apple/photo.jpg"]})
    (tmp_path / "not-a-folder").write_text("a file where the quarantine folder should go")
    with pytest.raises(Exception, match="not-a-folder"):  # the quarantine, written after the features, fails
        run_job(spark, *common, "--quarantine", str(tmp_path / "not-a-folder" / "quarantine"))
    assert (output / jobio.COMMIT_MARKER).read_text() == first  # the previous output, whole
    assert read_committed(spark, output).count() == 2

    def runs():
        return sorted(p.name for p in output.iterdir() if p.name.startswith("run="))

    assert runs() == [first_run.rstrip("/").rsplit("/", 1)[1]]  # the failed run removed its own folder only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features", "in", "not-a-folder"]

    run_job(spark, *common)  # the rerun replaces, it does not append
    assert read_committed(spark, output).count() == 3
    assert run_metrics(output)["featurized"] == 3
    assert len(runs()) == 2  # the superseded run stays until remove_stale_runs' grace has passed


@pytest.mark.shared
@pytest.mark.slow
def test_no_readable_image_exits_non_zero_and_still_records_the_files(spark, litert_payload, tmp_path, caplog):
    write_files(tmp_path / "in", {name: content for name, (content, _) in BAD.items()})
    output = tmp_path / "features"
    code = featurize.main(["--input", str(tmp_path / "in"), "--output", str(output), *payload_args(litert_payload)])
    assert code == 3
    assert f"no readable image under {tmp_path / 'in'}: all 4 files quarantined" in caplog.text
    assert read_committed(spark, output / "_quarantine").count() == len(BAD)
    assert run_metrics(output)["featurized"] == 0
    assert marker(output)["rows"] == 0 and read_committed(spark, output).count() == 0  # committed, empty


ODD_FOLDERS = ("Training/Apple Braeburn", "Training/Crème brûlée", "Test/100% juice", "Test/#1 Kiwi & co")


@pytest.mark.shared
@pytest.mark.slow
def test_odd_names_count_once_and_only_the_empty_file_is_quarantined_with_checked_weights(
    spark, keras_home, sample_dir, tmp_path
):
    """Real photos under labels with spaces, unicode, '%', '#', '&', one 0-byte file beside them (issue 12):
    every photo featurized once, only the empty file quarantined; the run also loads --weights from
    ../shared checked against their sha256 computed here, and converts them: the payload it names is absent."""
    from fruits.cli.demo import WEIGHTS_FILE

    photos = sorted((sample_dir / "Training" / "Apple Braeburn").iterdir())[:2]
    for folder in ODD_FOLDERS:
        for i, photo in enumerate(photos):
            target = tmp_path / "in" / folder / (f"{i} % #{i} é.jpg" if "Kiwi" in folder else photo.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, target)
    (tmp_path / "in" / ODD_FOLDERS[0] / "empty photo.jpg").write_bytes(b"")
    sha256 = hashlib.sha256(WEIGHTS_FILE.read_bytes()).hexdigest()

    metrics = run_job(
        spark,
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "features"),
        "--weights",
        str(WEIGHTS_FILE),
        "--weights-sha256",
        sha256,
        "--batch-id",
        "2024-01-02",
        "--model-payload",
        str(tmp_path / "never-published.tflite"),
    )
    photo_count = len(ODD_FOLDERS) * len(photos)
    assert (metrics["weights"], metrics["weights_sha256"]) == (str(WEIGHTS_FILE), sha256)  # what was checked
    assert metrics["model_payload"] == "converted"  # no published payload: the checked weights, converted here
    assert (metrics["seen"], metrics["featurized"], metrics["quarantined"]) == (photo_count + 1, photo_count, 1)
    good = read_committed(spark, tmp_path / "features").toPandas()
    bad = read_committed(spark, tmp_path / "features" / "_quarantine").collect()
    empty = (f"{ODD_FOLDERS[0]}/empty photo.jpg", "empty file")
    assert [(r.path.split("/in/", 1)[1], r.reason) for r in bad] == [empty]
    assert good["path"].is_unique and len(good) == photo_count
    assert sorted(set(good["label"])) == sorted(folder.split("/")[1] for folder in ODD_FOLDERS)
    assert not set(good["path"]) & {r.path for r in bad}  # never featurized and quarantined both
    for path, sha in zip(good["path"], good["sha256"]):  # each path names the file it was read from
        assert hashlib.sha256(Path(path.removeprefix("file:")).read_bytes()).hexdigest() == sha


@pytest.mark.shared
def test_weights_that_are_not_the_recorded_ones_exit_4_before_anything_is_written(spark, tmp_path, caplog):
    from fruits.cli.demo import WEIGHTS_FILE

    weights = require_shared(WEIGHTS_FILE)
    write_files(tmp_path / "in", {"Kiwi/a.jpg": GOOD["Training/Apple/photo.jpg"]})
    wrong = hashlib.sha256(b"other weights").hexdigest()
    code = featurize.main(
        [
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(tmp_path / "features"),
            "--weights",
            str(weights),
            "--weights-sha256",
            wrong,
        ]
    )
    assert code == 4
    actual = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        (
            f"weights {weights} have sha256 {actual}, not the expected {wrong}: "
            "refusing to featurize with weights that are not the recorded ones"
        )
    ]
    assert not (tmp_path / "features").exists()


def test_a_model_payload_that_is_not_the_recorded_one_exits_4_before_anything_is_written(spark, tmp_path, caplog):
    write_files(tmp_path / "in", {"Kiwi/a.jpg": GOOD["Training/Apple/photo.jpg"]})
    payload = tmp_path / "model.tflite"
    payload.write_bytes(b"a flatbuffer someone else published")
    wrong = hashlib.sha256(b"the recorded one").hexdigest()
    argv = ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "features"), "--model-payload", str(payload)]
    code = featurize.main([*argv, "--model-payload-sha256", wrong])
    assert code == 4
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors and errors[0].startswith(f"model payload {payload} have sha256 ")
    assert not (tmp_path / "features").exists()


def test_missing_input_is_a_clear_error_not_a_stack_trace(spark, tmp_path, caplog):
    code = featurize.main(["--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "features")])
    assert code == 2
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        f"input path does not exist: {tmp_path / 'nowhere'}"
    ]
    assert not (tmp_path / "features").exists()


# --------------------------------------------------------------------------------------------
# Only committed bundles (issue 23 item 4): a killed upload attempt's leftover is never read
# --------------------------------------------------------------------------------------------


def killed_then_retried_upload(tmp_path: Path, photos: int = 5):
    """An upload attempt killed right after writing its first bundle, then retried (its leftover bundle stays:
    leftovers wait 24 h by design). Returns the store and the batch's raw URI."""
    from fruits import lake, storage, upload

    landing = tmp_path / "landing"
    write_files(
        landing, {f"Kiwi/p{i}.png": encode(Image.new("RGB", (8, 8), (i * 40, 9, 9)), "PNG") for i in range(photos)}
    )

    class KilledAfterFirstBundle(storage.LocalStore):
        def put(self, uri, data, sha256):
            if storage.is_bundle_name(uri.rsplit("/", 1)[1]) and any(
                storage.is_bundle_name(name) for name in storage.bundle_files(self, uri.rsplit("/", 1)[0] + "/")
            ):
                raise ConnectionError("killed after the first bundle")
            super().put(uri, data, sha256)

    store = storage.LocalStore(tmp_path / "lake")
    args = (storage.LocalStore(landing), storage.file_uri(landing), "2026-03-01")
    with pytest.raises(ConnectionError):
        upload.upload_new_images(KilledAfterFirstBundle(tmp_path / "lake"), *args, max_photos=2)
    upload.upload_new_images(store, *args, max_photos=2)
    raw = lake.raw_uri(store.root, "2026-03-01")
    named = {name for name in storage.read_batch_manifest(store, store.root, "2026-03-01").bundles}
    assert set(storage.bundle_files(store, raw)) - named, "the killed attempt's bundle is still there"
    return store, raw


def test_committed_bundles_are_the_ones_the_manifest_names(tmp_path):
    from conftest import StoreFiles

    from fruits import storage

    assert featurize.UPLOADS_MANIFEST == storage.UPLOADS_MANIFEST
    store, raw = killed_then_retried_upload(tmp_path)
    named = storage.read_batch_manifest(store, store.root, "2026-03-01").bundles
    assert featurize.committed_bundles(StoreFiles(store), raw) == sorted(raw + name for name in named)
    with pytest.raises(featurize.MissingInputError, match="no upload manifest"):
        featurize.committed_bundles(StoreFiles(store), raw.replace("2026-03-01", "2026-03-02"))
    # The ingest job's parts live in its run folder; nothing above or beside the batch is a bundle.
    assert featurize.is_batch_bundle_name("run=20261206T235117Z-2e369389/part-00000-4ada-c000.parquet")
    odd = ("../batch=2026-03-02/b.parquet", "x/b.parquet", "run=1/../b.parquet", "/b.parquet", "run=1/b.json")
    assert not any(featurize.is_batch_bundle_name(name) for name in odd)


def test_a_batch_of_bundles_from_before_and_after_the_ingest_pass_decoded_reads_each_photo_once(spark, tmp_path):
    """A rerun appends the ingest pass's bundles (pixels, no photo bytes) to a batch whose older bundles hold only
    the photos (binaryFile's columns): read together, an older row comes with its content and no pixels, a decoded
    one with its pixels and no content, and featurize_batch gives both the features of their one decode."""
    import pyarrow.parquet as pq

    photo = encode(fruit_like((400, 300)), "JPEG")
    image, width, height = featurize.decode_oriented(photo)
    old = pa.table(
        {
            "path": ["file:///b/Kiwi/old.jpg"],
            "modificationTime": pa.array([0], pa.timestamp("us")),
            "length": [len(photo)],
            "content": [photo],
        }
    )
    decoded = {"pixels": featurize.model_pixels(image).tobytes(), "derivative": featurize.derivative(image)}
    new = pa.table(
        {
            "path": ["file:///b/Kiwi/new.jpg"],
            "modificationTime": pa.array([0], pa.timestamp("us")),
            "length": [len(photo)],
            "content": pa.array([None], pa.binary()),
            "sha256": ["-"],
            "content_sha256": [hashlib.sha256(photo).hexdigest()],
            "pixels": [decoded["pixels"]],
            "derivative": [decoded["derivative"]],
            "width": pa.array([width], pa.int32()),
            "height": pa.array([height], pa.int32()),
        }
    )
    pq.write_table(old, tmp_path / "old.parquet")
    pq.write_table(new, tmp_path / "new.parquet")
    for keep_originals in (False, True):  # one scan, or a window's two: the same rows
        rows = featurize.read_bundles(
            spark, [str(tmp_path / n) for n in ("old.parquet", "new.parquet")], keep_originals
        )
        by_name = {r.path.rsplit("/", 1)[1]: r for r in rows.collect()}
        assert sorted(by_name) == ["new.jpg", "old.jpg"]
        assert by_name["old.jpg"].content == photo and by_name["old.jpg"].pixels is None
        assert by_name["new.jpg"].content is None and by_name["new.jpg"].pixels == decoded["pixels"]
    read = [by_name[name] for name in ("old.jpg", "new.jpg")]  # as mapInArrow hands them to the featurizer
    types = {"width": pa.int32(), "height": pa.int32()}  # the others are bytes
    arrow = pa.RecordBatch.from_pydict(
        {
            name: pa.array([r[name] for r in read], types.get(name, pa.binary()))
            for name in ("content", *featurize.DECODED_INPUT)
        }
        | {"path": pa.array([r.path for r in read]), "sha256": pa.array([r.content_sha256 or "-" for r in read])}
    )
    model = lambda b: np.repeat(b.mean(axis=(1, 2, 3))[:, None], featurize.FEATURE_DIM, axis=1)  # noqa: E731
    readable, unreadable = featurize.featurize_batch(arrow, model, 2, derivatives=True)
    assert not unreadable and readable.num_rows == 2
    features = readable.column("features").to_pylist()
    assert features[0] == features[1] and readable.column("width").to_pylist() == [width] * 2
    assert readable.column("derivative").to_pylist() == [decoded["derivative"]] * 2


def test_featurize_sees_one_row_per_photo_after_a_killed_and_retried_upload(spark, tmp_path):
    from fruits import storage

    store, raw = killed_then_retried_upload(tmp_path)
    rows = featurize.read_images(spark, raw, "bundles").select("path").toPandas()["path"]
    keys = storage.read_manifest(store, store.root, "2026-03-01")
    assert len(keys) == 5
    assert sorted(rows) == sorted(raw.replace("file:///", "file:/") + key for key in keys)


@pytest.mark.shared
@pytest.mark.slow
def test_originals_go_with_the_commit_and_a_rerun_with_new_photos_carries_the_featurized_ones(
    spark, litert_payload, tmp_path
):
    """fruits_original_retention_days 0: a batch's originals go once its committed features cover its manifest.
    A rerun that stores new photos (their originals kept: not covered) featurizes only those and carries the
    committed rows of the gone ones: every photo keeps exactly one features row and one derivative."""
    from fruits import lake, retention, storage, upload

    store, raw = killed_then_retried_upload(tmp_path)
    batch, root = "2026-03-01", store.root
    outputs = {name: lake.area_uri(root, name) + f"batch={batch}/" for name in ("features", "derived", "quarantine")}
    argv = ["--input", raw, "--input-format", "bundles", "--batch-id", batch, *payload_args(litert_payload)]
    argv += ["--output", outputs["features"], "--derived", outputs["derived"], "--quarantine", outputs["quarantine"]]
    assert run_job(spark, *argv)["featurized"] == 5
    assert retention.featurized_whole(store, root, batch)
    assert retention.remove_batch_originals(store, root, batch, owner="run-1") > 0
    assert not storage.bundle_files(store, raw) and storage.manifest_photo_count(store, root, batch) == 5

    landing = tmp_path / "landing"  # the rerun: the 5 photos again (duplicates) and 2 new ones
    write_files(landing, {f"Kiwi/new{i}.png": encode(Image.new("RGB", (8, 8), (9, i * 90, 9)), "PNG") for i in (1, 2)})
    upload.upload_new_images(store, storage.LocalStore(landing), storage.file_uri(landing), batch)
    assert storage.manifest_photo_count(store, root, batch) == 7
    assert not retention.featurized_whole(store, root, batch)  # the new photos are not covered: they stay
    assert retention.remove_batch_originals(store, root, batch, owner="run-2") is None
    assert storage.bundle_files(store, raw)

    metrics = run_job(spark, *argv)
    assert metrics["featurized"] == 2  # only the new bundle was read and decoded
    marker = lake.read_commit(store, outputs["features"])
    assert (marker["rows"], marker["carried"], marker["seen"]) == (7, 5, 7)
    paths = {name: sorted(read_committed(spark, uri).toPandas()["path"]) for name, uri in outputs.items()}
    keys = storage.read_manifest(store, root, batch)
    assert paths["features"] == paths["derived"] == sorted(raw.replace("file:///", "file:/") + key for key in keys)
    assert paths["quarantine"] == []
    assert retention.featurized_whole(store, root, batch)
    assert retention.remove_batch_originals(store, root, batch, owner="run-2") > 0


# --------------------------------------------------------------------------------------------
# Phone photos (issue 22): generated from the sample by benchmarks/phone_photos.py, cached in build/
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phones(sample_dir):
    from benchmarks import phone_photos

    photos = phone_photos.workload(jpeg=6, heic=2, mp48=1, sample_dir=sample_dir)
    return {f"{p.kind}-{p.index}": p for p in photos}


def exif_of(content: bytes) -> Image.Exif:
    return Image.open(io.BytesIO(content)).getexif()


@pytest.mark.shared
def test_generated_phone_photos_weigh_and_carry_what_phones_write(phones):
    from benchmarks import phone_photos

    for key, photo in phones.items():
        content = photo.path.read_bytes()
        image = Image.open(io.BytesIO(content))
        exif = image.getexif()
        megabytes = len(content) / 1e6
        if photo.kind == "jpeg":
            assert image.size == (4032, 3024) and 2.5 <= megabytes <= 3.5, (key, megabytes)
        elif photo.kind == "heic":
            assert 1.2 <= megabytes <= 2.5 and len(image.info["thumbnails"]) == 1, (key, megabytes)
        else:
            assert image.size == (8064, 6048), key
        assert exif[0x010F] in {make for make, _ in phone_photos.MAKERS}
        assert exif.get_ifd(phone_photos.EXIF_IFD)[phone_photos.TAG_BODY_SERIAL].startswith("SN")
        has_gps = bool(exif.get_ifd(phone_photos.GPS_IFD))
        assert has_gps != photo.gps_in_xmp and (b"GPSLatitude" in image.info.get("xmp", b"")) == photo.gps_in_xmp
    assert {p.orientation for p in phones.values() if p.kind == "jpeg"} == {1, 3, 6, 8}
    again, content = phone_photos.make_photo("jpeg", 1)  # made again in memory, not read from the cache
    assert again == phones["jpeg-1"] and content == phones["jpeg-1"].path.read_bytes()  # deterministic


@pytest.mark.shared
def test_a_12_mp_jpeg_is_decoded_at_an_eighth_and_a_heic_from_its_thumbnail_item(phones):
    image, width, height = featurize.open_for_model(phones["jpeg-0"].path.read_bytes())
    assert image.size == (504, 378) and (width, height) == (4032, 3024)  # libjpeg's 1/8 DCT scaling
    image, width, height = featurize.open_for_model(phones["jpeg48-0"].path.read_bytes())
    assert image.size == (1008, 756) and (width, height) == (8064, 6048)  # 48 MP: within MAX_IMAGE_PIXELS
    heic = phones["heic-0"].path.read_bytes()
    image, width, height = featurize.open_for_model(heic)
    assert image.size == (320, 240) and (width, height) == (4032, 3024)  # the embedded thumbnail, not 12 MP
    from_thumbnail, _, _ = featurize.decode_image(heic)
    full = Image.open(io.BytesIO(heic)).convert("RGB")  # libheif's full decode, the reference
    assert full.size == (4032, 3024)
    assert np.abs(from_thumbnail.astype(int) - featurize.model_pixels(full)).mean() < 6  # the same photo


@pytest.mark.shared
def test_a_heic_thumbnail_smaller_than_the_model_input_is_not_used(phones, monkeypatch):
    monkeypatch.setattr(featurize, "IMAGE_SIZE", 400)  # the 320 x 240 thumbnail no longer serves the model
    image, _, _ = featurize.open_for_model(phones["heic-0"].path.read_bytes())
    assert image.size == (4032, 3024)


@pytest.mark.shared
def test_a_photo_stored_rotated_decodes_like_its_upright_twin(phones):
    rotated = phones["jpeg-1"]
    assert rotated.orientation == 6 and rotated.displayed_size == (3024, 4032)
    content = rotated.path.read_bytes()
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(content)))
    twin = encode(upright, "JPEG", quality=90)  # upright pixels, no orientation tag
    pixels, width, height = featurize.decode_image(content)
    reference, *size = featurize.decode_image(twin)
    assert (width, height) == tuple(size) == (3024, 4032)
    assert np.abs(pixels.astype(int) - reference).mean() < 3
    untagged, _, _ = featurize.decode_image(encode(Image.open(io.BytesIO(content)), "JPEG", quality=90))
    assert np.abs(untagged.astype(int) - reference).mean() > 3 * np.abs(pixels.astype(int) - reference).mean()


@pytest.mark.shared
def test_phone_photos_in_a_batch_truncated_and_bomb_quarantined_derivatives_hold_no_metadata(phones):
    names = ["jpeg-1", "heic-1", "jpeg48-0", "jpeg-4"]
    contents = [phones[name].path.read_bytes() for name in names]
    truncated = phones["jpeg-0"].path.read_bytes()[:1_000_000]
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array([*names, "truncated", "bomb"]),
            pa.array([f"s{i}" for i in range(6)]),
            pa.array([*contents, truncated, big_png(9000, 8000)], pa.binary()),
        ],
        names=["path", "sha256", "content"],
    )
    readable, unreadable = featurize.featurize_batch(
        batch, lambda b: np.ones((len(b), featurize.FEATURE_DIM)), 4, derivatives=True
    )
    assert readable.column("path").to_pylist() == names
    assert [(path, reason.split(":")[0]) for path, reason in unreadable] == [
        ("truncated", "truncated image"),
        ("bomb", "image too large"),
    ]
    for row in readable.to_pylist():
        kept = Image.open(io.BytesIO(row["derivative"]))
        assert kept.format == "JPEG" and max(kept.size) <= featurize.DERIVATIVE_BOX
        assert min(kept.size) >= featurize.IMAGE_SIZE  # re-featurizable at the model's size
        assert (kept.width > kept.height) == (row["width"] > row["height"])  # upright, as displayed
        assert not kept.getexif() and "xmp" not in kept.info
        assert b"GPS" not in row["derivative"] and b"Exif" not in row["derivative"] and b"SN0" not in row["derivative"]


@pytest.mark.shared
@pytest.mark.slow
def test_a_phone_night_features_rotated_photos_like_upright_ones_and_keeps_clean_derivatives(
    spark, keras_home, phones, tmp_path
):
    rotated = phones["jpeg-1"].path.read_bytes()
    upright = encode(ImageOps.exif_transpose(Image.open(io.BytesIO(rotated))), "JPEG", quality=90)
    write_files(
        tmp_path / "in",
        {
            "Kiwi/rotated.jpg": rotated,
            "Kiwi/upright.jpg": upright,
            "Kiwi/phone.heic": phones["heic-0"].path.read_bytes(),
            "Kiwi/big.jpg": phones["jpeg48-0"].path.read_bytes(),
            "Kiwi/cut.jpg": phones["jpeg-0"].path.read_bytes()[:1_000_000],
        },
    )
    derived = str(tmp_path / "derived")
    common = ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "features"), "--derived", derived]
    metrics = run_job(spark, *common, "--batch-id", "2024-05-01")
    assert (metrics["featurized"], metrics["quarantined"], metrics["derived"]) == (4, 1, derived)
    rows = read_committed(spark, tmp_path / "features").toPandas()
    assert "derivative" not in rows.columns  # the features stay compact: the PCA reads them every night
    kept = read_committed(spark, tmp_path / "derived").toPandas()
    assert sorted(kept["path"]) == sorted(rows["path"]) and list(kept.columns) == ["path", "sha256", "derivative"]
    rows = rows.merge(kept[["path", "derivative"]], on="path")
    by_name = {path.rsplit("/", 1)[1]: row for path, row in zip(rows["path"], rows.to_dict("records"))}
    a, b = (np.asarray(by_name[name]["features"]) for name in ("rotated.jpg", "upright.jpg"))
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.98  # the tag was applied before the model
    assert (by_name["rotated.jpg"]["width"], by_name["rotated.jpg"]["height"]) == (3024, 4032)
    for row in by_name.values():
        assert not Image.open(io.BytesIO(row["derivative"])).getexif() and b"GPS" not in row["derivative"]
    quarantined = read_committed(spark, tmp_path / "features" / "_quarantine")
    assert [r.reason.split(":")[0] for r in quarantined.collect()] == ["truncated image"]


def test_a_rerun_after_the_originals_went_carries_the_committed_rows_and_without_features_says_why(tmp_path):
    """Originals go only once committed features cover them (fruits.retention): a rerun then reads the bundles
    still there and carries the committed rows of the gone ones; with no committed features, a clear error."""
    from conftest import StoreFiles, commit_output

    from fruits import lake

    store, raw = killed_then_retried_upload(tmp_path)
    files, output = StoreFiles(store), lake.features_uri(store.root, "2026-03-01")
    named = featurize.committed_bundles(files, raw)
    names = [uri[len(raw) :] for uri in named]
    assert len(named) > 1 and featurize.bundles_to_featurize(files, raw, output) == (named, names, False)
    store.delete(named[0])
    with pytest.raises(featurize.MissingInputError, match=f"1 of the {len(named)} bundles .* no committed features"):
        featurize.bundles_to_featurize(files, raw, output)
    commit_output(store, output, {"part-0.parquet": b"features"}, {"rows": 5})
    assert featurize.bundles_to_featurize(files, raw, output) == (named[1:], names, True)
    for uri in named[1:]:
        store.delete(uri)
    assert featurize.bundles_to_featurize(files, raw, output) is None


def test_the_job_reruns_a_batch_whose_originals_went_as_a_no_op_before_loading_any_model(spark, tmp_path, caplog):
    from conftest import StoreFiles, commit_output

    from fruits import lake

    store, raw = killed_then_retried_upload(tmp_path)
    output = lake.features_uri(store.root, "2026-03-01")
    for uri in featurize.committed_bundles(StoreFiles(store), raw):
        store.delete(uri)
    marker = commit_output(store, output, {"part-0.parquet": b"features"}, {"rows": 5})
    args = ["--input", raw, "--input-format", "bundles", "--output", output, "--weights", str(tmp_path / "none.h5")]
    with caplog.at_level("INFO"):
        assert featurize.main(args) == 0  # no weights at that path: no model was loaded
    assert lake.read_commit(store, output) == marker
    assert any("nothing to featurize again" in r.getMessage() for r in caplog.records)
