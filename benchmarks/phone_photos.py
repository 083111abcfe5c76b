"""The phone-photo workload (issue 22): what the app's users send, generated from the Fruits-360 sample.

    python benchmarks/phone_photos.py [--jpeg N] [--heic N] [--mp48 N] [--seed S]

Each photo is a sample fruit scaled up to a phone's sensor (4032 x 3024, 12 MP; a few 8064 x 6048, 48 MP)
with sensor-like noise: luma grain, the same on the three channels as after demosaicing, at a level that
makes a JPEG at quality 90 weigh 2.5-3.5 MB and a HEIC (x265, quality 50, a 320-px thumbnail item as phones
write) 1.2-2.5 MB; tests/test_phone_photos.py checks both. Each carries what phones write: EXIF with maker,
model, body serial number, date and an orientation tag (some photos are stored rotated by 90, 180 or 270
degrees with the tag that turns them upright), and a GPS position in EXIF, or for one photo in five in XMP
only.

Deterministic (photo i of a kind is the same whatever else is asked for) and cached under
build/phone-photos/ (ignored by git): tests and benchmarks pay the generation once. The noise is one field
drawn once per process; each photo takes a window of it at random offsets (vectorised, no per-photo draw).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image
from pillow_heif import register_heif_opener

register_heif_opener()

REPO_ROOT = Path(__file__).resolve().parents[1]
# Bumped whenever what a photo looks like changes: older caches are then simply not found.
GENERATOR_VERSION = 1
CACHE_DIR = REPO_ROOT / "build" / "phone-photos" / f"v{GENERATOR_VERSION}"
SIZE_12MP = (4032, 3024)
SIZE_48MP = (8064, 6048)
KINDS = {"jpeg": ("jpg", SIZE_12MP), "heic": ("heic", SIZE_12MP), "jpeg48": ("jpg", SIZE_48MP)}
JPEG_QUALITY = 90
HEIC_QUALITY = 50
# x265's fastest preset: the size is set by the noise, and the slower presets took 40 s a photo here.
HEIC_ENCODER = {"preset": "ultrafast"}
HEIC_THUMBNAIL_BOX = 320  # an iPhone HEIC's thumbnail item: 320 x 240
NOISE_SIGMA = 5.5  # grey levels of luma grain: tuned for the sizes above
NOISE_MARGIN = 256  # the noise field's extra rows/columns: room for each photo's random offset
# One photo in two upright, the others stored rotated with the tag that turns them upright (EXIF values).
ORIENTATIONS = (1, 6, 1, 3, 1, 8)
# How a photo tagged with the key was stored, from its upright scene (exif_transpose undoes it).
STORED_FROM_UPRIGHT = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}
MAKERS = (("Apple", "iPhone 15"), ("samsung", "SM-S921B"), ("Google", "Pixel 8"))
GPS_IN_XMP_EVERY = 5
GPS_IFD, EXIF_IFD = 0x8825, 0x8769
TAG_MAKE, TAG_MODEL, TAG_ORIENTATION, TAG_DATETIME = 0x010F, 0x0110, 0x0112, 0x0132
TAG_BODY_SERIAL, TAG_DATETIME_ORIGINAL = 0xA431, 0x9003


@dataclass(frozen=True)
class Photo:
    """One generated photo: where it is cached and what it was made with."""

    path: Path
    kind: str
    index: int
    label: str
    orientation: int
    gps_in_xmp: bool

    @property
    def displayed_size(self) -> tuple[int, int]:
        width, height = KINDS[self.kind][1]
        return (height, width) if self.orientation in (6, 8) else (width, height)


def default_sample_dir() -> Path:
    from fruits.cli.demo import SAMPLE_DIR

    return SAMPLE_DIR


@cache
def _sources(sample_dir: str) -> tuple[Path, ...]:
    found = tuple(sorted(Path(sample_dir).rglob("*.jpg")))
    if not found:
        raise FileNotFoundError(f"no sample photo under {sample_dir}: ../shared is needed to make phone photos")
    return found


@cache
def noise_field(seed: int) -> np.ndarray:
    """One 12-MP luma noise field (int16 grey levels) per seed, drawn once per process (~0.3 s)."""
    width, height = SIZE_12MP
    rng = np.random.default_rng(seed)
    field = rng.standard_normal((height + NOISE_MARGIN, width + NOISE_MARGIN), dtype=np.float32)
    return np.rint(field * NOISE_SIGMA).astype(np.int16)


def _noise(seed: int, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A (height, width) window of the field at random offsets; 48 MP is four windows side by side."""
    field = noise_field(seed)
    tile_w, tile_h = SIZE_12MP
    rows = []
    for _ in range(size[1] // tile_h):
        row = []
        for _ in range(size[0] // tile_w):
            y, x = rng.integers(0, NOISE_MARGIN, size=2)
            row.append(field[y : y + tile_h, x : x + tile_w])
        rows.append(np.hstack(row) if len(row) > 1 else row[0])
    return np.vstack(rows) if len(rows) > 1 else rows[0]


def spec(kind: str, index: int, sample_dir: Path, seed: int) -> tuple[Path, int, bool]:
    """(sample photo, orientation, GPS in XMP) of photo `index` of `kind`: a function of its own numbers only."""
    rng = np.random.default_rng([seed, index, len(kind)])
    sources = _sources(str(sample_dir))
    source = sources[int(rng.integers(len(sources)))]
    return source, ORIENTATIONS[index % len(ORIENTATIONS)], index % GPS_IN_XMP_EVERY == GPS_IN_XMP_EVERY - 1


def stored_pixels(source: Path, kind: str, orientation: int, rng: np.random.Generator, seed: int) -> Image.Image:
    """The sensor's frame: the fruit scaled to the upright scene, turned as the phone stored it, plus noise."""
    width, height = KINDS[kind][1]
    scene_size = (height, width) if orientation in (6, 8) else (width, height)
    with Image.open(source) as small:
        # Levels kept off 0 and 255 (a LUT on 100 x 100 pixels) so the grain survives in white backgrounds.
        fruit = small.convert("RGB").point(lambda v: 16 + v * 224 // 255)
    scene = fruit.resize(scene_size, Image.Resampling.BILINEAR)
    stored = scene.transpose(STORED_FROM_UPRIGHT[orientation]) if orientation in STORED_FROM_UPRIGHT else scene
    pixels = np.asarray(stored, dtype=np.int16) + _noise(seed, rng, stored.size)[:, :, None]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _dms(value: float) -> tuple[float, float, float]:
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    return float(degrees), float(minutes), round(((value - degrees) * 60 - minutes) * 60, 2)


def phone_exif(index: int, orientation: int, *, gps: tuple[float, float] | None) -> Image.Exif:
    """What a phone writes: maker, model, body serial, dates, orientation and (unless None) a GPS position."""
    make, model = MAKERS[index % len(MAKERS)]
    exif = Image.Exif()
    exif[TAG_MAKE], exif[TAG_MODEL], exif[TAG_ORIENTATION] = make, model, orientation
    exif[TAG_DATETIME] = f"2026:06:{1 + index % 28:02d} 12:{index % 60:02d}:00"
    exif[EXIF_IFD] = {TAG_BODY_SERIAL: f"SN{index:08d}", TAG_DATETIME_ORIGINAL: exif[TAG_DATETIME]}
    if gps is not None:
        latitude, longitude = gps
        exif[GPS_IFD] = {1: "N", 2: _dms(latitude), 3: "E", 4: _dms(longitude)}
    return exif


def gps_xmp(latitude: float, longitude: float) -> bytes:
    """An XMP packet holding only a position, as some apps write it (exif: namespace, degrees,minutesN)."""
    return (
        '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
        f'xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="{int(latitude)},{latitude % 1 * 60:.4f}N" '
        f'exif:GPSLongitude="{int(longitude)},{longitude % 1 * 60:.4f}E"/></rdf:RDF></x:xmpmeta>'
        '<?xpacket end="w"?>'
    ).encode()


def encode(image: Image.Image, kind: str, exif: Image.Exif, xmp: bytes | None) -> bytes:
    out = io.BytesIO()
    extra = {"xmp": xmp} if xmp else {}
    if kind == "heic":
        image.save(
            out,
            "HEIF",
            quality=HEIC_QUALITY,
            exif=exif.tobytes(),
            thumbnails=[HEIC_THUMBNAIL_BOX],
            enc_params=HEIC_ENCODER,
            **extra,
        )
    else:
        image.save(out, "JPEG", quality=JPEG_QUALITY, exif=exif.tobytes(), **extra)
    return out.getvalue()


def describe(kind: str, index: int, sample_dir: Path, seed: int) -> Photo:
    """What photo `index` of `kind` is and where it is cached, without making it."""
    source, orientation, in_xmp = spec(kind, index, sample_dir, seed)
    name = f"{kind}-{index:05d}.{KINDS[kind][0]}"
    path = CACHE_DIR / f"seed={seed}" / source.parent.name / name
    return Photo(path, kind, index, source.parent.name, orientation, in_xmp)


def make_photo(kind: str, index: int, *, sample_dir: Path | None = None, seed: int = 22) -> tuple[Photo, bytes]:
    """Photo `index` of `kind` and its bytes, made in memory (nothing cached)."""
    sample_dir = sample_dir or default_sample_dir()
    source, orientation, in_xmp = spec(kind, index, sample_dir, seed)
    rng = np.random.default_rng([seed, index, len(kind), 1])
    position = (43.0 + rng.random() * 8, 1.0 + rng.random() * 6)  # somewhere in France
    image = stored_pixels(source, kind, orientation, rng, seed)
    exif = phone_exif(index, orientation, gps=None if in_xmp else position)
    content = encode(image, kind, exif, gps_xmp(*position) if in_xmp else None)
    return describe(kind, index, sample_dir, seed), content


def photo(kind: str, index: int, *, sample_dir: Path | None = None, seed: int = 22) -> Photo:
    """Photo `index` of `kind`, generated into the cache the first time it is asked for."""
    sample_dir = sample_dir or default_sample_dir()
    cached = describe(kind, index, sample_dir, seed)
    if not cached.path.exists():
        made, content = make_photo(kind, index, sample_dir=sample_dir, seed=seed)
        made.path.parent.mkdir(parents=True, exist_ok=True)
        partial = made.path.with_name(f".{made.path.name}.{os.getpid()}")
        partial.write_bytes(content)
        partial.replace(made.path)  # whole or absent: a concurrent or interrupted run never leaves half a photo
    return cached


def workload(
    jpeg: int = 7, heic: int = 3, mp48: int = 0, *, sample_dir: Path | None = None, seed: int = 22
) -> list[Photo]:
    """`jpeg` 12-MP JPEGs, `heic` 12-MP HEICs and `mp48` 48-MP JPEGs (cached; the first call makes them)."""
    counts = {"jpeg": jpeg, "heic": heic, "jpeg48": mp48}
    return [photo(kind, i, sample_dir=sample_dir, seed=seed) for kind, n in counts.items() for i in range(n)]


def link_tree(photos: list[Photo], dest: Path) -> Path:
    """A folder `<dest>/<label>/<file>` of hard links to the cached photos (a landing or a job input, no copy)."""
    for item in photos:
        target = dest / item.label / item.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            try:
                os.link(item.path, target)
            except OSError:  # another file system: a copy then
                target.write_bytes(item.path.read_bytes())
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jpeg", type=int, default=7)
    parser.add_argument("--heic", type=int, default=3)
    parser.add_argument("--mp48", type=int, default=1)
    parser.add_argument("--seed", type=int, default=22)
    args = parser.parse_args(argv)
    photos = workload(args.jpeg, args.heic, args.mp48, seed=args.seed)
    for kind in KINDS:
        sizes = [p.path.stat().st_size for p in photos if p.kind == kind]
        if sizes:
            print(f"{kind:7s} {len(sizes):4d} photos, {min(sizes) / 1e6:.2f}-{max(sizes) / 1e6:.2f} MB")
    print(f"cached under {CACHE_DIR}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT / "plugins"))
    sys.exit(main())
