"""Driver-side I/O helpers shared by the Spark jobs.

They go through Hadoop's FileSystem API (via the JVM gateway), so the same call writes to
`file://` locally and to `s3://` (EMRFS) on the cluster, with the cluster's credentials and
encryption settings. Shipped to the cluster with `--py-files`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
import uuid
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:  # the Airflow side imports the batch and CSV rules below without pyspark
    from pyspark.sql import SparkSession

# The analysts' CSV (pca.py's pca_matrix/ parts, fruits.matrix's file): a text cell starting with one of these is a
# formula to a spreadsheet (OWASP "CSV injection"); a leading single quote makes it text. Java, RE2 and re syntax.
CSV_FORMULA_START = r"^[=+\-@\t\r]"
CSV_TEXT_PREFIX = "'"

# ---------------------------------------------------------------- the batch id rule (one definition)
#
# fruits.lake.check_batch is this function (it loads this file): the Param, the commands, the jobs and
# the lake's paths all accept exactly the same batch ids.

BATCH_PATTERN = r"^\d{4}-\d{2}-\d{2}$"  # the run Param's JSON-schema pattern; check_batch says the rest
# Batches are Paris nights (the company is French): a photo of tomorrow is at most a timezone away.
BATCH_TIMEZONE = "Europe/Paris"


class BatchError(ValueError, argparse.ArgumentTypeError):
    """A refused batch id; an ArgumentTypeError too, so a command's --batch error says why, not just 'invalid'."""


def latest_batch(now: datetime.datetime | None = None) -> str:
    """The latest batch id accepted now: tomorrow in Paris. Anything later is a typo, not a night."""
    now = now or datetime.datetime.now(datetime.UTC)
    return (now.astimezone(ZoneInfo(BATCH_TIMEZONE)).date() + datetime.timedelta(days=1)).isoformat()


def check_batch(batch: str, *, now: datetime.datetime | None = None) -> str:
    """A batch id is a real calendar date spelled YYYY-MM-DD, no later than tomorrow in Paris: it names
    partitions and bounds the retention sweep, so nothing else gets in. BatchError otherwise."""
    parsed = None
    if isinstance(batch, str) and len(batch) == 10:
        try:
            parsed = datetime.date.fromisoformat(batch)
        except ValueError:
            parsed = None
    if parsed is None or parsed.isoformat() != batch:
        raise BatchError(f"batch must be a real calendar date YYYY-MM-DD, not {batch!r}")
    latest = latest_batch(now)
    if batch > latest:
        raise BatchError(f"batch {batch} is in the future: the latest batch accepted now is {latest} (tomorrow, Paris)")
    return batch


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


# ---------------------------------------------------------------- committed outputs (writer side)
#
# S3 has no atomic folder rename (a "move" is a copy then a delete per object), so outputs are never
# moved into place: each run writes its own folder `<output>/run=<run id>/`, and ONE small object
# written last, `<output>/_committed.json`, commits it (one PUT is atomic on S3). Readers resolve the
# marker and read only the files it lists (fruits.lake.read_commit on the Airflow side).

COMMIT_MARKER = "_committed.json"  # fruits.lake.COMMIT_MARKER, checked equal by a test
COMMIT_FORMAT = 1
RUN_PREFIX = "run="
# A run folder no marker names is removed only once this old: a step times out after 3 h, so an
# attempt still writing is never swept away under another attempt's feet.
STALE_RUN_SECONDS = 24 * 3600


class HadoopFiles:
    """The file operations the commit protocol needs, through Hadoop's FileSystem (file:// here,
    s3:// through EMRFS on the cluster). Tests swap in a fault-injecting stand-in with S3's semantics."""

    def __init__(self, spark: SparkSession):
        self.spark = spark

    def exists(self, uri: str) -> bool:
        return path_exists(self.spark, uri)

    def write(self, uri: str, data: bytes) -> None:
        """One object: a single PUT on S3; on a local disk, a temporary file renamed over the target."""
        if uri.startswith("file:"):
            _write_local_atomically(uri, data)
        else:
            write_bytes(self.spark, uri, data)

    def read(self, uri: str) -> bytes | None:
        fs, path = _hadoop_path(self.spark, uri)
        if not fs.exists(path):
            return None
        stream = fs.open(path)
        try:
            buffer = self.spark.sparkContext._jvm.java.io.ByteArrayOutputStream()
            self.spark.sparkContext._jvm.org.apache.hadoop.io.IOUtils.copyBytes(stream, buffer, 65536, False)
            return bytes(buffer.toByteArray())
        finally:
            stream.close()

    def delete(self, uri: str) -> bool:
        return delete(self.spark, uri)

    def list_files(self, folder_uri: str) -> list[tuple[str, int]]:
        """(path relative to the folder, size) of every file below it, sorted."""
        fs, path = _hadoop_path(self.spark, folder_uri)
        if not fs.exists(path):
            return []
        base = str(fs.makeQualified(path).toString()).rstrip("/") + "/"
        found = []
        iterator = fs.listFiles(path, True)
        while iterator.hasNext():
            status = iterator.next()
            found.append((str(status.getPath().toString())[len(base) :], int(status.getLen())))
        return sorted(found)

    def list_folders(self, folder_uri: str) -> list[tuple[str, int]]:
        """(name, modification time in ms) of the folders directly below `folder_uri`."""
        fs, path = _hadoop_path(self.spark, folder_uri)
        if not fs.exists(path):
            return []
        return sorted(
            (str(s.getPath().getName()), int(s.getModificationTime())) for s in fs.listStatus(path) if s.isDirectory()
        )


class ListParam:
    """Accumulator of a list (Spark applies a result task's updates once, however often the task ran)."""

    def zero(self, value):
        return []

    def addInPlace(self, value1, value2):
        value1.extend(value2)
        return value1


def _write_local_atomically(uri: str, data: bytes) -> None:
    import os

    path = uri.removeprefix("file://") if uri.startswith("file://") else uri.removeprefix("file:")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.partial-{os.getpid()}"
    with open(partial, "wb") as handle:
        handle.write(data)
    os.replace(partial, path)


def new_run_id(now: datetime.datetime | None = None) -> str:
    """`20261201T020000Z-1a2b3c4d`: sortable by start time, unique per attempt."""
    now = now or datetime.datetime.now(datetime.UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"


def run_uri(output_uri: str, run_id: str) -> str:
    """The folder one run of a job writes its output to; nothing else ever writes there."""
    if not run_id or "/" in run_id:
        raise ValueError(f"bad run id {run_id!r}")
    return f"{output_uri.rstrip('/')}/{RUN_PREFIX}{run_id}/"


def _is_data_file(name: str) -> bool:
    """Files a reader wants: not Hadoop's checksums nor hidden/bookkeeping names (`.x`, `_x`) of any
    folder level, except the job's own `_job_metrics.json`-style reports at the top."""
    parts = name.split("/")
    if parts[-1].endswith(".crc") or parts[-1] == "_SUCCESS":
        return False
    return not any(part.startswith((".", "_")) for part in parts[:-1]) and not parts[-1].startswith(".")


def commit(files: Any, output_uri: str, run_folder: str, facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Commit `run_folder` (complete) as `output_uri`'s content: list its files, then write the
    marker naming them (the single write that makes the output visible). Returns the marker."""
    output = output_uri.rstrip("/") + "/"
    location = run_folder.rstrip("/") + "/"
    run_id = location[len(output) :].rstrip("/").removeprefix(RUN_PREFIX)
    if not location.startswith(output + RUN_PREFIX) or not run_id or "/" in run_id:
        raise ValueError(f"{run_folder!r} is not a run folder of {output_uri!r} (see run_uri)")
    listed = [(name, size) for name, size in files.list_files(location) if _is_data_file(name)]
    if not listed:  # a run that wrote nothing never replaces what a reader has
        raise ValueError(f"nothing to commit: {location} holds no file")
    marker = {
        "format": COMMIT_FORMAT,
        "output": output,
        "location": location,
        "run_id": run_id,
        "files": [name for name, _ in listed],
        "bytes": sum(size for _, size in listed),
        "committed_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **(facts or {}),
    }
    files.write(output + COMMIT_MARKER, json.dumps(marker, indent=1, sort_keys=True).encode())
    return marker


def read_commit(files: Any, output_uri: str) -> dict[str, Any] | None:
    data = files.read(output_uri.rstrip("/") + "/" + COMMIT_MARKER)
    return json.loads(data) if data else None


def committed_files(files: Any, output_uri: str, suffix: str = "") -> list[str]:
    """URIs of the committed files of `output_uri` ending with `suffix`; [] when nothing is committed."""
    marker = read_commit(files, output_uri)
    if not marker:
        return []
    return [marker["location"] + name for name in marker["files"] if name.endswith(suffix)]


def discard_run(files: Any, output_uri: str, run_folder: str) -> bool:
    """A failed run's clean-up: delete its own run folder, unless the marker already names it (a
    failure after the commit must not take a committed output away). True if it deleted it."""
    marker = read_commit(files, output_uri)
    if marker and marker["location"].rstrip("/") == run_folder.rstrip("/"):
        return False
    return bool(files.delete(run_folder.rstrip("/") + "/"))


def discard_runs(files: Any, runs: list[tuple[str, str]]) -> None:
    """discard_run each (output, run folder) of a failed run; a clean-up error is logged, never raised
    over the error that made the run fail."""
    log = get_logger("jobio")
    for output_uri, run_folder in runs:
        try:
            discard_run(files, output_uri, run_folder)
        except Exception as exc:  # noqa: BLE001 - remove_stale_runs sweeps what is left after its grace
            log.warning("could not remove %s after a failed run: %s", run_folder, exc)


def run_started_ms(run_id: str) -> int | None:
    """When a run started, from its id (new_run_id); None if the id does not say."""
    try:
        started = datetime.datetime.strptime(run_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ")
    except ValueError:
        return None
    return int(started.replace(tzinfo=datetime.UTC).timestamp() * 1000)


def remove_stale_runs(
    files: Any, output_uri: str, *, now_ms: int | None = None, stale_seconds: int = STALE_RUN_SECONDS
) -> list[str]:
    """Delete run folders that the marker does not name and that started more than `stale_seconds`
    ago: superseded outputs and the leftovers of failed attempts. Returns what it deleted.

    A run's age comes from its id, not the folder's time: S3 has no folders, and S3A reports a prefix's
    modification time as 0 (S3AFileStatus), which would make an attempt still writing look ancient."""
    import time as _time

    marker = read_commit(files, output_uri)
    keep = marker["location"].rstrip("/").rsplit("/", 1)[-1] if marker else None
    now_ms = int(_time.time() * 1000) if now_ms is None else now_ms
    removed = []
    for name, modified_ms in files.list_folders(output_uri):
        if not name.startswith(RUN_PREFIX) or name == keep:
            continue
        started_ms = run_started_ms(name.removeprefix(RUN_PREFIX)) or modified_ms
        if started_ms and now_ms - started_ms > stale_seconds * 1000:  # undated (0): kept, never guessed
            uri = output_uri.rstrip("/") + "/" + name + "/"
            files.delete(uri)
            removed.append(uri)
    return removed
