"""What every benchmark script sets up before its imports: the repository's job and plugin folders on the
path (for this process and the Spark workers it starts), this interpreter for PySpark, quiet TensorFlow.

    import _env  # noqa: F401  (first, before numpy, pyspark, the jobs)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

for folder in ("plugins", "spark_jobs"):  # spark_jobs first on the path
    if str(REPO_ROOT / folder) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / folder))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "spark_jobs"), os.environ.get("PYTHONPATH")]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_results(path: Path, argv: list[str] | None, **facts: Any) -> None:
    """A benchmark's results file: when, on what and by which command it was measured, then its own facts."""
    command = f"benchmarks/{Path(sys.argv[0]).name} " + " ".join(argv if argv is not None else sys.argv[1:])
    header = {
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}",
        "cores": os.cpu_count() or 1,
        "command": command,
    }
    path.write_text(json.dumps({**header, **facts}, indent=2) + "\n")
    print(f"wrote {path.relative_to(REPO_ROOT)}")
