"""What every benchmark script sets up before its imports: the repository's job and plugin folders on the
path (for this process and the Spark workers it starts), this interpreter for PySpark, quiet TensorFlow.

    import _env  # noqa: F401  (first, before numpy, pyspark, the jobs)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

for folder in ("plugins", "spark_jobs"):  # spark_jobs first on the path
    if str(REPO_ROOT / folder) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / folder))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "spark_jobs"), os.environ.get("PYTHONPATH")]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
