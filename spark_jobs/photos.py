"""Per-photo work of the ingestion, pure Python (Pillow + pillow_heif), no `fruits` import: the Spark job
spark_jobs/ingest.py runs it on the executors (shipped with --py-files) and plugins/fruits/upload.py imports it.

A photo is identified by its content (whatever Pillow, with pillow_heif, opens), its personal metadata is
stripped without re-encoding where the format allows (EXIF GPS, serials, owner, XMP, comments; orientation
and ICC kept), and `examine` gives one photo's verdict: its hashes (as received, and of the stored bytes),
its format, how it was stripped, or why it is refused.
"""

from __future__ import annotations

import hashlib
import io
import logging
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

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


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Verdict:
    """One photo's examination: refused (`reason`, a REJECT_REASONS key) or the bytes to store."""

    sha256: str  # of the bytes as received
    content_sha256: str = ""  # of the bytes stored (metadata stripped): equal for a photo re-sent with new EXIF
    format: str = ""
    metadata: str = ""  # how it was stripped: "cut" | "reencoded" | "none"
    reason: str = ""
    detail: str = ""
    content: bytes | None = None


def examine(data: bytes, erased: frozenset[str] | set[str] = frozenset(), sha256: str | None = None) -> Verdict:
    """Identify, strip and hash one photo; refused when not an image, not strippable, or erased (by the hash
    of the bytes as received or of the stripped bytes: new metadata does not bring an erased photo back)."""
    sha = sha256 or sha256_hex(data)
    if sha in erased:
        return Verdict(sha, reason="erased")
    image_format, orientation = identify(data)
    if image_format is None:
        return Verdict(sha, reason="unsupported")
    try:
        content, how = strip_metadata(data, image_format, orientation)
    except Exception as error:  # noqa: BLE001 - never let a photo with GPS through unstripped
        return Verdict(sha, reason="unreadable", detail=f"metadata: {error}")
    content_sha = sha256_hex(content)
    if content_sha in erased:
        return Verdict(sha, content_sha, reason="erased")
    return Verdict(sha, content_sha, image_format, how, content=content)
