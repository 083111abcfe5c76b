"""Landing ingestion throughput and the duplicate index's cost, against moto's S3 server on loopback.

    .venv/bin/python benchmarks/landing_throughput.py [--photos N] [--history H] [--night M]

(a) reading an `s3://` landing: one GET after another (workers=1) beside the bounded pool (16), photos/s;
    on loopback, and with 20 ms added before each GET (a real S3 GET's first byte: 10-30 ms, issue 12);
(b) `fruits.upload.upload_new_images` end to end from an `s3://` landing into an `s3://` lake (identify by
    content, strip metadata, bundle, manifest, index, report), workers=1 and 16, photos/s;
(c) the duplicate index (fruits.dedup_index): a history of H hashes in its 4,096 shards, then a night of M new
    photos looked up and recorded: seconds, GETs, PUTs and bytes moved; bytes scaled to 365 M photos of history.

Writes benchmarks/results/landing_throughput.json. The photos are the Fruits-360 sample (../shared) when
present, else generated JPEGs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "plugins"))
SAMPLE = REPO_ROOT.parent / "shared" / "data" / "fruits360-sample"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "landing_throughput.json"
REGION = "eu-west-3"
GET_LATENCY_S = 0.020
HISTORY_AT_A_YEAR = 365_000_000


def photos(count: int) -> list[tuple[str, bytes]]:
    files = sorted(SAMPLE.rglob("*.jpg")) if SAMPLE.is_dir() else []
    if files:
        chosen = [files[i % len(files)] for i in range(count)]
        return [(f"{p.parent.name}/{i}_{p.name}", p.read_bytes()) for i, p in enumerate(chosen)]
    from PIL import Image

    out = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (100, 100), (i % 256, (i // 256) % 256, 128)).save(buffer, "JPEG")
        out.append((f"Generated/{i}.jpg", buffer.getvalue()))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlowStore:
    """A landing store whose every read first waits GET_LATENCY_S (a remote GET's first byte)."""

    def __init__(self, store):
        self.store = store

    def read(self, uri: str) -> bytes:
        time.sleep(GET_LATENCY_S)
        return self.store.read(uri)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=960)
    parser.add_argument("--history", type=int, default=2_000_000, help="hashes already in the index")
    parser.add_argument("--night", type=int, default=10_000, help="new hashes looked up and recorded")
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION=REGION)
    import logging

    import boto3
    from botocore.config import Config
    from moto.server import ThreadedMotoServer

    from fruits import dedup_index, lake, storage, upload

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        s3 = boto3.client(
            "s3", region_name=REGION, endpoint_url=f"http://127.0.0.1:{port}", config=Config(max_pool_connections=32)
        )
        for bucket in ("landing", "lake-1", "lake-16", "index"):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        batch = "2026-06-01"
        sample = photos(args.photos)
        for key, data in sample:
            s3.put_object(Bucket="landing", Key=f"in/{batch}/{key}", Body=data)
        landing = storage.S3Store(s3, "landing")
        landing_uri = lake.landing_uri("s3://landing/in", batch)
        files = [upload.classify(e, landing_uri, upload.MAX_PHOTO_BYTES) for e in landing.list_entries(landing_uri)]
        megabytes = sum(len(d) for _, d in sample) / 1e6
        results: dict = {"photos": len(sample), "megabytes": round(megabytes, 2)}

        for name, store in (("loopback", landing), ("loopback_plus_20ms_per_get", SlowStore(landing))):
            for workers in (1, 16):
                started = time.perf_counter()
                count = sum(1 for _ in upload.read_in_pool(store, files, workers=workers))
                rate = count / (time.perf_counter() - started)
                results[f"read_{name}_workers_{workers}_photos_per_second"] = round(rate, 1)
                print(f"(a) read {name:28s} workers={workers:2d}: {rate:8.1f} photos/s", flush=True)

        for workers in (1, 16):
            lake_store = storage.S3Store(s3, f"lake-{workers}")
            started = time.perf_counter()
            counts = upload.upload_new_images(lake_store, landing, landing_uri, batch, read_workers=workers)
            rate = counts["seen"] / (time.perf_counter() - started)
            results[f"upload_end_to_end_workers_{workers}_photos_per_second"] = round(rate, 1)
            print(
                f"(b) upload end to end workers={workers:2d}: {rate:8.1f} photos/s "
                f"({counts['uploaded']} uploaded, {counts['already_in_lake']} known)",
                flush=True,
            )

        # (c) the index: H hashes of history written straight into their shards, then a night of M new ones.
        import hashlib

        index = storage.S3Store(s3, "index")
        shards: dict[str, list[tuple[bytes, int]]] = {}
        for i in range(args.history):
            sha = hashlib.sha256(i.to_bytes(8, "big")).digest()
            shards.setdefault(sha.hex()[: dedup_index.SHARD_HEX], []).append((sha[:16], 20000 + i % 365))
        for shard, pairs in shards.items():
            records = dedup_index.make_records(*zip(*pairs, strict=True))
            s3.put_object(Bucket="index", Key=f"index/sha256/{shard}.bin", Body=dedup_index.encode_shard(records))
        traffic = {"GetObject": 0, "PutObject": 0, "bytes_in": 0, "bytes_out": 0}

        def count_request(model, params, **_):
            traffic[model.name] = traffic.get(model.name, 0) + 1
            traffic["bytes_out"] += len(params.get("Body", b"") or b"")

        def count_response(http_response, model, **_):
            if model.name == "GetObject":
                traffic["bytes_in"] += int(http_response.headers.get("content-length", 0))

        s3.meta.events.register("before-parameter-build.s3.*", count_request)
        s3.meta.events.register("after-call.s3.GetObject", count_response)
        night = [hashlib.sha256(b"night" + i.to_bytes(8, "big")).hexdigest() for i in range(args.night)]
        started = time.perf_counter()
        found = dedup_index.lookup(index, "s3://index", night, workers=16)
        looked = time.perf_counter() - started
        written = dedup_index.record(index, "s3://index", batch, night, workers=16)
        total = time.perf_counter() - started
        index_bytes = args.history * dedup_index.RECORD_SIZE
        per_shard = index_bytes / 4096
        touched = len({dedup_index.shard_of(sha) for sha in night})
        results["index"] = {
            "history_hashes": args.history,
            "night_photos": args.night,
            "found": len(found),
            "shards_touched": touched,
            "shards_written": written,
            "seconds_lookup": round(looked, 2),
            "seconds_lookup_and_record": round(total, 2),
            "get_requests": traffic["GetObject"],
            "put_requests": traffic["PutObject"],
            "bytes_read": traffic["bytes_in"],
            "bytes_written": traffic["bytes_out"],
            "index_bytes": index_bytes,
            "bytes_per_photo_of_history": dedup_index.RECORD_SIZE,
            "at_365M": {
                "index_bytes": HISTORY_AT_A_YEAR * dedup_index.RECORD_SIZE,
                "shard_bytes": HISTORY_AT_A_YEAR * dedup_index.RECORD_SIZE // 4096,
                "night_of_1M_reads_bytes": 2 * HISTORY_AT_A_YEAR * dedup_index.RECORD_SIZE,
                "night_of_1M_writes_bytes": HISTORY_AT_A_YEAR * dedup_index.RECORD_SIZE,
                "requests": {"GET": 2 * 4096, "PUT": 4096},
            },
        }
        print(
            f"(c) index of {args.history:,} hashes ({index_bytes / 1e6:.1f} MB, {per_shard / 1e3:.1f} kB a shard), "
            f"night of {args.night:,}: {touched} shards, {looked:.2f} s lookup, {total:.2f} s with record, "
            f"{traffic['GetObject']} GET ({traffic['bytes_in'] / 1e6:.1f} MB), {traffic['PutObject']} PUT "
            f"({traffic['bytes_out'] / 1e6:.1f} MB)",
            flush=True,
        )
    finally:
        server.stop()
    results.update(
        measured_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        machine=f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or platform.system()}",
        get_latency_added_s=GET_LATENCY_S,
    )
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
