"""The lake's cross-batch duplicate index and its erased hashes, under `index/` (lake layout v2).

    index/sha256/<3 hex>.bin   one shard per sha256 prefix (4,096): sorted records of 18 bytes,
                               the content hash's first 16 bytes + the batch as uint16 days since 1970-01-01
    index/erased.json          {"sha256s": [...]}: content hashes erased on request (GDPR), refused for ever

A night reads and rewrites only the shards its photos hash to (conditional writes, retried on a
conflict), one at a time: the Airflow worker holds one shard (1/4,096 of the history), never the
history. 16 bytes of sha256 (128 bits) make a collision between two different photos of 365 M
(~2^-70) negligible. The index is written after a batch's manifest: an entry always names a
committed photo; an attempt that dies in between leaves entries missing (a later duplicate, never a
lost photo), and the batch's next attempt writes them.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fruits import lake
from fruits.storage import ConditionalStore

SHARD_HEX = 3  # 4,096 shards: a night of 1 M photos writes each once (PUTs ~0.02 USD), reads 2x each
RECORD = struct.Struct(">16sH")
EPOCH = dt.date(1970, 1, 1)
ERASED_NAME = "erased.json"
CAS_ATTEMPTS = 20


class IndexConflict(RuntimeError):
    """A shard kept changing under us (CAS_ATTEMPTS conditional writes lost in a row)."""


def shard_of(sha256: str) -> str:
    return sha256[:SHARD_HEX].lower()


def shard_uri(root: str, shard: str) -> str:
    return lake.area_uri(root, "index") + f"sha256/{shard}.bin"


def erased_uri(root: str) -> str:
    return lake.area_uri(root, "index") + ERASED_NAME


def _day(batch: str) -> int:
    return (dt.date.fromisoformat(lake.check_batch(batch)) - EPOCH).days


def _batch(day: int) -> str:
    return (EPOCH + dt.timedelta(days=day)).isoformat()


def parse_shard(data: bytes | None) -> dict[bytes, int]:
    if not data:
        return {}
    if len(data) % RECORD.size:
        raise ValueError(f"index shard of {len(data)} bytes is not a whole number of {RECORD.size}-byte records")
    return dict(RECORD.iter_unpack(data))


def encode_shard(entries: dict[bytes, int]) -> bytes:
    return b"".join(RECORD.pack(key, day) for key, day in sorted(entries.items()))


def _key(sha256: str) -> bytes:
    return bytes.fromhex(sha256)[:16]


def _by_shard(sha256s: Iterable[str]) -> dict[str, list[str]]:
    shards: dict[str, list[str]] = {}
    for sha in sha256s:
        shards.setdefault(shard_of(sha), []).append(sha)
    return shards


def lookup(store: ConditionalStore, root: str, sha256s: Iterable[str], *, workers: int = 8) -> dict[str, str]:
    """{sha256: batch} for the hashes the index knows; reads each needed shard once, `workers` at a time,
    and keeps only the answers (not the shards)."""

    def one(item: tuple[str, list[str]]) -> dict[str, str]:
        shard, wanted = item
        entries = parse_shard(store.read_or_none(shard_uri(root, shard)))
        return {sha: _batch(entries[_key(sha)]) for sha in wanted if _key(sha) in entries}

    found: dict[str, str] = {}
    for answer in _pool_map(one, _by_shard(sha256s).items(), workers):
        found.update(answer)
    return found


def record(store: ConditionalStore, root: str, batch: str, sha256s: Iterable[str], *, workers: int = 8) -> int:
    """Add `sha256 -> batch` for hashes not in the index yet (an existing entry is kept: the first batch
    holding a content stays its home). Returns the number of shards written."""
    day = _day(batch)

    def one(item: tuple[str, list[str]]) -> int:
        shard, shas = item
        return int(_update(store, shard_uri(root, shard), lambda entries: _add(entries, shas, day)))

    return sum(_pool_map(one, _by_shard(sha256s).items(), workers))


def _add(entries: dict[bytes, int], shas: list[str], day: int) -> bool:
    new = {_key(sha) for sha in shas} - entries.keys()
    entries.update(dict.fromkeys(new, day))
    return bool(new)


def _update(store: ConditionalStore, uri: str, change) -> bool:
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


def _pool_map(function, items: Iterable[Any], workers: int) -> Iterator[Any]:
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="index") as pool:
        yield from pool.map(function, items)


# --------------------------------------------------------------------------------------- erased hashes


def erased(store: ConditionalStore, root: str) -> frozenset[str]:
    """Every erased content hash (one GET; grows with erasure requests, not with photos)."""
    data = store.read_or_none(erased_uri(root))
    return frozenset(json.loads(data)["sha256s"]) if data else frozenset()


def record_erased(store: ConditionalStore, root: str, sha256s: Iterable[str], *, drop: bool = True) -> int:
    """Record erased content hashes (later uploads refuse them) and drop them from their shards (`drop=False`:
    later, with `drop_entries`, once the erasure no longer needs the index to find the photo's batch).
    Returns how many were new to the erased list."""
    wanted = {sha.lower() for sha in sha256s}
    for sha in wanted:
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ValueError(f"not a sha256: {sha!r}")
    uri = erased_uri(root)
    for _ in range(CAS_ATTEMPTS):
        data, etag = store.read_with_etag(uri)
        known = set(json.loads(data)["sha256s"]) if data else set()
        added = wanted - known
        if not added:
            break
        body = json.dumps({"sha256s": sorted(known | wanted)}, indent=0).encode()
        if store.put_if_match(uri, body, etag) if etag else store.put_if_absent(uri, body):
            break
    else:
        raise IndexConflict(f"{uri}: {CAS_ATTEMPTS} conditional writes lost in a row")
    if drop:
        drop_entries(store, root, wanted)
    return len(added)


def drop_entries(store: ConditionalStore, root: str, sha256s: Iterable[str]) -> None:
    """Remove the hashes from their shards, whichever batch they name."""
    for shard, shas in _by_shard(sha256s).items():
        keys = {_key(sha) for sha in shas}
        _update(store, shard_uri(root, shard), lambda entries, keys=keys: _drop(entries, keys))


def _drop(entries: dict[bytes, int], keys: set[bytes]) -> bool:
    present = keys & entries.keys()
    for key in present:
        del entries[key]
    return bool(present)


def forget(store: ConditionalStore, root: str, batch: str, sha256s: Iterable[str], *, workers: int = 8) -> int:
    """Drop the entries of an expired batch (fruits.retention): only those whose home is `batch`, so a later
    batch's copy stays known. A photo landed again after its expiry is then a new photo. Returns entries dropped."""
    day = _day(batch)

    def one(item: tuple[str, list[str]]) -> int:
        shard, shas = item
        keys = {_key(sha) for sha in shas}
        dropped = []

        def change(entries: dict[bytes, int]) -> bool:
            dropped[:] = [key for key in keys if entries.get(key) == day]
            for key in dropped:
                del entries[key]
            return bool(dropped)

        _update(store, shard_uri(root, shard), change)
        return len(dropped)

    return sum(_pool_map(one, _by_shard(sha256s).items(), workers))
