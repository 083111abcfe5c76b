"""`make demo`: run the whole pipeline on this machine, through the DAG's local target.

    python -m fruits.cli.demo [--batch YYYY-MM-DD] [--landing DIR] [--lake DIR] [--airflow-home DIR]

Runs `fruits_pipeline` with `dag.test()` (a throwaway SQLite Airflow metadata DB under var/airflow):
the same tasks and the same two Spark jobs with the same arguments as on EMR, against a local folder
as the lake (`lake/`), on the real Fruits-360 sample (`../shared/data/fruits360-sample`) when present,
otherwise on images it generates. Then prints where the features, the PCA CSV, the report and the
plot landed, with their counts. No AWS account needed.

Also the harness the DAG tests share (`prepare_airflow`, `load_dag`, `run_dag`: they set this process's
environment), and where ../shared's sample and weights are: it lives here, outside what Airflow imports.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

from fruits import lake  # the paths and the batch rule only: no Airflow import

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_DIR = Path(os.environ.get("FRUITS_SHARED_DIR", REPO_ROOT.parent / "shared")).resolve()
SAMPLE_DIR = SHARED_DIR / "data" / "fruits360-sample"
WEIGHTS_FILE = SHARED_DIR / "models" / "keras" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
DAG_ID = "fruits_pipeline"

_prepared_home: Path | None = None


def prepare_airflow(home: Path, dags_folder: Path = REPO_ROOT / "dags") -> None:
    """Point this process's Airflow at `home` (SQLite DB, dags/ of this repo) and migrate the DB.
    Works whether or not airflow was imported already; a second call with the same home is free."""
    global _prepared_home
    home = home.resolve()
    if _prepared_home == home:
        return
    home.mkdir(parents=True, exist_ok=True)
    already_imported = "airflow.settings" in sys.modules
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        }
    )
    from airflow import settings

    if already_imported:  # settings were computed from the old environment at import
        settings.configure_vars()
        settings.reconfigure_orm()
    from airflow.utils import db

    db.initdb()
    _prepared_home = home


def load_dag(target: str):
    """The DAG object for a target (FRUITS_TARGET is read when the DAG file is parsed)."""
    os.environ["FRUITS_TARGET"] = target
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "fruits_pipeline.py"))
    if bag.import_errors:
        raise RuntimeError(f"the DAG does not import: {bag.import_errors}")
    return bag.get_dag(DAG_ID)


def night_run_info(dag, night: str | None = None, *, scheduled_at: dt.datetime | None = None):
    """The run Airflow's own timetable makes (a core DagRunInfo: partition key and date, run_after): the
    scheduler's run due at `scheduled_at`, else the run a backfill of `night` (YYYY-MM-DD) creates."""
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import TimeRestriction

    timetable = coerce_to_core_timetable(dag.timetable)
    if scheduled_at is not None:
        restriction = TimeRestriction(earliest=scheduled_at, latest=None, catchup=True)
        return timetable.next_dagrun_info_v2(last_dagrun_info=None, restriction=restriction)
    start = dt.datetime.combine(dt.date.fromisoformat(night), dt.time(), tzinfo=dt.UTC)  # read as Paris time
    (info,) = timetable.iter_partition_dagrun_infos(earliest=start, latest=start + dt.timedelta(days=1, seconds=-1))
    return info


def _deadline_alert_ids(dag_version_id) -> list[str]:
    from airflow.models.deadline_alert import DeadlineAlert
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.settings import Session
    from sqlalchemy import select

    query = select(DeadlineAlert.id).join(SerializedDagModel, DeadlineAlert.serialized_dag_id == SerializedDagModel.id)
    return [str(i) for i in Session().scalars(query.where(SerializedDagModel.dag_version_id == dag_version_id))]


def run_dag(
    target: str,
    batch: str | None,
    variables: dict[str, str],
    run_conf: dict | None = None,
    *,
    scheduled_at: dt.datetime | None = None,
):
    """One `dag.test()` run of night `batch` as a backfill creates it (partition key = the night), or with
    `scheduled_at` the scheduler's run due then; returns the DagRun."""
    from unittest import mock

    from airflow.serialization.definitions.dag import SerializedDAG

    for name, value in variables.items():
        os.environ[f"AIRFLOW_VAR_{name.upper()}"] = value
    dag = load_dag(target)
    info = night_run_info(dag, batch, scheduled_at=scheduled_at)
    create = SerializedDAG.create_dagrun

    def partitioned(self, **kwargs):
        run = create(self, **{**kwargs, "partition_key": info.partition_key, "partition_date": info.partition_date})
        # The scheduler's DAG holds its deadline alerts' ids (DagRun.update_state looks them up); dag.test()'s
        # holds their definitions, so a run with a deadline could not end: give it the ids, as stored.
        self.deadline = _deadline_alert_ids(run.created_dag_version_id) or self.deadline
        return run

    # dag.test() takes no partition key (airflow/sdk/definitions/dag.py): its run gets the timetable's.
    with mock.patch.object(SerializedDAG, "create_dagrun", partitioned):
        return dag.test(logical_date=None, run_after=info.run_after, run_conf=run_conf or {})


def generate_images(folder: Path, *, per_label: int = 12) -> Path:
    """A tiny stand-in landing when ../shared is absent: coloured fruit-like discs on white."""
    from PIL import Image, ImageDraw

    colours = {"Red_Round": (200, 30, 40), "Yellow_Long": (230, 200, 40), "Green_Round": (60, 160, 60)}
    for label, colour in colours.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            image = Image.new("RGB", (100, 100), "white")
            box = (
                (10 + i % 5, 20 - i % 7, 90 - i % 3, 80 + i % 4)
                if "Long" in label
                else (15 + i % 6, 15, 85, 85 - i % 5)
            )
            ImageDraw.Draw(image).ellipse(box, fill=tuple(max(0, c - 6 * i) for c in colour))
            image.save(folder / label / f"{i}_100.jpg", quality=90)
    return folder


def _path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def summarize(lake_root: Path, batch: str) -> list[str]:
    """What landed where, with counts, read back from the committed outputs themselves."""
    from fruits import run_report, storage

    store = storage.LocalStore(lake_root)
    root = store.root
    features = lake.read_commit(store, lake.features_uri(root, batch))
    metrics = features.get("metrics") or {}
    version = run_report.current_basis(store, root)
    reduced_uri = lake.pca_reduced_uri(root, version, batch)
    pca = _path(lake.read_commit(store, reduced_uri)["location"])
    report = json.loads((pca / lake.PCA_REPORT_FILE).read_text())
    csv_parts = [_path(uri) for uri in lake.committed_files(store, reduced_uri) if uri.endswith(".csv")]
    csv_rows = sum(sum(1 for _ in part.open()) - 1 for part in csv_parts)  # each part has the header
    return [
        f"features      {_path(features['location'])}/  ({features.get('rows')} rows; "
        f"{metrics.get('featurized')} featurized, {metrics.get('quarantined')} quarantined, "
        f"{metrics.get('images_per_second', 0):.1f} images/s)",
        f"quarantine    {_path(lake.quarantine_uri(root, batch))}",
        f"PCA matrix    {len(csv_parts)} CSV part(s) under {pca}  ({csv_rows} rows x {report.get('k')} components, "
        f"basis {version})",
        f"PCA report    {pca / lake.PCA_REPORT_FILE}  "
        f"(explained variance {report.get('total_explained_variance', 0):.3f})",
        f"PCA plot      {pca / lake.PCA_PLOT_FILE}",
        f"PCA basis     {_path(lake.pca_basis_uri(root, version))}",
        f"run report    {_path(lake.reports_uri(root, batch)) / 'run_report.md'} (.json and .html beside it)",
    ]


def publish_models(lake_dir: Path, weights_file: Path) -> dict:
    """The weights and their LiteRT conversion into the lake's models/, as the release command does
    before a first night: once per lake (a later demo reads them back), so no night converts again."""
    from fruits import release, storage

    store = storage.LocalStore(lake_dir)
    weights = weights_file.read_bytes()
    try:
        published = release.default_weights(store, store.root, weights_file.name)
        if published["weights_sha256"] == storage.sha256_bytes(weights) and published["model_payload"]:
            return published
    except FileNotFoundError:
        pass
    print(f"Publishing {weights_file.name} and its LiteRT conversion into {lake_dir / 'models'}", flush=True)
    payload = release.convert_to_litert(weights, weights_file.name)
    return release.publish_weights(store, store.root, weights, weights_file.name, payload=payload)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fruits.cli.demo",
        description=__doc__.split("\n\n")[0],
        epilog="No AWS account needed: the lake is a local folder.",
    )
    parser.add_argument(
        "--batch",
        default=dt.date.today().isoformat(),
        type=lake.check_batch,
        help="the batch = the run's night (its partition key), YYYY-MM-DD (default: today)",
    )
    parser.add_argument(
        "--landing",
        type=Path,
        help="folder of [<Split>/]<Label>/<image> (default: the Fruits-360 sample in ../shared, else generated images)",
    )
    parser.add_argument(
        "--lake", type=Path, default=REPO_ROOT / "lake", help="the local lake folder (default: %(default)s)"
    )
    parser.add_argument(
        "--airflow-home",
        type=Path,
        default=REPO_ROOT / "var" / "airflow",
        help="Airflow's home for the throwaway SQLite metadata DB (default: %(default)s)",
    )
    args = parser.parse_args(argv)

    landing = args.landing
    if landing is None:
        landing = SAMPLE_DIR if SAMPLE_DIR.is_dir() else generate_images(REPO_ROOT / "var" / "generated-landing")
    print(f"Fruits! demo: batch {args.batch}, photos from {landing}, lake in {args.lake.resolve()}", flush=True)
    prepare_airflow(args.airflow_home)
    variables = {"fruits_local_lake": str(args.lake.resolve())}
    # The photos are one folder, not a dated landing: the run's landing Param names it.
    run_conf = {"landing": str(landing.resolve())}
    if WEIGHTS_FILE.exists():
        publish_models(args.lake.resolve(), WEIGHTS_FILE)
    run = run_dag("local", args.batch, variables, run_conf)
    print(f"\nDAG run {run.run_id}: {run.state}")
    if str(run.state) != "success":
        print(f"The run failed: see the task logs above and under {args.airflow_home.resolve() / 'logs'}")
        return 1
    print("\n".join(["Outputs:", *("  " + line for line in summarize(args.lake.resolve(), args.batch))]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
