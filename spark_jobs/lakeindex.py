"""The lake's cross-batch duplicate index: its shard format and its conditional updates, no `fruits` import.
The Spark ingest job's driver (spark_jobs/ingest.py) and fruits.dedup_index (the Airflow side, erasure,
retention) both use these functions: one definition of the format.

    <index>/sha256/<3 hex>.bin   one shard per sha256 prefix (4,096): sorted records of 18 bytes, the
                                 content hash's first 16 bytes + a batch as uint16 days since 1970-01-01

A hash has one record per batch holding a copy of it (several when a photo was stored again, see
`counts_as_stored`, or by two concurrent nights): erasure finds every copy, retention drops only the
expired batch's record, and a lookup answers the newest copy (the one that lives longest).
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

SHARD_HEX = 3  # 4,096 shards: a night of 1 M photos writes each once (PUTs ~0.02 USD), reads 2x each
RECORD = struct.Struct(">16sH")
EPOCH = dt.date(1970, 1, 1)
CAS_ATTEMPTS = 20
# A copy expiring within this many days of a re-send does not count as stored: the photo is stored again
# in the new batch (bounded extra storage: at most one more copy a month; a re-send is kept that long at least).
RESTORE_WITHIN_DAYS = 30

Entries = dict[bytes, set[int]]


class IndexConflict(RuntimeError):
    """A shard kept changing under us (CAS_ATTEMPTS conditional writes lost in a row)."""


def shard_of(sha256: str) -> str:
    return sha256[:SHARD_HEX].lower()


def shard_uri(index_uri: str, shard: str) -> str:
    return index_uri.rstrip("/") + f"/sha256/{shard}.bin"


def day_of(batch: str) -> int:
    return (dt.date.fromisoformat(batch) - EPOCH).days


def batch_of(day: int) -> str:
    return (EPOCH + dt.timedelta(days=day)).isoformat()


def parse_shard(data: bytes | None) -> Entries:
    entries: Entries = {}
    if not data:
        return entries
    if len(data) % RECORD.size:
        raise ValueError(f"index shard of {len(data)} bytes is not a whole number of {RECORD.size}-byte records")
    for key, day in RECORD.iter_unpack(data):
        entries.setdefault(key, set()).add(day)
    return entries


def encode_shard(entries: Entries) -> bytes:
    return b"".join(RECORD.pack(key, day) for key, days in sorted(entries.items()) for day in sorted(days))


def key_of(sha256: str) -> bytes:
    return bytes.fromhex(sha256)[:16]


def by_shard(sha256s: Iterable[str]) -> dict[str, list[str]]:
    shards: dict[str, list[str]] = {}
    for sha in sha256s:
        shards.setdefault(shard_of(sha), []).append(sha)
    return shards


def counts_as_stored(home: str, batch: str, retention_days: int | None) -> bool:
    """Whether the copy in batch `home` spares `batch` storing the photo again: a copy in this batch or a
    later one, or an earlier one still kept RESTORE_WITHIN_DAYS after tonight (never one the night's own
    sweep deletes). retention_days None: no retention, every copy counts."""
    if home >= batch or retention_days is None:
        return True
    expires = day_of(home) + retention_days  # the first night it is no longer retained
    return expires - day_of(batch) > RESTORE_WITHIN_DAYS


def pool_map(function: Callable[[Any], Any], items: Iterable[Any], workers: int) -> Iterator[Any]:
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="index") as pool:
        yield from pool.map(function, items)


def lookup(store: Any, index_uri: str, sha256s: Iterable[str], *, workers: int = 8) -> dict[str, list[str]]:
    """{sha256: the batches holding it, oldest first} for the hashes the index knows; each shard needed is
    read once, `workers` at a time, and only the answers are kept (not the shards)."""

    def one(item: tuple[str, list[str]]) -> dict[str, list[str]]:
        shard, wanted = item
        entries = parse_shard(store.read_or_none(shard_uri(index_uri, shard)))
        return {sha: [batch_of(d) for d in sorted(entries[key_of(sha)])] for sha in wanted if key_of(sha) in entries}

    found: dict[str, list[str]] = {}
    for answer in pool_map(one, by_shard(set(sha256s)).items(), workers):
        found.update(answer)
    return found


def update(store: Any, uri: str, change: Callable[[Entries], bool]) -> bool:
    """Read-modify-write one shard with a conditional write, retried when another writer got there first."""
    for _ in range(CAS_ATTEMPTS):
        data, etag = store.read_with_etag(uri)
        entries = parse_shard(data)
        if not change(entries):
            return False
        new = encode_shard(entries)
        if store.put_if_match(uri, new, etag) if etag else store.put_if_absent(uri, new):
            return True
    raise IndexConflict(f"{uri}: {CAS_ATTEMPTS} conditional writes lost in a row")


def record(store: Any, index_uri: str, batch: str, sha256s: Iterable[str], *, workers: int = 8) -> int:
    """Add `sha256 -> batch` where missing (other batches' records are kept). Returns the shards written."""
    day = day_of(batch)

    def one(item: tuple[str, list[str]]) -> int:
        shard, shas = item
        keys = {key_of(sha) for sha in shas}

        def add(entries: Entries) -> bool:
            new = [key for key in keys if day not in entries.get(key, ())]
            for key in new:
                entries.setdefault(key, set()).add(day)
            return bool(new)

        return int(update(store, shard_uri(index_uri, shard), add))

    return sum(pool_map(one, by_shard(set(sha256s)).items(), workers))


def forget(store: Any, index_uri: str, sha256s: Iterable[str], *, batch: str | None = None, workers: int = 8) -> int:
    """Drop the records of `batch` (an expired batch: other batches' copies stay known), or every record
    of the hashes (batch None: erased). Returns the records dropped."""
    day = None if batch is None else day_of(batch)

    def one(item: tuple[str, list[str]]) -> int:
        shard, shas = item
        keys = {key_of(sha) for sha in shas}
        dropped = [0]

        def drop(entries: Entries) -> bool:
            dropped[0] = 0
            for key in keys & entries.keys():
                gone = entries[key] if day is None else entries[key] & {day}
                dropped[0] += len(gone)
                entries[key] = entries[key] - gone
                if not entries[key]:
                    del entries[key]
            return bool(dropped[0])

        update(store, shard_uri(index_uri, shard), drop)
        return dropped[0]

    return sum(pool_map(one, by_shard(set(sha256s)).items(), workers))
