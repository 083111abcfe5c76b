"""fruits.matrix: one CSV for a date range on one basis, from committed reduced outputs only; refuses to mix
bases. The lake is built here with pyarrow and jobio.commit's own marker (test_pca.py runs it on the job's
real output)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import jobio
from fruits import lake, matrix
from fruits.cli import matrix as matrix_cli
from fruits.storage import LocalStore


class LocalFiles:
    """What jobio.commit needs, on a local folder."""

    def list_files(self, folder_uri: str) -> list[tuple[str, int]]:
        base = Path(folder_uri.removeprefix("file://"))
        return sorted((str(p.relative_to(base)), p.stat().st_size) for p in base.rglob("*") if p.is_file())

    def write(self, uri: str, data: bytes) -> None:
        Path(uri.removeprefix("file://")).write_bytes(data)


def reduced_output(
    root: str, version: int, batch: str, k: int, n: int, *, commit: bool = True, run: str = "r1"
) -> pd.DataFrame:
    rng = np.random.default_rng(hash((version, batch)) % 2**32)
    frame = pd.DataFrame(
        {
            "path": [f'{root}/raw/batch={batch}/L/{i}, "x".jpg' for i in range(n)],
            "label": [f"L{i % 2}" for i in range(n)],
            "split": "Training",
            "batch_id": batch,
            "basis": np.int32(version),
            "pca": list(rng.normal(size=(n, k)).astype(np.float32)),
        }
    )
    output = lake.pca_reduced_uri(root, version, batch)
    location = jobio.run_uri(output, run)
    folder = Path(location.removeprefix("file://")) / "reduced"
    folder.mkdir(parents=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table.slice(0, n // 2), folder / "part-0.parquet")
    pq.write_table(table.slice(n // 2), folder / "part-1.parquet")
    (folder.parent / "report.json").write_text("{}")
    if commit:
        jobio.commit(LocalFiles(), output, location, {"job": "pca", "basis": version})
    return frame


@pytest.fixture
def lake_root(tmp_path) -> str:
    root = f"file://{tmp_path}/lake"
    os.makedirs(f"{tmp_path}/lake/pca/bases")
    Path(lake.pca_current_basis_uri(root).removeprefix("file://")).write_text(json.dumps({"version": 2}))
    return root


def _read(path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False)


def test_one_basis_over_a_range_streamed_from_committed_outputs(lake_root, tmp_path):
    store = LocalStore(lake_root.removeprefix("file://"))
    root = store.root
    first = reduced_output(root, 1, "2024-01-01", 3, 10)
    second = reduced_output(root, 1, "2024-01-03", 3, 7)
    reduced_output(root, 1, "2024-01-02", 3, 5, commit=False)  # a crashed run: holds nothing
    summary = matrix.write_matrix(store, root, "2024-01-01", "2024-01-03", tmp_path / "m.csv", basis=1)
    assert summary["rows_per_batch"] == {"2024-01-01": 10, "2024-01-03": 7}
    assert (summary["basis"], summary["k"], summary["dates_without_output"]) == (1, 3, ["2024-01-02"])
    table = _read(tmp_path / "m.csv")
    assert list(table.columns) == ["path", "label", "pc_1", "pc_2", "pc_3"]
    expected = pd.concat([first, second])
    assert table.path.tolist() == expected.path.tolist()  # commas and quotes survive
    np.testing.assert_allclose(table[["pc_1", "pc_2", "pc_3"]].to_numpy(), np.stack(expected.pca.to_numpy()), rtol=1e-6)

    # basis 2 is the current one; 2024-01-03 is on basis 1 only: refused, with the command to run
    reduced_output(root, 2, "2024-01-01", 4, 10)
    with pytest.raises(matrix.MatrixError, match=r"2024-01-03 \(on basis 1\).*reexpress --batches 2024-01-03"):
        matrix.write_matrix(store, root, "2024-01-01", "2024-01-03", tmp_path / "m2.csv")
    assert not (tmp_path / "m2.csv").exists() and not list(tmp_path.glob(".m2.csv*"))
    assert matrix.write_matrix(store, root, "2024-01-01", "2024-01-01", tmp_path / "m2.csv")["k"] == 4
    with pytest.raises(matrix.MatrixError, match="no batch from 2024-02-01 to 2024-02-02"):
        matrix.write_matrix(store, root, "2024-02-01", "2024-02-02", tmp_path / "m3.csv")


def test_rows_of_another_basis_are_refused_and_nothing_is_left(lake_root, tmp_path):
    store = LocalStore(lake_root.removeprefix("file://"))
    reduced_output(store.root, 1, "2024-01-01", 2, 4)
    marker = lake.commit_marker_uri(lake.pca_reduced_uri(store.root, 1, "2024-01-01"))
    # a marker of basis 1 naming rows of basis 2 (a hand-copied folder): the rows say which basis made them
    bad = reduced_output(store.root, 2, "2024-01-02", 2, 4, commit=False, run="r9")
    assert len(bad) == 4
    data = json.loads(Path(marker.removeprefix("file://")).read_text())
    data["location"] = jobio.run_uri(lake.pca_reduced_uri(store.root, 2, "2024-01-02"), "r9")
    Path(marker.removeprefix("file://")).write_text(json.dumps(data))
    with pytest.raises(matrix.MatrixError, match=r"holds rows of basis \[2\], not 1"):
        matrix.write_matrix(store, store.root, "2024-01-01", "2024-01-01", tmp_path / "m.csv", basis=1)
    assert list(tmp_path.glob("*m.csv*")) == []


def test_command_line(lake_root, tmp_path, capsys):
    store = LocalStore(lake_root.removeprefix("file://"))
    reduced_output(store.root, 2, "2024-01-01", 2, 4)
    assert (
        matrix_cli.main(
            ["--lake", lake_root, "--from", "2024-01-01", "--to", "2024-01-01", "--output", str(tmp_path / "m.csv")]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["rows"] == 4
    assert (
        matrix_cli.main(
            ["--lake", lake_root, "--from", "2024-01-02", "--to", "2024-01-01", "--output", str(tmp_path / "m.csv")]
        )
        == 2
    )
    assert "before --from" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        matrix_cli.main(["--lake", lake_root, "--from", "2024-02-30", "--to", "2024-03-01", "--output", "x.csv"])


# Cells a spreadsheet runs as formulas (OWASP CSV injection), and what the CSV must hold instead.
FORMULAS = {
    '=HYPERLINK("http://x","y")': '\'=HYPERLINK("http://x","y")',
    "+1+1": "'+1+1",
    "-2+3": "'-2+3",
    "@SUM(A1)": "'@SUM(A1)",
    "\t=1": "'\t=1",
    "\r=1": "'\r=1",
    "Apple=Braeburn": "Apple=Braeburn",
    "Kiwi": "Kiwi",
}


def test_labels_and_names_a_spreadsheet_would_run_are_written_as_text(lake_root, tmp_path):
    import csv

    store = LocalStore(lake_root.removeprefix("file://"))
    n = len(FORMULAS)
    frame = reduced_output(store.root, 2, "2024-01-01", 2, n)
    output = lake.pca_reduced_uri(store.root, 2, "2024-01-01")
    location = json.loads(Path(lake.commit_marker_uri(output).removeprefix("file://")).read_text())["location"]
    for part in sorted(Path(location.removeprefix("file://"), "reduced").glob("*.parquet")):
        table = pq.read_table(part)
        first = frame.path.tolist().index(table["path"][0].as_py())
        labels = list(FORMULAS)[first : first + table.num_rows]
        paths = ["=cmd|' /C calc'!A0" if i == 0 else p for i, p in enumerate(table["path"].to_pylist())]
        table = table.set_column(table.schema.get_field_index("label"), "label", pa.array(labels))
        pq.write_table(table.set_column(0, "path", pa.array(paths)), part)
    matrix.write_matrix(store, store.root, "2024-01-01", "2024-01-01", tmp_path / "m.csv")
    with open(tmp_path / "m.csv", newline="") as source:
        rows = list(csv.DictReader(source))
    assert [row["label"] for row in rows] == list(FORMULAS.values())
    assert sorted(row["path"] for row in rows if row["path"].startswith("'")) == ["'=cmd|' /C calc'!A0"] * 2
    assert all(
        not row[column].startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows for column in ("path", "label")
    )
