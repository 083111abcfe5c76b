"""The local target: the same Spark jobs, same arguments, through this machine's spark-submit.

No AWS account: the lake is a local folder (`fruits_local_lake`), Spark runs `local[2]` with the
.venv's pyspark, and the job's Python workers use the same interpreter as Airflow's, with an allow-listed
environment (no secret of Airflow's or of anything else on the machine).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from fruits import steps

log = logging.getLogger(__name__)

MASTER = steps.LOCAL_MASTER
# A local job's JVM lives a minute or two, its heavy work in Python: the JIT's optimizing tier (C2) would spend
# more CPU compiling than it saves (docs/choices.md, "The local target's JVM").
SHORT_LIVED_JVM_OPTIONS = "-XX:TieredStopAtLevel=1"
# The driver fits the PCA and holds the broadcast weights: more than Spark's 1g default.
# Spark's own INFO chatter would drown the jobs' progress lines (those are Python logging).
SPARK_CONF = {
    "spark.driver.memory": "2g",
    "spark.driver.extraJavaOptions": SHORT_LIVED_JVM_OPTIONS,
    "spark.sql.session.timeZone": "UTC",
    "spark.log.level": "WARN",
}


def spark_submit() -> str:
    """The spark-submit beside this interpreter (the .venv's pyspark), else the one on PATH."""
    beside = Path(sys.executable).with_name("spark-submit")
    return str(beside) if beside.exists() else "spark-submit"


def command(job: steps.SparkJob) -> list[str]:
    return steps.local_command(job, spark_submit=spark_submit(), master=MASTER, spark_conf=SPARK_CONF)


# An allow-list, not a deny-list: a Spark job needs the system's basics, Java's, Spark's, Hadoop's and its Python's
# settings; anything else (DATABASE_URL, broker URLs, *_API_KEY, Airflow's configuration) never reaches it.
JOB_VARIABLES = frozenset(
    ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "HOSTNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR")
    + ("LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV")
)
JOB_VARIABLE_PREFIXES = ("LC_", "JAVA_", "SPARK_", "PYSPARK_", "HADOOP_", "ARROW_", "TF_", "KERAS_", "OMP_", "MKL_")
# Even an allowed family never passes a name that says it holds a credential (SPARK_AUTH_SECRET, HADOOP_TOKEN...).
SECRET_MARKERS = ("PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL", "API_KEY", "APIKEY", "PRIVATE", "AUTH")


def is_job_variable(name: str) -> bool:
    upper = name.upper()
    allowed = upper in JOB_VARIABLES or upper.startswith(JOB_VARIABLE_PREFIXES)
    return allowed and not any(marker in upper for marker in SECRET_MARKERS)


def job_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The jobs' environment: the allow-listed variables of this process's; the jobs' Python (driver and
    workers) is this interpreter, as on EMR it is the bootstrap's."""
    environ = dict(os.environ if environ is None else environ)
    kept = {k: v for k, v in environ.items() if is_job_variable(k)}
    return {**kept, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}


def run(command_line: list[str], *, name: str, tail_lines: int = 40) -> None:
    """Run one spark-submit, streaming its output to the task log; a failure raises with the tail."""
    log.info("running %s: %s", name, " ".join(command_line))
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=tail_lines)
    with subprocess.Popen(
        command_line, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=job_environment()
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            tail.append(line.rstrip())
            log.info("[%s] %s", name, line.rstrip())
        code = process.wait()
    seconds = time.monotonic() - started
    if code != 0:
        raise RuntimeError(f"{name} failed (exit {code}) after {seconds:.0f}s; last lines:\n" + "\n".join(tail))
    log.info("%s finished in %.1fs", name, seconds)
