"""Featurize: fruit photos -> 1280 MobileNetV2 (ImageNet) features per image, as Parquet.

    spark-submit spark_jobs/featurize.py --input URI --output URI [--input-format files|bundles]
        [--quarantine URI] [--batch-id YYYY-MM-DD] [--weights URI [--weights-sha256 HEX]]
        [--runtime litert|keras] [--model-payload URI [--model-payload-sha256 HEX]] [--batch-size N] [--threads N]
        [--derived URI]

The same code reads and writes `file://` locally and `s3://` on EMR (Hadoop FileSystem).

How the model travels: the driver builds Keras' MobileNetV2 once (`weights="imagenet"`, which reads
`$KERAS_HOME/models/` before downloading, or the `--weights` file), turns it into a self-contained
payload and broadcasts it with `SparkContext.broadcast`. Each executor Python worker builds its model
once from the broadcast value and reuses it for every batch of every task it runs; no executor
downloads weights or reads them from a path. The photos reach the workers as Arrow batches
(`mapInArrow`): one pass decodes, infers and streams the features into the Parquet write.

- runtime `litert` (default): the payload is a TFLite flatbuffer (it carries the weights), run by one
  LiteRT interpreter with XNNPACK per worker. Measured several times faster than Keras on CPU (see
  benchmarks/), and the workers never import TensorFlow. With `--model-payload` (the flatbuffer the
  release command converted once and published beside the weights, `fruits.release`) the driver reads
  it and never imports TensorFlow either; without it, or when that file is absent, the driver converts
  the weights in memory.
- runtime `keras`: the payload is `model.get_weights()`; workers rebuild the architecture with
  `weights=None` and load the arrays. The reference the LiteRT features are checked against.

Bad input never crashes the job and never vanishes: every file under --input is either a row of the
output or a row of the quarantine output (path, reason). Outputs are committed, never renamed (S3 has
no atomic rename, see jobio): the run writes `<output>/run=<id>/` and `<quarantine>/run=<id>/`, commits
the quarantine, then the features (their `_committed.json`, naming that quarantine run). Until then
readers see the previous committed output, whole; a failed run deletes only its own uncommitted folders.
Exit codes: 2 input missing, 3 nothing readable (both outputs still committed), 4 weights not the
--weights-sha256 given.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import posixpath
import re
import sys
import tempfile
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import lakefiles
import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

register_heif_opener()  # phone photos: HEIC/HEIF through libheif; AVIF is Pillow's own

try:  # the driver imports this module as a script; workers import it from --py-files
    import jobio
except ImportError:  # pragma: no cover - run as `python -m spark_jobs.featurize`
    from spark_jobs import jobio

JOB = "featurize"
IMAGE_SIZE = 224  # MobileNetV2's native input: the ImageNet weights were trained at 224x224
# A photo's model input as stored in its bundle row (uint8 RGB, IMAGE_SIZE x IMAGE_SIZE): a photo whose file is
# bigger is decoded by the ingest pass, and featurize reads these bytes instead of the photo's (docs/pipeline.md).
PIXELS_BYTES = IMAGE_SIZE * IMAGE_SIZE * 3
FEATURE_DIM = 1280  # MobileNetV2 (alpha 1.0) global-average-pooled last conv block
SPLITS = ("Training", "Test")
# A raw batch's upload manifest: fruits.storage.UPLOADS_MANIFEST (the cluster ships no plugins; a test checks).
UPLOADS_MANIFEST = "_uploads.json"
RUNTIMES = ("litert", "keras")
# Images per inference call: one for XNNPACK on one thread (fastest, measured), batches for Keras's per-call cost.
DEFAULT_BATCH_SIZE = {"litert": 1, "keras": 32}
# Rows per Arrow batch sent to a worker (at least the inference batch): bounds the worker's
# memory whatever the photos' size.
ARROW_BATCH_ROWS = 32
# Input splits per core: more, smaller splits keep every core busy to the end (docs/choices.md, "Measured...").
SPLITS_PER_CORE = 8
# The most bytes of photos one task reads (Spark's maxPartitionBytes for this job): 2 GiB is ~700 phone photos,
# about half a minute of a vCPU, and one features file and one derived file each, not one per 128 MiB default
# split (~45 phone photos: 20,000 small files a million-photo night, docs/costs.md); small inputs are still cut
# SPLITS_PER_CORE ways a core.
MAX_SPLIT_BYTES = 2 * 1024**3
# Transparent pixels are composited onto white: Fruits-360 shoots fruit on a white background, so
# a cut-out PNG then looks like the photos the features are compared with (and a transparent
# pixel's own RGB value is arbitrary, often black).
BACKGROUND = (255, 255, 255)
ORIENTATION_TAG = 0x0112  # EXIF
EMPTY_FILE = "empty file"
# Pixels one photo may decode to (after a JPEG's draft): keeps a decode within a Python worker's memory share.
MAX_IMAGE_PIXELS = 64_000_000
# The derivative kept for re-featurizing (docs/gdpr.md): fits 320 px, so a 4:3 photo keeps 320 x 240, above
# the model's 224 on both sides; quality 90 is ~15 KB (docs/pipeline.md, "Decode once").
DERIVATIVE_BOX = 320
DERIVATIVE_QUALITY = 90
# Features Parquet: no dictionary for the floats (they barely repeat), zstd (smaller rows, kept a year); the
# measurements are in docs/choices.md, "Measured behind the constants".
FEATURES_PARQUET_OPTIONS = {"compression": "zstd", "parquet.enable.dictionary#features.list.element": "false"}

log = jobio.get_logger(JOB)


class MissingInputError(Exception):
    """--input does not exist: a clear message, not a stack trace."""


class NoImagesError(Exception):
    """Nothing under --input could be featurized."""


class WeightsMismatchError(Exception):
    """The --weights (or --model-payload) file is not the one its --*-sha256 option names."""


# --------------------------------------------------------------------------------------------
# Pure functions: paths and pixels
# --------------------------------------------------------------------------------------------


def listed_path(uri: str) -> str:
    """A URI from DataFrame.inputFiles() (`file:///a/Apple%20Braeburn/x%25.jpg`, percent-encoded) spelled
    as the scan's `path` column spells the same file (`file:/a/Apple Braeburn/x%.jpg`)."""
    return re.sub(r"^file:/+", "file:/", urllib.parse.unquote(uri))


def unscanned_files(listed: list[str], scanned: set[str]) -> list[str]:
    """Files the listing found but the scan returned no row for: Spark's file sources skip
    0-byte files, which would otherwise vanish instead of being quarantined. Returned as the scan
    spells paths, so a file is counted once however its name is encoded."""
    return sorted(path for path in map(listed_path, listed) if path not in scanned)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (and 32-bit integer, which is how Pillow holds 16-bit PNGs) grayscale: scale the
        # full 16-bit range down to 8 bits. Pillow's own convert clips at 255, which turns almost
        # every 16-bit photo white.
        pixels = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(pixels / 257.0), 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        # Blended onto an opaque background by the alpha band: alpha_composite's result without its two
        # extra RGBA copies (a 64 Mpx RGBA photo peaked at 1280 MiB that way, measured).
        composited = Image.new("RGB", rgba.size, BACKGROUND)
        composited.paste(rgba, mask=rgba)
        return composited
    return image.convert("RGB")


def open_for_model(content: bytes) -> tuple[Image.Image, int, int]:
    """Image file bytes -> (the image opened at the smallest scale that serves the model, not decoded yet;
    its width and height as displayed).

    JPEG: libjpeg's DCT scaling (1/2, 1/4, 1/8, never below IMAGE_SIZE). HEIC: the embedded thumbnail item
    when one is at least IMAGE_SIZE in both sides and a scaled copy of the image (pillow-heif's draft), else
    the full image (libheif has no reduced-scale decode). Raises DecompressionBombError, from the header
    alone, when what would be decoded is above MAX_IMAGE_PIXELS.
    """
    if not content:
        raise ValueError(EMPTY_FILE)
    with warnings.catch_warnings():  # Pillow's own warning is superseded by MAX_IMAGE_PIXELS below
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(content))
    width, height = image.size
    # For big JPEGs, let libjpeg decode at a reduced scale (never below the model's input size):
    # several times faster than decoding every pixel and then throwing most away.
    image.draft("RGB", (IMAGE_SIZE, IMAGE_SIZE))
    decoded = image.size[0] * image.size[1]
    if decoded > MAX_IMAGE_PIXELS:  # before anything decodes (a PNG's getexif does): a bomb costs nothing here
        raise Image.DecompressionBombError(
            f"{width}x{height} decodes to {decoded / 1e6:.1f} Mpx, above the limit of "
            f"{MAX_IMAGE_PIXELS / 1e6:.1f} Mpx (featurize.MAX_IMAGE_PIXELS)"
        )
    if image.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8):  # rotated by 90 degrees
        width, height = height, width
    return image, width, height


def decode_oriented(content: bytes) -> tuple[Image.Image, int, int]:
    """Image file bytes -> (8-bit RGB image, upright, at open_for_model's scale; width, height as displayed).
    The night's one decode of the photo: the model's input and the derivative both come from it."""
    image, width, height = open_for_model(content)
    image = ImageOps.exif_transpose(image)  # phone photos are stored sideways + an EXIF tag
    image.load()  # decode now, so a truncated file fails here rather than silently later
    return _to_rgb(image), width, height


def model_pixels(image: Image.Image) -> np.ndarray:
    """An RGB image -> the uint8 IMAGE_SIZE x IMAGE_SIZE x 3 array the model reads."""
    return np.asarray(image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR), dtype=np.uint8)


def decode_image(content: bytes) -> tuple[np.ndarray, int, int]:
    """Image file bytes -> (uint8 RGB array IMAGE_SIZE x IMAGE_SIZE x 3, width, height).

    Accepts every format Pillow decodes, whatever the file is called. width/height are the image's
    as displayed (EXIF orientation applied). Raises on anything that is not a complete image.
    """
    image, width, height = decode_oriented(content)
    return model_pixels(image), width, height


def derivative(image: Image.Image) -> bytes:
    """The lake's kept copy of a photo (docs/gdpr.md): the decoded, upright image scaled to fit DERIVATIVE_BOX
    (never enlarged), as a JPEG written from pixels only: no EXIF, no XMP, no GPS, no orientation tag."""
    small = image.copy()
    small.thumbnail((DERIVATIVE_BOX, DERIVATIVE_BOX), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    small.save(out, "JPEG", quality=DERIVATIVE_QUALITY)
    return out.getvalue()


def decoded_columns(content: bytes) -> dict[str, Any] | None:
    """The bundle row's DECODED_INPUT of a photo the ingest pass decodes (its one decode of the night: featurize
    reads these PIXELS_BYTES + a derivative instead of the photo's megabytes), or None for a file not bigger than
    its model pixels (featurize decodes it as before) or one that does not decode (featurize quarantines it)."""
    if len(content) <= PIXELS_BYTES:
        return None
    try:
        image, width, height = decode_oriented(content)
    except Exception:  # noqa: BLE001 - featurize decodes it again and quarantines it with its reason
        return None
    return {
        "pixels": model_pixels(image).tobytes(),
        DERIVATIVE_COLUMN: derivative(image),
        "width": width,
        "height": height,
    }


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 3) -> MobileNetV2's input: float32 scaled to [-1, 1].

    The same arithmetic as `keras.applications.mobilenet_v2.preprocess_input` (mode "tf"), done
    here so the LiteRT workers need not import TensorFlow; a test checks they agree.
    """
    return pixels.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def describe_error(error: BaseException) -> str:
    """A quarantine reason a person can act on."""
    if isinstance(error, UnidentifiedImageError):
        return "not an image Pillow can decode"
    if isinstance(error, Image.DecompressionBombError):
        return f"image too large: {error}"
    message = str(error) or type(error).__name__
    if message == EMPTY_FILE:
        return EMPTY_FILE
    if "truncated" in message.lower():
        return f"truncated image: {message}"
    return f"corrupt image ({type(error).__name__}): {message}"


# --------------------------------------------------------------------------------------------
# Models: built once on the driver, rebuilt once per worker from the broadcast payload
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelPayload:
    """What the driver broadcasts: everything a worker needs to build the model, weights included."""

    runtime: str
    litert_flatbuffer: bytes | None = None
    keras_weights: list[np.ndarray] | None = None


def build_keras_model(weights: str | None = "imagenet"):
    """MobileNetV2, no top, global average pooling, 224x224x3 -> 1280 floats.

    weights="imagenet" is Keras' standard loader (reads $KERAS_HOME/models/ first), a local path
    loads that file, None builds the bare architecture (the workers' keras runtime).
    """
    import keras

    return keras.applications.MobileNetV2(
        include_top=False, pooling="avg", weights=weights, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3)
    )


def to_litert_flatbuffer(model) -> bytes:
    """Convert a Keras model, in memory, to a TFLite flatbuffer that embeds its weights."""
    import tensorflow as tf

    # The converter traces the model through a SavedModel export that prints every captured
    # tensor to stdout; keep it out of the job's output.
    with contextlib.redirect_stdout(io.StringIO()):
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def make_payload(model, runtime: str) -> ModelPayload:
    if runtime == "litert":
        return ModelPayload(runtime, litert_flatbuffer=to_litert_flatbuffer(model))
    if runtime == "keras":
        return ModelPayload(runtime, keras_weights=model.get_weights())
    raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")


class LiteRTModel:
    """One LiteRT interpreter (XNNPACK) over the broadcast flatbuffer; batches of any size."""

    def __init__(self, flatbuffer: bytes, num_threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_content=flatbuffer, num_threads=num_threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._batch = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] != self._batch:  # reallocate only when the batch size changes
            self._interpreter.resize_tensor_input(self._input, list(batch.shape))
            self._interpreter.allocate_tensors()
            self._batch = batch.shape[0]
        self._interpreter.set_tensor(self._input, batch)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output).copy()


class KerasModel:
    """MobileNetV2 rebuilt without touching any weights file, then given the broadcast arrays."""

    def __init__(self, weights: list[np.ndarray]):
        self._model = build_keras_model(weights=None)
        self._model.set_weights(weights)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._model.predict_on_batch(batch))


def build_model(payload: ModelPayload, num_threads: int):
    if payload.runtime == "litert":
        return LiteRTModel(payload.litert_flatbuffer, num_threads)
    return KerasModel(payload.keras_weights)


# One model per Python worker process, keyed by a token the driver draws per featurizer: Spark
# reuses workers across tasks (spark.python.worker.reuse), so a model is built once per process,
# not once per task, and a second job in the same session gets its own.
_MODELS: dict[str, Any] = {}


def worker_model(key: str, broadcast, num_threads: int, builds) -> Any:
    model = _MODELS.get(key)
    if model is None:
        model = _MODELS[key] = build_model(broadcast.value, num_threads)
        builds.add({(os.uname().nodename, os.getpid())})  # reported in _job_metrics.json
    return model


# --------------------------------------------------------------------------------------------
# Spark: one Arrow function decodes and infers, so each image is decoded once
# --------------------------------------------------------------------------------------------


# The featurizer's output columns, in order (mapInArrow's schema, featurize_batch's Arrow batches).
FEATURE_COLUMNS = ("path", "sha256", "features", "width", "height")
DERIVATIVE_COLUMN = "derivative"  # with --derived: derivative()'s bytes, from the same decode as the features
DERIVED_COLUMNS = ("path", "sha256", DERIVATIVE_COLUMN)  # the --derived output's rows


def features_schema(derivatives: bool = False):
    """What the featurizer returns for each readable photo (mapInArrow's output)."""
    from pyspark.sql import types as T

    types = {
        "path": T.StringType(),
        "sha256": T.StringType(),
        "features": T.ArrayType(T.FloatType()),
        "width": T.IntegerType(),
        "height": T.IntegerType(),
        DERIVATIVE_COLUMN: T.BinaryType(),
    }
    return T.StructType([T.StructField(name, types[name]) for name in feature_columns(derivatives)])


def feature_columns(derivatives: bool) -> tuple[str, ...]:
    return (*FEATURE_COLUMNS, DERIVATIVE_COLUMN) if derivatives else FEATURE_COLUMNS


def quarantine_schema():
    from pyspark.sql import types as T

    return T.StructType([T.StructField(name, T.StringType()) for name in ("path", "reason", "batch_id")])


def featurize_batch(
    batch: pa.RecordBatch, model, batch_size: int, derivatives: bool = False
) -> tuple[pa.RecordBatch, list[tuple[str, str]]]:
    """Arrow rows (path, sha256, content, DECODED_COLUMNS) -> (the readable photos' path, sha256, features, width,
    height [, derivative]; [(path, reason)] of the others). Each photo is decoded once: here (decode_oriented),
    or already by the ingest pass (its pixels, derivative, width and height given, its content not read).

    The features column is one Arrow list array over one numpy buffer, nothing per value: a pandas
    UDF's array result goes through pyspark's per-element Python conversion instead (measured: 0.23 ms
    per photo, ~4 % of the inference itself).
    """
    paths = batch.column("path").to_pylist()
    nulls = [None] * batch.num_rows  # binaryFile's rows: nothing decoded yet
    decoded = zip(*(batch.column(n).to_pylist() if n in batch.schema.names else nulls for n in DECODED_INPUT))
    good: list[int] = []
    pixels: list[np.ndarray] = []
    width: list[int] = []
    height: list[int] = []
    unreadable: list[tuple[str, str]] = []
    kept: list[bytes] = []
    for i, (content, (model_input, small, w, h)) in enumerate(zip(batch.column("content").to_pylist(), decoded)):
        if model_input is not None:  # decoded by the ingest pass: its pixels, nothing to decode here
            if len(model_input) != PIXELS_BYTES:
                unreadable.append((paths[i], f"its bundle's pixels are {len(model_input)} bytes, not {PIXELS_BYTES}"))
                continue
            good.append(i)
            pixels.append(np.frombuffer(model_input, dtype=np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE, 3))
        else:
            try:
                image, w, h = decode_oriented(content)
            except Exception as exc:  # noqa: BLE001 - whatever Pillow raises, the file is quarantined
                unreadable.append((paths[i], describe_error(exc)))
                continue
            good.append(i)
            pixels.append(model_pixels(image))
            small = derivative(image) if derivatives else None
        if derivatives:
            kept.append(small)
        width.append(w)
        height.append(h)
    features = np.empty((len(good), FEATURE_DIM), dtype=np.float32)
    for start in range(0, len(good), batch_size):
        features[start : start + batch_size] = model(preprocess(np.stack(pixels[start : start + batch_size])))
    offsets = np.arange(0, (len(good) + 1) * FEATURE_DIM, FEATURE_DIM, dtype=np.int32)
    rows = pa.array(good, type=pa.int32())
    readable = pa.RecordBatch.from_arrays(
        [
            batch.column("path").take(rows),
            batch.column("sha256").take(rows),
            pa.ListArray.from_arrays(offsets, pa.array(features.reshape(-1))),
            pa.array(width, type=pa.int32()),
            pa.array(height, type=pa.int32()),
            *([pa.array(kept, type=pa.binary())] if derivatives else []),
        ],
        names=list(feature_columns(derivatives)),  # not features_schema(): no Spark types built per batch
    )
    return readable, unreadable


class PidSetParam:
    """Accumulator of (host, pid) pairs: which worker processes built a model."""

    def zero(self, value):
        return set()

    def addInPlace(self, value1, value2):
        value1 |= value2
        return value1


@dataclass
class Featurizer:
    """The function `mapInArrow` runs in the Python workers (Arrow batches of photos in, the readable
    ones' features out), and what it tells the driver back through accumulators.

    The whole featurization is one pass over the photos, feeding the features write directly: the
    unreadable photos leave the stream here, as (path, reason) pairs the driver writes to the
    quarantine afterwards. Spark applies a result task's accumulator updates once per partition,
    however often the task ran (failed attempts and speculative copies are not counted), so the
    counts hold through task retries as long as the featurizer runs in the write's own stage: no
    shuffle between it and the write. (A persisted result split in two afterwards cost a cache of
    every 5 KB feature row and more scans of it: 3.8 s of jobs after a 38 s featurize, measured.)"""

    broadcast: Any
    batch_size: int
    num_threads: int
    builds: Any  # accumulator: (host, pid) of each worker process that built a model
    featurized: Any  # accumulator: photos featurized
    unreadable: Any  # accumulator: [(path, reason)]
    derivatives: bool = False
    key: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        model = worker_model(self.key, self.broadcast, self.num_threads, self.builds)
        for batch in batches:
            readable, unreadable = featurize_batch(batch, model, self.batch_size, self.derivatives)
            self.featurized.add(readable.num_rows)
            if unreadable:
                self.unreadable.add(unreadable)
            yield readable


def make_featurizer(sc, broadcast, *, batch_size: int, num_threads: int, derivatives: bool = False) -> Featurizer:
    return Featurizer(
        broadcast,
        batch_size,
        num_threads,
        builds=sc.accumulator(set(), PidSetParam()),
        featurized=sc.accumulator(0),
        unreadable=sc.accumulator([], jobio.ListParam()),
        derivatives=derivatives,
    )


def is_batch_bundle_name(name: str) -> bool:
    """A bundle's name in its manifest: a Parquet file of the batch's folder, or of one of its ingest job's run
    folders (`run=<id>/part-....parquet`); nothing above or beside the batch."""
    parts = name.split("/")
    in_batch = len(parts) == 1 or (len(parts) == 2 and parts[0].startswith("run="))
    return name.endswith(".parquet") and in_batch and all(part not in ("", ".", "..") for part in parts)


def committed_bundles(files, batch_uri: str) -> list[str]:
    """URIs of the bundles the batch's committed upload manifest (`<batch_uri>_uploads.json`) names, and only
    those: a bundle no manifest names is a killed attempt's leftover whose photos a retry stored again."""
    manifest_uri = batch_uri.rstrip("/") + "/" + UPLOADS_MANIFEST
    data = files.read(manifest_uri)
    if data is None:
        raise MissingInputError(f"no upload manifest {manifest_uri}: no upload of this batch was committed")
    names = sorted(json.loads(data).get("bundles", {}))
    if not all(is_batch_bundle_name(name) for name in names):
        raise ValueError(f"{manifest_uri} names a bundle that is not a Parquet file of the batch: {names}")
    return [batch_uri.rstrip("/") + "/" + name for name in names]


class BatchInput(NamedTuple):
    """What featurize reads of a lake batch: the bundles still there, the name of every bundle its manifest
    names (what the features' commit covers), and whether the committed rows of the removed ones are carried."""

    bundles: list[str]
    covered: list[str]
    carry: bool


def bundles_to_featurize(files, batch_uri: str, output_uri: str) -> BatchInput | None:
    """The batch's committed bundles (committed_bundles) still there. Its originals go only once committed
    features cover them (fruits.retention), so when some are gone and features are committed, the rows of the
    gone ones are carried (a rerun that stored new photos); when all are gone, there is nothing to featurize
    again (None: the committed features stay). Bundles gone with no committed features: a MissingInputError."""
    bundles = committed_bundles(files, batch_uri)
    root = batch_uri.rstrip("/") + "/"
    covered = [uri[len(root) :] for uri in bundles]
    held = {name for name, _ in files.list_files(root)}  # one listing, not a request per bundle
    present = [uri for uri in bundles if uri[len(root) :] in held]
    if len(present) == len(bundles):
        return BatchInput(bundles, covered, carry=False)
    if jobio.read_commit(files, output_uri):
        return BatchInput(present, covered, carry=True) if present else None
    missing = sorted(set(bundles) - set(present))
    raise MissingInputError(
        f"{len(missing)} of the {len(bundles)} bundles {root}{UPLOADS_MANIFEST} names are gone (first: {missing[0]})"
        " and the batch has no committed features (fruits_original_retention_days removes originals only once"
        " their features are committed): it cannot be featurized again from raw/"
    )


def counts_by_output(args, featurized: int, unreadable: list) -> list[tuple[str, int]]:
    """The rows tonight's pass wrote to each output: features and derivatives one per featurized photo."""
    return [(args.output, featurized), (args.quarantine, len(unreadable))] + (
        [(args.derived, featurized)] if args.derived else []
    )


def carry_committed_rows(spark, files, outputs: list[tuple[str, str]], featurized_paths) -> dict[str, int]:
    """Append to each (output, run folder) the committed rows of `output` whose photo is not featurized again
    (`featurized_paths`: a frame of paths): a rerun whose batch's older originals were removed keeps their
    features, derivatives and quarantine. Returns the rows carried per output."""
    carried = {}
    for output, run_folder in outputs:
        parts = jobio.committed_files(files, output, ".parquet")
        if not parts:
            carried[output] = 0
            continue
        rows = spark.read.parquet(*parts).join(featurized_paths, "path", "left_anti")
        carried[output] = rows.count()
        rows.write.mode("append").parquet(run_folder)
    return carried


BUNDLE_COLUMNS = "path string, modificationTime timestamp, length bigint, content binary"
# What the ingest pass adds to a bundle row: the stored bytes' hash, and for a photo it decoded (decoded_columns)
# the model's input; null in the other rows and in bundles written before it did.
DECODED_COLUMNS = "content_sha256 string, pixels binary, derivative binary, width int, height int"
DECODED_TYPES = dict(column.split() for column in DECODED_COLUMNS.split(", "))
DECODED_NAMES = tuple(DECODED_TYPES)
DECODED_INPUT = ("pixels", DERIVATIVE_COLUMN, "width", "height")  # what the featurizer takes of them


def read_bundles(spark, bundle_uris: list[str], keep_originals: bool = False):
    """binaryFile's rows of these bundles + DECODED_COLUMNS (ingest.py writes one row per photo); `path` is the
    photo's own URI, `file:///x` respelled `file:/x` as Spark spells listed files, so label, split and the
    features' path read as for plain files. An empty photo is a row like any other (decode_image quarantines
    it). A row the ingest pass decoded has no content (null), unless its ingest kept the photos' bytes
    (`keep_originals`, a fruits_original_retention_days window): then those rows are read in a scan of their own,
    without that column (Parquet's column pruning; the other rows' scan skips the row groups where every photo
    was decoded, by their null counts). One scan otherwise: a second costs its own tasks (benchmarks/bundle_scans.py,
    docs/choices.md). The schema is given, not inferred: the bundles' own sha256 stays unread, older bundles read as
    undecoded."""
    from pyspark.sql import functions as F

    schema = f"{BUNDLE_COLUMNS}, {DECODED_COLUMNS}"
    if not bundle_uris:
        return spark.createDataFrame([], schema)
    rows = spark.read.schema(schema).parquet(*bundle_uris)
    if keep_originals:
        decoded = rows.where(F.col("pixels").isNotNull()).withColumn("content", F.lit(None).cast("binary"))
        rows = decoded.unionByName(rows.where(F.col("pixels").isNull()))
    return rows.withColumn("path", F.regexp_replace("path", "^file:/+", "file:/"))


def read_images(spark, input_uri: str, input_format: str = "files"):
    """binaryFile rows (path, modificationTime, length, content) of the photos under input_uri.

    files: every file under input_uri (recursively), whatever its extension: Pillow decides.
    bundles: input_uri is a batch of the lake's raw layout; the rows of the bundles its committed upload
    manifest names (committed_bundles, read_bundles).
    """
    if input_format == "files":
        return spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(input_uri)
    return read_bundles(spark, committed_bundles(jobio.HadoopFiles(spark), input_uri))


def with_label_and_split(files, root: str):
    """Add `label` and `split` from each file's `path` under the input root `root` (spelled as
    Spark spells listed paths, see jobio.qualified_uri).

    label: the parent folder's name; split: the nearest enclosing folder named Training or Test.
    Either is null when the path has none (a file directly in the root, or directly in a split
    folder, has no label). Spark expressions, not a Python UDF: no extra Python worker.
    """
    from pyspark.sql import functions as F

    prefix = root.rstrip("/") + "/"
    parts = F.split(F.col("path").substr(len(prefix) + 1, 1 << 30), "/")
    folders = F.slice(parts, 1, F.size(parts) - 1)  # all but the file name
    split_names = F.array(*[F.lit(name) for name in SPLITS])
    parent = F.try_element_at(folders, F.lit(-1))
    splits_nearest_first = F.filter(F.reverse(folders), lambda folder: F.array_contains(split_names, folder))
    return files.withColumns(
        {
            "label": F.when(~F.array_contains(split_names, parent), parent),
            "split": F.try_element_at(splits_nearest_first, F.lit(1)),
        }
    )


def featurize_frame(images, featurizer: Featurizer, *, root: str, batch_id: str | None):
    """binaryFile rows (+ DECODED_COLUMNS when read from bundles) -> one row per readable photo: path, label,
    split, features, width, height, sha256 (of the content as stored), batch_id. The unreadable ones end in
    `featurizer.unreadable` once the frame is computed."""
    from pyspark.sql import functions as F

    absent = {name: F.lit(None).cast(kind) for name, kind in DECODED_TYPES.items() if name not in images.columns}
    photos = images.withColumns(absent).select(
        "path",
        F.coalesce("content_sha256", F.sha2("content", 256)).alias("sha256"),
        "content",
        *DECODED_INPUT,
    )
    featurized = photos.mapInArrow(featurizer, features_schema(featurizer.derivatives))
    described = featurized.withColumn("batch_id", F.lit(batch_id).cast("string"))
    extra = [DERIVATIVE_COLUMN] if featurizer.derivatives else []
    return with_label_and_split(described, root).select(
        "path", "label", "split", "features", "width", "height", "sha256", "batch_id", *extra
    )


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="featurize.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="folder of images (file://, s3://), read recursively")
    parser.add_argument(
        "--input-format",
        choices=("files", "bundles"),
        default="files",
        help="files: every file under --input is a photo; bundles: Parquet bundles of photos (the lake's raw/)",
    )
    parser.add_argument("--output", required=True, help="features output (committed: run=<id>/ + _committed.json)")
    parser.add_argument(
        "--quarantine", help="output for unreadable files, committed the same way (default: <output>/_quarantine/)"
    )
    parser.add_argument("--batch-id", type=_batch_id, help="YYYY-MM-DD (default: the input's batch=<date> folder)")
    parser.add_argument(
        "--weights", help="MobileNetV2 no-top weights file (file:// or s3://); default: Keras' imagenet"
    )
    parser.add_argument("--weights-sha256", type=_sha256, help="the sha256 the --weights file must have (else exit 4)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="litert")
    parser.add_argument(
        "--model-payload",
        help="litert: the converted flatbuffer (file://, s3://) to broadcast instead of converting the weights; "
        "converted from the weights when absent",
    )
    parser.add_argument(
        "--model-payload-sha256", type=_sha256, help="the sha256 the --model-payload file must have (else exit 4)"
    )
    parser.add_argument(
        "--batch-size", type=_positive, help=f"images per inference call (default: {DEFAULT_BATCH_SIZE})"
    )
    parser.add_argument(
        "--derived",
        help="also commit each photo's derivative (upright, <= 320 px JPEG, no metadata) here: path, sha256, "
        "derivative (the lake's derived/batch=<ds>/)",
    )
    parser.add_argument("--threads", type=_positive, help="inference threads per task (default: spark.task.cpus)")
    parser.add_argument(
        "--keep-originals",
        action="store_true",
        help="the batch's ingest kept the decoded photos' bytes beside their pixels (ingest.py --keep-originals): "
        "read those rows without them",
    )
    args = parser.parse_args(argv)
    if args.weights_sha256 and not args.weights:
        parser.error("--weights-sha256 checks a --weights file: give --weights too")
    if args.model_payload_sha256 and not args.model_payload:
        parser.error("--model-payload-sha256 checks a --model-payload file: give --model-payload too")
    args.output = args.output.rstrip("/") + "/"
    args.quarantine = (args.quarantine or args.output + "_quarantine").rstrip("/") + "/"
    if args.quarantine == args.output:
        parser.error("--quarantine must not be --output")
    args.batch_size = args.batch_size or DEFAULT_BATCH_SIZE[args.runtime]
    if args.batch_id is None:
        found = re.search(r"(?:^|/)batch=([^/]*)(?:/|$)", args.input)
        try:
            args.batch_id = jobio.check_batch(found.group(1)) if found else None
        except ValueError as error:
            parser.error(f"--input {args.input}: {error}")
    return args


def _batch_id(value: str) -> str:
    try:
        return jobio.check_batch(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _sha256(value: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise argparse.ArgumentTypeError(f"a sha256 is 64 hexadecimal digits, not {value!r}")
    return value.lower()


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return number


def check_weights(data: bytes, weights_uri: str, expected_sha256: str | None, what: str = "weights") -> str:
    """The file's sha256; raises WeightsMismatchError when it is not the expected one."""
    actual = hashlib.sha256(data).hexdigest()
    if expected_sha256 and actual != expected_sha256.lower():
        raise WeightsMismatchError(
            f"{what} {weights_uri} have sha256 {actual}, not the expected {expected_sha256.lower()}: "
            f"refusing to featurize with {what} that are not the recorded ones"
        )
    return actual


def load_keras_model(spark, weights_uri: str | None, expected_sha256: str | None = None):
    """The driver's one load of the weights: Keras' imagenet loader, or --weights via Hadoop FS
    (checked against `expected_sha256` when given, before anything is built from it)."""
    if weights_uri is None:
        return build_keras_model("imagenet")
    data = jobio.read_bytes(spark, weights_uri)
    check_weights(data, weights_uri, expected_sha256)
    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, posixpath.basename(weights_uri.rstrip("/")) or "weights.h5")
        with open(local, "wb") as handle:
            handle.write(data)
        return build_keras_model(local)


def litert_payload_of(weights_path: str | None = "imagenet") -> bytes:
    """The LiteRT flatbuffer of MobileNetV2 with these weights: what the release command publishes once
    beside the weights (fruits.release), and what a run without a published payload converts itself."""
    return to_litert_flatbuffer(build_keras_model(weights_path))


def load_payload(spark, args: argparse.Namespace) -> tuple[ModelPayload, str]:
    """The driver's one load of the model: the published flatbuffer when given and present (checked
    against its sha256 first; no TensorFlow), else the weights converted here. Returns it and its source."""
    if args.runtime == "litert" and args.model_payload:
        if jobio.path_exists(spark, args.model_payload):
            data = jobio.read_bytes(spark, args.model_payload)
            check_weights(data, args.model_payload, args.model_payload_sha256, what="model payload")
            return ModelPayload("litert", litert_flatbuffer=data), args.model_payload
        log.warning("no model payload at %s: converting the weights instead", args.model_payload)
    model = load_keras_model(spark, args.weights, args.weights_sha256)
    return make_payload(model, args.runtime), "converted"


def run(spark, args: argparse.Namespace) -> dict:
    """Featurize args.input into args.output (and the quarantine); return the job metrics."""
    started = time.monotonic()
    if not jobio.path_exists(spark, args.input):
        raise MissingInputError(f"input path does not exist: {args.input}")
    batch = None
    if args.input_format == "bundles":  # before the model: a rerun with nothing to do loads none
        batch = bundles_to_featurize(jobio.HadoopFiles(spark), args.input, args.output)
        if batch is None:
            log.info(
                "batch %s: its originals were removed once featurized and its features are committed at %s: "
                "nothing to featurize again (a rerun keeps them)",
                args.batch_id,
                args.output,
            )
            return {"job": JOB, "batch_id": args.batch_id, "featurized": 0, "kept_committed": args.output}
    root = jobio.qualified_uri(spark, args.input)
    sc = spark.sparkContext
    num_threads = args.threads or int(sc.getConf().get("spark.task.cpus", "1"))

    payload, payload_source = load_payload(spark, args)
    broadcast = sc.broadcast(payload)
    prepared = time.monotonic()
    log.info(
        "model ready (%s runtime, %s, %.1fs): broadcasting it to the executors",
        args.runtime,
        payload_source,
        prepared - started,
    )

    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(max(ARROW_BATCH_ROWS, args.batch_size)))
    # Photos are small (5-500 KB): with Spark's default 4 MB "open cost" per file, binaryFile packs
    # ~32 files per task, so a batch becomes hundreds of tiny tasks and the per-task overhead eats
    # the cores. A small open cost lets Spark size splits by bytes, and several splits per core keep
    # the cores busy to the end (see SPLITS_PER_CORE).
    spark.conf.set("spark.sql.files.openCostInBytes", str(8 * 1024))
    spark.conf.set("spark.sql.files.minPartitionNum", str(SPLITS_PER_CORE * sc.defaultParallelism))
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(MAX_SPLIT_BYTES))
    featurizer = make_featurizer(
        sc, broadcast, batch_size=args.batch_size, num_threads=num_threads, derivatives=bool(args.derived)
    )
    if batch is not None:
        images = read_bundles(spark, batch.bundles, args.keep_originals)
    else:
        images = read_images(spark, args.input, "files")
    listed = jobio.input_file_count(images)
    log.info("%d %s under %s", listed, args.input_format, args.input)
    features = featurize_frame(images, featurizer, root=root, batch_id=args.batch_id)

    files = jobio.HadoopFiles(spark)
    run_id = jobio.new_run_id()
    features_run = jobio.run_uri(args.output, run_id)
    quarantine_run = jobio.run_uri(args.quarantine, run_id)
    derived_run = jobio.run_uri(args.derived, run_id) if args.derived else None
    runs = [(args.quarantine, quarantine_run), (args.output, features_run)]
    runs += [(args.derived, derived_run)] if derived_run else []
    try:
        if derived_run:  # one decode feeds both outputs: the pass is kept on local disk for the second write
            from pyspark import StorageLevel

            features = features.persist(StorageLevel.DISK_ONLY)
            features.drop(DERIVATIVE_COLUMN).write.options(**FEATURES_PARQUET_OPTIONS).parquet(features_run)
            # JPEG bytes: no codec gains anything on them.
            features.select(*DERIVED_COLUMNS).write.option("compression", "none").parquet(derived_run)
        else:
            features.write.options(**FEATURES_PARQUET_OPTIONS).parquet(features_run)  # the one pass over the photos
        featurized = featurizer.featurized.value
        unreadable = [(path, reason, args.batch_id) for path, reason in dict(featurizer.unreadable.value).items()]
        # Spark's file sources skip 0-byte files; in a bundle an empty photo is a row (quarantined by featurize_batch).
        if args.input_format == "files" and featurized + len(unreadable) < listed:
            scanned = {row.path for row in images.select("path").collect()}  # lists, reads no content
            unreadable += [(path, EMPTY_FILE, args.batch_id) for path in unscanned_files(images.inputFiles(), scanned)]
        spark.createDataFrame(unreadable, quarantine_schema()).coalesce(1).write.parquet(quarantine_run)
        carried = {}
        if batch is not None and batch.carry:
            carried = carry_committed_rows(spark, files, runs, images.select("path"))
            log.info("carried from the committed run (their originals were removed): %s", carried)
        metrics = job_metrics(
            args,
            run_id,
            featurized,
            len(unreadable),
            featurizer.builds.value,
            seconds=time.monotonic() - prepared,
            prepare_seconds=prepared - started,
            payload_source=payload_source,
        )
        jobio.write_json(spark, features_run + "_job_metrics.json", metrics)
        # Committed even when nothing was readable: the output then says so (zero rows, metrics) rather
        # than still holding an earlier run's features, and the quarantine keeps every file.
        facts = {"job": JOB, "batch_id": args.batch_id}
        tonight = counts_by_output(args, featurized, unreadable)
        rows = {output: count + carried.get(output, 0) for output, count in tonight}
        jobio.commit(files, args.quarantine, quarantine_run, {**facts, "rows": rows[args.quarantine]})
        if derived_run:
            jobio.commit(files, args.derived, derived_run, {**facts, "rows": rows[args.derived]})
        sidecar, covered = lakefiles.covering(batch.covered) if batch is not None else ({}, {})
        for name, data in sidecar.items():  # what the originals' removal checks the manifest against
            files.write(features_run + name, data)
        jobio.commit(
            files,
            args.output,
            features_run,
            {
                **facts,
                **covered,
                "rows": rows[args.output],
                "seen": rows[args.output] + rows[args.quarantine],
                "quarantined": rows[args.quarantine],
                "carried": carried.get(args.output, 0),
                "metrics": metrics,
                "quarantine_location": quarantine_run,
            },
        )  # the batch is featurized from here on
    except BaseException:
        jobio.discard_runs(files, runs)
        raise
    finally:
        features.unpersist()
        broadcast.unpersist()
    for output, _ in runs:
        try:
            jobio.remove_stale_runs(files, output)
        except Exception as exc:  # noqa: BLE001 - housekeeping: the next run sweeps again
            log.warning("could not sweep old runs of %s: %s", output, exc)
    log.info(
        "seen %d files: %d featurized, %d quarantined in %.1fs (%.1f images/s, models built in %d worker processes)",
        metrics["seen"],
        metrics["featurized"],
        metrics["quarantined"],
        metrics["seconds"],
        metrics["images_per_second"],
        metrics["worker_processes"],
    )
    if metrics["quarantined"]:
        log.warning("%d files quarantined to %s", metrics["quarantined"], quarantine_run)
    if metrics["featurized"] == 0 and not carried.get(args.output):
        raise NoImagesError(
            f"no readable image under {args.input}: all {metrics['seen']} files quarantined to {quarantine_run}"
        )
    return metrics


def job_metrics(
    args,
    run_id: str,
    featurized: int,
    quarantined: int,
    builds: set,
    *,
    seconds: float,
    prepare_seconds: float,
    payload_source: str = "converted",
) -> dict:
    """What _job_metrics.json holds: counts, rates, and which worker processes built a model."""
    seen = featurized + quarantined
    return {
        "job": JOB,
        "batch_id": args.batch_id,
        "input": args.input,
        "input_format": args.input_format,
        "output": args.output,
        "quarantine": args.quarantine,
        "run_id": run_id,
        "runtime": args.runtime,
        "weights": args.weights,
        "weights_sha256": args.weights_sha256,  # checked before the run when given, else None
        "model_payload": payload_source,  # the published flatbuffer's URI, or "converted" in this run
        "batch_size": args.batch_size,
        "derived": args.derived,
        "seen": seen,
        "featurized": featurized,
        "quarantined": quarantined,
        "seconds": round(seconds, 3),
        "model_prepare_seconds": round(prepare_seconds, 3),
        "images_per_second": round(seen / seconds, 2) if seconds > 0 else 0.0,
        "worker_processes": len(builds),
        "model_builds": sorted(f"{host}:{pid}" for host, pid in builds),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName(f"fruits-{JOB}").getOrCreate()
    # Workers must import this file as the module `featurize` (launchers ship only the helper
    # modules with --py-files): functions pickled from `__main__` would carry a fresh copy of
    # the model cache into every task, rebuilding the model per task instead of per process.
    spark.sparkContext.addPyFile(os.path.abspath(__file__))
    try:
        run(spark, args)
    except MissingInputError as exc:
        log.error("%s", exc)
        return 2
    except NoImagesError as exc:
        log.error("%s", exc)
        return 3
    except WeightsMismatchError as exc:
        log.error("%s", exc)
        return 4
    return 0


if __name__ == "__main__":
    import featurize  # this file again, as a module: see main()

    sys.exit(featurize.main())
