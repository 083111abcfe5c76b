"""PCA step: MobileNetV2 features (1280-d) -> a few hundred principal components.

    spark-submit spark_jobs/pca.py --input URI[,URI...] --output URI
                                   [--variance 0.95 | --k K | --model URI]

`--input` takes featurize outputs: one batch folder, several (comma-separated), and/or a parent
folder holding `batch=<ds>` partitions (every batch). A photo path that appears more than once
(the same batch listed twice, a parent and one of its batches) is kept once: the row from the
latest batch_id, so a re-featurized photo counts with its newest features.

Fit mode (default) fits centring + PCA with pyspark.ml and keeps the smallest k whose cumulative
explained variance reaches `--variance` (default 0.95), or exactly `--k` components. Project mode
(`--model`) loads a PipelineModel saved by an earlier run and only projects, so later batches are
expressed on the same basis.

Writes, under `--output` (everything appears at once, see `jobio.replace`):
    reduced/                 Parquet: path, label, split, batch_id, pca (array<float>, k)
    pca_matrix.csv           ONE csv: path,label,pc_1..pc_k (the analysts' deliverable)
    report.json              rows, k, explained variance per component and cumulative, seconds...
    explained_variance.png   per-component bars, cumulative curve, target and k
    model/                   the PipelineModel (centring + PCA) that made `reduced/`
"""

from __future__ import annotations

import argparse
import io
import time
import uuid
from collections.abc import Sequence

import numpy as np
from pyspark import StorageLevel
from pyspark.errors import AnalysisException
from pyspark.ml import PipelineModel
from pyspark.ml.common import _py2java
from pyspark.ml.feature import PCAModel, StandardScaler, StandardScalerModel
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.linalg import DenseMatrix, DenseVector
from pyspark.mllib.linalg.distributed import RowMatrix
from pyspark.mllib.util import MLUtils
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

import jobio

log = jobio.get_logger("fruits.pca")

DEFAULT_VARIANCE = 0.95
# What the step reads from featurize's output; any other column is ignored.
REQUIRED_COLUMNS: dict[str, tuple[type[T.DataType], ...]] = {
    "path": (T.StringType,),
    "label": (T.StringType,),
    "split": (T.StringType,),
    "batch_id": (T.StringType,),
    "features": (T.ArrayType,),
}
FEATURE_ELEMENT_TYPES = (T.FloatType, T.DoubleType)
REDUCED_COLUMNS = ("path", "label", "split", "batch_id", "pca")

# Column names inside the saved PipelineModel: a model saved by this job is reusable only if
# they stay the same, so they are spelled once, here.
VECTOR_COLUMN = "features_vector"
CENTRED_COLUMN = "features_centred"
PCA_VECTOR_COLUMN = "pca_vector"

# Cumulative sums of float spectra land a hair under round targets (0.9499999999 for 0.95):
# a component that reaches the target within this much counts as reaching it.
VARIANCE_TOLERANCE = 1e-9


# ---------------------------------------------------------------- pure helpers (plain data)


def parse_inputs(value: str) -> list[str]:
    """`--input` value -> URIs, in order, each once."""
    uris = list(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not uris:
        raise ValueError("--input names no URI")
    return uris


def choose_k(cumulative: Sequence[float], target: float) -> int:
    """Smallest k whose cumulative explained variance reaches `target` (0 < target <= 1)."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"the explained-variance target must be in (0, 1], not {target}")
    cumulative = np.asarray(cumulative, dtype=float)
    if cumulative.size == 0:
        raise ValueError("no explained variance to choose k from")
    index = int(np.searchsorted(cumulative, target - VARIANCE_TOLERANCE, side="left"))
    return min(index + 1, cumulative.size)


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


def build_report(
    *,
    mode: str,
    inputs: Sequence[str],
    output: str,
    model_source: str | None,
    input_rows: int,
    rows: int,
    dimension: int,
    variance_target: float | None,
    explained_variance: Sequence[float],
    seconds: float,
) -> dict:
    """report.json. In project mode the explained variance is the model's, measured on the
    rows it was fitted on (the basis is unchanged, so that is what the components mean)."""
    explained = [float(value) for value in explained_variance]
    cumulative = np.cumsum(explained).tolist()
    return {
        "job": "pca",
        "mode": mode,
        "inputs": list(inputs),
        "output": output,
        "model_source": model_source,
        "preprocessing": "centre",
        "input_rows": input_rows,
        "duplicates_dropped": input_rows - rows,
        "rows": rows,
        "dimension": dimension,
        "k": len(explained),
        "variance_target": variance_target,
        "explained_variance": explained,
        "cumulative_explained_variance": cumulative,
        "total_explained_variance": cumulative[-1],
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds, 1) if seconds > 0 else None,
    }


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


# ---------------------------------------------------------------- DataFrame functions


def read_features(spark: SparkSession, uris: Sequence[str]) -> DataFrame:
    """Featurize output from every URI, checked, as one DataFrame (duplicates still in).

    Each URI is read on its own, so a parent folder (its `batch=<ds>` partitions add a
    column we drop) and single batches can be mixed without Spark's partition discovery
    refusing the different depths."""
    missing = [uri for uri in uris if not jobio.path_exists(spark, uri)]
    if missing:
        raise FileNotFoundError(f"PCA input not found: {', '.join(missing)}")
    frames = []
    for uri in uris:
        try:
            frame = spark.read.parquet(uri)
        except AnalysisException as error:
            # An existing folder without Parquet files: Spark cannot infer a schema.
            raise ValueError(f"PCA input {uri} holds no Parquet data ({error.getErrorClass()})") from error
        check_schema(frame.schema, uri)
        frames.append(frame.select(*REQUIRED_COLUMNS))
    features = frames[0]
    for frame in frames[1:]:
        features = features.unionByName(frame)
    return features


def drop_duplicate_paths(features: DataFrame) -> DataFrame:
    """One row per photo path: the row of the latest batch_id wins. Two rows with the same
    path and batch_id are the same featurize output read twice, so either one will do."""
    latest_first = Window.partitionBy("path").orderBy(F.col("batch_id").desc_nulls_last())
    return (
        features.withColumn("_rank", F.row_number().over(latest_first))
        .where(F.col("_rank") == 1)
        .drop("_rank")
    )


def feature_dimension(features: DataFrame) -> tuple[int, int]:
    """(rows, d) in one pass; raises on no rows, missing features or mixed lengths."""
    stats = features.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col("features").isNull().cast("int")).alias("null_features"),
        F.min(F.size("features")).alias("min_d"),
        F.max(F.size("features")).alias("max_d"),
    ).first()
    if stats["rows"] == 0:
        raise ValueError("PCA input has no rows")
    if stats["null_features"]:
        raise ValueError(f"{stats['null_features']} input rows have no features")
    if stats["min_d"] != stats["max_d"]:
        raise ValueError(f"feature vectors have different lengths ({stats['min_d']} to {stats['max_d']})")
    if stats["min_d"] < 1:
        raise ValueError("feature vectors are empty")
    return int(stats["rows"]), int(stats["min_d"])


def _with_vectors(features: DataFrame) -> DataFrame:
    return features.withColumn(VECTOR_COLUMN, array_to_vector("features"))


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


def covariance_matrix(vectors: DataFrame, column: str) -> np.ndarray:
    """The d x d covariance of a vector column, aggregated on the executors (one pass for the
    mean, one for the sums of outer products); only the d x d result reaches the driver."""
    rows = RowMatrix(MLUtils.convertVectorColumnsFromML(vectors.select(column), column))
    return rows.computeCovariance().toArray()


def basis_model(spark: SparkSession, components: np.ndarray, explained: np.ndarray) -> PCAModel:
    """Spark's own PCAModel (so the PipelineModel saves, loads and projects with plain
    pyspark.ml) holding the components computed here. Its constructor is package-private in
    Scala but public in the bytecode; it is the one non-public call in this job, pinned to the
    Spark 3.5 line by the EMR release."""
    dimension, k = components.shape
    java_model = spark.sparkContext._jvm.org.apache.spark.ml.feature.PCAModel(
        f"PCAModel_{uuid.uuid4().hex[:12]}",
        _py2java(spark.sparkContext, DenseMatrix(dimension, k, components.flatten(order="F").tolist())),
        _py2java(spark.sparkContext, DenseVector(explained.tolist())),
    )
    model = PCAModel(java_model)
    model._set(k=k, inputCol=CENTRED_COLUMN, outputCol=PCA_VECTOR_COLUMN)
    return model


def fit_pca(
    features: DataFrame, dimension: int, *, variance: float | None = None, k: int | None = None
) -> tuple[PipelineModel, np.ndarray]:
    """Fit centring + PCA. Give `variance` (k = smallest reaching it) or `k`.

    Returns the PipelineModel (StandardScalerModel that centres, PCAModel that projects on k
    components) and the full spectrum (explained variance ratio of all d components).

    Centre, don't standardize. Measured on the real sample (960 photos, 1280-d):
        centre:      k = 210 at 0.95, 1-NN Training->Test 99.17 %
        standardize: k = 318 at 0.95, 1-NN 98.33 %   (raw 1280-d: 99.17 %)
    All 1280 features are the same kind of quantity (pooled ReLU6 activations), so their
    variances are comparable and carry signal; standardizing blows near-silent channels
    (std down to 0.002) up to unit variance, which needs more components for less accuracy.

    Why not pyspark.ml's PCA estimator: it decomposes the covariance with Breeze's SVD on the
    pure-Java LAPACK (F2J dgesdd, what Spark uses without a native LAPACK), which returns
    wrong components when the covariance is singular, i.e. whenever a fit sees fewer photos
    than features: on the real sample its components were far from orthonormal
    (max |P'P - I| = 8.4) and its explained variance wrong from the third component on
    (0.0134 instead of 0.0715). So the covariance is aggregated by Spark (RowMatrix, public
    API), decomposed on the driver with numpy's eigh (1280 x 1280: well under a second), and
    the components are put in Spark's PCAModel. No row is collected, and the full spectrum
    comes from one decomposition, so choosing k by variance needs no second fit.
    """
    if (variance is None) == (k is None):
        raise ValueError("give exactly one of variance and k")
    if k is not None and not 1 <= k <= dimension:
        raise ValueError(f"k must be between 1 and the feature dimension {dimension}, not {k}")
    vectors = _with_vectors(features)
    scaler = StandardScaler(withMean=True, withStd=False, inputCol=VECTOR_COLUMN, outputCol=CENTRED_COLUMN)
    scaler_model = scaler.fit(vectors)
    # Centred before the covariance: Spark then takes its dense path, which subtracts the mean
    # row by row, rather than Gram - n * mean mean' (cancellation on non-negative features).
    started = time.monotonic()
    spectrum, components = principal_axes(covariance_matrix(scaler_model.transform(vectors), CENTRED_COLUMN))
    if k is None:
        k = choose_k(np.cumsum(spectrum), variance)
    log.info("covariance of %d-d features aggregated and decomposed in %.1f s: k=%d components explain %.4f of the variance",
             dimension, time.monotonic() - started, k, spectrum[:k].sum())
    pca_model = basis_model(features.sparkSession, components[:, :k], spectrum[:k])
    return PipelineModel(stages=[scaler_model, pca_model]), spectrum


def pca_stage(model: PipelineModel, source: str) -> PCAModel:
    """The PCA stage of a model this job saved; a clear error for any other model."""
    stages = model.stages
    if len(stages) != 2 or not isinstance(stages[0], StandardScalerModel) or not isinstance(stages[1], PCAModel):
        kinds = ", ".join(type(stage).__name__ for stage in stages)
        raise ValueError(f"{source} is not a PCA model saved by this job (stages: {kinds})")
    return stages[1]


def load_model(spark: SparkSession, uri: str, dimension: int) -> PipelineModel:
    if not jobio.path_exists(spark, uri):
        raise FileNotFoundError(f"PCA model not found: {uri}")
    model = PipelineModel.load(uri)
    basis = pca_stage(model, uri)
    if basis.pc.numRows != dimension:
        raise ValueError(
            f"model {uri} was fitted on {basis.pc.numRows}-d features, the input has {dimension}-d features"
        )
    return model


def project(model: PipelineModel, features: DataFrame) -> DataFrame:
    """path, label, split, batch_id, pca (array<float>): the rows on the model's basis."""
    reduced = model.transform(_with_vectors(features))
    return reduced.select(
        *REDUCED_COLUMNS[:-1], vector_to_array(PCA_VECTOR_COLUMN, "float32").alias("pca")
    )


def csv_frame(reduced: DataFrame, k: int) -> DataFrame:
    """The analysts' matrix: path, label, pc_1..pc_k, ordered by path so reruns diff cleanly."""
    columns = [F.col("pca")[i].alias(name) for i, name in enumerate(csv_header(k)[2:])]
    return reduced.select("path", "label", *columns).orderBy("path")


# ---------------------------------------------------------------- writing


def write_single_csv(spark: SparkSession, frame: DataFrame, uri: str) -> None:
    """Write `frame` as ONE csv file at `uri` without collecting it: Spark writes a single
    part file into a scratch folder beside it, which is then moved into place."""
    parts = f"{uri.rsplit('/', 1)[0]}/_csv_parts"
    # escape='"' doubles quotes inside quoted fields (RFC 4180, what Excel and pandas read);
    # Spark's default would backslash-escape them.
    frame.coalesce(1).write.option("header", True).option("escape", '"').csv(parts)
    written = jobio.glob(spark, f"{parts}/part-*")
    if len(written) != 1:
        raise RuntimeError(f"expected one csv part file in {parts}, found {len(written)}")
    jobio.move(spark, written[0], uri)
    jobio.delete(spark, parts)


def run_pca(
    spark: SparkSession,
    inputs: Sequence[str],
    output: str,
    *,
    variance: float | None = None,
    k: int | None = None,
    model_uri: str | None = None,
) -> dict:
    """The whole step; returns the report it wrote. Nothing appears at `output` unless
    everything was written."""
    if sum(option is not None for option in (variance, k, model_uri)) > 1:
        raise ValueError("give at most one of variance, k and model")
    if variance is None and k is None and model_uri is None:
        variance = DEFAULT_VARIANCE
    output = output.rstrip("/")
    started = time.monotonic()

    raw = read_features(spark, inputs)
    input_rows = raw.count()
    # Cached: the fit reads the rows up to four times (mean, spectrum, components, projection).
    features = drop_duplicate_paths(raw).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        rows, dimension = feature_dimension(features)
        log.info(
            "read %d rows (%d duplicate paths dropped) of %d-d features from %d input(s) in %.1f s",
            rows, input_rows - rows, dimension, len(inputs), time.monotonic() - started,
        )
        if model_uri:
            model = load_model(spark, model_uri, dimension)
            spectrum = pca_stage(model, model_uri).explainedVariance.toArray()
        else:
            if rows < 2:
                raise ValueError(f"fitting a PCA needs at least 2 rows, the input has {rows}")
            model, spectrum = fit_pca(features, dimension, variance=variance, k=k)
        basis = pca_stage(model, model_uri or "the fitted model")
        chosen_k = basis.getK()

        staging = jobio.staging_uri(output, uuid.uuid4().hex[:12])
        try:
            projecting = time.monotonic()
            # The dedup shuffle leaves spark.sql.shuffle.partitions (200) parts: a few files are plenty.
            project(model, features).coalesce(spark.sparkContext.defaultParallelism).write.parquet(f"{staging}/reduced")
            elapsed = time.monotonic() - projecting
            log.info("projected %d rows onto %d components in %.1f s (%.0f rows/s)",
                     rows, chosen_k, elapsed, rows / max(elapsed, 1e-9))
            model.write().save(f"{staging}/model")
            # The csv comes from the Parquet just written: the same numbers, no recomputation.
            write_single_csv(spark, csv_frame(spark.read.parquet(f"{staging}/reduced"), chosen_k),
                             f"{staging}/pca_matrix.csv")
            report = build_report(
                mode="project" if model_uri else "fit",
                inputs=inputs,
                output=output,
                model_source=model_uri,
                input_rows=input_rows,
                rows=rows,
                dimension=dimension,
                variance_target=variance,
                explained_variance=basis.explainedVariance.toArray(),
                seconds=time.monotonic() - started,
            )
            jobio.write_json(spark, f"{staging}/report.json", report)
            jobio.write_bytes(spark, f"{staging}/explained_variance.png",
                              plot_explained_variance(spectrum, chosen_k, variance))
            jobio.replace(spark, staging, output)
        except BaseException:
            jobio.delete(spark, staging)
            raise
    finally:
        features.unpersist()
    log.info("wrote %s: %d rows, k=%d, %.4f of the variance, %.1f s",
             output, rows, chosen_k, report["total_explained_variance"], report["seconds"])
    return report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, type=parse_inputs,
                        help="featurize output URI(s), comma-separated; a parent folder reads every batch=<ds>")
    parser.add_argument("--output", required=True, help="output folder URI (replaced as a whole)")
    basis = parser.add_mutually_exclusive_group()
    basis.add_argument("--variance", type=float,
                       help=f"explained-variance target for choosing k (default {DEFAULT_VARIANCE})")
    basis.add_argument("--k", type=int, help="fixed number of components")
    basis.add_argument("--model", help="URI of a model saved by an earlier run: project only, no fit")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    spark = SparkSession.builder.appName("fruits-pca").getOrCreate()
    try:
        run_pca(spark, args.input, args.output, variance=args.variance, k=args.k, model_uri=args.model)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
