"""fruits.release: the weights' recorded sha256, the node wheelhouse published once per lock and only with
locked wheels, and the lock text itself (per-machine hashes, markers for one-machine packages)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fruits import lake, release
from fruits.storage import LocalStore, file_uri

WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "models" / "keras" / release.DEFAULT_WEIGHTS_FILE


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "lake"), file_uri(tmp_path / "lake")


def test_default_weights_come_from_the_lake_with_their_recorded_sha256(store):
    lake_store, root = store
    with pytest.raises(FileNotFoundError, match="publish-weights"):
        release.default_weights(lake_store, root)  # never published: refused at plan time
    data = WEIGHTS.read_bytes() if WEIGHTS.exists() else b"stand-in weights"
    published = release.publish_weights(lake_store, root, data)
    assert published["weights"] == lake.models_uri(root) + release.DEFAULT_WEIGHTS_FILE
    assert release.default_weights(lake_store, root) == {
        "weights": published["weights"],
        "weights_sha256": hashlib.sha256(data).hexdigest(),
        "model_payload": None,  # never converted: each run converts the weights itself
        "model_payload_sha256": None,
    }
    lake_store.put(published["weights"] + ".sha256", b"not a hash\n", "x")
    with pytest.raises(ValueError, match="does not hold a sha256"):
        release.default_weights(lake_store, root)


def test_the_weights_conversion_is_published_beside_them_and_named_by_their_sha256(store):
    """featurize's --model-payload: the release command's one conversion, found by the weights' sha256, so
    new weights never meet an old payload; recorded last, so a half-published payload is never used."""
    lake_store, root = store
    first = release.publish_weights(lake_store, root, b"weights v1", payload=b"flatbuffer of v1")
    assert first["model_payload"] == lake.litert_payload_uri(root, hashlib.sha256(b"weights v1").hexdigest())
    assert lake_store.read(first["model_payload"]) == b"flatbuffer of v1"
    assert release.default_weights(lake_store, root) == first
    assert first["model_payload_sha256"] == hashlib.sha256(b"flatbuffer of v1").hexdigest()

    release.publish_weights(lake_store, root, b"weights v2")  # new weights, not converted (--no-payload)
    latest = release.default_weights(lake_store, root)
    assert latest["weights_sha256"] == hashlib.sha256(b"weights v2").hexdigest()
    assert latest["model_payload"] is None  # v1's flatbuffer is not these weights'

    second = release.publish_weights(lake_store, root, b"weights v3", payload=b"flatbuffer of v3")
    lake_store.delete(second["model_payload"] + release.SHA256_SUFFIX)  # the record never written
    assert release.default_weights(lake_store, root)["model_payload"] is None


def _wheels(tmp_path: Path) -> tuple[bytes, Path]:
    folder = tmp_path / "wheels"
    digests = []
    for machine in release.NODE_MACHINES:
        (folder / machine).mkdir(parents=True)
        wheel = folder / machine / f"probe-1.0-cp311-cp311-manylinux_2_17_{machine}.whl"
        wheel.write_bytes(f"wheel for {machine}".encode())
        digests.append(hashlib.sha256(wheel.read_bytes()).hexdigest())
    lock = "probe==1.0 \\\n" + " \\\n".join(f"    --hash=sha256:{d}" for d in digests) + "\n"
    return lock.encode(), folder


def test_the_wheelhouse_is_published_once_per_lock_and_only_with_locked_wheels(store, tmp_path):
    lake_store, root = store
    lock, wheels = _wheels(tmp_path)
    assert not release.wheelhouse_published(lake_store, root, lock)
    first = release.publish_wheelhouse(lake_store, root, lock, wheels)
    assert first["published"] and first["wheels"] == {"x86_64": 1, "aarch64": 1}
    base = release.wheelhouse_uri(root, lock)
    assert base == lake.area_uri(root, "code") + f"wheelhouse/{hashlib.sha256(lock).hexdigest()[:16]}/"
    assert lake_store.read(base + "aarch64/probe-1.0-cp311-cp311-manylinux_2_17_aarch64.whl") == b"wheel for aarch64"
    assert release.wheelhouse_published(lake_store, root, lock)
    assert not release.publish_wheelhouse(lake_store, root, lock, wheels)["published"]  # once per lock

    (wheels / "x86_64" / "evil-1.0-py3-none-any.whl").write_bytes(b"not locked")
    with pytest.raises(ValueError, match="not in the lock"):
        release.publish_wheelhouse(lake_store, root, lock + b"# changed\n", wheels)


def test_the_lock_hashes_each_machines_wheel_and_marks_one_machine_packages():
    resolved = {
        "x86_64": {"numpy": ("2.4.6", "n-x.whl", "a" * 64), "intelonly": ("1.0", "i.whl", "c" * 64)},
        "aarch64": {"numpy": ("2.4.6", "n-a.whl", "b" * 64)},
    }
    text = release.lock_text(resolved, "requirements/spark-node.txt")
    assert f"numpy==2.4.6 \\\n    --hash=sha256:{'a' * 64} \\\n    --hash=sha256:{'b' * 64}\n" in text
    assert "intelonly==1.0 ; platform_machine == 'x86_64'" in text
    assert release.locked_hashes(text) == {"numpy": {"a" * 64, "b" * 64}, "intelonly": {"c" * 64}}
    with pytest.raises(ValueError, match="different versions"):
        release.lock_text({"x86_64": {"numpy": ("1", "x", "a" * 64)}, "aarch64": {"numpy": ("2", "y", "b" * 64)}}, "r")


def test_a_plan_without_the_wheelhouse_of_the_repositorys_lock_is_refused(store, tmp_path):
    lake_store, root = store
    repo = tmp_path / "repo"
    lock, wheels = _wheels(tmp_path)
    (repo / "requirements").mkdir(parents=True)
    (repo / release.NODE_LOCK).write_bytes(lock)
    with pytest.raises(FileNotFoundError, match="make wheelhouse"):
        release.require_wheelhouse(lake_store, root, repo)
    release.publish_wheelhouse(lake_store, root, lock, wheels)
    assert release.require_wheelhouse(lake_store, root, repo) == release.wheelhouse_uri(root, lock)
