"""The lake's cross-batch duplicate index: its shard format and its conditional updates, no `fruits` import.
The Spark ingest job's driver (spark_jobs/ingest.py) and fruits.dedup_index (the Airflow side, erasure,
retention) both use these functions: one definition of the format.

    <index>/sha256/<3 hex>.bin   one shard per sha256 prefix (4,096): sorted records of 18 bytes, the
                                 content hash's first 16 bytes + a batch as uint16 days since 1970-01-01

A shard is never decoded record by record: numpy views its bytes (see `dtypes`). A hash has one record per
batch holding a copy of it (several when a photo was stored again, see `counts_as_stored`, or by two
concurrent nights): erasure finds every copy, retention drops only the expired batch's record, and a lookup
answers the newest copy (the one that lives longest).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

SHARD_HEX = 3  # 4,096 shards: a night of 1 M photos writes each once (PUTs ~0.02 USD), reads 2x each
SHARDS = 16**SHARD_HEX
KEY_BYTES = 16
RECORD_SIZE = KEY_BYTES + 2  # the key, then the batch: uint16 big-endian days since EPOCH
EPOCH = dt.date(1970, 1, 1)
CAS_ATTEMPTS = 20
# A copy expiring within this many days of a re-send does not count as stored: the photo is stored again
# in the new batch (bounded extra storage: at most one more copy a month; a re-send is kept that long at least).
RESTORE_WITHIN_DAYS = 30
LAST_DAY = 0xFFFF


class IndexConflict(RuntimeError):
    """A shard kept changing under us (CAS_ATTEMPTS conditional writes lost in a row)."""


def shard_of(sha256: str) -> str:
    return sha256[:SHARD_HEX].lower()


def shard_uri(index_uri: str, shard: str) -> str:
    return index_uri.rstrip("/") + f"/sha256/{shard}.bin"


def day_of(batch: str) -> int:
    return (dt.date.fromisoformat(batch) - EPOCH).days


@functools.cache  # a lookup names one batch per record found: a few hundred distinct days
def batch_of(day: int) -> str:
    return (EPOCH + dt.timedelta(days=day)).isoformat()


# ------------------------------------------------------------------ a shard as numpy records, never decoded
# A shard is a sorted numpy array of RECORD (key, day): numpy views its bytes in place. Being big-endian, the
# bytes' order (memcmp) is the (key, day) order: viewed as one opaque 18-byte value (FLAT), records sort and
# binary-search (np.searchsorted) and copy whole, so a shard's operations cost per record asked about, plus
# one copy of the shard's bytes, not a Python object per record.


@functools.cache
def dtypes() -> tuple[Any, Any, Any]:
    """(RECORD, FLAT, ORDER): the fields, the opaque memcmp-ordered value, and (hi, lo, day) integers to check
    the order with (numpy orders no opaque values)."""
    import numpy as np  # here, not at import: the DAG file imports this module at every parse

    record = np.dtype([("key", f"V{KEY_BYTES}"), ("day", ">u2")])
    order = np.dtype({"names": ["hi", "lo", "day"], "formats": [">u8", ">u8", ">u2"], "offsets": [0, 8, 16]})
    assert record.itemsize == order.itemsize == RECORD_SIZE
    return record, np.dtype(f"V{RECORD_SIZE}"), order


def parse_shard(data: bytes | None, name: str = "index shard") -> Any:
    """The shard's records (a read-only RECORD array over `data`, no copy). Refuses a shard that is not whole
    records in strictly ascending order (a binary search in it would answer wrong)."""
    import numpy as np

    record, _, order = dtypes()
    if not data:
        return np.empty(0, record)
    if len(data) % RECORD_SIZE:
        raise ValueError(f"{name}: {len(data)} bytes is not a whole number of {RECORD_SIZE}-byte records")
    records = np.frombuffer(data, record)
    fields = records.view(order)
    hi = fields["hi"]
    ties = np.flatnonzero(hi[1:] <= hi[:-1])  # rare: a key in several batches (or a wrong order)
    if ties.size:
        before, after = fields[ties], fields[ties + 1]
        later = (before["lo"] < after["lo"]) | ((before["lo"] == after["lo"]) & (before["day"] < after["day"]))
        if not np.all((before["hi"] == after["hi"]) & later):
            raise ValueError(f"{name}: records not in ascending (key, day) order, or repeated")
    return records


def encode_shard(records: Any) -> bytes:
    """The shard's bytes: `records` as parse_shard returns them or make_records builds them (sorted, unique)."""
    return records.tobytes()


def records_of(keys: Iterable[bytes], days: Iterable[int]) -> Any:
    """RECORDs of (key, day) pairs in the order given: keys of KEY_BYTES bytes (key_of), days as day_of."""
    import numpy as np

    record, _, _ = dtypes()
    keys = list(keys)
    if any(len(key) != KEY_BYTES for key in keys):
        raise ValueError(f"an index key is {KEY_BYTES} bytes")
    days = np.fromiter(days, np.int64, count=len(keys))
    if days.size and not (days.min() >= 0 and days.max() <= LAST_DAY):
        raise ValueError(f"an index day is 0..{LAST_DAY} ({batch_of(0)} to {batch_of(LAST_DAY)})")
    records = np.empty(len(keys), record)
    records["key"] = np.frombuffer(b"".join(keys), f"V{KEY_BYTES}")
    records["day"] = days
    return records


def make_records(keys: Iterable[bytes], days: Iterable[int]) -> Any:
    """A shard's records holding these (key, day) pairs: sorted, each once."""
    import numpy as np

    record, flat, _ = dtypes()
    return np.unique(records_of(keys, days).view(flat)).view(record)


def found(records: Any, wanted: Any) -> tuple[Any, Any]:
    """(where each of the `wanted` records is or would go in `records`, whether it is there)."""
    import numpy as np

    _, flat, _ = dtypes()
    held, wanted = records.view(flat), wanted.view(flat)
    at = np.searchsorted(held, wanted)
    there = at < len(held)
    there[there] = held[at[there]] == wanted[there]
    return at, there


def key_bounds(records: Any, keys: list[bytes]) -> tuple[Any, Any]:
    """For each key, the slice [start, stop) of `records` holding its records (empty when none)."""
    import numpy as np

    _, flat, _ = dtypes()
    held = records.view(flat)
    first = records_of(keys, [0] * len(keys)).view(flat)
    last = records_of(keys, [LAST_DAY] * len(keys)).view(flat)
    return np.searchsorted(held, first, "left"), np.searchsorted(held, last, "right")


def with_day(records: Any, keys: Iterable[bytes], day: int) -> Any | None:
    """`records` holding (key, day) for each key, or None when they all did already."""
    import numpy as np

    record, flat, _ = dtypes()
    keys = list(keys)
    new = make_records(keys, [day] * len(keys))
    at, there = found(records, new)
    if there.all():
        return None
    new, at = new[~there].view(flat), at[~there]
    merged = np.empty(len(records) + len(new), flat)
    slots = at + np.arange(len(new))  # each new record lands after the old ones before it and the new ones
    old = np.ones(len(merged), bool)
    old[slots] = False
    merged[slots], merged[old] = new, records.view(flat)
    return merged.view(record)


def without(records: Any, keys: Iterable[bytes], day: int | None = None) -> tuple[Any, int]:
    """(`records` less the keys' records of `day`, or all of them with day None; how many were dropped)."""
    import numpy as np

    record, flat, _ = dtypes()
    keys = sorted(set(keys))
    if day is None:
        start, stop = key_bounds(records, keys)
        counts = stop - start
        drop = np.repeat(start - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    else:
        at, there = found(records, records_of(keys, [day] * len(keys)))
        drop = at[there]
    keep = np.ones(len(records), bool)
    keep[drop] = False
    return records.view(flat)[keep].view(record), int(drop.size)


def key_of(sha256: str) -> bytes:
    return bytes.fromhex(sha256)[:KEY_BYTES]


def keys_by_shard(sha256s: Iterable[str]) -> dict[str, set[bytes]]:
    """The hashes' 16-byte keys by shard, the iterable read once: a million photos' two hashes are ~100 MB as
    keys, several times that as hex strings in sets and lists."""
    shards: dict[str, set[bytes]] = {}
    for sha in sha256s:
        shards.setdefault(shard_of(sha), set()).add(key_of(sha))
    return shards


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
        uri = shard_uri(index_uri, shard)
        records = parse_shard(store.read_or_none(uri), uri)
        start, stop = key_bounds(records, [key_of(sha) for sha in wanted])
        days = records["day"]
        return {
            wanted[i]: [batch_of(day) for day in days[start[i] : stop[i]].tolist()]
            for i in (stop > start).nonzero()[0].tolist()
        }

    answers: dict[str, list[str]] = {}
    for answer in pool_map(one, by_shard(set(sha256s)).items(), workers):
        answers.update(answer)
    return answers


def update(store: Any, uri: str, change: Callable[[Any], Any | None]) -> bool:
    """Read-modify-write one shard with a conditional write, retried when another writer got there first:
    `change` gets the shard's records and returns its new ones, or None to leave it as it is."""
    for _ in range(CAS_ATTEMPTS):
        data, etag = store.read_with_etag(uri)
        new = change(parse_shard(data, uri))
        if new is None:
            return False
        body = encode_shard(new)
        if store.put_if_match(uri, body, etag) if etag else store.put_if_absent(uri, body):
            return True
    raise IndexConflict(f"{uri}: {CAS_ATTEMPTS} conditional writes lost in a row")


def record(store: Any, index_uri: str, batch: str, sha256s: Iterable[str], *, workers: int = 8) -> int:
    """Add `sha256 -> batch` where missing (other batches' records are kept). Returns the shards written."""
    day = day_of(batch)

    def one(item: tuple[str, set[bytes]]) -> int:
        shard, keys = item
        return int(update(store, shard_uri(index_uri, shard), lambda records: with_day(records, keys, day)))

    return sum(pool_map(one, keys_by_shard(sha256s).items(), workers))


def forget(store: Any, index_uri: str, sha256s: Iterable[str], *, batch: str | None = None, workers: int = 8) -> int:
    """Drop the records of `batch` (an expired batch: other batches' copies stay known), or every record
    of the hashes (batch None: erased). Returns the records dropped."""
    day = None if batch is None else day_of(batch)

    def one(item: tuple[str, set[bytes]]) -> int:
        shard, keys = item
        dropped = [0]

        def drop(records: Any) -> Any | None:
            kept, dropped[0] = without(records, keys, day)
            return kept if dropped[0] else None

        update(store, shard_uri(index_uri, shard), drop)
        return dropped[0]

    return sum(pool_map(one, keys_by_shard(sha256s).items(), workers))
