"""A photo directly under `Training/` or `Test/` (issue 23, item 10) has no label folder: it is rejected at ingestion
with its own reason, stays in the landing, and never reaches featurize as a row with a null label."""

from __future__ import annotations

import io
import json

from PIL import Image

from fruits import lake, storage, upload

BATCH = "2026-05-04"


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 40 % 256, 90, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_a_photo_directly_under_a_split_folder_is_rejected_with_a_reason(tmp_path):
    landing = tmp_path / "landing"
    names = ["Training/loose.jpg", "Test/loose.jpg", "phone/Training/loose2.jpg", "Training/Kiwi/ok.jpg", "Kiwi/k.jpg"]
    for seed, name in enumerate(names):
        (landing / name).parent.mkdir(parents=True, exist_ok=True)
        (landing / name).write_bytes(jpeg(seed))
    store = storage.LocalStore(tmp_path / "lake")
    counts = upload.upload_new_images(store, storage.LocalStore(landing), storage.file_uri(landing), BATCH)
    assert (counts["uploaded"], counts["rejected"]) == (2, {"no_label": 3})
    assert sorted(storage.read_manifest(store, store.root, BATCH)) == ["Kiwi/k.jpg", "Training/Kiwi/ok.jpg"]
    report = json.loads(store.read(storage.ingestion_report_uri(store.root, BATCH)))
    assert {f for f, o in report["files"].items() if o.get("reason") == "no_label"} == {
        storage.file_uri(landing / name) for name in names[:3]
    }
    assert "no_label" in report["reasons"] and all((landing / name).exists() for name in names)
    assert all(
        split not in key.split("/")[-2]
        for key in storage.read_manifest(store, store.root, BATCH)
        for split in lake.SPLITS
    )
