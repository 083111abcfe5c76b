"""The pipeline run like production, on this machine: PostgreSQL (Debian's server, a throwaway
cluster) + the Airflow api-server, scheduler, dag-processor and triggerer as real processes on
127.0.0.1 (the same commands docker-compose.yaml runs, from tests/airflow_services.py), the real
DAG in its local target on real photos with the real MobileNetV2 weights.

The DAG is triggered through the REST API with Params, backfilled over 2 dates through the CLI,
and triggered from the UI in headless Chromium with a changed Param; every output is read back. Each run
spends Spark jobs only on what it alone proves: the REST run a full night with Params that change its
outputs; the backfill that the CLI's dates become one run each, one at a time, each reading its own date's
folder of the Variable fruits_landing (photos on the first date, none on the second: the first run commits
its batch, the second plans no job and invents no batch); the UI run the form (login, Params typed, the
run parsing them, the page showing its success), on an empty landing.
Runs with photos use distinct ones: the ingest skips a photo already in another batch.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from airflow_services import ADMIN_USER, LOOPBACK, AirflowServices, ApiClient, PostgresServer, postgres_bin_dir, require
from conftest import REPO_ROOT, headless_chromium
from test_services_assets import check_consumer_ran, prepare_consumer

from fruits import lake as lake_layout
from fruits.storage import LocalStore

pytestmark = [pytest.mark.slow, pytest.mark.shared]

DAG_ID = "fruits_pipeline"
LABELS_PER_BATCH = 3
IMAGES_PER_LABEL = 4
# Batches: each takes its own slice of every label's Training photos (see `photo_sets`).
BATCHES = ("api", "backfill")
API_NIGHT = "2026-03-01"  # the manual run's partition key
BACKFILL_FROM, BACKFILL_TO = "2026-02-01", "2026-02-02T23:59:59"
BACKFILL_DATES = ("2026-02-01", "2026-02-02")
UI_PCA_K = 2  # the Param the UI test changes (default: pca_variance decides k)
UI_NIGHT = "2026-03-05"  # a manual run names its night (the form's partition key is optional)
RUN_TIMEOUT_S = 420


@pytest.fixture(scope="module")
def photo_sets(sample_dir, tmp_path_factory) -> dict[str, dict[str, list[Path]]]:
    """Per batch: label -> distinct real photos (the same labels, different files)."""
    labels = sorted(p.name for p in (sample_dir / "Training").iterdir())[:LABELS_PER_BATCH]
    sets: dict[str, dict[str, list[Path]]] = {}
    for index, batch in enumerate(BATCHES):
        window = slice(index * IMAGES_PER_LABEL, (index + 1) * IMAGES_PER_LABEL)
        sets[batch] = {label: sorted((sample_dir / "Training" / label).glob("*.jpg"))[window] for label in labels}
    return sets


def land(photos: dict[str, list[Path]], landing: Path) -> Path:
    """Copy photos into a landing folder as `<label>/<file>`: how new photos arrive."""
    for label, files in photos.items():
        (landing / label).mkdir(parents=True, exist_ok=True)
        for file in files:
            shutil.copy(file, landing / label / file.name)
    return landing


@pytest.fixture(scope="module")
def stack(publish_models, tmp_path_factory):
    """PostgreSQL + the four Airflow services; everything stopped at the end, even on failure."""
    require(postgres_bin_dir() is not None, "PostgreSQL server binaries are missing (Debian package postgresql)")
    home = tmp_path_factory.mktemp("airflow_home")
    lake = tmp_path_factory.mktemp("lake")
    landing_root = tmp_path_factory.mktemp("landing")  # <root>/<date>/: what a run reads without a landing Param
    publish_models(lake)  # the weights and their converted payload, as the release command publishes them
    postgres = PostgresServer(postgres_bin_dir())
    services = AirflowServices(
        home=home,
        dags_folder=REPO_ROOT / "dags",
        database_url=postgres.url,
        extra_env={
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW_VAR_FRUITS_LOCAL_LAKE": str(lake),
            "AIRFLOW_VAR_FRUITS_LANDING": str(landing_root),
            # Unpausing must not start a nightly run of its own: the test triggers every run.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            # Spark's driver and block manager bind here instead of the host's address.
            "SPARK_LOCAL_IP": LOOPBACK,
        },
    )
    try:
        postgres.start()
        services.start()
        services.wait_healthy()
        api = ApiClient(services.base_url, ADMIN_USER, services.password)
        api.wait_for_dag(DAG_ID)
        api.unpause(DAG_ID)
        prepare_consumer(api)  # the asset consumer, unpaused before any producer run
        yield {"services": services, "api": api, "lake": lake, "landing_root": landing_root, "postgres": postgres}
    finally:
        started = services.all_processes()
        services.stop()
        postgres_pid = postgres.pid()
        postgres.stop()
        survivors = [p.pid for p in started if p.is_running() and p.status() != "zombie"]
        assert not survivors, f"processes left running after stop: {survivors}"
        if postgres_pid:
            # The postmaster is re-parented to PID 1, which may not reap it: a zombie has stopped.
            assert not _alive(postgres_pid), "PostgreSQL still running after stop"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _committed_table(store, output: str):
    """The rows of a committed output: only the files its marker names, without hive partitions."""
    files = [u.removeprefix("file://") for u in lake_layout.committed_files(store, output) if u.endswith(".parquet")]
    return pq.read_table(files, partitioning=None).to_pandas()


def assert_batch_outputs(lake: Path, batch: str, photos: dict[str, list[Path]], *, k: int | None = None) -> dict:
    """Features hold exactly this batch's photos; its PCA outputs on the current basis are all committed."""
    store, root = LocalStore(lake), "file://" + str(lake.resolve())
    features = _committed_table(store, lake_layout.features_uri(root, batch))
    expected = {(label, f.name) for label, files in photos.items() for f in files}
    assert {(row.label, Path(row.path).name) for row in features.itertuples()} == expected
    assert (features["batch_id"] == batch).all()
    assert features["features"].map(len).eq(1280).all()
    metrics = lake_layout.read_commit(store, lake_layout.features_uri(root, batch))["metrics"]
    assert metrics["featurized"] == len(expected) and metrics["quarantined"] == 0

    version = json.loads((lake / "pca" / "bases" / "_current.json").read_text())["version"]
    output = lake_layout.pca_reduced_uri(root, version, batch)
    committed = lake_layout.committed_files(store, output)
    report = json.loads(store.read(next(u for u in committed if u.endswith("/report.json"))))
    assert report["basis"] == version and report["rows_read"] == len(expected)
    csv_rows = []
    for part in (u for u in committed if u.endswith(".csv")):
        header, *rows = Path(part.removeprefix("file://")).read_text().splitlines()
        assert header.split(",") == ["path", "label", *[f"pc_{i}" for i in range(1, report["k"] + 1)]]
        csv_rows += rows
    reduced = _committed_table(store, output)
    assert len(csv_rows) == len(reduced) == len(expected)  # per-batch outputs: this batch's photos only
    assert any(u.endswith(".png") for u in committed)
    if k is not None:
        assert report["k"] == k
    return report


def test_rest_api_trigger_with_params_runs_the_local_target(stack, photo_sets, tmp_path):
    api, services, lake = stack["api"], stack["services"], stack["lake"]
    landing = land(photo_sets["api"], tmp_path / "landing")

    run = api.trigger(DAG_ID, API_NIGHT, {"landing": str(landing), "pca_variance": 0.9})
    assert run["conf"]["landing"] == str(landing)
    api.wait_for_runs(DAG_ID, [run["dag_run_id"]], services, timeout=RUN_TIMEOUT_S)

    states = api.task_states(DAG_ID, run["dag_run_id"])
    assert states["featurize"] == states["pca"] == "success"
    assert states["unlock_batch"] == states["report_cost"] == "success"  # the teardowns ran
    report = assert_batch_outputs(lake, "2026-03-01", photo_sets["api"])
    assert report["variance_target"] == 0.9 and report["total_explained_variance"] >= 0.9


def test_the_consumer_dag_is_queued_by_the_producers_asset_event(stack):
    """After the REST run above (tests run in file order): its publish_assets task announced batch
    2026-03-01 on the PCA alias with the extras a consumer needs, and that event queued fruits_pca_summary
    (tests/test_services_assets.py says why this stack's scheduler then creates no run)."""
    api = stack["api"]
    run_id = next(r["dag_run_id"] for r in api.dag_runs(DAG_ID) if r["run_type"] == "manual")
    outcome = check_consumer_ran(api, stack["services"], stack["lake"], run_id, "2026-03-01")
    assert outcome.get("queued_events") or outcome.get("summary")


def test_cli_backfill_of_two_dates_runs_each_date_once_on_its_own_folder(stack, photo_sets):
    api, services, lake = stack["api"], stack["services"], stack["lake"]
    photos_day, empty_day = BACKFILL_DATES
    land(photo_sets["backfill"], stack["landing_root"] / photos_day)
    (stack["landing_root"] / empty_day).mkdir()  # nothing arrived that day

    created = services.airflow(
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        BACKFILL_FROM,
        "--to-date",
        BACKFILL_TO,
        "--max-active-runs",
        "1",
    )
    assert created.returncode == 0, created.stderr[-3000:]
    runs = {r["partition_key"]: r["dag_run_id"] for r in api.dag_runs(DAG_ID) if r["run_type"] == "backfill"}
    assert sorted(runs) == list(BACKFILL_DATES)

    # One run at a time, in date order: the second date's listing starts only once the first run has listed.
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while api.task_states(DAG_ID, runs[photos_day]).get("list_landing") != "success":
        services.check_alive()
        assert api.task_states(DAG_ID, runs[empty_day]).get("list_landing") in (None, "scheduled", "queued")
        first_states = api.task_states(DAG_ID, runs[photos_day])
        assert time.monotonic() < deadline, f"first backfill run never listed: {first_states}"
        time.sleep(2)

    api.wait_for_runs(DAG_ID, runs.values(), services, timeout=2 * RUN_TIMEOUT_S)
    assert_batch_outputs(lake, photos_day, photo_sets["backfill"])
    empty = api.task_states(DAG_ID, runs[empty_day])
    assert empty["list_landing"] == empty["plan_jobs"] == empty["unlock_batch"] == "success"
    assert {empty[job] for job in ("ingest", "featurize", "pca", "reexpress")} == {"skipped"}
    assert sorted(p.name for p in (lake / "raw").iterdir() if p.name.startswith("batch=")) == sorted(
        [f"batch={API_NIGHT}", f"batch={photos_day}"]
    )


@pytest.fixture
def browser():
    with headless_chromium("1400,1000") as driver:
        yield driver


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("FRUITS_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_ui_login_trigger_with_changed_param_succeeds(stack, photo_sets, tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    api, services, lake = stack["api"], stack["services"], stack["lake"]
    landing = tmp_path / "landing"  # nothing arrived: the run plans, finds no work, starts no job
    landing.mkdir()
    wait = WebDriverWait(browser, 60)
    screenshot = artifacts_dir() / "airflow-ui-run-success.png"

    def fill(name: str, value: str) -> None:
        """Type into a Param's field key by key, as a person does: the form re-validates on every
        key, and a key sent while it re-renders is dropped (seen: one '_' lost in a long path)."""
        field = wait.until(EC.element_to_be_clickable((By.NAME, f"element_{name}")))
        field.send_keys(Keys.CONTROL, "a", Keys.DELETE)
        for key in value:
            field.send_keys(key)
            time.sleep(0.02)
        wait.until(
            lambda _: field.get_attribute("value") == value,
            f"field {name} shows {field.get_attribute('value')!r}, not {value!r}",
        )

    try:
        browser.get(f"{services.base_url}/")
        wait.until(EC.presence_of_element_located((By.NAME, "username"))).send_keys(ADMIN_USER)
        browser.find_element(By.NAME, "password").send_keys(services.password)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(lambda d: "/auth/login" not in d.current_url)

        browser.get(f"{services.base_url}/dags/{DAG_ID}")
        wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "[data-testid=trigger-dag-button]"))).click()
        fill("batch", UI_NIGHT)
        fill("landing", str(landing))
        fill("pca_k", str(UI_PCA_K))
        browser.find_element(By.CSS_SELECTOR, "[data-testid=trigger-dag-submit]").click()
        wait.until(lambda d: f"/dags/{DAG_ID}/runs/" in d.current_url)
        run_id = browser.current_url.split("/runs/", 1)[1].split("?")[0]

        api.wait_for_runs(DAG_ID, [run_id], services, timeout=RUN_TIMEOUT_S)
        run = api.request("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")
        assert run["conf"]["landing"] == str(landing) and run["conf"]["pca_k"] == UI_PCA_K
        assert run["triggered_by"] == "ui" and run["triggering_user_name"] == ADMIN_USER

        # The UI itself shows the run succeeded (the page polls; a reload makes it immediate).
        browser.refresh()
        WebDriverWait(browser, 60).until(
            lambda d: f"{run_id}\nSuccess" in d.find_element(By.TAG_NAME, "body").text,
            "the run's page does not show its state as Success",
        )
    finally:
        browser.save_screenshot(str(screenshot))
        print(f"UI screenshot: {screenshot}")
    assert screenshot.stat().st_size > 0
    # The typed Params reached the run's parsed Params (check_gdpr's XCom); the empty night started no job.
    checked = api.request(
        "GET",
        f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/check_gdpr/xcomEntries/return_value",
        params={"deserialize": "true", "stringify": "false"},
    )["value"]
    assert (checked["params"]["batch"], checked["params"]["pca_k"]) == (UI_NIGHT, UI_PCA_K)
    assert checked["params"]["landing"] == str(landing)
    states = api.task_states(DAG_ID, run_id)
    assert states["stop_if_nothing_to_do"] == "success" and states["featurize"] == "skipped", states
    assert states["unlock_batch"] == "success"
    assert not list((lake / "raw" / f"batch={UI_NIGHT}").glob("*.parquet"))


def test_nothing_listened_beyond_loopback(stack):
    """Every listening socket seen on the services' process tree while the runs went on
    (api-server, task runners, spark-submit's JVM) was bound to 127.0.0.1."""
    services = stack["services"]
    services.record_listeners()
    seen = services.listeners_seen
    assert any(port == services.api_port for _, port in seen), seen
    # A JVM listens on IPv6 sockets: 127.0.0.1 shows as the IPv4-mapped ::ffff:127.0.0.1.
    addresses = {ipaddress.ip_address(address) for address, _ in seen}
    assert {getattr(a, "ipv4_mapped", None) or a for a in addresses} == {ipaddress.ip_address(LOOPBACK)}, seen
