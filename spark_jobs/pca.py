"""PCA step: MobileNetV2 features (1280-d) -> a few hundred principal components, on a versioned basis
fed by additive per-batch statistics, so a night costs what its own photos cost (issue 11).

    spark-submit pca.py nightly --batch <ds> --features-root <features/> --stats-root <pca/stats/>
        --bases <pca/bases/> --reduced-root <pca/reduced/> [--window <ds1,ds2,...>]
        [--mode auto|project|refit] [--variance 0.95 | --k K] [--drift-threshold X]
    spark-submit pca.py reexpress --batches <ds1,ds2,...> --features-root <features/> --bases <pca/bases/>
        --reduced-root <pca/reduced/>

Roots end with '/'; the job appends `batch=<ds>/`, `v=<NNNN>/`, `basis=<NNNN>/batch=<ds>/` (the lake layout
v2 of fruits.lake, checked equal by a test). Every output is written under its own `run=<id>/` folder and
committed with one marker (jobio.commit); inputs are read through their markers only.

nightly: reads ONLY the committed features of <ds>; computes its statistics (n, mean, centred scatter
M2 = sum (x - mean)(x - mean)', float64, from which the column sums n*mean and X'X = M2 + n*mean*mean' follow)
with matrix products over Arrow batches, one partial per partition merged with Chan's parallel formula, and
commits them at <stats-root>batch=<ds>/stats.npz. Then, mode auto: project on the current basis
(<bases>_current.json); fit one from this batch when there is none; fit a new one from the merged statistics
of --window when the drift crosses --drift-threshold. refit: always fit from the window; project: never fit.
A new basis is committed at <bases>v=<NNNN>/ (model/ = pyspark.ml PipelineModel, basis.json, basis.npz),
then <bases>_current.json names it. The batch's rows on the basis are committed at
<reduced-root>basis=<NNNN>/batch=<ds>/: reduced/ (Parquet: path, label, split, batch_id, basis, pca),
pca_matrix/ (CSV parts, each with the header path,label,pc_1..pc_k), report.json, explained_variance.png.

reexpress: projects each listed batch whose output on the CURRENT basis is not committed yet (no-op if all are).

Exit 2: no committed features for the batch (or mode project without a basis); exit 3: the committed features
hold no row. Nothing is committed in either case.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.ml import PipelineModel
from pyspark.ml.common import _py2java
from pyspark.ml.feature import PCAModel, StandardScalerModel
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.linalg import DenseMatrix, DenseVector
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

import jobio

log = jobio.get_logger("fruits.pca")

DEFAULT_VARIANCE = 0.95
# Refit (mode auto) when the share of a night's variance the basis' k components capture falls this far
# below the share at fit time. Measured on the sample (docs/choices.md): nights of the same labels lose
# 0.08-0.13 against a basis fitted on 320 photos, a night of other labels loses 0.4 or more.
DEFAULT_DRIFT_THRESHOLD = 0.20
# Drift is judged only when the basis was fitted on, and the batch holds, at least this many rows. Below it the
# share at fit is in-sample optimism, not a reference: a same-label night "drops" 0.31 against a basis of 66
# rows, 0.21 against 132 and 0.16 against 200, whatever the night's size (measured, docs/choices.md).
DEFAULT_MIN_DRIFT_ROWS = 300
MODES = ("auto", "project", "refit")
# What the step reads from featurize's output; any other column is ignored.
REQUIRED_COLUMNS: dict[str, tuple[type[T.DataType], ...]] = {
    "path": (T.StringType,),
    "label": (T.StringType,),
    "split": (T.StringType,),
    "batch_id": (T.StringType,),
    "features": (T.ArrayType,),
}
FEATURE_ELEMENT_TYPES = (T.FloatType, T.DoubleType)
REDUCED_COLUMNS = ("path", "label", "split", "batch_id", "basis", "pca")

# Column names inside the saved PipelineModel: a model saved by this job is reusable only if
# they stay the same, so they are spelled once, here.
VECTOR_COLUMN = "features_vector"
CENTRED_COLUMN = "features_centred"
PCA_VECTOR_COLUMN = "pca_vector"

# Cumulative sums of float spectra land a hair under round targets (0.9499999999 for 0.95):
# a component that reaches the target within this much counts as reaching it.
VARIANCE_TOLERANCE = 1e-9

# Names inside committed outputs (fruits.matrix reads REDUCED_FOLDER through the markers).
STATS_FILE = "stats.npz"
BASIS_JSON = "basis.json"
BASIS_ARRAYS = "basis.npz"
MODEL_FOLDER = "model"
REDUCED_FOLDER = "reduced"
CSV_FOLDER = "pca_matrix"
REPORT_FILE = "report.json"
PLOT_FILE = "explained_variance.png"
CURRENT_BASIS = "_current.json"
STATS_SCHEMA = "n long, mean binary, m2 binary, error string"
# Rows per block of the statistics and the projection: one matrix product each. Set on the session before
# projecting: featurize, run in the same session locally, leaves its small inference batch there.
ARROW_BATCH_ROWS = 10_000


class NoRows(ValueError):
    """The batch's committed features hold no row (featurize found nothing readable): exit 3, nothing committed."""


# ---------------------------------------------------------------- the lake layout v2 (fruits.lake's spelling)


def check_batch(batch: str) -> str:
    """A batch id is a real calendar date YYYY-MM-DD (fruits.lake.check_batch; the cluster ships no plugins)."""
    try:
        if len(batch) == 10 and dt.date.fromisoformat(batch).isoformat() == batch:
            return batch
    except (TypeError, ValueError):
        pass
    raise ValueError(f"batch must be a real calendar date YYYY-MM-DD, not {batch!r}")


def parse_batches(value: str) -> list[str]:
    """'ds1,ds2,...' -> checked dates, sorted, each once."""
    return sorted({check_batch(part.strip()) for part in value.split(",") if part.strip()})


def _root(uri: str) -> str:
    return uri.rstrip("/") + "/"


def batch_uri(root: str, batch: str) -> str:
    return f"{_root(root)}batch={check_batch(batch)}/"


def basis_name(version: int) -> str:
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"a basis version is a positive integer, not {version!r}")
    return f"{version:04d}"


def basis_uri(bases_root: str, version: int) -> str:
    return f"{_root(bases_root)}v={basis_name(version)}/"


def reduced_uri(reduced_root: str, version: int, batch: str) -> str:
    return f"{_root(reduced_root)}basis={basis_name(version)}/batch={check_batch(batch)}/"


# ---------------------------------------------------------------- sufficient statistics (plain numpy)


@dataclass(frozen=True)
class Stats:
    """n rows, their mean and centred scatter M2 = sum (x - mean)(x - mean)'. Kept centred because the
    features are non-negative with large means: X'X - n mean mean' cancels most of its digits."""

    n: int
    mean: np.ndarray
    m2: np.ndarray

    @property
    def column_sums(self) -> np.ndarray:
        return self.n * self.mean

    @property
    def gram(self) -> np.ndarray:
        """X'X, from the centred form."""
        return self.m2 + self.n * np.outer(self.mean, self.mean)

    def covariance(self) -> np.ndarray:
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 rows, not {self.n}")
        return self.m2 / (self.n - 1)


def block_stats(block: np.ndarray) -> Stats:
    """Statistics of one block of rows (m x d) by matrix products: one syrk-shaped X'X per block."""
    block = np.asarray(block, dtype=np.float64)
    mean = block.mean(axis=0)
    centred = block - mean
    return Stats(block.shape[0], mean, centred.T @ centred)


def merge_stats(a: Stats | None, b: Stats | None) -> Stats | None:
    """Statistics of the union of two disjoint row sets (Chan, Golub & LeVeque's parallel formula)."""
    if a is None or a.n == 0:
        return b
    if b is None or b.n == 0:
        return a
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"feature vectors have different lengths ({a.mean.size} and {b.mean.size})")
    n = a.n + b.n
    delta = b.mean - a.mean
    return Stats(n, a.mean + delta * (b.n / n), a.m2 + b.m2 + np.outer(delta, delta) * (a.n * b.n / n))


def stats_to_npz(stats: Stats) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, n=np.int64(stats.n), mean=stats.mean, column_sums=stats.column_sums, m2=stats.m2)
    return buffer.getvalue()


def stats_from_npz(data: bytes) -> Stats:
    with np.load(io.BytesIO(data)) as arrays:
        return Stats(int(arrays["n"]), arrays["mean"].astype(np.float64), arrays["m2"].astype(np.float64))


class StatsAccumulator:
    """The statistics of a stream of float32 blocks (one partition's) in one pass each: float32 -> float64 and
    the shift by the first block's mean in one ufunc into a reused buffer, then one syrk added in place. The
    small leftover offset of the mean is taken out exactly at the end."""

    def __init__(self) -> None:
        self.n = 0
        self._shift = self._sum = self._scatter = None
        self._buffer = np.empty((0, 0))

    def add(self, block: np.ndarray) -> None:
        rows, d = block.shape
        if not rows:
            return
        if self._shift is None:
            self._shift = block.mean(axis=0, dtype=np.float64)
            self._sum, self._scatter = np.zeros(d), np.zeros((d, d))
        elif d != self._shift.size:
            raise ValueError(f"feature vectors have different lengths ({self._shift.size} and {d})")
        if self._buffer.shape[0] < rows or self._buffer.shape[1] != d:
            self._buffer = np.empty((rows, d))
        centred = np.subtract(block, self._shift, dtype=np.float64, out=self._buffer[:rows])
        self._sum += centred.sum(axis=0)
        self._scatter += centred.T @ centred
        self.n += rows

    @property
    def total(self) -> Stats | None:
        if not self.n:
            return None
        offset = self._sum / self.n
        return Stats(self.n, self._shift + offset, self._scatter - self.n * np.outer(offset, offset))


def feature_block(column: Any, dtype: Any = np.float64) -> np.ndarray:
    """An Arrow list<float> column -> (rows, d) `dtype` (None: as stored, no copy) without a Python loop; clear
    errors for nulls and ragged vectors."""
    import pyarrow.compute as pc

    if column.null_count:
        raise ValueError(f"{column.null_count} rows have no features")
    rows = len(column)
    if rows == 0:
        return np.zeros((0, 0))
    lengths = pc.list_value_length(column)
    low, high = pc.min(lengths).as_py(), pc.max(lengths).as_py()
    if low != high:
        raise ValueError(f"feature vectors have different lengths ({low} to {high})")
    if low < 1:
        raise ValueError("feature vectors are empty")
    values = column.flatten()
    if values.null_count:
        raise ValueError("feature vectors hold null values")
    array = values.to_numpy(zero_copy_only=False)
    return (array if dtype is None else array.astype(dtype, copy=False)).reshape(rows, low)


def _partition_stats(batches: Iterator[Any]) -> Iterator[Any]:
    """mapInArrow: ONE (n, mean, M2) per partition, from one matrix product per Arrow batch. Bad vectors become
    an `error` row, raised on the driver with its message (an exception here would surface as a closed socket
    of the next Python stage)."""
    import pyarrow as pa

    schema = pa.schema([("n", pa.int64()), ("mean", pa.binary()), ("m2", pa.binary()), ("error", pa.string())])
    stats = StatsAccumulator()
    try:
        for batch in batches:
            stats.add(feature_block(batch.column(0), dtype=None))
    except ValueError as error:
        yield pa.RecordBatch.from_pydict({"n": [0], "mean": [b""], "m2": [b""], "error": [str(error)]}, schema=schema)
        return
    total = stats.total
    if total is not None:
        yield pa.RecordBatch.from_pydict(
            {"n": [total.n], "mean": [total.mean.tobytes()], "m2": [total.m2.tobytes()], "error": [None]}, schema=schema
        )


def _parquet_file_stats(files: Iterator[tuple[str, bytes]]) -> Iterator[Stats | str]:
    """mapPartitions over (uri, bytes of a Parquet file): ONE Stats per partition, the `features` column decoded
    by pyarrow in blocks of ARROW_BATCH_ROWS rows; a bad file becomes its error message."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    stats = StatsAccumulator()
    for uri, content in files:
        try:
            parquet = pq.ParquetFile(pa.BufferReader(content))
            # One thread: each core already runs a task (pyarrow's pool would oversubscribe them).
            for batch in parquet.iter_batches(batch_size=ARROW_BATCH_ROWS, columns=["features"], use_threads=False):
                stats.add(feature_block(batch.column(0), dtype=None))
        except (ValueError, KeyError, pa.ArrowException) as error:
            yield f"{uri}: {error}"
            return
    total = stats.total
    if total is not None:
        yield total


def _row_stats(row: Any) -> Stats | str:
    if row["error"]:
        return row["error"]
    mean = np.frombuffer(row["mean"], dtype=np.float64)
    return Stats(int(row["n"]), mean, np.frombuffer(row["m2"], dtype=np.float64).reshape(mean.size, mean.size))


def _merge_partials(a: Stats | str | None, b: Stats | str | None) -> Stats | str | None:
    """merge_stats, an error message winning over statistics (and two lengths that differ becoming one)."""
    if isinstance(a, str) or isinstance(b, str):
        return a if isinstance(a, str) else b
    try:
        return merge_stats(a, b)
    except ValueError as error:
        return str(error)


def batch_stats(features: DataFrame) -> Stats:
    """The statistics of every row of `features`: partials built on the executors, merged there by
    treeAggregate, so the driver receives a few d x d matrices whatever the number of partitions."""
    partials = features.select("features").mapInArrow(_partition_stats, STATS_SCHEMA)
    total = partials.rdd.map(_row_stats).treeAggregate(None, _merge_partials, _merge_partials, depth=2)
    return _checked_total(total)


def parquet_stats(spark: SparkSession, uris: Sequence[str]) -> Stats:
    """batch_stats of the `features` of these Parquet files, the nightly path: Spark moves each file's bytes
    (Hadoop's filesystem: EMRFS on EMR) to a Python worker, pyarrow decodes them there. Spark's own reader
    rebuilds every row on the JVM and sends it again through Arrow: 2 to 4 times slower (benchmarks/README.md)."""
    if not uris:
        raise NoRows("the batch has no feature files")
    # One partition per core, files packed by bytes: the fewest 13 MB partials to merge (featurize's files are alike).
    partials = spark.sparkContext.binaryFiles(",".join(uris)).mapPartitions(_parquet_file_stats)
    return _checked_total(partials.treeAggregate(None, _merge_partials, _merge_partials, depth=2))


def _checked_total(total: Stats | str | None) -> Stats:
    if isinstance(total, str):
        raise ValueError(total)
    if total is None:
        raise NoRows("the batch has no feature rows")
    return total


# ---------------------------------------------------------------- the basis (plain numpy)


def choose_k(cumulative: Sequence[float], target: float) -> int:
    """Smallest k whose cumulative explained variance reaches `target` (0 < target <= 1)."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"the explained-variance target must be in (0, 1], not {target}")
    cumulative = np.asarray(cumulative, dtype=float)
    if cumulative.size == 0:
        raise ValueError("no explained variance to choose k from")
    index = int(np.searchsorted(cumulative, target - VARIANCE_TOLERANCE, side="left"))
    return min(index + 1, cumulative.size)


def principal_axes(covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(explained variance ratio of every component, components as columns), largest first.

    `eigh` because the covariance is symmetric: LAPACK's symmetric solver stays exact when the
    matrix is singular (fewer photos than features). Each component's sign is fixed so that
    its largest coefficient is positive, so a refit on the same rows gives the same numbers."""
    covariance = np.asarray(covariance, dtype=float)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    # Rounding leaves null-space eigenvalues at +-1e-17; a variance is never negative.
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)
    components = eigenvectors[:, order]
    total = eigenvalues.sum()
    if total <= 0:
        raise ValueError("the features have no variance (every row is the same): nothing to reduce")
    largest = np.argmax(np.abs(components), axis=0)
    components = components * np.sign(components[largest, np.arange(components.shape[1])])
    return eigenvalues / total, components


@dataclass
class Basis:
    """A fitted basis: what basis.json and basis.npz hold (the PipelineModel is built from it)."""

    version: int
    mean: np.ndarray
    components: np.ndarray  # d x k
    spectrum: np.ndarray  # explained variance ratio of all d components
    variance_target: float | None
    rows_in_basis: int
    batches: list[str]
    total_variance: float  # trace of the covariance it was fitted on
    fitted_at: str
    location: str = ""  # the committed run folder, once committed

    @property
    def k(self) -> int:
        return int(self.components.shape[1])

    @property
    def spread(self) -> float:
        """sqrt of the total variance: the unit of the mean shift."""
        return float(np.sqrt(self.total_variance))

    @property
    def captured_share(self) -> float:
        return float(self.spectrum[: self.k].sum())

    def to_json(self) -> dict[str, Any]:
        explained = self.spectrum[: self.k]
        return {
            "version": self.version,
            "k": self.k,
            "dimension": int(self.mean.size),
            "variance_target": self.variance_target,
            "explained_variance": explained.tolist(),
            "cumulative_explained_variance": np.cumsum(explained).tolist(),
            "captured_share_at_fit": self.captured_share,
            "rows_in_basis": self.rows_in_basis,
            "batches": self.batches,
            "mean_norm": float(np.linalg.norm(self.mean)),
            "spread": self.spread,
            "total_variance": self.total_variance,
            "fitted_at": self.fitted_at,
            "preprocessing": "centre",
        }

    def arrays_npz(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, mean=self.mean, components=self.components, spectrum=self.spectrum)
        return buffer.getvalue()

    @classmethod
    def load(cls, meta: dict[str, Any], arrays: bytes, location: str) -> Basis:
        with np.load(io.BytesIO(arrays)) as data:
            mean, components, spectrum = data["mean"], data["components"], data["spectrum"]
        return cls(
            meta["version"],
            mean,
            components,
            spectrum,
            meta["variance_target"],
            meta["rows_in_basis"],
            list(meta["batches"]),
            meta["total_variance"],
            meta["fitted_at"],
            location,
        )


def fit_basis(
    stats: Stats, version: int, batches: Sequence[str], *, variance: float | None = None, k: int | None = None
) -> Basis:
    """Centring + the first k principal axes of the rows `stats` summarises. Give `variance` or `k`.

    Centre, don't standardize. Measured on the real sample (960 photos, 1280-d):
        centre:      k = 210 at 0.95, 1-NN Training->Test 99.17 %
        standardize: k = 318 at 0.95, 1-NN 98.33 %   (raw 1280-d: 99.17 %)
    All 1280 features are the same kind of quantity (pooled ReLU6 activations), so their variances are
    comparable and carry signal; standardizing blows near-silent channels (std down to 0.002) up to unit
    variance, which needs more components for less accuracy.

    Why numpy's eigh and not pyspark.ml's PCA estimator: that one decomposes the covariance with Breeze's SVD
    on the pure-Java LAPACK, which returned wrong components when the covariance is singular (fewer photos
    than features): on the real sample they were far from orthonormal (max |P'P - I| = 8.4) and its explained
    variance wrong from the third component on (0.0134 instead of 0.0715). The components then go into
    Spark's own PCAModel (basis_model), so the saved model loads and projects with plain pyspark.ml."""
    if (variance is None) == (k is None):
        raise ValueError("give exactly one of variance and k")
    dimension = stats.mean.size
    if k is not None and not 1 <= k <= dimension:
        raise ValueError(f"k must be between 1 and the feature dimension {dimension}, not {k}")
    covariance = stats.covariance()
    spectrum, components = principal_axes(covariance)
    if k is None:
        k = choose_k(np.cumsum(spectrum), variance)
    return Basis(
        version,
        stats.mean.copy(),
        components[:, :k].copy(),
        spectrum,
        variance,
        stats.n,
        sorted(batches),
        float(np.trace(covariance)),
        dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def measure_drift(
    basis: Basis, stats: Stats, threshold: float, min_rows: int = DEFAULT_MIN_DRIFT_ROWS
) -> dict[str, Any]:
    """How well `basis` explains a batch: the share of the batch's variance its k components capture
    (trace(P' C_b P) / trace(C_b)) against the share at fit time, and the shift of the batch's mean in
    units of the basis' spread. `judged`: both the basis' rows and the batch's reach `min_rows` (else
    `not_judged` says why); `crossed`: judged, and the captured share fell by more than `threshold`."""
    if stats.mean.size != basis.mean.size:
        raise ValueError(f"the basis was fitted on {basis.mean.size}-d features, the batch has {stats.mean.size}-d")
    total = float(np.trace(stats.m2))
    captured = float(np.sum((stats.m2 @ basis.components) * basis.components) / total) if total > 0 else None
    drop = basis.captured_share - captured if captured is not None else None
    why = None
    if basis.rows_in_basis < min_rows:
        why = (
            f"basis {basis.version} was fitted on {basis.rows_in_basis} rows (< {min_rows}): its captured share "
            "at fit is in-sample optimism on so few rows, not a reference"
        )
    elif stats.n < min_rows:
        why = f"the batch has {stats.n} rows (< {min_rows}): its captured share is mostly sampling noise"
    elif drop is None:
        why = "the batch has no variance (every row is the same)"
    return {
        "basis": basis.version,
        "captured_share": captured,
        "captured_share_at_fit": basis.captured_share,
        "captured_share_drop": drop,
        "mean_shift": float(np.linalg.norm(stats.mean - basis.mean) / basis.spread),
        "threshold": threshold,
        "min_rows": min_rows,
        "judged": why is None,
        "not_judged": why,
        "crossed": why is None and drop > threshold,
    }


# ---------------------------------------------------------------- report pieces


def check_schema(schema: T.StructType, source: str) -> None:
    """Raise a ValueError naming every missing or mistyped column of featurize's output."""
    fields = {field.name: field.dataType for field in schema.fields}
    problems = []
    for name, types in REQUIRED_COLUMNS.items():
        if name not in fields:
            problems.append(f"missing column {name!r}")
        elif not isinstance(fields[name], types):
            problems.append(f"column {name!r} is {fields[name].simpleString()}")
    features = fields.get("features")
    if isinstance(features, T.ArrayType) and not isinstance(features.elementType, FEATURE_ELEMENT_TYPES):
        problems.append(f"column 'features' is {features.simpleString()}, not array<float>")
    if problems:
        expected = "path, label, split, batch_id (string), features (array<float>)"
        raise ValueError(f"{source} is not featurize output ({'; '.join(problems)}); expected {expected}")


def csv_header(k: int) -> list[str]:
    return ["path", "label", *(f"pc_{i}" for i in range(1, k + 1))]


def plot_explained_variance(spectrum: Sequence[float], k: int, target: float | None) -> bytes:
    """PNG: explained variance per component (bars) and cumulative (curve), with the target
    and the chosen k. `spectrum` may be longer than k (the full spectrum in variance mode)."""
    # Figure + Agg canvas rather than pyplot: no global backend state on a headless driver.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    spectrum = np.asarray(spectrum, dtype=float)
    components = np.arange(1, spectrum.size + 1)
    figure = Figure(figsize=(9, 5), dpi=100)
    FigureCanvasAgg(figure)
    per_component = figure.add_subplot(1, 1, 1)
    per_component.bar(components, spectrum, width=1.0, color="tab:blue", label="per component")
    per_component.set_xlabel("principal component")
    per_component.set_ylabel("explained variance ratio")
    cumulative_axis = per_component.twinx()
    cumulative_axis.plot(components, np.cumsum(spectrum), color="tab:orange", label="cumulative")
    cumulative_axis.set_ylim(0, 1.02)
    cumulative_axis.set_ylabel("cumulative explained variance")
    if target is not None:
        cumulative_axis.axhline(target, color="tab:red", linestyle="--", label=f"target {target:g}")
    cumulative_axis.axvline(k, color="tab:green", linestyle=":", label=f"k = {k}")
    cumulative_axis.legend(loc="center right")
    figure.suptitle(f"PCA of MobileNetV2 features: k = {k}, {np.sum(spectrum[:k]):.3f} of the variance")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


# ---------------------------------------------------------------- pyspark.ml model of a basis


def _java_model(spark: SparkSession, class_name: str, *args: Any) -> Any:
    """Spark's own model classes, built with the given arrays. Their constructors are package-private in
    Scala but public in the bytecode: the one non-public call of this job, pinned to Spark 3.5 by the EMR
    release, so the saved PipelineModel loads and projects with plain pyspark.ml."""
    sc = spark.sparkContext
    uid = f"{class_name}_{uuid.uuid4().hex[:12]}"
    return getattr(sc._jvm.org.apache.spark.ml.feature, class_name)(uid, *(_py2java(sc, a) for a in args))


def basis_model(spark: SparkSession, basis: Basis) -> PipelineModel:
    """StandardScalerModel that centres on the basis' mean, then PCAModel on its k components."""
    dimension, k = basis.components.shape
    scaler = StandardScalerModel(
        _java_model(
            spark, "StandardScalerModel", DenseVector(np.ones(dimension).tolist()), DenseVector(basis.mean.tolist())
        )
    )
    scaler._set(withMean=True, withStd=False, inputCol=VECTOR_COLUMN, outputCol=CENTRED_COLUMN)
    components = DenseMatrix(dimension, k, basis.components.flatten(order="F").tolist())
    pca_model = PCAModel(_java_model(spark, "PCAModel", components, DenseVector(basis.spectrum[:k].tolist())))
    pca_model._set(k=k, inputCol=CENTRED_COLUMN, outputCol=PCA_VECTOR_COLUMN)
    return PipelineModel(stages=[scaler, pca_model])


def pca_stage(model: PipelineModel, source: str) -> PCAModel:
    """The PCA stage of a model this job saved; a clear error for any other model."""
    stages = model.stages
    if len(stages) != 2 or not isinstance(stages[0], StandardScalerModel) or not isinstance(stages[1], PCAModel):
        kinds = ", ".join(type(stage).__name__ for stage in stages)
        raise ValueError(f"{source} is not a PCA model saved by this job (stages: {kinds})")
    return stages[1]


def project_with_model(model: PipelineModel, features: DataFrame, version: int) -> DataFrame:
    """path, label, split, batch_id, basis, pca (array<float>) through pyspark.ml's own transform: what any
    Spark user of the saved model gets; `project` must give the same numbers (a test checks)."""
    reduced = model.transform(features.withColumn(VECTOR_COLUMN, array_to_vector("features")))
    return reduced.select(
        *REDUCED_COLUMNS[:4],
        F.lit(version).cast("int").alias("basis"),
        vector_to_array(PCA_VECTOR_COLUMN, "float32").alias("pca"),
    )


REDUCED_SCHEMA = "path string, label string, split string, batch_id string, basis int, pca array<float>"


def _projector(mean: np.ndarray, components: np.ndarray, version: int):
    """mapInArrow: (x - mean) @ components for a whole Arrow batch in one matrix product."""

    def project_batches(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        for batch in batches:
            if not batch.num_rows:
                continue
            pcs = ((feature_block(batch.column("features")) - mean) @ components).astype(np.float32)
            offsets = pa.array(np.arange(0, pcs.size + 1, components.shape[1], dtype=np.int32))
            yield pa.RecordBatch.from_arrays(
                [
                    *(batch.column(name) for name in REDUCED_COLUMNS[:4]),
                    pa.array(np.full(batch.num_rows, version, dtype=np.int32)),
                    pa.ListArray.from_arrays(offsets, pa.array(pcs.ravel())),
                ],
                names=list(REDUCED_COLUMNS),
            )

    return project_batches


def project(model: PipelineModel, features: DataFrame, version: int) -> DataFrame:
    """path, label, split, batch_id, basis, pca (array<float>): the rows on the model's basis. The model's own
    mean and components, applied by BLAS to whole Arrow batches, where Spark's PCAModel multiplies row by row
    through vectors: 2.6 s against 3.4 s for 30,000 rows on local[2] (benchmarks/README.md)."""
    scaler, basis = model.stages[0], pca_stage(model, "the model")
    mean, components = scaler.mean.toArray(), basis.pc.toArray()
    return features.select(*REDUCED_COLUMNS[:4], "features").mapInArrow(
        _projector(mean, components, version), REDUCED_SCHEMA
    )


def feature_dimension(features: DataFrame) -> tuple[int, int]:
    """(rows, d) of a features DataFrame, checked (no nulls, one length), in one pass (the notebook's call)."""
    stats = batch_stats(features)
    return stats.n, int(stats.mean.size)


def fit_pca(
    features: DataFrame, dimension: int, *, variance: float | None = None, k: int | None = None, version: int = 1
) -> tuple[PipelineModel, np.ndarray]:
    """(PipelineModel, full spectrum) of a basis fitted on every row of `features` in one call: the notebook's
    view of what `nightly` does from committed statistics."""
    stats = batch_stats(features)
    if stats.mean.size != dimension:
        raise ValueError(f"the features are {stats.mean.size}-d, not {dimension}-d")
    basis = fit_basis(stats, version, [], variance=variance, k=k)
    return basis_model(features.sparkSession, basis), basis.spectrum


def csv_frame(reduced: DataFrame, k: int) -> DataFrame:
    """The analysts' matrix: path, label, pc_1..pc_k."""
    columns = [F.col("pca")[i].alias(name) for i, name in enumerate(csv_header(k)[2:])]
    return reduced.select("path", "label", *columns)


def write_csv(reduced: DataFrame, k: int, uri: str) -> None:
    """Write the analysts' matrix as CSV parts under `uri` (pca_matrix/), each with the header, in parallel."""
    csv_frame(reduced, k).write.option("header", True).option("escape", '"').csv(uri)


# ---------------------------------------------------------------- reading and committing


def committed_feature_files(files: Any, features_root: str, batch: str) -> list[str]:
    """The Parquet files of one batch's committed features; FileNotFoundError when none are committed."""
    output = batch_uri(features_root, batch)
    marker = jobio.read_commit(files, output)
    if marker is None:
        raise FileNotFoundError(f"no committed features for batch {batch} at {output}")
    parquet = [uri for uri in jobio.committed_files(files, output, ".parquet")]
    if not parquet:
        raise NoRows(f"the committed features of batch {batch} at {output} hold no rows")
    return parquet


def read_committed_features(spark: SparkSession, files: Any, features_root: str, batch: str) -> DataFrame:
    """The committed features of one batch, checked; FileNotFoundError when none are committed."""
    return read_features(spark, committed_feature_files(files, features_root, batch), batch_uri(features_root, batch))


def read_features(spark: SparkSession, uris: Sequence[str], source: str) -> DataFrame:
    frame = spark.read.parquet(*uris)
    check_schema(frame.schema, source)
    return frame.select(*REQUIRED_COLUMNS)


def read_committed_stats(files: Any, stats_root: str, batch: str) -> Stats | None:
    uris = jobio.committed_files(files, batch_uri(stats_root, batch), STATS_FILE)
    return stats_from_npz(files.read(uris[0])) if uris else None


def window_stats(
    spark: SparkSession, files: Any, stats_root: str, batches: Sequence[str]
) -> tuple[Stats | None, list[str]]:
    """The merged committed statistics of `batches` (13 MB each) and the batches that had some: read and
    merged on the executors (binaryFile + treeAggregate), so a year of them never passes through the driver."""
    found = {}
    for batch in batches:
        uris = jobio.committed_files(files, batch_uri(stats_root, batch), STATS_FILE)
        if uris:
            found[batch] = uris[0]
    if not found:
        return None, []
    contents = spark.read.format("binaryFile").load(list(found.values())).select("content")
    merged = contents.rdd.map(lambda row: stats_from_npz(bytes(row[0]))).treeAggregate(
        None, merge_stats, merge_stats, depth=2
    )
    return merged, sorted(found)


def commit_stats(files: Any, stats_root: str, batch: str, stats: Stats) -> dict[str, Any]:
    output = batch_uri(stats_root, batch)
    run = jobio.run_uri(output, jobio.new_run_id())
    files.write(run + STATS_FILE, stats_to_npz(stats))
    marker = jobio.commit(
        files, output, run, {"job": "pca-stats", "batch_id": batch, "rows": stats.n, "dimension": int(stats.mean.size)}
    )
    jobio.remove_stale_runs(files, output)  # earlier attempts' folders, once older than a day
    return marker


def current_basis(files: Any, bases_root: str) -> Basis | None:
    """The basis new batches are projected on (<bases>_current.json), or None before the first fit."""
    data = files.read(_root(bases_root) + CURRENT_BASIS)
    if not data:
        return None
    return load_basis(files, bases_root, int(json.loads(data)["version"]))


def load_basis(files: Any, bases_root: str, version: int) -> Basis:
    marker = jobio.read_commit(files, basis_uri(bases_root, version))
    if marker is None:
        raise FileNotFoundError(f"basis {version} is not committed at {basis_uri(bases_root, version)}")
    location = marker["location"]
    return Basis.load(json.loads(files.read(location + BASIS_JSON)), files.read(location + BASIS_ARRAYS), location)


def next_version(files: Any, bases_root: str, reduced_root: str | None = None) -> int:
    """One above every v=<NNNN> folder, committed or not, and every basis=<NNNN> folder of reduced rows: a number
    is never reused, even after a basis' own folder was expired or swept while rows on it remain."""
    versions = [
        int(name[2:])
        for name, _ in files.list_folders(_root(bases_root))
        if name.startswith("v=") and name[2:].isdigit()
    ]
    if reduced_root:
        versions += [
            int(name[6:])
            for name, _ in files.list_folders(_root(reduced_root))
            if name.startswith("basis=") and name[6:].isdigit()
        ]
    return max(versions, default=0) + 1


def commit_basis(spark: SparkSession, files: Any, bases_root: str, basis: Basis) -> None:
    """Commit the basis at <bases>v=<NNNN>/, then point <bases>_current.json at it (one write, last)."""
    output = basis_uri(bases_root, basis.version)
    run = jobio.run_uri(output, jobio.new_run_id())
    basis_model(spark, basis).write().save(run + MODEL_FOLDER)
    files.write(run + BASIS_ARRAYS, basis.arrays_npz())
    files.write(run + BASIS_JSON, json.dumps(basis.to_json(), indent=1).encode())
    jobio.commit(
        files,
        output,
        run,
        {
            "job": "pca-basis",
            "version": basis.version,
            "k": basis.k,
            "rows_in_basis": basis.rows_in_basis,
            "batches": basis.batches,
        },
    )
    basis.location = run
    current = {
        "version": basis.version,
        "location": output,
        "updated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    files.write(_root(bases_root) + CURRENT_BASIS, json.dumps(current, indent=1).encode())


def write_reduced(
    spark: SparkSession,
    files: Any,
    reduced_root: str,
    batch: str,
    basis: Basis,
    features: DataFrame,
    report: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    """Project the batch on `basis` and commit reduced/, pca_matrix/, report.json and the plot at
    <reduced-root>basis=<NNNN>/batch=<ds>/. Returns the report (completed with the projection's figures)."""
    output = reduced_uri(reduced_root, basis.version, batch)
    run = jobio.run_uri(output, jobio.new_run_id())
    projecting = time.monotonic()
    model = PipelineModel.load(basis.location + MODEL_FOLDER)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(ARROW_BATCH_ROWS))
    # A few files per batch: as many as the cluster has cores, never one per input split.
    project(model, features, basis.version).coalesce(spark.sparkContext.defaultParallelism).write.parquet(
        run + REDUCED_FOLDER
    )
    # The CSV from the Parquet just written (the same numbers, no recomputation); one part per Parquet file,
    # written in parallel, each with the header. fruits.matrix concatenates them for analysts.
    write_csv(spark.read.parquet(run + REDUCED_FOLDER), basis.k, run + CSV_FOLDER)
    report = {
        **report,
        "basis": basis.version,
        "basis_location": basis.location,
        "k": basis.k,
        "variance_target": basis.variance_target,
        "rows_in_basis": basis.rows_in_basis,
        "basis_batches": basis.batches,
        "dimension": int(basis.mean.size),
        "explained_variance": basis.spectrum[: basis.k].tolist(),
        "cumulative_explained_variance": np.cumsum(basis.spectrum[: basis.k]).tolist(),
        "total_explained_variance": basis.captured_share,
        "project_seconds": round(time.monotonic() - projecting, 3),
        "seconds": round(time.monotonic() - started, 3),
    }
    files.write(run + REPORT_FILE, json.dumps(report, indent=2, sort_keys=True).encode())
    files.write(run + PLOT_FILE, plot_explained_variance(basis.spectrum, basis.k, basis.variance_target))
    jobio.commit(
        files,
        output,
        run,
        {"job": "pca", "batch_id": batch, "basis": basis.version, "rows": report["rows_read"], "k": basis.k},
    )
    jobio.remove_stale_runs(files, output)
    return report


# ---------------------------------------------------------------- the two subcommands


def run_nightly(
    spark: SparkSession,
    batch: str,
    *,
    features_root: str,
    stats_root: str,
    bases_root: str,
    reduced_root: str,
    window: Sequence[str] | None = None,
    mode: str = "auto",
    variance: float | None = None,
    k: int | None = None,
    drift_threshold: float = DEFAULT_DRIFT_THRESHOLD,
    min_drift_rows: int = DEFAULT_MIN_DRIFT_ROWS,
    files: Any = None,
) -> dict[str, Any]:
    """One night: the batch's statistics, the basis decision, the batch's rows on the current basis.
    Reads only this batch's features (and, when it fits, the window's committed statistics)."""
    check_batch(batch)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if variance is not None and k is not None:
        raise ValueError("give at most one of variance and k")
    if variance is None and k is None:
        variance = DEFAULT_VARIANCE
    files = files or jobio.HadoopFiles(spark)
    started = time.monotonic()

    feature_files = committed_feature_files(files, features_root, batch)
    features = read_features(spark, feature_files, batch_uri(features_root, batch))
    stats = parquet_stats(spark, feature_files)
    stats_seconds = time.monotonic() - started
    commit_stats(files, stats_root, batch, stats)
    log.info(
        "batch %s: statistics of %d rows of %d-d features in %.1f s (%.0f rows/s), committed at %s",
        batch,
        stats.n,
        stats.mean.size,
        stats_seconds,
        stats.n / max(stats_seconds, 1e-9),
        batch_uri(stats_root, batch),
    )

    basis = current_basis(files, bases_root)
    drift = measure_drift(basis, stats, drift_threshold, min_drift_rows) if basis else None
    if drift:
        log.info(
            "drift of batch %s against basis %d: captured share %s (%.4f at fit), mean shift %.3f spreads%s",
            batch,
            basis.version,
            _fmt(drift["captured_share"]),
            drift["captured_share_at_fit"],
            drift["mean_shift"],
            ": threshold crossed"
            if drift["crossed"]
            else f"; not judged: {drift['not_judged']}"
            if drift["not_judged"]
            else "",
        )
    if mode == "project" and basis is None:
        raise FileNotFoundError(f"mode project but no basis yet at {_root(bases_root)}{CURRENT_BASIS}")
    reason = {"refit": "refit forced", "project": None}.get(mode)
    if mode == "auto":
        reason = "first basis" if basis is None else ("drift" if drift["crossed"] else None)

    if reason:
        window_batches = sorted(set(window or ()) - {batch})
        others, fitted_from = window_stats(spark, files, stats_root, window_batches)
        merged, fitted_from = merge_stats(stats, others), sorted([batch, *fitted_from])
        skipped = sorted(set(window_batches) - set(fitted_from))
        if skipped:
            log.info("window batches without committed statistics (not retained or never run): %s", skipped)
        basis = fit_basis(merged, next_version(files, bases_root, reduced_root), fitted_from, variance=variance, k=k)
        commit_basis(spark, files, bases_root, basis)
        log.info(
            "basis %d fitted (%s) on %d rows of %d batch(es): k=%d components explain %.4f, committed at %s",
            basis.version,
            reason,
            basis.rows_in_basis,
            len(fitted_from),
            basis.k,
            basis.captured_share,
            basis_uri(bases_root, basis.version),
        )

    report = {
        "job": "pca",
        "subcommand": "nightly",
        "batch_id": batch,
        "mode": mode,
        "new_basis": reason,
        "rows_read": stats.n,
        "drift": drift,
        "drift_on_basis": measure_drift(basis, stats, drift_threshold, min_drift_rows),
        "stats_seconds": round(stats_seconds, 3),
    }
    report = write_reduced(spark, files, reduced_root, batch, basis, features, report, started)
    log.info(
        "batch %s on basis %d committed at %s: %d rows, k=%d, %.1f s",
        batch,
        basis.version,
        reduced_uri(reduced_root, basis.version, batch),
        stats.n,
        basis.k,
        report["seconds"],
    )
    return report


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def run_reexpress(
    spark: SparkSession,
    batches: Sequence[str],
    *,
    features_root: str,
    bases_root: str,
    reduced_root: str,
    stats_root: str | None = None,
    files: Any = None,
) -> dict[str, Any]:
    """Project each listed batch whose output on the CURRENT basis is not committed yet. A no-op when all
    are (or when there is no basis yet), so it can always be a step of the run. Batches whose features are no
    longer committed (expired) are listed, not fatal."""
    files = files or jobio.HadoopFiles(spark)
    basis = current_basis(files, bases_root)
    summary: dict[str, Any] = {
        "basis": basis.version if basis else None,
        "projected": [],
        "already": [],
        "no_features": [],
    }
    if basis is None:
        log.info("no basis yet at %s: nothing to re-express", bases_root)
        return summary
    for batch in sorted(set(batches)):
        if jobio.read_commit(files, reduced_uri(reduced_root, basis.version, batch)):
            summary["already"].append(batch)
            continue
        started = time.monotonic()
        try:
            features = read_committed_features(spark, files, features_root, batch)
        except FileNotFoundError:
            summary["no_features"].append(batch)
            log.info("batch %s has no committed features any more: not re-expressed", batch)
            continue
        stats = read_committed_stats(files, stats_root, batch) if stats_root else None
        report = {
            "job": "pca",
            "subcommand": "reexpress",
            "batch_id": batch,
            "mode": "project",
            "new_basis": None,
            "rows_read": stats.n if stats else features.count(),
            "drift": None,
            "drift_on_basis": measure_drift(basis, stats, DEFAULT_DRIFT_THRESHOLD) if stats else None,
        }
        write_reduced(spark, files, reduced_root, batch, basis, features, report, started)
        summary["projected"].append(batch)
        log.info("batch %s re-expressed on basis %d in %.1f s", batch, basis.version, time.monotonic() - started)
    return summary


# ---------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    nightly = commands.add_parser("nightly", help="one batch: statistics, basis decision, projection")
    nightly.add_argument("--batch", required=True, type=check_batch)
    nightly.add_argument("--stats-root", required=True)
    nightly.add_argument(
        "--window",
        type=parse_batches,
        default=None,
        help="retained batches a new basis is fitted from (this one is always included)",
    )
    nightly.add_argument("--mode", choices=MODES, default="auto")
    width = nightly.add_mutually_exclusive_group()
    width.add_argument(
        "--variance", type=float, help=f"explained-variance target of a new basis (default {DEFAULT_VARIANCE})"
    )
    width.add_argument("--k", type=int, help="fixed number of components of a new basis")
    nightly.add_argument(
        "--drift-threshold",
        type=float,
        default=DEFAULT_DRIFT_THRESHOLD,
        help=f"refit (mode auto) when the captured share drops by more than this (default {DEFAULT_DRIFT_THRESHOLD})",
    )
    nightly.add_argument(
        "--min-drift-rows",
        type=int,
        default=DEFAULT_MIN_DRIFT_ROWS,
        help="judge drift only when the basis was fitted on and the batch holds at least this many "
        f"rows (default {DEFAULT_MIN_DRIFT_ROWS})",
    )
    reexpress = commands.add_parser("reexpress", help="project listed batches on the current basis")
    reexpress.add_argument("--batches", required=True, type=parse_batches)
    reexpress.add_argument("--stats-root", help="to report each batch's drift figures (optional)")
    for command in (nightly, reexpress):
        command.add_argument("--features-root", required=True)
        command.add_argument("--bases", required=True)
        command.add_argument("--reduced-root", required=True)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    spark = SparkSession.builder.appName(f"fruits-pca-{args.command}").getOrCreate()
    try:
        roots = {"features_root": args.features_root, "bases_root": args.bases, "reduced_root": args.reduced_root}
        if args.command == "nightly":
            run_nightly(
                spark,
                args.batch,
                stats_root=args.stats_root,
                window=args.window,
                mode=args.mode,
                variance=args.variance,
                k=args.k,
                drift_threshold=args.drift_threshold,
                min_drift_rows=args.min_drift_rows,
                **roots,
            )
        else:
            print(json.dumps(run_reexpress(spark, args.batches, stats_root=args.stats_root, **roots)))
    except FileNotFoundError as error:
        log.error("%s", error)
        return 2
    except NoRows as error:
        log.error("%s", error)
        return 3
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
