"""Ingestion throughput, side by side on one landing: the Airflow worker's upload against the Spark ingest job.

    .venv/bin/python benchmarks/ingest_throughput.py [--photos N] [--master local[2]]

(a) `fruits.upload.upload_new_images` (every photo read, identified, stripped, hashed and bundled on the
    worker, 16 readers), photos/s;
(b) the cluster's way: `fruits.upload.write_listing` on the worker (metadata only: its seconds are the
    worker's whole share), then `spark_jobs/ingest.py`'s `run` on a SparkSession of `--master` (started
    before the clock), photos/s end to end (listing + job).
Both from a local landing into a fresh local lake. Writes benchmarks/results/ingest_throughput.json. The
photos are the Fruits-360 sample (../shared) when present, else generated JPEGs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "plugins"))
sys.path.insert(0, str(REPO_ROOT / "spark_jobs"))
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "spark_jobs"), str(REPO_ROOT / "plugins")])
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
SAMPLE = REPO_ROOT.parent / "shared" / "data" / "fruits360-sample"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "ingest_throughput.json"
BATCH = "2026-03-10"


def photos(count: int) -> list[tuple[str, bytes]]:
    """`count` distinct photos: the sample's, re-encoded at a lower quality for each repeat (no duplicates)."""
    from PIL import Image

    files = sorted(SAMPLE.rglob("*.jpg")) if SAMPLE.is_dir() else []
    out = []
    for i in range(count):
        repeat = i // len(files) if files else 1
        if files and not repeat:
            out.append((f"{files[i].parent.name}/{i}-{files[i].name}", files[i].read_bytes()))
            continue
        source = files[i % len(files)] if files else None
        image = Image.open(source) if source else Image.new("RGB", (100, 100), (i % 256, i // 256 % 256, 7))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=95 - repeat)
        out.append((f"{source.parent.name if source else f'Label{i % 10}'}/{i}.jpg", buffer.getvalue()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=960)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()

    import ingest
    from pyspark.sql import SparkSession

    from fruits import steps, storage, upload

    work = Path(tempfile.mkdtemp(prefix="fruits-ingest-bench-"))
    landing = work / "landing"
    for name, data in photos(args.photos):
        (landing / name).parent.mkdir(parents=True, exist_ok=True)
        (landing / name).write_bytes(data)
    landing_uri = storage.file_uri(landing)

    started = time.perf_counter()
    worker = upload.upload_new_images(
        storage.LocalStore(work / "lake-a"), storage.LocalStore(landing), landing_uri, BATCH
    )
    worker_s = time.perf_counter() - started

    spark = (
        SparkSession.builder.master(args.master)
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    lake_b = storage.LocalStore(work / "lake-b")
    started = time.perf_counter()
    planned = upload.write_listing(lake_b, storage.LocalStore(landing), landing_uri, BATCH)
    listing_s = time.perf_counter() - started
    job = steps.ingest_job(
        lake_b.root, BATCH, "file:///unused/", listing=planned["listing"], landing=planned["landing"]
    )
    counts = ingest.run(spark, ingest.parse_args(list(job.args)), store=lake_b)
    spark_s = time.perf_counter() - started
    spark.stop()

    result = {
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "photos": args.photos,
        "photo_source": "fruits360-sample" if SAMPLE.is_dir() else "generated 100x100 JPEG",
        "worker_upload": {
            "seconds": round(worker_s, 2),
            "photos_per_s": round(args.photos / worker_s, 1),
            "uploaded": worker["uploaded"],
        },
        "spark_ingest": {
            "master": args.master,
            "seconds": round(spark_s, 2),
            "photos_per_s": round(args.photos / spark_s, 1),
            "worker_listing_seconds": round(listing_s, 3),
            "uploaded": counts["uploaded"],
            "landing_reads": counts.get("landing_reads"),
            "job_phase_seconds": counts["seconds"],
        },
    }
    assert worker["uploaded"] == counts["uploaded"], (worker["uploaded"], counts)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
