"""The run report page (fruits.report_page), built by `run_report.report_run` from a small real lake.

The lake: real Fruits-360 photos (and a truncated one, and a text file) through the real upload into
bundles; features that are each photo's own pixels downscaled to 8x8 (real, cheap, and alike for alike
fruits), committed with the jobs' commit writer; a real PCA of them by numpy, written where and as
spark_jobs/pca.py writes it; the run reports of earlier nights. The page then opens in headless Chromium
(Debian's chromium + chromium-driver): no console error, no request other than the page and data: URIs,
the counts the run printed on screen, a screenshot kept under test-artifacts/.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from conftest import commit_output, headless_chromium, require_shared

from fruits import lake, report_page, run_report, storage, upload
from fruits.cli.demo import REPO_ROOT, SAMPLE_DIR

BATCH = "2026-11-21"
REGION = "eu-west-3"
LABELS = ("Banana", "Kiwi", "Raspberry", "Lemon", "Strawberry")
PER_LABEL = 6


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("FRUITS_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def pixels(content: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(content)) as image:
        return np.asarray(image.convert("RGB").resize((8, 8)), dtype=np.float32).ravel() / 255


def parquet(table) -> bytes:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def night_report(night: str, basis: int, drop: float, shift: float) -> dict:
    drift = {
        "basis": basis,
        "captured_share": 0.9 - drop,
        "captured_share_at_fit": 0.9,
        "captured_share_drop": drop,
        "mean_shift": shift,
        "threshold": 0.2,
        "crossed": drop > 0.2,
    }
    pca = {
        "basis": basis,
        "mode": "auto",
        "rows_read": 30,
        "rows_in_basis": 30,
        "k": 5,
        "total_explained_variance": 0.9,
        "seconds": 1.0,
        "drift_on_basis": drift,
    }
    return run_report.build_run_report(
        batch=night,
        target="local",
        job_metrics={"seen": 30, "featurized": 30, "quarantined": 0, "seconds": 3.0},
        pca_report=pca,
        executor_vcpus=2,
    )


def build_lake(tmp_path: Path, *, nights: int = 5) -> tuple[storage.LocalStore, dict]:
    """A lake holding BATCH through upload, features, quarantine and PCA, plus `nights` earlier run reports."""
    import pyarrow as pa

    sample = require_shared(SAMPLE_DIR)
    landing = tmp_path / "landing"
    for label in LABELS:
        (landing / "Training" / label).mkdir(parents=True)
        for photo in sorted((sample / "Training" / label).glob("*.jpg"))[:PER_LABEL]:
            shutil.copy(photo, landing / "Training" / label / photo.name)
    whole = (landing / "Training" / "Kiwi").iterdir().__next__().read_bytes()
    (landing / "Training" / "Kiwi" / "cut.jpg").write_bytes(whole[: len(whole) // 3])  # a truncated JPEG
    (landing / "Training" / "Kiwi" / "notes.txt").write_text("not a photo")
    store = storage.LocalStore(tmp_path / "lake")
    root = store.root
    counts = upload.upload_new_images(
        store, storage.LocalStore(landing), storage.file_uri(landing), BATCH, max_photos=8
    )

    # featurize's outcome: every uploaded photo read from its bundle; the truncated one quarantined.
    rows, bad = [], []
    for bundle in storage.read_batch_manifest(store, root, BATCH).bundles:
        import pyarrow.parquet as pq

        for row in pq.read_table(io.BytesIO(store.read(lake.raw_uri(root, BATCH) + bundle))).to_pylist():
            if row["path"].endswith("cut.jpg"):
                bad.append(
                    {"path": row["path"], "reason": "truncated image: image file is truncated", "batch_id": BATCH}
                )
                continue
            label = row["path"].rsplit("/", 2)[-2]
            rows.append(
                {
                    "path": row["path"],
                    "label": label,
                    "split": "Training",
                    "batch_id": BATCH,
                    "features": pixels(row["content"]),
                }
            )
    metrics = {
        "job": "featurize",
        "batch_id": BATCH,
        "seen": len(rows) + len(bad),
        "featurized": len(rows),
        "quarantined": len(bad),
        "seconds": 4.0,
        "images_per_second": (len(rows) + len(bad)) / 4.0,
    }
    commit_output(
        store,
        lake.quarantine_uri(root, BATCH),
        {"part-0.parquet": parquet(pa.Table.from_pylist(bad))},
        {"rows": len(bad)},
    )
    features = pa.Table.from_pylist([{**r, "features": r["features"].tolist()} for r in rows])
    commit_output(
        store,
        lake.features_uri(root, BATCH),
        {"part-0.parquet": parquet(features)},
        {"rows": len(rows), "metrics": metrics},
    )

    # The batch's PCA (centred, k for 90 % of the variance) as pca.py commits it.
    x = np.stack([r["features"] for r in rows]).astype(np.float64)
    centred = x - x.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    spectrum = singular**2 / np.sum(singular**2)
    k = int(np.searchsorted(np.cumsum(spectrum), 0.9) + 1)
    reduced = (centred @ components[:k].T).astype(np.float32)
    table = pa.table(
        {
            "path": [r["path"] for r in rows],
            "label": [r["label"] for r in rows],
            "split": ["Training"] * len(rows),
            "batch_id": [BATCH] * len(rows),
            "basis": pa.array([1] * len(rows), pa.int32()),
            "pca": pa.array([list(v) for v in reduced], pa.list_(pa.float32())),
        }
    )
    pca_report = {
        "job": "pca",
        "subcommand": "nightly",
        "batch_id": BATCH,
        "mode": "auto",
        "new_basis": None,
        "basis": 1,
        "k": k,
        "variance_target": 0.9,
        "rows_read": len(rows),
        "rows_in_basis": 180,
        "explained_variance": spectrum[:k].tolist(),
        "cumulative_explained_variance": np.cumsum(spectrum[:k]).tolist(),
        "total_explained_variance": float(np.sum(spectrum[:k])),
        "seconds": 2.0,
        "drift": None,
        "drift_on_basis": {
            "basis": 1,
            "captured_share": 0.85,
            "captured_share_at_fit": 0.9,
            "captured_share_drop": 0.05,
            "mean_shift": 0.4,
            "threshold": 0.2,
            "crossed": False,
        },
    }
    half = len(rows) // 2
    commit_output(
        store,
        lake.pca_reduced_uri(root, 1, BATCH),
        {
            "reduced/part-0.parquet": parquet(table.slice(0, half)),
            "reduced/part-1.parquet": parquet(table.slice(half)),
            "report.json": json.dumps(pca_report).encode(),
        },
    )
    store.put(lake.pca_current_basis_uri(root), json.dumps({"version": 1}).encode(), "-")
    day = date.fromisoformat(BATCH)
    for back in range(1, nights + 1):
        night = (day - timedelta(days=back)).isoformat()
        run_report.write_run_report(
            night_report(night, 1, 0.02 * back, 0.1 * back), lake.reports_uri(root, night), store
        )
    return store, {"upload": counts, "metrics": metrics, "rows": rows, "reduced": reduced, "k": k}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report_page")
    store, facts = build_lake(tmp_path)
    report = run_report.report_run(store, store.root, BATCH, target="local", region=REGION)
    page = Path(store.path) / f"reports/batch={BATCH}" / report_page.PAGE
    return store, facts, report, page


def test_the_page_is_written_beside_the_report_with_the_runs_counts(built):
    store, facts, report, page = built
    assert page.exists(), "report_run writes the page beside run_report.json"
    text = page.read_text()
    assert len(text) < 2_000_000
    upload_counts = facts["upload"]
    assert upload_counts["uploaded"] == len(LABELS) * PER_LABEL + 1 and upload_counts["rejected"] == {"unsupported": 1}
    assert report["images"] == {"seen": 31, "featurized": 30, "quarantined": 1}
    gathered = report_page.gather(
        store,
        store.root,
        BATCH,
        report,
        json.loads(store.read(lake.committed_files(store, lake.pca_reduced_uri(store.root, 1, BATCH))[-1])),
    )
    assert gathered["landing"] == {"seen": 32, "uploaded": 31, "already_in_lake": 0, "rejected": {"unsupported": 1}}
    assert gathered["quarantine_reasons"] == {"truncated image": 1}
    # Five earlier nights and this one, oldest first.
    assert [n["batch"] for n in gathered["nights"]][-1] == BATCH and len(gathered["nights"]) == 6
    assert [n["mean_shift"] for n in gathered["nights"]] == pytest.approx([0.5, 0.4, 0.3, 0.2, 0.1, 0.4])
    # The examples' neighbours are the batch's true nearest rows in the reduced space.
    paths = [r["path"] for r in facts["rows"]]
    for example in gathered["examples"]:
        query = facts["reduced"][paths.index(example["path"])]
        distances = np.linalg.norm(facts["reduced"] - query, axis=1)
        expected = [paths[i] for i in np.argsort(distances) if paths[i] != example["path"]][: report_page.NEIGHBOURS]
        assert [path for path, _, _ in example["neighbours"]] == expected
    assert len({e["label"] for e in gathered["examples"]}) == report_page.EXAMPLES
    # Every example and neighbour is drawn from its bundle; the truncated JPEG decodes partly or not at all.
    drawn = [p for p in gathered["thumbs"] if gathered["thumbs"][p]]
    assert set(drawn) >= {e["path"] for e in gathered["examples"]}


def test_the_page_reads_a_bounded_number_of_nights(tmp_path):
    class Counting(storage.LocalStore):
        reads: ClassVar[list[str]] = []

        def read_or_none(self, uri: str) -> bytes | None:
            self.reads.append(uri)
            return super().read_or_none(uri)

    store = Counting(tmp_path)
    day = date.fromisoformat(BATCH)
    for back in range(1, 400, 7):  # a year of history, one night a week reported
        night = (day - timedelta(days=back)).isoformat()
        run_report.write_run_report(night_report(night, 2, 0.01, 0.2), lake.reports_uri(store.root, night), store)
    nights = report_page.recent_nights(store, store.root, BATCH, night_report(BATCH, 2, 0.3, 0.9))
    assert len([u for u in Counting.reads if u.endswith("run_report.json")]) == report_page.RECENT_NIGHTS - 1
    assert [n["batch"] for n in nights] == sorted(n["batch"] for n in nights)
    assert len(nights) == 1 + len(range(1, report_page.RECENT_NIGHTS, 7)) and nights[-1]["crossed"] is True


def test_a_batch_larger_than_the_sample_still_gets_exact_neighbours(tmp_path, monkeypatch):
    import pyarrow as pa

    monkeypatch.setattr(report_page, "SAMPLE_ROWS", 50)
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(900, 6)).astype(np.float32)
    labels = [f"L{i % 9}" for i in range(900)]
    paths = [f"file:///lake/raw/batch={BATCH}/{label}/{i}.jpg" for i, label in enumerate(labels)]
    store = storage.LocalStore(tmp_path)
    files = []
    for part in range(3):
        rows = slice(part * 300, (part + 1) * 300)
        table = pa.table(
            {
                "path": paths[rows],
                "label": labels[rows],
                "pca": pa.array([list(v) for v in vectors[rows]], pa.list_(pa.float32())),
            }
        )
        uri = store.root + f"/reduced/part-{part}.parquet"
        store.put(uri, parquet(table), "-")
        files.append(uri)
    sample = report_page.reduced_sample(store, files, seed=3)
    assert sample["rows"] == 900 and len(sample["path"]) == 50 == sample["pca"].shape[0]
    assert len(set(sample["label"])) > 5  # spread over the batch, not its first file
    chosen = report_page.pick_examples(sample["label"])
    found = report_page.nearest_neighbours(
        sample["pca"][chosen], [sample["path"][i] for i in chosen], sample, store, files
    )
    for index, near in zip(chosen, found):
        query = paths.index(sample["path"][index])
        order = [paths[i] for i in np.argsort(np.linalg.norm(vectors - vectors[query], axis=1)) if i != query]
        assert [path for path, _, _ in near] == order[: report_page.NEIGHBOURS]


def test_an_erased_photo_leaves_the_page_and_pages_expire_with_their_photos(tmp_path):
    from fruits import erase

    store, _ = build_lake(tmp_path, nights=0)
    report = run_report.report_run(store, store.root, BATCH, target="local", region=REGION)
    page_uri = lake.reports_uri(store.root, BATCH) + report_page.PAGE
    pca = run_report.job_outputs(store, store.root, BATCH)[1]
    shown = report_page.gather(store, store.root, BATCH, report, pca)
    victim = shown["examples"][0]["path"]
    thumb = shown["thumbs"][victim]
    assert thumb and thumb in store.read(page_uri).decode()

    erase.erase(store.root, victim)
    assert report_page.rebuild(store, store.root, BATCH) == page_uri
    after = report_page.gather(store, store.root, BATCH, report, pca)
    assert victim not in after["thumbs"] and thumb not in store.read(page_uri).decode()
    assert report_page.rebuild(store, store.root, "2026-11-20") is None  # no page there: nothing drawn


def test_a_redrawn_page_leaves_no_older_version_in_a_versioned_bucket(monkeypatch):
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="fruits-lake", CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket="fruits-lake", VersioningConfiguration={"Status": "Enabled"})
        store = storage.S3Store(s3, "fruits-lake")
        run_report.write_run_report(night_report(BATCH, 1, 0.0, 0.1), lake.reports_uri(store.root, BATCH), store)
        key = f"reports/batch={BATCH}/{report_page.PAGE}"
        for old in (b"<p>thumbnail of a photo since erased</p>", b"<p>an older run's page</p>"):
            store.put(f"{store.root}/{key}", old, "-")
        assert report_page.rebuild(store, store.root, BATCH) == f"{store.root}/{key}"
        versions = s3.list_object_versions(Bucket="fruits-lake", Prefix=key)
        assert len(versions.get("Versions", [])) == 1 and not versions.get("DeleteMarkers")
        assert b"erased" not in store.read(f"{store.root}/{key}")


def test_thumbnails_are_small_jpegs_of_any_photo_the_upload_takes():
    import base64

    import pillow_heif
    from PIL import Image

    big = Image.new("RGB", (4000, 1000), (200, 30, 40))
    heic = io.BytesIO()
    pillow_heif.from_pillow(big).save(heic, format="HEIF")
    png = io.BytesIO()
    big.save(png, format="PNG")
    for content in (heic.getvalue(), png.getvalue()):
        uri = report_page.thumbnail(content)
        assert uri.startswith("data:image/jpeg;base64,")
        with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as drawn:
            assert drawn.format == "JPEG" and drawn.size == (report_page.THUMB_PX, report_page.THUMB_PX // 4)
    assert report_page.thumbnail(b"not an image") is None and report_page.thumbnail(png.getvalue()[:200]) is None


def test_a_huge_png_is_refused_from_its_header_with_a_placeholder_saying_why(tmp_path):
    import subprocess
    import sys

    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("1", (13000, 13000)).save(bomb, format="PNG")  # 169 Mpx in a few hundred KB
    assert bomb.stat().st_size < 1_000_000
    measure = (
        "import resource, sys; from fruits import report_page; data = open(sys.argv[1], 'rb').read(); "
        "report_page.draw(b''); before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        "uri, why = report_page.draw(data); "
        "print(uri is None, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024, why)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "plugins")}
    out = subprocess.run(
        [sys.executable, "-c", measure, str(bomb)], capture_output=True, text=True, env=env, check=True
    )
    refused, grown_mib, why = out.stdout.split(" ", 2)
    assert refused == "True" and int(grown_mib) < 64, out.stdout  # decoded, it costs the worker over 500 MiB
    assert "13000x13000 px" in why and "Mpx" in why
    picture = report_page._picture(None, "bomb.png: too large", why.strip())
    assert "no picture" in picture and "13000x13000 px" in picture


def test_a_local_page_draws_the_photos_spelled_file_colon_slash_and_rows_without_a_label(tmp_path):
    """featurize and pca write `file:/x` (Spark's spelling), the bundles `file:///x`; a photo directly under a split
    folder of an older batch has a null label: the page draws both and says "(no label)"."""
    import pyarrow as pa
    from PIL import Image

    landing = tmp_path / "landing"
    colours = {"Banana": (230, 200, 40), "Kiwi": (90, 120, 40), "Lemon": (250, 240, 90), "Plum": (90, 20, 90)}
    for label, colour in colours.items():
        (landing / label).mkdir(parents=True)
        for n in range(2):
            Image.new("RGB", (32, 32), tuple(c + 5 * n for c in colour)).save(landing / label / f"{n}.jpg")
    store = storage.LocalStore(tmp_path / "lake")
    upload.upload_new_images(store, storage.LocalStore(landing), storage.file_uri(landing), BATCH)
    raw = lake.raw_uri(store.root, BATCH)
    keys = sorted(storage.read_manifest(store, store.root, BATCH))
    spark_paths = [(raw + key).replace("file:///", "file:/") for key in keys]
    labels = [key.split("/")[0] if not key.startswith("Plum/1") else None for key in keys]
    table = pa.table(
        {
            "path": spark_paths,
            "label": labels,
            "basis": pa.array([1] * len(keys), pa.int32()),
            "pca": pa.array([[float(i), float(i % 3)] for i in range(len(keys))], pa.list_(pa.float32())),
        }
    )
    commit_output(store, lake.pca_reduced_uri(store.root, 1, BATCH), {"reduced/part-0.parquet": parquet(table)})
    bad = pa.table({"path": [spark_paths[0]], "reason": ["truncated image: test"]})
    commit_output(store, lake.quarantine_uri(store.root, BATCH), {"part-0.parquet": parquet(bad)})
    pca = {"basis": 1, "k": 2, "cumulative_explained_variance": [0.6, 0.9], "variance_target": 0.9}
    facts = report_page.gather(store, store.root, BATCH, night_report(BATCH, 1, 0.0, 0.1), pca)
    shown = [e["path"] for e in facts["examples"]] + [p for e in facts["examples"] for p, _, _ in e["neighbours"]]
    assert shown and all(facts["thumbs"][path] for path in shown)
    assert facts["thumbs"][spark_paths[0]]  # the quarantined photo too
    page = report_page.render(facts)
    assert report_page.NO_LABEL in page and page.count("data:image/jpeg;base64,") >= len(set(shown))


def test_emr_links_and_escaping(monkeypatch):
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():  # an S3 lake with nothing committed yet
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="fruits-lake", CreateBucketConfiguration={"LocationConstraint": REGION})
        emr_links_and_escaping(storage.S3Store(s3, "fruits-lake"))


def emr_links_and_escaping(store):
    report = night_report(BATCH, 1, 0.0, 0.0)
    report = {
        **report,
        "target": "emr",
        "cluster": {"id": "j-ABC123"},
        "steps": [{"id": "s-1", "name": "fruits-featurize-x", "state": "COMPLETED", "seconds": 3.0}],
    }
    links = {url: name for name, url in report_page.output_links(store, "s3://fruits-lake", BATCH, 1, report)}
    assert f"https://{REGION}.console.aws.amazon.com/emr/home?region={REGION}#/clusterDetails/j-ABC123" in links
    assert any(url.endswith("/steps/s-1") for url in links)
    assert (
        f"https://{REGION}.console.aws.amazon.com/s3/buckets/fruits-lake?region={REGION}"
        f"&prefix=reports/batch={BATCH}/run_report.json"
    ) in links
    facts = {
        "report": report,
        "pca_report": {},
        "landing": None,
        "nights": [],
        "quarantine_reasons": {"x": 1},
        "quarantine": [{"path": "raw/<b>.jpg", "reason": "<script>alert(1)</script>"}],
        "sample": None,
        "examples": [],
        "thumbs": {},
        "links": [("a", "javascript:<x>")],
    }
    page = report_page.render(facts)
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;.jpg" in page


@pytest.mark.slow
def test_the_page_opens_in_chromium_without_error_or_request(built):
    from selenium.webdriver.common.by import By

    _, facts, report, page = built
    with headless_chromium(logs=True) as driver:
        url = page.resolve().as_uri()
        driver.get(url)
        body = driver.find_element(By.TAG_NAME, "body").text
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete && i.naturalWidth > 0, i.naturalWidth])"
        )
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1200, min(max(height, 900), 6000))
        screenshot = artifacts_dir() / "run-report-page.png"
        driver.save_screenshot(str(screenshot))
        console = driver.get_log("browser")
        requests = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]

    assert [entry for entry in console if entry["level"] in ("SEVERE", "WARNING")] == []
    # Chromium's own new-tab page loads chrome:// resources before ours: not the page's requests.
    urls = {
        m["params"]["request"]["url"]
        for m in requests
        if m["method"] == "Network.requestWillBeSent" and not m["params"]["request"]["url"].startswith("chrome://")
    }
    assert url in urls and all(u == url or u.startswith("data:") for u in urls), urls
    # The counts the run printed, on screen.
    for line in (
        f"uploaded\n{facts['upload']['uploaded']}",
        "rejected at upload: unsupported\n1",
        f"featurized\n{report['images']['featurized']}",
        "quarantined: truncated image\n1",
    ):
        assert line.replace("\n", " ") in body.replace("\n", " "), line
    assert f"Batch {BATCH}: 30 photos featurized" in body
    assert f"k = {facts['k']}" in page.read_text()  # the explained-variance curve's title
    # Every example and its neighbours drawn: (1 + NEIGHBOURS) per example, each a decoded JPEG <= 96 px.
    drawn = [width for ok, width in images if ok]
    assert len(drawn) >= report_page.EXAMPLES * (1 + report_page.NEIGHBOURS) and max(drawn) <= report_page.THUMB_PX
    assert screenshot.stat().st_size > 10_000


def test_the_airflow_plugin_serves_the_runs_page_behind_airflows_auth(built, monkeypatch):
    import fruits_report_plugin as plugin
    from airflow.api_fastapi.common.db.common import _get_session
    from fastapi.testclient import TestClient

    from fruits import pipeline_tasks, run_params
    from fruits.settings import PipelineSettings

    store, _, _, page = built
    assert plugin.FruitsReportPlugin.external_views[0]["destination"] == "dag_run"
    assert plugin.FruitsReportPlugin.fastapi_apps[0]["app"] is plugin.app
    run_id = "scheduled__2026-11-21T00:00:00+00:00"
    url = f"/dags/fruits_pipeline/runs/{run_id.replace(':', '%3A').replace('+', '%2B')}"  # as the UI encodes it
    client = TestClient(plugin.app)
    assert client.get(url).status_code == 401  # Airflow's own authentication: no token, no page

    # Authorised (Airflow's DAG-run read permission granted), the page of the run's batch from its lake.
    def checked_xcom(local_lake: str) -> dict:  # what check_gdpr returns for a run of BATCH on that lake
        settings = PipelineSettings(target="local", local_lake=local_lake)
        return pipeline_tasks.Run(settings, run_params.parse({}, night=BATCH, settings=settings)).as_xcom()

    checked = {"fruits_pipeline": checked_xcom(str(store.path))}
    seen = []

    def run_checked(session, dag_id, run):
        seen.append(run)
        return checked.get(dag_id)

    monkeypatch.setattr(plugin, "run_checked", run_checked)
    plugin.app.dependency_overrides.update({plugin.can_read_run: lambda: None, _get_session: lambda: None})
    try:
        answer = client.get(url)
        other_dag = client.get("/dags/fruits_assets_consumer/runs/x")
        checked["fruits_pipeline"] = checked_xcom(str(page.parent / "empty"))
        not_yet = client.get(url)
    finally:
        plugin.app.dependency_overrides.clear()
    assert answer.status_code == 200 and answer.content == page.read_bytes() and seen[0] == run_id
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["cache-control"] == "private, no-store"
    assert other_dag.status_code == 404 and "no run report" in other_dag.text
    assert not_yet.status_code == 404 and "No run report page at" in not_yet.text


@pytest.mark.slow
def test_the_page_reads_what_the_real_pca_job_commits(tmp_path, spark):
    """The same lake, its PCA by spark_jobs/pca.py (nightly, local Spark) instead of numpy: the page finds
    the job's reduced rows, report and basis through the markers the job writes."""
    import pyarrow.parquet as pq

    import pca

    store, facts = build_lake(tmp_path, nights=2)
    root = store.root
    # An earlier night's rows on the stand-in basis 1 stay (as in S3, a folder is only what it holds).
    store.put(lake.pca_reduced_uri(root, 1, "2026-03-01") + "reduced/part-0.parquet", b"rows", "-")
    for uri in lake.committed_files(store, lake.pca_reduced_uri(root, 1, BATCH)):  # the numpy stand-in, gone
        store.delete(uri)
    store.delete(lake.commit_marker_uri(lake.pca_reduced_uri(root, 1, BATCH)))
    store.delete(lake.pca_current_basis_uri(root))
    job = pca.run_nightly(
        spark,
        BATCH,
        features_root=lake.features_uri(root),
        stats_root=lake.pca_stats_root(root),
        bases_root=lake.pca_bases_uri(root),
        reduced_root=lake.pca_reduced_root(root),
        variance=0.9,
    )
    report = run_report.report_run(store, root, BATCH, target="local", region=REGION)
    # basis=0001/ still holds the other night's rows on the stand-in basis: the job never reuses its number.
    version = job["basis"]
    assert version == 2 and report["pca"]["basis"] == version and report["pca"]["k"] == job["k"]

    pca_report = run_report.job_outputs(store, root, BATCH)[1]
    files = report_page.reduced_files(store, root, version, BATCH)
    assert files and all("/reduced/" in uri for uri in files)
    shown = report_page.gather(store, root, BATCH, report, pca_report)
    assert shown["sample"]["rows"] == len(facts["rows"]) == len(shown["sample"]["xy"])
    rows = [row for uri in files for row in pq.read_table(io.BytesIO(store.read(uri))).to_pylist()]
    paths = [row["path"] for row in rows]
    vectors = np.array([row["pca"] for row in rows])
    for example in shown["examples"]:
        query = vectors[paths.index(example["path"])]
        order = [paths[i] for i in np.argsort(np.linalg.norm(vectors - query, axis=1)) if paths[i] != example["path"]]
        assert [path for path, _, _ in example["neighbours"]] == order[: report_page.NEIGHBOURS]
        assert all(shown["thumbs"][path] for path, _, _ in example["neighbours"])
    page = store.read(lake.reports_uri(root, BATCH) + report_page.PAGE).decode()
    assert f"explained variance, basis {version}: k = {job['k']}" in page and "drift over the last 3 night(s)" in page


@pytest.mark.slow
def test_the_run_report_tab_serves_a_real_runs_page_in_airflows_api_server(built, tmp_path, airflow_home, monkeypatch):
    """A real DAG run (local target, an empty landing: it stops before the jobs) in Airflow's DB, Airflow's own
    api-server app with the plugins folder loaded, its auth manager's token: the tab's URL, as the UI encodes
    it, answers the page of the run's batch from the run's lake."""
    from urllib.parse import quote

    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    from fruits.cli import demo

    _, _, _, page = built
    monkeypatch.setenv("FRUITS_TARGET", "local")
    (tmp_path / "nothing_arrived").mkdir()
    lake_dir = tmp_path / "lake"
    run = demo.run_dag(
        "local", BATCH, {"fruits_local_lake": str(lake_dir)}, {"landing": str(tmp_path / "nothing_arrived")}
    )
    assert str(run.state) == "success"
    served = lake_dir / f"reports/batch={BATCH}" / report_page.PAGE

    client = TestClient(create_app())
    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    auth = {"Authorization": f"Bearer {token}"}
    views = [
        view
        for plugin in client.get("/api/v2/plugins", headers=auth).json()["plugins"]
        for view in plugin["external_views"]
    ]
    (tab,) = [view for view in views if view["name"] == "Run report"]
    assert tab["destination"] == "dag_run"
    url = "/" + tab["href"].replace("{DAG_ID}", "fruits_pipeline").replace("{RUN_ID}", quote(run.run_id, safe=""))

    assert client.get(url).status_code == 401
    assert client.get(url, headers=auth).status_code == 404  # the run stopped before the report: no page yet
    served.parent.mkdir(parents=True)
    served.write_bytes(page.read_bytes())
    answer = client.get(url, headers=auth)
    assert answer.status_code == 200 and answer.content == page.read_bytes()
    assert client.get("/fruits-report/dags/fruits_pipeline/runs/no-such-run", headers=auth).status_code == 404


def _noise_jpeg(seed: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


class ReadsInParts(storage.LocalStore):
    """A LocalStore that refuses to read the night's big files whole and counts the bytes read in parts."""

    whole = ("_ingestion.json", "_uploads.json", ".parquet")

    def __init__(self, root):
        super().__init__(root)
        self.bytes_read: dict[str, int] = {}
        self.strict = False  # while the test writes the lake, its writers read as they do

    def read_or_none(self, uri: str) -> bytes | None:
        assert not (self.strict and uri.endswith(self.whole)), f"{uri} read whole"
        return super().read_or_none(uri)

    def read(self, uri: str) -> bytes:
        assert not (self.strict and uri.endswith(self.whole)), f"{uri} read whole"
        return super().read(uri)

    def open_read(self, uri: str):
        return CountedFile(
            super().open_read(uri), lambda done: self.bytes_read.update({uri: self.bytes_read.get(uri, 0) + done})
        )


class CountedFile(io.RawIOBase):
    def __init__(self, handle, count):
        self.handle, self.count = handle, count

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.handle.seek(offset, whence)

    def tell(self) -> int:
        return self.handle.tell()

    def readinto(self, buffer) -> int:
        done = self.handle.readinto(buffer)
        self.count(done)
        return done

    def close(self) -> None:
        self.handle.close()
        super().close()


def test_the_report_reads_the_nights_counts_and_only_the_row_groups_of_the_photos_it_shows(tmp_path):
    import lakefiles

    store = ReadsInParts(tmp_path)
    raw = lake.raw_uri(store.root, BATCH)
    reasons = ["empty", "hidden", "empty", "too_large"]
    outcomes = {f"{raw}landing/u{i}.jpg": {"outcome": "uploaded", "sha256": f"{i}"} for i in range(5)}
    outcomes |= {f"{raw}landing/a{i}.jpg": {"outcome": "already_in_lake", "batch": BATCH} for i in range(3)}
    outcomes |= {f"{raw}landing/r{i}": {"outcome": "rejected", "reason": r} for i, r in enumerate(reasons)}
    earlier = {f"{raw}landing/u0.jpg": {"outcome": "rejected", "reason": "unreadable"}}  # the rerun's outcome wins
    earlier |= {f"{raw}landing/old.jpg": {"outcome": "uploaded", "sha256": "old"}}
    lakefiles.write_ingestion_report(store, raw, BATCH, "landing", earlier, {}, {})
    lakefiles.write_ingestion_report(store, raw, BATCH, "landing", outcomes, {}, {})
    everything = earlier | outcomes
    store.strict = True
    assert report_page.landing_counts(store, store.root, BATCH) == {
        "seen": 13,
        "uploaded": sum(o["outcome"] == "uploaded" for o in everything.values()),
        "already_in_lake": 3,
        "rejected": {"empty": 2, "hidden": 1, "too_large": 1},
    }

    # Bundles of 8 and 16 photos in row groups of 2: a shown photo costs its row group's bytes, not its bundle's.
    photos = {f"Kiwi/k{i}.jpg": _noise_jpeg(i) for i in range(24)}
    manifest = {"files": {}, "bundles": {}}
    for b, keys in enumerate([list(photos)[:8], list(photos)[8:]]):
        name = f"bundle-{b:016x}.parquet"
        table = storage.bundle_table(raw, [storage.Photo(k, "-", photos[k]) for k in keys], datetime.now(UTC))
        store.put(raw + name, storage.bundle_parquet(table, row_group_photos=2), "-")
        manifest["bundles"][name] = keys
        manifest["files"] |= dict.fromkeys(keys, "-")
    store.put(raw + "_uploads.json", lakefiles.manifest_json(BATCH, manifest["files"], manifest["bundles"]), "-")
    assert run_report.batch_bundles(store, store.root, BATCH) == 2
    shown = [raw + "Kiwi/k9.jpg", raw.replace("file:///", "file:/") + "Kiwi/k9.jpg", raw + "Kiwi/gone.jpg"]
    thumbs, not_drawn = report_page.photo_thumbnails(store, store.root, BATCH, shown)
    assert thumbs[shown[0]] == thumbs[shown[1]] == report_page.thumbnail(photos["Kiwi/k9.jpg"]) is not None
    assert not_drawn == {shown[2]: "not in the batch's bundles"}
    size = os.path.getsize(tmp_path / f"raw/batch={BATCH}/bundle-{1:016x}.parquet")
    assert f"{raw}bundle-{0:016x}.parquet" not in store.bytes_read  # the photo is in the second bundle
    assert 0 < store.bytes_read[f"{raw}bundle-{1:016x}.parquet"] < size / 3


def test_a_batch_ingested_before_the_counts_file_is_counted_from_its_report(tmp_path):
    store = storage.LocalStore(tmp_path)
    files = {
        "a": {"outcome": "uploaded"},
        "b": {"outcome": "rejected", "reason": "empty"},
        "c": {"outcome": "rejected"},
    }
    store.put(storage.ingestion_report_uri(store.root, BATCH), json.dumps({"files": files}).encode(), "-")
    assert report_page.landing_counts(store, store.root, BATCH) == {
        "seen": 3,
        "uploaded": 1,
        "already_in_lake": 0,
        "rejected": {"?": 1, "empty": 1},
    }
    assert report_page.landing_counts(store, store.root, "2026-11-22") is None
