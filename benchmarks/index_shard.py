"""One duplicate-index shard at night 365 of a million photos a night, rewritten as the retention sweep and the
ingest job's driver rewrite it: CPU per shard and per record, this checkout's spark_jobs/lakeindex.py beside an
earlier commit's (default: the last one that decoded every record into a dict of sets).

    .venv/bin/python benchmarks/index_shard.py [--before 2994d55] [--photos 1000000] [--history-nights 365]

The shard holds 2 records a photo a night (the received and the stored bytes' hashes) for each night of the
window, a 4,096th of them: 178,222 records at a million. Timed on a store held in memory (one dict: no I/O), with
each version's own public functions, workers=1, CPU of this thread (time.thread_time), best of --repeat:
- forget: the expired night's records of the shard dropped (retention: `lakeindex.forget(..., batch=...)`);
- record: tonight's records added (the ingest job's driver: `lakeindex.record`);
- lookup: tonight's hashes looked up (the ingest job's driver: `lakeindex.lookup`).
Each version's rewritten shard is checked byte-identical to the other's. Prints the figures; writes nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
import types

from _env import REPO_ROOT  # first: puts the jobs on the path

BEFORE = "2994d552614ff18f488cbca2b263628582128c33"  # the index as a dict of sets (parse_shard / encode_shard)


class MemoryStore:
    """The conditional store's calls the index makes, on a dict (etag: a write counter)."""

    def __init__(self):
        self.objects: dict[str, tuple[bytes, str]] = {}

    def read_or_none(self, uri: str) -> bytes | None:
        return self.objects.get(uri, (None, None))[0]

    def read_with_etag(self, uri: str) -> tuple[bytes | None, str | None]:
        return self.objects.get(uri, (None, None))

    def put_if_absent(self, uri: str, data: bytes) -> bool:
        if uri in self.objects:
            return False
        self.objects[uri] = (bytes(data), "1")
        return True

    def put_if_match(self, uri: str, data: bytes, etag: str) -> bool:
        if self.objects.get(uri, (None, None))[1] != etag:
            return False
        self.objects[uri] = (bytes(data), str(int(etag) + 1))
        return True


def load_version(ref: str) -> types.ModuleType:
    """spark_jobs/lakeindex.py as commit `ref` holds it, as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{ref}:spark_jobs/lakeindex.py"], cwd=REPO_ROOT, check=True, capture_output=True
    ).stdout
    spec = importlib.util.spec_from_loader(f"lakeindex_{ref[:7]}", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"{ref[:7]}:spark_jobs/lakeindex.py", "exec"), module.__dict__)  # noqa: S102
    return module


def full_shard(rng, photos: int, history_nights: int, tonight: int) -> tuple[bytes, list[str], list[str]]:
    """(the bytes of shard "abc" after `history_nights` nights before `tonight` (a day number), the expired
    night's hashes in it, tonight's new hashes for it): 2 records a photo a night, in this checkout's format."""
    import lakeindex

    per_night = max(1, 2 * photos // lakeindex.SHARDS)

    def hashes(count: int) -> list[str]:
        rows = rng.integers(0, 256, size=(count, 32), dtype="uint8")
        rows[:, 0], rows[:, 1] = 0xAB, (rows[:, 1] & 0x0F) | 0xC0  # shard "abc"
        return [row.tobytes().hex() for row in rows]

    nights = [hashes(per_night) for _ in range(history_nights)]
    keys = [lakeindex.key_of(sha) for night in nights for sha in night]
    days = [tonight - history_nights + i for i, night in enumerate(nights) for _ in night]
    data = lakeindex.encode_shard(lakeindex.make_records(keys, days))
    return data, nights[0], hashes(per_night)


def shard_cpu(version: types.ModuleType, operation: str, data: bytes, shas: list[str], batch: str, repeat: int):
    """(best thread CPU seconds of one `operation` on a shard holding `data`, the shard's bytes after it)."""
    best, after = float("inf"), b""
    for _ in range(repeat):
        store = MemoryStore()
        store.put_if_absent(version.shard_uri("mem://index", "abc"), data)
        started = time.thread_time()
        if operation == "forget":
            version.forget(store, "mem://index", shas, batch=batch, workers=1)
        elif operation == "record":
            version.record(store, "mem://index", batch, shas, workers=1)
        else:
            version.lookup(store, "mem://index", shas, workers=1)
        best = min(best, time.thread_time() - started)
        after = store.read_or_none(version.shard_uri("mem://index", "abc"))
    return best, after


def main(argv: list[str] | None = None) -> int:
    import lakeindex
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default=BEFORE, help="the commit whose spark_jobs/lakeindex.py is compared")
    parser.add_argument("--photos", type=int, default=1_000_000, help="photos a night")
    parser.add_argument("--history-nights", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each operation (the best is kept)")
    args = parser.parse_args(argv)
    tonight = lakeindex.day_of("2026-03-12")
    data, expired, new = full_shard(np.random.default_rng(22), args.photos, args.history_nights, tonight)
    records = len(data) // lakeindex.RECORD_SIZE
    batches = {
        "forget": (expired, lakeindex.batch_of(tonight - args.history_nights)),
        "record": (new, lakeindex.batch_of(tonight)),
        "lookup": (new[: len(new) // 2] + expired, lakeindex.batch_of(tonight)),
    }
    print(f"one shard of {records:,} records ({len(data) / 1e6:.1f} MB), {len(expired)} expired, {len(new)} new:")
    versions = {"before": load_version(args.before), "after": lakeindex}
    shards_after: dict[str, dict[str, bytes]] = {name: {} for name in versions}
    for operation, (shas, batch) in batches.items():
        cpu = {}
        for name, version in versions.items():
            cpu[name], shards_after[name][operation] = shard_cpu(version, operation, data, shas, batch, args.repeat)
        print(
            f"  {operation:6s} before ({args.before[:7]}) {cpu['before'] * 1e3:9.2f} ms a shard "
            f"{cpu['before'] / records * 1e9:8.1f} ns a record | after {cpu['after'] * 1e3:7.2f} ms a shard "
            f"{cpu['after'] / records * 1e9:6.2f} ns a record | x{cpu['before'] / cpu['after']:,.0f}; "
            f"4,096 shards: {cpu['before'] * lakeindex.SHARDS:8.1f} s -> {cpu['after'] * lakeindex.SHARDS:5.1f} s CPU",
            flush=True,
        )
    if shards_after["before"] != shards_after["after"]:
        print("the two versions wrote different shards", file=sys.stderr)
        return 1
    print("both versions wrote the same bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
