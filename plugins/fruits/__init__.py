"""Fruits! pipeline building blocks: plain, Airflow-free functions the DAG wires together."""

import sys
from pathlib import Path

# The per-photo and index code lives with the Spark jobs (spark_jobs/photos.py, lakeindex.py: the cluster
# ships no plugins), one definition both sides import.
SPARK_JOBS = str(Path(__file__).resolve().parents[2] / "spark_jobs")
if SPARK_JOBS not in sys.path:
    sys.path.append(SPARK_JOBS)
