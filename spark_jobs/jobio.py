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
