"""Getting new photos into the lake (the command: `python -m fruits.cli.upload`).

`upload_new_images` bundles the photos of one batch's landing folder (lake.landing_uri: a local folder
or an `s3://` prefix, laid out `[<anything>/][<Split>/]<Label>/<file>`) into Parquet objects
`raw/batch=<ds>/bundle-<16 hex>.parquet`, one row per photo with the columns of Spark's `binaryFile`
source (`path, modificationTime, length, content`) plus `sha256` (of the content as received). A photo's
key is `<Split>/<Label>/<file>` when a `Training` or `Test` folder sits above its label folder, else
`<Label>/<file>`; its `path` is `<raw batch uri><key>`.

Every landing file ends as exactly one outcome, listed in `raw/batch=<ds>/_ingestion.json`:
* `uploaded`: an image (by content: whatever Pillow, with pillow_heif, identifies), its personal
  metadata stripped (EXIF GPS, serials, owner, XMP, comments; orientation and ICC kept);
* `already_in_lake`: the same content (sha256) is in this batch or, per the index (fruits.dedup_index),
  in another one;
* `rejected` with a reason (REJECT_REASONS). A per-file problem never fails the upload.

Concurrent attempts on one batch are safe without a lock: bundles carry an attempt nonce in their name
(never overwritten by another attempt), `_uploads.json` is written with a conditional write and merged
on a conflict (photos the other attempt recorded are dropped from this attempt's bundles, which are
rewritten), and a bundle no manifest names is deleted only when older than LEFTOVER_GRACE_SECONDS (no
live attempt is that old). The index is updated after the manifest, so an index entry always names a
committed photo.

"""

from __future__ import annotations

import collections
import datetime as dt
import io
import json
import logging
import secrets
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from fruits import dedup_index, lake
from fruits.settings import PipelineSettings
from fruits.storage import (
    BUNDLE_MAX_BYTES,
    BUNDLE_MAX_PHOTOS,
    BUNDLE_ROW_GROUP_PHOTOS,
    UPLOADS_MANIFEST,
    BatchManifest,
    BundleWriter,
    Entry,
    Photo,
    Store,
    batch_manifest_uri,
    bundle_entries,
    ingestion_report_uri,
    sha256_bytes,
)

log = logging.getLogger(__name__)

MAX_PHOTO_BYTES = PipelineSettings.max_photo_bytes  # the setting's default, for callers without settings
# Concurrent landing GETs (a bounded pool) and the bytes they may hold at once.
READ_WORKERS = 16
READ_INFLIGHT_BYTES = 256 * 1024 * 1024
# Longer than any attempt lives (the task's execution timeout): only then is an unnamed bundle a leftover.
LEFTOVER_GRACE_SECONDS = 24 * 3600
MANIFEST_ATTEMPTS = 20
# After ingestion, landing files that are in the lake are kept (default), moved under ARCHIVE_PREFIX, or deleted.
LANDING_AFTER = ("keep", "archive", "delete")
ARCHIVE_PREFIX = "_ingested"
PROGRESS_EVERY = 1000

REJECT_REASONS = {
    "misplaced": "at the landing folder's root: photos sit in a <Label>/ folder",
    "no_label": "directly in a Training/ or Test/ folder: photos sit in a <Label>/ folder below it",
    "unreadable_name": "the file name is not UTF-8",
    "link_out_of_landing": "a link to something outside the landing folder",
    "folder_link": "a link to a folder (its files are not followed)",
    "hidden": "a hidden or temporary file (name starts with '.' or '_')",
    "empty": "an empty file",
    "too_large": "larger than max_photo_bytes",
    "unsupported": "not an image Pillow (with pillow_heif) identifies",
    "unreadable": "could not be read or its metadata stripped",
    "erased": "its content was erased on request (index/erased.json): never ingested again",
}


# The landing: every file, with its outcome
# ---------------------------------------------------------------------------------------------


@dataclass
class LandingFile:
    uri: str
    size: int
    key: str = ""  # `[<Split>/]<Label>/<file>` in the batch
    reason: str = ""  # a REJECT_REASONS key, when refused from the listing alone


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def classify(entry: Entry, landing_uri: str, max_photo_bytes: int) -> LandingFile:
    """What the listing alone tells about a landing file (no read)."""
    relative = entry.uri.removeprefix(landing_uri)
    parts = PurePosixPath(relative).parts
    file = LandingFile(entry.uri, entry.size)
    if not _is_utf8(entry.uri):
        file.reason = "unreadable_name"
    elif entry.link == "out":
        file.reason = "link_out_of_landing"
    elif entry.link == "folder":
        file.reason = "folder_link"
    elif any(part.startswith((".", "_")) for part in parts):
        file.reason = "hidden"
    elif len(parts) < 2:
        file.reason = "misplaced"
    elif parts[-2] in lake.SPLITS:  # a split is not a label: featurize would give it a null label
        file.reason = "no_label"
    elif entry.size == 0:
        file.reason = "empty"
    elif entry.size > max_photo_bytes:
        file.reason = "too_large"
    else:
        split = next((folder for folder in reversed(parts[:-2]) if folder in lake.SPLITS), None)
        file.key = "/".join(part for part in (split, parts[-2], parts[-1]) if part)
    return file


def read_in_pool(
    store: Store,
    files: Iterable[LandingFile],
    *,
    workers: int = READ_WORKERS,
    inflight_bytes: int = READ_INFLIGHT_BYTES,
) -> Iterator[tuple[LandingFile, bytes | Exception]]:
    """(file, its bytes or the error reading it), in order, read by a bounded pool of `workers` concurrent
    GETs holding at most `inflight_bytes` (sizes from the listing) at once. workers=1: one at a time."""

    def read(file: LandingFile) -> bytes | Exception:
        try:
            return store.read(file.uri)
        except Exception as error:  # noqa: BLE001 - a file that vanished or failed is reported, not fatal
            return error

    if workers <= 1:
        for file in files:
            yield file, read(file)
        return
    pending: collections.deque[tuple[LandingFile, Future]] = collections.deque()
    held = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="landing") as pool:
        for file in files:
            while pending and (len(pending) >= 2 * workers or held + file.size > inflight_bytes):
                done, future = pending.popleft()
                held -= done.size
                yield done, future.result()
            pending.append((file, pool.submit(read, file)))
            held += file.size
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


# ---------------------------------------------------------------------------------------------
# Images: identified by content; personal metadata stripped without re-encoding where possible
# ---------------------------------------------------------------------------------------------

_OPENERS_READY = False
ORIENTATION = 0x0112


def pillow_image():
    """PIL.Image with the HEIF/AVIF openers registered (once): every format the upload accepts."""
    global _OPENERS_READY
    from PIL import Image

    if not _OPENERS_READY:
        import pillow_heif

        pillow_heif.register_heif_opener()
        _OPENERS_READY = True
    return Image


def identify(data: bytes) -> tuple[str | None, int]:
    """(Pillow's format name, EXIF orientation or 1) from the header only (no decode); (None, 1): not an image."""
    Image = pillow_image()
    try:
        with Image.open(io.BytesIO(data)) as image:
            try:
                orientation = int(image.getexif().get(ORIENTATION, 1) or 1)
            except Exception:  # noqa: BLE001 - a broken EXIF block is stripped anyway
                orientation = 1
            return image.format, orientation
    except Image.DecompressionBombError:
        # An image all the same (featurize quarantines it at its pixel limit); its metadata is cut by format.
        magic = {b"\xff\xd8\xff": "JPEG", PNG_SIGNATURE: "PNG"}
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return "WEBP", 1
        return next((name for head, name in magic.items() if data.startswith(head)), "BOMB"), 1
    except Exception:  # noqa: BLE001 - UnidentifiedImageError and whatever a truncated header raises
        return None, 1


def _exif_orientation(orientation: int) -> bytes:
    """A TIFF-structured EXIF block holding the orientation only (b"Exif\\0\\0" + TIFF)."""
    exif = pillow_image().Exif()
    exif[ORIENTATION] = orientation
    return exif.tobytes()


# JPEG segments kept: JFIF/JFXX (APP0), ICC profile (APP2 "ICC_PROFILE"), Adobe colour transform (APP14),
# and everything that is not an APPn/COM segment (tables, frame, scan).
def strip_jpeg(data: bytes, orientation: int) -> bytes:
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream")
    out, position = [b"\xff\xd8"], 2
    exif = _exif_orientation(orientation) if orientation != 1 else b""
    inserted = False
    while True:
        if position + 4 > len(data) or data[position] != 0xFF:
            raise ValueError(f"JPEG segment expected at byte {position}")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = struct.unpack(">H", data[position + 2 : position + 4])[0]
        segment = data[position : position + 2 + length]
        if len(segment) < 2 + length:
            raise ValueError("truncated JPEG segment")
        if not inserted and marker != 0xE0:
            if exif:
                out.append(b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif)
            inserted = True
        if marker == 0xDA:  # start of scan: the image data, up to the end-of-image marker (trailers dropped)
            end = data.find(b"\xff\xd9", position + 2 + length)
            out.append(data[position:] if end < 0 else data[position : end + 2])
            return b"".join(out)
        keep = (
            not (0xE0 <= marker <= 0xEF or marker == 0xFE)
            or marker == 0xE0
            or marker == 0xEE
            or (marker == 0xE2 and segment[4:16] == b"ICC_PROFILE\0")
        )
        if keep:
            out.append(segment)
        position += 2 + length


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_DROPPED = {b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"tIME"}


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def strip_png(data: bytes, orientation: int) -> bytes:
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG stream")
    out, position = [PNG_SIGNATURE], len(PNG_SIGNATURE)
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        chunk = data[position : position + 12 + length]
        if len(chunk) < 12 + length:
            raise ValueError("truncated PNG chunk")
        if kind == b"IDAT" and orientation != 1:
            out.append(_png_chunk(b"eXIf", _exif_orientation(orientation)[6:]))
            orientation = 1
        if kind not in PNG_DROPPED:
            out.append(chunk)
        position += 12 + length
        if kind == b"IEND":
            break
    return b"".join(out)


def strip_webp(data: bytes, orientation: int) -> bytes:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a WebP stream")
    chunks, position = [], 12
    while position + 8 <= len(data):
        kind, length = data[position : position + 4], struct.unpack("<I", data[position + 4 : position + 8])[0]
        payload = data[position + 8 : position + 8 + length]
        if kind not in (b"EXIF", b"XMP "):
            chunks.append([kind, payload])
        position += 8 + length + (length & 1)
    if orientation != 1 and chunks and chunks[0][0] == b"VP8X":
        chunks.append([b"EXIF", _exif_orientation(orientation)[6:]])
    for chunk in chunks:
        if chunk[0] == b"VP8X":  # flags: XMP (0x04) and EXIF (0x08) say what follows
            flags = chunk[1][0] & ~0x0C | (0x08 if any(c[0] == b"EXIF" for c in chunks) else 0)
            chunk[1] = bytes([flags]) + chunk[1][1:]
    body = b"".join(kind + struct.pack("<I", len(p)) + p + b"\0" * (len(p) & 1) for kind, p in chunks)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """ISOBMFF boxes in data[start:end]: (type, payload start, box end)."""
    position = start
    while position + 8 <= end:
        size, kind = struct.unpack(">I4s", data[position : position + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[position + 8 : position + 16])[0], 16
        elif size == 0:
            size = end - position
        if size < header or position + size > end:
            raise ValueError(f"malformed {kind!r} box at byte {position}")
        yield kind, position + header, position + size
        position += size


def _uint(data: bytes, position: int, size: int) -> tuple[int, int]:
    return (int.from_bytes(data[position : position + size], "big") if size else 0), position + size


def _heif_metadata_extents(data: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, length, kind) of the Exif and XMP items of a HEIF/AVIF file, from its `meta` box."""
    meta = next(((s, e) for kind, s, e in _boxes(data, 0, len(data)) if kind == b"meta"), None)
    if meta is None:
        return []
    children = {kind: (s, e) for kind, s, e in _boxes(data, meta[0] + 4, meta[1])}  # meta is a FullBox
    wanted: dict[int, bytes] = {}
    if b"iinf" in children:
        s, e = children[b"iinf"]
        entries_at = s + 4 + (2 if data[s] == 0 else 4)
        for kind, start, _ in _boxes(data, entries_at, e):
            version = data[start]
            if kind != b"infe" or version < 2:
                continue
            id_size = 2 if version == 2 else 4
            item_id, at = _uint(data, start + 4, id_size)
            item_type = data[at + 2 : at + 6]
            if item_type == b"Exif":
                wanted[item_id] = b"Exif"
            elif item_type == b"mime":
                name_end = data.find(b"\0", at + 6)  # item_name, then content_type, both null-terminated
                content_type = data[name_end + 1 : data.find(b"\0", name_end + 1)].lower()
                if b"xmp" in content_type or b"rdf" in content_type:
                    wanted[item_id] = b"XMP"
    if not wanted or b"iloc" not in children:
        return []
    s, _ = children[b"iloc"]
    version = data[s]
    offset_size, length_size = data[s + 4] >> 4, data[s + 4] & 15
    base_size, index_size = data[s + 5] >> 4, (data[s + 5] & 15) if version in (1, 2) else 0
    count, at = _uint(data, s + 6, 2 if version < 2 else 4)
    idat = children.get(b"idat", (0, 0))[0]
    extents = []
    for _item in range(count):
        item_id, at = _uint(data, at, 2 if version < 2 else 4)
        method = 0
        if version in (1, 2):
            method, at = _uint(data, at, 2)
            method &= 15
        at += 2  # data_reference_index
        base, at = _uint(data, at, base_size)
        extent_count, at = _uint(data, at, 2)
        for _extent in range(extent_count):
            at += index_size
            offset, at = _uint(data, at, offset_size)
            length, at = _uint(data, at, length_size)
            if item_id in wanted:
                if method not in (0, 1):
                    raise ValueError("a metadata item built from other items")
                extents.append(((idat if method == 1 else 0) + base + offset, length, wanted[item_id]))
    return extents


EMPTY_TIFF = b"\0\0\0\0" + b"MM\0*\0\0\0\x08" + b"\0\0" + b"\0\0\0\0"  # offset header + an IFD of no entry
EMPTY_XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/>'


def strip_heif(data: bytes) -> bytes:
    """HEIC/HEIF/AVIF: the Exif and XMP items overwritten in place (same length, so no offset moves) with an
    empty EXIF and an empty XMP packet; the coded image untouched. The orientation is not in EXIF there
    (the `irot`/`imir` properties hold it, and stay)."""
    out = bytearray(data)
    for offset, length, kind in _heif_metadata_extents(data):
        if offset + length > len(data):
            raise ValueError("a metadata item outside the file")
        filler = (EMPTY_TIFF if kind == b"Exif" else EMPTY_XMP)[:length]
        pad = b"\0" if kind == b"Exif" else b" "
        out[offset : offset + length] = filler + pad * (length - len(filler))
    return bytes(out)


PERSONAL_INFO_KEYS = ("xmp", "XML:com.adobe.xmp", "comment", "photoshop", "iptc")  # EXIF: read as tags


def _reencode_png(data: bytes, orientation: int) -> bytes:
    """Formats whose metadata cannot be cut out byte-wise (TIFF, HEIF, AVIF...): decoded once and stored as a
    lossless PNG with the ICC profile and the orientation only (the key keeps its name; featurize reads content)."""
    Image = pillow_image()
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        icc = image.info.get("icc_profile")
        exif = pillow_image().Exif()
        if orientation != 1:
            exif[ORIENTATION] = orientation
        frame = image if image.mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I") else image.convert("RGBA")
        buffer = io.BytesIO()
        frame.save(buffer, "PNG", **({"icc_profile": icc} if icc else {}), exif=exif)
        return buffer.getvalue()


def _has_personal_metadata(data: bytes) -> bool:
    Image = pillow_image()
    with Image.open(io.BytesIO(data)) as image:
        exif = image.getexif()
        return any(tag != ORIENTATION for tag in exif) or any(
            _text(image.info.get(k)) not in ("", EMPTY_XMP.decode()) for k in PERSONAL_INFO_KEYS
        )


def _text(value: Any) -> str:
    raw = value if isinstance(value, bytes) else str(value or "").encode()
    return raw.decode("utf-8", "replace").strip(" \0\n")


def strip_metadata(data: bytes, image_format: str, orientation: int) -> tuple[bytes, str]:
    """(the photo without personal metadata, how: "cut" | "reencoded" | "none")."""
    if image_format == "JPEG":
        return strip_jpeg(data, orientation), "cut"
    if image_format == "PNG":
        return strip_png(data, orientation), "cut"
    if image_format == "WEBP":
        return strip_webp(data, orientation), "cut"
    if image_format in ("HEIF", "AVIF"):
        try:
            stripped = strip_heif(data)
            if not _has_personal_metadata(stripped):
                return stripped, "cut"
        except ValueError as error:  # a layout this parser does not follow: the decoding fallback below
            log.info("HEIF metadata not blanked in place (%s): re-encoding", error)
    if image_format == "BOMB":
        raise ValueError("a decompression bomb in a format whose metadata cannot be cut without decoding it")
    if _has_personal_metadata(data):
        return _reencode_png(data, orientation), "reencoded"
    return data, "none"


def _alternate_key(key: str, sha256: str) -> str:
    path = PurePosixPath(key)
    return str(path.with_name(f"{path.stem}-{sha256[:8]}{path.suffix}"))


def delete_leftover_bundles(
    store: Store,
    raw_uri: str,
    manifest: BatchManifest,
    *,
    dry_run: bool,
    grace_seconds: float = LEFTOVER_GRACE_SECONDS,
    now: float | None = None,
) -> list[str]:
    """Bundles the manifest does not name and older than the grace period: an attempt that died before its
    manifest write (its photos were bundled again by a later attempt). A younger one may be a live
    attempt's, about to be recorded: left alone."""
    now = time.time() if now is None else now
    leftovers = [
        entry.uri
        for entry in bundle_entries(store, raw_uri)
        if entry.uri.rsplit("/", 1)[1] not in manifest.bundles and now - entry.modified > grace_seconds
    ]
    for uri in leftovers:
        log.warning(
            "%s %s: left by an interrupted upload (not in %s, older than %d s)",
            "would delete" if dry_run else "deleting",
            uri,
            UPLOADS_MANIFEST,
            grace_seconds,
        )
        if not dry_run:
            store.delete(uri)
    return leftovers


# ---------------------------------------------------------------------------------------------
# The upload
# ---------------------------------------------------------------------------------------------


@dataclass
class Attempt:
    """One upload attempt's state: what it wrote, and every landing file's outcome."""

    batch: str
    recorded: BatchManifest
    etag: str | None
    writer: BundleWriter
    files: dict[str, str] = field(default_factory=dict)  # key -> sha256 of the photos this attempt bundled
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)  # landing uri -> outcome
    seen_shas: dict[str, str] = field(default_factory=dict)  # sha256 -> key, this attempt's and the batch's

    def outcome(self, uri: str, outcome: str, **details: Any) -> None:
        self.outcomes[uri] = {"outcome": outcome, **details}


def _upload_one(
    attempt: Attempt, file: LandingFile, data: bytes | Exception, erased: frozenset[str], max_photo_bytes: int
) -> Photo | None:
    """The file's outcome; the photo to bundle when it is new (a lake write error is the caller's to raise)."""
    if isinstance(data, Exception):
        attempt.outcome(file.uri, "rejected", reason="unreadable", detail=f"{type(data).__name__}: {data}")
        return
    if len(data) > max_photo_bytes:  # grew since the listing
        attempt.outcome(file.uri, "rejected", reason="too_large", bytes=len(data))
        return
    sha = sha256_bytes(data)
    if sha in erased:
        attempt.outcome(file.uri, "rejected", reason="erased", sha256=sha)
        return
    if sha in attempt.seen_shas:
        attempt.outcome(file.uri, "already_in_lake", sha256=sha, batch=attempt.batch, key=attempt.seen_shas[sha])
        return
    image_format, orientation = identify(data)
    if image_format is None:
        attempt.outcome(file.uri, "rejected", reason="unsupported", sha256=sha)
        return
    try:
        content, how = strip_metadata(data, image_format, orientation)
    except Exception as error:  # noqa: BLE001 - never let a photo with GPS through unstripped
        attempt.outcome(file.uri, "rejected", reason="unreadable", sha256=sha, detail=f"metadata: {error}")
        return
    key = file.key
    if key in attempt.recorded.files or key in attempt.files:
        key = _alternate_key(key, sha)
    attempt.files[key] = sha
    attempt.seen_shas[sha] = key
    attempt.outcome(file.uri, "uploaded", sha256=sha, key=key, format=image_format, metadata=how)
    return Photo(key, sha, content)


def _drop_from_bundles(attempt: Attempt, drop: set[str], rename: dict[str, str]) -> None:
    """Remove keys from (and rename keys in) this attempt's bundles, rewriting the bundles concerned."""
    for name, keys in list(attempt.writer.bundles.items()):
        if drop.intersection(keys) or rename.keys() & set(keys):
            attempt.writer.rewrite(name, drop, rename)
    for key in drop:
        attempt.files.pop(key, None)
    for old, new in rename.items():
        attempt.files[new] = attempt.files.pop(old)


def _reconcile(attempt: Attempt, other: BatchManifest) -> None:
    """Another attempt recorded first: photos it holds (same content) leave this attempt's bundles; a key it
    took for other content gets this photo's alternate key."""
    theirs = {sha: key for key, sha in other.files.items()}
    drop = {key for key, sha in attempt.files.items() if sha in theirs}
    rename = {
        key: _alternate_key(key, sha) for key, sha in attempt.files.items() if key not in drop and key in other.files
    }
    by_key = {o.get("key"): uri for uri, o in attempt.outcomes.items() if o["outcome"] == "uploaded"}
    for key in drop:
        sha = attempt.files[key]
        attempt.outcome(by_key[key], "already_in_lake", sha256=sha, batch=attempt.batch, key=theirs[sha])
    for old, new in rename.items():
        attempt.outcomes[by_key[old]]["key"] = new
    _drop_from_bundles(attempt, drop, rename)
    attempt.recorded = other


def _commit_manifest(store: Store, root: str, attempt: Attempt) -> BatchManifest:
    """Write the batch's manifest with this attempt's bundles, conditionally; on a conflict, merge and retry."""
    uri = batch_manifest_uri(root, attempt.batch)
    for _ in range(MANIFEST_ATTEMPTS):
        merged = BatchManifest(
            {**attempt.recorded.files, **attempt.files}, {**attempt.recorded.bundles, **attempt.writer.bundles}
        )
        if not attempt.writer.bundles:
            return merged
        data = merged.to_json(attempt.batch)
        written = store.put_if_match(uri, data, attempt.etag) if attempt.etag else store.put_if_absent(uri, data)
        if written:
            return merged
        log.warning("%s changed under this attempt (another attempt recorded photos): merging", uri)
        current, attempt.etag = store.read_with_etag(uri)
        _reconcile(attempt, BatchManifest.parse(current))
    raise RuntimeError(f"{uri}: {MANIFEST_ATTEMPTS} conditional writes lost in a row; nothing was lost, rerun")


def _write_report(store: Store, root: str, attempt: Attempt, landing_uri: str, counts: dict[str, Any]) -> str:
    """`_ingestion.json`: every landing file the batch has seen (earlier attempts' too) and its outcome."""
    uri = ingestion_report_uri(root, attempt.batch)
    for _ in range(MANIFEST_ATTEMPTS):
        data, etag = store.read_with_etag(uri)
        previous = json.loads(data)["files"] if data else {}
        files = {**previous}
        for landing_file, outcome in attempt.outcomes.items():
            before = previous.get(landing_file, {})
            # A rerun finding an uploaded photo again: it is still the file that was uploaded.
            if not (
                before.get("outcome") == "uploaded"
                and outcome.get("batch") == attempt.batch
                and outcome["outcome"] == "already_in_lake"
                and before.get("sha256") == outcome.get("sha256")
            ):
                files[landing_file] = outcome
        if files == previous:
            return uri  # nothing new: a rerun writes nothing
        report = {
            "batch": attempt.batch,
            "landing": landing_uri,
            "written_at": dt.datetime.now(dt.UTC).isoformat(),
            "last_attempt": counts,
            "reasons": REJECT_REASONS,
            "files": dict(sorted(files.items())),
        }
        body = json.dumps(report, indent=1, ensure_ascii=True).encode()
        if store.put_if_match(uri, body, etag) if etag else store.put_if_absent(uri, body):
            return uri
    raise RuntimeError(f"{uri}: {MANIFEST_ATTEMPTS} conditional writes lost in a row")


def archive_uri(landing_uri: str, uri: str) -> str:
    """Where `landing_after=archive` keeps a landing file of `landing_uri` (erasure deletes it there too)."""
    base = landing_uri.rstrip("/")
    parent, date = base.rsplit("/", 1)
    return f"{parent}/{ARCHIVE_PREFIX}/{date}/{uri[len(landing_uri) :]}"


def _tidy_landing(store: Store, landing_uri: str, attempt: Attempt, landing_after: str) -> int:
    """Landing files now in the lake: kept, archived or deleted (the setting). Rejected files always stay."""
    if landing_after == "keep":
        return 0
    done = 0
    for uri, outcome in attempt.outcomes.items():
        if outcome["outcome"] in ("uploaded", "already_in_lake") and uri.startswith(landing_uri):
            if landing_after == "archive":
                data = store.read(uri)
                store.put(archive_uri(landing_uri, uri), data, sha256_bytes(data))
            store.delete(uri)
            done += 1
    return done


def upload_new_images(
    lake_store: Store,
    landing_store: Store,
    landing_uri: str,
    batch: str,
    *,
    dry_run: bool = False,
    max_photos: int = BUNDLE_MAX_PHOTOS,
    max_bytes: int = BUNDLE_MAX_BYTES,
    row_group_photos: int = BUNDLE_ROW_GROUP_PHOTOS,
    max_photo_bytes: int = MAX_PHOTO_BYTES,
    read_workers: int = READ_WORKERS,
    landing_after: str = "keep",
    leftover_grace_seconds: float = LEFTOVER_GRACE_SECONDS,
) -> dict[str, Any]:
    """Bundle the photos of one batch's landing folder into `raw/batch=<batch>/`; returns the counts.
    Never raises for a per-file problem: each file's outcome is in `_ingestion.json` and the counts."""
    lake.check_batch(batch)
    if landing_after not in LANDING_AFTER:
        raise ValueError(f"landing_after must be one of {LANDING_AFTER}, not {landing_after!r}")
    landing_uri = landing_uri.rstrip("/") + "/"
    root = lake_store.root
    raw = lake.raw_uri(root, batch)
    data, etag = lake_store.read_with_etag(batch_manifest_uri(root, batch))
    recorded = BatchManifest.parse(data)
    writer = BundleWriter(lake_store, raw, secrets.token_hex(8), dry_run, max_photos, max_bytes, row_group_photos)
    attempt = Attempt(batch, recorded, etag, writer, seen_shas={sha: key for key, sha in recorded.files.items()})
    erased = dedup_index.erased(lake_store, root)
    started = time.monotonic()

    candidates = []
    for entry in landing_store.list_entries(landing_uri):
        file = classify(entry, landing_uri, max_photo_bytes)
        if file.reason:
            attempt.outcome(file.uri, "rejected", reason=file.reason, **({"bytes": file.size} if file.size else {}))
        else:
            candidates.append(file)
    for number, (file, content) in enumerate(read_in_pool(landing_store, candidates, workers=read_workers), 1):
        photo = None
        try:
            photo = _upload_one(attempt, file, content, erased, max_photo_bytes)
        except Exception as error:  # one odd file never fails the night
            log.exception("%s: unexpected error", file.uri)
            attempt.outcome(file.uri, "rejected", reason="unreadable", detail=f"{type(error).__name__}: {error}")
        if photo:
            writer.add(photo)  # outside the per-file guard: a lake that fails writes fails the attempt
        if number % PROGRESS_EVERY == 0:
            log.info("landing: %d of %d read (%.1f/s)", number, len(candidates), number / (time.monotonic() - started))
    writer.flush()

    # Content already in another batch (the index), found once the night's hashes are known.
    elsewhere = {
        sha: other
        for sha, other in dedup_index.lookup(lake_store, root, attempt.files.values()).items()
        if other != batch
    }
    if elsewhere:
        drop = {key for key, sha in attempt.files.items() if sha in elsewhere}
        for uri, outcome in attempt.outcomes.items():
            if outcome["outcome"] == "uploaded" and outcome["key"] in drop:
                attempt.outcome(uri, "already_in_lake", sha256=outcome["sha256"], batch=elsewhere[outcome["sha256"]])
        _drop_from_bundles(attempt, drop, {})

    if dry_run:
        manifest = BatchManifest({**recorded.files, **attempt.files}, {**recorded.bundles, **writer.bundles})
    else:
        manifest = _commit_manifest(lake_store, root, attempt)
    counts = _counts(attempt, manifest, started)
    report_uri = ingestion_report_uri(root, batch)
    if not dry_run:
        # The index after the manifest: an entry always names a committed photo. Photos already in this
        # batch are (re)recorded too: an attempt that died after its manifest left them out.
        committed = set(manifest.files.values())
        dedup_index.record(
            lake_store,
            root,
            batch,
            {
                o["sha256"]
                for o in attempt.outcomes.values()
                if o.get("batch", batch) == batch and o.get("sha256") in committed
            },
        )
        counts["leftover_bundles_deleted"] = len(
            delete_leftover_bundles(lake_store, raw, manifest, dry_run=False, grace_seconds=leftover_grace_seconds)
        )
        _write_report(lake_store, root, attempt, landing_uri, counts)
        counts["landing_files_" + ("archived" if landing_after == "archive" else "deleted")] = _tidy_landing(
            landing_store, landing_uri, attempt, landing_after
        )
    _log_counts(counts, started)
    return {
        **counts,
        "batch": batch,
        "raw_uri": raw,
        "ingestion_report_uri": report_uri,
        "dry_run": dry_run,
        "landing_uri": landing_uri,
    }


def _counts(attempt: Attempt, manifest: BatchManifest, started: float) -> dict[str, Any]:
    outcomes = list(attempt.outcomes.values())
    rejected = collections.Counter(o["reason"] for o in outcomes if o["outcome"] == "rejected")
    already = [o for o in outcomes if o["outcome"] == "already_in_lake"]
    uploaded = [o for o in outcomes if o["outcome"] == "uploaded"]
    return {
        "seen": len(outcomes),
        "uploaded": len(uploaded),
        "already_in_lake": len(already),
        "already_in_batch": sum(o["batch"] == attempt.batch for o in already),
        "in_other_batch": sum(o["batch"] != attempt.batch for o in already),
        "rejected": dict(sorted(rejected.items())),
        "renamed": sum(
            PurePosixPath(o["key"]).name != PurePosixPath(uri).name
            for uri, o in attempt.outcomes.items()
            if o["outcome"] == "uploaded"
        ),
        "metadata_stripped": sum(o["metadata"] != "none" for o in uploaded),
        "reencoded": sum(o["metadata"] == "reencoded" for o in uploaded),
        "bundles_written": len(attempt.writer.bundles),
        "leftover_bundles_deleted": 0,
        "images_in_batch": len(manifest.files),
        "bundles_in_batch": len(manifest.bundles),
        "seconds": round(time.monotonic() - started, 3),
    }


def _log_counts(counts: dict[str, Any], started: float) -> None:
    seconds = max(time.monotonic() - started, 1e-6)
    log.info(
        "landing: %d seen (%.1f/s), %d uploaded in %d bundles, %d already in the lake (%d in this batch, "
        "%d in another), rejected %s, %d renamed; batch now %d photos",
        counts["seen"],
        counts["seen"] / seconds,
        counts["uploaded"],
        counts["bundles_written"],
        counts["already_in_lake"],
        counts["already_in_batch"],
        counts["in_other_batch"],
        counts["rejected"] or "none",
        counts["renamed"],
        counts["images_in_batch"],
    )


def unaccounted_landing_files(lake_store: Store, landing_store: Store, landing_uri: str, batch: str) -> dict[str, Any]:
    """The files of one batch's landing folder that its `_ingestion.json` gives no outcome (never ingested,
    or landed after the run read the folder). One listing of that folder and one read: the cost of that
    night's landing, not of the lake. Returns {batch, landing_uri, ingestion_report_uri, landing_files,
    unaccounted (their URIs, sorted)}."""
    lake.check_batch(batch)
    landing_uri = landing_uri.rstrip("/") + "/"
    report_uri = ingestion_report_uri(lake_store.root, batch)
    data = lake_store.read_or_none(report_uri)
    outcomes = json.loads(data)["files"] if data else {}
    listed = [entry.uri for entry in landing_store.list_entries(landing_uri)]
    return {
        "batch": batch,
        "landing_uri": landing_uri,
        "ingestion_report_uri": report_uri,
        "ingestion_report_found": data is not None,
        "landing_files": len(listed),
        "unaccounted": sorted(uri for uri in listed if uri not in outcomes),
    }
