"""One writer per batch: a pipeline run or an erasure holds `locks/batch=<ds>.json` (lake.lock_uri).

The lock is a small JSON object {batch, owner, acquired_at, expires_at, released}. Every change is a
conditional write (S3 If-None-Match / If-Match; a local lake: O_EXCL / a lock file), so two acquirers
never both win, and taking over an expired lock (a dead holder) is itself conditional. Release writes a
`released` record (conditionally, only by its owner) rather than deleting, so no unconditional write exists.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

from fruits import lake
from fruits.storage import ConditionalStore

DEFAULT_TTL_SECONDS = 6 * 3600


class BatchLocked(RuntimeError):
    """The batch is held by someone else; the message names the holder and until when."""

    def __init__(self, batch: str, holder: dict[str, Any]):
        self.batch, self.holder = batch, holder
        super().__init__(
            f"batch {batch} is locked by {holder.get('owner')!r} since {holder.get('acquired_at')} "
            f"(expires {holder.get('expires_at')}): wait for it to finish, or for the expiry"
        )


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.UTC)


def _is_free(record: dict[str, Any], owner: str, at: dt.datetime) -> bool:
    return (
        record.get("released") or record.get("owner") == owner or dt.datetime.fromisoformat(record["expires_at"]) <= at
    )


def acquire(
    store: ConditionalStore,
    root: str,
    batch: str,
    owner: str,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    *,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Take the batch's lock (or renew it when `owner` holds it already); raises BatchLocked naming the holder."""
    if not owner:
        raise ValueError("a lock needs an owner (e.g. the run id, or erase-<pid>@<host>)")
    uri = lake.lock_uri(root, batch)
    at = _now(now)
    record = {
        "batch": batch,
        "owner": owner,
        "acquired_at": at.isoformat(),
        "expires_at": (at + dt.timedelta(seconds=ttl_seconds)).isoformat(),
        "released": False,
    }
    body = json.dumps(record, indent=1).encode()
    data, etag = store.read_with_etag(uri)
    if data is None:
        if store.put_if_absent(uri, body):
            return record
    else:
        current = json.loads(data)
        if _is_free(current, owner, at) and store.put_if_match(uri, body, etag):
            return record
        if not _is_free(current, owner, at):
            raise BatchLocked(batch, current)
    # Lost a race: whoever won holds it now.
    raise BatchLocked(batch, json.loads(store.read_or_none(uri) or b"{}"))


def release(store: ConditionalStore, root: str, batch: str, owner: str) -> bool:
    """Release the lock if `owner` holds it; False when it does not (expired and taken over, or never held)."""
    uri = lake.lock_uri(root, batch)
    data, etag = store.read_with_etag(uri)
    if data is None:
        return False
    current = json.loads(data)
    if current.get("owner") != owner or current.get("released"):
        return False
    body = json.dumps({**current, "released": True}, indent=1).encode()
    return store.put_if_match(uri, body, etag)


@contextlib.contextmanager
def holding(store: ConditionalStore, root: str, batch: str, owner: str) -> Iterator[None]:
    """Hold the batch's lock for the block: taken (BatchLocked if another holds it) and released after, unless
    `owner` held it already (a run's own batch: its unlock_batch releases it, with the run's TTL)."""
    current = holder(store, root, batch)
    mine = current is not None and current.get("owner") == owner
    if not mine:
        acquire(store, root, batch, owner)
    try:
        yield
    finally:
        if not mine:
            release(store, root, batch, owner)


def holder(store: ConditionalStore, root: str, batch: str) -> dict[str, Any] | None:
    """The live lock record of a batch (None: free)."""
    data = store.read_or_none(lake.lock_uri(root, batch))
    record = json.loads(data) if data else None
    if not record or record.get("released") or dt.datetime.fromisoformat(record["expires_at"]) <= _now(None):
        return None
    return record
