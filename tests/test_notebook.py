"""The demo notebook (notebooks/fruits_pipeline_demo.ipynb) runs, shows what it claims, and is
committed clean.

It is executed with nbclient in a real Jupyter kernel (this .venv's Python, registered in a temporary
kernel-spec folder), on the real Fruits-360 sample with the real ImageNet weights: it calls
featurize.py's and pca.py's own functions on a local[2] SparkSession it creates.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "notebooks" / "fruits_pipeline_demo.ipynb"
EXECUTED_COPY = REPO_ROOT / "notebooks" / "executed" / NOTEBOOK.name
DEMO_FOLDER = REPO_ROOT / "build" / "notebook"  # where the README says the notebook keeps its lake and CSV
# A path of the machine: an absolute POSIX path or a file:// URI (a relative path like ../shared is fine).
MACHINE_PATH = re.compile(r"file://|(?<![\w.])/(?:work|tmp|home|root|Users|var|opt)/")
KERNEL_NAME = "fruits-test-venv"
DEMO_LABELS = 8
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def cell_tagged(notebook, tag: str):
    cells = [cell for cell in notebook.cells if tag in cell.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def text_of(cell) -> str:
    """Everything a code cell printed or displayed as text."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def machine_paths(notebook) -> list[str]:
    """The lines of every text output that name a path of the machine the notebook ran on."""
    return [
        line
        for cell in notebook.cells
        if cell.cell_type == "code"
        for line in text_of(cell).splitlines()
        if MACHINE_PATH.search(line)
    ]


def pngs_of(cell) -> list[bytes]:
    return [
        base64.b64decode(output["data"]["image/png"])
        for output in cell.get("outputs", [])
        if output.output_type in ("execute_result", "display_data") and "image/png" in output.get("data", {})
    ]


def test_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells
    dirty = [i for i, cell in enumerate(code_cells) if cell.outputs or cell.execution_count is not None]
    assert not dirty, f"code cells {dirty} hold outputs: clear them before committing (nbstripout / Clear All Outputs)"


def test_notebook_calls_the_jobs_functions_instead_of_rewriting_them():
    """Each job's steps are called from its module; the notebook defines no function of its own."""
    source = "\n".join(cell.source for cell in nbformat.read(NOTEBOOK, as_version=4).cells if cell.cell_type == "code")
    for call in (
        "upload.write_listing",
        "ingest.run",
        "featurize.read_images",
        "featurize.make_payload",
        "featurize.make_featurizer",
        "featurize.featurize_frame",
        "pca.fit_pca",
        "pca.project",
        "pca.plot_explained_variance",
        "pca.write_csv",
    ):
        assert call + "(" in source, f"the notebook does not call {call}"
    assert not re.search(r"^\s*def ", source, flags=re.MULTILINE)


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory, monkeypatch_module) -> str:
    """This .venv's Python as a Jupyter kernel, registered in a temporary folder only."""
    prefix = tmp_path_factory.mktemp("jupyter")
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", KERNEL_NAME],
        check=True,
        capture_output=True,
    )
    monkeypatch_module.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    return KERNEL_NAME


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def executed(sample_dir, keras_home, kernel_name, monkeypatch_module):
    """The notebook executed top to bottom on the sample (8 labels), as a user would run it."""
    from nbclient import NotebookClient

    monkeypatch_module.setenv("FRUITS_SAMPLE_DIR", str(sample_dir))
    monkeypatch_module.setenv("FRUITS_DEMO_LABELS", str(DEMO_LABELS))
    monkeypatch_module.delenv("FRUITS_WEIGHTS", raising=False)  # the keras_home fixture's imagenet file
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name=kernel_name,
        timeout=900,
        startup_timeout=120,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the failing cell's traceback, on any error
    return notebook


@pytest.mark.shared
@pytest.mark.slow
def test_notebook_runs_without_error(executed):
    errors = [output for cell in executed.cells for output in cell.get("outputs", []) if output.output_type == "error"]
    assert not errors
    code_cells = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code_cells)


@pytest.mark.shared
@pytest.mark.slow
def test_notebook_shows_sample_images_with_labels(executed):
    images = pngs_of(cell_tagged(executed, "sample-images"))
    assert len(images) == 1 and images[0].startswith(PNG_SIGNATURE)


@pytest.mark.shared
@pytest.mark.slow
def test_notebook_broadcasts_one_model_payload(executed):
    text = text_of(cell_tagged(executed, "broadcast"))
    assert "output (None, 1280)" in text
    megabytes = float(re.search(r"litert flatbuffer of ([\d.]+) MB", text).group(1))
    # MobileNetV2 alpha 1.0 has 2.26 M float32 parameters: the payload must carry them (~9 MB).
    assert 8.0 < megabytes < 12.0


@pytest.mark.shared
@pytest.mark.slow
def test_notebook_features_are_1280_floats_per_photo(executed):
    text = text_of(cell_tagged(executed, "feature-shape"))
    rows, dimension = map(int, re.search(r"features: (\d+) rows x (\d+) floats", text).groups())
    assert dimension == 1280
    assert rows == DEMO_LABELS * 40  # 30 Training + 10 Test per label; MANIFEST.txt quarantined
    assert "-> 1280 features" in text


@pytest.mark.shared
@pytest.mark.slow
def test_notebook_pca_reaches_the_variance_target_with_fewer_dimensions(executed):
    text = text_of(cell_tagged(executed, "pca-k"))
    k, explained = re.search(r"k = (\d+) components explain ([\d.]+) of the variance", text).groups()
    assert 2 <= int(k) < DEMO_LABELS * 40  # fewer components than photos, let alone 1280 features
    assert float(explained) >= 0.95


@pytest.mark.shared
@pytest.mark.slow
def test_notebook_plots_the_explained_variance_and_the_scatter(executed):
    variance = pngs_of(cell_tagged(executed, "variance-plot"))
    assert len(variance) == 1 and variance[0].startswith(PNG_SIGNATURE)
    scatter = cell_tagged(executed, "scatter")
    images = pngs_of(scatter)
    assert len(images) == 1 and images[0].startswith(PNG_SIGNATURE)
    assert f"scatter: {DEMO_LABELS * 40} points, {DEMO_LABELS} labels" in text_of(scatter)


@pytest.mark.shared
@pytest.mark.slow
def test_notebook_ingests_a_night_into_bundles_as_production_does(executed):
    text = text_of(cell_tagged(executed, "upload"))
    found = re.search(r"ingest: (\d+) files seen, (\d+) photos in (\d+) bundle", text)
    seen, uploaded, bundles = map(int, found.groups())
    assert uploaded == DEMO_LABELS * 40 and bundles >= 1
    assert seen == uploaded + 1 and "misplaced" in text  # MANIFEST.txt: not a photo, refused with its reason
    assert "run=" in text and "_uploads.json" in text and "_ingestion.json" in text


@pytest.mark.shared
@pytest.mark.slow
def test_notebook_checks_1nn_on_a_basis_fitted_on_training_only(executed):
    assert "Training rows" in text_of(cell_tagged(executed, "pca-k"))
    text = text_of(cell_tagged(executed, "one-nn"))
    raw, k, reduced = re.search(r"raw 1280-d ([\d.]+), PCA k=(\d+) ([\d.]+)", text).groups()
    assert float(reduced) >= 0.9 and float(reduced) >= float(raw) - 0.02
    neighbours = pngs_of(cell_tagged(executed, "neighbours"))
    assert len(neighbours) == 1 and neighbours[0].startswith(PNG_SIGNATURE)


@pytest.mark.shared
@pytest.mark.slow
def test_notebook_outputs_hold_no_log_noise(executed):
    """Spark's, the workers' and TensorFlow's logs go to a file, not into what a reader sees."""
    streams = [out for cell in executed.cells for out in cell.get("outputs", []) if out.output_type == "stream"]
    assert not [s for s in streams if s.name == "stderr"], "a cell wrote to stderr"
    noisy = [
        line
        for s in streams
        for line in s.text.splitlines()
        if re.search(r"\bWARN\b|\bINFO\b|XNNPACK delegate|cuda|absl::|oneDNN", line)
    ]
    assert not noisy, noisy[:5]


def test_executed_copy_names_no_path_of_the_machine_it_ran_on():
    """The committed executed copy (make notebook) prints paths relative to the checkout only."""
    assert not machine_paths(nbformat.read(EXECUTED_COPY, as_version=4))


def test_notebook_keeps_its_outputs_in_the_ignored_demo_folder():
    source = "\n".join(cell.source for cell in nbformat.read(NOTEBOOK, as_version=4).cells if cell.cell_type == "code")
    assert 'REPO_DIR / "build" / "notebook"' in source
    assert source.count("rmtree(") == 1  # emptied when it starts, kept when it ends
    ignored = subprocess.run(["git", "check-ignore", "-q", str(DEMO_FOLDER)], cwd=REPO_ROOT, check=False)
    assert ignored.returncode == 0, "build/notebook/ must be ignored by git"


@pytest.mark.shared
@pytest.mark.slow
def test_notebook_ends_by_writing_and_showing_the_csv_matrix(executed):
    csv_cell = cell_tagged(executed, "csv-matrix")
    code_cells = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert code_cells.index(csv_cell) >= len(code_cells) - 2  # the last thing it shows, before the clean-up
    parts = sorted((DEMO_FOLDER / "pca_matrix").glob("part-*.csv"))
    assert parts, "no CSV part under build/notebook/pca_matrix/"
    lines = [line for part in parts for line in part.read_text().splitlines()]
    headers = [line for line in lines if line.startswith("path,")]
    assert len(headers) == len(parts)  # one header per part
    header = headers[0].split(",")
    assert header[:3] == ["path", "label", "pc_1"] and header[2:] == [f"pc_{i}" for i in range(1, len(header) - 1)]
    assert len(lines) - len(headers) == DEMO_LABELS * 40
    text = text_of(csv_cell)
    assert f"{DEMO_LABELS * 40} rows" in text and "header: path,label,pc_1,pc_2" in text


@pytest.mark.shared
@pytest.mark.slow
def test_notebook_outputs_name_no_path_of_the_machine(executed):
    assert not machine_paths(executed)


def test_notebook_runs_offline_on_the_shared_weights_by_default():
    source = "\n".join(cell.source for cell in nbformat.read(NOTEBOOK, as_version=4).cells if cell.cell_type == "code")
    assert 'models" / "keras"' in source and "SHARED_WEIGHTS" in source
    assert 'read_images(spark, RAW_URI, "bundles")' in source  # the bundles the ingest job wrote, not loose files
    assert "ingest.run(" in source
