"""fruits.erase: one photo and every row derived from it leave the lake (its bundle's row, features,
quarantine, PCA reduced output, the PCA CSV), every S3 version included, nothing else changes, and a dry
run changes nothing. `build_lake` lays photos out as one object each (lakes from before bundles);
`upload_bundled` bundles them as the uploader does now."""

from __future__ import annotations

import functools
import hashlib
import io
import json
from pathlib import Path

import boto3
import lakefiles
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from fruits import lake, storage, upload
from fruits.cli.erase import main
from fruits.erase import erase

B21, B22 = "2026-11-21", "2026-11-22"
# key under raw/ -> (label, content); "copy" is the same photo uploaded again in a later batch.
PHOTOS = {
    f"batch={B21}/Apple Braeburn/apple.jpg": ("Apple Braeburn", b"apple-bytes"),
    f"batch={B21}/Banana/banana.jpg": ("Banana", b"banana-bytes"),
    f"batch={B22}/Kiwi/kiwi, green.jpg": ("Kiwi", b"kiwi-bytes"),  # a comma: quoted in the CSV
    f"batch={B22}/Apple Braeburn/copy.jpg": ("Apple Braeburn", b"apple-bytes"),
}
BROKEN = f"batch={B22}/Lemon/broken.jpg"
SPARK_METADATA = {b"org.apache.spark.sql.parquet.row.metadata": b'{"type":"struct"}'}

FEATURES_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("label", pa.string()),
        ("split", pa.string()),
        ("features", pa.list_(pa.float32())),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("sha256", pa.string()),
        ("batch_id", pa.string()),
    ],
    metadata=SPARK_METADATA,
)
REDUCED_SCHEMA = pa.schema(
    [("path", pa.string()), ("label", pa.string()), ("split", pa.string()), ("pca", pa.list_(pa.float32()))]
)


def _parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _raw_key(name: str) -> str:
    batch = name.split("/")[0].removeprefix("batch=")
    return lake.raw_uri("", batch).lstrip("/") + name.split("/", 1)[1]


def _relative(uri: str) -> str:
    return uri.lstrip("/")


def build_lake(write, uri_of) -> dict[str, str]:
    """The featurize/PCA outputs of two batches, through `write(key, bytes)`; row paths are
    `uri_of(key)`, spelled as Spark spells them. Returns {photo name: row path}."""
    paths = {name: uri_of(_raw_key(name)) for name in [*PHOTOS, BROKEN]}
    contents = {**{name: content for name, (_, content) in PHOTOS.items()}, BROKEN: b"\xff\xd8 truncated"}
    for name, content in contents.items():
        write(_raw_key(name), content)
    for batch in (B21, B22):  # the uploader's manifests: {key in the batch: sha256}
        files = {
            n.split("/", 1)[1]: hashlib.sha256(c).hexdigest()
            for n, c in contents.items()
            if n.startswith(f"batch={batch}/")
        }
        write(_relative(storage.batch_manifest_uri("", batch)), json.dumps({"batch": batch, "files": files}).encode())
    for batch in (B21, B22):
        names = [n for n in PHOTOS if n.startswith(f"batch={batch}")]
        rows = {
            "path": [paths[n] for n in names],
            "label": [PHOTOS[n][0] for n in names],
            "split": ["Training"] * len(names),
            "features": [[float(i), 1.0, 2.0, 3.0] for i in range(len(names))],
            "width": [100] * len(names),
            "height": [100] * len(names),
            "sha256": [hashlib.sha256(PHOTOS[n][1]).hexdigest() for n in names],
            "batch_id": [batch] * len(names),
        }
        features = _relative(lake.features_uri("", batch))
        write(features + "part-00000-abc.snappy.parquet", _parquet(pa.Table.from_pydict(rows, schema=FEATURES_SCHEMA)))
        write(features + "_SUCCESS", b"")
        write(features + "_job_metrics.json", json.dumps({"seen": len(names)}).encode())
    write(
        _relative(lake.quarantine_uri("", B22)) + "part-00000.parquet",
        _parquet(pa.table({"path": [paths[BROKEN]], "reason": ["truncated JPEG"]})),
    )
    pca = _relative(lake.legacy_pca_uri("", B22))
    write(
        pca + "reduced/part-00000.parquet",
        _parquet(
            pa.Table.from_pydict(
                {
                    "path": [paths[n] for n in PHOTOS],
                    "label": [PHOTOS[n][0] for n in PHOTOS],
                    "split": ["Training"] * len(PHOTOS),
                    "pca": [[0.5, -0.5]] * len(PHOTOS),
                },
                schema=REDUCED_SCHEMA,
            )
        ),
    )
    csv_lines = ["path,label,pc_1,pc_2\n"] + [
        (f'"{paths[n]}"' if "," in paths[n] else paths[n]) + f",{PHOTOS[n][0]},0.5,-0.5\n" for n in PHOTOS
    ]
    write(pca + "pca_matrix.csv", "".join(csv_lines).encode())
    # The fitted model: Spark ML's own Parquet, no per-photo row.
    write(pca + "model/data/part-00000.parquet", _parquet(pa.table({"k": [2], "pc": [[1.0, 0.0]]})))
    return paths


@pytest.fixture
def local_lake(tmp_path):
    root = tmp_path / "lake"

    def write(key: str, data: bytes) -> None:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)

    paths = build_lake(write, lambda key: f"file:{root / key}")  # Spark: file:/abs/path
    return root, paths


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _column(table_bytes: bytes, column: str = "path") -> list:
    return pq.read_table(io.BytesIO(table_bytes)).column(column).to_pylist()


def test_erase_by_key_removes_the_photo_and_its_rows_and_nothing_else(local_lake):
    root, paths = local_lake
    banana = f"batch={B21}/Banana/banana.jpg"
    before = _snapshot(root)
    report = erase(root.as_uri(), _raw_key(banana))
    after = _snapshot(root)

    assert report["raw_objects_deleted"] == [_raw_key(banana)]
    assert _raw_key(banana) not in after
    features = _relative(lake.features_uri("", B21)) + "part-00000-abc.snappy.parquet"
    assert _column(after[features]) == [paths[f"batch={B21}/Apple Braeburn/apple.jpg"]]
    table = pq.read_table(io.BytesIO(after[features]))
    assert table.schema.equals(FEATURES_SCHEMA) and table.schema.metadata == SPARK_METADATA
    reduced = _relative(lake.legacy_pca_uri("", B22)) + "reduced/part-00000.parquet"
    assert paths[banana] not in _column(after[reduced]) and len(_column(after[reduced])) == 3
    csv_key = _relative(lake.legacy_pca_uri("", B22)) + "pca_matrix.csv"
    before_lines, after_lines = before[csv_key].decode().splitlines(), after[csv_key].decode().splitlines()
    assert after_lines == [line for line in before_lines if not line.startswith(paths[banana])]
    assert len(after_lines) == len(before_lines) - 1
    manifest = _relative(storage.batch_manifest_uri("", B21))
    assert json.loads(after[manifest])["files"] == {
        "Apple Braeburn/apple.jpg": hashlib.sha256(b"apple-bytes").hexdigest()
    }
    assert {item["key"]: item["rows_removed"] for item in report["files_rewritten"]} == {
        reduced: 1,
        csv_key: 1,
        features: 1,
        manifest: 1,
    }
    assert report["rows_removed"] == 4
    # Every other file is byte for byte what it was; no temporary is left behind.
    changed = {key for key in before if before[key] != after.get(key)}
    assert changed == {_raw_key(banana), features, reduced, csv_key, manifest}
    # New: the erased hash (later uploads refuse it) and the batch's lock, released.
    assert set(after) == set(before) - {_raw_key(banana)} | {"index/erased.json", f"locks/batch={B21}.json"}
    assert json.loads(after["index/erased.json"])["sha256s"] == [hashlib.sha256(b"banana-bytes").hexdigest()]
    assert json.loads(after[f"locks/batch={B21}.json"])["released"] is True


def test_erase_by_sha256_finds_every_copy_in_every_batch(local_lake):
    root, paths = local_lake
    sha = hashlib.sha256(b"apple-bytes").hexdigest()
    report = erase(str(root), sha)  # a plain folder path works as the root too
    originals = [f"batch={B21}/Apple Braeburn/apple.jpg", f"batch={B22}/Apple Braeburn/copy.jpg"]
    assert sorted(report["raw_objects_deleted"]) == sorted(_raw_key(n) for n in originals)
    assert report["rows_removed"] == 2 + 2 + 2 + 2  # features (two batches), reduced, csv, manifests
    remaining = pq.read_table(root / "features").column("path").to_pylist()  # the dataset still reads
    assert sorted(remaining) == sorted(
        [paths[f"batch={B21}/Banana/banana.jpg"], paths[f"batch={B22}/Kiwi/kiwi, green.jpg"]]
    )


def test_erase_a_quoted_csv_line_and_a_quarantined_photo_by_uri(local_lake):
    root, paths = local_lake
    kiwi = f"batch={B22}/Kiwi/kiwi, green.jpg"
    report = erase(root.as_uri(), paths[kiwi])  # the URI as the `path` column holds it (never percent-decoded)
    assert "kiwi, green.jpg" not in (root / _relative(lake.legacy_pca_uri("", B22)) / "pca_matrix.csv").read_text()
    assert report["rows_removed"] == 4
    # A quarantined photo has no features row: its sha256 is found through the upload manifest.
    report = erase(root.as_uri(), hashlib.sha256(b"\xff\xd8 truncated").hexdigest())
    quarantine = root / _relative(lake.quarantine_uri("", B22)) / "part-00000.parquet"
    assert pq.read_table(quarantine).num_rows == 0 and pq.read_table(quarantine).schema.names == ["path", "reason"]
    assert report["raw_objects_deleted"] == [_raw_key(BROKEN)]
    assert report["rows_removed"] == 2  # the quarantine row, the manifest entry


def test_dry_run_reports_the_same_and_changes_nothing(local_lake, tmp_path):
    root, _ = local_lake
    banana = _raw_key(f"batch={B21}/Banana/banana.jpg")
    before = _snapshot(root)
    dry = erase(root.as_uri(), banana, dry_run=True)
    assert _snapshot(root) == before
    real = erase(root.as_uri(), banana)
    assert {k: v for k, v in dry.items() if k != "dry_run"} == {k: v for k, v in real.items() if k != "dry_run"}
    assert dry["dry_run"] is True and real["dry_run"] is False


def test_bad_targets_get_a_clear_error_and_erase_nothing(local_lake, capsys):
    root, _ = local_lake
    before = _snapshot(root)
    assert main(["--root", root.as_uri(), "--path", _raw_key(f"batch={B21}/Cherry/none.jpg")]) == 1
    assert "nothing erased" in capsys.readouterr().err
    assert main(["--root", root.as_uri(), "--path", "features/batch=2026-11-21/part-00000-abc.snappy.parquet"]) == 1
    assert "is not a photo under raw/" in capsys.readouterr().err
    assert main(["--root", root.as_uri(), "--path", "file:///elsewhere/raw/x.jpg"]) == 1
    assert "is not under the lake root" in capsys.readouterr().err
    assert main(["--root", "ftp://lake", "--path", "raw/x.jpg"]) == 1
    after = _snapshot(root)
    assert {k: v for k, v in after.items() if not k.startswith("locks/")} == before  # a lock taken and released
    assert all(json.loads(v)["released"] for k, v in after.items() if k.startswith("locks/"))


def test_cli_prints_the_report_and_a_rerun_finds_nothing(local_lake, capsys):
    root, _ = local_lake
    banana = _raw_key(f"batch={B21}/Banana/banana.jpg")
    assert main(["--root", root.as_uri(), "--path", banana]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["raw_objects_deleted"] == [banana] and report["rows_removed"] == 4
    assert main(["--root", root.as_uri(), "--path", banana]) == 1  # already erased: said so, not "done"


BUCKET = "fruits-lake-erase-test"


def _versioned_encrypted_bucket(s3) -> str:
    """The lake bucket as infra/ makes it (versioned, SSE-KMS by default); returns the key's ARN."""
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    key_arn = boto3.client("kms", region_name="eu-west-3").create_key()["KeyMetadata"]["Arn"]
    s3.put_bucket_encryption(
        Bucket=BUCKET,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}}]
        },
    )
    return key_arn


def _versions(s3, key: str) -> list[dict]:
    answer = s3.list_object_versions(Bucket=BUCKET, Prefix=key)
    return [v for v in answer.get("Versions", []) + answer.get("DeleteMarkers", []) if v["Key"] == key]


def test_s3_lake_every_version_of_the_photo_and_of_the_old_rows_is_gone():
    bucket = BUCKET
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-3")
        key_arn = _versioned_encrypted_bucket(s3)

        def write(key: str, data: bytes) -> None:
            s3.put_object(Bucket=bucket, Key=key, Body=data)

        paths = build_lake(write, lambda key: f"s3://{bucket}/{key}")
        banana = f"batch={B21}/Banana/banana.jpg"
        features = _relative(lake.features_uri("", B21)) + "part-00000-abc.snappy.parquet"
        # Older versions that also hold the photo: a second upload of it, a rerun of featurize.
        write(_raw_key(banana), PHOTOS[banana][1])
        write(features, s3.get_object(Bucket=bucket, Key=features)["Body"].read())

        report = erase(f"s3://{bucket}", paths[banana], s3_client=s3)
        versions = functools.partial(_versions, s3)

        assert report["raw_objects_deleted"] == [_raw_key(banana)] and versions(_raw_key(banana)) == []
        (only,) = versions(features)
        body = s3.get_object(Bucket=bucket, Key=features, VersionId=only["VersionId"])["Body"].read()
        assert _column(body) == [paths[f"batch={B21}/Apple Braeburn/apple.jpg"]]
        assert report["rows_removed"] == 4
        # Rewritten with the bucket's own key (the bucket policy refuses any other).
        head = s3.head_object(Bucket=bucket, Key=features)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key_arn)
        # Untouched photos keep their versions.
        apple = _raw_key(f"batch={B21}/Apple Braeburn/apple.jpg")
        assert len(versions(apple)) == 1


# --- photos in bundles (the uploader's layout) ---------------------------------------------------------

B23 = "2026-11-23"


# Uploaded 2 per bundle, in key order: {kiwi, apple} share one bundle, banana has one of its own.
def _jpeg(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, "JPEG")
    return buffer.getvalue()


BUNDLED = {
    "Test/Kiwi/kiwi.jpg": _jpeg((1, 2, 3)),
    "Training/Apple Braeburn/apple.jpg": _jpeg((4, 5, 6)),
    "Training/Banana/banana.jpg": _jpeg((7, 8, 9)),
}


def upload_bundled(store: storage.Store, tmp_path: Path, spark_path) -> dict[str, str]:
    """BUNDLED uploaded into batch B23 as the DAG uploads it, and its features rows (paths spelled
    `spark_path(uri)`, as featurize spells them); returns {key: photo URI}."""
    landing = tmp_path / "landing"
    for key, content in BUNDLED.items():
        (landing / key).parent.mkdir(parents=True, exist_ok=True)
        (landing / key).write_bytes(content)
    upload.upload_new_images(store, storage.LocalStore(landing), storage.file_uri(landing), B23, max_photos=2)
    uris = {key: lake.raw_uri(store.root, B23) + key for key in BUNDLED}
    rows = {
        "path": [spark_path(uri) for uri in uris.values()],
        "label": [k.split("/")[1] for k in BUNDLED],
        "split": [k.split("/")[0] for k in BUNDLED],
        "features": [[1.0, 2.0]] * 3,
        "width": [100] * 3,
        "height": [100] * 3,
        "sha256": [hashlib.sha256(c).hexdigest() for c in BUNDLED.values()],
        "batch_id": [B23] * 3,
    }
    data = _parquet(pa.Table.from_pydict(rows, schema=FEATURES_SCHEMA))
    store.put(lake.features_uri(store.root, B23) + "part-00000.parquet", data, "")
    return uris


def _bundle_manifest(read) -> dict[str, list[str]]:
    return json.loads(read(_relative(storage.batch_manifest_uri("", B23))))["bundles"]


def _pair_and_single(bundles: dict[str, list[str]]) -> tuple[str, str]:
    return tuple(sorted(bundles, key=lambda name: -len(bundles[name])))


def test_erase_inside_a_bundle_rewrites_it_without_the_photo_and_an_emptied_bundle_goes(local_lake, tmp_path, capsys):
    root, _ = local_lake
    uris = upload_bundled(storage.LocalStore(root), tmp_path, lambda uri: uri.replace("file:///", "file:/"))
    raw = _relative(lake.raw_uri("", B23))
    pair, single = _pair_and_single(_bundle_manifest(lambda key: (root / key).read_bytes()))
    before = _snapshot(root)

    report = erase(root.as_uri(), f"raw/batch={B23}/Training/Apple Braeburn/apple.jpg")
    after = _snapshot(root)
    kept = pq.read_table(io.BytesIO(after[raw + pair]))
    assert kept.to_pylist() == [
        row
        for row in pq.read_table(io.BytesIO(before[raw + pair])).to_pylist()
        if row["path"] == uris["Test/Kiwi/kiwi.jpg"]
    ]
    assert kept.schema.equals(storage.bundle_schema()) and kept["content"].to_pylist() == [
        BUNDLED["Test/Kiwi/kiwi.jpg"]
    ]
    manifest = json.loads(after[raw + storage.UPLOADS_MANIFEST])
    assert sorted(manifest["files"]) == ["Test/Kiwi/kiwi.jpg", "Training/Banana/banana.jpg"]
    assert manifest["bundles"] == {pair: ["Test/Kiwi/kiwi.jpg"], single: ["Training/Banana/banana.jpg"]}
    features = _relative(lake.features_uri("", B23)) + "part-00000.parquet"
    assert {item["key"]: (item["rows_removed"], item["rows_left"]) for item in report["files_rewritten"]} == {
        raw + pair: (1, 1),
        features: (1, 2),
        raw + storage.UPLOADS_MANIFEST: (1, 2),
        raw + storage.INGESTION_REPORT: (1, 2),
    }
    assert report["raw_objects_deleted"] == []  # the photo had no object of its own
    assert (
        {key for key in before if before[key] != after.get(key)}
        == {
            raw + pair,
            features,
            raw + storage.UPLOADS_MANIFEST,
            raw + storage.INGESTION_REPORT,
            raw + lakefiles.INGESTION_COUNTS,  # the report's counts follow it
            "index/sha256/" + (hashlib.sha256(BUNDLED["Training/Apple Braeburn/apple.jpg"]).hexdigest()[:3] + ".bin"),
        }
    )
    ingestion = json.loads((root / raw / storage.INGESTION_REPORT).read_text())["files"]
    counts = json.loads((root / raw / lakefiles.INGESTION_COUNTS).read_text())["landing"]
    assert counts == lakefiles.outcome_counts(ingestion) and counts["seen"] == 2
    # ... and the landing file it came from is gone (it would come back the next night otherwise).
    assert report["landing_files_deleted"] == [
        storage.file_uri(tmp_path / "landing" / "Training/Apple Braeburn/apple.jpg")
    ]
    assert not (tmp_path / "landing" / "Training/Apple Braeburn/apple.jpg").exists()

    # A photo alone in its bundle: the bundle goes, and its manifest entry with it.
    report = erase(root.as_uri(), uris["Training/Banana/banana.jpg"])
    assert report["raw_objects_deleted"] == [raw + single] and not (root / raw / single).exists()
    assert _bundle_manifest(lambda key: (root / key).read_bytes()) == {pair: ["Test/Kiwi/kiwi.jpg"]}
    # A bundle is not a photo: naming one is refused, not a way to erase 1,000 photos at once.
    assert main(["--root", root.as_uri(), "--path", raw + pair]) == 1
    assert "is a bundle of photos, not a photo" in capsys.readouterr().err


def test_s3_erase_inside_a_bundle_leaves_no_version_holding_the_photo(tmp_path):
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-3")
        key_arn = _versioned_encrypted_bucket(s3)
        uris = upload_bundled(storage.S3Store(s3, BUCKET), tmp_path, lambda uri: uri)
        raw = _relative(lake.raw_uri("", B23))

        def read(key):
            return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()

        pair, single = _pair_and_single(_bundle_manifest(read))

        report = erase(f"s3://{BUCKET}", uris["Test/Kiwi/kiwi.jpg"], s3_client=s3)
        (only,) = _versions(s3, raw + pair)  # the version that held the kiwi is gone
        body = s3.get_object(Bucket=BUCKET, Key=raw + pair, VersionId=only["VersionId"])["Body"].read()
        assert pq.read_table(io.BytesIO(body))["path"].to_pylist() == [uris["Training/Apple Braeburn/apple.jpg"]]
        head = s3.head_object(Bucket=BUCKET, Key=raw + pair)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key_arn)
        assert report["rows_removed"] == 4  # bundle, features, manifest, ingestion report

        erase(f"s3://{BUCKET}", hashlib.sha256(BUNDLED["Training/Banana/banana.jpg"]).hexdigest(), s3_client=s3)
        assert _versions(s3, raw + single) == []
        assert _bundle_manifest(read) == {pair: ["Training/Apple Braeburn/apple.jpg"]}


def test_the_csv_parts_spark_writes_lose_the_photos_rows(tmp_path):
    """pca.py writes the analysts' CSV as Spark does, parts under pca_matrix/ (plus hidden .crc files): each
    part holding the photo is rewritten without its record; the committed output stays readable."""
    from conftest import commit_output

    root = tmp_path / "lake"
    root.mkdir()
    store = storage.LocalStore(root)
    raw = lake.raw_uri(store.root, B22)
    kept, gone = raw + "Kiwi/kept.jpg", raw + "Kiwi/erased, by request.jpg"
    store.put(raw + "Kiwi/erased, by request.jpg", b"photo", "-")
    reduced = lake.pca_reduced_uri(store.root, 1, B22)
    csv_part = f"{lake.PCA_CSV_FOLDER}/part-00000-5e1f-c000.csv"
    commit_output(
        store,
        reduced,
        {
            f"{lake.PCA_REDUCED_FOLDER}/part-00000-5e1f-c000.snappy.parquet": _parquet(
                pa.Table.from_pydict(
                    {"path": [kept, gone], "label": ["Kiwi"] * 2, "split": ["Training"] * 2, "pca": [[0.5], [0.25]]},
                    schema=REDUCED_SCHEMA,
                )
            ),
            csv_part: f'path,label,pc_1\n{kept},Kiwi,0.5\n"{gone}",Kiwi,0.25\n'.encode(),
            f"{lake.PCA_CSV_FOLDER}/.part-00000-5e1f-c000.csv.crc": b"crc",
            f"{lake.PCA_CSV_FOLDER}/_SUCCESS": b"",
            lake.PCA_REPORT_FILE: b"{}",
        },
    )
    report = erase(store.root, gone)
    (part,) = [uri for uri in lake.committed_files(store, reduced) if uri.endswith(".csv")]
    assert store.read(part).decode() == f"path,label,pc_1\n{kept},Kiwi,0.5\n"
    rewritten = {
        item["key"].rsplit("/", 2)[-2] + "/" + item["key"].rsplit("/", 1)[-1] for item in report["files_rewritten"]
    }
    assert csv_part in rewritten and f"{lake.PCA_REDUCED_FOLDER}/part-00000-5e1f-c000.snappy.parquet" in rewritten


def test_the_lake_names_the_pca_outputs_as_the_job_writes_them():
    """The cluster ships spark_jobs/ only: pca.py keeps its own copy of the names erasure and the matrix read."""
    import pca

    assert (pca.REDUCED_FOLDER, pca.CSV_FOLDER, pca.REPORT_FILE, pca.PLOT_FILE) == (
        lake.PCA_REDUCED_FOLDER,
        lake.PCA_CSV_FOLDER,
        lake.PCA_REPORT_FILE,
        lake.PCA_PLOT_FILE,
    )


@pytest.mark.slow
def test_spark_still_reads_a_local_output_erasure_rewrote(tmp_path, spark):
    """Spark writes a local output with a hidden .crc per file; a rewritten file must not keep the old one
    (Hadoop's local file system would refuse the new content with a ChecksumException)."""
    root = tmp_path / "lake"
    store = storage.LocalStore(root)
    raw = lake.raw_uri(store.root, B22)
    photos = [raw + "Kiwi/a.jpg", raw + "Kiwi/b.jpg"]
    store.put(photos[1], b"photo-b", "-")  # a photo stored as its own object (lakes from before bundles)
    features = lake.features_uri(store.root, B22)
    spark.createDataFrame([(p, "Kiwi") for p in photos], "path string, label string").coalesce(1).write.parquet(
        features + "run=r1"
    )
    assert [p for p in (root / "features").rglob("*.crc")]  # what Spark leaves beside its files
    report = erase(store.root, photos[1])
    assert report["rows_removed"] == 1
    assert [r.path for r in spark.read.parquet(features + "run=r1").collect()] == [photos[0]]


def test_erase_removes_the_photo_s_derivative_too(local_lake):
    """derived/ holds the copy the lake keeps after the original's short window: erasure takes it as well."""
    root, paths = local_lake
    banana, apple = f"batch={B21}/Banana/banana.jpg", f"batch={B21}/Apple Braeburn/apple.jpg"
    derived = _relative(lake.derived_uri("", B21)) + "part-00000.parquet"
    rows = {"path": [paths[banana], paths[apple]], "derivative": [b"banana-derivative", b"apple-derivative"]}
    (root / derived).parent.mkdir(parents=True)
    (root / derived).write_bytes(_parquet(pa.table(rows)))
    report = erase(root.as_uri(), _raw_key(banana))
    after = _snapshot(root)
    assert _column(after[derived]) == [paths[apple]] and b"banana-derivative" not in after[derived]
    assert {item["key"]: item["rows_removed"] for item in report["files_rewritten"]}[derived] == 1
