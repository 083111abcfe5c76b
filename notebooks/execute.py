"""Execute the demo notebook on the sample and keep its outputs (`make notebook`): GitHub renders the executed copy,
so a reader sees the pictures without running anything. The source notebook stays without outputs.

    .venv/bin/python notebooks/execute.py [--labels 8]

Writes notebooks/executed/fruits_pipeline_demo.ipynb, and the scatter and neighbours pictures the deck shows
(docs/presentation/img/pca_scatter_8_fruits.png, img/nearest_neighbours.png). Needs ../shared (the sample, the
weights); runs this .venv's Python as the kernel, registered in a temporary folder only.
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "fruits_pipeline_demo.ipynb"
EXECUTED = HERE / "executed" / SOURCE.name
IMG = HERE.parent / "docs" / "presentation" / "img"
PICTURES = {"scatter": "pca_scatter_8_fruits.png", "neighbours": "nearest_neighbours.png"}
KERNEL = "fruits-notebook-venv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, default=8, help="fruit labels the demo uses (FRUITS_DEMO_LABELS)")
    args = parser.parse_args(argv)
    notebook = nbformat.read(SOURCE, as_version=4)
    with tempfile.TemporaryDirectory(prefix="fruits-jupyter-") as prefix:
        subprocess.run(
            [sys.executable, "-m", "ipykernel", "install", "--prefix", prefix, "--name", KERNEL],
            check=True,
            capture_output=True,
        )
        os.environ["JUPYTER_PATH"] = str(Path(prefix) / "share" / "jupyter")
        os.environ["FRUITS_DEMO_LABELS"] = str(args.labels)
        NotebookClient(
            notebook, kernel_name=KERNEL, timeout=1800, startup_timeout=120, resources={"metadata": {"path": str(HERE)}}
        ).execute()
    notebook.metadata.pop("widgets", None)
    EXECUTED.parent.mkdir(exist_ok=True)
    nbformat.write(notebook, EXECUTED)
    print("wrote", EXECUTED.relative_to(HERE.parent))
    for cell in notebook.cells:
        for tag in cell.get("metadata", {}).get("tags", []):
            if tag in PICTURES and args.labels == 8:
                png = next(o["data"]["image/png"] for o in cell.outputs if "image/png" in o.get("data", {}))
                (IMG / PICTURES[tag]).write_bytes(base64.b64decode(png))
                print("wrote", (IMG / PICTURES[tag]).relative_to(HERE.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
