"""Driver-side I/O helpers shared by the Spark jobs.

They go through Hadoop's FileSystem API (via the JVM gateway), so the same call writes to
`file://` locally and to `s3://` (EMRFS) on the cluster, with the cluster's credentials and
encryption settings. Shipped to the cluster with `--py-files`.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from pyspark.sql import SparkSession


def get_logger(name: str) -> logging.Logger:
    """A logger that prints to stderr (collected by YARN / EMR step logs)."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def _hadoop_path(spark: SparkSession, uri: str):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return fs, path


def input_file_count(frame) -> int:
    """`len(frame.inputFiles())` in one call to the JVM. PySpark's inputFiles() turns the Java array
    into a list one element per round trip: 3.6 s for 28,800 files (measured), minutes for a million."""
    return len(frame._jdf.inputFiles())


def path_exists(spark: SparkSession, uri: str) -> bool:
    fs, path = _hadoop_path(spark, uri)
    return bool(fs.exists(path))


def write_bytes(spark: SparkSession, uri: str, data: bytes) -> None:
    """Write (overwrite) one small file, e.g. a report or a plot."""
    fs, path = _hadoop_path(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()


def write_json(spark: SparkSession, uri: str, payload: Any) -> None:
    write_bytes(spark, uri, json.dumps(payload, indent=2, sort_keys=True).encode("utf-8"))


def delete(spark: SparkSession, uri: str) -> bool:
    """Delete a file or a whole folder (recursively); False if there was nothing there."""
    fs, path = _hadoop_path(spark, uri)
    return bool(fs.delete(path, True))


def move(spark: SparkSession, source_uri: str, target_uri: str) -> None:
    """Rename a file or folder to a path that must not exist yet.

    Hadoop's rename moves a source *into* an existing folder and reports some failures by
    returning False instead of raising, so both cases are turned into clear errors here.
    On S3 (EMRFS) a folder rename is a copy then delete, not atomic: callers build outputs
    under a temporary sibling and move them in once complete, so readers never see a half.
    """
    fs, source = _hadoop_path(spark, source_uri)
    _, target = _hadoop_path(spark, target_uri)
    if fs.exists(target):
        raise FileExistsError(f"cannot move {source_uri} to {target_uri}: the target exists")
    if not fs.rename(source, target):
        raise OSError(f"could not move {source_uri} to {target_uri}")


def glob(spark: SparkSession, pattern_uri: str) -> list[str]:
    """URIs matching a Hadoop glob (e.g. `<dir>/part-*.csv`), sorted; [] when none match."""
    fs, pattern = _hadoop_path(spark, pattern_uri)
    statuses = fs.globStatus(pattern) or []
    return sorted(str(status.getPath().toString()) for status in statuses)


def qualified_uri(spark: SparkSession, uri: str) -> str:
    """`uri` spelled as Hadoop and Spark's file sources spell the paths they list (`/x` and
    `file:///x` -> `file:/x`, no trailing slash), so those paths can be compared with it."""
    fs, path = _hadoop_path(spark, uri)
    return str(fs.makeQualified(path).toString())


def read_bytes(spark: SparkSession, uri: str) -> bytes:
    """The whole content of one (small enough to hold in memory) file, e.g. a weights file."""
    rows = spark.read.format("binaryFile").load(uri).select("content").collect()
    if len(rows) != 1:
        raise FileNotFoundError(f"expected one file at {uri}, found {len(rows)}")
    return bytes(rows[0][0])


def staging_uri(output_uri: str, token: str) -> str:
    """A sibling of `output_uri` to build it in before `replace` moves it into place.

    The `.` prefix hides it from Spark's file listing and partition discovery (a `_` prefix
    would not: Spark still lists `_` names that contain `=`, like `_tmp-batch=2024-01-01`), so a
    reader of the parent folder never sees a half-written output."""
    parent, sep, name = output_uri.rstrip("/").rpartition("/")
    if not name or parent.endswith(":") or parent.endswith(":/"):
        raise ValueError(f"an output must be a folder below a bucket or directory, not {output_uri!r}")
    return f"{parent}{sep}.{name}.incomplete-{token}"


def replace(spark: SparkSession, staging: str, output_uri: str) -> None:
    """Move a complete staging folder to `output_uri`, replacing what a previous run left there
    (reruns and backfills are idempotent). The previous output is set aside until the new one
    is in place, and put back if the move fails."""
    previous = f"{staging}.previous"
    replaced = path_exists(spark, output_uri)
    if replaced:
        move(spark, output_uri, previous)
    try:
        move(spark, staging, output_uri)
    except Exception:
        if replaced:
            move(spark, previous, output_uri)
        raise
    if replaced:
        delete(spark, previous)
