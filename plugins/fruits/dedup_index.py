"""The lake's cross-batch duplicate index and its erased hashes, under `index/` (lake layout v2).

    index/sha256/<3 hex>.bin   one shard per sha256 prefix (4,096): sorted records of 18 bytes, the content
                               hash's first 16 bytes + a batch holding it (spark_jobs/lakeindex.py: the format)
    index/erased.json          {"sha256s": [...]}: content hashes erased on request (GDPR), refused for ever

A night reads and rewrites only the shards its photos hash to (conditional writes, retried on a
conflict), one at a time: the Airflow worker holds one shard (1/4,096 of the history), never the
history. 16 bytes of sha256 (128 bits) make a collision between two different photos of 365 M
(~2^-70) negligible. The index is written after a batch's manifest: an entry always names a
committed photo; an attempt that dies in between leaves entries missing (a later duplicate, never a
lost photo), and the batch's next attempt writes them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import lakeindex
from lakeindex import (
    CAS_ATTEMPTS,
    RECORD_SIZE,
    SHARD_HEX,
    IndexConflict,
    counts_as_stored,
    encode_shard,
    make_records,
    parse_shard,
    shard_of,
)

from fruits import lake
from fruits.storage import ConditionalStore

__all__ = [
    "RECORD_SIZE",
    "SHARD_HEX",
    "IndexConflict",
    "counts_as_stored",
    "encode_shard",
    "make_records",
    "parse_shard",
    "shard_of",
]
ERASED_NAME = "erased.json"


def index_uri(root: str) -> str:
    return lake.area_uri(root, "index")


def shard_uri(root: str, shard: str) -> str:
    return lakeindex.shard_uri(index_uri(root), shard)


def erased_uri(root: str) -> str:
    return index_uri(root) + ERASED_NAME


def batches_holding(
    store: ConditionalStore, root: str, sha256s: Iterable[str], *, workers: int = 8
) -> dict[str, list[str]]:
    """{sha256: every batch the index knows a copy in, oldest first}: what an erasure must visit."""
    return lakeindex.lookup(store, index_uri(root), [s.lower() for s in sha256s], workers=workers)


def lookup(store: ConditionalStore, root: str, sha256s: Iterable[str], *, workers: int = 8) -> dict[str, str]:
    """{sha256: the newest batch holding it} for the hashes the index knows (one read per shard needed)."""
    return {sha: batches[-1] for sha, batches in batches_holding(store, root, sha256s, workers=workers).items()}


def record(store: ConditionalStore, root: str, batch: str, sha256s: Iterable[str], *, workers: int = 8) -> int:
    """Record that `batch` holds these hashes (other batches' records kept). Returns the shards written."""
    return lakeindex.record(store, index_uri(root), lake.check_batch(batch), sha256s, workers=workers)


def forget(store: ConditionalStore, root: str, batch: str, sha256s: Iterable[str], *, workers: int = 8) -> int:
    """Drop an expired batch's records (fruits.retention): a later batch's copy stays known, and a photo
    landed again after its only copy expired is a new photo. Returns the records dropped."""
    return lakeindex.forget(store, index_uri(root), sha256s, batch=lake.check_batch(batch), workers=workers)


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
    """Remove the hashes from their shards, whichever batches hold them."""
    lakeindex.forget(store, index_uri(root), {sha.lower() for sha in sha256s})
