"""The duplicate index's shards (spark_jobs/lakeindex.py), checked against a plain decode of the format done here
with `struct`: 18-byte records, the sha256's first 16 bytes + a big-endian uint16 day, sorted, each once."""

from __future__ import annotations

import random
import struct

import lakeindex
import pytest

from fruits import storage

REFERENCE = struct.Struct(">16sH")


def reference_bytes(pairs) -> bytes:
    return b"".join(REFERENCE.pack(key, day) for key, day in sorted(set(pairs)))


def reference_pairs(data: bytes) -> list[tuple[bytes, int]]:
    return list(REFERENCE.iter_unpack(data))


def shas_in_one_shard(rng: random.Random, count: int, prefix: str = "abc") -> list[str]:
    return [prefix + "".join(rng.choices("0123456789abcdef", k=61)) for _ in range(count)]


@pytest.mark.parametrize("seed", range(5))
def test_random_shards_round_trip_byte_identically_and_decode_as_struct_does(seed):
    rng = random.Random(seed)
    keys = [rng.randbytes(16) for _ in range(rng.randint(1, 400))]
    keys += [keys[0][:15] + bytes([keys[0][15] ^ 1]), bytes(16), b"\xff" * 16]  # neighbours and the extremes
    pairs = [
        (rng.choice(keys), rng.choice([0, 1, 255, 256, 20_000, 65_535, rng.randrange(65_536)])) for _ in range(900)
    ]
    expected = reference_bytes(pairs)

    built = lakeindex.make_records(*zip(*pairs, strict=True))  # unsorted, with repeats: sorted, each once
    assert lakeindex.encode_shard(built) == expected
    records = lakeindex.parse_shard(expected)
    assert lakeindex.encode_shard(records) == expected
    assert [(bytes(r["key"]), int(r["day"])) for r in records] == reference_pairs(expected)


def test_empty_and_missing_shards_hold_no_record():
    assert len(lakeindex.parse_shard(None)) == len(lakeindex.parse_shard(b"")) == 0
    assert lakeindex.encode_shard(lakeindex.make_records([], [])) == b""


@pytest.mark.parametrize(
    "data, why",
    [
        (REFERENCE.pack(b"k" * 16, 3) + b"\x00", "19 bytes is not a whole number of 18-byte records"),
        (REFERENCE.pack(b"k" * 16, 3) + REFERENCE.pack(b"a" * 16, 3), "not in ascending"),  # keys out of order
        (REFERENCE.pack(b"k" * 16, 9) + REFERENCE.pack(b"k" * 16, 3), "not in ascending"),  # days out of order
        (REFERENCE.pack(b"k" * 16, 3) * 2, "not in ascending"),  # a repeated record
    ],
)
def test_a_shard_that_is_not_whole_sorted_unique_records_is_refused_by_name(tmp_path, data, why):
    store = storage.LocalStore(tmp_path)
    index = store.root + "/index"
    sha = "6b" + "0" * 62
    uri = lakeindex.shard_uri(index, lakeindex.shard_of(sha))
    assert store.put_if_absent(uri, data)
    for call in (
        lambda: lakeindex.lookup(store, index, [sha]),
        lambda: lakeindex.record(store, index, "2026-03-12", [sha]),
        lambda: lakeindex.forget(store, index, [sha]),
    ):
        with pytest.raises(ValueError, match=why) as refused:
            call()
        assert uri in str(refused.value)
    assert store.read(uri) == data  # nothing written over it


def test_record_forget_and_lookup_agree_with_a_plain_model_of_the_index(tmp_path):
    """Random nights recorded and forgotten, erasures, on hashes crowded into two shards: after each step every
    shard's bytes are exactly the plain model's, and lookup answers from it."""
    rng = random.Random(22)
    store = storage.LocalStore(tmp_path)
    index = store.root + "/index"
    shas = shas_in_one_shard(rng, 300) + shas_in_one_shard(rng, 100, prefix="000")
    batches = ["1970-01-01", "2025-03-12", "2025-03-13", "2026-03-12", "2149-06-06"]
    model: set[tuple[bytes, int]] = set()
    for step in range(40):
        chosen = rng.sample(shas, rng.randint(1, 120))
        keys = {lakeindex.key_of(sha) for sha in chosen}
        action = rng.choice(("record", "record", "expire", "erase"))
        if action == "record":
            batch = rng.choice(batches)
            new = {(key, lakeindex.day_of(batch)) for key in keys}
            written = lakeindex.record(store, index, batch, chosen, workers=rng.choice((1, 4)))
            assert written == len(
                {
                    lakeindex.shard_of(sha)
                    for sha in chosen
                    if (lakeindex.key_of(sha), lakeindex.day_of(batch)) in new - model
                }
            )
            model |= new
        else:
            batch = rng.choice(batches) if action == "expire" else None
            gone = {
                (key, day) for key, day in model if key in keys and (batch is None or day == lakeindex.day_of(batch))
            }
            assert lakeindex.forget(store, index, chosen, batch=batch, workers=rng.choice((1, 4))) == len(gone)
            model -= gone
        for shard in ("abc", "000"):
            data = store.read_or_none(lakeindex.shard_uri(index, shard)) or b""
            assert data == reference_bytes(p for p in model if p[0].hex()[:3] == shard), (step, action)
        asked = rng.sample(shas, 50)
        expected = {}
        for sha in asked:
            days = sorted(day for key, day in model if key == lakeindex.key_of(sha))
            if days:
                expected[sha] = [lakeindex.batch_of(day) for day in days]
        assert lakeindex.lookup(store, index, asked) == expected


def test_forgetting_a_batch_keeps_other_batches_and_other_hashes_and_recording_twice_writes_once(tmp_path):
    store = storage.LocalStore(tmp_path)
    index = store.root + "/index"
    rng = random.Random(5)
    kept, expired = shas_in_one_shard(rng, 3), shas_in_one_shard(rng, 2)
    assert lakeindex.record(store, index, "2025-03-12", kept + expired) == 1
    assert lakeindex.record(store, index, "2026-03-12", expired[:1]) == 1
    assert lakeindex.record(store, index, "2026-03-12", expired[:1]) == 0  # already there: nothing written
    uri = lakeindex.shard_uri(index, "abc")
    assert len(store.read(uri)) == 6 * 18

    assert lakeindex.forget(store, index, expired, batch="2025-03-12") == 2
    assert lakeindex.lookup(store, index, kept + expired) == {
        **{sha: ["2025-03-12"] for sha in kept},
        expired[0]: ["2026-03-12"],
    }
    assert lakeindex.forget(store, index, expired, batch="2025-03-12") == 0
    assert lakeindex.forget(store, index, kept[:1] + expired) == 2  # erased: every batch's record of them
    assert lakeindex.lookup(store, index, kept + expired) == {sha: ["2025-03-12"] for sha in kept[1:]}
    assert len(store.read(uri)) == 2 * 18


def test_a_batch_outside_the_format_s_days_is_refused():
    with pytest.raises(ValueError, match="0..65535"):
        lakeindex.make_records([bytes(16)], [lakeindex.day_of("2149-06-07")])
    with pytest.raises(ValueError, match="16 bytes"):
        lakeindex.make_records([bytes(15)], [0])
